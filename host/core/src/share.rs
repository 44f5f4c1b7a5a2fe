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

use std::cell::RefCell;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, LazyLock, Mutex};
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

/// The groups with a batch running, process-wide: whom a heavy group's
/// calls give way to, and how a light group's batch makes them look at
/// once.
struct Running {
    turns: Mutex<Vec<Arc<CpuShare>>>,
    changed: Condvar,
    /// How to make running plugin calls check at once when a light group's
    /// batch starts (a wasm engine advances its epoch), by registration id.
    wakers: Mutex<Vec<(u64, Waker)>>,
}

static RUNNING: LazyLock<Running> = LazyLock::new(|| Running {
    turns: Mutex::new(Vec::new()),
    changed: Condvar::new(),
    wakers: Mutex::new(Vec::new()),
});

impl Running {
    fn turns(&self) -> std::sync::MutexGuard<'_, Vec<Arc<CpuShare>>> {
        self.turns.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers a turn of `share`; whether the group is light.
    fn enter(&self, share: &Arc<CpuShare>) -> bool {
        // The flags, not the buckets: no other group's lock is taken under
        // this process-wide one, which every group's batch start takes
        // (and batches of different jobs tend to start together).
        share.refresh();
        // A group with a CPU-bound call running is not light, whatever its
        // recent usage: a job that has just started spinning (its usage
        // still low, as it was idle) would otherwise have its batches kept
        // clear of other light groups' calls, and theirs of its own.
        let light = share.light_flag() && !placement::has_long_call(share);
        let heavy_running = {
            let mut turns = self.turns();
            turns.push(share.clone());
            turns
                .iter()
                .any(|s| !Arc::ptr_eq(s, share) && s.heavy_flag())
        };
        if light && heavy_running {
            for (_, wake) in self.wakers.lock().unwrap_or_else(|e| e.into_inner()).iter() {
                wake();
            }
        }
        light
    }

    fn leave(&self, share: &CpuShare) {
        let mut turns = self.turns();
        if let Some(i) = turns.iter().position(|s| std::ptr::eq(&**s, share)) {
            turns.swap_remove(i);
        }
        drop(turns);
        self.changed.notify_all();
    }

    /// Whether a call of `share` must give way now.
    fn must_yield(turns: &[Arc<CpuShare>], share: &CpuShare) -> bool {
        share.heavy_flag()
            && turns
                .iter()
                .any(|s| !std::ptr::eq(&**s, share) && s.light_flag())
    }
}

/// Makes a plugin runtime's running calls check at once: `wake` is called
/// when a light group's batch starts (see the module docs). A wasm engine
/// registers one that advances its epoch.
pub type Waker = Arc<dyn Fn() + Send + Sync>;

/// Registers `wake` (see [`Waker`]); [`forget_waker`] with the id returned
/// undoes it.
pub fn register_waker(wake: Waker) -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    let id = NEXT.fetch_add(1, Ordering::Relaxed);
    RUNNING
        .wakers
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push((id, wake));
    id
}

/// Undoes [`register_waker`].
pub fn forget_waker(id: u64) {
    RUNNING
        .wakers
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .retain(|(i, _)| *i != id);
}

/// The group and job the current thread works for (set on a job's batch
/// thread and workers when the job has a share).
#[derive(Debug)]
pub(crate) struct JobCpu {
    share: Arc<CpuShare>,
    threads: Arc<ThreadGroup>,
}

impl JobCpu {
    pub(crate) fn new(share: Arc<CpuShare>, threads: Arc<ThreadGroup>) -> Arc<JobCpu> {
        Arc::new(JobCpu { share, threads })
    }

    /// The job's threads.
    pub(crate) fn threads(&self) -> &ThreadGroup {
        &self.threads
    }

    /// Makes the current thread work for this job (for [`CallCpu`]).
    pub(crate) fn enter(self: &Arc<Self>) {
        CURRENT.with(|c| *c.borrow_mut() = Some(self.clone()));
    }
}

