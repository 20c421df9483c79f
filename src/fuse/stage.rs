//! The I/O stage: a pool of threads that run a FUSE request's data path (read, write, fsync)
//! and send its reply, so the FUSE worker that received the request goes back to `/dev/fuse`
//! for the next one instead of waiting for the array I/O.
//!
//! Why threads and not io_uring: a request's data path is the whole write pipeline of
//! `storage::io` (admissions with their locks and journal record, the extent plan, copy-on-write,
//! the metadata record, the completions), written as ordinary blocking code whose ordering rules
//! hold because each step waits for the one before it. A thread of this stage runs that code
//! unchanged, so every rule (data before the pointer, journal before data, dual write before the
//! acknowledgement) holds as before: the reply is sent only when the pipeline returns. On these
//! 2-CPU machines a thread blocked in `pread` costs nothing but its stack; what costs is a
//! hand-off (a wake-up across CPUs, ~50 µs), so [`Dispatch`] hands a request off only when
//! another one is already in flight (QD1 stays on the worker, with no hand-off at all), or
//! when there is only one FUSE worker (it must stay free to take the next request).
//!
//! Shutdown: dropping the stage (or [`IoStage::drain`]) lets the queued jobs finish and joins
//! the threads, so no request is left half done when the daemon checkpoints the pool.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use parking_lot::{Condvar, Mutex};

type Job = Box<dyn FnOnce() + Send + 'static>;

struct Queue {
    jobs: VecDeque<Job>,
    closed: bool,
}

struct Shared {
    queue: Mutex<Queue>,
    ready: Condvar,
}

