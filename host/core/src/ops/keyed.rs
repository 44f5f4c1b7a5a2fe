//! reduce_by_key and combine_by_key: map-side combine in each input partition, hash shuffle into
//! `partitions` output partitions, and a final combine per output partition.
//! Keys are hashed and compared as canonical MessagePack bytes, never decoded.

use super::BatchContext;
use crate::error::{Error, Result};
use crate::func::{CallSite, Func};
use crate::rdd::Rdd;
use hashbrown::HashMap;
use rayon::prelude::*;
use sluice_sdk::{Batch, Column, msgpack};

/// The partition of a key: stable across runs and machines (xxh3 of its bytes).
pub(crate) fn partition_of(key: &[u8], partitions: usize) -> usize {
    (xxhash_rust::xxh3::xxh3_64(key) % partitions as u64) as usize
}

/// Splits every element into key and value columns: keyed elements as they
/// are, others must be `[key, value]` pairs.
pub(crate) fn keyed(batch: Batch, ctx: &BatchContext<'_>, op: &str) -> Result<(Column, Column)> {
    Ok(KeyedElements::of(batch, ctx, op)?.into_columns())
}

/// A partition's elements as (key, value) byte slices, without copying
/// them: keyed elements as they are, `[key, value]` pairs split in place.
pub(crate) enum KeyedElements {
    /// Elements with keys.
    Keyed(Column, Column),
    /// Pairs, with where each pair's value starts (its key runs from just
    /// after the pair's array marker to there).
    Pairs(Column, Vec<u32>),
}

impl KeyedElements {
    /// `batch`'s elements; an element that is neither keyed nor a pair is
    /// an error naming the stream, the batch and the element.
    pub(crate) fn of(batch: Batch, ctx: &BatchContext<'_>, op: &str) -> Result<KeyedElements> {
        if batch.has_keys() && batch.keys.iter().all(|k| !k.is_empty()) {
            return Ok(KeyedElements::Keyed(batch.keys, batch.values));
        }
        let joined = batch.joined_values().into_owned();
        let mut value_at = Vec::with_capacity(joined.len());
        for (i, v) in joined.iter().enumerate() {
            let (k, _) = msgpack::split_pair(v).ok_or_else(|| Error::Element {
                stream: ctx.stream.to_string(),
                batch: ctx.time,
                message: format!(
                    "{op} needs (key, value) pairs, but element {i} is {}",
                    crate::render::py_repr(&crate::render::decode(v))
                ),
            })?;
            // Within a valid column: fits in u32.
            value_at.push(joined.offsets[i] + 1 + k.len() as u32);
        }
        Ok(KeyedElements::Pairs(joined, value_at))
    }

    pub(crate) fn len(&self) -> usize {
        match self {
            KeyedElements::Keyed(_, values) => values.len(),
            KeyedElements::Pairs(_, value_at) => value_at.len(),
        }
    }

    #[inline]
    pub(crate) fn key(&self, i: usize) -> &[u8] {
        match self {
            KeyedElements::Keyed(keys, _) => keys.get(i),
            KeyedElements::Pairs(c, value_at) => {
                &c.bytes[c.offsets[i] as usize + 1..value_at[i] as usize]
            }
        }
    }

    #[inline]
    pub(crate) fn value(&self, i: usize) -> &[u8] {
        match self {
            KeyedElements::Keyed(_, values) => values.get(i),
            KeyedElements::Pairs(c, value_at) => {
                &c.bytes[value_at[i] as usize..c.offsets[i + 1] as usize]
            }
        }
    }

    /// The keys and the values as two columns.
    pub(crate) fn into_columns(self) -> (Column, Column) {
        if let KeyedElements::Keyed(keys, values) = self {
            return (keys, values);
        }
        let n = self.len();
        let bytes = match &self {
            KeyedElements::Pairs(c, _) => c.bytes.len(),
            KeyedElements::Keyed(..) => 0,
        };
        let mut keys = Column::with_capacity(n, bytes / 2);
        let mut values = Column::with_capacity(n, bytes / 2);
        for i in 0..n {
            // Sizes come from a valid column, so they fit.
            let _ = keys.push_encoded(self.key(i));
            let _ = values.push_encoded(self.value(i));
        }
        (keys, values)
    }
}

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
const KEY_SAMPLE: usize = 4096;

