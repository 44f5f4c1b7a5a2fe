//! Checkpoints through the CLI: a stateful job stopped after some batches
//! resumes where it stopped with its state; damaged checkpoints fall back;
//! a checkpoint of another graph is refused; `--fresh` starts over.

use sluice_tests::chaos::{time_seed, xorshift};
use sluice_tests::{assert_matches_golden, case_job, read_jsonl, reference, run_ok, sluice_bin};
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;

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
    assert_eq!(read_jsonl(&out).len(), 4);
    // The resumed run appends to the output: every batch once.
    run_ok(sluice(&job).arg("--checkpoint").arg(&ck));
    let got = read_jsonl(&out);
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
    // The previous full checkpoint is batch 3's (the first run's last);
    // batches 4..8 are re-run from the batch log with the same input and 9
    // again: the output still has every batch once, as Spark's.
    assert_matches_golden(
        &read_jsonl(&out),
        &golden,
        "batches redone from the previous checkpoint and the batch log",
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
        run_ok(sluice(&job).arg("--checkpoint").arg(&ck));
        let got = read_jsonl(&out);
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
    let ck = dir.path().join("ck");
    kill_nine_twenty_times(dir.path(), &ck, "", "");
}

/// The same with the checkpoints in S3 (a moto server on loopback) and
/// only the batch logs on the local disk, and the running totals also
/// written as text files to S3: each batch there exactly once, as the
/// local output file has it.
#[test]
fn kill_nine_twenty_times_with_checkpoints_in_s3() {
    let dir = tempfile::tempdir().expect("temp dir");
    let s3 = sluice_tests::s3::S3Server::start();
    s3.create_bucket("ckpts");
    kill_nine_twenty_times(
        dir.path(),
        Path::new("s3://ckpts/jobs/seq"),
        "checkpoint_logs = \"logs\"\n",
        &(s3.spec_section()
            + "[[outputs]]\nstream = \"totals\"\ntype = \"text_files\"\nprefix = \"s3://ckpts/out/totals\"\n"),
    );
    // Batch directories `out/totals-<ms>/` in time order, each with its
    // marker and the lines of the same batch in out.jsonl.
    let mut batches: BTreeMap<i64, Vec<String>> = BTreeMap::new();
    for key in s3.keys("ckpts", "out/") {
        let (dir, file) = key
            .strip_prefix("out/totals-")
            .and_then(|k| k.split_once('/'))
            .unwrap_or_else(|| panic!("an unexpected object {key}"));
        let lines = batches.entry(dir.parse().expect("batch ms")).or_default();
        let text = s3
            .bucket("ckpts", "")
            .get(&key)
            .expect("get")
            .expect("object");
        let text = String::from_utf8(text).expect("utf-8");
        match file {
            "_SUCCESS" => lines.push(file.to_string()),
            part if part.starts_with("part-") => lines.extend(text.lines().map(str::to_string)),
            other => panic!("an unexpected object {other} in {key}"),
        }
    }
    let out = read_jsonl(&dir.path().join("out.jsonl"));
    assert_eq!(batches.len(), out.len(), "one directory per batch");
    for (b, (lines, batch)) in batches.into_values().zip(&out).enumerate() {
        let mut want: Vec<String> = counts(batch)
            .into_iter()
            .map(|(w, n)| format!("('{w}', {n})"))
            .chain(["_SUCCESS".to_string()])
            .collect();
        want.sort();
        let mut got = lines;
        got.sort();
        assert_eq!(got, want, "batch {b} in S3");
    }
    let names = sluice::checkpoint::CheckpointStore::list(
        &sluice_objects::S3Store::new(s3.bucket("ckpts", "jobs/seq")),
        "checkpoint-",
    )
    .expect("list");
    assert!(!names.is_empty(), "the checkpoints are in the bucket");
    assert!(
        !std::fs::read_dir(dir.path().join("logs"))
            .expect("logs")
            .any(|e| e
                .expect("entry")
                .file_name()
                .to_string_lossy()
                .starts_with("checkpoint-")),
        "and none on the local disk"
    );
}

