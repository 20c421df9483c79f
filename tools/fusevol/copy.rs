//! `volume export` and `volume import`: the data side of the export stream
//! (`fusevol::format::stream`). The daemon says what to send (`ExportPlan`) and records an
//! import (`ImportCommit`); this side reads the volume or snapshot file in the mount and
//! writes the stream (a file, or stdout for `-`), or reads a stream and writes the new
//! volume's file. A damaged or cut stream is refused with its byte offset, and what the
//! import had made is undone: a new volume is deleted, an incremental's target is rolled
//! back to the stream's base snapshot.

use std::fs::{File, OpenOptions};
use std::io::{IoSlice, IsTerminal, Read};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::Command;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use fusevol::control::{Client, ExportPlan, PoolInfo, Request, SnapshotInfo, VolumeInfo};
use fusevol::format::stream::{Parsed, StreamHeader, StreamRecord};
use fusevol::units::format_size;

use crate::exit::Failure;
use crate::export_io::{extent_len, pieces, read_in_order, record_head, Sink, Source, BLOCK};
use crate::Ctx;

/// `--format` of `volume export`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum ExportFormat {
    /// The fusevol export stream (info, allocated extents with CRC32C, trailer)
    Stream,
    /// A plain image of the volume's size (sparse where the volume has holes)
    Raw,
    /// A qcow2 image (through qemu-img)
    Qcow2,
}

fn local(msg: String) -> Failure {
    Failure::Local(msg)
}

