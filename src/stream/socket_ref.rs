//! The Python socket a stream object works on, and the receive and send
//! calls made on it the way the `socket` module makes them: try once; when
//! the call would block, wait as the socket's timeout says (poll up to the
//! timeout, then raise `socket.timeout`); on EINTR run the signal handlers
//! and retry.  The calls run with the interpreter released.

use std::io::{self, IoSlice};
use std::mem::MaybeUninit;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pyo3::exceptions::PyBlockingIOError;
use pyo3::intern;
use pyo3::prelude::*;

use crate::errors::{os_error, socket_timeout};
use crate::pycall::call_method0;
use crate::stats::IoCounters;
use crate::sys::{self, Interest, MsgFlags, RawSock, MSG_DONTWAIT, MSG_PEEK};

/// A Python socket object and the descriptor to do I/O on.
pub struct SocketRef<'py> {
    sock: Bound<'py, PyAny>,
    fd: RawSock,
    /// The server's byte counters, when the file counts for one.
    counters: Option<Arc<IoCounters>>,
    /// Set when bytes are sent, cleared when bytes arrive: whether the
    /// handler answered what it last received (shared by its rfile and
    /// wfile).
    replied: Option<Arc<AtomicBool>>,
}

impl<'py> SocketRef<'py> {
    /// `sock` at the descriptor its `fileno()` gives now: `OSError(EBADF)`
    /// when the socket is closed.
    pub fn new(sock: &Bound<'py, PyAny>) -> PyResult<Self> {
        let fileno: i64 = call_method0(sock, intern!(sock.py(), "fileno"))?.extract()?;
        let Some(fd) = sys::from_fileno(fileno) else {
            return Err(os_error(io::Error::from_raw_os_error(sys::EBADF)));
        };
        Ok(SocketRef {
            sock: sock.clone(),
            fd,
            counters: None,
            replied: None,
        })
    }

    /// This reference, counting the bytes it moves in `counters`.
    pub fn counting(mut self, counters: Option<Arc<IoCounters>>) -> Self {
        self.counters = counters;
        self
    }

    /// This reference, keeping `replied` (see the field).
    pub fn tracking(mut self, replied: Option<Arc<AtomicBool>>) -> Self {
        self.replied = replied;
        self
    }

