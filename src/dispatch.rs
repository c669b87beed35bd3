//! The fast path: when no request hook of the server is overridden, requests
//! are accepted (or received) here and handed straight to
//! `RequestHandlerClass`, with the standard library's error handling, either
//! inline or on the worker pool.

use std::io;
use std::mem::MaybeUninit;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, Ordering};

use pyo3::exceptions::{PyException, PyOSError};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyTuple};

use crate::listener::{accept, address_to_py, recv_from, wrap_socket};
use crate::pool::WorkerPool;
use crate::serve::readable_now;

/// Most requests taken per readiness when a pool runs them.
const BATCH: usize = 64;

/// How requests arrive on the server socket.
enum Arrival {
    Stream,
    Datagram { max_packet_size: usize },
}

/// What the serve loop needs to dispatch requests without calling the
/// server's hooks: built by the Python surface only after it has checked
/// that those hooks are the standard ones.
#[pyclass(frozen, module = "socketserver_rs._core")]
pub struct FastPath {
    arrival: Arrival,
    socket: Py<PyAny>,
    socket_class: Py<PyAny>,
    socket_kind: Py<PyTuple>,
    pool: Option<Py<WorkerPool>>,
}

#[pymethods]
impl FastPath {
    /// `stream`: whether requests are connections (else datagrams).
    #[new]
    #[pyo3(signature = (socket, stream, max_packet_size, pool))]
    fn new(
        py: Python<'_>,
        socket: Bound<'_, PyAny>,
        stream: bool,
        max_packet_size: usize,
        pool: Option<Py<WorkerPool>>,
    ) -> PyResult<Self> {
        let socket_kind = PyTuple::new(
            py,
            [
                socket.getattr(intern!(py, "family"))?,
                socket.getattr(intern!(py, "type"))?,
                socket.getattr(intern!(py, "proto"))?,
            ],
        )?
        .unbind();
        let arrival = if stream {
            Arrival::Stream
        } else {
            Arrival::Datagram { max_packet_size }
        };
        Ok(Self {
            arrival,
            socket_class: socket.get_type().into_any().unbind(),
            socket: socket.unbind(),
            socket_kind,
            pool,
        })
    }
}

impl FastPath {
    /// Take the requests waiting on `fd` and run or queue each.
    pub fn dispatch(
        &self,
        py: Python<'_>,
        server: &Bound<'_, PyAny>,
        fd: RawFd,
        shutdown_requested: &AtomicBool,
    ) -> PyResult<()> {
        let batch = if self.pool.is_some() { BATCH } else { 1 };
        let mut buffer = match self.arrival {
            Arrival::Datagram { max_packet_size } => {
                vec![MaybeUninit::<u8>::uninit(); max_packet_size]
            }
            Arrival::Stream => Vec::new(),
        };
        for taken in 0..batch {
            if taken > 0 && (shutdown_requested.load(Ordering::Acquire) || !readable_now(fd)) {
                break;
            }
            let request = match self.arrival {
                Arrival::Stream => self.accept_one(py, fd)?,
                Arrival::Datagram { .. } => self.receive_one(py, fd, &mut buffer)?,
            };
            let Some((request, address)) = request else {
                break;
            };
            match &self.pool {
                None => run_inline(py, server, &request, &address)?,
                Some(pool) => {
                    if let Err(err) = pool.get().submit_request(py, server, &request, &address) {
                        fail_request(py, server, &request, &address, err)?;
                    }
                }
            }
        }
        Ok(())
    }

    /// `get_request()` of a stream server; None when nothing could be taken
    /// (the standard library ignores an OSError from accept()).
    fn accept_one<'py>(
        &self,
        py: Python<'py>,
        fd: RawFd,
    ) -> PyResult<Option<(Bound<'py, PyAny>, Bound<'py, PyAny>)>> {
        let (conn, address) = match py.detach(|| accept(fd)) {
            Ok(accepted) => accepted,
            Err(_) => return Ok(None),
        };
        let request = wrap_socket(self.socket_class.bind(py), self.socket_kind.bind(py), conn)?;
        match address_to_py(py, &address) {
            Ok(address) => Ok(Some((request, address))),
            Err(err) => {
                request.call_method0(intern!(py, "close"))?;
                Err(err)
            }
        }
    }

    /// `get_request()` of a datagram server: `((data, socket), address)`.
    fn receive_one<'py>(
        &self,
        py: Python<'py>,
        fd: RawFd,
        buffer: &mut [MaybeUninit<u8>],
    ) -> PyResult<Option<(Bound<'py, PyAny>, Bound<'py, PyAny>)>> {
        let (len, address) = match recv_from(fd, buffer) {
            Ok(received) => received,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => return Ok(None),
            Err(_) => return Ok(None),
        };
        // SAFETY: the kernel initialised the first `len` bytes.
        let data = unsafe { std::slice::from_raw_parts(buffer.as_ptr().cast::<u8>(), len) };
        let request = (PyBytes::new(py, data), self.socket.bind(py))
            .into_pyobject(py)?
            .into_any();
        Ok(Some((request, address_to_py(py, &address)?)))
    }
}