/// A job of running totals and an incremental window over 60 batches of
/// sequence-numbered words, killed with SIGKILL 20 times at random and
/// resumed from its checkpoint `ck` each time; `job_more` is added to its
/// `[job]` section and `more` to its end. Its outputs come out as an
/// uninterrupted run's.
fn kill_nine_twenty_times(dir: &Path, ck: &Path, job_more: &str, more: &str) {
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
        dir.join("input.json"),
        serde_json::to_string(&batches).expect("json"),
    )
    .expect("input");
    let job = dir.join("job.toml");
    let spec = format!(
        "[job]\nname = \"seq\"\nbatch_interval = \"50ms\"\nclock = \"system\"\n{job_more}\n[sources.lines]\ntype = \"queue\"\npath = \"input.json\"\n"
    ) + &sluice_tests::chaos::totals_and_window("200ms", "100ms")
        + more;
    std::fs::write(&job, spec).expect("job");
    let seed = time_seed();
    let mut x = seed;
    let mut kills = 0;
    while kills < 20 {
        let mut child = spawn_quietly(&job, ck);
        let r = xorshift(&mut x);
        std::thread::sleep(std::time::Duration::from_millis(20 + r % 200));
        if child.try_wait().expect("wait").is_some() {
            break; // finished before the kill
        }
        child.kill().expect("kill -9");
        child.wait().expect("reap");
        kills += 1;
    }
    let finish = sluice(&job)
        .arg("--checkpoint")
        .arg(ck)
        .output()
        .expect("run");
    assert!(
        finish.status.success(),
        "seed {seed}: {}",
        String::from_utf8_lossy(&finish.stderr)
    );
    // The file output holds every batch exactly once (re-runs replaced
    // their earlier copies), each with the running totals of an
    // uninterrupted run: every key k0..k6 and every sequence word once.
    let out = read_jsonl(&dir.join("out.jsonl"));
    let indexes: Vec<u64> = out
        .iter()
        .map(|b| b["batch"].as_u64().expect("batch"))
        .collect();
    assert_eq!(
        indexes,
        (0..60).collect::<Vec<u64>>(),
        "seed {seed}, {kills} kills"
    );
    for (b, batch) in out.iter().enumerate() {
        assert_eq!(
            counts(batch),
            expected_counts(0..(b as i64 + 1) * 20),
            "seed {seed}, {kills} kills: batch {b}"
        );
    }
    // The incremental window (4 batches, every 2) at the end: the last 4
    // batches' counts (keys that left stay at 0: no filter).
    let recent = read_jsonl(&dir.join("recent.jsonl"));
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

/// A job spec in `dir`: lines from a socket on `port`, running word totals
/// (200 ms batches) into `out.jsonl`.
fn socket_totals_job(dir: &Path, port: u16) -> std::path::PathBuf {
    let job = dir.join("job.toml");
    let spec = format!(
        "[job]\nbatch_interval = \"200ms\"\n[sources.lines]\ntype = \"socket\"\nport = {port}\n"
    ) + &sluice_tests::totals_streams();
    std::fs::write(&job, spec).expect("job");
    job
}