thread_local! {
    static CURRENT: RefCell<Option<Arc<JobCpu>>> = const { RefCell::new(None) };
}

/// CPU time of the calling thread (`CLOCK_THREAD_CPUTIME_ID`).
fn thread_cpu() -> Option<Duration> {
    #[cfg(unix)]
    {
        let mut t = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: `t` is a valid timespec for the call to fill.
        let r = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut t) };
        (r == 0).then(|| Duration::new(t.tv_sec as u64, t.tv_nsec as u32))
    }
    #[cfg(not(unix))]
    {
        None
    }
}

/// Waits while a call of `share` must give way to a lighter group's batch
/// (see the module docs); returns how long it waited. A `long` call's
/// processor is not kept clear while it waits (see [`placement`]).
fn give_way(share: &CpuShare, long: bool) -> Duration {
    // Only a heavy group looks at the others (under the process-wide
    // lock): a light group's calls, checking at every tick, never wait
    // for that lock nor make a heavy group's thread wait for it.
    if !share.is_heavy() {
        return Duration::ZERO;
    }
    let mut turns = RUNNING.turns();
    if !Running::must_yield(&turns, share) {
        return Duration::ZERO;
    }
    let started = Instant::now();
    if long {
        placement::forget_long_call();
    }
    while Running::must_yield(&turns, share) {
        turns = RUNNING
            .changed
            .wait_timeout(turns, PAUSE_STEP)
            .unwrap_or_else(|e| e.into_inner())
            .0;
        // Its debt is paid off and its usage decays while it waits (its
        // own lock, not taken under the process-wide one).
        drop(turns);
        share.refresh();
        turns = RUNNING.turns();
    }
    drop(turns);
    let paused = started.elapsed();
    share.lock().paused += paused;
    paused
}

/// Runs `f`, host work done on a plugin's behalf that holds the processor
/// for milliseconds — discarding a trapped instance, whose memory is zeroed
/// in place (up to `keep_resident_bytes`: 64 MiB take ~8 ms here). On a
/// thread of a job with a share, it first waits while the job's group must
/// give way to a lighter group's batch (so that the work happens between
/// that group's batches, not during them); then, as for a long call, light
/// batches of other groups keep off its processor while it runs: no epoch
/// check can pause it, and a light batch's thread woken there would wait
/// behind it.
///
/// On a thread of no job (a job's plugins dropped by the server), it is
/// kept clear of by every light batch.
pub fn hold_processor<R>(f: impl FnOnce() -> R) -> R {
    let job = CURRENT.with(|c| c.borrow().clone());
    if let Some(job) = &job {
        give_way(&job.share, false);
    }
    let group = job
        .as_ref()
        .map_or(placement::NO_GROUP, |j| placement::group(&j.share));
    let noted = placement::current_cpu().map(|cpu| placement::note_long_call_of(group, cpu));
    let r = f();
    if noted.is_some() {
        placement::forget_long_call();
    }
    r
}

/// One plugin call's clock: when it started, how long it was paused for
/// lighter groups, and the thread's CPU time at the last check.
#[derive(Debug)]
pub struct CallCpu {
    started: Instant,
    paused: Duration,
    last_cpu: Option<Duration>,
    /// The processor a long call was last seen on (see [`placement`]).
    long_on: Option<usize>,
    /// Whether the previous call was long: the next is taken for long from
    /// its start (batches of different jobs tend to start together, and
    /// the first epoch check may come a tick late).
    was_long: bool,
}

impl Default for CallCpu {
    fn default() -> Self {
        CallCpu {
            started: Instant::now(),
            paused: Duration::ZERO,
            last_cpu: None,
            long_on: None,
            was_long: false,
        }
    }
}

