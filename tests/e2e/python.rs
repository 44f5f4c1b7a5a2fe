//! The Python driver end to end: PySpark programs run through
//! `sluice.pyspark` by the interpreter the wheel is installed in
//! (`$SLUICE_PYTHON`, which `scripts/test` sets after building the wheel;
//! else `target/py-venv/bin/python`).

use sluice_tests::{cache_dir, root};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

fn python() -> PathBuf {
    let python = std::env::var_os("SLUICE_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target/py-venv/bin/python"));
    assert!(
        python.exists(),
        "{} is missing: scripts/python-driver builds the wheel and installs it there (scripts/test runs it)",
        python.display()
    );
    python
}

fn command() -> Command {
    let mut cmd = Command::new(python());
    cmd.env("SLUICE_CACHE_DIR", cache_dir())
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env("PYTHONUNBUFFERED", "1");
    cmd
}

/// Runs `program` (written to `dir/name`) and returns what it did.
fn run_program(dir: &Path, name: &str, program: &str) -> Output {
    let path = dir.join(name);
    std::fs::write(&path, program).expect("writing the program");
    command()
        .arg(&path)
        .current_dir(dir)
        .output()
        .expect("running python")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn golden_jobs_through_sluice_pyspark_match_pyspark() {
    let out = command()
        .arg(root().join("tests/python/golden.py"))
        .env("SLUICE_REFERENCE", sluice_tests::reference())
        .output()
        .expect("running tests/python/golden.py");
    assert!(
        out.status.success(),
        "the golden jobs through sluice.pyspark differ from PySpark's output:\n{}\n{}",
        text(&out.stdout),
        text(&out.stderr)
    );
}

/// The counts `line.split(" ")` gives over `lines`, as Python would.
fn word_counts<'a>(lines: impl IntoIterator<Item = &'a str>) -> BTreeMap<String, u64> {
    let mut counts = BTreeMap::new();
    for line in lines {
        for word in line.split(' ') {
            *counts.entry(word.to_string()).or_insert(0) += 1;
        }
    }
    counts
}

/// `('word', 3)` as pprint prints a pair of a plain string and an int.
fn parse_pair(line: &str) -> Option<(String, u64)> {
    let inner = line.strip_prefix("('")?.strip_suffix(')')?;
    let (word, count) = inner.rsplit_once("', ")?;
    Some((word.to_string(), count.parse().ok()?))
}

