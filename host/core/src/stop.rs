//! A stop flag whose waits wake up as soon as it is raised: lets receiver and
//! server threads sleep (backoff, pacing) yet stop promptly.

use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

/// A stop flag with interruptible waits.
#[derive(Debug, Default)]
pub struct StopSignal {
    stopped: Mutex<bool>,
    cv: Condvar,
}

impl StopSignal {
    /// Raises the flag and wakes every waiter.
    pub fn trigger(&self) {
        *self.stopped.lock().unwrap_or_else(|e| e.into_inner()) = true;
        self.cv.notify_all();
    }

    /// Whether the flag is raised.
    pub fn is_stopped(&self) -> bool {
        *self.stopped.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sleeps until `deadline` or the flag is raised; returns true if stopped.
    pub fn wait_until(&self, deadline: Instant) -> bool {
        let mut stopped = self.stopped.lock().unwrap_or_else(|e| e.into_inner());
        while !*stopped {
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            stopped = match self.cv.wait_timeout(stopped, deadline - now) {
                Ok((guard, _)) => guard,
                Err(e) => e.into_inner().0,
            };
        }
        true
    }

    /// Sleeps for `dur` or until the flag is raised; returns true if stopped.
    pub fn wait(&self, dur: Duration) -> bool {
        self.wait_until(Instant::now() + dur)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn a_trigger_wakes_a_long_wait() {
        let s = Arc::new(StopSignal::default());
        let s2 = s.clone();
        let started = Instant::now();
        let h = std::thread::spawn(move || s2.wait(Duration::from_secs(30)));
        std::thread::sleep(Duration::from_millis(20));
        s.trigger();
        assert!(h.join().unwrap());
        assert!(started.elapsed() < Duration::from_secs(10));
        assert!(!StopSignal::default().wait(Duration::from_millis(1)));
    }
}
