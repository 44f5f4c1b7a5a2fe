//! Golden tests: each case under `tests/cases/NAME/` runs on the Spark
//! reference input `inputs/NAME.json` through the CLI, and its per-batch output
//! must equal `golden/NAME.jsonl`; the same jobs through the library with other
//! partition counts must give the same records.

use sluice::LoadPlugins;
use sluice::{Func, ManualClock, StreamingContext};
use sluice_tests::{assert_matches_golden, plugin, read_jsonl, reference, runtime};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

fn job_in(case: &str, dir: &Path) -> std::path::PathBuf {
    sluice_tests::case_job(case, dir)
}

/// The Spark output a case must match: the Scala API's where it differs
/// from PySpark's (`golden-scala/`, inverse windows), else PySpark's.
fn golden_of(case: &str) -> std::path::PathBuf {
    let scala = reference()
        .join("golden-scala")
        .join(format!("{case}.jsonl"));
    if scala.exists() {
        scala
    } else {
        reference().join("golden").join(format!("{case}.jsonl"))
    }
}

fn run_case_through_cli(case: &str) {
    run_case_through_cli_with(case, |_| {});
}

/// Runs a case; `canon` adjusts each output record before comparison (for
/// outputs whose inner order Spark leaves unspecified).
fn run_case_through_cli_with(case: &str, canon: impl Fn(&mut serde_json::Value)) {
    let dir = tempfile::tempdir().expect("temp dir");
    let job = job_in(case, dir.path());
    sluice_tests::run_job(&job);
    let mut got = read_jsonl(&dir.path().join("out.jsonl"));
    for batch in &mut got {
        if let Some(records) = batch["records"].as_array_mut() {
            records.iter_mut().for_each(&canon);
        }
    }
    let golden = read_jsonl(&golden_of(case));
    assert_matches_golden(&got, &golden, case);
    // Batch times are on the interval grid, one interval apart.
    let times: Vec<i64> = got
        .iter()
        .map(|g| g["time"].as_i64().expect("time"))
        .collect();
    assert!(times.windows(2).all(|w| w[1] - w[0] == 1000), "{times:?}");
}

#[test]
fn flat_map_matches_spark() {
    run_case_through_cli("flatMap");
}

#[test]
fn map_matches_spark() {
    run_case_through_cli("map");
}

#[test]
fn filter_matches_spark() {
    run_case_through_cli("filter");
}

#[test]
fn reduce_by_key_matches_spark() {
    run_case_through_cli("reduceByKey");
}

fn queue(case: &str) -> Vec<Vec<String>> {
    sluice::receiver::queue::read_queue_file(
        &reference().join("inputs").join(format!("{case}.json")),
        None,
    )
    .expect("reading the reference input")
    .batches
}

/// The word count through the library, with other input and output partition
/// counts and worker counts than the CLI case: the records must not change.
#[test]
fn reduce_by_key_through_the_library_is_partition_independent() {
    let golden = read_jsonl(&reference().join("golden/reduceByKey.jsonl"));
    for (input_parts, output_parts, workers) in [(1, 1, 1), (3, 5, 2), (7, 3, 2)] {
        let ssc = StreamingContext::new(Duration::from_secs(1))
            .with_clock(Arc::new(ManualClock::new(0)))
            .with_workers(workers)
            .with_runtime(runtime());
        let wc = ssc
            .load_plugin("wordcount", plugin("wordcount"))
            .expect("loading wordcount");
        let counts = ssc
            .queue_stream(queue("reduceByKey"), input_parts)
            .flat_map(wc.func("split").expect("split"))
            .map(wc.func("pair").expect("pair"))
            .reduce_by_key(wc.func("add").expect("add"), output_parts);
        let out = counts.collect();
        let summary = ssc.run(None).expect("running");
        assert_eq!(summary.batches, golden.len() as u64);
        let got: Vec<serde_json::Value> = out
            .lock()
            .expect("lock")
            .iter()
            .map(|b| {
                assert_eq!(b.partitions, output_parts);
                serde_json::json!({"batch": b.index, "records": b.sorted_records()})
            })
            .collect();
        let golden_records: Vec<serde_json::Value> = golden
            .iter()
            .map(|g| serde_json::json!({"batch": g["batch"], "records": g["records"]}))
            .collect();
        assert_matches_golden(
            &got,
            &golden_records,
            &format!("reduceByKey with {input_parts}/{output_parts} partitions"),
        );
    }
}

