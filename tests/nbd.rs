//! The NBD server (`fusevold --nbd`) driven by real NBD clients: libnbd's `nbdinfo` and
//! `nbdcopy`, QEMU's `qemu-img` and `qemu-io` (Debian packages libnbd-bin and qemu-utils,
//! installed by scripts/install-deps.sh; a missing tool fails the test). Content is checked
//! through the FUSE mount of the same daemon. A small hand-written client covers what the
//! tools never send: pipelined requests answered out of order, writes to a read-only export
//! the client was told about, malformed and oversized requests.

mod common;

use std::fs;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::*;
use fusevol::format::nbd as w;

const ARRAYS: &[&str] = &["a0:1G", "a1:1G", "a2:1G"];
const TOOL_TIMEOUT: Duration = Duration::from_secs(120);

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A pool served with `--nbd 127.0.0.1:PORT`; returns the pool and the base URI.
fn nbd_pool() -> (TestPool, String) {
    let mut p = TestPool::init(ARRAYS, "256K");
    let port = free_port();
    p.daemon_args = vec!["--nbd".into(), format!("127.0.0.1:{port}")];
    p.start();
    (p, format!("nbd://127.0.0.1:{port}"))
}

fn tool_ok(name: &str, args: &[&str]) -> String {
    let out = run_ok(Command::new(tool(name)).args(args), TOOL_TIMEOUT);
    text(&out.stdout)
}

fn tool_fails(name: &str, args: &[&str]) -> String {
    let out = run(Command::new(tool(name)).args(args), TOOL_TIMEOUT);
    assert!(
        !out.status.success(),
        "{name} {args:?} succeeded but should have failed: {}",
        describe(&out)
    );
    text(&out.stderr)
}

fn random_file(path: &Path, seed: u64, len: usize) -> Vec<u8> {
    let mut buf = vec![0u8; len];
    fill_pattern(seed, 0, &mut buf);
    fs::write(path, &buf).unwrap();
    buf
}

fn assert_same(a: &[u8], b: &[u8], what: &str) {
    assert_eq!(a.len(), b.len(), "{what}: lengths differ");
    if let Some(i) = a.iter().zip(b).position(|(x, y)| x != y) {
        panic!("{what}: first difference at byte {i}");
    }
}

