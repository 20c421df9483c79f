//! Volume management through the CLI and the control socket, daemon life cycle, exit codes.

mod common;

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::*;
use serde_json::Value;

const ARRAYS: &[&str] = &["a0:256M", "a1:256M", "a2:256M"];

fn small_pool() -> TestPool {
    TestPool::new(ARRAYS, "256K")
}

fn code(out: &std::process::Output) -> i32 {
    out.status.code().unwrap_or(-1)
}

fn names(list: &Value) -> Vec<String> {
    list.as_array()
        .expect("volume list is a JSON array")
        .iter()
        .map(|v| v["name"].as_str().expect("VolumeInfo.name").to_string())
        .collect()
}

/// Volume files in the mount (the `.snapshots` directory of DESIGN.md left out).
fn mount_entries(p: &TestPool) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(p.mnt())
        .expect("readdir mount")
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n != ".snapshots")
        .collect();
    v.sort();
    v
}

/// Issue 19 item 7: a typo must not destroy data. A shrink needs `--allow-shrink` and is
/// refused while the volume file is open (a loop device or a mounted file system would lose
/// its tail); growing needs neither.
#[test]
fn shrink_needs_allow_shrink_and_a_closed_volume() {
    let p = small_pool();
    p.create_volume("x", "64M");
    write_pattern(&p.vol("x"), 3, 40 * MIB, MIB, true);
    let out = p.cli(&["volume", "resize", "x", "--size", "32M"]);
    assert_eq!(
        code(&out),
        1,
        "shrink without --allow-shrink: {}",
        describe(&out)
    );
    assert!(
        text(&out.stderr).contains("--allow-shrink"),
        "the refusal names the flag: {}",
        describe(&out)
    );
    assert_eq!(p.volume_info("x")["size"].as_u64(), Some(64 * MIB));
    verify_pattern(&p.vol("x"), 3, 40 * MIB, MIB, true);

    // Open (as a loop device or a mounted file system holds it): refused even with the flag.
    let held = open_rw(&p.vol("x"), false).unwrap();
    let out = p.cli(&["volume", "resize", "x", "--size", "32M", "--allow-shrink"]);
    assert_eq!(
        code(&out),
        1,
        "shrink of an open volume: {}",
        describe(&out)
    );
    assert!(
        text(&out.stderr).contains("open"),
        "the refusal says the volume is open: {}",
        describe(&out)
    );
    assert_eq!(p.volume_info("x")["size"].as_u64(), Some(64 * MIB));
    // Growing an open volume is fine, and needs no flag.
    p.cli_ok(&["volume", "resize", "x", "--size", "96M"]);
    assert_eq!(p.volume_info("x")["size"].as_u64(), Some(96 * MIB));
    drop(held);
    verify_pattern(&p.vol("x"), 3, 40 * MIB, MIB, true);

    // Closed and with the flag: shrunk.
    p.cli_ok(&["volume", "resize", "x", "--size", "32M", "--allow-shrink"]);
    assert_eq!(p.volume_info("x")["size"].as_u64(), Some(32 * MIB));
    assert_eq!(fs::metadata(p.vol("x")).unwrap().len(), 32 * MIB);
}

