//! Windows and keyed state: the operators that remember earlier batches.
//!
//! All of it is host data (typed values as MessagePack bytes), never guest
//! memory, so retries, checkpoints and plugin swaps cannot lose it.
//!
//! * [`WindowBuffer`]: the parent batches of the last window length
//!   (`window`), released as soon as no future window needs them.
//! * [`WindowedReduce`]: `reduce_by_key_and_window`. Each parent batch is
//!   reduced by key once, when it arrives, into `partitions` hash partitions.
//!   Without an inverse function every slide re-reduces the window's
//!   per-batch results. With one, the previous window's value per key is kept
//!   ([`KeyedState`]) and each slide takes the batches that left out with the
//!   inverse function and adds the ones that entered (Spark's Scala
//!   `ReducedWindowedDStream`): the function calls are proportional to the
//!   keys of those batches, not to the window length. A key whose value
//!   returns to the identity stays unless the filter function drops it.
//! * [`StateByKey`]: `update_state_by_key`, the state per key.
//! * [`MapWithState`]: `map_with_state`, per-record mapping with a state per
//!   key and an optional timeout; only keys with news are touched.

use super::BatchContext;
use super::join::{bucket, gather};
use super::keyed::{combine, reduce_by_key};
use crate::checkpoint::{StateReader, StateWriter};
use crate::error::{Error, Result};
use crate::func::{CallSite, Func};
use crate::rdd::Rdd;
use crate::time::BatchTime;
use indexmap::IndexMap;
use rayon::prelude::*;
use sluice_sdk::{Batch, Column};
use std::collections::VecDeque;
use std::sync::Arc;

fn internal(e: impl std::fmt::Display) -> Error {
    Error::Internal(e.to_string())
}

/// The value per key of one hash partition, in order of first arrival.
pub(crate) type PartitionState = IndexMap<Box<[u8]>, Box<[u8]>>;

/// Keyed state in `n` hash partitions (the partition of a key is
/// [`super::keyed::partition_of`] of its bytes).
#[derive(Debug, Clone, Default)]
pub(crate) struct KeyedState {
    pub(crate) partitions: Vec<PartitionState>,
}

impl KeyedState {
    pub(crate) fn new(n: usize) -> Self {
        KeyedState {
            partitions: (0..n.max(1)).map(|_| IndexMap::new()).collect(),
        }
    }

    /// Writes every partition's keys and values.
    pub(crate) fn snapshot(&self, w: &mut StateWriter) {
        w.u64(self.partitions.len() as u64);
        for p in &self.partitions {
            w.u64(p.len() as u64);
            for (k, v) in p {
                w.bytes(k);
                w.bytes(v);
            }
        }
    }

    /// Replaces the state with a snapshot of the same number of partitions.
    pub(crate) fn restore(&mut self, r: &mut StateReader<'_>) -> Result<()> {
        self.partitions = restore_partitions(r, self.partitions.len(), |r| {
            Ok((r.bytes()?.into(), r.bytes()?.into()))
        })?;
        Ok(())
    }

    /// Every `(key, value)`, one RDD partition per state partition.
    pub(crate) fn to_rdd(&self) -> Result<Rdd> {
        let partitions = self
            .partitions
            .iter()
            .map(|p| {
                let bytes: usize = p.iter().map(|(k, v)| k.len() + v.len()).sum();
                let mut b = Batch {
                    keys: Column::with_capacity(p.len(), bytes / 2),
                    values: Column::with_capacity(p.len(), bytes / 2),
                };
                for (k, v) in p {
                    b.keys.push_encoded(k).map_err(internal)?;
                    b.values.push_encoded(v).map_err(internal)?;
                }
                Ok(b)
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Rdd { partitions })
    }

    /// Number of keys.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.partitions.iter().map(IndexMap::len).sum()
    }
}

