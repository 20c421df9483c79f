//! Several hosts over etcd (`fusevold --cluster URL --node NAME --nbd ADDR:PORT`): a real etcd
//! (`tests/common/etcd.rs`) and two or three daemons with their own pools on this machine.
//! Names are unique under concurrent creates; a volume of one node is read and written
//! through the others' mounts (dd, fio --verify, ext4 on a loop device); a killed or stopped
//! owner shows unavailable within the lease TTL and its volumes fail with EIO, nothing is
//! lost after it restarts; an etcd restart leaves local volumes served throughout.

mod common;

use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use common::etcd::Etcd;
use common::*;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::Value;

const ARRAYS: &[&str] = &["a0:1G", "a1:1G"];
use common::cluster::{catalog_entry, TTL};
/// Lease TTL plus the watch's delivery and the keep-alive period: a dead node must show down
/// within this.
const DOWN_WITHIN: Duration = Duration::from_secs(TTL + 4);

/// A pool served as cluster node `name`.
fn node(etcd: &Etcd, name: &str) -> TestPool {
    node_with(etcd, name, ARRAYS, &[])
}

/// A pool with `arrays`, served as cluster node `name` with `extra` daemon arguments.
fn node_with(etcd: &Etcd, name: &str, arrays: &[&str], extra: &[&str]) -> TestPool {
    common::cluster::start_node(etcd, name, arrays, extra, None)
}

fn cluster_json(p: &TestPool, what: &str) -> Value {
    p.cli_json(&["cluster", what])
}

fn node_state(p: &TestPool, node: &str) -> Option<String> {
    cluster_json(p, "nodes")
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["name"] == node)
        .map(|n| n["state"].as_str().unwrap().to_string())
}

/// Wait until every node sees every other one up and `vol`'s file appears in each mount.
fn wait_visible(nodes: &[&TestPool], vol: &str) {
    for p in nodes {
        wait_until(
            &format!("volume '{vol}' in {}", p.mnt().display()),
            Duration::from_secs(20),
            || p.vol(vol).exists(),
        );
    }
}

fn wait_nodes_up(nodes: &[&TestPool], names: &[&str]) {
    for p in nodes {
        for n in names {
            wait_until(
                &format!("node '{n}' up as seen from {}", p.pool().display()),
                Duration::from_secs(20),
                || node_state(p, n).as_deref() == Some("up"),
            );
        }
    }
}

fn dd(args: &[&str]) -> std::process::Output {
    run(
        Command::new(tool("dd")).args(args),
        Duration::from_secs(120),
    )
}

