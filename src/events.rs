//! Pool events: every state change the daemon makes (volume created, pair PSUE, group
//! suspended, daemon start ...) as one [`Event`] with a pool-wide sequence number.
//!
//! A neutral module below the core: `Pool` owns one [`EventLog`] and every service publishes
//! through it (`pool.events.publish(...)`), so no layer imports a higher one to be heard.
//!
//! - **Ring.** The last `capacity` events (a setting, [`DEFAULT_CAPACITY`]) are kept in memory
//!   and in `<POOL>/events.jsonl`, one JSON line each, appended as they happen (a write per
//!   event, fdatasynced with the pool's syncs). When the file holds twice the ring it is
//!   rewritten with the ring alone (temporary file, fsync, rename). On open the file is read
//!   back, a torn last line skipped with a warning, and numbering continues after the last
//!   sequence number: a restart neither repeats nor reuses one.
//! - **Observers** subscribe with the last sequence number they saw; they get what the ring
//!   still holds after it, then live events through a bounded queue. Publishing never waits
//!   for an observer: when an observer's queue is full it is cut off (its queue ends, and it
//!   is told so), so a slow reader can never slow a write that publishes (a PSUE, ENOSPC).

use std::collections::{BTreeMap, VecDeque};
use std::fs::{self, File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::Arc;

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The ring file in the pool directory.
pub const EVENTS_FILE: &str = "events.jsonl";
/// Events kept by default (`fusevold --event-ring N`).
pub const DEFAULT_CAPACITY: usize = 10_000;
/// Live events an observer may have unread before it is cut off.
pub const OBSERVER_QUEUE: usize = 4096;

/// Events published since start of one (object, change).
pub type EventCount = ((String, String), u64);

/// One state change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Pool-wide, from 1, never reused (also across restarts).
    pub seq: u64,
    /// When, RFC 3339 UTC.
    pub time: String,
    /// Kind of object: `volume`, `snapshot`, `pair`, `group`, `pool`, `daemon`.
    pub object: String,
    /// Its name (`VOL@SNAP` for a snapshot, the P-VOL for a pair, the pool directory for
    /// `pool` and `daemon`).
    pub name: String,
    /// What happened: `created`, `deleted`, `state`, `copy-finished`, `suspended` ...
    pub change: String,
    /// Details of the change (a pair's new state and reason, bytes copied, sizes ...).
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub detail: Map<String, Value>,
}

/// What a new observer gets: the backlog from the ring, a notice of events it asked for
/// that the ring no longer holds, and (when following) the live queue.
pub struct Subscription {
    pub backlog: Vec<Arc<Event>>,
    /// `(first, last)` sequence numbers asked for with `since` but already dropped.
    pub dropped: Option<(u64, u64)>,
    pub live: Option<LiveEvents>,
    /// The last sequence number given out when it subscribed (0: none yet).
    pub last_seq: u64,
    /// The oldest sequence number the ring held then (`last_seq + 1` if empty).
    pub first_kept: u64,
}

/// The live part of a subscription.
pub struct LiveEvents {
    pub rx: Receiver<Arc<Event>>,
    cut: Arc<AtomicBool>,
}

impl LiveEvents {
    /// The queue ended because this observer fell behind (not because the daemon stops).
    pub fn was_cut_off(&self) -> bool {
        self.cut.load(Ordering::Acquire)
    }
}

struct Observer {
    tx: SyncSender<Arc<Event>>,
    cut: Arc<AtomicBool>,
}

struct Inner {
    ring: VecDeque<Arc<Event>>,
    capacity: usize,
    next_seq: u64,
    file: Option<File>,
    lines_in_file: usize,
    dirty: bool,
    observers: Vec<Observer>,
    closed: bool,
    /// Events published since start, by object and change (metrics).
    counts: BTreeMap<(String, String), u64>,
    observers_cut: u64,
}