#[test]
fn the_seeds_program_prints_spark_format_word_counts() {
    // The example as a user runs it, on a free port instead of 9999.
    let seed = std::fs::read_to_string(root().join("examples/pyspark/seed_wordcount.py"))
        .expect("reading examples/pyspark/seed_wordcount.py");
    let port = sluice_tests::brokers::free_port();
    let mut program = seed.clone();
    for (at, with) in [
        (
            "socketTextStream(\"localhost\", 9999)",
            format!("socketTextStream(\"localhost\", {port})"),
        ),
        ("PORT = 9999", format!("PORT = {port}")),
    ] {
        assert!(
            seed.contains(at),
            "the example reads and serves port 9999: {at}"
        );
        program = program.replace(at, &with);
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let out = run_program(dir.path(), "seed_wordcount.py", &program);
    let stdout = text(&out.stdout);
    assert!(
        out.status.success(),
        "the seed's program failed ({}):\n{stdout}\n{}",
        out.status,
        text(&out.stderr)
    );
    // Every batch of its 35 s prints a header the way PySpark does.
    let rule = "-------------------------------------------";
    let headers: Vec<&str> = stdout
        .lines()
        .filter_map(|l| l.strip_prefix("Time: "))
        .collect();
    assert!(
        headers.len() >= 30,
        "{} batches printed:\n{stdout}",
        headers.len()
    );
    for h in &headers {
        let ok = h.len() == 19
            && h.chars().enumerate().all(|(i, c)| match i {
                4 | 7 => c == '-',
                10 => c == ' ',
                13 | 16 => c == ':',
                _ => c.is_ascii_digit(),
            });
        assert!(ok, "a batch time as pprint prints it: {h:?}");
    }
    assert!(stdout.contains(&format!("{rule}\nTime: ")), "{stdout}");
    // The counts of every batch add up to the words the Tweeter sent, the
    // empty lines its "\n\r" makes included (Spark reads "\r" as a line end).
    let mut got: BTreeMap<String, u64> = BTreeMap::new();
    for line in stdout.lines().filter(|l| l.starts_with("('")) {
        let (word, n) = parse_pair(line).unwrap_or_else(|| panic!("not a (word, count): {line}"));
        *got.entry(word).or_insert(0) += n;
    }
    let sent = [
        "When you and your best friend.",
        "Behind every strong woman.",
        "When you and your best friend.",
        "Mushrooms are rich in carbohydrates and proteins.",
        "Its distribution encompasses Asia.",
        "The cap cuticle is thin and can be easily peeled off .",
    ];
    let mut want = word_counts(sent);
    want.insert(String::new(), sent.len() as u64);
    assert_eq!(got, want, "{stdout}");
    for said in [
        "starting Streaming thread...",
        "connection ready.Sending data",
        "Tweeting DONE :)",
    ] {
        assert!(stdout.contains(said), "{said:?} missing:\n{stdout}");
    }
}

/// A program that builds a job on a queue of `["a b", "c"]` and applies
/// `transformation` (Python source using `lines`); what follows it runs
/// after the definition (an output, the run).
fn queue_program(prelude: &str, transformation: &str) -> String {
    format!(
        r#"import sys
from sluice.pyspark import SparkConf, SparkContext
from sluice.pyspark.streaming import StreamingContext
{prelude}
conf = SparkConf().set("spark.streaming.clock", "org.apache.spark.util.ManualClock")
sc = SparkContext("local[2]", "errors", conf=conf)
ssc = StreamingContext(sc, 1)
lines = ssc.queueStream([sc.parallelize(["a b", "c"], 2)])
try:
    out = {transformation}
except Exception as e:
    print(type(e).__name__ + ": " + str(e))
    sys.exit(3)
out.pprint()
ssc.start()
ssc.awaitTerminationOrTimeout(5)
ssc.stop()
"#
    )
}

/// The line of `queue_program`'s transformation.
fn transformation_line(prelude: &str) -> usize {
    9 + prelude.lines().count().max(1)
}

/// Runs a program that must be refused at its transformation call (exit 3,
/// the error printed); returns the error and `(FILE:LINE)` of the
/// transformation in the program.
fn refused(prelude: &str, transformation: &str) -> (String, String) {
    let dir = tempfile::tempdir().expect("temp dir");
    let out = run_program(
        dir.path(),
        "job.py",
        &queue_program(prelude, transformation),
    );
    let stdout = text(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(3),
        "not refused at the transformation:\n{stdout}\n{}",
        text(&out.stderr)
    );
    let error = stdout.lines().last().unwrap_or_default().to_string();
    let at = format!(
        "({}:{})",
        dir.path().join("job.py").display(),
        transformation_line(prelude)
    );
    (error, at)
}

#[test]
fn a_lambda_without_source_is_refused_naming_it() {
    // Made with exec, as one typed at an interactive prompt: no file holds it.
    let (error, _) = refused(
        r#"scope = {}
exec("f = lambda line: line.upper()", scope)"#,
        r#"lines.map(scope["f"])"#,
    );
    assert!(error.starts_with("ShipError: cannot ship"), "{error}");
    assert!(error.contains("`<lambda>` (<string>:1)"), "{error}");
    assert!(error.contains("source is not available"), "{error}");

    // A program read from standard input, as the REPL reads it.
    let line = transformation_line("");
    let out = command()
        .arg("-")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            child
                .stdin
                .take()
                .expect("stdin")
                .write_all(queue_program("", "lines.map(lambda l: l.upper())").as_bytes())?;
            child.wait_with_output()
        })
        .expect("running python -");
    let stdout = text(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(3),
        "{stdout}\n{}",
        text(&out.stderr)
    );
    assert!(
        stdout.contains(&format!(
            "cannot ship `<lambda>` (<stdin>:{line}): its source is not available"
        )),
        "{stdout}"
    );
}

#[test]
fn a_captured_socket_or_open_file_is_refused_naming_the_capture() {
    let (error, at) = refused(
        "import socket\nconn = socket.socket()",
        "lines.map(lambda l: (l, conn))",
    );
    assert!(error.contains(&at), "the error names {at}: {error}");
    assert!(
        error.contains("`conn`") && error.contains("socket.socket"),
        "the capture and its type: {error}"
    );

    let (error, at) = refused(
        "log = open(__file__)",
        "lines.filter(lambda l: log.write(l))",
    );
    assert!(error.contains(&at), "the error names {at}: {error}");
    assert!(
        error.contains("`log`") && error.contains("TextIOWrapper"),
        "the capture and its type: {error}"
    );
}

