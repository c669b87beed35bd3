//! `SocketReader`: `sock.makefile('rb', bufsize)` in Rust, the rfile of a
//! stream handler.  The reading itself is in `reading.rs`.

use crate::locks::Lock;
use crate::pycall::call_method0;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use pyo3::exceptions::{PyMemoryError, PyValueError};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList, PyTuple};

use super::codec::{self, max_size_arg};
use super::lock::Locked;
use super::reading::{Rd, ReaderState};
use super::socket_ref::{HeldSocket, SocketRef};
use super::{bytes_or_none, closed_error, default_buffer_size, with_writable};
use crate::readbuf::ReadBuf;
use crate::socket_file::{socket_file_methods, unsupported, CLOSED_FILE};

/// What `SocketIO.write()` of a reading socket file raises.
const NOT_WRITABLE: &str = "File or stream is not writable.";
use crate::stats::ServerStats;

/// `sock.makefile('rb', bufsize)` in Rust.
#[pyclass(frozen, module = "socketserver_rs._core", name = "SocketReader")]
pub struct SocketReader {
    /// True while a read waits with nothing buffered at the start of a line
    /// or a message, after the handler answered what it received: the
    /// handler is between requests (`drain()` uses it).
    idle: Arc<AtomicBool>,
    /// Whether the handler answered what it last received (a writer made
    /// with this reader sets it; see `SocketRef`).
    replied: Arc<AtomicBool>,
    /// The Python socket (`_sock`), and `raw` once asked for.
    socket: Py<PyAny>,
    raw: Lock<Option<Py<PyAny>>>,
    bufsize: usize,
    closed: AtomicBool,
    state: Locked<ReaderState>,
}

fn size_arg(size: Option<isize>) -> isize {
    size.unwrap_or(-1)
}

fn limit_of(size: Option<isize>) -> Option<usize> {
    usize::try_from(size_arg(size)).ok()
}

impl SocketReader {
    fn with<'py, R>(
        &self,
        py: Python<'py>,
        f: impl FnOnce(&mut Rd<'_, 'py>) -> PyResult<R>,
    ) -> PyResult<R> {
        let mut guard = self.state.lock(py, "SocketReader")?;
        let mut rd = Rd { py, st: &mut guard };
        f(&mut rd)
    }

    fn check_open(&self, msg: &str) -> PyResult<()> {
        if self.closed.load(Ordering::Acquire) {
            Err(closed_error(msg))
        } else {
            Ok(())
        }
    }

    /// Refuse `op` on a closed file with the message the io classes give:
    /// `BufferedReader` names the operation, `SocketIO` (bufsize 0) does not.
    fn check_open_for(&self, op: &str) -> PyResult<()> {
        if !self.closed.load(Ordering::Acquire) {
            return Ok(());
        }
        if self.bufsize == 0 {
            return Err(closed_error(CLOSED_FILE));
        }
        Err(closed_error(&format!("{op} of closed file")))
    }

    /// This file's part of `close()`: drop the buffer and release the hold
    /// on the socket.
    fn finish(&self, py: Python<'_>) -> PyResult<()> {
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
            Some(sock) => sock.release(py),
            None => Ok(()),
        }
    }

    fn fileno_now(&self, py: Python<'_>) -> PyResult<i64> {
        self.check_open(CLOSED_FILE)?;
        call_method0(self.socket.bind(py), intern!(py, "fileno"))?.extract()
    }

    fn readline_impl<'py>(
        &self,
        py: Python<'py>,
        limit: Option<usize>,
    ) -> PyResult<Bound<'py, PyBytes>> {
        self.with(py, |rd| rd.readline(limit))
    }

    fn readinto_impl(
        &self,
        py: Python<'_>,
        b: &Bound<'_, PyAny>,
        one: bool,
    ) -> PyResult<Option<usize>> {
        if self.bufsize == 0 {
            // SocketIO looks whether it is closed first.
            self.check_open_for("readinto")?;
        }
        // BufferedReader takes the buffer first.
        with_writable(py, b, |dst| {
            self.check_open_for("readinto")?;
            self.with(py, |rd| rd.readinto(dst, one))
        })
    }
}