#[test]
fn volume_lifecycle_create_list_info_resize_delete() {
    let p = small_pool();
    let v = p.create_volume("vol0", "64M");
    for key in [
        "id",
        "name",
        "size",
        "tier",
        "allocated",
        "created",
        "open_handles",
        "extents_per_array",
    ] {
        assert!(v.get(key).is_some(), "VolumeInfo lacks {key}: {v}");
    }
    assert_eq!(v["name"], "vol0");
    assert_eq!(v["size"].as_u64(), Some(64 * MIB));
    assert_eq!(v["tier"], "fast");
    assert_eq!(
        v["allocated"].as_u64(),
        Some(0),
        "a new volume is thin: {v}"
    );
    assert_eq!(mount_entries(&p), vec!["vol0".to_string()]);
    assert!(fs::metadata(p.vol("vol0")).unwrap().is_file());

    p.create_volume("vol1", "32M");
    let list = p.cli_json(&["volume", "list"]);
    let mut n = names(&list);
    n.sort();
    assert_eq!(n, vec!["vol0", "vol1"]);
    // The human listing names the volumes too.
    let human = p.cli_ok(&["volume", "list"]);
    assert!(human.contains("vol0") && human.contains("vol1"), "{human}");

    // Data, then shrink below it and grow again: the cut-off range must come back as zeros.
    write_pattern(&p.vol("vol0"), 7, 60 * MIB, MIB, false);
    let info = p.volume_info("vol0");
    assert_eq!(info["allocated"].as_u64(), Some(MIB), "{info}");
    let r = p.cli_json(&["volume", "resize", "vol0", "--size", "128M"]);
    assert_eq!(r["size"].as_u64(), Some(128 * MIB));
    assert_eq!(fs::metadata(p.vol("vol0")).unwrap().len(), 128 * MIB);
    verify_pattern(&p.vol("vol0"), 7, 60 * MIB, MIB, true);
    verify_zeros(&p.vol("vol0"), 64 * MIB, 64 * MIB, true);
    p.cli_ok(&[
        "volume",
        "resize",
        "vol0",
        "--size",
        "32M",
        "--allow-shrink",
    ]);
    assert_eq!(fs::metadata(p.vol("vol0")).unwrap().len(), 32 * MIB);
    let info = p.volume_info("vol0");
    assert_eq!(info["size"].as_u64(), Some(32 * MIB));
    assert_eq!(
        info["allocated"].as_u64(),
        Some(0),
        "shrinking must free the extents past the end: {info}"
    );
    p.cli_ok(&["volume", "resize", "vol0", "--size", "64M"]);
    verify_zeros(&p.vol("vol0"), 32 * MIB, 32 * MIB, true);
    verify_zeros(&p.vol("vol0"), 32 * MIB, 32 * MIB, false);
    // A shrink to a size inside an extent: after growing again, the cut-off tail of that
    // extent must read as zeros, not as the old data.
    write_pattern(&p.vol("vol0"), 8, 16 * MIB, MIB, true);
    let cut = 16 * MIB + 12800;
    p.cli_ok(&[
        "volume",
        "resize",
        "vol0",
        "--size",
        &cut.to_string(),
        "--allow-shrink",
    ]);
    assert_eq!(fs::metadata(p.vol("vol0")).unwrap().len(), cut);
    p.cli_ok(&["volume", "resize", "vol0", "--size", "64M"]);
    let got = read_range(&p.vol("vol0"), 16 * MIB, MIB, true);
    assert_eq!(check_pattern(8, 16 * MIB, &got[..12800]), None);
    assert!(
        got[12800..].iter().all(|&b| b == 0),
        "bytes cut off by a shrink inside an extent came back after growing"
    );
    let got = read_range(&p.vol("vol0"), 16 * MIB, 12800, false);
    assert_eq!(check_pattern(8, 16 * MIB, &got), None);
    verify_zeros(&p.vol("vol0"), cut, 17 * MIB - cut, false);

    // Delete.
    let out = p.cli(&["volume", "delete", "vol1"]);
    assert_eq!(code(&out), 0, "{}", describe(&out));
    assert!(!p.vol("vol1").exists(), "deleted volume still in the mount");
    assert_eq!(names(&p.cli_json(&["volume", "list"])), vec!["vol0"]);
    let out = p.cli(&["volume", "info", "vol1"]);
    assert_eq!(
        code(&out),
        1,
        "info of a deleted volume: {}",
        describe(&out)
    );
    assert!(text(&out.stderr).contains("vol1"), "{}", describe(&out));
    let out = p.cli(&["volume", "delete", "vol1"]);
    assert_eq!(
        code(&out),
        1,
        "delete of a deleted volume: {}",
        describe(&out)
    );

    // Everything survives a restart.
    let mut p = p;
    p.restart();
    assert_eq!(names(&p.cli_json(&["volume", "list"])), vec!["vol0"]);
    assert_eq!(fs::metadata(p.vol("vol0")).unwrap().len(), 64 * MIB);
    verify_zeros(&p.vol("vol0"), 0, 16 * MIB, true);
    let got = read_range(&p.vol("vol0"), 16 * MIB, MIB, true);
    assert_eq!(check_pattern(8, 16 * MIB, &got[..12800]), None);
    assert!(got[12800..].iter().all(|&b| b == 0));
    verify_zeros(&p.vol("vol0"), 17 * MIB, 47 * MIB, true);
    p.stop();
    p.check_clean();
}

