//! Framed messages without a thread per connection: one readiness loop
//! accepts connections, reads and decodes their messages and writes the
//! replies, and reports to Python what happened.
//!
//! The loop only waits and reports (`wait()` returns a list of events):
//! handlers run in Python, on the serving thread or on pool workers, never
//! below a Rust frame (see `detach`). A connection has at most one message
//! with its handler at a time; while it does, or while its reply is
//! unsent, the loop reads nothing more from it, so a client that floods or
//! does not read holds at most one message and one reading step in memory.
//!
//! Python owns each connection's socket object; the loop borrows its
//! descriptor (reads and writes with `MSG_DONTWAIT`, never closes it).
//! Python holds the socket open (as a file from `makefile()` does: a
//! handler's `close()` is deferred) from before it learns of the connection
//! until after the loop forgot it, so a number the loop uses is never
//! reused by another connection or file: a reply reaches only the client it
//! was meant for. The loop forgets a connection when it reports its end
//! (the handler hanging up is one), or when `close()` or `close_all()` is
//! called.

mod conn;
mod deadline;
mod driving;
mod message;

use crate::detach::detach;
use crate::errors::os_error;
use crate::listener::{accept, address_to_py, socket_kind, wrap_socket};
use crate::locks::{Guard, Lock};
use crate::serve::{check_descriptor, owns, selector_timeout, ServeLoop};
use crate::stream::codec::{decode_header, encode_header, max_size_arg, FrameError, HEADER_LEN};
use crate::sys::{
    self, is_resource_exhaustion, readable_now, OwnedSock, PollEvent, Poller, RawSock, MSG_DONTWAIT,
};
use pyo3::exceptions::PyValueError;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList, PyString, PyTuple};
use socket2::{SockAddr, Socket};
use std::collections::HashMap;
use std::io::{self, IoSlice};
use std::mem::MaybeUninit;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use conn::{Conn, End, Payload};
use deadline::Deadlines;
use message::{Message, SpareBuffers};

/// Kinds of event `wait()` reports, as `(kind, conn_id, payload)`.
pub const OPENED: u8 = 0;
pub const MESSAGE: u8 = 1;
pub const CLOSED: u8 = 2;
pub const FAILED: u8 = 3;
pub const EXPIRED: u8 = 4;

const LISTENER: u64 = 0;
const SHUTDOWN_WAKE: u64 = 1;
const REPLY_WAKE: u64 = 2;
const FIRST_CONN: u64 = 16;

/// Longest stretch spent waiting without looking for signals.
const SIGNAL_SLICE: Duration = Duration::from_millis(100);
/// Most connections accepted per readiness of the listener.
const ACCEPT_BATCH: usize = 64;
/// How much is read at once when no message body is pending; also the most
/// a connection buffers beyond the message being assembled.
const READ_STEP: usize = 64 * 1024;
/// Read buffers kept for reuse between messages, and the largest kept.
const SPARE_BUFFERS: usize = 64;
const SPARE_CAPACITY: usize = 4 * READ_STEP;
/// Replies from this size on are sent with the GIL released.
const DETACHED_SEND: usize = 16 * 1024;
/// Messages from this size on are reported as a `Message`, made bytes by
/// their handler's thread.
const LARGE_MESSAGE: usize = 16 * 1024;
/// How long accepting pauses after running out of descriptors or memory.
const ACCEPT_PAUSE: Duration = Duration::from_millis(100);

/// What the loop found, before it becomes Python objects.
enum Found {
    /// Owned until it becomes a Python socket: dropped, it is closed.
    Opened(OwnedSock, SockAddr),
    Message(u64, Payload),
    Ended(u64, End),
    AcceptFailed(i32),
}

struct State {
    conns: HashMap<u64, Conn>,
    /// Connections to look at without waiting for readiness: a message is
    /// buffered, or their end is due, now that their reply is out.
    ready: Vec<u64>,
    next_id: u64,
    /// Accepting resumes then, after running out of descriptors.
    accept_paused_until: Option<Instant>,
    /// Connections are next looked at for expired deadlines then.
    next_expiry_check: Instant,
}

/// The readiness loop of a server whose handlers answer framed messages.
#[pyclass(frozen, module = "socketserver_rs._core")]
pub struct MessageLoop {
    poller: Poller,
    state: Lock<State>,
    spare: Arc<SpareBuffers>,
    listener: RawSock,
    /// The listening socket object: once it is closed, serving ends.
    socket: Py<PyAny>,
    nodelay: bool,
    max_size: usize,
    socket_class: Py<PyAny>,
    socket_kind: Py<PyTuple>,
    serve_loop: Py<ServeLoop>,
    deadlines: Deadlines,
    /// Wakes a wait when a reply left a connection with work for the loop.
    wake_read: Socket,
    wake_write: Socket,
    waiting: AtomicBool,
}

