//! Batch times, durations and clocks. Time reaches the engine only through a
//! [`Clock`]: [`SystemClock`] in production, [`ManualClock`] in tests and
//! replay, where batches advance without sleeping.

use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The time of a batch: milliseconds since the Unix epoch, a multiple of the
/// batch interval. A batch at `t` holds what arrived in `(t - interval, t]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BatchTime(pub i64);

impl BatchTime {
    /// Milliseconds since the Unix epoch.
    pub fn millis(self) -> i64 {
        self.0
    }

    /// This time plus `d`.
    pub fn plus(self, d: Duration) -> BatchTime {
        BatchTime(self.0 + d.as_millis() as i64)
    }

    /// The first multiple of `interval` strictly after `now_ms`.
    pub fn next_after(now_ms: i64, interval: Duration) -> BatchTime {
        let i = interval.as_millis().max(1) as i64;
        BatchTime((now_ms.div_euclid(i) + 1) * i)
    }
}

impl std::fmt::Display for BatchTime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ms", self.0)
    }
}

/// Parses a duration such as `1s`, `500ms`, `2m`, `1.5s` or `100us`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .ok_or_else(|| format!("`{s}` has no unit (use ms, s, m, h, e.g. `1s`)"))?;
    let (num, unit) = s.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("`{s}` is not a duration (e.g. `1s`, `500ms`)"))?;
    let secs = match unit.trim() {
        "us" | "µs" => n / 1e6,
        "ms" => n / 1e3,
        "s" | "sec" => n,
        "m" | "min" => n * 60.0,
        "h" => n * 3600.0,
        u => return Err(format!("unknown unit `{u}` in `{s}` (use ms, s, m or h)")),
    };
    if !secs.is_finite() || secs < 0.0 {
        return Err(format!("`{s}` is not a valid duration"));
    }
    // Longer would overflow the millisecond arithmetic of batch times (and
    // `Duration` itself, which panicked: found by fuzzing job specs).
    if secs > LONGEST_DURATION_SECS {
        return Err(format!("`{s}` is too long (at most 100 years)"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// The longest duration a job may name: 100 years.
const LONGEST_DURATION_SECS: f64 = 100.0 * 365.25 * 24.0 * 3600.0;

/// The engine's only source of time.
pub trait Clock: Send + Sync {
    /// Now, in milliseconds since the Unix epoch.
    fn now_ms(&self) -> i64;
    /// Blocks until `now_ms() >= t` (a manual clock returns at once if it is
    /// already there, and otherwise waits for a test to advance it) or until
    /// `stop` reads true; returns whether the time was reached.
    fn wait_until(&self, t: i64, stop: &std::sync::atomic::AtomicBool) -> bool;
    /// Whether the engine itself may advance this clock to the next batch
    /// (replay: batches run back to back without waiting).
    fn is_manual(&self) -> bool {
        false
    }
    /// Advances a manual clock to `t` (no-op for real clocks).
    fn advance_to(&self, _t: i64) {}
}

/// The wall clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0)
    }

    fn wait_until(&self, t: i64, stop: &std::sync::atomic::AtomicBool) -> bool {
        use std::sync::atomic::Ordering;
        loop {
            if stop.load(Ordering::Relaxed) {
                return false;
            }
            let now = self.now_ms();
            if now >= t {
                return true;
            }
            // Short naps keep stop requests prompt.
            std::thread::sleep(Duration::from_millis((t - now).clamp(1, 50) as u64));
        }
    }
}

/// A clock that moves only when told: tests and replay sources.
#[derive(Debug, Clone)]
pub struct ManualClock {
    inner: Arc<(Mutex<i64>, Condvar)>,
}

impl ManualClock {
    /// A manual clock at `start_ms`.
    pub fn new(start_ms: i64) -> Self {
        ManualClock {
            inner: Arc::new((Mutex::new(start_ms), Condvar::new())),
        }
    }

    /// Moves the clock forward by `d`.
    pub fn advance(&self, d: Duration) {
        let (m, cv) = &*self.inner;
        let mut t = m.lock().unwrap_or_else(|e| e.into_inner());
        *t += d.as_millis() as i64;
        cv.notify_all();
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> i64 {
        *self.inner.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn wait_until(&self, t: i64, stop: &std::sync::atomic::AtomicBool) -> bool {
        use std::sync::atomic::Ordering;
        let (m, cv) = &*self.inner;
        let mut now = m.lock().unwrap_or_else(|e| e.into_inner());
        while *now < t {
            if stop.load(Ordering::Relaxed) {
                return false;
            }
            let (guard, _) = cv
                .wait_timeout(now, Duration::from_millis(50))
                .unwrap_or_else(|e| e.into_inner());
            now = guard;
        }
        true
    }

    fn is_manual(&self) -> bool {
        true
    }

    fn advance_to(&self, t: i64) {
        let (m, cv) = &*self.inner;
        let mut now = m.lock().unwrap_or_else(|e| e.into_inner());
        if *now < t {
            *now = t;
        }
        cv.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_durations() {
        assert_eq!(parse_duration("1s"), Ok(Duration::from_secs(1)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_duration("10").is_err());
        assert!(parse_duration("3 parsecs").is_err());
    }

    /// A duration past `Duration`'s range (which panicked, found by fuzzing
    /// job specs) or past 100 years is an error naming it.
    #[test]
    fn a_duration_too_long_is_refused_not_a_panic() {
        let huge = format!("5{}ms", "4".repeat(100));
        let e = parse_duration(&huge).unwrap_err();
        assert!(e.contains("too long"), "{e}");
        assert!(parse_duration("101y").is_err());
        assert!(
            parse_duration("876000h").is_ok(),
            "100 years less a few days"
        );
        assert!(parse_duration("877000h").is_err());
    }

    #[test]
    fn next_batch_time_is_on_the_grid() {
        let i = Duration::from_secs(1);
        assert_eq!(BatchTime::next_after(1500, i), BatchTime(2000));
        assert_eq!(BatchTime::next_after(2000, i), BatchTime(3000));
    }

    #[test]
    fn manual_clock_waits_for_advance() {
        let c = ManualClock::new(0);
        let stop = std::sync::atomic::AtomicBool::new(false);
        assert!(c.wait_until(0, &stop));
        let c2 = c.clone();
        let h = std::thread::spawn(move || {
            c2.wait_until(1000, &std::sync::atomic::AtomicBool::new(false))
        });
        c.advance(Duration::from_secs(1));
        assert!(h.join().unwrap());
        assert_eq!(c.now_ms(), 1000);
    }
}
