//! Random DStream programs over random inputs, on Sluice's wasm operators
//! (the word-count plugin's `split`, `pair`, `add`, `subtract`, `positive`
//! and `running_total`) and host operators, against a list-of-batches
//! interpreter written for the test: the same output, batch by batch, for
//! every program, partitioning and worker count drawn.
//!
//! A program reads one queue of lines and goes through: an optional
//! repartition and an optional window of the lines; the wasm `split`; an
//! optional native filter of short words; then either `count_by_value`, or
//! the wasm `pair` followed by one of nothing, `reduce_by_key`,
//! `reduce_by_key_and_window` (with or without the inverse function; only
//! on an unwindowed stream) or `update_state_by_key`; and an optional
//! wasm `positive` filter on the pairs.

use proptest::prelude::*;
use serde_json::{Value, json};
use sluice::{Func, LoadPlugins};
use sluice_tests::plugin;
use std::collections::BTreeMap;
use std::time::Duration;

const VOCABULARY: [&str; 6] = ["a", "b", "cc", "dd", "eee", "f"];

/// The batches of lines.
type Batches = Vec<Vec<String>>;

/// A stream in the model: each batch index's records, `None` where the
/// stream has no batch (between its slides).
type Stream = Vec<Option<Vec<Value>>>;

#[derive(Debug, Clone)]
enum Keyed {
    /// The pairs as `pair` makes them.
    None,
    ReduceByKey,
    /// Window and slide in batches, and whether the inverse is given.
    ReduceByKeyAndWindow(u32, u32, bool),
    RunningTotal,
}

#[derive(Debug, Clone)]
enum Tail {
    CountByValue,
    Pairs(Keyed, bool),
}

#[derive(Debug, Clone)]
struct Program {
    repartition: Option<usize>,
    /// A window of the lines: length and slide in batches.
    window: Option<(u32, u32)>,
    short_words: bool,
    tail: Tail,
}

fn program() -> impl Strategy<Value = Program> {
    let window = prop_oneof![
        Just(None),
        (1u32..4, 1u32..3).prop_map(|(k, s)| Some((k * s, s))),
    ];
    let keyed =
        prop_oneof![
            Just(Keyed::None),
            Just(Keyed::ReduceByKey),
            (1u32..4, 1u32..3, any::<bool>())
                .prop_map(|(k, s, inverse)| Keyed::ReduceByKeyAndWindow(k * s, s, inverse)),
            Just(Keyed::RunningTotal),
        ];
    let tail = prop_oneof![
        Just(Tail::CountByValue),
        (keyed, any::<bool>()).prop_map(|(k, positive)| Tail::Pairs(k, positive)),
    ];
    (prop::option::of(1usize..5), window, any::<bool>(), tail)
        .prop_map(|(repartition, window, short_words, tail)| Program {
            repartition,
            window,
            short_words,
            tail,
        })
        // A keyed window over windowed lines is another slide grid: not drawn.
        .prop_filter("one window at most", |p| {
            !(p.window.is_some()
                && matches!(p.tail, Tail::Pairs(Keyed::ReduceByKeyAndWindow(..), _)))
        })
}

/// A line of 0 to 4 words of the vocabulary, single spaces.
fn line() -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(VOCABULARY.to_vec()), 0..5).prop_map(|w| w.join(" "))
}

/// 1 to 5 batches of up to 12 lines, then 4 empty ones (windows drain).
fn batches() -> impl Strategy<Value = Batches> {
    prop::collection::vec(prop::collection::vec(line(), 0..12), 1..=5).prop_map(|mut b| {
        b.extend(std::iter::repeat_n(Vec::new(), 4));
        b
    })
}

const SECOND: Duration = Duration::from_secs(1);

/// Runs `p` on Sluice over `input` in `parts` partitions with `workers`
/// workers: each batch's records as sorted JSON texts, by index.
fn run(p: &Program, input: &Batches, parts: usize, workers: usize) -> BTreeMap<u64, Vec<String>> {
    let ssc = sluice_tests::test_context().with_workers(workers);
    let wc = ssc
        .load_plugin("wordcount", plugin("wordcount"))
        .expect("the wordcount plugin");
    let f = |name: &str| Func::plugin(&wc, name).expect("a function");
    let mut s = ssc.queue_stream(input.clone(), parts);
    if let Some(n) = p.repartition {
        s = s.repartition(n);
    }
    if let Some((w, sl)) = p.window {
        s = s.window(w * SECOND, sl * SECOND);
    }
    let mut s = s.flat_map(f("split"));
    if p.short_words {
        s = s.filter(Func::filter("short", |w: String| w.len() <= 2));
    }
    let s = match &p.tail {
        Tail::CountByValue => s.count_by_value(parts),
        Tail::Pairs(keyed, positive) => {
            let pairs = s.map(f("pair"));
            let pairs = match keyed {
                Keyed::None => pairs,
                Keyed::ReduceByKey => pairs.reduce_by_key(f("add"), parts),
                Keyed::ReduceByKeyAndWindow(w, sl, inverse) => pairs.reduce_by_key_and_window(
                    f("add"),
                    inverse.then(|| f("subtract")),
                    *w * SECOND,
                    *sl * SECOND,
                    parts,
                    None,
                ),
                Keyed::RunningTotal => pairs.update_state_by_key(f("running_total"), parts),
            };
            if *positive {
                pairs.filter(f("positive"))
            } else {
                pairs
            }
        }
    };
    let out = s.collect();
    ssc.run(None).expect("the run");
    let batches = out.lock().expect("collected");
    batches
        .iter()
        .map(|b| (b.index, texts(b.records.clone())))
        .collect()
}

