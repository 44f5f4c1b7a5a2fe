//! Real brokers for the tests, on loopback: each test starts its own server
//! on an ephemeral port, waits until it answers, and stops it by its pid.
//! `scripts/test` installs them (`scripts/brokers`).

pub use crate::mosquitto::Mosquitto;
use crate::read_jsonl;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Lines `k<seq % 7> s<seq>` for `seqs`: every line names its sequence,
/// so a count of the `s` words shows each line lost or counted twice.
pub fn seq_lines(seqs: std::ops::Range<u64>) -> Vec<Vec<u8>> {
    seqs.map(|s| format!("k{} s{s}", s % 7).into_bytes())
        .collect()
}

/// A job spec `job.toml` in `dir`: job `name`, 50 ms batches, checkpoints
/// every 200 ms, source `lines` of the section body `source`, running word
/// totals (stream `totals`, in `out.jsonl`), and with `counts_to` (an
/// output section's body) each batch's word counts sent there.
pub fn totals_job(dir: &Path, name: &str, source: &str, counts_to: Option<&str>) -> PathBuf {
    let counts = counts_to.map_or(String::new(), |output| {
        format!(
            "\n[streams.counts]\nfrom = \"pairs\"\nop = \"reduce_by_key\"\nfunction = \"wordcount.add\"\n\n[[outputs]]\nstream = \"counts\"\n{output}"
        )
    });
    let job = dir.join("job.toml");
    let text = format!(
        "[job]\nname = \"{name}\"\nbatch_interval = \"50ms\"\ncheckpoint_interval = \"200ms\"\n\n[sources.lines]\n{source}\n"
    ) + &crate::totals_streams()
        + &counts;
    std::fs::write(&job, text).expect("job");
    job
}

/// The running totals of each `s<seq>` word in the last batch of
/// `dir/out.jsonl` ([`totals_job`]), by sequence.
pub fn seq_counts(dir: &Path) -> std::collections::BTreeMap<u64, i64> {
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

/// The totals of [`seq_counts`] after a run fed sequences `0..n`, checked
/// to hold every one of them (none lost), `what` naming them.
pub fn assert_none_lost(dir: &Path, n: u64, what: &str) -> std::collections::BTreeMap<u64, i64> {
    let counts = seq_counts(dir);
    assert_eq!(
        counts.keys().copied().collect::<Vec<_>>(),
        (0..n).collect::<Vec<_>>(),
        "every {what}, none lost"
    );
    counts
}

/// `sluice run JOB --checkpoint CK`, with the tests' compile cache.
pub fn sluice_run(job: &Path, ck: &Path) -> Command {
    let mut c = Command::new(crate::sluice_bin());
    c.arg("run")
        .arg(job)
        .arg("--checkpoint")
        .arg(ck)
        .env("SLUICE_CACHE_DIR", crate::cache_dir());
    c
}

/// Runs the job `times` times, each killed with SIGKILL after a random
/// `least` to `least + spread` ms (a new seed each test run).
pub fn kill_nine_runs(job: &Path, ck: &Path, times: usize, least: u64, spread: u64) {
    let mut x = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("time")
        .as_nanos() as u64
        | 1;
    for _ in 0..times {
        let mut child = sluice_run(job, ck)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn");
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        std::thread::sleep(Duration::from_millis(least + x % spread));
        child.kill().expect("kill -9");
        child.wait().expect("wait");
    }
}

/// `sluice run JOB --checkpoint CK` in the background, its stderr kept in
/// `dir/stderr.log`.
pub fn spawn_logged(job: &Path, ck: &Path, dir: &Path) -> Child {
    sluice_run(job, ck)
        .stdout(Stdio::null())
        .stderr(log_file(dir))
        .spawn()
        .expect("spawn")
}

/// Starts the job while its broker is down ([`spawn_logged`]) and checks,
/// `wait` later, that it still runs.
pub fn start_without_broker(job: &Path, ck: &Path, dir: &Path, wait: Duration) -> Child {
    let mut child = spawn_logged(job, ck, dir);
    std::thread::sleep(wait);
    assert!(
        child.try_wait().expect("wait").is_none(),
        "the job runs without its broker"
    );
    child
}

/// Checks that the job's `dir/stderr.log` reports `what`.
pub fn assert_logged(dir: &Path, what: &str) {
    let log = std::fs::read_to_string(dir.join("stderr.log")).unwrap_or_default();
    assert!(log.contains(what), "the log reports `{what}`: {log}");
}

/// The `nats-server` binary (≥ 2.11): `$SLUICE_NATS_SERVER`, else the one
/// `scripts/brokers` installs under `target/`.
pub fn nats_server_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("SLUICE_NATS_SERVER") {
        return PathBuf::from(p);
    }
    let p = crate::root().join("target/brokers-venv/bin/nats-server");
    assert!(
        p.exists(),
        "nats-server is not installed at {}: run scripts/test (or scripts/brokers), which installs it",
        p.display()
    );
    p
}

