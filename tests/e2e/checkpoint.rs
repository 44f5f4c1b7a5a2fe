//! Checkpoints through the CLI: a stateful job stopped after some batches
//! resumes where it stopped with its state; damaged checkpoints fall back;
//! a checkpoint of another graph is refused; `--fresh` starts over.

use sluice_tests::{assert_matches_golden, case_job, read_jsonl, reference, run_ok, sluice_bin};
use std::path::Path;
use std::process::Command;

fn sluice(job: &Path) -> Command {
    let mut c = Command::new(sluice_bin());
    c.arg("run")
        .arg(job)
        .env("SLUICE_CACHE_DIR", sluice_tests::cache_dir());
    c
}

#[test]
fn a_stateful_job_resumes_from_its_checkpoint() {
    let dir = tempfile::tempdir().expect("temp dir");
    let job = case_job("updateStateByKey", dir.path());
    let ck = dir.path().join("ck");
    let out = dir.path().join("out.jsonl");
    let golden = read_jsonl(&reference().join("golden/updateStateByKey.jsonl"));

    // 4 batches, then stop; then resume for the rest.
    run_ok(
        sluice(&job)
            .arg("--checkpoint")
            .arg(&ck)
            .args(["--batches", "4"]),
    );
    let mut got = read_jsonl(&out);
    assert_eq!(got.len(), 4);
    run_ok(sluice(&job).arg("--checkpoint").arg(&ck));
    got.extend(read_jsonl(&out));
    assert_matches_golden(&got, &golden, "updateStateByKey stopped and resumed");

    // `sluice checkpoint inspect` shows the newest one.
    let shown = run_ok(
        Command::new(sluice_bin())
            .args(["checkpoint", "inspect"])
            .arg(&ck),
    );
    assert!(
        shown.contains("valid, batch") && shown.contains("\"batch_index\": 9"),
        "{shown}"
    );

    // A damaged newest checkpoint: the previous one is used, with a warning.
    let mut files: Vec<_> = std::fs::read_dir(&ck)
        .expect("ck")
        .map(|e| e.expect("entry").path())
        .collect();
    let ms = |p: &std::path::PathBuf| -> i64 {
        p.file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_prefix("checkpoint-"))
            .and_then(|t| t.parse().ok())
            .unwrap_or(-1)
    };
    files.sort_by_key(ms);
    let newest = files.last().expect("a checkpoint").clone();
    assert_eq!(
        ms(&newest),
        10_000,
        "batch 9 is at 10 s on the manual clock"
    );
    let bytes = std::fs::read(&newest).expect("read");
    std::fs::write(&newest, &bytes[..bytes.len() / 2]).expect("truncate");
    let resumed = sluice(&job)
        .arg("--checkpoint")
        .arg(&ck)
        .output()
        .expect("run");
    let stderr = String::from_utf8_lossy(&resumed.stderr);
    assert!(resumed.status.success(), "{stderr}");
    assert!(
        stderr.contains("skipping an unusable checkpoint") && stderr.contains("truncated"),
        "{stderr}"
    );
    let last = read_jsonl(&out);
    assert_eq!(last.len(), 1, "only the last batch is redone");
    assert_matches_golden(
        &last,
        &golden[9..],
        "the last batch, redone from the previous checkpoint",
    );

    // Another graph is refused, saying what differs; --fresh starts over.
    let text = std::fs::read_to_string(&job).expect("job");
    let changed = text.replace(
        "function = \"wordcount.running_total\"",
        "function = \"wordcount.running_total\"\npartitions = 3",
    );
    assert_ne!(changed, text);
    std::fs::write(&job, changed).expect("job");
    let refused = sluice(&job)
        .arg("--checkpoint")
        .arg(&ck)
        .output()
        .expect("run");
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success());
    assert!(
        stderr.contains("another job graph") && stderr.contains("update_state_by_key"),
        "{stderr}"
    );
    run_ok(sluice(&job).arg("--checkpoint").arg(&ck).arg("--fresh"));
    assert_eq!(read_jsonl(&out).len(), 10, "a fresh run does every batch");
}