/// [`combine`] over elements of any form (pairs are not copied into key and
/// value columns first).
pub(crate) fn combine_elements(
    elements: KeyedElements,
    create: Option<&Func>,
    func: &Func,
    site: CallSite,
) -> Result<(Column, Column)> {
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
    // The values ordered by group (stably), written where they belong in
    // one pass over the input: reads in order, one write position per
    // group, rather than reading each value from wherever it is.
    let first_of = |g: usize, i: usize| created.as_ref().filter(|_| firsts[g] as usize == i);
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
    let reduced = func.apply_reduce(&mut grouped, groups, site)?;
    let mut out_keys = Column::with_capacity(firsts.len(), firsts.len() * 8);
    for &i in &firsts {
        let _ = out_keys.push_encoded(elements.key(i as usize));
    }
    Ok((out_keys, reduced))
}

/// `reduce_by_key(func, partitions)`.
pub(crate) fn reduce_by_key(
    func: &Func,
    partitions: usize,
    rdd: Rdd,
    ctx: &BatchContext<'_>,
) -> Result<Rdd> {
    let combiner = Combiner {
        create: None,
        merge_value: func,
        merge_combiners: func,
    };
    combine_by_key(&combiner, partitions, rdd, ctx, "reduce_by_key")
}

/// `combine_by_key(create, merge_value, merge_combiners, partitions)`: per
/// input partition each key's values folded into a combiner, then the
/// combiners of each key merged after the hash shuffle.
pub(crate) fn combine_by_key(
    combiner: &Combiner<'_>,
    partitions: usize,
    rdd: Rdd,
    ctx: &BatchContext<'_>,
    op: &str,
) -> Result<Rdd> {
    let partitions = partitions.max(1);
    let n_in = rdd.partitions.len() as u32;
    // Map side: combine within each input partition, then bucket by key hash.
    let buckets: Vec<Vec<Batch>> = ctx.pool.install(|| {
        rdd.partitions
            .into_par_iter()
            .enumerate()
            .map(|(p, batch)| {
                let mut out = vec![Batch::default(); partitions];
                if batch.is_empty() {
                    return Ok(out);
                }
                let site = CallSite {
                    batch: ctx.time,
                    partition: p as u32,
                    partitions: n_in,
                };
                let elements = KeyedElements::of(batch, ctx, op)?;
                let (keys, values) =
                    combine_elements(elements, combiner.create, combiner.merge_value, site)?;
                if partitions == 1 {
                    out[0] = Batch { keys, values };
                    return Ok(out);
                }
                for i in 0..keys.len() {
                    let k = keys.get(i);
                    let b = &mut out[partition_of(k, partitions)];
                    let _ = b.keys.push_encoded(k);
                    let _ = b.values.push_encoded(values.get(i));
                }
                Ok(out)
            })
            .collect::<Result<Vec<_>>>()
    })?;
    // Exchange: output partition q gathers bucket q of every input partition.
    let mut gathered: Vec<Vec<Batch>> = (0..partitions)
        .map(|_| Vec::with_capacity(buckets.len()))
        .collect();
    for row in buckets {
        for (q, b) in row.into_iter().enumerate() {
            if !b.is_empty() {
                gathered[q].push(b);
            }
        }
    }
    // Reduce side: combine each output partition.
    let out = ctx.pool.install(|| {
        gathered
            .into_par_iter()
            .enumerate()
            .map(|(q, parts)| {
                let mut keys = Column::new();
                let mut values = Column::new();
                for b in &parts {
                    keys.extend_from(&b.keys)
                        .map_err(|e| Error::Internal(e.to_string()))?;
                    values
                        .extend_from(&b.values)
                        .map_err(|e| Error::Internal(e.to_string()))?;
                }
                if keys.is_empty() {
                    return Ok(Batch::default());
                }
                let site = CallSite {
                    batch: ctx.time,
                    partition: q as u32,
                    partitions: partitions as u32,
                };
                let (keys, values) = combine(keys, values, None, combiner.merge_combiners, site)?;
                Ok(Batch { keys, values })
            })
            .collect::<Result<Vec<_>>>()
    })?;
    Ok(Rdd { partitions: out })
}

