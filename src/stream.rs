//! rfile / wfile objects over a connection.
//!
//! `SocketReader` behaves like `sock.makefile('rb', bufsize)` (a
//! `BufferedReader` over `socket.SocketIO`, or the bare `SocketIO` when
//! `bufsize` is 0) and `SocketWriter` like `socketserver._SocketWriter`
//! (`bufsize` 0) or `sock.makefile('wb', bufsize)`.  All blocking system
//! calls run with the interpreter released; socket timeouts are honoured the
//! way the `socket` module does it (poll up to the timeout, then raise
//! `socket.timeout`).

use std::io;
use std::os::raw::c_int;
use std::os::unix::io::RawFd;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use pyo3::buffer::PyUntypedBuffer;
use pyo3::exceptions::{
    PyBufferError, PyEOFError, PyMemoryError, PyOSError, PyRuntimeError, PyTypeError, PyValueError,
};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::sync::MutexExt;
use pyo3::types::{PyBytes, PyList};

use crate::errors::{os_error, socket_timeout};
use crate::readbuf::ReadBuf;
use crate::socket_file::{socket_file_methods, CLOSED_FILE};
use crate::sys::{self, Interest};

/// `io.DEFAULT_BUFFER_SIZE`.
const DEFAULT_BUFFER_SIZE: usize = 8192;

// ---------------------------------------------------------------------------
// System calls
// ---------------------------------------------------------------------------

/// Outcome of one system call (or one wait-then-call round).
enum Step {
    Done(usize),
    Again,
    Intr,
    TimedOut,
    Fail(io::Error),
}

fn step_of(ret: isize) -> Step {
    if ret >= 0 {
        return Step::Done(ret as usize);
    }
    let err = io::Error::last_os_error();
    match err.raw_os_error() {
        Some(libc::EINTR) => Step::Intr,
        Some(code) if code == libc::EAGAIN || code == libc::EWOULDBLOCK => Step::Again,
        _ => Step::Fail(err),
    }
}

/// A pointer that may cross into a detached closure.  The memory behind it is
/// kept alive and unmoved by the caller (a locked internal buffer, or a
/// buffer export held for the duration of the call).
#[derive(Clone, Copy)]
struct RawPtr(*mut u8);
// SAFETY: only dereferenced by the system call while the owner keeps the
// memory alive and does not touch it.
unsafe impl Send for RawPtr {}
unsafe impl Sync for RawPtr {}

fn sys_recv(fd: RawFd, buf: RawPtr, len: usize, flags: c_int) -> Step {
    // SAFETY: `buf` points to at least `len` writable bytes (see RawPtr).
    let ret = unsafe { libc::recv(fd, buf.0.cast(), len, flags | libc::MSG_NOSIGNAL) };
    step_of(ret)
}

fn sys_send(fd: RawFd, buf: RawPtr, len: usize, flags: c_int) -> Step {
    // SAFETY: `buf` points to at least `len` readable bytes (see RawPtr).
    let ret = unsafe { libc::send(fd, buf.0.cast(), len, flags | libc::MSG_NOSIGNAL) };
    step_of(ret)
}

/// Waits until `fd` is ready for `interest` or `timeout` passes (`None`:
/// no limit); `Done(0)` when the time ran out.
fn wait_ready(fd: RawFd, interest: Interest, timeout: Option<Duration>) -> Step {
    match sys::poll([(fd, interest)], timeout) {
        Ok([ready]) => Step::Done(usize::from(!ready.is_empty())),
        Err(err) => match err.kind() {
            io::ErrorKind::Interrupted => Step::Intr,
            io::ErrorKind::WouldBlock => Step::Again,
            _ => Step::Fail(err),
        },
    }
}

/// How an operation that would block waits: learnt from `sock.gettimeout()`
/// the first time it would block.
#[derive(Clone, Copy)]
enum Wait {
    Unknown,
    Forever,
    NonBlocking,
    Until(Instant),
}

fn fetch_wait(py: Python<'_>, sock: &Bound<'_, PyAny>) -> PyResult<Wait> {
    let timeout = sock.call_method0(intern!(py, "gettimeout"))?;
    if timeout.is_none() {
        return Ok(Wait::Forever);
    }
    let secs: f64 = timeout.extract()?;
    if secs <= 0.0 {
        return Ok(Wait::NonBlocking);
    }
    Ok(Duration::try_from_secs_f64(secs)
        .ok()
        .and_then(|d| Instant::now().checked_add(d))
        .map_or(Wait::Forever, Wait::Until))
}

enum IoFail {
    Timeout,
    Py(PyErr),
}

impl From<PyErr> for IoFail {
    fn from(err: PyErr) -> Self {
        IoFail::Py(err)
    }
}

/// Runs `op` (a recv/send taking extra flags) the way the socket module does:
/// try once; when it would block, wait according to the socket's timeout; on
/// EINTR run the signal handlers and retry.  `Ok(None)`: it
/// would block and the socket is non-blocking (timeout 0).
fn do_io<F>(
    py: Python<'_>,
    sock: &Bound<'_, PyAny>,
    fd: RawFd,
    interest: Interest,
    wait: &mut Wait,
    op: F,
) -> Result<Option<usize>, IoFail>
where
    F: Fn(c_int) -> Step + Sync,
{
    loop {
        let how = *wait;
        let op = &op;
        let step = crate::detach::detach(py, move || match how {
            // A socket without a timeout has a blocking descriptor and one
            // with a timeout a non-blocking one (the socket module keeps
            // them so), so the first try needs no flag: it blocks exactly
            // when the socket would, and asks for the timeout only then.
            Wait::Unknown => op(0),
            Wait::NonBlocking => op(libc::MSG_DONTWAIT),
            Wait::Forever => match op(0) {
                // Only when the descriptor itself is non-blocking.
                Step::Again => match wait_ready(fd, interest, None) {
                    Step::Done(_) => Step::Again,
                    other => other,
                },
                other => other,
            },
            Wait::Until(deadline) => loop {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Step::TimedOut;
                }
                match wait_ready(fd, interest, Some(left)) {
                    Step::Done(0) => continue,
                    Step::Done(_) => match op(libc::MSG_DONTWAIT) {
                        Step::Again => continue,
                        other => return other,
                    },
                    other => return other,
                }
            },
        });
        match step {
            Step::Done(n) => return Ok(Some(n)),
            Step::Intr => py.check_signals()?,
            Step::Again => match how {
                Wait::Unknown => {
                    *wait = fetch_wait(py, sock)?;
                    if matches!(*wait, Wait::NonBlocking) {
                        return Ok(None);
                    }
                }
                Wait::NonBlocking => return Ok(None),
                Wait::Forever | Wait::Until(_) => {}
            },
            Step::TimedOut => return Err(IoFail::Timeout),
            Step::Fail(err) => return Err(IoFail::Py(os_error(err))),
        }
    }
}

fn would_block_error() -> PyErr {
    os_error(io::Error::from_raw_os_error(libc::EAGAIN))
}