#[test]
fn a_directory_of_only_damaged_checkpoints_is_an_error() {
    let dir = tempfile::tempdir().expect("temp dir");
    let job = case_job("updateStateByKey", dir.path());
    let ck = dir.path().join("ck");
    std::fs::create_dir(&ck).expect("ck");
    std::fs::write(ck.join("checkpoint-1000"), b"not a checkpoint").expect("write");
    let out = sluice(&job)
        .arg("--checkpoint")
        .arg(&ck)
        .output()
        .expect("run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("no valid checkpoint")
            && stderr.contains("checkpoint-1000")
            && stderr.contains("--fresh"),
        "{stderr}"
    );
    assert!(!dir.path().join("out.jsonl").exists(), "nothing ran");
}

/// Every windowed or stateful reference job, stopped after a few batches and
/// resumed from its checkpoint, gives exactly Spark's output.
#[test]
fn windowed_and_stateful_jobs_resume_exactly() {
    for (case, stop_after) in [
        ("window_3_1", "2"),
        ("countByWindow_5_1", "6"),
        ("reduceByKeyAndWindow_inv_5_1", "7"),
        ("reduceByKeyAndWindow_inv_3_1", "1"),
    ] {
        let dir = tempfile::tempdir().expect("temp dir");
        let job = case_job(case, dir.path());
        let ck = dir.path().join("ck");
        let out = dir.path().join("out.jsonl");
        run_ok(
            sluice(&job)
                .arg("--checkpoint")
                .arg(&ck)
                .args(["--batches", stop_after]),
        );
        let mut got = read_jsonl(&out);
        run_ok(sluice(&job).arg("--checkpoint").arg(&ck));
        got.extend(read_jsonl(&out));
        let scala = reference()
            .join("golden-scala")
            .join(format!("{case}.jsonl"));
        let golden = if scala.exists() {
            scala
        } else {
            reference().join("golden").join(format!("{case}.jsonl"))
        };
        assert_matches_golden(
            &got,
            &read_jsonl(&golden),
            &format!("{case} resumed after {stop_after}"),
        );
    }
}

/// kill -9 at random moments (receiving, processing, output, checkpoint
/// writing), restart with the same checkpoint directory, 20 times: the final
/// state equals an uninterrupted run's — nothing lost, nothing counted twice.
#[test]
fn kill_nine_twenty_times_loses_and_duplicates_nothing() {
    let dir = tempfile::tempdir().expect("temp dir");
    // 60 batches of sequence-numbered lines `k<key>-<seq>`, on the system clock.
    let batches: Vec<Vec<String>> = (0..60)
        .map(|b| {
            (0..20)
                .map(|i| {
                    let seq = b * 20 + i;
                    format!("k{} s{seq}", seq % 7)
                })
                .collect()
        })
        .collect();
    std::fs::write(
        dir.path().join("input.json"),
        serde_json::to_string(&batches).expect("json"),
    )
    .expect("input");
    let job = dir.path().join("job.toml");
    std::fs::write(
        &job,
        format!(
            r#"[job]
name = "seq"
batch_interval = "50ms"
clock = "system"

[plugins.wordcount]
path = "{}"

[sources.lines]
type = "queue"
path = "input.json"

[streams.words]
from = "lines"
op = "flat_map"
function = "wordcount.split"

[streams.pairs]
from = "words"
op = "map"
function = "wordcount.pair"

[streams.totals]
from = "pairs"
op = "update_state_by_key"
function = "wordcount.running_total"

[streams.recent]
from = "pairs"
op = "reduce_by_key_and_window"
function = "wordcount.add"
inverse = "wordcount.subtract"
window = "200ms"
slide = "100ms"

[[outputs]]
stream = "totals"
type = "jsonl"
path = "out.jsonl"

[[outputs]]
stream = "recent"
type = "jsonl"
path = "recent.jsonl"
"#,
            sluice_tests::plugin("wordcount").display()
        ),
    )
    .expect("job");
    let ck = dir.path().join("ck");
    let mut seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("time")
        .as_nanos() as u64
        | 1;
    let mut kills = 0;
    while kills < 20 {
        let mut child = sluice(&job)
            .arg("--checkpoint")
            .arg(&ck)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("spawn");
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        std::thread::sleep(std::time::Duration::from_millis(20 + seed % 200));
        if child.try_wait().expect("wait").is_some() {
            break; // finished before the kill
        }
        child.kill().expect("kill -9");
        child.wait().expect("reap");
        kills += 1;
    }
    let finish = sluice(&job)
        .arg("--checkpoint")
        .arg(&ck)
        .output()
        .expect("run");
    assert!(
        finish.status.success(),
        "seed {seed}: {}",
        String::from_utf8_lossy(&finish.stderr)
    );
    let last = read_jsonl(&dir.path().join("out.jsonl"))
        .pop()
        .expect("a batch");
    assert_eq!(last["batch"], 59, "seed {seed}: the last batch is the 60th");
    // Uninterrupted: every key k0..k6 and every sequence word once.
    assert_eq!(
        counts(&last),
        expected_counts(0..1200),
        "seed {seed}, {kills} kills"
    );
    // The incremental window (4 batches, every 2) at the end: the last 4
    // batches' counts (keys that left stay at 0: no filter).
    let recent = read_jsonl(&dir.path().join("recent.jsonl"));
    let last = recent
        .iter()
        .rev()
        .find(|b| b["batch"] == 59)
        .expect("the window at the last batch");
    assert_eq!(
        counts(last),
        expected_counts(1120..1200),
        "seed {seed}, {kills} kills: the last window"
    );
    eprintln!("{kills} kills survived (seed {seed})");
}

