//! The waits of the serve loop: `serve_forever()` waits on the listening
//! socket and a wake descriptor with the GIL released, so `shutdown()` takes
//! effect at once, and checks for signals between slices of at most 100 ms.
//!
//! The loop itself is a few lines of Python around `wait()`: handlers must
//! never run below a Rust frame, because before 3.14 CPython ends a daemon
//! thread that re-enters a finalizing interpreter with a forced unwind, which
//! aborts the process when it meets Rust frames (see `detach`).

use crate::locks::{Guard, Lock};
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Condvar;
use std::thread::ThreadId;
use std::time::{Duration, Instant};

use pyo3::exceptions::{PyOverflowError, PyRuntimeError, PyValueError};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::PyString;
use socket2::Socket;

use crate::errors::{os_error, strerror};
use crate::pool::WorkerPool;
use crate::pycall::{call_method0, call_method1};
use crate::stats::ServerStats;
use crate::sys::{self, is_resource_exhaustion, Interest, RawSock};

/// Longest stretch spent waiting without looking for signals.
const SIGNAL_SLICE: Duration = Duration::from_millis(100);

/// Pauses after accept() ran out of descriptors or memory: the first, and
/// the longest, so that an exhausted server neither spins nor takes long to
/// notice that descriptors are free again.
const FIRST_BACKOFF: Duration = Duration::from_millis(10);
const LONGEST_BACKOFF: Duration = Duration::from_millis(100);

/// The state of backing off after resource exhaustion.
#[derive(Default)]
struct Backoff {
    delay: Duration,
    failures: u64,
    failed_since_last_wait: bool,
}

/// What `ServeLoop.wait()` tells the serve loop: stop (shutdown was
/// requested), nothing to take (the poll interval passed, or a bounded
/// pool is full), a request to take, or the socket was closed.
pub const STOP: u8 = 0;
pub const IDLE: u8 = 1;
pub const READY: u8 = 2;
pub const CLOSED: u8 = 3;

/// What a wait ended with.
#[derive(PartialEq)]
enum Wait {
    Ready,
    /// The second descriptor waited on (`also`) became readable.
    Also,
    TimedOut,
    Woken,
    Closed,
}

/// One per server: the shutdown request, the wake descriptor and the threads
/// currently inside `serve_forever()`.
#[pyclass(frozen, module = "socketserver_rs._core")]
pub struct ServeLoop {
    shutdown_requested: AtomicBool,
    serving: Lock<Vec<ThreadId>>,
    stopped: Condvar,
    wake_read: Socket,
    wake_write: Socket,
    backoff: Lock<Backoff>,
    /// The `socketserver_rs` logger, taken when the server is built: when
    /// accept() runs out of descriptors, importing `logging` would fail too.
    logger: Py<PyAny>,
    stats: Py<ServerStats>,
}

#[pymethods]
impl ServeLoop {
    /// `logger`: where accept failures and lost requests are reported;
    /// `stats`: the server's counters.
    #[new]
    fn new(logger: Py<PyAny>, stats: Py<ServerStats>) -> PyResult<Self> {
        let (wake_read, wake_write) = sys::socket_pair().map_err(os_error)?;
        wake_read.set_nonblocking(true).map_err(os_error)?;
        wake_write.set_nonblocking(true).map_err(os_error)?;
        Ok(Self {
            shutdown_requested: AtomicBool::new(false),
            serving: Lock::new(Vec::new()),
            stopped: Condvar::new(),
            wake_read,
            wake_write,
            backoff: Lock::new(Backoff::default()),
            logger,
            stats,
        })
    }

    /// Register the calling thread as running `serve_forever()`.
    fn enter(&self) {
        self.lock_serving().push(std::thread::current().id());
    }

    /// Unregister the calling thread; once no thread serves, clear the
    /// shutdown request (as the standard library's `finally:` does) and
    /// release whoever waits in `shutdown()`.
    fn leave(&self) {
        let thread = std::thread::current().id();
        let mut serving = self.lock_serving();
        if let Some(at) = serving.iter().position(|&t| t == thread) {
            serving.swap_remove(at);
        }
        if serving.is_empty() {
            self.shutdown_requested.store(false, Ordering::Release);
            self.drain_wakes();
        }
        self.stopped.notify_all();
    }

