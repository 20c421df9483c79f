//! `fusevold --metrics ADDR:PORT`: a scrape taken under an fio load passes the real
//! `promtool check metrics`, and afterwards the write counter agrees with fio's own total
//! within 1 %.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use serde_json::Value;

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

/// The value of the sample `name{labels}` (labels as written in the exposition).
fn sample(body: &str, series: &str) -> f64 {
    body.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no {series} in\n{body}"))
        .trim()
        .parse()
        .unwrap()
}

fn promtool_check(body: &str) {
    let promtool = tool("promtool");
    let mut child = Command::new(&promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "{}: {e} (scripts/install-deps.sh installs Debian's prometheus)",
                promtool.display()
            )
        });
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(body.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics: {}\n{body}",
        describe(&out)
    );
}

#[test]
fn scrape_under_fio_passes_promtool_and_counts_match_fio() {
    let mut p = TestPool::init(&["a0:256M", "a1:256M"], "256K");
    let addr = format!("127.0.0.1:{}", free_port());
    p.start_env(&[("FUSEVOLD_METRICS", &addr)]);
    p.create_volume("data", "64M");
    let path = p.vol("data");
    let fio = Command::new(tool("fio"))
        .args([
            "--name=load",
            &format!("--filename={}", path.display()),
            "--rw=randwrite",
            "--bs=64k",
            "--size=48M",
            "--direct=1",
            "--ioengine=psync",
            "--time_based",
            "--runtime=3",
            "--output-format=json",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start fio");
    std::thread::sleep(Duration::from_millis(1500));
    let during = scrape(&addr);
    promtool_check(&during);
    let out = fio.wait_with_output().unwrap();
    assert!(out.status.success(), "fio: {}", describe(&out));
    let report: Value = serde_json::from_slice(&out.stdout).expect("fio json");
    let fio_bytes = report["jobs"][0]["write"]["io_bytes"].as_f64().unwrap();
    assert!(fio_bytes > 0.0);

    let after = scrape(&addr);
    promtool_check(&after);
    let counted = sample(&after, "fusevol_volume_write_bytes_total{volume=\"data\"}");
    assert!(
        (counted - fio_bytes).abs() <= fio_bytes * 0.01,
        "counter {counted} vs fio {fio_bytes}"
    );
    let writes = sample(&after, "fusevol_volume_writes_total{volume=\"data\"}");
    assert!(writes >= fio_bytes / 65536.0 * 0.99, "{writes}");
    // The arrays wrote at least what fio wrote through the mount (the daemon's own I/O
    // comes on top), and their latency is there.
    let arrays: f64 = ["a0", "a1"]
        .iter()
        .map(|a| {
            sample(
                &after,
                &format!("fusevol_array_write_bytes_total{{array=\"{a}\",tier=\"fast\"}}"),
            )
        })
        .sum();
    assert!(
        arrays >= fio_bytes * 0.99,
        "arrays wrote {arrays}, fio {fio_bytes}"
    );
    assert!(
        after.contains("fusevol_array_latency_seconds{array=\"a0\",op=\"write\",stat=\"p99\"}"),
        "{after}"
    );
    // The rest is there too.
    for series in [
        "fusevol_pool_capacity_bytes",
        "fusevol_pool_used_bytes",
        "fusevol_pool_provisioned_bytes",
        "fusevol_process_resident_memory_bytes",
        "fusevol_events_last_seq",
    ] {
        assert!(sample(&after, series) > 0.0, "{series}");
    }
    assert!(
        after.contains("fusevol_volume_latency_seconds{volume=\"data\",op=\"write\",stat=\"p99\"}"),
        "{after}"
    );
    assert!(
        after.contains("fusevol_events_total{object=\"volume\",change=\"created\"}"),
        "{after}"
    );
    // Anything but /metrics is 404.
    let out = run(
        Command::new("curl").args(["-fsS", &format!("http://{addr}/other")]),
        CLI_TIMEOUT,
    );
    assert!(!out.status.success());
}