#[test]
fn concurrent_creates_of_one_name_have_exactly_one_winner_and_all_nodes_agree() {
    let etcd = Etcd::start();
    let a = node(&etcd, "a");
    let b = node(&etcd, "b");
    wait_nodes_up(&[&a, &b], &["a", "b"]);
    for round in 0..6 {
        let name = format!("race{round}");
        let (ha, hb) = (a.handle(), b.handle());
        let (n1, n2) = (name.clone(), name.clone());
        let ta = thread::spawn(move || ha.cli(&["volume", "create", &n1, "--size", "64M"]));
        let tb = thread::spawn(move || hb.cli(&["volume", "create", &n2, "--size", "64M"]));
        let (ra, rb) = (ta.join().unwrap(), tb.join().unwrap());
        let wins = [&ra, &rb].iter().filter(|o| o.status.success()).count();
        assert_eq!(
            wins,
            1,
            "round {round}: exactly one create must win\nA: {}\nB: {}",
            describe(&ra),
            describe(&rb)
        );
        let (loser, winner) = if ra.status.success() {
            (&rb, "a")
        } else {
            (&ra, "b")
        };
        let err = text(&loser.stderr);
        assert!(
            err.contains(&format!("volume '{name}' already exists in the cluster"))
                && err.contains(&format!("owner node '{winner}'")),
            "round {round}: the loser's error must name the volume and the owner: {err}"
        );
        // Both see the same owner; only the winner holds it locally.
        for p in [&a, &b] {
            wait_until("catalog entry ready", Duration::from_secs(10), || {
                catalog_entry(p, &name).is_some_and(|v| v["state"] == "ready")
            });
            assert_eq!(catalog_entry(p, &name).unwrap()["owner"], winner);
        }
        let locals = |p: &TestPool| {
            p.cli_json(&["volume", "list"])
                .as_array()
                .unwrap()
                .iter()
                .filter(|v| v["name"] == name.as_str())
                .count()
        };
        assert_eq!(
            locals(&a) + locals(&b),
            1,
            "round {round}: one local volume in all"
        );
    }

    // Every node shows the same catalog and the same nodes.
    wait_until("same catalog on a and b", Duration::from_secs(10), || {
        let strip = |p: &TestPool| {
            let mut v = cluster_json(p, "volumes");
            for e in v.as_array_mut().unwrap() {
                e.as_object_mut().unwrap().remove("served");
            }
            v
        };
        strip(&a) == strip(&b)
    });
    let names = |p: &TestPool| -> Vec<String> {
        cluster_json(p, "nodes")
            .as_array()
            .unwrap()
            .iter()
            .map(|n| format!("{}:{}", n["name"], n["state"]))
            .collect()
    };
    assert_eq!(names(&a), names(&b));
    let st = cluster_json(&a, "status");
    assert_eq!(st["node"], "a");
    assert_eq!(st["connected"], true);
    assert_eq!(st["nodes_up"], 2);
    assert!(st["lease"].is_string());
    // Text output works too.
    let text_out = a.cli_ok(&["cluster", "volumes"]);
    assert!(text_out.contains("race0"), "{text_out}");
    a.cli_ok(&["cluster", "nodes"]);
    a.cli_ok(&["cluster", "status"]);

    // Resize and delete are the owner's; another node is told who owns the volume.
    let owner_of = |n: &str| {
        catalog_entry(&a, n).unwrap()["owner"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let (own, other) = if owner_of("race0") == "a" {
        (&a, &b)
    } else {
        (&b, &a)
    };
    let out = other.cli(&["volume", "delete", "race0"]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("is owned by node"),
        "{}",
        describe(&out)
    );
    own.cli_ok(&["volume", "resize", "race0", "--size", "128M"]);
    wait_until(
        "resize seen by the other node",
        Duration::from_secs(10),
        || {
            catalog_entry(other, "race0").unwrap()["size"] == 128 * MIB
                && std::fs::metadata(other.vol("race0")).map(|m| m.len()).ok() == Some(128 * MIB)
        },
    );
    own.cli_ok(&["volume", "delete", "race0"]);
    wait_until(
        "delete seen by the other node",
        Duration::from_secs(10),
        || catalog_entry(other, "race0").is_none() && !other.vol("race0").exists(),
    );
    // The name is free again.
    other.cli_ok(&["volume", "create", "race0", "--size", "16M"]);
    // Names are checked before anything reaches etcd.
    let out = a.cli(&["volume", "create", "../x", "--size", "16M"]);
    assert!(!out.status.success());
}

#[test]
fn a_volume_of_node_a_is_read_and_written_through_b_and_c() {
    let etcd = Etcd::start();
    let a = node(&etcd, "a");
    let b = node(&etcd, "b");
    let c = node(&etcd, "c");
    a.set_budget(Duration::from_secs(600));
    wait_nodes_up(&[&a, &b, &c], &["a", "b", "c"]);
    a.create_volume("shared", "256M");
    wait_visible(&[&b, &c], "shared");
    assert_eq!(
        std::fs::metadata(b.vol("shared")).unwrap().len(),
        256 * MIB,
        "size through b"
    );
    let entry = catalog_entry(&c, "shared").unwrap();
    assert_eq!(entry["owner"], "a");
    assert_eq!(entry["served"], "forwarded");
    assert_eq!(entry["available"], true);

    // dd through B, read back through C and on A itself.
    let src = b.root().join("src.bin");
    let mut data = vec![0u8; (8 * MIB) as usize];
    fill_pattern(11, 0, &mut data);
    std::fs::write(&src, &data).unwrap();
    let out = dd(&[
        &format!("if={}", src.display()),
        &format!("of={}", b.vol("shared").display()),
        "bs=1M",
        "seek=3",
        "conv=notrunc,fsync",
        "oflag=direct",
    ]);
    assert!(out.status.success(), "dd through b: {}", describe(&out));
    for (who, p) in [("c", &c), ("a", &a)] {
        let got = read_range(&p.vol("shared"), 3 * MIB, 8 * MIB, true);
        assert!(
            got == data,
            "data written through b differs when read through {who}"
        );
    }
    // Written through C, read through B.
    write_pattern(&c.vol("shared"), 12, 100 * MIB, 4 * MIB, true);
    verify_pattern(&b.vol("shared"), 12, 100 * MIB, 4 * MIB, true);
    verify_pattern(&a.vol("shared"), 12, 100 * MIB, 4 * MIB, false);

    // A snapshot on the owner is a read-only file in the others' .snapshots/, forwarded.
    a.cli_ok(&["snapshot", "create", "shared", "s1"]);
    let snap_b = b.mnt().join(".snapshots/shared/s1");
    wait_until("snapshot visible on b", Duration::from_secs(20), || {
        snap_b.exists()
    });
    assert_eq!(std::fs::metadata(&snap_b).unwrap().len(), 256 * MIB);
    write_pattern(&c.vol("shared"), 13, 100 * MIB, 4 * MIB, true);
    verify_pattern(&snap_b, 12, 100 * MIB, 4 * MIB, false);
    verify_pattern(&b.vol("shared"), 13, 100 * MIB, 4 * MIB, true);
    let e = open_rw(&snap_b, false).unwrap_err();
    assert_eq!(
        e.raw_os_error(),
        Some(libc::EROFS),
        "open of a remote snapshot for writing"
    );
    let listed: Vec<String> = std::fs::read_dir(b.mnt().join(".snapshots/shared"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(listed, vec!["s1".to_string()]);

    // fio --verify through B (QD16 libaio O_DIRECT) and C (psync).
    for (p, extra) in [
        (
            &b,
            &[
                "--rw=randwrite",
                "--bs=4k",
                "--size=32M",
                "--offset=128M",
                "--ioengine=libaio",
                "--iodepth=16",
                "--direct=1",
            ][..],
        ),
        (
            &c,
            &[
                "--rw=write",
                "--bs=1M",
                "--size=48M",
                "--offset=160M",
                "--ioengine=psync",
                "--direct=1",
            ][..],
        ),
    ] {
        let mut cmd = Command::new(tool("fio"));
        cmd.arg("--name=fwd")
            .arg(format!("--filename={}", p.vol("shared").display()))
            .args(["--verify=crc32c", "--verify_fatal=1", "--do_verify=1"])
            .args(extra)
            .current_dir(p.root());
        let out = run(&mut cmd, Duration::from_secs(300));
        assert!(
            out.status.success(),
            "fio --verify forwarded: {}",
            describe(&out)
        );
        let err = text(&out.stderr).to_lowercase();
        assert!(!err.contains("verify"), "fio verify problems: {err}");
    }

    // ext4 on a loop device over the forwarded file on B; e2fsck clean.
    a.create_volume("fs", "128M");
    wait_visible(&[&b], "fs");
    let dev = b.losetup(&b.vol("fs"), false);
    run_ok(
        Command::new(tool("mkfs.ext4")).args(["-q", "-F", &dev]),
        Duration::from_secs(300),
    );
    let dir = b.root().join("ext4");
    b.mount(&dev, &dir);
    let mut content = vec![0u8; (3 * MIB) as usize];
    fill_pattern(77, 0, &mut content);
    for i in 0..8 {
        std::fs::write(dir.join(format!("f{i}")), &content).unwrap();
    }
    run_ok(&mut Command::new("sync"), Duration::from_secs(60));
    b.umount(&dir);
    let out = run(
        Command::new(tool("e2fsck")).args(["-f", "-n", &dev]),
        Duration::from_secs(300),
    );
    assert_eq!(out.status.code(), Some(0), "e2fsck -fn: {}", describe(&out));
    b.mount(&dev, &dir);
    for i in 0..8 {
        assert!(std::fs::read(dir.join(format!("f{i}"))).unwrap() == content);
    }
    b.umount(&dir);
    b.detach_loop(&dev);
    // The owner's own copy checks clean as well.
    let dev_a = a.losetup(&a.vol("fs"), false);
    let out = run(
        Command::new(tool("e2fsck")).args(["-f", "-n", &dev_a]),
        Duration::from_secs(300),
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "e2fsck on the owner: {}",
        describe(&out)
    );
    a.detach_loop(&dev_a);
}

#[test]
fn killed_owner_is_unavailable_within_the_ttl_writes_fail_eio_and_nothing_is_lost() {
    let etcd = Etcd::start();
    let mut a = node(&etcd, "a");
    let mut b = node(&etcd, "b");
    wait_nodes_up(&[&a, &b], &["a", "b"]);
    a.create_volume("v", "64M");
    wait_visible(&[&b], "v");
    write_pattern(&b.vol("v"), 5, 0, 16 * MIB, true);

    // kill -9 of the owner: B reports it unavailable within the TTL.
    a.kill9();
    let t0 = Instant::now();
    wait_until("a down as seen from b", DOWN_WITHIN, || {
        node_state(&b, "a").as_deref() == Some("down")
            && catalog_entry(&b, "v").is_some_and(|v| v["available"] == false)
    });
    let took = t0.elapsed();
    assert!(took <= DOWN_WITHIN, "took {took:?}");
    assert_eq!(cluster_json(&b, "status")["volumes_unavailable"], 1);
    // Writes and reads fail with EIO (never stale data), and the log names the node.
    let out = dd(&[
        "if=/dev/zero",
        &format!("of={}", b.vol("v").display()),
        "bs=4k",
        "count=1",
        "conv=notrunc",
        "oflag=direct",
    ]);
    assert!(
        !out.status.success(),
        "write to a dead owner's volume succeeded"
    );
    assert!(
        text(&out.stderr).contains("Input/output error"),
        "{}",
        describe(&out)
    );
    let f = open_ro(&b.vol("v"), true).unwrap();
    let mut buf = aligned(4096);
    let e = std::os::unix::fs::FileExt::read_at(&f, &mut buf[..], 0).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EIO));
    drop(f);
    let log = b.daemon_log();
    assert!(
        log.contains("owner node 'a' is unavailable"),
        "b's log does not name the node:\n{log}"
    );

    // A comes back: it registers again, and everything written before is there.
    a.clear_dead_mount();
    a.start();
    wait_until("a up again as seen from b", Duration::from_secs(20), || {
        node_state(&b, "a").as_deref() == Some("up")
            && catalog_entry(&b, "v").is_some_and(|v| v["available"] == true)
    });
    verify_pattern(&b.vol("v"), 5, 0, 16 * MIB, true);
    verify_pattern(&a.vol("v"), 5, 0, 16 * MIB, true);
    write_pattern(&b.vol("v"), 6, 16 * MIB, MIB, true);
    verify_pattern(&a.vol("v"), 6, 16 * MIB, MIB, true);

    // SIGSTOP: the lease runs out, the node shows down; SIGCONT: it registers again.
    let pid = Pid::from_raw(a.pid().unwrap() as i32);
    kill(pid, Signal::SIGSTOP).unwrap();
    let stopped = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        wait_until("stopped a down as seen from b", DOWN_WITHIN, || {
            node_state(&b, "a").as_deref() == Some("down")
        });
    }));
    kill(pid, Signal::SIGCONT).unwrap();
    stopped.unwrap();
    wait_until(
        "a registered again after SIGCONT",
        Duration::from_secs(20),
        || node_state(&b, "a").as_deref() == Some("up"),
    );
    assert!(
        a.daemon_log().contains("registering again"),
        "a's log:\n{}",
        a.daemon_log()
    );
    verify_pattern(&b.vol("v"), 6, 16 * MIB, MIB, true);
    b.stop();
    a.stop();
}

