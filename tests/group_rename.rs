//! A secondary that keeps the group's volumes under names of its own (`group attach --rename
//! PREFIX`, `--map NAME=LOCAL`), through the CLI with two real daemons: two default pools
//! that both have `vol0`; the collision refused up front naming the volume (also when only
//! the first segment names it, as with an old primary's manifest); the renamed volumes equal
//! to the primary's (`cmp`); the mapping surviving a restart of the secondary and naming a
//! volume added later; `restore-to` naming its volumes after the local names; takeover and
//! failback with renamed volumes (the old primary gets the failback delta under its own
//! names). And the lag alert: an observer with `events --follow` sees `lag-above` while the
//! secondary is stopped (SIGSTOP) and `lag-below` after it catches up.

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::sites::Daemons;
use common::*;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::Value;

fn dd(file: &Path, seek_mib: u64, count_mib: u64) {
    let out = Command::new("dd")
        .arg("if=/dev/urandom")
        .arg(format!("of={}", file.display()))
        .args([
            "bs=1M",
            &format!("seek={seek_mib}"),
            &format!("count={count_mib}"),
            "conv=notrunc,fsync",
            "status=none",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "dd {}: {}",
        file.display(),
        describe(&out)
    );
}

/// The file holds no data from `offset` on: SEEK_DATA there finds none (ENXIO).
fn no_data_from(file: &Path, offset: u64) {
    use std::os::fd::AsRawFd;
    let f = std::fs::File::open(file).unwrap();
    let r = nix::unistd::lseek(f.as_raw_fd(), offset as i64, nix::unistd::Whence::SeekData);
    assert_eq!(
        r,
        Err(nix::errno::Errno::ENXIO),
        "{}: data after offset {offset}",
        file.display()
    );
}

/// `cmp` of two files (the first `limit` bytes when given).
fn same(a: &Path, b: &Path, limit: Option<u64>) {
    let mut c = Command::new("cmp");
    if let Some(n) = limit {
        c.arg("-n").arg(n.to_string());
    }
    let out = run(c.arg(a).arg(b), Duration::from_secs(300));
    assert!(
        out.status.success(),
        "cmp {} {}: {}",
        a.display(),
        b.display(),
        describe(&out)
    );
}

fn wait_ok(p: &TestPool, args: &[&str]) {
    let out = p.cli(args);
    assert!(out.status.success(), "{args:?}: {}", describe(&out));
}

fn group(p: &TestPool) -> Value {
    p.cli_json(&["group", "status", "db"])[0].clone()
}

/// Poll `group status db` until `pred` holds (or panic after `secs`).
fn until(p: &TestPool, secs: u64, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
    let end = Instant::now() + Duration::from_secs(secs);
    loop {
        let g = group(p);
        if pred(&g) {
            return g;
        }
        assert!(Instant::now() < end, "{what}: {g}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn names(v: &Value) -> Vec<String> {
    let mut n: Vec<String> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["name"].as_str().unwrap().to_string())
        .collect();
    n.sort();
    n
}

fn strs(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_str().unwrap().to_string())
        .collect()
}

#[test]
fn default_pools_rename_takeover_and_failback() {
    // Two default pools (fusevold creates them): both have vol0 (8 GiB, thin).
    let mut p = TestPool::empty();
    p.set_budget(Duration::from_secs(400));
    p.start();
    let mut s = TestPool::empty();
    s.set_budget(Duration::from_secs(400));
    s.start();
    // Each site reaches the shared directory through a path of its own, so the primary can
    // lose it (its symlink removed) while the secondary still sees it.
    let shared = p.root().join("shared");
    std::fs::create_dir(&shared).unwrap();
    let p_remote = p.root().join("p-remote");
    let s_remote = p.root().join("s-remote");
    std::os::unix::fs::symlink(&shared, &p_remote).unwrap();
    std::os::unix::fs::symlink(&shared, &s_remote).unwrap();
    let (pr, sr) = (p_remote.to_str().unwrap(), s_remote.to_str().unwrap());

    p.create_volume("data", "16M");
    dd(&p.vol("data"), 0, 8);
    dd(&p.vol("vol0"), 2, 4);
    p.cli_ok(&[
        "group",
        "create",
        "db",
        "--volumes",
        "data,vol0",
        "--remote",
        pr,
    ]);

    // Without a rename: refused up front, naming vol0 (and not data); nothing attached.
    let out = s.cli(&["group", "attach", "db", "--remote", sr]);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    let err = text(&out.stderr);
    assert!(
        err.contains("'vol0'") && !err.contains("'data'") && err.contains("--rename"),
        "{err}"
    );
    assert_eq!(s.cli_json(&["group", "status"]), serde_json::json!([]));

    // With --rename r-: r-data and r-vol0, equal to the primary's once consistent.
    s.cli_ok(&["group", "attach", "db", "--remote", sr, "--rename", "r-"]);
    wait_ok(
        &s,
        &["group", "wait", "db", "--consistent", "--timeout", "120"],
    );
    dd(&p.vol("data"), 8, 2);
    dd(&p.vol("vol0"), 100, 1);
    wait_ok(
        &p,
        &["group", "wait", "db", "--caught-up", "--timeout", "120"],
    );
    let g = group(&s);
    assert_eq!(strs(&g["volumes"]), vec!["r-data", "r-vol0"], "{g}");
    assert_eq!(g["renamed"]["r-data"], "data", "{g}");
    assert_eq!(g["renamed"]["r-vol0"], "vol0", "{g}");
    assert_eq!(g["state"], "consistent", "{g}");
    let out = s.cli_ok(&["group", "status", "db"]);
    assert!(
        out.contains("r-data is the group's data, r-vol0 is the group's vol0"),
        "{out}"
    );
    same(&p.vol("data"), &s.vol("r-data"), None);
    // vol0 is 8 GiB (thin) and written only in its first 512 MiB: compare those, and both
    // files hold no data after them (SEEK_DATA from the volume's extent map).
    same(&p.vol("vol0"), &s.vol("r-vol0"), Some(512 << 20));
    no_data_from(&p.vol("vol0"), 512 << 20);
    no_data_from(&s.vol("r-vol0"), 512 << 20);
    // The secondary's own vol0 is untouched (thin, never written: zeros).
    let out = run(
        Command::new("cmp")
            .args(["-n", &(128u64 << 20).to_string()])
            .arg(s.vol("vol0"))
            .arg("/dev/zero"),
        Duration::from_secs(60),
    );
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(
        names(&s.cli_json(&["volume", "list"])),
        vec!["r-data", "r-vol0", "vol0"]
    );

    // The mapping is durable: after a crash of the secondary (log replay) a volume added
    // later at the primary gets the prefix too.
    s.kill9();
    s.restart();
    p.create_volume("extra", "4M");
    dd(&p.vol("extra"), 0, 4);
    p.cli_ok(&["group", "add", "db", "extra"]);
    wait_ok(
        &p,
        &["group", "wait", "db", "--caught-up", "--timeout", "120"],
    );
    let g = until(&s, 60, "r-extra applied", |g| {
        g["consistent"] == true && strs(&g["volumes"]).contains(&"r-extra".to_string())
    });
    assert_eq!(g["renamed"]["r-extra"], "extra", "{g}");
    same(&p.vol("extra"), &s.vol("r-extra"), None);

    // Disaster takeover with renamed volumes: the primary loses the remote directory and
    // keeps writing (journaled here only), the secondary takes over and writes.
    std::fs::remove_file(&p_remote).unwrap();
    dd(&p.vol("data"), 4, 2); // after the takeover point: discarded by the failback
    let out = s.cli_ok(&["group", "takeover", "db"]);
    assert!(out.contains("r-data"), "{out}");
    dd(&s.vol("r-data"), 12, 1);
    dd(&s.vol("r-vol0"), 300, 1);
    // The primary sees the new epoch and goes stale (read-only).
    std::os::unix::fs::symlink(&shared, &p_remote).unwrap();
    until(&p, 30, "old primary stale", |g| g["state"] == "stale");
    // Failback: the old primary asks for its diverged regions by the group's names; the new
    // primary reads them from r-data; the old primary applies them to its data.
    let out = p.cli_ok(&["group", "failback", "db"]);
    assert!(out.contains("1 regions"), "{out}");
    wait_ok(
        &p,
        &["group", "wait", "db", "--consistent", "--timeout", "120"],
    );
    wait_ok(
        &s,
        &["group", "wait", "db", "--caught-up", "--timeout", "120"],
    );
    let g = group(&p);
    assert_eq!(g["role"], "secondary", "{g}");
    assert_eq!(strs(&g["volumes"]), vec!["data", "extra", "vol0"], "{g}");
    assert!(
        g["renamed"].is_null(),
        "the old primary keeps its names: {g}"
    );
    let g = group(&s);
    assert_eq!(g["role"], "primary", "{g}");
    assert_eq!(
        strs(&g["volumes"]),
        vec!["r-data", "r-extra", "r-vol0"],
        "{g}"
    );
    same(&s.vol("r-data"), &p.vol("data"), None);
    same(&s.vol("r-extra"), &p.vol("extra"), None);
    // vol0 is 8 GiB (thin): what was written is in its first 512 MiB.
    same(&s.vol("r-vol0"), &p.vol("vol0"), Some(512 << 20));
    no_data_from(&s.vol("r-vol0"), 512 << 20);
    assert_eq!(
        std::fs::metadata(s.vol("r-vol0")).unwrap().len(),
        std::fs::metadata(p.vol("vol0")).unwrap().len()
    );
    // The manifest the new primary published names the group's volumes.
    let m = fusevol::format::journal::Manifest::decode(
        &std::fs::read(shared.join("db").join("manifest")).unwrap(),
    )
    .unwrap();
    let mut mv: Vec<&str> = m.volumes.iter().map(|(_, n)| n.as_str()).collect();
    mv.sort();
    assert_eq!(mv, vec!["data", "extra", "vol0"]);
    p.stop();
    s.stop();
}

#[test]
fn map_collisions_first_segment_and_restore_to_local_names() {
    let Daemons { p, mut s, remote } = Daemons::new(2, "128M", "256K");
    p.set_budget(Duration::from_secs(300));
    s.set_budget(Duration::from_secs(300));
    let r = remote.to_str().unwrap().to_string();
    p.create_volume("data", "8M");
    p.create_volume("vol0", "8M");
    dd(&p.vol("data"), 0, 8);
    dd(&p.vol("vol0"), 1, 3);
    s.create_volume("vol0", "8M");
    s.create_volume("r-data", "8M");
    p.cli_ok(&[
        "group",
        "create",
        "db",
        "--volumes",
        "data,vol0",
        "--remote",
        &r,
    ]);
    // An older primary's manifest lists no volumes: the first published segment tells.
    let dir = remote.join("db");
    let end = Instant::now() + Duration::from_secs(30);
    while !std::fs::read_dir(&dir).unwrap().flatten().any(|e| {
        let n = e.file_name().to_string_lossy().into_owned();
        n.ends_with(".jseg") && !n.starts_with('.')
    }) {
        assert!(
            Instant::now() < end,
            "no segment published in {}",
            dir.display()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let mpath = dir.join("manifest");
    let mut m =
        fusevol::format::journal::Manifest::decode(&std::fs::read(&mpath).unwrap()).unwrap();
    m.volumes.clear();
    let tmp = dir.join(".manifest.test");
    std::fs::write(&tmp, m.encode()).unwrap();
    std::fs::rename(&tmp, &mpath).unwrap();
    let out = s.cli(&["group", "attach", "db", "--remote", &r]);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    let err = text(&out.stderr);
    assert!(err.contains("'vol0'") && !err.contains("'data'"), "{err}");
    // --rename r- collides with the local r-data: named with the group's name.
    let out = s.cli(&["group", "attach", "db", "--remote", &r, "--rename", "r-"]);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    let err = text(&out.stderr);
    assert!(
        err.contains("'r-data' (its volume 'data')") && !err.contains("vol0"),
        "{err}"
    );
    // A --map entry that is no volume of the group, two volumes onto one name, a bad name.
    for (map, says) in [
        ("vol0=pvol0,nope=x", "--map names 'nope'"),
        ("vol0=same,data=same", "local name 'same'"),
        ("vol0=a/b", "'a/b'"),
    ] {
        let out = s.cli(&["group", "attach", "db", "--remote", &r, "--map", map]);
        assert!(!out.status.success(), "{map}: {}", describe(&out));
        assert!(
            text(&out.stderr).contains(says),
            "{map}: {}",
            describe(&out)
        );
    }
    assert_eq!(s.cli_json(&["group", "status"]), serde_json::json!([]));
    // --map alone: vol0 becomes pvol0, data keeps its name; retention for restore-to.
    s.cli_ok(&[
        "group",
        "attach",
        "db",
        "--remote",
        &r,
        "--map",
        "vol0=pvol0",
        "--retain-secs",
        "3600",
    ]);
    wait_ok(
        &s,
        &["group", "wait", "db", "--consistent", "--timeout", "120"],
    );
    wait_ok(
        &p,
        &["group", "wait", "db", "--caught-up", "--timeout", "120"],
    );
    let g = group(&s);
    assert_eq!(strs(&g["volumes"]), vec!["data", "pvol0"], "{g}");
    assert_eq!(g["renamed"], serde_json::json!({"pvol0": "vol0"}), "{g}");
    same(&p.vol("data"), &s.vol("data"), None);
    same(&p.vol("vol0"), &s.vol("pvol0"), None);
    // A clean restart (checkpoint) keeps the mapping.
    s.restart();
    let g = group(&s);
    assert_eq!(g["renamed"], serde_json::json!({"pvol0": "vol0"}), "{g}");
    // restore-to from the initial image names the volumes after the local names.
    let applied = g["applied"].as_u64().unwrap();
    let out = s.cli_ok(&[
        "group",
        "restore-to",
        "db",
        "--seq",
        &applied.to_string(),
        "--prefix",
        "rt-",
    ]);
    assert!(out.contains("rt-pvol0"), "{out}");
    same(&p.vol("data"), &s.vol("rt-data"), None);
    same(&p.vol("vol0"), &s.vol("rt-pvol0"), None);
    let into: PathBuf = s.root().join("images");
    std::fs::create_dir(&into).unwrap();
    s.cli_ok(&[
        "group",
        "restore-to",
        "db",
        "--seq",
        &applied.to_string(),
        "--into",
        into.to_str().unwrap(),
    ]);
    same(&p.vol("vol0"), &into.join("pvol0.img"), None);
    same(&p.vol("data"), &into.join("data.img"), None);
}

/// `fusevol --json events --follow` on `p`, its lines sent to a channel as they come.
struct Follower {
    child: std::process::Child,
    rx: mpsc::Receiver<Value>,
}

impl Follower {
    fn start(p: &TestPool) -> Follower {
        let mut child = Command::new(fusevol_bin())
            .arg("-p")
            .arg(p.pool())
            .args(["--json", "events", "--follow"])
            .env_remove("FUSEVOL_POOL")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start fusevol events");
        let out = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for l in BufReader::new(out).lines().map_while(Result::ok) {
                if let Ok(v) = serde_json::from_str::<Value>(&l) {
                    if tx.send(v).is_err() {
                        return;
                    }
                }
            }
        });
        Follower { child, rx }
    }

    /// The next event of group `db` with change `change` (others are passed over), within
    /// `secs`.
    fn wait_for(&self, change: &str, secs: u64) -> Value {
        let end = Instant::now() + Duration::from_secs(secs);
        loop {
            let left = end.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(e) if e["object"] == "group" && e["name"] == "db" && e["change"] == change => {
                    return e
                }
                Ok(_) => {}
                Err(_) => panic!("no '{change}' event of group db within {secs} s"),
            }
        }
    }
}