/// Largest send first tried with the GIL held.
const ATTACHED_SEND_LIMIT: usize = 16 * 1024;

/// A small send that fits in the socket's buffer completes at once, so it
/// is first tried without blocking and with the GIL held: releasing the GIL
/// around it would hand it to another thread and cost more than the copy.
/// None when it would block (or was interrupted): then wait as usual.
fn send_attached(fd: RawFd, data: &[u8]) -> Option<PyResult<usize>> {
    if data.is_empty() || data.len() > ATTACHED_SEND_LIMIT {
        return None;
    }
    match sys_send(
        fd,
        RawPtr(data.as_ptr().cast_mut()),
        data.len(),
        libc::MSG_DONTWAIT,
    ) {
        Step::Done(n) => Some(Ok(n)),
        Step::Fail(err) => Some(Err(os_error(err))),
        Step::Again | Step::Intr | Step::TimedOut => None,
    }
}

/// One `send` with `SocketIO.write` semantics (`None`: would block).
fn send_once(
    py: Python<'_>,
    sock: &Bound<'_, PyAny>,
    fd: RawFd,
    data: &[u8],
) -> PyResult<Option<usize>> {
    if let Some(sent) = send_attached(fd, data) {
        return sent.map(Some);
    }
    let ptr = RawPtr(data.as_ptr().cast_mut());
    let len = data.len();
    let mut wait = Wait::Unknown;
    match do_io(py, sock, fd, Interest::Writable, &mut wait, move |flags| {
        sys_send(fd, ptr, len, flags)
    }) {
        Ok(n) => Ok(n),
        Err(IoFail::Timeout) => Err(socket_timeout(py)),
        Err(IoFail::Py(err)) => Err(err),
    }
}

/// `sock.sendall(data)`: the timeout covers the whole call; signal handlers
/// run between partial sends.
fn send_all(py: Python<'_>, sock: &Bound<'_, PyAny>, fd: RawFd, data: &[u8]) -> PyResult<()> {
    let mut wait = Wait::Unknown;
    let mut off = 0;
    while off < data.len() {
        let rest = &data[off..];
        if let Some(sent) = send_attached(fd, rest) {
            off += sent?;
            if off < data.len() {
                py.check_signals()?;
            }
            continue;
        }
        let ptr = RawPtr(rest.as_ptr().cast_mut());
        let len = rest.len();
        match do_io(py, sock, fd, Interest::Writable, &mut wait, move |flags| {
            sys_send(fd, ptr, len, flags)
        }) {
            Ok(Some(n)) => {
                off += n;
                if off < data.len() {
                    py.check_signals()?;
                }
            }
            Ok(None) => return Err(would_block_error()),
            Err(IoFail::Timeout) => return Err(socket_timeout(py)),
            Err(IoFail::Py(err)) => return Err(err),
        }
    }
    Ok(())
}

/// Up to three byte slices for one `sendmsg` (pointers as in `RawPtr`).
#[derive(Clone, Copy)]
struct Parts {
    parts: [(RawPtr, usize); 3],
    count: usize,
}

impl Parts {
    /// What is left of `slices` once `skip` bytes of them were sent.
    fn after(slices: &[&[u8]], mut skip: usize) -> Self {
        let mut parts = Parts {
            parts: [(RawPtr(std::ptr::null_mut()), 0); 3],
            count: 0,
        };
        for slice in slices {
            if skip >= slice.len() {
                skip -= slice.len();
                continue;
            }
            let rest = &slice[skip..];
            skip = 0;
            parts.parts[parts.count] = (RawPtr(rest.as_ptr().cast_mut()), rest.len());
            parts.count += 1;
        }
        parts
    }
}

fn sys_sendmsg(fd: RawFd, parts: &Parts, flags: c_int) -> Step {
    let mut iov = [libc::iovec {
        iov_base: std::ptr::null_mut(),
        iov_len: 0,
    }; 3];
    for (slot, &(ptr, len)) in iov.iter_mut().zip(&parts.parts[..parts.count]) {
        slot.iov_base = ptr.0.cast();
        slot.iov_len = len;
    }
    // SAFETY: an all-zero msghdr is valid (no name, no control data).
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = iov.as_mut_ptr();
    msg.msg_iovlen = parts.count as _;
    // SAFETY: every iovec points to readable bytes kept alive by the caller.
    let ret = unsafe { libc::sendmsg(fd, &msg, flags | libc::MSG_NOSIGNAL) };
    step_of(ret)
}

fn blocking_write_error(written: usize) -> PyErr {
    pyo3::exceptions::PyBlockingIOError::new_err((
        libc::EAGAIN,
        "write could not complete without blocking",
        written,
    ))
}

/// One `sendmsg` of `slices` (`None`: would block); the socket's timeout
/// bounds this one call.
fn send_parts_once(
    py: Python<'_>,
    sock: &Bound<'_, PyAny>,
    fd: RawFd,
    slices: &[&[u8]],
) -> PyResult<Option<usize>> {
    let parts = Parts::after(slices, 0);
    let mut wait = Wait::Unknown;
    match do_io(py, sock, fd, Interest::Writable, &mut wait, move |flags| {
        sys_sendmsg(fd, &parts, flags)
    }) {
        Ok(n) => Ok(n),
        Err(IoFail::Timeout) => Err(socket_timeout(py)),
        Err(IoFail::Py(err)) => Err(err),
    }
}

