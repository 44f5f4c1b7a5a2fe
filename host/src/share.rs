//! CPU shares: how much processor time a group of jobs (a tenant's, on a
//! server) may use, so that a tenant over its share falls behind alone.
//!
//! A [`CpuShare`] is a token bucket of CPU seconds filled at `cores`
//! seconds per second (at most [`BURST`] seconds' worth banked). Every job
//! in the group measures the CPU time its threads (its batch thread and its
//! worker pool) really used during a batch — from the kernel's per-thread
//! accounting, `/proc/self/task/<tid>/schedstat` — and charges it after the
//! batch; before starting a batch a job waits while the bucket is in debt.
//! A job that spends more than its share therefore starts its batches late:
//! its scheduling delay grows, the other tenants' does not, and it is never
//! interrupted in the middle of a batch (the per-call deadline does that).
//!
//! Where per-thread accounting is unavailable (not Linux), nothing is
//! charged and a warning says so once.

use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// How many seconds of its share a group may bank while idle.
pub const BURST: Duration = Duration::from_secs(1);

/// A CPU budget shared by a group of jobs; see the module docs.
#[derive(Debug)]
pub struct CpuShare {
    cores: f64,
    bucket: Mutex<Bucket>,
}

#[derive(Debug)]
struct Bucket {
    /// CPU seconds available; negative is debt.
    balance: f64,
    at: Instant,
    charged: f64,
    waited: Duration,
}

impl CpuShare {
    /// A share of `cores` processors (0.5: half of one core; 2.0: two).
    pub fn new(cores: f64) -> CpuShare {
        let cores = cores.max(0.01);
        CpuShare {
            cores,
            bucket: Mutex::new(Bucket {
                balance: cores * BURST.as_secs_f64(),
                at: Instant::now(),
                charged: 0.0,
                waited: Duration::ZERO,
            }),
        }
    }

    /// The share, in cores.
    pub fn cores(&self) -> f64 {
        self.cores
    }

    fn refill(&self, b: &mut Bucket) {
        let now = Instant::now();
        let earned = self.cores * now.duration_since(b.at).as_secs_f64();
        b.balance = (b.balance + earned).min(self.cores * BURST.as_secs_f64());
        b.at = now;
    }

    /// Charges CPU time used by one of the group's jobs.
    pub fn charge(&self, cpu: Duration) {
        let mut b = self.bucket.lock().unwrap_or_else(|e| e.into_inner());
        self.refill(&mut b);
        b.balance -= cpu.as_secs_f64();
        b.charged += cpu.as_secs_f64();
    }

    /// How long the group must wait before it is out of debt (zero if it is).
    pub fn debt_wait(&self) -> Duration {
        let mut b = self.bucket.lock().unwrap_or_else(|e| e.into_inner());
        self.refill(&mut b);
        if b.balance >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-b.balance / self.cores)
        }
    }

    /// Waits while the group is in debt, or until `stop` is set. Returns
    /// the time waited.
    pub fn wait(&self, stop: &AtomicBool) -> Duration {
        let started = Instant::now();
        loop {
            let wait = self.debt_wait();
            if wait.is_zero() || stop.load(Ordering::Relaxed) {
                break;
            }
            std::thread::sleep(wait.min(Duration::from_millis(50)));
        }
        let waited = started.elapsed();
        let mut b = self.bucket.lock().unwrap_or_else(|e| e.into_inner());
        b.waited += waited;
        waited
    }

    /// CPU seconds charged so far and time spent waiting for the share.
    pub fn totals(&self) -> (Duration, Duration) {
        let b = self.bucket.lock().unwrap_or_else(|e| e.into_inner());
        (Duration::from_secs_f64(b.charged.max(0.0)), b.waited)
    }
}

/// The threads of one job, and the CPU time they have used.
#[derive(Debug, Default)]
pub(crate) struct ThreadGroup {
    threads: Mutex<Vec<PathBuf>>,
}

impl ThreadGroup {
    /// Adds the calling thread.
    pub(crate) fn join_current(&self) {
        static WARNED: AtomicBool = AtomicBool::new(false);
        match std::fs::read_link("/proc/thread-self") {
            Ok(link) => {
                // "<pid>/task/<tid>"
                let stat = PathBuf::from("/proc").join(link).join("schedstat");
                self.threads
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(stat);
            }
            Err(e) => {
                if !WARNED.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        "CPU shares are not enforced: no per-thread CPU accounting ({e})"
                    );
                }
            }
        }
    }

    /// CPU time used so far by the group's live threads.
    pub(crate) fn cpu_time(&self) -> Duration {
        let threads = self.threads.lock().unwrap_or_else(|e| e.into_inner());
        let nanos: u64 = threads
            .iter()
            .filter_map(|p| std::fs::read_to_string(p).ok())
            .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
            .sum();
        Duration::from_nanos(nanos)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debt_is_paid_at_the_share_rate() {
        let share = CpuShare::new(0.5);
        // Spend the banked half second and one more second.
        share.charge(Duration::from_millis(1500));
        let wait = share.debt_wait();
        // 1 s of debt at half a core: about 2 s.
        assert!(
            wait > Duration::from_millis(1800) && wait <= Duration::from_secs(2),
            "{wait:?}"
        );
        let (charged, _) = share.totals();
        assert_eq!(charged, Duration::from_millis(1500));
    }

    #[test]
    fn a_stop_ends_the_wait() {
        let share = CpuShare::new(0.1);
        share.charge(Duration::from_secs(10));
        let stop = AtomicBool::new(true);
        assert!(share.wait(&stop) < Duration::from_millis(50));
    }

    #[test]
    fn thread_cpu_time_grows_with_work() {
        let group = ThreadGroup::default();
        group.join_current();
        let before = group.cpu_time();
        let started = Instant::now();
        let mut x = 0u64;
        while started.elapsed() < Duration::from_millis(50) {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
        }
        std::hint::black_box(x);
        if cfg!(target_os = "linux") {
            assert!(group.cpu_time() > before + Duration::from_millis(20));
        }
    }
}