/// The non-zero `(word, count)` records of a batch, sorted.
fn counts(batch: &serde_json::Value) -> Vec<(String, i64)> {
    let mut got: Vec<(String, i64)> = batch["records"]
        .as_array()
        .expect("records")
        .iter()
        .map(|r| {
            (
                r[0].as_str().expect("key").to_string(),
                r[1].as_i64().expect("n"),
            )
        })
        .filter(|(_, n)| *n != 0)
        .collect();
    got.sort();
    got
}

/// The counts of the sequence-numbered lines `seqs`: `k<seq % 7>` and `s<seq>`.
fn expected_counts(seqs: std::ops::Range<i64>) -> Vec<(String, i64)> {
    let mut want: Vec<(String, i64)> = (0..7)
        .map(|k| {
            (
                format!("k{k}"),
                seqs.clone().filter(|s| s % 7 == k).count() as i64,
            )
        })
        .chain(seqs.clone().map(|s| (format!("s{s}"), 1)))
        .collect();
    want.sort();
    want
}

fn signal(child: &std::process::Child, name: &str) {
    let status = Command::new("kill")
        .args([&format!("-{name}"), &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
}

/// SIGTERM: the job runs one last batch with what it received, checkpoints
/// it, and exits 0 within a few batch intervals.
#[test]
fn sigterm_stops_after_a_last_checkpointed_batch() {
    let dir = tempfile::tempdir().expect("temp dir");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let job = dir.path().join("job.toml");
    std::fs::write(
        &job,
        format!(
            "[job]\nbatch_interval = \"200ms\"\n[plugins.wordcount]\npath = \"{}\"\n[sources.lines]\ntype = \"socket\"\nport = {port}\n[streams.words]\nfrom = \"lines\"\nop = \"flat_map\"\nfunction = \"wordcount.split\"\n[streams.pairs]\nfrom = \"words\"\nop = \"map\"\nfunction = \"wordcount.pair\"\n[streams.totals]\nfrom = \"pairs\"\nop = \"update_state_by_key\"\nfunction = \"wordcount.running_total\"\n[[outputs]]\nstream = \"totals\"\ntype = \"jsonl\"\npath = \"out.jsonl\"\n",
            sluice_tests::plugin("wordcount").display()
        ),
    )
    .expect("job");
    let ck = dir.path().join("ck");
    let child = sluice(&job)
        .arg("--checkpoint")
        .arg(&ck)
        .args(["--feed", "--feed-rate", "100"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    std::thread::sleep(std::time::Duration::from_millis(1500));
    signal(&child, "TERM");
    let asked = std::time::Instant::now();
    let out = child.wait_with_output().expect("wait");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        asked.elapsed() < std::time::Duration::from_secs(2),
        "stopped within 10 batch intervals"
    );
    assert!(stderr.contains("stopping: a last batch"), "{stderr}");
    let batches = read_jsonl(&dir.path().join("out.jsonl"));
    let last = batches.last().expect("batches ran");
    let shown = run_ok(
        Command::new(sluice_bin())
            .args(["checkpoint", "inspect"])
            .arg(&ck),
    );
    assert!(
        shown.contains(&format!("\"batch_index\": {}", last["batch"])),
        "the last batch is checkpointed:\n{shown}"
    );
}

/// A second signal while the last batch is still running exits at once.
#[test]
fn a_second_signal_exits_at_once() {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("in.json"), r#"[["spin"]]"#).expect("input");
    let job = dir.path().join("job.toml");
    std::fs::write(
        &job,
        format!(
            "[job]\nbatch_interval = \"200ms\"\nclock = \"system\"\n[plugins.hostile]\npath = \"{}\"\ndeadline = \"30s\"\n[sources.lines]\ntype = \"queue\"\npath = \"in.json\"\n[streams.spun]\nfrom = \"lines\"\nop = \"map\"\nfunction = \"hostile.spin\"\n[[outputs]]\nstream = \"spun\"\ntype = \"pprint\"\n",
            sluice_tests::plugin("hostile").display()
        ),
    )
    .expect("job");
    let child = sluice(&job)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn");
    std::thread::sleep(std::time::Duration::from_millis(800));
    signal(&child, "INT");
    std::thread::sleep(std::time::Duration::from_millis(100));
    signal(&child, "INT");
    let asked = std::time::Instant::now();
    let out = child.wait_with_output().expect("wait");
    assert_eq!(out.status.code(), Some(130));
    assert!(asked.elapsed() < std::time::Duration::from_secs(5));
}

/// A checkpoint that cannot be written (here: its name is taken by a
/// directory, as a full disk would fail it) is retried before the next
/// batch runs; once writable, the job goes on and nothing is lost.
#[test]
fn a_failing_checkpoint_write_is_retried_before_the_next_batch() {
    let dir = tempfile::tempdir().expect("temp dir");
    let ck = dir.path().join("ck");
    // Batch 2 is at 3 s on the manual clock starting at 0; its checkpoint's
    // name is taken (after batch 0) by a directory, removed 600 ms later.
    let obstacle = ck.join("checkpoint-3000");
    let ssc = sluice_tests::test_context().with_checkpoint(&ck);
    let (block, unblock) = (obstacle.clone(), obstacle.clone());
    let remover = std::sync::Mutex::new(None);
    ssc.add_listener(Box::new(move |info| {
        if info.index == 0 {
            std::fs::create_dir_all(block.join("blocker")).expect("obstacle");
            let unblock = unblock.clone();
            *remover.lock().expect("remover") = Some(std::thread::spawn(move || {
                std::thread::sleep(std::time::Duration::from_millis(600));
                std::fs::remove_dir_all(&unblock).expect("remove the obstacle");
            }));
        }
    }));
    let pairs = ssc
        .queue_stream((0..5).map(|i| vec![format!("w{}", i % 2)]).collect(), 1)
        .map(sluice::Func::map("pair", |w: String| (w, 1i64)));
    let totals = pairs
        .update_state_by_key(
            sluice::Func::update_state("sum", |v: Vec<i64>, s: Option<i64>| {
                Some(v.iter().sum::<i64>() + s.unwrap_or(0))
            }),
            1,
        )
        .collect();
    let started = std::time::Instant::now();
    ssc.run(None)
        .expect("the run goes on once the checkpoint can be written");
    assert!(!obstacle.join("blocker").exists());
    assert!(
        started.elapsed() >= std::time::Duration::from_millis(500),
        "it waited"
    );
    let batches = totals.lock().expect("collected");
    assert_eq!(batches.len(), 5, "every batch once");
    assert_eq!(
        batches[4].sorted_records(),
        vec![serde_json::json!(["w0", 3]), serde_json::json!(["w1", 2])]
    );
    let store = sluice::checkpoint::CheckpointStore::open(&ck).expect("store");
    let (latest, _) = store.latest().expect("valid").expect("a checkpoint");
    assert_eq!(latest.batch_index, 4);
}