/// Reads `expected` partitions of entries written as a count then entries.
fn restore_partitions<V>(
    r: &mut StateReader<'_>,
    expected: usize,
    mut entry: impl FnMut(&mut StateReader<'_>) -> Result<(Box<[u8]>, V)>,
) -> Result<Vec<IndexMap<Box<[u8]>, V>>> {
    let n = r.u64()? as usize;
    if n != expected {
        return Err(Error::Plan(format!(
            "the checkpoint has state in {n} partitions, the job has {expected}"
        )));
    }
    (0..n)
        .map(|_| {
            let len = r.u64()?;
            let mut p = IndexMap::new();
            for _ in 0..len {
                let (k, v) = entry(r)?;
                p.insert(k, v);
            }
            Ok(p)
        })
        .collect()
}

/// The parent batches a window still needs, oldest first.
#[derive(Debug, Default)]
pub(crate) struct WindowBuffer {
    batches: VecDeque<(BatchTime, Arc<Rdd>)>,
}

impl WindowBuffer {
    /// Remembers the parent's batch at `time`.
    pub(crate) fn push(&mut self, time: BatchTime, rdd: Arc<Rdd>) {
        self.batches.push_back((time, rdd));
    }

    /// The union of the parent batches in `(time - length, time]` (their
    /// partitions side by side), then forgets those no later window needs.
    pub(crate) fn window(&mut self, time: BatchTime, length: i64) -> Rdd {
        let from = time.millis() - length;
        let mut partitions = Vec::new();
        for (t, rdd) in &self.batches {
            if t.millis() > from && *t <= time {
                partitions.extend(rdd.partitions.iter().cloned());
            }
        }
        self.evict(from);
        if partitions.is_empty() {
            partitions.push(Batch::default());
        }
        Rdd { partitions }
    }

    /// Forgets the batches at or before `time`.
    fn evict(&mut self, time: i64) {
        while self
            .batches
            .front()
            .is_some_and(|(t, _)| t.millis() <= time)
        {
            self.batches.pop_front();
        }
    }

    /// Batches held.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.batches.len()
    }

    pub(crate) fn snapshot(&self, w: &mut StateWriter) {
        w.u64(self.batches.len() as u64);
        for (t, rdd) in &self.batches {
            w.i64(t.millis());
            w.rdd(rdd);
        }
    }

    pub(crate) fn restore(&mut self, r: &mut StateReader<'_>) -> Result<()> {
        let n = r.u64()?;
        self.batches.clear();
        for _ in 0..n {
            let t = BatchTime(r.i64()?);
            self.batches.push_back((t, Arc::new(r.rdd()?)));
        }
        Ok(())
    }
}

/// The functions of a windowed reduction.
pub(crate) struct WindowFuncs<'a> {
    pub(crate) reduce: &'a Func,
    pub(crate) inverse: Option<&'a Func>,
    pub(crate) filter: Option<&'a Func>,
}

/// `reduce_by_key_and_window`: per-batch reductions and, with an inverse
/// function, the previous window's value per key.
#[derive(Debug)]
pub(crate) struct WindowedReduce {
    partitions: usize,
    /// Each parent batch reduced by key, in `partitions` hash partitions.
    reduced: VecDeque<(BatchTime, Rdd)>,
    /// The previous window (with an inverse function only).
    state: KeyedState,
}

impl WindowedReduce {
    pub(crate) fn new(partitions: usize) -> Self {
        WindowedReduce {
            partitions: partitions.max(1),
            reduced: VecDeque::new(),
            state: KeyedState::new(partitions),
        }
    }

    /// Number of hash partitions.
    pub(crate) fn partitions(&self) -> usize {
        self.partitions
    }

    /// Takes in the parent's batch at `ctx.time`, reduced by key at once.
    pub(crate) fn push(&mut self, rdd: Rdd, reduce: &Func, ctx: &BatchContext<'_>) -> Result<()> {
        let reduced = reduce_by_key(reduce, self.partitions, rdd, ctx)?;
        self.reduced.push_back((ctx.time, reduced));
        Ok(())
    }

    /// Per-batch partitions `q` of the batches with times in `(from, to]`, as
    /// one key column and one value column.
    fn gather(&self, q: usize, from: i64, to: i64) -> Result<(Column, Column)> {
        let (mut keys, mut values) = (Column::new(), Column::new());
        for (t, rdd) in &self.reduced {
            if t.millis() > from && t.millis() <= to {
                let b = &rdd.partitions[q];
                keys.extend_from(&b.keys).map_err(internal)?;
                values.extend_from(&b.values).map_err(internal)?;
            }
        }
        Ok((keys, values))
    }

