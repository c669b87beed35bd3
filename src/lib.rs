//! The Rust core of `socketserver_rs`; the public API is the Python package around it.

use pyo3::prelude::*;

mod detach;
mod dispatch;
mod errors;
mod listener;
mod locks;
mod message_loop;
mod pool;
mod proxy;
mod pycall;
mod readbuf;
mod serve;
mod socket_file;
mod stats;
mod stream;
mod sys;

/// `gil_used = false`: a free-threaded interpreter keeps running without
/// its GIL. Nothing in the core relies on the GIL: its classes are frozen,
/// their state behind locks and atomics, and no lock is held while Python
/// code runs. The whole suite runs on a free-threaded CPython in CI.
#[pymodule(gil_used = false)]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    listener::register(m)?;
    serve::register(m)?;
    dispatch::register(m)?;
    message_loop::register(m)?;
    pool::register(m)?;
    stats::register(m)?;
    proxy::register(m)?;
    stream::register(m)?;
    Ok(())
}
