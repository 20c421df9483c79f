//! Operation locks: `fusevol lock VOL|pair NAME|group NAME --owner NAME [--ttl SECS]`.
//!
//! A lock keeps every *changing* control request on its object away from anyone but its owner
//! (the owner a connection named with `Session`); reads, status and host I/O go on. A lock
//! ends at `unlock`, at its TTL (a reaper thread ends it on time and publishes the event), or,
//! for a *session* lock (the implicit lock `apply` takes for its run), when the connection that
//! took it closes. Locks live in the daemon's memory only: a restart ends them all (the holder
//! of a multi-step change is gone with its connection anyway).
//!
//! Which objects a request changes is decided in `handler.rs` (`touched`); a pair request
//! touches the pair and both its volumes, a group request the group and its volumes, so a lock
//! on a volume keeps pair and group operations off it too.
//!
//! Every lock change is an event on the locked object: `locked`, `unlocked`, `lock-expired`,
//! `lock-released` (its connection closed), with the owner in the detail.

use std::collections::BTreeMap;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant, SystemTime};

use serde_json::json;

use crate::control::protocol::{LockInfo, LockObject};
use crate::events::EventLog;

type Key = (LockObject, String);

#[derive(Debug, Clone)]
struct Held {
    owner: String,
    since: SystemTime,
    ttl: Option<u64>,
    deadline: Option<Instant>,
    /// The connection whose closing ends it (session locks).
    conn: Option<u64>,
}

#[derive(Default)]
struct Table {
    held: BTreeMap<Key, Held>,
    stopping: bool,
}

/// Why a lock request or a changing request was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal(pub String);

/// The lock table of one daemon; see the module comment.
pub struct Locks {
    table: Mutex<Table>,
    wake: Condvar,
    events: Arc<EventLog>,
}

fn rfc3339(t: SystemTime) -> String {
    jiff::Timestamp::try_from(t)
        .ok()
        .and_then(|ts| ts.round(jiff::Unit::Second).ok())
        .map_or_else(|| "?".into(), |ts| ts.to_string())
}

fn info(key: &Key, h: &Held, now: Instant) -> LockInfo {
    LockInfo {
        object: key.0,
        name: key.1.clone(),
        owner: h.owner.clone(),
        since: rfc3339(h.since),
        ttl: h.ttl,
        expires_in: h
            .deadline
            .map(|d| d.saturating_duration_since(now).as_secs_f64().ceil() as u64),
        session: h.conn.is_some(),
    }
}

/// `pair 'db' is locked by 'alice' since ... (ttl 60 s, 42 s left)`.
pub fn describe(l: &LockInfo) -> String {
    let mut s = format!(
        "{} '{}' is locked by '{}' since {}",
        l.object.as_str(),
        l.name,
        l.owner,
        l.since
    );
    match (l.ttl, l.expires_in) {
        (Some(ttl), Some(left)) => s.push_str(&format!(" (ttl {ttl} s, {left} s left)")),
        _ if l.session => s.push_str(" (for the run of the holder's command)"),
        _ => s.push_str(" (no ttl: until unlocked)"),
    }
    s
}

impl Locks {
    pub fn new(events: Arc<EventLog>) -> Arc<Locks> {
        Arc::new(Locks {
            table: Mutex::new(Table::default()),
            wake: Condvar::new(),
            events,
        })
    }

    fn table(&self) -> MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn publish(&self, key: &Key, change: &str, owner: &str, extra: serde_json::Value) {
        let mut detail = json!({ "owner": owner });
        if let (Some(d), serde_json::Value::Object(m)) = (detail.as_object_mut(), extra) {
            d.extend(m);
        }
        self.events.publish(key.0.as_str(), &key.1, change, detail);
    }