#[pymethods]
impl SocketReader {
    #[new]
    /// `stats`: the server's counters, which then count the bytes received.
    #[pyo3(signature = (sock, bufsize = -1, stats = None))]
    fn new(
        sock: &Bound<'_, PyAny>,
        bufsize: isize,
        stats: Option<&Bound<'_, ServerStats>>,
    ) -> PyResult<Self> {
        let replied = Arc::new(AtomicBool::new(true));
        let sock = SocketRef::new(sock)?
            .counting(stats.map(|stats| stats.get().io()))
            .tracking(Some(Arc::clone(&replied)));
        let bufsize = usize::try_from(bufsize).unwrap_or(default_buffer_size());
        let buf = ReadBuf::new(bufsize).ok_or_else(|| {
            PyMemoryError::new_err(format!("cannot allocate a {bufsize}-byte buffer"))
        })?;
        let held = HeldSocket::new(&sock, true)?;
        let state = ReaderState::new(held, buf, replied);
        Ok(SocketReader {
            socket: sock.object().clone().unbind(),
            raw: Lock::new(None),
            bufsize,
            closed: AtomicBool::new(false),
            idle: Arc::clone(&state.idle),
            replied: Arc::clone(&state.replied),
            state: Locked::new(state),
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
        // SocketIO (bufsize 0) reads all for any negative size, as
        // RawIOBase.read does; BufferedReader refuses below -1, before it
        // looks whether it is closed.
        if size < -1 && self.bufsize != 0 {
            return Err(PyValueError::new_err(
                "read length must be non-negative or -1",
            ));
        }
        self.check_open_for("read")?;
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
        self.check_open_for("read")?;
        let bufsize = if self.bufsize == 0 {
            default_buffer_size()
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
        self.readinto_impl(py, b, false)
    }

    fn readinto1(&self, py: Python<'_>, b: &Bound<'_, PyAny>) -> PyResult<Option<usize>> {
        self.readinto_impl(py, b, true)
    }

    /// A line including its newline, at most `size` bytes when size >= 0.
    #[pyo3(signature = (size = None))]
    fn readline<'py>(&self, py: Python<'py>, size: Option<isize>) -> PyResult<Bound<'py, PyBytes>> {
        self.check_open_for("readline")?;
        self.readline_impl(py, limit_of(size))
    }

    /// Lines until EOF, or until their total length exceeds `hint` (> 0).
    #[pyo3(signature = (hint = None))]
    fn readlines<'py>(&self, py: Python<'py>, hint: Option<isize>) -> PyResult<Bound<'py, PyList>> {
        self.check_open(CLOSED_FILE)?;
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
        self.check_open_for("peek")?;
        self.with(py, |rd| {
            rd.check_open()?;
            if rd.st.buf.is_empty() {
                let ahead = rd.raw_peek(usize::try_from(size).unwrap_or(0))?;
                return Ok(PyBytes::new(py, &ahead));
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
    #[pyo3(signature = (max_size = codec::DEFAULT_MAX_SIZE as i64))]
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
        self.check_open_for("readline")?;
        let line = self.readline_impl(py, None)?;
        Ok(if line.as_bytes().is_empty() {
            None
        } else {
            Some(line)
        })
    }

    fn flush(&self) -> PyResult<()> {
        self.check_open(CLOSED_FILE)
    }

    /// Not writable: `io.UnsupportedOperation`, as `BufferedReader` raises
    /// it (closed or not), or `SocketIO` (bufsize 0; a closed one refuses
    /// first).
    #[pyo3(signature = (*_args))]
    fn write(&self, py: Python<'_>, _args: &Bound<'_, PyTuple>) -> PyResult<()> {
        if self.bufsize == 0 {
            self.check_open(CLOSED_FILE)?;
            return Err(unsupported(py, NOT_WRITABLE));
        }
        Err(unsupported(py, "write"))
    }

    #[pyo3(signature = (*_args))]
    fn writelines(&self, py: Python<'_>, _args: &Bound<'_, PyTuple>) -> PyResult<()> {
        self.check_open(CLOSED_FILE)?;
        let what = if self.bufsize == 0 {
            NOT_WRITABLE
        } else {
            "write"
        };
        Err(unsupported(py, what))
    }

    /// Whether a read is waiting, with nothing buffered, for the start of a
    /// line (readline, iteration) or of a message (read_message), after the
    /// handler's reply went out through a writer made with this reader.
    #[getter]
    fn idle(&self) -> bool {
        self.idle.load(Ordering::Acquire)
    }
}

impl SocketReader {
    pub fn replied(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.replied)
    }
}

socket_file_methods!(SocketReader, mode = "rb", readable = true);

impl Drop for SocketReader {
    fn drop(&mut self) {
        if let Some(sock) = self.state.get_mut().sock.take() {
            Python::try_attach(|py| {
                if let Err(err) = sock.release(py) {
                    err.write_unraisable(py, Some(sock.object(py)));
                }
            });
        }
    }
}
