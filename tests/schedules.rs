//! Backup schedules (issue 14) with a real daemon and mount: the daemon takes the snapshots,
//! labels them, prunes by the retention rules only what it made (never a hand-made, open or
//! cloned-from snapshot), keeps the schedule across restarts, takes a missed slot once,
//! records a failed pre hook or a lock as the last result, and stops when removed.

mod common;

use std::collections::BTreeSet;
use std::thread::sleep;
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

/// The snapshots of `vol` the schedule named `sched` made, by their own records.
fn scheduled(p: &TestPool, vol: &str, sched: &str) -> BTreeSet<String> {
    let list = p.cli_json(&["snapshot", "list", vol]);
    let mut out = BTreeSet::new();
    for s in list.as_array().unwrap() {
        let name = s["name"].as_str().unwrap();
        // The scheduler may prune it between the listing and this question: then it is
        // not one of them any more.
        let got = p.cli(&["--json", "volume", "info", "get", &format!("{vol}@{name}")]);
        if !got.status.success() && text(&got.stdout).contains("not_found") {
            continue;
        }
        let info: Value = serde_json::from_slice(&got.stdout)
            .unwrap_or_else(|e| panic!("volume info get {vol}@{name}: {e}: {}", describe(&got)));
        if info["fields"]["origin.kind"] == "scheduled"
            && info["fields"]["origin.schedule"] == sched
        {
            out.insert(name.to_string());
        }
    }
    out
}

fn schedule(p: &TestPool, name: &str) -> Value {
    let l = p.cli_json(&["schedule", "list"]);
    l.as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == name)
        .cloned()
        .unwrap_or(Value::Null)
}

fn snapshot_names(p: &TestPool, vol: &str) -> BTreeSet<String> {
    p.cli_json(&["snapshot", "list", vol])
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap().to_string())
        .collect()
}

/// Wait until `f` holds (checking every 200 ms), or fail naming `what`.
fn wait_for(what: &str, within: Duration, mut f: impl FnMut() -> bool) {
    let end = Instant::now() + within;
    while !f() {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        sleep(Duration::from_millis(200));
    }
}