impl CallCpu {
    /// Starts timing a call on the current thread — after giving way, if
    /// its group must, to a lighter group's batch already running (which
    /// started before this call could be made to check).
    pub fn begin(&mut self) {
        let job = CURRENT.with(|c| c.borrow().clone());
        if let Some(job) = &job {
            give_way(&job.share, false);
        }
        if self.long_on.take().is_some() {
            // The previous call on this store was not ended.
            placement::forget_long_call();
        }
        if let Some(job) = &job
            && self.was_long
            && let Some(cpu) = placement::current_cpu()
        {
            placement::note_long_call(&job.share, cpu);
            self.long_on = Some(cpu);
        }
        self.started = Instant::now();
        self.paused = Duration::ZERO;
        self.last_cpu = job.and_then(|_| thread_cpu());
    }

    /// Ends the call on the current thread: a long call is no longer kept
    /// clear of.
    pub fn end(&mut self) {
        self.was_long = self.running() >= LONG_CALL;
        if self.long_on.take().is_some() {
            placement::forget_long_call();
        }
    }

    /// How long the call has run, not counting its pauses.
    pub fn running(&self) -> Duration {
        self.started.elapsed().saturating_sub(self.paused)
    }

    /// At an epoch check of the call: charges the CPU the thread used
    /// since the last check to its group, then, while the group must give
    /// way to a lighter one, waits.
    pub fn check(&mut self) {
        let Some(job) = CURRENT.with(|c| c.borrow().clone()) else {
            return;
        };
        if let (Some(last), Some(now)) = (self.last_cpu, thread_cpu()) {
            let used = now.saturating_sub(last);
            job.share.charge(used);
            job.threads
                .precharged
                .fetch_add(used.as_nanos() as u64, Ordering::Relaxed);
            self.last_cpu = Some(now);
        }
        if self.running() >= LONG_CALL
            && let Some(cpu) = placement::current_cpu()
            && self.long_on != Some(cpu)
        {
            placement::note_long_call(&job.share, cpu);
            self.long_on = Some(cpu);
        }
        let paused = give_way(&job.share, self.long_on.is_some());
        if !paused.is_zero() {
            self.paused += paused;
            // The wait used no CPU worth charging.
            self.last_cpu = thread_cpu();
            // Nor held a processor: noted again where it goes on.
            if self.long_on.take().is_some()
                && let Some(cpu) = placement::current_cpu()
            {
                placement::note_long_call(&job.share, cpu);
                self.long_on = Some(cpu);
            }
        }
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

/// The threads of one job, and the CPU time they have used.
#[derive(Debug, Default)]
pub(crate) struct ThreadGroup {
    /// Each thread's id and `schedstat` file.
    threads: Mutex<Vec<(i32, PathBuf)>>,
    /// CPU time (ns) plugin calls charged as they ran during the current turn.
    precharged: AtomicU64,
}

impl ThreadGroup {
    /// Adds the calling thread.
    pub(crate) fn join_current(&self) {
        static WARNED: AtomicBool = AtomicBool::new(false);
        match std::fs::read_link("/proc/thread-self") {
            Ok(link) => {
                // "<pid>/task/<tid>"
                let tid = link
                    .file_name()
                    .and_then(|t| t.to_str()?.parse().ok())
                    .unwrap_or(0);
                let stat = PathBuf::from("/proc").join(link).join("schedstat");
                self.threads
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push((tid, stat));
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

    /// The threads' ids.
    fn tids(&self) -> Vec<i32> {
        let threads = self.threads.lock().unwrap_or_else(|e| e.into_inner());
        threads.iter().map(|(t, _)| *t).filter(|t| *t > 0).collect()
    }

    /// CPU time used so far by the group's live threads.
    pub(crate) fn cpu_time(&self) -> Duration {
        let threads = self.threads.lock().unwrap_or_else(|e| e.into_inner());
        let nanos: u64 = threads
            .iter()
            .filter_map(|(_, p)| std::fs::read_to_string(p).ok())
            .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
            .sum();
        Duration::from_nanos(nanos)
    }
}

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

fn wake_tickers() {
    let (starts, woken) = &TICKERS;
    *starts.lock().unwrap_or_else(|e| e.into_inner()) += 1;
    woken.notify_all();
}

/// Where long calls run, and keeping light batches off those processors
/// (see the module docs). Linux only; elsewhere nothing is moved.
mod placement {
    use super::{CpuShare, ThreadGroup};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};

    /// A long call running now.
    #[derive(Debug, Clone, Copy)]
    struct LongCall {
        tid: i32,
        /// Its group, by the share's address.
        group: usize,
        cpu: usize,
    }

    /// A light group's batch running now, and where its threads may run.
    #[derive(Debug)]
    struct Light {
        id: u64,
        group: usize,
        tids: Vec<i32>,
        /// The processors the threads could use before the batch, read the
        /// first time they are to be kept off some.
        allowed: Option<Vec<usize>>,
        /// The processors they are kept to now, if fewer.
        kept_to: Option<Vec<usize>>,
    }

    #[derive(Debug, Default)]
    struct State {
        calls: Vec<LongCall>,
        light: Vec<Light>,
        next_id: u64,
    }

    static STATE: Mutex<State> = Mutex::new(State {
        calls: Vec::new(),
        light: Vec::new(),
        next_id: 0,
    });
    /// How many light batches are running: long calls look no further at 0.
    static LIGHT: AtomicUsize = AtomicUsize::new(0);

    /// Whether a long call of `share`'s group is running.
    pub(super) fn has_long_call(share: &Arc<CpuShare>) -> bool {
        let group = group(share);
        state().calls.iter().any(|c| c.group == group)
    }

    pub(super) fn light_running() -> bool {
        LIGHT.load(Ordering::Relaxed) > 0
    }

    fn state() -> std::sync::MutexGuard<'static, State> {
        STATE.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn tid() -> i32 {
        #[cfg(target_os = "linux")]
        {
            // SAFETY: gettid has no preconditions.
            unsafe { libc::gettid() }
        }
        #[cfg(not(target_os = "linux"))]
        {
            0
        }
    }

    /// The processor the calling thread runs on.
    pub(super) fn current_cpu() -> Option<usize> {
        #[cfg(target_os = "linux")]
        {
            // SAFETY: sched_getcpu has no preconditions.
            let cpu = unsafe { libc::sched_getcpu() };
            usize::try_from(cpu).ok()
        }
        #[cfg(not(target_os = "linux"))]
        {
            None
        }
    }

    /// The processors thread `tid` (0: the caller) may run on.
    fn affinity(tid: i32) -> Option<Vec<usize>> {
        #[cfg(target_os = "linux")]
        {
            // SAFETY: a zeroed cpu_set_t is the empty set.
            let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
            // SAFETY: `set` is a writable cpu_set_t of the size given.
            let r = unsafe {
                libc::sched_getaffinity(tid, std::mem::size_of::<libc::cpu_set_t>(), &mut set)
            };
            (r == 0).then(|| {
                (0..libc::CPU_SETSIZE as usize)
                    // SAFETY: `c` is within the set's size.
                    .filter(|&c| unsafe { libc::CPU_ISSET(c, &set) })
                    .collect()
            })
        }
        #[cfg(not(target_os = "linux"))]
        {
            let _ = tid;
            None
        }
    }

    fn set_affinity(tid: i32, cpus: &[usize]) {
        #[cfg(target_os = "linux")]
        {
            // SAFETY: a zeroed cpu_set_t is the empty set.
            let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
            for &c in cpus {
                // SAFETY: CPU_SET ignores processors beyond the set's size.
                unsafe { libc::CPU_SET(c, &mut set) };
            }
            // SAFETY: `set` is a valid cpu_set_t of the size given. A thread
            // that has ended meanwhile makes it fail, harmlessly.
            unsafe {
                libc::sched_setaffinity(tid, std::mem::size_of::<libc::cpu_set_t>(), &set);
            }
        }
        #[cfg(not(target_os = "linux"))]
        let _ = (tid, cpus);
    }

    /// Keeps `light`'s threads off the processors of other groups' long
    /// calls, if that leaves one; otherwise (every processor has one, or
    /// none is left) lets them run anywhere they could before.
    fn place(light: &mut Light, calls: &[LongCall]) {
        let others = calls.iter().any(|c| c.group != light.group);
        if !others && light.kept_to.is_none() {
            return;
        }
        if light.allowed.is_none() {
            light.allowed = light.tids.first().and_then(|&t| affinity(t));
        }
        let Some(allowed) = &light.allowed else {
            return;
        };
        let mut kept: Vec<usize> = allowed
            .iter()
            .copied()
            .filter(|cpu| {
                !calls
                    .iter()
                    .any(|c| c.group != light.group && c.cpu == *cpu)
            })
            .collect();
        if kept.is_empty() {
            kept.clone_from(allowed);
        }
        let now = light.kept_to.as_deref().unwrap_or(allowed);
        if kept == now {
            return;
        }
        for &tid in &light.tids {
            set_affinity(tid, &kept);
        }
        light.kept_to = (kept != *allowed).then_some(kept);
    }

    /// The calling thread, in a long call of `share`'s group, runs on `cpu`:
    /// running light batches of other groups move off it.
    pub(super) fn note_long_call(share: &Arc<CpuShare>, cpu: usize) {
        note_long_call_of(group(share), cpu);
    }

    /// The group of work done on no job's behalf: no light batch's own.
    pub(super) const NO_GROUP: usize = 0;

    /// `share`'s group, as placement names it.
    pub(super) fn group(share: &Arc<CpuShare>) -> usize {
        Arc::as_ptr(share) as usize
    }

    /// [`note_long_call`] by group.
    pub(super) fn note_long_call_of(group: usize, cpu: usize) {
        let tid = tid();
        let mut st = state();
        match st.calls.iter_mut().find(|c| c.tid == tid) {
            Some(c) => {
                c.cpu = cpu;
                c.group = group;
            }
            None => st.calls.push(LongCall { tid, group, cpu }),
        }
        if LIGHT.load(Ordering::Relaxed) > 0 {
            let State { calls, light, .. } = &mut *st;
            for l in light.iter_mut() {
                place(l, calls);
            }
        }
    }

    /// The calling thread's long call has ended or is paused: light batches
    /// kept off its processor may use it again. (Kept off it, a light
    /// batch shared the processor left with whatever else ran there — host
    /// work of the heavy tenant, a new job's first call — while the one it
    /// was kept off stood idle.)
    pub(super) fn forget_long_call() {
        let tid = tid();
        let mut st = state();
        let before = st.calls.len();
        st.calls.retain(|c| c.tid != tid);
        if st.calls.len() != before && LIGHT.load(Ordering::Relaxed) > 0 {
            let State { calls, light, .. } = &mut *st;
            for l in light.iter_mut() {
                place(l, calls);
            }
        }
    }

    /// A light batch registered by [`light_batch`]; [`Placed::end`] ends it.
    #[derive(Debug)]
    pub(super) struct Placed(u64);

    impl Placed {
        /// The batch has ended: its threads may run anywhere they could
        /// before.
        pub(super) fn end(self) {
            let mut st = state();
            if let Some(i) = st.light.iter().position(|l| l.id == self.0) {
                let light = st.light.swap_remove(i);
                LIGHT.fetch_sub(1, Ordering::Relaxed);
                drop(st);
                if let (Some(_), Some(allowed)) = (&light.kept_to, &light.allowed) {
                    for &tid in &light.tids {
                        set_affinity(tid, allowed);
                    }
                }
            }
        }
    }

    /// At the start of a light group's batch: keeps the job's `threads`
    /// off the processors of other groups' long calls while it runs,
    /// including calls that turn long meanwhile. Without long calls it
    /// costs a lock and no system call.
    pub(super) fn light_batch(share: &Arc<CpuShare>, threads: &ThreadGroup) -> Option<Placed> {
        if !cfg!(target_os = "linux") {
            return None;
        }
        let tids = threads.tids();
        if tids.is_empty() {
            return None;
        }
        let mut st = state();
        let id = st.next_id;
        st.next_id += 1;
        let mut light = Light {
            id,
            group: Arc::as_ptr(share) as usize,
            tids,
            allowed: None,
            kept_to: None,
        };
        place(&mut light, &st.calls);
        st.light.push(light);
        let first = LIGHT.fetch_add(1, Ordering::Relaxed) == 0;
        drop(st);
        if first {
            super::wake_tickers();
        }
        Some(Placed(id))
    }

    #[cfg(all(test, target_os = "linux"))]
    mod tests {
        use super::*;
        use crate::share::tests::serial;
        use std::sync::atomic::AtomicBool;

        #[test]
        fn a_group_with_a_long_call_running_is_not_light() {
            let _serial = serial();
            let share = Arc::new(CpuShare::new(4.0));
            let threads = ThreadGroup::default();
            threads.join_current();
            let stop = AtomicBool::new(false);
            let turn = share.turn(&stop, &threads);
            assert!(super::super::light_batch_running(), "idle: light");
            drop(turn);
            let (tx, rx) = std::sync::mpsc::channel::<()>();
            let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
            let long = std::thread::spawn({
                let share = share.clone();
                move || {
                    note_long_call(&share, 0);
                    done_tx.send(()).expect("send");
                    let _ = rx.recv();
                    forget_long_call();
                }
            });
            done_rx.recv().expect("noted");
            let turn = share.turn(&stop, &threads);
            assert!(
                !super::super::light_batch_running(),
                "a long call of its own running: not light"
            );
            drop(turn);
            tx.send(()).expect("send");
            long.join().expect("thread");
        }

        #[test]
        fn a_light_batch_starting_wakes_the_epoch_ticker_and_makes_it_tick_fast() {
            let _serial = serial();
            assert!(!super::super::light_batch_running());
            let ticker = std::thread::spawn(|| {
                let started = std::time::Instant::now();
                super::super::tick_sleep(std::time::Duration::from_secs(60));
                started.elapsed()
            });
            // Until the ticker sleeps: a wake before then would be missed
            // by this test only (the real ticker just ticks a bit late).
            std::thread::sleep(std::time::Duration::from_millis(100));
            let light = Arc::new(CpuShare::new(4.0));
            let threads = ThreadGroup::default();
            threads.join_current();
            let stop = AtomicBool::new(false);
            let turn = light.turn(&stop, &threads);
            assert!(super::super::light_batch_running());
            let slept = ticker.join().expect("ticker");
            assert!(
                slept < std::time::Duration::from_secs(30),
                "slept {slept:?}"
            );
            drop(turn);
            assert!(!super::super::light_batch_running());
        }

        #[test]
        fn a_light_batch_keeps_off_other_groups_long_calls() {
            let _serial = serial();
            let allowed = affinity(0).expect("affinity");
            if allowed.len() < 2 {
                return;
            }
            let heavy = Arc::new(CpuShare::new(0.5));
            let light = Arc::new(CpuShare::new(4.0));
            let (first, second) = (allowed[0], allowed[1]);
            // A long call of the heavy group on the first processor.
            let (tx, rx) = std::sync::mpsc::channel::<usize>();
            let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
            let long = std::thread::spawn({
                let heavy = heavy.clone();
                move || {
                    while let Ok(cpu) = rx.recv() {
                        if cpu == usize::MAX {
                            forget_long_call();
                        } else {
                            note_long_call(&heavy, cpu);
                        }
                        done_tx.send(()).expect("send");
                    }
                    forget_long_call();
                }
            });
            tx.send(first).expect("send");
            done_rx.recv().expect("noted");
            let threads = ThreadGroup::default();
            threads.join_current();
            let stop = AtomicBool::new(false);
            let turn = light.turn(&stop, &threads);
            let during = affinity(0).expect("affinity");
            assert!(!during.contains(&first), "kept off {first}: {during:?}");
            // The call moves: the batch follows, off the new processor.
            tx.send(second).expect("send");
            done_rx.recv().expect("noted");
            let moved = affinity(0).expect("affinity");
            assert!(
                moved.contains(&first) && !moved.contains(&second),
                "kept off {second} only: {moved:?}"
            );
            // The call ends (or pauses) while the batch runs: the batch may
            // use its processor again at once.
            tx.send(usize::MAX).expect("send");
            done_rx.recv().expect("forgotten");
            assert_eq!(affinity(0).expect("affinity"), allowed, "given back");
            tx.send(first).expect("send");
            done_rx.recv().expect("noted");
            assert!(!affinity(0).expect("affinity").contains(&first));
            drop(turn);
            assert_eq!(affinity(0).expect("affinity"), allowed, "restored");
            // The long call's own group is not kept off it.
            let own_threads = ThreadGroup::default();
            own_threads.join_current();
            let own = heavy.turn(&stop, &own_threads);
            assert_eq!(affinity(0).expect("affinity"), allowed, "own group");
            drop(own);
            drop(tx);
            long.join().expect("thread");
            assert!(state().calls.is_empty());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Turns are registered process-wide: tests that take them run one at
    /// a time, so that one's turns do not make another's heavy group wait.
    pub(super) fn serial() -> std::sync::MutexGuard<'static, ()> {
        static SERIAL: Mutex<()> = Mutex::new(());
        SERIAL.lock().unwrap_or_else(|e| e.into_inner())
    }

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
        let _serial = serial();
        let share = Arc::new(CpuShare::new(0.1));
        share.charge(Duration::from_secs(10));
        let stop = AtomicBool::new(true);
        let threads = ThreadGroup::default();
        assert!(share.turn(&stop, &threads).waited() < Duration::from_millis(50));
    }

    #[test]
    fn a_half_core_share_runs_one_batch_at_a_time() {
        let _serial = serial();
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
    fn a_heavy_group_gives_way_to_a_light_groups_batch_only() {
        let _serial = serial();
        let light = Arc::new(CpuShare::new(4.0));
        let heavy = Arc::new(CpuShare::new(0.5));
        // In debt: over its share.
        heavy.charge(Duration::from_millis(600));
        assert!(heavy.is_heavy() && !heavy.is_light());
        assert!(light.is_light() && !light.is_heavy());
        let heavy_job = JobCpu::new(heavy.clone(), Arc::new(ThreadGroup::default()));
        let pause = |job: Arc<JobCpu>| {
            std::thread::spawn(move || {
                job.enter();
                let started = Instant::now();
                hold_processor(|| ());
                started.elapsed()
            })
        };
        // Nobody light is running: no wait.
        let alone = pause(heavy_job.clone()).join().expect("thread");
        assert!(alone < Duration::from_millis(50), "{alone:?}");
        // While a light group's batch runs, the heavy one waits for its end.
        let stop = AtomicBool::new(false);
        let threads = ThreadGroup::default();
        let turn = light.turn(&stop, &threads);
        let waiting = pause(heavy_job.clone());
        std::thread::sleep(Duration::from_millis(200));
        drop(turn);
        let waited = waiting.join().expect("thread");
        assert!(waited >= Duration::from_millis(150), "{waited:?}");
        assert!(heavy.paused() >= Duration::from_millis(150));
        // A light group never waits for another light group's batch.
        let other = Arc::new(CpuShare::new(4.0));
        let light_job = JobCpu::new(other, Arc::new(ThreadGroup::default()));
        let turn = light.turn(&stop, &threads);
        let waited = pause(light_job).join().expect("thread");
        drop(turn);
        assert!(waited < Duration::from_millis(50), "{waited:?}");
    }

    #[test]
    fn usage_is_a_moving_average_of_the_share() {
        let share = CpuShare::new(0.5);
        assert!(share.usage() < 0.01);
        share.charge(Duration::from_millis(500));
        let u = share.usage();
        assert!(u > 0.9 && u <= 1.0, "{u}");
        std::thread::sleep(Duration::from_millis(200));
        let later = share.usage();
        assert!(later < u && later > 0.7, "decays: {u} then {later}");
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
