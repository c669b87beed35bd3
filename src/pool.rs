//! The worker pool behind ThreadingMixIn: reusable Python threads fed by a
//! crossbeam channel. Each worker is a `threading.Thread` running a short
//! Python loop around `Worker.take()`, which waits for work with the GIL
//! released. The pool grows whenever a request would otherwise wait (so
//! concurrency is never lower than one thread per request) and idle workers
//! retire after `idle_timeout`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use crossbeam_channel::{unbounded, Receiver, RecvTimeoutError, Sender};
use pyo3::exceptions::PyRuntimeError;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyList, PyTuple};

use crate::detach::detach;

/// `func(*args)`.
type Job = (Py<PyAny>, Py<PyTuple>);

/// `idle` counts workers minus unfinished jobs: a submit that finds it at 0
/// needs a new worker, so no job ever waits for another to finish.
#[derive(Default)]
struct Counts {
    workers: usize,
    idle: usize,
}

struct Shared {
    jobs: Receiver<Job>,
    counts: Mutex<Counts>,
    idle_timeout: Duration,
}

impl Shared {
    fn counts(&self) -> MutexGuard<'_, Counts> {
        self.counts
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }
}

#[pyclass(frozen, weakref, module = "socketserver_rs._core")]
pub struct WorkerPool {
    shared: Arc<Shared>,
    sender: Mutex<Option<Sender<Job>>>,
    threads: Mutex<Vec<Py<PyAny>>>,
}

#[pymethods]
impl WorkerPool {
    #[new]
    #[pyo3(signature = (idle_timeout = 10.0))]
    fn new(idle_timeout: f64) -> Self {
        let (sender, jobs) = unbounded();
        Self {
            shared: Arc::new(Shared {
                jobs,
                counts: Mutex::new(Counts::default()),
                idle_timeout: Duration::from_secs_f64(idle_timeout.max(0.001)),
            }),
            sender: Mutex::new(Some(sender)),
            threads: Mutex::new(Vec::new()),
        }
    }

    /// Claim a worker for one more job: False when an idle one will take
    /// it; True when none is free and the caller must start a new worker
    /// (already counted: call `cancel_worker()` if starting it fails).
    pub fn needs_worker(&self) -> bool {
        let mut counts = self.shared.counts();
        if counts.idle > 0 {
            counts.idle -= 1;
            false
        } else {
            counts.workers += 1;
            true
        }
    }

    /// A worker counted by `needs_worker()` could not be started.
    fn cancel_worker(&self) {
        let mut counts = self.shared.counts();
        counts.workers = counts.workers.saturating_sub(1);
    }

    /// Queue `func(*args)`; a worker was claimed for it with `needs_worker()`.
    fn submit(&self, func: Py<PyAny>, args: Py<PyTuple>) -> PyResult<()> {
        match &*self.lock_sender() {
            Some(sender) => {
                // The receiving end lives in `shared`, which we hold.
                let _ = sender.send((func, args));
                Ok(())
            }
            None => Err(PyRuntimeError::new_err(
                "the server's worker pool is closed",
            )),
        }
    }

    /// The handle a new worker thread runs with (claimed by `needs_worker()`).
    fn worker(&self) -> Worker {
        Worker {
            shared: Arc::clone(&self.shared),
            busy: AtomicBool::new(true),
        }
    }

    /// Record a worker's `threading.Thread`, forgetting finished ones.
    fn add_thread(&self, py: Python<'_>, thread: Py<PyAny>) -> PyResult<()> {
        let mut threads = self.lock_threads();
        let mut alive = Vec::with_capacity(threads.len() + 1);
        for known in threads.drain(..) {
            if known
                .bind(py)
                .call_method0(intern!(py, "is_alive"))?
                .is_truthy()?
            {
                alive.push(known);
            }
        }
        alive.push(thread);
        *threads = alive;
        Ok(())
    }

    /// Accept no more work; workers leave once the queue is empty.
    fn close(&self) {
        self.lock_sender().take();
    }

    /// The worker threads started and not yet finished.
    fn threads<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let threads = self.lock_threads();
        let alive = PyList::empty(py);
        for thread in threads.iter() {
            let thread = thread.bind(py);
            if thread.call_method0(intern!(py, "is_alive"))?.is_truthy()? {
                alive.append(thread)?;
            }
        }
        Ok(alive)
    }

    /// Number of workers, busy or idle.
    #[getter]
    fn size(&self) -> usize {
        self.shared.counts().workers
    }
}

impl WorkerPool {
    /// Queue a job from Rust (the fast path); a worker was claimed for it.
    pub fn put(&self, func: Py<PyAny>, args: Py<PyTuple>) {
        if let Some(sender) = &*self.lock_sender() {
            let _ = sender.send((func, args));
        }
    }

    fn lock_sender(&self) -> MutexGuard<'_, Option<Sender<Job>>> {
        self.sender
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    fn lock_threads(&self) -> MutexGuard<'_, Vec<Py<PyAny>>> {
        self.threads
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }
}

/// One worker thread's view of the pool: the queue and counts, not the
/// pool, so that dropping the pool closes the queue and lets workers leave.
#[pyclass(frozen, module = "socketserver_rs._core")]
pub struct Worker {
    shared: Arc<Shared>,
    /// Running a job (a new worker starts with the job it was claimed for).
    busy: AtomicBool,
}

#[pymethods]
impl Worker {
    /// The next job `(func, args)`, waiting with the GIL released; None when
    /// the worker should leave (idle too long, or the pool closed).
    fn take(&self, py: Python<'_>) -> Option<Job> {
        if self.busy.swap(false, Ordering::AcqRel) {
            self.shared.counts().idle += 1;
        }
        loop {
            let shared = &self.shared;
            match detach(py, || shared.jobs.recv_timeout(shared.idle_timeout)) {
                Ok(job) => {
                    self.busy.store(true, Ordering::Release);
                    return Some(job);
                }
                Err(RecvTimeoutError::Timeout) => {
                    let mut counts = shared.counts();
                    // Every idle slot may be claimed by a job on its way.
                    if counts.idle > 0 {
                        counts.idle -= 1;
                        counts.workers -= 1;
                        return None;
                    }
                }
                Err(RecvTimeoutError::Disconnected) => {
                    let mut counts = shared.counts();
                    counts.idle = counts.idle.saturating_sub(1);
                    counts.workers = counts.workers.saturating_sub(1);
                    return None;
                }
            }
        }
    }

    /// The thread is ending; if a job escaped with an exception, the worker
    /// that ran it is gone.
    fn exit(&self) {
        if self.busy.swap(false, Ordering::AcqRel) {
            let mut counts = self.shared.counts();
            counts.workers = counts.workers.saturating_sub(1);
        }
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<WorkerPool>()?;
    m.add_class::<Worker>()
}
