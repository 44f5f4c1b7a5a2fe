//! The chaos harness: a job with a socket source (its write-ahead log on),
//! running totals by key, an incremental window and exactly-once file
//! outputs, killed with SIGKILL at random moments and restarted on the same
//! checkpoint directory, again and again, while a line server streams
//! sequence-numbered lines `k<key> s<seq>` to it; then stopped gently.
//!
//! What must hold at the end (Flink's SemanticsCheckMapper idea, per key):
//! every sequence word is counted at most once (no repeat); a sequence
//! missing from a key's run (a gap) was in flight in the kernel at a kill;
//! each key's total equals the sequence words of that key counted; each
//! batch is in the output exactly once; and the window at every batch
//! equals the difference of the totals across the window, so the two
//! stateful operators agree through every recovery.
//!
//! The e2e tests run it short (20 kills); `scripts/chaos` and the bench
//! suite run it long.

use crate::{cache_dir, read_jsonl, sluice_bin};
use serde_json::Value;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Keys of the sequence-numbered lines.
const KEYS: usize = 7;
/// The job's batch interval and window, in batches.
const INTERVAL_MS: u64 = 200;
const WINDOW_BATCHES: u64 = 3;

/// How hard to shake the job.
#[derive(Debug, Clone)]
pub struct Chaos {
    /// SIGKILLs (each followed by a restart).
    pub kills: usize,
    /// How long each run lives before its kill: uniformly in this range, ms.
    pub run_ms: (u64, u64),
    /// One line every this long.
    pub line_every: Duration,
    /// The random seed (default: from the clock); printed in every report.
    pub seed: Option<u64>,
}

impl Chaos {
    /// The tests' form: 20 kills, runs of 0.8–2.3 s.
    pub fn short() -> Chaos {
        Chaos {
            kills: 20,
            run_ms: (800, 2300),
            line_every: Duration::from_millis(2),
            seed: None,
        }
    }
}

/// What a chaos run saw.
#[derive(Debug, Default)]
pub struct Report {
    /// The random seed of the kill times.
    pub seed: u64,
    /// SIGKILLs survived.
    pub kills: usize,
    /// Lines the server wrote to the job.
    pub sent: usize,
    /// Lines missing that were in flight at a kill (the kernel's buffers).
    pub lost_in_flight: usize,
    /// Sequence words counted more than once.
    pub repeated: Vec<usize>,
    /// Missing sequence words that were not in flight at any kill, with
    /// their distance to the nearest kill and what the next run logged.
    pub unexplained: Vec<String>,
    /// Keys whose total disagrees with their sequence words.
    pub key_errors: Vec<String>,
    /// Batches missing or repeated in an output, or a window that
    /// disagrees with the totals.
    pub output_errors: Vec<String>,
    /// Batches the job ran in all.
    pub batches: usize,
    /// How long the job took to start again after each kill, until its
    /// first batch after the kill was written.
    pub restarts: Vec<Duration>,
}

impl Report {
    /// Everything that went wrong, each naming the seed.
    pub fn problems(&self) -> Vec<String> {
        let seed = self.seed;
        let mut p = Vec::new();
        if !self.repeated.is_empty() {
            p.push(format!("seed {seed}: counted twice: {:?}", self.repeated));
        }
        if !self.unexplained.is_empty() {
            p.push(format!(
                "seed {seed}: {} of {} lines lost that were not in flight at a kill: {:?}",
                self.unexplained.len(),
                self.sent,
                &self.unexplained[..self.unexplained.len().min(5)]
            ));
        }
        for e in self.key_errors.iter().chain(&self.output_errors).take(20) {
            p.push(format!("seed {seed}: {e}"));
        }
        p
    }
}

/// The chaos jobs' plugin, streams and outputs, after their `[job]` and
/// `[sources.lines]`: lines → words → pairs → running totals
/// (`out.jsonl`) and an incremental window of `window` every `slide`
/// (`recent.jsonl`). The kill tests of a queue job share it.
pub fn totals_and_window(window: &str, slide: &str) -> String {
    crate::totals_streams()
        + &format!(
            r#"
[streams.recent]
from = "pairs"
op = "reduce_by_key_and_window"
function = "wordcount.add"
inverse = "wordcount.subtract"
window = "{window}"
slide = "{slide}"

[[outputs]]
stream = "recent"
type = "jsonl"
path = "recent.jsonl"
"#
        )
}

/// The job: lines from the server at `port` into [`totals_and_window`].
fn write_job(dir: &Path, port: u16) -> std::path::PathBuf {
    let job = dir.join("job.toml");
    let window_ms = WINDOW_BATCHES * INTERVAL_MS;
    let spec = format!(
        "[job]\nbatch_interval = \"{INTERVAL_MS}ms\"\n\n[sources.lines]\ntype = \"socket\"\nport = {port}\n"
    ) + &totals_and_window(&format!("{window_ms}ms"), &format!("{INTERVAL_MS}ms"));
    std::fs::write(&job, spec).expect("job");
    job
}

