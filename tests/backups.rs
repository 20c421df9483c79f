//! Backups (issue 14) through the mount and the CLI: volume information set and read by the
//! CLI and as extended attributes, surviving kill -9, carried by every copy with its origin;
//! the catalog and its rebuild; export/import round trips and damaged streams.

mod common;

use std::path::Path;
use std::process::Command;

use common::*;
use serde_json::Value;

fn getfattr(path: &Path, name: &str) -> Option<String> {
    let out = run(
        Command::new(tool("getfattr"))
            .arg("--only-values")
            .arg("-n")
            .arg(name)
            .arg(path),
        CLI_TIMEOUT,
    );
    out.status.success().then(|| text(&out.stdout))
}

fn setfattr(path: &Path, name: &str, value: &str) -> std::process::Output {
    run(
        Command::new(tool("setfattr"))
            .arg("-n")
            .arg(name)
            .arg("-v")
            .arg(value)
            .arg(path),
        CLI_TIMEOUT,
    )
}

fn info(p: &TestPool, name: &str) -> Value {
    p.cli_json(&["volume", "info", "get", name])
}

fn field(v: &Value, key: &str) -> String {
    v["fields"][key].as_str().unwrap_or("").to_string()
}

#[test]
fn info_by_cli_and_xattr_agree_and_survive_kill9() {
    let mut p = TestPool::new(&["a0:256M", "a1:256M"], "1M");
    p.create_volume("db", "32M");
    p.cli_ok(&[
        "volume",
        "info",
        "set",
        "db",
        "label=nightly",
        "host=db1",
        "mountpoint=/srv/db",
        "user.ticket=OPS-7",
    ]);
    let vol = p.vol("db");
    assert_eq!(
        getfattr(&vol, "user.fusevol.label").as_deref(),
        Some("nightly")
    );
    assert_eq!(
        getfattr(&vol, "user.fusevol.user.ticket").as_deref(),
        Some("OPS-7")
    );
    let out = setfattr(&vol, "user.fusevol.app", "postgres");
    assert!(out.status.success(), "setfattr: {}", describe(&out));
    assert_eq!(
        p.cli_ok(&["volume", "info", "get", "db", "app"]).trim(),
        "postgres"
    );
    // getfattr -d lists every field.
    let dump = run(
        Command::new(tool("getfattr")).arg("-d").arg(&vol),
        CLI_TIMEOUT,
    );
    let dump = text(&dump.stdout);
    for k in ["label", "host", "mountpoint", "app", "user.ticket"] {
        assert!(
            dump.contains(&format!("user.fusevol.{k}=")),
            "{k} missing in {dump}"
        );
    }
    // Origin fields are the array's, not the user's; unknown keys are refused.
    assert!(!setfattr(&vol, "user.fusevol.origin.kind", "x")
        .status
        .success());
    assert!(!p
        .cli(&["volume", "info", "set", "db", "colour=red"])
        .status
        .success());
    assert!(!setfattr(&vol, "user.other", "x").status.success());
    // Removal both ways.
    p.cli_ok(&["volume", "info", "unset", "db", "mountpoint"]);
    assert_eq!(getfattr(&vol, "user.fusevol.mountpoint"), None);
    let out = run(
        Command::new(tool("setfattr"))
            .arg("-x")
            .arg("user.fusevol.host")
            .arg(&vol),
        CLI_TIMEOUT,
    );
    assert!(out.status.success(), "setfattr -x: {}", describe(&out));
    assert_eq!(field(&info(&p, "db"), "host"), "");
    // The info is no part of the data: the volume still reads as zeros.
    let data = std::fs::read(&vol).unwrap();
    assert!(data.iter().all(|&b| b == 0));
    // Data and info written, then kill -9: the info is in the metadata log.
    p.kill9();
    p.restart();
    let v = info(&p, "db");
    assert_eq!(v["status"], "valid");
    assert_eq!(field(&v, "label"), "nightly");
    assert_eq!(field(&v, "app"), "postgres");
    assert_eq!(field(&v, "user.ticket"), "OPS-7");
    assert_eq!(
        getfattr(&p.vol("db"), "user.fusevol.label").as_deref(),
        Some("nightly")
    );
    // And through a checkpoint (sync), then a clean restart.
    p.cli_ok(&["sync"]);
    p.restart();
    assert_eq!(field(&info(&p, "db"), "host"), "");
    assert_eq!(field(&info(&p, "db"), "app"), "postgres");
    assert_eq!(p.volume_info("db")["info"]["fields"]["label"], "nightly");
    p.stop();
    p.check_clean();
}

