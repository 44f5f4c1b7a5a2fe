//! Isolation on a shared server, measured in one process (`sluice serve`'s
//! `Server`, no HTTP):
//!
//! 1. Tenant B's word count (generator source, 100 ms batches, one worker):
//!    its batch processing time p50/p99 alone, then while tenant A
//!    misbehaves — a job burning CPU far over A's share (0.5 core), and
//!    jobs with an infinite loop, a memory bomb and an output bomb,
//!    resubmitted as soon as each fails.
//! 2. 100 small jobs of one tenant in the process: time to submit them
//!    all, memory and threads, and their batches' processing time and
//!    scheduling delay.
//!
//! `cargo bench -p sluice-tests --bench tenants` (env: `BENCH_BATCHES` per
//! phase, default 100; `BENCH_JOBS`, default 100).

use serde_json::Value;
use sluice::server::{Server, ServerConfig, TenantLimits};
use sluice_tests::{cache_dir, env_or, plugin};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

fn server(dir: &std::path::Path) -> Arc<Server> {
    std::fs::create_dir_all(dir.join("cache")).expect("cache");
    if let Ok(entries) = std::fs::read_dir(cache_dir()) {
        for e in entries.flatten() {
            let _ = std::fs::copy(e.path(), dir.join("cache").join(e.file_name()));
        }
    }
    let mut config = ServerConfig::new(dir.to_path_buf(), "bench-admin-token-0000".to_string());
    config.max_instances = 400;
    Server::open(config).expect("server")
}

fn limits(v: Value) -> Option<TenantLimits> {
    Some(serde_json::from_value(v).expect("limits"))
}

fn upload(s: &Server, tenant: &str, name: &str) -> BTreeMap<String, String> {
    let bytes = std::fs::read(plugin(name)).expect("plugin");
    let r = s.add_plugin(tenant, name, &bytes).expect("upload");
    [(name.to_string(), format!("{name}@{}", r.digest))].into()
}

fn wordcount(name: &str, interval: &str, rate: u64) -> String {
    format!(
        r#"[job]
name = "{name}"
batch_interval = "{interval}"
workers = 1
[plugins.wordcount]
path = "x.wasm"
[sources.lines]
type = "generator"
rate = {rate}
words_per_line = 10
[streams.words]
from = "lines"
op = "flat_map"
function = "wordcount.split"
[streams.pairs]
from = "words"
op = "map"
function = "wordcount.pair"
[streams.counts]
from = "pairs"
op = "reduce_by_key"
function = "wordcount.add"
partitions = 1
[[outputs]]
stream = "counts"
type = "jsonl"
path = "out.jsonl"
"#
    )
}

fn hostile(name: &str, function: &str, batches: &Value) -> (String, BTreeMap<String, String>) {
    let spec = format!(
        r#"[job]
name = "{name}"
batch_interval = "100ms"
clock = "system"
[plugins.hostile]
path = "x.wasm"
[sources.lines]
type = "queue"
path = "in.json"
[streams.out]
from = "lines"
op = "{op}"
function = "hostile.{function}"
[[outputs]]
stream = "out"
type = "jsonl"
path = "out.jsonl"
"#,
        op = if function == "flood" {
            "flat_map"
        } else {
            "map"
        }
    );
    (spec, [("in.json".to_string(), batches.to_string())].into())
}

/// Processing times (ms) of a job's batches with index ≥ `from`.
fn processing(s: &Server, tenant: &str, job: &str, from: u64) -> Vec<f64> {
    s.job_metrics(tenant, job).expect("metrics").status()["recent"]
        .as_array()
        .expect("recent")
        .iter()
        .filter(|b| b["index"].as_u64().unwrap_or(0) >= from)
        .map(|b| b["processing_ms"].as_f64().expect("processing"))
        .collect()
}

fn batches_done(s: &Server, tenant: &str, job: &str) -> u64 {
    s.job(tenant, job).expect("job")["batches"]
        .as_u64()
        .unwrap_or(0)
}

fn percentile(v: &[f64], p: f64) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        return f64::NAN;
    }
    v[((v.len() - 1) as f64 * p).round() as usize]
}

