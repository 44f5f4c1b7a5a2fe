//! The groups with a batch running, process-wide: whom a heavy group's
//! calls give way to ([`give_way`]), and the [`Waker`]s that make running
//! calls check at once when a light group's batch starts.

use super::{CpuShare, PAUSE_STEP, placement};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, LazyLock, Mutex};
use std::time::{Duration, Instant};

/// The groups with a batch running, process-wide: whom a heavy group's
/// calls give way to, and how a light group's batch makes them look at
/// once.
pub(super) struct Running {
    turns: Mutex<Vec<Arc<CpuShare>>>,
    changed: Condvar,
    /// How to make running plugin calls check at once when a light group's
    /// batch starts (a wasm engine advances its epoch), by registration id.
    wakers: Mutex<Vec<(u64, Waker)>>,
}

pub(super) static RUNNING: LazyLock<Running> = LazyLock::new(|| Running {
    turns: Mutex::new(Vec::new()),
    changed: Condvar::new(),
    wakers: Mutex::new(Vec::new()),
});

impl Running {
    pub(super) fn turns(&self) -> std::sync::MutexGuard<'_, Vec<Arc<CpuShare>>> {
        self.turns.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers a turn of `share`; whether the group is light.
    pub(super) fn enter(&self, share: &Arc<CpuShare>) -> bool {
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

    pub(super) fn leave(&self, share: &CpuShare) {
        let mut turns = self.turns();
        if let Some(i) = turns.iter().position(|s| std::ptr::eq(&**s, share)) {
            turns.swap_remove(i);
        }
        drop(turns);
        self.changed.notify_all();
    }

    /// Whether a call of `share` must give way now.
    pub(super) fn must_yield(turns: &[Arc<CpuShare>], share: &CpuShare) -> bool {
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

/// Waits while a call of `share` must give way to a lighter group's batch
/// (see the module docs); returns how long it waited. A `long` call's
/// processor is not kept clear while it waits (see [`placement`]).
pub(super) fn give_way(share: &CpuShare, long: bool) -> Duration {
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