#[test]
fn bad_names_are_refused() {
    let p = small_pool();
    let long = "x".repeat(256);
    let bad: Vec<(&str, String)> = vec![
        ("empty", String::new()),
        ("dot", ".".into()),
        ("dotdot", "..".into()),
        ("slash", "a/b".into()),
        ("parent path", "../x".into()),
        ("leading slash", "/abs".into()),
        ("256 bytes", long.clone()),
        ("the mount's .snapshots directory", ".snapshots".into()),
    ];
    for (kind, name) in &bad {
        let out = p.cli(&["volume", "create", name, "--size", "64M"]);
        assert_eq!(
            code(&out),
            1,
            "volume create with a bad name ({kind}: {name:?}) must be refused by the daemon with exit 1: {}",
            describe(&out)
        );
        assert!(
            !text(&out.stderr).trim().is_empty(),
            "no message for bad name ({kind})"
        );
    }
    // The daemon itself refuses them too (not only the CLI), with code "invalid"; a NUL
    // byte can only be sent this way.
    let mut raw = bad.clone();
    raw.push(("NUL byte", "a\0b".into()));
    for (kind, name) in &raw {
        let req = serde_json::json!({"op": "volume_create", "name": name, "size": 64 * MIB});
        let resp = raw_request(p.pool(), format!("{req}\n").as_bytes())
            .unwrap_or_else(|| panic!("no answer to volume_create with bad name ({kind})"));
        let v: Value = serde_json::from_str(&resp).expect("response is JSON");
        assert_eq!(v["ok"], false, "daemon accepted bad name ({kind}): {resp}");
        assert_eq!(v["error"]["code"], "invalid", "({kind}): {resp}");
    }
    assert!(
        names(&p.cli_json(&["volume", "list"])).is_empty(),
        "a bad name created a volume"
    );
    assert!(mount_entries(&p).is_empty(), "{:?}", mount_entries(&p));

    // 255 bytes is the limit and is accepted.
    let ok = "y".repeat(255);
    p.create_volume(&ok, "64M");
    assert!(p.vol(&ok).is_file());

    // Duplicates.
    p.create_volume("dup", "64M");
    let out = p.cli(&["volume", "create", "dup", "--size", "32M"]);
    assert_eq!(code(&out), 1, "duplicate name: {}", describe(&out));
    let err = text(&out.stderr).to_lowercase();
    assert!(
        err.contains("dup") && err.contains("exist"),
        "duplicate message should name the volume and say it exists: {err}"
    );
    assert_eq!(
        p.volume_info("dup")["size"].as_u64(),
        Some(64 * MIB),
        "duplicate create changed the existing volume"
    );
}

#[test]
fn delete_of_open_volume_is_refused() {
    let p = small_pool();
    p.create_volume("busy", "64M");
    write_pattern(&p.vol("busy"), 3, 0, MIB, false);
    let f = File::open(p.vol("busy")).expect("open volume");
    let info = p.volume_info("busy");
    assert!(
        info["open_handles"].as_u64().unwrap_or(0) >= 1,
        "open_handles should count the open file: {info}"
    );
    let out = p.cli(&["volume", "delete", "busy"]);
    assert_eq!(
        code(&out),
        1,
        "delete of an open volume: {}",
        describe(&out)
    );
    assert!(
        text(&out.stderr).to_lowercase().contains("busy")
            || text(&out.stderr).to_lowercase().contains("open"),
        "message should say the volume is busy/open: {}",
        describe(&out)
    );
    assert!(p.vol("busy").exists());
    // Still readable through the open handle.
    let mut buf = vec![0u8; 4096];
    use std::os::unix::fs::FileExt;
    f.read_exact_at(&mut buf, 0).unwrap();
    assert_eq!(check_pattern(3, 0, &buf), None);
    drop(f);
    // RELEASE reaches the daemon asynchronously after close.
    let out = p
        .handle()
        .delete_volume_retry("busy", Duration::from_secs(10));
    assert_eq!(
        code(&out),
        0,
        "delete after close should succeed: {}",
        describe(&out)
    );
    assert!(!p.vol("busy").exists());
    // Freed extents return to the pool once their free record is durable (next flush).
    let h = p.handle();
    wait_until(
        "pool used to drop to 0 after deleting the only volume",
        Duration::from_secs(5),
        || h.pool_info()["used"].as_u64() == Some(0),
    );
}

