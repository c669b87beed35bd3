//! The fast path: when no request hook of the server is overridden, requests
//! are accepted (or received) here, without the Python hooks, and either
//! handed back for the serving thread to run or queued for the worker pool.

use std::mem::MaybeUninit;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use pyo3::exceptions::{PyMemoryError, PyOverflowError};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyTuple};

use crate::detach::detach;
use crate::listener::{accept, address_to_py, recv_from, socket_kind, wrap_socket};
use crate::pool::{Submitted, WorkerPool};
use crate::pycall::call_method0;
use crate::serve::{owns, ServeLoop};
use crate::sys::{readable_now, RawSock};

/// Most requests queued per readiness.
const BATCH: usize = 64;

/// Bumped whenever a request hook is set or deleted on a server (see
/// _fast_path.py): a fast path built before then takes no more.
static HOOKS_VERSION: AtomicU64 = AtomicU64::new(0);

/// A request hook was set or deleted somewhere.
#[pyfunction]
fn hooks_changed() {
    HOOKS_VERSION.fetch_add(1, Ordering::Release);
}

/// How many times a request hook was set or deleted.
#[pyfunction]
fn hooks_version() -> u64 {
    HOOKS_VERSION.load(Ordering::Acquire)
}

/// How requests arrive on the server socket.
enum Arrival {
    /// Connections; `nodelay`: TCP, which gets TCP_NODELAY.
    Stream {
        nodelay: bool,
    },
    Datagram {
        max_packet_size: usize,
    },
}

/// A request and its client address, as `get_request()` returns them.
type Request<'py> = (Bound<'py, PyAny>, Bound<'py, PyAny>);

/// A request the pool did not take, and the error that kept it (or None).
type Untaken<'py> = (Bound<'py, PyAny>, Bound<'py, PyAny>, Bound<'py, PyAny>);

/// What the serve loop needs to take requests without calling the server's
/// hooks: built by the Python surface only after it has checked that those
/// hooks are the standard ones.
#[pyclass(frozen, module = "socketserver_rs._core")]
pub struct FastPath {
    arrival: Arrival,
    fd: RawSock,
    socket: Py<PyAny>,
    socket_class: Py<PyAny>,
    socket_kind: Py<PyTuple>,
    serve_loop: Py<ServeLoop>,
    /// `hooks_version()` before the hooks were found standard.
    hooks_version: u64,
}

#[pymethods]
impl FastPath {
    /// `stream`: whether requests are connections (else datagrams);
    /// `nodelay`: whether accepted connections get TCP_NODELAY;
    /// `hooks_version`: `hooks_version()` read before the hooks were checked.
    #[new]
    fn new(
        py: Python<'_>,
        socket: Bound<'_, PyAny>,
        stream: bool,
        max_packet_size: usize,
        serve_loop: Py<ServeLoop>,
        nodelay: bool,
        hooks_version: u64,
    ) -> PyResult<Self> {
        let fd = call_method0(&socket, intern!(py, "fileno"))?.extract()?;
        let socket_kind = socket_kind(&socket)?;
        let arrival = if stream {
            Arrival::Stream { nodelay }
        } else {
            Arrival::Datagram { max_packet_size }
        };
        Ok(Self {
            arrival,
            fd,
            socket_class: socket.get_type().into_any().unbind(),
            socket: socket.unbind(),
            socket_kind,
            serve_loop,
            hooks_version,
        })
    }

    /// Whether requests are connections (else datagrams).
    #[getter]
    fn stream(&self) -> bool {
        matches!(self.arrival, Arrival::Stream { .. })
    }

    /// `get_request()`: one request and its client address, or None when
    /// none could be taken (the standard library ignores an OSError there).
    /// None as well once shutdown is requested, or a hook was set since
    /// this was built, so that a caller taking requests in a row stops there;
    /// and when `server`'s class (or a base) changed since `class_tag()`
    /// returned `since`: the serve loop looks at its hooks again first.
    #[pyo3(signature = (server=None, since=0))]
    fn take<'py>(
        &self,
        py: Python<'py>,
        server: Option<&Bound<'py, PyAny>>,
        since: u32,
    ) -> PyResult<Option<Request<'py>>> {
        if server.is_some_and(|server| type_version_tag(server) != since) {
            return Ok(None);
        }
        if self.should_stop() || !self.open(py)? {
            return Ok(None);
        }
        match self.arrival {
            Arrival::Stream { .. } => self.accept_one(py),
            Arrival::Datagram { max_packet_size } => {
                let mut buffer = receive_buffer(max_packet_size)?;
                self.receive_one(py, &mut buffer.spare_capacity_mut()[..max_packet_size])
            }
        }
    }

    /// Queue the waiting requests (up to a batch; none once `take()` would
    /// say None) on `pool`, each as the job `runner(server, request,
    /// client_address)`. Returns
    /// `(request, client_address, error)` for a request the pool did not
    /// take: `error` is what starting its worker raised, or None when the
    /// pool was closed meanwhile. Else None.
    fn dispatch<'py>(
        &self,
        py: Python<'py>,
        server: &Bound<'py, PyAny>,
        pool: &Bound<'py, WorkerPool>,
        runner: &Bound<'py, PyAny>,
    ) -> PyResult<Option<Untaken<'py>>> {
        let pool = pool.get();
        let stream = self.stream();
        let packet_size = match self.arrival {
            Arrival::Datagram { max_packet_size } => max_packet_size,
            Arrival::Stream { .. } => 0,
        };
        let mut buffer = receive_buffer(packet_size)?;
        let class_tag = type_version_tag(server);
        for taken in 0..BATCH {
            if pool.is_full() {
                break;
            }
            // A hook patched on the server's class (or a base) since the
            // serve loop looked, at the start of this batch, must see the
            // next request: the loop looks again at its next wake.
            if taken > 0 && type_version_tag(server) != class_tag {
                break;
            }
            // accept() would block when no connection waits; a datagram is
            // received without blocking and needs no poll(2) first.
            if self.should_stop()
                || !self.open(py)?
                || (taken > 0 && stream && !readable_now(self.fd))
            {
                break;
            }
            let request = if stream {
                self.accept_one(py)?
            } else {
                self.receive_one(py, &mut buffer.spare_capacity_mut()[..packet_size])?
            };
            let Some((request, address)) = request else {
                break;
            };
            let args = PyTuple::new(py, [server, &request, &address])?;
            // Not at the bound (checked above, and only this thread submits
            // to this pool while serving), so this does not wait.
            let kept = match pool.submit(py, runner.clone().unbind(), args.unbind(), false) {
                Ok(Submitted::Queued) => continue,
                Ok(Submitted::AtBound | Submitted::Closed) => py.None().into_bound(py),
                Err(err) => err.into_value(py).into_bound(py).into_any(),
            };
            return Ok(Some((request, address, kept)));
        }
        Ok(None)
    }
}