    /// One wait of the serve loop: READY when `fd` is readable, IDLE when
    /// `poll_interval` passed, STOP once shutdown is requested, CLOSED once
    /// `fd` is closed (`sock`, the socket object that owns it, if given, is
    /// looked at between slices: a closed socket's number may be reused).
    /// The GIL is released meanwhile and signal handlers run every 100 ms
    /// at most. After accept() ran out of resources it first pauses; while
    /// `pool` is at its bound it waits for a free worker instead of the
    /// listener, so that waiting clients stay in the kernel's backlog.
    /// `also`, when given, is watched throughout: its readiness ends the
    /// wait with IDLE (the connections still owing a handshake or a header,
    /// see _arrivals.py).
    #[pyo3(signature = (fd, poll_interval, pool = None, sock = None, also = None))]
    fn wait(
        &self,
        py: Python<'_>,
        fd: i64,
        poll_interval: Option<f64>,
        pool: Option<&Bound<'_, WorkerPool>>,
        sock: Option<&Bound<'_, PyAny>>,
        also: Option<i64>,
    ) -> PyResult<u8> {
        let also = also.and_then(sys::from_fileno).unwrap_or(sys::NO_SOCKET);
        if self.is_shutdown_requested() {
            return Ok(STOP);
        }
        let fd = check_descriptor(fd)?;
        let owner = sock.map(|sock| (sock, fd));
        let interval = selector_timeout(py, poll_interval)?;
        if let Some(pause) = self.next_backoff(py) {
            match self.wait_for(py, sys::NO_SOCKET, sys::NO_SOCKET, Some(pause), true, owner)? {
                Wait::Woken => return Ok(STOP),
                Wait::Closed => return Ok(CLOSED),
                _ => {}
            }
        }
        let outcome = match pool.map(Bound::get).filter(|pool| pool.is_full()) {
            Some(pool) => {
                match self.wait_for(py, pool.free_slot_fd(), also, interval, true, owner)? {
                    Wait::Ready => {
                        pool.drain_free_slots();
                        Wait::TimedOut
                    }
                    Wait::Closed => Wait::Closed,
                    _ => Wait::TimedOut,
                }
            }
            None => self.wait_for(py, fd, also, interval, true, owner)?,
        };
        if self.is_shutdown_requested() {
            return Ok(STOP);
        }
        Ok(match outcome {
            Wait::Ready => READY,
            Wait::Closed => CLOSED,
            _ => IDLE,
        })
    }

    /// Report an accept() failure; out of descriptors or memory, the loop
    /// backs off and says so once through the `socketserver_rs` logger.
    pub fn accept_failed(&self, py: Python<'_>, errno: i32) {
        self.stats.get().accept_failed();
        if !is_resource_exhaustion(errno) {
            return;
        }
        let first = {
            let mut backoff = self.lock_backoff();
            backoff.failures += 1;
            backoff.failed_since_last_wait = true;
            backoff.failures == 1
        };
        if first {
            let reason = format!("[Errno {errno}] {}", strerror(errno));
            self.log(
                py,
                "warning",
                format!(
                    "accept() failed ({reason}); pausing accepts, retrying every {} ms at most, \
                     until resources are free",
                    LONGEST_BACKOFF.as_millis()
                ),
            );
        }
    }

    /// Ask `serve_forever()` to stop and wait until it has. Returns at once
    /// when no loop is running (the request is kept for the next one), and
    /// refuses to deadlock when called from the thread running the loop.
    fn shutdown(&self, py: Python<'_>) -> PyResult<()> {
        if self.lock_serving().contains(&std::thread::current().id()) {
            return Err(PyRuntimeError::new_err(
                "shutdown() called from the thread running serve_forever() would wait for itself \
                 forever; call it from another thread",
            ));
        }
        self.request_shutdown(true);
        loop {
            let stopped = crate::detach::detach(py, || {
                self.lock_serving()
                    .wait_timeout_while(&self.stopped, SIGNAL_SLICE, |threads| !threads.is_empty())
                    .is_empty()
            });
            if stopped {
                return Ok(());
            }
            py.check_signals()?;
        }
    }

    /// Set or clear the shutdown request without waiting; setting it wakes the loop.
    fn request_shutdown(&self, requested: bool) {
        self.shutdown_requested.store(requested, Ordering::Release);
        if requested {
            // A full pipe already holds a wake-up; nothing else can fail here.
            let _ = self.wake_write.send(&[1]);
        }
    }

    /// The server's counters.
    #[getter(stats)]
    fn stats_py(&self, py: Python<'_>) -> Py<ServerStats> {
        self.stats.clone_ref(py)
    }

    #[getter]
    fn shutdown_requested(&self) -> bool {
        self.shutdown_requested.load(Ordering::Acquire)
    }

