//! The same output for every partition and worker count.

use super::models::*;
use super::*;

/// A pipeline from its queue streams (one per input) and the partition count.
pub(super) type Build = fn(&[DStream], usize) -> DStream;

/// A context on a manual clock with `workers` threads, its state in memory
/// unless the test gives it a checkpoint directory.
pub(super) fn context(workers: usize) -> StreamingContext {
    StreamingContext::new(SECOND)
        .with_clock(Arc::new(ManualClock::new(0)))
        .with_workers(workers)
        .with_state_in_memory()
}

/// Sorts the value lists of `(key, [values])` records (their order follows arrival).
pub(super) fn sort_groups(v: Value) -> Value {
    match v {
        Value::Array(mut kv) if kv.len() == 2 => {
            if let Value::Array(values) = &mut kv[1] {
                values.sort_by_key(Value::to_string);
            }
            Value::Array(kv)
        }
        other => other,
    }
}

/// A collected stream as an [`Out`], and the partition counts of its batches.
pub(super) fn collected(c: &Collected, normalize: fn(Value) -> Value) -> (Out, Vec<usize>) {
    let batches = c.lock().unwrap_or_else(|e| e.into_inner());
    let parts = batches.iter().map(|b| b.partitions).collect();
    let out = out_of(batches.iter().map(|b| {
        (
            b.index,
            b.records.iter().cloned().map(normalize).collect::<Vec<_>>(),
        )
    }));
    assert_eq!(out.len(), batches.len(), "every batch once");
    (out, parts)
}

/// Runs `build` over queue streams of `inputs` in `p` partitions with `w`
/// workers until every queue is exhausted; with `encoded`, every exchange's
/// blocks pass as bytes, as between processes.
pub(super) fn run(
    build: Build,
    normalize: fn(Value) -> Value,
    inputs: &[Batches],
    (p, w): (usize, usize),
    encoded: bool,
) -> (Out, Vec<usize>) {
    let mut ssc = context(w);
    if encoded {
        ssc = ssc.with_shuffle(Arc::new(EncodedShuffle::default()));
    }
    let sources: Vec<DStream> = inputs
        .iter()
        .map(|b| ssc.queue_stream(b.clone(), p))
        .collect();
    let out = build(&sources, p).collect();
    ssc.run(None).expect("the run");
    collected(&out, normalize)
}

/// The pipeline's output is the same (and in exactly `P` partitions) for
/// every partition count `P` and worker count, with the blocks of its
/// exchanges moved in memory or passed as bytes; it equals `model` if
/// given, else the output with one partition and one worker.
pub(super) fn check_invariance(
    name: &str,
    build: Build,
    normalize: fn(Value) -> Value,
    inputs: &[Batches],
    model: Option<Out>,
) -> Result<(), TestCaseError> {
    let mut reference = model;
    for p in PARTITIONS {
        for w in WORKERS {
            for encoded in [false, true] {
                let (out, parts) = run(build, normalize, inputs, (p, w), encoded);
                prop_assert!(
                    parts.iter().all(|&n| n == p),
                    "{name} with P={p}, W={w}: batches in {parts:?} partitions"
                );
                match &reference {
                    None => reference = Some(out),
                    Some(want) => prop_assert_eq!(
                        &out,
                        want,
                        "{} with P={}, W={}, encoded shuffle {}",
                        name,
                        p,
                        w,
                        encoded
                    ),
                }
            }
        }
    }
    Ok(())
}

pub(super) fn word_count(s: &[DStream], p: usize) -> DStream {
    s[0].flat_map(split()).map(pair()).reduce_by_key(add(), p)
}

pub(super) fn filtered_count_by_value(s: &[DStream], p: usize) -> DStream {
    s[0].flat_map(split())
        .filter(Func::filter("short", |w: String| w.len() < 3 && w != "b"))
        .count_by_value(p)
}

/// Each word paired with the next word of its line, grouped by word.
pub(super) fn next_words(s: &[DStream], p: usize) -> DStream {
    s[0].flat_map(Func::flat_map("next", |l: String| {
        let w: Vec<&str> = l.split_whitespace().collect();
        w.windows(2)
            .map(|p| (p[0].to_string(), p[1].to_string()))
            .collect::<Vec<_>>()
    }))
    .group_by_key(p)
}

