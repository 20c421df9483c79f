//! Takeover, split-brain refusal and failback between two daemons (two pools, one remote
//! directory), through the CLI and the FUSE mounts.
//!
//! Every written block is stamped with the index of the write, so each site's image can be
//! checked against a model of the writes, block by block.

mod common;

use std::collections::HashMap;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use common::sites::Daemons;
use common::*;

const BS: u64 = 4096;
const VOL_BLOCKS: u64 = 2048; // 8 MiB volumes
const VOLS: [&str; 2] = ["va", "vb"];

fn block(k: u64, vol: usize, blk: u64) -> Vec<u8> {
    let mut b = vec![0u8; BS as usize];
    let mut x = k.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ (vol as u64) << 32 ^ blk;
    for c in b.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        c.copy_from_slice(&x.to_le_bytes());
    }
    b[..8].copy_from_slice(&k.to_le_bytes());
    b
}

/// The expected content of the volumes: block → write index (0: zeros).
#[derive(Clone, Default, PartialEq, Debug)]
struct Model(HashMap<(usize, u64), u64>);

struct Writer {
    next: u64,
    rng: Rng,
}

impl Writer {
    /// `n` stamped block writes through the mount of `p`; the model follows.
    fn write(&mut self, p: &TestPool, m: &mut Model, n: usize) {
        let files: Vec<std::fs::File> = VOLS
            .iter()
            .map(|v| {
                std::fs::OpenOptions::new()
                    .write(true)
                    .open(p.vol(v))
                    .unwrap()
            })
            .collect();
        for _ in 0..n {
            let vol = self.rng.range(0, 2) as usize;
            let blk = self.rng.range(0, VOL_BLOCKS / 4); // a quarter: regions repeat
            self.next += 1;
            files[vol]
                .write_all_at(&block(self.next, vol, blk), blk * BS)
                .unwrap();
            m.0.insert((vol, blk), self.next);
        }
    }
}

fn expect_image(dir: &Path, names: [&str; 2], m: &Model, what: &str) {
    for (vol, name) in names.iter().enumerate() {
        let data = std::fs::read(dir.join(name))
            .unwrap_or_else(|e| panic!("{what}: read {}: {e}", dir.join(name).display()));
        assert_eq!(data.len() as u64, VOL_BLOCKS * BS, "{what}: size of {name}");
        for blk in 0..VOL_BLOCKS {
            let got = &data[(blk * BS) as usize..((blk + 1) * BS) as usize];
            let want = match m.0.get(&(vol, blk)) {
                Some(&k) => block(k, vol, blk),
                None => vec![0u8; BS as usize],
            };
            if got != want.as_slice() {
                let k = u64::from_le_bytes(got[..8].try_into().unwrap());
                panic!(
                    "{what}: {name} block {blk} holds write {k}, expected {:?}",
                    m.0.get(&(vol, blk))
                );
            }
        }
    }
}

fn status(p: &TestPool) -> serde_json::Value {
    p.cli_json(&["group", "status", "g"])
        .as_array()
        .expect("list")[0]
        .clone()
}

fn num(v: &serde_json::Value, k: &str) -> u64 {
    v[k].as_u64().unwrap_or_else(|| panic!("{k} in {v}"))
}

fn wait_for(what: &str, p: &TestPool, mut ok: impl FnMut(&serde_json::Value) -> bool) {
    let t0 = Instant::now();
    loop {
        let st = status(p);
        if ok(&st) {
            return;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "timed out waiting for {what}: {st}"
        );
        thread::sleep(Duration::from_millis(100));
    }
}

/// The primary `p` has everything acknowledged by the secondary `s`, which applied it all.
fn wait_caught_up(p: &TestPool, s: &TestPool) {
    wait_for("the secondary to catch up", p, |ps| {
        let w = num(ps, "written");
        num(ps, "acknowledged") == w && num(&status(s), "applied") == w
    });
}

fn write_fails(p: &TestPool, vol: &str) -> bool {
    std::fs::OpenOptions::new()
        .write(true)
        .open(p.vol(vol))
        .and_then(|f| f.write_all_at(&[1u8; 4096], 0))
        .is_err()
}

