//! How a `SocketReader` reads: the algorithms of `socket.SocketIO`
//! (unbuffered) and `io.BufferedReader` over the reader's locked state, and
//! one length-prefixed message.  Received bytes go straight into their
//! destination (the read-ahead buffer, the result, or the caller's buffer),
//! uninitialised until the kernel writes them.

use std::mem::MaybeUninit;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use memchr::memchr;
use pyo3::exceptions::{PyMemoryError, PyOSError};
use pyo3::prelude::*;
use pyo3::types::PyBytes;

use super::codec::{self, FrameError, HEADER_LEN};
use super::socket_ref::{would_block_error, HeldSocket, IoFail, SocketRef};
use super::{closed_error, default_buffer_size, reserve};
use crate::readbuf::ReadBuf;
use crate::socket_file::CLOSED_FILE;
use crate::sys::{MsgFlags, MSG_PEEK};

pub struct ReaderState {
    /// `None` once closed.
    pub sock: Option<HeldSocket>,
    /// The buffer (`bufsize` bytes; empty when unbuffered); `buf[pos..end]`
    /// holds the bytes read ahead.
    pub buf: ReadBuf,
    pub pos: usize,
    pub end: usize,
    timed_out: bool,
    /// Set while a read waits at a request boundary (see `Rd::at_boundary`).
    pub idle: Arc<AtomicBool>,
    /// Whether the handler sent something since bytes last arrived (see
    /// `SocketRef`); true until the first bytes arrive.
    pub replied: Arc<AtomicBool>,
}

impl ReaderState {
    pub fn new(sock: HeldSocket, buf: ReadBuf, replied: Arc<AtomicBool>) -> Self {
        ReaderState {
            sock: Some(sock),
            buf,
            pos: 0,
            end: 0,
            timed_out: false,
            idle: Arc::new(AtomicBool::new(false)),
            replied,
        }
    }
}

/// Which read `Rd::read_appending` makes.
enum ReadKind {
    /// One `recv` with these flags.
    Recv(MsgFlags),
    /// Until the length asked for, or EOF.
    Full,
}

/// `dst[..src.len()]` = `src`.
fn copy_to(dst: &mut [MaybeUninit<u8>], src: &[u8]) {
    for (slot, &byte) in dst.iter_mut().zip(src) {
        slot.write(byte);
    }
}

/// What the reader methods work on while holding the lock.
pub struct Rd<'a, 'py> {
    pub py: Python<'py>,
    pub st: &'a mut ReaderState,
}

/// One `recv` for a reader: once its socket's timeout expired, it reads no
/// more (as `SocketIO`).
fn recv(
    py: Python<'_>,
    sock: Option<&HeldSocket>,
    timed_out: &mut bool,
    dst: &mut [MaybeUninit<u8>],
    flags: MsgFlags,
) -> PyResult<Option<usize>> {
    if *timed_out {
        return Err(PyOSError::new_err("cannot read from timed out object"));
    }
    let sock = sock.ok_or_else(|| closed_error(CLOSED_FILE))?.bind(py)?;
    match sock.recv(dst, flags) {
        Ok(n) => Ok(n),
        Err(IoFail::Timeout) => {
            *timed_out = true;
            Err(IoFail::Timeout.into_py(py))
        }
        Err(IoFail::Py(err)) => Err(err),
    }
}

