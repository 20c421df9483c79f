//! Pool events through the CLI and a real daemon: an observer following with `--follow`
//! sees a pair's life cycle in order with no duplicates; after a restart `--since` continues
//! exactly; `pair wait` and `group wait` wait on events, and a group wait ends at once when
//! the secondary is in state error.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::sites::Daemons;
use common::*;
use serde_json::Value;

const ARRAYS: &[&str] = &["p0:128M:fast", "p1:128M:fast", "b0:128M:backup"];

fn pair_wait(p: &TestPool, st: &str) {
    let out = p.cli(&["pair", "wait", "db", "--state", st, "--timeout", "60"]);
    assert!(out.status.success(), "pair wait {st}: {}", describe(&out));
}

/// Start `fusevol events --follow --json` and collect its lines on a thread.
fn follow(p: &TestPool, since: Option<u64>) -> std::thread::JoinHandle<Vec<Value>> {
    let mut c = Command::new(fusevol_bin());
    c.arg("-p")
        .arg(p.pool())
        .args(["--json", "events", "--follow"]);
    if let Some(s) = since {
        c.args(["--since", &s.to_string()]);
    }
    let mut child = c
        .env_remove("FUSEVOL_POOL")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start fusevol events");
    let out = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        let lines: Vec<Value> = BufReader::new(out)
            .lines()
            .map_while(Result::ok)
            .map(|l| serde_json::from_str(&l).unwrap_or_else(|e| panic!("{l}: {e}")))
            .collect();
        let _ = child.wait();
        lines
    })
}

fn seqs(evs: &[Value]) -> Vec<u64> {
    evs.iter().map(|e| e["seq"].as_u64().unwrap()).collect()
}

/// `(change, state)` of the events of pair `db`.
fn pair_story(evs: &[Value]) -> Vec<String> {
    evs.iter()
        .filter(|e| e["object"] == "pair" && e["name"] == "db")
        .map(|e| {
            let d = &e["detail"];
            match e["change"].as_str().unwrap() {
                "state" => format!(
                    "{}>{}",
                    d["from"].as_str().unwrap(),
                    d["state"].as_str().unwrap()
                ),
                "copy-started" | "copy-finished" => {
                    format!(
                        "{} {}",
                        e["change"].as_str().unwrap(),
                        d["copy"].as_str().unwrap()
                    )
                }
                other => other.to_string(),
            }
        })
        .collect()
}

