//! Where long calls run, and keeping light batches off those processors
//! (see the [`share`](super) module docs). Linux only; elsewhere nothing is moved.

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
