//! Releasing the GIL around blocking calls, safely at interpreter exit.
//!
//! Before 3.14, a thread that takes the GIL back while the interpreter is
//! finalizing (a daemon thread, typically: a worker or a loop left running)
//! is ended by CPython with `pthread_exit`, and that forced unwind aborts the
//! process when it meets the Rust frames below it. So a thread that wakes
//! to find the interpreter finalizing sleeps until the process exits
//! instead, as CPython 3.14 itself does.

use std::ffi::{c_int, c_void};
use std::sync::OnceLock;

use pyo3::marker::Ungil;
use pyo3::Python;

use crate::sys::{self, on_main_thread};

/// `py.detach(f)`, except that a non-main thread never re-enters a
/// finalizing interpreter.
pub fn detach<T, F>(py: Python<'_>, f: F) -> T
where
    F: Ungil + Send + FnOnce() -> T,
    T: Ungil + Send,
{
    crate::locks::assert_unlocked("the interpreter is released and taken again");
    py.detach(|| {
        let out = f();
        if interpreter_finalizing() && !on_main_thread() {
            loop {
                std::thread::park();
            }
        }
        out
    })
}

type IsFinalizing = unsafe extern "C" fn() -> c_int;

/// `Py_IsFinalizing()` (3.13+) or `_Py_IsFinalizing()` (3.9–3.12), looked
/// up once so one build serves every version.
fn interpreter_finalizing() -> bool {
    static CHECK: OnceLock<Option<IsFinalizing>> = OnceLock::new();
    let check = CHECK.get_or_init(|| {
        [c"Py_IsFinalizing", c"_Py_IsFinalizing"]
            .iter()
            .find_map(|name| sys::find_symbol(name))
            // SAFETY: both symbols are functions of signature `int (void)`.
            .map(|symbol| unsafe {
                std::mem::transmute::<*mut c_void, IsFinalizing>(symbol.as_ptr())
            })
    });
    // SAFETY: the function may be called without the GIL.
    check.is_some_and(|check| unsafe { check() } != 0)
}
