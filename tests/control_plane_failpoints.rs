//! `apply` of a plan whose step 3 of 5 fails (failpoint `daemon::plan::step`, armed in the
//! daemon through FAILPOINTS) leaves the pool exactly as before: `volume list`, `pair
//! status` and `group status` as JSON are the same before and after.
#![cfg(feature = "failpoints")]

mod common;

use std::time::Duration;

use common::*;
use serde_json::Value;

fn pool_state(p: &TestPool) -> Value {
    let mut pairs = p.cli_json(&["pair", "status"]);
    for x in pairs.as_array_mut().unwrap() {
        x.as_object_mut().unwrap().remove("rate");
    }
    serde_json::json!({
        "volumes": p.cli_json(&["volume", "list"]),
        "pairs": pairs,
        "groups": p.cli_json(&["group", "status"]),
    })
}

#[test]
fn apply_failing_at_step_3_of_5_leaves_the_pool_as_it_was() {
    let mut p = TestPool::init(&["p0:128M:fast", "b0:128M:backup"], "256K");
    // The step failpoint passes twice, then fails (step 3).
    p.start_env(&[("FAILPOINTS", "daemon::plan::step=2*off->return")]);
    p.set_budget(Duration::from_secs(120));
    p.create_volume("base", "4M");
    p.create_volume("kept", "4M");
    p.cli_ok(&[
        "pair",
        "create",
        "kept",
        "kept-copy",
        "--create-svol",
        "--svol-tier",
        "backup",
    ]);
    p.cli_ok(&["pair", "wait", "kept", "--state", "PAIR", "--timeout", "60"]);
    let remote = p.root().join("remote");
    std::fs::create_dir(&remote).unwrap();
    let plan = p.root().join("five.toml");
    std::fs::write(
        &plan,
        format!(
            r#"
[[volume]]
name = "base"
size = "8M"
[[volume]]
name = "v1"
size = "4M"
[[volume]]
name = "v2"
size = "4M"
[[group]]
name = "g"
volumes = ["v1"]
remote = "{}"
[[pair]]
pvol = "base"
svol = "base-copy"
svol_tier = "backup"
"#,
            remote.display()
        ),
    )
    .unwrap();
    let out = p.cli_ok(&["plan", plan.to_str().unwrap()]);
    assert!(out.contains("5 change(s)"), "{out}");

    let before = pool_state(&p);
    let out = p.cli(&["apply", plan.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    let err = text(&out.stderr);
    assert!(
        err.contains("step 3 of 5 (create volume 'v2') failed")
            && err.contains("the 2 step(s) before it were undone"),
        "{}",
        describe(&out)
    );
    assert_eq!(pool_state(&p), before, "the pool changed");
    let t0 = std::time::Instant::now();
    while p.cli_json(&["locks"]) != serde_json::json!([]) {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "the apply's locks stay"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // Steps 1 and 2 were events, then the roll-back.
    let evs: Vec<Value> = text(&p.cli(&["--json", "events"]).stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .filter(|e: &Value| e["object"] == "change")
        .collect();
    let changes: Vec<&str> = evs.iter().map(|e| e["change"].as_str().unwrap()).collect();
    assert_eq!(changes, ["step", "step", "rolled-back"], "{evs:?}");
    assert_eq!(evs[2]["detail"]["failed_step"], 3);
    // The failpoint fires on every later step: the next apply fails at its first step.
    let out = p.cli(&["apply", plan.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert_eq!(pool_state(&p), before);
}
