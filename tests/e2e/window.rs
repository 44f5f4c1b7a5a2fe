//! Windows and state through the library: slides longer than the batch,
//! the cost of an incremental slide, duration errors, and the windowed IoT
//! example.

use serde_json::{Value, json};
use sluice::Func;
use sluice::LoadPlugins;
use sluice::StateSpec;
use sluice_tests::{case_job, read_jsonl, test_context};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

/// Batch `i` holds the single element `i`.
fn numbered(n: usize) -> Vec<Vec<String>> {
    (0..n).map(|i| vec![i.to_string()]).collect()
}

/// window(4, 2): output at batches 1, 3, 5 only, with the batches
/// `(T - 4 s, T]` (the first one partial): Spark's window_4_2.
#[test]
fn a_slide_of_two_batches_outputs_every_other_batch() {
    let ssc = test_context();
    let out = ssc
        .queue_stream(numbered(6), 1)
        .window(secs(4), secs(2))
        .collect();
    ssc.run(None).expect("run");
    let got: Vec<(u64, Vec<Value>)> = out
        .lock()
        .expect("collected")
        .iter()
        .map(|b| (b.index, b.sorted_records()))
        .collect();
    let strs = |v: &[&str]| v.iter().map(|s| json!(s)).collect::<Vec<_>>();
    assert_eq!(
        got,
        vec![
            (1, strs(&["0", "1"])),
            (3, strs(&["0", "1", "2", "3"])),
            (5, strs(&["2", "3", "4", "5"])),
        ]
    );
}

/// A window that is not a multiple of the batch interval is refused before
/// the first batch, naming the stream and both durations.
#[test]
fn window_durations_must_be_multiples_of_the_parent_slide() {
    for (length, slide, want) in [
        (
            Duration::from_millis(3500),
            secs(1),
            "the window duration (3500 ms)",
        ),
        (
            secs(3),
            Duration::from_millis(1500),
            "the slide duration (1500 ms)",
        ),
    ] {
        let ssc = test_context();
        ssc.queue_stream(numbered(2), 1)
            .window(length, slide)
            .named("recent")
            .collect();
        let err = ssc.run(None).expect_err("refused").to_string();
        assert!(
            err.contains("stream `recent`")
                && err.contains(want)
                && err.contains("parent stream (1000 ms)"),
            "{err}"
        );
    }
    // Windows of different slides cannot be joined.
    let ssc = test_context();
    let pairs = ssc
        .queue_stream(numbered(2), 1)
        .map(Func::map("pair", |s: String| (s, 1i64)));
    pairs
        .window(secs(2), secs(2))
        .join(&pairs, 1)
        .named("mixed")
        .collect();
    let err = ssc.run(None).expect_err("refused").to_string();
    assert!(
        err.contains("stream `mixed`") && err.contains("different slide durations"),
        "{err}"
    );
}

/// With an inverse function a slide costs calls for the batches that enter
/// and leave the window, not for the window: the same per slide for a
/// window of 5 batches and of 50.
#[test]
fn an_incremental_slide_costs_the_same_for_any_window_length() {
    let per_slide = |window: u64| -> (usize, usize) {
        let reduced = Arc::new(AtomicUsize::new(0));
        let inverted = Arc::new(AtomicUsize::new(0));
        let (r, i) = (reduced.clone(), inverted.clone());
        let add = Func::reduce("add", move |a: i64, b: i64| {
            r.fetch_add(1, Ordering::Relaxed);
            a + b
        });
        let sub = Func::inverse_reduce("sub", move |a: i64, b: i64| {
            i.fetch_add(1, Ordering::Relaxed);
            a - b
        });
        // 120 batches of the same 20 keys, twice each.
        let batches: Vec<Vec<String>> = (0..120)
            .map(|_| (0..40).map(|k| format!("k{}", k % 20)).collect())
            .collect();
        let ssc = test_context();
        let counts: Arc<std::sync::Mutex<Vec<(usize, usize)>>> = Arc::default();
        let seen = counts.clone();
        let (r, i) = (reduced.clone(), inverted.clone());
        ssc.queue_stream(batches, 2)
            .map(Func::map("pair", |w: String| (w, 1i64)))
            .reduce_by_key_and_window(add, Some(sub), secs(window), secs(1), 2, None)
            .foreach_batch(move |b| {
                assert!(b.records.len() <= 20);
                seen.lock()
                    .expect("counts")
                    .push((r.swap(0, Ordering::Relaxed), i.swap(0, Ordering::Relaxed)));
                Ok(())
            });
        ssc.run(None).expect("run");
        let counts = counts.lock().expect("counts");
        // A slide well after the window filled up.
        counts[110]
    };
    let (small, large) = (per_slide(5), per_slide(50));
    assert_eq!(small, large, "(reduce, inverse) calls per slide");
    assert!(small.1 > 0 && small.1 <= 20, "{small:?}");
}