#[test]
fn list_convert_map_and_snapshot_exports() {
    let (p, uri) = nbd_pool();
    p.create_volume("a", "64M");
    // 8 MiB of data at 0 and 1 MiB at 32 MiB; the rest never written.
    write_pattern(&p.vol("a"), 11, 0, 8 * MIB, false);
    write_pattern(&p.vol("a"), 12, 32 * MIB, MIB, false);
    p.cli_ok(&["snapshot", "create", "a", "s1"]);

    let list = tool_ok("nbdinfo", &["--list", &uri]);
    assert!(list.contains("export=\"a\""), "{list}");
    assert!(list.contains("export=\"a@s1\""), "{list}");
    assert!(list.contains("base:allocation"), "{list}");

    // qemu-img convert from the export equals the volume file.
    let out = p.root().join("a.raw");
    tool_ok(
        "qemu-img",
        &[
            "convert",
            "-f",
            "raw",
            "-O",
            "raw",
            &format!("{uri}/a"),
            out.to_str().unwrap(),
        ],
    );
    assert_same(
        &fs::read(&out).unwrap(),
        &fs::read(p.vol("a")).unwrap(),
        "qemu-img convert of the export vs the volume file",
    );

    // nbdinfo --map: data where written, holes elsewhere.
    let map = tool_ok("nbdinfo", &["--map", &format!("{uri}/a")]);
    let rows: Vec<(u64, u64, u32)> = map
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (
                f[0].parse().unwrap(),
                f[1].parse().unwrap(),
                f[2].parse().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        rows,
        vec![
            (0, 8 * MIB, 0),
            (8 * MIB, 24 * MIB, 3),
            (32 * MIB, MIB, 0),
            (33 * MIB, 31 * MIB, 3)
        ],
        "{map}"
    );
    // Reads of holes come back as hole chunks: a full copy without the extent map (every
    // byte read) and QEMU reading zeros across a data/hole boundary.
    let full = p.root().join("a.full");
    tool_ok(
        "nbdcopy",
        &["--no-extents", &format!("{uri}/a"), full.to_str().unwrap()],
    );
    assert_same(
        &fs::read(&full).unwrap(),
        &fs::read(p.vol("a")).unwrap(),
        "nbdcopy --no-extents of the export",
    );
    let out_io = tool_ok(
        "qemu-io",
        &[
            "-r",
            "-f",
            "raw",
            "-c",
            "read -P 0 40M 2M",
            "-c",
            "read -P 0 8M 1M",
            &format!("{uri}/a"),
        ],
    );
    assert!(out_io.contains("read 2097152/2097152"), "{out_io}");
    // qemu-img map sees the same holes.
    let qmap = tool_ok(
        "qemu-img",
        &["map", "-f", "raw", "--output=json", &format!("{uri}/a")],
    );
    assert!(qmap.contains("\"data\": false"), "{qmap}");

    // The snapshot export: the snapshot's image, read-only.
    write_pattern(&p.vol("a"), 13, 0, MIB, false);
    let snap_out = p.root().join("s1.raw");
    tool_ok(
        "qemu-img",
        &[
            "convert",
            "-f",
            "raw",
            "-O",
            "raw",
            &format!("{uri}/a@s1"),
            snap_out.to_str().unwrap(),
        ],
    );
    let snap_file = p.mnt().join(".snapshots/a/s1");
    let before = fs::read(&snap_file).unwrap();
    assert_same(&fs::read(&snap_out).unwrap(), &before, "snapshot export");
    let info = tool_ok("nbdinfo", &[&format!("{uri}/a@s1")]);
    assert!(info.contains("is_read_only: true"), "{info}");
    tool_fails(
        "qemu-io",
        &[
            "-f",
            "raw",
            "-c",
            "write -P 0xcd 0 64k",
            &format!("{uri}/a@s1"),
        ],
    );
    let src = p.root().join("small");
    random_file(&src, 5, MIB as usize);
    tool_fails("nbdcopy", &[src.to_str().unwrap(), &format!("{uri}/a@s1")]);
    // A client that ignores the read-only flag gets EPERM from the server.
    let mut c = RawClient::connect(&uri, "a@s1");
    assert_eq!(c.write(1, 0, &[0xcd; 4096]), w::EPERM);
    assert_eq!(c.trim(2, 0, 4096), w::EPERM);
    c.disconnect();
    assert_same(
        &fs::read(&snap_file).unwrap(),
        &before,
        "snapshot after refused writes",
    );

    // An unknown export is refused.
    tool_fails("nbdinfo", &[&format!("{uri}/nope")]);
}