pub(super) fn next_words_model(input: &Batches) -> Out {
    out_of(input.iter().enumerate().map(|(i, b)| {
        let mut groups: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for l in b {
            let w: Vec<&str> = l.split_whitespace().collect();
            for p in w.windows(2) {
                groups
                    .entry(p[0].to_string())
                    .or_default()
                    .push(p[1].to_string());
            }
        }
        let records = groups
            .into_iter()
            .map(|(k, v)| sort_groups(json!([k, v])))
            .collect();
        (i as u64, records)
    }))
}

/// The second stream's words count 10 each.
pub(super) fn union_count(s: &[DStream], p: usize) -> DStream {
    let tens = s[1]
        .flat_map(split())
        .map(Func::map("ten", |w: String| (w, 10i64)));
    s[0].flat_map(split())
        .map(pair())
        .union(&[tens])
        .reduce_by_key(add(), p)
}

pub(super) fn union_count_model(a: &Batches, b: &Batches) -> Out {
    out_of((0..a.len().max(b.len())).map(|i| {
        let mut c = counts(batch(a, i));
        for (k, n) in counts(batch(b, i)) {
            *c.entry(k).or_insert(0) += 10 * n;
        }
        (i as u64, records(&c))
    }))
}

/// Words of the first stream with their position in the line, and words
/// of the second with the length of their line.
pub(super) fn keyed_sides(s: &[DStream]) -> (DStream, DStream) {
    let positions = s[0].flat_map(Func::flat_map("position", |l: String| {
        l.split_whitespace()
            .enumerate()
            .map(|(i, w)| (w.to_string(), i as i64))
            .collect::<Vec<_>>()
    }));
    let lengths = s[1].flat_map(Func::flat_map("length", |l: String| {
        let n = l.split_whitespace().count() as i64;
        l.split_whitespace()
            .map(|w| (w.to_string(), n))
            .collect::<Vec<_>>()
    }));
    (positions, lengths)
}

pub(super) fn join(s: &[DStream], p: usize) -> DStream {
    let (positions, lengths) = keyed_sides(s);
    positions.join(&lengths, p)
}

pub(super) fn full_outer_join(s: &[DStream], p: usize) -> DStream {
    let (positions, lengths) = keyed_sides(s);
    positions.full_outer_join(&lengths, p)
}

/// Per batch and key, the product of both sides' values; with `outer`, a
/// key of one side only paired with `null`.
pub(super) fn join_model(a: &Batches, b: &Batches, outer: bool) -> Out {
    out_of((0..a.len().max(b.len())).map(|i| {
        let mut sides: BTreeMap<&str, (Vec<i64>, Vec<i64>)> = BTreeMap::new();
        for l in batch(a, i) {
            for (j, w) in l.split_whitespace().enumerate() {
                sides.entry(w).or_default().0.push(j as i64);
            }
        }
        for l in batch(b, i) {
            let n = l.split_whitespace().count() as i64;
            for w in l.split_whitespace() {
                sides.entry(w).or_default().1.push(n);
            }
        }
        let mut out = Vec::new();
        for (k, (left, right)) in sides {
            for v in &left {
                for n in &right {
                    out.push(json!([k, [v, n]]));
                }
                if outer && right.is_empty() {
                    out.push(json!([k, [v, null]]));
                }
            }
            if outer && left.is_empty() {
                out.extend(right.iter().map(|n| json!([k, [null, n]])));
            }
        }
        (i as u64, out)
    }))
}

pub(super) fn repartitioned(s: &[DStream], p: usize) -> DStream {
    s[0].flat_map(split()).repartition(p)
}

pub(super) fn words_model(input: &Batches) -> Out {
    out_of(
        input
            .iter()
            .enumerate()
            .map(|(i, b)| (i as u64, words(b).map(Value::from).collect())),
    )
}

