//! NATS JetStream sources against a real `nats-server` on loopback: the
//! direct model's exactly-once through `kill -9` of the job, the broker
//! down at start and killed mid-job, and the errors that must stop a job
//! (wrong credentials, a missing stream, an undecodable record).

use sluice_tests::brokers::{
    self, NatsClient, NatsServer, check_output, expected, finish, free_port, rendered,
    seq_lines as lines, sluice_run, spawn_logged, start_without_broker,
};
use sluice_tests::sluice_bin;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Running word totals over stream `SEQ` (subjects `seq.>`) at `url`, into
/// `out.jsonl`, `extra` added to the source's section; each batch's word
/// counts published to `counts.out` (exactly once by message id), with
/// the source's user and password if it has them.
fn totals_job(dir: &Path, url: &str, extra: &str) -> PathBuf {
    let credentials: Vec<&str> = (extra.lines())
        .filter(|l| l.starts_with("user") || l.starts_with("password"))
        .collect();
    brokers::totals_job(
        dir,
        "natstotals",
        &format!(
            "type = \"nats\"\nurl = \"{url}\"\nstream = \"SEQ\"\nsubject = \"seq.>\"\n{extra}"
        ),
        Some(&format!(
            "type = \"nats\"\nurl = \"{url}\"\nsubject = \"counts.out\"\n{}",
            credentials.join("\n")
        )),
    )
}

/// The word counts published to stream `OUT`, summed per word.
fn published_totals(nats: &NatsClient) -> Vec<(String, i64)> {
    let mut sums = std::collections::BTreeMap::<String, i64>::new();
    for m in nats.messages("OUT") {
        let v: serde_json::Value = serde_json::from_slice(&m).expect("a JSON [word, count]");
        *sums
            .entry(v[0].as_str().expect("word").to_string())
            .or_default() += v[1].as_i64().expect("count");
    }
    sums.into_iter().collect()
}

/// `kill -9` of the job at random moments, twelve times, while records
/// keep arriving in small bursts (so what a batch takes depends on timing):
/// the output counts every record exactly once, the published counts add
/// up exactly (a batch re-run after a kill takes the very records it took
/// before, so its message ids name the same messages), and the durable
/// consumer is acknowledged up to the last checkpoint.
#[test]
fn kill_nine_of_the_job_loses_and_duplicates_nothing() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = NatsServer::start(dir.path(), &[]);
    let nats = NatsClient::connect(&server.url());
    nats.create_stream("SEQ", &["seq.>"]);
    nats.create_stream("OUT", &["counts.>"]);
    let url = server.url();
    // 1200 records, 6 every 25 ms: about 5 s of arrivals.
    let publisher = std::thread::spawn(move || {
        let nats = NatsClient::connect(&url);
        for chunk in 0..200 {
            nats.publish("seq.a", lines(chunk * 6..chunk * 6 + 6));
            std::thread::sleep(Duration::from_millis(25));
        }
    });
    let job = totals_job(dir.path(), &server.url(), "");
    let ck = dir.path().join("ck");
    brokers::kill_nine_runs(&job, &ck, 12, 150, 300);
    publisher.join().expect("publisher");
    // The killed runs got through part of the stream (so the kills hit a
    // job at work, and the last run resumes mid-stream).
    let before = check_output(dir.path(), "before the last run");
    assert!(before > 0, "the killed runs counted nothing");
    eprintln!("the killed runs counted {before} of 1200 records");
    let child = spawn_logged(&job, &ck, dir.path());
    finish(child, dir.path(), 1200, "after 12 kills");
    assert_eq!(check_output(dir.path(), "after 12 kills"), 1200);
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
    let child = start_without_broker(&job, &ck, dir.path(), Duration::from_millis(800));
    let mut server = NatsServer::start_on(dir.path(), port, &[]);
    let nats = NatsClient::connect(&server.url());
    nats.create_stream("SEQ", &["seq.>"]);
    nats.create_stream("OUT", &["counts.>"]);
    nats.publish("seq.a", lines(0..300));
    std::thread::sleep(Duration::from_millis(500));
    server.kill();
    std::thread::sleep(Duration::from_millis(500));
    server.restart();
    let nats = NatsClient::connect(&server.url());
    nats.publish("seq.b", lines(300..600));
    finish(child, dir.path(), 600, "broker down, then killed");
    assert_eq!(check_output(dir.path(), "broker down, then killed"), 600);
    assert_eq!(published_totals(&nats), expected(600), "the nats output");
    brokers::assert_logged(dir.path(), "cannot reach NATS at");
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
        let out = sluice_run(&job, &d.path().join("ck"))
            .output()
            .expect("run");
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
        "user = \"sluice\"\npassword = \"right\"\nmax_record_bytes = \"4\"",
        "record over the limit",
    );
    assert!(
        err.contains("record 1 on `seq.a` cannot be decoded as text: 9 bytes, over the limit of 4"),
        "{err}"
    );
    let err = run(
        "user = \"sluice\"\npassword = \"right\"\ndecoder = \"json\"",
        "undecodable record",
    );
    assert!(
        err.contains("record 2 on `seq.a` cannot be decoded as json"),
        "{err}"
    );
}

