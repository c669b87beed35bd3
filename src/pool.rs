//! The worker pool behind ThreadingMixIn: reusable Python threads fed by a
//! crossbeam channel. Each worker is a `threading.Thread` (started by the
//! pool's `spawn` callable) running a short Python loop around
//! `Worker.take()`, which waits for work with the GIL released. The pool
//! grows whenever a request would otherwise wait (so concurrency is never
//! lower than one thread per request) and idle workers retire after
//! `idle_timeout`.

use crate::locks::{Guard, Lock};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar};
use std::time::Duration;

use crossbeam_channel::{unbounded, Receiver, RecvTimeoutError, Sender};
use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyTuple;
use socket2::Socket;

use crate::detach::detach;
use crate::errors::os_error;
use crate::sys::{self, RawSock};

/// How long a submit waiting at the bound goes without looking for signals.
const SIGNAL_SLICE: Duration = Duration::from_millis(100);

/// `func(*args)`.
type Job = (Py<PyAny>, Py<PyTuple>);

/// The pool's bookkeeping. `idle` counts workers minus unfinished jobs: a
/// job that finds it at 0 gets a new worker, so no job waits for another to
/// finish, unless `max` workers already exist.
#[derive(Default)]
struct Counts {
    workers: usize,
    idle: usize,
    max: Option<usize>,
}

impl Counts {
    fn at_bound(&self) -> bool {
        self.idle == 0 && self.max.is_some_and(|max| self.workers >= max)
    }

    /// Claim a worker for a job: Some(false) an idle one, Some(true) a new
    /// one (counted already), None at the bound.
    fn claim(&mut self) -> Option<bool> {
        if self.idle > 0 {
            self.idle -= 1;
            Some(false)
        } else if self.at_bound() {
            None
        } else {
            self.workers += 1;
            Some(true)
        }
    }

    /// A worker finished its job; true if that freed a pool at its bound.
    fn job_done(&mut self) -> bool {
        let freed = self.at_bound();
        self.idle += 1;
        freed
    }

    /// A counted worker is gone without finishing a job (it could not
    /// start, or its job raised); true if that freed a pool at its bound.
    fn worker_lost(&mut self) -> bool {
        let freed = self.at_bound();
        self.workers = self.workers.saturating_sub(1);
        freed
    }

    /// An idle worker timed out: it leaves if an idle slot is unclaimed
    /// (one may be claimed by a job on its way).
    fn retire_idle(&mut self) -> bool {
        if self.idle == 0 {
            return false;
        }
        self.idle -= 1;
        self.workers -= 1;
        true
    }

    /// An idle worker leaves because the queue closed.
    fn leave_idle(&mut self) {
        self.idle = self.idle.saturating_sub(1);
        self.workers = self.workers.saturating_sub(1);
    }
}

struct Shared {
    jobs: Receiver<Job>,
    counts: Lock<Counts>,
    /// Signalled whenever a worker becomes free.
    freed: Condvar,
    idle_timeout: Duration,
    /// A byte arrives on the first of these when a worker of a pool at its
    /// bound becomes free, waking a serve loop that stopped accepting.
    free_slots: Option<(Socket, Socket)>,
}

impl Shared {
    fn counts(&self) -> Guard<'_, Counts> {
        self.counts.lock()
    }

    /// A worker became free (or left) while the pool was at its bound.
    fn announce_free_slot(&self) {
        self.freed.notify_one();
        if let Some((_, writer)) = &self.free_slots {
            // A full socket buffer already holds a wake-up.
            let _ = writer.send(&[1]);
        }
    }
}

/// What became of a job handed to `submit()`.
#[derive(Debug, PartialEq)]
pub enum Submitted {
    Queued,
    /// Every worker busy and no more may start (only when not waiting).
    AtBound,
    /// The pool was closed (`server_close()`, interpreter exit).
    Closed,
}

/// How a request gets a thread: `submit()` claims an idle worker for the
/// job, or counts a new one and calls `spawn(worker)` to start its thread
/// (un-counting it if that raises), then queues the job; at the bound it
/// waits for a worker to free, or reports `AtBound`. Workers wait on the
/// queue with the GIL released and retire after `idle_timeout`.
#[pyclass(frozen, weakref, module = "socketserver_rs._core")]
pub struct WorkerPool {
    shared: Arc<Shared>,
    sender: Lock<Option<Sender<Job>>>,
    /// `spawn(worker)` starts a thread running `worker` (a `Worker`).
    spawn: Py<PyAny>,
}

