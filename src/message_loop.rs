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
//! descriptor (reads and writes with `MSG_DONTWAIT`, never closes it) and
//! stops watching it before Python closes it: when it reports the
//! connection's end, or when `close()` is called.

use std::collections::HashMap;
use std::io::{self, IoSlice};
use std::mem::MaybeUninit;
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList, PyTuple};
use socket2::{Domain, SockAddr, Socket, Type};

use crate::detach::detach;
use crate::errors::os_error;
use crate::listener::{accept, address_to_py, socket_kind, wrap_socket};
use crate::serve::ServeLoop;
use crate::stream::codec::{decode_header, encode_header, max_size_arg, FrameError, HEADER_LEN};
use crate::sys::{self, is_resource_exhaustion, readable_now, PollEvent, Poller, MSG_DONTWAIT};

/// Kinds of event `wait()` reports, as `(kind, conn_id, payload)`.
pub const OPENED: u8 = 0;
pub const MESSAGE: u8 = 1;
pub const CLOSED: u8 = 2;
pub const FAILED: u8 = 3;

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
/// How long accepting pauses after running out of descriptors or memory.
const ACCEPT_PAUSE: Duration = Duration::from_millis(100);

/// How a connection ends once nothing of it is in flight.
enum End {
    Eof,
    Frame(FrameError),
    Io(io::Error),
}

struct Conn {
    fd: RawFd,
    /// Bytes received and not yet delivered: `input[start..]`.
    input: Vec<u8>,
    start: usize,
    /// Reply bytes not yet sent: `output[sent..]`.
    output: Vec<u8>,
    sent: usize,
    /// A message is with its handler.
    busy: bool,
    end: Option<End>,
    /// What the poller currently watches the descriptor for.
    watching: (bool, bool),
}

impl Conn {
    fn unread(&self) -> &[u8] {
        &self.input[self.start..]
    }

    fn unsent(&self) -> bool {
        self.sent < self.output.len()
    }

    /// The next complete message, if one is buffered; an error if the next
    /// header is refused.
    fn next_frame(&mut self, max_size: usize) -> Result<Option<Vec<u8>>, FrameError> {
        let unread = self.unread();
        if unread.len() < HEADER_LEN {
            return Ok(None);
        }
        let len = decode_header(&unread[..HEADER_LEN], max_size)?;
        if unread.len() < HEADER_LEN + len {
            return Ok(None);
        }
        let payload = unread[HEADER_LEN..HEADER_LEN + len].to_vec();
        self.start += HEADER_LEN + len;
        if self.start == self.input.len() {
            self.input.clear();
            self.start = 0;
        }
        Ok(Some(payload))
    }

    /// How many bytes to read next: the rest of the message being
    /// assembled (in steps that grow with what arrived, so memory follows
    /// what the peer sent rather than the length it claimed), else a step.
    fn read_size(&self, max_size: usize) -> usize {
        let unread = self.unread();
        if unread.len() >= HEADER_LEN {
            if let Ok(len) = decode_header(&unread[..HEADER_LEN], max_size) {
                let missing = (HEADER_LEN + len).saturating_sub(unread.len());
                return missing.clamp(1, unread.len().max(READ_STEP));
            }
        }
        READ_STEP
    }

