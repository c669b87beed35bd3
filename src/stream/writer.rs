//! `SocketWriter`: `socketserver._SocketWriter` (bufsize 0: every write is
//! a `sendall`) or `sock.makefile('wb', bufsize)` (a `BufferedWriter`), the
//! wfile of a stream handler.  A plain write and a length-prefixed message
//! take one path: a message is its header and payload written as one.

use crate::locks::Lock;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyList, PyTuple};

use super::codec::{self, HEADER_LEN};
use super::lock::Locked;
use super::reader::SocketReader;
use super::socket_ref::{blocking_write_error, HeldSocket, Parts, SocketRef};
use super::{closed_error, default_buffer_size, full_buffer_writes_through, reserve, with_bytes};
use crate::pycall::call_method0;
use crate::socket_file::{socket_file_methods, unsupported, CLOSED_FILE};
use crate::stats::{IoCounters, ServerStats};

/// About the most bytes `writelines()` gathers into one send.
const GATHER_LIMIT: usize = 64 * 1024;

struct WriterState {
    /// `None` once closed.
    sock: Option<HeldSocket>,
    /// Pending bytes are `buf[wpos..]` (buffered writers only).
    buf: Vec<u8>,
    wpos: usize,
}

/// `socketserver._SocketWriter` (bufsize 0) or `sock.makefile('wb', bufsize)`.
#[pyclass(frozen, module = "socketserver_rs._core", name = "SocketWriter")]
pub struct SocketWriter {
    /// The Python socket (`_sock`), and `raw` once asked for.
    socket: Py<PyAny>,
    raw: Lock<Option<Py<PyAny>>>,
    counters: Option<Arc<IoCounters>>,
    /// Shared with the handler's rfile (see `SocketRef`).
    replied: Option<Arc<AtomicBool>>,
    /// 0: every write is a `sendall`.
    bufsize: usize,
    closed: AtomicBool,
    state: Locked<WriterState>,
}

impl WriterState {
    fn sock(&self, msg: &str) -> PyResult<&HeldSocket> {
        self.sock.as_ref().ok_or_else(|| closed_error(msg))
    }

    /// Sends what is pending, then `header` and `data`, until nothing is
    /// pending and at most `keep` bytes of them are left, which go to the
    /// buffer.  A message (a non-empty `header`) is gathered behind what is
    /// pending into each send, so that its header never leaves alone; a
    /// plain write flushes what is pending first, as `BufferedWriter` does.
    /// On a non-blocking socket that would block, `BlockingIOError` counts
    /// the bytes of `data` sent.
    fn send_through(
        &mut self,
        sock: &SocketRef<'_>,
        header: &[u8],
        data: &[u8],
        keep: usize,
    ) -> PyResult<()> {
        let py = sock.py();
        let parts = Parts::new(&[header, data]);
        let gather = !header.is_empty();
        let total = parts.len();
        let mut off = 0;
        while self.wpos < self.buf.len() || total - off > keep {
            let pending = &self.buf[self.wpos..];
            let list = if gather || pending.is_empty() {
                parts.after(off).behind(pending)
            } else {
                Parts::new(&[pending])
            };
            let from_pending = pending.len();
            let Some(n) = sock.send_once(list)? else {
                return Err(blocking_write_error(off.saturating_sub(header.len())));
            };
            let from_pending = n.min(from_pending);
            self.wpos += from_pending;
            off += n - from_pending;
            py.check_signals()?;
        }
        self.buf.clear();
        self.wpos = 0;
        for slice in parts.after(off).as_slices() {
            self.buf.extend_from_slice(slice);
        }
        Ok(())
    }

    /// Sends everything pending (`BufferedWriter` flush).
    fn flush_pending(&mut self, sock: &SocketRef<'_>) -> PyResult<()> {
        self.send_through(sock, &[], &[], 0)
    }

