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
//! - **preemption**: a group that asks for more than its share (in debt,
//!   or made to wait for its debt within the last second, or with a recent
//!   usage — a moving average over about a second — of [`YIELD_AT`] of its
//!   share or more) gives way, in the middle of a plugin call, to the
//!   batches of groups that use little of theirs (below [`LIGHT_BELOW`],
//!   and not in debt): the call's
//!   thread waits at its next epoch check until they are done. A light
//!   group's batch starting makes every running call check at once, so
//!   the heavy group leaves the processor within microseconds rather than
//!   at the next epoch tick. Guest CPU time is charged at each check too,
//!   so a long call counts against its share while it runs, not only when
//!   its batch ends. Time spent waiting does not count against the call's
//!   deadline.
//!
//! - **placement**: a plugin call that has run for [`LONG_CALL`] notes
//!   the processor it runs on. A light group's batch starting while other
//!   groups' long calls run keeps its threads (batch thread and workers)
//!   off those processors until the batch ends, if any processor is left.
//!   While a light batch runs, the epoch ticks every millisecond instead of
//!   every ten, so that a call which turns long meanwhile (a new job's
//!   first call, of which nothing is known) is noticed within about a
//!   millisecond and the batch moves off its processor then. When a long
//!   call ends or pauses, the batches kept off its processor get it back
//!   at once. Host work done for a plugin that holds a processor for
//!   milliseconds (dropping instances, whose memory is zeroed in place)
//!   is kept clear of like a long call ([`hold_processor`]). A group with
//!   a long call running is not light, whatever its recent usage (a job
//!   that has just started spinning, after idling, still has a low one).
//!   Left to itself the kernel often wakes the light batch's threads on
//!   the processor a long call holds (where the disk interrupt or the
//!   timer fired) and lets them wait there behind it, for milliseconds,
//!   while another processor idles; the tenant within its share still
//!   slows every other tenant down that way.
//!
//! A job that spends more than its share therefore starts its batches
//! late and is paused while lighter tenants run: its scheduling delay
//! grows, the other groups' does not. A heavy group still gets its share:
//! it waits only for light groups, and a group that runs long stops being
//! light. Where per-thread accounting is unavailable (not Linux), only the
//! parallelism holds and a warning says so once.

mod call;
mod placement;
mod running;
#[cfg(test)]
mod tests;
mod threads;
mod ticker;

pub(crate) use call::JobCpu;
pub use call::{CallCpu, hold_processor};
use running::RUNNING;
pub use running::{Waker, forget_waker, register_waker};
pub(crate) use threads::ThreadGroup;
use ticker::wake_tickers;
pub use ticker::{light_batch_running, tick_sleep};

use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// How many seconds of its share a group may bank while idle.
pub const BURST: Duration = Duration::from_secs(1);

/// Recent usage, as a fraction of the share, from which a group gives way
/// to light groups (see the module docs).
pub const YIELD_AT: f64 = 0.9;

/// Recent usage, as a fraction of the share, below which a group is light:
/// heavy groups give way to its batches.
pub const LIGHT_BELOW: f64 = 0.5;

/// A plugin call that has run this long is CPU-bound work, not a quick
/// step of a batch: light groups' batches keep off its processor (see
/// the module docs).
pub const LONG_CALL: Duration = Duration::from_millis(2);

/// Time constant of the moving average of a group's usage.
const USAGE_WINDOW: Duration = Duration::from_secs(1);

/// Longest wait between two looks at whether a paused call may go on (it
/// is also woken whenever a batch ends).
const PAUSE_STEP: Duration = Duration::from_millis(5);

/// A CPU budget shared by a group of jobs; see the module docs.
#[derive(Debug)]
pub struct CpuShare {
    cores: f64,
    slots: usize,
    bucket: Mutex<Bucket>,
    freed: Condvar,
    /// [`HEAVY`] and [`LIGHT`] as of the bucket's last change, for other
    /// groups to read without taking its lock (see [`CpuShare::refresh`]).
    flags: AtomicU8,
}

/// [`CpuShare::flags`]: the group asks for more than its share.
const HEAVY: u8 = 1;
/// [`CpuShare::flags`]: the group uses little of its share.
const LIGHT: u8 = 2;

