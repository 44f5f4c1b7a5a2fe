//! `update_state_by_key`: the state per key, updated by the new values of
//! each batch.

use super::{KeyedState, OperatorState, PartitionState, internal, seed_partitions, shuffled_into};
use crate::checkpoint::{StateReader, StateWriter};
use crate::error::Result;
use crate::func::{CallSite, Func};
use crate::ops::BatchContext;
use crate::rdd::Rdd;
use indexmap::IndexMap;
use sluice_sdk::{Batch, Column};

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
        let parts = &mut self.state.partitions;
        seed_partitions(initial, parts.len(), ctx, |q, k, v| {
            parts[q].insert(k.into(), v.into());
        })
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

impl OperatorState for StateByKey {
    fn snapshot(&self, w: &mut StateWriter) {
        self.state.snapshot(w);
    }

    fn restore(&mut self, r: &mut StateReader<'_>) -> Result<()> {
        self.state.restore(r)
    }

    fn shards(&self) -> usize {
        self.state.partitions.len()
    }

    fn snapshot_shard(&self, p: usize, w: &mut StateWriter) {
        self.state.snapshot_shard(p, w);
    }

    fn restore_shards(
        &mut self,
        _header: &mut StateReader<'_>,
        shards: &mut [StateReader<'_>],
    ) -> Result<()> {
        self.state.restore_shards(shards)
    }
}