#[test]
fn every_copy_carries_info_and_origin() {
    let mut p = TestPool::new(&["a0:256M", "a1:256M"], "1M");
    p.create_volume("app", "16M");
    p.cli_ok(&["volume", "info", "set", "app", "label=weekly", "host=h1"]);
    let pool_id = p.pool_info()["pool_id"].clone();
    // Snapshot.
    p.cli_ok(&["snapshot", "create", "app", "s1"]);
    let s = info(&p, "app@s1");
    assert_eq!(field(&s, "label"), "weekly");
    assert_eq!(field(&s, "origin.kind"), "snapshot");
    assert_eq!(field(&s, "origin.volume"), "app");
    assert!(!field(&s, "origin.pool").is_empty());
    if let Some(id) = pool_id.as_str() {
        assert!(id.contains(&field(&s, "origin.pool")) || field(&s, "origin.pool").contains(id));
    }
    let snapfile = p.mnt().join(".snapshots/app/s1");
    assert_eq!(
        getfattr(&snapfile, "user.fusevol.origin.kind").as_deref(),
        Some("snapshot")
    );
    // The snapshot's record is its own: changing the volume's later does not change it.
    p.cli_ok(&["volume", "info", "set", "app", "label=changed"]);
    assert_eq!(field(&info(&p, "app@s1"), "label"), "weekly");
    // Clone of the snapshot.
    p.cli_ok(&["snapshot", "clone", "app", "s1", "app-clone"]);
    let c = info(&p, "app-clone");
    assert_eq!(field(&c, "label"), "weekly");
    assert_eq!(field(&c, "origin.kind"), "clone");
    assert_eq!(field(&c, "origin.volume"), "app");
    assert_eq!(field(&c, "origin.snapshot"), "s1");
    // Split S-VOL: gets the P-VOL's record at split, not before.
    p.cli_ok(&["pair", "create", "app", "app-s", "--create-svol", "--wait"]);
    assert_eq!(info(&p, "app-s")["status"], "missing");
    p.cli_ok(&["pair", "split", "app"]);
    let sv = info(&p, "app-s");
    assert_eq!(field(&sv, "label"), "changed");
    assert_eq!(field(&sv, "origin.kind"), "split");
    assert_eq!(field(&sv, "origin.volume"), "app");
    // All of it survives kill -9.
    p.kill9();
    p.restart();
    assert_eq!(field(&info(&p, "app-s"), "origin.kind"), "split");
    assert_eq!(field(&info(&p, "app@s1"), "origin.kind"), "snapshot");
    assert_eq!(field(&info(&p, "app-clone"), "origin.snapshot"), "s1");
    p.stop();
    p.check_clean();
}

fn write_at(path: &Path, off: u64, len: usize, seed: u8) {
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    let buf: Vec<u8> = (0..len)
        .map(|i| (i as u8).wrapping_mul(31) ^ seed)
        .collect();
    f.write_all_at(&buf, off).unwrap();
    f.sync_data().unwrap();
}

fn cmp_files(a: &Path, b: &Path) {
    let out = run(Command::new("cmp").arg(a).arg(b), Duration::from_secs(120));
    assert!(
        out.status.success(),
        "cmp {} {}: {}",
        a.display(),
        b.display(),
        describe(&out)
    );
}

fn snap(p: &TestPool, vol: &str, s: &str) -> std::path::PathBuf {
    p.mnt().join(".snapshots").join(vol).join(s)
}

use std::time::Duration;

