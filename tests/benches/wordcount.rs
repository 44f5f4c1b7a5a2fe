//! Word count over in-memory batches: the same plugin code run as sandboxed
//! wasm and compiled natively, side by side in one run.
//!
//! `cargo bench -p sluice-tests --bench wordcount` (env: `BENCH_LINES`,
//! `BENCH_BATCHES`, `BENCH_ROUNDS`, `BENCH_WARMUP`, `BENCH_ONLY=wasm|native`,
//! `BENCH_WORKERS`). Prints words/s for each and the ratio.

use sluice::LoadPlugins;
use sluice::{Func, ManualClock, StreamingContext};
use sluice_tests::{env_or, plugin, runtime};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// `lines` lines of 10 words drawn from a 1000-word vocabulary (deterministic).
fn make_lines(lines: usize, seed: u64) -> Vec<String> {
    let vocab: Vec<String> = (0..1000)
        .map(|i| format!("w{}x{}", i * 7919 % 1000, i % 13))
        .collect();
    let mut x = seed | 1;
    (0..lines)
        .map(|_| {
            (0..10)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    vocab[(x % 1000) as usize].as_str()
                })
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect()
}

/// Runs the word count over `warmup` batches, then `batches`, and returns
/// the processing time of each of `batches`.
fn run(batches: &[Vec<String>], warmup: usize, workers: usize, native: bool) -> Vec<Duration> {
    let ssc = StreamingContext::new(Duration::from_secs(1))
        .with_clock(Arc::new(ManualClock::new(0)))
        .with_workers(workers)
        .with_runtime(runtime());
    let (split, pair, add) = if native {
        let f = wordcount::__sluice_plugin_functions();
        (
            Func::from_sdk(&f[0]),
            Func::from_sdk(&f[1]),
            Func::from_sdk(&f[2]),
        )
    } else {
        let wc = ssc
            .load_plugin("wordcount", plugin("wordcount"))
            .expect("loading wordcount");
        (
            wc.func("split").expect("split"),
            wc.func("pair").expect("pair"),
            wc.func("add").expect("add"),
        )
    };
    let input: Vec<Vec<String>> = batches
        .iter()
        .cycle()
        .take(warmup)
        .chain(batches)
        .cloned()
        .collect();
    let counts = ssc
        .queue_stream(input, workers)
        .flat_map(split)
        .map(pair)
        .reduce_by_key(add, workers);
    let keys = Arc::new(Mutex::new(0usize));
    let k = keys.clone();
    counts.foreach_rdd(move |_, rdd| {
        *k.lock().expect("lock") += rdd.count();
        Ok(())
    });
    let times = Arc::new(Mutex::new(Vec::new()));
    let t = times.clone();
    ssc.add_listener(Box::new(move |info| {
        t.lock().expect("lock").push(info.processing_time);
        if std::env::var_os("BENCH_VERBOSE").is_some() {
            let ops: Vec<String> = info
                .operators
                .iter()
                .map(|o| {
                    format!(
                        "{} {:.1}ms",
                        o.op.split(' ').next().unwrap_or(""),
                        o.time.as_secs_f64() * 1e3
                    )
                })
                .collect();
            eprintln!(
                "{} {workers}w: {}",
                if native { "native" } else { "wasm" },
                ops.join(", ")
            );
        }
    }));
    ssc.run(None).expect("running the word count");
    assert!(*keys.lock().expect("lock") > 0);
    let times = times.lock().expect("lock");
    assert_eq!(times.len(), warmup + batches.len());
    times[warmup..].to_vec()
}

/// A fixed piece of integer work (tens of milliseconds), opaque to the optimizer.
fn spin() -> u64 {
    let mut x = std::hint::black_box(0x9e37_79b9_7f4a_7c15u64);
    for _ in 0..20_000_000 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
    }
    std::hint::black_box(x)
}