fn snapshot_dir(p: &TestPool, snap: &str) -> std::path::PathBuf {
    // <mnt>/.snapshots/<vol>/<snap>: the two volumes' files side by side for expect_image.
    let d = p.root().join(format!("snapview-{snap}"));
    std::fs::create_dir_all(&d).unwrap();
    for v in VOLS {
        let src = p.mnt().join(".snapshots").join(v).join(snap);
        std::fs::copy(&src, d.join(v)).unwrap_or_else(|e| panic!("{}: {e}", src.display()));
    }
    d
}

#[test]
fn disaster_takeover_failback_with_a_delta_and_planned_switch_back() {
    let Daemons {
        mut p,
        mut s,
        remote,
    } = Daemons::new(2, "256M", "64K");
    p.set_budget(Duration::from_secs(400));
    s.set_budget(Duration::from_secs(400));
    let away = p.root().join("remote-away");
    let remote_s = remote.to_str().unwrap().to_string();
    for v in VOLS {
        p.create_volume(v, &format!("{}", VOL_BLOCKS * BS));
    }
    let mut w = Writer {
        next: 0,
        rng: Rng::new(0x7a4e_0001),
    };
    let mut model = Model::default();
    w.write(&p, &mut model, 300);
    p.create_group("g", &VOLS, &remote);
    s.cli_ok(&["group", "attach", "g", "--remote", &remote_s]);
    // Journal settings of the primary, which the takeover must keep (published in the
    // manifest within a second or so).
    p.cli_ok(&[
        "group",
        "set",
        "g",
        "--journal-limit",
        "96M",
        "--journal-full",
        "suspend",
        "--block-timeout",
        "7",
    ]);
    w.write(&p, &mut model, 500);
    wait_caught_up(&p, &s);
    thread::sleep(Duration::from_millis(2500));
    let at_takeover = model.clone();

    // The remote goes away; the primary writes on (these writes never reach S), then dies.
    std::fs::rename(&remote, &away).unwrap();
    let mut diverged = model.clone();
    w.write(&p, &mut diverged, 120);
    thread::sleep(Duration::from_millis(600)); // sealed by age, not shippable
    p.kill9();
    std::fs::rename(&away, &remote).unwrap();

    // Disaster takeover at S: it has everything P shipped, nothing after.
    let out = s.cli_ok(&["group", "takeover", "g"]);
    assert!(out.contains("epoch 2"), "{out}");
    let st = status(&s);
    assert_eq!(st["role"], "primary", "{st}");
    assert_eq!(num(&st, "epoch"), 2);
    let takeover_seq = num(&st, "start_seq");
    assert!(takeover_seq > 0, "{st}");
    assert_eq!(num(&st, "journal_limit"), 96 << 20, "{st}");
    assert_eq!(st["full"]["policy"], "suspend", "{st}");
    assert_eq!(num(&st["full"], "block_timeout_ms"), 7000, "{st}");
    expect_image(s.mnt(), VOLS, &at_takeover, "S right after the takeover");
    // A second takeover is refused: S is the primary now.
    let again = s.cli(&["group", "takeover", "g"]);
    assert!(!again.status.success(), "{}", describe(&again));
    // New writes at the new primary are journaled (and wait to be shipped back).
    let mut s_model = at_takeover.clone();
    w.write(&s, &mut s_model, 200);
    let st = status(&s);
    assert!(num(&st, "written") >= takeover_seq + 200, "{st}");

    // The old primary comes back, sees epoch 2 and refuses to go on as primary.
    p.clear_dead_mount();
    p.start();
    wait_for("P to see the newer epoch", &p, |st| st["state"] == "stale");
    let st = status(&p);
    assert!(
        st["stale"].as_str().unwrap_or("").contains("epoch 2"),
        "{st}"
    );
    assert!(write_fails(&p, "va"), "a stale primary must refuse writes");
    expect_image(
        p.mnt(),
        VOLS,
        &diverged,
        "P (stale) keeps its own image readable",
    );

    // Failback: P becomes S's secondary with a delta (what it wrote after the takeover).
    let out = p.cli_ok(&["group", "failback", "g", "--keep-snapshot"]);
    assert!(out.contains("secondary of epoch 2"), "{out}");
    // A crash right after the failback began: the new role and the pending delta survive.
    p.kill9();
    p.clear_dead_mount();
    p.start();
    assert_eq!(status(&p)["role"], "secondary");
    wait_for("P to apply the failback delta", &p, |st| {
        st["role"] == "secondary" && st["consistent"] == true
    });
    wait_caught_up(&s, &p);
    expect_image(p.mnt(), VOLS, &s_model, "P after failback");
    expect_image(s.mnt(), VOLS, &s_model, "S after failback");
    let sent = num(&status(&s), "failback_bytes");
    let got = num(&status(&p), "failback_bytes");
    assert_eq!(sent, got, "bytes sent and received");
    assert!(sent > 0, "P wrote after the takeover point: a delta is due");
    // Exactly the diverged blocks (at most 120 of 4 KiB; repeats merge): far below the
    // 16 MiB of a full copy.
    assert!(sent <= 120 * BS, "delta of {sent} bytes");
    eprintln!(
        "failback delta: {sent} bytes for 120 diverged 4 KiB writes; full copy would be {} bytes",
        2 * VOL_BLOCKS * BS
    );
    // The kept snapshot holds P's image as primary (with its diverged writes).
    let snap = snapshot_dir(&p, "failback-e2");
    expect_image(&snap, VOLS, &diverged, "P's failback snapshot");
    assert!(write_fails(&p, "va"), "a secondary is read-only");

    // S goes on writing; P follows.
    w.write(&s, &mut s_model, 100);
    wait_caught_up(&s, &p);
    expect_image(p.mnt(), VOLS, &s_model, "P following S");

    // Planned switch back: writes stopped and caught up, takeover at P, failback at S.
    let out = p.cli_ok(&["group", "takeover", "g"]);
    assert!(out.contains("epoch 3"), "{out}");
    wait_for("S to see the newer epoch", &s, |st| st["state"] == "stale");
    assert!(write_fails(&s, "vb"), "the old primary refuses writes");
    let out = s.cli_ok(&["group", "failback", "g"]);
    assert!(
        out.contains("0 regions"),
        "a clean handover needs no delta: {out}"
    );
    wait_for("S to become a consistent secondary", &s, |st| {
        st["role"] == "secondary" && st["consistent"] == true
    });
    assert_eq!(num(&status(&s), "failback_bytes"), 0);
    // Its failback snapshot was not kept.
    assert!(!s.mnt().join(".snapshots/va/failback-e3").exists());
    let mut p_model = s_model.clone();
    w.write(&p, &mut p_model, 150);
    wait_caught_up(&p, &s);
    expect_image(s.mnt(), VOLS, &p_model, "S after the switch back");
    expect_image(p.mnt(), VOLS, &p_model, "P after the switch back");
    assert_eq!(num(&status(&p), "epoch"), 3);
    p.stop();
    p.check_clean();
    s.stop();
    s.check_clean();
}