    /// The window ending at `ctx.time`, `length` long, `slide` after the
    /// previous one.
    pub(crate) fn window(
        &mut self,
        length: i64,
        slide: i64,
        funcs: &WindowFuncs<'_>,
        ctx: &BatchContext<'_>,
    ) -> Result<Rdd> {
        let t = ctx.time.millis();
        let n = self.partitions;
        let site = |q: usize| CallSite {
            batch: ctx.time,
            partition: q as u32,
            partitions: n as u32,
        };
        let out = match funcs.inverse {
            None => {
                let parts = (0..n)
                    .map(|q| self.gather(q, t - length, t))
                    .collect::<Result<Vec<_>>>()?;
                let partitions = ctx.pool.install(|| {
                    parts
                        .into_par_iter()
                        .enumerate()
                        .map(|(q, (keys, values))| {
                            if keys.is_empty() {
                                return Ok(Batch::default());
                            }
                            let (keys, values) =
                                combine(keys, values, None, funcs.reduce, site(q))?;
                            let mut b = Batch { keys, values };
                            if let Some(filter) = funcs.filter {
                                b = filter_pairs(b, filter, site(q))?;
                            }
                            Ok(b)
                        })
                        .collect::<Result<Vec<_>>>()
                })?;
                Rdd { partitions }
            }
            Some(inverse) => {
                let olds = (0..n)
                    .map(|q| self.gather(q, t - slide - length, t - length))
                    .collect::<Result<Vec<_>>>()?;
                let news = (0..n)
                    .map(|q| self.gather(q, t - slide, t))
                    .collect::<Result<Vec<_>>>()?;
                let mut state = std::mem::take(&mut self.state.partitions);
                ctx.pool.install(|| {
                    state
                        .par_iter_mut()
                        .zip(olds.into_par_iter().zip(news.into_par_iter()))
                        .enumerate()
                        .map(|(q, (part, (old, new)))| {
                            slide_partition(part, old, new, funcs, inverse, site(q))
                        })
                        .collect::<Result<Vec<()>>>()
                })?;
                self.state.partitions = state;
                self.state.to_rdd()?
            }
        };
        // No later window reaches back to `t - length` or before.
        while self
            .reduced
            .front()
            .is_some_and(|(bt, _)| bt.millis() <= t - length)
        {
            self.reduced.pop_front();
        }
        Ok(out)
    }

    /// Per-batch reductions held.
    #[cfg(test)]
    pub(crate) fn buffered(&self) -> usize {
        self.reduced.len()
    }

    pub(crate) fn snapshot(&self, w: &mut StateWriter) {
        w.u64(self.reduced.len() as u64);
        for (t, rdd) in &self.reduced {
            w.i64(t.millis());
            w.rdd(rdd);
        }
        self.state.snapshot(w);
    }

    pub(crate) fn restore(&mut self, r: &mut StateReader<'_>) -> Result<()> {
        let n = r.u64()?;
        self.reduced.clear();
        for _ in 0..n {
            let t = BatchTime(r.i64()?);
            let rdd = r.rdd()?;
            if rdd.partitions.len() != self.partitions {
                return Err(Error::Plan(format!(
                    "the checkpoint has a window in {} partitions, the job has {}",
                    rdd.partitions.len(),
                    self.partitions
                )));
            }
            self.reduced.push_back((t, rdd));
        }
        self.state.restore(r)
    }
}