/// The pool's event log; see the module comment.
pub struct EventLog {
    path: PathBuf,
    inner: Mutex<Inner>,
}

fn now_rfc3339() -> String {
    jiff::Timestamp::now()
        .round(jiff::Unit::Millisecond)
        .map_or_else(|_| jiff::Timestamp::now().to_string(), |t| t.to_string())
}

impl EventLog {
    /// Open (or start) the ring of the pool at `dir`. A file that cannot be read or written
    /// leaves the log in memory only, with a warning: events must never stop the pool.
    pub fn open(dir: &Path) -> EventLog {
        let path = dir.join(EVENTS_FILE);
        let mut ring = VecDeque::new();
        let mut lines = 0;
        match File::open(&path) {
            Ok(f) => {
                for (n, line) in BufReader::new(f).split(b'\n').enumerate() {
                    let Ok(line) = line else { break };
                    lines += 1;
                    match serde_json::from_slice::<Event>(&line) {
                        Ok(ev) => {
                            if ring.back().is_none_or(|b: &Arc<Event>| b.seq < ev.seq) {
                                ring.push_back(Arc::new(ev));
                            }
                        }
                        Err(e) => log::warn!(
                            "{} line {}: skipped an unreadable event ({e})",
                            path.display(),
                            n + 1
                        ),
                    }
                    if ring.len() > DEFAULT_CAPACITY * 4 {
                        ring.pop_front();
                    }
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => log::warn!("{}: cannot read the event ring: {e}", path.display()),
        }
        let next_seq = ring.back().map_or(1, |e| e.seq + 1);
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| log::warn!("{}: events kept in memory only: {e}", path.display()))
            .ok();
        let log = EventLog {
            path,
            inner: Mutex::new(Inner {
                ring,
                capacity: DEFAULT_CAPACITY,
                next_seq,
                file,
                lines_in_file: lines,
                dirty: false,
                observers: Vec::new(),
                closed: false,
                counts: BTreeMap::new(),
                observers_cut: 0,
            }),
        };
        log.set_capacity(DEFAULT_CAPACITY);
        log
    }

    /// A log without a file (unit tests of services built without a pool).
    pub fn in_memory() -> EventLog {
        EventLog {
            path: PathBuf::new(),
            inner: Mutex::new(Inner {
                ring: VecDeque::new(),
                capacity: DEFAULT_CAPACITY,
                next_seq: 1,
                file: None,
                lines_in_file: 0,
                dirty: false,
                observers: Vec::new(),
                closed: false,
                counts: BTreeMap::new(),
                observers_cut: 0,
            }),
        }
    }

    /// Keep at most `n` events (at least 1).
    pub fn set_capacity(&self, n: usize) {
        let mut g = self.inner.lock();
        g.capacity = n.max(1);
        while g.ring.len() > g.capacity {
            g.ring.pop_front();
        }
        if g.lines_in_file > 2 * g.capacity {
            self.compact(&mut g);
        }
    }

    /// The ring's capacity.
    pub fn capacity(&self) -> usize {
        self.inner.lock().capacity
    }

    /// Publish one event; returns its sequence number. Never blocks on an observer.
    pub fn publish(&self, object: &str, name: &str, change: &str, detail: Value) -> u64 {
        let detail = match detail {
            Value::Object(m) => m,
            Value::Null => Map::new(),
            other => {
                let mut m = Map::new();
                m.insert("value".into(), other);
                m
            }
        };
        let mut g = self.inner.lock();
        let ev = Arc::new(Event {
            seq: g.next_seq,
            time: now_rfc3339(),
            object: object.into(),
            name: name.into(),
            change: change.into(),
            detail,
        });
        g.next_seq += 1;
        log::info!(
            "event {}: {} {} {} {}",
            ev.seq,
            ev.object,
            ev.name,
            ev.change,
            Value::Object(ev.detail.clone())
        );
        *g.counts
            .entry((ev.object.clone(), ev.change.clone()))
            .or_default() += 1;
        g.ring.push_back(ev.clone());
        while g.ring.len() > g.capacity {
            g.ring.pop_front();
        }
        self.append(&mut g, &ev);
        let mut cut = 0;
        g.observers.retain(|o| match o.tx.try_send(ev.clone()) {
            Ok(()) => true,
            Err(TrySendError::Full(_)) => {
                o.cut.store(true, Ordering::Release);
                cut += 1;
                false
            }
            Err(TrySendError::Disconnected(_)) => false,
        });
        g.observers_cut += cut;
        ev.seq
    }

    fn append(&self, g: &mut Inner, ev: &Event) {
        let Some(f) = g.file.as_mut() else { return };
        let mut line = match serde_json::to_vec(ev) {
            Ok(l) => l,
            Err(e) => {
                log::warn!("cannot encode event {}: {e}", ev.seq);
                return;
            }
        };
        line.push(b'\n');
        if let Err(e) = f.write_all(&line) {
            log::warn!(
                "{}: cannot append event {}: {e}",
                self.path.display(),
                ev.seq
            );
            return;
        }
        g.lines_in_file += 1;
        g.dirty = true;
        if g.lines_in_file > 2 * g.capacity {
            self.compact(g);
        }
    }

    /// Rewrite the file with the ring alone (temporary file, fsync, rename).
    fn compact(&self, g: &mut Inner) {
        let tmp = self.path.with_extension("jsonl.tmp");
        let res = (|| -> std::io::Result<File> {
            let mut f = File::create(&tmp)?;
            let mut buf = Vec::new();
            for ev in &g.ring {
                serde_json::to_writer(&mut buf, ev.as_ref()).map_err(std::io::Error::other)?;
                buf.push(b'\n');
            }
            f.write_all(&buf)?;
            f.sync_data()?;
            fs::rename(&tmp, &self.path)?;
            if let Some(d) = self.path.parent() {
                File::open(d)?.sync_all()?;
            }
            OpenOptions::new().append(true).open(&self.path)
        })();
        match res {
            Ok(f) => {
                g.file = Some(f);
                g.lines_in_file = g.ring.len();
                g.dirty = false;
            }
            Err(e) => log::warn!(
                "{}: cannot compact the event ring: {e}",
                self.path.display()
            ),
        }
    }

    /// Make the events appended so far durable (called by the pool's sync).
    pub fn sync(&self) {
        let mut g = self.inner.lock();
        if !g.dirty {
            return;
        }
        g.dirty = false;
        if let Some(f) = &g.file {
            if let Err(e) = f.sync_data() {
                log::warn!("{}: fdatasync: {e}", self.path.display());
            }
        }
    }

    /// Events after `since` (all in the ring when `None`), and live ones when `follow`.
    pub fn subscribe(&self, since: Option<u64>, follow: bool) -> Subscription {
        let mut g = self.inner.lock();
        let after = since.unwrap_or(0);
        let backlog: Vec<Arc<Event>> = g.ring.iter().filter(|e| e.seq > after).cloned().collect();
        let first_kept = g.ring.front().map_or(g.next_seq, |e| e.seq);
        let dropped = match since {
            Some(s) if s.saturating_add(1) < first_kept => Some((s + 1, first_kept - 1)),
            _ => None,
        };
        let live = (follow && !g.closed).then(|| {
            let (tx, rx) = sync_channel(OBSERVER_QUEUE);
            let cut = Arc::new(AtomicBool::new(false));
            g.observers.push(Observer {
                tx,
                cut: cut.clone(),
            });
            LiveEvents { rx, cut }
        });
        Subscription {
            backlog,
            dropped,
            live,
            last_seq: g.next_seq - 1,
            first_kept,
        }
    }

    /// The last sequence number given out (0: none yet).
    pub fn last_seq(&self) -> u64 {
        self.inner.lock().next_seq - 1
    }

    /// Events published since start by (object, change), and observers cut off.
    pub fn counts(&self) -> (Vec<EventCount>, u64) {
        let g = self.inner.lock();
        (
            g.counts.iter().map(|(k, v)| (k.clone(), *v)).collect(),
            g.observers_cut,
        )
    }

    /// End every live subscription (the daemon stops); later ones get no live part.
    pub fn close(&self) {
        let mut g = self.inner.lock();
        g.closed = true;
        g.observers.clear();
        drop(g);
        self.sync();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn ring_survives_reopen_and_numbering_continues() {
        let dir = tempfile::tempdir().unwrap();
        let log = EventLog::open(dir.path());
        log.set_capacity(3);
        for i in 0..5 {
            log.publish("volume", &format!("v{i}"), "created", json!({"size": i}));
        }
        drop(log);
        let log = EventLog::open(dir.path());
        log.set_capacity(3);
        let sub = log.subscribe(None, false);
        let seqs: Vec<u64> = sub.backlog.iter().map(|e| e.seq).collect();
        assert_eq!(seqs, vec![3, 4, 5]);
        assert_eq!(sub.backlog[0].detail["size"], json!(2));
        assert_eq!(log.publish("daemon", "p", "started", Value::Null), 6);
    }

    #[test]
    fn since_continues_exactly_and_reports_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let log = EventLog::open(dir.path());
        log.set_capacity(4);
        for _ in 0..10 {
            log.publish("pool", "p", "x", Value::Null);
        }
        let sub = log.subscribe(Some(8), false);
        assert_eq!(
            sub.backlog.iter().map(|e| e.seq).collect::<Vec<_>>(),
            vec![9, 10]
        );
        assert_eq!(sub.dropped, None);
        let sub = log.subscribe(Some(2), false);
        assert_eq!(sub.dropped, Some((3, 6)));
        assert_eq!(sub.backlog.first().map(|e| e.seq), Some(7));
    }

    #[test]
    fn compaction_keeps_the_file_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let log = EventLog::open(dir.path());
        log.set_capacity(10);
        for _ in 0..100 {
            log.publish("pool", "p", "x", Value::Null);
        }
        let text = fs::read_to_string(dir.path().join(EVENTS_FILE)).unwrap();
        assert!(text.lines().count() <= 20, "{} lines", text.lines().count());
    }

