//! Text functions used by the reference jobs (`../shared/reference/jobs`):
//! Unicode upper-casing, a length filter, word lengths and their sum.

use sluice_sdk as sluice;

/// Upper-cases a line with Unicode rules (`Straße` → `STRASSE`).
#[sluice::map]
fn upper(line: &str) -> String {
    line.to_uppercase()
}

/// Keeps words of at least four code points.
#[sluice::filter]
fn long(word: &str) -> bool {
    word.chars().count() >= 4
}

/// The length of a word in code points.
#[sluice::map]
fn length(word: &str) -> i64 {
    word.chars().count() as i64
}

/// Adds two integers.
#[sluice::reduce]
fn sum(a: i64, b: i64) -> i64 {
    a + b
}

/// Splits a line into words on single spaces.
#[sluice::flat_map]
fn words(line: &str) -> impl Iterator<Item = &str> {
    line.split(' ')
}

/// Parses an integer, refusing anything else (exercises typed errors).
#[sluice::map]
fn parse_int(s: &str) -> Result<i64, String> {
    s.trim()
        .parse::<i64>()
        .map_err(|e| format!("`{s}` is not an integer: {e}"))
}

/// Tags each word of a line with the line: `(word, "L:" + line)` (the left side of the reference joins).
#[sluice::flat_map]
fn tag_left(line: &str) -> Vec<(&str, String)> {
    line.split(' ').map(|w| (w, format!("L:{line}"))).collect()
}

/// Tags each word of a line with the line: `(word, "R:" + line)` (the right side of the reference joins).
#[sluice::flat_map]
fn tag_right(line: &str) -> Vec<(&str, String)> {
    line.split(' ').map(|w| (w, format!("R:{line}"))).collect()
}

/// The three most frequent words of a batch of `(word, count)` pairs, most frequent first
/// (ties by word): Spark's `transform(lambda rdd: rdd.sortBy(lambda kv: -kv[1]).take(3))`.
#[sluice::transform]
fn top3(mut counts: Vec<(String, i64)>) -> Vec<(String, i64)> {
    counts.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    counts.truncate(3);
    counts
}

/// The elements found in the batch of every stream, sorted, each once: a
/// transform of several streams (Spark's `StreamingContext.transform`)
/// sees one element per stream, the array of its batch.
#[sluice::transform]
fn in_every(batches: Vec<Vec<String>>) -> Vec<String> {
    let mut streams = batches.into_iter();
    let mut common: Vec<String> = streams.next().unwrap_or_default();
    for batch in streams {
        common.retain(|e| batch.contains(e));
    }
    common.sort();
    common.dedup();
    common
}

/// The number of values in each partition: one value per partition, empty ones included.
#[sluice::map_partitions]
fn partition_size(values: Vec<&str>) -> [i64; 1] {
    [values.len() as i64]
}

/// Starts a `(sum, count)` combiner from a first value (`combine_by_key`'s `create`).
#[sluice::map]
fn start_average(v: i64) -> (i64, i64) {
    (v, 1)
}

/// Folds one more value into a `(sum, count)` combiner (`combine_by_key`'s `merge_value`).
#[sluice::fold]
fn add_to_average(acc: (i64, i64), v: i64) -> (i64, i64) {
    (acc.0 + v, acc.1 + 1)
}

/// Merges two `(sum, count)` combiners (`combine_by_key`'s `merge_combiners`).
#[sluice::reduce]
fn merge_averages(a: (i64, i64), b: (i64, i64)) -> (i64, i64) {
    (a.0 + b.0, a.1 + b.1)
}

/// The `(word, count)` pairs of the first stream whose word is not in the
/// second (Spark's `subtractByKey`, as a `transform_with`), in order.
#[sluice::transform_with]
fn subtract_by_key<'a>(
    left: Vec<(&'a str, i64)>,
    right: Vec<(&'a str, i64)>,
) -> Vec<(&'a str, i64)> {
    let drop: std::collections::HashSet<&str> = right.iter().map(|(k, _)| *k).collect();
    left.into_iter()
        .filter(|(k, _)| !drop.contains(k))
        .collect()
}

/// Audits a partition-batch: fails on a `poison` line, naming the batch time it saw.
#[sluice::sink]
fn audit(lines: Vec<&str>) -> Result<(), String> {
    sluice::info!("audited {} lines", lines.len());
    if lines.contains(&"poison") {
        return Err(format!(
            "poison at batch {}",
            sluice::context().batch_time_ms
        ));
    }
    Ok(())
}

/// Publishes each line of a partition-batch to NATS (JetStream stores
/// it if a stream captures the subject), each with a `Nats-Msg-Id` of
/// batch time, partition and index, so a re-run batch is dropped as a
/// duplicate; the server and subject come from `nats.conf` (`host:port
/// subject`) in the plugin's granted directory, and the endpoint must be
/// granted (`connect`). Waits for the server's answer to a PING after the
/// batch, failing on any `-ERR`. A sink that reaches a broker itself.
#[sluice::sink]
fn publish_nats(lines: Vec<&str>) -> Result<(), String> {
    use std::io::{Read, Write};
    let conf =
        std::fs::read_to_string("nats.conf").map_err(|e| format!("reading nats.conf: {e}"))?;
    let mut fields = conf.split_whitespace();
    let (Some(addr), Some(subject)) = (fields.next(), fields.next()) else {
        return Err("nats.conf: want `host:port subject`".to_string());
    };
    let mut conn =
        std::net::TcpStream::connect(addr).map_err(|e| format!("connecting to {addr}: {e}"))?;
    let ctx = sluice::context();
    let mut out = String::from("CONNECT {\"verbose\":false,\"headers\":true}\r\n");
    for (i, line) in lines.iter().enumerate() {
        let headers = format!(
            "NATS/1.0\r\nNats-Msg-Id: {}/{}/{i}\r\n\r\n",
            ctx.batch_time_ms, ctx.partition
        );
        out.push_str(&format!(
            "HPUB {subject} {} {}\r\n{headers}{line}\r\n",
            headers.len(),
            headers.len() + line.len()
        ));
    }
    out.push_str("PING\r\n");
    conn.write_all(out.as_bytes())
        .map_err(|e| format!("writing to {addr}: {e}"))?;
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = conn
            .read(&mut buf)
            .map_err(|e| format!("reading from {addr}: {e}"))?;
        if n == 0 {
            return Err(format!("{addr} closed the connection"));
        }
        answer.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&answer);
        if let Some(err) = text.lines().find(|l| l.starts_with("-ERR")) {
            return Err(format!("{addr}: {err}"));
        }
        if text.lines().any(|l| l == "PONG") {
            sluice::info!("published {} lines to {subject}", lines.len());
            return Ok(());
        }
    }
}

sluice::export!(
    publish_nats,
    audit,
    upper,
    long,
    length,
    sum,
    words,
    parse_int,
    tag_left,
    tag_right,
    top3,
    in_every,
    partition_size,
    start_average,
    add_to_average,
    merge_averages,
    subtract_by_key
);
