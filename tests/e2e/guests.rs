//! Plugins written in Python (`guest-sdk/python`, built with
//! componentize-py) and JavaScript (`guest-sdk/js`, built with rolldown and
//! ComponentizeJS) by the tests' build script, and in C (`guest-sdk/c`,
//! built by `sluice plugin build`): their word counts run Spark's golden
//! cases to the same outputs as the Rust one, their IoT parsers the IoT
//! cases, and one job takes its split from Rust, its pair from Python and
//! its add from JavaScript.

use sluice_tests::{assert_matches_golden, c_plugin, plugin, read_jsonl, reference};
use std::path::{Path, PathBuf};

/// The golden output of a case (the Scala API's where it differs).
fn golden(case: &str) -> Vec<serde_json::Value> {
    let scala = reference()
        .join("golden-scala")
        .join(format!("{case}.jsonl"));
    if scala.exists() {
        read_jsonl(&scala)
    } else {
        read_jsonl(&reference().join("golden").join(format!("{case}.jsonl")))
    }
}

/// Runs a case's job after `edit`ing its spec; returns its output.
fn run_edited(case: &str, dir: &Path, edit: impl Fn(String) -> String) -> Vec<serde_json::Value> {
    let job = sluice_tests::case_job(case, dir);
    let text = std::fs::read_to_string(&job).expect("job");
    std::fs::write(&job, edit(text)).expect("write job");
    sluice_tests::run_job(&job);
    read_jsonl(&dir.join("out.jsonl"))
}

const WORD_COUNT_CASES: [&str; 10] = [
    "flatMap",
    "reduceByKey",
    "count",
    "countByValue",
    "union",
    "window_3_1",
    "countByWindow_5_1",
    "reduceByKeyAndWindow_inv_3_1",
    "reduceByKeyAndWindow_inv_5_1",
    "updateStateByKey",
];

/// The word count plugin of a language: `rust`, `py`, `js`, `c`.
fn wordcount(lang: &str) -> PathBuf {
    match lang {
        "rust" => plugin("wordcount"),
        "c" => c_plugin("wordcount"),
        other => plugin(&format!("wordcount_{other}")),
    }
}

/// The golden cases of the word count with the `wordcount` plugin of
/// another language (`lang`: `py`, `js`, `c`).
fn word_count_matches_spark(lang: &str) {
    let other = wordcount(lang).display().to_string();
    let rust = plugin("wordcount").display().to_string();
    for case in WORD_COUNT_CASES {
        let dir = tempfile::tempdir().expect("temp");
        let got = run_edited(case, dir.path(), |t| t.replace(&rust, &other));
        assert_matches_golden(
            &got,
            &golden(case),
            &format!("{case} (wordcount in {lang})"),
        );
    }
}

#[test]
fn the_python_word_count_matches_spark() {
    word_count_matches_spark("py");
}

#[test]
fn the_javascript_word_count_matches_spark() {
    word_count_matches_spark("js");
}

#[test]
fn the_c_word_count_matches_spark() {
    word_count_matches_spark("c");
}

#[test]
fn one_job_mixes_c_javascript_and_python_functions() {
    // split from the C plugin, pair from the JavaScript one, add from the
    // Python one.
    let c = wordcount("c").display().to_string();
    let py = wordcount("py").display().to_string();
    let js = wordcount("js").display().to_string();
    let dir = tempfile::tempdir().expect("temp");
    let got = run_edited("reduceByKey", dir.path(), |t| {
        t.replace(
            "[sources.lines]",
            &format!(
                "[plugins.c]\npath = {c:?}\n\n[plugins.py]\npath = {py:?}\n\n[plugins.js]\npath = {js:?}\n\n[sources.lines]"
            ),
        )
        .replace("\"wordcount.split\"", "\"c.split\"")
        .replace("\"wordcount.pair\"", "\"js.pair\"")
        .replace("\"wordcount.add\"", "\"py.add\"")
    });
    assert_matches_golden(
        &got,
        &golden("reduceByKey"),
        "C split, JavaScript pair, Python add",
    );
}