/// `sluice run JOB --checkpoint CK`, output discarded.
fn spawn_quietly(job: &Path, ck: &Path) -> std::process::Child {
    sluice(job)
        .arg("--checkpoint")
        .arg(ck)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn")
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
    let job = socket_totals_job(dir.path(), port);
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

/// Running totals of `w0`/`w1` over five one-word batches (`w0`, `w1`,
/// `w0`, ...), in one partition: stream 2, its state one shard.
fn five_batches_of_totals(
    ssc: &sluice::StreamingContext,
) -> Arc<std::sync::Mutex<Vec<sluice::CollectedBatch>>> {
    ssc.queue_stream((0..5).map(|i| vec![format!("w{}", i % 2)]).collect(), 1)
        .map(sluice::Func::map("pair", |w: String| (w, 1i64)))
        .update_state_by_key(
            sluice::Func::update_state("sum", |v: Vec<i64>, s: Option<i64>| {
                Some(v.iter().sum::<i64>() + s.unwrap_or(0))
            }),
            1,
        )
        .collect()
}

/// [`five_batches_of_totals`] came out once per batch with the right
/// totals, and its last batch is checkpointed in `ck`.
fn assert_every_batch_once(totals: &std::sync::Mutex<Vec<sluice::CollectedBatch>>, ck: &Path) {
    let batches = totals.lock().expect("collected");
    assert_eq!(batches.len(), 5, "every batch once");
    assert_eq!(
        batches[4].sorted_records(),
        vec![serde_json::json!(["w0", 3]), serde_json::json!(["w1", 2])]
    );
    let store = sluice::checkpoint::Checkpoints::open(ck).expect("store");
    let (latest, _) = store.latest().expect("valid").expect("a checkpoint");
    assert_eq!(latest.batch_index, 4);
}

/// A full disk during a checkpoint: for 600 ms every write of batch 2's
/// checkpoint and state shard fails with ENOSPC ("No space left on
/// device": `/dev/full` behind their temporary files' names). The
/// checkpoint is retried while the next batches run, the run ends only once
/// it is written, and nothing is lost or counted twice.
#[test]
fn a_full_disk_during_a_checkpoint_is_retried_and_loses_nothing() {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    let dir = tempfile::tempdir().expect("temp dir");
    let ck = dir.path().join("ck");
    let ssc = sluice_tests::test_context()
        .with_checkpoint(&ck)
        .with_checkpoint_interval(std::time::Duration::from_secs(1));
    // Batch 2 is at 3 s; the totals are stream 2, in one partition.
    let pid = std::process::id();
    let full: Vec<std::path::PathBuf> = ["checkpoint-3000", "state-3000-2-0"]
        .iter()
        .map(|n| ck.join(format!(".{n}.{pid}.tmp")))
        .collect();
    let (failed, done) = (
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicBool::new(false)),
    );
    let filler = {
        let (full, failed, done) = (full.clone(), failed.clone(), done.clone());
        move || {
            // Until 600 ms after the first failed write, the names lead to
            // the full device again as soon as a failed write removes them.
            let mut first_failure = None::<std::time::Instant>;
            while !done.load(Ordering::SeqCst)
                && first_failure.is_none_or(|t| t.elapsed() < std::time::Duration::from_millis(600))
            {
                for path in &full {
                    if std::os::unix::fs::symlink("/dev/full", path).is_ok() {
                        failed.fetch_add(1, Ordering::SeqCst);
                        first_failure.get_or_insert_with(std::time::Instant::now);
                    }
                }
                std::thread::sleep(std::time::Duration::from_millis(2));
            }
            for path in &full {
                let _ = std::fs::remove_file(path);
            }
        }
    };
    std::fs::create_dir_all(&ck).expect("checkpoint dir");
    for path in &full {
        std::os::unix::fs::symlink("/dev/full", path).expect("the full device");
    }
    let filler = std::thread::spawn(filler);
    let totals = five_batches_of_totals(&ssc);
    ssc.run(None)
        .expect("the run goes on once the checkpoint can be written");
    done.store(true, Ordering::SeqCst);
    filler.join().expect("filler");
    assert!(
        failed.load(Ordering::SeqCst) > 0,
        "a write of the checkpoint failed on the full device and was retried"
    );
    assert_every_batch_once(&totals, &ck);
    assert!(full.iter().all(|p| !p.exists()), "no temporary file left");
}

/// A checkpoint that cannot be written (here: its name is taken by a
/// directory, as a full disk would fail it) is retried — while the next
/// batch runs, the next checkpoint waiting for it — and the run does not
/// end before it is written; nothing is lost.
#[test]
fn a_failing_checkpoint_write_is_retried_until_it_is_written() {
    let dir = tempfile::tempdir().expect("temp dir");
    let ck = dir.path().join("ck");
    // Batch 2 is at 3 s on the manual clock starting at 0; its checkpoint's
    // name is taken (after batch 0) by a directory, removed 600 ms later.
    let obstacle = ck.join("checkpoint-3000");
    let ssc = sluice_tests::test_context()
        .with_checkpoint(&ck)
        .with_checkpoint_interval(std::time::Duration::from_secs(1));
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
    let totals = five_batches_of_totals(&ssc);
    let started = std::time::Instant::now();
    ssc.run(None)
        .expect("the run goes on once the checkpoint can be written");
    assert!(!obstacle.join("blocker").exists());
    assert!(
        started.elapsed() >= std::time::Duration::from_millis(500),
        "it waited"
    );
    assert_every_batch_once(&totals, &ck);
}

/// Batches an output collected.
type Collected = std::sync::Arc<std::sync::Mutex<Vec<sluice::CollectedBatch>>>;

