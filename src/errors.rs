//! Turning OS errors into the exceptions Python's socket module raises.

use std::io;

use pyo3::exceptions::PyOSError;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::PyType;

/// `io::Error` → the `OSError` subclass Python picks for its errno, with
/// `errno` and `strerror` set (pyo3's own conversion leaves `errno` at None).
pub fn os_error(err: io::Error) -> PyErr {
    match err.raw_os_error() {
        Some(code) => PyOSError::new_err((code, strerror(code))),
        None => PyOSError::new_err(err.to_string()),
    }
}

/// The message `strerror(code)` gives, without Rust's " (os error N)" suffix.
pub fn strerror(code: i32) -> String {
    let text = io::Error::from_raw_os_error(code).to_string();
    match text.rfind(" (os error ") {
        Some(cut) => text[..cut].to_string(),
        None => text,
    }
}

/// `socket.timeout("timed out")`: `TimeoutError` from 3.10 on, its own class on 3.9.
pub fn socket_timeout(py: Python<'_>) -> PyErr {
    static TIMEOUT: PyOnceLock<Py<PyType>> = PyOnceLock::new();
    match TIMEOUT.import(py, "socket", "timeout") {
        Ok(cls) => PyErr::from_type(cls.clone(), "timed out"),
        Err(err) => err,
    }
}

#[cfg(test)]
mod tests {
    use super::strerror;

    #[test]
    fn strerror_is_the_plain_message() {
        assert_eq!(strerror(crate::sys::EBADF), "Bad file descriptor");
        assert!(!strerror(crate::sys::EAGAIN).contains("os error"));
    }
}