fn isolation(dir: &std::path::Path, per_phase: u64) {
    let s = server(dir);
    s.create_tenant("b", limits(serde_json::json!({"max_workers": 1})))
        .expect("b");
    s.create_tenant(
        "a",
        limits(serde_json::json!({"max_workers": 1, "cpu_share": 0.5, "deadline_ms": 300, "memory_bytes": 64 << 20, "output_bytes": 8 << 20, "max_jobs": 20})),
    )
    .expect("a");
    let wc = upload(&s, "b", "wordcount");
    let hostile_plugin = upload(&s, "a", "hostile");
    // 20 000 lines/s × 10 words: 2000 lines per 100 ms batch.
    s.submit(
        "b",
        &wordcount("wc", "100ms", 20_000),
        &wc,
        &BTreeMap::new(),
    )
    .expect("b's job");
    let warm = 10;
    while batches_done(&s, "b", "wc") < warm + per_phase {
        std::thread::sleep(Duration::from_millis(50));
    }
    let alone = processing(&s, "b", "wc", warm);
    // A misbehaves: a CPU hog over its share, and the three bombs, each
    // resubmitted when it fails.
    let heavy: Vec<Value> = (0..100_000)
        .map(|_| serde_json::json!(["burn:30"]))
        .collect();
    let (spec, files) = hostile("hog", "burn", &Value::Array(heavy));
    s.submit("a", &spec, &hostile_plugin, &files).expect("hog");
    let start_index = batches_done(&s, "b", "wc") + 2;
    let bombs = [("loop", "spin"), ("bomb", "bomb"), ("flood", "flood")];
    let mut failures = 0;
    let started = Instant::now();
    while batches_done(&s, "b", "wc") < start_index + per_phase {
        for (job, function) in bombs {
            let state = s
                .job("a", job)
                .map(|j| j["status"]["state"].as_str().unwrap_or("").to_string())
                .unwrap_or_default();
            if state == "running" {
                continue;
            }
            if state == "failed" {
                failures += 1;
                s.delete_job("a", job).expect("delete");
            }
            let batches = serde_json::json!([["x"], [function], ["y"]]);
            let (spec, files) = hostile(job, function, &batches);
            s.submit("a", &spec, &hostile_plugin, &files).expect("bomb");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let noisy = processing(&s, "b", "wc", start_index);
    let elapsed = started.elapsed();
    s.shutdown();
    println!("## Tenant B's batch processing time, alone and beside a hostile tenant A\n");
    println!(
        "B: word count, 2000 lines × 10 words per 100 ms batch, 1 worker. A (CPU share 0.5 core): a job burning CPU over its share, and an infinite loop, a memory bomb and an output bomb resubmitted whenever they fail ({failures} failures in {:.1} s).\n",
        elapsed.as_secs_f64()
    );
    println!("| B's batches | n | p50 | p99 | max |");
    println!("|---|---|---|---|---|");
    for (what, v) in [("alone", &alone), ("while A misbehaves", &noisy)] {
        println!(
            "| {what} | {} | {:.2} ms | {:.2} ms | {:.2} ms |",
            v.len(),
            percentile(v, 0.5),
            percentile(v, 0.99),
            percentile(v, 1.0)
        );
    }
    println!(
        "| ratio (misbehaving / alone) | | {:.3} | {:.3} | |\n",
        percentile(&noisy, 0.5) / percentile(&alone, 0.5),
        percentile(&noisy, 0.99) / percentile(&alone, 0.99)
    );
}

fn rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(f64::NAN, |kib| kib / 1024.0)
}

fn threads() -> usize {
    std::fs::read_dir("/proc/self/task").map_or(0, |d| d.count())
}

fn many_jobs(dir: &std::path::Path, jobs: usize) {
    let s = server(dir);
    s.create_tenant(
        "many",
        limits(serde_json::json!({"max_workers": 1, "max_jobs": jobs, "memory_bytes": 32 << 20, "cpu_share": 2.0})),
    )
    .expect("tenant");
    let wc = upload(&s, "many", "wordcount");
    let (rss0, threads0) = (rss_mib(), threads());
    let started = Instant::now();
    for i in 0..jobs {
        s.submit(
            "many",
            &wordcount(&format!("job{i}"), "1s", 100),
            &wc,
            &BTreeMap::new(),
        )
        .unwrap_or_else(|e| panic!("job {i}: {e}"));
    }
    let submitted = started.elapsed();
    // Let every job run 10 batches.
    std::thread::sleep(Duration::from_secs(11));
    let (rss1, threads1) = (rss_mib(), threads());
    let mut processing = Vec::new();
    let mut delay = Vec::new();
    let mut batches = 0;
    for i in 0..jobs {
        let status = s
            .job_metrics("many", &format!("job{i}"))
            .expect("metrics")
            .status();
        for b in status["recent"].as_array().expect("recent").iter().skip(1) {
            batches += 1;
            processing.push(b["processing_ms"].as_f64().expect("processing"));
            delay.push(b["scheduling_delay_ms"].as_f64().expect("delay"));
        }
    }
    let stop = Instant::now();
    s.shutdown();
    let stopped = stop.elapsed();
    println!("## {jobs} small jobs in one process\n");
    println!(
        "Each: word count on a generator (100 lines/s × 10 words), 1 s batches, 1 worker, 32 MiB plugin memory limit, a checkpoint directory.\n"
    );
    println!("| figure | value |");
    println!("|---|---|");
    println!(
        "| submit all (build, admit, start) | {:.2} s ({:.1} ms per job) |",
        submitted.as_secs_f64(),
        submitted.as_secs_f64() * 1e3 / jobs as f64
    );
    println!(
        "| resident memory added | {:.0} MiB ({:.2} MiB per job) |",
        rss1 - rss0,
        (rss1 - rss0) / jobs as f64
    );
    println!(
        "| threads added | {} ({:.1} per job) |",
        threads1 - threads0,
        (threads1 - threads0) as f64 / jobs as f64
    );
    println!("| batches measured | {batches} |");
    println!(
        "| processing time p50 / p99 | {:.2} / {:.2} ms |",
        percentile(&processing, 0.5),
        percentile(&processing, 0.99)
    );
    println!(
        "| scheduling delay p50 / p99 | {:.1} / {:.1} ms |",
        percentile(&delay, 0.5),
        percentile(&delay, 0.99)
    );
    println!(
        "| stop all (last batch + checkpoint each) | {:.2} s |\n",
        stopped.as_secs_f64()
    );
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let tmp = tempfile::tempdir().expect("temp");
    isolation(
        &tmp.path().join("isolation"),
        env_or("BENCH_BATCHES", 100) as u64,
    );
    many_jobs(&tmp.path().join("many"), env_or("BENCH_JOBS", 100));
}