#[test]
fn export_import_full_and_incremental_over_three_generations() {
    let p = TestPool::new(&["a0:512M", "a1:512M"], "1M");
    p.create_volume("src", "48M");
    p.cli_ok(&[
        "volume",
        "info",
        "set",
        "src",
        "label=gen",
        "host=h9",
        "app=db",
    ]);
    let v = p.vol("src");
    let dir = p.root().join("streams");
    std::fs::create_dir(&dir).unwrap();
    // Generation 1: a few extents; 2: overwrites, new extents and a discarded one; 3: more.
    write_at(&v, 0, 3 << 20, 1);
    write_at(&v, 20 << 20, 1 << 20, 2);
    p.cli_ok(&["snapshot", "create", "src", "g1"]);
    write_at(&v, 4096, 8192, 3);
    write_at(&v, 30 << 20, 2 << 20, 4);
    let out = run(
        Command::new("fallocate")
            .args([
                "-p",
                "-o",
                &(20u64 << 20).to_string(),
                "-l",
                &(1u64 << 20).to_string(),
            ])
            .arg(&v),
        CLI_TIMEOUT,
    );
    assert!(out.status.success(), "punch: {}", describe(&out));
    p.cli_ok(&["snapshot", "create", "src", "g2"]);
    write_at(&v, 47 << 20, 1 << 20, 5);
    p.cli_ok(&["snapshot", "create", "src", "g3"]);
    let s1 = dir.join("g1.fvs");
    let s2 = dir.join("g2.fvs");
    let s3 = dir.join("g3.fvs");
    let full = p.cli_json(&["volume", "export", "src@g1", s1.to_str().unwrap()]);
    assert_eq!(full["extents"], 4, "{full}");
    let inc2 = p.cli_json(&[
        "volume",
        "export",
        "src@g2",
        s2.to_str().unwrap(),
        "--from",
        "g1",
    ]);
    assert_eq!(inc2["holes"], 1, "{inc2}");
    // Only the changed extents: one rewritten (first), two new; not the unchanged ones.
    assert_eq!(inc2["extents"], 3, "{inc2}");
    p.cli_ok(&[
        "volume",
        "export",
        "src@g3",
        s3.to_str().unwrap(),
        "--from",
        "g2",
    ]);
    // Incremental's size is a fraction of the full one.
    assert!(std::fs::metadata(&s3).unwrap().len() < std::fs::metadata(&s1).unwrap().len());
    // Applied in order on a new volume.
    p.cli_ok(&["volume", "import", s1.to_str().unwrap(), "dst"]);
    cmp_files(&p.vol("dst"), &snap(&p, "src", "g1"));
    // Out of order: refused, naming both snapshots.
    let out = p.cli(&["volume", "import", s3.to_str().unwrap(), "dst"]);
    assert!(!out.status.success());
    let msg = text(&out.stderr);
    assert!(msg.contains("'g2'") && msg.contains("'g1'"), "{msg}");
    p.cli_ok(&["volume", "import", s2.to_str().unwrap(), "dst"]);
    cmp_files(&p.vol("dst"), &snap(&p, "src", "g2"));
    p.cli_ok(&["volume", "import", s3.to_str().unwrap(), "dst"]);
    cmp_files(&p.vol("dst"), &snap(&p, "src", "g3"));
    cmp_files(&snap(&p, "dst", "g2"), &snap(&p, "src", "g2"));
    // The imported volume carries the source's info and its origin.
    let i = info(&p, "dst");
    assert_eq!(field(&i, "label"), "gen");
    assert_eq!(field(&i, "app"), "db");
    assert_eq!(field(&i, "origin.kind"), "import");
    assert_eq!(field(&i, "origin.volume"), "src");
    assert_eq!(field(&i, "origin.snapshot"), "g3");
    assert_eq!(field(&info(&p, "dst@g1"), "origin.snapshot"), "g1");
    // Through a pipe, and as raw and qcow2 images.
    let sh = format!(
        "{f} -p {pool} volume export src@g3 - | {f} -p {pool} volume import - piped",
        f = fusevol_bin(),
        pool = p.pool().display()
    );
    let out = run(Command::new("sh").arg("-c").arg(&sh), CLI_TIMEOUT);
    assert!(out.status.success(), "{sh}: {}", describe(&out));
    cmp_files(&p.vol("piped"), &snap(&p, "src", "g3"));
    let raw = dir.join("g3.raw");
    p.cli_ok(&[
        "volume",
        "export",
        "src@g3",
        raw.to_str().unwrap(),
        "--format",
        "raw",
    ]);
    cmp_files(&raw, &snap(&p, "src", "g3"));
    let qcow = dir.join("g3.qcow2");
    p.cli_ok(&[
        "volume",
        "export",
        "src@g3",
        qcow.to_str().unwrap(),
        "--format",
        "qcow2",
    ]);
    let out = run(
        Command::new(tool("qemu-img"))
            .arg("compare")
            .arg(&qcow)
            .arg(&raw),
        CLI_TIMEOUT,
    );
    assert!(out.status.success(), "qemu-img compare: {}", describe(&out));
}

