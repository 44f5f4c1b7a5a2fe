//! Combining the values of equal keys within one partition: one value per
//! key, in order of first appearance.

use super::KeyedElements;
use crate::error::{Error, Result};
use crate::func::{CallSite, Func};
use hashbrown::HashMap;
use sluice_sdk::Column;

/// How `combine_by_key` builds one value per key (`reduce_by_key`: no
/// `create`, `merge_value` and `merge_combiners` the same reduce).
pub(crate) struct Combiner<'a> {
    /// `map` from a key's first value to a combiner; `None`: the value is one.
    pub(crate) create: Option<&'a Func>,
    /// Folds a value into a combiner (`reduce` kind, `(C, V) -> C`).
    pub(crate) merge_value: &'a Func,
    /// Merges two combiners (`reduce` kind, `(C, C) -> C`).
    pub(crate) merge_combiners: &'a Func,
}

/// Combines the values of equal keys: one (key, value) per key, in order of
/// first appearance. With `create`, each key's first value is turned into a
/// combiner that `func` folds the next values into; without, `func`
/// reduces the values. Skips the fold when every key is unique.
pub(crate) fn combine(
    keys: Column,
    values: Column,
    create: Option<&Func>,
    func: &Func,
    site: CallSite,
) -> Result<(Column, Column)> {
    combine_elements(KeyedElements::Keyed(keys, values), create, func, site)
}

/// How many keys [`combine_elements`]' table has room for at first.
const INITIAL_KEYS: usize = 4096;
/// After how many elements [`combine_elements`] looks at the share of new
/// keys among them to size its table for the rest.
pub(super) const KEY_SAMPLE: usize = 4096;

/// [`combine`] over elements of any form (pairs are not copied into key and
/// value columns first).
pub(crate) fn combine_elements(
    elements: KeyedElements,
    create: Option<&Func>,
    func: &Func,
    site: CallSite,
) -> Result<(Column, Column)> {
    let n = elements.len();
    let (group_of, firsts, counts) = number_keys(&elements);
    let created = match create {
        Some(create) => {
            let mut first_values = Column::with_capacity(firsts.len(), firsts.len() * 8);
            for &i in &firsts {
                let _ = first_values.push_encoded(elements.value(i as usize));
            }
            Some(create.apply_values(&mut first_values, site)?)
        }
        None => None,
    };
    if firsts.len() == n {
        let (keys, values) = elements.into_columns();
        return Ok((keys, created.unwrap_or(values)));
    }
    let (mut grouped, groups) =
        group_values(&elements, &group_of, &firsts, &counts, created.as_ref())?;
    let reduced = func.apply_reduce(&mut grouped, groups, site)?;
    let mut out_keys = Column::with_capacity(firsts.len(), firsts.len() * 8);
    for &i in &firsts {
        let _ = out_keys.push_encoded(elements.key(i as usize));
    }
    Ok((out_keys, reduced))
}

/// Numbers the distinct keys of `elements` in order of first appearance:
/// each element's key number, and each key's first element and count.
fn number_keys(elements: &KeyedElements) -> (Vec<u32>, Vec<u32>, Vec<u32>) {
    let n = elements.len();
    // Sized for a few thousand keys; then, if the first elements' keys were
    // nearly all new, for as many as their share foretells. A table sized for
    // the elements (most batches have far fewer keys than elements) is
    // mostly empty, larger than the caches, and every lookup misses them;
    // one grown from small to a million keys rehashes them several times.
    let mut index: HashMap<&[u8], u32> = HashMap::with_capacity(n.min(INITIAL_KEYS));
    let mut group_of = Vec::with_capacity(n);
    let mut firsts: Vec<u32> = Vec::new();
    let mut counts: Vec<u32> = Vec::new();
    for i in 0..n {
        // Hardly a key seen twice so far (under 1 %): the rest will be
        // mostly new too. Fewer new keys say little: a vocabulary's new
        // words thin out as a batch goes on (one of 100 000 words has ~2 %
        // repeats in its first 4096 draws and ends at a tenth of them).
        if i == KEY_SAMPLE && index.len() * 100 > KEY_SAMPLE * 99 {
            index.reserve((n - i) * index.len() / KEY_SAMPLE);
        }
        let k = elements.key(i);
        let g = *index.entry(k).or_insert_with(|| {
            firsts.push(i as u32);
            counts.push(0);
            (firsts.len() - 1) as u32
        });
        counts[g as usize] += 1;
        group_of.push(g);
    }
    drop(index);
    (group_of, firsts, counts)
}

/// The values ordered by key number, `created` (the combiners, if any) in
/// place of each key's first value; and the groups' boundaries.
fn group_values(
    elements: &KeyedElements,
    group_of: &[u32],
    firsts: &[u32],
    counts: &[u32],
    created: Option<&Column>,
) -> Result<(Column, Vec<u32>)> {
    let n = elements.len();
    // The values ordered by group (stably), written where they belong in
    // one pass over the input: reads in order, one write position per
    // group, rather than reading each value from wherever it is.
    let first_of = |g: usize, i: usize| created.filter(|_| firsts[g] as usize == i);
    let mut sizes = vec![0usize; firsts.len()];
    for (i, &g) in group_of.iter().enumerate() {
        let g = g as usize;
        sizes[g] += match first_of(g, i) {
            // The first value of a group is replaced by its combiner.
            Some(c) => c.get(g).len(),
            None => elements.value(i).len(),
        };
    }
    let mut groups = Vec::with_capacity(firsts.len() + 1);
    let mut next_slot = Vec::with_capacity(firsts.len());
    let mut next_byte = Vec::with_capacity(firsts.len());
    let (mut slots, mut bytes) = (0u32, 0usize);
    groups.push(0);
    for (&count, &size) in counts.iter().zip(&sizes) {
        next_slot.push(slots);
        next_byte.push(bytes);
        slots += count;
        bytes += size;
        groups.push(slots);
    }
    let total = u32::try_from(bytes)
        .map_err(|_| Error::Internal("a partition's values exceed 4 GiB".to_string()))?;
    let mut grouped = Column {
        bytes: vec![0u8; bytes],
        offsets: vec![0u32; n + 1],
    };
    for (i, &g) in group_of.iter().enumerate() {
        let g = g as usize;
        let v = match first_of(g, i) {
            Some(c) => c.get(g),
            None => elements.value(i),
        };
        let at = next_byte[g];
        grouped.bytes[at..at + v.len()].copy_from_slice(v);
        // Each value ends where the next of its group (or the next group) starts.
        grouped.offsets[next_slot[g] as usize] = at as u32;
        next_slot[g] += 1;
        next_byte[g] = at + v.len();
    }
    grouped.offsets[n] = total;
    Ok((grouped, groups))
}
