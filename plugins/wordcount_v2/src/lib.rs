//! Version 0.2.0 of the word count, for hot-swap tests and demos: the
//! functions and kinds of `wordcount` that a plain or stateful word count
//! uses (split, pair, add, running_total), but `pair` counts each word as 10
//! (so every batch shows which version made it), and `split` traps on the
//! word `crash-v2` (a broken release, to be rolled back).

use sluice_sdk as sluice;

/// Splits a line into words on single spaces; traps on `crash-v2`.
#[sluice::flat_map]
fn split(line: &str) -> impl Iterator<Item = &str> {
    if line.split(' ').any(|w| w == "crash-v2") {
        panic!("version 0.2.0 cannot handle `crash-v2`");
    }
    sluice::split_on(line, ' ')
}

/// Pairs a word with the count 10 (version 0.1.0 pairs it with 1).
#[sluice::map]
fn pair(word: &str) -> (&str, i64) {
    (word, 10)
}

/// Adds two counts.
#[sluice::reduce]
fn add(a: i64, b: i64) -> i64 {
    a + b
}

/// A running count.
#[sluice::update_state]
fn running_total(new: Vec<i64>, total: Option<i64>) -> Option<i64> {
    Some(new.iter().sum::<i64>() + total.unwrap_or(0))
}

sluice::export!(split, pair, add, running_total);
