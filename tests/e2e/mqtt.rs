//! MQTT sources against a real `mosquitto` on loopback: a receiver with the
//! write-ahead log, through `kill -9` of the job while messages arrive.

use sluice_tests::brokers::{self, Mosquitto, seq_counts, seq_lines, sluice_run};
use sluice_tests::{read_jsonl, sluice_bin};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Running word totals over `seq/#` at QoS 1, 50 ms batches, into `out.jsonl`.
fn totals_job(dir: &Path, port: u16) -> PathBuf {
    let source = format!(
        "type = \"mqtt\"\nurl = \"mqtt://127.0.0.1:{port}\"\ntopics = [\"seq/#\"]\nqos = 1\n"
    );
    brokers::totals_job(dir, "mqtttotals", &source, None)
}

/// A first run of `job`, killed with -9: it makes the persistent session
/// and its subscription, so that the broker keeps what is published next.
fn first_session(job: &Path, ck: &Path, dir: &Path) {
    let mut first = brokers::spawn_logged(job, ck, dir);
    std::thread::sleep(Duration::from_millis(1500));
    first.kill().expect("kill -9");
    first.wait().expect("wait");
}

/// `kill -9` of the job six times while 1200 messages arrive at QoS 1 on
/// a persistent session: every message is counted (none lost: each was in
/// the write-ahead log before the broker was told), and only one in
/// flight at a kill can come twice.
#[test]
fn kill_nine_of_an_mqtt_job_loses_nothing() {
    let dir = tempfile::tempdir().expect("temp dir");
    let broker = Mosquitto::start(dir.path());
    let job = totals_job(dir.path(), broker.port);
    let ck = dir.path().join("ck");
    first_session(&job, &ck, dir.path());
    let port = broker.port;
    let publisher = std::thread::spawn(move || {
        let broker = Mosquitto { child: None, port };
        for chunk in 0..100u64 {
            broker.publish("seq/a", seq_lines(chunk * 12..chunk * 12 + 12));
            std::thread::sleep(Duration::from_millis(30));
        }
    });
    let kills = 6;
    brokers::kill_nine_runs(&job, &ck, kills, 200, 400);
    publisher.join().expect("publisher");
    let mut child = sluice_run(&job, &ck)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    brokers::wait_until(
        Duration::from_secs(60),
        || seq_counts(dir.path()).len() >= 1200,
        || format!("counted {} of 1200 messages", seq_counts(dir.path()).len()),
    );
    child.kill().expect("kill");
    child.wait().expect("wait");
    let counts = brokers::assert_none_lost(dir.path(), 1200, "message");
    let twice: Vec<u64> = counts
        .iter()
        .filter(|(_, n)| **n > 1)
        .map(|(s, _)| *s)
        .collect();
    eprintln!(
        "{} of 1200 messages counted twice over {kills} kills: {twice:?}",
        twice.len()
    );
    assert!(
        twice.len() <= kills,
        "more than the messages in flight at the kills: {twice:?}"
    );
}

/// `examples/iot-mqtt.toml` on the test's own broker: device lines
/// published per device topic are counted per device, the malformed one
/// skipped by the plugin.
#[test]
fn the_iot_example_counts_device_actions_from_mqtt() {
    let dir = tempfile::tempdir().expect("temp dir");
    let broker = Mosquitto::start(dir.path());
    let text = sluice_tests::example_spec(
        "iot-mqtt.toml",
        &[(
            "mqtt://127.0.0.1:1883",
            &format!("mqtt://127.0.0.1:{}", broker.port),
        )],
    );
    let job = dir.path().join("iot-mqtt.toml");
    std::fs::write(
        &job,
        text + "\n[[outputs]]\nstream = \"per_device\"\ntype = \"jsonl\"\npath = \"out.jsonl\"\n",
    )
    .expect("job");
    let mut child = sluice_run(&job, &dir.path().join("ck"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    // Subscribed once its first batch ran.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !dir.path().join("out.jsonl").exists() {
        assert!(Instant::now() < deadline, "no batch in 30 s");
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(500));
    broker.publish(
        "devices/lamp-hall/log",
        ["1 lamp-hall power on", "2 lamp-hall power off", "garbage"].map(|l| l.as_bytes().to_vec()),
    );
    broker.publish("devices/fan/log", [b"3 fan power on".to_vec()]);
    let mut totals = std::collections::BTreeMap::<String, i64>::new();
    while totals.values().sum::<i64>() < 3 {
        assert!(Instant::now() < deadline, "counted {totals:?} in 30 s");
        std::thread::sleep(Duration::from_millis(100));
        totals.clear();
        for batch in read_jsonl(&dir.path().join("out.jsonl")) {
            for r in batch["records"].as_array().expect("records") {
                *totals.entry(r[0].to_string()).or_default() += r[1].as_i64().unwrap_or(0);
            }
        }
    }
    child.kill().expect("kill");
    child.wait().expect("wait");
    assert_eq!(totals.values().sum::<i64>(), 3, "{totals:?}");
    assert!(totals.keys().any(|k| k.contains("lamp-hall")), "{totals:?}");
    assert!(totals.keys().any(|k| k.contains("fan")), "{totals:?}");
}

/// Refused credentials stop the job at once, naming the broker; no retry
/// storm.
#[test]
fn wrong_mqtt_credentials_stop_the_job() {
    let dir = tempfile::tempdir().expect("temp dir");
    let broker = Mosquitto::start_with(dir.path(), Some(("sluice", "right")));
    let job = totals_job(dir.path(), broker.port);
    let text = std::fs::read_to_string(&job).expect("job").replace(
        "qos = 1\n",
        "qos = 1\nuser = \"sluice\"\npassword = \"wrong\"\n",
    );
    std::fs::write(&job, text).expect("job");
    let started = Instant::now();
    let out = sluice_run(&job, &dir.path().join("ck"))
        .output()
        .expect("run");
    assert!(!out.status.success(), "the job must fail");
    assert!(started.elapsed() < Duration::from_secs(30));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!(
            "127.0.0.1:{}: the broker refused the credentials",
            broker.port
        )),
        "{err}"
    );
}