fn bar(total: u64, what: &str) -> Option<ProgressBar> {
    if !std::io::stderr().is_terminal() {
        return None;
    }
    let b = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
    b.set_style(
        ProgressStyle::with_template(
            "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    b.set_message(what.to_string());
    Some(b)
}

fn runs(r: &[(u64, u64)]) -> impl Iterator<Item = u64> + '_ {
    r.iter().flat_map(|&(a, n)| a..a + n)
}

pub(crate) fn export(
    ctx: &Ctx,
    name: String,
    file: String,
    from: Option<String>,
    format: ExportFormat,
) -> Result<(), Failure> {
    let mut client = ctx.client()?;
    let (plan, _): (ExportPlan, _) = client.call_ok(&Request::ExportPlan {
        name: name.clone(),
        from: from.clone(),
    })?;
    if format != ExportFormat::Stream && from.is_some() {
        return Err(Failure::Usage(
            "--from makes an incremental stream; --format raw|qcow2 write whole images".into(),
        ));
    }
    let src = Source::open(&plan.path)?;
    let data_bytes: u64 = runs(&plan.extents)
        .map(|i| extent_len(i, plan.extent_size, plan.size))
        .sum();
    let pb = bar(data_bytes, &format!("export {name}"));
    let summary = match format {
        ExportFormat::Stream => write_stream(&plan, &src, &file, pb.as_ref())?,
        ExportFormat::Raw => write_raw(&plan, &src, &file, pb.as_ref())?,
        ExportFormat::Qcow2 => {
            if file == "-" {
                return Err(Failure::Usage(
                    "--format qcow2 needs a FILE (qemu-img cannot write to a pipe)".into(),
                ));
            }
            let tmp = format!("{file}.raw-part");
            let r = write_raw(&plan, &src, &tmp, pb.as_ref()).and_then(|s| {
                let out = Command::new("qemu-img")
                    .args(["convert", "-f", "raw", "-O", "qcow2", &tmp, &file])
                    .output()
                    .map_err(|e| local(format!("cannot run qemu-img: {e}")))?;
                if !out.status.success() {
                    return Err(local(format!(
                        "qemu-img convert to {file} failed: {}",
                        String::from_utf8_lossy(&out.stderr).trim()
                    )));
                }
                Ok(s)
            });
            let _ = std::fs::remove_file(&tmp);
            r?
        }
    };
    if let Some(b) = pb {
        b.finish_and_clear();
    }
    if ctx.json {
        crate::output::print_json(&serde_json::json!({
            "name": name, "file": file, "incremental": from.is_some(),
            "extents": summary.0, "holes": summary.1, "data_bytes": data_bytes,
            "size": plan.size,
        }));
    } else if file != "-" {
        println!(
            "exported {name} to {file}: {} extents ({}), {} holes{}",
            summary.0,
            format_size(data_bytes),
            summary.1,
            from.map(|f| format!(", incremental from {f}"))
                .unwrap_or_default()
        );
    }
    Ok(())
}

// Format: see fusevol::format::stream (header with the volume information, size and extent
// size; allocated extents only, each with a CRC32C; trailer with a whole-stream CRC32C).
// The extents are read in blocks by several threads, which also checksum each record
// (export_io.rs); here they are written in order: per block one writev of the record heads,
// the data and the record checksums, and the whole-stream checksum is combined from the
// records' (crc32c_combine) rather than computed over the data a second time.
fn write_stream(
    plan: &ExportPlan,
    src: &Source,
    file: &str,
    pb: Option<&ProgressBar>,
) -> Result<(u64, u64), Failure> {
    let h = StreamHeader {
        incremental: !plan.base.is_empty(),
        size: plan.size,
        extent_size: plan.extent_size,
        pool_id: plan.pool_id,
        volume: plan.volume.clone(),
        snapshot: plan.snapshot.clone(),
        base: plan.base.clone(),
        info: plan.info.clone(),
    };
    let (es, size) = (plan.extent_size, plan.size);
    let mut sink = Sink::open(file)?;
    let head = h.encode();
    let mut crc = crc32c::crc32c(&head);
    sink.write(&head)?;
    let (mut n, mut bytes) = (0u64, 0u64);
    // The checksum of the extent record being written (an extent may span blocks).
    let mut rcrc = 0u32;
    read_in_order(src, plan, true, |f| {
        let ps = pieces(f.block, es, size);
        let (mut heads, mut tails) = (Vec::new(), Vec::new());
        for (p, &c) in ps.iter().zip(&f.crcs) {
            // `c` covers the record head too when the piece starts its extent.
            let covered = p.len + if p.first { 13 } else { 0 };
            crc = crc32c::crc32c_combine(crc, c, covered);
            if p.first {
                heads.push(record_head(p.index, extent_len(p.index, es, size)));
                rcrc = c;
            } else {
                rcrc = crc32c::crc32c_combine(rcrc, c, p.len);
            }
            if p.last {
                let t = rcrc.to_le_bytes();
                crc = crc32c::crc32c_append(crc, &t);
                tails.push(t);
                n += 1;
                bytes += extent_len(p.index, es, size);
            }
        }
        let data = f.buf.data();
        let mut iov = Vec::with_capacity(ps.len() * 3);
        let (mut hi, mut ti) = (heads.iter(), tails.iter());
        for p in &ps {
            if p.first {
                iov.extend(hi.next().map(|h| IoSlice::new(h)));
            }
            iov.push(IoSlice::new(&data[p.start..p.start + p.len]));
            if p.last {
                iov.extend(ti.next().map(|t| IoSlice::new(t)));
            }
        }
        sink.write_vectored(&mut iov)?;
        if let Some(b) = pb {
            b.inc(f.block.len);
        }
        Ok(())
    })?;
    let mut rec = Vec::with_capacity(64);
    let mut holes = 0;
    for i in runs(&plan.holes) {
        StreamRecord::Hole { index: i }.encode(&mut rec);
        n += 1;
        holes += 1;
        if rec.len() >= 1 << 20 {
            crc = crc32c::crc32c_append(crc, &rec);
            sink.write(&rec)?;
            rec.clear();
        }
    }
    crc = crc32c::crc32c_append(crc, &rec);
    StreamRecord::encode_end(n, bytes, crc, &mut rec);
    sink.write(&rec)?;
    sink.finish()?;
    Ok((n - holes, holes))
}

fn write_raw(
    plan: &ExportPlan,
    src: &Source,
    file: &str,
    pb: Option<&ProgressBar>,
) -> Result<(u64, u64), Failure> {
    let mut sink = Sink::open(file)?;
    let zeros = vec![0u8; BLOCK as usize];
    let mut n = 0;
    // A file is sized first and written where the data is (holes stay holes); stdout gets
    // zeros for the holes.
    if sink.is_file() {
        sink.set_len(plan.size)?;
    }
    let zero_to = |sink: &mut Sink, end: u64| -> Result<(), Failure> {
        while sink.written < end {
            let k = (end - sink.written).min(BLOCK) as usize;
            sink.write(&zeros[..k])?;
        }
        Ok(())
    };
    let es = plan.extent_size;
    read_in_order(src, plan, false, |f| {
        if sink.is_file() {
            sink.write_at(f.buf.data(), f.block.off)?;
        } else {
            zero_to(&mut sink, f.block.off)?;
            sink.write(f.buf.data())?;
        }
        n += pieces(f.block, es, plan.size)
            .iter()
            .filter(|p| p.last)
            .count() as u64;
        if let Some(b) = pb {
            b.inc(f.block.len);
        }
        Ok(())
    })?;
    if !sink.is_file() {
        zero_to(&mut sink, plan.size)?;
    }
    sink.finish()?;
    Ok((n, 0))
}

/// Reads a stream incrementally, keeping the offset and the running CRC32C.
struct StreamIn {
    input: Box<dyn Read>,
    buf: Vec<u8>,
    start: usize,
    /// Stream offset of `buf[start]`.
    offset: u64,
    crc: u32,
    eof: bool,
    what: String,
}

impl StreamIn {
    fn avail(&self) -> &[u8] {
        &self.buf[self.start..]
    }

    /// Make at least `need` bytes available (fewer only at the end of the input).
    fn fill(&mut self, need: usize) -> Result<(), Failure> {
        if self.start > 0 && self.buf.len() - self.start < need {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        while self.buf.len() - self.start < need && !self.eof {
            let have = self.buf.len();
            let want = (need - (have - self.start)).max(1 << 20);
            self.buf.resize(have + want, 0);
            match self.input.read(&mut self.buf[have..]) {
                Ok(0) => {
                    self.buf.truncate(have);
                    self.eof = true;
                }
                Ok(k) => self.buf.truncate(have + k),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => self.buf.truncate(have),
                Err(e) => {
                    self.buf.truncate(have);
                    return Err(local(format!("cannot read {}: {e}", self.what)));
                }
            }
        }
        Ok(())
    }

    fn consume(&mut self, n: usize) {
        self.crc = crc32c::crc32c_append(self.crc, &self.buf[self.start..self.start + n]);
        self.start += n;
        self.offset += n as u64;
    }

    fn damaged(&self, at: u64, why: impl std::fmt::Display) -> Failure {
        local(format!(
            "{}: stream refused at offset {at}: {why}",
            self.what
        ))
    }

    /// Parse one item with `parse`, reading more as it asks.
    fn next<T>(
        &mut self,
        parse: impl Fn(&[u8]) -> Result<Parsed<T>, fusevol::format::FormatError>,
    ) -> Result<(T, usize), Failure> {
        let mut need = 1;
        loop {
            self.fill(need)?;
            match parse(self.avail()).map_err(|e| self.damaged(self.offset, e))? {
                Parsed::Done(t, n) => return Ok((t, n)),
                Parsed::Incomplete(more) => {
                    if self.eof && self.avail().len() < more {
                        return Err(self.damaged(
                            self.offset + self.avail().len() as u64,
                            format!(
                                "cut short ({} bytes of a record of at least {more})",
                                self.avail().len()
                            ),
                        ));
                    }
                    need = more;
                }
            }
        }
    }
}

pub(crate) fn import(ctx: &Ctx, file: String, name: String) -> Result<(), Failure> {
    let what = if file == "-" {
        "stdin".to_string()
    } else {
        file.clone()
    };
    let input: Box<dyn Read> = if file == "-" {
        Box::new(std::io::stdin())
    } else {
        Box::new(File::open(&file).map_err(|e| local(format!("cannot open {file}: {e}")))?)
    };
    let mut s = StreamIn {
        input,
        buf: Vec::new(),
        start: 0,
        offset: 0,
        crc: 0,
        eof: false,
        what,
    };
    let (h, n) = s.next(StreamHeader::parse)?;
    s.crc = crc32c::crc32c(&s.avail()[..n]);
    s.start += n;
    s.offset += n as u64;
    let mut client = ctx.client()?;
    let (pool, _): (PoolInfo, _) = client.call_ok(&Request::PoolInfo)?;
    // Where the data goes, and how to undo it.
    let undo = prepare(&mut client, &h, &name)?;
    let path = Path::new(&pool.mountpoint).join(&name);
    let result = apply(&mut s, &h, &path).and_then(|stats| {
        client
            .call_ok::<serde_json::Value>(&Request::ImportCommit {
                volume: name.clone(),
                snapshot: h.snapshot.clone(),
                info: h.info.clone(),
                src_volume: h.volume.clone(),
                src_snapshot: h.snapshot.clone(),
                src_pool: h.pool_id,
            })
            .map_err(Failure::from)?;
        Ok(stats)
    });
    match result {
        Ok((extents, bytes)) => {
            if ctx.json {
                crate::output::print_json(&serde_json::json!({
                    "volume": name, "snapshot": h.snapshot, "incremental": h.incremental,
                    "extents": extents, "data_bytes": bytes, "size": h.size,
                }));
            } else {
                println!(
                    "imported {} into {name}: {extents} extents ({}){}",
                    if h.snapshot.is_empty() {
                        h.volume.clone()
                    } else {
                        format!("{}@{}", h.volume, h.snapshot)
                    },
                    format_size(bytes),
                    if h.incremental {
                        format!(", incremental on {}", h.base)
                    } else {
                        String::new()
                    }
                );
            }
            Ok(())
        }
        Err(e) => {
            let undone = match &undo {
                Undo::Delete => client
                    .call_ok::<serde_json::Value>(&Request::VolumeDelete {
                        name: name.clone(),
                        recursive: true,
                    })
                    .map(|_| format!("volume '{name}' removed"))
                    .unwrap_or_else(|u| format!("could not remove volume '{name}': {u}")),
                Undo::Rollback(base) => client
                    .call_ok::<VolumeInfo>(&Request::SnapshotRollback {
                        volume: name.clone(),
                        name: base.clone(),
                    })
                    .map(|_| format!("volume '{name}' rolled back to '{base}'"))
                    .unwrap_or_else(|u| format!("could not roll '{name}' back to '{base}': {u}")),
            };
            Err(match e {
                Failure::Local(m) => Failure::Local(format!("{m}; nothing imported ({undone})")),
                other => other,
            })
        }
    }
}

enum Undo {
    Delete,
    Rollback(String),
}

/// Create the volume of a full stream, or check that an incremental applies onto `name`.
fn prepare(client: &mut Client, h: &StreamHeader, name: &str) -> Result<Undo, Failure> {
    if !h.incremental {
        client.call_ok::<VolumeInfo>(&Request::VolumeCreate {
            name: name.to_string(),
            size: h.size,
            tier: None,
            node: None,
            spread: false,
        })?;
        return Ok(Undo::Delete);
    }
    let (snaps, _): (Vec<SnapshotInfo>, _) = client.call_ok(&Request::SnapshotList {
        volume: Some(name.to_string()),
    })?;
    let latest = snaps
        .iter()
        .filter(|s| !s.name.starts_with('.'))
        .max_by_key(|s| s.id)
        .map(|s| s.name.clone());
    if latest.as_deref() != Some(h.base.as_str()) {
        return Err(local(format!(
            "the stream is an incremental on snapshot '{}' of '{}', but the latest snapshot of volume '{name}' is {}",
            h.base,
            h.volume,
            latest.map(|l| format!("'{l}'")).unwrap_or_else(|| "none".into())
        )));
    }
    if snaps.iter().any(|s| s.name == h.snapshot) {
        return Err(local(format!(
            "volume '{name}' already has a snapshot '{}' (the stream's)",
            h.snapshot
        )));
    }
    let (vol, _): (VolumeInfo, _) = client.call_ok(&Request::VolumeInfo {
        name: name.to_string(),
    })?;
    if vol.size != h.size {
        client.call_ok::<VolumeInfo>(&Request::VolumeResize {
            name: name.to_string(),
            size: h.size,
            allow_shrink: true,
        })?;
    }
    Ok(Undo::Rollback(h.base.clone()))
}

/// Write the records into the volume file; verify the trailer. Returns (extents, bytes).
fn apply(s: &mut StreamIn, h: &StreamHeader, path: &Path) -> Result<(u64, u64), Failure> {
    // A volume just created may take the kernel's entry cache (1 s) to show.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let out = loop {
        match OpenOptions::new().write(true).open(path) {
            Ok(f) => break f,
            Err(e)
                if e.kind() == std::io::ErrorKind::NotFound
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(std::time::Duration::from_millis(100))
            }
            Err(e) => return Err(local(format!("cannot open {}: {e}", path.display()))),
        }
    };
    let pb = bar(h.size, &format!("import {}", path.display()));
    let (mut n, mut extents, mut bytes) = (0u64, 0u64, 0u64);
    loop {
        let at = s.offset;
        let (rec, len) = s.next(|b| StreamRecord::parse(b, h))?;
        match rec {
            StreamRecord::Extent { index, data } => {
                out.write_all_at(&data, index * h.extent_size)
                    .map_err(|e| local(format!("cannot write {}: {e}", path.display())))?;
                n += 1;
                extents += 1;
                bytes += data.len() as u64;
                if let Some(b) = &pb {
                    b.inc(data.len() as u64);
                }
                s.consume(len);
            }
            StreamRecord::Hole { index } => {
                let off = index * h.extent_size;
                let l = extent_len(index, h.extent_size, h.size);
                nix::fcntl::fallocate(
                    std::os::fd::AsRawFd::as_raw_fd(&out),
                    nix::fcntl::FallocateFlags::FALLOC_FL_PUNCH_HOLE
                        | nix::fcntl::FallocateFlags::FALLOC_FL_KEEP_SIZE,
                    off as i64,
                    l as i64,
                )
                .or_else(|_| {
                    out.write_all_at(&vec![0u8; l as usize], off).map_err(|e| {
                        nix::errno::Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO))
                    })
                })
                .map_err(|e| {
                    local(format!(
                        "cannot clear extent {index} of {}: {e}",
                        path.display()
                    ))
                })?;
                n += 1;
                s.consume(len);
            }
            StreamRecord::End {
                records,
                data_bytes,
                stream_crc,
            } => {
                // The stream crc covers every byte before its own field.
                let crc = crc32c::crc32c_append(s.crc, &s.avail()[..17]);
                if crc != stream_crc {
                    return Err(s.damaged(
                        at + 17,
                        format!("whole-stream checksum mismatch (stored {stream_crc:#010x}, computed {crc:#010x})"),
                    ));
                }
                if records != n || data_bytes != bytes {
                    return Err(s.damaged(
                        at,
                        format!("the trailer says {records} records / {data_bytes} bytes, the stream had {n} / {bytes}"),
                    ));
                }
                s.consume(len);
                s.fill(1)?;
                if !s.avail().is_empty() {
                    return Err(s.damaged(s.offset, "bytes after the trailer"));
                }
                break;
            }
        }
    }
    out.sync_all()
        .map_err(|e| local(format!("cannot sync {}: {e}", path.display())))?;
    if let Some(b) = pb {
        b.finish_and_clear();
    }
    Ok((extents, bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Parse a whole stream: the header, the records (each checked against its CRC32C by
    /// the parser) and the trailer against the running CRC32C of everything before it.
    fn parse_all(s: &[u8]) -> (StreamHeader, Vec<StreamRecord>) {
        let Ok(Parsed::Done(h, mut at)) = StreamHeader::parse(s) else {
            panic!("header")
        };
        let mut recs = Vec::new();
        loop {
            let r = StreamRecord::parse(&s[at..], &h);
            let Ok(Parsed::Done(rec, n)) = r else {
                panic!("record at {at}: {r:?}")
            };
            if let StreamRecord::End { stream_crc, .. } = rec {
                assert_eq!(crc32c::crc32c(&s[..at + 17]), stream_crc, "stream crc");
                assert_eq!(at + n, s.len(), "bytes after the trailer");
                recs.push(rec);
                return (h, recs);
            }
            recs.push(rec);
            at += n;
        }
    }

    fn roundtrip(es: u64, size: u64, extents: Vec<(u64, u64)>, holes: Vec<(u64, u64)>) {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("vol");
        let data: Vec<u8> = (0..size)
            .map(|i| (i % 251) as u8 ^ (i >> 16) as u8)
            .collect();
        std::fs::write(&src, &data).unwrap();
        let plan = ExportPlan {
            size,
            extent_size: es,
            pool_id: 7,
            volume: "v".into(),
            snapshot: "s".into(),
            base: if holes.is_empty() {
                String::new()
            } else {
                "b".into()
            },
            info: Vec::new(),
            path: src.to_str().unwrap().into(),
            extents: extents.clone(),
            holes: holes.clone(),
        };
        let out = dir.path().join("out.fvs");
        let Ok(source) = Source::open(&plan.path) else {
            panic!("open")
        };
        let Ok((n, nh)) = write_stream(&plan, &source, out.to_str().unwrap(), None) else {
            panic!("write_stream")
        };
        assert_eq!(
            (n, nh),
            (runs(&extents).count() as u64, runs(&holes).count() as u64)
        );
        let (h, recs) = parse_all(&std::fs::read(&out).unwrap());
        assert_eq!(
            (h.size, h.extent_size, h.incremental),
            (size, es, !holes.is_empty())
        );
        let want: Vec<u64> = runs(&extents).collect();
        let got: Vec<u64> = recs
            .iter()
            .filter_map(|r| match r {
                StreamRecord::Extent { index, data: d } => {
                    let at = (index * es) as usize;
                    assert_eq!(d[..], data[at..at + extent_len(*index, es, size) as usize]);
                    Some(*index)
                }
                _ => None,
            })
            .collect();
        assert_eq!(got, want);
        let got_holes: Vec<u64> = recs
            .iter()
            .filter_map(|r| match r {
                StreamRecord::Hole { index } => Some(*index),
                _ => None,
            })
            .collect();
        assert_eq!(got_holes, runs(&holes).collect::<Vec<_>>());
        assert!(
            matches!(recs.last(), Some(StreamRecord::End { records, data_bytes, .. })
                if *records == n + nh && *data_bytes == want.iter().map(|&i| extent_len(i, es, size)).sum::<u64>())
        );
    }

    #[test]
    fn stream_of_small_extents_coalesced_in_blocks_parses_back() {
        // 64 KiB extents: many per block; runs of several lengths; a short last extent.
        let es = 64 << 10;
        roundtrip(
            es,
            200 * es + 4096,
            vec![(0, 1), (3, 90), (100, 101)],
            vec![],
        );
    }

    #[test]
    fn stream_of_extents_larger_than_a_block_parses_back() {
        // 16 MiB extents, read in 4 MiB pieces; a short last extent; holes of an incremental.
        let es = 16 << 20;
        roundtrip(
            es,
            2 * es + (5 << 20) + 512,
            vec![(0, 1), (2, 1)],
            vec![(1, 1)],
        );
    }
}
