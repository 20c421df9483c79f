//! fio with --verify=crc32c against a volume file: psync buffered and O_DIRECT, libaio at
//! QD16, several jobs on separate ranges; and a verify-only pass after a daemon restart.

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;
use serde_json::Value;

const ARRAYS: &[&str] = &["a0:256M", "a1:256M", "a2:256M"];
const FIO_TIMEOUT: Duration = Duration::from_secs(300);

/// Run fio on `file` with the common verify options plus `extra`; requires exit 0, no job
/// error, and that every written byte was read back by the verify phase.
fn fio_verify(p: &TestPool, file: &std::path::Path, name: &str, extra: &[&str]) -> Value {
    let mut c = Command::new(tool("fio"));
    c.arg(format!("--name={name}"))
        .arg(format!("--filename={}", file.display()))
        .args([
            "--verify=crc32c",
            "--verify_fatal=1",
            "--do_verify=1",
            "--output-format=json",
            "--group_reporting=0",
        ])
        .args(extra)
        .current_dir(p.root());
    let out = run(&mut c, FIO_TIMEOUT);
    let stdout = text(&out.stdout);
    let desc = format!("fio {name} {extra:?}");
    assert!(
        out.status.success(),
        "{desc} failed: {}\nstdout:\n{}",
        describe(&out),
        &stdout[..stdout.len().min(4000)]
    );
    let stderr = text(&out.stderr).to_lowercase();
    assert!(
        !stderr.contains("verify") && !stderr.contains("bad magic") && !stderr.contains("crc"),
        "{desc} reported verify problems: {stderr}"
    );
    // fio may print notes before the JSON document.
    let start = stdout.find('{').expect("fio printed no JSON");
    let v: Value = serde_json::from_str(&stdout[start..])
        .unwrap_or_else(|e| panic!("{desc}: cannot parse fio JSON: {e}"));
    let jobs = v["jobs"].as_array().expect("fio jobs");
    assert!(!jobs.is_empty());
    for j in jobs {
        assert_eq!(
            j["error"].as_i64(),
            Some(0),
            "{desc}: job error in {}",
            j["jobname"]
        );
    }
    v
}

fn totals(v: &Value) -> (u64, u64) {
    let jobs = v["jobs"].as_array().unwrap();
    let w = jobs
        .iter()
        .map(|j| j["write"]["io_bytes"].as_u64().unwrap())
        .sum();
    let r = jobs
        .iter()
        .map(|j| j["read"]["io_bytes"].as_u64().unwrap())
        .sum();
    (w, r)
}

fn assert_written_and_verified(v: &Value, bytes: u64, what: &str) {
    let (w, r) = totals(v);
    assert_eq!(w, bytes, "{what}: fio wrote {w} bytes, expected {bytes}");
    assert_eq!(
        r, bytes,
        "{what}: the verify phase read {r} of {bytes} bytes"
    );
}

#[test]
fn fio_psync_buffered_verify() {
    let p = TestPool::new(ARRAYS, "256K");
    p.create_volume("v", "256M");
    let vol = p.vol("v");
    let v = fio_verify(
        &p,
        &vol,
        "psync-buffered-rand",
        &[
            "--ioengine=psync",
            "--direct=0",
            "--rw=randwrite",
            "--bsrange=4k-64k",
            "--size=96M",
            "--fsync=32",
        ],
    );
    assert_written_and_verified(&v, 96 * MIB, "psync buffered randwrite");
    let v = fio_verify(
        &p,
        &vol,
        "psync-buffered-seq",
        &[
            "--ioengine=psync",
            "--direct=0",
            "--rw=write",
            "--bs=1M",
            "--offset=128M",
            "--size=64M",
            "--end_fsync=1",
        ],
    );
    assert_written_and_verified(&v, 64 * MIB, "psync buffered 1M sequential");
}

