//! The Rust core of `socketserver_rs`; the public API is the Python package around it.

use pyo3::prelude::*;

mod detach;
mod dispatch;
mod errors;
mod listener;
mod message_loop;
mod pool;
mod proxy;
mod readbuf;
mod serve;
mod socket_file;
mod stats;
mod stream;
mod sys;

/// `gil_used = true`: a free-threaded interpreter keeps its GIL on while this
/// module is loaded. The core is written for free threading (frozen
/// classes, state behind locks and atomics), but no free-threaded CPython
/// could be tested here; see the README.
#[pymodule(gil_used = true)]
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