#[test]
fn every_2s_keep_3_prunes_only_its_own_and_survives_restart() {
    let mut p = TestPool::new(&["a0:128M", "a1:128M"], "1M");
    p.set_budget(Duration::from_secs(240));
    p.create_volume("db", "16M");
    std::fs::write(p.vol("db"), vec![7u8; 2 << 20]).unwrap();
    p.cli_ok(&["volume", "info", "set", "db", "host=db1"]);
    p.cli_ok(&["snapshot", "create", "db", "by-hand"]);
    let added = p.cli_json(&[
        "schedule", "add", "db", "--every", "2s", "--keep", "3", "--label", "auto", "--name",
        "db-auto",
    ]);
    assert_eq!(added["name"], "db-auto", "{added}");
    assert_eq!(added["every"], "2s", "{added}");
    assert!(added["next_run_ms"].as_u64().unwrap() > 0, "{added}");
    // A second schedule of the same name is refused.
    let out = p.cli(&[
        "schedule", "add", "db", "--every", "5s", "--keep", "1", "--name", "db-auto",
    ]);
    assert!(!out.status.success(), "{}", describe(&out));
    // A schedule keeping nothing, or of a missing volume, is refused.
    assert!(!p
        .cli(&["schedule", "add", "db", "--every", "5s"])
        .status
        .success());
    assert!(!p
        .cli(&["schedule", "add", "nope", "--every", "5s", "--keep", "1"])
        .status
        .success());

    // ~10 s of runs: never more than 3 scheduled snapshots, the hand-made one stays.
    let mut seen = BTreeSet::new();
    let t0 = Instant::now();
    let mut restarted = false;
    while t0.elapsed() < Duration::from_secs(11) {
        let now = scheduled(&p, "db", "db-auto");
        assert!(
            now.len() <= 3,
            "more than --keep 3 scheduled snapshots: {now:?}"
        );
        assert!(snapshot_names(&p, "db").contains("by-hand"));
        seen.extend(now);
        if !restarted && t0.elapsed() > Duration::from_secs(5) {
            // The schedule is in the pool's metadata: a restart keeps it.
            p.restart();
            restarted = true;
            assert_eq!(schedule(&p, "db-auto")["every"], "2s");
        }
        sleep(Duration::from_millis(300));
    }
    let runs_before = schedule(&p, "db-auto")["runs"].as_u64().unwrap();
    assert!(
        seen.len() >= 4,
        "expected runs to go on past the keep count: {seen:?}"
    );
    wait_for("a run after the restart", Duration::from_secs(10), || {
        schedule(&p, "db-auto")["runs"].as_u64().unwrap() > runs_before
    });
    let now = scheduled(&p, "db", "db-auto");
    assert!(!now.is_empty() && now.len() <= 3, "{now:?}");
    // The labels of a scheduled snapshot: the volume's fields, the schedule's label, origin.
    let last = now.iter().next_back().unwrap();
    let info = p.cli_json(&["volume", "info", "get", &format!("db@{last}")]);
    assert_eq!(info["fields"]["label"], "auto", "{info}");
    assert_eq!(info["fields"]["host"], "db1", "{info}");
    assert_eq!(info["fields"]["origin.volume"], "db", "{info}");
    assert_eq!(
        info["fields"]["origin.schedule_id"],
        added["id"].to_string(),
        "{info}"
    );
    // The data is the volume's.
    let snap = std::fs::read(p.mnt().join(".snapshots/db").join(last)).unwrap();
    assert!(snap[..2 << 20].iter().all(|&b| b == 7));
    let l = schedule(&p, "db-auto");
    assert_eq!(l["last_result"], "ok", "{l}");
    assert!(now.contains(l["last_snapshot"].as_str().unwrap()) || l["runs"].as_u64() > Some(0));
    // The catalog lists them with kind scheduled.
    let cat = p.cli_json(&["catalog", "db"]);
    assert!(
        cat.as_array()
            .unwrap()
            .iter()
            .any(|e| e["kind"] == "scheduled" && e["label"] == "auto"),
        "{cat}"
    );

    // An open snapshot and one a clone was made from are never pruned.
    let open_one = now.iter().next().unwrap().clone();
    let held = std::fs::File::open(p.mnt().join(".snapshots/db").join(&open_one)).unwrap();
    let cloned_from = now
        .iter()
        .nth(1)
        .cloned()
        .unwrap_or_else(|| open_one.clone());
    p.cli_ok(&["snapshot", "clone", "db", &cloned_from, "db-clone"]);
    let runs = schedule(&p, "db-auto")["runs"].as_u64().unwrap();
    wait_for("three more runs", Duration::from_secs(20), || {
        schedule(&p, "db-auto")["runs"].as_u64().unwrap() >= runs + 3
    });
    let now = scheduled(&p, "db", "db-auto");
    assert!(now.contains(&open_one), "open snapshot pruned: {now:?}");
    assert!(
        now.contains(&cloned_from),
        "cloned-from snapshot pruned: {now:?}"
    );
    let note = schedule(&p, "db-auto")["last_message"].to_string();
    assert!(note.contains("is open"), "{note}");
    drop(held);
    wait_for(
        "the closed snapshot to be pruned",
        Duration::from_secs(20),
        || !scheduled(&p, "db", "db-auto").contains(&open_one) || open_one == cloned_from,
    );

    // Removal stops it; its snapshots stay.
    let out = p.cli_ok(&["schedule", "remove", "db-auto"]);
    assert!(out.contains("removed"), "{out}");
    let after = snapshot_names(&p, "db");
    sleep(Duration::from_secs(5));
    assert_eq!(
        snapshot_names(&p, "db"),
        after,
        "a removed schedule still ran"
    );
    assert!(after.contains("by-hand"));
    assert_eq!(p.cli_json(&["schedule", "list"]), Value::Array(vec![]));
    // Events were published for the runs and prunes.
    let ev = p.cli_ok(&["--json", "events"]);
    assert!(ev.contains("\"snapshot-taken\""), "{ev}");
    assert!(ev.contains("\"snapshot-pruned\""), "{ev}");
    p.stop();
    p.check_clean();
}

/// The `snapshot-taken` events of schedule `name` since the daemon last started.
fn taken_since_start(p: &TestPool, name: &str) -> Vec<Value> {
    let ev = p.cli_ok(&["--json", "events"]);
    let evs: Vec<Value> = ev
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let start = evs
        .iter()
        .rposition(|e| e["object"] == "daemon" && e["change"] == "started")
        .expect("a daemon started event");
    evs[start..]
        .iter()
        .filter(|e| {
            e["object"] == "schedule" && e["name"] == name && e["change"] == "snapshot-taken"
        })
        .cloned()
        .collect()
}