/// `sendall` of several slices back to back, gathered into each `sendmsg`
/// so that a small header and its payload leave in one segment.  The
/// timeout covers the whole call, as for `sendall`.
fn send_all_parts(
    py: Python<'_>,
    sock: &Bound<'_, PyAny>,
    fd: RawFd,
    slices: &[&[u8]],
) -> PyResult<()> {
    let total: usize = slices.iter().map(|s| s.len()).sum();
    let mut wait = Wait::Unknown;
    let mut sent = 0;
    while sent < total {
        let parts = Parts::after(slices, sent);
        match do_io(py, sock, fd, Interest::Writable, &mut wait, move |flags| {
            sys_sendmsg(fd, &parts, flags)
        }) {
            Ok(Some(n)) => {
                sent += n;
                if sent < total {
                    py.check_signals()?;
                }
            }
            Ok(None) => return Err(would_block_error()),
            Err(IoFail::Timeout) => return Err(socket_timeout(py)),
            Err(IoFail::Py(err)) => return Err(err),
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Length-prefixed messages
// ---------------------------------------------------------------------------

/// A message is a 4-byte big-endian payload length, then the payload.
const HEADER_LEN: usize = 4;

/// A body is received into a buffer that starts at this size and doubles
/// as bytes arrive, so memory follows what the peer actually sent rather
/// than the length it claimed.
const BODY_STEP: usize = 64 * 1024;

/// The header for a payload of `len` bytes.
fn encode_header(len: usize) -> Result<[u8; HEADER_LEN], String> {
    u32::try_from(len).map(u32::to_be_bytes).map_err(|_| {
        format!(
            "message of {len} bytes does not fit a 4-byte length header (at most {} bytes)",
            u32::MAX
        )
    })
}

/// The payload length a header announces.
fn decode_header(header: [u8; HEADER_LEN]) -> usize {
    // Lossless: usize has at least 32 bits on every supported platform.
    u32::from_be_bytes(header) as usize
}

/// Refuses a message longer than `max_size` before any of it is read.
fn check_size(len: usize, max_size: usize) -> Result<(), String> {
    if len > max_size {
        Err(format!(
            "message length {len} exceeds max_size {max_size}; the connection cannot be read further"
        ))
    } else {
        Ok(())
    }
}

fn truncated_header(got: usize) -> String {
    format!("connection closed in the middle of a message header (got {got} of {HEADER_LEN} bytes)")
}

fn truncated_body(got: usize, len: usize) -> String {
    format!("connection closed in the middle of a message (got {got} of {len} bytes)")
}

/// A `max_size` argument: any non-negative int.
fn max_size_arg(max_size: i64) -> PyResult<usize> {
    if max_size < 0 {
        return Err(PyValueError::new_err("max_size must be non-negative"));
    }
    Ok(usize::try_from(max_size).unwrap_or(usize::MAX))
}

/// What is left of `header` then `data` once `off` bytes of both were sent.
fn rest_of<'a>(header: &'a [u8], data: &'a [u8], off: usize) -> (&'a [u8], &'a [u8]) {
    if off < header.len() {
        (&header[off..], data)
    } else {
        (&[], &data[off - header.len()..])
    }
}

// ---------------------------------------------------------------------------
// Locking
// ---------------------------------------------------------------------------

fn thread_token() -> usize {
    thread_local!(static TOKEN: u8 = const { 0 });
    TOKEN.with(|t| t as *const u8 as usize)
}

/// A mutex that is waited for with the interpreter released, and that turns a
/// re-entrant call from the same thread (a signal handler using the object it
/// interrupted) into `RuntimeError` instead of a deadlock.
struct Locked<T> {
    inner: Mutex<T>,
    owner: AtomicUsize,
}

struct Guard<'a, T> {
    guard: MutexGuard<'a, T>,
    owner: &'a AtomicUsize,
}

impl<T> Drop for Guard<'_, T> {
    fn drop(&mut self) {
        self.owner.store(0, Ordering::Release);
    }
}

impl<T> std::ops::Deref for Guard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.guard
    }
}

impl<T> std::ops::DerefMut for Guard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        &mut self.guard
    }
}

impl<T> Locked<T> {
    fn new(value: T) -> Self {
        Locked {
            inner: Mutex::new(value),
            owner: AtomicUsize::new(0),
        }
    }

    fn lock(&self, py: Python<'_>, what: &str) -> PyResult<Guard<'_, T>> {
        let me = thread_token();
        if self.owner.load(Ordering::Acquire) == me {
            return Err(PyRuntimeError::new_err(format!(
                "reentrant call inside {what}"
            )));
        }
        let guard = self
            .inner
            .lock_py_attached(py)
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        self.owner.store(me, Ordering::Release);
        Ok(Guard {
            guard,
            owner: &self.owner,
        })
    }

    fn get_mut(&mut self) -> &mut T {
        self.inner
            .get_mut()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

fn closed_error(msg: &str) -> PyErr {
    PyValueError::new_err(msg.to_string())
}

fn reserve(vec: &mut Vec<u8>, extra: usize) -> PyResult<()> {
    vec.try_reserve(extra)
        .map_err(|_| PyMemoryError::new_err(()))
}

/// A contiguous buffer export of a bytes-like object.
fn get_buffer(obj: &Bound<'_, PyAny>, writable: bool) -> PyResult<PyUntypedBuffer> {
    let buf = PyUntypedBuffer::get(obj)?;
    if writable && buf.readonly() {
        return Err(PyTypeError::new_err(format!(
            "readinto() argument must be read-write bytes-like object, not {}",
            obj.get_type().name()?
        )));
    }
    if !buf.is_c_contiguous() {
        return Err(PyBufferError::new_err(
            "underlying buffer is not C-contiguous",
        ));
    }
    Ok(buf)
}

fn decref_socketios(py: Python<'_>, sock: &Py<PyAny>) -> PyResult<()> {
    sock.bind(py)
        .call_method0(intern!(py, "_decref_socketios"))
        .map(drop)
}

fn incref_socketios(py: Python<'_>, sock: &Bound<'_, PyAny>) -> PyResult<()> {
    let name = intern!(py, "_io_refs");
    let refs = sock.getattr(name)?;
    sock.setattr(name, refs.add(1)?)
}

fn size_arg(size: Option<isize>) -> isize {
    size.unwrap_or(-1)
}

// ---------------------------------------------------------------------------
// Reader
// ---------------------------------------------------------------------------

struct ReaderState {
    /// `None` once closed.
    sock: Option<Py<PyAny>>,
    /// The buffer (`bufsize` bytes; empty when unbuffered); `buf[pos..end]`
    /// holds the bytes read ahead.
    buf: ReadBuf,
    pos: usize,
    end: usize,
    timed_out: bool,
}

/// `sock.makefile('rb', bufsize)` in Rust.
#[pyclass(frozen, module = "socketserver_rs._core", name = "SocketReader")]
pub struct SocketReader {
    fd: RawFd,
    bufsize: usize,
    closed: AtomicBool,
    state: Locked<ReaderState>,
}

/// What the reader methods work on while holding the lock.
struct Rd<'a, 'py> {
    py: Python<'py>,
    fd: RawFd,
    st: &'a mut ReaderState,
}

impl<'py> Rd<'_, 'py> {
    fn check_open(&self) -> PyResult<()> {
        if self.st.sock.is_some() {
            Ok(())
        } else {
            Err(closed_error(CLOSED_FILE))
        }
    }

    fn sock(&self) -> PyResult<Bound<'py, PyAny>> {
        match &self.st.sock {
            Some(sock) => Ok(sock.bind(self.py).clone()),
            None => Err(closed_error(CLOSED_FILE)),
        }
    }

    /// One `recv` into `len` bytes at `ptr` with `SocketIO.readinto`
    /// semantics: `Some(0)` at EOF, `None` when it would block.
    fn raw_read(&mut self, ptr: *mut u8, len: usize, flags: c_int) -> PyResult<Option<usize>> {
        if self.st.timed_out {
            return Err(PyOSError::new_err("cannot read from timed out object"));
        }
        let sock = self.sock()?;
        let fd = self.fd;
        let ptr = RawPtr(ptr);
        let mut wait = Wait::Unknown;
        match do_io(
            self.py,
            &sock,
            fd,
            Interest::Readable,
            &mut wait,
            move |fl| sys_recv(fd, ptr, len, fl | flags),
        ) {
            Ok(n) => Ok(n),
            Err(IoFail::Timeout) => {
                self.st.timed_out = true;
                Err(socket_timeout(self.py))
            }
            Err(IoFail::Py(err)) => Err(err),
        }
    }

    /// Reads into the spare capacity of `out` (at most `len` bytes).
    fn raw_read_vec(&mut self, out: &mut Vec<u8>, len: usize) -> PyResult<Option<usize>> {
        reserve(out, len)?;
        let old = out.len();
        // SAFETY: capacity for `len` more bytes was reserved above.
        let ptr = unsafe { out.as_mut_ptr().add(old) };
        let res = self.raw_read(ptr, len, 0)?;
        if let Some(n) = res {
            // SAFETY: the kernel initialised `n <= len` bytes.
            unsafe { out.set_len(old + n.min(len)) };
        }
        Ok(res)
    }

    /// Reads into `buf[end..]`.
    fn fill(&mut self) -> PyResult<Option<usize>> {
        let cap = self.st.buf.len();
        let start = self.st.end;
        let ptr = self.st.buf.spare_ptr(start);
        let res = self.raw_read(ptr, cap - start, 0)?;
        if let Some(n) = res {
            self.st.end += n.min(cap - start);
            self.st.buf.mark_filled(self.st.end);
        }
        Ok(res)
    }

    fn reset(&mut self) {
        self.st.pos = 0;
        self.st.end = 0;
    }

    fn have(&self) -> &[u8] {
        &self.st.buf[self.st.pos..self.st.end]
    }

    fn take(&mut self, n: usize) -> Bound<'py, PyBytes> {
        let start = self.st.pos;
        self.st.pos += n;
        PyBytes::new(self.py, &self.st.buf[start..start + n])
    }