    /// End the locks whose TTL has passed (with their events).
    fn expire(&self, t: &mut Table, now: Instant) {
        let gone: Vec<Key> = t
            .held
            .iter()
            .filter(|(_, h)| h.deadline.is_some_and(|d| d <= now))
            .map(|(k, _)| k.clone())
            .collect();
        for k in gone {
            if let Some(h) = t.held.remove(&k) {
                log::info!("{} '{}': lock of '{}' expired", k.0.as_str(), k.1, h.owner);
                self.publish(&k, "lock-expired", &h.owner, json!({ "ttl": h.ttl }));
            }
        }
    }

    /// Take or renew a lock. Refused while another owner holds it.
    pub fn lock(
        &self,
        object: LockObject,
        name: &str,
        owner: &str,
        ttl: Option<u64>,
        conn: Option<u64>,
    ) -> Result<LockInfo, Refusal> {
        if owner.is_empty() {
            return Err(Refusal(format!(
                "cannot lock {} '{name}': the owner name is empty",
                object.as_str()
            )));
        }
        if ttl == Some(0) {
            return Err(Refusal(format!(
                "cannot lock {} '{name}': a ttl of 0 s would end at once",
                object.as_str()
            )));
        }
        let now = Instant::now();
        let mut t = self.table();
        self.expire(&mut t, now);
        let key = (object, name.to_string());
        if let Some(h) = t.held.get(&key) {
            if h.owner != owner {
                return Err(Refusal(describe(&info(&key, h, now))));
            }
        }
        let renewed = t.held.contains_key(&key);
        let held = Held {
            owner: owner.to_string(),
            since: SystemTime::now(),
            ttl,
            deadline: ttl.map(|s| now + Duration::from_secs(s)),
            // A renewal by the same owner keeps a session lock bound to its connection.
            conn: conn.or_else(|| t.held.get(&key).and_then(|h| h.conn)),
        };
        let out = info(&key, &held, now);
        t.held.insert(key.clone(), held);
        drop(t);
        self.wake.notify_all();
        self.publish(
            &key,
            "locked",
            owner,
            json!({ "ttl": ttl, "renewed": renewed, "session": conn.is_some() }),
        );
        Ok(out)
    }

    /// Release a lock: by its owner (`owner`), or by anyone with `force`.
    pub fn unlock(
        &self,
        object: LockObject,
        name: &str,
        owner: Option<&str>,
        force: bool,
    ) -> Result<LockInfo, Refusal> {
        let now = Instant::now();
        let mut t = self.table();
        self.expire(&mut t, now);
        let key = (object, name.to_string());
        let Some(h) = t.held.get(&key) else {
            return Err(Refusal(format!(
                "{} '{name}' is not locked",
                object.as_str()
            )));
        };
        let l = info(&key, h, now);
        if !force && owner != Some(h.owner.as_str()) {
            return Err(Refusal(format!(
                "{}; only its owner can unlock it (or use --force)",
                describe(&l)
            )));
        }
        t.held.remove(&key);
        drop(t);
        self.publish(
            &key,
            "unlocked",
            &l.owner,
            json!({ "by": owner, "forced": force && owner != Some(l.owner.as_str()) }),
        );
        Ok(l)
    }

    /// Refuse when any of `keys` is locked by someone other than `requester`.
    pub fn check(&self, keys: &[Key], requester: Option<&str>) -> Result<(), Refusal> {
        if keys.is_empty() {
            return Ok(());
        }
        let now = Instant::now();
        let mut t = self.table();
        self.expire(&mut t, now);
        for k in keys {
            if let Some(h) = t.held.get(k) {
                if requester != Some(h.owner.as_str()) {
                    return Err(Refusal(describe(&info(k, h, now))));
                }
            }
        }
        Ok(())
    }

    /// The lock on one object, if any.
    pub fn get(&self, object: LockObject, name: &str) -> Option<LockInfo> {
        let now = Instant::now();
        let mut t = self.table();
        self.expire(&mut t, now);
        let key = (object, name.to_string());
        t.held.get(&key).map(|h| info(&key, h, now))
    }