    /// True while some thread is inside `serve()`.
    #[getter]
    fn serving(&self) -> bool {
        !self.lock_serving().is_empty()
    }

    /// Wait until `fd` is readable (True) or `timeout` seconds pass (None:
    /// no limit; False), GIL released, signals checked; None once `fd` (or
    /// `sock`, as for `wait()`) is closed. The wait of `handle_request()`.
    #[pyo3(signature = (fd, timeout, sock = None))]
    fn wait_readable(
        &self,
        py: Python<'_>,
        fd: i64,
        timeout: Option<f64>,
        sock: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Option<bool>> {
        let fd = check_descriptor(fd)?;
        let timeout = selector_timeout(py, timeout)?;
        Ok(
            match self.wait_for(
                py,
                fd,
                sys::NO_SOCKET,
                timeout,
                false,
                sock.map(|sock| (sock, fd)),
            )? {
                Wait::Ready => Some(true),
                Wait::Closed => None,
                _ => Some(false),
            },
        )
    }
}

impl ServeLoop {
    /// The pause due before the next wait, if accept() failed for lack of
    /// resources since the last one; logs the recovery once it stops failing.
    fn next_backoff(&self, py: Python<'_>) -> Option<Duration> {
        let recovered_after = {
            let mut backoff = self.lock_backoff();
            if backoff.failed_since_last_wait {
                backoff.failed_since_last_wait = false;
                backoff.delay = (backoff.delay * 2).clamp(FIRST_BACKOFF, LONGEST_BACKOFF);
                return Some(backoff.delay);
            }
            if backoff.failures == 0 {
                return None;
            }
            let failures = backoff.failures;
            *backoff = Backoff::default();
            failures
        };
        self.log(
            py,
            "info",
            format!("accepting again after {recovered_after} failed accept() calls"),
        );
        None
    }

    /// A message through the server's logger at `level`. Should even the
    /// logger fail (a handler out of memory, say), its error goes to
    /// `sys.unraisablehook` rather than end the serve loop.
    fn log(&self, py: Python<'_>, level: &str, message: String) {
        let logger = self.logger.bind(py);
        let (level, message) = (PyString::new(py, level), PyString::new(py, &message));
        if let Err(err) = call_method1(logger, &level, &message) {
            err.write_unraisable(py, None);
        }
    }

    /// A request the core took but could not hand to Python (the socket
    /// object or its address could not be made): the caller closed it; it
    /// is logged, and the loop goes on.
    pub fn request_lost(&self, py: Python<'_>, err: &PyErr) {
        self.log(
            py,
            "error",
            format!("a request was dropped: it could not be handed to Python ({err})"),
        );
    }

    fn lock_backoff(&self) -> Guard<'_, Backoff> {
        self.backoff.lock()
    }

    pub fn stats(&self) -> &ServerStats {
        self.stats.get()
    }

    pub fn is_shutdown_requested(&self) -> bool {
        self.shutdown_requested.load(Ordering::Acquire)
    }

    fn lock_serving(&self) -> Guard<'_, Vec<ThreadId>> {
        self.serving.lock()
    }

    /// Wait for `fd` or `also` (`NO_SOCKET`: none) to be readable (and, if
    /// `wakeable`, for a shutdown request) in slices of at most
    /// `SIGNAL_SLICE`, running signal handlers between them.
    /// Closed: the descriptor polled was closed, or the socket of `owner`
    /// no longer owns the descriptor named with it.
    fn wait_for(
        &self,
        py: Python<'_>,
        fd: RawSock,
        also: RawSock,
        timeout: Option<Duration>,
        wakeable: bool,
        owner: Option<(&Bound<'_, PyAny>, RawSock)>,
    ) -> PyResult<Wait> {
        let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
        let wake_fd = if wakeable {
            sys::as_raw(&self.wake_read)
        } else {
            sys::NO_SOCKET
        };
        loop {
            if let Some((sock, owned)) = owner {
                if !owns(sock, owned)? {
                    return Ok(Wait::Closed);
                }
            }
            let slice = match deadline {
                Some(deadline) => deadline
                    .saturating_duration_since(Instant::now())
                    .min(SIGNAL_SLICE),
                None => SIGNAL_SLICE,
            };
            let fds = [
                (fd, Interest::Readable),
                (also, Interest::Readable),
                (wake_fd, Interest::Readable),
            ];
            match crate::detach::detach(py, || sys::poll(fds, Some(slice))) {
                Ok([listener, other, wake]) => {
                    if !wake.is_empty() {
                        self.drain_wakes();
                        if self.shutdown_requested.load(Ordering::Acquire) {
                            return Ok(Wait::Woken);
                        }
                    }
                    if listener.is_invalid() {
                        return Ok(Wait::Closed);
                    }
                    if !listener.is_empty() {
                        return Ok(Wait::Ready);
                    }
                    if !other.is_empty() {
                        return Ok(Wait::Also);
                    }
                }
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                Err(err) => return Err(os_error(err)),
            }
            py.check_signals()?;
            if deadline.is_some_and(|deadline| Instant::now() >= deadline) {
                return Ok(Wait::TimedOut);
            }
        }
    }

    /// The descriptor that becomes readable when shutdown is requested.
    pub fn wake_fd(&self) -> RawSock {
        sys::as_raw(&self.wake_read)
    }

    pub fn drain_wakes(&self) {
        let mut sink = [std::mem::MaybeUninit::<u8>::uninit(); 64];
        while matches!(self.wake_read.recv(&mut sink), Ok(n) if n > 0) {}
    }
}