impl Drop for Follower {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// SIGCONT on drop, so that a failing test never leaves a stopped daemon behind.
struct Stopped(i32);

impl Drop for Stopped {
    fn drop(&mut self) {
        let _ = kill(Pid::from_raw(self.0), Signal::SIGCONT);
    }
}

#[test]
fn lag_alert_above_while_the_secondary_is_stopped_and_below_after() {
    let Daemons { p, s, remote } = Daemons::new(2, "128M", "256K");
    p.set_budget(Duration::from_secs(200));
    s.set_budget(Duration::from_secs(200));
    p.create_volume("data", "8M");
    p.create_group("db", &["data"], &remote);
    s.cli_ok(&[
        "group",
        "attach",
        "db",
        "--remote",
        remote.to_str().unwrap(),
    ]);
    wait_ok(
        &s,
        &["group", "wait", "db", "--consistent", "--timeout", "120"],
    );
    wait_ok(
        &p,
        &["group", "wait", "db", "--caught-up", "--timeout", "120"],
    );
    // Bad values are usage errors; the setting shows in group status.
    let out = p.cli(&["group", "set", "db", "--lag-alert", "soon"]);
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
    let out = p.cli_ok(&["group", "set", "db", "--lag-alert", "1.5"]);
    assert!(out.contains("lag alert at 1.5 s"), "{out}");
    let g = group(&p);
    assert_eq!(g["lag_alert_secs"], 1.5, "{g}");
    assert!(g["lag_above"].is_null(), "{g}");
    let f = Follower::start(&p);
    // The secondary stops: the primary's journal is no longer acknowledged.
    let pid = s.pid().expect("secondary running") as i32;
    kill(Pid::from_raw(pid), Signal::SIGSTOP).unwrap();
    let stopped = Stopped(pid);
    dd(&p.vol("data"), 0, 1);
    let e = f.wait_for("lag-above", 30);
    assert!(e["detail"]["lag_seconds"].as_f64().unwrap() >= 1.5, "{e}");
    assert_eq!(e["detail"]["threshold_seconds"], 1.5, "{e}");
    assert_eq!(e["detail"]["role"], "primary", "{e}");
    assert!(e["detail"]["lag_records"].as_u64().unwrap() > 0, "{e}");
    let g = group(&p);
    assert_eq!(g["lag_above"], true, "{g}");
    // Hysteresis: no second lag-above while it stays behind.
    std::thread::sleep(Duration::from_secs(1));
    // It catches up: lag-below.
    drop(stopped);
    let b = f.wait_for("lag-below", 30);
    assert!(b["seq"].as_u64() > e["seq"].as_u64(), "{e} then {b}");
    assert!(b["detail"]["lag_seconds"].as_f64().unwrap() < 0.75, "{b}");
    let evs = text(&p.cli(&["--json", "events"]).stdout);
    let above = evs.lines().filter(|l| l.contains("\"lag-above\"")).count();
    assert_eq!(above, 1, "{evs}");
    assert!(group(&p)["lag_above"].is_null());
    // Off again: `--lag-alert 0`.
    p.cli_ok(&["group", "set", "db", "--lag-alert", "0"]);
    assert!(group(&p)["lag_alert_secs"].is_null());
}

#[test]
fn a_plan_attaches_with_a_rename() {
    let Daemons { p, s, remote } = Daemons::new(2, "128M", "256K");
    p.set_budget(Duration::from_secs(180));
    s.create_volume("data", "4M");
    let plan_text = |rename: &str| {
        format!(
            "pool = \"{}\"\n[[volume]]\nname = \"data\"\nsize = \"8M\"\n[[group]]\nname = \"rep\"\nvolumes = [\"data\"]\nremote = \"{}\"\nsecondary_pool = \"{}\"\n{rename}",
            p.pool().display(),
            remote.display(),
            s.pool().display()
        )
    };
    let run_plan = |verb: &str, body: &str| {
        let f = p.root().join(format!("{verb}.toml"));
        std::fs::write(&f, body).unwrap();
        Command::new(fusevol_bin())
            .env_remove("FUSEVOL_POOL")
            .args([verb, f.to_str().unwrap()])
            .output()
            .unwrap()
    };
    // Without a rename the secondary's own 'data' is in the way.
    let out = run_plan("plan", &plan_text(""));
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert!(
        text(&out.stderr).contains("volume 'data' already exists"),
        "{}",
        describe(&out)
    );
    let body = plan_text("secondary_rename = \"r-\"\n");
    let out = run_plan("plan", &body);
    assert!(out.status.success(), "{}", describe(&out));
    let out = run_plan("apply", &body);
    assert!(out.status.success(), "{}", describe(&out));
    wait_ok(
        &s,
        &["group", "wait", "rep", "--consistent", "--timeout", "60"],
    );
    dd(&p.vol("data"), 0, 8);
    wait_ok(
        &p,
        &["group", "wait", "rep", "--caught-up", "--timeout", "60"],
    );
    let g = s.cli_json(&["group", "status", "rep"])[0].clone();
    assert_eq!(strs(&g["volumes"]), vec!["r-data"], "{g}");
    same(&p.vol("data"), &s.vol("r-data"), None);
    // Applying it again is a no-op.
    let out = run_plan("apply", &body);
    assert!(
        text(&out.stdout).contains("nothing to do"),
        "{}",
        describe(&out)
    );
}