#[test]
fn fio_psync_direct_verify_and_verify_after_restart() {
    let mut p = TestPool::new(ARRAYS, "256K");
    p.create_volume("v", "256M");
    let vol = p.vol("v");
    let job = [
        "--ioengine=psync",
        "--direct=1",
        "--rw=randwrite",
        "--bs=64k",
        "--size=128M",
        "--randseed=4242",
    ];
    let v = fio_verify(&p, &vol, "psync-direct", &job);
    assert_written_and_verified(&v, 128 * MIB, "psync direct randwrite");
    // Write everything again with another block size and seed without verifying, restart the
    // daemon, then verify only: a lost rewrite leaves 64k headers where 128k ones are wanted
    // (fio's header check catches stale blocks only through length/offset/crc).
    let rewrite = [
        "--ioengine=psync",
        "--direct=1",
        "--rw=randwrite",
        "--bs=128k",
        "--size=128M",
        "--randseed=777",
    ];
    let mut c = Command::new(tool("fio"));
    c.arg("--name=rewrite")
        .arg(format!("--filename={}", vol.display()))
        .args(["--verify=crc32c", "--do_verify=0", "--end_fsync=1"])
        .args(rewrite)
        .current_dir(p.root());
    let out = run(&mut c, FIO_TIMEOUT);
    assert!(out.status.success(), "fio rewrite: {}", describe(&out));
    p.restart();
    let mut verify_only: Vec<&str> = rewrite.to_vec();
    verify_only.push("--verify_only");
    let v = fio_verify(&p, &vol, "rewrite", &verify_only);
    let (_, r) = totals(&v);
    assert_eq!(r, 128 * MIB, "verify_only after restart read {r} bytes");
}

#[test]
fn fio_libaio_qd16_direct_verify() {
    let p = TestPool::new(ARRAYS, "256K");
    p.create_volume("v", "256M");
    let vol = p.vol("v");
    let v = fio_verify(
        &p,
        &vol,
        "libaio-qd16-4k",
        &[
            "--ioengine=libaio",
            "--direct=1",
            "--iodepth=16",
            "--rw=randwrite",
            "--bs=4k",
            "--size=64M",
        ],
    );
    assert_written_and_verified(&v, 64 * MIB, "libaio QD16 4k randwrite");
    let v = fio_verify(
        &p,
        &vol,
        "libaio-qd16-1m",
        &[
            "--ioengine=libaio",
            "--direct=1",
            "--iodepth=16",
            "--rw=write",
            "--bs=1M",
            "--offset=128M",
            "--size=128M",
        ],
    );
    assert_written_and_verified(&v, 128 * MIB, "libaio QD16 1M sequential");
}

#[test]
fn fio_four_jobs_on_separate_ranges_verify() {
    let p = TestPool::new(ARRAYS, "256K");
    p.create_volume("v", "256M");
    let vol = p.vol("v");
    let v = fio_verify(
        &p,
        &vol,
        "four-jobs-direct",
        &[
            "--ioengine=libaio",
            "--direct=1",
            "--iodepth=4",
            "--numjobs=4",
            "--rw=randwrite",
            "--bs=16k",
            "--size=32M",
            "--offset_increment=32M",
        ],
    );
    assert_eq!(v["jobs"].as_array().unwrap().len(), 4);
    assert_written_and_verified(&v, 128 * MIB, "4 jobs libaio direct");
    let v = fio_verify(
        &p,
        &vol,
        "four-jobs-buffered",
        &[
            "--ioengine=psync",
            "--direct=0",
            "--numjobs=4",
            "--rw=randwrite",
            "--bs=8k",
            "--offset=128M",
            "--size=32M",
            "--offset_increment=32M",
            "--fsync=64",
        ],
    );
    assert_eq!(v["jobs"].as_array().unwrap().len(), 4);
    assert_written_and_verified(&v, 128 * MIB, "4 jobs psync buffered");
    let info = p.volume_info("v");
    assert_eq!(
        info["allocated"].as_u64(),
        Some(256 * MIB),
        "every extent of the volume was written: {info}"
    );
}
