//! The io file-object methods that `SocketReader` and `SocketWriter` share,
//! as `SocketIO` and the Buffered classes give them: a second
//! `#[pymethods]` block per class (pyo3's `multiple-pymethods`).
//!
//! The class must have the fields `fd: RawFd` and `closed: AtomicBool`, and
//! the inherent methods `check_open(&self, msg)` and `close(&self, py)`.

macro_rules! socket_file_methods {
    ($class:ty, mode = $mode:literal, readable = $readable:literal) => {
        #[pyo3::pymethods]
        impl $class {
            #[getter]
            fn closed(&self) -> bool {
                self.closed.load(std::sync::atomic::Ordering::Acquire)
            }

            fn fileno(&self) -> pyo3::PyResult<std::os::unix::io::RawFd> {
                self.check_open($crate::socket_file::CLOSED_FILE)?;
                Ok(self.fd)
            }

            #[getter]
            fn name(&self) -> std::os::unix::io::RawFd {
                if self.closed() {
                    -1
                } else {
                    self.fd
                }
            }

            #[getter]
            fn mode(&self) -> &'static str {
                $mode
            }

            fn readable(&self) -> pyo3::PyResult<bool> {
                self.check_open($crate::socket_file::CLOSED_SOCKET)?;
                Ok($readable)
            }

            fn writable(&self) -> pyo3::PyResult<bool> {
                self.check_open($crate::socket_file::CLOSED_SOCKET)?;
                Ok(!$readable)
            }

            fn seekable(&self) -> pyo3::PyResult<bool> {
                self.check_open($crate::socket_file::CLOSED_SOCKET)?;
                Ok(false)
            }

            fn isatty(&self) -> pyo3::PyResult<bool> {
                self.check_open($crate::socket_file::CLOSED_FILE)?;
                Ok(false)
            }

            /// Sockets are not seekable: `io.UnsupportedOperation`, as the
            /// io classes.
            #[pyo3(signature = (*_args))]
            fn seek(
                &self,
                py: pyo3::Python<'_>,
                _args: &pyo3::Bound<'_, pyo3::types::PyTuple>,
            ) -> pyo3::PyResult<()> {
                self.check_open($crate::socket_file::CLOSED_FILE)?;
                Err($crate::socket_file::unsupported(py, "seek"))
            }

            fn tell(&self, py: pyo3::Python<'_>) -> pyo3::PyResult<()> {
                self.check_open($crate::socket_file::CLOSED_FILE)?;
                Err($crate::socket_file::unsupported(py, "seek"))
            }

            #[pyo3(signature = (*_args))]
            fn truncate(
                &self,
                py: pyo3::Python<'_>,
                _args: &pyo3::Bound<'_, pyo3::types::PyTuple>,
            ) -> pyo3::PyResult<()> {
                self.check_open($crate::socket_file::CLOSED_FILE)?;
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
            ) -> pyo3::PyResult<bool> {
                self.close(py)?;
                Ok(false)
            }
        }
    };
}

pub(crate) use socket_file_methods;

use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::PyType;

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
