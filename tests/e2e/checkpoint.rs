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
