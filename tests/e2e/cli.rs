//! The `sluice` command as a user runs it.

use sluice_tests::{plugin, run_ok, sluice_bin};
use std::process::Command;

fn sluice() -> Command {
    let mut c = Command::new(sluice_bin());
    c.env("SLUICE_CACHE_DIR", sluice_tests::cache_dir());
    c
}

#[test]
fn plugin_inspect_lists_functions_and_kinds() {
    let text = run_ok(
        sluice()
            .args(["plugin", "inspect"])
            .arg(plugin("wordcount")),
    );
    for expect in [
        "plugin   wordcount 0.1.0",
        "split            flat-map",
        "pair             map",
        "add              reduce",
    ] {
        assert!(text.contains(expect), "missing `{expect}` in:\n{text}");
    }
}

#[test]
fn a_bad_spec_names_file_line_and_field() {
    let dir = tempfile::tempdir().expect("temp");
    let input = dir.path().join("in.json");
    std::fs::write(&input, r#"[["a b"]]"#).expect("write");
    let job = dir.path().join("job.toml");
    let text = format!(
        "[job]\nbatch_interval = \"1s\"\n\n[plugins.wordcount]\npath = \"{}\"\n\n[sources.lines]\ntype = \"queue\"\npath = \"in.json\"\n\n[streams.words]\nfrom = \"lines\"\nop = \"flat_map\"\nfunction = \"wordcount.splitt\"\n\n[[outputs]]\nstream = \"words\"\ntype = \"pprint\"\n",
        plugin("wordcount").display()
    );
    std::fs::write(&job, text).expect("write");
    let out = sluice().arg("run").arg(&job).output().expect("run");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    let want = format!(
        "{}:14: streams.words.function: plugin `wordcount` has no function `splitt`",
        job.display()
    );
    assert!(err.contains(&want), "expected `{want}` in:\n{err}");
}

/// Runs the spec `text` (as `dir/job.toml`), which must be refused with
/// exit code 1 and `job.toml` + `want` (`:line: field: message`) on stderr.
pub(crate) fn assert_refused(dir: &std::path::Path, text: &str, want: &str) {
    let job = dir.join("job.toml");
    std::fs::write(&job, text).expect("write");
    let out = sluice().arg("run").arg(&job).output().expect("run");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    let want = format!("{}{want}", job.display());
    assert!(err.contains(&want), "expected `{want}` in:\n{err}");
}

/// combine_by_key's three functions are each checked, by field and line.
#[test]
fn combine_by_key_functions_are_checked_by_field_and_line() {
    let dir = tempfile::tempdir().expect("temp");
    std::fs::write(dir.path().join("in.json"), r#"[["a 1"]]"#).expect("write");
    let head = format!(
        "[job]\nbatch_interval = \"1s\"\n[plugins.text]\npath = \"{}\"\n[sources.lines]\ntype = \"queue\"\npath = \"in.json\"\n[streams.avg]\nfrom = \"lines\"\nop = \"combine_by_key\"\ncreate = \"text.start_average\"\n",
        plugin("text").display()
    );
    let tail = "[[outputs]]\nstream = \"avg\"\ntype = \"pprint\"\n";
    let cases = [
        (
            "merge_value = \"text.upper\"\nmerge_combiners = \"text.merge_averages\"\n",
            ":12: streams.avg.merge_value: `text.upper` is a map function, but `combine_by_key` needs a reduce function",
        ),
        (
            "merge_value = \"text.add_to_average\"\n",
            ":8: streams.avg.merge_combiners: `combine_by_key` needs `merge_combiners = \"plugin.function\"`",
        ),
    ];
    for (fields, want) in cases {
        assert_refused(dir.path(), &format!("{head}{fields}{tail}"), want);
    }
}

/// A window that is not a multiple of the batch interval is refused before
/// the first batch, at its spec line.
#[test]
fn window_durations_are_checked_at_their_spec_line() {
    let dir = tempfile::tempdir().expect("temp");
    std::fs::write(dir.path().join("in.json"), r#"[["a"]]"#).expect("write");
    let head = "[job]\nbatch_interval = \"1s\"\n[sources.lines]\ntype = \"queue\"\npath = \"in.json\"\n[streams.recent]\nfrom = \"lines\"\nop = \"window\"\n";
    let tail = "[[outputs]]\nstream = \"recent\"\ntype = \"pprint\"\n";
    for (fields, want) in [
        (
            "window = \"3500ms\"\n",
            ":9: streams.recent.window: the window duration must be a multiple of the slide duration of the parent stream (1000 ms), not 3500ms",
        ),
        (
            "window = \"3s\"\nslide = \"1.5s\"\n",
            ":10: streams.recent.slide: the slide duration must be a multiple of the slide duration of the parent stream (1000 ms), not 1.5s",
        ),
    ] {
        assert_refused(dir.path(), &format!("{head}{fields}{tail}"), want);
    }
}

/// A stream that keeps state across batches (keyed state, an incremental
/// window) needs a checkpoint directory, as in Spark ("The checkpoint
/// directory has not been set"): refused at its `op` line before anything
/// runs; a window reduced anew needs none; `--checkpoint` lets it run.
#[test]
fn state_without_a_checkpoint_directory_is_refused_at_its_line() {
    let dir = tempfile::tempdir().expect("temp");
    std::fs::write(dir.path().join("in.json"), r#"[["a b a"], ["b"]]"#).expect("write");
    let head = format!(
        "[job]\nbatch_interval = \"1s\"\n[plugins.wordcount]\npath = \"{}\"\n[sources.lines]\ntype = \"queue\"\npath = \"in.json\"\n[streams.words]\nfrom = \"lines\"\nop = \"flat_map\"\nfunction = \"wordcount.split\"\n[streams.pairs]\nfrom = \"words\"\nop = \"map\"\nfunction = \"wordcount.pair\"\n[streams.counts]\nfrom = \"pairs\"\n",
        plugin("wordcount").display()
    );
    let tail = "[[outputs]]\nstream = \"counts\"\ntype = \"jsonl\"\npath = \"out.jsonl\"\n";
    let refusal = |op: &str| {
        format!(
            ":18: streams.counts.op: `{op}` keeps state across batches, but the checkpoint directory has not been set: set `checkpoint = \"DIR\"` under [job] or run with --checkpoint DIR"
        )
    };
    for (fields, op) in [
        (
            "op = \"update_state_by_key\"\nfunction = \"wordcount.running_total\"\n",
            "update_state_by_key",
        ),
        (
            "op = \"count_by_window\"\nwindow = \"2s\"\n",
            "count_by_window",
        ),
        (
            "op = \"reduce_by_key_and_window\"\nfunction = \"wordcount.add\"\ninverse = \"wordcount.subtract\"\nwindow = \"2s\"\n",
            "reduce_by_key_and_window",
        ),
    ] {
        let text = format!("{head}{fields}{tail}");
        assert_refused(dir.path(), &text, &refusal(op));
        let job = dir.path().join("job.toml");
        let ckpt = dir.path().join(format!("ckpt-{op}"));
        run_ok(sluice().arg("run").arg(&job).arg("--checkpoint").arg(&ckpt));
        assert!(ckpt.is_dir(), "{op}: checkpointed");
    }
    let anew = "op = \"reduce_by_key_and_window\"\nfunction = \"wordcount.add\"\nwindow = \"2s\"\n";
    let job = dir.path().join("job.toml");
    std::fs::write(&job, format!("{head}{anew}{tail}")).expect("write");
    run_ok(sluice().arg("run").arg(&job));
}

/// map_with_state's timeout is a duration or a number of batches, and
/// `state_snapshots` reads a map_with_state stream: anything else is
/// refused at its spec line.
#[test]
fn map_with_state_fields_are_checked_at_their_spec_line() {
    let dir = tempfile::tempdir().expect("temp");
    std::fs::write(dir.path().join("in.json"), r#"[["a"]]"#).expect("write");
    let head = format!(
        "[job]\nbatch_interval = \"1s\"\ncheckpoint = \"ckpt\"\n[plugins.wordcount]\npath = \"{}\"\n[sources.lines]\ntype = \"queue\"\npath = \"in.json\"\n[streams.pairs]\nfrom = \"lines\"\nop = \"map\"\nfunction = \"wordcount.pair\"\n",
        plugin("wordcount").display()
    );
    let running = "[streams.running]\nfrom = \"pairs\"\nop = \"map_with_state\"\nfunction = \"wordcount.running_count\"\n";
    let tail = "[[outputs]]\nstream = \"snap\"\ntype = \"pprint\"\n";
    for (fields, want) in [
        (
            format!(
                "{running}timeout = \"soon\"\n[streams.snap]\nfrom = \"running\"\nop = \"state_snapshots\"\n"
            ),
            ":17: streams.running.timeout: `soon` is not a duration (e.g. `1s`, `500ms`)",
        ),
        (
            format!(
                "{running}timeout = -1\n[streams.snap]\nfrom = \"running\"\nop = \"state_snapshots\"\n"
            ),
            ":17: streams.running.timeout: must be a duration (e.g. \"30s\") or a number of batches",
        ),
        (
            "[streams.snap]\nfrom = \"pairs\"\nop = \"state_snapshots\"\n".to_string(),
            ":14: streams.snap.from: state_snapshots reads a map_with_state stream; `pairs` is not one",
        ),
    ] {
        assert_refused(dir.path(), &format!("{head}{fields}{tail}"), want);
    }
}

/// `pprint` as Spark prints it: the header, then each record as Python's
/// `print` writes it (PySpark's `pprint` calls `print(record)`): words as
/// their text, not their repr.
#[test]
fn pprint_prints_spark_format() {
    let dir = tempfile::tempdir().expect("temp");
    std::fs::write(
        dir.path().join("in.json"),
        r#"[["b a b", "c d e f g h i j k l m"], []]"#,
    )
    .expect("write");
    let job = dir.path().join("job.toml");
    std::fs::write(
        &job,
        format!(
            "[job]\nbatch_interval = \"1s\"\nworkers = 1\n[plugins.wordcount]\npath = \"{}\"\n[sources.lines]\ntype = \"queue\"\npath = \"in.json\"\npartitions = 1\n[streams.words]\nfrom = \"lines\"\nop = \"flat_map\"\nfunction = \"wordcount.split\"\n[[outputs]]\nstream = \"words\"\ntype = \"pprint\"\n",
            plugin("wordcount").display()
        ),
    )
    .expect("write");
    let stdout = run_ok(sluice().arg("run").arg(&job).env("TZ", "UTC"));
    let dashes = "-".repeat(43);
    let want = format!(
        "{dashes}\nTime: 1970-01-01 00:00:01\n{dashes}\nb\na\nb\nc\nd\ne\nf\ng\nh\ni\n...\n\n{dashes}\nTime: 1970-01-01 00:00:02\n{dashes}\n\n"
    );
    assert_eq!(stdout, want);
}

/// The README's demo: the example word count, fed by `--feed`, for a few batches.
#[test]
fn the_wordcount_example_runs_with_its_own_feeder() {
    let dir = tempfile::tempdir().expect("temp");
    let job = sluice_tests::example_job("wordcount.toml", dir.path());
    let stdout = run_ok(sluice().arg("run").arg(&job).args([
        "--feed",
        "--feed-rate",
        "200",
        "--batches",
        "4",
    ]));
    assert_eq!(stdout.matches("Time: ").count(), 4, "{stdout}");
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("('") && l.ends_with(')')),
        "no counts printed:\n{stdout}"
    );
}

/// A generator source gives `rate × interval` lines per batch, reproducibly.
#[test]
fn a_generator_job_counts_its_rate() {
    let dir = tempfile::tempdir().expect("temp");
    let job = dir.path().join("gen.toml");
    std::fs::write(
        &job,
        "[job]\nbatch_interval = \"500ms\"\nclock = \"manual\"\n\n[sources.lines]\ntype = \"generator\"\nrate = 100\nwords_per_line = 4\nseed = 9\n\n[streams.n]\nfrom = \"lines\"\nop = \"count\"\n\n[[outputs]]\nstream = \"n\"\ntype = \"jsonl\"\npath = \"out.jsonl\"\n",
    )
    .expect("write");
    run_ok(sluice().arg("run").arg(&job).args(["--batches", "3"]));
    let out = sluice_tests::read_jsonl(&dir.path().join("out.jsonl"));
    let counts: Vec<&serde_json::Value> = out.iter().map(|b| &b["records"][0]).collect();
    assert_eq!(counts, vec![&serde_json::json!(50); 3]);
}

/// `text_files` source through the CLI on the system clock: files moved in
/// while the job runs are each read once; a file present at start, a nested
/// folder and a hidden temporary file are not.
#[test]
fn a_watched_directory_reads_each_new_file_once_across_restarts() {
    let dir = tempfile::tempdir().expect("temp");
    let inbox = dir.path().join("inbox");
    std::fs::create_dir(&inbox).expect("inbox");
    std::fs::write(inbox.join("old.txt"), "old old old\n").expect("old file");
    let job = dir.path().join("files.toml");
    std::fs::write(
        &job,
        format!(
            "[job]\nbatch_interval = \"200ms\"\n[plugins.wordcount]\npath = \"{}\"\n[sources.files]\ntype = \"text_files\"\npath = \"inbox\"\n[streams.words]\nfrom = \"files\"\nop = \"flat_map\"\nfunction = \"wordcount.split\"\n[streams.counts]\nfrom = \"words\"\nop = \"count_by_value\"\n[[outputs]]\nstream = \"counts\"\ntype = \"jsonl\"\npath = \"out.jsonl\"\n",
            plugin("wordcount").display()
        ),
    )
    .expect("write");
    let out = dir.path().join("out.jsonl");
    let mut child = sluice()
        .arg("run")
        .arg(&job)
        .args(["--batches", "20"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    // Wait for the first batch, so the job has taken its snapshot of the inbox.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !out.exists() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(out.exists(), "the job produced no batch");
    for (name, text) in [
        ("a.txt", "apple banana\napple\n"),
        ("b.txt", "banana cherry\n"),
    ] {
        let tmp = inbox.join(format!(".{name}.tmp"));
        std::fs::write(&tmp, text).expect("write");
        std::fs::rename(&tmp, inbox.join(name)).expect("rename");
    }
    std::fs::create_dir(inbox.join("nested")).expect("nested");
    std::fs::write(inbox.join("nested").join("c.txt"), "nested\n").expect("nested file");
    std::fs::write(inbox.join(".partial"), "hidden\n").expect("hidden file");
    let status = child.wait().expect("wait");
    let mut stderr = String::new();
    use std::io::Read;
    child
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut stderr)
        .expect("stderr");
    assert!(status.success(), "{stderr}");
    let mut totals = std::collections::BTreeMap::new();
    for batch in sluice_tests::read_jsonl(&out) {
        for r in batch["records"].as_array().expect("records") {
            *totals
                .entry(r[0].as_str().expect("word").to_string())
                .or_insert(0) += r[1].as_i64().expect("count");
        }
    }
    let want: std::collections::BTreeMap<String, i64> =
        [("apple", 2), ("banana", 2), ("cherry", 1)]
            .into_iter()
            .map(|(w, n)| (w.to_string(), n))
            .collect();
    assert_eq!(totals, want);

    // Restart: a file that arrived while the job was down is read; nothing
    // read (or ignored) before is read again (the ledger in the inbox).
    std::fs::write(inbox.join("d.txt"), "date date\n").expect("d.txt");
    run_ok(sluice().arg("run").arg(&job).args(["--batches", "3"]));
    let mut totals = std::collections::BTreeMap::new();
    for batch in sluice_tests::read_jsonl(&out) {
        for r in batch["records"].as_array().expect("records") {
            *totals
                .entry(r[0].as_str().expect("word").to_string())
                .or_insert(0) += r[1].as_i64().expect("count");
        }
    }
    assert_eq!(totals, [("date".to_string(), 2)].into_iter().collect());
    assert!(
        inbox.join(".sluice-files-files.read").exists(),
        "the ledger, named after the job (the spec file) and the source"
    );
}

/// `object_files` output and `sluice cat`: the word counts come back typed.
#[test]
fn object_files_read_back_with_cat() {
    let dir = tempfile::tempdir().expect("temp");
    std::fs::write(dir.path().join("in.json"), r#"[["b a b"], []]"#).expect("write");
    let job = dir.path().join("job.toml");
    std::fs::write(
        &job,
        format!(
            "[job]\nbatch_interval = \"1s\"\n[plugins.wordcount]\npath = \"{}\"\n[sources.lines]\ntype = \"queue\"\npath = \"in.json\"\n[streams.words]\nfrom = \"lines\"\nop = \"flat_map\"\nfunction = \"wordcount.split\"\n[streams.pairs]\nfrom = \"words\"\nop = \"map\"\nfunction = \"wordcount.pair\"\n[streams.counts]\nfrom = \"pairs\"\nop = \"reduce_by_key\"\nfunction = \"wordcount.add\"\n[[outputs]]\nstream = \"counts\"\ntype = \"object_files\"\nprefix = \"out/counts\"\n",
            plugin("wordcount").display()
        ),
    )
    .expect("write");
    sluice_tests::run_job(&job);
    let first = dir.path().join("out").join("counts-1000");
    let text = run_ok(sluice().arg("cat").arg(&first));
    let mut lines: Vec<&str> = text.lines().collect();
    lines.sort_unstable();
    assert_eq!(lines, [r#"["a",1]"#, r#"["b",2]"#]);
    let empty = run_ok(
        sluice()
            .arg("cat")
            .arg(dir.path().join("out").join("counts-2000")),
    );
    assert!(
        empty.is_empty(),
        "the empty batch has a committed, empty directory"
    );
    // A damaged file is named, not misread.
    let part = std::fs::read_dir(&first)
        .expect("dir")
        .map(|e| e.expect("entry").path())
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("part-"))
                && std::fs::metadata(p).map(|m| m.len() > 29).unwrap_or(false)
        })
        .expect("a non-empty part");
    let mut bytes = std::fs::read(&part).expect("read");
    bytes[10] ^= 0xff;
    std::fs::write(&part, bytes).expect("write");
    let out = sluice().arg("cat").arg(&first).output().expect("run");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&part.display().to_string()), "{err}");
}

/// `sluice plugin check` validates a component and lists its functions;
/// `sluice plugin test` runs one function on sample input.
#[test]
fn plugin_check_and_test() {
    let wc = plugin("wordcount");
    let checked = run_ok(sluice().args(["plugin", "check"]).arg(&wc));
    assert!(checked.contains("ok — wordcount 0.1.0"), "{checked}");
    assert!(
        checked.contains("split") && checked.contains("flat-map"),
        "{checked}"
    );
    let dir = tempfile::tempdir().expect("temp");
    let junk = dir.path().join("junk.wasm");
    std::fs::write(&junk, "not wasm").expect("write");
    let out = sluice()
        .args(["plugin", "check"])
        .arg(&junk)
        .output()
        .expect("run");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("junk.wasm") && stderr.contains("not a WebAssembly file"),
        "{stderr}"
    );

    let split =
        run_ok(
            sluice()
                .args(["plugin", "test"])
                .arg(&wc)
                .args(["split", "the quick fox", "a  b"]),
        );
    assert_eq!(split, "\"the\"\n\"quick\"\n\"fox\"\n\"a\"\n\"\"\n\"b\"\n");
    let sum = run_ok(
        sluice()
            .args(["plugin", "test", "--json"])
            .arg(&wc)
            .args(["add", "1", "2", "39"]),
    );
    assert_eq!(sum, "42\n");
    let out = sluice()
        .args(["plugin", "test"])
        .arg(&wc)
        .args(["running_total", "x"])
        .output()
        .expect("run");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("update-state function"));
}