#[test]
fn etcd_restart_leaves_local_volumes_served_and_daemons_reconnect() {
    let mut etcd = Etcd::start();
    let a = node(&etcd, "a");
    let b = node(&etcd, "b");
    wait_nodes_up(&[&a, &b], &["a", "b"]);
    a.create_volume("va", "64M");
    wait_visible(&[&b], "va");

    // Local I/O on A runs the whole time etcd is down and coming back.
    let vol = a.vol("va");
    let writer = thread::spawn(move || {
        let end = Instant::now() + Duration::from_secs(8);
        let mut i = 0u64;
        while Instant::now() < end {
            write_pattern(&vol, 100 + i, (i % 16) * MIB, MIB, true);
            verify_pattern(&vol, 100 + i, (i % 16) * MIB, MIB, true);
            i += 1;
        }
        i
    });
    etcd.stop();
    thread::sleep(Duration::from_secs(2));
    // Forwarding does not need etcd: B still reaches A over NBD.
    write_pattern(&b.vol("va"), 9, 32 * MIB, MIB, true);
    verify_pattern(&a.vol("va"), 9, 32 * MIB, MIB, true);
    // A catalog change is refused with a clear error while etcd is away.
    let out = a.cli(&["volume", "create", "later", "--size", "16M"]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("unreachable"),
        "{}",
        describe(&out)
    );
    assert!(!a.vol("later").exists());
    thread::sleep(Duration::from_secs(1));
    etcd.restart();
    let rounds = writer
        .join()
        .expect("local I/O failed while etcd restarted");
    assert!(rounds > 0);

    // Both reconnect: watch live again, and a new volume shows up on the other node.
    for p in [&a, &b] {
        wait_until("watch reconnected", Duration::from_secs(30), || {
            cluster_json(p, "status")["connected"] == true
        });
    }
    wait_nodes_up(&[&a, &b], &["a", "b"]);
    b.create_volume("vb", "32M");
    wait_visible(&[&a], "vb");
    write_pattern(&a.vol("vb"), 3, 0, 2 * MIB, true);
    verify_pattern(&b.vol("vb"), 3, 0, 2 * MIB, true);
}

