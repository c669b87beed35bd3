//! Every call from the core into Python code.
//!
//! Before 3.14, a non-main thread that takes the GIL back while the
//! interpreter finalizes (a daemon thread: a loop or a worker left running)
//! is ended by CPython with `pthread_exit`. Python code may give the GIL up
//! and take it back anywhere: a socket's `close()`, a thread's `start()`, or
//! any bytecode when another thread asks for the GIL. That forced unwind
//! would then run through the Rust frames that made the call and abort the
//! process, or free objects without the GIL on its way. Through these
//! functions the unwind stops at the call: the thread sleeps until the
//! process exits, as CPython 3.14 itself does (and pyo3 when it takes the
//! GIL back after `detach`).

use std::ptr;

use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::{PyString, PyTuple};
use pyo3::BoundObject;

#[cfg(unix)]
mod raw {
    use pyo3::ffi::PyObject;

    // The same functions as pyo3's declarations, declared as unwinding so
    // that a forced unwind out of them reaches `Sleeper`.
    extern "C-unwind" {
        pub fn PyObject_Call(
            callable: *mut PyObject,
            args: *mut PyObject,
            kwargs: *mut PyObject,
        ) -> *mut PyObject;
        pub fn PyObject_VectorcallMethod(
            name: *mut PyObject,
            args: *const *mut PyObject,
            nargsf: usize,
            kwnames: *mut PyObject,
        ) -> *mut PyObject;
    }
}

// Elsewhere a thread is not ended by unwinding it.
#[cfg(not(unix))]
mod raw {
    pub use pyo3::ffi::{PyObject_Call, PyObject_VectorcallMethod};
}

/// Dropped only by an unwind out of the call it guards (the call itself
/// cannot panic): it puts the thread to sleep for good.
struct Sleeper;

impl Drop for Sleeper {
    fn drop(&mut self) {
        loop {
            std::thread::park();
        }
    }
}

/// `call` made under a `Sleeper`, holding no lock of the core.
fn guarded(call: impl FnOnce() -> *mut ffi::PyObject) -> *mut ffi::PyObject {
    crate::locks::assert_unlocked("the core calls into Python");
    let sleeper = Sleeper;
    let result = call();
    std::mem::forget(sleeper);
    result
}

/// `callable(*args)`.
pub fn call<'py, A>(callable: &Bound<'py, PyAny>, args: A) -> PyResult<Bound<'py, PyAny>>
where
    A: IntoPyObject<'py, Target = PyTuple>,
    PyErr: From<A::Error>,
{
    let py = callable.py();
    let args = args.into_pyobject(py)?.into_bound();
    // SAFETY: both pointers are live objects held by this frame; the call
    // returns a new reference or NULL with an exception set.
    unsafe {
        let result =
            guarded(|| raw::PyObject_Call(callable.as_ptr(), args.as_ptr(), ptr::null_mut()));
        Bound::from_owned_ptr_or_err(py, result)
    }
}

/// `object.name()`.
pub fn call_method0<'py>(
    object: &Bound<'py, PyAny>,
    name: &Bound<'py, PyString>,
) -> PyResult<Bound<'py, PyAny>> {
    method(object, name, &[object.as_ptr()])
}

/// `object.name(arg)`.
pub fn call_method1<'py>(
    object: &Bound<'py, PyAny>,
    name: &Bound<'py, PyString>,
    arg: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyAny>> {
    method(object, name, &[object.as_ptr(), arg.as_ptr()])
}

/// The method `name` of `args[0]`, called with the rest of `args`.
fn method<'py>(
    object: &Bound<'py, PyAny>,
    name: &Bound<'py, PyString>,
    args: &[*mut ffi::PyObject],
) -> PyResult<Bound<'py, PyAny>> {
    // SAFETY: every pointer in `args` and `name` is a live object held by
    // the caller; the call returns a new reference or NULL with an
    // exception set.
    unsafe {
        let result = guarded(|| {
            raw::PyObject_VectorcallMethod(
                name.as_ptr(),
                args.as_ptr(),
                args.len(),
                ptr::null_mut(),
            )
        });
        Bound::from_owned_ptr_or_err(object.py(), result)
    }
}