#[test]
fn nbdcopy_and_qemu_io_write_through_the_pipeline() {
    let (p, uri) = nbd_pool();
    p.create_volume("b", "64M");
    let src = p.root().join("src");
    let data = random_file(&src, 21, 48 * MIB as usize);
    tool_ok(
        "nbdcopy",
        &["--flush", src.to_str().unwrap(), &format!("{uri}/b")],
    );
    let vol = fs::read(p.vol("b")).unwrap();
    assert_same(
        &vol[..data.len()],
        &data,
        "nbdcopy into the export, read through the mount",
    );
    assert!(vol[data.len()..].iter().all(|&b| b == 0));

    // qemu-io: write a pattern, read it back, through QEMU's NBD client.
    let out = tool_ok(
        "qemu-io",
        &[
            "-f",
            "raw",
            "-c",
            "write -P 0xab 0 1M",
            "-c",
            "read -P 0xab 0 1M",
            "-c",
            "write -z 2M 1M",
            "-c",
            "discard 4M 1M",
            "-c",
            "flush",
            &format!("{uri}/b"),
        ],
    );
    assert!(out.contains("read 1048576/1048576"), "{out}");
    let vol = fs::read(p.vol("b")).unwrap();
    assert!(vol[..MIB as usize].iter().all(|&b| b == 0xab));
    assert_same(
        &vol[MIB as usize..2 * MIB as usize],
        &data[MIB as usize..2 * MIB as usize],
        "untouched range",
    );
    assert!(vol[2 * MIB as usize..3 * MIB as usize]
        .iter()
        .all(|&b| b == 0));
    assert!(vol[4 * MIB as usize..5 * MIB as usize]
        .iter()
        .all(|&b| b == 0));
    // The discard freed the extents it covered whole.
    let map = tool_ok("nbdinfo", &["--map", &format!("{uri}/b")]);
    assert!(
        map.lines()
            .any(|l| l.trim_start().starts_with(&format!("{}", 4 * MIB)) && l.contains("hole")),
        "{map}"
    );

    // Several connections at once (qemu-img convert with parallel coroutines into a copy).
    p.create_volume("c", "64M");
    tool_ok(
        "nbdcopy",
        &[
            "--connections=4",
            "--requests=16",
            &format!("{uri}/b"),
            &format!("{uri}/c"),
        ],
    );
    assert_same(
        &fs::read(p.vol("c")).unwrap(),
        &fs::read(p.vol("b")).unwrap(),
        "nbdcopy export to export over 4 connections",
    );
    p.check_clean_after_stop();
}

#[test]
fn paired_volume_writes_reach_the_svol() {
    let (p, uri) = nbd_pool();
    p.create_volume("pv", "32M");
    p.cli_ok(&["pair", "create", "pv", "sv", "--create-svol", "--wait"]);
    let src = p.root().join("src");
    let data = random_file(&src, 31, 16 * MIB as usize);
    tool_ok(
        "nbdcopy",
        &["--flush", src.to_str().unwrap(), &format!("{uri}/pv")],
    );
    // The S-VOL is read-only while paired, over NBD too.
    let mut c = RawClient::connect(&uri, "sv");
    assert_eq!(c.write(1, 0, &[1; 4096]), w::EPERM);
    c.disconnect();
    p.cli_ok(&["pair", "split", "pv"]);
    let sv = fs::read(p.vol("sv")).unwrap();
    assert_same(
        &sv[..data.len()],
        &data,
        "S-VOL after NBD writes to the P-VOL",
    );
}

