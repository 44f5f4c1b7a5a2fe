//! The keyed operators without a Spark reference file (combine_by_key,
//! flat_map_values, transform_with) and the IoT example: expectations are
//! derived from Spark's word counts or computed here from the inputs.

use serde_json::{Value, json};
use sluice::Func;
use sluice::LoadPlugins;
use sluice_tests::{assert_matches_golden, case_job, plugin, read_jsonl, reference, run_ok};
use std::collections::{BTreeMap, BTreeSet};

/// The lines of `stream` in a reference input, per batch.
fn input(name: &str, stream: &str) -> Vec<Vec<String>> {
    let text = std::fs::read_to_string(reference().join("inputs").join(format!("{name}.json")))
        .expect("reference input");
    let v: Value = serde_json::from_str(&text).expect("json");
    serde_json::from_value(v["streams"][stream].clone()).expect("batches of lines")
}

/// Runs a case through the CLI; its jsonl output.
fn run_case(case: &str) -> Vec<Value> {
    let dir = tempfile::tempdir().expect("temp dir");
    let job = case_job(case, dir.path());
    sluice_tests::run_job(&job);
    read_jsonl(&dir.path().join("out.jsonl"))
}

/// combine_by_key with a `(sum, count)` combiner over `(word, 1)` pairs gives
/// `(word, (n, n))` for Spark's count `n`, in exactly 3 partitions.
#[test]
fn combine_by_key_matches_sparks_counts() {
    let expected: Vec<Value> = read_jsonl(&reference().join("golden/reduceByKey.jsonl"))
        .iter()
        .map(|g| {
            let records: Vec<Value> = g["records"]
                .as_array()
                .expect("records")
                .iter()
                .map(|r| json!([r[0], [r[1], r[1]]]))
                .collect();
            json!({"batch": g["batch"], "records": records, "partitions": 3})
        })
        .collect();
    assert_matches_golden(&run_case("combineByKey"), &expected, "combine_by_key");
}

/// transform_with sees both streams' batches: the left word counts whose
/// word is not on the right (subtractByKey), batch by batch.
#[test]
fn transform_with_sees_both_streams() {
    let (left, right) = (input("join", "left"), input("join", "right"));
    let expected: Vec<Value> = left
        .iter()
        .enumerate()
        .map(|(i, lines)| {
            let mut counts: BTreeMap<&str, i64> = BTreeMap::new();
            for w in lines.iter().flat_map(|l| l.split(' ')) {
                *counts.entry(w).or_default() += 1;
            }
            let right_words: BTreeSet<&str> = right
                .get(i)
                .into_iter()
                .flatten()
                .flat_map(|l| l.split(' '))
                .collect();
            let records: Vec<Value> = counts
                .iter()
                .filter(|(w, _)| !right_words.contains(*w))
                .map(|(w, n)| json!([w, n]))
                .collect();
            json!({"batch": i, "records": records, "partitions": 1})
        })
        .collect();
    assert_matches_golden(&run_case("transformWith"), &expected, "transform_with");
}

/// Spark's `StreamingContext.transform` over three streams: the function
/// sees one element per stream, the array of its batch (`text.in_every`:
/// the words in every stream's batch), through the library and through a
/// spec whose `transform` takes a list of streams. The result has as many
/// partitions as the first stream.
#[test]
fn transform_of_several_streams_sees_each_streams_batch() {
    let streams: BTreeMap<&str, Vec<Vec<&str>>> = BTreeMap::from([
        (
            "x",
            vec![vec!["a b c", "d"], vec!["a"], vec![], vec!["q r"]],
        ),
        ("y", vec![vec!["c d"], vec!["a a"], vec!["z"], vec!["r q"]]),
        ("z", vec![vec!["d c x"], vec!["b"], vec!["z"], vec!["q"]]),
    ]);
    let expected: Vec<Value> = (0..4)
        .map(|i| {
            let words = |s: &str| -> BTreeSet<&str> {
                streams[s][i].iter().flat_map(|l| l.split(' ')).collect()
            };
            let common: Vec<&str> = (words("x").intersection(&words("y")))
                .filter(|w| words("z").contains(*w))
                .copied()
                .collect();
            json!({"batch": i, "records": common, "partitions": 2})
        })
        .collect();
    assert_eq!(
        expected[0]["records"],
        json!(["c", "d"]),
        "the expectation itself"
    );

    // The library.
    let ssc = sluice_tests::test_context();
    let (text, wc) = (
        ssc.load_plugin("text", plugin("text")).expect("plugin"),
        ssc.load_plugin("wordcount", plugin("wordcount"))
            .expect("plugin"),
    );
    let inputs: Vec<sluice::DStream> = streams
        .values()
        .map(|batches| {
            let batches = batches
                .iter()
                .map(|b| b.iter().map(|l| l.to_string()).collect())
                .collect();
            ssc.queue_stream(batches, 2)
                .flat_map(wc.func("split").expect("split"))
        })
        .collect();
    let out = ssc
        .transform(&inputs, text.func("in_every").expect("in_every"))
        .collect();
    ssc.run(None).expect("run");
    let got: Vec<Value> = (out.lock().expect("collected").iter())
        .map(|b| json!({"batch": b.index, "records": b.records, "partitions": b.partitions}))
        .collect();
    assert_eq!(got, expected);

    // The spec.
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(
        dir.path().join("in.json"),
        json!({"partitions": 2, "streams": streams}).to_string(),
    )
    .expect("write");
    let mut spec = format!(
        "[job]\nbatch_interval = \"1s\"\n[plugins.text]\npath = \"{}\"\n[plugins.wordcount]\npath = \"{}\"\n",
        plugin("text").display(),
        plugin("wordcount").display()
    );
    for s in streams.keys() {
        spec.push_str(&format!(
            "[sources.{s}]\ntype = \"queue\"\npath = \"in.json\"\nstream = \"{s}\"\n[streams.{s}_words]\nfrom = \"{s}\"\nop = \"flat_map\"\nfunction = \"wordcount.split\"\n"
        ));
    }
    spec.push_str("[streams.common]\nfrom = [\"x_words\", \"y_words\", \"z_words\"]\nop = \"transform\"\nfunction = \"text.in_every\"\n[[outputs]]\nstream = \"common\"\ntype = \"jsonl\"\npath = \"out.jsonl\"\n");
    let job = dir.path().join("job.toml");
    std::fs::write(&job, spec).expect("write");
    sluice_tests::run_job(&job);
    assert_matches_golden(
        &read_jsonl(&dir.path().join("out.jsonl")),
        &expected,
        "transform of three streams",
    );
}