/// A fixed pool of I/O threads fed by one queue.
pub struct IoStage {
    shared: Arc<Shared>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

impl IoStage {
    /// Start `n` threads (at least one).
    pub fn start(n: usize) -> std::io::Result<IoStage> {
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue {
                jobs: VecDeque::new(),
                closed: false,
            }),
            ready: Condvar::new(),
        });
        let mut threads = Vec::with_capacity(n.max(1));
        for i in 0..n.max(1) {
            let sh = shared.clone();
            threads.push(
                std::thread::Builder::new()
                    .name(format!("fuse-io-{i}"))
                    .spawn(move || run(&sh))?,
            );
        }
        Ok(IoStage {
            shared,
            threads: Mutex::new(threads),
        })
    }

    /// Queue a job. After `drain` the job runs on the caller's thread (nothing is dropped:
    /// a dropped job would drop its FUSE reply, which answers EIO).
    pub fn submit(&self, job: Job) {
        let mut q = self.shared.queue.lock();
        if q.closed {
            drop(q);
            return job();
        }
        q.jobs.push_back(job);
        drop(q);
        self.shared.ready.notify_one();
    }

    /// Let every queued job finish and stop the threads.
    pub fn drain(&self) {
        self.shared.queue.lock().closed = true;
        self.shared.ready.notify_all();
        for t in self.threads.lock().drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for IoStage {
    fn drop(&mut self) {
        self.drain();
    }
}

fn run(sh: &Shared) {
    loop {
        let job = {
            let mut q = sh.queue.lock();
            loop {
                if let Some(j) = q.jobs.pop_front() {
                    break j;
                }
                if q.closed {
                    return;
                }
                sh.ready.wait(&mut q);
            }
        };
        job();
    }
}

/// Decides, per request, whether the FUSE worker runs it itself or hands it to the stage,
/// and counts the requests in flight.
pub struct Dispatch {
    stage: Option<IoStage>,
    inflight: Arc<AtomicUsize>,
    /// FUSE worker threads. More than one: while one runs a request itself, another takes
    /// the next from the kernel. With one worker nothing runs inline (the next request would
    /// wait in the kernel, where the in-flight count cannot see it); see `runs_inline`.
    workers: usize,
}

/// One request in flight; the count drops when this does (after the reply was sent).
pub struct InFlight(Arc<AtomicUsize>);

/// On an io_uring queue thread (`fusevold --uring`), whether requests of its queue wait
/// behind this one: that thread is the only one taking its queue's requests, so running one
/// inline while others wait would serialize them (at QD16 two queues would mean QD2).
fn ring_backlog() -> bool {
    matches!(fuser::ring_backlog(), Some(n) if n > 0)
}

/// A request counted in, and where it should run.
pub struct Ticket {
    pub token: InFlight,
    /// Run on the thread that received it (nothing else in flight, or no stage).
    pub inline: bool,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Whether a request arriving with `before` others in flight, `answered` of them already
/// answered (destaging on their workers, `storage::destage`), runs on the FUSE worker that
/// received it, with `workers` FUSE workers: only when none of the others is still waiting
/// for its answer, and at least one worker stays free to take the next request from the
/// kernel (so at most `workers - 2` destaging ones are passed over). The answered count is
/// process-wide (one daemon per process).
fn runs_inline(before: usize, answered: usize, workers: usize) -> bool {
    workers > 1 && before <= answered.min(workers.saturating_sub(2))
}

impl Dispatch {
    /// `io_threads == 0`: every request runs on the FUSE worker that received it.
    /// `workers`: the FUSE worker threads that take requests from the kernel.
    pub fn new(io_threads: usize, workers: usize) -> std::io::Result<Dispatch> {
        Ok(Dispatch {
            workers,
            stage: match io_threads {
                0 => None,
                n => Some(IoStage::start(n)?),
            },
            inflight: Arc::new(AtomicUsize::new(0)),
        })
    }

    /// Count a request in; it runs on this thread when no other data request is in flight
    /// (a hand-off would only add a wake-up), else on the stage (`Ticket::inline`). A
    /// journaled write already answered whose data write still runs (`storage::destage`)
    /// does not count: the host is not waiting for it, and at QD1 the next write would
    /// otherwise always be handed off, with a copy of its data.
    pub fn begin(&self) -> Ticket {
        let before = self.inflight.fetch_add(1, Ordering::AcqRel);
        let answered = crate::storage::destaging_after_reply();
        Ticket {
            token: InFlight(self.inflight.clone()),
            inline: self.stage.is_none()
                || (runs_inline(before, answered, self.workers) && !ring_backlog()),
        }
    }

    /// Queue `job` on the stage and return at once (on this thread when there is none).
    pub fn hand_off<F>(&self, t: Ticket, job: F)
    where
        F: FnOnce(InFlight) + Send + 'static,
    {
        let token = t.token;
        match &self.stage {
            Some(stage) => stage.submit(Box::new(move || job(token))),
            None => job(token),
        }
    }

    /// `begin`, then run `job` here or on the stage as the ticket says.
    pub fn run<F>(&self, job: F)
    where
        F: FnOnce(InFlight) + Send + 'static,
    {
        let t = self.begin();
        if t.inline {
            job(t.token)
        } else {
            self.hand_off(t, job)
        }
    }

    /// Finish every queued request and stop the stage's threads.
    pub fn drain(&self) {
        if let Some(s) = &self.stage {
            s.drain();
        }
    }

    /// Requests in flight right now (received, not yet answered).
    pub fn in_flight(&self) -> usize {
        self.inflight.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;
    use std::time::Duration;

    #[test]
    fn an_answered_write_still_destaging_does_not_send_the_next_to_the_stage() {
        // QD1 without a journal: nothing else in flight, inline.
        assert!(runs_inline(0, 0, 4));
        // QD1 journaled: the previous write is answered and destages on its worker.
        assert!(runs_inline(1, 1, 4));
        assert!(runs_inline(2, 2, 4));
        // One waiting for its answer besides the destaging one: the stage.
        assert!(!runs_inline(2, 1, 4));
        assert!(!runs_inline(1, 0, 4));
        // A worker stays free for the kernel: three destaging of four workers, the stage.
        assert!(!runs_inline(3, 3, 4));
        assert!(!runs_inline(1, 1, 2));
        assert!(runs_inline(0, 0, 2));
        // One FUSE worker: never inline (the next request would wait in the kernel).
        assert!(!runs_inline(0, 0, 1));
    }

    #[test]
    fn a_blocked_job_does_not_hold_up_the_next() {
        let d = Dispatch::new(4, 4).unwrap();
        let (gate_tx, gate_rx) = mpsc::channel::<()>();
        let (done_tx, done_rx) = mpsc::channel::<u32>();
        // The first request blocks on its "disk"; it runs on the stage only if another is in
        // flight, so hold one token open to force the hand-off.
        let hold = {
            let (tx, rx) = mpsc::channel();
            d.run(move |t| tx.send(t).unwrap());
            rx.recv().unwrap()
        };
        let tx1 = done_tx.clone();
        d.run(move |_t| {
            gate_rx.recv().unwrap();
            tx1.send(1).unwrap();
        });
        let tx2 = done_tx.clone();
        d.run(move |_t| tx2.send(2).unwrap());
        // The second finishes while the first still waits.
        assert_eq!(done_rx.recv_timeout(Duration::from_secs(5)).unwrap(), 2);
        gate_tx.send(()).unwrap();
        assert_eq!(done_rx.recv_timeout(Duration::from_secs(5)).unwrap(), 1);
        drop(hold);
        d.drain();
        assert_eq!(d.in_flight(), 0);
    }

    #[test]
    fn alone_runs_inline_and_drain_finishes_queued_jobs() {
        let d = Dispatch::new(2, 4).unwrap();
        let here = std::thread::current().id();
        let (tx, rx) = mpsc::channel();
        d.run(move |_t| tx.send(std::thread::current().id()).unwrap());
        assert_eq!(rx.recv().unwrap(), here);

        let count = Arc::new(AtomicUsize::new(0));
        let hold = {
            let (tx, rx) = mpsc::channel();
            d.run(move |t| tx.send(t).unwrap());
            rx.recv().unwrap()
        };
        for _ in 0..100 {
            let c = count.clone();
            d.run(move |_t| {
                std::thread::sleep(Duration::from_micros(100));
                c.fetch_add(1, Ordering::SeqCst);
            });
        }
        d.drain();
        assert_eq!(count.load(Ordering::SeqCst), 100);
        // After the drain a request still runs (on the caller), never dropped.
        let c = count.clone();
        d.run(move |_t| {
            c.fetch_add(1, Ordering::SeqCst);
        });
        assert_eq!(count.load(Ordering::SeqCst), 101);
        drop(hold);
    }
}

#[cfg(test)]
mod one_worker {
    use super::*;

    #[test]
    fn with_one_worker_nothing_runs_inline() {
        let d = Dispatch::new(2, 1).unwrap();
        assert!(!d.begin().inline);
        let d = Dispatch::new(0, 1).unwrap();
        assert!(d.begin().inline, "no stage: everything inline");
        let d = Dispatch::new(2, 2).unwrap();
        let first = d.begin();
        assert!(first.inline);
        assert!(
            !d.begin().inline,
            "a second request in flight goes to the stage"
        );
    }
}