/// A windowed word count (3 batches) of every kind, by slide (batches),
/// inverse function and filter.
pub(super) fn windowed(
    s: &[DStream],
    p: usize,
    slide: u32,
    inverse: bool,
    filter: bool,
) -> DStream {
    s[0].flat_map(split()).map(pair()).reduce_by_key_and_window(
        add(),
        inverse.then(subtract),
        3 * SECOND,
        slide * SECOND,
        p,
        filter.then(nonzero),
    )
}

pub(super) fn identity(v: Value) -> Value {
    v
}

proptest! {
    #![proptest_config(config(32))]

    #[test]
    fn word_count_is_invariant_and_right(input in batches(6)) {
        let model = word_count_model(&input);
        check_invariance("word count", word_count, identity, &[input], Some(model))?;
    }

    #[test]
    fn filter_and_count_by_value_is_invariant_and_right(input in batches(6)) {
        let kept: Batches = input
            .iter()
            .map(|b| words(b).filter(|w| w.len() < 3 && *w != "b").map(str::to_string).collect())
            .collect();
        let model = word_count_model(&kept);
        check_invariance("filter + count_by_value", filtered_count_by_value, identity, &[input], Some(model))?;
    }

    #[test]
    fn group_by_key_is_invariant_and_right(input in batches(6)) {
        let model = next_words_model(&input);
        check_invariance("group_by_key", next_words, sort_groups, &[input], Some(model))?;
    }

    #[test]
    fn windows_are_invariant_and_right(input in batches(6)) {
        // Empty batches after the input: the windows drain.
        let input = padded(input, 3);
        let variants: [(&str, Build, usize, bool); 6] = [
            ("window, slide 1", |s, p| windowed(s, p, 1, false, false), 1, false),
            ("window, slide 2", |s, p| windowed(s, p, 2, false, false), 2, false),
            ("incremental window, slide 1", |s, p| windowed(s, p, 1, true, false), 1, true),
            ("incremental window, slide 2", |s, p| windowed(s, p, 2, true, false), 2, true),
            ("incremental filtered window, slide 1", |s, p| windowed(s, p, 1, true, true), 1, false),
            ("incremental filtered window, slide 2", |s, p| windowed(s, p, 2, true, true), 2, false),
        ];
        for (name, build, slide, keeps_zeros) in variants {
            let model = window_model(&input, slide, keeps_zeros);
            check_invariance(name, build, identity, std::slice::from_ref(&input), Some(model))?;
        }
        check_invariance(
            "window + count_by_value, slide 2",
            |s, p| s[0].flat_map(split()).window(3 * SECOND, 2 * SECOND).count_by_value(p),
            identity,
            std::slice::from_ref(&input),
            Some(window_model(&input, 2, false)),
        )?;
        check_invariance(
            "count_by_value_and_window, slide 1",
            |s, p| s[0].flat_map(split()).count_by_value_and_window(3 * SECOND, SECOND, p),
            identity,
            std::slice::from_ref(&input),
            Some(window_model(&input, 1, false)),
        )?;
    }

    #[test]
    fn keyed_state_is_invariant_and_right(input in batches(6)) {
        let input = padded(input, 1);
        let inputs = std::slice::from_ref(&input);
        check_invariance(
            "update_state_by_key running totals",
            |s, p| s[0].flat_map(split()).map(pair()).update_state_by_key(running_total(), p),
            identity,
            inputs,
            Some(running_total_model(&input)),
        )?;
        check_invariance(
            "update_state_by_key removing keys",
            |s, p| s[0].flat_map(split()).map(pair()).update_state_by_key(streak_total(), p),
            identity,
            inputs,
            Some(streak_total_model(&input)),
        )?;
        check_invariance(
            "map_with_state occurrences",
            |s, p| s[0].flat_map(split()).map(pair()).map_with_state(StateSpec::function(occurrence()).num_partitions(p)),
            identity,
            inputs,
            Some(occurrence_model(&input)),
        )?;
        check_invariance(
            "map_with_state occurrences timing out after 2 idle batches",
            |s, p| {
                let spec = StateSpec::function(occurrence())
                    .num_partitions(p)
                    .timeout(2 * SECOND);
                s[0].flat_map(split()).map(pair()).map_with_state(spec)
            },
            identity,
            inputs,
            Some(timed_occurrence_model(&input, 2)),
        )?;
    }

    #[test]
    fn union_is_invariant_and_right(a in batches(6), b in batches(6)) {
        let model = union_count_model(&a, &b);
        check_invariance("union + reduce_by_key", union_count, identity, &[a, b], Some(model))?;
    }

    #[test]
    fn join_is_invariant_and_right(a in batches(6), b in batches(6)) {
        let model = join_model(&a, &b, false);
        check_invariance("join", join, identity, &[a.clone(), b.clone()], Some(model))?;
        let model = join_model(&a, &b, true);
        check_invariance("full_outer_join", full_outer_join, identity, &[a, b], Some(model))?;
    }

    #[test]
    fn repartition_keeps_every_element(input in batches(6)) {
        let model = words_model(&input);
        check_invariance("repartition", repartitioned, identity, std::slice::from_ref(&input), Some(model))?;
        // A word count after the repartition, against one partition and worker.
        check_invariance(
            "repartition + reduce_by_key",
            |s, p| s[0].repartition(p + 1).flat_map(split()).map(pair()).reduce_by_key(add(), p),
            identity,
            &[input],
            None,
        )?;
    }

    #[test]
    fn repartition_spreads_evenly(input in batches(4), n in 1usize..9, p in 1usize..4) {
        let ssc = context(2);
        let sizes: Arc<Mutex<Vec<Vec<usize>>>> = Arc::default();
        let into = sizes.clone();
        ssc.queue_stream(input.clone(), p)
            .flat_map(split())
            .repartition(n)
            .foreach_rdd(move |_, rdd| {
                let lens = rdd.partitions.iter().map(|b| b.len()).collect();
                into.lock().unwrap_or_else(|e| e.into_inner()).push(lens);
                Ok(())
            });
        ssc.run(None).expect("the run");
        let sizes = sizes.lock().unwrap_or_else(|e| e.into_inner());
        prop_assert_eq!(sizes.len(), input.len());
        for (b, lens) in input.iter().zip(sizes.iter()) {
            prop_assert_eq!(lens.len(), n);
            prop_assert_eq!(lens.iter().sum::<usize>(), words(b).count());
            let (lo, hi) = (lens.iter().min(), lens.iter().max());
            prop_assert!(hi.zip(lo).is_some_and(|(h, l)| h - l <= 1), "uneven: {lens:?}");
        }
    }
}