    // -- messages -------------------------------------------------------------

    /// Reads until `len` bytes are at `dst` or the peer closed; how many
    /// arrived.  Unbuffered, it receives exactly what is asked, no more.
    fn read_full(&mut self, dst: *mut u8, len: usize) -> PyResult<usize> {
        let mut got = 0;
        while got < len {
            // SAFETY: `dst` has room for `len` bytes and got < len.
            match self.readinto(unsafe { dst.add(got) }, len - got, false)? {
                Some(0) => break,
                Some(n) => got += n.min(len - got),
                None => return Err(would_block_error()),
            }
        }
        Ok(got)
    }

    /// One length-prefixed message: `None` when the peer closed before its
    /// first byte.
    fn read_message(&mut self, max_size: usize) -> PyResult<Option<Vec<u8>>> {
        self.check_open()?;
        let mut header = [0u8; HEADER_LEN];
        match self.read_full(header.as_mut_ptr(), HEADER_LEN)? {
            0 => return Ok(None),
            HEADER_LEN => {}
            got => return Err(PyEOFError::new_err(truncated_header(got))),
        }
        let len = decode_header(header);
        check_size(len, max_size).map_err(PyValueError::new_err)?;
        let mut body: Vec<u8> = Vec::new();
        while body.len() < len {
            let old = body.len();
            let want = (len - old).min(old.max(BODY_STEP));
            body.try_reserve_exact(want)
                .map_err(|_| PyMemoryError::new_err(()))?;
            // SAFETY: capacity for `want` more bytes was reserved above.
            let got = self.read_full(unsafe { body.as_mut_ptr().add(old) }, want)?;
            // SAFETY: `got <= want` bytes were initialised by the reads.
            unsafe { body.set_len(old + got) };
            if got < want {
                return Err(PyEOFError::new_err(truncated_body(body.len(), len)));
            }
        }
        Ok(Some(body))
    }

    // -- unbuffered (SocketIO) ------------------------------------------------

    fn raw_read_n(&mut self, n: usize) -> PyResult<Option<Vec<u8>>> {
        let mut out = Vec::new();
        if n == 0 {
            self.check_open()?;
            return Ok(Some(out));
        }
        Ok(self.raw_read_vec(&mut out, n)?.map(|_| out))
    }

    /// `RawIOBase.readall`.
    fn raw_readall(&mut self, mut out: Vec<u8>) -> PyResult<Option<Vec<u8>>> {
        let mut chunk = DEFAULT_BUFFER_SIZE;
        loop {
            match self.raw_read_vec(&mut out, chunk)? {
                Some(0) => return Ok(Some(out)),
                None if out.is_empty() => return Ok(None),
                None => return Ok(Some(out)),
                Some(_) => {
                    if out.len() >= chunk * 4 {
                        chunk = (chunk * 2).min(1 << 20);
                    }
                }
            }
        }
    }

    /// `IOBase.readline` over the raw socket, without reading past the
    /// newline: peek, then receive exactly up to it.
    fn raw_readline(&mut self, limit: Option<usize>) -> PyResult<Vec<u8>> {
        let mut out = Vec::new();
        loop {
            let want = match limit {
                Some(limit) => limit - out.len(),
                None => DEFAULT_BUFFER_SIZE,
            };
            if want == 0 {
                self.check_open()?;
                break;
            }
            reserve(&mut out, want)?;
            let old = out.len();
            // SAFETY: capacity for `want` more bytes was reserved above.
            let ptr = unsafe { out.as_mut_ptr().add(old) };
            let peeked = match self.raw_read(ptr, want, libc::MSG_PEEK)? {
                Some(0) => break,
                // IOBase.readline over a non-blocking raw stream.
                None => {
                    return Err(PyOSError::new_err(
                        "read() should have returned a bytes object, not 'NoneType'",
                    ))
                }
                Some(n) => n.min(want),
            };
            // SAFETY: the kernel initialised `peeked` bytes at `ptr`.
            let seen = unsafe { std::slice::from_raw_parts(ptr, peeked) };
            let take = seen
                .iter()
                .position(|&b| b == b'\n')
                .map_or(peeked, |i| i + 1);
            let got = match self.raw_read(ptr, take, 0)? {
                Some(0) | None => break,
                Some(n) => n.min(take),
            };
            // SAFETY: the kernel initialised `got` bytes at `ptr`.
            unsafe { out.set_len(old + got) };
            if out[old..].contains(&b'\n') {
                break;
            }
        }
        Ok(out)
    }

    // -- buffered (BufferedReader) --------------------------------------------

    /// `BufferedReader.read(n)` for n > what is buffered.
    fn read_generic(&mut self, n: usize) -> PyResult<Option<Vec<u8>>> {
        let bufsize = self.st.buf.len();
        let mut out = Vec::new();
        reserve(&mut out, n)?;
        out.extend_from_slice(self.have());
        self.reset();
        let mut remaining = n - out.len();
        while remaining > 0 {
            // Whole blocks go straight into the result.
            let r = bufsize * (remaining / bufsize);
            if r == 0 {
                break;
            }
            match self.raw_read_vec(&mut out, r)? {
                Some(0) => return Ok(Some(out)),
                None if out.is_empty() => return Ok(None),
                None => return Ok(Some(out)),
                Some(k) => remaining -= k.min(remaining),
            }
        }
        self.reset();
        // The tail goes through the buffer (which may keep the excess).
        while remaining > 0 && self.st.end < bufsize {
            match self.fill()? {
                Some(0) => return Ok(Some(out)),
                None if out.is_empty() => return Ok(None),
                None => return Ok(Some(out)),
                Some(r) => {
                    let k = r.min(remaining);
                    let pos = self.st.pos;
                    out.extend_from_slice(&self.st.buf[pos..pos + k]);
                    self.st.pos += k;
                    remaining -= k;
                }
            }
        }
        Ok(Some(out))
    }

