//! Hooks around copies (`--pre CMD` / `--post CMD`): the pre hook runs before the copy
//! instant (e.g. `fsfreeze -f /mnt/data`, a database's backup-mode command) and the copy is
//! refused if it fails; the post hook always runs, also when the pre hook or the copy failed.
//! Each runs with `sh -c` in its own process group, with a timeout (the group is killed
//! when it passes), and with the copy in its environment:
//! `FUSEVOL_HOOK` (pre or post), `FUSEVOL_OP` (snapshot, pair-split, group-snapshot),
//! `FUSEVOL_VOLUMES` (space-separated), `FUSEVOL_SNAPSHOT`, `FUSEVOL_GROUP`,
//! `FUSEVOL_SCHEDULE` (the schedule's name when a schedule runs it), and for the post hook
//! `FUSEVOL_RESULT` (ok or failed). The CLI runs the hooks of its commands; the daemon runs
//! a schedule's (`backup/schedule.rs`).

use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// What the hooks are told about the copy.
#[derive(Debug, Clone, Default)]
pub struct HookEnv {
    pub op: String,
    pub volumes: Vec<String>,
    pub snapshot: String,
    pub group: String,
    /// The schedule that runs the copy (`FUSEVOL_SCHEDULE`; empty: run by hand).
    pub schedule: String,
}

/// Run one hook; Err says why it failed (exit status, signal, timeout).
pub fn run_hook(
    which: &str,
    cmd: &str,
    env: &HookEnv,
    result: Option<bool>,
    timeout: Duration,
) -> Result<(), String> {
    let mut c = Command::new("sh");
    c.arg("-c")
        .arg(cmd)
        .env("FUSEVOL_HOOK", which)
        .env("FUSEVOL_OP", &env.op)
        .env("FUSEVOL_VOLUMES", env.volumes.join(" "))
        .env("FUSEVOL_SNAPSHOT", &env.snapshot)
        .env("FUSEVOL_GROUP", &env.group)
        .env("FUSEVOL_SCHEDULE", &env.schedule)
        .stdin(Stdio::null())
        // The hook's output goes to stderr: stdout is the command's (JSON for scripts).
        .stdout(Stdio::from(
            std::io::stderr()
                .as_fd()
                .try_clone_to_owned()
                .map_err(|e| format!("{which} hook: {e}"))?,
        ))
        .process_group(0);
    if let Some(ok) = result {
        c.env("FUSEVOL_RESULT", if ok { "ok" } else { "failed" });
    }
    let mut child = c
        .spawn()
        .map_err(|e| format!("{which} hook '{cmd}' could not start: {e}"))?;
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(st)) if st.success() => return Ok(()),
            Ok(Some(st)) => return Err(format!("{which} hook '{cmd}' failed ({st})")),
            Ok(None) if Instant::now() >= deadline => {
                let pgid = nix::unistd::Pid::from_raw(child.id() as i32);
                let _ = nix::sys::signal::killpg(pgid, nix::sys::signal::Signal::SIGKILL);
                let _ = child.wait();
                return Err(format!(
                    "{which} hook '{cmd}' timed out after {} s and was killed",
                    timeout.as_secs()
                ));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => return Err(format!("{which} hook '{cmd}': {e}")),
        }
    }
}

/// Run `copy` between the hooks: `pre` first (its failure refuses the copy), `post` always.
/// Errors of the pre hook, the copy and the post hook are all reported (in that order).
pub fn around<T, E: std::fmt::Display>(
    pre: Option<&str>,
    post: Option<&str>,
    env: &HookEnv,
    timeout: Duration,
    copy: impl FnOnce() -> Result<T, E>,
) -> Result<T, HookError<E>> {
    let pre_res = match pre {
        Some(cmd) => run_hook("pre", cmd, env, None, timeout),
        None => Ok(()),
    };
    let res = match pre_res {
        Ok(()) => copy().map_err(HookError::Copy),
        Err(e) => Err(HookError::Pre(e)),
    };
    if let Some(cmd) = post {
        if let Err(e) = run_hook("post", cmd, env, Some(res.is_ok()), timeout) {
            return match res {
                Ok(_) => Err(HookError::Post(e)),
                Err(first) => Err(first.with_post(e)),
            };
        }
    }
    res
}

/// Why a hooked copy failed.
#[derive(Debug)]
pub enum HookError<E> {
    /// The pre hook failed: no copy was made.
    Pre(String),
    /// The copy failed (the post hook ran).
    Copy(E),
    /// The copy was made but the post hook failed.
    Post(String),
    /// Two failures: the first, and the post hook's.
    AndPost(Box<HookError<E>>, String),
}

impl<E> HookError<E> {
    fn with_post(self, post: String) -> HookError<E> {
        HookError::AndPost(Box::new(self), post)
    }
}

impl<E: std::fmt::Display> std::fmt::Display for HookError<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HookError::Pre(e) => write!(f, "{e}; no copy was made"),
            HookError::Copy(e) => write!(f, "{e}"),
            HookError::Post(e) => write!(f, "the copy was made, but {e}"),
            HookError::AndPost(first, e) => write!(f, "{first}; and {e}"),
        }
    }
}

use std::os::fd::AsFd;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pre_failure_refuses_and_post_always_runs() {
        let dir = tempfile::tempdir().unwrap();
        let mark = dir.path().join("post");
        let post = format!("echo $FUSEVOL_RESULT $FUSEVOL_VOLUMES > {}", mark.display());
        let env = HookEnv {
            op: "snapshot".into(),
            volumes: vec!["a".into(), "b".into()],
            ..Default::default()
        };
        let mut ran = false;
        let r = around(
            Some("exit 3"),
            Some(&post),
            &env,
            Duration::from_secs(10),
            || {
                ran = true;
                Ok::<(), String>(())
            },
        );
        assert!(matches!(r, Err(HookError::Pre(_))));
        assert!(!ran);
        assert_eq!(std::fs::read_to_string(&mark).unwrap().trim(), "failed a b");
        let r = around(
            Some("true"),
            Some(&post),
            &env,
            Duration::from_secs(10),
            || Ok::<u32, String>(5),
        );
        assert_eq!(r.unwrap(), 5);
        assert_eq!(std::fs::read_to_string(&mark).unwrap().trim(), "ok a b");
        let r = around(None, Some(&post), &env, Duration::from_secs(10), || {
            Err::<(), String>("no".into())
        });
        assert!(matches!(r, Err(HookError::Copy(_))));
        assert_eq!(std::fs::read_to_string(&mark).unwrap().trim(), "failed a b");
        let t = Instant::now();
        let r = around(Some("sleep 30"), None, &env, Duration::from_secs(1), || {
            Ok::<(), String>(())
        });
        assert!(matches!(r, Err(HookError::Pre(ref m)) if m.contains("timed out")));
        assert!(t.elapsed() < Duration::from_secs(10));
    }
}