#[test]
fn json_outputs_parse_and_agree() {
    let p = small_pool();
    let pi = p.pool_info();
    for key in [
        "pool_id",
        "path",
        "mountpoint",
        "extent_size",
        "capacity",
        "used",
        "free",
        "provisioned",
        "arrays",
        "volumes",
    ] {
        assert!(pi.get(key).is_some(), "PoolInfo lacks {key}: {pi}");
    }
    assert_eq!(pi["extent_size"].as_u64(), Some(256 * KIB));
    assert_eq!(
        Path::new(pi["mountpoint"].as_str().unwrap()),
        p.mnt(),
        "{pi}"
    );
    assert_eq!(
        fs::canonicalize(pi["path"].as_str().unwrap()).unwrap(),
        p.pool()
    );
    let arrays = p.cli_json(&["array", "list"]);
    let arr = arrays.as_array().unwrap();
    assert_eq!(arr.len(), 3, "{arrays}");
    for a in arr {
        for key in [
            "id", "name", "tier", "path", "capacity", "used", "free", "on_disk",
        ] {
            assert!(a.get(key).is_some(), "ArrayInfo lacks {key}: {a}");
        }
        let cap = a["capacity"].as_u64().unwrap();
        assert!(
            (250 * MIB..=256 * MIB).contains(&cap),
            "capacity of a 256M array: {a}"
        );
        assert_eq!(a["used"].as_u64(), Some(0));
        assert_eq!(a["free"].as_u64(), Some(cap));
        assert!(Path::new(a["path"].as_str().unwrap()).is_file(), "{a}");
    }
    assert_eq!(
        pi["capacity"].as_u64().unwrap(),
        sum_field(&arrays, "capacity")
    );
    assert_eq!(pi["free"].as_u64().unwrap(), sum_field(&arrays, "free"));

    p.create_volume("j0", "64M");
    p.create_volume("j1", "128M");
    write_pattern(&p.vol("j1"), 1, 0, 2 * MIB, true);
    let pi = p.pool_info();
    assert_eq!(pi["volumes"].as_u64(), Some(2));
    assert_eq!(pi["provisioned"].as_u64(), Some(192 * MIB));
    assert_eq!(pi["used"].as_u64(), Some(2 * MIB), "{pi}");
    assert_eq!(
        pi["capacity"].as_u64().unwrap(),
        pi["used"].as_u64().unwrap() + pi["free"].as_u64().unwrap()
    );
    let j1 = p.volume_info("j1");
    assert_eq!(j1["allocated"].as_u64(), Some(2 * MIB));
    let per: u64 = j1["extents_per_array"]
        .as_array()
        .expect("extents_per_array is an array")
        .iter()
        .map(|e| e[1].as_u64().expect("[name, n]"))
        .sum();
    assert_eq!(per, 8, "2 MiB = 8 extents of 256K: {j1}");

    // Array add on the live pool.
    let added = p.cli_json(&["array", "add", "a3", "--size", "64M", "--tier", "slow"]);
    assert_eq!(added["name"], "a3");
    assert_eq!(added["tier"], "slow");
    assert!(Path::new(added["path"].as_str().unwrap()).is_file());
    let pi2 = p.pool_info();
    assert_eq!(
        pi2["capacity"].as_u64().unwrap(),
        pi["capacity"].as_u64().unwrap() + added["capacity"].as_u64().unwrap()
    );
    let out = p.cli(&["array", "add", "a3", "--size", "64M"]);
    assert_eq!(code(&out), 1, "duplicate array name: {}", describe(&out));
    let human = p.cli_ok(&["array", "list"]);
    assert!(human.contains("a3") && human.contains("slow"), "{human}");
    let human = p.cli_ok(&["pool", "info"]);
    assert!(!human.trim().is_empty());
    // The new array persists.
    let mut p = p;
    p.restart();
    let arrays = p.cli_json(&["array", "list"]);
    assert_eq!(arrays.as_array().unwrap().len(), 4, "{arrays}");
    verify_pattern(&p.vol("j1"), 1, 0, 2 * MIB, true);
}