#[test]
fn follower_sees_a_pair_life_cycle_in_order_and_since_continues_after_restart() {
    let mut p = TestPool::new(ARRAYS, "256K");
    p.set_budget(Duration::from_secs(240));
    // A follower from what has happened so far (the daemon's start) on.
    let before: Vec<u64> = text(&p.cli(&["--json", "events"]).stdout)
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["seq"]
                .as_u64()
                .unwrap()
        })
        .collect();
    let last_before = before.last().copied().unwrap_or(0);
    let watcher = follow(&p, Some(last_before));
    std::thread::sleep(Duration::from_millis(300));

    p.cli_ok(&["volume", "create", "db", "--size", "16M", "--tier", "fast"]);
    std::fs::write(p.vol("db"), vec![7u8; 4 << 20]).unwrap();
    p.cli_ok(&[
        "pair",
        "create",
        "db",
        "db-copy",
        "--create-svol",
        "--svol-tier",
        "backup",
    ]);
    pair_wait(&p, "PAIR");
    p.cli_ok(&["pair", "split", "db"]);
    pair_wait(&p, "PSUS");
    p.cli_ok(&["pair", "resync", "db"]);
    pair_wait(&p, "PAIR");
    p.cli_ok(&["pair", "delete", "db"]);
    pair_wait(&p, "SMPL");
    p.cli_ok(&["snapshot", "create", "db", "s1"]);
    p.stop();
    let evs = watcher.join().unwrap();

    // Contiguous, increasing, no duplicates; starts right after what we had seen.
    let s = seqs(&evs);
    assert!(!s.is_empty());
    assert_eq!(s[0], last_before + 1, "{evs:#?}");
    for w in s.windows(2) {
        assert_eq!(w[1], w[0] + 1, "gap or duplicate in {s:?}");
    }
    assert_eq!(
        pair_story(&evs),
        [
            "created",
            "copy-started COPY",
            "COPY>PAIR",
            "copy-finished COPY",
            "PAIR>PSUS",
            "PSUS>COPY(RS)",
            "copy-started COPY(RS)",
            "COPY(RS)>PAIR",
            "copy-finished COPY(RS)",
            "deleted",
        ],
        "{evs:#?}"
    );
    let find = |obj: &str, name: &str, change: &str| {
        evs.iter()
            .position(|e| e["object"] == obj && e["name"] == name && e["change"] == change)
            .unwrap_or_else(|| panic!("no {obj} {name} {change} in {evs:#?}"))
    };
    assert!(find("volume", "db", "created") < find("pair", "db", "created"));
    assert!(find("volume", "db-copy", "created") < find("pair", "db", "created"));
    find("snapshot", "db@s1", "created");
    let last = evs.last().unwrap();
    assert_eq!(last["object"], "daemon");
    assert_eq!(last["change"], "stopping");
    let last_seq = last["seq"].as_u64().unwrap();

    // After a restart, --since continues exactly: the next event is the daemon's start.
    p.start();
    let out = p.cli(&["--json", "events", "--since", &last_seq.to_string()]);
    assert!(out.status.success(), "{}", describe(&out));
    let again: Vec<Value> = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(again[0]["seq"].as_u64(), Some(last_seq + 1), "{again:#?}");
    assert_eq!(again[0]["object"], "daemon");
    assert_eq!(again[0]["change"], "started");
    // Text output names the change too.
    let plain = p.cli_ok(&["events", "--since", &(last_seq - 1).to_string()]);
    assert!(plain.contains(&format!("{last_seq} ")), "{plain}");
    assert!(
        plain.contains(" daemon ") && plain.contains(" stopping"),
        "{plain}"
    );
}

#[test]
fn asking_for_dropped_events_says_so() {
    let mut p = TestPool::new(ARRAYS, "256K");
    for i in 0..6 {
        p.cli_ok(&["volume", "create", &format!("v{i}"), "--size", "1M"]);
    }
    let all = text(&p.cli(&["--json", "events"]).stdout);
    let n = all.lines().count();
    assert!(n >= 7, "{all}");
    // Nothing dropped yet: --since 0 gets everything without a warning.
    let out = p.cli(&["events", "--since", "0"]);
    assert!(!text(&out.stderr).contains("dropped"), "{}", describe(&out));
    // Cut the ring file to its last 3 lines, as a small ring would, and restart.
    p.stop();
    let path = p.pool().join("events.jsonl");
    let lines: Vec<String> = std::fs::read_to_string(&path)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    let keep = &lines[lines.len() - 3..];
    std::fs::write(&path, keep.join("\n") + "\n").unwrap();
    let first_kept: u64 = serde_json::from_str::<Value>(&keep[0]).unwrap()["seq"]
        .as_u64()
        .unwrap();
    p.start();
    let out = p.cli(&["events", "--since", "1"]);
    assert!(out.status.success(), "{}", describe(&out));
    assert!(
        text(&out.stderr).contains(&format!(
            "events 2..{} were dropped from the ring",
            first_kept - 1
        )),
        "{}",
        describe(&out)
    );
}