#[test]
fn a_module_the_runner_does_not_carry_is_refused_naming_it() {
    let (error, at) = refused("import sqlite3", "lines.map(lambda l: sqlite3.connect(l))");
    assert!(error.contains(&at), "the error names {at}: {error}");
    assert!(
        error.contains("module `sqlite3`") && error.contains("does not carry"),
        "{error}"
    );
}

#[test]
fn an_exception_in_a_lambda_fails_the_batch_with_its_traceback() {
    let dir = tempfile::tempdir().expect("temp dir");
    let program = r#"from sluice.pyspark import SparkConf, SparkContext
from sluice.pyspark.streaming import StreamingContext

def ratio(word):
    return 1 / (len(word) - 1)

conf = SparkConf().set("spark.streaming.clock", "org.apache.spark.util.ManualClock")
sc = SparkContext("local[2]", "fails", conf=conf)
ssc = StreamingContext(sc, 1)
lines = ssc.queueStream([sc.parallelize(["ab cd", "e"], 2)])
lines.flatMap(lambda line: line.split(" ")).map(ratio).pprint()
ssc.start()
ssc.awaitTermination(30)
"#;
    let out = run_program(dir.path(), "fails.py", program);
    let stderr = text(&out.stderr);
    assert!(
        !out.status.success(),
        "the failed batch must end the program:\n{stderr}"
    );
    let file = dir.path().join("fails.py").display().to_string();
    assert!(
        stderr.contains(&format!("File \"{file}\", line 5, in ratio")),
        "the traceback points at the user's line:\n{stderr}"
    );
    assert!(stderr.contains("ZeroDivisionError"), "{stderr}");
    assert!(
        stderr.contains("return 1 / (len(word) - 1)"),
        "the traceback shows the user's source line:\n{stderr}"
    );
}

#[test]
fn a_nats_stream_through_nats_utils_counts_every_message() {
    use sluice_tests::brokers::{NatsClient, NatsServer};
    let dir = tempfile::tempdir().expect("temp dir");
    let server = NatsServer::start(dir.path(), &[]);
    let client = NatsClient::connect(&server.url());
    client.create_stream("LINES", &["lines.>"]);
    let lines = ["a b a", "b c", "ünï 日本 a"];
    client.publish("lines.x", lines.map(|l| l.as_bytes().to_vec()));
    let want = word_counts(lines);
    let program = format!(
        r#"import json, sys, time
from sluice.pyspark import SparkContext
from sluice.pyspark.streaming import StreamingContext
from sluice.pyspark.streaming.nats import NatsUtils

sc = SparkContext("local[2]", "nats-words")
ssc = StreamingContext(sc, 0.2)
totals = {{}}
lines = NatsUtils.createStream(ssc, "{url}", "LINES", subject="lines.>")
counts = lines.flatMap(lambda l: l.split(" ")).map(lambda w: (w, 1)).reduceByKey(lambda a, b: a + b)

def add(rdd):
    for w, n in rdd.collect():
        totals[w] = totals.get(w, 0) + n

counts.foreachRDD(add)
ssc.start()
deadline = time.time() + 60
while sum(totals.values()) < {words} and time.time() < deadline:
    time.sleep(0.1)
ssc.stop()
print(json.dumps(totals, sort_keys=True, ensure_ascii=False))

# A setting the source refuses is an error naming its field.
ssc = StreamingContext(SparkContext("local[2]", "bad"), 1)
NatsUtils.createStream(ssc, "{url}", "LINES", start="yesterday").pprint()
try:
    ssc.start()
except Exception as e:
    print("refused:", e)
"#,
        url = server.url(),
        words = want.values().sum::<u64>(),
    );
    let out = run_program(dir.path(), "nats_words.py", &program);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", text(&out.stderr));
    let mut printed = stdout.lines();
    let got: BTreeMap<String, u64> =
        serde_json::from_str(printed.next().unwrap_or_default()).expect("the totals as JSON");
    assert_eq!(got, want, "{stdout}");
    let refused = printed.next().unwrap_or_default();
    let line = 1 + program
        .lines()
        .position(|l| l.contains("start=\"yesterday\""))
        .expect("the bad call");
    let at = format!(
        "{}:{line}: sources.nats-0.start",
        dir.path().join("nats_words.py").display()
    );
    assert!(
        refused.starts_with("refused:") && refused.contains(&at) && refused.contains("yesterday"),
        "the error names the program's line ({at}) and the setting: {refused}"
    );
}