/// One partition of an incremental window step: `old` (the batches that
/// left) taken out with `inverse`, `new` (the batches that entered) added
/// with `reduce`, then `filter` over every key.
fn slide_partition(
    part: &mut PartitionState,
    old: (Column, Column),
    new: (Column, Column),
    funcs: &WindowFuncs<'_>,
    inverse: &Func,
    site: CallSite,
) -> Result<()> {
    // One value per key for each side.
    let (ok, ov) = if old.0.is_empty() {
        old
    } else {
        combine(old.0, old.1, None, funcs.reduce, site)?
    };
    let (nk, nv) = if new.0.is_empty() {
        new
    } else {
        combine(new.0, new.1, None, funcs.reduce, site)?
    };
    // Out: inverse(previous, left) for keys the window holds.
    let mut touched = Vec::new();
    let (mut prev, mut gone) = (Column::new(), Column::new());
    for i in 0..ok.len() {
        if let Some((idx, _, v)) = part.get_full(ok.get(i)) {
            touched.push(idx);
            prev.push_encoded(v).map_err(internal)?;
            gone.push_encoded(ov.get(i)).map_err(internal)?;
        }
    }
    if !touched.is_empty() {
        let updated = inverse.apply_pair(&mut prev, &mut gone, site)?;
        for (j, &idx) in touched.iter().enumerate() {
            if let Some((_, v)) = part.get_index_mut(idx) {
                *v = updated.get(j).into();
            }
        }
    }
    // In: reduce(previous, entered), or the entered value for a new key.
    let mut touched = Vec::new();
    let mut pairs = Column::new();
    let mut groups = vec![0u32];
    for i in 0..nk.len() {
        let k = nk.get(i);
        match part.get_full(k) {
            Some((idx, _, v)) => {
                touched.push(idx);
                pairs.push_encoded(v).map_err(internal)?;
                pairs.push_encoded(nv.get(i)).map_err(internal)?;
                groups.push(pairs.len() as u32);
            }
            None => {
                part.insert(k.into(), nv.get(i).into());
            }
        }
    }
    if !touched.is_empty() {
        let sums = funcs.reduce.apply_reduce(&mut pairs, groups, site)?;
        for (j, &idx) in touched.iter().enumerate() {
            if let Some((_, v)) = part.get_index_mut(idx) {
                *v = sums.get(j).into();
            }
        }
    }
    if let Some(filter) = funcs.filter
        && !part.is_empty()
    {
        let mut all = Batch::default();
        for (k, v) in part.iter() {
            all.keys.push_encoded(k).map_err(internal)?;
            all.values.push_encoded(v).map_err(internal)?;
        }
        let mut pairs = all.joined_values().into_owned();
        let kept = filter.apply_filter(&mut pairs, site)?;
        let mut next = 0usize;
        let mut i = 0u32;
        part.retain(|_, _| {
            let keep = kept.get(next) == Some(&i);
            if keep {
                next += 1;
            }
            i += 1;
            keep
        });
    }
    Ok(())
}

/// The `(key, value)` elements of `b` for which `filter` holds.
fn filter_pairs(b: Batch, filter: &Func, site: CallSite) -> Result<Batch> {
    let mut pairs = b.joined_values().into_owned();
    let kept = filter.apply_filter(&mut pairs, site)?;
    let mut out = Batch::default();
    for i in kept {
        out.keys
            .push_encoded(b.keys.get(i as usize))
            .map_err(internal)?;
        out.values
            .push_encoded(b.values.get(i as usize))
            .map_err(internal)?;
    }
    Ok(out)
}

/// Hash-shuffles `rdd` into as many partitions as `state` has and runs `f`
/// on each state partition with its new elements, partitions in parallel.
fn shuffled_into<P, R, F>(
    state: &mut Vec<P>,
    rdd: Rdd,
    ctx: &BatchContext<'_>,
    op: &str,
    f: F,
) -> Result<Vec<R>>
where
    P: Send + Default,
    R: Send,
    F: Fn(&mut P, &[Batch], CallSite) -> Result<R> + Sync,
{
    let n = state.len();
    let gathered = gather(bucket(rdd, n, ctx, op)?, n);
    let mut parts = std::mem::take(state);
    let result = ctx.pool.install(|| {
        parts
            .par_iter_mut()
            .zip(gathered.into_par_iter())
            .enumerate()
            .map(|(q, (part, batches))| {
                let site = CallSite {
                    batch: ctx.time,
                    partition: q as u32,
                    partitions: n as u32,
                };
                f(part, &batches, site)
            })
            .collect::<Result<Vec<R>>>()
    });
    *state = parts;
    result
}

/// `update_state_by_key`: the state per key, in `partitions` hash partitions.
#[derive(Debug)]
pub(crate) struct StateByKey {
    state: KeyedState,
}

impl StateByKey {
    pub(crate) fn new(partitions: usize) -> Self {
        StateByKey {
            state: KeyedState::new(partitions),
        }
    }

    /// Number of hash partitions.
    pub(crate) fn partitions(&self) -> usize {
        self.state.partitions.len()
    }

    /// Adds `initial` `(key, state)` elements to the state.
    pub(crate) fn seed(&mut self, initial: Rdd, ctx: &BatchContext<'_>) -> Result<()> {
        let n = self.state.partitions.len();
        for (q, parts) in gather(bucket(initial, n, ctx, "initial state")?, n)
            .into_iter()
            .enumerate()
        {
            for b in parts {
                for i in 0..b.len() {
                    self.state.partitions[q].insert(b.keys.get(i).into(), b.values.get(i).into());
                }
            }
        }
        Ok(())
    }

