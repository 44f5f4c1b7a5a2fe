//! CPU shares: how much processor time a group of jobs (a tenant's, on a
//! server) may use, so that a tenant over its share falls behind alone.
//!
//! A [`CpuShare`] of `cores` limits its group two ways:
//!
//! - **rate**: a token bucket of CPU seconds filled at `cores` seconds per
//!   second (at most [`BURST`] seconds' worth banked). Every job of the
//!   group measures the CPU time its threads (its batch thread and its
//!   worker pool) really used during a batch — the kernel's per-thread
//!   accounting, `/proc/self/task/<tid>/schedstat` — and charges it when
//!   the batch ends, failed or not; a job waits before a batch while the
//!   bucket is in debt.
//! - **parallelism**: at most ⌈`cores`⌉ of the group's batches run at once,
//!   so a group cannot take every core in a burst either (a batch is never
//!   interrupted halfway; the per-call deadline bounds one call).
//!
//! A job that spends more than its share therefore starts its batches
//! late: its scheduling delay grows, the other groups' does not.
//! Where per-thread accounting is unavailable (not Linux), only the
//! parallelism holds and a warning says so once.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

/// How many seconds of its share a group may bank while idle.
pub const BURST: Duration = Duration::from_secs(1);

/// A CPU budget shared by a group of jobs; see the module docs.
#[derive(Debug)]
pub struct CpuShare {
    cores: f64,
    slots: usize,
    bucket: Mutex<Bucket>,
    freed: Condvar,
}

#[derive(Debug)]
struct Bucket {
    /// CPU seconds available; negative is debt.
    balance: f64,
    at: Instant,
    charged: f64,
    waited: Duration,
    running: usize,
}

impl CpuShare {
    /// A share of `cores` processors (0.5: half of one core; 2.0: two).
    pub fn new(cores: f64) -> CpuShare {
        let cores = cores.max(0.01);
        CpuShare {
            cores,
            slots: (cores.ceil() as usize).max(1),
            bucket: Mutex::new(Bucket {
                balance: cores * BURST.as_secs_f64(),
                at: Instant::now(),
                charged: 0.0,
                waited: Duration::ZERO,
                running: 0,
            }),
            freed: Condvar::new(),
        }
    }

    /// The share, in cores.
    pub fn cores(&self) -> f64 {
        self.cores
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Bucket> {
        self.bucket.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn refill(&self, b: &mut Bucket) {
        let now = Instant::now();
        let earned = self.cores * now.duration_since(b.at).as_secs_f64();
        b.balance = (b.balance + earned).min(self.cores * BURST.as_secs_f64());
        b.at = now;
    }

    /// Charges CPU time used by one of the group's jobs.
    pub fn charge(&self, cpu: Duration) {
        let mut b = self.lock();
        self.refill(&mut b);
        b.balance -= cpu.as_secs_f64();
        b.charged += cpu.as_secs_f64();
    }

    /// How long until `b` is out of debt at the share's rate (zero if it is).
    fn debt(&self, b: &Bucket) -> Duration {
        if b.balance >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-b.balance / self.cores)
        }
    }

    /// How long the group must wait before it is out of debt (zero if it is).
    pub fn debt_wait(&self) -> Duration {
        let mut b = self.lock();
        self.refill(&mut b);
        self.debt(&b)
    }

    /// Waits for the group's turn to run a batch of a job whose threads are
    /// `threads`: until it is out of debt and one of its slots is free (or
    /// `stop` is set). The returned turn charges the CPU the threads use
    /// and frees the slot when dropped.
    pub(crate) fn turn<'a>(&'a self, stop: &AtomicBool, threads: &'a ThreadGroup) -> Turn<'a> {
        let started = Instant::now();
        let mut b = self.lock();
        loop {
            self.refill(&mut b);
            let stopping = stop.load(Ordering::Relaxed);
            let debt = self.debt(&b);
            if stopping || (debt.is_zero() && b.running < self.slots) {
                break;
            }
            let nap = if debt.is_zero() {
                Duration::from_millis(50)
            } else {
                debt.min(Duration::from_millis(50))
            };
            b = self
                .freed
                .wait_timeout(b, nap)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        b.running += 1;
        let waited = started.elapsed();
        b.waited += waited;
        drop(b);
        Turn {
            share: self,
            threads,
            before: threads.cpu_time(),
            waited,
        }
    }

    /// CPU seconds charged so far and time spent waiting for the share.
    pub fn totals(&self) -> (Duration, Duration) {
        let b = self.lock();
        (Duration::from_secs_f64(b.charged.max(0.0)), b.waited)
    }
}

/// One batch's turn in its group's share ([`CpuShare::turn`]).
pub(crate) struct Turn<'a> {
    share: &'a CpuShare,
    threads: &'a ThreadGroup,
    before: Duration,
    waited: Duration,
}

impl Turn<'_> {
    /// How long the batch waited for its turn.
    pub(crate) fn waited(&self) -> Duration {
        self.waited
    }
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        let used = self.threads.cpu_time().saturating_sub(self.before);
        self.share.charge(used);
        self.share.lock().running -= 1;
        self.share.freed.notify_all();
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
                        "CPU shares limit parallelism only: no per-thread CPU accounting ({e})"
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
        let threads = ThreadGroup::default();
        assert!(share.turn(&stop, &threads).waited() < Duration::from_millis(50));
    }

    #[test]
    fn a_half_core_share_runs_one_batch_at_a_time() {
        let share = std::sync::Arc::new(CpuShare::new(0.5));
        let threads = std::sync::Arc::new(ThreadGroup::default());
        let stop = AtomicBool::new(false);
        let first = share.turn(&stop, &threads);
        let (s, t) = (share.clone(), threads.clone());
        let second = std::thread::spawn(move || {
            let stop = AtomicBool::new(false);
            s.turn(&stop, &t).waited()
        });
        std::thread::sleep(Duration::from_millis(150));
        drop(first);
        let waited = second.join().expect("thread");
        assert!(waited >= Duration::from_millis(100), "{waited:?}");
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