    /// Sends what is pending through `held`; with nothing pending, leaves
    /// the socket alone (it may have been detached since).
    fn flush_held(&mut self, py: Python<'_>, held: &HeldSocket) -> PyResult<()> {
        if self.wpos == self.buf.len() {
            return Ok(());
        }
        self.flush_pending(&held.bind(py)?)
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

    /// Writes `header` then `data` (`header` empty for a plain write).  A
    /// buffered writer keeps them when they fit the buffer; else they go
    /// out gathered with what is pending, so that they are never split
    /// into two sends without need.
    fn write_parts(&self, py: Python<'_>, header: &[u8], data: &[u8]) -> PyResult<()> {
        if self.bufsize == 0 {
            // socketserver._SocketWriter: a sendall on the socket as it is
            // now, closed file or not (no hold on it, as in the standard
            // library; a closed socket gives EBADF).
            let sock = SocketRef::new(self.socket.bind(py))?
                .counting(self.counters.clone())
                .tracking(self.replied.clone());
            return sock.send_all(Parts::new(&[header, data]));
        }
        let mut guard = self.state.lock(py, "SocketWriter")?;
        let held = guard.sock("write to closed file")?;
        let sock = held.bind(py)?;
        let st: &mut WriterState = &mut guard;
        let bufsize = self.bufsize;
        if st.wpos == st.buf.len() {
            st.buf.clear();
            st.wpos = 0;
        }
        let len = header.len() + data.len();
        let buffered = st.buf.len() - st.wpos;
        // What may stay in the buffer after a send: up to 3.13 a full
        // buffer's worth; from 3.14 less, as BufferedWriter writes data that
        // fills its empty buffer exactly straight through.
        let keep = if full_buffer_writes_through() {
            bufsize - 1
        } else {
            bufsize
        };
        if len <= bufsize - st.buf.len().min(bufsize) && (buffered > 0 || len <= keep) {
            st.buf.extend_from_slice(header);
            st.buf.extend_from_slice(data);
            return Ok(());
        }
        st.send_through(&sock, header, data, keep)
    }

    fn write_obj(&self, py: Python<'_>, b: &Bound<'_, PyAny>) -> PyResult<usize> {
        with_bytes(py, b, |data| self.write_parts(py, &[], data))
    }

    /// Whether the socket has no timeout.  Only then may `writelines()`
    /// gather: a timeout bounds each `sendall()`, one per line in the
    /// standard module, and a client that drains slowly but steadily must
    /// not time out on lines sent together.
    fn blocks_without_timeout(&self, py: Python<'_>) -> PyResult<bool> {
        let timeout = call_method0(self.socket.bind(py), intern!(py, "gettimeout"))?;
        Ok(timeout.is_none())
    }

    /// An unbuffered writer's `writelines()` of a list or tuple: the lines
    /// leave gathered, in sends of about `GATHER_LIMIT` bytes, rather than
    /// one send (and one segment) each.  Only an exact list or tuple: its
    /// lines are all there, whereas an iterator (or a subclass's
    /// `__iter__`) runs the program's code between them, which may block,
    /// and a line must not wait on it.  A line that is not bytes-like
    /// raises after the lines before it went out, as a send per line would.
    fn write_gathered(&self, py: Python<'_>, lines: &Bound<'_, PyAny>) -> PyResult<()> {
        let mut batch = Vec::new();
        for line in lines.try_iter()? {
            let added = line.and_then(|line| {
                with_bytes(py, &line, |data| {
                    if batch.len() + data.len() >= GATHER_LIMIT {
                        self.write_parts(py, &batch, data)?;
                        batch.clear();
                        Ok(())
                    } else {
                        reserve(&mut batch, data.len())?;
                        batch.extend_from_slice(data);
                        Ok(())
                    }
                })
            });
            if let Err(err) = added {
                if !batch.is_empty() {
                    self.write_parts(py, &[], &batch)?;
                }
                return Err(err);
            }
        }
        if batch.is_empty() {
            return Ok(());
        }
        self.write_parts(py, &[], &batch)
    }
}

#[pymethods]
impl SocketWriter {
    #[new]
    /// `stats`: the server's counters, which then count the bytes sent;
    /// `reader`: the handler's rfile, which then knows when a reply went
    /// out (a handler waiting for a line after that is between requests).
    #[pyo3(signature = (sock, bufsize = 0, stats = None, reader = None))]
    fn new(
        sock: &Bound<'_, PyAny>,
        bufsize: isize,
        stats: Option<&Bound<'_, ServerStats>>,
        reader: Option<&Bound<'_, SocketReader>>,
    ) -> PyResult<Self> {
        let counters = stats.map(|stats| stats.get().io());
        let replied = reader.map(|reader| reader.get().replied());
        let sock = SocketRef::new(sock)?
            .counting(counters.clone())
            .tracking(replied.clone());
        let bufsize = usize::try_from(bufsize).unwrap_or(default_buffer_size());
        let mut buf = Vec::new();
        reserve(&mut buf, bufsize)?;
        let held = HeldSocket::new(&sock, bufsize != 0)?;
        Ok(SocketWriter {
            socket: sock.object().clone().unbind(),
            raw: Lock::new(None),
            counters,
            replied,
            bufsize,
            closed: AtomicBool::new(false),
            state: Locked::new(WriterState {
                sock: Some(held),
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
        // Unlike write() (which follows socketserver._SocketWriter), a
        // message is never sent through a closed file.
        self.check_open("write to closed file")?;
        with_bytes(py, data, |bytes| {
            let header: [u8; HEADER_LEN] = codec::encode_header(bytes.len())?;
            self.write_parts(py, &header, bytes)
        })
    }

    fn writelines(&self, py: Python<'_>, lines: &Bound<'_, PyAny>) -> PyResult<()> {
        self.check_open(CLOSED_FILE)?;
        if self.bufsize == 0
            && (lines.is_exact_instance_of::<PyList>() || lines.is_exact_instance_of::<PyTuple>())
            && self.blocks_without_timeout(py)?
        {
            return self.write_gathered(py, lines);
        }
        for line in lines.try_iter()? {
            self.write_obj(py, &line?)?;
        }
        Ok(())
    }

    // The reading side of io.BufferedIOBase, as BufferedWriter and
    // _SocketWriter have it: io.UnsupportedOperation (the methods that
    // refuse without looking at the file: refused_reads! below).

    #[pyo3(signature = (*_args))]
    fn readlines(&self, py: Python<'_>, _args: &Bound<'_, PyTuple>) -> PyResult<()> {
        self.check_open(CLOSED_FILE)?;
        Err(unsupported(py, "read"))
    }

    fn __iter__(slf: Bound<'_, Self>) -> PyResult<Bound<'_, Self>> {
        slf.get().check_open(CLOSED_FILE)?;
        Ok(slf)
    }

    fn __next__(&self, py: Python<'_>) -> PyResult<()> {
        Err(unsupported(py, "read"))
    }

    fn flush(&self, py: Python<'_>) -> PyResult<()> {
        let mut st = self.state.lock(py, "SocketWriter")?;
        let closed_msg = if self.bufsize == 0 {
            CLOSED_FILE
        } else {
            "flush of closed file"
        };
        let held = st.sock(closed_msg)?;
        if st.wpos == st.buf.len() {
            return Ok(());
        }
        let sock = held.bind(py)?;
        st.flush_pending(&sock)
    }
}

impl SocketWriter {
    /// This file's part of `close()`: flush, then release the hold on the
    /// socket (even when the flush fails; its error is raised afterwards).
    fn finish(&self, py: Python<'_>) -> PyResult<()> {
        let (flushed, held) = {
            let mut st = self.state.lock(py, "SocketWriter")?;
            let Some(held) = st.sock.take() else {
                return Ok(());
            };
            let flushed = if self.bufsize != 0 {
                st.flush_held(py, &held)
            } else {
                Ok(())
            };
            st.buf = Vec::new();
            st.wpos = 0;
            self.closed.store(true, Ordering::Release);
            (flushed, held)
        };
        flushed.and(held.release(py))
    }

    /// The socket's `fileno()`: `_SocketWriter`'s, closed file or not; a
    /// buffered writer's while open.
    fn fileno_now(&self, py: Python<'_>) -> PyResult<i64> {
        if self.bufsize != 0 {
            self.check_open(CLOSED_FILE)?;
        }
        call_method0(self.socket.bind(py), intern!(py, "fileno"))?.extract()
    }
}

socket_file_methods!(SocketWriter, mode = "wb", readable = false);

/// Read methods that refuse at once, open or closed: `(name, what the
/// error names)`, as BufferedWriter's.
macro_rules! refused_reads {
    ($($name:ident => $what:literal),* $(,)?) => {
        #[pymethods]
        impl SocketWriter {
            $(
                #[pyo3(signature = (*_args))]
                fn $name(&self, py: Python<'_>, _args: &Bound<'_, PyTuple>) -> PyResult<()> {
                    Err(unsupported(py, $what))
                }
            )*
        }
    };
}

refused_reads!(read => "read", read1 => "read1", readinto => "read", readinto1 => "read1", readline => "read");

impl Drop for SocketWriter {
    fn drop(&mut self) {
        let buffered = self.bufsize != 0;
        let st = self.state.get_mut();
        let Some(held) = st.sock.take() else {
            return;
        };
        if !buffered {
            return;
        }
        Python::try_attach(|py| {
            let object = held.object(py);
            if let Err(err) = st.flush_held(py, &held) {
                err.write_unraisable(py, Some(object));
            }
            if let Err(err) = held.release(py) {
                err.write_unraisable(py, Some(object));
            }
        });
    }
}