#[test]
fn group_wait_ends_at_once_when_the_secondary_is_in_error() {
    let Daemons { p, s, remote } = Daemons::new(2, "128M", "256K");
    p.set_budget(Duration::from_secs(180));
    p.create_volume("data", "8M");
    p.create_volume("logs", "8M");
    p.create_group("db", &["data"], &remote);
    s.cli_ok(&[
        "group",
        "attach",
        "db",
        "--remote",
        remote.to_str().unwrap(),
    ]);
    // After the attach the secondary gets a 'logs' of its own, then the primary adds its
    // 'logs' to the group: the applier cannot create it (attach refuses such a collision up
    // front, a later add-volume can only be found by the applier).
    s.cli_ok(&["group", "wait", "db", "--consistent", "--timeout", "60"]);
    s.create_volume("logs", "8M");
    p.cli_ok(&["group", "add", "db", "logs"]);
    let written = p.cli_json(&["group", "status", "db"])[0]["written"]
        .as_u64()
        .unwrap()
        .to_string();
    let t0 = Instant::now();
    let out = s.cli(&[
        "group",
        "wait",
        "db",
        "--applied",
        &written,
        "--timeout",
        "60",
    ]);
    let took = t0.elapsed();
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert!(
        text(&out.stderr).contains("state error") && text(&out.stderr).contains("logs"),
        "{}",
        describe(&out)
    );
    assert!(took < Duration::from_secs(30), "took {took:?}");
    // The error was an event too.
    let evs = text(&s.cli(&["--json", "events"]).stdout);
    assert!(
        evs.lines().any(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            v["object"] == "group" && v["name"] == "db" && v["change"] == "error"
        }),
        "{evs}"
    );
}

#[test]
fn group_attach_refuses_a_colliding_volume_up_front() {
    let Daemons { p, s, remote } = Daemons::new(2, "128M", "256K");
    p.set_budget(Duration::from_secs(120));
    p.create_volume("data", "8M");
    p.create_volume("logs", "8M");
    s.create_volume("logs", "8M");
    p.create_group("db", &["data", "logs"], &remote);
    let t0 = Instant::now();
    let out = s.cli(&[
        "group",
        "attach",
        "db",
        "--remote",
        remote.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    let err = text(&out.stderr);
    assert!(
        err.contains("'logs'") && err.contains("already exist") && !err.contains("'data'"),
        "{}",
        describe(&out)
    );
    assert!(t0.elapsed() < Duration::from_secs(10));
    // Nothing was attached: no group, no volume 'data' on the secondary.
    let groups = s.cli_json(&["group", "status"]);
    assert_eq!(groups, serde_json::json!([]), "{groups}");
    let vols = s.cli_json(&["volume", "list"]);
    assert!(
        vols.as_array().unwrap().iter().all(|v| v["name"] != "data"),
        "{vols}"
    );
}

#[test]
fn a_filling_journal_publishes_high_water_and_journal_full() {
    let p = TestPool::new(ARRAYS, "64K");
    p.set_budget(Duration::from_secs(120));
    p.create_volume("data", "16M");
    let remote = p.root().join("remote");
    std::fs::create_dir(&remote).unwrap();
    // No secondary: nothing acknowledges, so the journal only grows.
    p.cli_ok(&[
        "group",
        "create",
        "db",
        "--volumes",
        "data",
        "--remote",
        remote.to_str().unwrap(),
        "--segment-size",
        "64K",
        "--journal-limit",
        "1M",
        "--journal-full",
        "block",
        "--block-timeout",
        "0.3",
    ]);
    let out = Command::new("dd")
        .arg("if=/dev/urandom")
        .arg(format!("of={}", p.vol("data").display()))
        .args(["bs=64K", "count=32", "conv=notrunc,fsync", "status=none"])
        .output()
        .unwrap();
    assert!(
        !out.status.success(),
        "2 MiB into a 1 MiB journal: {}",
        describe(&out)
    );
    assert!(
        text(&out.stderr).contains("No space left on device"),
        "{}",
        describe(&out)
    );
    let evs = text(&p.cli(&["--json", "events"]).stdout);
    let changes: Vec<String> = evs
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|e| e["object"] == "group" && e["name"] == "db")
        .map(|e| e["change"].as_str().unwrap().to_string())
        .collect();
    let hw = changes.iter().position(|c| c == "journal-high-water");
    let full = changes.iter().position(|c| c == "journal-full");
    assert!(hw.is_some() && full.is_some() && hw < full, "{changes:?}");
    assert_eq!(
        changes.iter().filter(|c| *c == "journal-full").count(),
        1,
        "one event per episode: {changes:?}"
    );
}
