//! Hot swap through the library: a plugin replaced while the job runs, at a
//! batch boundary, keeping host-owned state; a broken new version rolled
//! back; an incompatible one refused.

use sluice::LoadPlugins;
use sluice::{Limits, ManualClock, Plugin, StreamingContext};
use sluice_tests::{plugin, runtime};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Per batch: the per-batch word counts and the running totals.
type Seen = Arc<Mutex<Vec<Vec<serde_json::Value>>>>;

/// Word count + running totals over 10 batches of `k s<i>` lines (3 a
/// batch); after batch 3 completes, `wordcount` is swapped for `v2`.
fn run(
    lines: impl Fn(usize) -> Vec<String>,
    ck: &std::path::Path,
) -> (Seen, Seen, Option<Result<u64, String>>) {
    let ssc = Arc::new(
        StreamingContext::new(Duration::from_secs(1))
            .with_clock(Arc::new(ManualClock::new(0)))
            .with_runtime(runtime())
            .with_checkpoint(ck),
    );
    let v1 = ssc
        .load_plugin("wordcount", plugin("wordcount"))
        .expect("v1");
    let v2 = Plugin::load_for_job(
        &runtime(),
        "swap",
        "wordcount",
        &plugin("wordcount_v2"),
        Limits::default(),
    )
    .expect("v2");
    assert_eq!(v2.description().version, "0.2.0");
    let f = |n: &str| v1.func(n).expect("function");
    let pairs = ssc
        .queue_stream((0..10).map(&lines).collect(), 2)
        .flat_map(f("split"))
        .map(f("pair"));
    let per_batch = pairs.reduce_by_key(f("add"), 2).collect();
    let totals = pairs.update_state_by_key(f("running_total"), 2).collect();
    let handle: Arc<Mutex<Option<Arc<sluice::SwapHandle>>>> = Arc::default();
    let (h, ctx) = (handle.clone(), ssc.clone());
    ssc.add_listener(Box::new(move |b| {
        if b.index == 3 {
            let staged = ctx
                .swap_plugin(&v1, v2.clone())
                .expect("a compatible version");
            *h.lock().expect("handle") = Some(staged);
        }
    }));
    ssc.run(None).expect("the job runs through the swap");
    let outcome = handle
        .lock()
        .expect("handle")
        .as_ref()
        .and_then(|h| h.outcome());
    let records = |seen: Arc<Mutex<Vec<sluice::CollectedBatch>>>| -> Seen {
        Arc::new(Mutex::new(
            seen.lock()
                .expect("collected")
                .iter()
                .map(|b| b.sorted_records())
                .collect(),
        ))
    };
    (records(per_batch), records(totals), outcome)
}

fn lines(batch: usize) -> Vec<String> {
    (0..3).map(|i| format!("k s{}", batch * 3 + i)).collect()
}

fn count(records: &[serde_json::Value], word: &str) -> i64 {
    records
        .iter()
        .find(|r| r[0] == word)
        .and_then(|r| r[1].as_i64())
        .unwrap_or(0)
}

#[test]
fn a_swap_takes_over_at_a_batch_boundary_and_keeps_the_state() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (per_batch, totals, outcome) = run(lines, dir.path());
    assert_eq!(outcome, Some(Ok(4)), "v2's first batch is batch 4");
    let per_batch = per_batch.lock().expect("batches");
    assert_eq!(per_batch.len(), 10, "every batch once");
    for (i, b) in per_batch.iter().enumerate() {
        // Each batch wholly one version: v1 counts a word 1, v2 counts 10.
        let unit = if i < 4 { 1 } else { 10 };
        assert_eq!(count(b, "k"), 3 * unit, "batch {i}: {b:?}");
        for s in 0..3 {
            assert_eq!(count(b, &format!("s{}", i * 3 + s)), unit, "batch {i}");
        }
    }
    // The running totals carried over the swap: 4 batches of v1, 6 of v2.
    let totals = totals.lock().expect("totals");
    let last = totals.last().expect("totals");
    assert_eq!(count(last, "k"), 4 * 3 + 6 * 30, "{last:?}");
    assert_eq!(count(last, "s0"), 1);
    assert_eq!(count(last, "s29"), 10);
    assert_eq!(last.len(), 31, "every word once");
    // The checkpoint records the version in force.
    let store = sluice::checkpoint::Checkpoints::open(dir.path()).expect("store");
    let (cp, _) = store.latest().expect("valid").expect("a checkpoint");
    assert_eq!(cp.plugins["wordcount"].version, "0.2.0");
}

#[test]
fn a_new_version_failing_its_first_batch_is_rolled_back() {
    // Batch 4 (v2's first) holds a word v2 traps on: it is rolled back and
    // batch 4 runs again on v1, from the state before it.
    let dir = tempfile::tempdir().expect("temp dir");
    let (per_batch, totals, outcome) = run(
        |b| {
            let mut l = lines(b);
            if b == 4 {
                l.push("crash-v2".to_string());
            }
            l
        },
        dir.path(),
    );
    let why = outcome.expect("settled").expect_err("rolled back");
    assert!(why.contains("wordcount") && why.contains("split"), "{why}");
    let per_batch = per_batch.lock().expect("batches");
    assert_eq!(per_batch.len(), 10, "every batch once");
    for (i, b) in per_batch.iter().enumerate() {
        assert_eq!(count(b, "k"), 3, "batch {i} on v1: {b:?}");
    }
    assert_eq!(count(&per_batch[4], "crash-v2"), 1);
    let totals = totals.lock().expect("totals");
    let last = totals.last().expect("totals");
    assert_eq!(count(last, "k"), 30, "batch 4 counted once: {last:?}");
    assert_eq!(count(last, "crash-v2"), 1);
}

#[test]
fn an_incompatible_version_is_refused() {
    let ssc = StreamingContext::new(Duration::from_secs(1))
        .with_clock(Arc::new(ManualClock::new(0)))
        .with_runtime(runtime());
    let wc = ssc
        .load_plugin("wordcount", plugin("wordcount"))
        .expect("wc");
    let iot = ssc.load_plugin("iot", plugin("iot")).expect("iot");
    ssc.queue_stream(vec![vec!["a".to_string()]], 1)
        .flat_map(wc.func("split").expect("split"))
        .count()
        .collect();
    let e = ssc
        .swap_plugin(&wc, iot.clone())
        .expect_err("iot lacks split")
        .to_string();
    assert!(e.contains("lacks `split`"), "{e}");
    let e = ssc
        .swap_plugin(&iot, wc.clone())
        .expect_err("iot is not used")
        .to_string();
    assert!(e.contains("not used by this job"), "{e}");
}