/// Plugin functions and native closures give the same output.
#[test]
fn native_operators_match_plugin_operators() {
    let run = |native: bool| {
        let ssc = sluice_tests::test_context();
        let lines = ssc.queue_stream(queue("filter"), 2);
        let long = if native {
            lines
                .flat_map(Func::native_values(
                    "split",
                    sluice_sdk_kind_flat_map(),
                    |c| sluice_sdk::run::flat_map(c, |l: &str| l.split(' ')),
                ))
                .filter(Func::filter("long", |w: String| w.chars().count() >= 4))
        } else {
            let text = ssc
                .load_plugin("text", plugin("text"))
                .expect("loading text");
            lines
                .flat_map(text.func("words").expect("words"))
                .filter(text.func("long").expect("long"))
        };
        let out = long.collect();
        ssc.run(None).expect("running");
        let batches = out.lock().expect("lock");
        batches
            .iter()
            .map(|b| b.sorted_records())
            .collect::<Vec<_>>()
    };
    assert_eq!(run(true), run(false));
}

fn sluice_sdk_kind_flat_map() -> sluice_sdk::Kind {
    sluice_sdk::Kind::FlatMap
}

/// With a per-call input limit far below the batch size, every partition is
/// split across many plugin calls (and big key groups are reduced piecewise):
/// the result must not change.
#[test]
fn word_count_with_tiny_calls_matches_spark() {
    let golden = read_jsonl(&reference().join("golden/reduceByKey.jsonl"));
    let mut calls_by_limit = Vec::new();
    for limit in [sluice::Limits::default().input_bytes_per_call, 16, 1] {
        let ssc = sluice_tests::test_context();
        let limits = sluice::Limits {
            input_bytes_per_call: limit,
            ..sluice::Limits::default()
        };
        let wc = ssc
            .load_plugin_with_limits("wordcount", plugin("wordcount"), limits)
            .expect("loading wordcount");
        let calls_before = wc.stats().calls.load(std::sync::atomic::Ordering::Relaxed);
        let counts = ssc
            .queue_stream(queue("reduceByKey"), 2)
            .flat_map(wc.func("split").expect("split"))
            .map(wc.func("pair").expect("pair"))
            .reduce_by_key(wc.func("add").expect("add"), 3);
        let out = counts.collect();
        ssc.run(None).expect("running");
        let calls = wc.stats().calls.load(std::sync::atomic::Ordering::Relaxed) - calls_before;
        calls_by_limit.push(calls);
        let got: Vec<serde_json::Value> = out
            .lock()
            .expect("lock")
            .iter()
            .map(|b| serde_json::json!({"batch": b.index, "records": b.sorted_records(), "partitions": b.partitions}))
            .collect();
        assert_matches_golden(
            &got,
            &golden,
            &format!("reduceByKey with {limit}-byte calls"),
        );
    }
}

#[test]
fn count_matches_spark() {
    run_case_through_cli("count");
}

#[test]
fn reduce_matches_spark() {
    run_case_through_cli("reduce");
}

#[test]
fn count_by_value_matches_spark() {
    run_case_through_cli("countByValue");
}

#[test]
fn union_matches_spark() {
    run_case_through_cli("union");
}

#[test]
fn join_matches_spark() {
    run_case_through_cli("join");
}

/// Spark's cogroup gives each side as an unordered iterable, which the
/// reference sorts; Sluice keeps arrival order, so sort before comparing.
#[test]
fn cogroup_matches_spark() {
    run_case_through_cli_with("cogroup", |record| {
        for side in [0, 1] {
            if let Some(values) = record[1][side].as_array_mut() {
                values.sort_by_key(|v| v.to_string());
            }
        }
    });
}

fn collected(out: &std::sync::Mutex<Vec<sluice::CollectedBatch>>) -> Vec<serde_json::Value> {
    out.lock()
        .expect("lock")
        .iter()
        .map(|b| serde_json::json!({"batch": b.index, "records": b.sorted_records(), "partitions": b.partitions}))
        .collect()
}

/// `repartition(4)` keeps every element and always gives 4 partitions.
#[test]
fn repartition_keeps_the_elements_in_exactly_n_partitions() {
    let ssc = sluice_tests::test_context();
    let wc = ssc
        .load_plugin("wordcount", plugin("wordcount"))
        .expect("wordcount");
    let out = ssc
        .queue_stream(queue("flatMap"), 2)
        .flat_map(wc.func("split").expect("split"))
        .repartition(4)
        .collect();
    ssc.run(None).expect("run");
    let got = collected(&out);
    assert!(got.iter().all(|b| b["partitions"] == 4), "{got:?}");
    let golden = read_jsonl(&reference().join("golden/flatMap.jsonl"));
    assert_matches_golden(&got, &golden, "flatMap then repartition(4)");
}