/// Send raw bytes on a fresh control connection and read one answer line (None: closed).
fn raw_request(pool: &Path, bytes: &[u8]) -> Option<String> {
    let mut s = UnixStream::connect(pool.join("control.sock")).expect("connect control.sock");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.set_write_timeout(Some(Duration::from_secs(10))).unwrap();
    if s.write_all(bytes).is_err() {
        return None;
    }
    let _ = s.shutdown(std::net::Shutdown::Write);
    let mut resp = Vec::new();
    let mut b = [0u8; 4096];
    loop {
        match s.read(&mut b) {
            Ok(0) => break,
            Ok(n) => {
                resp.extend_from_slice(&b[..n]);
                if resp.contains(&b'\n') {
                    break;
                }
            }
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut =>
            {
                panic!(
                    "no answer within 10 s to {:?}",
                    String::from_utf8_lossy(&bytes[..bytes.len().min(80)])
                )
            }
            Err(_) => break,
        }
    }
    if resp.is_empty() {
        None
    } else {
        let line = resp.split(|&c| c == b'\n').next().unwrap();
        Some(String::from_utf8_lossy(line).into_owned())
    }
}

#[test]
fn malformed_control_requests_get_errors_and_daemon_keeps_serving() {
    let mut p = small_pool();
    let cases: Vec<Vec<u8>> = vec![
        b"garbage\n".to_vec(),
        b"{}\n".to_vec(),
        b"[]\n".to_vec(),
        b"null\n".to_vec(),
        b"{\"op\":\"no_such_op\"}\n".to_vec(),
        b"{\"op\":\"volume_create\",\"name\":\"x\",\"size\":\"big\"}\n".to_vec(),
        b"{\"op\":\"volume_create\",\"name\":\"x\",\"size\":-1}\n".to_vec(),
        b"{\"op\":\"volume_create\",\"name\":\"x\",\"size\":1048576,\"evil\":1}\n".to_vec(),
        b"{\"op\":\"volume_create\",\"name\":\"x\"}\n".to_vec(),
        b"{\"op\":\"volume_create\",\"name\":\"x\",\"size\":99999999999999999999999}\n".to_vec(),
        b"{\"op\":\"volume_delete\",\"name\":\"../../etc\"}\n".to_vec(),
        b"{\"op\":\"volume_resize\",\"name\":\"nosuch\",\"size\":1048576}\n".to_vec(),
        b"{\"op\":\"array_add\",\"name\":\"../evil\",\"size\":67108864,\"tier\":\"fast\"}\n"
            .to_vec(),
        vec![0xff, 0xfe, 0x00, 0x01, b'\n'],
        b"{\"op\":\"ping\"".to_vec(), // unterminated, then EOF
    ];
    for c in &cases {
        let shown = String::from_utf8_lossy(c).into_owned();
        if let Some(resp) = raw_request(p.pool(), c) {
            let v: Value = serde_json::from_str(&resp)
                .unwrap_or_else(|e| panic!("answer to {shown:?} is not JSON ({e}): {resp}"));
            assert_eq!(
                v["ok"], false,
                "malformed request {shown:?} was accepted: {resp}"
            );
            let code = v["error"]["code"].as_str().unwrap_or("");
            assert!(
                !code.is_empty() && !v["error"]["message"].as_str().unwrap_or("").is_empty(),
                "error without code/message for {shown:?}: {resp}"
            );
        }
        assert!(p.is_running(), "daemon died after {shown:?}");
    }
    // A huge line without a newline must not take the daemon down either.
    {
        let mut s = UnixStream::connect(p.pool().join("control.sock")).unwrap();
        s.set_write_timeout(Some(Duration::from_secs(5))).unwrap();
        let junk = vec![b'a'; 8 << 20];
        let _ = s.write_all(&junk);
    }
    assert!(p.is_running(), "daemon died after an 8 MiB line");
    assert!(!p.vol("x").exists(), "a malformed request created a volume");
    assert!(!p.pool().join("evil").exists() && !p.root().join("evil").exists());

    // A client that connects and says nothing must not block others.
    let mut idle = UnixStream::connect(p.pool().join("control.sock")).unwrap();
    idle.write_all(b"{\"op\":").unwrap();
    let mut c = Command::new(fusevol_bin());
    c.arg("-p").arg(p.pool()).args(["--json", "pool", "info"]);
    let out = run(&mut c, Duration::from_secs(15));
    assert!(out.status.success(), "{}", describe(&out));
    // A well-formed request on the raw socket works.
    let resp = raw_request(p.pool(), b"{\"op\":\"ping\"}\n").expect("answer to ping");
    let v: Value = serde_json::from_str(&resp).unwrap();
    assert_eq!(v["ok"], true, "{resp}");
    // Two requests on one connection.
    {
        let mut s = UnixStream::connect(p.pool().join("control.sock")).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(b"{\"op\":\"ping\"}\n{\"op\":\"volume_list\"}\n")
            .unwrap();
        let mut all = String::new();
        let mut b = [0u8; 4096];
        while all.matches('\n').count() < 2 {
            let n = s.read(&mut b).expect("read two answers");
            assert!(n > 0, "connection closed after {all:?}");
            all.push_str(&String::from_utf8_lossy(&b[..n]));
        }
        for line in all.lines().take(2) {
            let v: Value = serde_json::from_str(line).unwrap();
            assert_eq!(v["ok"], true, "{line}");
        }
    }
    drop(idle);
    p.create_volume("after", "64M");
    write_pattern(&p.vol("after"), 5, 0, MIB, false);
    verify_pattern(&p.vol("after"), 5, 0, MIB, true);
    p.stop();
}

