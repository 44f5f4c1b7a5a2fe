//! Hot-swap pause: the word count (wasm) with the plugin swapped at every
//! batch boundary (v1 ↔ v2, both loaded and compiled beforehand, as a
//! cached artifact would be) against the same job without swaps.
//!
//! `cargo bench -p sluice-tests --bench swap` (env: `BENCH_LINES` per
//! batch, `BENCH_BATCHES`). Prints, from one run, the mean batch time of
//! both, their difference (the pause a swap adds to the batch it happens
//! at, new instances included) and the time `swap_plugin` itself takes
//! (validation, off the batch path).

use sluice::LoadPlugins;
use sluice::{Limits, ManualClock, Plugin, StreamingContext};
use sluice_tests::{env_or, plugin, random_lines, runtime};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn run(batches: &[Vec<String>], swap: bool) -> (Duration, Duration) {
    let ssc = Arc::new(
        StreamingContext::new(Duration::from_secs(1))
            .with_clock(Arc::new(ManualClock::new(0)))
            .with_workers(2)
            .with_runtime(runtime()),
    );
    let v1 = ssc
        .load_plugin("wordcount", plugin("wordcount"))
        .expect("v1");
    let v2 = Plugin::load_for_job(
        &runtime(),
        "bench",
        "wordcount",
        &plugin("wordcount_v2"),
        Limits::default(),
    )
    .expect("v2");
    let f = |n: &str| v1.func(n).expect("function");
    ssc.queue_stream(batches.to_vec(), 2)
        .flat_map(f("split"))
        .map(f("pair"))
        .reduce_by_key(f("add"), 2)
        .foreach_rdd(|_, _| Ok(()));
    let times: Arc<Mutex<(Vec<Duration>, Vec<Duration>)>> = Arc::default();
    let (seen, ctx) = (times.clone(), ssc.clone());
    ssc.add_listener(Box::new(move |b| {
        let mut t = seen.lock().expect("times");
        if b.index >= 5 {
            t.0.push(b.processing_time);
        }
        if swap {
            let next = if b.index % 2 == 0 {
                v2.clone()
            } else {
                v1.clone()
            };
            let started = Instant::now();
            ctx.swap_plugin(&v1, next).expect("swap");
            t.1.push(started.elapsed());
        }
    }));
    ssc.run(None).expect("run");
    let t = times.lock().expect("times");
    let mean = |v: &[Duration]| v.iter().sum::<Duration>() / v.len().max(1) as u32;
    (mean(&t.0), mean(&t.1))
}

fn main() {
    // As the `sluice` binary does.
    sluice::allocator::keep_freed_memory();
    let lines = env_or("BENCH_LINES", 1000);
    let n = env_or("BENCH_BATCHES", 200);
    let batches: Vec<Vec<String>> = (0..n)
        .map(|i| random_lines(lines, 2000, i as u64))
        .collect();
    println!("word count, {n} batches of {lines} lines x 10 words, 2 workers");
    let (plain, _) = run(&batches, false);
    let (swapping, staging) = run(&batches, true);
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    println!("mean batch, no swaps:              {:>9.1} µs", us(plain));
    println!(
        "mean batch, a swap at every batch: {:>9.1} µs",
        us(swapping)
    );
    println!(
        "pause per swap (difference):       {:>9.1} µs",
        us(swapping) - us(plain)
    );
    println!("swap_plugin (staging, off-path):   {:>9.1} µs", us(staging));
}