/// `sluice run JOB --checkpoint ck`, its log to `log`.
fn start(dir: &Path, job: &Path, log: Stdio) -> Child {
    Command::new(sluice_bin())
        .arg("run")
        .arg(job)
        .arg("--checkpoint")
        .arg(dir.join("ck"))
        .env("SLUICE_CACHE_DIR", cache_dir())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("spawn sluice")
}

/// The next number of a xorshift sequence (the kill tests' random times).
pub fn xorshift(x: &mut u64) -> u64 {
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
    *x
}

/// The non-zero `(word, count)` records of an output batch.
fn counts(batch: &Value) -> BTreeMap<String, i64> {
    (crate::brokers::counts(batch).into_iter())
        .filter(|(_, n)| *n != 0)
        .collect()
}

/// A random seed from the clock (odd, as xorshift needs; printed by those
/// that use it).
pub fn time_seed() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("time")
        .as_nanos() as u64
        | 1
}

/// The wall clock, ms since the epoch (the job's batch times).
fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("time")
        .as_millis() as i64
}

/// The time of the last batch in a `jsonl` output, if any: its last line
/// ends `,"time":MS}` (read from the file's end; lines are long).
fn last_batch_time(path: &Path) -> Option<i64> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = std::fs::File::open(path).ok()?;
    let len = f.metadata().ok()?.len();
    f.seek(SeekFrom::Start(len.saturating_sub(64))).ok()?;
    let mut end = String::new();
    f.read_to_string(&mut end).ok()?;
    let time = end.trim_end().rsplit_once("\"time\":")?.1;
    time.strip_suffix('}')?.parse().ok()
}

/// Runs the harness in `dir` (which it fills: the job, its checkpoints,
/// outputs and one log per run).
pub fn run(dir: &Path, chaos: &Chaos) -> Report {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("listen");
    let port = listener.local_addr().expect("addr").port();
    // The server: one line every `line_every` to whoever is connected; a
    // line counts as sent when its write succeeded.
    let sent: Arc<Mutex<Vec<Instant>>> = Arc::default();
    let done = Arc::new(AtomicBool::new(false));
    let server = {
        let (sent, done, every) = (sent.clone(), done.clone(), chaos.line_every);
        listener.set_nonblocking(true).expect("nonblocking");
        std::thread::spawn(move || {
            while !done.load(Ordering::SeqCst) {
                let Ok((mut conn, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(5));
                    continue;
                };
                conn.set_nonblocking(false).expect("blocking");
                while !done.load(Ordering::SeqCst) {
                    let seq = sent.lock().expect("sent").len();
                    if conn
                        .write_all(format!("k{} s{seq}\n", seq % KEYS).as_bytes())
                        .is_err()
                    {
                        break;
                    }
                    sent.lock().expect("sent").push(Instant::now());
                    std::thread::sleep(every);
                }
            }
        })
    };
    let job = write_job(dir, port);
    let seed = chaos.seed.unwrap_or_else(time_seed);
    let mut x = seed;
    let out = dir.join("out.jsonl");
    // Its length changes when a batch is written (rewritten files only
    // shrink when a run resumes, then grow).
    let batches_written = || std::fs::metadata(&out).map_or(0, |m| m.len());
    let mut kills = Vec::new();
    let mut restarts = Vec::new();
    for run in 0..chaos.kills {
        let log = std::fs::File::create(dir.join(format!("run-{run}.log"))).expect("log");
        let before = batches_written();
        let started = Instant::now();
        let mut child = start(dir, &job, log.into());
        let (lo, hi) = chaos.run_ms;
        let lives = Duration::from_millis(lo + xorshift(&mut x) % (hi - lo).max(1));
        // Watch for the run's first batch (after the first run) while it lives.
        let mut restarted = run == 0;
        while started.elapsed() < lives {
            if !restarted && batches_written() != before {
                restarts.push(started.elapsed());
                restarted = true;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        child.kill().expect("kill -9");
        let killed = Instant::now();
        child.wait().expect("reap");
        // The process's socket closes only once the kernel has torn the
        // process down (its memory first): writes succeed until then.
        kills.push((killed, Instant::now()));
    }
    // The last run: the server stops sending, the job takes in what is
    // left and stops gracefully (SIGTERM).
    let last = dir.join(format!("run-{}.log", chaos.kills));
    let child = start(dir, &job, std::fs::File::create(&last).expect("log").into());
    std::thread::sleep(Duration::from_millis(1500));
    done.store(true, Ordering::SeqCst);
    server.join().expect("server");
    // The job catches up first: the batches of the time it was down, then
    // what came since (bounded: a job that cannot is reported below).
    let stopped_sending = now_ms();
    let deadline = Instant::now() + Duration::from_secs(120);
    while last_batch_time(&out).is_none_or(|t| t < stopped_sending + 2 * INTERVAL_MS as i64)
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(50));
    }
    // SAFETY: kill(2) on our own child's pid.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    let mut child = child;
    let status = child.wait().expect("wait");
    let sent = sent.lock().expect("sent").clone();
    let mut report = Report {
        seed,
        kills: kills.len(),
        sent: sent.len(),
        restarts,
        ..Report::default()
    };
    if !status.success() {
        report.output_errors.push(format!(
            "the last run exited with {status}: {}",
            std::fs::read_to_string(&last).unwrap_or_default()
        ));
        return report;
    }
    let totals = read_jsonl(&out);
    let recent = read_jsonl(&dir.join("recent.jsonl"));
    report.batches = totals.len();
    check_outputs(&totals, &recent, &mut report);
    check_keys(&totals, &sent, &kills, dir, &mut report);
    report
}

