//! The word count of Spark Streaming's socket example: split lines into words,
//! pair each word with 1, add the counts.
//!
//! Job functions: `wordcount.split`, `wordcount.pair`, `wordcount.add`; for windows
//! and state `wordcount.subtract`, `wordcount.positive`, `wordcount.running_total`,
//! `wordcount.running_count`.

use sluice_sdk as sluice;

/// Splits a line into words on single spaces (`"a  b"` has an empty word, as in Spark's example).
/// `sluice::split_on` is `str::split`, reading eight bytes at a time in a wasm32 guest too.
#[sluice::flat_map]
fn split(line: &str) -> impl Iterator<Item = &str> {
    sluice::split_on(line, ' ')
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

/// Takes a count back out of a total (the inverse of `add`, for incremental windows).
#[sluice::inverse_reduce]
fn subtract(total: i64, gone: i64) -> i64 {
    total - gone
}

/// Keeps counts above zero (drops keys whose windowed count fell to 0).
#[sluice::filter]
fn positive(pair: (&str, i64)) -> bool {
    pair.1 > 0
}

/// A running count: the new counts of the batch added to the total so far.
#[sluice::update_state]
fn running_total(new: Vec<i64>, total: Option<i64>) -> Option<i64> {
    Some(new.iter().sum::<i64>() + total.unwrap_or(0))
}

/// Per word occurrence, the word's running count: `(word, count, false)`; when the
/// word times out, `(word, count, true)` and its count is dropped.
#[sluice::map_state]
fn running_count(
    word: &str,
    one: Option<i64>,
    count: &mut sluice::State<i64>,
) -> Option<(String, i64, bool)> {
    let total = count.get().copied().unwrap_or(0);
    match one {
        Some(n) => {
            count.update(total + n);
            Some((word.to_string(), total + n, false))
        }
        None => Some((word.to_string(), total, true)),
    }
}

sluice::export!(
    split,
    pair,
    add,
    subtract,
    positive,
    running_total,
    running_count
);