/// The IoT example windowed: actions per device over the last 3 s, every
/// 1 s, incrementally, devices without actions in the window dropped.
#[test]
fn iot_actions_per_device_over_the_last_three_seconds() {
    let dir = tempfile::tempdir().expect("temp dir");
    let job = case_job("iot_window", dir.path());
    sluice_tests::run_job(&job);
    let got = read_jsonl(&dir.path().join("out.jsonl"));
    let expected = read_jsonl(&sluice_tests::root().join("tests/cases/iot_window/expected.jsonl"));
    sluice_tests::assert_matches_golden(&got, &expected, "iot over 3 s");
}

/// map_with_state: each value is mapped with its key's running state; a key
/// idle for at least the timeout (2 s, two batches) gets one last call and
/// is dropped, and comes back from nothing. Spark's rule: a key last
/// updated at batch time T times out at the first batch B with
/// T < B - timeout, so `b` (last seen at 1 s) at 4 s, not at 3 s.
#[test]
fn map_with_state_maps_each_value_and_times_keys_out() {
    let (ssc, pairs, running_count) = word_pairs(&[&["a b a"], &["a"], &[], &[], &["b"]]);
    let spec = StateSpec::function(running_count)
        .num_partitions(3)
        .timeout(Duration::from_secs(2));
    let out = pairs.map_with_state(spec).collect();
    ssc.run(None).expect("run");
    assert_eq!(
        sorted_batches(&out),
        vec![
            vec![
                json!(["a", 1, false]),
                json!(["a", 2, false]),
                json!(["b", 1, false])
            ],
            vec![json!(["a", 3, false])],
            vec![],
            vec![json!(["b", 1, true])],
            vec![json!(["a", 3, true]), json!(["b", 1, false])],
        ]
    );
}

/// map_with_state's `state_snapshots` is every key's state after each
/// batch, and an initial state counts as updated at the first batch, as
/// Spark's `StateSpec.initialState` (`c` times out at 4 s: idle since 1 s).
#[test]
fn map_with_state_snapshots_include_the_initial_state_until_it_times_out() {
    let (ssc, pairs, running_count) = word_pairs(&[&["a b a"], &["a c"], &[], &[], &["b"]]);
    let spec = StateSpec::function(running_count)
        .num_partitions(2)
        .timeout(Duration::from_millis(2500))
        .initial_state(&[("c", 10i64), ("d", 5)]);
    let mapped = pairs.map_with_state(spec);
    let snapshots = mapped.state_snapshots();
    let (mapped, snapshots) = (mapped.collect(), snapshots.collect());
    ssc.run(None).expect("run");
    // 2.5 s: idle for two whole batches (3 s > 2.5 s > 2 s), as 2 s.
    assert_eq!(sorted_batches(&mapped), running_with_initial_state());
    assert_eq!(sorted_batches(&snapshots), snapshots_with_initial_state());
    assert!(
        snapshots
            .lock()
            .expect("collected")
            .iter()
            .all(|b| b.partitions == 2)
    );
}