/// Scaffolds plugin `name` in `lang` in `dir`, runs its own unit test
/// (`unit`, in the project), builds it (with `env`), checks what the build
/// printed, and tries its `split`; returns the component's path.
fn scaffold(
    dir: &std::path::Path,
    lang: &str,
    name: &str,
    unit: &mut Command,
    env: (&str, std::path::PathBuf),
) -> String {
    let (wasm, built) = scaffold_kind(dir, (lang, "operator"), name, unit, env);
    assert!(built.contains("3 functions"), "{built}");
    let words = run_ok(sluice().args(["plugin", "test", &wasm, "split", " a b"]));
    assert_eq!(words, "\"a\"\n\"b\"\n");
    wasm
}

/// Scaffolds plugin `name` of `kind` in `lang` in `dir`, runs its own unit
/// test (`unit`, in the project) and builds it (with `env`); returns the
/// component's path and what the build printed.
pub(crate) fn scaffold_kind(
    dir: &std::path::Path,
    (lang, kind): (&str, &str),
    name: &str,
    unit: &mut Command,
    env: (&str, std::path::PathBuf),
) -> (String, String) {
    let made = run_ok(
        sluice()
            .current_dir(dir)
            .args(["plugin", "new", "--lang", lang, "--kind", kind, name]),
    );
    assert!(made.contains(&format!("created {name}/")), "{made}");
    let project = dir.join(name);
    // Its own unit test passes out of the box.
    run_ok(unit.current_dir(&project).env(env.0, &env.1));
    let built = run_ok(
        sluice()
            .args(["plugin", "build"])
            .arg(&project)
            .env(env.0, &env.1),
    );
    let wasm = built
        .lines()
        .last()
        .expect("the component's path")
        .to_string();
    assert!(wasm.ends_with(&format!("{name}.wasm")), "{built}");
    (wasm, built)
}