    fn read_all(&mut self) -> PyResult<Option<Vec<u8>>> {
        let out = self.have().to_vec();
        self.reset();
        self.raw_readall(out)
    }

    fn readline(&mut self, limit: Option<usize>) -> PyResult<Bound<'py, PyBytes>> {
        self.check_open()?;
        if self.st.buf.is_empty() {
            let line = self.raw_readline(limit)?;
            return Ok(PyBytes::new(self.py, &line));
        }
        let mut n = self.st.end - self.st.pos;
        if let Some(limit) = limit {
            n = n.min(limit);
        }
        let pos = self.st.pos;
        if let Some(i) = self.st.buf[pos..pos + n].iter().position(|&b| b == b'\n') {
            return Ok(self.take(i + 1));
        }
        if Some(n) == limit {
            return Ok(self.take(n));
        }
        let mut out = self.st.buf[pos..pos + n].to_vec();
        self.st.pos += n;
        let mut limit = limit.map(|l| l - n);
        loop {
            self.reset();
            let mut n = match self.fill()? {
                Some(0) | None => break,
                Some(n) => n,
            };
            if let Some(limit) = limit {
                n = n.min(limit);
            }
            if let Some(i) = self.st.buf[..n].iter().position(|&b| b == b'\n') {
                out.extend_from_slice(&self.st.buf[..i + 1]);
                self.st.pos = i + 1;
                break;
            }
            out.extend_from_slice(&self.st.buf[..n]);
            if Some(n) == limit {
                self.st.pos = n;
                break;
            }
            self.st.pos = self.st.end;
            limit = limit.map(|l| l - n);
        }
        Ok(PyBytes::new(self.py, &out))
    }

    /// `readinto` / `readinto1` into `len` bytes at `dst`.
    fn readinto(&mut self, dst: *mut u8, len: usize, one: bool) -> PyResult<Option<usize>> {
        self.check_open()?;
        let bufsize = self.st.buf.len();
        if bufsize == 0 {
            if len == 0 {
                return Ok(Some(0));
            }
            return self.raw_read(dst, len, 0);
        }
        let have = self.st.end - self.st.pos;
        let mut written = 0;
        if have > 0 {
            let n = have.min(len);
            // SAFETY: dst has room for len >= n bytes; the regions are distinct.
            let pos = self.st.pos;
            unsafe { std::ptr::copy_nonoverlapping(self.st.buf[pos..pos + n].as_ptr(), dst, n) };
            self.st.pos += n;
            if have >= len {
                return Ok(Some(len));
            }
            written = n;
        }
        self.reset();
        while written < len {
            let remaining = len - written;
            // As BufferedReader: readinto1 may still do one raw read after
            // copying buffered bytes when the rest exceeds the buffer size.
            let n = if remaining > bufsize {
                // SAFETY: written < len.
                self.raw_read(unsafe { dst.add(written) }, remaining, 0)?
            } else if !(one && written > 0) {
                match self.fill()? {
                    Some(k) if k > 0 => {
                        let k = k.min(remaining);
                        let pos = self.st.pos;
                        // SAFETY: k <= remaining bytes of room at dst + written.
                        unsafe {
                            std::ptr::copy_nonoverlapping(
                                self.st.buf[pos..pos + k].as_ptr(),
                                dst.add(written),
                                k,
                            )
                        };
                        self.st.pos += k;
                        written += k;
                        continue;
                    }
                    other => other,
                }
            } else {
                Some(0)
            };
            match n {
                Some(0) => break,
                None if written > 0 => break,
                None => return Ok(None),
                Some(k) => {
                    written += k.min(remaining);
                    if one {
                        break;
                    }
                }
            }
        }
        Ok(Some(written))
    }
}

fn bytes_or_none(py: Python<'_>, data: Option<Vec<u8>>) -> Option<Bound<'_, PyBytes>> {
    data.map(|d| PyBytes::new(py, &d))
}

impl SocketReader {
    fn with<'py, R>(
        &self,
        py: Python<'py>,
        f: impl FnOnce(&mut Rd<'_, 'py>) -> PyResult<R>,
    ) -> PyResult<R> {
        let mut guard = self.state.lock(py, "SocketReader")?;
        let mut rd = Rd {
            py,
            fd: self.fd,
            st: &mut guard,
        };
        f(&mut rd)
    }

    fn check_open(&self, msg: &str) -> PyResult<()> {
        if self.closed.load(Ordering::Acquire) {
            Err(closed_error(msg))
        } else {
            Ok(())
        }
    }

    fn readline_impl<'py>(
        &self,
        py: Python<'py>,
        limit: Option<usize>,
    ) -> PyResult<Bound<'py, PyBytes>> {
        self.with(py, |rd| rd.readline(limit))
    }
}

fn limit_of(size: Option<isize>) -> Option<usize> {
    usize::try_from(size_arg(size)).ok()
}

#[pymethods]
impl SocketReader {
    #[new]
    #[pyo3(signature = (sock, bufsize = -1))]
    fn new(py: Python<'_>, sock: &Bound<'_, PyAny>, bufsize: isize) -> PyResult<Self> {
        let fd: RawFd = sock.call_method0(intern!(py, "fileno"))?.extract()?;
        if fd < 0 {
            return Err(os_error(io::Error::from_raw_os_error(libc::EBADF)));
        }
        let bufsize = usize::try_from(bufsize).unwrap_or(DEFAULT_BUFFER_SIZE);
        let buf = ReadBuf::new(bufsize).ok_or_else(|| {
            PyMemoryError::new_err(format!("cannot allocate a {bufsize}-byte buffer"))
        })?;
        incref_socketios(py, sock)?;
        Ok(SocketReader {
            fd,
            bufsize,
            closed: AtomicBool::new(false),
            state: Locked::new(ReaderState {
                sock: Some(sock.clone().unbind()),
                buf,
                pos: 0,
                end: 0,
                timed_out: false,
            }),
        })
    }

