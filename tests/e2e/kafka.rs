//! Kafka sources and outputs against a real Kafka-protocol broker on
//! loopback (Tansu; see `sluice_tests::tansu` for what it lacks): the
//! direct model's exactly-once through `kill -9` of the job, into a
//! transactional output; the broker down at start; the errors that must
//! stop a job (a missing topic, refused credentials, a bad record).

use sluice_tests::brokers::{
    self, check_output_of_partitions as check_output, expected, finish, free_port, log_file,
    rendered, seq_lines as lines, sluice_run, spawn_logged, start_without_broker,
};
use sluice_tests::tansu::Tansu;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Running word totals over topic `seq` (3 partitions, one task each) on
/// `brokers`, into `out.jsonl`, `extra` added to the source's section;
/// each batch's word counts written to topic `counts` in transactions.
fn totals_job(dir: &Path, brokers: &str, extra: &str) -> PathBuf {
    brokers::totals_job(
        dir,
        "kafkatotals",
        &format!(
            "type = \"kafka\"\nbrokers = \"{brokers}\"\ntopics = [\"seq\"]\npartitions = 3\n{extra}"
        ),
        Some(&format!(
            "type = \"kafka\"\nbrokers = \"{brokers}\"\ntopic = \"counts\"\nencoder = \"json\"\nexactly_once = true"
        )),
    )
}

/// The word counts in topic `counts` (committed transactions only; the
/// word is the record's key, the count its JSON value), summed per word.
fn written_totals(kafka: &Tansu) -> Vec<(String, i64)> {
    let mut sums = std::collections::BTreeMap::<String, i64>::new();
    for (key, value) in kafka.read_committed("counts", 2) {
        let word = String::from_utf8(key).expect("a UTF-8 key");
        let count: i64 = serde_json::from_slice(&value).expect("a JSON count");
        *sums.entry(word).or_default() += count;
    }
    sums.into_iter().collect()
}

/// `kill -9` of the job at random moments, twelve times, while records
/// keep arriving on three partitions: the job's output counts every
/// record exactly once (a batch re-run after a kill reads the offset
/// ranges it read before), and the consumer group holds the offsets of the
/// last checkpoint.
///
/// The counts written to Kafka in transactions lose nothing; that they
/// are not duplicated needs a broker that aborts a killed producer's open
/// transaction when its successor (same `transactional.id`) starts, as
/// Kafka does. Tansu does not: a transaction cut by `kill -9` stays
/// visible to `read_committed` readers. So here the Kafka output is
/// checked for losses only, and the markers that keep a committed batch
/// from being written twice are checked by
/// `a_batch_committed_before_a_restart_is_not_written_again`.
#[test]
fn kill_nine_of_a_kafka_job_loses_and_duplicates_nothing() {
    let dir = tempfile::tempdir().expect("temp dir");
    let kafka = Tansu::start();
    kafka.create_topic("seq", 3);
    kafka.create_topic("counts", 2);
    let brokers = kafka.brokers();
    // 1200 records, 12 every 150 ms: about 15 s of arrivals.
    let producer = {
        let brokers = brokers.clone();
        std::thread::spawn(move || {
            let kafka = Tansu::attach(&brokers);
            for chunk in 0..100 {
                kafka.produce("seq", 3, &lines(chunk * 12..chunk * 12 + 12));
                std::thread::sleep(Duration::from_millis(150));
            }
        })
    };
    let job = totals_job(dir.path(), &brokers, "");
    let ck = dir.path().join("ck");
    brokers::kill_nine_runs(&job, &ck, 12, 1000, 1500);
    producer.join().expect("producer");
    let before = check_output(dir.path(), "before the last run");
    assert!(before > 0, "the killed runs counted nothing");
    eprintln!("the killed runs counted {before} of 1200 records");
    let child = spawn_logged(&job, &ck, dir.path());
    finish(child, dir.path(), 1200, "after 12 kills");
    assert_eq!(check_output(dir.path(), "after 12 kills"), 1200);
    let want = expected(1200);
    let written = written_totals(&kafka);
    assert_eq!(written.len(), want.len(), "the kafka output: every word");
    for ((word, n), (w, m)) in written.iter().zip(&want) {
        assert!(
            word == w && n >= m,
            "the kafka output lost some of {w}: {n} < {m}"
        );
    }
    let extra: i64 = written
        .iter()
        .zip(&want)
        .map(|((_, n), (_, m))| n - m)
        .sum();
    eprintln!("counts written twice by transactions cut by kill -9 (Tansu keeps them): {extra}");
    let committed = kafka.committed("sluice-kafkatotals-lines", "seq", 3);
    assert_eq!(committed, vec![400, 400, 400], "the group's offsets");
}

