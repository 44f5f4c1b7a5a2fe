//! Unit tests of CPU shares: debt, slots, giving way, usage, thread CPU.

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