#[test]
fn a_missed_slot_is_taken_once() {
    let mut p = TestPool::new(&["a0:128M"], "1M");
    p.set_budget(Duration::from_secs(180));
    p.create_volume("v", "8M");
    p.cli_ok(&[
        "schedule", "add", "v", "--every", "5s", "--keep", "20", "--name", "s5",
    ]);
    wait_for("the first run", Duration::from_secs(15), || {
        !scheduled(&p, "v", "s5").is_empty()
    });
    p.stop();
    // Down for three slots.
    sleep(Duration::from_secs(16));
    p.start();
    let started = Instant::now();
    wait_for("the catch-up run", Duration::from_secs(10), || {
        !taken_since_start(&p, "s5").is_empty()
    });
    // Until just before the next slot (5 s after the catch-up): exactly one run.
    sleep(Duration::from_secs(4).saturating_sub(started.elapsed()));
    let taken = taken_since_start(&p, "s5");
    assert_eq!(taken.len(), 1, "missed slots were made up: {taken:?}");
    assert!(
        taken[0]["detail"]["missed"].as_u64().unwrap() >= 2,
        "{taken:?}"
    );
    let s = schedule(&p, "s5");
    assert!(
        s["last_message"].as_str().unwrap().contains("missed"),
        "{s}"
    );
    assert_eq!(s["last_result"], "ok", "{s}");
    // And the cadence goes on.
    wait_for("the next run", Duration::from_secs(15), || {
        taken_since_start(&p, "s5").len() >= 2
    });
    p.stop();
}

#[test]
fn failed_pre_hook_and_lock_are_the_last_result() {
    let mut p = TestPool::new(&["a0:128M"], "1M");
    p.set_budget(Duration::from_secs(180));
    p.create_volume("v", "8M");
    let mark = p.root().join("post-ran");
    let post = format!(
        "echo $FUSEVOL_RESULT $FUSEVOL_SCHEDULE $FUSEVOL_VOLUMES > {}",
        mark.display()
    );
    p.cli_ok(&[
        "schedule",
        "add",
        "v",
        "--every",
        "1s",
        "--keep",
        "2",
        "--name",
        "bad",
        "--pre",
        "echo frozen-not; exit 7",
        "--post",
        &post,
    ]);
    wait_for("a failed run", Duration::from_secs(15), || {
        schedule(&p, "bad")["last_result"] == "failed"
    });
    let s = schedule(&p, "bad");
    let msg = s["last_message"].as_str().unwrap();
    assert!(
        msg.contains("pre hook") && msg.contains("exit status: 7"),
        "{s}"
    );
    assert_eq!(s["runs"], 0, "{s}");
    assert!(scheduled(&p, "v", "bad").is_empty());
    assert!(
        snapshot_names(&p, "v").is_empty(),
        "a snapshot despite the failed pre hook"
    );
    // The post hook ran anyway, told it failed.
    assert_eq!(
        std::fs::read_to_string(&mark).unwrap().trim(),
        "failed bad v"
    );
    let out = p.cli_ok(&["schedule", "list"]);
    assert!(out.contains("FAILED") && out.contains("pre hook"), "{out}");
    let ev = p.cli_ok(&["--json", "events"]);
    assert!(ev.contains("\"run-failed\""), "{ev}");
    p.cli_ok(&["schedule", "remove", "bad"]);

    // A locked volume: the run is skipped with the lock as the reason.
    p.cli_ok(&[
        "schedule", "add", "v", "--every", "1s", "--keep", "2", "--name", "ok",
    ]);
    wait_for("a good run", Duration::from_secs(15), || {
        schedule(&p, "ok")["last_result"] == "ok"
    });
    p.cli_ok(&["--owner", "alice", "lock", "v"]);
    wait_for("a skipped run", Duration::from_secs(15), || {
        schedule(&p, "ok")["last_result"] == "skipped"
    });
    let s = schedule(&p, "ok");
    assert!(
        s["last_message"]
            .as_str()
            .unwrap()
            .contains("locked by 'alice'"),
        "{s}"
    );
    let frozen = scheduled(&p, "v", "ok");
    sleep(Duration::from_millis(2500));
    assert_eq!(scheduled(&p, "v", "ok"), frozen, "changed while locked");
    p.cli_ok(&["--owner", "alice", "unlock", "v"]);
    wait_for("a run after unlock", Duration::from_secs(15), || {
        schedule(&p, "ok")["last_result"] == "ok"
    });
    assert!(scheduled(&p, "v", "ok").len() <= 2);
    // Removal by id.
    let id = schedule(&p, "ok")["id"].to_string();
    p.cli_ok(&["schedule", "remove", &id]);
    assert!(schedule(&p, "ok").is_null());
    p.stop();
}
