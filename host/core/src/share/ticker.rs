//! The epoch ticker's pace: faster while a light group's batch runs, and
//! woken when one starts.

use super::placement;
use std::sync::{Condvar, Mutex};
use std::time::Duration;

/// Whether a light group's batch is running (Linux; elsewhere never). The
/// epoch ticker ticks faster meanwhile (the wasm runtime's `FAST_TICK`), so
/// that a call which turns long during the batch (a new job's first,
/// unknown, call) is noticed within a millisecond of it, not of the next
/// regular tick, and the light batch moves off its processor.
pub fn light_batch_running() -> bool {
    placement::light_running()
}

/// Wakes epoch tickers sleeping in [`tick_sleep`] (a light batch started).
static TICKERS: (Mutex<u64>, Condvar) = (Mutex::new(0), Condvar::new());

/// The epoch ticker's sleep: `tick`, or less if a light batch starts
/// meanwhile (the ticker then ticks at once and goes on at the fast rate).
pub fn tick_sleep(tick: Duration) {
    let (starts, woken) = &TICKERS;
    let guard = starts.lock().unwrap_or_else(|e| e.into_inner());
    let seen = *guard;
    let _ = woken
        .wait_timeout_while(guard, tick, |n| *n == seen)
        .unwrap_or_else(|e| e.into_inner());
}

pub(super) fn wake_tickers() {
    let (starts, woken) = &TICKERS;
    *starts.lock().unwrap_or_else(|e| e.into_inner()) += 1;
    woken.notify_all();
}