#[test]
fn exit_codes() {
    let mut p = TestPool::init(ARRAYS, "256K");
    // A pool that no daemon serves: exit 3.
    let out = p.cli(&["pool", "info"]);
    assert_eq!(code(&out), 3, "no daemon: {}", describe(&out));
    assert!(!text(&out.stderr).trim().is_empty());
    let out = p.cli(&["--json", "volume", "list"]);
    assert_eq!(code(&out), 3, "no daemon: {}", describe(&out));
    let mut c = Command::new(fusevol_bin());
    c.args(["-p", "/nonexistent/fusevol/pool", "pool", "info"]);
    let out = run(&mut c, CLI_TIMEOUT);
    assert!(
        matches!(code(&out), 3 | 4),
        "nonexistent pool: {}",
        describe(&out)
    );
    // Usage errors: exit 2.
    for args in [
        vec!["frobnicate"],
        vec!["volume", "create", "x"],
        vec!["volume", "create", "x", "--size", "12X"],
        vec!["volume", "resize", "x"],
    ] {
        let out = p.cli(&args);
        assert_eq!(code(&out), 2, "usage error {args:?}: {}", describe(&out));
    }
    p.start();
    // FUSEVOL_POOL finds the pool.
    let mut c = Command::new(fusevol_bin());
    c.env("FUSEVOL_POOL", p.pool())
        .args(["--json", "pool", "info"]);
    let out = run(&mut c, CLI_TIMEOUT);
    assert_eq!(code(&out), 0, "FUSEVOL_POOL: {}", describe(&out));
    // Daemon errors: exit 1.
    let out = p.cli(&["volume", "info", "nosuch"]);
    assert_eq!(code(&out), 1, "{}", describe(&out));
    let out = p.cli(&["volume", "resize", "nosuch", "--size", "1M"]);
    assert_eq!(code(&out), 1, "{}", describe(&out));
    let out = p.cli(&["volume", "create", "zero", "--size", "0"]);
    assert_eq!(code(&out), 1, "zero-size volume: {}", describe(&out));
    assert!(!p.vol("zero").exists());
    let out = p.cli(&["volume", "create", "v", "--size", "64M", "--tier", "nosuch"]);
    assert_eq!(code(&out), 1, "unknown tier: {}", describe(&out));
    p.stop();
    let out = p.cli(&["pool", "info"]);
    assert_eq!(code(&out), 3, "after stop: {}", describe(&out));
}