#[test]
fn without_cluster_the_cluster_commands_say_so_and_options_are_checked() {
    let p = TestPool::new(ARRAYS, "256K");
    let out = p.cli(&["cluster", "status"]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("not in a cluster"),
        "{}",
        describe(&out)
    );
    // --cluster without --nbd is refused at start.
    let mut q = TestPool::init(ARRAYS, "256K");
    q.daemon_args = vec![
        "--cluster".into(),
        "http://127.0.0.1:1".into(),
        "--node".into(),
        "x".into(),
    ];
    let e = q.start_expect_failure(&[]);
    assert!(e.stderr.contains("nbd"), "{}", e.stderr);
}

#[test]
fn placement_by_priority_tier_and_free_space_and_create_on_another_node() {
    let etcd = Etcd::start();
    let a = node(&etcd, "a");
    let b = node(&etcd, "b");
    // c: only a "slow" tier, and the admin's first choice (priority 10).
    let c = node_with(&etcd, "c", &["s0:1G:slow"], &["--cluster-priority", "10"]);
    wait_nodes_up(&[&a, &b, &c], &["a", "b", "c"]);
    let owner = |n: &str| {
        wait_until(&format!("'{n}' ready"), Duration::from_secs(10), || {
            catalog_entry(&a, n).is_some_and(|v| v["state"] == "ready")
        });
        catalog_entry(&a, n).unwrap()["owner"]
            .as_str()
            .unwrap()
            .to_string()
    };
    // Tier fast: c has none; a and b are equal, the asking node first.
    a.cli_ok(&["volume", "create", "p1", "--size", "64M", "--tier", "fast"]);
    assert_eq!(owner("p1"), "a");
    // No tier: the admin's priority first.
    let v = a.cli_json(&["volume", "create", "p2", "--size", "64M"]);
    assert_eq!(v["node"], "c", "{v}");
    assert_eq!(owner("p2"), "c");
    // Tier slow: only c has it.
    a.cli_ok(&["volume", "create", "p3", "--size", "64M", "--tier", "slow"]);
    assert_eq!(owner("p3"), "c");
    // --node: made on b, used through a's mount, the data on b.
    let out = a.cli_ok(&["volume", "create", "p4", "--size", "32M", "--node", "b"]);
    assert!(out.contains("on node b"), "{out}");
    assert_eq!(owner("p4"), "b");
    assert!(b
        .cli_json(&["volume", "list"])
        .as_array()
        .unwrap()
        .iter()
        .any(|v| v["name"] == "p4"));
    wait_visible(&[&a], "p4");
    write_pattern(&a.vol("p4"), 21, 0, 4 * MIB, true);
    verify_pattern(&b.vol("p4"), 21, 0, 4 * MIB, true);
    // Refusals name what is short.
    let out = a.cli(&["volume", "create", "big", "--size", "5G", "--tier", "fast"]);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains("cannot place the volume")
            && err.contains("in tier 'fast'")
            && err.contains("short by"),
        "{err}"
    );
    let out = a.cli(&["volume", "create", "t", "--size", "1M", "--tier", "tape"]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("tier 'tape'"),
        "{}",
        describe(&out)
    );
    let out = a.cli(&["volume", "create", "p4", "--size", "1M", "--node", "c"]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("already exists in the cluster"),
        "{}",
        describe(&out)
    );
    let out = a.cli(&["volume", "create", "z1", "--size", "1M", "--node", "zz"]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("node 'zz'"),
        "{}",
        describe(&out)
    );
    assert!(catalog_entry(&a, "big").is_none() && catalog_entry(&a, "z1").is_none());
    // Nodes list shows the priorities.
    let nodes = cluster_json(&b, "nodes");
    let prio = |n: &str| {
        nodes
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["name"] == n)
            .unwrap()["priority"]
            .clone()
    };
    assert_eq!(prio("c"), 10);
    assert_eq!(prio("a"), 100);
}

