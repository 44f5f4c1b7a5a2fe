//! Jobs of different tenants in one process, sharing one wasm runtime:
//! tenant A's infinite loop, memory bomb and output bomb each fail only
//! A's own job, while tenant B's word count, running at the same time,
//! produces every batch correctly.

use sluice::LoadPlugins;
use sluice::error::PluginFault;
use sluice::share::CpuShare;
use sluice::{Error, Limits, Plugin, StreamingContext, SystemClock};
use sluice_tests::{plugin, runtime};
use std::sync::Arc;
use std::time::Duration;

fn tenant(name: &str) -> StreamingContext {
    StreamingContext::new(Duration::from_millis(100))
        .with_name(name)
        .with_clock(Arc::new(SystemClock))
        .with_workers(1)
        .with_runtime(runtime())
}

#[test]
fn a_hostile_tenant_fails_alone() {
    // Tenant A: three jobs, each feeding its hostile function a poison in
    // batch 2 after two harmless batches.
    let limits = Limits {
        call_deadline: Duration::from_millis(300),
        output_bytes: 8 << 20,
        ..Limits::default()
    };
    let hostile = Plugin::load_for_job(
        &runtime(),
        "tenant-a",
        "hostile",
        &plugin("hostile"),
        limits,
    )
    .expect("hostile plugin");
    let a_jobs: Vec<_> = [("spin", "spin"), ("bomb", "bomb"), ("flood", "flood")]
        .into_iter()
        .map(|(function, poison)| {
            let ssc = tenant(&format!("a-{function}"));
            let f = hostile.func(function).expect("function");
            let input = ssc.queue_stream(
                vec![
                    vec!["x".to_string()],
                    vec!["y".to_string()],
                    vec![poison.to_string()],
                ],
                1,
            );
            if function == "flood" {
                input.flat_map(f)
            } else {
                input.map(f)
            }
            .count()
            .collect();
            std::thread::spawn(move || ssc.run(None))
        })
        .collect();

    // Tenant B: a word count over 20 batches, during A's failures.
    let b = tenant("b-wordcount");
    let wc = b
        .load_plugin("wordcount", plugin("wordcount"))
        .expect("wordcount");
    let f = |n: &str| wc.func(n).expect("function");
    let batches: Vec<Vec<String>> = (0..20)
        .map(|i| vec![format!("the quick fox {i}"), "the end".to_string()])
        .collect();
    let counts = b
        .queue_stream(batches, 2)
        .flat_map(f("split"))
        .map(f("pair"))
        .reduce_by_key(f("add"), 2)
        .collect();
    let b_run = std::thread::spawn(move || b.run(None));

    let mut faults = Vec::new();
    for job in a_jobs {
        match job.join().expect("tenant A thread") {
            Err(Error::Plugin { fault, .. }) => faults.push(*fault),
            other => panic!("tenant A's job must fail on its poison: {other:?}"),
        }
    }
    assert!(
        matches!(faults[0], PluginFault::Deadline { .. }),
        "{}",
        faults[0]
    );
    assert!(
        matches!(faults[1], PluginFault::Memory { .. }),
        "{}",
        faults[1]
    );
    assert!(
        matches!(faults[2], PluginFault::OutputTooLarge { .. }),
        "{}",
        faults[2]
    );

    b_run
        .join()
        .expect("tenant B thread")
        .expect("tenant B's job is untouched");
    let got = counts.lock().expect("counts");
    assert_eq!(got.len(), 20, "every batch of B");
    for (i, batch) in got.iter().enumerate() {
        let mut want = vec![
            serde_json::json!(["end", 1]),
            serde_json::json!(["fox", 1]),
            serde_json::json!(["quick", 1]),
            serde_json::json!(["the", 2]),
            serde_json::json!([i.to_string(), 1]),
        ];
        want.sort_by_key(|v| v.to_string());
        let mut records = batch.sorted_records();
        records.sort_by_key(|v| v.to_string());
        assert_eq!(records, want, "batch {i} of B");
    }
}

/// A job of one tenant with `share`, running `burn:<millions>` once (a
/// call of that many million loop iterations) under `deadline`.
fn burner(
    name: &str,
    share: &Arc<CpuShare>,
    millions: u64,
    deadline: Duration,
) -> std::thread::JoinHandle<sluice::Result<sluice::RunSummary>> {
    let ssc = tenant(name).with_cpu_share(share.clone());
    let limits = Limits {
        call_deadline: deadline,
        ..Limits::default()
    };
    let p = Plugin::load_for_job(&runtime(), name, "hostile", &plugin("hostile"), limits)
        .expect("hostile plugin");
    ssc.queue_stream(vec![vec![format!("burn:{millions}")]], 1)
        .map(p.func("burn").expect("burn"))
        .count()
        .collect();
    std::thread::spawn(move || ssc.run(None))
}

#[test]
fn a_tenant_over_its_share_waits_mid_call_while_a_light_tenant_runs() {
    // Light: a long call (some seconds) under a 4-core share, of which it
    // uses little. Heavy: a 0.1-core share already in debt, so that its
    // batch waits for the debt and counts as over its share.
    let light_share = Arc::new(CpuShare::new(4.0));
    let heavy_share = Arc::new(CpuShare::new(0.1));
    heavy_share.charge(Duration::from_millis(150));
    let light = burner("light", &light_share, 1500, Duration::from_secs(30));
    std::thread::sleep(Duration::from_millis(300));
    // Heavy's call needs ~0.1 s of CPU, within its 0.5 s deadline.
    let started = std::time::Instant::now();
    let heavy = burner("heavy", &heavy_share, 100, Duration::from_millis(500));
    let heavy_result = heavy.join().expect("heavy thread");
    let heavy_took = started.elapsed();
    light
        .join()
        .expect("light thread")
        .expect("the light tenant's job");
    // Heavy's call gave way mid-call while light's batch ran...
    let paused = heavy_share.paused();
    assert!(
        paused >= Duration::from_millis(300),
        "heavy was paused {paused:?} (took {heavy_took:?})"
    );
    assert_eq!(
        light_share.paused(),
        Duration::ZERO,
        "light never gives way"
    );
    // ... and the pause does not count against its deadline: the call took
    // longer than 0.5 s of wall time and still succeeded.
    heavy_result.expect("the heavy tenant's job, paused but within its deadline");
    assert!(heavy_took > Duration::from_millis(500), "{heavy_took:?}");
    let (charged, _) = heavy_share.totals();
    assert!(
        charged > Duration::from_millis(150) + Duration::from_millis(50),
        "heavy's burn is charged to its share: {charged:?}"
    );
}
