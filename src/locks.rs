//! The core's locks, and their one rule: none is held while Python code can
//! run. On a free-threaded interpreter a thread that holds a lock and then
//! runs Python (or re-attaches to the interpreter) can wait for a
//! stop-the-world pause, while the pause waits for a thread that is attached
//! and waiting for that lock: a deadlock. So state is locked, read or
//! changed, and unlocked before any call into Python.
//!
//! The rule is checked: every `Lock` counts its guards per thread, and the
//! places where the core calls Python or re-attaches (`detach()`, the
//! logger, the pool's `spawn`, new socket objects, the message loop's
//! reports) call `assert_unlocked()`, which panics, so reaching Python as
//! `PanicException`, if a guard is alive. `tests/test_core_locks.py` checks
//! that no other mutex is used in the core. (The file objects' lock,
//! `stream::lock::Locked`, is the one exception by design: it serialises
//! callers across Python calls as the standard files do, and its waiters
//! release the interpreter while they wait.)

use std::cell::Cell;
use std::ops::{Deref, DerefMut};
use std::sync::{Condvar, Mutex, MutexGuard, TryLockError};
use std::time::Duration;

thread_local! {
    static HELD: Cell<usize> = const { Cell::new(0) };
}

/// A mutex that is never held while Python code runs (see the module).
/// A poisoned lock is taken as it is: its state is kept consistent by
/// short critical sections that do not panic midway.
#[derive(Default)]
pub struct Lock<T>(Mutex<T>);

pub struct Guard<'a, T> {
    guard: Option<MutexGuard<'a, T>>,
}

impl<T> Lock<T> {
    pub const fn new(value: T) -> Self {
        Lock(Mutex::new(value))
    }

    pub fn lock(&self) -> Guard<'_, T> {
        let guard = self.0.lock().unwrap_or_else(|poison| poison.into_inner());
        HELD.with(|held| held.set(held.get() + 1));
        Guard { guard: Some(guard) }
    }
}

impl<T> Lock<T> {
    /// The lock if no other thread holds it.
    pub fn try_lock(&self) -> Option<Guard<'_, T>> {
        let guard = match self.0.try_lock() {
            Ok(guard) => guard,
            Err(TryLockError::Poisoned(poison)) => poison.into_inner(),
            Err(TryLockError::WouldBlock) => return None,
        };
        HELD.with(|held| held.set(held.get() + 1));
        Some(Guard { guard: Some(guard) })
    }
}

impl<'a, T> Guard<'a, T> {
    /// `Condvar::wait_timeout_while` on this guard's mutex.
    pub fn wait_timeout_while(
        mut self,
        condvar: &Condvar,
        timeout: Duration,
        condition: impl FnMut(&mut T) -> bool,
    ) -> Self {
        let guard = self
            .guard
            .take()
            .expect("a guard holds its lock until dropped");
        let (guard, _) = condvar
            .wait_timeout_while(guard, timeout, condition)
            .unwrap_or_else(|poison| poison.into_inner());
        self.guard = Some(guard);
        self
    }
}

impl<T> Drop for Guard<'_, T> {
    fn drop(&mut self) {
        HELD.with(|held| held.set(held.get() - 1));
    }
}

impl<T> Deref for Guard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        self.guard
            .as_ref()
            .expect("a guard holds its lock until dropped")
    }
}

impl<T> DerefMut for Guard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        self.guard
            .as_mut()
            .expect("a guard holds its lock until dropped")
    }
}

/// Panics if this thread holds a `Lock`: called before the core runs
/// Python code or re-attaches to the interpreter (`what` says where).
pub fn assert_unlocked(what: &str) {
    let held = HELD.with(Cell::get);
    assert!(
        held == 0,
        "{held} core lock(s) held while {what}: a lock must never be held across a Python call"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guards_are_counted_per_thread() {
        let lock = Lock::new(1);
        assert_unlocked("nothing is locked");
        {
            let mut guard = lock.lock();
            *guard += 1;
            let other = std::thread::spawn(|| std::panic::catch_unwind(|| assert_unlocked("x")));
            assert!(
                other.join().unwrap().is_ok(),
                "another thread holds nothing"
            );
            assert!(std::panic::catch_unwind(|| assert_unlocked("a test")).is_err());
        }
        assert_unlocked("the guard was dropped");
        assert_eq!(*lock.lock(), 2);
    }

    #[test]
    fn a_condvar_wait_keeps_the_lock_counted() {
        let lock = Lock::new(false);
        let condvar = Condvar::new();
        let guard = lock.lock();
        let guard = guard.wait_timeout_while(&condvar, Duration::from_millis(1), |done| !*done);
        assert!(std::panic::catch_unwind(|| assert_unlocked("waiting")).is_err());
        drop(guard);
        assert_unlocked("after the wait");
    }
}