/// Runs the word count of the scaffolded plugin `name` (at `wasm`) on two
/// batches.
fn run_scaffolded(dir: &std::path::Path, name: &str, wasm: &str) {
    std::fs::write(dir.join("in.json"), r#"[["a b a"], ["b"]]"#).expect("input");
    std::fs::write(
        dir.join("job.toml"),
        format!(
            "[job]\nbatch_interval = \"1s\"\n[plugins.{name}]\npath = {wasm:?}\n[sources.lines]\ntype = \"queue\"\npath = \"in.json\"\n[streams.words]\nfrom = \"lines\"\nop = \"flat_map\"\nfunction = \"{name}.split\"\n[streams.pairs]\nfrom = \"words\"\nop = \"map\"\nfunction = \"{name}.pair\"\n[streams.counts]\nfrom = \"pairs\"\nop = \"reduce_by_key\"\nfunction = \"{name}.add\"\n[[outputs]]\nstream = \"counts\"\ntype = \"jsonl\"\npath = \"out.jsonl\"\n"
        ),
    )
    .expect("job");
    run_ok(sluice().arg("run").arg(dir.join("job.toml")));
    let out = sluice_tests::read_jsonl(&dir.join("out.jsonl"));
    assert_eq!(out[0]["records"], serde_json::json!([["a", 2], ["b", 1]]));
    assert_eq!(out[1]["records"], serde_json::json!([["b", 1]]));
}

/// `sluice plugin new` scaffolds a Rust plugin that passes its own test,
/// `plugin build` makes a component of it, and a job spec uses its functions.
#[test]
fn a_scaffolded_plugin_builds_tests_and_runs_in_a_job() {
    let dir = tempfile::tempdir().expect("temp");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
    let target = (
        "CARGO_TARGET_DIR",
        sluice_tests::root().join("target").join("scaffold"),
    );
    let wasm = scaffold(
        dir.path(),
        "rust",
        "myop",
        Command::new(&cargo).args(["test", "--quiet"]),
        target,
    );
    run_scaffolded(dir.path(), "myop", &wasm);
    let e = sluice()
        .current_dir(dir.path())
        .args(["plugin", "new", "--lang", "cobol", "x"])
        .output()
        .expect("run");
    assert!(!e.status.success());
}

#[test]
fn a_scaffolded_python_plugin_tests_builds_and_runs_in_a_job() {
    let dir = tempfile::tempdir().expect("temp");
    let wasm = scaffold(
        dir.path(),
        "python",
        "pyop",
        Command::new("python3").args(["-B", "-m", "unittest", "-q"]),
        ("SLUICE_CACHE_DIR", sluice_tests::cache_dir()),
    );
    assert!(wasm.ends_with("build/pyop.wasm"), "{wasm}");
    run_scaffolded(dir.path(), "pyop", &wasm);
}

#[test]
fn a_scaffolded_javascript_plugin_tests_builds_and_runs_in_a_job() {
    let dir = tempfile::tempdir().expect("temp");
    let wasm = scaffold(
        dir.path(),
        "js",
        "jsop",
        Command::new("node").arg("--test"),
        (
            "SLUICE_JS_TOOLS",
            sluice_tests::root().join("target/js-tools"),
        ),
    );
    assert!(wasm.ends_with("build/jsop.wasm"), "{wasm}");
    let sum = run_ok(sluice().args(["plugin", "test", "--json", &wasm, "add", "2", "3", "4"]));
    assert_eq!(sum.trim(), "9");
    run_scaffolded(dir.path(), "jsop", &wasm);
}

#[test]
fn a_scaffolded_c_plugin_tests_builds_and_runs_in_a_job() {
    let dir = tempfile::tempdir().expect("temp");
    let wasm = scaffold(
        dir.path(),
        "c",
        "cop",
        Command::new("make").arg("test"),
        ("SLUICE_CACHE_DIR", sluice_tests::cache_dir()),
    );
    assert!(wasm.ends_with("build/cop.wasm"), "{wasm}");
    let sum = run_ok(sluice().args(["plugin", "test", "--json", &wasm, "add", "2", "3", "4"]));
    assert_eq!(sum.trim(), "9");
    run_scaffolded(dir.path(), "cop", &wasm);
    // A compile error names the file and line (clang's own message).
    let code = dir.path().join("cop").join("cop.c");
    let text = std::fs::read_to_string(&code).expect("source");
    std::fs::write(&code, text.replace("return SLUICE_OK;", "return SLUICE_OK")).expect("break it");
    let out = sluice()
        .args(["plugin", "build"])
        .arg(dir.path().join("cop"))
        .output()
        .expect("run");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("cop.c:") && stderr.contains("clang failed building"),
        "{stderr}"
    );
}

