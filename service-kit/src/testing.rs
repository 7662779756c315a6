//! What the tests of every crate use: waiting for a condition with a bound, and a message
//! that says what was seen instead.

use std::time::{Duration, Instant};

/// Waits until `check` gives a value, for at most `limit`; the value. Until then `check` says
/// what it sees instead, for the failure message.
pub fn wait_until<T>(what: &str, limit: Duration, mut check: impl FnMut() -> Result<T, String>) -> T {
    let started = Instant::now();
    // Quick checks first (a recorded run ends in microseconds), then every 200 ms at most.
    let mut pause = Duration::from_millis(5);
    loop {
        match check() {
            Ok(value) => return value,
            Err(seen) => {
                assert!(started.elapsed() < limit, "{what}: not after {limit:?}; last seen:\n{seen}")
            }
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(200));
    }
}