#[test]
fn damaged_or_cut_stream_is_refused_with_nothing_left_behind() {
    let p = TestPool::new(&["a0:256M", "a1:256M"], "1M");
    p.create_volume("src", "16M");
    write_at(&p.vol("src"), 0, 4 << 20, 7);
    p.cli_ok(&["snapshot", "create", "src", "a"]);
    write_at(&p.vol("src"), 8 << 20, 2 << 20, 8);
    p.cli_ok(&["snapshot", "create", "src", "b"]);
    let dir = p.root().join("streams");
    std::fs::create_dir(&dir).unwrap();
    let full = dir.join("a.fvs");
    let inc = dir.join("b.fvs");
    p.cli_ok(&["volume", "export", "src@a", full.to_str().unwrap()]);
    p.cli_ok(&[
        "volume",
        "export",
        "src@b",
        inc.to_str().unwrap(),
        "--from",
        "a",
    ]);
    let good = std::fs::read(&full).unwrap();
    let volumes = |p: &TestPool| -> Vec<String> {
        p.cli_json(&["volume", "list"])
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v["name"].as_str().unwrap().to_string())
            .collect()
    };
    // One flipped byte anywhere (header, data, crc, trailer), or cut short: refused with the
    // offset, and no volume 'copy' left.
    let bad = dir.join("bad.fvs");
    for (i, at) in [10usize, 100, 2 << 20, good.len() - 30, good.len() - 2]
        .iter()
        .enumerate()
    {
        let mut b = good.clone();
        b[*at] ^= 0x10;
        std::fs::write(&bad, &b).unwrap();
        let out = p.cli(&["volume", "import", bad.to_str().unwrap(), "copy"]);
        assert!(!out.status.success(), "flip {i} at {at} accepted");
        assert!(text(&out.stderr).contains("offset"), "{}", describe(&out));
        assert!(
            !volumes(&p).contains(&"copy".to_string()),
            "flip at {at} left a volume"
        );
    }
    for cut in [5usize, 300, 3 << 20, good.len() - 1] {
        std::fs::write(&bad, &good[..cut]).unwrap();
        let out = p.cli(&["volume", "import", bad.to_str().unwrap(), "copy"]);
        assert!(!out.status.success(), "cut at {cut} accepted");
        assert!(
            text(&out.stderr).contains(&format!("offset {cut}")),
            "{}",
            describe(&out)
        );
        assert!(!volumes(&p).contains(&"copy".to_string()));
    }
    // A damaged incremental leaves its target as the base was.
    p.cli_ok(&["volume", "import", full.to_str().unwrap(), "copy"]);
    let mut b = std::fs::read(&inc).unwrap();
    let at = b.len() / 2;
    b[at] ^= 1;
    std::fs::write(&bad, &b).unwrap();
    let out = p.cli(&["volume", "import", bad.to_str().unwrap(), "copy"]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("rolled back"),
        "{}",
        describe(&out)
    );
    cmp_files(&p.vol("copy"), &snap(&p, "src", "a"));
    let snaps = p.cli_json(&["snapshot", "list", "copy"]);
    assert_eq!(snaps.as_array().unwrap().len(), 1, "{snaps}");
    // The good incremental still applies.
    p.cli_ok(&["volume", "import", inc.to_str().unwrap(), "copy"]);
    cmp_files(&p.vol("copy"), &snap(&p, "src", "b"));
}

#[test]
fn export_reads_only_the_allocated_extents() {
    let p = TestPool::new(&["a0:2G", "a1:2G", "a2:2G"], "1M");
    p.set_budget(Duration::from_secs(600));
    p.create_volume("big", "4G");
    // 10 % allocated: the first MiB of every 10 MiB.
    let v = p.vol("big");
    let f = std::fs::OpenOptions::new().write(true).open(&v).unwrap();
    let buf = vec![0x5au8; 1 << 20];
    let mut allocated = 0u64;
    for i in (0..4096u64).step_by(10) {
        std::os::unix::fs::FileExt::write_all_at(&f, &buf, i << 20).unwrap();
        allocated += 1 << 20;
    }
    f.sync_all().unwrap();
    drop(f);
    let before = p.cli_json(&["stats", "big"])[0]["read_bytes"]
        .as_u64()
        .unwrap();
    let out = run(
        Command::new(fusevol_bin())
            .arg("-p")
            .arg(p.pool())
            .args(["--json", "volume", "export", "big", "-"])
            .stdout(std::process::Stdio::null()),
        Duration::from_secs(300),
    );
    assert!(out.status.success(), "export: {}", describe(&out));
    let after = p.cli_json(&["stats", "big"])[0]["read_bytes"]
        .as_u64()
        .unwrap();
    assert_eq!(
        after - before,
        allocated,
        "bytes read from the volume by the export"
    );
    // The stream itself, to a file: its data bytes are the allocated bytes.
    let file = p.root().join("big.fvs");
    let r = p.cli_json(&["volume", "export", "big", file.to_str().unwrap()]);
    assert_eq!(r["data_bytes"].as_u64().unwrap(), allocated, "{r}");
    assert!(std::fs::metadata(&file).unwrap().len() < allocated + (1 << 20));
}