/// The `mqtt` output: a word count's counts published at QoS 1, every
/// batch acknowledged by the broker before it counts as written.
#[test]
fn word_counts_are_published_to_mqtt() {
    use rumqttc::{Client, Event, MqttOptions, Packet, QoS};
    let dir = tempfile::tempdir().expect("temp dir");
    let broker = Mosquitto::start(dir.path());
    // A subscriber, before the job publishes.
    let (client, mut connection) = Client::new(
        MqttOptions::new("test-subscriber", "127.0.0.1", broker.port),
        64,
    );
    client
        .subscribe("counts/#", QoS::AtLeastOnce)
        .expect("subscribe");
    let (tx, rx) = std::sync::mpsc::channel::<Vec<u8>>();
    let (subscribed_tx, subscribed) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for event in connection.iter() {
            match event {
                Ok(Event::Incoming(Packet::SubAck(_))) => {
                    let _ = subscribed_tx.send(());
                }
                Ok(Event::Incoming(Packet::Publish(p))) if tx.send(p.payload.to_vec()).is_err() => {
                    return;
                }
                _ => {}
            }
        }
    });
    subscribed
        .recv_timeout(Duration::from_secs(10))
        .expect("subscribed");
    std::fs::write(
        dir.path().join("batches.json"),
        r#"[["a b a"], ["b c"], []]"#,
    )
    .expect("batches");
    let job = dir.path().join("job.toml");
    std::fs::write(
        &job,
        format!(
            r#"[job]
name = "mqttout"
batch_interval = "100ms"

[plugins.wordcount]
path = "{}"

[sources.lines]
type = "queue"
path = "batches.json"

[streams.words]
from = "lines"
op = "flat_map"
function = "wordcount.split"

[streams.pairs]
from = "words"
op = "map"
function = "wordcount.pair"

[streams.counts]
from = "pairs"
op = "reduce_by_key"
function = "wordcount.add"

[[outputs]]
stream = "counts"
type = "mqtt"
url = "mqtt://127.0.0.1:{}"
topic = "counts/out"
"#,
            sluice_tests::plugin("wordcount").display(),
            broker.port
        ),
    )
    .expect("job");
    sluice_tests::run_ok(
        Command::new(sluice_bin())
            .arg("run")
            .arg(&job)
            .env("SLUICE_CACHE_DIR", sluice_tests::cache_dir()),
    );
    let mut got = Vec::new();
    while let Ok(m) = rx.recv_timeout(Duration::from_secs(5)) {
        got.push(String::from_utf8(m).expect("text"));
        if got.len() == 4 {
            break;
        }
    }
    got.sort();
    assert_eq!(
        got,
        [r#"["a",2]"#, r#"["b",1]"#, r#"["b",1]"#, r#"["c",1]"#]
    );
}