#[test]
fn a_bug_in_a_c_function_names_it_and_the_plugin_keeps_working() {
    let faulty = c_plugin("faulty");
    let test = |function: &str| {
        let out = std::process::Command::new(sluice_tests::sluice_bin())
            .args(["plugin", "test", "--json"])
            .arg(&faulty)
            .args([function, "1"])
            .env("SLUICE_CACHE_DIR", sluice_tests::cache_dir())
            .output()
            .expect("run");
        assert!(!out.status.success(), "{function} fails");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let twice = test("twice");
    assert!(
        twice.contains("function `twice`")
            && twice.contains("`twice` put 2 values for element 0 (a map puts exactly one)"),
        "{twice}"
    );
    // The sandbox's memory cap holds for C: malloc returns NULL, the
    // plugin says so and traps.
    let hog = test("hog");
    assert!(
        hog.contains("function `hog`") && hog.contains("out of memory after"),
        "{hog}"
    );
    let crash = test("crash");
    assert!(crash.contains("function `crash`"), "{crash}");
    // A refusal names the element.
    let out = std::process::Command::new(sluice_tests::sluice_bin())
        .args(["plugin", "test", "--json"])
        .arg(wordcount("c"))
        .args(["add", "1", "\"x\""])
        .env("SLUICE_CACHE_DIR", sluice_tests::cache_dir())
        .output()
        .expect("run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success()
            && stderr.contains(
                "refused element 1 (invalid-input): expected two counts, got int and str"
            ),
        "{stderr}"
    );
}

#[test]
fn one_job_mixes_rust_python_and_javascript_functions() {
    // split from the Rust plugin, pair from the Python one, add from the
    // JavaScript one.
    let py = plugin("wordcount_py").display().to_string();
    let js = plugin("wordcount_js").display().to_string();
    let dir = tempfile::tempdir().expect("temp");
    let got = run_edited("reduceByKey", dir.path(), |t| {
        t.replace(
            "[sources.lines]",
            &format!(
                "[plugins.py]\npath = {py:?}\n\n[plugins.js]\npath = {js:?}\n\n[sources.lines]"
            ),
        )
        .replace("\"wordcount.pair\"", "\"py.pair\"")
        .replace("\"wordcount.add\"", "\"js.add\"")
    });
    assert_matches_golden(
        &got,
        &golden("reduceByKey"),
        "Rust split, Python pair, JavaScript add",
    );
}

#[test]
fn python_refusals_and_bugs_are_reported_by_element_and_function() {
    let dir = tempfile::tempdir().expect("temp");
    // `positive` indexes its input: a plain word (not a pair) makes it
    // raise, a bug: the host names plugin, function and the Python error.
    let job = sluice_tests::case_job("flatMap", dir.path());
    let text = std::fs::read_to_string(&job)
        .expect("job")
        .replace(
            &plugin("wordcount").display().to_string(),
            &plugin("wordcount_py").display().to_string(),
        )
        .replace(
            "[[outputs]]",
            "[streams.kept]\nfrom = \"words\"\nop = \"filter\"\nfunction = \"wordcount.positive\"\n\n[[outputs]]",
        )
        .replace("stream = \"words\"", "stream = \"kept\"");
    std::fs::write(&job, text).expect("write");
    let out = std::process::Command::new(sluice_tests::sluice_bin())
        .arg("run")
        .arg(&job)
        .env("SLUICE_CACHE_DIR", sluice_tests::cache_dir())
        .output()
        .expect("run");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("positive")
            && stderr.contains("wordcount")
            && (stderr.contains("TypeError") || stderr.contains("IndexError")),
        "{stderr}"
    );
}

#[test]
fn the_python_and_javascript_iot_plugins_count_devices_and_log_malformed_lines() {
    let rust = plugin("iot").display().to_string();
    for (case, suffix) in [
        ("iot", "py"),
        ("iot_window", "py"),
        ("iot", "js"),
        ("iot_window", "js"),
    ] {
        let py = plugin(&format!("iot_{suffix}")).display().to_string();
        let dir = tempfile::tempdir().expect("temp");
        let job = sluice_tests::case_job(case, dir.path());
        let text = std::fs::read_to_string(&job)
            .expect("job")
            .replace(&rust, &py);
        std::fs::write(&job, text).expect("write");
        let out = std::process::Command::new(sluice_tests::sluice_bin())
            .arg("run")
            .arg(&job)
            .env("SLUICE_CACHE_DIR", sluice_tests::cache_dir())
            .output()
            .expect("run");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{stderr}");
        let logged = stderr
            .lines()
            .find(|l| l.contains("not a device action") && l.contains("fan-2 power dim"))
            .unwrap_or_else(|| panic!("malformed lines are logged:\n{stderr}"));
        assert!(
            logged.contains("plugin=\"iot\"") && logged.contains("batch="),
            "{logged}"
        );
        let expected = read_jsonl(
            &sluice_tests::root()
                .join("tests/cases")
                .join(case)
                .join("expected.jsonl"),
        );
        assert_matches_golden(&read_jsonl(&dir.path().join("out.jsonl")), &expected, case);
    }
}

