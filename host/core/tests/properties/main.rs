//! Property tests of the engine, on random input batches:
//!
//! - partition and worker invariance: a pipeline's output, batch by batch
//!   (as a multiset), is the same for every partition count (of the queue
//!   source and of every shuffle) and worker count, and equals a reference
//!   model computed in plain Rust wherever one is easy to write, with the
//!   blocks of every exchange moved in memory or passed as bytes;
//! - recovery at every batch boundary: a checkpointed job with state that
//!   stops (or crashes) after any batch and is resumed on its checkpoint
//!   directory by a fresh context produces exactly the batches of an
//!   uninterrupted run, with full checkpoints every batch and every few
//!   batches (the batches in between re-run from the batch log).
//!
//! Every run uses a [`ManualClock`]: batches run back to back, batch `i` at
//! `(i + 1)` s, and nothing depends on wall-clock timing.

use proptest::prelude::*;
use serde_json::{Value, json};
use sluice_core::exec::EncodedShuffle;
use sluice_core::{CollectedBatch, DStream, Error, Func, ManualClock, StateSpec, StreamingContext};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

mod invariance;
mod models;
mod recovery;

const SECOND: Duration = Duration::from_secs(1);

/// Partitions of the sources and shuffles, and worker threads, tried.
const PARTITIONS: [usize; 4] = [1, 2, 3, 7];
const WORKERS: [usize; 2] = [1, 2];

/// Words of the random lines (a few repeat a lot; some share prefixes).
const VOCABULARY: &[&str] = &["a", "b", "c", "d", "ab", "ba", "abc", "z"];

/// Input batches of lines for one queue stream.
type Batches = Vec<Vec<String>>;

/// A run's output of one stream: per batch index, its records as sorted
/// JSON texts (the batch as a multiset).
type Out = BTreeMap<u64, Vec<String>>;

/// Batches an output collected.
type Collected = Arc<Mutex<Vec<CollectedBatch>>>;

/// `cases` random cases per test (`PROPTEST_CASES` overrides, for a longer
/// search).
fn config(cases: u32) -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(cases);
    ProptestConfig {
        cases,
        ..ProptestConfig::default()
    }
}

/// A line of 0 to 4 words of the vocabulary.
fn line() -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(VOCABULARY), 0..5).prop_map(|w| w.join(" "))
}

/// 1 to `max` batches of up to 30 lines.
fn batches(max: usize) -> impl Strategy<Value = Batches> {
    prop::collection::vec(prop::collection::vec(line(), 0..30), 1..=max)
}

/// `input` followed by `n` empty batches (so that windows drain).
fn padded(mut input: Batches, n: usize) -> Batches {
    input.extend(std::iter::repeat_n(Vec::new(), n));
    input
}

// ---------------------------------------------------------------------------
// Functions

fn split() -> Func {
    Func::flat_map("split", |l: String| {
        l.split_whitespace().map(str::to_string).collect::<Vec<_>>()
    })
}

fn pair() -> Func {
    Func::map("pair", |w: String| (w, 1i64))
}

fn add() -> Func {
    Func::reduce("add", |a: i64, b: i64| a + b)
}

fn subtract() -> Func {
    Func::inverse_reduce("subtract", |a: i64, b: i64| a - b)
}

fn nonzero() -> Func {
    Func::filter("nonzero", |kv: (String, i64)| kv.1 != 0)
}

fn running_total() -> Func {
    Func::update_state("total", |v: Vec<i64>, s: Option<i64>| {
        Some(v.iter().sum::<i64>() + s.unwrap_or(0))
    })
}

/// Running totals of keys with new values in every batch: a key without
/// any is removed (and starts again from 0 if it comes back).
fn streak_total() -> Func {
    Func::update_state("streak", |v: Vec<i64>, s: Option<i64>| {
        (!v.is_empty()).then(|| v.iter().sum::<i64>() + s.unwrap_or(0))
    })
}

/// `map_with_state`: each occurrence of a word as `(word, occurrences so far)`.
fn occurrence() -> Func {
    Func::map_state(
        "occurrence",
        |k: String, v: Option<i64>, s: &mut sluice_sdk::State<i64>| {
            let n = s.get().copied().unwrap_or(0) + v.unwrap_or(0);
            s.update(n);
            Some((k, n))
        },
    )
}
