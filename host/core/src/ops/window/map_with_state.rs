//! `map_with_state`: per-record mapping with a state per key and an
//! optional timeout; only keys with news are touched.
//!
//! The timeout is Spark's rule: a key last updated at batch `T` times out
//! at the first batch `B` with `T < B - timeout`, that is after `timeout`
//! batches in a row without a value for it (here counted in updates).

use super::{
    OperatorState, check_shards, internal, pairs_rdd, read_partition, restore_partitions,
    seed_partitions, shuffled_into,
};
use crate::checkpoint::{StateReader, StateWriter};
use crate::error::Result;
use crate::func::{CallSite, Func};
use crate::ops::BatchContext;
use crate::rdd::Rdd;
use indexmap::IndexMap;
use sluice_sdk::{Batch, Column};
use std::collections::VecDeque;

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

/// A key, its state and its last update.
type TimedEntry = (Box<[u8]>, (Box<[u8]>, u64));

/// A key, its state and its last update, as snapshots write them.
fn timed_entry(r: &mut StateReader<'_>) -> Result<TimedEntry> {
    Ok((r.bytes()?.into(), (r.bytes()?.into(), r.u64()?)))
}

impl TimedPartition {
    /// A partition of restored state, its keys' expiry in update order.
    fn of(state: TimedState) -> TimedPartition {
        let mut expiry: Vec<(u64, Box<[u8]>)> = state
            .iter()
            .map(|(k, (_, last))| (*last, k.clone()))
            .collect();
        expiry.sort_by_key(|(t, _)| *t);
        TimedPartition {
            state,
            expiry: expiry.into(),
        }
    }

    /// The keys whose last value came more than `timeout` updates before
    /// `tick` (Spark: last update time < batch time - timeout); their
    /// expiry entries are consumed.
    fn expired(&mut self, tick: u64, timeout: u64) -> Vec<Box<[u8]>> {
        let mut out = Vec::new();
        while self.expiry.front().is_some_and(|(t, _)| t + timeout < tick) {
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
    /// Updates in a row without a value that a key outlives: it times out
    /// at the next.
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
            timeout,
            tick: 0,
        }
    }

    /// Adds `initial` `(key, state)` elements to the state, as updated by
    /// the coming update (Spark gives an initial state the first batch's
    /// time).
    pub(crate) fn seed(&mut self, initial: Rdd, ctx: &BatchContext<'_>) -> Result<()> {
        let (tick, timed) = (self.tick + 1, self.timeout.is_some());
        let parts = &mut self.partitions;
        seed_partitions(initial, parts.len(), ctx, |q, k, v| {
            parts[q].state.insert(k.into(), (v.into(), tick));
            if timed {
                parts[q].expiry.push_back((tick, k.into()));
            }
        })
    }

    /// Every key with its state, one RDD partition per state partition
    /// (Spark's `stateSnapshots`).
    pub(crate) fn snapshots(&self) -> Result<Rdd> {
        pairs_rdd(
            (self.partitions.iter()).map(|p| p.state.iter().map(|(k, (s, _))| (&k[..], &s[..]))),
        )
    }

    /// Number of hash partitions.
    pub(crate) fn partitions(&self) -> usize {
        self.partitions.len()
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
    // A key timing out is removed whatever state its last call left.
    let updated = by_key.len();
    for (g, k) in group_keys.into_iter().enumerate() {
        let s = new_states.get(g);
        if s.is_empty() || g >= updated {
            part.swap_remove(k);
        } else {
            let before = part.insert(k.into(), (s.into(), tick));
            // One expiry entry per key and update (an initial state has one
            // for this update already).
            if timeout.is_some() && before.is_none_or(|(_, last)| last != tick) {
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

impl OperatorState for MapWithState {
    fn snapshot(&self, w: &mut StateWriter) {
        self.snapshot_header(w);
        w.u64(self.partitions.len() as u64);
        for p in 0..self.partitions.len() {
            self.snapshot_shard(p, w);
        }
    }

    fn restore(&mut self, r: &mut StateReader<'_>) -> Result<()> {
        self.tick = r.u64()?;
        let states = restore_partitions(r, self.partitions.len(), timed_entry)?;
        self.partitions = states.into_iter().map(TimedPartition::of).collect();
        Ok(())
    }

    fn shards(&self) -> usize {
        self.partitions.len()
    }

    /// What is not per partition: the update count.
    fn snapshot_header(&self, w: &mut StateWriter) {
        w.u64(self.tick);
    }

    /// Partition `p`'s keys, states and last updates: the shard of the task
    /// that owns it.
    fn snapshot_shard(&self, p: usize, w: &mut StateWriter) {
        let part = &self.partitions[p];
        w.u64(part.state.len() as u64);
        for (k, (s, last)) in &part.state {
            w.bytes(k);
            w.bytes(s);
            w.u64(*last);
        }
    }

    /// Restores a header and one shard per partition.
    fn restore_shards(
        &mut self,
        header: &mut StateReader<'_>,
        shards: &mut [StateReader<'_>],
    ) -> Result<()> {
        check_shards(shards.len(), self.partitions.len())?;
        self.tick = header.u64()?;
        self.partitions = (shards.iter_mut())
            .map(|r| read_partition(r, timed_entry).map(TimedPartition::of))
            .collect::<Result<_>>()?;
        Ok(())
    }
}