#[derive(Debug)]
struct Bucket {
    /// CPU seconds available; negative is debt.
    balance: f64,
    at: Instant,
    charged: f64,
    waited: Duration,
    running: usize,
    /// CPU seconds used, decayed with [`USAGE_WINDOW`]: about the recent
    /// rate times the window.
    recent: f64,
    recent_at: Instant,
    /// Time calls of the group spent paused for lighter groups.
    paused: Duration,
    /// When a batch of the group last had to wait for its debt.
    over_at: Option<Instant>,
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
                recent: 0.0,
                recent_at: Instant::now(),
                paused: Duration::ZERO,
                over_at: None,
            }),
            freed: Condvar::new(),
            flags: AtomicU8::new(LIGHT),
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
        Self::decay(&mut b);
        b.recent += cpu.as_secs_f64();
        self.set_flags(&mut b);
    }

    /// Recomputes [`CpuShare::flags`] from the bucket.
    fn set_flags(&self, b: &mut Bucket) {
        self.refill(b);
        let usage = self.usage_of(b);
        let heavy = b.balance < 0.0
            || b.over_at.is_some_and(|t| t.elapsed() < USAGE_WINDOW)
            || usage >= YIELD_AT;
        let light = b.balance >= 0.0 && usage < LIGHT_BELOW;
        self.flags.store(
            if heavy { HEAVY } else { 0 } | if light { LIGHT } else { 0 },
            Ordering::Relaxed,
        );
    }

    /// Brings [`CpuShare::flags`] up to date (usage decays and debt is
    /// paid off with time, not only when CPU is charged).
    fn refresh(&self) {
        let mut b = self.lock();
        self.set_flags(&mut b);
    }

    /// [`CpuShare::is_heavy`] as of the last charge or refresh, without
    /// the bucket's lock: what the hot paths read of other groups.
    fn heavy_flag(&self) -> bool {
        self.flags.load(Ordering::Relaxed) & HEAVY != 0
    }

    /// [`CpuShare::is_light`] as of the last charge or refresh.
    fn light_flag(&self) -> bool {
        self.flags.load(Ordering::Relaxed) & LIGHT != 0
    }

    fn decay(b: &mut Bucket) {
        let now = Instant::now();
        let dt = now.duration_since(b.recent_at).as_secs_f64();
        b.recent *= (-dt / USAGE_WINDOW.as_secs_f64()).exp();
        b.recent_at = now;
    }

    /// The group's recent CPU use as a fraction of its share (1.0: it used
    /// its whole share over about the last second).
    pub fn usage(&self) -> f64 {
        let mut b = self.lock();
        self.usage_of(&mut b)
    }

    fn usage_of(&self, b: &mut Bucket) -> f64 {
        Self::decay(b);
        b.recent / (USAGE_WINDOW.as_secs_f64() * self.cores)
    }

    /// Whether the group asks for more than its share: it is in debt, a
    /// batch of it waited for its debt within the last [`USAGE_WINDOW`],
    /// or it used at least [`YIELD_AT`] of its share recently.
    fn is_heavy(&self) -> bool {
        self.refresh();
        self.heavy_flag()
    }

    /// Whether the group uses little of its share (below [`LIGHT_BELOW`])
    /// and is not in debt.
    #[cfg(test)]
    fn is_light(&self) -> bool {
        self.refresh();
        self.light_flag()
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
    pub(crate) fn turn<'a>(
        self: &'a Arc<Self>,
        stop: &AtomicBool,
        threads: &'a ThreadGroup,
    ) -> Turn<'a> {
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
                b.over_at = Some(Instant::now());
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
        self.set_flags(&mut b);
        drop(b);
        threads.precharged.store(0, Ordering::Relaxed);
        let light = RUNNING.enter(self);
        let placed = if light {
            placement::light_batch(self, threads)
        } else {
            None
        };
        Turn {
            share: self,
            threads,
            placed,
            before: threads.cpu_time(),
            waited,
        }
    }

    /// CPU seconds charged so far and time spent waiting for the share.
    pub fn totals(&self) -> (Duration, Duration) {
        let b = self.lock();
        (Duration::from_secs_f64(b.charged.max(0.0)), b.waited)
    }

    /// Time the group's plugin calls spent paused for lighter groups.
    pub fn paused(&self) -> Duration {
        self.lock().paused
    }
}

/// One batch's turn in its group's share ([`CpuShare::turn`]).
pub(crate) struct Turn<'a> {
    share: &'a Arc<CpuShare>,
    threads: &'a ThreadGroup,
    /// A light batch's place, kept off other groups' long calls.
    placed: Option<placement::Placed>,
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
        if let Some(placed) = self.placed.take() {
            placed.end();
        }
        // What calls charged as they ran is already in the bucket.
        let precharged = Duration::from_nanos(self.threads.precharged.swap(0, Ordering::Relaxed));
        let used = self.threads.cpu_time().saturating_sub(self.before);
        self.share.charge(used.saturating_sub(precharged));
        self.share.lock().running -= 1;
        RUNNING.leave(self.share);
        self.share.freed.notify_all();
    }
}