#[pymethods]
impl WorkerPool {
    /// `max_workers`: at most that many workers (and requests in flight).
    #[new]
    #[pyo3(signature = (spawn, idle_timeout = 10.0, max_workers = None))]
    fn new(spawn: Py<PyAny>, idle_timeout: f64, max_workers: Option<usize>) -> PyResult<Self> {
        let idle_timeout = Duration::try_from_secs_f64(idle_timeout)
            .ok()
            .filter(|timeout| !timeout.is_zero())
            .ok_or_else(|| {
                PyValueError::new_err(format!(
                    "idle_timeout must be a positive number of seconds, not {idle_timeout}"
                ))
            })?;
        let free_slots = match max_workers {
            Some(_) => {
                let (reader, writer) = sys::socket_pair().map_err(os_error)?;
                reader.set_nonblocking(true).map_err(os_error)?;
                writer.set_nonblocking(true).map_err(os_error)?;
                Some((reader, writer))
            }
            None => None,
        };
        let (sender, jobs) = unbounded();
        Ok(Self {
            shared: Arc::new(Shared {
                jobs,
                counts: Lock::new(Counts {
                    max: max_workers.map(|max| max.max(1)),
                    ..Counts::default()
                }),
                freed: Condvar::new(),
                idle_timeout,
                free_slots,
            }),
            sender: Lock::new(Some(sender)),
            spawn,
        })
    }

    /// Run `func(*args)` on a worker, starting one if none is idle; at the
    /// bound, wait (GIL released) for a worker to free. RuntimeError once
    /// the pool is closed; whatever `spawn` raised if a thread could not
    /// start (the job is then not queued).
    #[pyo3(name = "submit")]
    fn submit_waiting(&self, py: Python<'_>, func: Py<PyAny>, args: Py<PyTuple>) -> PyResult<()> {
        match self.submit(py, func, args, true)? {
            Submitted::Queued => Ok(()),
            Submitted::AtBound | Submitted::Closed => Err(PyRuntimeError::new_err(
                "the server's worker pool is closed",
            )),
        }
    }

    /// Whether every worker is busy and no more may start.
    #[getter]
    pub fn is_full(&self) -> bool {
        self.shared.counts().at_bound()
    }

    /// The bound on workers, if any.
    #[getter]
    fn max_workers(&self) -> Option<usize> {
        self.shared.counts().max
    }

    /// Accept no more work; workers leave once the queue is empty.
    fn close(&self) {
        self.lock_sender().take();
    }

    /// Number of workers, busy or idle.
    #[getter]
    fn size(&self) -> usize {
        self.shared.counts().workers
    }

    /// Number of workers waiting for a job.
    #[getter]
    fn idle(&self) -> usize {
        self.shared.counts().idle
    }
}

impl WorkerPool {
    /// Queue `func(*args)` for a worker, claiming an idle one or starting a
    /// new one; at the bound, wait for a free worker if `wait`, else
    /// report `AtBound` with nothing queued.
    pub fn submit(
        &self,
        py: Python<'_>,
        func: Py<PyAny>,
        args: Py<PyTuple>,
        wait: bool,
    ) -> PyResult<Submitted> {
        if self.lock_sender().is_none() {
            return Ok(Submitted::Closed);
        }
        let claimed = loop {
            if let Some(new_worker) = self.shared.counts().claim() {
                break new_worker;
            }
            if !wait {
                return Ok(Submitted::AtBound);
            }
            let shared = &self.shared;
            detach(py, || {
                let counts = shared.counts();
                let _ = counts
                    .wait_timeout_while(&shared.freed, SIGNAL_SLICE, |counts| counts.at_bound());
            });
            py.check_signals()?;
        };
        if claimed {
            let worker = Worker {
                shared: Arc::clone(&self.shared),
                busy: AtomicBool::new(false),
            };
            if let Err(err) = crate::pycall::call(self.spawn.bind(py), (worker,)) {
                if self.shared.counts().worker_lost() {
                    self.shared.announce_free_slot();
                }
                return Err(err);
            }
        }
        // A job the queue refuses is dropped once unlocked: freeing it may
        // run Python code (a socket's finaliser).
        let refused = match &*self.lock_sender() {
            Some(sender) => sender.send((func, args)).err(),
            None => return Ok(Submitted::Closed),
        };
        // A worker that finds the queue closed leaves, and the counts no
        // longer matter: the pool takes no more work.
        Ok(match refused {
            None => Submitted::Queued,
            Some(_) => Submitted::Closed,
        })
    }

    /// Readable when a worker of a pool at its bound became free (`NO_SOCKET`:
    /// no bound).
    pub fn free_slot_fd(&self) -> RawSock {
        self.shared
            .free_slots
            .as_ref()
            .map_or(sys::NO_SOCKET, |(reader, _)| sys::as_raw(reader))
    }

