//! A server's live counters, kept with relaxed atomics: cheap enough to be
//! always on. `server.stats()` reads them.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use pyo3::prelude::*;
use pyo3::types::PyDict;

/// Bytes through a server's connections, shared with their rfile/wfile.
#[derive(Default)]
pub struct IoCounters {
    received: AtomicU64,
    sent: AtomicU64,
}

impl IoCounters {
    pub fn received(&self, n: usize) {
        self.received.fetch_add(n as u64, Ordering::Relaxed);
    }

    pub fn sent(&self, n: usize) {
        self.sent.fetch_add(n as u64, Ordering::Relaxed);
    }
}

#[pyclass(frozen, module = "socketserver_rs._core")]
#[derive(Default)]
pub struct ServerStats {
    io: Arc<IoCounters>,
    taken: AtomicU64,
    finished: AtomicU64,
    errors: AtomicU64,
    accept_errors: AtomicU64,
}

#[pymethods]
impl ServerStats {
    #[new]
    fn new() -> Self {
        Self::default()
    }

    /// A request (connection or datagram) was taken from the socket.
    pub fn request_taken(&self) {
        self.taken.fetch_add(1, Ordering::Relaxed);
    }

    /// Whoever took a request, or the worker it was handed to, is done with it.
    fn request_finished(&self) {
        self.finished.fetch_add(1, Ordering::Release);
    }

    /// A request's exception went to handle_error().
    fn error(&self) {
        self.errors.fetch_add(1, Ordering::Relaxed);
    }

    /// Bytes received through a file the core does not make (over TLS).
    fn count_received(&self, n: usize) {
        self.io.received(n);
    }

    /// Bytes sent through a file the core does not make (over TLS).
    fn count_sent(&self, n: usize) {
        self.io.sent(n);
    }

    /// The counters as a dict (the workers' are the pool's, added in Python).
    fn snapshot<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        // Finished first (paired with its Release): every take behind a
        // finish read here is seen, so a request still running never
        // shows as finished; at worst one finished meanwhile shows as active.
        let finished = self.finished.load(Ordering::Acquire);
        let taken = self.taken.load(Ordering::Relaxed);
        let dict = PyDict::new(py);
        dict.set_item("requests_total", taken)?;
        dict.set_item("requests_active", taken.saturating_sub(finished))?;
        dict.set_item("errors", self.errors.load(Ordering::Relaxed))?;
        dict.set_item("accept_errors", self.accept_errors.load(Ordering::Relaxed))?;
        dict.set_item("bytes_received", self.io.received.load(Ordering::Relaxed))?;
        dict.set_item("bytes_sent", self.io.sent.load(Ordering::Relaxed))?;
        Ok(dict)
    }
}

impl ServerStats {
    pub fn accept_failed(&self) {
        self.accept_errors.fetch_add(1, Ordering::Relaxed);
    }

    pub fn io(&self) -> Arc<IoCounters> {
        Arc::clone(&self.io)
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<ServerStats>()
}
