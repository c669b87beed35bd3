//! The io file-object methods that `SocketReader` and `SocketWriter` share,
//! as `SocketIO` and the Buffered classes give them: a second
//! `#[pymethods]` block per class (pyo3's `multiple-pymethods`).
//!
//! The class must have the fields `fd: RawSock`, `closed: AtomicBool`,
//! `bufsize: usize` (0: unbuffered), `socket: Py<PyAny>` and
//! `raw: Mutex<Option<Py<PyAny>>>`, and the
//! inherent methods `check_open(&self, msg)`, `fileno_now(&self, py)` and
//! `finish(&self, py)` (its own part of `close()`).

macro_rules! socket_file_methods {
    ($class:ty, mode = $mode:literal, readable = $readable:literal) => {
        #[pyo3::pymethods]
        impl $class {
            #[getter]
            fn closed(&self) -> bool {
                self.closed.load(std::sync::atomic::Ordering::Acquire)
            }

            fn fileno(&self, py: pyo3::Python<'_>) -> pyo3::PyResult<i64> {
                self.fileno_now(py)
            }

            /// Closes the file, and `raw` if it was asked for.
            fn close(&self, py: pyo3::Python<'_>) -> pyo3::PyResult<()> {
                let finished = self.finish(py);
                let raw = self.raw.lock().take();
                if let Some(raw) = raw {
                    crate::pycall::call_method0(raw.bind(py), pyo3::intern!(py, "close"))?;
                }
                finished
            }

            /// The socket, as the standard library's socket files keep it.
            #[getter]
            fn _sock(&self, py: pyo3::Python<'_>) -> pyo3::Py<pyo3::PyAny> {
                self.socket.clone_ref(py)
            }

            /// A `socket.SocketIO` over the socket, as a buffered file's
            /// `raw` is (made when first asked for, closed with the file).
            #[getter]
            fn raw(&self, py: pyo3::Python<'_>) -> pyo3::PyResult<pyo3::Py<pyo3::PyAny>> {
                $crate::socket_file::raw_of(py, &self.raw, &self.socket, $mode)
            }

            /// Flushes and lets go of the file, and returns `raw`, which
            /// stays open, as `BufferedReader.detach()` does.
            fn detach(&self, py: pyo3::Python<'_>) -> pyo3::PyResult<pyo3::Py<pyo3::PyAny>> {
                self.check_open($crate::socket_file::CLOSED_FILE)?;
                let raw = self.raw(py)?;
                let _ours = self.raw.lock().take();
                self.finish(py)?;
                Ok(raw)
            }

            #[getter]
            fn name(&self, py: pyo3::Python<'_>) -> pyo3::PyResult<i64> {
                if self.closed() {
                    Ok(-1)
                } else {
                    self.fileno_now(py)
                }
            }

            #[getter]
            fn mode(&self) -> &'static str {
                $mode
            }

            /// A file's own direction asks the socket, which refuses once
            /// closed; the other is `IOBase`'s False, closed or not.
            /// `socketserver._SocketWriter` (an unbuffered writer) checks
            /// nothing.
            fn readable(&self) -> pyo3::PyResult<bool> {
                if !$readable {
                    return Ok(false);
                }
                self.check_open($crate::socket_file::CLOSED_SOCKET)?;
                Ok(true)
            }

            fn writable(&self) -> pyo3::PyResult<bool> {
                if $readable && self.bufsize != 0 {
                    return Ok(false);
                }
                if !$readable && self.bufsize == 0 {
                    return Ok(true);
                }
                self.check_open($crate::socket_file::CLOSED_SOCKET)?;
                Ok(!$readable)
            }

            fn seekable(&self) -> pyo3::PyResult<bool> {
                if !$readable && self.bufsize == 0 {
                    return Ok(false);
                }
                self.check_open($crate::socket_file::CLOSED_SOCKET)?;
                Ok(false)
            }

            fn isatty(&self) -> pyo3::PyResult<bool> {
                self.check_open($crate::socket_file::CLOSED_FILE)?;
                Ok(false)
            }

            /// Sockets are not seekable: `io.UnsupportedOperation`, as the
            /// io classes raise it. A buffered file refuses a closed one
            /// first; the unbuffered ones (`SocketIO`, `_SocketWriter`)
            /// check nothing, and `tell()` never does.
            #[pyo3(signature = (*_args))]
            fn seek(
                &self,
                py: pyo3::Python<'_>,
                _args: &pyo3::Bound<'_, pyo3::types::PyTuple>,
            ) -> pyo3::PyResult<()> {
                if self.bufsize == 0 {
                    return Err($crate::socket_file::unsupported(py, "seek"));
                }
                self.check_open("seek of closed file")?;
                Err($crate::socket_file::unsupported(
                    py,
                    "File or stream is not seekable.",
                ))
            }

            fn tell(&self, py: pyo3::Python<'_>) -> pyo3::PyResult<()> {
                Err($crate::socket_file::unsupported(py, "seek"))
            }

            #[pyo3(signature = (*_args))]
            fn truncate(
                &self,
                py: pyo3::Python<'_>,
                _args: &pyo3::Bound<'_, pyo3::types::PyTuple>,
            ) -> pyo3::PyResult<()> {
                if self.bufsize != 0 {
                    self.check_open("truncate of closed file")?;
                }
                Err($crate::socket_file::unsupported(py, "truncate"))
            }

            fn __enter__(slf: pyo3::Bound<'_, Self>) -> pyo3::PyResult<pyo3::Bound<'_, Self>> {
                slf.get().check_open($crate::socket_file::CLOSED_FILE)?;
                Ok(slf)
            }

            #[pyo3(signature = (*_args))]
            fn __exit__(
                &self,
                py: pyo3::Python<'_>,
                _args: &pyo3::Bound<'_, pyo3::types::PyTuple>,
            ) -> pyo3::PyResult<()> {
                self.close(py)
            }
        }
    };
}

pub(crate) use socket_file_methods;

use crate::locks::Lock;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::PyType;

/// The `raw` of a socket file: `socket.SocketIO(sock, mode)`, made once.
pub fn raw_of(
    py: Python<'_>,
    raw: &Lock<Option<Py<PyAny>>>,
    socket: &Py<PyAny>,
    mode: &str,
) -> PyResult<Py<PyAny>> {
    if let Some(made) = raw.lock().as_ref() {
        return Ok(made.clone_ref(py));
    }
    let socket_io = py.import("socket")?.getattr("SocketIO")?;
    let made = crate::pycall::call(&socket_io, (socket.bind(py), mode))?.unbind();
    // Another thread may have made one meanwhile: keep the first, and drop
    // ours once unlocked (freeing it runs its finaliser).
    let kept = raw
        .lock()
        .get_or_insert_with(|| made.clone_ref(py))
        .clone_ref(py);
    drop(made);
    Ok(kept)
}

pub const CLOSED_FILE: &str = "I/O operation on closed file.";
pub const CLOSED_SOCKET: &str = "I/O operation on closed socket.";

/// `io.UnsupportedOperation(what)`.
pub fn unsupported(py: Python<'_>, what: &str) -> PyErr {
    static CLS: PyOnceLock<Py<PyType>> = PyOnceLock::new();
    match CLS.import(py, "io", "UnsupportedOperation") {
        Ok(cls) => PyErr::from_type(cls.clone(), what.to_string()),
        Err(err) => err,
    }
}