    pub fn object(&self) -> &Bound<'py, PyAny> {
        &self.sock
    }

    pub fn py(&self) -> Python<'py> {
        self.sock.py()
    }

    /// How a call that would block waits, from `sock.gettimeout()`.
    fn wait_mode(&self) -> PyResult<Wait> {
        let timeout = call_method0(&self.sock, intern!(self.py(), "gettimeout"))?;
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

    /// Runs `op` (a receive or send taking extra flags) as the socket
    /// module does.  `Ok(None)`: it would block and the socket is
    /// non-blocking (timeout 0).
    fn call<F>(
        &self,
        interest: Interest,
        wait: &mut Wait,
        mut op: F,
    ) -> Result<Option<usize>, IoFail>
    where
        F: FnMut(MsgFlags) -> io::Result<usize> + Send,
    {
        let py = self.py();
        let fd = self.fd;
        loop {
            let how = *wait;
            let op = &mut op;
            let step = crate::detach::detach(py, move || match how {
                // A socket without a timeout has a blocking descriptor and one
                // with a timeout a non-blocking one (the socket module keeps
                // them so), so the first try needs no flag: it blocks exactly
                // when the socket would, and asks for the timeout only then.
                Wait::Unknown => Step::from(op(0)),
                Wait::NonBlocking => Step::from(op(MSG_DONTWAIT)),
                Wait::Forever => match Step::from(op(0)) {
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
                        Step::Done(_) => match Step::from(op(MSG_DONTWAIT)) {
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
                        *wait = self.wait_mode()?;
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

    /// One `recv` into `buf` with `SocketIO.readinto` semantics: `Some(0)`
    /// at EOF, `None` when it would block; the first that many bytes of
    /// `buf` are then initialised.  The socket's timeout bounds this call.
    pub fn recv(
        &self,
        buf: &mut [MaybeUninit<u8>],
        flags: MsgFlags,
    ) -> Result<Option<usize>, IoFail> {
        let fd = self.fd;
        let mut wait = Wait::Unknown;
        let received = self.call(Interest::Readable, &mut wait, |extra| {
            sys::recv(fd, buf, flags | extra)
        });
        if let (Some(counters), Ok(Some(n))) = (&self.counters, &received) {
            if flags & MSG_PEEK == 0 {
                counters.received(*n);
            }
        }
        if let (Some(replied), Ok(Some(1..))) = (&self.replied, &received) {
            replied.store(false, Ordering::Release);
        }
        received
    }

    /// One send of `parts`, gathered (`None`: it would block).
    fn send_step(&self, parts: Parts<'_>, wait: &mut Wait) -> Result<Option<usize>, IoFail> {
        let sent = self.send_step_uncounted(parts, wait);
        if let (Some(counters), Ok(Some(n))) = (&self.counters, &sent) {
            counters.sent(*n);
        }
        if let (Some(replied), Ok(Some(1..))) = (&self.replied, &sent) {
            replied.store(true, Ordering::Release);
        }
        sent
    }

    fn send_step_uncounted(
        &self,
        parts: Parts<'_>,
        wait: &mut Wait,
    ) -> Result<Option<usize>, IoFail> {
        let slices = parts.io_slices();
        let slices = slices.as_slice();
        let fd = self.fd;
        // Even a small send releases the GIL, as the socket module's does: on
        // loopback it carries the segment to the peer, and a thread holding
        // the GIL through that keeps every other connection's thread waiting.
        self.call(Interest::Writable, wait, |flags| {
            sys::send_vectored(fd, slices, flags)
        })
    }

    /// One send of `parts`, gathered, with `SocketIO.write` semantics
    /// (`None`: it would block); the socket's timeout bounds this one call.
    pub fn send_once(&self, parts: Parts<'_>) -> PyResult<Option<usize>> {
        let mut wait = Wait::Unknown;
        self.send_step(parts, &mut wait)
            .map_err(|fail| fail.into_py(self.py()))
    }

    /// `sock.sendall()` of `parts` back to back, gathered into each send so
    /// that a small header and its payload leave in one segment.  The
    /// timeout covers the whole call; signal handlers run between partial
    /// sends.
    pub fn send_all(&self, parts: Parts<'_>) -> PyResult<()> {
        let py = self.py();
        let total = parts.len();
        let mut wait = Wait::Unknown;
        let mut sent = 0;
        while sent < total {
            match self.send_step(parts.after(sent), &mut wait) {
                Ok(Some(n)) => sent += n,
                Ok(None) => return Err(would_block_error()),
                Err(fail) => return Err(fail.into_py(py)),
            }
            if sent < total {
                py.check_signals()?;
            }
        }
        Ok(())
    }
}

/// A socket that a file object holds, at the descriptor it had when the
/// file was made (a file object that counts itself in the socket's
/// `_io_refs` keeps that descriptor open, as `socket.makefile()` does).
pub struct HeldSocket {
    sock: Py<PyAny>,
    fd: RawSock,
    counted: bool,
    counters: Option<Arc<IoCounters>>,
    replied: Option<Arc<AtomicBool>>,
}

impl HeldSocket {
    /// Takes hold of `sock`; with `count`, as one of its `_io_refs`.
    pub fn new(sock: &SocketRef<'_>, count: bool) -> PyResult<Self> {
        if count {
            let name = intern!(sock.py(), "_io_refs");
            let refs = sock.sock.getattr(name)?;
            sock.sock.setattr(name, refs.add(1)?)?;
        }
        Ok(HeldSocket {
            sock: sock.sock.clone().unbind(),
            fd: sock.fd,
            counted: count,
            counters: sock.counters.clone(),
            replied: sock.replied.clone(),
        })
    }

    /// The socket to do I/O on, or `OSError(EBADF)` once it no longer has
    /// the descriptor this holds (detached, or really closed): the number
    /// may then belong to another socket or file. The standard library's
    /// files go through the socket object each time, and fail the same way.
    pub fn bind<'py>(&self, py: Python<'py>) -> PyResult<SocketRef<'py>> {
        let sock = SocketRef::new(self.sock.bind(py))?;
        if sock.fd != self.fd {
            return Err(os_error(io::Error::from_raw_os_error(sys::EBADF)));
        }
        Ok(sock
            .counting(self.counters.clone())
            .tracking(self.replied.clone()))
    }

    /// The socket object itself.
    pub fn object<'py>(&self, py: Python<'py>) -> &Bound<'py, PyAny> {
        self.sock.bind(py)
    }

    /// Lets go of the socket: it closes now if it was closed meanwhile.
    pub fn release(&self, py: Python<'_>) -> PyResult<()> {
        if !self.counted {
            return Ok(());
        }
        call_method0(self.sock.bind(py), intern!(py, "_decref_socketios")).map(drop)
    }
}

/// Most slices gathered into one send.
const MAX_PARTS: usize = 3;

/// Byte slices sent back to back (at most `MAX_PARTS`).
#[derive(Clone, Copy)]
pub struct Parts<'a> {
    slices: [&'a [u8]; MAX_PARTS],
    count: usize,
}

impl<'a> Parts<'a> {
    pub fn new(slices: &[&'a [u8]]) -> Self {
        let mut parts = Parts {
            slices: [&[]; MAX_PARTS],
            count: 0,
        };
        for slice in slices {
            parts = parts.with(slice);
        }
        parts
    }

    /// These parts followed by `slice` (an empty one is left out).
    fn with(mut self, slice: &'a [u8]) -> Self {
        if !slice.is_empty() {
            assert!(self.count < MAX_PARTS, "too many parts for one send");
            self.slices[self.count] = slice;
            self.count += 1;
        }
        self
    }

    /// `front` followed by these parts.
    pub fn behind(self, front: &'a [u8]) -> Self {
        let mut parts = Parts::new(&[front]);
        for slice in self.as_slices() {
            parts = parts.with(slice);
        }
        parts
    }

    pub fn as_slices(&self) -> &[&'a [u8]] {
        &self.slices[..self.count]
    }

    /// Their total length.
    pub fn len(&self) -> usize {
        self.as_slices().iter().map(|s| s.len()).sum()
    }

    /// What is left of them once `skip` bytes were sent.
    pub fn after(self, mut skip: usize) -> Self {
        let mut rest = Parts::new(&[]);
        for slice in self.as_slices() {
            if skip >= slice.len() {
                skip -= slice.len();
                continue;
            }
            rest = rest.with(&slice[skip..]);
            skip = 0;
        }
        rest
    }

    fn io_slices(&self) -> IoSlices<'a> {
        IoSlices {
            slices: self.slices.map(IoSlice::new),
            count: self.count,
        }
    }
}

/// `Parts` as sendmsg(2) takes them.
struct IoSlices<'a> {
    slices: [IoSlice<'a>; MAX_PARTS],
    count: usize,
}

impl<'a> IoSlices<'a> {
    fn as_slice(&self) -> &[IoSlice<'a>] {
        &self.slices[..self.count]
    }
}

/// How a call that would block waits: learnt from `sock.gettimeout()` the
/// first time it would block.
#[derive(Clone, Copy)]
enum Wait {
    Unknown,
    Forever,
    NonBlocking,
    Until(Instant),
}

/// Outcome of one system call (or one wait-then-call round).
enum Step {
    Done(usize),
    Again,
    Intr,
    TimedOut,
    Fail(io::Error),
}

impl From<io::Result<usize>> for Step {
    fn from(result: io::Result<usize>) -> Step {
        match result {
            Ok(n) => Step::Done(n),
            Err(err) => match err.kind() {
                io::ErrorKind::Interrupted => Step::Intr,
                io::ErrorKind::WouldBlock => Step::Again,
                _ => Step::Fail(err),
            },
        }
    }
}

/// Waits until `fd` is ready for `interest` or `timeout` passes (`None`:
/// no limit); `Done(0)` when the time ran out.
fn wait_ready(fd: RawSock, interest: Interest, timeout: Option<Duration>) -> Step {
    Step::from(sys::poll([(fd, interest)], timeout).map(|[ready]| usize::from(!ready.is_empty())))
}

/// Why a call did not complete.
pub enum IoFail {
    /// The socket's timeout passed.
    Timeout,
    Py(PyErr),
}

impl IoFail {
    pub fn into_py(self, py: Python<'_>) -> PyErr {
        match self {
            IoFail::Timeout => socket_timeout(py),
            IoFail::Py(err) => err,
        }
    }
}

impl From<PyErr> for IoFail {
    fn from(err: PyErr) -> Self {
        IoFail::Py(err)
    }
}

/// `BlockingIOError(EAGAIN)`, as a call on a non-blocking socket raises.
pub fn would_block_error() -> PyErr {
    os_error(io::Error::from_raw_os_error(sys::EAGAIN))
}

/// `BlockingIOError` of a buffered write that took `written` bytes of its
/// argument before it would block.
pub fn blocking_write_error(written: usize) -> PyErr {
    PyBlockingIOError::new_err((
        sys::EAGAIN,
        "write could not complete without blocking",
        written,
    ))
}

#[cfg(test)]
mod tests {
    use super::Parts;

    fn lens(parts: Parts<'_>) -> Vec<usize> {
        parts.as_slices().iter().map(|s| s.len()).collect()
    }

    #[test]
    fn parts_after_skips_whole_and_partial_slices() {
        let a = [1u8; 3];
        let b = [2u8; 2];
        let parts = Parts::new(&[&a, &[], &b]);
        assert_eq!(parts.len(), 5);
        assert_eq!(lens(parts.after(0)), [3, 2]);
        assert_eq!(lens(parts.after(4)), [1]);
        assert_eq!(parts.after(4).as_slices()[0], &[2]);
        assert_eq!(lens(parts.after(5)), Vec::<usize>::new());
    }

    #[test]
    fn parts_behind_a_front() {
        let parts = Parts::new(&[b"head", b"body"]).after(2);
        assert_eq!(
            parts.behind(b"pending").as_slices(),
            [&b"pending"[..], b"ad", b"body"]
        );
        assert_eq!(parts.behind(b"").as_slices(), [&b"ad"[..], b"body"]);
    }
}