    #[test]
    fn torn_last_line_is_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let log = EventLog::open(dir.path());
        log.publish("pool", "p", "a", Value::Null);
        log.publish("pool", "p", "b", Value::Null);
        drop(log);
        let path = dir.path().join(EVENTS_FILE);
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(b"{\"seq\":3,\"ti").unwrap();
        let log = EventLog::open(dir.path());
        assert_eq!(log.subscribe(None, false).backlog.len(), 2);
        assert_eq!(log.publish("pool", "p", "c", Value::Null), 3);
    }

    #[test]
    fn a_slow_observer_is_cut_off_and_publishing_never_blocks() {
        let dir = tempfile::tempdir().unwrap();
        let log = EventLog::open(dir.path());
        let slow = log.subscribe(None, true).live.unwrap();
        let fast = log.subscribe(None, true).live.unwrap();
        for _ in 0..OBSERVER_QUEUE {
            log.publish("pool", "p", "x", Value::Null);
        }
        // The fast one reads its queue; the slow one does not.
        assert_eq!(fast.rx.try_iter().count(), OBSERVER_QUEUE);
        for _ in 0..10 {
            log.publish("pool", "p", "x", Value::Null);
        }
        assert_eq!(slow.rx.try_iter().count(), OBSERVER_QUEUE);
        assert!(slow.rx.recv().is_err(), "the slow observer's queue ended");
        assert!(slow.was_cut_off());
        assert_eq!(fast.rx.try_iter().count(), 10);
        assert!(!fast.was_cut_off());
        assert_eq!(log.counts().1, 1);
        log.close();
        assert!(fast.rx.recv().is_err());
    }
}
