//! Object storage against local disk, side by side in one run, on a local
//! S3 server (moto, on loopback; `scripts/brokers` installs it):
//!
//! 1. the file word count (wasm `split`/`pair`, `reduce_by_key`) over the
//!    same `BENCH_FILES` files of `BENCH_FILE_LINES` lines, read by the
//!    `text_files` source from a local directory and from an `s3://`
//!    prefix, `BENCH_FILES / 10` files a batch: lines/s of each, and the
//!    ratio;
//! 2. a stateful word count (`update_state_by_key` running totals over
//!    `BENCH_VOCAB` words, `BENCH_LINES` lines a batch, batches of
//!    `BENCH_INTERVAL_MS` on the real clock) with a full checkpoint every
//!    batch in a local directory and in S3, and without checkpoints: total
//!    delay p50 and p99 of each, and S3's p99 against the local one's.
//!
//! `cargo bench -p sluice-tests --bench objects` (or `scripts/bench objects`).

use sluice::LoadPlugins;
use sluice::receiver::file_store::{FileStore, LocalDir};
use sluice::{ManualClock, StreamingContext};
use sluice_objects::{S3Store, S3Url};
use sluice_tests::s3::S3Server;
use sluice_tests::{env_or, plugin, random_lines, runtime};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Puts a context's checkpoints somewhere.
type WithCheckpoints<'a> = &'a dyn Fn(StreamingContext) -> StreamingContext;

fn context() -> StreamingContext {
    StreamingContext::new(Duration::from_secs(1))
        .with_clock(Arc::new(ManualClock::new(0)))
        .with_workers(2)
        .with_runtime(runtime())
}

/// The file word count over `store`, `per_batch` files a batch until
/// `files` are read: the time it took and the words counted.
fn file_word_count(store: Box<dyn FileStore>, files: usize, per_batch: usize) -> (Duration, u64) {
    let ssc = context();
    let wc = ssc
        .load_plugin("wordcount", plugin("wordcount"))
        .expect("loading wordcount");
    let f = |n: &str| wc.func(n).expect("function");
    let words: Arc<Mutex<u64>> = Arc::default();
    let seen = words.clone();
    ssc.text_file_stream_in(store, true, 2, Some(per_batch), None)
        .flat_map(f("split"))
        .map(f("pair"))
        .reduce_by_key(f("add"), 2)
        .foreach_batch(move |b| {
            let n: u64 = (b.records.iter()).map(|r| r[1].as_u64().unwrap_or(0)).sum();
            *seen.lock().expect("words") += n;
            Ok(())
        });
    let started = Instant::now();
    ssc.run(Some(files.div_ceil(per_batch) as u64))
        .expect("file word count");
    let n = *words.lock().expect("words");
    (started.elapsed(), n)
}

/// Total delays (scheduling delay + processing time, after the first 5
/// batches) of the stateful word count on the real clock at `interval`,
/// with a full checkpoint every batch where `checkpoint` puts it (`None`:
/// none).
fn stateful(
    input: &[Vec<String>],
    interval: Duration,
    checkpoint: Option<WithCheckpoints<'_>>,
) -> Vec<Duration> {
    // The baseline without checkpoints keeps its state in memory only.
    let mut ssc = StreamingContext::new(interval)
        .with_workers(2)
        .with_runtime(runtime())
        .with_state_in_memory();
    if let Some(with) = checkpoint {
        ssc = with(ssc).with_checkpoint_interval(interval);
    }
    let wc = ssc
        .load_plugin("wordcount", plugin("wordcount"))
        .expect("loading wordcount");
    let f = |n: &str| wc.func(n).expect("function");
    ssc.queue_stream(input.to_vec(), 2)
        .flat_map(f("split"))
        .map(f("pair"))
        .update_state_by_key(f("running_total"), 2)
        .foreach_batch(|_| Ok(()));
    let delays: Arc<Mutex<Vec<Duration>>> = Arc::default();
    let seen = delays.clone();
    ssc.add_listener(Box::new(move |info: &sluice::BatchInfo| {
        if info.index >= 5 {
            seen.lock()
                .expect("delays")
                .push(info.scheduling_delay + info.processing_time);
        }
    }));
    ssc.run(None).expect("stateful word count");
    let delays = delays.lock().expect("delays");
    delays.clone()
}

