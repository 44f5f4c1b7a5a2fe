//! NATS JetStream sources against a real `nats-server` on loopback: the
//! direct model's exactly-once through `kill -9` of the job, the broker
//! down at start and killed mid-job, and the errors that must stop a job
//! (wrong credentials, a missing stream, an undecodable record).

use sluice_tests::brokers::{NatsClient, NatsServer, free_port};
use sluice_tests::{read_jsonl, sluice_bin};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Lines `k<seq % 7> s<seq>` for `seqs`.
fn lines(seqs: std::ops::Range<u64>) -> Vec<Vec<u8>> {
    seqs.map(|s| format!("k{} s{s}", s % 7).into_bytes())
        .collect()
}

/// A job of running word totals over stream `SEQ` at `url`, into
/// `out.jsonl`, 50 ms batches, `extra` added to the source's section.
fn totals_job(dir: &Path, url: &str, extra: &str) -> PathBuf {
    let job = dir.join("job.toml");
    std::fs::write(
        &job,
        format!(
            r#"[job]
name = "natstotals"
batch_interval = "50ms"
checkpoint_interval = "200ms"

[plugins.wordcount]
path = "{}"

[sources.lines]
type = "nats"
url = "{url}"
stream = "SEQ"
subject = "seq.>"
{extra}

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

[[outputs]]
stream = "totals"
type = "jsonl"
path = "out.jsonl"
"#,
            sluice_tests::plugin("wordcount").display()
        ),
    )
    .expect("job");
    job
}

/// The job's stderr, kept in `stderr.log` (a pipe nobody reads could fill).
fn log_file(dir: &Path) -> std::fs::File {
    std::fs::File::create(dir.join("stderr.log")).expect("log file")
}

fn sluice(job: &Path, ck: &Path) -> Command {
    let mut c = Command::new(sluice_bin());
    c.arg("run")
        .arg(job)
        .arg("--checkpoint")
        .arg(ck)
        .env("SLUICE_CACHE_DIR", sluice_tests::cache_dir());
    c
}

/// The `(word, count)` records of a batch, sorted.
fn counts(batch: &serde_json::Value) -> Vec<(String, i64)> {
    let mut got: Vec<(String, i64)> = (batch["records"].as_array().expect("records").iter())
        .map(|r| {
            let word = r[0].as_str().expect("key").to_string();
            (word, r[1].as_i64().expect("n"))
        })
        .collect();
    got.sort();
    got
}

/// The totals of lines `0..n`.
fn expected(n: u64) -> Vec<(String, i64)> {
    let mut want: Vec<(String, i64)> = (0..7u64.min(n))
        .map(|k| {
            (
                format!("k{k}"),
                (0..n).filter(|s| s % 7 == k).count() as i64,
            )
        })
        .chain((0..n).map(|s| (format!("s{s}"), 1)))
        .collect();
    want.sort();
    want
}

/// Checks the output: every batch once, in order, each the totals of the
/// stream's first records (nothing lost, nothing counted twice, in stream
/// order); returns how many records the last batch had counted.
fn check_output(dir: &Path, what: &str) -> u64 {
    let out = read_jsonl(&dir.join("out.jsonl"));
    let indexes: Vec<u64> = out
        .iter()
        .map(|b| b["batch"].as_u64().expect("batch"))
        .collect();
    assert_eq!(
        indexes,
        (0..out.len() as u64).collect::<Vec<_>>(),
        "{what}: every batch once"
    );
    let mut seen = 0;
    for batch in &out {
        let c = counts(batch);
        let n = c.iter().filter(|(w, _)| w.starts_with('s')).count() as u64;
        assert_eq!(c, expected(n), "{what}: batch {}", batch["batch"]);
        assert!(n >= seen, "{what}: totals went back");
        seen = n;
    }
    seen
}

/// Waits until the job's output has counted `n` records, then stops it
/// with SIGTERM (a last checkpoint) and waits for it.
fn finish(mut child: Child, dir: &Path, n: u64, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            panic!("{what}: the job ended early: {status}");
        }
        let out = dir.join("out.jsonl");
        let counted = out
            .exists()
            .then(|| read_jsonl(&out))
            .and_then(|o| {
                o.last()
                    .map(|b| counts(b).iter().filter(|(w, _)| w.starts_with('s')).count())
            })
            .unwrap_or(0) as u64;
        if counted >= n {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: counted {counted} of {n} records in 60 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    let status = child.wait().expect("wait");
    assert!(status.success(), "{what}: {status}");
}