/// The word count, running totals and an incremental window with every
/// function's calls cut at `limit` bytes of input (one element per call at
/// the smallest), in `p` partitions on two workers.
fn split_calls(input: &Batches, p: usize, limit: usize) -> (Out, Out, Out) {
    let ssc = context(2);
    let pairs = ssc
        .queue_stream(input.clone(), p)
        .flat_map(split().with_input_limit(limit))
        .map(pair().with_input_limit(limit));
    let counts = pairs
        .reduce_by_key(add().with_input_limit(limit), p)
        .collect();
    let totals = pairs
        .update_state_by_key(running_total().with_input_limit(limit), p)
        .collect();
    let window = pairs
        .reduce_by_key_and_window(
            add().with_input_limit(limit),
            Some(subtract().with_input_limit(limit)),
            3 * SECOND,
            SECOND,
            p,
            None,
        )
        .collect();
    ssc.run(None).expect("the run");
    (
        collected(&counts, identity).0,
        collected(&totals, identity).0,
        collected(&window, identity).0,
    )
}

proptest! {
    #![proptest_config(config(24))]

    /// However the host cuts a partition into calls (a function's input
    /// limit, down to one element per call), the output is the same.
    #[test]
    fn output_is_independent_of_the_call_split_size(
        input in batches(5),
        limit in prop::sample::select(vec![1usize, 7, 19, 64, 300]),
        p in 1usize..4,
    ) {
        let input = padded(input, 3);
        let (counts, totals, window) = split_calls(&input, p, limit);
        prop_assert_eq!(counts, word_count_model(&input), "word count, calls of {} bytes", limit);
        prop_assert_eq!(totals, running_total_model(&input), "running totals, calls of {} bytes", limit);
        prop_assert_eq!(window, window_model(&input, 1, true), "incremental window, calls of {} bytes", limit);
    }
}
