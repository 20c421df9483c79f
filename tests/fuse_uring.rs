//! FUSE over io_uring (`fusevold --uring`): the transport serves a real mount (dd, fio verify
//! with many requests in flight, snapshots through the mount, concurrent 1 MiB and 4 KiB
//! I/O from several threads), stops cleanly, and falls back to /dev/fuse with a logged reason
//! when the kernel refuses the rings. The whole mount suite also runs over the transport
//! (`FUSEVOL_TEST_URING=1`, second pass of scripts/test.sh).

mod common;

use std::fs;
use std::os::unix::fs::FileExt;
use std::process::Command;
use std::time::Duration;

use common::*;

const ARRAYS: &[&str] = &["a0:256M", "a1:256M", "a2:256M"];
const PARAM: &str = "/sys/module/fuse/parameters/enable_uring";

fn uring_pool() -> TestPool {
    let mut p = TestPool::init(ARRAYS, "64K");
    p.daemon_args = vec!["--uring".into()];
    p.start();
    p
}

/// Wait for the daemon's line about the transport (it is logged once the queues registered).
fn transport_line(p: &TestPool) -> String {
    let end = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let log = p.daemon_log();
        if let Some(l) = log.lines().find(|l| {
            l.contains("FUSE over io_uring: ") || l.contains("FUSE over io_uring not used")
        }) {
            return l.to_string();
        }
        assert!(
            std::time::Instant::now() < end,
            "fusevold --uring logged nothing about its transport\nstderr:\n{log}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Threads named fuser-ring-N of the daemon, with their context switches (each request and
/// each reply the ring thread handles costs it at least one wake-up or none, while a
/// /dev/fuse worker blocks in read(2) once per request).
fn thread_switches(pid: u32, prefix: &str) -> u64 {
    let mut total = 0;
    for t in fs::read_dir(format!("/proc/{pid}/task")).unwrap().flatten() {
        let comm = fs::read_to_string(t.path().join("comm")).unwrap_or_default();
        if !comm.trim().starts_with(prefix) {
            continue;
        }
        let status = fs::read_to_string(t.path().join("status")).unwrap_or_default();
        for l in status.lines() {
            if let Some(v) = l.strip_prefix("voluntary_ctxt_switches:") {
                total += v.trim().parse::<u64>().unwrap_or(0);
            }
        }
    }
    total
}

fn fio_ok(p: &TestPool, args: &[String]) {
    let mut c = Command::new(tool("fio"));
    c.args(args).current_dir(p.root());
    let out = run(&mut c, Duration::from_secs(300));
    assert!(
        out.status.success() && !text(&out.stderr).to_lowercase().contains("verify"),
        "fio {args:?}: {}",
        describe(&out)
    );
}

/// The rings register, the module parameter is on, and a mount served by them takes dd,
/// fio verify at QD32 (over holes, then copy-on-write after a snapshot) and concurrent
/// 1 MiB / 4 KiB I/O from several threads, with the requests answered by the ring threads
/// rather than the /dev/fuse workers; the daemon stops cleanly.
#[test]
fn uring_serves_the_mount() {
    let mut p = uring_pool();
    let line = transport_line(&p);
    assert!(
        line.contains("FUSE over io_uring: ") && line.contains("queues"),
        "the rings did not register: {line}\n{}",
        p.daemon_log()
    );
    assert_eq!(
        fs::read_to_string(PARAM).unwrap().trim(),
        "Y",
        "{PARAM} is not on after fusevold --uring"
    );
    p.create_volume("v", "96M");
    let vol = p.vol("v");
    let pid = p.pid().expect("daemon pid");
    let dev_before = thread_switches(pid, "fuser-");
    let ring_before = thread_switches(pid, "fuser-ring-");

    // dd: 1 MiB O_DIRECT and buffered, read back through the mount.
    write_pattern(&vol, 7, 0, 16 * MIB, true);
    verify_pattern(&vol, 7, 0, 16 * MIB, true);
    write_pattern(&vol, 8, 16 * MIB, 8 * MIB, false);
    verify_pattern(&vol, 8, 16 * MIB, 8 * MIB, false);
    let mut dd = Command::new("dd");
    dd.arg(format!("if={}", vol.display())).args([
        "of=/dev/null",
        "bs=1M",
        "iflag=direct",
        "status=none",
    ]);
    run_ok(&mut dd, Duration::from_secs(60));

    // fio verify with 32 requests in flight, over holes and then over shared extents.
    let file = format!("--filename={}", vol.display());
    let job = |seed: &str, off: &str| -> Vec<String> {
        [
            "--name=qd32",
            &file,
            "--ioengine=libaio",
            "--direct=1",
            "--iodepth=32",
            "--rw=randwrite",
            "--bsrange=4k-256k",
            "--size=24M",
            "--verify=crc32c",
            "--verify_fatal=1",
            "--do_verify=1",
            &format!("--offset={off}"),
            &format!("--randseed={seed}"),
        ]
        .map(String::from)
        .to_vec()
    };
    fio_ok(&p, &job("31", "32M"));
    let before = fs::read(&vol).unwrap();
    p.cli_ok(&["snapshot", "create", "v", "t0"]);
    fio_ok(&p, &job("32", "0"));
    assert!(
        fs::read(p.mnt().join(".snapshots/v/t0")).unwrap() == before,
        "the snapshot changed under copy-on-write writes through the rings"
    );

    // Several threads at once: 1 MiB and 4 KiB writes and reads on their own ranges.
    let hs: Vec<_> = (0..6u64)
        .map(|t| {
            let vol = vol.clone();
            std::thread::spawn(move || {
                let f = fs::OpenOptions::new()
                    .read(true)
                    .write(true)
                    .open(&vol)
                    .unwrap();
                let base = 40 * MIB + t * 4 * MIB;
                let bs = if t % 2 == 0 { MIB } else { 4096 };
                let mut buf = vec![0u8; bs as usize];
                let mut back = vec![0u8; bs as usize];
                let mut off = 0;
                while off < 4 * MIB {
                    fill_pattern(100 + t, base + off, &mut buf);
                    f.write_all_at(&buf, base + off).unwrap();
                    f.read_exact_at(&mut back, base + off).unwrap();
                    assert!(
                        back == buf,
                        "thread {t}: read back differs at {}",
                        base + off
                    );
                    off += bs * 3;
                }
            })
        })
        .collect();
    for h in hs {
        h.join().unwrap();
    }
    // A hole reads as zeros, the end of the volume is the end of the file.
    let f = fs::File::open(&vol).unwrap();
    let mut z = vec![1u8; 65536];
    f.read_exact_at(&mut z, 90 * MIB).unwrap();
    assert!(z.iter().all(|&b| b == 0), "a hole read as non-zero");
    let mut past = [0u8; 16];
    assert_eq!(
        f.read_at(&mut past, 96 * MIB).unwrap(),
        0,
        "read past the end"
    );
    drop(f);

    let ring = thread_switches(pid, "fuser-ring-") - ring_before;
    let dev = thread_switches(pid, "fuser-") - dev_before - ring;
    assert!(
        ring > 100 && dev < ring / 10,
        "requests did not go through the rings: ring threads woke {ring} times, /dev/fuse \
         workers {dev} times"
    );
    p.stop();
    p.check_clean();
}

/// The kernel refuses the rings (test builds register entries smaller than its requests,
/// REGISTER fails with EINVAL): the daemon says so and serves through /dev/fuse.
#[cfg(feature = "failpoints")]
#[test]
fn refused_rings_fall_back_to_dev_fuse_with_the_reason_logged() {
    let mut p = TestPool::init(ARRAYS, "64K");
    p.daemon_args = vec!["--uring".into()];
    p.start_env(&[("FAILPOINTS", "fuse::uring::short_payload=return")]);
    let line = transport_line(&p);
    assert!(
        line.contains("FUSE over io_uring not used")
            && line.contains("refused FUSE_IO_URING_CMD_REGISTER")
            && line.contains("/dev/fuse"),
        "no fall-back reason logged: {line}"
    );
    p.create_volume("v", "32M");
    let vol = p.vol("v");
    write_pattern(&vol, 5, 0, 8 * MIB, true);
    verify_pattern(&vol, 5, 0, 8 * MIB, true);
    write_pattern(&vol, 6, 8 * MIB, 4 * MIB, false);
    verify_pattern(&vol, 6, 8 * MIB, 4 * MIB, false);
    p.stop();
    p.check_clean();
}