    /// Read without blocking until a message is complete, the socket is
    /// empty, or it ends.
    fn read(&mut self, max_size: usize) -> usize {
        let mut got = 0;
        loop {
            match self.next_frame(max_size) {
                Ok(Some(_)) => unreachable!("read() is called with no complete message"),
                Ok(None) => {}
                Err(_) => return got,
            }
            if self.start > 0 && self.start * 2 >= self.input.len() {
                self.input.drain(..self.start);
                self.start = 0;
            }
            let want = self.read_size(max_size);
            self.input.reserve(want);
            let spare = &mut self.input.spare_capacity_mut()[..want];
            match sys::recv(self.fd, spare, MSG_DONTWAIT) {
                Ok(0) => {
                    self.end = Some(match self.unread().len() {
                        0 => End::Eof,
                        n if n < HEADER_LEN => End::Frame(FrameError::TruncatedHeader(n)),
                        n => End::Frame(FrameError::TruncatedBody {
                            got: n - HEADER_LEN,
                            len: decode_header(&self.unread()[..HEADER_LEN], usize::MAX)
                                .unwrap_or(0),
                        }),
                    });
                    return got;
                }
                Ok(n) => {
                    // SAFETY: recv(2) initialised the first `n` spare bytes.
                    unsafe { self.input.set_len(self.input.len() + n) };
                    got += n;
                    if self.has_frame(max_size) {
                        return got;
                    }
                }
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => return got,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                Err(err) => {
                    self.end = Some(End::Io(err));
                    return got;
                }
            }
        }
    }

    fn has_frame(&self, max_size: usize) -> bool {
        let unread = self.unread();
        unread.len() >= HEADER_LEN
            && decode_header(&unread[..HEADER_LEN], max_size)
                .map_or(true, |len| unread.len() >= HEADER_LEN + len)
    }

    /// Send what is unsent without blocking; how many bytes left.
    fn flush(&mut self) -> io::Result<usize> {
        let mut total = 0;
        while self.unsent() {
            let part = [IoSlice::new(&self.output[self.sent..])];
            match sys::send_vectored(self.fd, &part, MSG_DONTWAIT) {
                Ok(n) => {
                    self.sent += n;
                    total += n;
                }
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => break,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                Err(err) => return Err(err),
            }
        }
        if !self.unsent() {
            self.output.clear();
            self.sent = 0;
        }
        Ok(total)
    }
}

/// What the loop found, before it becomes Python objects.
enum Found {
    /// Owned until it becomes a Python socket: dropped, it is closed.
    Opened(OwnedFd, SockAddr),
    Message(u64, Vec<u8>),
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
}

/// The readiness loop of a server whose handlers answer framed messages.
#[pyclass(frozen, module = "socketserver_rs._core")]
pub struct MessageLoop {
    poller: Poller,
    state: Mutex<State>,
    listener: RawFd,
    nodelay: bool,
    max_size: usize,
    socket_class: Py<PyAny>,
    socket_kind: Py<PyTuple>,
    serve_loop: Py<ServeLoop>,
    /// Wakes a wait when a reply left a connection with work for the loop.
    wake_read: Socket,
    wake_write: Socket,
    waiting: AtomicBool,
}

#[pymethods]
impl MessageLoop {
    /// `socket`: the listening socket; `max_message_size`: the longest
    /// message accepted; `nodelay`: accepted connections get TCP_NODELAY.
    #[new]
    fn new(
        py: Python<'_>,
        socket: Bound<'_, PyAny>,
        serve_loop: Py<ServeLoop>,
        max_message_size: i64,
        nodelay: bool,
    ) -> PyResult<Self> {
        let max_size = max_size_arg(max_message_size)?;
        let listener: RawFd = socket.call_method0(intern!(py, "fileno"))?.extract()?;
        let socket_kind = socket_kind(&socket)?;
        let (wake_read, wake_write) =
            Socket::pair(Domain::UNIX, Type::STREAM, None).map_err(os_error)?;
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
            .add(wake_read.as_raw_fd(), REPLY_WAKE, true, false)
            .map_err(os_error)?;
        Ok(Self {
            poller,
            state: Mutex::new(State {
                conns: HashMap::new(),
                ready: Vec::new(),
                next_id: FIRST_CONN,
                accept_paused_until: None,
            }),
            listener,
            nodelay,
            max_size,
            socket_class: socket.get_type().into_any().unbind(),
            socket_kind,
            serve_loop,
            wake_read,
            wake_write,
            waiting: AtomicBool::new(false),
        })
    }