/// The version tag of `server`'s class, for `FastPath.take()`.
#[pyfunction]
fn class_tag(server: &Bound<'_, PyAny>) -> u32 {
    type_version_tag(server)
}

/// CPython's version tag of `obj`'s type: it changes whenever an attribute
/// of the type or of one of its bases is set or deleted (0 until the type
/// is looked up again, or when CPython ran out of tags).
fn type_version_tag(obj: &Bound<'_, PyAny>) -> u32 {
    let ty = obj.get_type().as_type_ptr();
    // SAFETY: `ty` is a live type object (`obj` holds it). The tag is read
    // as CPython's type cache reads it: a relaxed atomic load, which may
    // race a writer on a free-threaded build and then reads either value.
    unsafe {
        AtomicU32::from_ptr(std::ptr::addr_of_mut!((*ty).tp_version_tag)).load(Ordering::Relaxed)
    }
}

/// Room for a datagram of up to `len` bytes (`max_packet_size`), allocated
/// as `socket.recvfrom(len)` allocates it: MemoryError when there is not
/// that much, rather than the process aborting.
fn receive_buffer(len: usize) -> PyResult<Vec<u8>> {
    if isize::try_from(len).is_err() {
        return Err(PyOverflowError::new_err(
            "Python int too large to convert to C ssize_t",
        ));
    }
    let mut buffer = Vec::new();
    buffer
        .try_reserve_exact(len)
        .map_err(|_| PyMemoryError::new_err(()))?;
    Ok(buffer)
}

impl FastPath {
    /// Shutdown was requested, or a hook set since this was built must
    /// see the next request (the serve loop then decides again).
    fn should_stop(&self) -> bool {
        self.serve_loop.get().is_shutdown_requested() || hooks_version() != self.hooks_version
    }

    /// Whether the server socket still owns the descriptor taken from it:
    /// once it is closed the number may belong to something else.
    fn open(&self, py: Python<'_>) -> PyResult<bool> {
        owns(self.socket.bind(py), self.fd)
    }

    fn accept_one<'py>(&self, py: Python<'py>) -> PyResult<Option<Request<'py>>> {
        let fd = self.fd;
        let nodelay = matches!(self.arrival, Arrival::Stream { nodelay: true });
        let (conn, address) = match detach(py, || accept(fd, nodelay)) {
            Ok(accepted) => accepted,
            Err(err) => {
                self.serve_loop
                    .get()
                    .accept_failed(py, err.raw_os_error().unwrap_or(0));
                return Ok(None);
            }
        };
        let serve_loop = self.serve_loop.get();
        let request = match wrap_socket(self.socket_class.bind(py), self.socket_kind.bind(py), conn)
        {
            Ok(request) => request,
            Err(err) => {
                serve_loop.request_lost(py, &err);
                return Ok(None);
            }
        };
        match address_to_py(py, &address) {
            Ok(address) => {
                serve_loop.stats().request_taken();
                Ok(Some((request, address)))
            }
            Err(err) => {
                serve_loop.request_lost(py, &err);
                if let Err(err) = call_method0(&request, intern!(py, "close")) {
                    err.write_unraisable(py, Some(&request));
                }
                Ok(None)
            }
        }
    }

    /// A datagram as `((data, socket), address)`.
    fn receive_one<'py>(
        &self,
        py: Python<'py>,
        buffer: &mut [MaybeUninit<u8>],
    ) -> PyResult<Option<Request<'py>>> {
        let Ok((len, address)) = recv_from(self.fd, buffer) else {
            return Ok(None);
        };
        // SAFETY: the kernel initialised the first `len` bytes.
        let data = unsafe { std::slice::from_raw_parts(buffer.as_ptr().cast::<u8>(), len) };
        let request = (PyBytes::new(py, data), self.socket.bind(py))
            .into_pyobject(py)?
            .into_any();
        match address_to_py(py, &address) {
            Ok(address) => {
                self.serve_loop.get().stats().request_taken();
                Ok(Some((request, address)))
            }
            Err(err) => {
                self.serve_loop.get().request_lost(py, &err);
                Ok(None)
            }
        }
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(hooks_changed, m)?)?;
    m.add_function(wrap_pyfunction!(hooks_version, m)?)?;
    m.add_function(wrap_pyfunction!(class_tag, m)?)?;
    m.add_class::<FastPath>()
}