    /// One batch: `update` runs for every key with state or new values (in
    /// `rdd`); the new state of every key is the result.
    pub(crate) fn update(
        &mut self,
        update: &Func,
        rdd: Rdd,
        ctx: &BatchContext<'_>,
    ) -> Result<Rdd> {
        shuffled_into(
            &mut self.state.partitions,
            rdd,
            ctx,
            "update_state_by_key",
            |part, batches, site| update_partition(part, batches, update, site),
        )?;
        self.state.to_rdd()
    }

    /// Keys held.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.state.len()
    }

    pub(crate) fn snapshot(&self, w: &mut StateWriter) {
        self.state.snapshot(w);
    }

    pub(crate) fn restore(&mut self, r: &mut StateReader<'_>) -> Result<()> {
        self.state.restore(r)
    }
}

fn update_partition(
    part: &mut PartitionState,
    batches: &[Batch],
    update: &Func,
    site: CallSite,
) -> Result<()> {
    // New values per key: keys with state first (in state order), then new keys.
    let mut new_keys: IndexMap<&[u8], Vec<&[u8]>> = IndexMap::new();
    let mut old_values: Vec<Vec<&[u8]>> = vec![Vec::new(); part.len()];
    for b in batches {
        for i in 0..b.len() {
            let k = b.keys.get(i);
            match part.get_index_of(k) {
                Some(idx) => old_values[idx].push(b.values.get(i)),
                None => new_keys.entry(k).or_default().push(b.values.get(i)),
            }
        }
    }
    if part.is_empty() && new_keys.is_empty() {
        return Ok(());
    }
    let mut values = Column::new();
    let mut groups = vec![0u32];
    let mut states = Column::new();
    for (idx, vs) in old_values.iter().enumerate() {
        for v in vs {
            values.push_encoded(v).map_err(internal)?;
        }
        groups.push(values.len() as u32);
        let (_, s) = part.get_index(idx).ok_or_else(|| internal("state index"))?;
        states.push_encoded(s).map_err(internal)?;
    }
    for vs in new_keys.values() {
        for v in vs {
            values.push_encoded(v).map_err(internal)?;
        }
        groups.push(values.len() as u32);
        states.push_absent().map_err(internal)?;
    }
    let new_states = update.apply_update_state(&mut values, groups, &mut states, site)?;
    let old_len = part.len();
    let new_list: Vec<Box<[u8]>> = new_keys.keys().map(|k| (*k).into()).collect();
    for (j, k) in new_list.into_iter().enumerate() {
        let s = new_states.get(old_len + j);
        if !s.is_empty() {
            part.insert(k, s.into());
        }
    }
    // Existing keys: write the new state or remove the key (keeping order).
    let mut i = 0usize;
    part.retain(|_, v| {
        let keep = if i < old_len {
            let s = new_states.get(i);
            if s.is_empty() {
                false
            } else {
                *v = s.into();
                true
            }
        } else {
            true
        };
        i += 1;
        keep
    });
    Ok(())
}

/// Per key of one partition: its state and the update that last gave it a value.
type TimedState = IndexMap<Box<[u8]>, (Box<[u8]>, u64)>;

/// One partition of `map_with_state`: the keys' state, and (with a timeout)
/// `(update, key)` for every update that gave a key a value, oldest first, so
/// finding the keys that time out costs the updates that expire, not a scan
/// of every key. An entry whose key has had a later value is stale.
#[derive(Debug, Default)]
struct TimedPartition {
    state: TimedState,
    expiry: VecDeque<(u64, Box<[u8]>)>,
}

impl TimedPartition {
    /// The keys whose last value came `timeout` updates before `tick` or
    /// earlier; their expiry entries are consumed.
    fn expired(&mut self, tick: u64, timeout: u64) -> Vec<Box<[u8]>> {
        let mut out = Vec::new();
        while self
            .expiry
            .front()
            .is_some_and(|(t, _)| t + timeout <= tick)
        {
            if let Some((t, key)) = self.expiry.pop_front()
                && self.state.get(&key).is_some_and(|(_, last)| *last == t)
            {
                out.push(key);
            }
        }
        out
    }
}

/// `map_with_state`: per key its state and the update at which it last had
/// a value, in hash partitions; only keys with new values or timing out are
/// processed.
#[derive(Debug)]
pub(crate) struct MapWithState {
    partitions: Vec<TimedPartition>,
    /// Updates without a value after which a key times out.
    timeout: Option<u64>,
    /// Updates so far.
    tick: u64,
}

