//! `fusevold --metrics ADDR:PORT`: a Prometheus endpoint (`GET /metrics`, text format).
//!
//! Off by default. One thread serves it with `tiny_http`; each scrape builds a fresh
//! `prometheus-client` registry from the counters that exist anyway (the volumes' `IoStats`,
//! the event log's counts) and the status the control socket reports, so a scrape costs
//! nothing between scrapes and never touches the write path (it reads relaxed atomics and
//! takes the same short locks as `pool info` / `pair status` / `group status`).

use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::thread::JoinHandle;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::status;
use crate::storage::Storage;

type Labels = Vec<(String, String)>;
type Counters = Family<Labels, Counter>;
type Gauges = Family<Labels, Gauge<f64, AtomicU64>>;

/// A running metrics endpoint; stops when dropped.
pub struct MetricsServer {
    server: Arc<tiny_http::Server>,
    thread: Option<JoinHandle<()>>,
}

impl MetricsServer {
    /// Listen on `addr` and serve `/metrics` of `st`.
    pub fn start(addr: SocketAddr, st: Arc<Storage>, mountpoint: String) -> std::io::Result<Self> {
        let server = Arc::new(
            tiny_http::Server::http(addr)
                .map_err(|e| std::io::Error::other(format!("metrics on {addr}: {e}")))?,
        );
        let srv = server.clone();
        let thread = std::thread::Builder::new()
            .name("metrics".into())
            .spawn(move || serve(&srv, &st, &mountpoint))?;
        log::info!("metrics at http://{addr}/metrics");
        Ok(MetricsServer {
            server,
            thread: Some(thread),
        })
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.server.unblock();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve(server: &tiny_http::Server, st: &Storage, mountpoint: &str) {
    for req in server.incoming_requests() {
        let path = req.url().split('?').next().unwrap_or("").to_string();
        let resp = if path == "/metrics" {
            match render(st, mountpoint) {
                Ok(body) => tiny_http::Response::from_string(body).with_header(
                    tiny_http::Header::from_bytes(
                        "Content-Type",
                        "text/plain; version=0.0.4; charset=utf-8",
                    )
                    .expect("static header"),
                ),
                Err(e) => tiny_http::Response::from_string(format!("cannot render metrics: {e}\n"))
                    .with_status_code(500),
            }
        } else {
            tiny_http::Response::from_string("fusevold: metrics are at /metrics\n")
                .with_status_code(404)
        };
        if let Err(e) = req.respond(resp) {
            log::debug!("metrics response: {e}");
        }
    }
}

fn l(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn counter(reg: &mut Registry, name: &str, help: &str) -> Counters {
    let f = Counters::default();
    reg.register(name, help, f.clone());
    f
}

fn gauge(reg: &mut Registry, name: &str, help: &str) -> Gauges {
    let f = Gauges::default();
    reg.register(name, help, f.clone());
    f
}

fn set(f: &Gauges, labels: &[(&str, &str)], v: f64) {
    f.get_or_create(&l(labels)).set(v);
}

fn add(f: &Counters, labels: &[(&str, &str)], v: u64) {
    f.get_or_create(&l(labels)).inc_by(v);
}

/// The whole exposition, built afresh.
pub fn render(st: &Storage, mountpoint: &str) -> Result<String, std::fmt::Error> {
    let mut reg = Registry::default();
    volume_metrics(&mut reg, st);
    array_metrics(&mut reg, st);
    pool_metrics(&mut reg, st, mountpoint);
    copy_metrics(&mut reg, st);
    event_metrics(&mut reg, st);
    let rss = gauge(
        &mut reg,
        "fusevol_process_resident_memory_bytes",
        "Resident memory of fusevold",
    );
    set(&rss, &[], resident_bytes() as f64);
    let mut out = String::new();
    encode(&mut out, &reg)?;
    Ok(text_format(&out))
}

/// prometheus-client writes OpenMetrics text: a counter's family is named without `_total`
/// (`# TYPE x counter`, samples `x_total`) and the text ends with `# EOF`. Scrapers and
/// `promtool check metrics` that read the Prometheus text format 0.0.4 (what `/metrics`
/// answers) want the family named like its samples, and no `# EOF`.
fn text_format(open_metrics: &str) -> String {
    let counters: std::collections::HashSet<&str> = open_metrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE ")?.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(open_metrics.len() + 64);
    for line in open_metrics.lines() {
        if line == "# EOF" {
            continue;
        }
        let renamed = ["# HELP ", "# TYPE "].iter().find_map(|p| {
            let rest = line.strip_prefix(p)?;
            let (name, tail) = rest.split_once(' ')?;
            counters
                .contains(name)
                .then(|| format!("{p}{name}_total {tail}"))
        });
        match renamed {
            Some(l) => out.push_str(&l),
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

fn volume_metrics(reg: &mut Registry, st: &Storage) {
    let size = gauge(reg, "fusevol_volume_size_bytes", "Volume size");
    let snaps = gauge(reg, "fusevol_volume_snapshots", "Snapshots of the volume");
    for v in st.volumes.volume_list() {
        let vl = [("volume", v.name.as_str())];
        set(&size, &vl, v.size() as f64);
        set(&snaps, &vl, st.snapshots.snapshots_of(v.id).len() as f64);
    }
    if !st.io_stats_on() {
        return; // `--no-stats`: no volume I/O counters at all (not zeros that look real)
    }
    let reads = counter(reg, "fusevol_volume_reads", "Host read requests");
    let writes = counter(reg, "fusevol_volume_writes", "Host write requests");
    let rbytes = counter(reg, "fusevol_volume_read_bytes", "Bytes read by hosts");
    let wbytes = counter(reg, "fusevol_volume_write_bytes", "Bytes written by hosts");
    let discards = counter(
        reg,
        "fusevol_volume_discards",
        "Discard (punch hole) requests",
    );
    let dbytes = counter(reg, "fusevol_volume_discard_bytes", "Bytes discarded");
    let errors = counter(reg, "fusevol_volume_errors", "Failed host requests by kind");
    let lat = gauge(
        reg,
        "fusevol_volume_latency_seconds",
        "Request latency since start by op and stat (p50, p99, max)",
    );
    for v in st.volumes.volume_list() {
        let c = v.stats.counts();
        let name = v.name.as_str();
        let vl = [("volume", name)];
        add(&reads, &vl, c.reads);
        add(&writes, &vl, c.writes);
        add(&rbytes, &vl, c.read_bytes);
        add(&wbytes, &vl, c.write_bytes);
        add(&discards, &vl, c.discards);
        add(&dbytes, &vl, c.discard_bytes);
        for (kind, n) in &c.errors {
            add(&errors, &[("volume", name), ("kind", kind)], *n);
        }
        let ops = [("read", &c.read_latency), ("write", &c.write_latency)];
        latencies(&lat, ("volume", name), &ops);
    }
}

/// p50, p99 and max (seconds) of each op's latency, labelled `who`, `op` and `stat`.
fn latencies(lat: &Gauges, who: (&str, &str), ops: &[(&str, &crate::stats::Latency)]) {
    for (op, s) in ops {
        for (q, us) in [("p50", s.p50_us), ("p99", s.p99_us), ("max", s.max_us)] {
            set(lat, &[who, ("op", op), ("stat", q)], us / 1e6);
        }
    }
}

/// What the daemon read from and wrote to each array file (all of its I/O, not only hosts').
fn array_metrics(reg: &mut Registry, st: &Storage) {
    use crate::stats::ArrayCounts;
    if !crate::stats::array_stats_on() {
        return; // `--no-stats`
    }
    type Field = fn(&ArrayCounts) -> u64;
    let families: [(&str, &str, Field); 7] = [
        ("fusevol_array_reads", "Reads from the array file", |c| {
            c.reads
        }),
        ("fusevol_array_writes", "Writes to the array file", |c| {
            c.writes
        }),
        (
            "fusevol_array_read_bytes",
            "Bytes read from the array file",
            |c| c.read_bytes,
        ),
        (
            "fusevol_array_write_bytes",
            "Bytes written to the array file",
            |c| c.write_bytes,
        ),
        (
            "fusevol_array_copy_bytes",
            "Bytes copied into the array file inside the kernel (copy_file_range)",
            |c| c.copy_bytes,
        ),
        ("fusevol_array_syncs", "fdatasyncs of the array file", |c| {
            c.syncs
        }),
        (
            "fusevol_array_errors",
            "Failed I/O on the array file",
            |c| c.errors,
        ),
    ];
    let families: Vec<(Counters, Field)> = families
        .iter()
        .map(|(name, help, f)| (counter(reg, name, help), *f))
        .collect();
    let lat = gauge(
        reg,
        "fusevol_array_latency_seconds",
        "Array I/O latency since start by op (read, write, sync) and stat (p50, p99, max)",
    );
    for a in st.pool.arrays() {
        let c = a.stats.counts();
        let al = [("array", a.name.as_str()), ("tier", a.tier.as_str())];
        for (family, field) in &families {
            add(family, &al, field(&c));
        }
        let ops = [
            ("read", &c.read_latency),
            ("write", &c.write_latency),
            ("sync", &c.sync_latency),
        ];
        latencies(&lat, ("array", a.name.as_str()), &ops);
    }
}

fn pool_metrics(reg: &mut Registry, st: &Storage, mountpoint: &str) {
    let info = status::pool_info(st, mountpoint);
    for (name, help, v) in [
        (
            "fusevol_pool_capacity_bytes",
            "Capacity of all arrays",
            info.capacity,
        ),
        (
            "fusevol_pool_used_bytes",
            "Bytes of allocated extents",
            info.used,
        ),
        (
            "fusevol_pool_provisioned_bytes",
            "Sum of volume sizes",
            info.provisioned,
        ),
        ("fusevol_pool_volumes", "Volumes in the pool", info.volumes),
    ] {
        set(&gauge(reg, name, help), &[], v as f64);
    }
}

fn copy_metrics(reg: &mut Registry, st: &Storage) {
    let state = gauge(
        reg,
        "fusevol_pair_state",
        "1 for the pair's current state (COPY, PAIR, PSUS, COPY(RS), COPY(RS-R), PSUE)",
    );
    let progress = gauge(
        reg,
        "fusevol_pair_copy_progress_ratio",
        "Copy progress, 0 to 1",
    );
    let diff = gauge(
        reg,
        "fusevol_pair_difference_bytes",
        "Bytes differing after a split",
    );
    if let Ok(pairs) = status::pair_infos(st, None) {
        for p in pairs {
            let pl = [("pvol", p.pvol.as_str()), ("svol", p.svol.as_str())];
            set(
                &state,
                &[
                    ("pvol", p.pvol.as_str()),
                    ("svol", p.svol.as_str()),
                    ("state", p.state.as_str()),
                ],
                1.0,
            );
            set(&progress, &pl, p.progress / 100.0);
            set(&diff, &pl, p.diff_bytes as f64);
        }
    }
    let gstate = gauge(
        reg,
        "fusevol_group_state",
        "1 for the group's current state and role",
    );
    let lag_r = gauge(
        reg,
        "fusevol_group_lag_records",
        "Journal records not yet applied",
    );
    let lag_b = gauge(
        reg,
        "fusevol_group_lag_bytes",
        "Journal bytes not yet applied",
    );
    let lag_s = gauge(
        reg,
        "fusevol_group_lag_seconds",
        "Age of the oldest unapplied record",
    );
    let used = gauge(
        reg,
        "fusevol_group_journal_used_bytes",
        "Journal bytes in use",
    );
    let limit = gauge(
        reg,
        "fusevol_group_journal_limit_bytes",
        "Journal size limit",
    );
    if let Ok(groups) = status::group_info(st, None) {
        for g in groups {
            let gl = [("group", g.name.as_str())];
            set(
                &gstate,
                &[
                    ("group", g.name.as_str()),
                    ("role", g.role.as_str()),
                    ("state", g.state.as_str()),
                ],
                1.0,
            );
            set(&lag_r, &gl, g.lag_records as f64);
            set(&lag_b, &gl, g.lag_bytes as f64);
            set(&lag_s, &gl, g.lag_seconds);
            set(&used, &gl, g.journal_bytes as f64);
            set(&limit, &gl, g.journal_limit as f64);
        }
    }
}

fn event_metrics(reg: &mut Registry, st: &Storage) {
    let (counts, cut) = st.pool.events.counts();
    let events = counter(reg, "fusevol_events", "Events published since start");
    for ((object, change), n) in counts {
        add(&events, &[("object", &object), ("change", &change)], n);
    }
    let c = counter(
        reg,
        "fusevol_event_observers_cut_off",
        "Event observers cut off for falling behind",
    );
    add(&c, &[], cut);
    let last = gauge(
        reg,
        "fusevol_events_last_seq",
        "Sequence number of the last event",
    );
    set(&last, &[], st.pool.events.last_seq() as f64);
}

/// Resident set size from /proc/self/statm (0 if unreadable).
fn resident_bytes() -> u64 {
    let pages = std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .unwrap_or(0);
    let page = nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
        .ok()
        .flatten()
        .unwrap_or(4096) as u64;
    pages * page
}

#[cfg(test)]
mod tests {
    #[test]
    fn counter_families_are_named_like_their_samples() {
        let om = "# HELP a_bytes Bytes.\n# TYPE a_bytes counter\na_bytes_total{v=\"x\"} 3\n# HELP g G.\n# TYPE g gauge\ng 1.0\n# EOF\n";
        assert_eq!(
            super::text_format(om),
            "# HELP a_bytes_total Bytes.\n# TYPE a_bytes_total counter\na_bytes_total{v=\"x\"} 3\n# HELP g G.\n# TYPE g gauge\ng 1.0\n"
        );
    }
}