/// The machine's own scaling at this moment: the time of `spin` on one
/// thread over the time of two `spin`s on two threads at once. A vCPU here
/// sometimes runs at ~60 % speed for tens of milliseconds (its host core
/// busy with something else), which a 2-worker batch, waiting for the
/// slower of its two halves, feels more than a 1-worker one.
fn machine_scaling() -> (Duration, Duration) {
    let t = std::time::Instant::now();
    spin();
    let one = t.elapsed();
    let t = std::time::Instant::now();
    std::thread::scope(|s| {
        let other = s.spawn(spin);
        spin();
        other.join().expect("spin thread");
    });
    (one, t.elapsed())
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    // As the `sluice` binary does.
    sluice::allocator::keep_freed_memory();
    // `cargo test --benches` runs benches with `--bench` absent: keep that quick.
    let quick = !std::env::args().any(|a| a == "--bench");
    let lines = env_or("BENCH_LINES", if quick { 1000 } else { 100_000 });
    // Many short rounds, alternating wasm and native: the machine's speed
    // drifts by tens of percent over minutes, and alternating often gives
    // both sides the same conditions.
    let n_batches = env_or("BENCH_BATCHES", if quick { 2 } else { 4 });
    let rounds = env_or("BENCH_ROUNDS", if quick { 1 } else { 8 });
    // Each run's first batch creates the plugin's instances and grows
    // their memory (1.5-2.5× a later batch's time): run, not counted.
    let warmup = env_or("BENCH_WARMUP", if quick { 0 } else { 1 });
    let batches: Vec<Vec<String>> = (0..n_batches)
        .map(|b| make_lines(lines, 0x9e37_79b9 + b as u64))
        .collect();
    let words = (lines * 10) as f64;
    println!("## Word count: wasm operators vs the same code compiled natively\n");
    println!(
        "{n_batches} batches × {lines} lines × 10 words in memory (no socket), split → pair → reduce_by_key(add), median batch of {rounds} rounds; each run starts with {warmup} warm-up batch(es), not counted.\n"
    );
    println!("| workers | wasm words/s | native words/s | wasm / native time |");
    println!("|--:|--:|--:|--:|");
    // `BENCH_ONLY=wasm` or `native`: one side alone (for profiling it).
    let only = std::env::var("BENCH_ONLY").ok();
    let only = only.as_deref();
    // `BENCH_WORKERS=2`: one worker count alone.
    let counts: Vec<usize> = match std::env::var("BENCH_WORKERS") {
        Ok(w) => vec![w.parse().expect("BENCH_WORKERS is a number")],
        Err(_) => vec![1, 2],
    };
    // Interleave modes and worker counts round by round, so that every
    // figure sees the same machine conditions.
    let mut times: Vec<(Vec<Duration>, Vec<Duration>)> = vec![Default::default(); counts.len()];
    let mut machine = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        let (one, two) = machine_scaling();
        machine.0.push(one);
        machine.1.push(two);
        for (c, &workers) in counts.iter().enumerate() {
            if only != Some("native") {
                times[c].0.extend(run(&batches, warmup, workers, false));
            }
            if only != Some("wasm") {
                times[c].1.extend(run(&batches, warmup, workers, true));
            }
        }
    }
    let mut per_workers = Vec::new();
    for (&workers, (wasm, native)) in counts.iter().zip(times) {
        if wasm.is_empty() || native.is_empty() {
            let (mode, times) = if wasm.is_empty() {
                ("native", native)
            } else {
                ("wasm", wasm)
            };
            let t = median(times);
            println!(
                "| {workers} | {mode} only: {:.2} M words/s |",
                words / t.as_secs_f64() / 1e6
            );
            continue;
        }
        let (w, n) = (median(wasm), median(native));
        println!(
            "| {workers} | {:.2} M | {:.2} M | {:.2} |",
            words / w.as_secs_f64() / 1e6,
            words / n.as_secs_f64() / 1e6,
            w.as_secs_f64() / n.as_secs_f64()
        );
        per_workers.push((w, n));
    }
    if per_workers.len() < 2 {
        return;
    }
    let (w1, n1) = per_workers[0];
    let (w2, n2) = per_workers[1];
    println!(
        "\nScaling from 1 to 2 workers: wasm {:.2}×, native {:.2}× (target ≥ 1.7×).",
        w1.as_secs_f64() / w2.as_secs_f64(),
        n1.as_secs_f64() / n2.as_secs_f64()
    );
    let (one, two) = (median(machine.0), median(machine.1));
    println!(
        "The machine's own, in the same rounds (a loop of integer work on 1 thread, then 2 at once): {:.2}×.",
        2.0 * one.as_secs_f64() / two.as_secs_f64()
    );
}