/// `group_by_key` then the size of each group equals Spark's word counts.
#[test]
fn group_by_key_then_counting_groups_matches_reduce_by_key() {
    let ssc = sluice_tests::test_context();
    let wc = ssc
        .load_plugin("wordcount", plugin("wordcount"))
        .expect("wordcount");
    let out = ssc
        .queue_stream(queue("reduceByKey"), 2)
        .flat_map(wc.func("split").expect("split"))
        .map(wc.func("pair").expect("pair"))
        .group_by_key(3)
        .map_values(Func::map("size", |ones: Vec<i64>| ones.len() as i64))
        .collect();
    ssc.run(None).expect("run");
    let golden = read_jsonl(&reference().join("golden/reduceByKey.jsonl"));
    assert_matches_golden(&collected(&out), &golden, "group_by_key + map_values(len)");
}

/// `save_as_text_files`: per batch and output, the directory name, the files
/// (Hadoop's `.crc` checksum files included) and the lines written (which part file holds
/// which line depends on partitioning, so lines are compared as a multiset).
#[test]
fn save_as_text_files_matches_spark() {
    let dir = tempfile::tempdir().expect("temp dir");
    let job = job_in("saveAsTextFiles", dir.path());
    sluice_tests::run_job(&job);
    let out = dir.path().join("out");
    let mut names: Vec<String> = std::fs::read_dir(&out)
        .expect("output dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert!(
        names.iter().all(|n| !n.starts_with('.')),
        "temporary directories left: {names:?}"
    );
    let first_ms: i64 = names
        .iter()
        .filter_map(|n| n.strip_prefix("words-"))
        .filter_map(|ms| ms.parse().ok())
        .min()
        .expect("a words directory");
    let golden = read_jsonl(&reference().join("golden/saveAsTextFiles.jsonl"));
    assert_eq!(
        names.len(),
        golden.len(),
        "one directory per batch and output: {names:?}"
    );
    for g in &golden {
        let ms = first_ms + 1000 * g["batch"].as_i64().expect("batch");
        let name = g["dir"]
            .as_str()
            .expect("dir")
            .replace("<batch_time_ms>", &ms.to_string());
        let d = out.join(&name);
        let mut files: Vec<String> = std::fs::read_dir(&d)
            .unwrap_or_else(|e| panic!("{name}: {e}"))
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        files.sort();
        let want_files: Vec<&str> = g["files"]
            .as_array()
            .expect("files")
            .iter()
            .filter_map(|f| f.as_str())
            .collect();
        assert_eq!(files, want_files, "{name}");
        let mut lines: Vec<String> = Vec::new();
        for f in files.iter().filter(|f| f.starts_with("part-")) {
            let text = std::fs::read_to_string(d.join(f)).expect("part file");
            lines.extend(text.lines().map(str::to_string));
        }
        let mut want: Vec<String> = g["part_contents"]
            .as_object()
            .expect("part_contents")
            .values()
            .flat_map(|t| {
                t.as_str()
                    .unwrap_or_default()
                    .lines()
                    .map(str::to_string)
                    .collect::<Vec<_>>()
            })
            .collect();
        lines.sort();
        want.sort();
        assert_eq!(lines, want, "{name}");
    }
}

/// `transform` sees the whole batch: the top 3 words of each batch, derived
/// from Spark's word counts, in as many partitions as its input had (3), as
/// Spark's `rdd.sortBy(…)` inside a transform keeps them.
#[test]
fn transform_keeps_the_top_three_of_each_batch() {
    let dir = tempfile::tempdir().expect("temp dir");
    let job = job_in("transform", dir.path());
    sluice_tests::run_job(&job);
    let got = read_jsonl(&dir.path().join("out.jsonl"));
    let expected: Vec<serde_json::Value> = read_jsonl(
        &reference().join("golden/reduceByKey.jsonl"),
    )
    .iter()
    .map(|g| {
        let mut counts: Vec<(String, i64)> = g["records"]
            .as_array()
            .expect("records")
            .iter()
            .map(|r| {
                (
                    r[0].as_str().expect("word").to_string(),
                    r[1].as_i64().expect("count"),
                )
            })
            .collect();
        counts.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        counts.truncate(3);
        serde_json::json!({"batch": g["batch"], "records": counts, "partitions": g["partitions"]})
    })
    .collect();
    assert_matches_golden(&got, &expected, "transform(top3)");
}

