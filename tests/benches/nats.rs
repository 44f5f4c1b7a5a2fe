//! NATS JetStream → word count → NATS, against the raw consumer: the same
//! records in one stream of a `nats-server` on loopback, read once by a
//! plain `async-nats` pull consumer as fast as it goes (the limit of the
//! client on this broker), and once by a Sluice job at 1 s batches — the
//! NATS source, `split` → `pair` → `reduce_by_key` in the wasm word-count
//! plugin, each batch's counts published back to NATS exactly once. Both
//! in the same run; the table gives records/s and the ratio.
//!
//! `cargo bench -p sluice-tests --bench nats` (env: `BENCH_RECORDS`,
//! default 2,000,000 lines of 10 words, about 60 bytes each; `BENCH_WORKERS`,
//! default 2). `scripts/bench nats` installs the broker first.

use sluice::LoadPlugins;
use sluice::StreamingContext;
use sluice_brokers::{NatsConfig, NatsSink, NatsSinkConfig, NatsSource};
use sluice_tests::brokers::{JobRun, NatsClient, NatsServer, run_until_counted};
use sluice_tests::{env_or, plugin, random_lines, runtime};
use std::time::{Duration, Instant};

/// Records between the acknowledgements of the acking raw consumer: about
/// what a batch of the job takes, which acknowledges after each batch.
const ACK_EVERY: usize = 250_000;

/// Reads `n` records of `stream` with a pull consumer; records/s. With
/// `acking`, the consumer's ack policy is the source's (all) and it
/// acknowledges every [`ACK_EVERY`] records: the server then tracks
/// every delivery until acknowledged, as for the job.
fn raw_consumer(url: &str, stream: &str, n: usize, acking: bool) -> f64 {
    use async_nats::jetstream::consumer::AckPolicy;
    use futures_util::StreamExt;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let client = async_nats::connect(url).await.expect("connect");
        let js = async_nats::jetstream::new(client);
        let s = js.get_stream(stream).await.expect("stream");
        let consumer: async_nats::jetstream::consumer::PullConsumer = s
            .create_consumer(async_nats::jetstream::consumer::pull::Config {
                durable_name: Some(if acking { "raw-acking" } else { "raw" }.to_string()),
                ack_policy: if acking {
                    AckPolicy::All
                } else {
                    AckPolicy::None
                },
                max_ack_pending: -1,
                ..Default::default()
            })
            .await
            .expect("consumer");
        let mut messages = consumer
            .stream()
            .max_messages_per_batch(10_000)
            .messages()
            .await
            .expect("messages");
        let started = Instant::now();
        let mut bytes = 0usize;
        for i in 1..=n {
            let m = messages.next().await.expect("a message").expect("ok");
            bytes += m.message.payload.len();
            if acking && (i % ACK_EVERY == 0 || i == n) {
                m.ack().await.expect("ack");
            }
        }
        std::hint::black_box(bytes);
        n as f64 / started.elapsed().as_secs_f64()
    })
}

/// Runs the word count over the `n` records of `LINES` on `workers`
/// threads, until all are counted.
fn sluice_job(url: &str, n: usize, workers: usize) -> JobRun {
    let interval = Duration::from_secs(1);
    let ssc = StreamingContext::new(interval)
        .with_workers(workers)
        .with_runtime(runtime());
    let wc = ssc
        .load_plugin("wordcount", plugin("wordcount"))
        .expect("wordcount");
    let mut config = NatsConfig::new("lines", url, "LINES", interval);
    config.partitions = workers;
    config.max_buffered_bytes = 256 << 20;
    let counts = ssc
        .source_stream("lines", Box::new(NatsSource::new(config)))
        .flat_map(wc.func("split").expect("split"))
        .map(wc.func("pair").expect("pair"))
        .reduce_by_key(wc.func("add").expect("add"), workers);
    counts.output_to(Box::new(NatsSink::new(NatsSinkConfig::new(
        "bench",
        url,
        "counts.out",
    ))));
    run_until_counted(&ssc, n)
}

fn main() {
    sluice::allocator::keep_freed_memory();
    let quick = !std::env::args().any(|a| a == "--bench");
    let n = env_or("BENCH_RECORDS", if quick { 20_000 } else { 2_000_000 });
    let workers = env_or("BENCH_WORKERS", 2);
    let dir = tempfile::tempdir().expect("temp dir");
    let server = NatsServer::start(dir.path(), &[]);
    let nats = NatsClient::connect(&server.url());
    nats.create_stream("LINES", &["lines.>"]);
    nats.create_stream("COUNTS", &["counts.>"]);
    let lines = random_lines(n, 10_000, 7);
    let bytes: usize = lines.iter().map(String::len).sum();
    let started = Instant::now();
    nats.publish("lines.bench", lines.into_iter().map(String::into_bytes));
    eprintln!(
        "published {n} records ({} bytes each on average) in {:.1} s",
        bytes / n.max(1),
        started.elapsed().as_secs_f64()
    );
    let raw = raw_consumer(&server.url(), "LINES", n, false);
    eprintln!("raw consumer: {raw:.0} records/s");
    let acking = raw_consumer(&server.url(), "LINES", n, true);
    eprintln!("raw consumer, acking: {acking:.0} records/s");
    let job = sluice_job(&server.url(), n, workers);
    println!("## NATS JetStream → word count → NATS\n");
    println!(
        "{n} records of 10 words ({} bytes on average) in one stream of a nats-server on loopback; Sluice at 1 s batches with {workers} workers, wasm operators, counts published back exactly once.\n",
        bytes / n.max(1)
    );
    job.print_against(
        &[
            ("raw async-nats pull consumer (no processing)", raw),
            (
                "the same, acknowledging as the source does (ack all, every 250,000)",
                acking,
            ),
        ],
        "Sluice word count, NATS in and out",
    );
}
