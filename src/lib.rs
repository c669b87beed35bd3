//! The Rust core of `socketserver_rs`; the public API is the Python package around it.

use pyo3::prelude::*;

mod errors;
mod stream;

#[pymodule(gil_used = false)]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    stream::register(m)?;
    Ok(())
}