/// A wait's timeout in seconds from Python (None: no limit), taken as the
/// standard module's selector takes it: zero or less polls once, and what
/// its select() refuses is refused with the same exception and message,
/// never waited on (a NaN, an infinity, more than poll() can wait).
pub fn selector_timeout(py: Python<'_>, secs: Option<f64>) -> PyResult<Option<Duration>> {
    let Some(secs) = secs else {
        return Ok(None);
    };
    if secs.is_nan() {
        return Err(PyValueError::new_err(NAN_TIMEOUT));
    }
    if secs <= 0.0 {
        return Ok(Some(Duration::ZERO));
    }
    check_selector_limit(py, secs)?;
    Ok(Some(Duration::from_secs_f64(secs)))
}

#[cfg(not(windows))]
const NAN_TIMEOUT: &str = "cannot convert float NaN to integer";
#[cfg(windows)]
const NAN_TIMEOUT: &str = "Invalid value NaN (not a number)";

/// PollSelector: `poll()` takes `ceil(secs * 1000)` milliseconds, an int
/// that must fit CPython's nanosecond clock and then a C int.
#[cfg(not(windows))]
fn check_selector_limit(py: Python<'_>, secs: f64) -> PyResult<()> {
    let millis = (secs * 1e3).ceil();
    if millis.is_infinite() {
        return Err(PyOverflowError::new_err(
            "cannot convert float infinity to integer",
        ));
    }
    if millis > (i64::MAX / 1_000_000) as f64 {
        return Err(PyOverflowError::new_err(timestamp_too_large(py)));
    }
    if millis > f64::from(i32::MAX) {
        return Err(PyOverflowError::new_err("timeout is too large"));
    }
    Ok(())
}

/// SelectSelector (Windows): `select()` takes the seconds as CPython's
/// nanosecond clock, then as a `timeval` whose seconds are a C long.
#[cfg(windows)]
fn check_selector_limit(py: Python<'_>, secs: f64) -> PyResult<()> {
    if secs * 1e9 >= i64::MAX as f64 {
        return Err(PyOverflowError::new_err(timestamp_too_large(py)));
    }
    if secs > f64::from(i32::MAX) {
        return Err(PyOverflowError::new_err(
            "timestamp out of range for platform time_t",
        ));
    }
    Ok(())
}

fn timestamp_too_large(py: Python<'_>) -> &'static str {
    if py.version_info() >= (3, 13) {
        "timestamp too large to convert to C PyTime_t"
    } else {
        "timestamp too large to convert to C _PyTime_t"
    }
}

/// Whether `sock` still owns descriptor `fd` (a closed socket's fileno()
/// is -1).
pub fn owns(sock: &Bound<'_, PyAny>, fd: RawSock) -> PyResult<bool> {
    let now: i64 = call_method0(sock, intern!(sock.py(), "fileno"))?.extract()?;
    Ok(now == sys::to_fileno(fd))
}

/// A socket's fileno() as the socket to wait on. A closed server's is -1:
/// refuse it as the standard library's selector does, rather than wait on
/// nothing.
pub fn check_descriptor(fd: i64) -> PyResult<RawSock> {
    sys::from_fileno(fd)
        .ok_or_else(|| PyValueError::new_err(format!("Invalid file descriptor: {fd}")))
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("STOP", STOP)?;
    m.add("IDLE", IDLE)?;
    m.add("READY", READY)?;
    m.add("CLOSED", CLOSED)?;
    m.add_class::<ServeLoop>()
}