/// A batch whose outputs went out but whose record in the job's batch log
/// did not (a crash in between) takes exactly the same records when it
/// runs again, however many more have arrived since: the source's own
/// write-ahead record of its range decides, so an output's message ids for
/// that batch name the same messages.
#[test]
fn a_batch_run_again_after_a_crash_takes_the_records_it_took() {
    use sluice::BatchTime;
    use sluice::receiver::Source;
    use sluice_brokers::{NatsConfig, NatsSource};
    let dir = tempfile::tempdir().expect("temp dir");
    let server = NatsServer::start(dir.path(), &[]);
    let nats = NatsClient::connect(&server.url());
    nats.create_stream("SEQ", &["seq.>"]);
    nats.publish("seq.a", lines(0..5));
    let mut config = NatsConfig::new("lines", &server.url(), "SEQ", Duration::from_millis(100));
    config.partitions = 1;
    let log = dir.path().join("source-log");
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut a = NatsSource::new(config.clone());
    a.attach_log(&log);
    a.start().expect("start");
    let mut t = 1000;
    let took = loop {
        let batch = a.next_batch(BatchTime(t)).expect("batch");
        if batch.count() > 0 {
            break rendered(&batch);
        }
        assert!(Instant::now() < deadline, "nothing read in 30 s");
        std::thread::sleep(Duration::from_millis(20));
        t += 100;
    };
    drop(a); // the crash: no batch log record for batch t
    nats.publish("seq.a", lines(5..10));
    let mut b = NatsSource::new(config);
    b.attach_log(&log);
    b.start().expect("start");
    std::thread::sleep(Duration::from_millis(300));
    let again = rendered(&b.next_batch(BatchTime(t)).expect("batch again"));
    assert_eq!(again, took, "the batch at {t} again");
    let mut rest = Vec::new();
    while took.len() + rest.len() < 10 {
        t += 100;
        rest.extend(rendered(&b.next_batch(BatchTime(t)).expect("batch")));
        assert!(Instant::now() < deadline, "the rest not read in 30 s");
        std::thread::sleep(Duration::from_millis(20));
    }
    let all: Vec<String> = took.into_iter().chain(rest).collect();
    let want: Vec<String> = (0..10).map(|s| format!("\"k{} s{s}\"", s % 7)).collect();
    assert_eq!(all, want, "every record once, in order");
}

/// `examples/nats-wordcount.toml` as the README runs it, on the test's own
/// server: lines in stream LINES, counts published to COUNTS.
#[test]
fn the_nats_example_counts_words_into_nats() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = NatsServer::start(dir.path(), &[]);
    let nats = NatsClient::connect(&server.url());
    nats.create_stream("LINES", &["lines.>"]);
    nats.create_stream("COUNTS", &["counts.>"]);
    let line = b"the quick brown fox jumps over the lazy dog".to_vec();
    nats.publish("lines.demo", std::iter::repeat_n(line, 100));
    let text = sluice_tests::example_spec(
        "nats-wordcount.toml",
        &[("nats://127.0.0.1:4222", &server.url())],
    );
    let job = dir.path().join("nats-wordcount.toml");
    std::fs::write(&job, text).expect("job");
    sluice_tests::run_ok(
        Command::new(sluice_bin())
            .arg("run")
            .arg(&job)
            .args(["--batches", "2"])
            .env("SLUICE_CACHE_DIR", sluice_tests::cache_dir()),
    );
    let mut sums = std::collections::BTreeMap::<String, i64>::new();
    for m in nats.messages("COUNTS") {
        let v: serde_json::Value = serde_json::from_slice(&m).expect("[word, count]");
        *sums
            .entry(v[0].as_str().expect("word").to_string())
            .or_default() += v[1].as_i64().expect("count");
    }
    let want: std::collections::BTreeMap<String, i64> = [
        ("brown", 100),
        ("dog", 100),
        ("fox", 100),
        ("jumps", 100),
        ("lazy", 100),
        ("over", 100),
        ("quick", 100),
        ("the", 200),
    ]
    .into_iter()
    .map(|(w, n)| (w.to_string(), n))
    .collect();
    assert_eq!(sums, want);
}

