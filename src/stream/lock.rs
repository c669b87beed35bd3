//! The lock of a file object's state.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};

use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use pyo3::sync::MutexExt;

fn thread_token() -> usize {
    thread_local!(static TOKEN: u8 = const { 0 });
    TOKEN.with(|t| t as *const u8 as usize)
}

/// A mutex that is waited for with the interpreter released, and that turns a
/// re-entrant call from the same thread (a signal handler using the object it
/// interrupted) into `RuntimeError` instead of a deadlock.
pub struct Locked<T> {
    inner: Mutex<T>,
    owner: AtomicUsize,
}

pub struct Guard<'a, T> {
    guard: MutexGuard<'a, T>,
    owner: &'a AtomicUsize,
}

impl<T> Drop for Guard<'_, T> {
    fn drop(&mut self) {
        self.owner.store(0, Ordering::Release);
    }
}

impl<T> std::ops::Deref for Guard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.guard
    }
}

impl<T> std::ops::DerefMut for Guard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        &mut self.guard
    }
}

impl<T> Locked<T> {
    pub fn new(value: T) -> Self {
        Locked {
            inner: Mutex::new(value),
            owner: AtomicUsize::new(0),
        }
    }

    pub fn lock(&self, py: Python<'_>, what: &str) -> PyResult<Guard<'_, T>> {
        let me = thread_token();
        if self.owner.load(Ordering::Acquire) == me {
            return Err(PyRuntimeError::new_err(format!(
                "reentrant call inside {what}"
            )));
        }
        let guard = self
            .inner
            .lock_py_attached(py)
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        self.owner.store(me, Ordering::Release);
        Ok(Guard {
            guard,
            owner: &self.owner,
        })
    }

    pub fn get_mut(&mut self) -> &mut T {
        self.inner
            .get_mut()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}