    /// Wait up to `timeout` seconds (None: no limit) and return what
    /// happened, as a list of `(kind, conn_id, payload)`: OPENED with
    /// `(socket, client_address)`, MESSAGE with the payload (bytes), CLOSED
    /// (the client closed between messages) with None, FAILED with the
    /// exception that ended the connection. Empty when the time passed;
    /// None once shutdown is requested. The GIL is released while waiting
    /// and signal handlers run every 100 ms at most. A connection that was
    /// reported ended is no longer watched: its socket is Python's to close.
    #[pyo3(signature = (timeout = None))]
    fn wait<'py>(
        &self,
        py: Python<'py>,
        timeout: Option<f64>,
    ) -> PyResult<Option<Bound<'py, PyList>>> {
        let deadline = timeout.map(|secs| Instant::now() + Duration::from_secs_f64(secs.max(0.0)));
        let serve_loop = self.serve_loop.get();
        loop {
            if serve_loop.is_shutdown_requested() {
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
            if serve_loop.is_shutdown_requested() && found.is_empty() {
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
    /// bytes object, or None for no reply) as a message, and let the loop
    /// read the next one. Thread-safe. Returns False when the connection
    /// was closed meanwhile (`close_all()`): the caller then ends it. An
    /// error sending (or a payload too long for a header) is raised, the
    /// connection left for the caller to `close()`.
    #[pyo3(signature = (conn_id, data))]
    fn reply(&self, conn_id: u64, data: Option<&[u8]>) -> PyResult<bool> {
        let header: Option<[u8; HEADER_LEN]> = match data {
            Some(payload) => Some(encode_header(payload.len())?),
            None => None,
        };
        let mut state = self.lock();
        let Some(conn) = state.conns.get_mut(&conn_id) else {
            return Ok(false);
        };
        conn.busy = false;
        if let (Some(data), Some(header)) = (data, header.as_ref()) {
            let mut written = 0;
            if !conn.unsent() {
                let parts = [IoSlice::new(header), IoSlice::new(data)];
                loop {
                    match sys::send_vectored(conn.fd, &parts, MSG_DONTWAIT) {
                        Ok(n) => written = n,
                        Err(err) if err.kind() == io::ErrorKind::WouldBlock => {}
                        Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                        Err(err) => return Err(os_error(err)),
                    }
                    break;
                }
            }
            let total = HEADER_LEN + data.len();
            if written < total {
                if written < HEADER_LEN {
                    conn.output.extend_from_slice(&header[written..]);
                    conn.output.extend_from_slice(data);
                } else {
                    conn.output.extend_from_slice(&data[written - HEADER_LEN..]);
                }
            }
            self.serve_loop.get().stats().io().sent(written);
        }
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
    fn listener_fd(&self) -> RawFd {
        self.listener
    }
}

impl MessageLoop {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    fn wake(&self) {
        if self.waiting.load(Ordering::SeqCst) {
            // A full pipe already holds a wake-up.
            let _ = self.wake_write.send(&[1]);
        }
    }

    fn unwatch(&self, conn: &Conn) {
        if conn.watching != (false, false) {
            // It may already be closed; nothing is left to undo then.
            let _ = self.poller.delete(conn.fd);
        }
    }

    /// Watch `conn` for what it needs now.
    fn watch(&self, id: u64, conn: &mut Conn, read: bool, write: bool) {
        if conn.watching == (read, write) {
            return;
        }
        let done = match (conn.watching, (read, write)) {
            (_, (false, false)) => self.poller.delete(conn.fd),
            ((false, false), _) => self.poller.add(conn.fd, id, read, write),
            _ => self.poller.modify(conn.fd, id, read, write),
        };
        match done {
            Ok(()) => conn.watching = (read, write),
            Err(err) => {
                if conn.end.is_none() {
                    conn.end = Some(End::Io(err));
                }
            }
        }
    }

    /// After a reply: watch for what is next, and say whether the loop must
    /// look at the connection without readiness (a message is buffered, or
    /// its end is due).
    fn settle(&self, state: &mut State, id: u64) -> bool {
        let max_size = self.max_size;
        let Some(conn) = state.conns.get_mut(&id) else {
            return false;
        };
        if conn.unsent() {
            let read = conn.watching.0;
            self.watch(id, conn, read, true);
            return false;
        }
        if conn.end.is_some() || conn.has_frame(max_size) {
            state.ready.push(id);
            return true;
        }
        self.watch(id, conn, true, false);
        false
    }

    /// One wait, GIL released: what became ready, and what it led to.
    fn poll_once(&self, slice: Duration) -> io::Result<Vec<Found>> {
        let mut found = Vec::new();
        let mut events = Vec::new();
        let pending = !self.lock().ready.is_empty();
        let timeout = {
            let state = self.lock();
            match state.accept_paused_until {
                Some(until) => slice.min(until.saturating_duration_since(Instant::now())),
                None => slice,
            }
        };
        if pending {
            self.poller.wait(&mut events, Some(Duration::ZERO))?;
        } else {
            self.waiting.store(true, Ordering::SeqCst);
            let ready_now = !self.lock().ready.is_empty();
            let waited = self.poller.wait(
                &mut events,
                Some(if ready_now { Duration::ZERO } else { timeout }),
            );
            self.waiting.store(false, Ordering::SeqCst);
            waited?;
        }
        self.resume_accepting();
        let mut accept_ready = false;
        let mut state = self.lock();
        for event in &events {
            match event.token {
                LISTENER => accept_ready = true,
                SHUTDOWN_WAKE => self.serve_loop.get().drain_wakes(),
                REPLY_WAKE => {
                    let mut sink = [MaybeUninit::<u8>::uninit(); 64];
                    while matches!(
                        sys::recv(self.wake_read.as_raw_fd(), &mut sink, MSG_DONTWAIT),
                        Ok(n) if n > 0
                    ) {}
                }
                id => self.advance(&mut state, id, *event, &mut found),
            }
        }
        let ready = std::mem::take(&mut state.ready);
        for id in ready {
            let event = PollEvent {
                token: id,
                readable: false,
                writable: false,
            };
            self.advance(&mut state, id, event, &mut found);
        }
        drop(state);
        if accept_ready {
            self.accept_some(&mut found);
        }
        Ok(found)
    }

    fn resume_accepting(&self) {
        let mut state = self.lock();
        if let Some(until) = state.accept_paused_until {
            if Instant::now() >= until {
                state.accept_paused_until = None;
                // Should it fail, the next pause retries.
                let _ = self.poller.modify(self.listener, LISTENER, true, false);
            }
        }
    }

    fn accept_some(&self, found: &mut Vec<Found>) {
        for taken in 0..ACCEPT_BATCH {
            if taken > 0 && !readable_now(self.listener) {
                break;
            }
            match accept(self.listener, self.nodelay) {
                // SAFETY: just accepted; nothing else owns it.
                Ok((fd, address)) => {
                    found.push(Found::Opened(unsafe { OwnedFd::from_raw_fd(fd) }, address))
                }
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => break,
                Err(err) => {
                    let errno = err.raw_os_error().unwrap_or(0);
                    if is_resource_exhaustion(errno) {
                        let mut state = self.lock();
                        state.accept_paused_until = Some(Instant::now() + ACCEPT_PAUSE);
                        let _ = self.poller.modify(self.listener, LISTENER, false, false);
                    }
                    found.push(Found::AcceptFailed(errno));
                    break;
                }
            }
        }
    }

    /// Move one connection on: write what is unsent, deliver a buffered
    /// message, read, or report its end.
    fn advance(&self, state: &mut State, id: u64, event: PollEvent, found: &mut Vec<Found>) {
        let max_size = self.max_size;
        let stats = self.serve_loop.get().stats();
        let Some(conn) = state.conns.get_mut(&id) else {
            return;
        };
        if event.writable && conn.unsent() {
            match conn.flush() {
                Ok(n) => stats.io().sent(n),
                Err(err) => {
                    conn.output.clear();
                    conn.sent = 0;
                    conn.end = Some(End::Io(err));
                }
            }
        }
        if conn.busy || conn.unsent() {
            // Nothing more is read meanwhile: back-pressure.
            let write = conn.unsent();
            self.watch(id, conn, false, write);
            return;
        }
        match conn.next_frame(max_size) {
            Ok(Some(message)) => {
                conn.busy = true;
                found.push(Found::Message(id, message));
                return;
            }
            Ok(None) => {}
            Err(err) => {
                conn.end.get_or_insert(End::Frame(err));
            }
        }
        if conn.end.is_none() && event.readable {
            let got = conn.read(max_size);
            stats.io().received(got);
            match conn.next_frame(max_size) {
                Ok(Some(message)) => {
                    conn.busy = true;
                    self.watch(id, conn, false, false);
                    found.push(Found::Message(id, message));
                    return;
                }
                Ok(None) => {}
                Err(err) => {
                    conn.end.get_or_insert(End::Frame(err));
                }
            }
        }
        if conn.end.is_some() {
            let conn = state.conns.remove(&id).expect("looked up above");
            self.unwatch(&conn);
            found.push(Found::Ended(id, conn.end.expect("checked above")));
            return;
        }
        self.watch(id, conn, true, false);
    }

    /// Turn what the loop found into Python events; register new connections.
    fn report<'py>(&self, py: Python<'py>, found: Vec<Found>) -> PyResult<Bound<'py, PyList>> {
        let events = PyList::empty(py);
        let serve_loop = self.serve_loop.get();
        for item in found {
            let event = match item {
                Found::Message(id, payload) => (MESSAGE, id, PyBytes::new(py, &payload).into_any()),
                Found::Ended(id, End::Eof) => (CLOSED, id, py.None().into_bound(py)),
                Found::Ended(id, End::Frame(err)) => (FAILED, id, end_error(py, PyErr::from(err))),
                Found::Ended(id, End::Io(err)) => (FAILED, id, end_error(py, os_error(err))),
                Found::AcceptFailed(errno) => {
                    serve_loop.accept_failed(py, errno);
                    continue;
                }
                Found::Opened(fd, address) => match self.open(py, fd, &address) {
                    Some(event) => event,
                    None => continue,
                },
            };
            events.append(event)?;
        }
        Ok(events)
    }

    fn open<'py>(
        &self,
        py: Python<'py>,
        fd: OwnedFd,
        address: &SockAddr,
    ) -> Option<(u8, u64, Bound<'py, PyAny>)> {
        let serve_loop = self.serve_loop.get();
        let fd = fd.into_raw_fd();
        let request = match wrap_socket(self.socket_class.bind(py), self.socket_kind.bind(py), fd) {
            Ok(request) => request,
            Err(err) => {
                serve_loop.request_lost(py, &err);
                return None;
            }
        };
        let lost = |err: PyErr| {
            serve_loop.request_lost(py, &err);
            if let Err(err) = request.call_method0(intern!(py, "close")) {
                err.write_unraisable(py, Some(&request));
            }
        };
        let address = match address_to_py(py, address) {
            Ok(address) => address,
            Err(err) => {
                lost(err);
                return None;
            }
        };
        let mut state = self.lock();
        let id = state.next_id;
        state.next_id += 1;
        let mut conn = Conn {
            fd,
            input: Vec::new(),
            start: 0,
            output: Vec::new(),
            sent: 0,
            busy: false,
            end: None,
            watching: (false, false),
        };
        self.watch(id, &mut conn, true, false);
        if let Some(End::Io(err)) = conn.end.take() {
            drop(state);
            lost(os_error(err));
            return None;
        }
        state.conns.insert(id, conn);
        drop(state);
        serve_loop.stats().request_taken();
        let payload = PyTuple::new(py, [request, address]).ok()?.into_any();
        Some((OPENED, id, payload))
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
    m.add_class::<MessageLoop>()
}