/// The secondary of a journal group applies what the primary took over NBD, and refuses NBD
/// writes itself.
#[test]
fn grouped_volume_writes_reach_the_secondary() {
    let mut p = TestPool::init(&["a0:512M", "a1:512M"], "64K");
    let mut s = TestPool::init(&["b0:512M", "b1:512M"], "64K");
    let (pport, sport) = (free_port(), free_port());
    p.daemon_args = vec!["--nbd".into(), format!("{pport}")];
    s.daemon_args = vec!["--nbd".into(), format!("{sport}")];
    p.start();
    s.start();
    let remote = p.root().join("remote");
    fs::create_dir(&remote).unwrap();
    p.create_volume("gv", "32M");
    p.create_group("g", &["gv"], &remote);
    s.cli_ok(&["group", "attach", "g", "--remote", remote.to_str().unwrap()]);
    let src = p.root().join("src");
    let data = random_file(&src, 51, 8 * MIB as usize);
    tool_ok(
        "nbdcopy",
        &[
            "--flush",
            src.to_str().unwrap(),
            &format!("nbd://127.0.0.1:{pport}/gv"),
        ],
    );
    // Wait until the secondary has applied everything written.
    let t0 = std::time::Instant::now();
    loop {
        let st = s.cli_json(&["group", "status", "g"])[0].clone();
        let pst = p.cli_json(&["group", "status", "g"])[0].clone();
        if st["applied"].as_u64().is_some()
            && st["applied"] == pst["written"]
            && st["consistent"] == true
        {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "secondary never caught up: {st} / {pst}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let sv = fs::read(s.vol("gv")).unwrap();
    assert_same(
        &sv[..data.len()],
        &data,
        "secondary after NBD writes at the primary",
    );
    let suri = format!("nbd://127.0.0.1:{sport}");
    let info = tool_ok("nbdinfo", &[&format!("{suri}/gv")]);
    assert!(info.contains("is_read_only: true"), "{info}");
    let mut c = RawClient::connect(&suri, "gv");
    assert_eq!(c.write(1, 0, &[7; 4096]), w::EPERM);
    c.disconnect();
}

#[test]
fn kill9_after_flush_loses_nothing() {
    let (mut p, uri) = nbd_pool();
    p.create_volume("d", "64M");
    let src = p.root().join("src");
    let data = random_file(&src, 41, 32 * MIB as usize);
    tool_ok(
        "nbdcopy",
        &["--flush", src.to_str().unwrap(), &format!("{uri}/d")],
    );
    // And a FUA write by hand, acknowledged just before the kill.
    let mut c = RawClient::connect(&uri, "d");
    assert_eq!(
        c.request(
            w::CMD_WRITE,
            w::CMD_FLAG_FUA,
            9,
            40 * MIB,
            4096,
            &[0x5a; 4096]
        )
        .0,
        0
    );
    p.kill9();
    drop(c);
    p.clear_dead_mount();
    p.start();
    let vol = fs::read(p.vol("d")).unwrap();
    assert_same(&vol[..data.len()], &data, "after kill -9");
    assert!(vol[40 * MIB as usize..40 * MIB as usize + 4096]
        .iter()
        .all(|&b| b == 0x5a));
    p.check_clean_after_stop();
}

#[test]
fn pipelined_requests_errors_and_bad_input() {
    let (p, uri) = nbd_pool();
    p.create_volume("e", "16M");
    let mut c = RawClient::connect(&uri, "e");
    // 64 writes in flight, then 64 reads in flight; replies may come in any order.
    let blocks: Vec<Vec<u8>> = (0..64u64)
        .map(|i| {
            let mut b = vec![0u8; 64 * 1024];
            fill_pattern(100 + i, 0, &mut b);
            b
        })
        .collect();
    for (i, b) in blocks.iter().enumerate() {
        c.send(
            w::CMD_WRITE,
            0,
            i as u64,
            i as u64 * 64 * 1024,
            b.len() as u32,
            b,
        );
    }
    let mut seen = [false; 64];
    for _ in 0..64 {
        let (err, cookie, _) = c.reply(0);
        assert_eq!(err, 0);
        assert!(!std::mem::replace(&mut seen[cookie as usize], true));
    }
    for i in 0..64u64 {
        c.send(w::CMD_READ, 0, 1000 + i, i * 64 * 1024, 64 * 1024, &[]);
    }
    for _ in 0..64 {
        let (err, cookie, data) = c.reply(64 * 1024);
        assert_eq!(err, 0);
        assert_same(&data, &blocks[(cookie - 1000) as usize], "pipelined read");
    }
    // Out of range and unsupported requests are errors, and the connection goes on.
    assert_eq!(
        c.request(w::CMD_READ, 0, 1, 16 * MIB, 4096, &[]).0,
        w::EINVAL
    );
    assert_eq!(c.write(2, 16 * MIB - 512, &[0; 4096]), w::ENOSPC);
    assert_eq!(c.request(w::CMD_READ, 0, 3, 0, 64 << 20, &[]).0, w::EINVAL);
    assert_eq!(c.request(99, 0, 4, 0, 0, &[]).0, w::EINVAL);
    assert_eq!(c.request(w::CMD_FLUSH, 0, 5, 0, 0, &[]).0, 0);
    c.disconnect();

    // A WRITE larger than the maximum closes the connection; the daemon goes on.
    let mut c = RawClient::connect(&uri, "e");
    c.send(w::CMD_WRITE, 0, 1, 0, 64 << 20, &[]);
    assert!(c.closed(), "oversized WRITE should close the connection");
    // Bad magic closes the connection.
    let mut c = RawClient::connect(&uri, "e");
    c.s.write_all(&[0xee; 28]).unwrap();
    assert!(c.closed(), "bad request magic should close the connection");
    // Garbage instead of a negotiation, and a client that vanishes mid-request.
    let mut s = TcpStream::connect(uri.trim_start_matches("nbd://")).unwrap();
    let mut g = [0u8; 18];
    s.read_exact(&mut g).unwrap();
    s.write_all(b"garbage garbage garbage").unwrap();
    drop(s);
    let mut c = RawClient::connect(&uri, "e");
    c.send(w::CMD_WRITE, 0, 1, 0, 1 << 20, &[1; 1000]);
    drop(c);
    // Still serving, and the data written before is intact.
    let mut c = RawClient::connect(&uri, "e");
    let (err, _, data) = c.request(w::CMD_READ, 0, 7, 0, 64 * 1024, &[]);
    assert_eq!(err, 0);
    assert_same(&data, &blocks[0], "after bad clients");
    c.disconnect();
    assert!(p.cli(&["ping"]).status.success());
}

/// NBD writers and the mount's writers keep each other out unless `--nbd-shared`; readers
/// on either side never do.
#[test]
fn nbd_and_mount_writers_exclude_each_other_unless_shared() {
    let (mut p, uri) = nbd_pool();
    p.create_volume("x", "8M");
    let file = fs::OpenOptions::new().write(true).open(p.vol("x")).unwrap();
    // Reading over NBD is fine while the file is open for writing; writing is not.
    let mut c = RawClient::connect(&uri, "x");
    assert_eq!(c.request(w::CMD_READ, 0, 1, 0, 4096, &[]).0, 0);
    assert_eq!(c.write(2, 0, &[1; 4096]), w::EPERM);
    c.disconnect();
    drop(file);
    // An NBD writer keeps opens for writing out (EBUSY); read-only opens work.
    let mut c = RawClient::connect(&uri, "x");
    assert_eq!(c.write(3, 0, &[2; 4096]), 0);
    let e = fs::OpenOptions::new()
        .write(true)
        .open(p.vol("x"))
        .unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EBUSY), "{e}");
    assert_eq!(fs::read(p.vol("x")).unwrap()[..4096], [2; 4096]);
    c.disconnect();
    // Gone with the connection.
    let t0 = std::time::Instant::now();
    while fs::OpenOptions::new().write(true).open(p.vol("x")).is_err() {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "writer claim not released"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // --nbd-shared lets both write.
    p.stop();
    p.daemon_args.push("--nbd-shared".into());
    p.start();
    let file = fs::OpenOptions::new().write(true).open(p.vol("x")).unwrap();
    let mut c = RawClient::connect(&uri, "x");
    assert_eq!(c.write(4, 0, &[3; 4096]), 0);
    let f2 = fs::OpenOptions::new().write(true).open(p.vol("x")).unwrap();
    c.disconnect();
    drop((file, f2));
}

#[test]
fn unix_socket_export() {
    let mut p = TestPool::init(ARRAYS, "256K");
    let sock = p.root().join("nbd.sock");
    p.daemon_args = vec!["--nbd-socket".into(), sock.to_str().unwrap().into()];
    p.start();
    p.create_volume("u", "8M");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        fs::metadata(&sock).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let list = tool_ok(
        "nbdinfo",
        &["--list", &format!("nbd+unix:///?socket={}", sock.display())],
    );
    assert!(list.contains("export=\"u\""), "{list}");
    let out = tool_ok(
        "qemu-io",
        &[
            "-f",
            "raw",
            "-c",
            "write -P 0x3c 64k 128k",
            "-c",
            "read -P 0x3c 64k 128k",
            &format!("nbd+unix:///u?socket={}", sock.display()),
        ],
    );
    assert!(out.contains("read 131072/131072"), "{out}");
    let v = fs::read(p.vol("u")).unwrap();
    assert!(v[64 * 1024..192 * 1024].iter().all(|&b| b == 0x3c));
    p.stop();
    assert!(!sock.exists(), "socket left behind after a clean stop");
    // A stale socket (daemon killed) is replaced at the next start.
    p.start();
    p.kill9();
    p.clear_dead_mount();
    assert!(sock.exists());
    p.start();
    tool_ok(
        "nbdinfo",
        &[&format!("nbd+unix:///u?socket={}", sock.display())],
    );
}

/// SIGTERM with clients connected and requests in flight: the daemon closes them, waits for
/// the requests, exits 0 and leaves a clean pool.
#[test]
fn clean_stop_with_clients_connected() {
    let (mut p, uri) = nbd_pool();
    p.create_volume("t", "256M");
    let src = p.root().join("src");
    random_file(&src, 61, 256 * MIB as usize);
    let mut copy = Command::new(tool("nbdcopy"))
        .args([src.to_str().unwrap(), &format!("{uri}/t")])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let idle = RawClient::connect(&uri, "t");
    std::thread::sleep(Duration::from_millis(100));
    p.stop();
    let _ = copy.wait();
    drop(idle);
    p.check_clean();
}

/// Connections are bounded (64): the next one is closed at once, and a slot frees when a
/// client goes.
#[test]
fn connections_are_bounded() {
    let (p, uri) = nbd_pool();
    p.create_volume("k", "1M");
    let addr = uri.trim_start_matches("nbd://").to_string();
    let greet = |s: &mut TcpStream| -> bool {
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut g = [0u8; 18];
        s.read_exact(&mut g).is_ok()
    };
    let mut held: Vec<TcpStream> = (0..64)
        .map(|_| {
            let mut s = TcpStream::connect(&addr).unwrap();
            assert!(greet(&mut s));
            s
        })
        .collect();
    let mut extra = TcpStream::connect(&addr).unwrap();
    assert!(!greet(&mut extra), "the 65th connection should be closed");
    // A slot frees once the server has seen a client go (its thread ends).
    let wait_slot = || {
        let t0 = std::time::Instant::now();
        loop {
            let mut s = TcpStream::connect(&addr).unwrap();
            if greet(&mut s) {
                return;
            }
            assert!(t0.elapsed() < Duration::from_secs(20), "no slot freed");
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    held.pop();
    wait_slot();
    drop(held);
    // Wait until the 64 are gone: 32 connections at once get in, then a real client does.
    let t0 = std::time::Instant::now();
    loop {
        let many: Vec<TcpStream> = (0..32)
            .filter_map(|_| {
                let mut s = TcpStream::connect(&addr).ok()?;
                greet(&mut s).then_some(s)
            })
            .collect();
        if many.len() == 32 {
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(20), "slots not freed");
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut c = RawClient::connect(&uri, "k");
    assert_eq!(c.request(w::CMD_READ, 0, 1, 0, 512, &[]).0, 0);
    c.disconnect();
}

#[test]
fn non_local_bind_needs_an_allow_list() {
    let mut p = TestPool::init(ARRAYS, "256K");
    let port = free_port();
    p.daemon_args = vec!["--nbd".into(), format!("0.0.0.0:{port}")];
    let e = p.start_expect_failure(&[]);
    assert!(e.stderr.contains("--nbd-allow"), "{}", e.stderr);
    p.daemon_args
        .extend(["--nbd-allow".into(), "10.0.0.0/8".into()]);
    p.start();
    p.create_volume("f", "1M");
    // Loopback clients are always let in.
    let list = tool_ok("nbdinfo", &["--list", &format!("nbd://127.0.0.1:{port}")]);
    assert!(list.contains("export=\"f\""), "{list}");
}

trait StopCheck {
    fn check_clean_after_stop(self);
}

impl StopCheck for TestPool {
    /// Stop the daemon cleanly (NBD connections closed) and check the pool offline.
    fn check_clean_after_stop(mut self) {
        self.stop();
        self.check_clean();
    }
}

/// A minimal NBD client: fixed newstyle, NBD_OPT_GO, simple replies only.
struct RawClient {
    s: TcpStream,
}

impl RawClient {
    fn connect(uri: &str, export: &str) -> RawClient {
        let mut s = TcpStream::connect(uri.trim_start_matches("nbd://")).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let mut g = [0u8; 18];
        s.read_exact(&mut g).unwrap();
        assert_eq!(&g[..16], b"NBDMAGICIHAVEOPT");
        s.write_all(&(w::FLAG_C_FIXED_NEWSTYLE | w::FLAG_C_NO_ZEROES).to_be_bytes())
            .unwrap();
        let mut data = (export.len() as u32).to_be_bytes().to_vec();
        data.extend_from_slice(export.as_bytes());
        data.extend_from_slice(&0u16.to_be_bytes());
        s.write_all(&w::encode_option_header(w::OPT_GO, data.len() as u32))
            .unwrap();
        s.write_all(&data).unwrap();
        loop {
            let mut h = [0u8; 20];
            s.read_exact(&mut h).unwrap();
            let kind = u32::from_be_bytes(h[12..16].try_into().unwrap());
            let len = u32::from_be_bytes(h[16..20].try_into().unwrap());
            let mut d = vec![0u8; len as usize];
            s.read_exact(&mut d).unwrap();
            assert!(kind < 1 << 31, "GO {export}: error reply {kind:#x}");
            if kind == w::REP_ACK {
                return RawClient { s };
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn send(&mut self, kind: u16, flags: u16, cookie: u64, offset: u64, len: u32, data: &[u8]) {
        let r = w::Request {
            flags,
            kind,
            cookie,
            offset,
            len,
        };
        let _ = self.s.write_all(&w::encode_request(&r));
        let _ = self.s.write_all(data);
    }

    /// One simple reply; `read_len` bytes of data follow a successful READ's.
    fn reply(&mut self, read_len: usize) -> (u32, u64, Vec<u8>) {
        let mut h = [0u8; 16];
        self.s.read_exact(&mut h).unwrap();
        assert_eq!(
            u32::from_be_bytes(h[..4].try_into().unwrap()),
            w::SIMPLE_REPLY_MAGIC
        );
        let err = u32::from_be_bytes(h[4..8].try_into().unwrap());
        let cookie = u64::from_be_bytes(h[8..16].try_into().unwrap());
        let mut data = Vec::new();
        if err == 0 && read_len > 0 {
            data.resize(read_len, 0);
            self.s.read_exact(&mut data).unwrap();
        }
        (err, cookie, data)
    }

    fn request(
        &mut self,
        kind: u16,
        flags: u16,
        cookie: u64,
        offset: u64,
        len: u32,
        data: &[u8],
    ) -> (u32, u64, Vec<u8>) {
        self.send(kind, flags, cookie, offset, len, data);
        let read_len = if kind == w::CMD_READ { len as usize } else { 0 };
        let r = self.reply(read_len);
        assert_eq!(r.1, cookie);
        r
    }

    fn write(&mut self, cookie: u64, offset: u64, data: &[u8]) -> u32 {
        self.request(w::CMD_WRITE, 0, cookie, offset, data.len() as u32, data)
            .0
    }

    fn trim(&mut self, cookie: u64, offset: u64, len: u32) -> u32 {
        self.request(w::CMD_TRIM, 0, cookie, offset, len, &[]).0
    }

    fn disconnect(mut self) {
        self.send(w::CMD_DISC, 0, 0, 0, 0, &[]);
        let _ = self.s.shutdown(Shutdown::Write);
        assert!(self.closed());
    }

    /// Did the server close the connection (EOF or reset, within the read timeout)?
    fn closed(&mut self) -> bool {
        let mut b = [0u8; 64];
        loop {
            match self.s.read(&mut b) {
                Ok(0) => return true,
                Ok(_) => continue,
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
                Err(_) => return false,
            }
        }
    }
}

/// `fusevol export-nbd remove/add/list` change the export table at run time.
#[test]
fn export_table_remove_add_read_only() {
    let (p, uri) = nbd_pool();
    p.create_volume("a", "16M");
    p.create_volume("b", "16M");
    p.cli_ok(&["snapshot", "create", "a", "s1"]);

    // Default: everything exported.
    let list = p.cli_json(&["export-nbd", "list"]);
    let names: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["a", "a@s1", "b"], "{list}");
    assert_eq!(list[0]["size"], 16 * MIB);
    assert_eq!(list[0]["read_only"], false);
    assert_eq!(list[1]["read_only"], true);
    assert_eq!(list[0]["connections"], 0);

    // remove: gone from LIST, GO refused; the others unchanged.
    p.cli_ok(&["export-nbd", "remove", "a"]);
    let l = tool_ok("nbdinfo", &["--list", &uri]);
    assert!(!l.contains("export=\"a\""), "{l}");
    assert!(l.contains("export=\"a@s1\""), "{l}");
    assert!(l.contains("export=\"b\""), "{l}");
    tool_fails("nbdinfo", &[&format!("{uri}/a")]);
    tool_ok("nbdinfo", &[&format!("{uri}/b")]);
    // Removing it again, or an unknown name, fails naming it.
    let out = p.cli(&["export-nbd", "remove", "a"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("'a'"), "{}", describe(&out));
    let out = p.cli(&["export-nbd", "add", "nope"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("'nope'"), "{}", describe(&out));

    // add: back, writable.
    let e = p.cli_json(&["export-nbd", "add", "a"]);
    assert_eq!(e["name"], "a");
    assert_eq!(e["read_only"], false);
    let l = tool_ok("nbdinfo", &["--list", &uri]);
    assert!(l.contains("export=\"a\""), "{l}");
    let qio = |what: &str| -> Vec<String> {
        vec![
            "-f".into(),
            "raw".into(),
            "-c".into(),
            what.into(),
            format!("{uri}/b"),
        ]
    };
    let args = qio("write -P 0xab 0 64k");
    tool_ok(
        "qemu-io",
        &args.iter().map(String::as_str).collect::<Vec<_>>(),
    );

    // add --read-only on a writable volume: flagged read-only, writes refused.
    let e = p.cli_json(&["export-nbd", "add", "b", "--read-only"]);
    assert_eq!(e["read_only"], true);
    let info = tool_ok("nbdinfo", &[&format!("{uri}/b")]);
    assert!(info.contains("is_read_only: true"), "{info}");
    let args = qio("write -P 0xcd 0 64k");
    tool_fails(
        "qemu-io",
        &args.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    let mut args = qio("read -P 0xab 0 64k");
    args.insert(0, "-r".into());
    tool_ok(
        "qemu-io",
        &args.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    // A client that ignores the flag gets EPERM.
    let mut c = RawClient::connect(&uri, "b");
    assert_eq!(c.write(1, 0, &[0xcd; 4096]), w::EPERM);
    // ... and is counted while connected.
    let list = p.cli_json(&["export-nbd", "list"]);
    let b = list
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "b")
        .unwrap();
    assert_eq!(b["connections"], 1, "{list}");
    assert_eq!(b["read_only"], true, "{list}");
    c.disconnect();
    let mut buf = vec![0u8; 65536];
    fs::File::open(p.vol("b"))
        .unwrap()
        .read_exact(&mut buf)
        .unwrap();
    assert!(
        buf.iter().all(|&x| x == 0xab),
        "read-only export was written"
    );
    // Plain add makes it writable again; the text output works too.
    let out = p.cli_ok(&["export-nbd", "add", "b"]);
    assert!(out.contains("exporting b"), "{out}");
    assert!(p.cli_ok(&["export-nbd", "list"]).contains("CONNECTIONS"));
}

/// Without `--nbd` the commands fail with a clear message.
#[test]
fn export_nbd_needs_nbd() {
    let mut p = TestPool::init(ARRAYS, "256K");
    p.start();
    p.create_volume("a", "16M");
    for args in [
        &["export-nbd", "list"][..],
        &["export-nbd", "add", "a"],
        &["export-nbd", "remove", "a"],
    ] {
        let out = p.cli(args);
        assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
        assert!(
            text(&out.stderr).contains("not serving NBD"),
            "{}",
            describe(&out)
        );
    }
    let out = p.cli(&["export-nbd", "remove", "a"]);
    assert!(text(&out.stderr).contains("'a'"), "{}", describe(&out));
}
