//! `reduce_by_key_and_window` with and without an inverse function, at
//! window/slide = 10 and 100, with the word-count plugin (wasm).
//!
//! `cargo bench -p sluice-tests --bench window` (env: `BENCH_LINES` per
//! batch, `BENCH_SLIDES` measured after the window fills). Prints the mean
//! time per slide of each variant and the ratios, all from one run.

use sluice::LoadPlugins;
use sluice::{ManualClock, StreamingContext};
use sluice_tests::{env_or, plugin, random_lines, runtime};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Mean time per slide once the window is full.
fn run(window: u64, inverse: bool, lines: usize, slides: usize) -> Duration {
    let total = window as usize + slides;
    let batches: Vec<Vec<String>> = (0..total)
        .map(|i| random_lines(lines, 2000, i as u64))
        .collect();
    // The operator's cost, without checkpoints: its state in memory only.
    let ssc = StreamingContext::new(Duration::from_secs(1))
        .with_clock(Arc::new(ManualClock::new(0)))
        .with_workers(2)
        .with_runtime(runtime())
        .with_state_in_memory();
    let wc = ssc
        .load_plugin("wordcount", plugin("wordcount"))
        .expect("loading wordcount");
    let f = |n: &str| wc.func(n).expect("function");
    let times: Arc<Mutex<Vec<Duration>>> = Arc::default();
    let seen = times.clone();
    let mut last = Instant::now();
    ssc.queue_stream(batches, 2)
        .flat_map(f("split"))
        .map(f("pair"))
        .reduce_by_key_and_window(
            f("add"),
            inverse.then(|| f("subtract")),
            Duration::from_secs(window),
            Duration::from_secs(1),
            2,
            None,
        )
        .foreach_rdd(move |_, _| {
            let now = Instant::now();
            seen.lock().expect("times").push(now - last);
            last = now;
            Ok(())
        });
    ssc.run(None).expect("run");
    let times = times.lock().expect("times");
    let measured = &times[window as usize..];
    measured.iter().sum::<Duration>() / measured.len() as u32
}

fn main() {
    // As the `sluice` binary does.
    sluice::allocator::keep_freed_memory();
    let lines = env_or("BENCH_LINES", 2000);
    let slides = env_or("BENCH_SLIDES", 20);
    println!(
        "reduce_by_key_and_window, slide 1 batch of {lines} lines x 10 words, mean of {slides} slides"
    );
    for window in [10u64, 100] {
        let without = run(window, false, lines, slides);
        let with = run(window, true, lines, slides);
        println!(
            "window {window:>3}: without inverse {:>8.2} ms/slide, with inverse {:>8.2} ms/slide, ratio {:.2}",
            without.as_secs_f64() * 1e3,
            with.as_secs_f64() * 1e3,
            without.as_secs_f64() / with.as_secs_f64()
        );
    }
}
