//! Recovery: what a run writes so that a crash loses nothing — a batch
//! record per batch, and every checkpoint interval a full checkpoint whose
//! keyed state each task snapshots as its own shard — and how a run
//! resumes from them.

use super::run::Loop;
use super::{Graph, StreamingContext, graph_difference, plugin_versions};
use crate::checkpoint::{
    BatchRecord, Checkpoint, Checkpoints, PluginVersion, Shards, StateWriter, shard_name,
};
use crate::error::{Error, Result};
use crate::exec::{Executor, run_tasks};
use crate::time::BatchTime;
use std::collections::BTreeMap;

/// A batch's full checkpoint, its state shards (object name and bytes),
/// its time and the batch records to start the next batch log with:
/// written before the next batch runs.
pub(super) struct DueCheckpoint {
    time: BatchTime,
    cp: Checkpoint,
    shards: Vec<(String, Vec<u8>)>,
    pending: Vec<BatchRecord>,
}

/// The state of every stateful stream at `time`, for a checkpoint: whole,
/// or sharded by partition, each shard written by the task that owns the
/// partition on `executor`. Returns the checkpoint's `state` and `shards`
/// and the shard objects to write.
pub(super) fn snapshot_state(g: &Graph, executor: &dyn Executor, time: BatchTime) -> StateSnapshot {
    let mut snap = StateSnapshot::default();
    for (id, node) in g.nodes.iter().enumerate() {
        let Some(state) = node.op.state() else {
            continue;
        };
        let n = state.shards();
        if n == 0 {
            if let Some(bytes) = node.op.snapshot() {
                snap.state.insert(id as u64, bytes);
            }
            continue;
        }
        let mut header = StateWriter::new();
        state.snapshot_header(&mut header);
        snap.state.insert(id as u64, header.into_bytes());
        let stage = g.plan.as_ref().map_or(0, |p| p.streams[id].stage);
        let parts = run_tasks(executor, stage, time, (0..n).collect(), |_, p| {
            let mut w = StateWriter::new();
            state.snapshot_shard(p, &mut w);
            w.into_bytes()
        });
        let names: Vec<String> = (0..n)
            .map(|p| shard_name(time.millis(), id as u64, p))
            .collect();
        snap.objects.extend(names.iter().cloned().zip(parts));
        snap.shards.insert(id as u64, names);
    }
    snap
}

/// What [`snapshot_state`] took.
#[derive(Default)]
pub(super) struct StateSnapshot {
    state: BTreeMap<u64, Vec<u8>>,
    shards: BTreeMap<u64, Vec<String>>,
    objects: Vec<(String, Vec<u8>)>,
}

impl StreamingContext {
    /// Writes a batch's checkpoint or batch record, retrying I/O errors
    /// before the next batch runs (the previous checkpoint stays valid);
    /// the job only gives up when asked to stop.
    pub(super) fn retrying<T>(
        &self,
        what: &str,
        batch: BatchTime,
        write: impl FnMut() -> Result<T>,
    ) -> Result<T> {
        crate::fsutil::retry_write(what, batch.millis(), || self.stop.is_stopped(), write)
    }

    /// Restores `g` from checkpoint `cp` and its state `shards`, refusing
    /// one of another graph.
    pub(super) fn resume(
        &self,
        g: &mut Graph,
        (cp, shards): (&Checkpoint, &Shards),
        graph: &str,
        plugins: &std::collections::BTreeMap<String, PluginVersion>,
        store: &Checkpoints,
    ) -> Result<()> {
        let at = store.locate(cp.batch_time);
        if cp.graph != graph {
            return Err(Error::Plan(format!(
                "checkpoint {} is of another job graph: {} (start over with --fresh, or use another directory)",
                at,
                graph_difference(&cp.graph, graph)
            )));
        }
        for (name, was) in &cp.plugins {
            if let Some(now) = plugins.get(name)
                && now.version != was.version
            {
                tracing::warn!(plugin = %name, checkpoint = %was.version, now = %now.version, "resuming with another plugin version (same functions and kinds)");
            }
        }
        if cp.sources.len() != g.sources.len() {
            return Err(Error::Plan(format!(
                "checkpoint {} has {} sources, the job {}",
                at,
                cp.sources.len(),
                g.sources.len()
            )));
        }
        for (source, pos) in g.sources.iter_mut().zip(&cp.sources) {
            if !pos.is_empty() {
                source.restore(pos)?;
            }
        }
        for (&id, bytes) in &cp.state {
            let node = g.nodes.get_mut(id as usize).ok_or_else(|| {
                Error::Plan(format!(
                    "checkpoint {} has state for stream {id}, which the job lacks",
                    at
                ))
            })?;
            let restored = match shards.get(&id) {
                Some(parts) => node.op.restore_sharded(bytes, parts),
                None => node.op.restore(bytes),
            };
            restored.map_err(|e| {
                Error::Plan(format!(
                    "checkpoint {}: the state of stream `{}` cannot be restored: {e}",
                    at, node.name
                ))
            })?;
        }
        let due = (self.clock.now_ms() - cp.batch_time) / g.interval.max(1);
        tracing::info!(
            checkpoint = %at,
            batch = cp.batch_time,
            down_time_batches = due.max(0),
            "resuming from a checkpoint"
        );
        Ok(())
    }
}

