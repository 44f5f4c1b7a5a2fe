//! reduce_by_key and combine_by_key: map-side combine in each input partition, hash shuffle into
//! `partitions` output partitions, and a final combine per output partition.
//! Keys are hashed and compared as canonical MessagePack bytes, never decoded.

mod combine;
#[cfg(test)]
mod tests;

pub(crate) use combine::{Combiner, combine, combine_elements};

use super::BatchContext;
use crate::error::{Error, Result};
use crate::func::{CallSite, Func};
use crate::rdd::Rdd;
use hashbrown::HashMap;
use sluice_sdk::{Batch, Column, msgpack};

/// The partition of a key: stable across runs and machines (xxh3 of its bytes).
pub(crate) fn partition_of(key: &[u8], partitions: usize) -> usize {
    (xxhash_rust::xxh3::xxh3_64(key) % partitions as u64) as usize
}

/// A partition's `(key, value)` elements split by the hash of their keys
/// into `partitions` batches: the map side of a hash exchange.
pub(crate) fn split_by_key(keys: &Column, values: &Column, partitions: usize) -> Vec<Batch> {
    let mut out = vec![Batch::default(); partitions];
    for i in 0..keys.len() {
        let k = keys.get(i);
        let b = &mut out[partition_of(k, partitions)];
        // Sizes come from a valid column, so they fit.
        let _ = b.keys.push_encoded(k);
        let _ = b.values.push_encoded(values.get(i));
    }
    out
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
    let exchanged = ctx.exchange(0, partitions, rdd.partitions, |p, batch| {
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
        Ok(split_by_key(&keys, &values, partitions))
    })?;
    // Reduce side: each output partition reads its blocks and combines them.
    let out = ctx
        .tasks((0..partitions).collect(), |q, _| {
            let site = CallSite {
                batch: ctx.time,
                partition: q as u32,
                partitions: partitions as u32,
            };
            merge_buckets(&ctx.read(&exchanged, q)?, combiner.merge_combiners, site)
        })
        .into_iter()
        .collect::<Result<Vec<_>>>()?;
    Ok(Rdd { partitions: out })
}

/// The reduce side of [`combine_by_key`]: one output partition's buckets
/// joined, and the combiners of each key merged.
fn merge_buckets(parts: &[Batch], merge_combiners: &Func, site: CallSite) -> Result<Batch> {
    let mut keys = Column::new();
    let mut values = Column::new();
    for b in parts {
        keys.extend_from(&b.keys)
            .map_err(|e| Error::Internal(e.to_string()))?;
        values
            .extend_from(&b.values)
            .map_err(|e| Error::Internal(e.to_string()))?;
    }
    if keys.is_empty() {
        return Ok(Batch::default());
    }
    let (keys, values) = combine(keys, values, None, merge_combiners, site)?;
    Ok(Batch { keys, values })
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
    use super::join::{array_header, bucket};
    let partitions = partitions.max(1);
    let exchanged = bucket(0, rdd, partitions, ctx, "group_by_key")?;
    let out = ctx
        .tasks((0..partitions).collect(), |q, _| {
            let parts = ctx.read(&exchanged, q)?;
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
        .into_iter()
        .collect::<Result<Vec<_>>>()?;
    Ok(Rdd { partitions: out })
}

/// `map_values(f)`: `(k, f(v))` for every `(k, v)`; keys and partitioning kept.
pub(crate) fn map_values(func: &Func, rdd: Rdd, ctx: &BatchContext<'_>) -> Result<Rdd> {
    let n = rdd.partitions.len() as u32;
    let partitions = ctx
        .tasks(rdd.partitions, |p, batch| {
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
        .into_iter()
        .collect::<Result<Vec<_>>>()?;
    Ok(Rdd { partitions })
}

/// `flat_map_values(f)`: `(k, w)` for every `w` in `f(v)`, for every
/// `(k, v)`; keys and partitioning kept.
pub(crate) fn flat_map_values(func: &Func, rdd: Rdd, ctx: &BatchContext<'_>) -> Result<Rdd> {
    let n = rdd.partitions.len() as u32;
    let partitions = ctx
        .tasks(rdd.partitions, |p, batch| {
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
        .into_iter()
        .collect::<Result<Vec<_>>>()?;
    Ok(Rdd { partitions })
}