/// The broker is down when the job starts: the job runs, says so, retries,
/// and counts everything once the broker is there.
#[test]
fn the_kafka_broker_down_at_start() {
    let dir = tempfile::tempdir().expect("temp dir");
    let port = free_port();
    let brokers = format!("127.0.0.1:{port}");
    let job = totals_job(dir.path(), &brokers, "");
    let ck = dir.path().join("ck");
    let child = start_without_broker(&job, &ck, dir.path(), Duration::from_millis(1500));
    let kafka = Tansu::start_on(port, &[]);
    kafka.create_topic("seq", 3);
    kafka.create_topic("counts", 2);
    kafka.produce("seq", 3, &lines(0..300));
    std::thread::sleep(Duration::from_millis(500));
    kafka.produce("seq", 3, &lines(300..600));
    finish(child, dir.path(), 600, "broker down at start");
    assert_eq!(check_output(dir.path(), "broker down at start"), 600);
    assert_eq!(written_totals(&kafka), expected(600), "the kafka output");
    brokers::assert_logged(dir.path(), "cannot reach Kafka at");
}

/// The broker killed with `kill -9` mid-job and started again, Tansu
/// keeping its topics in S3 (moto on loopback) so that it comes back with
/// them: the job says it lost the broker, goes on from its offsets once it
/// is back, and counts every record once, in its file output and in the
/// Kafka output's transactions.
#[test]
fn the_kafka_broker_killed_mid_job_and_restarted() {
    let dir = tempfile::tempdir().expect("temp dir");
    let s3 = sluice_tests::s3::S3Server::start();
    let mut kafka = Tansu::start_on_s3(&s3, "tansu");
    kafka.create_topic("seq", 3);
    kafka.create_topic("counts", 2);
    let job = totals_job(dir.path(), &kafka.brokers(), "");
    let ck = dir.path().join("ck");
    let mut child = spawn_logged(&job, &ck, dir.path());
    kafka.produce("seq", 3, &lines(0..300));
    brokers::wait_counted(&mut child, dir.path(), 300, "before the broker's kill");
    // Mid-job: batches keep coming, some with their output in flight.
    kafka.produce("seq", 3, &lines(300..330));
    kafka.kill();
    std::thread::sleep(Duration::from_secs(2));
    kafka.restart();
    kafka.produce("seq", 3, &lines(330..600));
    finish(child, dir.path(), 600, "after the broker's restart");
    assert_eq!(check_output(dir.path(), "after the broker's restart"), 600);
    assert_eq!(written_totals(&kafka), expected(600), "the kafka output");
    brokers::assert_logged(dir.path(), "cannot reach Kafka at");
}