#[pymethods]
impl MessageLoop {
    /// `socket`: the listening socket; `max_message_size`: the longest
    /// message accepted; `nodelay`: accepted connections get TCP_NODELAY;
    /// `timeout`: seconds a message or reply may go without progress;
    /// `idle_timeout`: seconds a connection may stay idle between messages
    /// (None: no limit). A connection past either is reported EXPIRED.
    #[new]
    #[pyo3(signature = (socket, serve_loop, max_message_size, nodelay, timeout = None, idle_timeout = None))]
    fn new(
        py: Python<'_>,
        socket: Bound<'_, PyAny>,
        serve_loop: Py<ServeLoop>,
        max_message_size: i64,
        nodelay: bool,
        timeout: Option<f64>,
        idle_timeout: Option<f64>,
    ) -> PyResult<Self> {
        let max_size = max_size_arg(max_message_size)?;
        let deadlines = Deadlines::new(seconds_arg(timeout)?, seconds_arg(idle_timeout)?);
        let fileno: i64 = crate::pycall::call_method0(&socket, intern!(py, "fileno"))?.extract()?;
        let listener = check_descriptor(fileno)?;
        let socket_kind = socket_kind(&socket)?;
        let (wake_read, wake_write) = sys::socket_pair().map_err(os_error)?;
        wake_read.set_nonblocking(true).map_err(os_error)?;
        wake_write.set_nonblocking(true).map_err(os_error)?;
        let poller = Poller::new().map_err(os_error)?;
        poller
            .add(listener, LISTENER, true, false)
            .map_err(os_error)?;
        poller
            .add(serve_loop.get().wake_fd(), SHUTDOWN_WAKE, true, false)
            .map_err(os_error)?;
        poller
            .add(sys::as_raw(&wake_read), REPLY_WAKE, true, false)
            .map_err(os_error)?;
        Ok(Self {
            poller,
            state: Lock::new(State {
                conns: HashMap::new(),
                ready: Vec::new(),
                next_id: FIRST_CONN,
                accept_paused_until: None,
                next_expiry_check: Instant::now(),
            }),
            spare: Arc::default(),
            listener,
            nodelay,
            max_size,
            socket_class: socket.get_type().into_any().unbind(),
            socket: socket.unbind(),
            socket_kind,
            serve_loop,
            deadlines,
            wake_read,
            wake_write,
            waiting: AtomicBool::new(false),
        })
    }

