//! Flow control: Spark's PID rate estimator, and the throttle that holds a
//! receiver to the rate it sets (or to its own maximum).
//!
//! After each batch the estimator compares the rate records arrived at with
//! the rate the job processed them at, and sets a new receiving rate:
//! `rate - P·error - I·historical_error - D·d(error)/dt` with Spark's
//! defaults P = 1.0, I = 0.2, D = 0 and a floor of 100 records/s, where the
//! historical error is the backlog (scheduling delay × processing rate per
//! batch interval). A throttled receiver stops reading when it is ahead, so
//! TCP pushes back on the sender instead of memory filling up.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Spark's `PIDRateEstimator`.
#[derive(Debug, Clone)]
pub struct PidRateEstimator {
    batch_interval_ms: f64,
    proportional: f64,
    integral: f64,
    derivative: f64,
    min_rate: f64,
    first_run: bool,
    latest_time: i64,
    latest_rate: f64,
    latest_error: f64,
}

impl PidRateEstimator {
    /// Spark's defaults (1.0, 0.2, 0.0, minimum 100 records/s).
    pub fn new(batch_interval: Duration) -> Self {
        PidRateEstimator {
            batch_interval_ms: batch_interval.as_millis().max(1) as f64,
            proportional: 1.0,
            integral: 0.2,
            derivative: 0.0,
            min_rate: 100.0,
            first_run: true,
            latest_time: -1,
            latest_rate: -1.0,
            latest_error: -1.0,
        }
    }

    /// The new rate (records/s) after a batch completed at `time_ms` with
    /// `elements` records, or `None` when there is nothing to learn from yet.
    pub fn compute(
        &mut self,
        time_ms: i64,
        elements: u64,
        processing: Duration,
        scheduling: Duration,
    ) -> Option<f64> {
        let processing_ms = processing.as_secs_f64() * 1e3;
        if time_ms <= self.latest_time || elements == 0 || processing_ms <= 0.0 {
            return None;
        }
        let since = (time_ms - self.latest_time) as f64 / 1000.0;
        let processing_rate = elements as f64 / processing_ms * 1000.0;
        let error = self.latest_rate - processing_rate;
        let historical = scheduling.as_secs_f64() * 1e3 * processing_rate / self.batch_interval_ms;
        let d_error = (error - self.latest_error) / since;
        let new_rate = (self.latest_rate
            - self.proportional * error
            - self.integral * historical
            - self.derivative * d_error)
            .max(self.min_rate);
        self.latest_time = time_ms;
        if self.first_run {
            self.latest_rate = processing_rate;
            self.latest_error = 0.0;
            self.first_run = false;
            return None;
        }
        self.latest_rate = new_rate;
        self.latest_error = error;
        Some(new_rate)
    }
}

/// Holds a receiver to a rate in records per second: `acquire` before each
/// record blocks while the receiver is ahead.
#[derive(Debug)]
pub(crate) struct Throttle {
    /// The controller's rate (f64 bits); 0: none.
    rate: AtomicU64,
    /// The receiver's own maximum.
    max: Option<f64>,
    /// Tokens (records) available and when they were last topped up.
    bucket: Mutex<(f64, Instant)>,
}

impl Throttle {
    pub(crate) fn new(max: Option<f64>) -> Self {
        Throttle {
            rate: AtomicU64::new(0),
            max: max.filter(|m| *m > 0.0),
            bucket: Mutex::new((0.0, Instant::now())),
        }
    }

    /// Sets the controller's rate (`None`: only the maximum applies).
    pub(crate) fn set(&self, rate: Option<f64>) {
        let bits = rate.filter(|r| *r > 0.0).map_or(0, f64::to_bits);
        self.rate.store(bits, Ordering::Relaxed);
    }

    /// The rate in force: the lower of the controller's and the maximum.
    pub(crate) fn limit(&self) -> Option<f64> {
        let bits = self.rate.load(Ordering::Relaxed);
        let controller = (bits != 0).then(|| f64::from_bits(bits));
        match (controller, self.max) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Takes one record's token, sleeping until one is available. A burst
    /// of at most a tenth of a second's worth passes at once.
    pub(crate) fn acquire(&self) {
        let Some(rate) = self.limit() else { return };
        let mut b = self.bucket.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        let burst = (rate / 10.0).max(1.0);
        b.0 = (b.0 + now.duration_since(b.1).as_secs_f64() * rate).min(burst);
        b.1 = now;
        b.0 -= 1.0;
        if b.0 < 0.0 {
            let wait = Duration::from_secs_f64(-b.0 / rate);
            drop(b);
            std::thread::sleep(wait);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_estimator_follows_sparks_formula() {
        let mut e = PidRateEstimator::new(Duration::from_millis(1000));
        let ms = Duration::from_millis;
        // First batch: learns the processing rate only.
        assert_eq!(e.compute(1000, 1000, ms(2000), ms(0)), None);
        // 500/s processing; no backlog: the rate drops to the processing rate.
        let r = e.compute(2000, 1000, ms(2000), ms(0)).unwrap();
        assert!((r - 500.0).abs() < 1e-9, "{r}");
        // A backlog of 1 s at 500/s lowers it by 0.2 × 500.
        let r = e.compute(3000, 500, ms(1000), ms(1000)).unwrap();
        assert!((r - 400.0).abs() < 1e-9, "{r}");
        // Never below the floor; empty batches teach nothing.
        assert_eq!(e.compute(4000, 0, ms(10), ms(0)), None);
        let r = e.compute(5000, 10, ms(1000), ms(5000)).unwrap();
        assert_eq!(r, 100.0);
    }

    #[test]
    fn the_throttle_holds_the_lower_rate() {
        let t = Throttle::new(Some(1000.0));
        assert_eq!(t.limit(), Some(1000.0));
        t.set(Some(200.0));
        assert_eq!(t.limit(), Some(200.0));
        t.set(Some(5000.0));
        assert_eq!(t.limit(), Some(1000.0));
        t.set(None);
        let started = Instant::now();
        for _ in 0..300 {
            t.acquire();
        }
        // 300 records at 1000/s, less the 100-record burst: about 0.2 s.
        let took = started.elapsed();
        assert!(took >= Duration::from_millis(150), "{took:?}");
        assert!(Throttle::new(None).limit().is_none());
    }
}
