//! Word count over in-memory batches: the same plugin code run as sandboxed
//! wasm and compiled natively, side by side in one run.
//!
//! `cargo bench -p sluice-tests --bench wordcount` (env: `BENCH_LINES`,
//! `BENCH_BATCHES`, `BENCH_ROUNDS`). Prints words/s for each and the ratio.

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

/// Runs the word count over `batches` and returns the processing time of each batch.
fn run(batches: &[Vec<String>], workers: usize, native: bool) -> Vec<Duration> {
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
    let counts = ssc
        .queue_stream(batches.to_vec(), workers)
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
        t.lock().expect("lock").push(info.processing_time)
    }));
    ssc.run(None).expect("running the word count");
    assert!(*keys.lock().expect("lock") > 0);
    times.lock().expect("lock").clone()
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    // `cargo test --benches` runs benches with `--bench` absent: keep that quick.
    let quick = !std::env::args().any(|a| a == "--bench");
    let lines = env_or("BENCH_LINES", if quick { 1000 } else { 100_000 });
    let n_batches = env_or("BENCH_BATCHES", if quick { 2 } else { 6 });
    let rounds = env_or("BENCH_ROUNDS", if quick { 1 } else { 3 });
    let batches: Vec<Vec<String>> = (0..n_batches)
        .map(|b| make_lines(lines, 0x9e37_79b9 + b as u64))
        .collect();
    let words = (lines * 10) as f64;
    println!("## Word count: wasm operators vs the same code compiled natively\n");
    println!(
        "{n_batches} batches × {lines} lines × 10 words in memory (no socket), split → pair → reduce_by_key(add), median batch of {rounds} rounds.\n"
    );
    println!("| workers | wasm words/s | native words/s | wasm / native time |");
    println!("|--:|--:|--:|--:|");
    let mut per_workers = Vec::new();
    for workers in [1usize, 2] {
        // Interleave the modes so both see the same machine conditions.
        let (mut wasm, mut native) = (Vec::new(), Vec::new());
        for _ in 0..rounds {
            wasm.extend(run(&batches, workers, false));
            native.extend(run(&batches, workers, true));
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
    let (w1, n1) = per_workers[0];
    let (w2, n2) = per_workers[1];
    println!(
        "\nScaling from 1 to 2 workers: wasm {:.2}×, native {:.2}× (target ≥ 1.7×).",
        w1.as_secs_f64() / w2.as_secs_f64(),
        n1.as_secs_f64() / n2.as_secs_f64()
    );
}