impl<'py> Rd<'_, 'py> {
    /// Run `read` marked idle when nothing is buffered and the handler
    /// answered what it last received: a handler waiting there (at the
    /// start of a line or a message) is between requests. One that has not
    /// answered yet waits for the rest of a request (its second line, say).
    fn at_boundary<T>(&mut self, read: impl FnOnce(&mut Self) -> PyResult<T>) -> PyResult<T> {
        let idle = self.st.pos == self.st.end && self.st.replied.load(Ordering::Acquire);
        if idle {
            self.st.idle.store(true, Ordering::Release);
        }
        let result = read(self);
        if idle {
            self.st.idle.store(false, Ordering::Release);
        }
        result
    }

    pub fn check_open(&self) -> PyResult<()> {
        if self.st.sock.is_some() {
            Ok(())
        } else {
            Err(closed_error(CLOSED_FILE))
        }
    }

    /// One `recv` into `dst` with `SocketIO.readinto` semantics: `Some(0)`
    /// at EOF, `None` when it would block; that many bytes at the start of
    /// `dst` are then initialised.
    fn raw_read(
        &mut self,
        dst: &mut [MaybeUninit<u8>],
        flags: MsgFlags,
    ) -> PyResult<Option<usize>> {
        recv(
            self.py,
            self.st.sock.as_ref(),
            &mut self.st.timed_out,
            dst,
            flags,
        )
    }

    /// Reads at most `len` bytes onto the end of `out`.
    fn read_appending(
        &mut self,
        out: &mut Vec<u8>,
        len: usize,
        kind: ReadKind,
    ) -> PyResult<Option<usize>> {
        reserve(out, len)?;
        let spare = &mut out.spare_capacity_mut()[..len];
        let got = match kind {
            ReadKind::Recv(flags) => self.raw_read(spare, flags)?,
            ReadKind::Full => Some(self.read_full(spare)?),
        };
        if let Some(n) = got {
            // SAFETY: `raw_read` and `read_full` report how many bytes they
            // wrote at the start of `spare`, which is `len` bytes of `out`'s
            // spare capacity; `n <= len`.
            unsafe { out.set_len(out.len() + n.min(len)) };
        }
        Ok(got)
    }

    /// Reads into `buf[end..]`.
    pub fn fill(&mut self) -> PyResult<Option<usize>> {
        let st = &mut *self.st;
        let start = st.end;
        let spare = st.buf.spare_mut(start);
        let room = spare.len();
        let res = recv(self.py, st.sock.as_ref(), &mut st.timed_out, spare, 0)?;
        if let Some(n) = res {
            st.end += n.min(room);
            st.buf.mark_filled(st.end);
        }
        Ok(res)
    }

    pub fn reset(&mut self) {
        self.st.pos = 0;
        self.st.end = 0;
    }

    pub fn have(&self) -> &[u8] {
        &self.st.buf[self.st.pos..self.st.end]
    }

    pub fn take(&mut self, n: usize) -> Bound<'py, PyBytes> {
        let start = self.st.pos;
        self.st.pos += n;
        PyBytes::new(self.py, &self.st.buf[start..start + n])
    }

    // -- messages -------------------------------------------------------------

    /// Reads until `dst` is full or the peer closed; how many bytes arrived
    /// (at the start of `dst`).  Unbuffered, it receives exactly what is
    /// asked, no more.
    fn read_full(&mut self, dst: &mut [MaybeUninit<u8>]) -> PyResult<usize> {
        let len = dst.len();
        let mut got = 0;
        while got < len {
            match self.readinto(&mut dst[got..], false)? {
                Some(0) => break,
                Some(n) => got += n.min(len - got),
                None => return Err(would_block_error()),
            }
        }
        Ok(got)
    }

    /// One length-prefixed message: `None` when the peer closed before its
    /// first byte.
    pub fn read_message(&mut self, max_size: usize) -> PyResult<Option<Vec<u8>>> {
        self.check_open()?;
        let mut header = Vec::new();
        self.at_boundary(|rd| rd.read_appending(&mut header, HEADER_LEN, ReadKind::Full))?;
        if header.is_empty() {
            return Ok(None);
        }
        let len = codec::decode_header(&header, max_size)?;
        let mut body: Vec<u8> = Vec::new();
        while body.len() < len {
            let want = codec::body_step(body.len(), len);
            body.try_reserve_exact(want)
                .map_err(|_| PyMemoryError::new_err(()))?;
            let got = self
                .read_appending(&mut body, want, ReadKind::Full)?
                .unwrap_or(0);
            if got < want {
                let got = body.len();
                return Err(FrameError::TruncatedBody { got, len }.into());
            }
        }
        Ok(Some(body))
    }

    // -- unbuffered (SocketIO) ------------------------------------------------

    pub fn raw_read_n(&mut self, n: usize) -> PyResult<Option<Vec<u8>>> {
        let mut out = Vec::new();
        if n == 0 {
            self.check_open()?;
            return Ok(Some(out));
        }
        Ok(self
            .read_appending(&mut out, n, ReadKind::Recv(0))?
            .map(|_| out))
    }

    /// `RawIOBase.readall`.
    pub fn raw_readall(&mut self, mut out: Vec<u8>) -> PyResult<Option<Vec<u8>>> {
        let mut chunk = default_buffer_size();
        loop {
            match self.read_appending(&mut out, chunk, ReadKind::Recv(0))? {
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
    /// newline: peek, then receive exactly up to it. A step looks at no
    /// more than a buffer's worth: `limit` bounds the line, it is not what
    /// to expect (`sys.maxsize` is a common "no limit"), so the line grows
    /// with what arrives.
    fn raw_readline(&mut self, limit: Option<usize>) -> PyResult<Vec<u8>> {
        let mut out = Vec::new();
        loop {
            let step = default_buffer_size();
            let want = limit.map_or(step, |limit| (limit - out.len()).min(step));
            if want == 0 {
                self.check_open()?;
                break;
            }
            let old = out.len();
            let peek = |rd: &mut Self, out: &mut Vec<u8>| {
                rd.read_appending(out, want, ReadKind::Recv(MSG_PEEK))
            };
            let peeked = if old == 0 {
                self.at_boundary(|rd| peek(rd, &mut out))?
            } else {
                peek(self, &mut out)?
            };
            let peeked = match peeked {
                Some(0) => break,
                // IOBase.readline over a non-blocking raw stream.
                None => {
                    return Err(PyOSError::new_err(
                        "read() should have returned a bytes object, not 'NoneType'",
                    ))
                }
                Some(n) => n.min(want),
            };
            let take = memchr(b'\n', &out[old..]).map_or(peeked, |i| i + 1);
            out.truncate(old);
            match self.read_appending(&mut out, take, ReadKind::Recv(0))? {
                Some(0) | None => break,
                Some(_) => {}
            }
            if memchr(b'\n', &out[old..]).is_some() {
                break;
            }
        }
        Ok(out)
    }

    /// `peek()` of an unbuffered reader: what one `recv` would return.
    pub fn raw_peek(&mut self, size: usize) -> PyResult<Vec<u8>> {
        let least = default_buffer_size();
        let want = size.clamp(least, least.max(1 << 16));
        let mut out = Vec::new();
        self.read_appending(&mut out, want, ReadKind::Recv(MSG_PEEK))?;
        Ok(out)
    }

    // -- buffered (BufferedReader) --------------------------------------------

    /// `BufferedReader.read(n)` for n > what is buffered.
    pub fn read_generic(&mut self, n: usize) -> PyResult<Option<Vec<u8>>> {
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
            match self.read_appending(&mut out, r, ReadKind::Recv(0))? {
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

    pub fn read_all(&mut self) -> PyResult<Option<Vec<u8>>> {
        let out = self.have().to_vec();
        self.reset();
        self.raw_readall(out)
    }

    pub fn readline(&mut self, limit: Option<usize>) -> PyResult<Bound<'py, PyBytes>> {
        self.check_open()?;
        if self.st.buf.is_empty() {
            let line = self.raw_readline(limit)?;
            return Ok(PyBytes::new(self.py, &line));
        }
        if self.st.pos == self.st.end && limit != Some(0) {
            // Nothing buffered: wait for the line's first bytes, idle.
            self.reset();
            if matches!(self.at_boundary(|rd| rd.fill())?, Some(0) | None) {
                return Ok(PyBytes::new(self.py, b""));
            }
        }
        let mut n = self.st.end - self.st.pos;
        if let Some(limit) = limit {
            n = n.min(limit);
        }
        let pos = self.st.pos;
        if let Some(i) = memchr(b'\n', &self.st.buf[pos..pos + n]) {
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
            if let Some(i) = memchr(b'\n', &self.st.buf[..n]) {
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

    /// `readinto` / `readinto1` into `dst`: how many bytes were written at
    /// its start.
    pub fn readinto(&mut self, dst: &mut [MaybeUninit<u8>], one: bool) -> PyResult<Option<usize>> {
        self.check_open()?;
        let len = dst.len();
        let bufsize = self.st.buf.len();
        if bufsize == 0 {
            if len == 0 {
                return Ok(Some(0));
            }
            return self.raw_read(dst, 0);
        }
        let have = self.st.end - self.st.pos;
        let mut written = 0;
        if have > 0 {
            let n = have.min(len);
            let pos = self.st.pos;
            copy_to(dst, &self.st.buf[pos..pos + n]);
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
                self.raw_read(&mut dst[written..], 0)?
            } else if !(one && written > 0) {
                match self.fill()? {
                    Some(k) if k > 0 => {
                        let k = k.min(remaining);
                        let pos = self.st.pos;
                        copy_to(&mut dst[written..], &self.st.buf[pos..pos + k]);
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

/// The reader `recv_message` uses over a bare socket: unbuffered, so that
/// no byte past the message is read.
pub fn read_message_from(sock: &SocketRef<'_>, max_size: usize) -> PyResult<Option<Vec<u8>>> {
    let replied = Arc::new(AtomicBool::new(true));
    let mut st = ReaderState::new(HeldSocket::new(sock, false)?, ReadBuf::empty(), replied);
    let mut rd = Rd {
        py: sock.py(),
        st: &mut st,
    };
    rd.read_message(max_size)
}