impl MapWithState {
    pub(crate) fn new(partitions: usize, timeout: Option<u64>) -> Self {
        MapWithState {
            partitions: (0..partitions.max(1))
                .map(|_| TimedPartition::default())
                .collect(),
            timeout: timeout.filter(|&t| t > 0),
            tick: 0,
        }
    }

    /// Number of hash partitions.
    pub(crate) fn partitions(&self) -> usize {
        self.partitions.len()
    }

    pub(crate) fn snapshot(&self, w: &mut StateWriter) {
        w.u64(self.tick);
        w.u64(self.partitions.len() as u64);
        for p in &self.partitions {
            w.u64(p.state.len() as u64);
            for (k, (s, last)) in &p.state {
                w.bytes(k);
                w.bytes(s);
                w.u64(*last);
            }
        }
    }

    pub(crate) fn restore(&mut self, r: &mut StateReader<'_>) -> Result<()> {
        self.tick = r.u64()?;
        let states = restore_partitions(r, self.partitions.len(), |r| {
            Ok((r.bytes()?.into(), (r.bytes()?.into(), r.u64()?)))
        })?;
        self.partitions = states
            .into_iter()
            .map(|state| {
                let mut expiry: Vec<(u64, Box<[u8]>)> = state
                    .iter()
                    .map(|(k, (_, last))| (*last, k.clone()))
                    .collect();
                expiry.sort_by_key(|(t, _)| *t);
                TimedPartition {
                    state,
                    expiry: expiry.into(),
                }
            })
            .collect();
        Ok(())
    }

    /// One batch: `func` for each new value of each key (and once for each
    /// key that times out); the mapped elements are the result.
    pub(crate) fn update(&mut self, func: &Func, rdd: Rdd, ctx: &BatchContext<'_>) -> Result<Rdd> {
        self.tick += 1;
        let (tick, timeout) = (self.tick, self.timeout);
        let partitions = shuffled_into(
            &mut self.partitions,
            rdd,
            ctx,
            "map_with_state",
            |part, batches, site| map_partition(part, batches, func, tick, timeout, site),
        )?;
        Ok(Rdd { partitions })
    }
}