/// The broker is down when the job starts (the job runs, reports it, and
/// retries), comes up, and is killed with -9 and started again mid-job:
/// the job subscribes again each time and counts what is published while
/// the broker is up.
#[test]
fn the_mqtt_broker_down_at_start_and_killed_mid_job() {
    let dir = tempfile::tempdir().expect("temp dir");
    let port = sluice_tests::brokers::free_port();
    let job = totals_job(dir.path(), port);
    let mut child = brokers::start_without_broker(
        &job,
        &dir.path().join("ck"),
        dir.path(),
        Duration::from_millis(800),
    );
    let wait_for = |n: usize, what: &str| {
        let deadline = Instant::now() + Duration::from_secs(30);
        while seq_counts(dir.path()).len() < n {
            assert!(
                Instant::now() < deadline,
                "{what}: counted {} of {n}",
                seq_counts(dir.path()).len()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    let mut broker = Mosquitto::start_on(dir.path(), port, None);
    // Subscribed once the receiver connected: publish until counted.
    let deadline = Instant::now() + Duration::from_secs(30);
    while seq_counts(dir.path()).is_empty() {
        assert!(
            Instant::now() < deadline,
            "nothing counted after the broker came up"
        );
        broker.publish("seq/a", seq_lines(0..1));
        std::thread::sleep(Duration::from_millis(200));
    }
    broker.publish("seq/a", seq_lines(1..100));
    wait_for(100, "before the broker's kill");
    broker.kill();
    std::thread::sleep(Duration::from_millis(500));
    let broker = Mosquitto::start_on(dir.path(), port, None);
    // The restarted broker lost the session: what is published before the
    // receiver subscribes again reaches no one, so the same line until it
    // is counted.
    let deadline = Instant::now() + Duration::from_secs(30);
    while seq_counts(dir.path()).len() <= 100 {
        assert!(
            Instant::now() < deadline,
            "nothing counted after the broker's restart"
        );
        broker.publish("seq/a", seq_lines(100..101));
        std::thread::sleep(Duration::from_millis(200));
    }
    broker.publish("seq/a", seq_lines(101..200));
    wait_for(200, "after the broker's restart");
    child.kill().expect("kill");
    child.wait().expect("wait");
    let counts = seq_counts(dir.path());
    assert_eq!(
        counts.keys().copied().collect::<Vec<_>>(),
        (0..200).collect::<Vec<_>>()
    );
    brokers::assert_logged(dir.path(), "cannot reach MQTT at");
}

/// `mqtts://` with the broker's CA: the job reads over TLS; with another
/// CA it stops at once, naming TLS (no retry storm).
#[test]
fn an_mqtt_source_over_tls_trusts_only_its_ca() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (broker, tls_port) = Mosquitto::start_tls(dir.path());
    let tls_job = |d: &Path, ca: &Path| {
        let source = format!(
            "type = \"mqtt\"\nurl = \"mqtts://127.0.0.1:{tls_port}\"\nca = \"{}\"\ntopics = [\"seq/#\"]\nqos = 1\n",
            ca.display()
        );
        brokers::totals_job(d, "mqtttls", &source, None)
    };
    let job = tls_job(dir.path(), &dir.path().join("ca.pem"));
    let mut child = sluice_run(&job, &dir.path().join("ck"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    // Published (on the plain listener) again each second until the job,
    // once subscribed over TLS, has counted them all.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut next_publish = Instant::now();
    while seq_counts(dir.path()).len() < 50 {
        assert!(
            Instant::now() < deadline,
            "the TLS job counted {} of 50 lines",
            seq_counts(dir.path()).len()
        );
        if Instant::now() >= next_publish {
            broker.publish("seq/a", seq_lines(0..50));
            next_publish = Instant::now() + Duration::from_secs(1);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.kill().expect("kill");
    child.wait().expect("wait");
    // Another CA: refused, at once.
    let other = tempfile::tempdir_in(dir.path()).expect("temp dir");
    sluice_tests::tls::test_certificates(other.path());
    let job = tls_job(other.path(), &other.path().join("ca.pem"));
    let started = Instant::now();
    let out = sluice_run(&job, &other.path().join("ck"))
        .output()
        .expect("run");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains(&format!("127.0.0.1:{tls_port}: TLS")),
        "{err}"
    );
    assert!(started.elapsed() < Duration::from_secs(30));
}

/// A job reading JSON readings from `dev/#`, keyed by topic, straight into
/// `out.jsonl`; `on_undecodable` as given.
fn readings_job(dir: &Path, port: u16, on_undecodable: &str) -> PathBuf {
    let job = dir.join("job.toml");
    std::fs::write(
        &job,
        format!(
            r#"[job]
name = "readings"
batch_interval = "50ms"
checkpoint_interval = "200ms"

[sources.readings]
type = "mqtt"
url = "mqtt://127.0.0.1:{port}"
topics = ["dev/#"]
qos = 1
decoder = "json"
element = "keyed"
on_undecodable = "{on_undecodable}"

[[outputs]]
stream = "readings"
type = "jsonl"
path = "out.jsonl"
"#
        ),
    )
    .expect("job");
    job
}

/// How often each reading `n` of `out.jsonl` was output (a batch written
/// again after a restart counted once), checking each is keyed by its
/// device's topic.
fn readings(dir: &Path) -> std::collections::BTreeMap<u64, usize> {
    let out = dir.join("out.jsonl");
    if !out.exists() {
        return Default::default();
    }
    let mut batches = std::collections::BTreeMap::new();
    for b in read_jsonl(&out) {
        batches.insert(b["batch"].to_string(), b["records"].clone());
    }
    let mut seen = std::collections::BTreeMap::new();
    for r in batches
        .values()
        .flat_map(|r| r.as_array().expect("records").clone())
    {
        let n = r[1]["n"].as_u64().expect("a reading");
        assert_eq!(r[0], format!("dev/{}", n % 3), "keyed by its topic: {r}");
        *seen.entry(n).or_insert(0) += 1;
    }
    seen
}

fn reading(n: u64) -> Vec<u8> {
    format!(r#"{{"n": {n}, "t": 20.5}}"#).into_bytes()
}

/// JSON messages keyed by their topic through `kill -9` of the job: each
/// decoded element is in the write-ahead log (as an element, not a line)
/// before the broker is told, so none is lost; a message that is not
/// JSON is left out, counted and reported, and the job goes on.
#[test]
fn json_messages_through_kill_nine_none_lost_the_undecodable_skipped() {
    let dir = tempfile::tempdir().expect("temp dir");
    let broker = Mosquitto::start(dir.path());
    let job = readings_job(dir.path(), broker.port, "skip");
    let ck = dir.path().join("ck");
    first_session(&job, &ck, dir.path());
    let port = broker.port;
    let publisher = std::thread::spawn(move || {
        let broker = Mosquitto { child: None, port };
        for n in 0..300u64 {
            broker.publish(&format!("dev/{}", n % 3), [reading(n)]);
            std::thread::sleep(Duration::from_millis(15));
        }
    });
    let kills = 4;
    brokers::kill_nine_runs(&job, &ck, kills, 300, 500);
    publisher.join().expect("publisher");
    let mut child = brokers::spawn_logged(&job, &ck, dir.path());
    broker.publish("dev/0", [b"{not json".to_vec()]);
    broker.publish("dev/1", [reading(301)]);
    brokers::wait_until(
        Duration::from_secs(60),
        || readings(dir.path()).len() >= 301 && readings(dir.path()).contains_key(&301),
        || format!("output {} of 301 readings", readings(dir.path()).len()),
    );
    child.kill().expect("kill");
    child.wait().expect("wait");
    let seen = readings(dir.path());
    let want: Vec<u64> = (0..300).chain([301]).collect();
    assert_eq!(seen.keys().copied().collect::<Vec<_>>(), want, "none lost");
    let twice: Vec<_> = seen.iter().filter(|(_, c)| **c > 1).collect();
    assert!(
        twice.len() <= kills,
        "more than in flight at the kills: {twice:?}"
    );
    brokers::assert_logged(
        dir.path(),
        "left out 1 undecodable messages so far; the latest: a message on topic `dev/0` cannot be decoded as json: not JSON",
    );
}

/// With `on_undecodable = "fail"` (the default) a message that is not JSON
/// stops the job, naming the source, its topic and why; it is not
/// acknowledged, so nothing is lost to the stop.
#[test]
fn an_undecodable_mqtt_message_stops_the_job_naming_it() {
    let dir = tempfile::tempdir().expect("temp dir");
    let broker = Mosquitto::start(dir.path());
    let job = readings_job(dir.path(), broker.port, "fail");
    let mut child = brokers::spawn_logged(&job, &dir.path().join("ck"), dir.path());
    // Published until the receiver has subscribed and output one.
    let deadline = Instant::now() + Duration::from_secs(30);
    while readings(dir.path()).is_empty() {
        assert!(Instant::now() < deadline, "nothing read in 30 s");
        broker.publish("dev/0", [reading(0)]);
        std::thread::sleep(Duration::from_millis(200));
    }
    broker.publish("dev/2", [b"\xff not text".to_vec()]);
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        assert!(Instant::now() < deadline, "the job did not stop in 30 s");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(!status.success());
    brokers::assert_logged(
        dir.path(),
        "a message on topic `dev/2` cannot be decoded as json: not JSON",
    );
}