/// `kill -9` of the job at random moments, ten times, while records keep
/// arriving: the output counts every record exactly once, and the durable
/// consumer is acknowledged up to the last checkpoint.
#[test]
fn kill_nine_of_the_job_loses_and_duplicates_nothing() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = NatsServer::start(dir.path(), &[]);
    let nats = NatsClient::connect(&server.url());
    nats.create_stream("SEQ", &["seq.>"]);
    nats.publish("seq.a", lines(0..600));
    // 200 records/s, 10 a batch: the 1200 records take 6 s of batches, so
    // the kills (4.5 s at most) all land mid-stream.
    let job = totals_job(dir.path(), &server.url(), "max_rate = 200");
    let ck = dir.path().join("ck");
    let mut x = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("time")
        .as_nanos() as u64
        | 1;
    for kill in 0..10 {
        let mut child = sluice(&job, &ck)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn");
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        std::thread::sleep(Duration::from_millis(150 + x % 300));
        child.kill().expect("kill -9");
        child.wait().expect("wait");
        if kill == 4 {
            nats.publish("seq.b", lines(600..1200));
        }
    }
    // The killed runs got through part of the stream (so the kills hit a
    // job at work, and the last run resumes mid-stream).
    let before = check_output(dir.path(), "before the last run");
    assert!(
        before > 0 && before < 1200,
        "the killed runs counted {before}"
    );
    eprintln!("the killed runs counted {before} of 1200 records");
    let child = sluice(&job, &ck)
        .stdout(Stdio::null())
        .stderr(log_file(dir.path()))
        .spawn()
        .expect("spawn");
    finish(child, dir.path(), 1200, "after 10 kills");
    assert_eq!(check_output(dir.path(), "after 10 kills"), 1200);
    let acked = nats
        .acked("SEQ", "sluice-natstotals-lines")
        .expect("the durable consumer");
    assert_eq!(acked, 1200, "acknowledged up to the last checkpoint");
}

/// The broker is down when the job starts (the job runs, says so, and
/// retries), comes up, and is killed with -9 and restarted mid-job: every
/// record is counted once.
#[test]
fn the_broker_down_at_start_and_killed_mid_job() {
    let dir = tempfile::tempdir().expect("temp dir");
    let port = free_port();
    let url = format!("nats://127.0.0.1:{port}");
    let job = totals_job(dir.path(), &url, "");
    let ck = dir.path().join("ck");
    let mut child = sluice(&job, &ck)
        .stdout(Stdio::null())
        .stderr(log_file(dir.path()))
        .spawn()
        .expect("spawn");
    std::thread::sleep(Duration::from_millis(800));
    assert!(
        child.try_wait().expect("wait").is_none(),
        "the job runs without its broker"
    );
    let mut server = NatsServer::start_on(dir.path(), port, &[]);
    let nats = NatsClient::connect(&server.url());
    nats.create_stream("SEQ", &["seq.>"]);
    nats.publish("seq.a", lines(0..300));
    std::thread::sleep(Duration::from_millis(500));
    server.kill();
    std::thread::sleep(Duration::from_millis(500));
    server.restart();
    let nats = NatsClient::connect(&server.url());
    nats.publish("seq.b", lines(300..600));
    finish(child, dir.path(), 600, "broker down, then killed");
    assert_eq!(check_output(dir.path(), "broker down, then killed"), 600);
    let log = std::fs::read_to_string(dir.path().join("stderr.log")).expect("stderr");
    assert!(
        log.contains("cannot reach NATS at"),
        "the receiver's error is reported: {log}"
    );
}

/// Errors no retry mends stop the job at once, naming the source and the
/// cause: a wrong password, a missing stream, an undecodable record.
#[test]
fn wrong_credentials_a_missing_stream_and_a_bad_record_stop_the_job() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = NatsServer::start(dir.path(), &["--user", "sluice", "--pass", "right"]);
    let url = server.url();
    let run = |extra: &str, what: &str| -> String {
        let d = tempfile::tempdir_in(dir.path()).expect("temp dir");
        let job = totals_job(d.path(), &url, extra);
        let started = Instant::now();
        let out = sluice(&job, &d.path().join("ck")).output().expect("run");
        assert!(!out.status.success(), "{what}: the job must fail");
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "{what}: failed in {:?}",
            started.elapsed()
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let err = run("user = \"sluice\"\npassword = \"wrong\"", "wrong password");
    assert!(
        err.contains("source `lines`") && err.contains("refused the credentials"),
        "{err}"
    );
    let err = run("user = \"sluice\"\npassword = \"right\"", "missing stream");
    assert!(err.contains("stream `SEQ` does not exist"), "{err}");
    let nats = NatsClient::connect_as(&url, "sluice", "right");
    nats.create_stream("SEQ", &["seq.>"]);
    nats.publish("seq.a", vec![b"{\"ok\": 1}".to_vec(), b"{broken".to_vec()]);
    let err = run(
        "user = \"sluice\"\npassword = \"right\"\ndecoder = \"json\"",
        "undecodable record",
    );
    assert!(
        err.contains("record 2 on `seq.a` cannot be decoded as json"),
        "{err}"
    );
}