/// A hash of a whole file read with O_DIRECT (a forwarded or local volume file).
fn file_digest(path: &std::path::Path) -> u64 {
    let out = run_ok(
        Command::new(tool("dd"))
            .arg(format!("if={}", path.display()))
            .args(["bs=1M", "iflag=direct", "status=none"])
            .stdout(std::process::Stdio::piped()),
        Duration::from_secs(300),
    );
    use std::hash::{Hash, Hasher};
    assert!(
        !out.stdout.is_empty(),
        "nothing read from {}",
        path.display()
    );
    let mut h = std::collections::hash_map::DefaultHasher::new();
    out.stdout.hash(&mut h);
    h.finish()
}

#[test]
fn volume_move_under_fio_verify_through_a_third_node_keeps_verifying() {
    let etcd = Etcd::start();
    let a = node(&etcd, "a");
    let b = node(&etcd, "b");
    let c = node(&etcd, "c");
    a.set_budget(Duration::from_secs(600));
    wait_nodes_up(&[&a, &b, &c], &["a", "b", "c"]);
    a.create_volume("mv", "256M");
    wait_visible(&[&b, &c], "mv");
    // Data the move must carry (written on the owner), and a hole in between.
    write_pattern(&a.vol("mv"), 21, 0, 48 * MIB, true);
    write_pattern(&a.vol("mv"), 22, 200 * MIB, 8 * MIB, true);
    wait_until("catalog entry ready", Duration::from_secs(10), || {
        catalog_entry(&a, "mv").is_some_and(|v| v["state"] == "ready" && v["owner"] == "a")
    });

    // Refusals name what is wrong.
    let out = a.cli(&["volume", "move", "mv", "--node", "zz"]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("node 'zz'"),
        "{}",
        describe(&out)
    );
    let out = b.cli(&["volume", "move", "mv", "--node", "c"]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("owned by node 'a'"),
        "{}",
        describe(&out)
    );

    // fio --verify through C's mount, running before, during and after the move.
    let fio_file = c.vol("mv");
    let root = c.root().to_path_buf();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop2 = stop.clone();
    let fio = thread::spawn(move || {
        let mut runs = Vec::new();
        loop {
            let mut cmd = Command::new(tool("fio"));
            cmd.arg("--name=move")
                .arg(format!("--filename={}", fio_file.display()))
                .args([
                    "--rw=randwrite",
                    "--bs=4k",
                    "--size=24M",
                    "--offset=96M",
                    "--ioengine=libaio",
                    "--iodepth=16",
                    "--direct=1",
                    "--verify=crc32c",
                    "--verify_fatal=1",
                    "--do_verify=1",
                    "--verify_backlog=256",
                ])
                .current_dir(&root);
            let out = run(&mut cmd, Duration::from_secs(300));
            let ok = out.status.success() && !text(&out.stderr).to_lowercase().contains("verify");
            runs.push((ok, describe(&out)));
            if !ok || stop2.load(std::sync::atomic::Ordering::Acquire) {
                return runs;
            }
        }
    });
    thread::sleep(Duration::from_secs(2));
    let t0 = Instant::now();
    let out = a.cli_ok(&["volume", "move", "mv", "--node", "b"]);
    let took = t0.elapsed();
    assert!(out.contains("moved volume mv to node b"), "{out}");
    // One more fio run entirely after the switch, then stop.
    thread::sleep(Duration::from_secs(1));
    stop.store(true, std::sync::atomic::Ordering::Release);
    let runs = fio.join().unwrap();
    for (i, (ok, d)) in runs.iter().enumerate() {
        assert!(
            ok,
            "fio run {i} of {} failed around the move: {d}",
            runs.len()
        );
    }
    eprintln!("move took {took:?}; {} fio runs", runs.len());

    // Every node names b the owner; a holds no copy any more, b holds it locally.
    for p in [&a, &b, &c] {
        wait_until("owner b everywhere", Duration::from_secs(10), || {
            catalog_entry(p, "mv").is_some_and(|v| v["owner"] == "b" && v.get("moving").is_none())
        });
    }
    assert_eq!(catalog_entry(&b, "mv").unwrap()["served"], "local");
    assert_eq!(catalog_entry(&a, "mv").unwrap()["served"], "forwarded");
    wait_until("old copy deleted on a", Duration::from_secs(20), || {
        !a.cli_ok(&["volume", "list"]).contains("mv")
    });
    assert!(b.cli_ok(&["volume", "list"]).contains("mv"));
    // Data equal after: the pattern written before, and the same bytes through every mount.
    verify_pattern(&c.vol("mv"), 21, 0, 48 * MIB, true);
    verify_pattern(&a.vol("mv"), 22, 200 * MIB, 8 * MIB, true);
    verify_pattern(&b.vol("mv"), 21, 0, 48 * MIB, true);
    let d = file_digest(&b.vol("mv"));
    assert_eq!(
        file_digest(&c.vol("mv")),
        d,
        "c reads other bytes than b holds"
    );
    assert_eq!(
        file_digest(&a.vol("mv")),
        d,
        "a reads other bytes than b holds"
    );
    // Progress was published as events on the source.
    let evs = text(&a.cli(&["--json", "events"]).stdout);
    assert!(
        evs.contains("\"move\"") && evs.contains("\"moved\""),
        "move events on a: {evs}"
    );
    // Written after the move through a's mount: lands on b.
    write_pattern(&a.vol("mv"), 23, 64 * MIB, 4 * MIB, true);
    verify_pattern(&b.vol("mv"), 23, 64 * MIB, 4 * MIB, true);
    // And it moves back.
    b.cli_ok(&["volume", "move", "mv", "--node", "a"]);
    wait_until("owner a again", Duration::from_secs(10), || {
        catalog_entry(&c, "mv").is_some_and(|v| v["owner"] == "a")
    });
    verify_pattern(&c.vol("mv"), 23, 64 * MIB, 4 * MIB, true);
    assert_eq!(file_digest(&a.vol("mv")), file_digest(&c.vol("mv")));
}