impl Loop<'_> {
    /// With a checkpoint store: resumes from its newest usable checkpoint
    /// and queues the batches logged after it to run again.
    pub(super) fn recover(&mut self) -> Result<()> {
        let Some(store) = &self.store else {
            return Ok(());
        };
        let g = &mut self.g;
        for (i, s) in g.sources.iter_mut().enumerate() {
            s.attach_log(&store.wal_dir().join(format!("source-{i}")));
        }
        if self.ssc.fresh {
            return store.clear();
        }
        let Some((cp, shards, skipped)) = store.latest_with_shards()? else {
            return Ok(());
        };
        for s in &skipped {
            tracing::warn!(checkpoint = %s.location, "skipping an unusable checkpoint (set aside as .damaged): {}", s.reason);
        }
        store.set_aside(&skipped)?;
        let plugins = plugin_versions(g);
        self.ssc
            .resume(g, (&cp, &shards), &self.graph, &plugins, store)?;
        self.first = BatchTime(cp.first_batch_time);
        self.start = cp.batch_index + 1;
        let (records, problems) = store.batches_after(cp.batch_time)?;
        for p in problems {
            tracing::warn!("batch log: {p}; later batches run again from their sources");
        }
        let records: Vec<BatchRecord> = records
            .into_iter()
            .zip(self.start..)
            .take_while(|(r, i)| r.batch_index == *i && r.sources.len() == g.sources.len())
            .map(|(r, _)| r)
            .collect();
        self.batch_log = Some(store.restart_batch_log(cp.batch_time, &records)?);
        if !records.is_empty() {
            tracing::info!(
                batches = records.len(),
                "re-running the batches completed after the checkpoint, with the same input"
            );
        }
        self.replay = records.into_iter().map(|r| (r.batch_index, r)).collect();
        self.last_data = Some(cp.batch_time);
        let now = BatchTime(self.ssc.clock.now_ms());
        for s in g.sources.iter_mut() {
            s.catch_up(now);
        }
        Ok(())
    }

    /// Makes the previous batch durable: its batch record, once that batch
    /// is reported and before this one commits anything, then its full
    /// checkpoint if one was due. The checkpoint syncs several files,
    /// which is no part of that batch's processing (a crash before this
    /// point re-runs the batch, as one before the batch log's settle).
    pub(super) fn settle_previous(&mut self, index: u64) -> Result<()> {
        let ssc = self.ssc;
        if let Some(log) = self.batch_log.as_mut() {
            let previous = self
                .first
                .plus(ssc.interval * index.saturating_sub(1) as u32);
            ssc.retrying("batch log", previous, || log.settle())?;
        }
        if let (Some(store), Some(due)) = (&self.store, self.checkpoint_due.take()) {
            let DueCheckpoint {
                time,
                cp,
                shards,
                pending,
            } = due;
            ssc.retrying("checkpoint", time, || store.write_with_shards(&cp, &shards))?;
            for (s, position) in self.g.sources.iter_mut().zip(&cp.sources) {
                s.committed(position);
            }
            self.batch_log = Some(ssc.retrying("batch log", time, || {
                store.restart_batch_log(time.millis(), &pending)
            })?);
            if let Some(oldest) = store.oldest()? {
                for s in self.g.sources.iter_mut() {
                    s.truncate_log(BatchTime(oldest));
                }
            }
        }
        Ok(())
    }

    /// Records the batch just run for recovery: a full checkpoint when one
    /// is due (and for the last batch), else its batch record, unless it
    /// was itself re-run from one (`replayed`).
    pub(super) fn record(&mut self, time: BatchTime, index: u64, replayed: bool) -> Result<()> {
        if self.store.is_none() {
            return Ok(());
        }
        let g = &self.g;
        let last = self.stopping || self.limit.is_some_and(|l| index + 1 >= l);
        let due = self
            .last_data
            .is_none_or(|d| time.millis() - d >= self.every);
        if last || (!replayed && due) {
            // A full checkpoint, then a new batch log after it (holding any
            // batches still to be re-run).
            let snap = snapshot_state(g, &self.executor, time);
            let cp = Checkpoint {
                graph: self.graph.clone(),
                batch_time: time.millis(),
                batch_index: index,
                first_batch_time: self.first.millis(),
                plugins: plugin_versions(g),
                sources: g
                    .sources
                    .iter()
                    .map(|s| s.position().unwrap_or_default())
                    .collect(),
                state: snap.state,
                shards: snap.shards,
            };
            // Written before the next batch (`settle_previous`).
            let pending: Vec<BatchRecord> = self.replay.values().cloned().collect();
            self.checkpoint_due = Some(DueCheckpoint {
                time,
                cp,
                shards: snap.objects,
                pending,
            });
            self.last_data = Some(time.millis());
        } else if !replayed && let Some(log) = self.batch_log.as_mut() {
            let r = BatchRecord {
                batch_time: time.millis(),
                batch_index: index,
                sources: g.sources.iter().map(|s| s.batch_record()).collect(),
            };
            self.ssc
                .retrying("batch log", time, || log.append_unsynced(&r))?;
        }
        Ok(())
    }
}
