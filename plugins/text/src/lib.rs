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

/// The number of values in each partition: one value per partition, empty ones included.
#[sluice::map_partitions]
fn partition_size(values: Vec<&str>) -> [i64; 1] {
    [values.len() as i64]
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

sluice::export!(
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
    partition_size
);
