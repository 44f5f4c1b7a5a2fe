//! The job a thread works for ([`JobCpu`]) and one plugin call's clock
//! ([`CallCpu`]): charging guest CPU time as calls run, giving way to
//! lighter groups, and noting long calls for [`placement`](super::placement).

use super::running::give_way;
use super::{CpuShare, LONG_CALL, ThreadGroup, placement};
use std::cell::RefCell;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

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