/// Each batch once in each output, in order; the window at every batch
/// equals the totals' difference across the window.
fn check_outputs(totals: &[Value], recent: &[Value], report: &mut Report) {
    for (name, out) in [("out.jsonl", totals), ("recent.jsonl", recent)] {
        let indexes: Vec<u64> = out
            .iter()
            .map(|b| b["batch"].as_u64().expect("batch"))
            .collect();
        if indexes != (0..out.len() as u64).collect::<Vec<_>>() {
            report.output_errors.push(format!(
                "{name}: batches not each once in order: {indexes:?}"
            ));
            return;
        }
    }
    let totals: Vec<BTreeMap<String, i64>> = totals.iter().map(counts).collect();
    for (b, batch) in recent.iter().enumerate() {
        let now = &totals[b];
        let none = BTreeMap::new();
        let before = (b as u64)
            .checked_sub(WINDOW_BATCHES)
            .map_or(&none, |i| &totals[i as usize]);
        let want: BTreeMap<String, i64> = now
            .iter()
            .map(|(k, n)| (k.clone(), n - before.get(k).copied().unwrap_or(0)))
            .filter(|(_, n)| *n != 0)
            .collect();
        let got = counts(batch);
        if got != want {
            let differ: Vec<String> = (want.keys().chain(got.keys()))
                .filter(|k| want.get(*k) != got.get(*k))
                .take(5)
                .map(|k| format!("{k}: {:?} not {:?}", got.get(k), want.get(k)))
                .collect();
            report.output_errors.push(format!(
                "the window at batch {b} disagrees with the totals: {differ:?}"
            ));
        }
    }
}

/// Per key: no sequence word twice, gaps only where lines were in flight
/// at a kill, and the key's total equal to its sequence words counted.
fn check_keys(
    totals: &[Value],
    sent: &[Instant],
    kills: &[(Instant, Instant)],
    dir: &Path,
    report: &mut Report,
) {
    let Some(last) = totals.last() else {
        report.output_errors.push("no batch in out.jsonl".into());
        return;
    };
    let counted = counts(last);
    let mut present = vec![0i64; sent.len()];
    for (word, n) in &counted {
        if let Some(seq) = word.strip_prefix('s') {
            match seq.parse::<usize>() {
                Ok(s) if s < sent.len() => present[s] = *n,
                _ => report.key_errors.push(format!("a word never sent: {word}")),
            }
        }
    }
    report.repeated = (0..sent.len()).filter(|&s| present[s] > 1).collect();
    let lost: Vec<usize> = (0..sent.len()).filter(|&s| present[s] == 0).collect();
    // In flight: written up to 300 ms before a kill (the receiver reads
    // continuously; without the log, a kill loses whole batches), while
    // the killed process was being torn down, or just after it was gone
    // (the first writes to a dead peer still succeed).
    let in_flight = |s: usize| {
        kills.iter().any(|(k, gone)| {
            if *k >= sent[s] {
                k.duration_since(sent[s]) < Duration::from_millis(300)
            } else {
                sent[s] <= *gone || sent[s].duration_since(*gone) < Duration::from_millis(200)
            }
        })
    };
    report.lost_in_flight = lost.iter().filter(|&&s| in_flight(s)).count();
    report.unexplained = lost
        .iter()
        .copied()
        .filter(|&s| !in_flight(s))
        .map(|s| {
            let nearest = kills
                .iter()
                .map(|(k, gone)| {
                    let before = if *k >= sent[s] {
                        k.duration_since(sent[s]).as_millis() as i64
                    } else {
                        -(sent[s].duration_since(*k).as_millis() as i64)
                    };
                    (before, gone.duration_since(*k).as_millis())
                })
                .min_by_key(|(d, _)| d.abs());
            // What the run after the nearest earlier kill said (recovery,
            // the write-ahead log, errors).
            let run = kills.iter().take_while(|(k, _)| *k < sent[s]).count();
            let log =
                std::fs::read_to_string(dir.join(format!("run-{run}.log"))).unwrap_or_default();
            let said: Vec<&str> = log
                .lines()
                .filter(|l| !l.contains(" INFO sluice::run: batch"))
                .take(12)
                .collect();
            format!(
                "{s} (sent (ms before a kill, ms the process took to go): {nearest:?}; run {run} said: {said:#?})"
            )
        })
        .collect();
    for k in 0..KEYS {
        let want = (0..sent.len())
            .filter(|&s| s % KEYS == k && present[s] == 1)
            .count() as i64;
        let got = counted.get(&format!("k{k}")).copied().unwrap_or(0);
        if got != want {
            report.key_errors.push(format!(
                "key k{k}: total {got}, sequence words counted {want}"
            ));
        }
    }
}