/// The same from a job spec: `timeout` as a duration, `initial_state` from
/// a file and a `state_snapshots` stream written out.
#[test]
fn map_with_state_snapshots_and_initial_state_from_a_job_spec() {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(
        dir.path().join("in.json"),
        r#"[["a b a"], ["a c"], [], [], ["b"]]"#,
    )
    .expect("write");
    std::fs::write(dir.path().join("initial.json"), r#"[["c", 10], ["d", 5]]"#).expect("write");
    let job = dir.path().join("job.toml");
    std::fs::write(
        &job,
        format!(
            r#"[job]
name = "snapshots"
batch_interval = "1s"
checkpoint = "checkpoint"
[plugins.wordcount]
path = "{}"
[sources.lines]
type = "queue"
path = "in.json"
[streams.pairs]
from = "lines"
op = "flat_map"
function = "wordcount.split"
[streams.ones]
from = "pairs"
op = "map"
function = "wordcount.pair"
[streams.running]
from = "ones"
op = "map_with_state"
function = "wordcount.running_count"
timeout = "2500ms"
initial_state = "initial.json"
[streams.state]
from = "running"
op = "state_snapshots"
[[outputs]]
stream = "running"
type = "jsonl"
path = "running.jsonl"
[[outputs]]
stream = "state"
type = "jsonl"
path = "state.jsonl"
"#,
            sluice_tests::plugin("wordcount").display()
        ),
    )
    .expect("write");
    sluice_tests::run_job(&job);
    // Each batch's records in the order `sorted_records` gives.
    let batches = |f: &str| -> Vec<Vec<Value>> {
        (read_jsonl(&dir.path().join(f)).into_iter())
            .map(|b| {
                sluice::CollectedBatch {
                    time: sluice::BatchTime(0),
                    index: 0,
                    partitions: 0,
                    records: serde_json::from_value(b["records"].clone()).expect("records"),
                }
                .sorted_records()
            })
            .collect()
    };
    assert_eq!(batches("running.jsonl"), running_with_initial_state());
    assert_eq!(batches("state.jsonl"), snapshots_with_initial_state());
}

/// What `running_count` maps `a b a | a c | | | b` to with a 2.5 s
/// timeout and the initial state `c = 10, d = 5`, each batch sorted.
fn running_with_initial_state() -> Vec<Vec<Value>> {
    vec![
        vec![
            json!(["a", 1, false]),
            json!(["a", 2, false]),
            json!(["b", 1, false]),
        ],
        vec![json!(["a", 3, false]), json!(["c", 11, false])],
        vec![],
        vec![json!(["b", 1, true]), json!(["d", 5, true])],
        vec![
            json!(["a", 3, true]),
            json!(["b", 1, false]),
            json!(["c", 11, true]),
        ],
    ]
}

/// The state snapshots of that job after each batch, sorted.
fn snapshots_with_initial_state() -> Vec<Vec<Value>> {
    let (a2, a3, b1) = (json!(["a", 2]), json!(["a", 3]), json!(["b", 1]));
    let (c10, c11, d5) = (json!(["c", 10]), json!(["c", 11]), json!(["d", 5]));
    vec![
        vec![a2, b1.clone(), c10, d5.clone()],
        vec![a3.clone(), b1.clone(), c11.clone(), d5.clone()],
        vec![a3.clone(), b1.clone(), c11.clone(), d5],
        vec![a3, c11],
        vec![b1],
    ]
}

/// group_by_key_and_window(3 s, 2 s): per word of the last three batches,
/// every other batch, its values; through the library and the spec
/// (Spark's `groupByKeyAndWindow`).
#[test]
fn group_by_key_and_window_groups_the_values_of_each_window() {
    let text = std::fs::read_to_string(sluice_tests::reference().join("inputs/window_3_1.json"))
        .expect("input");
    let input: Value = serde_json::from_str(&text).expect("json");
    let batches: Vec<Vec<String>> =
        serde_json::from_value(input["streams"]["lines"].clone()).expect("lines");
    // Batch i's output (slide 2 s: batches 1, 3, 5, ...): each word of
    // batches i-2..=i with one 1 per occurrence.
    let expected: Vec<Value> = (1..batches.len())
        .step_by(2)
        .map(|i| {
            let mut groups: std::collections::BTreeMap<&str, Vec<i64>> = Default::default();
            for line in batches[i.saturating_sub(2)..=i].iter().flatten() {
                for w in line.split(' ') {
                    groups.entry(w).or_default().push(1);
                }
            }
            let records: Vec<Value> = groups.iter().map(|(w, ones)| json!([w, ones])).collect();
            json!({"batch": i, "records": records, "partitions": 3})
        })
        .collect();

    let ssc = test_context();
    let wc = ssc
        .load_plugin("wordcount", sluice_tests::plugin("wordcount"))
        .expect("plugin");
    let out = ssc
        .queue_stream(batches.clone(), 2)
        .flat_map(wc.func("split").expect("split"))
        .map(wc.func("pair").expect("pair"))
        .group_by_key_and_window(Duration::from_secs(3), Duration::from_secs(2), 3)
        .collect();
    ssc.run(None).expect("run");
    let got: Vec<Value> = (out.lock().expect("collected").iter())
        .map(|b| json!({"batch": b.index, "records": b.records, "partitions": b.partitions}))
        .collect();
    sluice_tests::assert_matches_golden(&got, &expected, "group_by_key_and_window (library)");

    let dir = tempfile::tempdir().expect("temp dir");
    let job = dir.path().join("job.toml");
    std::fs::write(
        &job,
        format!(
            "[job]\nbatch_interval = \"1s\"\n[plugins.wordcount]\npath = \"{}\"\n[sources.lines]\ntype = \"queue\"\npath = \"{}\"\n[streams.words]\nfrom = \"lines\"\nop = \"flat_map\"\nfunction = \"wordcount.split\"\n[streams.pairs]\nfrom = \"words\"\nop = \"map\"\nfunction = \"wordcount.pair\"\n[streams.groups]\nfrom = \"pairs\"\nop = \"group_by_key_and_window\"\nwindow = \"3s\"\nslide = \"2s\"\npartitions = 3\n[[outputs]]\nstream = \"groups\"\ntype = \"jsonl\"\npath = \"out.jsonl\"\n",
            sluice_tests::plugin("wordcount").display(),
            sluice_tests::reference().join("inputs/window_3_1.json").display()
        ),
    )
    .expect("write");
    sluice_tests::run_job(&job);
    sluice_tests::assert_matches_golden(
        &read_jsonl(&dir.path().join("out.jsonl")),
        &expected,
        "group_by_key_and_window (spec)",
    );
}

/// A test context with the `(word, 1)` pairs of `batches` of lines, and
/// the word count plugin's `running_count` (a map-state function).
fn word_pairs(batches: &[&[&str]]) -> (sluice::StreamingContext, sluice::DStream, Func) {
    let ssc = test_context();
    let wc = ssc
        .load_plugin("wordcount", sluice_tests::plugin("wordcount"))
        .expect("plugin");
    let f = |n: &str| wc.func(n).expect("function");
    let batches = (batches.iter())
        .map(|b| b.iter().map(|l| l.to_string()).collect())
        .collect();
    let pairs = ssc
        .queue_stream(batches, 2)
        .flat_map(f("split"))
        .map(f("pair"));
    (ssc, pairs, f("running_count"))
}

/// Each collected batch's records, sorted.
fn sorted_batches(out: &Arc<std::sync::Mutex<Vec<sluice::CollectedBatch>>>) -> Vec<Vec<Value>> {
    (out.lock().expect("collected").iter())
        .map(|b| b.sorted_records())
        .collect()
}

/// slice(from, to) after a run with `remember`: both ends included, bounds
/// floored onto the grid, nothing at or before the zero time, `from > to`
/// empty (Spark's observed slice).
#[test]
fn slice_returns_the_remembered_batches_between_two_times() {
    let ssc = test_context();
    ssc.remember(secs(60));
    let lines = ssc.queue_stream(numbered(6), 1);
    let windowed = lines.window(secs(2), secs(2));
    lines.collect();
    windowed.collect();
    ssc.run(None).expect("run");
    // The manual clock starts at 0: batch i is at (i + 1) s, the zero time is 0.
    let at = |ms: i64| sluice::BatchTime(1000 + ms);
    let batches = |from: i64, to: i64, s: &sluice::DStream| -> Vec<u64> {
        s.slice(at(from), at(to)).iter().map(|b| b.index).collect()
    };
    assert_eq!(batches(2500, 5500, &lines), [2, 3, 4, 5]);
    assert_eq!(batches(-3000, 1000, &lines), [0, 1]);
    assert_eq!(batches(4000, 2000, &lines), Vec::<u64>::new());
    // A window of slide 2 exists at batches 1, 3, 5 only.
    assert_eq!(batches(0, 5000, &windowed), [1, 3, 5]);
    let third = lines.slice(at(3000), at(3000));
    assert_eq!(third[0].records, [json!("3")]);
}

/// count_by_value_and_window, reduce_by_window and map_with_state from a job
/// spec, checked against expectations computed here from the input.
#[test]
fn window_and_state_operators_from_a_job_spec() {
    let dir = tempfile::tempdir().expect("temp dir");
    let job = case_job("windowOps", dir.path());
    sluice_tests::run_job(&job);
    let text = std::fs::read_to_string(sluice_tests::reference().join("inputs/window_3_1.json"))
        .expect("input");
    let input: Value = serde_json::from_str(&text).expect("json");
    let batches: Vec<Vec<String>> =
        serde_json::from_value(input["streams"]["lines"].clone()).expect("lines");
    let words: Vec<Vec<String>> = batches
        .iter()
        .map(|b| {
            b.iter()
                .flat_map(|l| l.split(' ').map(str::to_string))
                .collect()
        })
        .collect();
    let window = |i: usize| words[i.saturating_sub(2)..=i].concat();
    let mut by_value = Vec::new();
    let mut total_length = Vec::new();
    let mut running = Vec::new();
    let mut state: std::collections::BTreeMap<String, (i64, usize)> = Default::default();
    for (i, news) in words.iter().enumerate() {
        let mut counts: std::collections::BTreeMap<&str, i64> = Default::default();
        let w = window(i);
        for x in &w {
            *counts.entry(x).or_default() += 1;
        }
        let records: Vec<Value> = counts.iter().map(|(k, n)| json!([k, n])).collect();
        by_value.push(json!({"batch": i, "records": records, "partitions": 3}));
        let lengths: Vec<i64> = w.iter().map(|x| x.chars().count() as i64).collect();
        let records: Vec<Value> = if lengths.is_empty() {
            vec![]
        } else {
            vec![json!(lengths.iter().sum::<i64>())]
        };
        total_length.push(json!({"batch": i, "records": records}));
        // map_with_state: updates are numbered from 1; a key times out at the
        // first update more than 2 after its last (Spark: last < now - 2 s).
        let tick = i + 1;
        let mut records = Vec::new();
        for x in news {
            let e = state.entry(x.clone()).or_insert((0, tick));
            e.0 += 1;
            e.1 = tick;
            records.push(json!([x, e.0, false]));
        }
        let idle: Vec<String> = state
            .iter()
            .filter(|(k, (_, last))| tick - last > 2 && !news.contains(k))
            .map(|(k, _)| k.clone())
            .collect();
        for k in idle {
            let (n, _) = state.remove(&k).expect("idle key");
            records.push(json!([k, n, true]));
        }
        running.push(json!({"batch": i, "records": records}));
    }
    let got = |f: &str| read_jsonl(&dir.path().join(f));
    sluice_tests::assert_matches_golden(
        &got("by_value.jsonl"),
        &by_value,
        "count_by_value_and_window",
    );
    sluice_tests::assert_matches_golden(
        &got("total_length.jsonl"),
        &total_length,
        "reduce_by_window",
    );
    sluice_tests::assert_matches_golden(&got("running.jsonl"), &running, "map_with_state");
}