#[test]
fn an_mqtt_stream_through_mqtt_utils_counts_per_topic() {
    use std::io::{BufRead, BufReader};
    let dir = tempfile::tempdir().expect("temp dir");
    let broker = sluice_tests::mosquitto::Mosquitto::start(dir.path());
    let program = format!(
        r#"import json, time
from sluice.pyspark import SparkContext
from sluice.pyspark.streaming import StreamingContext
from sluice.pyspark.streaming.mqtt import MQTTUtils

ssc = StreamingContext(SparkContext("local[2]", "mqtt-topics"), 0.2)
totals = {{}}
ready = []
pairs = MQTTUtils.createPairedStream(ssc, "tcp://127.0.0.1:{port}", ["devices/+/log", "probe"])

def add(rdd):
    for topic, message in rdd.collect():
        if topic == "probe":
            if not ready:
                ready.append(True)
                print("ready", flush=True)
        else:
            totals[topic] = totals.get(topic, 0) + len(message.split(" "))

pairs.foreachRDD(add)
ssc.start()
deadline = time.time() + 60
while sum(totals.values()) < 7 and time.time() < deadline:
    time.sleep(0.05)
ssc.stop()
print(json.dumps(totals, sort_keys=True))
"#,
        port = broker.port
    );
    let path = dir.path().join("mqtt_topics.py");
    std::fs::write(&path, program).expect("writing the program");
    let mut child = command()
        .arg(&path)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("running python");
    let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
    // Until the job's subscription is in place, what is published is not
    // its: probe until it answers, then send the counted messages once.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut lines = Vec::new();
        let mut line = String::new();
        while stdout.read_line(&mut line).is_ok_and(|n| n > 0) {
            lines.push(std::mem::take(&mut line));
            let _ = tx.send(lines.clone());
        }
    });
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let mut seen = Vec::new();
    while !seen.iter().any(|l: &String| l.starts_with("ready")) {
        assert!(
            std::time::Instant::now() < deadline,
            "the job never subscribed"
        );
        broker.publish("probe", [b"probe".to_vec()]);
        if let Ok(lines) = rx.recv_timeout(std::time::Duration::from_millis(200)) {
            seen = lines;
        }
    }
    broker.publish(
        "devices/1/log",
        [b"power on".to_vec(), b"power off now".to_vec()],
    );
    broker.publish("devices/2/log", [b"power on".to_vec()]);
    let out = child.wait_with_output().expect("waiting for python");
    while let Ok(lines) = rx.recv_timeout(std::time::Duration::from_secs(5)) {
        seen = lines;
    }
    assert!(out.status.success(), "{seen:?}\n{}", text(&out.stderr));
    let totals: BTreeMap<String, u64> =
        serde_json::from_str(seen.last().expect("the totals")).expect("the totals as JSON");
    assert_eq!(
        totals,
        BTreeMap::from([
            ("devices/1/log".to_string(), 5),
            ("devices/2/log".to_string(), 2)
        ])
    );
}

#[test]
fn a_kafka_direct_stream_through_kafka_utils_gives_key_value_pairs() {
    let tansu = sluice_tests::tansu::Tansu::start();
    tansu.create_topic("pylines", 2);
    let lines: Vec<Vec<u8>> = ["a b", "b c d", "ünï"]
        .iter()
        .map(|l| l.as_bytes().to_vec())
        .collect();
    tansu.produce("pylines", 2, &lines);
    let dir = tempfile::tempdir().expect("temp dir");
    let program = format!(
        r#"import json, time
from sluice.pyspark import SparkContext
from sluice.pyspark.streaming import StreamingContext
from sluice.pyspark.streaming.kafka import KafkaUtils

ssc = StreamingContext(SparkContext("local[2]", "kafka-pairs"), 0.2)
seen = []
pairs = KafkaUtils.createDirectStream(
    ssc, ["pylines"], {{"metadata.broker.list": "{brokers}", "auto.offset.reset": "smallest"}})
pairs.foreachRDD(lambda rdd: seen.extend(rdd.collect()))
ssc.start()
deadline = time.time() + 60
while len(seen) < 3 and time.time() < deadline:
    time.sleep(0.05)
ssc.stop()
print(json.dumps(sorted(seen), ensure_ascii=False))
"#,
        brokers = tansu.brokers()
    );
    let out = run_program(dir.path(), "kafka_pairs.py", &program);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", text(&out.stderr));
    let got: Vec<(String, String)> =
        serde_json::from_str(stdout.lines().last().unwrap_or_default()).expect("pairs as JSON");
    // The producer keys record i `k<i>`.
    let want: Vec<(String, String)> = vec![
        ("k0".into(), "a b".into()),
        ("k1".into(), "b c d".into()),
        ("k2".into(), "ünï".into()),
    ];
    assert_eq!(got, want, "{stdout}");
}
