//! MQTT sources against a real `mosquitto` on loopback: a receiver with the
//! write-ahead log, through `kill -9` of the job while messages arrive.

use sluice_tests::brokers::Mosquitto;
use sluice_tests::{read_jsonl, sluice_bin};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Running word totals over `seq/#` at QoS 1, 50 ms batches, into `out.jsonl`.
fn totals_job(dir: &Path, port: u16) -> PathBuf {
    let job = dir.join("job.toml");
    std::fs::write(
        &job,
        format!(
            r#"[job]
name = "mqtttotals"
batch_interval = "50ms"
checkpoint_interval = "200ms"

[plugins.wordcount]
path = "{}"

[sources.lines]
type = "mqtt"
url = "mqtt://127.0.0.1:{port}"
topics = ["seq/#"]
qos = 1

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

fn sluice(job: &Path, ck: &Path) -> Command {
    let mut c = Command::new(sluice_bin());
    c.arg("run")
        .arg(job)
        .arg("--checkpoint")
        .arg(ck)
        .env("SLUICE_CACHE_DIR", sluice_tests::cache_dir());
    c
}

/// The last batch's count of each `s<seq>` word, by sequence.
fn seq_counts(dir: &Path) -> std::collections::BTreeMap<u64, i64> {
    let out = dir.join("out.jsonl");
    if !out.exists() {
        return Default::default();
    }
    let batches = read_jsonl(&out);
    let Some(last) = batches.last() else {
        return Default::default();
    };
    (last["records"].as_array().expect("records").iter())
        .filter_map(|r| {
            let w = r[0].as_str()?;
            Some((w.strip_prefix('s')?.parse().ok()?, r[1].as_i64()?))
        })
        .collect()
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
    // A first run makes the persistent session and its subscription.
    let mut first = sluice(&job, &ck)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    std::thread::sleep(Duration::from_millis(1500));
    first.kill().expect("kill -9");
    first.wait().expect("wait");
    let port = broker.port;
    let publisher = std::thread::spawn(move || {
        let broker = Mosquitto { child: None, port };
        for chunk in 0..100u64 {
            let lines =
                (chunk * 12..chunk * 12 + 12).map(|s| format!("k{} s{s}", s % 7).into_bytes());
            broker.publish("seq/a", lines);
            std::thread::sleep(Duration::from_millis(30));
        }
    });
    let mut x = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("time")
        .as_nanos() as u64
        | 1;
    let kills = 6;
    for _ in 0..kills {
        let mut child = sluice(&job, &ck)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn");
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        std::thread::sleep(Duration::from_millis(200 + x % 400));
        child.kill().expect("kill -9");
        child.wait().expect("wait");
    }
    publisher.join().expect("publisher");
    let mut child = sluice(&job, &ck)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    let deadline = Instant::now() + Duration::from_secs(60);
    while seq_counts(dir.path()).len() < 1200 {
        assert!(
            Instant::now() < deadline,
            "counted {} of 1200 messages in 60 s",
            seq_counts(dir.path()).len()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    child.kill().expect("kill");
    child.wait().expect("wait");
    let counts = seq_counts(dir.path());
    assert_eq!(
        counts.keys().copied().collect::<Vec<_>>(),
        (0..1200).collect::<Vec<_>>(),
        "every message, none lost"
    );
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
