//! Reference models: what each pipeline must output, in plain Rust.

use super::*;

pub(super) fn words(lines: &[String]) -> impl Iterator<Item = &str> {
    lines.iter().flat_map(|l| l.split_whitespace())
}

/// Word counts of one batch.
pub(super) fn counts(lines: &[String]) -> BTreeMap<String, i64> {
    let mut c = BTreeMap::new();
    for w in words(lines) {
        *c.entry(w.to_string()).or_insert(0) += 1;
    }
    c
}

/// A model's batches, from index 0, as an [`Out`].
pub(super) fn out_of(batches: impl IntoIterator<Item = (u64, Vec<Value>)>) -> Out {
    batches
        .into_iter()
        .map(|(i, records)| {
            let mut texts: Vec<String> = records.iter().map(Value::to_string).collect();
            texts.sort();
            (i, texts)
        })
        .collect()
}

/// Pairs `(key, value)` as records.
pub(super) fn records<V: Into<Value> + Clone>(m: &BTreeMap<String, V>) -> Vec<Value> {
    m.iter()
        .map(|(k, v)| json!([k, v.clone().into()]))
        .collect()
}

pub(super) fn word_count_model(input: &Batches) -> Out {
    out_of(
        input
            .iter()
            .enumerate()
            .map(|(i, b)| (i as u64, records(&counts(b)))),
    )
}

/// `reduce_by_key_and_window` of the word pairs over 3 batches every
/// `slide` batches: the window ending at batch `j` holds batches
/// `j - 2 ..= j`. With an inverse function and no filter, every key seen so
/// far stays (at 0 once it left the window); otherwise only keys in the
/// window (a count never falls to 0 inside it).
pub(super) fn window_model(input: &Batches, slide: usize, keeps_zeros: bool) -> Out {
    let per: Vec<BTreeMap<String, i64>> = input.iter().map(|b| counts(b)).collect();
    out_of((0..per.len()).filter(|j| (j + 1) % slide == 0).map(|j| {
        let mut sum: BTreeMap<String, i64> = BTreeMap::new();
        if keeps_zeros {
            for k in per[..=j].iter().flat_map(BTreeMap::keys) {
                sum.insert(k.clone(), 0);
            }
        }
        for batch in &per[j.saturating_sub(2)..=j] {
            for (k, n) in batch {
                *sum.entry(k.clone()).or_insert(0) += n;
            }
        }
        (j as u64, records(&sum))
    }))
}

/// Running word totals: the whole state, every batch.
pub(super) fn running_total_model(input: &Batches) -> Out {
    let mut state: BTreeMap<String, i64> = BTreeMap::new();
    out_of(input.iter().enumerate().map(|(i, b)| {
        for (k, n) in counts(b) {
            *state.entry(k).or_insert(0) += n;
        }
        (i as u64, records(&state))
    }))
}

/// Totals of the words over the batches since each last appeared in every one.
pub(super) fn streak_total_model(input: &Batches) -> Out {
    let mut state: BTreeMap<String, i64> = BTreeMap::new();
    out_of(input.iter().enumerate().map(|(i, b)| {
        state = counts(b)
            .into_iter()
            .map(|(k, n)| {
                let before = state.get(&k).copied().unwrap_or(0);
                (k, before + n)
            })
            .collect();
        (i as u64, records(&state))
    }))
}

/// Each occurrence of a word with its number of occurrences so far.
pub(super) fn occurrence_model(input: &Batches) -> Out {
    let mut seen: BTreeMap<String, i64> = BTreeMap::new();
    out_of(input.iter().enumerate().map(|(i, b)| {
        let mut out = Vec::new();
        for (k, n) in counts(b) {
            let before = seen.get(&k).copied().unwrap_or(0);
            out.extend((before + 1..=before + n).map(|c| json!([k, c])));
            seen.insert(k, before + n);
        }
        (i as u64, out)
    }))
}

/// [`occurrence_model`] with a timeout of `timeout` batches, Spark's rule:
/// a key last updated in batch `t` times out in the first batch `i` with
/// `t < i - timeout`, with one last `(key, occurrences)` and starts again
/// from 0 if it comes back.
pub(super) fn timed_occurrence_model(input: &Batches, timeout: usize) -> Out {
    let mut seen: BTreeMap<String, (i64, usize)> = BTreeMap::new();
    out_of(input.iter().enumerate().map(|(i, b)| {
        let mut out = Vec::new();
        let news = counts(b);
        for (k, n) in &news {
            let before = seen.get(k).map_or(0, |s| s.0);
            out.extend((before + 1..=before + n).map(|c| json!([k, c])));
            seen.insert(k.clone(), (before + n, i));
        }
        seen.retain(|k, (n, last)| {
            let idle = *last + timeout < i && !news.contains_key(k);
            if idle {
                out.push(json!([k, n]));
            }
            !idle
        });
        (i as u64, out)
    }))
}

/// Batch `i` of `input`, empty past its end.
pub(super) fn batch(input: &Batches, i: usize) -> &[String] {
    input.get(i).map_or(&[], Vec::as_slice)
}
