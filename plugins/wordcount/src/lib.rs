//! The word count of Spark Streaming's socket example: split lines into words,
//! pair each word with 1, add the counts.
//!
//! Job functions: `wordcount.split`, `wordcount.pair`, `wordcount.add`.

use sluice_sdk as sluice;

/// Splits a line into words on single spaces (`"a  b"` has an empty word, as in Spark's example).
#[sluice::flat_map]
fn split(line: &str) -> impl Iterator<Item = &str> {
    line.split(' ')
}

/// Pairs a word with the count 1.
#[sluice::map]
fn pair(word: &str) -> (&str, i64) {
    (word, 1)
}

/// Adds two counts.
#[sluice::reduce]
fn add(a: i64, b: i64) -> i64 {
    a + b
}

sluice::export!(split, pair, add);