fn map_partition(
    part: &mut TimedPartition,
    batches: &[Batch],
    func: &Func,
    tick: u64,
    timeout: Option<u64>,
    site: CallSite,
) -> Result<Batch> {
    let mut by_key: IndexMap<&[u8], Vec<&[u8]>> = IndexMap::new();
    for b in batches {
        for i in 0..b.len() {
            by_key
                .entry(b.keys.get(i))
                .or_default()
                .push(b.values.get(i));
        }
    }
    let timed_out: Vec<Box<[u8]>> = match timeout {
        Some(t) => part
            .expired(tick, t)
            .into_iter()
            .filter(|k| !by_key.contains_key(&k[..]))
            .collect(),
        None => Vec::new(),
    };
    let TimedPartition {
        state: part,
        expiry,
    } = part;
    if by_key.is_empty() && timed_out.is_empty() {
        return Ok(Batch::default());
    }
    let mut input = Batch::default();
    let mut groups = vec![0u32];
    let mut states = Column::new();
    let mut group_keys: Vec<&[u8]> = Vec::with_capacity(by_key.len() + timed_out.len());
    for (k, vs) in &by_key {
        for v in vs {
            input.keys.push_encoded(k).map_err(internal)?;
            input.values.push_encoded(v).map_err(internal)?;
        }
        groups.push(input.len() as u32);
        match part.get(*k) {
            Some((s, _)) => states.push_encoded(s).map_err(internal)?,
            None => states.push_absent().map_err(internal)?,
        }
        group_keys.push(k);
    }
    for k in &timed_out {
        input.keys.push_encoded(k).map_err(internal)?;
        input.values.push_absent().map_err(internal)?;
        groups.push(input.len() as u32);
        let (s, _) = part.get(k).ok_or_else(|| internal("timed-out key"))?;
        states.push_encoded(s).map_err(internal)?;
        group_keys.push(k);
    }
    let (mapped, new_states) = func.apply_map_state(&mut input, groups, &mut states, site)?;
    for (g, k) in group_keys.into_iter().enumerate() {
        let s = new_states.get(g);
        if s.is_empty() {
            part.swap_remove(k);
        } else {
            part.insert(k.into(), (s.into(), tick));
            if timeout.is_some() {
                expiry.push_back((tick, k.into()));
            }
        }
    }
    let mut out = Column::with_capacity(mapped.len(), mapped.bytes.len());
    for v in mapped.iter().filter(|v| !v.is_empty()) {
        out.push_encoded(v).map_err(internal)?;
    }
    Ok(Batch::from_values(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::testing::{batch_of, rendered, with_ctx};

    fn at(pool: &rayon::ThreadPool, ms: i64) -> BatchContext<'_> {
        BatchContext {
            time: BatchTime(ms),
            pool,
            stream: "test",
        }
    }

    fn pairs(items: &[(&str, i64)]) -> Rdd {
        Rdd {
            partitions: vec![batch_of(items)],
        }
    }

    #[test]
    fn window_buffer_keeps_only_what_windows_need() {
        let mut w = WindowBuffer::default();
        for t in 1..=5 {
            w.push(BatchTime(t * 1000), Arc::new(pairs(&[("x", t)])));
            let out = w.window(BatchTime(t * 1000), 3000);
            assert_eq!(out.count() as i64, t.min(3));
            assert!(w.len() <= 3, "at most the window's batches are held");
        }
    }

    #[test]
    fn incremental_window_keeps_zero_keys_unless_filtered() {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .unwrap();
        {
            let add = Func::reduce("add", |a: i64, b: i64| a + b);
            let sub = Func::inverse_reduce("sub", |a: i64, b: i64| a - b);
            let positive = Func::filter("positive", |kv: (String, i64)| kv.1 > 0);
            let batches = [vec![("a", 1), ("b", 1)], vec![("a", 1)], vec![], vec![]];
            for (filter, want_last) in [
                (None, vec![r#"["a",0]"#, r#"["b",0]"#]),
                (Some(&positive), vec![]),
            ] {
                let funcs = WindowFuncs {
                    reduce: &add,
                    inverse: Some(&sub),
                    filter,
                };
                let mut w = WindowedReduce::new(2);
                let mut last = Vec::new();
                for (i, b) in batches.iter().enumerate() {
                    let ctx = at(&pool, (i as i64 + 1) * 1000);
                    w.push(pairs(b), &add, &ctx).unwrap();
                    let out = w.window(2000, 1000, &funcs, &ctx).unwrap();
                    assert_eq!(out.partitions.len(), 2);
                    if i == 1 {
                        assert_eq!(rendered(&out), [r#"["a",2]"#, r#"["b",1]"#]);
                    }
                    if i == 2 {
                        let want: Vec<&str> = if filter.is_some() {
                            vec![r#"["a",1]"#]
                        } else {
                            vec![r#"["a",1]"#, r#"["b",0]"#]
                        };
                        assert_eq!(rendered(&out), want);
                    }
                    last = rendered(&out);
                    assert!(w.buffered() <= 2);
                }
                assert_eq!(last, want_last);
            }
        }
    }

    #[test]
    fn map_with_state_is_the_same_in_tiny_calls() {
        with_ctx(|ctx| {
            let count = |limit: usize| {
                Func::map_state(
                    "count",
                    |k: String, v: Option<i64>, s: &mut sluice_sdk::State<i64>| {
                        let n = s.get().copied().unwrap_or(0) + v.unwrap_or(0);
                        s.update(n);
                        Some((k, n))
                    },
                )
                .with_input_limit(limit)
            };
            let input = || pairs(&[("a", 1), ("b", 2), ("a", 3), ("c", 4), ("b", 5)]);
            let mut whole = MapWithState::new(2, None);
            let mut tiny = MapWithState::new(2, None);
            for _ in 0..2 {
                let a = whole.update(&count(1 << 20), input(), ctx).unwrap();
                let b = tiny.update(&count(4), input(), ctx).unwrap();
                assert_eq!(rendered(&a), rendered(&b));
            }
            let a = whole.update(&count(1 << 20), input(), ctx).unwrap();
            assert!(
                rendered(&a).contains(&r#"["a",12]"#.to_string()),
                "{:?}",
                rendered(&a)
            );
        });
    }

    #[test]
    fn operator_state_survives_a_snapshot() {
        with_ctx(|ctx| {
            let add = Func::reduce("add", |a: i64, b: i64| a + b);
            let sub = Func::inverse_reduce("sub", |a: i64, b: i64| a - b);
            let funcs = WindowFuncs {
                reduce: &add,
                inverse: Some(&sub),
                filter: None,
            };
            let sum = Func::update_state("sum", |vs: Vec<i64>, s: Option<i64>| {
                Some(vs.iter().sum::<i64>() + s.unwrap_or(0))
            });
            // Two copies of each operator: one runs on, one is restored midway.
            let mut w1 = WindowedReduce::new(2);
            let mut s1 = StateByKey::new(2);
            let mut b1 = WindowBuffer::default();
            let batches = [
                vec![("a", 1), ("b", 1)],
                vec![("a", 2)],
                vec![("c", 1)],
                vec![],
            ];
            let mut restored = None;
            for (i, b) in batches.iter().enumerate() {
                let t = BatchContext {
                    time: BatchTime((i as i64 + 1) * 1000),
                    pool: ctx.pool,
                    stream: "test",
                };
                if i == 2 {
                    let mut w = StateWriter::new();
                    w1.snapshot(&mut w);
                    s1.snapshot(&mut w);
                    b1.snapshot(&mut w);
                    let bytes = w.into_bytes();
                    let mut r = StateReader::new(&bytes);
                    let (mut w2, mut s2, mut b2) = (
                        WindowedReduce::new(2),
                        StateByKey::new(2),
                        WindowBuffer::default(),
                    );
                    w2.restore(&mut r).unwrap();
                    s2.restore(&mut r).unwrap();
                    b2.restore(&mut r).unwrap();
                    assert!(r.is_empty());
                    // A job with other partition counts refuses the state.
                    let mut r = StateReader::new(&bytes);
                    assert!(WindowedReduce::new(3).restore(&mut r).is_err());
                    restored = Some((w2, s2, b2));
                }
                let step = |w: &mut WindowedReduce, s: &mut StateByKey, buf: &mut WindowBuffer| {
                    w.push(pairs(b), &add, &t).unwrap();
                    buf.push(t.time, Arc::new(pairs(b)));
                    (
                        rendered(&w.window(2000, 1000, &funcs, &t).unwrap()),
                        rendered(&s.update(&sum, pairs(b), &t).unwrap()),
                        rendered(&buf.window(t.time, 2000)),
                    )
                };
                let one = step(&mut w1, &mut s1, &mut b1);
                if let Some((w2, s2, b2)) = restored.as_mut() {
                    assert_eq!(step(w2, s2, b2), one, "batch {i}");
                }
            }
            // map_with_state: tick and last-seen survive too.
            let f = Func::map_state(
                "count",
                |k: String, v: Option<i64>, s: &mut sluice_sdk::State<i64>| {
                    let n = s.get().copied().unwrap_or(0) + v.unwrap_or(0);
                    s.update(n);
                    Some((k, n))
                },
            );
            let mut m1 = MapWithState::new(2, Some(1));
            m1.update(&f, pairs(&[("a", 1)]), ctx).unwrap();
            let mut w = StateWriter::new();
            m1.snapshot(&mut w);
            let bytes = w.into_bytes();
            let mut m2 = MapWithState::new(2, Some(1));
            m2.restore(&mut StateReader::new(&bytes)).unwrap();
            let next = || pairs(&[("b", 1)]);
            assert_eq!(
                rendered(&m1.update(&f, next(), ctx).unwrap()),
                rendered(&m2.update(&f, next(), ctx).unwrap())
            );
        });
    }

    #[test]
    fn state_updates_every_key_and_removes_on_none() {
        with_ctx(|ctx| {
            // Running sum; a key is dropped when its new values sum to 0 and it had state.
            let f = Func::update_state("sum", |vs: Vec<i64>, s: Option<i64>| {
                let n: i64 = vs.iter().sum();
                match s {
                    Some(_) if n == 0 => None,
                    _ => Some(n + s.unwrap_or(0)),
                }
            });
            let mut s = StateByKey::new(3);
            let out = s
                .update(&f, pairs(&[("a", 1), ("b", 2), ("a", 3)]), ctx)
                .unwrap();
            assert_eq!(out.partitions.len(), 3);
            assert_eq!(rendered(&out), [r#"["a",4]"#, r#"["b",2]"#]);
            let out = s.update(&f, pairs(&[("b", 1), ("c", 5)]), ctx).unwrap();
            assert_eq!(
                rendered(&out),
                [r#"["b",3]"#, r#"["c",5]"#],
                "a had no values: removed"
            );
            let out = s.update(&f, pairs(&[("a", 7)]), ctx).unwrap();
            assert_eq!(
                rendered(&out),
                [r#"["a",7]"#],
                "a starts again; b and c are removed"
            );
            assert_eq!(s.len(), 1);
        });
    }
}
