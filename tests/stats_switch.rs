//! `fusevold --no-stats`: per-volume statistics off for real — `fusevol stats` says so (exit
//! 1), `/metrics` has no volume I/O counters (sizes stay), and nothing is counted while off
//! (after a restart without the switch the counters start from what comes then).

mod common;

use std::process::Command;

use common::*;

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

fn scrape(addr: &str) -> String {
    let out = run(
        Command::new("curl").args(["-fsS", &format!("http://{addr}/metrics")]),
        CLI_TIMEOUT,
    );
    assert!(out.status.success(), "curl: {}", describe(&out));
    text(&out.stdout)
}

fn dd(p: &TestPool, count_mib: u64) {
    let out = Command::new("dd")
        .arg("if=/dev/zero")
        .arg(format!("of={}", p.vol("data").display()))
        .args([
            "bs=1M",
            &format!("count={count_mib}"),
            "oflag=direct",
            "conv=notrunc",
            "status=none",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "dd: {}", describe(&out));
}

#[test]
fn no_stats_turns_counting_off_and_says_so() {
    let mut p = TestPool::init(&["a0:128M", "a1:128M"], "256K");
    let addr = format!("127.0.0.1:{}", free_port());
    p.daemon_args = vec!["--no-stats".into(), "--metrics".into(), addr.clone()];
    p.start();
    p.create_volume("data", "16M");
    dd(&p, 4);
    let out = p.cli(&["stats"]);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    let err = text(&out.stderr);
    assert!(
        err.contains("statistics are off") && err.contains("--no-stats"),
        "{err}"
    );
    let out = p.cli(&["stats", "data", "--json"]);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    let out = p.cli(&["stats", "--arrays"]);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert!(
        text(&out.stderr).contains("--no-stats"),
        "{}",
        describe(&out)
    );
    let body = scrape(&addr);
    assert!(
        body.contains("fusevol_volume_size_bytes{volume=\"data\"} 16777216"),
        "{body}"
    );
    for absent in [
        "fusevol_volume_writes_total",
        "fusevol_volume_write_bytes_total",
        "fusevol_volume_latency_seconds",
        "fusevol_array_write_bytes_total",
        "fusevol_array_latency_seconds",
    ] {
        assert!(!body.contains(absent), "{absent} with --no-stats:\n{body}");
    }
    // Without the switch: counted again, from what comes after the start (nothing of the
    // writes while off was kept anywhere).
    p.stop();
    p.daemon_args.clear();
    p.start();
    dd(&p, 2);
    let v = p.cli_json(&["stats", "data"]);
    assert_eq!(v[0]["volume"], "data", "{v}");
    assert_eq!(v[0]["writes"], 2, "{v}");
    assert_eq!(v[0]["write_bytes"], 2 << 20, "{v}");
    let a = p.cli_json(&["stats", "--arrays"]);
    let written: u64 = a
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["write_bytes"].as_u64().unwrap())
        .sum();
    assert!(written >= 2 << 20, "{a}");
}
