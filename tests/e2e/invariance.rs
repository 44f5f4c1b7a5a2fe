//! Every golden job (`tests/cases`), with its real plugins, gives the same
//! output whatever its partitioning and worker count, and whatever batch
//! boundary it is stopped at and recovered from its checkpoint: Spark's
//! recorded output where the case has one, else the output of the job as
//! its spec configures it.

use serde_json::Value;
use sluice::spec::{self, Overrides};
use sluice_tests::{assert_matches_golden, case_job, read_jsonl, reference, root, runtime};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Partitions of every source and shuffle, and worker threads, tried.
const PARTITIONS: [usize; 4] = [1, 2, 3, 7];
const WORKERS: [usize; 2] = [1, 2];

/// The cases whose output is a jsonl file (`saveAsTextFiles` writes part
/// files, one per partition, which its own test checks).
fn cases() -> Vec<String> {
    let mut cases: Vec<String> = std::fs::read_dir(root().join("tests/cases"))
        .expect("tests/cases")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|c| {
            std::fs::read_to_string(root().join("tests/cases").join(c).join("job.toml"))
                .is_ok_and(|t| t.contains("type = \"jsonl\""))
        })
        .collect();
    cases.sort();
    assert!(cases.len() >= 20, "{cases:?}");
    cases
}

/// Spark's recorded output of `case`, if there is one (the Scala API's
/// where it differs from PySpark's).
fn golden(case: &str) -> Option<PathBuf> {
    ["golden-scala", "golden"]
        .iter()
        .map(|d| reference().join(d).join(format!("{case}.jsonl")))
        .find(|p| p.exists())
}

/// Runs `case` in `dir` with `overrides` for `batches` (or to its end);
/// returns its jsonl outputs, normalized: partition counts dropped (they follow
/// the partitioning by design) and cogroup's sides sorted (Spark leaves
/// their order unspecified).
fn run(case: &str, dir: &Path, overrides: &Overrides, batches: Option<u64>) -> Outputs {
    let path = dir.join("job.toml");
    if !path.exists() {
        case_job(case, dir);
    }
    let job = spec::load(&path, overrides).unwrap_or_else(|e| panic!("{case}: {e}"));
    job.context
        .run(batches)
        .unwrap_or_else(|e| panic!("{case}: {e}"));
    let mut outputs = Outputs::new();
    for entry in std::fs::read_dir(dir).expect("the job's directory") {
        let name = entry
            .expect("entry")
            .file_name()
            .to_string_lossy()
            .into_owned();
        if name.ends_with(".jsonl") {
            let mut out = read_jsonl(&dir.join(&name));
            for batch in &mut out {
                normalize(case, batch);
            }
            outputs.insert(name, out);
        }
    }
    outputs
}

/// A job's jsonl outputs, by file name.
type Outputs = BTreeMap<String, Vec<Value>>;

fn assert_same(got: &Outputs, want: &Outputs, what: &str) {
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        want.keys().collect::<Vec<_>>(),
        "{what}: its outputs"
    );
    for (name, want) in want {
        assert_matches_golden(&got[name], want, &format!("{what}: {name}"));
    }
}

fn normalize(case: &str, batch: &mut Value) {
    if let Some(b) = batch.as_object_mut() {
        b.remove("partitions");
    }
    if case != "cogroup" {
        return;
    }
    for record in batch["records"].as_array_mut().into_iter().flatten() {
        for side in [0, 1] {
            if let Some(values) = record[1][side].as_array_mut() {
                values.sort_by_key(|v| v.to_string());
            }
        }
    }
}

fn overrides(partitions: Option<usize>, workers: usize) -> Overrides {
    Overrides {
        partitions,
        workers: Some(workers),
        runtime: Some(runtime()),
        ..Overrides::default()
    }
}

/// What `case` must output: Spark's, else its own run as specified.
fn expected(case: &str) -> Outputs {
    match golden(case) {
        Some(path) => {
            let mut golden = read_jsonl(&path);
            for batch in &mut golden {
                normalize(case, batch);
            }
            Outputs::from([("out.jsonl".to_string(), golden)])
        }
        None => {
            let dir = tempfile::tempdir().expect("temp dir");
            run(case, dir.path(), &overrides(None, 1), None)
        }
    }
}

#[test]
fn every_golden_job_gives_the_same_output_for_every_partitioning_and_worker_count() {
    for case in cases() {
        let want = expected(&case);
        for p in PARTITIONS {
            for w in WORKERS {
                let dir = tempfile::tempdir().expect("temp dir");
                let got = run(&case, dir.path(), &overrides(Some(p), w), None);
                assert_same(&got, &want, &format!("{case} with P={p}, W={w}"));
                if case == "reduceByKey" {
                    // The shuffle really ran in P partitions.
                    for batch in read_jsonl(&dir.path().join("out.jsonl")) {
                        assert_eq!(batch["partitions"], p, "{case} with P={p}: {batch}");
                    }
                }
            }
        }
    }
}

#[test]
fn every_golden_job_recovers_to_the_same_output_at_every_batch_boundary() {
    for case in cases() {
        let want = expected(&case);
        let batches = want.values().map(Vec::len).max().unwrap_or(0) as u64;
        for k in 1..batches {
            let dir = tempfile::tempdir().expect("temp dir");
            let mut first = overrides(Some(2), 2);
            first.checkpoint = Some(dir.path().join("ck"));
            run(&case, dir.path(), &first, Some(k));
            // Resumed by a new process's worth of context, with another
            // worker count: the checkpoint holds the state, not the threads.
            let mut again = overrides(Some(2), 1);
            again.checkpoint = Some(dir.path().join("ck"));
            let got = run(&case, dir.path(), &again, None);
            assert_same(&got, &want, &format!("{case} stopped after batch {k}"));
        }
    }
}

/// The same with the checkpoints in S3 (a moto server on loopback) and the
/// batch logs on the local disk: the recovery tests hold on object storage
/// as on a local directory.
#[test]
fn every_golden_job_recovers_from_checkpoints_in_s3_at_every_batch_boundary() {
    let s3 = sluice_tests::s3::S3Server::start();
    s3.create_bucket("ckpts");
    for case in cases() {
        let want = expected(&case);
        let batches = want.values().map(Vec::len).max().unwrap_or(0) as u64;
        for k in 1..batches {
            let dir = tempfile::tempdir().expect("temp dir");
            case_job(&case, dir.path());
            let job = dir.path().join("job.toml");
            let spec = std::fs::read_to_string(&job).expect("job") + &s3.spec_section();
            std::fs::write(&job, spec).expect("job");
            let place = PathBuf::from(format!("s3://ckpts/{case}/{k}"));
            let mut first = overrides(Some(2), 2);
            first.checkpoint = Some(place.clone());
            first.checkpoint_logs = Some(dir.path().join("logs"));
            run(&case, dir.path(), &first, Some(k));
            let keys = s3.keys("ckpts", &format!("{case}/{k}/"));
            assert!(
                keys.iter().any(|k| k.contains("/checkpoint-")),
                "{case}: the checkpoints are in the bucket: {keys:?}"
            );
            let mut again = overrides(Some(2), 1);
            again.checkpoint = Some(place);
            again.checkpoint_logs = Some(dir.path().join("logs"));
            let got = run(&case, dir.path(), &again, None);
            assert_same(&got, &want, &format!("{case} stopped after batch {k}, S3"));
        }
    }
}
