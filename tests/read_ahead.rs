//! Random reads do not pay for read-ahead they do not use (issue 18): a small read of a volume
//! that continues no stream reads about its own bytes from the array files, even where the
//! pages before it are cached (which makes the kernel's read-ahead on the array file take it
//! for a stream); a sequential stream still reads ahead. Bytes are counted as the daemon's
//! `read_bytes` in /proc/PID/io (what its threads made the disk read), and every read is
//! checked against the pattern written.

mod common;

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::os::unix::io::AsRawFd;

use common::*;

const MIB: u64 = 1 << 20;
const VOL_MIB: u64 = 256;

/// The 4 KiB block `b` of the volume: its number, then a byte pattern of it.
fn block(b: u64) -> Vec<u8> {
    let mut v = vec![(b % 251) as u8; 4096];
    v[..8].copy_from_slice(&b.to_le_bytes());
    v
}

fn daemon_read_bytes(p: &TestPool) -> u64 {
    let pid = p.pid().expect("daemon running");
    let io = std::fs::read_to_string(format!("/proc/{pid}/io")).expect("read /proc/PID/io");
    io.lines()
        .find_map(|l| l.strip_prefix("read_bytes: "))
        .and_then(|v| v.trim().parse().ok())
        .expect("read_bytes in /proc/PID/io")
}

/// Write back and drop the array files' cached pages (only theirs: the rest of the machine's
/// page cache is left alone).
fn evict_arrays(p: &TestPool) {
    for e in std::fs::read_dir(p.pool().join("arrays")).unwrap() {
        let f = File::open(e.unwrap().path()).unwrap();
        f.sync_all().unwrap();
        nix::fcntl::posix_fadvise(
            f.as_raw_fd(),
            0,
            0,
            nix::fcntl::PosixFadviseAdvice::POSIX_FADV_DONTNEED,
        )
        .unwrap();
    }
}

fn check(f: &File, b: u64, len: usize) {
    let mut buf = vec![0u8; len];
    f.read_exact_at(&mut buf, b * 4096).unwrap();
    for (i, chunk) in buf.chunks(4096).enumerate() {
        assert!(
            chunk == block(b + i as u64).as_slice(),
            "block {} read back wrong",
            b + i as u64
        );
    }
}

#[test]
fn small_reads_next_to_cached_pages_read_only_their_bytes_and_streams_read_ahead() {
    let p = TestPool::new(&["a0:256M", "a1:256M"], "256K");
    p.create_volume("v", &format!("{VOL_MIB}M"));
    let vol = p.vol("v");
    {
        let f = std::fs::OpenOptions::new().write(true).open(&vol).unwrap();
        let per_mib = MIB / 4096;
        for m in 0..VOL_MIB {
            let data: Vec<u8> = (0..per_mib).flat_map(|i| block(m * per_mib + i)).collect();
            f.write_all_at(&data, m * MIB).unwrap();
        }
        f.sync_all().unwrap();
    }
    evict_arrays(&p);
    // The volume file is opened with direct_io: every read reaches the daemon as it is.
    let f = File::open(&vol).unwrap();

    // Pass 1: 8 KiB at the start of every MiB (they are cached in the arrays afterwards).
    for m in 0..VOL_MIB {
        check(&f, m * 256, 8192);
    }
    // Pass 2: the 4 KiB block right after each of them, one MiB apart, in a scattered order.
    // Two cached pages before each looks like a stream to the kernel's read-ahead on the
    // array file (it would read 64 KiB or more); the volume's reads continue no stream of
    // the volume, so they read their 4 KiB.
    let before = daemon_read_bytes(&p);
    let n = VOL_MIB;
    for i in 0..n {
        let m = (i * 97) % VOL_MIB; // 97 is prime to 256: every MiB once
        check(&f, m * 256 + 2, 4096);
    }
    let per_read = (daemon_read_bytes(&p) - before) / n;
    assert!(
        per_read <= 8192,
        "a lone 4 KiB read made the daemon read {per_read} bytes from the disk (read-ahead \
         it does not use)"
    );

    // A sequential stream of 64 KiB reads over data not cached yet reads ahead: the disk is
    // read in fewer, larger requests, and the reads run ahead of the stream (more bytes read
    // by the time half of it is done than it asked for).
    evict_arrays(&p);
    let before = daemon_read_bytes(&p);
    let start = 64 * 256; // block of MiB 64
    let asked = 16 * MIB;
    for k in 0..(asked / 65536) {
        check(&f, start + k * 16, 65536);
    }
    let read = daemon_read_bytes(&p) - before;
    assert!(
        read > asked,
        "a sequential stream read {read} bytes from the disk for {asked} asked: no read-ahead"
    );
}