/// A job of pairs → running totals and a 3-batch incremental window, with
/// full checkpoints every 3 batches; an output failing at batch `fail_at`
/// stands in for a crash (nothing after the failure is checkpointed).
fn replay_job(
    ck: &Path,
    input: &[Vec<String>],
    fail_at: Option<u64>,
) -> (sluice::StreamingContext, Collected, Collected) {
    use sluice::Func;
    let second = std::time::Duration::from_secs(1);
    let ssc = sluice_tests::test_context()
        .with_checkpoint(ck)
        .with_checkpoint_interval(3 * second);
    let pairs = ssc
        .queue_stream(input.to_vec(), 2)
        .map(Func::map("pair", |w: String| (w, 1i64)));
    let totals = pairs.update_state_by_key(
        Func::update_state("sum", |v: Vec<i64>, s: Option<i64>| {
            Some(v.iter().sum::<i64>() + s.unwrap_or(0))
        }),
        2,
    );
    let window = pairs.reduce_by_key_and_window(
        Func::reduce("add", |a: i64, b: i64| a + b),
        Some(Func::inverse_reduce("sub", |a: i64, b: i64| a - b)),
        3 * second,
        second,
        2,
        None,
    );
    let (t, w) = (totals.collect(), window.collect());
    totals.foreach_batch(move |b| match fail_at {
        Some(i) if b.index == i => Err(sluice::Error::Internal("a crash".to_string())),
        _ => Ok(()),
    });
    (ssc, t, w)
}

/// Full checkpoints every 3 batches and only a batch-log record in
/// between: a job that dies at batch 5 resumes from the checkpoint of
/// batch 3, re-runs batch 4 from the log, and every batch's output equals
/// an uninterrupted run's.
#[test]
fn batches_after_the_last_full_checkpoint_are_rerun_from_the_batch_log() {
    let dir = tempfile::tempdir().expect("temp dir");
    let input: Vec<Vec<String>> = (0..9)
        .map(|b| (0..3).map(|i| format!("w{}", (b * 3 + i) % 4)).collect())
        .collect();
    let (ssc, want_totals, want_window) = replay_job(&dir.path().join("plain"), &input, None);
    ssc.with_fresh_start(true).run(None).expect("uninterrupted");
    let ck = dir.path().join("ck");
    let (ssc, _, _) = replay_job(&ck, &input, Some(5));
    let e = ssc.run(None).expect_err("the crash").to_string();
    assert!(e.contains("a crash"), "{e}");
    let store = sluice::checkpoint::Checkpoints::open(&ck).expect("store");
    let full: Vec<i64> = store.list().expect("list").iter().map(|f| f.0).collect();
    // Batch i is at (i + 1) s on the manual clock.
    assert_eq!(
        full,
        [4000, 1000],
        "full checkpoints at batches 3 and 0 only"
    );
    let (logged, problems) = store.batches_after(4000).expect("batch log");
    assert!(problems.is_empty(), "{problems:?}");
    assert_eq!(
        logged.iter().map(|r| r.batch_index).collect::<Vec<_>>(),
        [4],
        "batch 4 in the log; batch 5 failed before its record"
    );
    let (ssc, totals, window) = replay_job(&ck, &input, None);
    ssc.run(None).expect("resumed");
    let (totals, want) = (totals.lock().expect("t"), want_totals.lock().expect("w"));
    assert_eq!(
        totals.iter().map(|b| b.index).collect::<Vec<_>>(),
        (4..9).collect::<Vec<u64>>(),
        "batch 4 re-run, then the rest"
    );
    for b in totals.iter() {
        assert_eq!(
            b.sorted_records(),
            want[b.index as usize].sorted_records(),
            "totals at {}",
            b.index
        );
    }
    let (window, want) = (window.lock().expect("t"), want_window.lock().expect("w"));
    for b in window.iter() {
        assert_eq!(
            b.sorted_records(),
            want[b.index as usize].sorted_records(),
            "window at {}",
            b.index
        );
    }
    let full: Vec<i64> = store.list().expect("list").iter().map(|f| f.0).collect();
    assert_eq!(
        full,
        [9000, 7000, 4000, 1000],
        "every 3 s after the resumed one, and the last batch"
    );
}

