//! Guest languages side by side: for the word count written in Rust, in C,
//! in Python and in JavaScript, the first start (Cranelift compiles the component), a cached
//! start (a new engine loads the artifact the first one stored), one more
//! instance, and the word count's throughput per batch, in one run.
//!
//! `cargo bench -p sluice-tests --bench languages` (env: `BENCH_LINES` per
//! batch, default 20 000; `BENCH_BATCHES`, default 5).

use sluice::LoadPlugins;
use sluice::{Limits, ManualClock, Plugin, Runtime, RuntimeConfig, StreamingContext};
use sluice_tests::{env_or, plugin};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn lines(n: usize, seed: u64) -> Vec<String> {
    let mut x = seed | 1;
    (0..n)
        .map(|_| {
            (0..10)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    format!("w{}", x % 1000)
                })
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect()
}

fn runtime(cache: &std::path::Path) -> Arc<Runtime> {
    Runtime::new(RuntimeConfig {
        cache_dir: Some(cache.to_path_buf()),
        ..RuntimeConfig::default()
    })
    .expect("runtime")
}

/// Median batch processing time of the word count on `runtime`.
fn throughput(rt: &Arc<Runtime>, wasm: &std::path::Path, batches: &[Vec<String>]) -> Duration {
    let ssc = StreamingContext::new(Duration::from_secs(1))
        .with_clock(Arc::new(ManualClock::new(0)))
        .with_workers(1)
        .with_runtime(rt.clone());
    // A Python call over a whole 20 000-line batch takes over the default
    // 1 s deadline: give both languages 30 s.
    let limits = Limits {
        call_deadline: Duration::from_secs(30),
        ..Limits::default()
    };
    let wc = ssc
        .load_plugin_with_limits("wordcount", wasm, limits)
        .expect("load");
    ssc.queue_stream(batches.to_vec(), 1)
        .flat_map(wc.func("split").expect("split"))
        .map(wc.func("pair").expect("pair"))
        .reduce_by_key(wc.func("add").expect("add"), 1)
        .foreach_rdd(|_, _| Ok(()));
    let times = Arc::new(Mutex::new(Vec::new()));
    let t = times.clone();
    ssc.add_listener(Box::new(move |b| {
        t.lock().expect("times").push(b.processing_time)
    }));
    ssc.run(None).expect("run");
    let mut v = times.lock().expect("times").clone();
    v.sort();
    v[v.len() / 2]
}

fn main() {
    // As the `sluice` binary does.
    sluice::allocator::keep_freed_memory();
    let quick = !std::env::args().any(|a| a == "--bench");
    let n = env_or("BENCH_LINES", if quick { 200 } else { 20_000 });
    let batches: Vec<Vec<String>> = (0..env_or("BENCH_BATCHES", if quick { 2 } else { 5 }))
        .map(|b| lines(n, 0x5eed + b as u64))
        .collect();
    let words = (n * 10) as f64;
    println!("## Guest languages: start-up and word-count throughput\n");
    println!(
        "1 worker, {} batches of {n} lines × 10 words; median batch.\n",
        batches.len()
    );
    println!(
        "| language | component | first start (compile) | cached start | new instance | words/s | ms/batch |"
    );
    println!("|---|--:|--:|--:|--:|--:|--:|");
    for (language, name) in [
        ("Rust", "wordcount"),
        ("C", "wordcount_c"),
        ("Python", "wordcount_py"),
        ("JavaScript", "wordcount_js"),
    ] {
        // The C plugin is built by `sluice plugin build` (as its users do).
        let wasm = if name == "wordcount_c" {
            sluice_tests::c_plugin("wordcount")
        } else {
            plugin(name)
        };
        let size = std::fs::metadata(&wasm).map_or(0, |m| m.len());
        let cache = tempfile::tempdir().expect("cache");
        let first_rt = runtime(cache.path());
        let started = Instant::now();
        let p = Plugin::load(&first_rt, name, &wasm, Limits::default()).expect("first load");
        let first = started.elapsed();
        drop(p);
        let cached_rt = runtime(cache.path());
        let started = Instant::now();
        let p = Plugin::load(&cached_rt, name, &wasm, Limits::default()).expect("cached load");
        let cached = started.elapsed();
        // One more instance: a call on two workers at once needs a second.
        let f = p.func("pair").expect("pair");
        let started = Instant::now();
        let instances_before = p
            .stats()
            .instances
            .load(std::sync::atomic::Ordering::Relaxed);
        std::thread::scope(|s| {
            for _ in 0..2 {
                s.spawn(|| {
                    let ssc = StreamingContext::new(Duration::from_secs(1))
                        .with_clock(Arc::new(ManualClock::new(0)))
                        .with_workers(1)
                        .with_runtime(cached_rt.clone());
                    ssc.queue_stream(vec![vec!["a".to_string()]], 1)
                        .map(f.clone())
                        .foreach_rdd(|_, _| Ok(()));
                    ssc.run(None).expect("run");
                });
            }
        });
        let spawned = p
            .stats()
            .instances
            .load(std::sync::atomic::Ordering::Relaxed)
            - instances_before;
        let instance = started.elapsed() / (spawned.max(1) as u32);
        let batch = throughput(&cached_rt, &wasm, &batches);
        println!(
            "| {language} | {:.1} MB | {:.2} s | {:.1} ms | {:.2} ms | {:.2} M | {:.1} |",
            size as f64 / 1e6,
            first.as_secs_f64(),
            cached.as_secs_f64() * 1e3,
            instance.as_secs_f64() * 1e3,
            words / batch.as_secs_f64() / 1e6,
            batch.as_secs_f64() * 1e3
        );
    }
    println!();
}
