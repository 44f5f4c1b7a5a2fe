//! Jobs of different tenants in one process, sharing one wasm runtime:
//! tenant A's infinite loop, memory bomb and output bomb each fail only
//! A's own job, while tenant B's word count, running at the same time,
//! produces every batch correctly.

use sluice::error::PluginFault;
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
