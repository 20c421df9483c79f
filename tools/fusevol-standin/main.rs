//! `fusevol-standin`: a stand-in secondary for measuring a journal group's primary as it runs
//! when the secondary is at another site, on other CPUs.
//!
//! It does the least a secondary must do for the primary to go on: for every segment the
//! shipper publishes in `<REMOTE>/<GROUP>/`, in sequence order, it reads and verifies the
//! segment header (magic, version, CRC, group id and epoch of the manifest), walks the record
//! headers to find the last sequence number (magic checked, payloads neither read nor
//! checksummed), writes the `ack` file for it, and retires the segment as a spare, as the real
//! applier does. No data is applied anywhere: this is a benchmark tool, not a replica.
//!
//! Usage: fusevol-standin --remote DIR --group NAME [--interval-ms 20]
//! Runs until SIGINT/SIGTERM (or until the group directory disappears).

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::Parser;
use fusevol::format::journal::{
    peek_record, Ack, SegmentHeader, RECORD_HEADER_SIZE, SEGMENT_HEADER_SIZE,
};
use fusevol::replication::remote;

#[derive(Parser, Debug)]
#[command(name = "fusevol-standin", version)]
struct Args {
    /// The remote directory the primary's group ships to (as given to `group create --remote`).
    #[arg(long)]
    remote: PathBuf,
    /// The journal group's name.
    #[arg(long)]
    group: String,
    /// Milliseconds between looks at the remote directory when nothing new was there.
    #[arg(long, default_value_t = 20)]
    interval_ms: u64,
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// The last record's (seq, time) of a published segment, from its headers only.
fn last_record(path: &Path, group: u64, epoch: u64) -> Result<Option<(u64, u64)>, String> {
    let f = File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let len = f
        .metadata()
        .map_err(|e| format!("{}: {e}", path.display()))?
        .len();
    let mut hdr = [0u8; SEGMENT_HEADER_SIZE];
    f.read_exact_at(&mut hdr, 0)
        .map_err(|e| format!("{}: segment header: {e}", path.display()))?;
    let h = SegmentHeader::decode(&hdr).map_err(|e| format!("{}: {e}", path.display()))?;
    if h.group != group || h.epoch != epoch {
        return Err(format!(
            "{}: segment of group {:#x} epoch {}, the manifest names group {group:#x} epoch {epoch}",
            path.display(),
            h.group,
            h.epoch
        ));
    }
    let mut at = SEGMENT_HEADER_SIZE as u64;
    let mut last = None;
    let mut rh = [0u8; RECORD_HEADER_SIZE];
    while at + RECORD_HEADER_SIZE as u64 <= len {
        f.read_exact_at(&mut rh, at)
            .map_err(|e| format!("{}: record at offset {at}: {e}", path.display()))?;
        let (seq, time, plen) =
            peek_record(&rh).map_err(|e| format!("{}: offset {at}: {e}", path.display()))?;
        last = Some((seq, time));
        at += (RECORD_HEADER_SIZE + plen) as u64;
    }
    if at != len {
        return Err(format!(
            "{}: the last record runs past the end of the segment ({at} > {len} bytes)",
            path.display()
        ));
    }
    Ok(last)
}

fn run(a: &Args) -> Result<(), String> {
    let dir = remote::group_dir(&a.remote, &a.group);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    stop_on_signals(stop.clone());
    let mut applied = 0u64;
    let mut time = 0u64;
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        if !dir.is_dir() {
            return Err(format!("{} is gone", dir.display()));
        }
        let man = match remote::read_manifest(&dir) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                std::thread::sleep(Duration::from_millis(a.interval_ms));
                continue;
            }
            Err(e) => return Err(e.to_string()),
        };
        let segs = remote::list_published(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let mut did = false;
        for (_first, path) in segs {
            if let Some((seq, t)) = last_record(&path, man.group, man.epoch)? {
                if seq > applied {
                    applied = seq;
                    time = t;
                }
            }
            let ack = Ack {
                group: man.group,
                epoch: man.epoch,
                applied,
                time,
                acked_at: now_ns(),
            };
            remote::write_ack(&dir, &ack).map_err(|e| format!("{}: ack: {e}", dir.display()))?;
            remote::retire_published(&dir, &path);
            did = true;
        }
        if !did {
            std::thread::sleep(Duration::from_millis(a.interval_ms));
        }
    }
    Ok(())
}

/// SIGINT and SIGTERM set `flag` (blocked here, before any other thread starts, and taken by
/// one waiting thread).
fn stop_on_signals(flag: std::sync::Arc<std::sync::atomic::AtomicBool>) {
    use nix::sys::signal::{SigSet, Signal};
    let mut set = SigSet::empty();
    set.add(Signal::SIGINT);
    set.add(Signal::SIGTERM);
    if set.thread_block().is_err() {
        return;
    }
    std::thread::spawn(move || {
        if set.wait().is_ok() {
            flag.store(true, std::sync::atomic::Ordering::Relaxed);
        }
    });
}

fn main() -> ExitCode {
    let a = Args::parse();
    match run(&a) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("fusevol-standin: error: {e}");
            ExitCode::FAILURE
        }
    }
}