    /// Read up to `size` bytes (all until EOF when negative or None).
    #[pyo3(signature = (size = None))]
    fn read<'py>(
        &self,
        py: Python<'py>,
        size: Option<isize>,
    ) -> PyResult<Option<Bound<'py, PyBytes>>> {
        let size = size_arg(size);
        if size < -1 {
            return Err(PyValueError::new_err(
                "read length must be non-negative or -1",
            ));
        }
        self.with(py, |rd| {
            rd.check_open()?;
            let data = if rd.st.buf.is_empty() {
                if size < 0 {
                    rd.raw_readall(Vec::new())?
                } else {
                    rd.raw_read_n(size as usize)?
                }
            } else if size < 0 {
                rd.read_all()?
            } else {
                let n = size as usize;
                if n <= rd.st.end - rd.st.pos {
                    return Ok(Some(rd.take(n)));
                }
                rd.read_generic(n)?
            };
            Ok(bytes_or_none(py, data))
        })
    }

    /// At most one system call: buffered bytes if any, else one `recv`.
    #[pyo3(signature = (size = None))]
    fn read1<'py>(&self, py: Python<'py>, size: Option<isize>) -> PyResult<Bound<'py, PyBytes>> {
        let bufsize = if self.bufsize == 0 {
            DEFAULT_BUFFER_SIZE
        } else {
            self.bufsize
        };
        let n = usize::try_from(size_arg(size)).unwrap_or(bufsize);
        self.with(py, |rd| {
            rd.check_open()?;
            if n == 0 {
                return Ok(PyBytes::new(py, b""));
            }
            let have = rd.st.end - rd.st.pos;
            if have > 0 {
                return Ok(rd.take(n.min(have)));
            }
            rd.reset();
            let data = rd.raw_read_n(n)?.unwrap_or_default();
            Ok(PyBytes::new(py, &data))
        })
    }

    fn readinto(&self, py: Python<'_>, b: &Bound<'_, PyAny>) -> PyResult<Option<usize>> {
        let buf = get_buffer(b, true)?;
        let (ptr, len) = (buf.buf_ptr().cast::<u8>(), buf.len_bytes());
        let res = self.with(py, |rd| rd.readinto(ptr, len, false));
        buf.release(py);
        res
    }

    fn readinto1(&self, py: Python<'_>, b: &Bound<'_, PyAny>) -> PyResult<Option<usize>> {
        let buf = get_buffer(b, true)?;
        let (ptr, len) = (buf.buf_ptr().cast::<u8>(), buf.len_bytes());
        let res = self.with(py, |rd| rd.readinto(ptr, len, true));
        buf.release(py);
        res
    }

    /// A line including its newline, at most `size` bytes when size >= 0.
    #[pyo3(signature = (size = None))]
    fn readline<'py>(&self, py: Python<'py>, size: Option<isize>) -> PyResult<Bound<'py, PyBytes>> {
        self.readline_impl(py, limit_of(size))
    }

    /// Lines until EOF, or until their total length exceeds `hint` (> 0).
    #[pyo3(signature = (hint = None))]
    fn readlines<'py>(&self, py: Python<'py>, hint: Option<isize>) -> PyResult<Bound<'py, PyList>> {
        let hint = size_arg(hint);
        let lines = PyList::empty(py);
        self.with(py, |rd| {
            let mut total = 0usize;
            loop {
                let line = rd.readline(None)?;
                let n = line.as_bytes().len();
                if n == 0 {
                    break;
                }
                lines.append(line)?;
                total += n;
                if hint > 0 && total > hint as usize {
                    break;
                }
            }
            Ok(())
        })?;
        Ok(lines)
    }

    /// The bytes ahead without consuming them (at least one unless at EOF).
    #[pyo3(signature = (size = 0))]
    fn peek<'py>(&self, py: Python<'py>, size: isize) -> PyResult<Bound<'py, PyBytes>> {
        self.with(py, |rd| {
            rd.check_open()?;
            if rd.st.buf.is_empty() {
                let want = usize::try_from(size)
                    .unwrap_or(0)
                    .clamp(DEFAULT_BUFFER_SIZE, 1 << 16);
                let mut out = Vec::new();
                reserve(&mut out, want)?;
                let got = rd
                    .raw_read(out.as_mut_ptr(), want, libc::MSG_PEEK)?
                    .unwrap_or(0)
                    .min(want);
                // SAFETY: the kernel initialised `got` bytes.
                unsafe { out.set_len(got) };
                return Ok(PyBytes::new(py, &out));
            }
            if rd.st.end > rd.st.pos {
                return Ok(PyBytes::new(py, rd.have()));
            }
            rd.reset();
            rd.fill()?;
            Ok(PyBytes::new(py, rd.have()))
        })
    }

    /// One length-prefixed message (a 4-byte big-endian length, then that
    /// many bytes): its payload, or None when the peer closed before the
    /// first byte of a header.  Reads exactly the message when unbuffered.
    ///
    /// EOFError when the peer closed in the middle of a header or payload.
    /// ValueError when the announced length exceeds max_size; the payload
    /// is not read (nor allocated), so the stream is out of step and the
    /// connection should be closed.
    #[pyo3(signature = (max_size = 16777216))] // 16 MiB, spelled out for the signature
    fn read_message<'py>(
        &self,
        py: Python<'py>,
        max_size: i64,
    ) -> PyResult<Option<Bound<'py, PyBytes>>> {
        let max_size = max_size_arg(max_size)?;
        let body = self.with(py, |rd| rd.read_message(max_size))?;
        Ok(bytes_or_none(py, body))
    }

    fn __iter__(slf: Bound<'_, Self>) -> PyResult<Bound<'_, Self>> {
        slf.get().check_open(CLOSED_FILE)?;
        Ok(slf)
    }

    fn __next__<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyBytes>>> {
        let line = self.readline_impl(py, None)?;
        Ok(if line.as_bytes().is_empty() {
            None
        } else {
            Some(line)
        })
    }

    /// Drops the buffer and releases this file's hold on the socket.
    fn close(&self, py: Python<'_>) -> PyResult<()> {
        let sock = {
            let mut st = self.state.lock(py, "SocketReader")?;
            let sock = st.sock.take();
            st.buf = ReadBuf::empty();
            st.pos = 0;
            st.end = 0;
            self.closed.store(true, Ordering::Release);
            sock
        };
        match sock {
            Some(sock) => decref_socketios(py, &sock),
            None => Ok(()),
        }
    }

    fn flush(&self) -> PyResult<()> {
        self.check_open(CLOSED_FILE)
    }
}

socket_file_methods!(SocketReader, mode = "rb", readable = true);

impl Drop for SocketReader {
    fn drop(&mut self) {
        if let Some(sock) = self.state.get_mut().sock.take() {
            Python::try_attach(|py| {
                if let Err(err) = decref_socketios(py, &sock) {
                    err.write_unraisable(py, Some(sock.bind(py)));
                }
            });
        }
    }
}

// ---------------------------------------------------------------------------
// Writer
// ---------------------------------------------------------------------------

struct WriterState {
    /// `None` once closed.
    sock: Option<Py<PyAny>>,
    /// Pending bytes are `buf[wpos..]` (buffered writers only).
    buf: Vec<u8>,
    wpos: usize,
}

/// `socketserver._SocketWriter` (bufsize 0) or `sock.makefile('wb', bufsize)`.
#[pyclass(frozen, module = "socketserver_rs._core", name = "SocketWriter")]
pub struct SocketWriter {
    fd: RawFd,
    /// 0: every write is a `sendall`.
    bufsize: usize,
    closed: AtomicBool,
    state: Locked<WriterState>,
}

