//! FUSE over io_uring (`fusevold --uring`): the kernel side's switch and the transport's
//! settings. The transport itself lives in the vendored fuser (`vendor/fuser/src/ring.rs`,
//! see `vendor/fuser/VENDORED.md`); the same `FuseFs` handlers serve both transports.
//!
//! The kernel offers `FUSE_OVER_IO_URING` at INIT only while the fuse module's parameter
//! `enable_uring` is on (it is off by default). A daemon running as root turns it on when it
//! is off; otherwise, or when the kernel refuses the rings later, the mount is served through
//! `/dev/fuse` as without `--uring`, and the log says why.

use std::fs;
use std::path::Path;

/// The fuse module's switch for FUSE over io_uring (Linux 6.14+, `CONFIG_FUSE_IO_URING`).
pub const ENABLE_URING_PARAM: &str = "/sys/module/fuse/parameters/enable_uring";

/// Entries (requests in flight) per queue when `--uring-depth` is not given.
pub const DEFAULT_DEPTH: u16 = 32;

/// What was found at the kernel's switch, and what was done about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KernelSwitch {
    /// It was on already.
    On,
    /// It was off and this daemon turned it on.
    TurnedOn,
    /// It is off and stays off (the reason, for the log).
    Off(String),
    /// The kernel has no such parameter (no FUSE over io_uring in it).
    Missing,
}

/// Make sure the kernel will offer FUSE over io_uring: read `param` and, when it is off and
/// `may_write` (the daemon runs as root), turn it on.
pub fn ensure_enabled(param: &Path, may_write: bool) -> KernelSwitch {
    let cur = match fs::read_to_string(param) {
        Ok(s) => s,
        Err(_) => return KernelSwitch::Missing,
    };
    if is_on(&cur) {
        return KernelSwitch::On;
    }
    if !may_write {
        return KernelSwitch::Off(format!(
            "{} is off and only root may turn it on",
            param.display()
        ));
    }
    match fs::write(param, "1") {
        Ok(()) => match fs::read_to_string(param) {
            Ok(s) if is_on(&s) => KernelSwitch::TurnedOn,
            Ok(s) => KernelSwitch::Off(format!(
                "{} reads {:?} after writing 1",
                param.display(),
                s.trim()
            )),
            Err(e) => KernelSwitch::Off(format!("cannot read {} back: {e}", param.display())),
        },
        Err(e) => KernelSwitch::Off(format!("cannot turn on {}: {e}", param.display())),
    }
}

fn is_on(v: &str) -> bool {
    matches!(v.trim(), "Y" | "y" | "1")
}

/// The transport's settings for fuser, after the kernel switch was looked at (and logged).
/// `None`: serve through `/dev/fuse` only.
pub fn transport_config(depth: u16) -> Option<fuser::UringConfig> {
    let euid_root = nix::unistd::geteuid().is_root();
    match ensure_enabled(Path::new(ENABLE_URING_PARAM), euid_root) {
        KernelSwitch::On => {}
        KernelSwitch::TurnedOn => log::info!("turned on {ENABLE_URING_PARAM} for --uring"),
        KernelSwitch::Off(why) => {
            log::warn!("FUSE over io_uring not used: {why}; requests are served through /dev/fuse");
            return None;
        }
        KernelSwitch::Missing => {
            log::warn!(
                "FUSE over io_uring not used: this kernel has no {ENABLE_URING_PARAM} (it needs \
                 Linux 6.14+ built with CONFIG_FUSE_IO_URING); requests are served through \
                 /dev/fuse"
            );
            return None;
        }
    }
    let cfg = fuser::UringConfig {
        depth: depth.max(1),
        payload_override: None,
    };
    // Test builds: register entries too small for the kernel's requests, which it refuses
    // (EINVAL), to exercise the fall-back to /dev/fuse.
    fail::fail_point!("fuse::uring::short_payload", |_| {
        Some(fuser::UringConfig {
            payload_override: Some(4096),
            ..cfg
        })
    });
    Some(cfg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn switch_on_off_missing_and_turned_on() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("enable_uring");
        assert_eq!(ensure_enabled(&p, true), KernelSwitch::Missing);
        fs::write(&p, "Y\n").unwrap();
        assert_eq!(ensure_enabled(&p, false), KernelSwitch::On);
        fs::write(&p, "N\n").unwrap();
        match ensure_enabled(&p, false) {
            KernelSwitch::Off(why) => assert!(why.contains("only root"), "{why}"),
            other => panic!("{other:?}"),
        }
        // A plain file takes the write and reads back "1".
        assert_eq!(ensure_enabled(&p, true), KernelSwitch::TurnedOn);
        assert_eq!(fs::read_to_string(&p).unwrap(), "1");
    }
}