/// `count_by_value(partitions)`: each distinct element with its number of
/// occurrences, as `(element, count)` pairs in `partitions` partitions.
pub(crate) fn count_by_value(partitions: usize, rdd: Rdd, ctx: &BatchContext<'_>) -> Result<Rdd> {
    let ones: Vec<Batch> = rdd
        .partitions
        .into_iter()
        .map(|b| {
            let values = b.joined_values().into_owned();
            let mut counts = Column::with_capacity(values.len(), values.len());
            for _ in 0..values.len() {
                let _ = counts.push_encoded(&[1]);
            }
            Batch {
                keys: values,
                values: counts,
            }
        })
        .collect();
    let add = Func::reduce("count", |a: i64, b: i64| a + b);
    reduce_by_key(&add, partitions, Rdd { partitions: ones }, ctx)
}

/// `group_by_key(partitions)`: per key, `(k, [values])` with the values in
/// arrival order, in `partitions` partitions (hash of the key).
pub(crate) fn group_by_key(partitions: usize, rdd: Rdd, ctx: &BatchContext<'_>) -> Result<Rdd> {
    use super::join::{array_header, bucket, gather};
    let partitions = partitions.max(1);
    let gathered = gather(bucket(rdd, partitions, ctx, "group_by_key")?, partitions);
    let out = ctx.pool.install(|| {
        gathered
            .into_par_iter()
            .map(|parts| {
                let mut index: HashMap<&[u8], usize> = HashMap::new();
                let mut groups: Vec<(&[u8], Vec<&[u8]>)> = Vec::new();
                for b in &parts {
                    for i in 0..b.len() {
                        let k = b.keys.get(i);
                        let g = *index.entry(k).or_insert_with(|| {
                            groups.push((k, Vec::new()));
                            groups.len() - 1
                        });
                        groups[g].1.push(b.values.get(i));
                    }
                }
                let mut out = Batch::default();
                let mut value = Vec::new();
                for (k, vs) in groups {
                    value.clear();
                    array_header(&mut value, vs.len());
                    vs.iter().for_each(|v| value.extend_from_slice(v));
                    out.keys
                        .push_encoded(k)
                        .map_err(|e| Error::Internal(e.to_string()))?;
                    out.values
                        .push_encoded(&value)
                        .map_err(|e| Error::Internal(e.to_string()))?;
                }
                Ok(out)
            })
            .collect::<Result<Vec<_>>>()
    })?;
    Ok(Rdd { partitions: out })
}

/// `map_values(f)`: `(k, f(v))` for every `(k, v)`; keys and partitioning kept.
pub(crate) fn map_values(func: &Func, rdd: Rdd, ctx: &BatchContext<'_>) -> Result<Rdd> {
    let n = rdd.partitions.len() as u32;
    let partitions = ctx.pool.install(|| {
        rdd.partitions
            .into_par_iter()
            .enumerate()
            .map(|(p, batch)| {
                if batch.is_empty() {
                    return Ok(Batch::default());
                }
                let (keys, mut values) = keyed(batch, ctx, "map_values")?;
                let site = CallSite {
                    batch: ctx.time,
                    partition: p as u32,
                    partitions: n,
                };
                let values = func.apply_values(&mut values, site)?;
                Ok(Batch { keys, values })
            })
            .collect::<Result<Vec<_>>>()
    })?;
    Ok(Rdd { partitions })
}