#[test]
fn second_daemon_on_same_pool_is_refused() {
    let p = small_pool();
    p.create_volume("v", "64M");
    write_pattern(&p.vol("v"), 9, 0, MIB, false);
    let mnt2 = p.root().join("mnt2");
    let mut c = Command::new(fusevold_bin());
    c.arg(p.pool()).arg(&mnt2).env("RUST_LOG", "info");
    let out = run(&mut c, Duration::from_secs(20));
    let unmounted = !is_mounted(&mnt2);
    if !unmounted {
        lazy_umount(&mnt2);
    }
    assert!(
        !out.status.success(),
        "second daemon exited 0: {}",
        describe(&out)
    );
    assert!(
        unmounted,
        "second daemon left a mount at {}",
        mnt2.display()
    );
    let err = text(&out.stderr).to_lowercase();
    assert!(
        err.contains("lock") || err.contains("already") || err.contains("in use"),
        "second daemon's error should say the pool is locked/in use: {err}"
    );
    // The first one is unharmed.
    p.pool_info();
    verify_pattern(&p.vol("v"), 9, 0, MIB, true);
    // The offline checker must not run against a live pool either (or at least not corrupt it).
    let _ = p.check();
    verify_pattern(&p.vol("v"), 9, 0, MIB, true);
    p.pool_info();
}

#[test]
fn sigterm_and_sigint_unmount_cleanly() {
    let mut p = small_pool();
    p.create_volume("v", "64M");
    write_pattern(&p.vol("v"), 11, 5 * MIB, 3 * MIB, false);
    p.stop(); // asserts exit 0 and mount gone
    let out = p.cli(&["pool", "info"]);
    assert_eq!(
        code(&out),
        3,
        "control socket after stop: {}",
        describe(&out)
    );
    p.check_clean();
    p.start();
    verify_pattern(&p.vol("v"), 11, 5 * MIB, 3 * MIB, true);
    verify_zeros(&p.vol("v"), 0, 5 * MIB, true);
    write_pattern(&p.vol("v"), 12, 20 * MIB, MIB, true);
    p.stop_with(nix::sys::signal::Signal::SIGINT);
    p.check_clean();
    p.start();
    verify_pattern(&p.vol("v"), 11, 5 * MIB, 3 * MIB, false);
    verify_pattern(&p.vol("v"), 12, 20 * MIB, MIB, false);
    p.stop();
}

#[test]
fn fusevold_creates_default_pool_and_mountpoint() {
    let mut p = TestPool::empty();
    assert!(!p.pool().exists() && !p.mnt().exists());
    p.start();
    let pi = p.pool_info();
    assert_eq!(pi["extent_size"].as_u64(), Some(256 * KIB), "{pi}");
    let arrays = pi["arrays"].as_array().expect("PoolInfo.arrays");
    assert_eq!(arrays.len(), 3, "{pi}");
    for a in arrays {
        let cap = a["capacity"].as_u64().unwrap();
        assert!(
            (4 * GIB - 64 * MIB..=4 * GIB).contains(&cap),
            "default arrays are 4 GiB: {a}"
        );
        assert_eq!(a["tier"], "fast");
        let path = Path::new(a["path"].as_str().unwrap());
        assert!(
            disk_usage(path) < 16 * MIB,
            "default array {} is not sparse: {} bytes on disk",
            path.display(),
            disk_usage(path)
        );
    }
    assert!(p.pool().join("control.sock").exists());
    // The embedded default comes with one volume ready to use.
    let vols = p.cli_json(&["volume", "list"]);
    assert_eq!(names(&vols), vec!["vol0"], "{vols}");
    assert_eq!(
        fs::metadata(p.vol("vol0")).unwrap().len(),
        vols[0]["size"].as_u64().unwrap()
    );
    let out = p.cli(&["volume", "list"]);
    assert!(out.status.success(), "{}", describe(&out));
    p.stop();
    // A restart reuses it instead of re-creating.
    let id = pi["pool_id"].clone();
    p.start();
    assert_eq!(p.pool_info()["pool_id"], id);
}

