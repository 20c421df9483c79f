//! Cluster nodes for the tests of several hosts: a pool served by `fusevold --cluster` against
//! the test's etcd, and the questions the tests ask of `fusevol cluster ...`.

use serde_json::Value;

use super::etcd::{free_port, Etcd};
use super::TestPool;

/// Lease TTL of test nodes (a dead node shows down within a few seconds).
pub const TTL: u64 = 3;

/// A pool with `arrays` (256 KiB extents), served as cluster node `name` with `extra` daemon
/// arguments and, in failpoint builds, the failpoints `failpoints` armed.
pub fn start_node(
    etcd: &Etcd,
    name: &str,
    arrays: &[&str],
    extra: &[&str],
    failpoints: Option<&str>,
) -> TestPool {
    let mut p = TestPool::init(arrays, "256K");
    p.daemon_args = vec![
        "--nbd".into(),
        format!("127.0.0.1:{}", free_port()),
        "--cluster".into(),
        etcd.url(),
        "--node".into(),
        name.into(),
        "--cluster-ttl".into(),
        TTL.to_string(),
    ];
    p.daemon_args.extend(extra.iter().map(|s| s.to_string()));
    match failpoints {
        Some(f) => p.start_env(&[("FAILPOINTS", f)]),
        None => p.start(),
    }
    p
}

/// `fusevol cluster volumes --json`: the entry of volume `name`.
pub fn catalog_entry(p: &TestPool, name: &str) -> Option<Value> {
    p.cli_json(&["cluster", "volumes"])
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == name)
        .cloned()
}

/// `fusevol cluster nodes --json`: node `node` as `p` sees it.
pub fn node_entry(p: &TestPool, node: &str) -> Option<Value> {
    p.cli_json(&["cluster", "nodes"])
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["name"] == node)
        .cloned()
}

pub fn node_up(p: &TestPool, node: &str) -> bool {
    node_entry(p, node).is_some_and(|n| n["state"] == "up")
}

/// Journal group `group` of `volumes` from primary `a` to secondary `b` through `remote`, the
/// secondary keeping them as `r-<volume>` (global names are unique in a cluster); returns
/// once the secondary is consistent.
pub fn replicate_renamed(
    a: &TestPool,
    b: &TestPool,
    group: &str,
    volumes: &[&str],
    remote: &std::path::Path,
) {
    a.create_group(group, volumes, remote);
    b.cli_ok(&[
        "group",
        "attach",
        group,
        "--remote",
        remote.to_str().unwrap(),
        "--rename",
        "r-",
    ]);
    b.cli_ok(&["group", "wait", group, "--consistent", "--timeout", "120"]);
}

/// Wait until every node in `nodes` sees every node named in `names` up.
pub fn wait_all_up(nodes: &[&TestPool], names: &[&str]) {
    for p in nodes {
        for n in names {
            super::wait_until(
                &format!("node '{n}' up as {} sees it", p.pool().display()),
                std::time::Duration::from_secs(20),
                || node_up(p, n),
            );
        }
    }
}