fn locals_of(p: &TestPool) -> Vec<String> {
    p.cli_json(&["volume", "list"])
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["name"].as_str().unwrap().to_string())
        .collect()
}

fn fio_verify(p: &TestPool, file: &std::path::Path, extra: &[&str]) {
    let mut cmd = Command::new(tool("fio"));
    cmd.arg("--name=spread")
        .arg(format!("--filename={}", file.display()))
        .args(["--verify=crc32c", "--verify_fatal=1", "--do_verify=1"])
        .args(extra)
        .current_dir(p.root());
    let out = run(&mut cmd, Duration::from_secs(300));
    assert!(out.status.success(), "fio --verify: {}", describe(&out));
    let err = text(&out.stderr).to_lowercase();
    assert!(!err.contains("verify"), "fio verify problems: {err}");
}

#[test]
fn spread_volume_across_two_nodes_passes_fio_verify_through_a_third_node_and_an_owner() {
    let etcd = Etcd::start();
    let a = node(&etcd, "a");
    let mut b = node(&etcd, "b");
    // c has no "fast" tier: the parts go to a and b, c only reaches them.
    let c = node_with(&etcd, "c", &["s0:1G:slow"], &[]);
    a.set_budget(Duration::from_secs(900));
    wait_nodes_up(&[&a, &b, &c], &["a", "b", "c"]);

    // Refusals name what is short.
    let out = c.cli(&["volume", "create", "huge", "--size", "9G", "--tier", "fast"]);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains("cannot place the volume")
            && err.contains("together")
            && err.contains("short by")
            && err.contains("'a'")
            && err.contains("'b'"),
        "{err}"
    );
    let out = a.cli(&[
        "volume", "create", "s1", "--size", "64M", "--tier", "slow", "--spread",
    ]);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains("at least two nodes") && err.contains("'c'"),
        "{err}"
    );
    assert!(catalog_entry(&a, "huge").is_none() && catalog_entry(&a, "s1").is_none());

    // --spread from the third node: halves on a and b.
    let out = c.cli_ok(&[
        "volume", "create", "sp", "--size", "256M", "--tier", "fast", "--spread",
    ]);
    assert!(out.contains("spread over 2 parts"), "{out}");
    wait_visible(&[&a, &b, &c], "sp");
    for p in [&a, &b, &c] {
        assert_eq!(std::fs::metadata(p.vol("sp")).unwrap().len(), 256 * MIB);
    }
    let e = catalog_entry(&b, "sp").unwrap();
    let parts = e["parts"].as_array().unwrap();
    assert_eq!(parts.len(), 2, "{e}");
    let mut nodes: Vec<&str> = parts.iter().map(|p| p["node"].as_str().unwrap()).collect();
    nodes.sort();
    assert_eq!(nodes, ["a", "b"]);
    assert_eq!(parts[0]["offset"], 0);
    assert_eq!(parts[0]["size"], 128 * MIB);
    assert_eq!(parts[1]["offset"], 128 * MIB);
    let first = parts[0]["node"].as_str().unwrap().to_string();
    assert!(e["served"].as_str().unwrap().starts_with("spread:"), "{e}");
    assert_eq!(e["available"], true);
    // The parts are local volumes of a and b, shown in no mount and not in the catalog.
    for p in [&a, &b] {
        assert!(
            locals_of(p).iter().any(|n| n.starts_with("sp~part")),
            "{:?}",
            locals_of(p)
        );
        let listed: Vec<String> = std::fs::read_dir(p.mnt())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert!(!listed.iter().any(|n| n.contains("~part")), "{listed:?}");
    }
    assert!(cluster_json(&a, "volumes")
        .as_array()
        .unwrap()
        .iter()
        .all(|v| !v["name"].as_str().unwrap().contains("~part")));

    // fio --verify through the third node (QD16, across the parts' boundary) and through a
    // part's owner (1 MiB writes over both parts).
    fio_verify(
        &c,
        &c.vol("sp"),
        &[
            "--rw=randwrite",
            "--bs=4k",
            "--size=64M",
            "--offset=96M",
            "--ioengine=libaio",
            "--iodepth=16",
            "--direct=1",
        ],
    );
    let owner = if first == "a" { &a } else { &b };
    fio_verify(
        owner,
        &owner.vol("sp"),
        &[
            "--rw=write",
            "--bs=1M",
            "--size=160M",
            "--offset=32M",
            "--ioengine=psync",
            "--direct=1",
        ],
    );
    // A pattern crossing the boundary written through c, read through a and b; the whole
    // volume reads the same through two different nodes' mounts.
    write_pattern(&c.vol("sp"), 41, 120 * MIB, 16 * MIB, true);
    verify_pattern(&a.vol("sp"), 41, 120 * MIB, 16 * MIB, true);
    verify_pattern(&b.vol("sp"), 41, 120 * MIB, 16 * MIB, false);
    let out = run(
        Command::new(tool("cmp")).arg(a.vol("sp")).arg(c.vol("sp")),
        Duration::from_secs(300),
    );
    assert!(out.status.success(), "cmp via a and c: {}", describe(&out));
    let out = run(
        Command::new(tool("cmp")).arg(b.vol("sp")).arg(c.vol("sp")),
        Duration::from_secs(300),
    );
    assert!(out.status.success(), "cmp via b and c: {}", describe(&out));

    // Shrinking is refused, naming why; growing (from a node other than the one that made
    // it) adds a part after the end, every mount shows the new size, the data stays.
    let out = c.cli(&["volume", "resize", "sp", "--size", "128M"]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("shrinking a spread volume is not supported"),
        "{}",
        describe(&out)
    );
    let out = a.cli_ok(&["volume", "resize", "sp", "--size", "320M"]);
    assert!(out.contains("335544320"), "{out}");
    for p in [&a, &b, &c] {
        wait_until("grown spread volume", Duration::from_secs(20), || {
            std::fs::metadata(p.vol("sp")).unwrap().len() == 320 * MIB
        });
    }
    let e = catalog_entry(&b, "sp").unwrap();
    let grown = e["parts"].as_array().unwrap();
    assert_eq!(grown.len(), 3, "{e}");
    assert_eq!(&grown[..2], &parts[..], "the old parts stay as they were");
    assert_eq!(grown[2]["offset"], 256 * MIB);
    assert_eq!(grown[2]["size"], 64 * MIB);
    assert!(grown.iter().all(|p| p["local_id"].as_u64().unwrap() > 0));
    verify_pattern(&c.vol("sp"), 41, 120 * MIB, 16 * MIB, true);
    write_pattern(&b.vol("sp"), 43, 250 * MIB, 70 * MIB, true);
    verify_pattern(&c.vol("sp"), 43, 250 * MIB, 70 * MIB, true);
    verify_pattern(&a.vol("sp"), 43, 250 * MIB, 70 * MIB, true);
    let parts = &grown.clone();

    // Without --spread, a volume larger than any node's free space is spread too.
    let out = a.cli_ok(&["volume", "create", "auto", "--size", "3G", "--tier", "fast"]);
    assert!(out.contains("spread over 2 parts"), "{out}");
    wait_visible(&[&c], "auto");
    assert_eq!(std::fs::metadata(c.vol("auto")).unwrap().len(), 3 << 30);
    write_pattern(&c.vol("auto"), 42, (3 << 30) - 4 * MIB, 4 * MIB, true);
    verify_pattern(&b.vol("auto"), 42, (3 << 30) - 4 * MIB, 4 * MIB, true);

    // b down: only the ranges of b's part fail (EIO, the log naming the node and part).
    let b_part = parts
        .iter()
        .find(|p| p["node"] == "b")
        .map(|p| p["offset"].as_u64().unwrap())
        .unwrap();
    let a_part = if b_part == 0 { 128 * MIB } else { 0 };
    b.kill9();
    wait_until("b down as seen from c", DOWN_WITHIN, || {
        node_state(&c, "b").as_deref() == Some("down")
            && catalog_entry(&c, "sp").is_some_and(|v| v["available"] == false)
    });
    let f = open_ro(&c.vol("sp"), true).unwrap();
    let mut buf = aligned(4096);
    let e = std::os::unix::fs::FileExt::read_at(&f, &mut buf[..], b_part + 4096).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EIO));
    std::os::unix::fs::FileExt::read_at(&f, &mut buf[..], a_part + 4096).unwrap();
    drop(f);
    let got = read_range(&c.vol("sp"), a_part, MIB, true);
    assert!(got == read_range(&a.vol("sp"), a_part, MIB, true));
    let log = c.daemon_log();
    assert!(
        log.contains("owner node 'b' is unavailable") && log.contains("sp (part "),
        "c's log does not name the node and the part:\n{log}"
    );
    // b back: everything written before is there.
    b.clear_dead_mount();
    b.start();
    wait_until("b up again", Duration::from_secs(20), || {
        catalog_entry(&c, "sp").is_some_and(|v| v["available"] == true)
    });
    wait_visible(&[&b], "sp");
    verify_pattern(&c.vol("sp"), 41, 120 * MIB, 16 * MIB, true);
    verify_pattern(&b.vol("auto"), 42, (3 << 30) - 4 * MIB, 4 * MIB, true);

    // A spread volume renamed: every mount follows, the parts stay where they are.
    a.cli_ok(&["volume", "rename", "sp", "sp2"]);
    for p in [&a, &b, &c] {
        wait_until("renamed spread volume", Duration::from_secs(20), || {
            p.vol("sp2").exists() && !p.vol("sp").exists()
        });
    }
    verify_pattern(&c.vol("sp2"), 41, 120 * MIB, 16 * MIB, true);
    assert_eq!(
        catalog_entry(&c, "sp2").unwrap()["parts"]
            .as_array()
            .unwrap(),
        parts,
        "the parts of a renamed spread volume"
    );

    // Delete (from any node) removes the entry and every part.
    let out = b.cli_ok(&["volume", "delete", "sp2"]);
    assert!(out.contains("deleted volume sp2"), "{out}");
    a.cli_ok(&["volume", "delete", "auto"]);
    for p in [&a, &b] {
        wait_until("parts deleted", Duration::from_secs(20), || {
            !locals_of(p).iter().any(|n| n.contains("~part"))
        });
    }
    for p in [&a, &b, &c] {
        wait_until("spread volumes gone", Duration::from_secs(20), || {
            !p.vol("sp2").exists() && !p.vol("auto").exists()
        });
    }
    assert!(!a.pool().join("cluster-parts.json").exists());
    b.stop();
}

