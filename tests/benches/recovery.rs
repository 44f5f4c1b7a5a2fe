//! Checkpointing cost and recovery time of a stateful word count (wasm
//! `split`/`pair`, `update_state_by_key` running totals over a vocabulary
//! of `BENCH_VOCAB` words).
//!
//! `cargo bench -p sluice-tests --bench recovery` (env: `BENCH_LINES` per
//! batch, `BENCH_VOCAB`). Prints, from one run: the mean batch time without
//! checkpoints, with a full checkpoint every 10 batches (a batch-log record
//! in between) and with a full checkpoint every batch; and the time a job
//! takes to recover — restore the last full checkpoint, re-run the logged
//! batches, finish the batch it died in — when it died 1 batch and 9
//! batches after its last full checkpoint.

use sluice::LoadPlugins;
use sluice::{ManualClock, StreamingContext};
use sluice_tests::{env_or, plugin, random_lines, runtime};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const BATCHES: usize = 40;

/// When each batch finished, by index.
type Completions = Arc<Mutex<Vec<(u64, Instant)>>>;

/// Builds the job; `die_at`: an output fails at that batch (a crash: its
/// batch is not checkpointed). Returns the context and the completion
/// instants of the batches, by index.
fn job(
    input: &[Vec<String>],
    ck: Option<(&Path, u64)>,
    die_at: Option<u64>,
) -> (StreamingContext, Completions) {
    // The baseline without checkpoints keeps its state in memory only.
    let mut ssc = StreamingContext::new(Duration::from_secs(1))
        .with_clock(Arc::new(ManualClock::new(0)))
        .with_workers(2)
        .with_runtime(runtime())
        .with_state_in_memory();
    if let Some((dir, every)) = ck {
        ssc = ssc
            .with_checkpoint(dir)
            .with_checkpoint_interval(Duration::from_secs(every));
    }
    let wc = ssc
        .load_plugin("wordcount", plugin("wordcount"))
        .expect("loading wordcount");
    let f = |n: &str| wc.func(n).expect("function");
    let done: Completions = Arc::default();
    let seen = done.clone();
    ssc.queue_stream(input.to_vec(), 2)
        .flat_map(f("split"))
        .map(f("pair"))
        .update_state_by_key(f("running_total"), 2)
        .foreach_batch(move |b| {
            if die_at == Some(b.index) {
                return Err(sluice::Error::Internal("crash".to_string()));
            }
            seen.lock().expect("done").push((b.index, Instant::now()));
            Ok(())
        });
    (ssc, done)
}

/// Mean time per batch after the first 5, with a full checkpoint every
/// `every` batches (or none).
fn per_batch(input: &[Vec<String>], every: Option<u64>) -> Duration {
    let dir = tempfile::tempdir().expect("temp dir");
    let (ssc, done) = job(input, every.map(|e| (dir.path(), e)), None);
    ssc.run(None).expect("run");
    let done = done.lock().expect("done");
    let from = done[4].1;
    (done[done.len() - 1].1 - from) / (done.len() as u32 - 5)
}

/// Time from `run` to the end of batch `die_at` when resuming after a
/// crash in it (full checkpoints every 10 batches).
fn recovery(input: &[Vec<String>], die_at: u64) -> (Duration, u64) {
    let dir = tempfile::tempdir().expect("temp dir");
    let (ssc, _) = job(input, Some((dir.path(), 10)), Some(die_at));
    assert!(ssc.run(None).is_err(), "the crash");
    let size = std::fs::read_dir(dir.path())
        .expect("ck")
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("checkpoint-"))
        .map(|e| e.metadata().map_or(0, |m| m.len()))
        .max()
        .unwrap_or(0);
    let (ssc, done) = job(input, Some((dir.path(), 10)), None);
    let started = Instant::now();
    // Resumes at the batch after the last full checkpoint (index 20 here):
    // re-runs the logged ones, then the one that died.
    let last_full = die_at / 10 * 10;
    ssc.run(Some(die_at - last_full)).expect("resume");
    let done = done.lock().expect("done");
    let end = done
        .iter()
        .find(|(i, _)| *i == die_at)
        .expect("the batch that died")
        .1;
    (end - started, size)
}

fn main() {
    // As the `sluice` binary does.
    sluice::allocator::keep_freed_memory();
    let lines = env_or("BENCH_LINES", 2000);
    let vocab = env_or("BENCH_VOCAB", 50_000) as u64;
    let input: Vec<Vec<String>> = (0..BATCHES)
        .map(|i| random_lines(lines, vocab, i as u64))
        .collect();
    println!(
        "stateful word count, batches of {lines} lines x 10 words over {vocab} words (state: up to {vocab} keys)"
    );
    let none = per_batch(&input, None);
    let every10 = per_batch(&input, Some(10));
    let every1 = per_batch(&input, Some(1));
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!(
        "mean batch time, no checkpoint:                    {:>8.2} ms",
        ms(none)
    );
    println!(
        "  full checkpoint every 10 batches, log between:  {:>8.2} ms ({:.2}x)",
        ms(every10),
        every10.as_secs_f64() / none.as_secs_f64()
    );
    println!(
        "  full checkpoint every batch:                    {:>8.2} ms ({:.2}x)",
        ms(every1),
        every1.as_secs_f64() / none.as_secs_f64()
    );
    let (near, size) = recovery(&input, 21);
    let (far, _) = recovery(&input, 29);
    println!("checkpoint file: {:.1} MiB", size as f64 / (1 << 20) as f64);
    println!(
        "recovery, died 1 batch after a full checkpoint:    {:>8.2} ms (restore + 1 batch)",
        ms(near)
    );
    println!(
        "recovery, died 9 batches after a full checkpoint:  {:>8.2} ms (restore + 8 re-run + 1; {:.2}x a batch each)",
        ms(far),
        (far.as_secs_f64() - near.as_secs_f64()) / 8.0 / none.as_secs_f64()
    );
}