    /// Wait up to `timeout` seconds (None: no limit) and return what
    /// happened, as a list of `(kind, conn_id, payload)`: OPENED with
    /// `(socket, client_address)`, MESSAGE with the payload (bytes, or a
    /// `Message` from `LARGE_MESSAGE` bytes on), CLOSED
    /// (the client closed between messages) with None, FAILED with the
    /// exception that ended the connection. Empty when the time passed;
    /// None once shutdown is requested or the listening socket closed,
    /// unless `draining` (drain() serves the connections left after the
    /// shutdown). The GIL is released while
    /// waiting and signal handlers run every 100 ms at most. A connection
    /// that was reported ended is no longer watched: its socket is
    /// Python's to close.
    #[pyo3(signature = (timeout = None, draining = false))]
    fn wait<'py>(
        &self,
        py: Python<'py>,
        timeout: Option<f64>,
        draining: bool,
    ) -> PyResult<Option<Bound<'py, PyList>>> {
        let deadline = selector_timeout(py, timeout)?.and_then(|t| Instant::now().checked_add(t));
        let serve_loop = self.serve_loop.get();
        let stopped = || !draining && serve_loop.is_shutdown_requested();
        loop {
            if stopped() || (!draining && !owns(self.socket.bind(py), self.listener)?) {
                return Ok(None);
            }
            let slice = match deadline {
                Some(deadline) => deadline
                    .saturating_duration_since(Instant::now())
                    .min(SIGNAL_SLICE),
                None => SIGNAL_SLICE,
            };
            let found = detach(py, || self.poll_once(slice));
            let found = match found {
                Ok(found) => found,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => Vec::new(),
                Err(err) => return Err(os_error(err)),
            };
            if stopped() && found.is_empty() {
                return Ok(None);
            }
            if !found.is_empty() {
                return self.report(py, found).map(Some);
            }
            py.check_signals()?;
            if deadline.is_some_and(|deadline| Instant::now() >= deadline) {
                return Ok(Some(PyList::empty(py)));
            }
        }
    }

    /// The handler of `conn_id` is done with its message: send `data` (a
    /// bytes object, or None for no reply) as a message, then read the
    /// next one, or with `close` end the connection once `data` is out
    /// (reported as CLOSED). Thread-safe. Returns False when the connection
    /// was closed meanwhile (`close_all()`): the caller then ends it. An
    /// error sending (or a payload too long for a header) is raised, the
    /// connection left for the caller to `close()`.
    #[pyo3(signature = (conn_id, data, close = false))]
    fn reply(
        &self,
        py: Python<'_>,
        conn_id: u64,
        data: Option<&[u8]>,
        close: bool,
    ) -> PyResult<bool> {
        let mut state = self.lock();
        let Some(conn) = state.conns.get_mut(&conn_id) else {
            return Ok(false);
        };
        if let Some(data) = data {
            let header = encode_header(data.len())?;
            // While its handler has a message, a connection has no reply
            // pending and nobody else writes to it, and Python keeps its
            // descriptor open until this returns (close_all() leaves a busy
            // one to its handler): the send needs no lock.
            let fd = conn.fd;
            let direct = !conn.unsent();
            drop(state);
            let written = if direct {
                let send = || send_now(fd, &header, data);
                if data.len() >= DETACHED_SEND {
                    detach(py, send)
                } else {
                    send()
                }
                .map_err(os_error)?
            } else {
                0
            };
            self.serve_loop.get().stats().io().sent(written);
            state = self.lock();
            let Some(conn) = state.conns.get_mut(&conn_id) else {
                return Ok(false);
            };
            if written < HEADER_LEN {
                conn.output.extend_from_slice(&header[written..]);
                conn.output.extend_from_slice(data);
            } else if written < HEADER_LEN + data.len() {
                conn.output.extend_from_slice(&data[written - HEADER_LEN..]);
            }
        }
        let conn = state.conns.get_mut(&conn_id).expect("looked up above");
        conn.busy = false;
        conn.progress = Instant::now();
        conn.hangup |= close;
        let wake = self.settle(&mut state, conn_id);
        drop(state);
        if wake {
            self.wake();
        }
        Ok(true)
    }

    /// Stop watching `conn_id` and forget it, before Python closes its
    /// socket. Returns whether it was still open. Thread-safe.
    fn close(&self, conn_id: u64) -> bool {
        let mut state = self.lock();
        match state.conns.remove(&conn_id) {
            Some(conn) => {
                self.unwatch(&conn);
                true
            }
            None => false,
        }
    }

    /// Forget every connection (`server_close()`): returns
    /// `(conn_id, busy)` for each, busy when its handler still has a
    /// message (its `reply()` then returns False).
    fn close_all(&self) -> Vec<(u64, bool)> {
        let mut state = self.lock();
        let conns: Vec<(u64, Conn)> = state.conns.drain().collect();
        state.ready.clear();
        conns
            .into_iter()
            .map(|(id, conn)| {
                self.unwatch(&conn);
                (id, conn.busy)
            })
            .collect()
    }

    /// Stop watching the listening socket (before drain() closes it).
    fn stop_accepting(&self) {
        let mut state = self.lock();
        state.accept_paused_until = None;
        // Not watched while accepting is paused; nothing to undo then.
        let _ = self.poller.delete(self.listener);
    }

    /// The connections between messages: no message with their handler,
    /// nothing received of the next one (by the loop or the system), no
    /// reply left to send.
    fn idle(&self) -> Vec<u64> {
        let state = self.lock();
        state
            .conns
            .iter()
            .filter(|(_, conn)| {
                !conn.busy
                    && !conn.unsent()
                    && conn.unread().is_empty()
                    && conn.end.is_none()
                    && !readable_now(conn.fd)
            })
            .map(|(&id, _)| id)
            .collect()
    }

    /// Connections open.
    #[getter]
    fn connections(&self) -> usize {
        self.lock().conns.len()
    }

    /// Bytes held for all connections: received and not yet delivered,
    /// plus replies not yet sent.
    #[getter]
    fn buffered_bytes(&self) -> usize {
        self.lock()
            .conns
            .values()
            .map(|conn| conn.unread().len() + (conn.output.len() - conn.sent))
            .sum()
    }

    /// The listening socket's descriptor.
    #[getter]
    fn listener_fd(&self) -> i64 {
        sys::to_fileno(self.listener)
    }
}

/// A timeout argument: None, or a positive number of seconds.
fn seconds_arg(seconds: Option<f64>) -> PyResult<Option<Duration>> {
    match seconds {
        None => Ok(None),
        Some(secs) if secs > 0.0 => Duration::try_from_secs_f64(secs)
            .map(Some)
            .map_err(|err| PyValueError::new_err(format!("timeout out of range: {err}"))),
        Some(secs) => Err(PyValueError::new_err(format!(
            "timeout must be a positive number of seconds or None, not {secs}"
        ))),
    }
}

/// One non-blocking send of a message: how many of its bytes left.
fn send_now(fd: RawSock, header: &[u8], data: &[u8]) -> io::Result<usize> {
    let parts = [IoSlice::new(header), IoSlice::new(data)];
    loop {
        match sys::send_vectored(fd, &parts, MSG_DONTWAIT) {
            Ok(n) => return Ok(n),
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => return Ok(0),
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(err) => return Err(err),
        }
    }
}

fn end_error(py: Python<'_>, err: PyErr) -> Bound<'_, PyAny> {
    err.into_value(py).into_bound(py).into_any()
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("EVENT_OPENED", OPENED)?;
    m.add("EVENT_MESSAGE", MESSAGE)?;
    m.add("EVENT_CLOSED", CLOSED)?;
    m.add("EVENT_FAILED", FAILED)?;
    m.add("EVENT_EXPIRED", EXPIRED)?;
    m.add_class::<Message>()?;
    m.add_class::<MessageLoop>()
}