impl WriterState {
    fn sock<'py>(&self, py: Python<'py>, msg: &str) -> PyResult<Bound<'py, PyAny>> {
        match &self.sock {
            Some(sock) => Ok(sock.bind(py).clone()),
            None => Err(closed_error(msg)),
        }
    }

    /// Sends everything pending (`BufferedWriter` flush).
    fn flush_pending(
        &mut self,
        py: Python<'_>,
        sock: &Bound<'_, PyAny>,
        fd: RawFd,
    ) -> PyResult<()> {
        while self.wpos < self.buf.len() {
            match send_once(py, sock, fd, &self.buf[self.wpos..])? {
                Some(n) => self.wpos += n,
                None => {
                    return Err(pyo3::exceptions::PyBlockingIOError::new_err((
                        libc::EAGAIN,
                        "write could not complete without blocking",
                        0,
                    )))
                }
            }
            py.check_signals()?;
        }
        self.buf.clear();
        self.wpos = 0;
        Ok(())
    }
}

impl SocketWriter {
    fn check_open(&self, msg: &str) -> PyResult<()> {
        if self.closed.load(Ordering::Acquire) {
            Err(closed_error(msg))
        } else {
            Ok(())
        }
    }

    fn write_bytes(&self, py: Python<'_>, data: &[u8]) -> PyResult<()> {
        let mut st = self.state.lock(py, "SocketWriter")?;
        let sock = st.sock(py, "write to closed file")?;
        if self.bufsize == 0 {
            // The socket may have been closed under us (no hold on it here,
            // as in the standard library): use its current descriptor.
            let fd: RawFd = sock.call_method0(intern!(py, "fileno"))?.extract()?;
            if fd < 0 {
                return Err(os_error(io::Error::from_raw_os_error(libc::EBADF)));
            }
            drop(st);
            return send_all(py, &sock, fd, data);
        }
        let bufsize = self.bufsize;
        if st.wpos == st.buf.len() {
            st.buf.clear();
            st.wpos = 0;
        }
        if data.len() <= bufsize - st.buf.len().min(bufsize) {
            st.buf.extend_from_slice(data);
            return Ok(());
        }
        st.flush_pending(py, &sock, self.fd)?;
        let mut off = 0;
        while data.len() - off > bufsize {
            match send_once(py, &sock, self.fd, &data[off..])? {
                Some(n) => off += n,
                None => {
                    return Err(pyo3::exceptions::PyBlockingIOError::new_err((
                        libc::EAGAIN,
                        "write could not complete without blocking",
                        off,
                    )))
                }
            }
            py.check_signals()?;
        }
        st.buf.extend_from_slice(&data[off..]);
        Ok(())
    }

    fn write_obj(&self, py: Python<'_>, b: &Bound<'_, PyAny>) -> PyResult<usize> {
        with_bytes(py, b, |data| self.write_bytes(py, data))
    }

    /// `write` of a header and its payload that never splits them into two
    /// sends: buffered when both fit the buffer, else gathered with what is
    /// pending into each `sendmsg`.
    fn write_message_bytes(&self, py: Python<'_>, data: &[u8]) -> PyResult<()> {
        let header = encode_header(data.len()).map_err(PyValueError::new_err)?;
        let mut guard = self.state.lock(py, "SocketWriter")?;
        let sock = guard.sock(py, "write to closed file")?;
        if self.bufsize == 0 {
            let fd: RawFd = sock.call_method0(intern!(py, "fileno"))?.extract()?;
            if fd < 0 {
                return Err(os_error(io::Error::from_raw_os_error(libc::EBADF)));
            }
            drop(guard);
            return send_all_parts(py, &sock, fd, &[&header, data]);
        }
        let st: &mut WriterState = &mut guard;
        let bufsize = self.bufsize;
        if st.wpos == st.buf.len() {
            st.buf.clear();
            st.wpos = 0;
        }
        let total = HEADER_LEN + data.len();
        if total <= bufsize - st.buf.len().min(bufsize) {
            st.buf.extend_from_slice(&header);
            st.buf.extend_from_slice(data);
            return Ok(());
        }
        // Send until nothing is pending and the rest fits the buffer.
        let mut off = 0;
        while st.wpos < st.buf.len() || total - off > bufsize {
            let (head, body) = rest_of(&header, data, off);
            let pending = st.buf.len() - st.wpos;
            let sent = send_parts_once(py, &sock, self.fd, &[&st.buf[st.wpos..], head, body])?;
            let Some(n) = sent else {
                return Err(blocking_write_error(off.saturating_sub(HEADER_LEN)));
            };
            let from_pending = n.min(pending);
            st.wpos += from_pending;
            off += n - from_pending;
            py.check_signals()?;
        }
        st.buf.clear();
        st.wpos = 0;
        let (head, body) = rest_of(&header, data, off);
        st.buf.extend_from_slice(head);
        st.buf.extend_from_slice(body);
        Ok(())
    }
}

/// Runs `f` over the bytes of a bytes-like object; returns their length.
fn with_bytes(
    py: Python<'_>,
    b: &Bound<'_, PyAny>,
    f: impl FnOnce(&[u8]) -> PyResult<()>,
) -> PyResult<usize> {
    let buf = get_buffer(b, false)?;
    let len = buf.len_bytes();
    let ptr = buf.buf_ptr().cast::<u8>().cast_const();
    let data: &[u8] = if len == 0 {
        &[]
    } else {
        // SAFETY: a C-contiguous export of `len` bytes, held until release.
        unsafe { std::slice::from_raw_parts(ptr, len) }
    };
    let res = f(data);
    buf.release(py);
    res.map(|()| len)
}

#[pymethods]
impl SocketWriter {
    #[new]
    #[pyo3(signature = (sock, bufsize = 0))]
    fn new(py: Python<'_>, sock: &Bound<'_, PyAny>, bufsize: isize) -> PyResult<Self> {
        let fd: RawFd = sock.call_method0(intern!(py, "fileno"))?.extract()?;
        if fd < 0 {
            return Err(os_error(io::Error::from_raw_os_error(libc::EBADF)));
        }
        let bufsize = usize::try_from(bufsize).unwrap_or(DEFAULT_BUFFER_SIZE);
        let mut buf = Vec::new();
        reserve(&mut buf, bufsize)?;
        if bufsize != 0 {
            incref_socketios(py, sock)?;
        }
        Ok(SocketWriter {
            fd,
            bufsize,
            closed: AtomicBool::new(false),
            state: Locked::new(WriterState {
                sock: Some(sock.clone().unbind()),
                buf,
                wpos: 0,
            }),
        })
    }

    /// Writes (or buffers) all of `b`; returns its length in bytes.
    fn write(&self, py: Python<'_>, b: &Bound<'_, PyAny>) -> PyResult<usize> {
        self.write_obj(py, b)
    }