fn quantile(sorted: &[Duration], q: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn main() {
    let files = env_or("BENCH_FILES", 40);
    let file_lines = env_or("BENCH_FILE_LINES", 20_000);
    let s3 = S3Server::start();
    s3.create_bucket("bench");

    // 1. The same files on disk and in the bucket.
    let dir = tempfile::tempdir().expect("temp dir");
    let bucket = s3.bucket("bench", "inbox");
    let mut bytes = 0;
    for i in 0..files {
        let text = random_lines(file_lines, 10_000, i as u64 + 1).join("\n") + "\n";
        bytes += text.len();
        let name = format!("part-{i:04}.txt");
        std::fs::write(dir.path().join(&name), &text).expect("write a file");
        assert!(bucket.put_if_absent(&name, text.as_bytes()).expect("put"));
    }
    let per_batch = (files / 10).max(1);
    let local = file_word_count(
        Box::new(LocalDir(dir.path().to_path_buf())),
        files,
        per_batch,
    );
    let remote = file_word_count(
        Box::new(
            sluice_objects::S3Dir::new(
                &S3Url::parse("s3://bench/inbox/").expect("url"),
                &s3.settings(),
            )
            .expect("the S3 prefix"),
        ),
        files,
        per_batch,
    );
    assert_eq!(local.1, remote.1, "both count the same words");
    let lines = (files * file_lines) as f64;
    println!(
        "## Object storage: file word count from S3 vs local disk\n\n{files} files of {file_lines} lines ({:.1} MiB), {per_batch} a batch, wasm word count, 2 workers; S3 is moto on loopback.\n",
        bytes as f64 / (1 << 20) as f64
    );
    println!("| files from | time | lines/s | of local |\n|---|---|---|---|");
    for (what, (took, _)) in [("local directory", local), ("s3:// prefix", remote)] {
        println!(
            "| {what} | {:.2} s | {:.0} | {:.2} |",
            took.as_secs_f64(),
            lines / took.as_secs_f64(),
            local.0.as_secs_f64() / took.as_secs_f64()
        );
    }

    // 2. Checkpoints every batch: none, local, S3.
    let batch_lines = env_or("BENCH_LINES", 20_000);
    let vocab = env_or("BENCH_VOCAB", 10_000) as u64;
    let interval = Duration::from_millis(env_or("BENCH_INTERVAL_MS", 100) as u64);
    let input: Vec<Vec<String>> = (0..60)
        .map(|b| random_lines(batch_lines, vocab, b + 1))
        .collect();
    let ck_dir = tempfile::tempdir().expect("temp dir");
    let logs = tempfile::tempdir().expect("temp dir");
    let store = Arc::new(S3Store::new(s3.bucket("bench", "checkpoints")));
    let local_ck = |ssc: StreamingContext| ssc.with_checkpoint(ck_dir.path());
    let s3_ck = |ssc: StreamingContext| ssc.with_checkpoint_store(logs.path(), store.clone());
    let runs: [(&str, Option<WithCheckpoints<'_>>); 3] = [
        ("no checkpoints", None),
        ("local directory", Some(&local_ck)),
        ("s3:// prefix", Some(&s3_ck)),
    ];
    println!(
        "\n## Object storage: checkpoint cost on batch time\n\nStateful word count (`update_state_by_key`), {batch_lines} lines a batch over {vocab} words, {} ms batches on the real clock, a full checkpoint every batch, 55 batches measured: total delay (scheduling delay + processing time).\n",
        interval.as_millis()
    );
    println!("| checkpoints in | total delay p50 | p99 | p99 of local |\n|---|---|---|---|");
    let mut local_p99 = None;
    for (what, with) in runs {
        let mut times = stateful(&input, interval, with);
        times.sort();
        let p99 = quantile(&times, 0.99);
        if what == "local directory" {
            local_p99 = Some(p99);
        }
        let of_local = local_p99.map_or("—".to_string(), |l| format!("{:.2}", ms(p99) / ms(l)));
        println!(
            "| {what} | {:.1} ms | {:.1} ms | {of_local} |",
            ms(quantile(&times, 0.5)),
            ms(p99)
        );
    }
}