fn texts(records: Vec<Value>) -> Vec<String> {
    let mut t: Vec<String> = records.iter().map(Value::to_string).collect();
    t.sort();
    t
}

/// The model: `p` over `input`, a list of batches at a time.
fn model(p: &Program, input: &Batches) -> BTreeMap<u64, Vec<String>> {
    let lines: Stream = input
        .iter()
        .map(|b| Some(b.iter().map(|l| json!(l)).collect()))
        .collect();
    // A repartition keeps every element; only the order changes.
    let lines = match p.window {
        Some((w, s)) => window(&lines, w as usize, s as usize),
        None => lines,
    };
    let words = each(&lines, |b| {
        b.iter()
            .flat_map(|l| {
                let l = l.as_str().expect("a line").to_string();
                l.split(' ').map(|w| json!(w)).collect::<Vec<_>>()
            })
            .filter(|w| !p.short_words || w.as_str().is_some_and(|w| w.len() <= 2))
            .collect()
    });
    let out = match &p.tail {
        Tail::CountByValue => each(&words, |b| sums(b.iter().map(|w| (key(w), 1)))),
        Tail::Pairs(keyed, positive) => {
            let pairs = each(&words, |b| b.iter().map(|w| json!([w, 1])).collect());
            let pairs = match keyed {
                Keyed::None => pairs,
                Keyed::ReduceByKey => each(&pairs, |b| sums(b.iter().map(pair))),
                Keyed::ReduceByKeyAndWindow(w, s, inverse) => {
                    keyed_window(&pairs, *w as usize, *s as usize, *inverse)
                }
                Keyed::RunningTotal => running_total(&pairs),
            };
            if *positive {
                each(&pairs, |b| {
                    b.iter()
                        .filter(|r| r[1].as_i64().is_some_and(|n| n > 0))
                        .cloned()
                        .collect()
                })
            } else {
                pairs
            }
        }
    };
    out.into_iter()
        .enumerate()
        .filter_map(|(i, b)| b.map(|b| (i as u64, texts(b))))
        .collect()
}

fn key(v: &Value) -> String {
    v.as_str().expect("a word").to_string()
}

fn pair(v: &Value) -> (String, i64) {
    (key(&v[0]), v[1].as_i64().expect("a count"))
}

/// Per key, the sum of its values, as pairs.
fn sums(kv: impl Iterator<Item = (String, i64)>) -> Vec<Value> {
    let mut m: BTreeMap<String, i64> = BTreeMap::new();
    for (k, n) in kv {
        *m.entry(k).or_insert(0) += n;
    }
    m.into_iter().map(|(k, n)| json!([k, n])).collect()
}

/// `f` on every batch the stream has.
fn each(s: &Stream, f: impl Fn(&[Value]) -> Vec<Value>) -> Stream {
    s.iter().map(|b| b.as_deref().map(&f)).collect()
}

/// A window of `w` batches every `s` of a stream with a batch every
/// interval: at each `s`-th batch, the last `w` batches' records.
fn window(s: &Stream, w: usize, slide: usize) -> Stream {
    (0..s.len())
        .map(|i| {
            ((i + 1) % slide == 0).then(|| {
                s[(i + 1).saturating_sub(w)..=i]
                    .iter()
                    .flatten()
                    .flatten()
                    .cloned()
                    .collect()
            })
        })
        .collect()
}

/// `reduce_by_key_and_window`: per key, the sum over the window; with the
/// inverse function (and no filter), every key seen so far stays, at 0
/// once it left the window.
fn keyed_window(s: &Stream, w: usize, slide: usize, inverse: bool) -> Stream {
    (0..s.len())
        .map(|i| {
            ((i + 1) % slide == 0).then(|| {
                let mut m: BTreeMap<String, i64> = BTreeMap::new();
                if inverse {
                    for r in s[..=i].iter().flatten().flatten() {
                        m.insert(key(&r[0]), 0);
                    }
                }
                for r in s[(i + 1).saturating_sub(w)..=i].iter().flatten().flatten() {
                    let (k, n) = pair(r);
                    *m.entry(k).or_insert(0) += n;
                }
                m.into_iter().map(|(k, n)| json!([k, n])).collect()
            })
        })
        .collect()
}

/// `update_state_by_key` with running totals: every key's total, at every
/// batch the stream has.
fn running_total(s: &Stream) -> Stream {
    let mut state: BTreeMap<String, i64> = BTreeMap::new();
    s.iter()
        .map(|b| {
            b.as_ref().map(|b| {
                for r in b {
                    let (k, n) = pair(r);
                    *state.entry(k).or_insert(0) += n;
                }
                state.iter().map(|(k, n)| json!([k, n])).collect()
            })
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 64,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn random_programs_on_wasm_operators_match_the_model(
        p in program(),
        input in batches(),
        parts in 1usize..4,
        workers in 1usize..3,
    ) {
        let got = run(&p, &input, parts, workers);
        let want = model(&p, &input);
        prop_assert_eq!(got, want, "{:?} in {} partitions on {} workers", p, parts, workers);
    }
}
