//! Locks that outlive a panic: a thread that panicked while holding a lock must not take every
//! later request down with it. The data behind our locks stays consistent between statements
//! (each change is one assignment or one call), so the poisoned guard is simply taken.

use std::sync::{Mutex, MutexGuard};

/// Locks `mutex`, ignoring poisoning (see the module docs).
pub fn lock<T: ?Sized>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}