/// `process_request()` + `shutdown_request()` inline, with the error handling
/// of `BaseServer._handle_request_noblock()`.
fn run_inline(
    py: Python<'_>,
    server: &Bound<'_, PyAny>,
    request: &Bound<'_, PyAny>,
    address: &Bound<'_, PyAny>,
) -> PyResult<()> {
    match finish_request(py, server, request, address) {
        Ok(()) => shutdown_request(py, request),
        Err(err) => fail_request(py, server, request, address, err),
    }
}

/// `ThreadingMixIn.process_request_thread()`: run the handler, report an
/// Exception through `handle_error()`, always shut the request down, and
/// let anything else (or an error from `handle_error`) propagate.
pub fn run_in_worker(
    py: Python<'_>,
    server: &Bound<'_, PyAny>,
    request: &Bound<'_, PyAny>,
    address: &Bound<'_, PyAny>,
) -> PyResult<()> {
    let outcome = match finish_request(py, server, request, address) {
        Err(err) if err.is_instance_of::<PyException>(py) => {
            handle_error(py, server, request, address, err)
        }
        other => other,
    };
    let closed = shutdown_request(py, request);
    outcome.and(closed)
}

/// The standard library's `except Exception: handle_error(); shutdown_request()`
/// / `except: shutdown_request(); raise`.
fn fail_request(
    py: Python<'_>,
    server: &Bound<'_, PyAny>,
    request: &Bound<'_, PyAny>,
    address: &Bound<'_, PyAny>,
    err: PyErr,
) -> PyResult<()> {
    if err.is_instance_of::<PyException>(py) {
        handle_error(py, server, request, address, err)?;
        shutdown_request(py, request)
    } else {
        shutdown_request(py, request)?;
        Err(err)
    }
}

fn finish_request(
    py: Python<'_>,
    server: &Bound<'_, PyAny>,
    request: &Bound<'_, PyAny>,
    address: &Bound<'_, PyAny>,
) -> PyResult<()> {
    let handler_class = server.getattr(intern!(py, "RequestHandlerClass"))?;
    handler_class.call1((request, address, server))?;
    Ok(())
}

/// `TCPServer.shutdown_request()` for a connection (shut down writing,
/// ignoring OSError, then close); nothing for a datagram request.
fn shutdown_request(py: Python<'_>, request: &Bound<'_, PyAny>) -> PyResult<()> {
    if request.is_instance_of::<PyTuple>() {
        return Ok(());
    }
    if let Err(err) = request.call_method1(intern!(py, "shutdown"), (libc::SHUT_WR,)) {
        if !err.is_instance_of::<PyOSError>(py) {
            return Err(err);
        }
    }
    request.call_method0(intern!(py, "close"))?;
    Ok(())
}

/// Call `server.handle_error(request, address)` with `err` as the exception
/// being handled, as inside an `except Exception:` block, so that
/// `sys.exc_info()`, `traceback.print_exc()` and a bare `raise` see it.
fn handle_error(
    py: Python<'_>,
    server: &Bound<'_, PyAny>,
    request: &Bound<'_, PyAny>,
    address: &Bound<'_, PyAny>,
    err: PyErr,
) -> PyResult<()> {
    let _handling = HandledException::set(py, err);
    server.call_method1(intern!(py, "handle_error"), (request, address))?;
    Ok(())
}

/// Makes an exception the one "being handled" and restores the previous
/// one when dropped.
struct HandledException {
    saved: [*mut pyo3::ffi::PyObject; 3],
}

impl HandledException {
    fn set(py: Python<'_>, err: PyErr) -> Self {
        let kind = err.get_type(py).into_any().unbind();
        let traceback = err.traceback(py).map(|tb| tb.into_any().unbind());
        let value = err.into_value(py).into_any();
        let mut saved = [std::ptr::null_mut(); 3];
        // SAFETY: GIL held; GetExcInfo returns new references which we keep
        // to restore; SetExcInfo steals the references passed to it.
        unsafe {
            pyo3::ffi::PyErr_GetExcInfo(&mut saved[0], &mut saved[1], &mut saved[2]);
            pyo3::ffi::PyErr_SetExcInfo(
                kind.into_ptr(),
                value.into_ptr(),
                traceback.map_or(std::ptr::null_mut(), |tb| tb.into_ptr()),
            );
        }
        Self { saved }
    }
}

impl Drop for HandledException {
    fn drop(&mut self) {
        // SAFETY: still on the thread that holds the GIL (the guard never
        // leaves the function that made it); steals the saved references.
        unsafe { pyo3::ffi::PyErr_SetExcInfo(self.saved[0], self.saved[1], self.saved[2]) };
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<FastPath>()
}