#[test]
fn catalog_lists_every_copy_and_rebuild_gives_the_same_listing() {
    let p = TestPool::new(&["a0:256M", "a1:256M"], "1M");
    p.create_volume("db", "8M");
    p.create_volume("web", "8M");
    p.cli_ok(&[
        "volume",
        "info",
        "set",
        "db",
        "label=db-nightly",
        "host=dbhost",
    ]);
    write_at(&p.vol("db"), 0, 2 << 20, 1);
    p.cli_ok(&["snapshot", "create", "db", "n1"]);
    write_at(&p.vol("db"), 0, 1 << 20, 2);
    p.cli_ok(&["snapshot", "create", "db", "n2"]);
    p.cli_ok(&["snapshot", "create", "web", "w1"]);
    p.cli_ok(&["pair", "create", "db", "db-s", "--create-svol", "--wait"]);
    p.cli_ok(&["pair", "split", "db"]);
    let cat = p.cli_json(&["catalog"]);
    let names: Vec<&str> = cat
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    for n in ["db@n1", "db@n2", "web@w1", "db-s"] {
        assert!(names.contains(&n), "{n} missing in {cat}");
    }
    assert!(!names.contains(&"db") && !names.contains(&"web"), "{cat}");
    let e = |n: &str| {
        cat.as_array()
            .unwrap()
            .iter()
            .find(|e| e["name"] == n)
            .unwrap()
            .clone()
    };
    assert_eq!(e("db@n1")["label"], "db-nightly");
    assert_eq!(e("db@n1")["host"], "dbhost");
    assert_eq!(e("db@n1")["kind"], "snapshot");
    assert_eq!(e("db@n1")["source"], "db");
    assert_eq!(e("db-s")["kind"], "split");
    assert_eq!(
        e("db@n1")["held"].as_u64().unwrap(),
        1 << 20,
        "n1 alone holds the overwritten MiB"
    );
    // Oldest first.
    let times: Vec<u64> = cat
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["time"].as_u64().unwrap())
        .collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "{cat}");
    // Per volume.
    let only = p.cli_json(&["catalog", "db"]);
    assert!(
        only.as_array().unwrap().iter().all(|e| e["source"] == "db"),
        "{only}"
    );
    assert!(
        cat.as_array().unwrap().iter().all(|e| e["info"] == "valid"),
        "{cat}"
    );
    // The index is a copy: delete it, rebuild, same listing.
    let index = p.pool().join("catalog.json");
    assert!(index.exists());
    std::fs::remove_file(&index).unwrap();
    let rebuilt = p.cli_json(&["catalog", "rebuild"]);
    assert_eq!(rebuilt["index_was_missing"], true);
    assert_eq!(rebuilt["entries"], cat);
    assert_eq!(p.cli_json(&["catalog"]), cat);
    let on_disk: Value = serde_json::from_slice(&std::fs::read(&index).unwrap()).unwrap();
    assert_eq!(on_disk, cat);
}