/// Errors no retry mends stop the job at once, naming the source and the
/// cause: a missing topic, refused credentials, an undecodable record, a
/// record over the limit.
#[test]
fn a_missing_topic_refused_credentials_and_bad_records_stop_the_job() {
    let dir = tempfile::tempdir().expect("temp dir");
    let kafka = Tansu::start();
    let run = |brokers: &str, extra: &str, what: &str| -> String {
        let d = tempfile::tempdir_in(dir.path()).expect("temp dir");
        let job = totals_job(d.path(), brokers, extra);
        let started = Instant::now();
        let out = sluice_run(&job, &d.path().join("ck"))
            .output()
            .expect("run");
        assert!(!out.status.success(), "{what}: the job must fail");
        assert!(
            started.elapsed() < Duration::from_secs(40),
            "{what}: failed in {:?}",
            started.elapsed()
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let err = run(&kafka.brokers(), "", "missing topic");
    assert!(
        err.contains("source `lines`") && err.contains("topic `seq` does not exist"),
        "{err}"
    );
    kafka.create_topic("seq", 3);
    kafka.create_topic("counts", 2);
    kafka.produce(
        "seq",
        3,
        &[
            b"{\"ok\": 1}".to_vec(),
            b"{broken".to_vec(),
            b"{\"fine\": 2}".to_vec(),
        ],
    );
    let err = run(&kafka.brokers(), "decoder = \"json\"", "undecodable record");
    assert!(
        err.contains("partition 1: record 0 on `seq` cannot be decoded as json"),
        "{err}"
    );
    let err = run(
        &kafka.brokers(),
        "max_record_bytes = \"8\"",
        "record over the limit",
    );
    assert!(
        err.contains("cannot be decoded as text") && err.contains("over the limit of 8"),
        "{err}"
    );
    let guarded = Tansu::start_on(free_port(), &["--authentication"]);
    let err = run(
        &guarded.brokers(),
        "user = \"sluice\"\npassword = \"wrong\"",
        "refused credentials",
    );
    assert!(
        err.contains("source `lines`") && err.contains("SASL"),
        "{err}"
    );
}

/// A batch whose outputs went out but whose record in the job's batch log
/// did not (a crash in between) reads exactly the same offset ranges when
/// it runs again, however many records arrived since; the lag shows per
/// partition; records carry their topic, partition, offset and key.
#[test]
fn a_kafka_batch_run_again_reads_its_offset_ranges() {
    use sluice::BatchTime;
    use sluice::receiver::Source;
    use sluice_brokers::kafka::{KafkaConfig, KafkaSource, Topics};
    let dir = tempfile::tempdir().expect("temp dir");
    let kafka = Tansu::start();
    kafka.create_topic("seq", 2);
    kafka.produce("seq", 2, &lines(0..6));
    let mut config = KafkaConfig::new(
        "lines",
        &kafka.brokers(),
        Topics::Names(vec!["seq".into()]),
        Duration::from_millis(100),
    );
    config.partitions = 2;
    config.decoding.shape = sluice_brokers::Shape::Record;
    let log = dir.path().join("source-log");
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut a = KafkaSource::new(config.clone());
    a.attach_log(&log);
    a.start().expect("start");
    let mut t = 1000;
    let took = loop {
        let batch = a.next_batch(BatchTime(t)).expect("batch");
        if batch.count() == 6 {
            break rendered(&batch);
        }
        assert!(batch.count() < 6, "more than was written");
        assert!(Instant::now() < deadline, "6 records not read in 30 s");
        std::thread::sleep(Duration::from_millis(50));
        t += 100;
    };
    assert!(
        took[0].contains(r#""topic":"seq""#) && took[0].contains(r#""partition":0"#),
        "{took:?}"
    );
    assert!(
        took[0].contains(r#""offset":0"#) && took[0].contains(r#""key":"k0""#),
        "{took:?}"
    );
    assert!(
        took.iter().any(|r| r.contains(r#""partition":1"#)),
        "{took:?}"
    );
    kafka.produce("seq", 2, &lines(6..10));
    // The lag: the records just written, per partition, once seen.
    let lag_deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let lag = a.lag();
        assert_eq!(
            lag.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(),
            ["seq [0]", "seq [1]"]
        );
        if lag.iter().map(|(_, l)| l).sum::<u64>() == 4 {
            break;
        }
        assert!(Instant::now() < lag_deadline, "lag {lag:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
    drop(a); // the crash: no batch log record for batch t
    let mut b = KafkaSource::new(config);
    b.attach_log(&log);
    b.start().expect("start");
    let again = b.next_batch(BatchTime(t)).expect("the batch again");
    assert_eq!(
        rendered(&again),
        took,
        "the same records, in the same tasks"
    );
}

/// With `min_partitions`, a batch whose records all sit in one partition
/// (a job catching up on a lagging one) is split into contiguous offset
/// pieces over both tasks: every record once, each piece in offset order;
/// without it, one task takes the partition whole, as Spark's KafkaRDD.
#[test]
fn min_partitions_spreads_one_lagging_partition_over_the_tasks() {
    use sluice::BatchTime;
    use sluice::receiver::Source;
    use sluice_brokers::kafka::{KafkaConfig, KafkaSource, Topics};
    let kafka = Tansu::start();
    kafka.create_topic("seq", 2);
    let records: Vec<(i64, Vec<u8>)> = (0..8)
        .map(|i| (1000 + i, format!("r{i}").into_bytes()))
        .collect();
    kafka.produce_at("seq", 0, &records);
    // The tasks of the first batch with records, once one takes all 8 (the
    // reader may hand a first batch only some: then again, a new group).
    let mut attempt = 0;
    let mut tasks_of = |min_partitions: Option<usize>| loop {
        attempt += 1;
        assert!(attempt <= 6, "no batch took all 8 records in one go");
        let mut config = KafkaConfig::new(
            "lines",
            &kafka.brokers(),
            Topics::Names(vec!["seq".into()]),
            Duration::from_millis(100),
        );
        config.group_id = format!("attempt-{attempt}");
        config.partitions = 2;
        config.min_partitions = min_partitions;
        let mut source = KafkaSource::new(config);
        source.start().expect("start");
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut t = 1000;
        let batch = loop {
            assert!(Instant::now() < deadline, "no records read in 30 s");
            std::thread::sleep(Duration::from_millis(500));
            let batch = source.next_batch(BatchTime(t)).expect("batch");
            t += 100;
            if batch.count() > 0 {
                break batch;
            }
        };
        if batch.count() < 8 {
            continue;
        }
        assert_eq!(batch.partitions.len(), 2);
        break (batch.partitions.iter())
            .map(|part| {
                rendered(&sluice::rdd::Rdd {
                    partitions: vec![part.clone()],
                })
            })
            .collect::<Vec<_>>();
    };
    let quoted = |r: std::ops::Range<usize>| r.map(|i| format!("\"r{i}\"")).collect::<Vec<_>>();
    assert_eq!(tasks_of(None), [quoted(0..8), vec![]]);
    // Four pieces of two records, dealt round-robin onto the two tasks.
    let mut first = quoted(0..2);
    first.extend(quoted(4..6));
    let mut second = quoted(2..4);
    second.extend(quoted(6..8));
    assert_eq!(tasks_of(Some(4)), [first, second]);
}

/// The exactly-once output's markers: a batch whose transaction committed
/// before a restart is not written again by the restarted job (a new
/// output, as after a crash), a later batch is, and an empty batch writes
/// nothing.
#[test]
fn a_batch_committed_before_a_restart_is_not_written_again() {
    use sluice::BatchTime;
    use sluice::sink::Output;
    use sluice_brokers::kafka::{KafkaSink, KafkaSinkConfig};
    let kafka = Tansu::start();
    kafka.create_topic("counts", 2);
    let config = {
        let mut c = KafkaSinkConfig::new("job", "output-0", &kafka.brokers(), "counts");
        c.exactly_once = true;
        c
    };
    let batch = |words: &[&str]| {
        let mut keys = sluice_sdk::Column::new();
        let mut values = sluice_sdk::Column::new();
        for w in words {
            keys.push(w).expect("key");
            values.push(&1i64).expect("value");
        }
        sluice::rdd::Rdd {
            partitions: vec![
                sluice_sdk::Batch { keys, values },
                sluice_sdk::Batch::default(),
            ],
        }
    };
    let mut first = KafkaSink::new(config.clone());
    first
        .emit(BatchTime(1000), 0, &batch(&["a", "b"]))
        .expect("batch 1000");
    drop(first);
    let mut again = KafkaSink::new(config.clone());
    again
        .emit(BatchTime(1000), 0, &batch(&["a", "b"]))
        .expect("batch 1000 again");
    again
        .emit(BatchTime(1100), 1, &batch(&["c"]))
        .expect("batch 1100");
    again
        .emit(BatchTime(1200), 2, &batch(&[]))
        .expect("an empty batch");
    let mut keys: Vec<String> = (kafka.read_committed("counts", 2).into_iter())
        .map(|(k, _)| String::from_utf8(k).expect("key"))
        .collect();
    keys.sort();
    assert_eq!(keys, ["a", "b", "c"], "each batch once");
    let markers: Vec<String> = (kafka.read_committed("sluice-commits", 1).into_iter())
        .map(|(k, v)| {
            format!(
                "{}={}",
                String::from_utf8_lossy(&k),
                String::from_utf8_lossy(&v)
            )
        })
        .collect();
    assert_eq!(markers, ["job/output-0/0=1000", "job/output-0/0=1100"]);
}

/// A Kappa replay (`sluice run --from earliest --output-dir DIR`) cuts
/// batches by record time: records written in a burst now, stamped over
/// twenty past seconds, come out in the batches — and the sliding windows
/// — their times fall in, as a live run would have made them, and the run
/// ends at the end of the history. A replay into a broker, or of a source
/// that keeps no history, is refused.
#[test]
fn a_replay_cuts_batches_and_windows_by_record_time() {
    let dir = tempfile::tempdir().expect("temp dir");
    let kafka = Tansu::start();
    kafka.create_topic("events", 2);
    // Twenty seconds of events, an hour ago: at t0 + 100 ms × k, word
    // `w<k % 3>`, alternating partitions.
    let t0 = (std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("time")
        .as_millis() as i64
        / 1000
        - 3600)
        * 1000;
    let times: Vec<(i64, String)> = (0..200i64)
        .filter(|k| k % 7 != 3) // some gaps
        .map(|k| (t0 + 100 * k + 1, format!("w{}", k % 3)))
        .collect();
    for p in 0..2 {
        let mine: Vec<(i64, Vec<u8>)> = (times.iter().enumerate())
            .filter(|(i, _)| *i as i32 % 2 == p)
            .map(|(_, (t, w))| (*t, w.clone().into_bytes()))
            .collect();
        kafka.produce_at("events", p, &mine);
    }
    let job = dir.path().join("job.toml");
    let spec = |output: &str| {
        format!(
            r#"[job]
name = "replayed"
batch_interval = "1s"

[plugins.wordcount]
path = "{}"

[sources.events]
type = "kafka"
brokers = "{}"
topics = ["events"]

[streams.pairs]
from = "events"
op = "map"
function = "wordcount.pair"

[streams.windowed]
from = "pairs"
op = "reduce_by_key_and_window"
function = "wordcount.add"
window = "3s"
slide = "1s"

[[outputs]]
stream = "windowed"
{output}
"#,
            sluice_tests::plugin("wordcount").display(),
            kafka.brokers()
        )
    };
    std::fs::write(&job, spec("type = \"jsonl\"\npath = \"windows.jsonl\"")).expect("job");
    let out = dir.path().join("replay");
    let status = std::process::Command::new(sluice_tests::sluice_bin())
        .args(["run", "--from", "earliest", "--to"])
        .arg((t0 + 30_000).to_string())
        .arg("--output-dir")
        .arg(&out)
        .arg(&job)
        .env("SLUICE_CACHE_DIR", sluice_tests::cache_dir())
        .stderr(log_file(dir.path()))
        .status()
        .expect("replay");
    let log = std::fs::read_to_string(dir.path().join("stderr.log")).unwrap_or_default();
    assert!(status.success(), "the replay: {log}");
    let batches = sluice_tests::read_jsonl(&out.join("windows.jsonl"));
    // Batches from the first record's interval to --to; every window the
    // counts of the records stamped in (t - 3 s, t].
    assert_eq!(
        batches[0]["time"].as_i64(),
        Some(t0 + 1000),
        "the first batch"
    );
    assert_eq!(batches.len(), 30, "up to --to");
    let mut checked = 0;
    for b in &batches {
        let t = b["time"].as_i64().expect("time");
        let mut want = std::collections::BTreeMap::<String, i64>::new();
        for (time, word) in &times {
            if *time > t - 3000 && *time <= t {
                *want.entry(word.clone()).or_default() += 1;
            }
        }
        let mut got = std::collections::BTreeMap::<String, i64>::new();
        for r in b["records"].as_array().expect("records") {
            got.insert(
                r[0].as_str().expect("word").to_string(),
                r[1].as_i64().expect("n"),
            );
        }
        assert_eq!(
            got,
            want,
            "the window ending at batch {t} (t0 + {})",
            t - t0
        );
        checked += usize::from(!want.is_empty());
    }
    assert_eq!(checked, 22, "every window over the twenty seconds");
    // A broker output, or a socket source, cannot be replayed.
    std::fs::write(
        &job,
        spec("type = \"kafka\"\nbrokers = \"127.0.0.1:1\"\ntopic = \"x\""),
    )
    .expect("job");
    let refused = std::process::Command::new(sluice_tests::sluice_bin())
        .args(["run", "--from", "earliest", "--output-dir"])
        .arg(&out)
        .arg(&job)
        .output()
        .expect("run");
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(
        !refused.status.success()
            && err.contains("outputs[0].type")
            && err.contains("never to the live job's brokers"),
        "{err}"
    );
}

/// `examples/kafka-wordcount.toml`, pointed at a broker of the test's own:
/// the counts of the lines written to `lines` arrive in `counts`.
#[test]
fn the_kafka_example_counts_words_into_kafka() {
    let kafka = Tansu::start();
    kafka.create_topic("lines", 2);
    kafka.create_topic("counts", 2);
    let line = b"the quick brown fox jumps over the lazy dog".to_vec();
    kafka.produce("lines", 2, &vec![line; 100]);
    let dir = tempfile::tempdir().expect("temp dir");
    let text = sluice_tests::example_spec(
        "kafka-wordcount.toml",
        &[("127.0.0.1:9092", &kafka.brokers())],
    );
    let job = dir.path().join("kafka-wordcount.toml");
    std::fs::write(&job, text).expect("job");
    sluice_tests::run_ok(
        std::process::Command::new(sluice_tests::sluice_bin())
            .arg("run")
            .arg(&job)
            .args(["--batches", "4"])
            .env("SLUICE_CACHE_DIR", sluice_tests::cache_dir()),
    );
    let want: Vec<(String, i64)> = [
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
    assert_eq!(written_totals(&kafka), want);
}
