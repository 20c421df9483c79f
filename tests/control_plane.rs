//! The operator's control plane through the CLI and real daemons: operation locks (a lock
//! blocks another client's split naming the holder, ends at its TTL), two-phase changes
//! (`plan` changes nothing, `apply` executes, a second `apply` is a no-op, a plan spanning two
//! pools creates a journal group on one and attaches it on the other, and is refused as a
//! whole when one pool does not validate it), and the CCI aliases (same output and exit codes
//! as the pair verbs, also as argv[0] names).

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::sites::Daemons;
use common::*;
use serde_json::Value;

const ARRAYS: &[&str] = &["p0:128M:fast", "p1:128M:fast", "b0:128M:backup"];

fn events(p: &TestPool) -> Vec<Value> {
    text(&p.cli(&["--json", "events"]).stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn pair_up(p: &TestPool, pvol: &str) {
    p.create_volume(pvol, "8M");
    let svol = format!("{pvol}-copy");
    p.cli_ok(&[
        "pair",
        "create",
        pvol,
        &svol,
        "--create-svol",
        "--svol-tier",
        "backup",
    ]);
    p.cli_ok(&["pair", "wait", pvol, "--state", "PAIR", "--timeout", "60"]);
}

#[test]
fn a_lock_blocks_another_clients_split_names_the_holder_and_expires_at_its_ttl() {
    let p = TestPool::new(ARRAYS, "256K");
    p.set_budget(Duration::from_secs(120));
    pair_up(&p, "db");

    let t_lock = Instant::now();
    let out = p.cli_ok(&["--owner", "alice", "lock", "pair", "db", "--ttl", "5"]);
    assert!(out.contains("locked pair 'db' by alice"), "{out}");
    // Listed in pair status (text and JSON) and in `locks`.
    let st = p.cli_json(&["pair", "status", "db"]);
    assert_eq!(st[0]["lock"]["owner"], "alice", "{st}");
    assert_eq!(st[0]["lock"]["ttl"], 5, "{st}");
    let txt = p.cli_ok(&["pair", "status"]);
    assert!(txt.contains("locked by alice since"), "{txt}");
    let ls = p.cli_json(&["locks"]);
    assert_eq!(ls.as_array().unwrap().len(), 1, "{ls}");

    // Another client's split is refused, naming the holder and since when; with or without
    // an owner of its own.
    for who in [&["--owner", "bob"][..], &[][..]] {
        let mut args = who.to_vec();
        args.extend(["pair", "split", "db"]);
        let out = p.cli(&args);
        assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
        let err = text(&out.stderr);
        assert!(
            err.contains("pair 'db' is locked by 'alice' since 20"),
            "{}",
            describe(&out)
        );
    }
    let out = p.cli(&["--json", "--owner", "bob", "pair", "split", "db"]);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["error"]["code"], "locked", "{v}");
    // Nor may bob take the lock or release it.
    let out = p.cli(&["--owner", "bob", "lock", "pair", "db"]);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    let out = p.cli(&["--owner", "bob", "unlock", "pair", "db"]);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));

    // Reads and host I/O go on.
    p.cli_ok(&["volume", "info", "db"]);
    std::fs::write(p.vol("db"), vec![7u8; 65536]).expect("host write under a lock");
    assert_eq!(
        p.cli_json(&["pair", "status", "db"])[0]["state"],
        "PAIR",
        "still paired"
    );

    // The TTL ends it: bob's split goes through afterwards.
    let left = Duration::from_secs(5).saturating_sub(t_lock.elapsed());
    std::thread::sleep(left + Duration::from_millis(700));
    assert_eq!(p.cli_json(&["locks"]), serde_json::json!([]));
    assert!(p.cli_json(&["pair", "status", "db"])[0]
        .get("lock")
        .is_none());
    p.cli_ok(&["--owner", "bob", "pair", "split", "db"]);
    let evs = events(&p);
    let story: Vec<&str> = evs
        .iter()
        .filter(|e| e["object"] == "pair" && e["name"] == "db")
        .map(|e| e["change"].as_str().unwrap())
        .filter(|c| c.contains("lock"))
        .collect();
    assert_eq!(story, ["locked", "lock-expired"], "{evs:?}");

    // A lock on a volume keeps pair commands off it; its owner passes; unlock ends it.
    let out = p.cli_ok(&["--owner", "alice", "lock", "db-copy"]);
    assert!(out.contains("until unlocked"), "{out}");
    let vi = p.cli_ok(&["volume", "info", "db-copy"]);
    assert!(vi.contains("lock") && vi.contains("by alice"), "{vi}");
    let out = p.cli(&["--owner", "bob", "pair", "resync", "db"]);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert!(
        text(&out.stderr).contains("volume 'db-copy' is locked by 'alice'"),
        "{}",
        describe(&out)
    );
    let out = p.cli(&[
        "--owner", "bob", "volume", "resize", "db-copy", "--size", "16M",
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    p.cli_ok(&["--owner", "alice", "pair", "resync", "db"]);
    p.cli_ok(&["--owner", "alice", "unlock", "db-copy"]);
    p.cli_ok(&["pair", "wait", "db", "--state", "PAIR", "--timeout", "60"]);
    p.cli_ok(&["--owner", "bob", "pair", "split", "db"]);
    // Locking what does not exist is refused.
    let out = p.cli(&["--owner", "alice", "lock", "group", "nosuch"]);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
}

/// `volume list`, `pair status` and `group status` as JSON, without the fields that move by
/// themselves (copy rates).
fn pool_state(p: &TestPool) -> Value {
    let mut pairs = p.cli_json(&["pair", "status"]);
    for x in pairs.as_array_mut().unwrap() {
        x.as_object_mut().unwrap().remove("rate");
    }
    let mut groups = p.cli_json(&["group", "status"]);
    // The shipper seals and ships segments in the background (a seal record adds journal
    // bytes): those counters move by themselves; the group's configuration and state do not.
    for g in groups.as_array_mut().unwrap() {
        let g = g.as_object_mut().unwrap();
        for k in [
            "lag_seconds",
            "lag_bytes",
            "lag_records",
            "journal_bytes",
            "journal_free",
            "sealed",
            "shipped",
            "acknowledged",
            "applied",
            "consistent_since",
        ] {
            g.remove(k);
        }
    }
    serde_json::json!({
        "volumes": p.cli_json(&["volume", "list"]),
        "pairs": pairs,
        "groups": groups,
    })
}

/// The implicit locks of an `apply` end when its connection closes: wait for that.
fn no_locks_left(p: &TestPool) {
    let t0 = Instant::now();
    while p.cli_json(&["locks"]) != serde_json::json!([]) {
        assert!(t0.elapsed() < Duration::from_secs(10), "locks stay");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn write_plan(p: &TestPool, name: &str, text: &str) -> std::path::PathBuf {
    let f = p.root().join(name);
    std::fs::write(&f, text).unwrap();
    f
}

#[test]
fn plan_changes_nothing_apply_executes_and_a_second_apply_is_a_no_op() {
    let p = TestPool::new(ARRAYS, "256K");
    p.set_budget(Duration::from_secs(120));
    p.create_volume("old", "4M");
    p.create_volume("grow", "4M");
    let remote = p.root().join("remote");
    std::fs::create_dir(&remote).unwrap();
    let plan = write_plan(
        &p,
        "change.toml",
        &format!(
            r#"
[[volume]]
name = "web"
size = "16M"
tier = "fast"

[[volume]]
name = "grow"
size = "8M"

[[volume]]
name = "old"
absent = true

[[pair]]
pvol = "web"
svol = "web-copy"
svol_tier = "backup"

[[volume]]
name = "db"
size = "8M"

[[group]]
name = "rep"
volumes = ["db"]
remote = "{}"
"#,
            remote.display()
        ),
    );
    let before = pool_state(&p);
    let out = p.cli_ok(&["plan", plan.to_str().unwrap()]);
    for want in [
        "create  volume  web",
        "change  volume  grow",
        "remove  volume  old",
        "create  pair    web",
        "create  group   rep",
        "nothing was changed",
    ] {
        assert!(out.contains(want), "{want}: {out}");
    }
    assert_eq!(pool_state(&p), before, "plan changed something");

    let out = p.cli_ok(&["apply", plan.to_str().unwrap()]);
    assert!(out.contains("applied 6 change(s)"), "{out}");
    p.cli_ok(&["pair", "wait", "web", "--state", "PAIR", "--timeout", "60"]);
    let vols = p.cli_json(&["volume", "list"]);
    let names: Vec<&str> = vols
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["name"].as_str().unwrap())
        .collect();
    for n in ["web", "web-copy", "grow", "db"] {
        assert!(names.contains(&n), "{n}: {names:?}");
    }
    assert!(!names.contains(&"old"), "{names:?}");
    assert_eq!(p.volume_info("grow")["size"], 8 << 20);
    assert_eq!(
        p.cli_json(&["group", "status", "rep"])[0]["role"],
        "primary"
    );
    // One event per step and one for the whole change.
    no_locks_left(&p);
    let evs = events(&p);
    let change: Vec<&Value> = evs.iter().filter(|e| e["object"] == "change").collect();
    assert_eq!(change.len(), 7, "{change:?}");
    assert!(change[..6].iter().all(|e| e["change"] == "step"));
    assert_eq!(change[6]["change"], "applied");
    assert_eq!(change[2]["detail"]["step"], 3);
    // The implicit locks ended with the command.
    no_locks_left(&p);

    // The same plan again: nothing to do, nothing changes, no change events.
    let after = pool_state(&p);
    let last = evs.last().unwrap()["seq"].as_u64().unwrap();
    let out = p.cli_ok(&["apply", plan.to_str().unwrap()]);
    assert!(out.contains("nothing to do"), "{out}");
    assert_eq!(pool_state(&p), after);
    assert_eq!(
        events(&p).last().unwrap()["seq"].as_u64().unwrap(),
        last,
        "a no-op apply published events"
    );

    // Problems are all listed and nothing is done: a shrink, an unknown tier, a lock.
    p.cli_ok(&["--owner", "carol", "lock", "grow"]);
    let bad = write_plan(
        &p,
        "bad.json",
        r#"{"volumes":[{"name":"web","size":4096},{"name":"x","size":"1M","tier":"gold"},
            {"name":"grow","size":"32M"}]}"#,
    );
    for verb in ["plan", "apply"] {
        let out = p.cli(&[verb, bad.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
        let err = text(&out.stderr);
        for want in [
            "3 problem(s)",
            "does not shrink",
            "tier 'gold'",
            "volume 'grow' is locked by 'carol'",
        ] {
            assert!(err.contains(want), "{verb}: {want}: {}", describe(&out));
        }
    }
    p.cli_ok(&["--owner", "carol", "unlock", "grow"]);
    assert_eq!(pool_state(&p), after);
    // A bad file is a usage error naming it.
    let junk = write_plan(
        &p,
        "junk.toml",
        "[[volume]]\nname = 'v'\nsize = '1G'\ncolour = 2\n",
    );
    let out = p.cli(&["plan", junk.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
    assert!(
        text(&out.stderr).contains("junk.toml"),
        "{}",
        describe(&out)
    );
}

#[test]
fn a_plan_across_two_pools_creates_a_journal_group_and_attaches_it() {
    let Daemons { p, s, remote } = Daemons::new(2, "128M", "256K");
    p.set_budget(Duration::from_secs(180));
    s.create_volume("logs", "4M");
    let text_of = |group: &str, vol: &str| {
        format!(
            r#"
pool = "{}"
[[volume]]
name = "{vol}"
size = "8M"
[[group]]
name = "{group}"
volumes = ["{vol}"]
remote = "{}"
secondary_pool = "{}"
"#,
            p.pool().display(),
            remote.display(),
            s.pool().display()
        )
    };
    let plan = write_plan(&p, "two.toml", &text_of("rep", "data"));
    let out = Command::new(fusevol_bin())
        .env_remove("FUSEVOL_POOL")
        .args(["plan", plan.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", describe(&out));
    let o = text(&out.stdout);
    assert!(o.contains(&format!("pool {}", s.pool().display())), "{o}");
    assert!(o.contains("create  attach  rep"), "{o}");

    let apply = |f: &Path| {
        Command::new(fusevol_bin())
            .env_remove("FUSEVOL_POOL")
            .args(["apply", f.to_str().unwrap()])
            .output()
            .unwrap()
    };
    let out = apply(&plan);
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(
        p.cli_json(&["group", "status", "rep"])[0]["role"],
        "primary"
    );
    assert_eq!(
        s.cli_json(&["group", "status", "rep"])[0]["role"],
        "secondary"
    );
    s.cli_ok(&["group", "wait", "rep", "--consistent", "--timeout", "60"]);
    assert_eq!(s.volume_info("data")["size"], 8 << 20);
    // Again: a no-op on both pools.
    let out = apply(&plan);
    assert!(out.status.success(), "{}", describe(&out));
    assert!(
        text(&out.stdout).contains("nothing to do"),
        "{}",
        describe(&out)
    );

    // The secondary has a 'logs' of its own: it does not validate, so apply changes neither
    // pool (the primary's part was valid).
    // (Replication counters move by themselves: compare what the plan could change.)
    let layout = |t: &TestPool| {
        let groups: Vec<Value> = t
            .cli_json(&["group", "status"])
            .as_array()
            .unwrap()
            .iter()
            .map(|g| serde_json::json!([g["name"], g["role"], g["volumes"], g["remote"]]))
            .collect();
        (t.cli_json(&["volume", "list"]), groups)
    };
    let before = (layout(&p), layout(&s));
    let bad = write_plan(&p, "bad.toml", &text_of("rep2", "logs"));
    let out = apply(&bad);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    let err = text(&out.stderr);
    assert!(
        err.contains("apply refused: 1 of 2 pool(s) did not validate")
            && err.contains(&s.pool().display().to_string())
            && err.contains("'logs' already exists"),
        "{}",
        describe(&out)
    );
    assert_eq!((layout(&p), layout(&s)), before);
}

#[test]
fn cci_aliases_behave_as_the_pair_verbs_exit_codes_included() {
    let p = TestPool::new(ARRAYS, "256K");
    p.set_budget(Duration::from_secs(120));
    p.create_volume("db", "8M");
    p.cli_ok(&[
        "cci",
        "paircreate",
        "db",
        "db-copy",
        "--create-svol",
        "--svol-tier",
        "backup",
    ]);
    p.cli_ok(&[
        "cci",
        "pairevtwait",
        "db",
        "--state",
        "PAIR",
        "--timeout",
        "60",
    ]);
    // pairdisplay = pair status, --json before or after the alias.
    let verb = p.cli_json(&["pair", "status", "db"]);
    assert_eq!(p.cli_json(&["cci", "pairdisplay", "db"]), verb);
    let out = p.cli(&["cci", "pairdisplay", "db", "--json"]);
    assert_eq!(serde_json::from_slice::<Value>(&out.stdout).unwrap(), verb);
    assert_eq!(
        p.cli_ok(&["cci", "pairdisplay"]),
        p.cli_ok(&["pair", "status"])
    );
    // Exit codes: 5 for a wait that times out, 1 for a refused request, 2 for bad usage.
    let same = |alias: &[&str], verb: &[&str], code: i32| {
        let a = p.cli(alias);
        let v = p.cli(verb);
        assert_eq!(a.status.code(), Some(code), "{alias:?}: {}", describe(&a));
        assert_eq!(v.status.code(), Some(code), "{verb:?}: {}", describe(&v));
        if code != 2 {
            assert_eq!(text(&a.stderr), text(&v.stderr));
        }
    };
    same(
        &[
            "cci",
            "pairevtwait",
            "db",
            "--state",
            "PSUS",
            "--timeout",
            "1",
        ],
        &["pair", "wait", "db", "--state", "PSUS", "--timeout", "1"],
        5,
    );
    same(
        &["cci", "pairsplit", "nosuch"],
        &["pair", "split", "nosuch"],
        1,
    );
    same(&["cci", "paircreate", "db"], &["pair", "create", "db"], 2);
    same(
        &["cci", "pairresync", "db", "--bogus"],
        &["pair", "resync", "db", "--bogus"],
        2,
    );
    p.cli_ok(&["cci", "pairsplit", "db"]);
    assert_eq!(p.cli_json(&["pair", "status", "db"])[0]["state"], "PSUS");
    p.cli_ok(&["cci", "pairresync", "db", "--wait"]);
    assert_eq!(p.cli_json(&["pair", "status", "db"])[0]["state"], "PAIR");

    // As argv[0]: a symlink named pairdisplay / pairevtwait.
    let bin = p.root().join("bin");
    std::fs::create_dir(&bin).unwrap();
    for name in ["pairdisplay", "pairevtwait"] {
        std::os::unix::fs::symlink(fusevol_bin(), bin.join(name)).unwrap();
    }
    let out = Command::new(bin.join("pairdisplay"))
        .env_remove("FUSEVOL_POOL")
        .arg("-p")
        .arg(p.pool())
        .args(["--json", "db"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(
        serde_json::from_slice::<Value>(&out.stdout).unwrap(),
        p.cli_json(&["pair", "status", "db"])
    );
    let out = Command::new(bin.join("pairevtwait"))
        .env_remove("FUSEVOL_POOL")
        .arg("-p")
        .arg(p.pool())
        .args(["db", "--state", "PSUE", "--timeout", "1"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(5), "{}", describe(&out));
}