    /// Every lock held now, by object and name.
    pub fn list(&self) -> Vec<LockInfo> {
        let now = Instant::now();
        let mut t = self.table();
        self.expire(&mut t, now);
        t.held.iter().map(|(k, h)| info(k, h, now)).collect()
    }

    /// Connection `conn` closed: its session locks end.
    pub fn release_connection(&self, conn: u64) {
        let mut t = self.table();
        let gone: Vec<Key> = t
            .held
            .iter()
            .filter(|(_, h)| h.conn == Some(conn))
            .map(|(k, _)| k.clone())
            .collect();
        for k in gone {
            if let Some(h) = t.held.remove(&k) {
                self.publish(
                    &k,
                    "lock-released",
                    &h.owner,
                    json!({ "reason": "the holder's connection closed" }),
                );
            }
        }
    }

    /// Start the thread that ends locks at their TTL (and publishes it then, not at the next
    /// request). It stops with [`Locks::stop`].
    pub fn start_reaper(self: &Arc<Self>) -> std::io::Result<JoinHandle<()>> {
        let me = Arc::clone(self);
        thread::Builder::new()
            .name("lock-reaper".into())
            .spawn(move || {
                let mut t = me.table();
                loop {
                    if t.stopping {
                        return;
                    }
                    let now = Instant::now();
                    me.expire(&mut t, now);
                    let next = t.held.values().filter_map(|h| h.deadline).min();
                    t = match next {
                        Some(d) => {
                            let wait = d.saturating_duration_since(now);
                            me.wake
                                .wait_timeout(t, wait)
                                .unwrap_or_else(|p| p.into_inner())
                                .0
                        }
                        None => me.wake.wait(t).unwrap_or_else(|p| p.into_inner()),
                    };
                }
            })
    }

    /// Stop the reaper thread.
    pub fn stop(&self) {
        self.table().stopping = true;
        self.wake.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn locks() -> Arc<Locks> {
        Locks::new(Arc::new(EventLog::in_memory()))
    }

    #[test]
    fn another_owner_is_refused_and_the_owner_passes() {
        let l = locks();
        let k = (LockObject::Pair, "db".to_string());
        l.lock(LockObject::Pair, "db", "alice", None, None).unwrap();
        let e = l.check(std::slice::from_ref(&k), Some("bob")).unwrap_err();
        assert!(
            e.0.contains("pair 'db' is locked by 'alice' since"),
            "{}",
            e.0
        );
        assert!(l.check(std::slice::from_ref(&k), None).is_err());
        l.check(std::slice::from_ref(&k), Some("alice")).unwrap();
        assert!(l.lock(LockObject::Pair, "db", "bob", None, None).is_err());
        assert!(l
            .unlock(LockObject::Pair, "db", Some("bob"), false)
            .is_err());
        l.unlock(LockObject::Pair, "db", Some("bob"), true).unwrap();
        l.check(&[k], Some("bob")).unwrap();
    }

    #[test]
    fn ttl_and_session_end_a_lock() {
        let l = locks();
        let reaper = l.start_reaper().unwrap();
        l.lock(LockObject::Volume, "v", "alice", Some(1), None)
            .unwrap();
        l.lock(LockObject::Group, "g", "apply", None, Some(7))
            .unwrap();
        assert_eq!(l.list().len(), 2);
        std::thread::sleep(Duration::from_millis(1300));
        assert!(l.get(LockObject::Volume, "v").is_none());
        l.release_connection(7);
        assert!(l.list().is_empty());
        let evs = l.events.subscribe(None, false).backlog;
        let changes: Vec<&str> = evs.iter().map(|e| e.change.as_str()).collect();
        assert_eq!(
            changes,
            ["locked", "locked", "lock-expired", "lock-released"]
        );
        l.stop();
        reaper.join().unwrap();
    }
}