#[test]
fn rename_is_one_transaction_every_mount_follows_and_concurrent_renames_have_one_winner() {
    let etcd = Etcd::start();
    let a = node(&etcd, "a");
    let b = node(&etcd, "b");
    let c = node(&etcd, "c");
    wait_nodes_up(&[&a, &b, &c], &["a", "b", "c"]);
    a.create_volume("r1", "64M");
    wait_visible(&[&b, &c], "r1");
    write_pattern(&b.vol("r1"), 31, 0, 4 * MIB, true);
    // A handle open on c across the rename keeps reading the volume.
    let f = open_ro(&c.vol("r1"), true).unwrap();

    // Renamed from a node that is not the owner.
    let out = c.cli_ok(&["volume", "rename", "r1", "r2"]);
    assert!(out.contains("renamed volume r1 to r2"), "{out}");
    for p in [&a, &b, &c] {
        wait_until(
            "every mount shows the new name",
            Duration::from_secs(20),
            || p.vol("r2").exists() && !p.vol("r1").exists(),
        );
    }
    let e = catalog_entry(&b, "r2").unwrap();
    assert_eq!(e["owner"], "a");
    assert_eq!(e["local_name"], "r1");
    verify_pattern(&a.vol("r2"), 31, 0, 4 * MIB, true);
    verify_pattern(&b.vol("r2"), 31, 0, 4 * MIB, true);
    let mut buf = aligned(4096);
    std::os::unix::fs::FileExt::read_at(&f, &mut buf[..], 0).unwrap();
    assert_eq!(check_pattern(31, 0, &buf[..]), None);
    drop(f);
    // The owner's reconcile keeps the new name (no entry under the local name again).
    thread::sleep(Duration::from_secs(5));
    assert!(catalog_entry(&c, "r1").is_none());
    assert!(catalog_entry(&c, "r2").is_some());
    // The owner's commands take the new name.
    a.cli_ok(&["volume", "resize", "r2", "--size", "96M"]);
    wait_until("new size seen on c", Duration::from_secs(20), || {
        std::fs::metadata(c.vol("r2")).is_ok_and(|m| m.len() == 96 * MIB)
    });
    // Refused: an existing name, a name that is not there.
    a.create_volume("other", "8M");
    let out = b.cli(&["volume", "rename", "r2", "other"]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("volume 'other' already exists in the cluster"),
        "{}",
        describe(&out)
    );
    let out = b.cli(&["volume", "rename", "nope", "x"]);
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("'nope'"), "{}", describe(&out));

    // Two renames to one name at once from two nodes: exactly one wins.
    for round in 0..4 {
        let (x, y, z) = (
            format!("x{round}"),
            format!("y{round}"),
            format!("z{round}"),
        );
        a.create_volume(&x, "8M");
        b.create_volume(&y, "8M");
        for p in [&a, &b] {
            wait_until("both entries seen", Duration::from_secs(20), || {
                catalog_entry(p, &x).is_some_and(|v| v["state"] == "ready")
                    && catalog_entry(p, &y).is_some_and(|v| v["state"] == "ready")
            });
        }
        let (ha, hb) = (a.handle(), b.handle());
        let (x1, y1, z1, z2) = (x.clone(), y.clone(), z.clone(), z.clone());
        let ta = thread::spawn(move || ha.cli(&["volume", "rename", &x1, &z1]));
        let tb = thread::spawn(move || hb.cli(&["volume", "rename", &y1, &z2]));
        let (ra, rb) = (ta.join().unwrap(), tb.join().unwrap());
        let wins = [&ra, &rb].iter().filter(|o| o.status.success()).count();
        assert_eq!(
            wins,
            1,
            "round {round}: exactly one rename must win\nA: {}\nB: {}",
            describe(&ra),
            describe(&rb)
        );
        let (loser, kept) = if ra.status.success() {
            (&rb, &y)
        } else {
            (&ra, &x)
        };
        let err = text(&loser.stderr);
        assert!(
            err.contains(&format!("volume '{z}' already exists in the cluster")),
            "round {round}: {err}"
        );
        for p in [&a, &b, &c] {
            wait_until("the loser keeps its name", Duration::from_secs(20), || {
                p.vol(&z).exists() && p.vol(kept).exists()
            });
        }
    }

    // Renamed back: the entry has no local name of its own any more; delete on the owner.
    b.cli_ok(&["volume", "rename", "r2", "r1"]);
    wait_until("r1 back on a", Duration::from_secs(20), || {
        a.vol("r1").exists() && !a.vol("r2").exists()
    });
    assert!(catalog_entry(&b, "r1").unwrap().get("local_name").is_none());
    a.cli_ok(&["volume", "rename", "r1", "r3"]);
    wait_until("r3 on a", Duration::from_secs(20), || a.vol("r3").exists());
    // (Forwarding connections of b and c close when idle, so the owner may delete it.)
    let out = a
        .handle()
        .delete_volume_retry("r3", Duration::from_secs(10));
    assert!(out.status.success(), "{}", describe(&out));
    for p in [&a, &b, &c] {
        wait_until("r3 gone", Duration::from_secs(20), || !p.vol("r3").exists());
    }
    assert!(!locals_of(&a).contains(&"r1".to_string()));
    // Without a cluster renaming is refused, naming why.
    let single = TestPool::new(ARRAYS, "256K");
    single.create_volume("v", "8M");
    let out = single.cli(&["volume", "rename", "v", "w"]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("in a cluster only"),
        "{}",
        describe(&out)
    );
    let out = single.cli(&["volume", "create", "s", "--size", "8M", "--spread"]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("--spread needs fusevold --cluster"),
        "{}",
        describe(&out)
    );
}