    /// Writes `data` as one length-prefixed message (a 4-byte big-endian
    /// length, then the bytes); returns the payload length.  Header and
    /// payload leave in a single send, so a small message is one segment;
    /// with bufsize != 0 both go to the buffer, as write() does.
    ///
    /// ValueError when data is longer than 4 GiB - 1 bytes.
    fn write_message(&self, py: Python<'_>, data: &Bound<'_, PyAny>) -> PyResult<usize> {
        with_bytes(py, data, |bytes| self.write_message_bytes(py, bytes))
    }

    fn writelines(&self, py: Python<'_>, lines: &Bound<'_, PyAny>) -> PyResult<()> {
        self.check_open(CLOSED_FILE)?;
        for line in lines.try_iter()? {
            self.write_obj(py, &line?)?;
        }
        Ok(())
    }

    fn flush(&self, py: Python<'_>) -> PyResult<()> {
        let mut st = self.state.lock(py, "SocketWriter")?;
        let sock = st.sock(py, "flush of closed file")?;
        if self.bufsize != 0 {
            st.flush_pending(py, &sock, self.fd)?;
        }
        Ok(())
    }

    /// Flushes, then releases this file's hold on the socket (even when the
    /// flush fails; its error is raised afterwards).
    fn close(&self, py: Python<'_>) -> PyResult<()> {
        let (flushed, sock) = {
            let mut st = self.state.lock(py, "SocketWriter")?;
            let Some(sock) = st.sock.as_ref().map(|s| s.clone_ref(py)) else {
                return Ok(());
            };
            let flushed = if self.bufsize != 0 {
                st.flush_pending(py, sock.bind(py), self.fd)
            } else {
                Ok(())
            };
            st.sock = None;
            st.buf = Vec::new();
            st.wpos = 0;
            self.closed.store(true, Ordering::Release);
            (flushed, sock)
        };
        let released = if self.bufsize != 0 {
            decref_socketios(py, &sock)
        } else {
            Ok(())
        };
        flushed.and(released)
    }
}

socket_file_methods!(SocketWriter, mode = "wb", readable = false);

impl Drop for SocketWriter {
    fn drop(&mut self) {
        let fd = self.fd;
        let buffered = self.bufsize != 0;
        let st = self.state.get_mut();
        let Some(sock) = st.sock.take() else {
            return;
        };
        if !buffered {
            return;
        }
        Python::try_attach(|py| {
            let bound = sock.bind(py);
            if let Err(err) = st.flush_pending(py, bound, fd) {
                err.write_unraisable(py, Some(bound));
            }
            if let Err(err) = decref_socketios(py, &sock) {
                err.write_unraisable(py, Some(bound));
            }
        });
    }
}

// ---------------------------------------------------------------------------
// Messages over a bare socket
// ---------------------------------------------------------------------------

fn socket_fd(py: Python<'_>, sock: &Bound<'_, PyAny>) -> PyResult<RawFd> {
    let fd: RawFd = sock.call_method0(intern!(py, "fileno"))?.extract()?;
    if fd < 0 {
        return Err(os_error(io::Error::from_raw_os_error(libc::EBADF)));
    }
    Ok(fd)
}

/// Sends `data` over a connected stream socket as one length-prefixed
/// message (header and payload gathered into each send); returns the
/// payload length.  The socket's timeout covers the whole call, as for
/// sendall().
#[pyfunction]
fn send_message(
    py: Python<'_>,
    sock: &Bound<'_, PyAny>,
    data: &Bound<'_, PyAny>,
) -> PyResult<usize> {
    let fd = socket_fd(py, sock)?;
    with_bytes(py, data, |bytes| {
        let header = encode_header(bytes.len()).map_err(PyValueError::new_err)?;
        send_all_parts(py, sock, fd, &[&header, bytes])
    })
}

/// Receives one length-prefixed message from a connected stream socket,
/// reading no byte past it: its payload, or None when the peer closed
/// before the first byte.  EOFError when the peer closed in the middle of
/// a message; ValueError (nothing more read) when the announced length
/// exceeds max_size.  The socket's timeout bounds each wait for data.
#[pyfunction]
#[pyo3(signature = (sock, max_size = 16777216))] // 16 MiB
fn recv_message<'py>(
    py: Python<'py>,
    sock: &Bound<'py, PyAny>,
    max_size: i64,
) -> PyResult<Option<Bound<'py, PyBytes>>> {
    let max_size = max_size_arg(max_size)?;
    let fd = socket_fd(py, sock)?;
    let mut st = ReaderState {
        sock: Some(sock.clone().unbind()),
        buf: ReadBuf::empty(),
        pos: 0,
        end: 0,
        timed_out: false,
    };
    let mut rd = Rd {
        py,
        fd,
        st: &mut st,
    };
    let body = rd.read_message(max_size)?;
    Ok(bytes_or_none(py, body))
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<SocketReader>()?;
    m.add_class::<SocketWriter>()?;
    m.add_function(wrap_pyfunction!(send_message, m)?)?;
    m.add_function(wrap_pyfunction!(recv_message, m)?)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trips() {
        for len in [0, 1, 255, 256, 4096, 5 << 20, u32::MAX as usize] {
            assert_eq!(decode_header(encode_header(len).unwrap()), len);
        }
    }

    #[test]
    fn header_is_big_endian() {
        assert_eq!(encode_header(0x0102_0304).unwrap(), [1, 2, 3, 4]);
        assert_eq!(decode_header([0, 0, 1, 0]), 256);
        assert_eq!(decode_header([0xff; 4]), u32::MAX as usize);
    }

    #[test]
    fn header_refuses_what_does_not_fit() {
        let err = encode_header(u32::MAX as usize + 1).unwrap_err();
        assert!(err.contains("4294967296"), "{err}");
    }

    #[test]
    fn size_limit_is_inclusive_and_names_both_numbers() {
        assert!(check_size(0, 0).is_ok());
        assert!(check_size(16, 16).is_ok());
        let err = check_size(4_000_000_000, 16).unwrap_err();
        assert!(err.contains("4000000000") && err.contains("16"), "{err}");
    }

    #[test]
    fn rest_of_skips_sent_bytes() {
        let header = [1, 2, 3, 4];
        let data = [5, 6, 7];
        assert_eq!(rest_of(&header, &data, 0), (&header[..], &data[..]));
        assert_eq!(rest_of(&header, &data, 3), (&header[3..], &data[..]));
        assert_eq!(rest_of(&header, &data, 5), (&[][..], &data[1..]));
        assert_eq!(rest_of(&header, &data, 7), (&[][..], &[][..]));
    }

    #[test]
    fn parts_after_skips_whole_and_partial_slices() {
        let a = [0u8; 3];
        let b = [0u8; 2];
        let parts = Parts::after(&[&a, &[], &b], 4);
        assert_eq!(parts.count, 1);
        assert_eq!(parts.parts[0].1, 1);
        let parts = Parts::after(&[&a, &b], 0);
        assert_eq!(parts.count, 2);
    }
}
