//! Journal group commands through the CLI: argument errors, status of no group and of an
//! unknown group (what holds before the replication core answers anything else).

mod common;

use common::*;
use serde_json::Value;

const ARRAYS: &[&str] = &["a0:256M", "a1:256M"];

fn code(out: &std::process::Output) -> i32 {
    out.status.code().unwrap_or(-1)
}

#[test]
fn group_usage_errors_exit_2_naming_the_group() {
    let p = TestPool::new(ARRAYS, "256K");
    p.create_volume("v1", "16M");
    // Missing --remote / --volumes: clap's usage error.
    for args in [
        &["group", "create", "g1", "--volumes", "v1"][..],
        &["group", "create", "g1", "--remote", "/tmp/r"],
        &["group", "attach", "g1"],
        &["group", "wait", "g1"],
        &["group", "wait", "g1", "--applied", "1", "--consistent"],
    ] {
        let out = p.cli(args);
        assert_eq!(code(&out), 2, "{args:?}: {}", describe(&out));
        assert!(
            text(&out.stderr).contains("error:"),
            "{args:?}: {}",
            describe(&out)
        );
    }
    let remote = p.root().join("remote");
    let remote = remote.to_str().unwrap();
    // Bad group names.
    for name in ["../x", ".hidden", "a/b"] {
        let out = p.cli(&[
            "group",
            "create",
            name,
            "--volumes",
            "v1",
            "--remote",
            remote,
        ]);
        assert_eq!(code(&out), 2, "{name}: {}", describe(&out));
        assert!(
            text(&out.stderr).contains(&format!("group name '{name}'")),
            "{name}: {}",
            describe(&out)
        );
    }
    // Empty, bad or repeated volumes.
    for (vols, says) in [
        ("", "group g1 needs at least one volume"),
        (",", "group g1 needs at least one volume"),
        ("v1,../x", "group g1: volume name '../x'"),
        ("v1,v1", "group g1: volume v1 is listed twice"),
    ] {
        let out = p.cli(&[
            "group",
            "create",
            "g1",
            "--volumes",
            vols,
            "--remote",
            remote,
        ]);
        assert_eq!(code(&out), 2, "{vols:?}: {}", describe(&out));
        assert!(
            text(&out.stderr).contains(says),
            "{vols:?}: {}",
            describe(&out)
        );
    }
    // --json: the usage error as JSON on stdout.
    let out = p.cli(&[
        "--json",
        "group",
        "create",
        "../x",
        "--volumes",
        "v1",
        "--remote",
        remote,
    ]);
    assert_eq!(code(&out), 2, "{}", describe(&out));
    let v: Value = serde_json::from_slice(&out.stdout).expect("JSON error");
    assert_eq!(v["error"]["code"], "usage");
    assert!(
        v["error"]["message"].as_str().unwrap().contains("'../x'"),
        "{v}"
    );
    for args in [
        &["group", "snapshot", "g1", "../s"][..],
        &["group", "add", "g1", "a/b"],
        &["group", "remove", "../g", "v1"],
        &["group", "delete", ".."],
    ] {
        let out = p.cli(args);
        assert_eq!(code(&out), 2, "{args:?}: {}", describe(&out));
    }
}

#[test]
fn group_status_of_no_group_and_of_an_unknown_group() {
    let p = TestPool::new(ARRAYS, "256K");
    assert_eq!(p.cli_json(&["group", "status"]), serde_json::json!([]));
    assert_eq!(p.cli_ok(&["group", "status"]).trim(), "no groups");

    let out = p.cli(&["group", "status", "NOPE"]);
    assert_eq!(code(&out), 1, "{}", describe(&out));
    assert_eq!(
        text(&out.stderr).trim(),
        "error: journal group 'NOPE' does not exist"
    );

    let out = p.cli(&["--json", "group", "status", "NOPE"]);
    assert_eq!(code(&out), 1, "{}", describe(&out));
    let v: Value = serde_json::from_slice(&out.stdout).expect("JSON error");
    assert_eq!(v["error"]["code"], "not_found");
    assert_eq!(v["error"]["message"], "journal group 'NOPE' does not exist");

    // `group wait` on an unknown group fails the same way instead of waiting.
    let out = p.cli(&["group", "wait", "NOPE", "--consistent", "--timeout", "5"]);
    assert_eq!(code(&out), 1, "{}", describe(&out));
    assert!(
        text(&out.stderr).contains("journal group 'NOPE' does not exist"),
        "{}",
        describe(&out)
    );
}

#[test]
fn group_requests_reach_the_daemon_and_errors_name_the_group() {
    let p = TestPool::new(ARRAYS, "256K");
    p.create_volume("v1", "16M");
    let remote = p.root().join("remote");
    std::fs::create_dir_all(&remote).unwrap();
    // Whatever the replication core answers, a failure names the group and keeps a daemon
    // exit code; a success answers the GroupInfo of the group.
    let out = p.cli(&[
        "--json",
        "group",
        "create",
        "g1",
        "--volumes",
        "v1",
        "--remote",
        remote.to_str().unwrap(),
    ]);
    let v: Value = serde_json::from_slice(&out.stdout).expect("JSON answer");
    if out.status.success() {
        assert_eq!(v["name"], "g1", "{v}");
    } else {
        assert_eq!(code(&out), 1, "{}", describe(&out));
        assert!(
            v["error"]["message"].as_str().unwrap().contains("'g1'"),
            "{v}"
        );
    }
}