/// `--confine` treats a spec as untrusted (a tenant's): every path it names
/// must stay in its directory — `..`, absolute paths and symlinks out are
/// refused naming the line and field — and sockets need a grant.
#[test]
fn a_confined_spec_cannot_reach_outside_its_directory() {
    let dir = tempfile::tempdir().expect("temp");
    let job_dir = dir.path().join("tenant");
    std::fs::create_dir_all(&job_dir).expect("job dir");
    std::fs::copy(plugin("wordcount"), job_dir.join("wordcount.wasm")).expect("plugin");
    std::fs::write(job_dir.join("in.json"), r#"[["a b a"]]"#).expect("input");
    std::fs::write(dir.path().join("secret.json"), r#"[["secret"]]"#).expect("secret");
    std::os::unix::fs::symlink(dir.path(), job_dir.join("escape")).expect("symlink");
    let spec = |source: &str, output: &str| {
        format!(
            "[job]\nbatch_interval = \"1s\"\n[plugins.wordcount]\npath = \"wordcount.wasm\"\n[sources.lines]\n{source}\n[streams.words]\nfrom = \"lines\"\nop = \"flat_map\"\nfunction = \"wordcount.split\"\n[[outputs]]\nstream = \"words\"\ntype = \"jsonl\"\npath = \"{output}\"\n"
        )
    };
    let run = |text: String| {
        let job = job_dir.join("job.toml");
        std::fs::write(&job, text).expect("spec");
        sluice()
            .args(["run", "--confine", "--grant-socket", "127.0.0.1:1"])
            .arg(&job)
            .output()
            .expect("run")
    };
    // Inside: runs.
    let ok = run(spec(
        "type = \"queue\"\npath = \"in.json\"",
        "out/words.jsonl",
    ));
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert!(job_dir.join("out/words.jsonl").exists());
    for (source, output, field, why) in [
        (
            "type = \"queue\"\npath = \"../secret.json\"",
            "o.jsonl",
            "sources.lines.path",
            "`..`",
        ),
        (
            &format!(
                "type = \"queue\"\npath = {:?}",
                dir.path().join("secret.json").display().to_string()
            ),
            "o.jsonl",
            "sources.lines.path",
            "absolute",
        ),
        (
            "type = \"queue\"\npath = \"escape/secret.json\"",
            "o.jsonl",
            "sources.lines.path",
            "leads out",
        ),
        (
            "type = \"queue\"\npath = \"in.json\"",
            "../stolen.jsonl",
            "outputs[0].path",
            "`..`",
        ),
        (
            "type = \"queue\"\npath = \"in.json\"",
            "escape/stolen.jsonl",
            "outputs[0].path",
            "leads out",
        ),
        (
            "type = \"socket\"\nport = 22",
            "o.jsonl",
            "sources.lines.port",
            "127.0.0.1:22 is not granted",
        ),
    ] {
        let out = run(spec(source, output));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{source} / {output} must be refused");
        assert!(
            stderr.contains("job.toml:") && stderr.contains(field) && stderr.contains(why),
            "{source} / {output}: {stderr}"
        );
    }
    assert!(!dir.path().join("stolen.jsonl").exists());
    // A plugin's granted directory and endpoints are confined the same way.
    let ok_source = "type = \"queue\"\npath = \"in.json\"";
    for (grant, field, why) in [
        ("dir = \"../outside\"", "plugins.wordcount.dir", "`..`"),
        ("dir = \"escape/x\"", "plugins.wordcount.dir", "leads out"),
        (
            "connect = [\"127.0.0.1:7070\"]",
            "plugins.wordcount.connect",
            "127.0.0.1:7070 is not granted",
        ),
    ] {
        let text = spec(ok_source, "o.jsonl").replace(
            "path = \"wordcount.wasm\"\n",
            &format!("path = \"wordcount.wasm\"\n{grant}\n"),
        );
        let out = run(text);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{grant} must be refused");
        assert!(
            stderr.contains(field) && stderr.contains(why),
            "{grant}: {stderr}"
        );
    }
    assert!(!dir.path().join("outside").exists());
}

#[test]
fn explain_cuts_the_word_count_into_two_stages_at_its_shuffle() {
    let dir = tempfile::tempdir().expect("temp");
    let job = sluice_tests::example_job("wordcount.toml", dir.path());
    let text = run_ok(sluice().arg("explain").arg(&job).args(["--workers", "3"]));
    assert!(text.contains("2 stages"), "{text}");
    // Stage 0 reads the socket into one partition per worker and runs the
    // narrow split and pair; the key shuffle starts stage 1.
    let (first, second) = text.split_once("stage 1:").expect("a stage 1");
    assert!(first.contains("stage 0: 3 tasks"), "{text}");
    for stream in ["`lines`", "`words`", "`pairs`"] {
        assert!(first.contains(stream), "{stream} in stage 0:\n{text}");
    }
    assert!(second.starts_with(" 2 tasks"), "{text}");
    assert!(second.contains("hash of the key into 2"), "{text}");
    // The map side combines each partition's pairs before the shuffle, and
    // the Rust plugin runs split and pair in one call.
    assert!(
        second.contains("combined by key in stage 0's tasks first"),
        "{text}"
    );
    assert!(first.contains("one plugin call with [1]"), "{text}");
    assert!(second.contains("`counts`"), "{text}");
    assert!(second.contains("output 0: pprint 10 of [3]"), "{text}");
    assert!(!text.contains("stage 2"), "{text}");

    let dot = run_ok(sluice().arg("explain").arg(&job).args(["--format", "dot"]));
    assert_eq!(dot.matches("subgraph cluster_stage").count(), 2, "{dot}");
    assert!(dot.contains("s2 -> s3 [style=dashed"), "{dot}");

    let out = sluice()
        .arg("explain")
        .arg(&job)
        .args(["--format", "svg"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2), "an unknown format is refused");
    assert!(String::from_utf8_lossy(&out.stderr).contains("svg"));
}