    pub fn drain_free_slots(&self) {
        if let Some((reader, _)) = &self.shared.free_slots {
            let mut sink = [std::mem::MaybeUninit::<u8>::uninit(); 64];
            while matches!(reader.recv(&mut sink), Ok(n) if n > 0) {}
        }
    }

    fn lock_sender(&self) -> Guard<'_, Option<Sender<Job>>> {
        self.sender.lock()
    }
}

/// One worker thread's view of the pool: the queue and counts, not the
/// pool, so that dropping the pool closes the queue and lets workers leave.
#[pyclass(frozen, module = "socketserver_rs._core")]
pub struct Worker {
    shared: Arc<Shared>,
    /// Running a job taken from the queue.
    busy: AtomicBool,
}

#[pymethods]
impl Worker {
    /// The next job `(func, args)`, waiting with the GIL released; None when
    /// the worker should leave (idle too long, or the pool closed).
    fn take(&self, py: Python<'_>) -> Option<Job> {
        if self.busy.swap(false, Ordering::AcqRel) && self.shared.counts().job_done() {
            self.shared.announce_free_slot();
        }
        loop {
            let shared = &self.shared;
            match detach(py, || shared.jobs.recv_timeout(shared.idle_timeout)) {
                Ok(job) => {
                    self.busy.store(true, Ordering::Release);
                    return Some(job);
                }
                Err(RecvTimeoutError::Timeout) => {
                    if shared.counts().retire_idle() {
                        return None;
                    }
                }
                Err(RecvTimeoutError::Disconnected) => {
                    shared.counts().leave_idle();
                    return None;
                }
            }
        }
    }

    /// The thread is ending; if a job escaped with an exception, the worker
    /// that ran it is gone.
    fn exit(&self) {
        if self.busy.swap(false, Ordering::AcqRel) && self.shared.counts().worker_lost() {
            self.shared.announce_free_slot();
        }
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<WorkerPool>()?;
    m.add_class::<Worker>()
}

#[cfg(test)]
mod tests {
    use super::Counts;

    fn bounded(max: usize) -> Counts {
        Counts {
            max: Some(max),
            ..Counts::default()
        }
    }

    #[test]
    fn a_job_gets_a_new_worker_when_none_is_idle() {
        let mut counts = Counts::default();
        assert_eq!(counts.claim(), Some(true));
        assert_eq!(counts.claim(), Some(true));
        assert_eq!((counts.workers, counts.idle), (2, 0));
    }

    #[test]
    fn a_finished_worker_is_reused() {
        let mut counts = Counts::default();
        assert_eq!(counts.claim(), Some(true));
        counts.job_done();
        assert_eq!(counts.claim(), Some(false));
        assert_eq!((counts.workers, counts.idle), (1, 0));
    }

    #[test]
    fn the_bound_is_never_exceeded_and_frees_on_job_done() {
        let mut counts = bounded(2);
        assert_eq!(counts.claim(), Some(true));
        assert_eq!(counts.claim(), Some(true));
        assert!(counts.at_bound());
        assert_eq!(counts.claim(), None);
        assert!(counts.job_done(), "finishing at the bound frees a slot");
        assert!(!counts.at_bound());
        assert_eq!(counts.claim(), Some(false));
        assert_eq!(counts.workers, 2);
    }

    #[test]
    fn a_lost_worker_frees_its_place() {
        let mut counts = bounded(1);
        assert_eq!(counts.claim(), Some(true));
        assert!(counts.worker_lost());
        assert_eq!((counts.workers, counts.idle), (0, 0));
        assert_eq!(counts.claim(), Some(true));
    }

    #[test]
    fn an_idle_worker_retires_only_if_its_slot_is_unclaimed() {
        let mut counts = Counts::default();
        assert_eq!(counts.claim(), Some(true));
        counts.job_done();
        assert_eq!(
            counts.claim(),
            Some(false),
            "a job is on its way to the idle worker"
        );
        assert!(!counts.retire_idle());
        counts.job_done();
        assert!(counts.retire_idle());
        assert_eq!((counts.workers, counts.idle), (0, 0));
    }

    #[test]
    fn idle_workers_leave_when_the_queue_closes() {
        let mut counts = Counts::default();
        for _ in 0..3 {
            assert_eq!(counts.claim(), Some(true));
        }
        for _ in 0..3 {
            counts.job_done();
        }
        for _ in 0..3 {
            counts.leave_idle();
        }
        assert_eq!((counts.workers, counts.idle), (0, 0));
    }
}