/// A `nats-server -js` of the test's own, on 127.0.0.1.
pub struct NatsServer {
    child: Option<Child>,
    /// Its port.
    pub port: u16,
    store: PathBuf,
    extra: Vec<String>,
}

impl NatsServer {
    /// Starts one with JetStream, its store in `dir`, and `extra`
    /// arguments (`--user`, `--pass`, ...).
    pub fn start(dir: &Path, extra: &[&str]) -> NatsServer {
        NatsServer::start_on(dir, free_port(), extra)
    }

    /// [`NatsServer::start`] on a given port.
    pub fn start_on(dir: &Path, port: u16, extra: &[&str]) -> NatsServer {
        let mut s = NatsServer {
            child: None,
            port,
            store: dir.join("nats-store"),
            extra: extra.iter().map(|s| s.to_string()).collect(),
        };
        s.restart();
        s
    }

    /// `nats://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Starts it again (after [`NatsServer::kill`]) on the same port and store.
    pub fn restart(&mut self) {
        let child = Command::new(nats_server_bin())
            .args(["-js", "-a", "127.0.0.1", "-p"])
            .arg(self.port.to_string())
            .arg("-sd")
            .arg(&self.store)
            .args(&self.extra)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(self.log()).expect("nats-server log"))
            .spawn()
            .expect("starting nats-server");
        self.child = Some(child);
        let (port, log) = (self.port, self.log());
        wait_for_server(
            self.child.as_mut(),
            &format!("nats-server on {port}"),
            &log,
            || TcpStream::connect(("127.0.0.1", port)).is_ok(),
        );
    }

    fn log(&self) -> PathBuf {
        self.store.with_extension("log")
    }

    /// Kills it (SIGKILL, by its pid) and waits for it.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Waits up to 20 s until the server `child` (`what`, logging to `log`)