/// A job held back by `max_rate` shows how far behind its NATS stream it
/// is: on the status API, in `/metrics` and on the page in Chromium.
#[test]
fn the_lag_behind_the_stream_shows_on_the_page_and_in_metrics() {
    use crate::ui::{get, metric};
    let dir = tempfile::tempdir().expect("temp dir");
    let server = NatsServer::start(dir.path(), &[]);
    let nats = NatsClient::connect(&server.url());
    nats.create_stream("SEQ", &["seq.>"]);
    nats.create_stream("OUT", &["counts.>"]);
    nats.publish("seq.a", lines(0..5000));
    let job = totals_job(dir.path(), &server.url(), "max_rate = 200");
    let mut child = Command::new(sluice_bin())
        .args(["run", "--ui", "127.0.0.1:0"])
        .arg(&job)
        .arg("--checkpoint")
        .arg(dir.path().join("checkpoint"))
        .env("SLUICE_CACHE_DIR", sluice_tests::cache_dir())
        .env("SLUICE_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let addr = sluice_tests::ui_address(&mut child);
    let started = Instant::now();
    let lag = loop {
        let status: serde_json::Value =
            serde_json::from_str(&get(&addr, "/api/status")).expect("status");
        let lag = status["lag"][0]["records"].as_u64().unwrap_or(0);
        if lag > 0 && status["batches"].as_u64().unwrap_or(0) >= 3 {
            assert_eq!(status["lag"][0]["source"], "lines");
            assert_eq!(status["lag"][0]["partition"], "SEQ seq.>");
            break lag;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "no lag shown: {status}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    // 10 records a batch out of 5000: thousands behind.
    assert!(lag > 1000, "lag {lag}");
    let m = get(&addr, "/metrics");
    let shown = metric(
        &m,
        "sluice_source_lag_records{job=\"natstotals\",source=\"lines\",partition=\"SEQ seq.>\"}",
    );
    assert!(shown > 1000.0, "{m}");
    let dom = sluice_tests::chromium(&format!("http://{addr}/"), &["--dump-dom".to_string()]);
    let dom = String::from_utf8_lossy(&dom.stdout);
    assert!(
        dom.contains("class=\"lag\""),
        "no lag rows rendered:\n{dom}"
    );
    assert!(dom.contains("SEQ seq.&gt;"), "no partition shown:\n{dom}");
    child.kill().expect("kill");
    child.wait().expect("reap");
}

/// A job that falls behind its stream's retention: restarted from its
/// checkpoint after the records it had not read yet were dropped, it stops
/// with an error naming the lost range, never skipping it silently.
#[test]
fn records_lost_to_retention_stop_the_job_naming_them() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = NatsServer::start(dir.path(), &[]);
    let nats = NatsClient::connect(&server.url());
    nats.create_stream_keeping("SEQ", &["seq.>"], 100);
    nats.create_stream("OUT", &["counts.>"]);
    nats.publish("seq.a", lines(0..50));
    let job = totals_job(dir.path(), &server.url(), "");
    let ck = dir.path().join("ck");
    let first = sluice_run(&job, &ck)
        .args(["--batches", "60"])
        .output()
        .expect("run");
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    assert_eq!(check_output(dir.path(), "the first run"), 50);
    // 300 more: the stream keeps the newest 100 (sequences 251..=350).
    nats.publish("seq.a", lines(50..350));
    let again = sluice_run(&job, &ck).output().expect("run");
    assert!(!again.status.success(), "the job must stop");
    let err = String::from_utf8_lossy(&again.stderr);
    assert!(
        err.contains("source `lines`: records 51..=250 of stream `SEQ` are gone"),
        "{err}"
    );
}

/// A wasm `sink` plugin granted a broker's endpoint (`connect`) and a
/// directory (its `nats.conf`) publishes each batch to NATS itself, with
/// message ids of batch time, partition and index: running the same job
/// twice stores every line once, and the plugin reaches nothing it was not
/// granted.
#[test]
fn a_wasm_sink_granted_the_broker_publishes_exactly_once() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = NatsServer::start(dir.path(), &[]);
    let nats = NatsClient::connect(&server.url());
    nats.create_stream("AUDIT", &["audit.>"]);
    let out = dir.path().join("out");
    std::fs::create_dir_all(&out).expect("out");
    std::fs::write(
        out.join("nats.conf"),
        format!("127.0.0.1:{} audit.lines", server.port),
    )
    .expect("conf");
    std::fs::write(
        dir.path().join("in.json"),
        r#"[["a", "b", "c"], ["d"], [], ["e", "f"]]"#,
    )
    .expect("queue");
    let job = dir.path().join("job.toml");
    let spec = |grant: u16| {
        format!(
            r#"[job]
name = "published"
batch_interval = "1s"

[plugins.text]
path = "{}"
dir = "out"
connect = ["127.0.0.1:{grant}"]

[sources.lines]
type = "queue"
path = "in.json"
partitions = 2

[[outputs]]
stream = "lines"
type = "sink"
function = "text.publish_nats"
"#,
            sluice_tests::plugin("text").display()
        )
    };
    std::fs::write(&job, spec(server.port)).expect("job");
    for run in 0..2 {
        let done = Command::new(sluice_bin())
            .arg("run")
            .arg(&job)
            .env("SLUICE_CACHE_DIR", sluice_tests::cache_dir())
            .output()
            .expect("run");
        assert!(
            done.status.success(),
            "run {run}: {}",
            String::from_utf8_lossy(&done.stderr)
        );
    }
    let mut stored: Vec<String> = (nats.messages("AUDIT").into_iter())
        .map(|m| String::from_utf8(m).expect("text"))
        .collect();
    stored.sort();
    assert_eq!(
        stored,
        ["a", "b", "c", "d", "e", "f"],
        "each line once, after two runs"
    );
    // Without the grant, the connection is refused and the job fails naming the sink.
    std::fs::write(&job, spec(free_port())).expect("job");
    let refused = Command::new(sluice_bin())
        .arg("run")
        .arg(&job)
        .env("SLUICE_CACHE_DIR", sluice_tests::cache_dir())
        .output()
        .expect("run");
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(
        !refused.status.success()
            && err.contains("publish_nats")
            && err.contains("connecting to 127.0.0.1"),
        "{err}"
    );
}

/// A Kappa replay of a NATS stream (`--from earliest`) puts each record in
/// the batch of the second it was stored in — records stored over a few
/// seconds, replayed at once — reads them all once, and leaves the job's
/// durable consumer alone.
#[test]
fn a_replay_of_a_stream_cuts_batches_by_record_time() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = NatsServer::start(dir.path(), &[]);
    let nats = NatsClient::connect(&server.url());
    nats.create_stream("SEQ", &["seq.>"]);
    for burst in 0..6u64 {
        nats.publish("seq.a", lines(burst * 5..burst * 5 + 5));
        std::thread::sleep(Duration::from_millis(400));
    }
    let job = dir.path().join("job.toml");
    std::fs::write(
        &job,
        format!(
            r#"[job]
name = "replayed"
batch_interval = "1s"

[sources.lines]
type = "nats"
url = "{}"
stream = "SEQ"
element = "record"

[[outputs]]
stream = "lines"
type = "jsonl"
path = "records.jsonl"
"#,
            server.url()
        ),
    )
    .expect("job");
    let out = dir.path().join("replay");
    let done = Command::new(sluice_bin())
        .args(["run", "--from", "earliest", "--output-dir"])
        .arg(&out)
        .arg(&job)
        .output()
        .expect("replay");
    assert!(
        done.status.success(),
        "{}",
        String::from_utf8_lossy(&done.stderr)
    );
    let mut sequences = Vec::new();
    for batch in sluice_tests::read_jsonl(&out.join("records.jsonl")) {
        let t = batch["time"].as_i64().expect("time");
        for r in batch["records"].as_array().expect("records") {
            let stored = r["time"].as_i64().expect("record time");
            assert!(
                stored > t - 1000 && stored <= t,
                "record stored at {stored} in batch {t}"
            );
            sequences.push(r["sequence"].as_u64().expect("sequence"));
        }
    }
    sequences.sort_unstable();
    assert_eq!(sequences, (1..=30).collect::<Vec<_>>(), "every record once");
    assert_eq!(
        nats.acked("SEQ", "sluice-replayed-lines"),
        None,
        "no durable consumer made"
    );
}