/// `flat_map_values(f)`: `(k, w)` for every `w` in `f(v)`, for every
/// `(k, v)`; keys and partitioning kept.
pub(crate) fn flat_map_values(func: &Func, rdd: Rdd, ctx: &BatchContext<'_>) -> Result<Rdd> {
    let n = rdd.partitions.len() as u32;
    let partitions = ctx.pool.install(|| {
        rdd.partitions
            .into_par_iter()
            .enumerate()
            .map(|(p, batch)| {
                if batch.is_empty() {
                    return Ok(Batch::default());
                }
                let (mut keys, mut values) = keyed(batch, ctx, "flat_map_values")?;
                let site = CallSite {
                    batch: ctx.time,
                    partition: p as u32,
                    partitions: n,
                };
                func.apply_keyed(&mut keys, &mut values, site)
            })
            .collect::<Result<Vec<_>>>()
    })?;
    Ok(Rdd { partitions })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::testing::{batch_of, rendered, with_ctx};

    #[test]
    fn counts_are_exact_past_the_key_sample_with_many_keys_or_few() {
        // Every key of the sample new (the table is sized up after it), then
        // some seen again; and three keys over and over (it stays small).
        let n = 3 * KEY_SAMPLE;
        let distinct: Vec<(String, i64)> = (0..n)
            .map(|i| (format!("k{}", i % (2 * KEY_SAMPLE)), 1))
            .collect();
        let few: Vec<(String, i64)> = (0..n).map(|i| (format!("k{}", i % 3), 1)).collect();
        with_ctx(|ctx| {
            let add = Func::reduce("add", |a: i64, b: i64| a + b);
            let rdd = Rdd {
                partitions: vec![batch_of(&distinct)],
            };
            let out = rendered(&reduce_by_key(&add, 1, rdd, ctx).unwrap());
            assert_eq!(out.len(), 2 * KEY_SAMPLE);
            let twice = out.iter().filter(|e| e.ends_with(",2]")).count();
            let once = out.iter().filter(|e| e.ends_with(",1]")).count();
            assert_eq!((twice, once), (KEY_SAMPLE, KEY_SAMPLE), "{:?}", &out[..3]);
            let rdd = Rdd {
                partitions: vec![batch_of(&few)],
            };
            let out = rendered(&reduce_by_key(&add, 1, rdd, ctx).unwrap());
            let each = n / 3;
            assert_eq!(out, [0, 1, 2].map(|k| format!(r#"["k{k}",{each}]"#)));
        });
    }

    #[test]
    fn reduces_across_partitions_into_n_partitions() {
        with_ctx(|ctx| {
            let rdd = Rdd {
                partitions: vec![
                    batch_of(&[("a", 1), ("b", 1), ("a", 1)]),
                    batch_of(&[("a", 1), ("c", 1)]),
                ],
            };
            let add = Func::reduce("add", |a: i64, b: i64| a + b);
            let out = reduce_by_key(&add, 3, rdd, ctx).unwrap();
            assert_eq!(out.partitions.len(), 3);
            assert_eq!(rendered(&out), [r#"["a",3]"#, r#"["b",1]"#, r#"["c",1]"#]);
            // Every key lands in the partition its hash names.
            for (q, b) in out.partitions.iter().enumerate() {
                for k in b.keys.iter() {
                    assert_eq!(partition_of(k, 3), q);
                }
            }
        });
    }

    #[test]
    fn groups_and_maps_values_by_key() {
        with_ctx(|ctx| {
            let rdd = || Rdd {
                partitions: vec![batch_of(&[("a", 1), ("b", 2)]), batch_of(&[("a", 3)])],
            };
            let grouped = group_by_key(4, rdd(), ctx).unwrap();
            assert_eq!(grouped.partitions.len(), 4);
            assert_eq!(rendered(&grouped), [r#"["a",[1,3]]"#, r#"["b",[2]]"#]);
            let doubled = map_values(&Func::map("double", |v: i64| v * 2), rdd(), ctx).unwrap();
            assert_eq!(doubled.partitions.len(), 2, "partitioning is kept");
            assert_eq!(
                rendered(&doubled),
                [r#"["a",2]"#, r#"["a",6]"#, r#"["b",4]"#]
            );
        });
    }

    #[test]
    fn combine_by_key_folds_then_merges_like_spark_average() {
        with_ctx(|ctx| {
            let rdd = Rdd {
                partitions: vec![
                    batch_of(&[("a", 1), ("b", 10), ("a", 3)]),
                    batch_of(&[("a", 5), ("c", 7)]),
                ],
            };
            // (sum, count): create (v, 1), merge_value adds a value, merge_combiners adds pairs.
            let create = Func::map("create", |v: i64| (v, 1i64));
            let merge_value = Func::fold("merge_value", |c: (i64, i64), v: i64| (c.0 + v, c.1 + 1));
            let merge = Func::reduce("merge", |a: (i64, i64), b: (i64, i64)| {
                (a.0 + b.0, a.1 + b.1)
            });
            let combiner = Combiner {
                create: Some(&create),
                merge_value: &merge_value,
                merge_combiners: &merge,
            };
            let out = combine_by_key(&combiner, 3, rdd, ctx, "combine_by_key").unwrap();
            assert_eq!(out.partitions.len(), 3);
            assert_eq!(
                rendered(&out),
                [r#"["a",[9,3]]"#, r#"["b",[10,1]]"#, r#"["c",[7,1]]"#]
            );
        });
    }

    #[test]
    fn flat_map_values_keeps_each_outputs_key() {
        with_ctx(|ctx| {
            let rdd = Rdd {
                partitions: vec![batch_of(&[("a", 2), ("b", 0)]), batch_of(&[("c", 3)])],
            };
            let f = Func::flat_map("upto", |n: i64| 0..n);
            let out = flat_map_values(&f, rdd.clone(), ctx).unwrap();
            assert_eq!(out.partitions.len(), 2, "partitioning is kept");
            assert_eq!(
                rendered(&out),
                [
                    r#"["a",0]"#,
                    r#"["a",1]"#,
                    r#"["c",0]"#,
                    r#"["c",1]"#,
                    r#"["c",2]"#
                ]
            );
            // Split into calls of one element each, the result is the same.
            let small = Func::flat_map("upto", |n: i64| 0..n).with_input_limit(1);
            assert_eq!(
                rendered(&flat_map_values(&small, rdd, ctx).unwrap()),
                rendered(&out)
            );
        });
    }

    #[test]
    fn pairs_are_read_in_place_as_keys_and_values() {
        with_ctx(|ctx| {
            let items = [
                ("a", serde_json::json!(1)),
                ("bb", serde_json::json!([1, 2])),
                ("", serde_json::json!("x")),
            ];
            let pairs = KeyedElements::of(batch_of(&items), ctx, "test").unwrap();
            assert!(matches!(pairs, KeyedElements::Pairs(..)));
            // A keyed batch of the same elements reads the same.
            let (keys, values) = pairs.into_columns();
            let keyed = KeyedElements::of(
                Batch {
                    keys: keys.clone(),
                    values: values.clone(),
                },
                ctx,
                "test",
            )
            .unwrap();
            assert!(matches!(keyed, KeyedElements::Keyed(..)));
            let pairs = KeyedElements::of(batch_of(&items), ctx, "test").unwrap();
            assert_eq!(pairs.len(), 3);
            for (i, (k, v)) in items.iter().enumerate() {
                let mut kb = Column::new();
                kb.push(k).unwrap();
                let mut vb = Column::new();
                vb.push(v).unwrap();
                assert_eq!(pairs.key(i), kb.get(0), "key {i}");
                assert_eq!(pairs.value(i), vb.get(0), "value {i}");
                assert_eq!(keyed.key(i), pairs.key(i));
                assert_eq!(keyed.value(i), pairs.value(i));
            }
        });
    }

    #[test]
    fn non_pairs_are_a_clear_error() {
        with_ctx(|ctx| {
            let rdd = Rdd {
                partitions: vec![batch_of(&["lonely"])],
            };
            let add = Func::reduce("add", |a: i64, b: i64| a + b);
            let err = reduce_by_key(&add, 1, rdd, ctx).unwrap_err().to_string();
            assert!(
                err.contains("stream `test`") && err.contains("'lonely'"),
                "{err}"
            );
        });
    }
}