/// `map_partitions` runs once per partition, empty partitions included.
#[test]
fn map_partitions_sees_every_partition_once() {
    let ssc = sluice_tests::test_context();
    let text = ssc.load_plugin("text", plugin("text")).expect("text");
    let batches = queue("flatMap");
    let out = ssc
        .queue_stream(batches.clone(), 3)
        .map_partitions(text.func("partition_size").expect("partition_size"))
        .collect();
    ssc.run(None).expect("run");
    let got = out.lock().expect("lock");
    assert_eq!(got.len(), batches.len());
    for (b, lines) in got.iter().zip(&batches) {
        assert_eq!(
            b.records.len(),
            3,
            "one size per partition: {:?}",
            b.records
        );
        let total: i64 = b.records.iter().map(|r| r.as_i64().expect("size")).sum();
        assert_eq!(total, lines.len() as i64);
    }
}

#[test]
fn window_matches_spark() {
    run_case_through_cli("window_3_1");
}

#[test]
fn count_by_window_matches_spark() {
    run_case_through_cli("countByWindow_5_1");
}

#[test]
fn incremental_reduce_by_key_and_window_matches_spark() {
    run_case_through_cli("reduceByKeyAndWindow_inv_5_1");
}

/// At 3 s / 1 s PySpark re-reduces; Sluice follows the Scala API, which is
/// always incremental (zero-count keys stay): `golden-scala/`.
#[test]
fn incremental_window_follows_sparks_scala_api() {
    run_case_through_cli("reduceByKeyAndWindow_inv_3_1");
}

#[test]
fn update_state_by_key_matches_spark() {
    run_case_through_cli("updateStateByKey");
}

/// Spark's `queueStream(queue, oneAtATime, default)`: one item per batch,
/// or every item in the first batch (their partitions side by side); once
/// the queue is empty the default batch, else empty batches. Through the
/// spec (`one_at_a_time`, `default`); a second queue keeps the run going.
#[test]
fn queue_sources_take_their_batches_as_sparks_queue_stream() {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(
        dir.path().join("three.json"),
        r#"[["a b"], ["c"], ["d e f"]]"#,
    )
    .expect("write");
    std::fs::write(dir.path().join("five.json"), r#"[[], [], [], [], []]"#).expect("write");
    let job = dir.path().join("job.toml");
    let mut spec = "[job]\nbatch_interval = \"1s\"\n[sources.ticks]\ntype = \"queue\"\npath = \"five.json\"\npartitions = 1\n[[outputs]]\nstream = \"ticks\"\ntype = \"jsonl\"\npath = \"ticks.jsonl\"\n".to_string();
    for (name, fields) in [
        ("one_default", "default = [\"z\"]\n"),
        ("all", "one_at_a_time = false\n"),
        (
            "all_default",
            "one_at_a_time = false\ndefault = [\"z\", \"y\"]\n",
        ),
        ("one", ""),
    ] {
        spec.push_str(&format!(
            "[sources.{name}]\ntype = \"queue\"\npath = \"three.json\"\npartitions = 2\n{fields}[[outputs]]\nstream = \"{name}\"\ntype = \"jsonl\"\npath = \"{name}.jsonl\"\n"
        ));
    }
    std::fs::write(&job, spec).expect("write");
    sluice_tests::run_job(&job);
    let got = |name: &str| -> Vec<(Vec<String>, usize)> {
        read_jsonl(&dir.path().join(format!("{name}.jsonl")))
            .iter()
            .map(|b| {
                let records = serde_json::from_value(b["records"].clone()).expect("lines");
                (
                    records,
                    b["partitions"].as_u64().expect("partitions") as usize,
                )
            })
            .collect()
    };
    let batch = |lines: &[&str], partitions: usize| {
        (lines.iter().map(|l| l.to_string()).collect(), partitions)
    };
    let items = [batch(&["a b"], 2), batch(&["c"], 2), batch(&["d e f"], 2)];
    // jsonl outputs write each batch's records sorted.
    let (none, z, zy) = (batch(&[], 2), batch(&["z"], 2), batch(&["y", "z"], 2));
    let all = batch(&["a b", "c", "d e f"], 6);
    assert_eq!(
        got("one"),
        [&items[..], &[none.clone(), none.clone()]].concat()
    );
    assert_eq!(got("one_default"), [&items[..], &[z.clone(), z]].concat());
    assert_eq!(
        got("all"),
        [all.clone(), none.clone(), none.clone(), none.clone(), none]
    );
    assert_eq!(
        got("all_default"),
        [all, zy.clone(), zy.clone(), zy.clone(), zy]
    );
}
