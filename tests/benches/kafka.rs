//! Kafka → word count → Kafka, against the raw consumer: the same records
//! in one topic (2 partitions) of a Kafka-protocol broker on loopback
//! (Tansu, memory storage; no Apache Kafka broker installs here), read
//! once by a plain `rdkafka` consumer as fast as it goes (the limit of the
//! client on this broker), and once by a Sluice job at 1 s batches — the
//! Kafka source, `split` → `pair` → `reduce_by_key` in the wasm word-count
//! plugin, each batch's counts written back in Kafka transactions. Both in
//! the same run; the table gives records/s and the ratio.
//!
//! `cargo bench -p sluice-tests --bench kafka` (env: `BENCH_RECORDS`,
//! default 4,000,000 lines of 10 words, about 60 bytes each;
//! `BENCH_WORKERS`, default 2; `BENCH_RATE`, records/s the job may take
//! in all, default none; `BENCH_KAFKA_PROPERTIES`, librdkafka
//! consumer properties for both readers, `name=value,…`). `scripts/bench kafka` installs the broker
//! first.

use rdkafka::Offset;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::topic_partition_list::TopicPartitionList;
use sluice::LoadPlugins;
use sluice::StreamingContext;
use sluice_brokers::kafka::{KafkaConfig, KafkaSink, KafkaSinkConfig, KafkaSource, Topics};
use sluice_tests::brokers::{JobRun, run_until_counted};
use sluice_tests::tansu::Tansu;
use sluice_tests::{env_or, plugin, random_lines, runtime};
use std::time::{Duration, Instant};

const PARTITIONS: i32 = 2;

/// Consumer properties both readers get (`BENCH_KAFKA_PROPERTIES`,
/// `name=value,name=value`: librdkafka tuning, measured alike).
fn properties() -> Vec<(String, String)> {
    let given = std::env::var("BENCH_KAFKA_PROPERTIES").unwrap_or_default();
    (given.split(',').filter(|p| !p.is_empty()))
        .map(|p| {
            let (k, v) = p
                .split_once('=')
                .expect("BENCH_KAFKA_PROPERTIES: name=value");
            (k.to_string(), v.to_string())
        })
        .collect()
}

/// Reads `n` records of `topic` with a plain consumer; records/s.
fn raw_consumer(brokers: &str, topic: &str, n: usize) -> f64 {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", brokers)
        .set("group.id", "raw")
        .set("enable.auto.commit", "false")
        // As the source's consumer: without it this broker's fetches held
        // both to ~150k records/s (see the source's settings).
        .set("fetch.queue.backoff.ms", "10");
    for (k, v) in properties() {
        config.set(k, v);
    }
    let consumer: BaseConsumer = config.create().expect("consumer");
    let mut tpl = TopicPartitionList::new();
    for p in 0..PARTITIONS {
        tpl.add_partition_offset(topic, p, Offset::Beginning)
            .expect("tpl");
    }
    consumer.assign(&tpl).expect("assign");
    let started = Instant::now();
    let (mut got, mut bytes) = (0, 0usize);
    while got < n {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
            bytes += m.payload().map_or(0, <[u8]>::len);
            got += 1;
        }
    }
    std::hint::black_box(bytes);
    n as f64 / started.elapsed().as_secs_f64()
}

/// Runs the word count over the `n` records of `lines` on `workers`
/// threads, until all are counted.
fn sluice_job(brokers: &str, n: usize, workers: usize) -> JobRun {
    let interval = Duration::from_secs(1);
    let ssc = StreamingContext::new(interval)
        .with_workers(workers)
        .with_runtime(runtime());
    let wc = ssc
        .load_plugin("wordcount", plugin("wordcount"))
        .expect("wordcount");
    let mut config = KafkaConfig::new(
        "lines",
        brokers,
        Topics::Names(vec!["lines".into()]),
        interval,
    );
    config.partitions = workers;
    // librdkafka fetches one partition ahead of the other while a job
    // catches up: pieces keep both workers busy.
    config.min_partitions = Some(2 * workers);
    // A cap (records/s in all) holds each batch to what one interval
    // should carry: the job sustains it when every batch is processed
    // within its interval.
    let cap = env_or("BENCH_RATE", 0) as u64;
    if cap > 0 {
        config.max_rate_per_partition = Some(cap / PARTITIONS as u64);
    }
    config.properties = properties();
    config.max_buffered_bytes = 256 << 20;
    let counts = ssc
        .source_stream("lines", Box::new(KafkaSource::new(config)))
        .flat_map(wc.func("split").expect("split"))
        .map(wc.func("pair").expect("pair"))
        .reduce_by_key(wc.func("add").expect("add"), workers);
    let mut out = KafkaSinkConfig::new("bench", "output-0", brokers, "counts");
    out.exactly_once = env_or("BENCH_EXACTLY_ONCE", 1) == 1;
    counts.output_to(Box::new(KafkaSink::new(out)));
    run_until_counted(&ssc, n)
}

fn main() {
    sluice::allocator::keep_freed_memory();
    let quick = !std::env::args().any(|a| a == "--bench");
    let n = env_or("BENCH_RECORDS", if quick { 20_000 } else { 4_000_000 });
    let workers = env_or("BENCH_WORKERS", 2);
    let kafka = Tansu::start();
    kafka.create_topic("lines", PARTITIONS);
    kafka.create_topic("counts", PARTITIONS);
    let lines: Vec<Vec<u8>> = random_lines(n, 10_000, 7)
        .into_iter()
        .map(String::into_bytes)
        .collect();
    let bytes: usize = lines.iter().map(Vec::len).sum();
    let started = Instant::now();
    kafka.produce("lines", PARTITIONS, &lines);
    eprintln!(
        "produced {n} records ({} bytes each on average) in {:.1} s",
        bytes / n.max(1),
        started.elapsed().as_secs_f64()
    );
    let raw = raw_consumer(&kafka.brokers(), "lines", n);
    eprintln!("raw consumer: {raw:.0} records/s");
    let job = sluice_job(&kafka.brokers(), n, workers);
    println!("## Kafka → word count → Kafka\n");
    println!(
        "{n} records of 10 words ({} bytes on average) in one topic of {PARTITIONS} partitions on a Tansu broker (memory storage) on loopback; Sluice at 1 s batches with {workers} workers, wasm operators, counts written back in transactions.\n",
        bytes / n.max(1)
    );
    job.print_against(
        &[("raw rdkafka consumer (no processing)", raw)],
        "Sluice word count, Kafka in and out",
    );
}