/// is `ready`; panics with its log if it exits or does not get ready.
pub fn wait_for_server(
    mut child: Option<&mut Child>,
    what: &str,
    log: &Path,
    ready: impl Fn() -> bool,
) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !ready() {
        let exited = child.as_mut().and_then(|c| c.try_wait().ok().flatten());
        if exited.is_some() || Instant::now() > deadline {
            panic!(
                "{what} did not answer ({exited:?}): {}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A port nothing listens on now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// A JetStream client for the tests' own publishing.
pub struct NatsClient {
    rt: tokio::runtime::Runtime,
    js: async_nats::jetstream::Context,
}

impl NatsClient {
    /// Connects to `url`.
    pub fn connect(url: &str) -> NatsClient {
        NatsClient::connect_with(url, async_nats::ConnectOptions::new())
    }

    /// Connects to `url` as `user` with `password`.
    pub fn connect_as(url: &str, user: &str, password: &str) -> NatsClient {
        let opts = async_nats::ConnectOptions::new()
            .user_and_password(user.to_string(), password.to_string());
        NatsClient::connect_with(url, opts)
    }

    fn connect_with(url: &str, opts: async_nats::ConnectOptions) -> NatsClient {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let client = rt
            .block_on(opts.connect(url))
            .expect("connecting to nats-server");
        // The JetStream context starts a task of its own: in the runtime.
        let js = {
            let _in = rt.enter();
            async_nats::jetstream::new(client)
        };
        NatsClient { rt, js }
    }

    /// Creates stream `name` on `subjects` (file storage).
    pub fn create_stream(&self, name: &str, subjects: &[&str]) {
        self.create_stream_keeping(name, subjects, -1);
    }

    /// Creates stream `name` on `subjects` that keeps at most `max_messages`
    /// (the oldest are dropped; -1: no limit).
    pub fn create_stream_keeping(&self, name: &str, subjects: &[&str], max_messages: i64) {
        let config = async_nats::jetstream::stream::Config {
            name: name.to_string(),
            subjects: subjects.iter().map(|s| s.to_string()).collect(),
            max_messages,
            ..Default::default()
        };
        self.rt
            .block_on(self.js.create_stream(config))
            .expect("creating a stream");
    }

    /// Publishes every payload on `subject`, each acknowledged by the stream.
    pub fn publish(&self, subject: &str, payloads: impl IntoIterator<Item = Vec<u8>>) {
        self.rt.block_on(async {
            let mut acks = Vec::new();
            for p in payloads {
                acks.push(
                    self.js
                        .publish(subject.to_string(), p.into())
                        .await
                        .expect("publish"),
                );
                if acks.len() >= 256 {
                    for a in acks.drain(..) {
                        a.await.expect("stored");
                    }
                }
            }
            for a in acks {
                a.await.expect("stored");
            }
        });
    }

    /// Every message stored in `stream`, in order.
    pub fn messages(&self, stream: &str) -> Vec<Vec<u8>> {
        self.rt.block_on(async {
            let mut s = self.js.get_stream(stream).await.expect("the stream");
            let state = s.info().await.expect("stream info").state.clone();
            let mut out = Vec::new();
            if state.messages == 0 {
                return out;
            }
            for seq in state.first_sequence..=state.last_sequence {
                if let Ok(m) = s.get_raw_message(seq).await {
                    out.push(m.payload.to_vec());
                }
            }
            out
        })
    }

    /// The stream's acknowledged position of consumer `durable`
    /// (`ack_floor` stream sequence), if it exists.
    pub fn acked(&self, stream: &str, durable: &str) -> Option<u64> {
        self.rt.block_on(async {
            let s = self.js.get_stream(stream).await.ok()?;
            let info = s.consumer_info(durable).await.ok()?;
            Some(info.ack_floor.stream_sequence)
        })
    }
}

/// The job's stderr, kept in `stderr.log` (a pipe nobody reads could fill).
pub fn log_file(dir: &Path) -> std::fs::File {
    std::fs::File::create(dir.join("stderr.log")).expect("log file")
}

/// The `(word, count)` records of a batch, sorted.
pub fn counts(batch: &serde_json::Value) -> Vec<(String, i64)> {
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
pub fn expected(n: u64) -> Vec<(String, i64)> {
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
pub fn check_output(dir: &Path, what: &str) -> u64 {
    check_batches(dir, what, |c, n| {
        assert_eq!(c, expected(n), "{what}: the first {n} records");
    })
}

/// [`check_output`] for a source of several partitions, which may each be
/// read further than the others: every batch once, in order, each the
/// totals of some records counted once each (every `s` word once, each
/// `k` word as often as the `s` words of its residue).
pub fn check_output_of_partitions(dir: &Path, what: &str) -> u64 {
    check_batches(dir, what, |c, _| {
        let mut by_residue = [0i64; 7];
        for (w, count) in c {
            if let Some(s) = w.strip_prefix('s').and_then(|s| s.parse::<u64>().ok()) {
                assert_eq!(*count, 1, "{what}: record {s} counted {count} times");
                by_residue[(s % 7) as usize] += 1;
            }
        }
        for (k, want) in by_residue.iter().enumerate() {
            let got = (c.iter())
                .find(|(w, _)| *w == format!("k{k}"))
                .map_or(0, |(_, n)| *n);
            assert_eq!(got, *want, "{what}: k{k} against the records counted");
        }
    })
}

/// Every batch once, in order, its totals never going back, each checked
/// by `check` (given its totals and how many records they count); how
/// many the last counted.
fn check_batches(dir: &Path, what: &str, check: impl Fn(&[(String, i64)], u64)) -> u64 {
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
        check(&c, n);
        assert!(
            n >= seen,
            "{what}: totals went back at batch {}",
            batch["batch"]
        );
        seen = n;
    }
    seen
}

/// Waits until the job's output has counted `n` records, then stops it
/// with SIGTERM (a last checkpoint) and waits for it.
pub fn finish(mut child: Child, dir: &Path, n: u64, what: &str) {
    wait_counted(&mut child, dir, n, what);
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    let status = child.wait().expect("wait");
    assert!(status.success(), "{what}: {status}");
}

/// Waits (`timeout` at most, looking every 50 ms) until `done()`; panics
/// saying `progress()` when it does not come.
pub fn wait_until(timeout: Duration, done: impl Fn() -> bool, progress: impl Fn() -> String) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(Instant::now() < deadline, "{} in {timeout:?}", progress());
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits (60 s at most) until the job's output has counted `n` records;
/// panics if the job ends first.
pub fn wait_counted(child: &mut Child, dir: &Path, n: u64, what: &str) {
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
}

/// What a broker bench's Sluice job did.
pub struct JobRun {
    /// Records per second from the start of the first batch interval with
    /// records to the end of the last one's processing: what went through
    /// the whole job, however far behind its batches fell.
    pub rate: f64,
    /// The same after its first batch with records (which also connects
    /// the outputs and warms the plugins' instances): from the end of that
    /// batch's processing to the end of the last one's (`None` with one
    /// batch).
    pub after_first: Option<f64>,
    /// Batches with records.
    pub batches: usize,
    /// The slowest of those to process.
    pub max_processing: Duration,
    /// The longest total delay (scheduling delay and processing) of those:
    /// within the batch interval when the job kept up with its intake.
    pub max_total_delay: Duration,
    /// The batch interval.
    pub interval: Duration,
}

/// Runs `ssc` until its batches have taken `n` records, then stops it.
pub fn run_until_counted(ssc: &sluice::StreamingContext, n: usize) -> JobRun {
    use std::sync::{Arc, Mutex};
    let interval = ssc.batch_interval();
    let batches: Arc<Mutex<Vec<sluice::BatchInfo>>> = Arc::default();
    let seen = batches.clone();
    let stop = ssc.stop_handle();
    let mut total = 0u64;
    ssc.add_listener(Box::new(move |b: &sluice::BatchInfo| {
        total += b.input_records;
        eprintln!(
            "batch {}: {} records, processed in {} ms after a delay of {} ms",
            b.time,
            b.input_records,
            b.processing_time.as_millis(),
            b.scheduling_delay.as_millis()
        );
        for s in &b.stages {
            eprintln!(
                "  stage {} ({}): {} ms, {} out",
                s.stage,
                s.streams,
                s.time.as_millis(),
                s.records_out
            );
        }
        seen.lock().expect("batches").push(b.clone());
        if total >= n as u64 {
            stop.stop();
        }
    }));
    ssc.run(None).expect("the job");
    let batches = batches.lock().expect("batches").clone();
    let busy: Vec<_> = batches.iter().filter(|b| b.input_records > 0).collect();
    let (first, last) = (
        busy.first().expect("a batch with records"),
        busy.last().expect("a batch"),
    );
    let span = Duration::from_millis((last.time.millis() - first.time.millis()) as u64)
        + interval
        + last.total_delay();
    let end =
        |b: &sluice::BatchInfo| b.time.millis() as f64 / 1000.0 + b.total_delay().as_secs_f64();
    let after_first = (busy.len() > 1).then(|| {
        let records: u64 = busy.iter().skip(1).map(|b| b.input_records).sum();
        records as f64 / (end(last) - end(first))
    });
    JobRun {
        rate: n as f64 / span.as_secs_f64(),
        after_first,
        batches: busy.len(),
        max_processing: busy
            .iter()
            .map(|b| b.processing_time)
            .max()
            .unwrap_or_default(),
        max_total_delay: busy
            .iter()
            .map(|b| b.total_delay())
            .max()
            .unwrap_or_default(),
        interval,
    }
}

/// The records of a batch, rendered.
pub fn rendered(rdd: &sluice::rdd::Rdd) -> Vec<String> {
    rdd.elements()
        .map(|(k, v)| sluice::render::to_json(&sluice::render::element(k, v)).to_string())
        .collect()
}

impl JobRun {
    /// Prints a broker bench's table: the raw consumers' rates (the first
    /// is the reference the ratios are of) and this job's (`job_reader`),
    /// and the job's batches.
    pub fn print_against(&self, raw: &[(&str, f64)], job_reader: &str) {
        let reference = raw[0].1;
        println!("| reader | records/s | of the raw consumer |");
        println!("|---|--:|--:|");
        for (reader, rate) in raw {
            println!("| {reader} | {rate:.0} | {:.2} |", rate / reference);
        }
        println!(
            "| {job_reader} | {:.0} | {:.2} |",
            self.rate,
            self.rate / reference
        );
        if let Some(r) = self.after_first {
            println!(
                "| the same after its first batch | {r:.0} | {:.2} |",
                r / reference
            );
        }
        println!(
            "\nSluice: {} batches with records, the slowest processed in {:.0} ms; the longest total delay {:.0} ms ({} the {:.0} ms interval).",
            self.batches,
            self.max_processing.as_secs_f64() * 1000.0,
            self.max_total_delay.as_secs_f64() * 1000.0,
            if self.max_total_delay <= self.interval {
                "kept up: within"
            } else {
                "fell behind: over"
            },
            self.interval.as_secs_f64() * 1000.0
        );
    }
}