/// A snapshot of a mounted ext4 taken between `fsfreeze -f` and `fsfreeze -u` hooks is a
/// clean file system: no journal replay needed (dumpe2fs shows no needs_recovery, e2fsck -n
/// is clean). A failing pre hook refuses the snapshot; the post hook runs anyway.
#[test]
fn hooks_freeze_ext4_for_a_clean_snapshot() {
    for t in [
        "losetup",
        "mkfs.ext4",
        "e2fsck",
        "dumpe2fs",
        "fsfreeze",
        "mount",
        "umount",
    ] {
        tool(t);
    }
    let p = TestPool::new(&["a0:512M", "a1:512M"], "256K");
    p.set_budget(Duration::from_secs(400));
    p.create_volume("disk", "128M");
    let dev = p.losetup(&p.vol("disk"), false);
    run_ok(
        Command::new(tool("mkfs.ext4")).args(["-F", "-q", &dev]),
        Duration::from_secs(300),
    );
    let m = p.root().join("ext4");
    p.mount(&dev, &m);
    // Files written and not synced: their metadata is in the journal until a commit.
    for i in 0..20 {
        std::fs::write(m.join(format!("f{i}")), vec![i as u8; 50_000]).unwrap();
    }
    let mark = p.root().join("post-ran");
    let pre = format!("{} -f {}", tool("fsfreeze").display(), m.display());
    let post = format!(
        "{} -u {} && echo $FUSEVOL_RESULT $FUSEVOL_VOLUMES $FUSEVOL_SNAPSHOT > {}",
        tool("fsfreeze").display(),
        m.display(),
        mark.display()
    );
    p.cli_ok(&[
        "snapshot", "create", "disk", "frozen", "--pre", &pre, "--post", &post,
    ]);
    assert_eq!(
        std::fs::read_to_string(&mark).unwrap().trim(),
        "ok disk frozen"
    );
    // The file system is writable again (the post hook thawed it).
    std::fs::write(m.join("after"), b"x").unwrap();
    let snapfile = snap(&p, "disk", "frozen");
    let out = run(
        Command::new(tool("dumpe2fs")).arg("-h").arg(&snapfile),
        Duration::from_secs(60),
    );
    assert!(out.status.success(), "dumpe2fs: {}", describe(&out));
    let features = text(&out.stdout);
    assert!(features.contains("has_journal"), "{features}");
    assert!(
        !features.contains("needs_recovery"),
        "snapshot needs journal replay:\n{features}"
    );
    let out = run(
        Command::new(tool("e2fsck"))
            .args(["-n", "-f"])
            .arg(&snapfile),
        Duration::from_secs(120),
    );
    assert!(
        out.status.success(),
        "e2fsck -n of the snapshot: {}",
        describe(&out)
    );
    // A failing pre hook: no snapshot, the post hook still ran (told the copy failed).
    let out = p.cli(&[
        "snapshot",
        "create",
        "disk",
        "refused",
        "--pre",
        "exit 7",
        "--post",
        &format!("echo $FUSEVOL_RESULT > {}", mark.display()),
    ]);
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("pre hook"), "{}", describe(&out));
    assert_eq!(std::fs::read_to_string(&mark).unwrap().trim(), "failed");
    let snaps = p.cli_json(&["snapshot", "list", "disk"]);
    assert_eq!(snaps.as_array().unwrap().len(), 1, "{snaps}");
    // A hook past its timeout is killed and refuses the copy.
    let out = p.cli(&[
        "snapshot",
        "create",
        "disk",
        "slow",
        "--pre",
        "sleep 30",
        "--hook-timeout",
        "1",
    ]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("timed out"),
        "{}",
        describe(&out)
    );
    p.umount(&m);
    p.detach_loop(&dev);
}

#[test]
fn catalog_restore_from_snapshot_svol_and_stream() {
    let p = TestPool::new(&["a0:256M", "a1:256M"], "1M");
    p.create_volume("db", "8M");
    write_at(&p.vol("db"), 0, 2 << 20, 1);
    p.cli_ok(&["snapshot", "create", "db", "good"]);
    let good = std::fs::read(snap(&p, "db", "good")).unwrap();
    write_at(&p.vol("db"), 0, 1 << 20, 2);
    // Refused while the target is open.
    let open = std::fs::File::open(p.vol("db")).unwrap();
    let out = p.cli(&["catalog", "restore", "db@good"]);
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("open"), "{}", describe(&out));
    drop(open);
    p.cli_ok(&["catalog", "restore", "db@good"]);
    assert!(std::fs::read(p.vol("db")).unwrap() == good);
    // A split S-VOL restores its P-VOL (reverse resync).
    p.cli_ok(&["pair", "create", "db", "db-s", "--create-svol", "--wait"]);
    p.cli_ok(&["pair", "split", "db"]);
    write_at(&p.vol("db"), 4 << 20, 1 << 20, 3);
    p.cli_ok(&["catalog", "restore", "db-s"]);
    p.cli_ok(&["pair", "wait", "db", "--state", "PAIR", "--timeout", "60"]);
    assert!(std::fs::read(p.vol("db")).unwrap() == good);
    p.cli_ok(&["pair", "delete", "db"]);
    // An export stream: imported under the stream's volume name (or --to).
    let file = p.root().join("db.fvs");
    p.cli_ok(&["volume", "export", "db@good", file.to_str().unwrap()]);
    p.cli_ok(&[
        "catalog",
        "restore",
        file.to_str().unwrap(),
        "--to",
        "db-restored",
    ]);
    assert!(std::fs::read(p.vol("db-restored")).unwrap() == good);
    assert_eq!(field(&info(&p, "db-restored"), "origin.kind"), "import");
}
