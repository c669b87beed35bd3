//! Stream I/O over a connection: the rfile / wfile objects and
//! length-prefixed messages.
//!
//! `SocketReader` behaves like `sock.makefile('rb', bufsize)` (a
//! `BufferedReader` over `socket.SocketIO`, or the bare `SocketIO` when
//! `bufsize` is 0) and `SocketWriter` like `socketserver._SocketWriter`
//! (`bufsize` 0) or `sock.makefile('wb', bufsize)`.  All blocking system
//! calls run with the interpreter released; socket timeouts are honoured the
//! way the `socket` module does it.
//!
//! - `socket_ref`: the Python socket worked on (its descriptor, checked once)
//!   and the receive and send calls on it, timeouts and signals included;
//! - `reader` / `reading`: the `SocketReader` class / how it reads;
//! - `writer`: the `SocketWriter` class;
//! - `codec`: the message format, without I/O;
//! - `lock`: the lock of a file object's state;
//! - here: what they share, and messages over a bare socket.

use std::mem::MaybeUninit;

use pyo3::buffer::PyUntypedBuffer;
use pyo3::exceptions::{PyBufferError, PyMemoryError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyBytes;

pub mod codec;
mod lock;
mod reader;
mod reading;
mod socket_ref;
mod writer;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use codec::HEADER_LEN;
use socket_ref::{Parts, SocketRef};

/// `io.DEFAULT_BUFFER_SIZE` of the running interpreter (8 KiB up to 3.13,
/// 128 KiB from 3.14), read when the module is loaded.
static DEFAULT_BUFFER_SIZE: AtomicUsize = AtomicUsize::new(8192);

fn default_buffer_size() -> usize {
    DEFAULT_BUFFER_SIZE.load(Ordering::Relaxed)
}

/// From 3.14 `BufferedWriter` writes data that would fill its empty buffer
/// exactly straight through instead of holding it.
static FULL_BUFFER_WRITES_THROUGH: AtomicBool = AtomicBool::new(false);

fn full_buffer_writes_through() -> bool {
    FULL_BUFFER_WRITES_THROUGH.load(Ordering::Relaxed)
}

fn closed_error(msg: &str) -> PyErr {
    PyValueError::new_err(msg.to_string())
}

fn reserve(vec: &mut Vec<u8>, extra: usize) -> PyResult<()> {
    vec.try_reserve(extra)
        .map_err(|_| PyMemoryError::new_err(()))
}

fn bytes_or_none(py: Python<'_>, data: Option<Vec<u8>>) -> Option<Bound<'_, PyBytes>> {
    data.map(|d| PyBytes::new(py, &d))
}

/// A contiguous buffer export of a bytes-like object.
fn get_buffer(obj: &Bound<'_, PyAny>, writable: bool) -> PyResult<PyUntypedBuffer> {
    let buf = PyUntypedBuffer::get(obj)?;
    // What to read into must be writable and contiguous (TypeError, as
    // BufferedReader.readinto says); what to send, contiguous (BufferError).
    if writable && (buf.readonly() || !buf.is_c_contiguous()) {
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

/// Runs `f` over the bytes of a bytes-like object; returns their length.
fn with_bytes(
    py: Python<'_>,
    b: &Bound<'_, PyAny>,
    f: impl FnOnce(&[u8]) -> PyResult<()>,
) -> PyResult<usize> {
    let buf = get_buffer(b, false)?;
    let len = buf.len_bytes();
    let data: &[u8] = if len == 0 {
        &[]
    } else {
        // SAFETY: a C-contiguous export of `len` bytes, kept alive and
        // unmoved until `release` below.
        unsafe { std::slice::from_raw_parts(buf.buf_ptr().cast::<u8>(), len) }
    };
    let res = f(data);
    buf.release(py);
    res.map(|()| len)
}

/// Runs `f` over the memory of a writable bytes-like object, which it
/// receives into.
fn with_writable<R>(
    py: Python<'_>,
    b: &Bound<'_, PyAny>,
    f: impl FnOnce(&mut [MaybeUninit<u8>]) -> PyResult<R>,
) -> PyResult<R> {
    let buf = get_buffer(b, true)?;
    let len = buf.len_bytes();
    let dst: &mut [MaybeUninit<u8>] = if len == 0 {
        &mut []
    } else {
        // SAFETY: a writable C-contiguous export of `len` bytes, kept alive
        // and unmoved until `release` below; MaybeUninit<u8> has the layout
        // of u8 and is only ever written through.  Python code writing the
        // same object meanwhile races with the receive, as it would with
        // `socket.recv_into`.
        unsafe { std::slice::from_raw_parts_mut(buf.buf_ptr().cast::<MaybeUninit<u8>>(), len) }
    };
    let res = f(dst);
    buf.release(py);
    res
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
    let sock = SocketRef::new(sock)?;
    with_bytes(py, data, |bytes| {
        let header: [u8; HEADER_LEN] = codec::encode_header(bytes.len())?;
        sock.send_all(Parts::new(&[&header, bytes]))
    })
}

/// Receives one length-prefixed message from a connected stream socket,
/// reading no byte past it: its payload, or None when the peer closed
/// before the first byte.  EOFError when the peer closed in the middle of
/// a message; ValueError (nothing more read) when the announced length
/// exceeds max_size.  The socket's timeout bounds each wait for data.
#[pyfunction]
#[pyo3(signature = (sock, max_size = codec::DEFAULT_MAX_SIZE as i64))]
fn recv_message<'py>(
    py: Python<'py>,
    sock: &Bound<'py, PyAny>,
    max_size: i64,
) -> PyResult<Option<Bound<'py, PyBytes>>> {
    let max_size = codec::max_size_arg(max_size)?;
    let sock = SocketRef::new(sock)?;
    let body = reading::read_message_from(&sock, max_size)?;
    Ok(bytes_or_none(py, body))
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let size: usize = m
        .py()
        .import("io")?
        .getattr("DEFAULT_BUFFER_SIZE")?
        .extract()?;
    DEFAULT_BUFFER_SIZE.store(size.max(1), Ordering::Relaxed);
    FULL_BUFFER_WRITES_THROUGH.store(m.py().version_info() >= (3, 14), Ordering::Relaxed);
    m.add_class::<reader::SocketReader>()?;
    m.add_class::<writer::SocketWriter>()?;
    m.add_function(wrap_pyfunction!(send_message, m)?)?;
    m.add_function(wrap_pyfunction!(recv_message, m)?)?;
    codec::register(m)
}