#[test]
fn a_bug_in_a_javascript_or_python_function_names_it_and_its_error() {
    for (suffix, want) in [
        ("js", "TypeError: line.split is not a function"),
        (
            "py",
            "AttributeError: 'int' object has no attribute 'split' (wordcount.py:",
        ),
    ] {
        let wasm = plugin(&format!("wordcount_{suffix}"));
        let out = std::process::Command::new(sluice_tests::sluice_bin())
            .args(["plugin", "test", "--json"])
            .arg(&wasm)
            .args(["split", "5"])
            .env("SLUICE_CACHE_DIR", sluice_tests::cache_dir())
            .output()
            .expect("run");
        assert!(!out.status.success());
        let stderr = String::from_utf8_lossy(&out.stderr);
        let last = stderr.lines().last().unwrap_or_default();
        assert!(
            last.contains("function `split`") && last.contains(want),
            "{suffix}: {last}"
        );
    }
}

#[test]
fn the_guest_sdks_own_unit_tests_pass() {
    let root = sluice_tests::root();
    sluice_tests::run_ok(
        std::process::Command::new("node")
            .arg("--test")
            .arg(root.join("guest-sdk/js")),
    );
    sluice_tests::run_ok(
        std::process::Command::new("python3")
            .args(["-B", "-m", "unittest", "-q", "test_sluice"])
            .current_dir(root.join("guest-sdk/python")),
    );
    // The C SDK's, natively (under AddressSanitizer where gcc has it).
    let dir = tempfile::tempdir().expect("temp");
    let exe = dir.path().join("test_sluice");
    let c = root.join("guest-sdk/c");
    sluice_tests::run_ok(
        std::process::Command::new("cc")
            .args([
                "-std=c11",
                "-Wall",
                "-Wextra",
                "-Werror",
                "-g",
                "-fsanitize=address,undefined",
                "-o",
            ])
            .arg(&exe)
            .arg(c.join("test_sluice.c"))
            .arg(c.join("sluice.c")),
    );
    let out = sluice_tests::run_ok(&mut std::process::Command::new(&exe));
    assert!(out.contains("ok: sluice-sdk-c"), "{out}");
}

#[test]
fn map_with_state_and_windows_give_the_same_outputs_in_every_language() {
    // windowOps (no Spark reference): the Rust word count's outputs are the
    // reference for the Python and JavaScript ones.
    let run = |lang: &str| {
        let dir = tempfile::tempdir().expect("temp");
        let job = sluice_tests::case_job("windowOps", dir.path());
        let rust = plugin("wordcount").display().to_string();
        let other = wordcount(lang).display().to_string();
        let text = std::fs::read_to_string(&job)
            .expect("job")
            .replace(&rust, &other);
        std::fs::write(&job, text).expect("write");
        sluice_tests::run_job(&job);
        ["by_value", "total_length", "running"]
            .map(|o| read_jsonl(&dir.path().join(format!("{o}.jsonl"))))
    };
    let reference = run("rust");
    assert!(
        reference[2]
            .iter()
            .any(|b| b["records"].to_string().contains("true")),
        "some word times out"
    );
    for lang in ["py", "js", "c"] {
        let got = run(lang);
        for (o, name) in ["by_value", "total_length", "running"].iter().enumerate() {
            assert_matches_golden(
                &got[o],
                &reference[o],
                &format!("windowOps {name} (wordcount in {lang})"),
            );
        }
    }
}

/// The receiver examples' own unit tests, natively: the Redis Streams
/// receiver's reply parser and settings, and the line receivers (Rust and
/// Python) against a line server of their tests' own.
#[test]
fn the_receiver_examples_own_unit_tests_pass() {
    let root = sluice_tests::root();
    sluice_tests::run_ok(
        std::process::Command::new(option_env!("CARGO").unwrap_or("cargo"))
            .args(["test", "-q", "-p", "redis_streams", "-p", "lines"])
            .arg("--manifest-path")
            .arg(root.join("plugins/Cargo.toml"))
            .env("CARGO_TARGET_DIR", root.join("target/plugins-native"))
            .env_remove("RUSTFLAGS")
            .env_remove("CARGO_ENCODED_RUSTFLAGS"),
    );
    sluice_tests::run_ok(
        std::process::Command::new("python3")
            .args(["-B", "-m", "unittest", "-q", "test_lines"])
            .current_dir(root.join("plugins/python/lines"))
            .env("PYTHONPATH", root.join("guest-sdk/python")),
    );
}
