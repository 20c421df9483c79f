//! `fusevol stats`: the router's counters agree with what dd moved through the mount.

mod common;

use std::process::Command;

use common::*;
use serde_json::Value;

fn stats(p: &TestPool, vol: &str) -> Value {
    let v = p.cli_json(&["stats", vol]);
    assert_eq!(v.as_array().map(Vec::len), Some(1), "{v}");
    v[0].clone()
}

fn dd(args: &[&str]) {
    let out = run(Command::new("dd").args(args), CLI_TIMEOUT);
    assert!(out.status.success(), "dd {args:?}: {}", describe(&out));
}

#[test]
fn counters_match_dd_and_errors_are_counted_by_kind() {
    let p = TestPool::new(&["a0:256M", "a1:256M"], "256K");
    p.create_volume("data", "32M");
    p.create_volume("idle", "8M");
    let vol = p.vol("data");
    let path = vol.to_str().unwrap();
    let of = format!("of={path}");
    let iff = format!("if={path}");
    dd(&[
        "if=/dev/urandom",
        &of,
        "bs=1M",
        "count=8",
        "oflag=direct",
        "conv=notrunc",
    ]);
    dd(&[&iff, "of=/dev/null", "bs=1M", "count=4", "iflag=direct"]);
    let s = stats(&p, "data");
    assert_eq!(s["volume"], "data");
    let wb = s["write_bytes"].as_u64().unwrap();
    assert_eq!(wb, 8 << 20, "{s}");
    assert!(s["writes"].as_u64().unwrap() >= 8, "{s}");
    let rb = s["read_bytes"].as_u64().unwrap();
    assert!((4 << 20..=(4 << 20) + (4 << 20) / 100).contains(&rb), "{s}");
    let wl = &s["write_latency"];
    assert_eq!(wl["count"], s["writes"], "{s}");
    let (p50, p99, max) = (
        wl["p50_us"].as_f64().unwrap(),
        wl["p99_us"].as_f64().unwrap(),
        wl["max_us"].as_f64().unwrap(),
    );
    assert!(0.0 < p50 && p50 <= p99 && p99 <= max, "{s}");
    assert!(s["errors"].as_object().unwrap().is_empty(), "{s}");

    // A write past the end fails with ENOSPC and counts as beyond_end.
    let out = run(
        Command::new("dd").args([
            "if=/dev/zero",
            &of,
            "bs=1M",
            "count=1",
            "seek=32",
            "oflag=direct",
            "conv=notrunc",
        ]),
        CLI_TIMEOUT,
    );
    assert!(!out.status.success(), "{}", describe(&out));
    let s = stats(&p, "data");
    assert!(s["errors"]["beyond_end"].as_u64().unwrap_or(0) >= 1, "{s}");
    // A discard (punch hole) is counted.
    let out = run(
        Command::new("fallocate").args(["-p", "-o", "0", "-l", "1M", path]),
        CLI_TIMEOUT,
    );
    assert!(out.status.success(), "{}", describe(&out));
    let s = stats(&p, "data");
    assert_eq!(s["discards"].as_u64(), Some(1), "{s}");
    assert_eq!(s["discard_bytes"].as_u64(), Some(1 << 20), "{s}");
    // The other volume saw nothing; the table lists both.
    assert_eq!(stats(&p, "idle")["writes"].as_u64(), Some(0));
    let table = p.cli_ok(&["stats"]);
    assert!(
        table.contains("VOLUME") && table.contains("data") && table.contains("idle"),
        "{table}"
    );
    assert!(table.contains("beyond_end=1"), "{table}");
    // An unknown volume is not found (exit 1).
    assert_eq!(p.cli(&["stats", "nope"]).status.code(), Some(1));
}

/// The arrays' counters: what the daemon wrote to and read from each array file, with
/// fdatasyncs, in `stats --arrays --json`, in the plain table, and per array.
#[test]
fn array_counters_see_the_daemons_io() {
    let p = TestPool::new(&["a0:256M", "a1:256M"], "256K");
    p.create_volume("data", "32M");
    let arrays = |p: &TestPool| -> Vec<Value> {
        let v = p.cli_json(&["stats", "--arrays"]);
        v.as_array().unwrap_or_else(|| panic!("{v}")).clone()
    };
    let sum = |a: &[Value], k: &str| a.iter().map(|x| x[k].as_u64().unwrap()).sum::<u64>();
    let before = arrays(&p);
    assert_eq!(
        before
            .iter()
            .map(|a| a["array"].as_str().unwrap())
            .collect::<Vec<_>>(),
        ["a0", "a1"],
        "{before:?}"
    );
    let vol = p.vol("data");
    let path = vol.to_str().unwrap();
    dd(&[
        "if=/dev/urandom",
        &format!("of={path}"),
        "bs=1M",
        "count=8",
        "oflag=direct",
        "conv=notrunc,fsync",
    ]);
    p.cli_ok(&["sync"]);
    let after = arrays(&p);
    let written = sum(&after, "write_bytes") - sum(&before, "write_bytes");
    // 1 MiB writes of whole 256 KiB extents: exactly the data, on both arrays (the
    // allocator spreads extents).
    assert_eq!(written, 8 << 20, "{after:?}");
    assert!(
        after.iter().all(|a| a["write_bytes"].as_u64().unwrap() > 0),
        "{after:?}"
    );
    assert!(sum(&after, "syncs") > sum(&before, "syncs"), "{after:?}");
    for a in &after {
        let wl = &a["write_latency"];
        assert_eq!(wl["count"], a["writes"], "{a}");
        assert!(wl["p50_us"].as_f64().unwrap() > 0.0, "{a}");
        assert_eq!(a["errors"], 0, "{a}");
    }
    dd(&[
        &format!("if={path}"),
        "of=/dev/null",
        "bs=1M",
        "count=4",
        "iflag=direct",
    ]);
    let read = sum(&arrays(&p), "read_bytes") - sum(&after, "read_bytes");
    assert!(
        (4 << 20..=5 << 20).contains(&read),
        "read {read} bytes from the arrays for 4 MiB"
    );
    let table = p.cli_ok(&["stats"]);
    assert!(
        table.contains("VOLUME") && table.contains("ARRAY") && table.contains("a1"),
        "{table}"
    );
    // With one volume named, only its row.
    assert!(!p.cli_ok(&["stats", "data"]).contains("ARRAY"));
}