/// A job that dies before its first checkpoint is written (here: its
/// first batch fails) and is started again a minute later resumes at the
/// batch times it started with, not at new ones: outputs named by batch
/// time (text files in S3) are then replaced, not written beside a
/// duplicate.
#[test]
fn a_job_that_dies_before_its_first_checkpoint_keeps_its_batch_times() {
    let dir = tempfile::tempdir().expect("temp dir");
    let ck = dir.path().join("ck");
    let input: Vec<Vec<String>> = (0..4).map(|b| vec![format!("w{}", b % 2)]).collect();
    let (ssc, died, _) = replay_job(&ck, &input, Some(0));
    let e = ssc.run(None).expect_err("the crash").to_string();
    assert!(e.contains("a crash"), "{e}");
    let store = sluice::checkpoint::Checkpoints::open(&ck).expect("store");
    assert!(store.list().expect("list").is_empty(), "no checkpoint");
    let first = died.lock().expect("died")[0].time;
    let (ssc, totals, _) = replay_job(&ck, &input, None);
    let later = ssc.with_clock(Arc::new(sluice::ManualClock::new(60_000)));
    later.run(None).expect("resumed");
    let totals = totals.lock().expect("totals");
    let got: Vec<(u64, i64)> = totals.iter().map(|b| (b.index, b.time.millis())).collect();
    let want: Vec<(u64, i64)> = (0..4)
        .map(|i| (i, first.millis() + 1000 * i as i64))
        .collect();
    assert_eq!(got, want, "every batch at its first run's time");
    assert_eq!(
        totals[3].sorted_records(),
        vec![serde_json::json!(["w0", 2]), serde_json::json!(["w1", 2])]
    );
}

/// A socket cannot replay: with checkpointing its lines are logged before
/// they enter a batch. The chaos harness ([`sluice_tests::chaos`], short
/// form): sequence-numbered lines stream from a server while the job —
/// running totals and an incremental window — is killed with -9 twenty
/// times at random moments (receiving, processing, writing the log or a
/// checkpoint) and restarted; finally it is stopped with SIGTERM. Every
/// line the job had received is counted exactly once: the only lines
/// missing are ones still in flight in the kernel when a kill came, none is
/// counted twice, each key's total agrees with its sequence words, each
/// batch is in the outputs once, and the window agrees with the totals at
/// every batch.
#[test]
fn kill_nine_while_receiving_from_a_socket_loses_only_lines_in_flight() {
    let dir = tempfile::tempdir().expect("temp dir");
    let report = sluice_tests::chaos::run(dir.path(), &sluice_tests::chaos::Chaos::short());
    let problems = report.problems();
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    assert_eq!(report.kills, 20);
    assert!(report.batches > 20, "{report:?}");
    eprintln!(
        "{} lines sent, {} lost in flight over {} kills, {} batches (seed {})",
        report.sent, report.lost_in_flight, report.kills, report.batches, report.seed
    );
}

/// Two runs on one checkpoint directory: the second is refused at once,
/// naming the directory and the process holding it (a lock, not luck:
/// both would write checkpoints over each other's). Killing the first with
/// `kill -9` releases the directory: the job restarts on it at once.
#[test]
fn a_second_run_on_a_checkpoint_directory_is_refused() {
    let dir = tempfile::tempdir().expect("temp dir");
    let job = dir.path().join("job.toml");
    std::fs::write(
        &job,
        "[job]\nbatch_interval = \"100ms\"\n[sources.lines]\ntype = \"generator\"\nrate = 100\n[streams.n]\nfrom = \"lines\"\nop = \"count\"\n[[outputs]]\nstream = \"n\"\ntype = \"jsonl\"\npath = \"out.jsonl\"\n",
    )
    .expect("write");
    let ck = dir.path().join("ck");
    let out = dir.path().join("out.jsonl");
    let mut first = sluice(&job)
        .arg("--checkpoint")
        .arg(&ck)
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("spawn");
    let lines = |path: &Path| std::fs::read_to_string(path).map_or(0, |t| t.lines().count());
    let started = std::time::Instant::now();
    while lines(&out) < 2 {
        assert!(
            started.elapsed().as_secs() < 60,
            "the first run makes no batches"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let second = sluice(&job)
        .arg("--checkpoint")
        .arg(&ck)
        .output()
        .expect("run");
    assert_eq!(second.status.code(), Some(1));
    let err = String::from_utf8_lossy(&second.stderr);
    let want = format!(
        "the checkpoint directory {} is in use by another run (process {})",
        ck.display(),
        first.id()
    );
    assert!(err.contains(&want), "expected `{want}` in:\n{err}");
    first.kill().expect("kill -9");
    first.wait().expect("wait");
    let before = lines(&out);
    // Two more batches (the first may re-run one the killed run had
    // written: the output keeps each batch once).
    run_ok(
        sluice(&job)
            .arg("--checkpoint")
            .arg(&ck)
            .args(["--batches", "2"]),
    );
    let times: Vec<i64> = (read_jsonl(&out).iter())
        .map(|b| b["time"].as_i64().expect("time"))
        .collect();
    assert!(times.len() > before, "the restarted run goes on: {times:?}");
    assert!(
        times.windows(2).all(|w| w[0] < w[1]),
        "each batch once: {times:?}"
    );
}
