//! The worker pool behind ThreadingMixIn: reusable Python threads fed by a
//! crossbeam channel. A worker enters the interpreter once for its life and
//! waits for work with the GIL released; the pool grows whenever a request
//! would otherwise wait (so concurrency is never lower than one thread per
//! request) and idle workers retire after `idle_timeout`.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use crossbeam_channel::{unbounded, Receiver, RecvTimeoutError, Sender};
use pyo3::exceptions::PyRuntimeError;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyList, PyTuple};

use crate::dispatch::run_in_worker;

enum Job {
    /// `func(*args)`: the faithful path (`process_request_thread`).
    Call { func: Py<PyAny>, args: Py<PyTuple> },
    /// A request for `RequestHandlerClass`: the fast path.
    Request {
        server: Py<PyAny>,
        request: Py<PyAny>,
        address: Py<PyAny>,
    },
}

impl Job {
    fn run(self, py: Python<'_>) -> PyResult<()> {
        match self {
            Job::Call { func, args } => func.bind(py).call1(args.bind(py)).map(drop),
            Job::Request {
                server,
                request,
                address,
            } => run_in_worker(py, server.bind(py), request.bind(py), address.bind(py)),
        }
    }
}

/// `idle` counts workers minus unfinished jobs: a submit that finds it at 0
/// starts a worker, so no job ever waits for another to finish.
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
    daemon: bool,
    name: String,
    started: AtomicUsize,
}

/// What a worker thread holds: the queue and counts, not the pool, so that
/// dropping the pool closes the queue and lets its workers leave.
#[pyclass(frozen, module = "socketserver_rs._core")]
struct Worker {
    shared: Arc<Shared>,
}

#[pymethods]
impl WorkerPool {
    #[new]
    #[pyo3(signature = (daemon, name, idle_timeout = 10.0))]
    fn new(daemon: bool, name: String, idle_timeout: f64) -> Self {
        let (sender, jobs) = unbounded();
        Self {
            shared: Arc::new(Shared {
                jobs,
                counts: Mutex::new(Counts::default()),
                idle_timeout: Duration::from_secs_f64(idle_timeout.max(0.001)),
            }),
            sender: Mutex::new(Some(sender)),
            threads: Mutex::new(Vec::new()),
            daemon,
            name,
            started: AtomicUsize::new(0),
        }
    }

    /// Run `func(*args)` on a worker.
    fn submit(&self, py: Python<'_>, func: Py<PyAny>, args: Py<PyTuple>) -> PyResult<()> {
        self.submit_job(py, Job::Call { func, args })
    }

    /// Accept no more work; workers leave once the queue is empty.
    fn close(&self) {
        self.sender
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
            .take();
    }

    /// Close, then wait for every worker thread to finish its work and leave.
    fn join(&self, py: Python<'_>) -> PyResult<()> {
        self.close();
        let threads = std::mem::take(&mut *self.lock_threads());
        let current = current_thread(py)?;
        for thread in threads {
            let thread = thread.bind(py);
            if !thread.is(&current) {
                thread.call_method0(intern!(py, "join"))?;
            }
        }
        Ok(())
    }

    /// The live worker threads.
    fn threads<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let mut threads = self.lock_threads();
        prune_finished(py, &mut threads)?;
        PyList::new(py, threads.iter().map(|t| t.bind(py)))
    }

    /// Number of workers, busy or idle.
    #[getter]
    fn size(&self) -> usize {
        self.shared.counts().workers
    }
}

impl WorkerPool {
    /// Queue a request for the fast path's `run_in_worker`.
    pub fn submit_request(
        &self,
        py: Python<'_>,
        server: &Bound<'_, PyAny>,
        request: &Bound<'_, PyAny>,
        address: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        let job = Job::Request {
            server: server.clone().unbind(),
            request: request.clone().unbind(),
            address: address.clone().unbind(),
        };
        self.submit_job(py, job)
    }

    fn submit_job(&self, py: Python<'_>, job: Job) -> PyResult<()> {
        let Some(sender) = self
            .sender
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
            .clone()
        else {
            return Err(PyRuntimeError::new_err(
                "the server's worker pool is closed",
            ));
        };
        let needs_worker = {
            let mut counts = self.shared.counts();
            if counts.idle > 0 {
                counts.idle -= 1;
                false
            } else {
                counts.workers += 1;
                true
            }
        };
        if needs_worker {
            if let Err(err) = self.start_worker(py) {
                self.shared.counts().workers -= 1;
                return Err(err);
            }
        }
        // The receiving end lives in `shared`, which we hold: send cannot fail.
        let _ = sender.send(job);
        Ok(())
    }

    fn start_worker(&self, py: Python<'_>) -> PyResult<()> {
        static THREAD: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
        let thread_class = THREAD.import(py, "threading", "Thread")?;
        let number = self.started.fetch_add(1, Ordering::Relaxed) + 1;
        let worker = Py::new(
            py,
            Worker {
                shared: Arc::clone(&self.shared),
            },
        )?;
        let kwargs = PyDict::new(py);
        kwargs.set_item("target", wrap_pyfunction!(worker_main, py)?)?;
        kwargs.set_item("args", (worker,))?;
        kwargs.set_item("name", format!("{}-worker-{number}", self.name))?;
        kwargs.set_item("daemon", self.daemon)?;
        let thread = thread_class.call((), Some(&kwargs))?;
        thread.call_method0(intern!(py, "start"))?;
        let mut threads = self.lock_threads();
        prune_finished(py, &mut threads)?;
        threads.push(thread.unbind());
        Ok(())
    }

    fn lock_threads(&self) -> MutexGuard<'_, Vec<Py<PyAny>>> {
        self.threads
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }
}

fn prune_finished(py: Python<'_>, threads: &mut Vec<Py<PyAny>>) -> PyResult<()> {
    let mut alive = Vec::with_capacity(threads.len());
    for thread in threads.drain(..) {
        if thread
            .bind(py)
            .call_method0(intern!(py, "is_alive"))?
            .is_truthy()?
        {
            alive.push(thread);
        }
    }
    *threads = alive;
    Ok(())
}

fn current_thread(py: Python<'_>) -> PyResult<Bound<'_, PyAny>> {
    static CURRENT: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
    CURRENT.import(py, "threading", "current_thread")?.call0()
}

/// The body of a worker thread. An exception a job lets escape (as
/// `process_request_thread` does with anything but Exception) ends this
/// worker and goes to `threading.excepthook`, as it would end the request's
/// own thread in the standard library.
#[pyfunction]
fn worker_main(py: Python<'_>, worker: &Bound<'_, Worker>) -> PyResult<()> {
    let shared = Arc::clone(&worker.get().shared);
    loop {
        match py.detach(|| shared.jobs.recv_timeout(shared.idle_timeout)) {
            Ok(job) => {
                let outcome = job.run(py);
                let mut counts = shared.counts();
                match outcome {
                    Ok(()) => counts.idle += 1,
                    Err(err) => {
                        counts.workers -= 1;
                        return Err(err);
                    }
                }
            }
            Err(RecvTimeoutError::Timeout) => {
                let mut counts = shared.counts();
                if counts.idle > 0 {
                    counts.idle -= 1;
                    counts.workers -= 1;
                    return Ok(());
                }
            }
            Err(RecvTimeoutError::Disconnected) => {
                let mut counts = shared.counts();
                counts.idle = counts.idle.saturating_sub(1);
                counts.workers = counts.workers.saturating_sub(1);
                return Ok(());
            }
        }
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<WorkerPool>()
}