#[test]
fn init_options_tiers_and_placement_spread() {
    let p = TestPool::new(
        &[
            "f0:128M:fast",
            "f1:128M:fast",
            "f2:128M:fast",
            "s0:128M:slow",
            "s1:128M:slow",
        ],
        "64K",
    );
    let pi = p.pool_info();
    assert_eq!(pi["extent_size"].as_u64(), Some(64 * KIB));
    let arrays = p.cli_json(&["array", "list"]);
    let tiers: Vec<(String, String)> = arrays
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["name"].as_str().unwrap().to_string(),
                a["tier"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    for (n, t) in [
        ("f0", "fast"),
        ("f1", "fast"),
        ("f2", "fast"),
        ("s0", "slow"),
        ("s1", "slow"),
    ] {
        assert!(
            tiers.contains(&(n.to_string(), t.to_string())),
            "{n}:{t} missing in {tiers:?}"
        );
    }
    // A pool that exists is not initialised again.
    let mut c = Command::new(fusevol_bin());
    c.arg("init").arg(p.pool());
    let out = run(&mut c, CLI_TIMEOUT);
    assert!(
        !out.status.success(),
        "init over an existing pool: {}",
        describe(&out)
    );

    let sv = p.cli_json(&["volume", "create", "sv", "--size", "64M", "--tier", "slow"]);
    assert_eq!(sv["tier"], "slow");
    p.create_volume("fv", "64M");
    write_pattern(&p.vol("sv"), 21, 0, 8 * MIB, true);
    write_pattern(&p.vol("fv"), 22, 0, 8 * MIB, true);
    let per = |name: &str| -> Vec<(String, u64)> {
        p.volume_info(name)["extents_per_array"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| (e[0].as_str().unwrap().to_string(), e[1].as_u64().unwrap()))
            .filter(|(_, n)| *n > 0)
            .collect()
    };
    let s = per("sv");
    let f = per("fv");
    assert_eq!(
        s.iter().map(|x| x.1).sum::<u64>(),
        128,
        "8 MiB / 64K: {s:?}"
    );
    assert_eq!(
        f.iter().map(|x| x.1).sum::<u64>(),
        128,
        "8 MiB / 64K: {f:?}"
    );
    assert!(
        s.iter().all(|(n, _)| n.starts_with('s')),
        "slow volume placed on fast arrays: {s:?}"
    );
    assert!(
        f.iter().all(|(n, _)| n.starts_with('f')),
        "fast volume placed on slow arrays: {f:?}"
    );
    assert_eq!(
        s.len(),
        2,
        "slow volume not spread over both slow arrays: {s:?}"
    );
    assert_eq!(
        f.len(),
        3,
        "fast volume not spread over all three fast arrays: {f:?}"
    );
    verify_pattern(&p.vol("sv"), 21, 0, 8 * MIB, false);
    verify_pattern(&p.vol("fv"), 22, 0, 8 * MIB, false);
}

#[test]
fn mount_refuses_create_and_unlink() {
    let p = small_pool();
    p.create_volume("keep", "64M");
    let e = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(p.mnt().join("newfile"))
        .expect_err("creating a file in the mount must fail");
    assert_eq!(e.raw_os_error(), Some(libc::EPERM), "create: {e}");
    let e = fs::remove_file(p.vol("keep")).expect_err("unlink of a volume file must fail");
    assert_eq!(e.raw_os_error(), Some(libc::EPERM), "unlink: {e}");
    assert!(
        fs::create_dir(p.mnt().join("d")).is_err(),
        "mkdir in the mount"
    );
    assert!(
        fs::rename(p.vol("keep"), p.mnt().join("renamed")).is_err(),
        "rename in the mount"
    );
    assert!(
        std::os::unix::fs::symlink("keep", p.mnt().join("link")).is_err(),
        "symlink in the mount"
    );
    assert_eq!(mount_entries(&p), vec!["keep".to_string()]);
    assert_eq!(names(&p.cli_json(&["volume", "list"])), vec!["keep"]);
}