#[test]
fn takeover_refusals_leave_the_secondary_applying() {
    let Daemons { p, s, remote } = Daemons::new(1, "128M", "64K");
    let remote_s = remote.to_str().unwrap().to_string();
    for v in VOLS {
        p.create_volume(v, &format!("{}", VOL_BLOCKS * BS));
    }
    p.create_group("g", &VOLS, &remote);
    // Takeover and failback on the wrong side are refused with the group named.
    let out = p.cli(&["group", "takeover", "g"]);
    assert!(!out.status.success());
    assert!(describe(&out).contains("'g'"), "{}", describe(&out));
    let out = p.cli(&["group", "failback", "g"]);
    assert!(!out.status.success());
    assert!(
        describe(&out).contains("has not been taken over"),
        "{}",
        describe(&out)
    );
    s.cli_ok(&["group", "attach", "g", "--remote", &remote_s]);
    let mut w = Writer {
        next: 0,
        rng: Rng::new(9),
    };
    let mut model = Model::default();
    w.write(&p, &mut model, 100);
    p.cli_ok(&["group", "snapshot", "g", "m1"]);
    w.write(&p, &mut model, 100);
    wait_caught_up(&p, &s);
    // The marker is applied already: S cannot go back to it.
    let out = s.cli(&["group", "takeover", "g", "--at-marker", "m1"]);
    assert!(!out.status.success());
    assert!(
        describe(&out).contains("already applied"),
        "{}",
        describe(&out)
    );
    let out = s.cli(&["group", "takeover", "g", "--at-marker", "nosuch"]);
    assert!(!out.status.success());
    assert!(
        describe(&out).contains("no marker 'nosuch'"),
        "{}",
        describe(&out)
    );
    // Still a secondary, still applying.
    w.write(&p, &mut model, 100);
    wait_caught_up(&p, &s);
    assert_eq!(status(&s)["role"], "secondary");
    expect_image(s.mnt(), VOLS, &model, "S after refused takeovers");
}