/// flat_map_values hands the plugin only the values and keeps each output's
/// key: `(word, "L:" + line)` pairs flat-mapped by `text.words` give
/// `(word, token)` for every token of `"L:" + line`, partitions kept.
#[test]
fn flat_map_values_keeps_keys_and_partitions() {
    let lines = input("join", "left");
    let ssc = sluice_tests::test_context();
    let text = ssc
        .load_plugin("text", plugin("text"))
        .expect("text plugin");
    let f = |name: &str| Func::plugin(&text, name).expect("function");
    let out = ssc
        .queue_stream(lines.clone(), 2)
        .flat_map(f("tag_left"))
        .flat_map_values(f("words"))
        .collect();
    // The same through tiny calls (the per-call input limit splits them).
    let small = ssc
        .queue_stream(lines.clone(), 2)
        .flat_map(f("tag_left"))
        .flat_map_values(f("words").with_input_limit(8))
        .collect();
    ssc.run(None).expect("run");
    for (i, batch_lines) in lines.iter().enumerate() {
        let mut want: Vec<String> = Vec::new();
        for line in batch_lines {
            for w in line.split(' ') {
                for token in format!("L:{line}").split(' ') {
                    want.push(json!([w, token]).to_string());
                }
            }
        }
        want.sort();
        for got in [&out, &small] {
            let got = got.lock().expect("collected");
            assert_eq!(got[i].partitions, 2, "batch {i}: partitions kept");
            let mut records: Vec<String> = got[i].records.iter().map(Value::to_string).collect();
            records.sort();
            assert_eq!(records, want, "batch {i}");
        }
    }
}

/// The lesson's IoT project on a queue: actions per device, malformed lines
/// logged (naming the line) and skipped without failing the batch.
#[test]
fn iot_actions_are_counted_per_device() {
    let dir = tempfile::tempdir().expect("temp dir");
    let job = case_job("iot", dir.path());
    let out = std::process::Command::new(sluice_tests::sluice_bin())
        .arg("run")
        .arg(&job)
        .env("SLUICE_CACHE_DIR", sluice_tests::cache_dir())
        .output()
        .expect("running sluice");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("not a device action") && stderr.contains("fan-2 power dim"),
        "malformed lines are logged:\n{stderr}"
    );
    let logged = stderr
        .lines()
        .find(|l| l.contains("fan-2 power dim"))
        .expect("the log line");
    assert!(
        logged.contains("job=")
            && logged.contains("plugin=\"iot\"")
            && logged.contains("function=")
            && logged.contains("batch="),
        "guest logs are tagged with job, plugin, function and batch: {logged}"
    );
    let expected = read_jsonl(&sluice_tests::root().join("tests/cases/iot/expected.jsonl"));
    assert_matches_golden(&read_jsonl(&dir.path().join("out.jsonl")), &expected, "iot");
}

/// `examples/iot.toml` and `iot_window.toml` as the README runs them: `--feed`
/// serves the example's own device log on the socket, and device counts come
/// out every second.
#[test]
fn the_iot_examples_run_with_their_own_feeder() {
    for example in ["iot.toml", "iot_window.toml"] {
        run_iot_example(example);
    }
}

fn run_iot_example(name: &str) {
    let dir = tempfile::tempdir().expect("temp");
    let job = sluice_tests::example_job(name, dir.path());
    let stdout = run_ok(
        std::process::Command::new(sluice_tests::sluice_bin())
            .arg("run")
            .arg(&job)
            .args(["--feed", "--feed-rate", "200", "--batches", "4"])
            .env("SLUICE_CACHE_DIR", sluice_tests::cache_dir()),
    );
    assert_eq!(stdout.matches("Time: ").count(), 4, "{stdout}");
    let devices = ["thermostat-1", "lamp-kitchen", "lamp-hall", "fan-2"];
    assert!(
        stdout
            .lines()
            .any(|l| devices.iter().any(|d| l.starts_with(&format!("('{d}', ")))),
        "{name}: no device counts printed:\n{stdout}"
    );
}
