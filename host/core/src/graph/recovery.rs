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
/// handed to a writer before the next batch runs.
pub(super) struct DueCheckpoint {
    time: BatchTime,
    cp: Checkpoint,
    shards: Vec<(String, Vec<u8>)>,
    pending: Vec<BatchRecord>,
}

/// A checkpoint being written by a thread of its own while the next
/// batches run (as Spark's `CheckpointWriter`): until it is durable the
/// previous checkpoint and the batch log, which records every batch,
/// recover the job; once it is, the sources are told its positions are
/// committed and the batch log starts again after it.
pub(super) struct InFlight {
    time: BatchTime,
    positions: Vec<Vec<u8>>,
    pending: Vec<BatchRecord>,
    /// The writer's result: the oldest checkpoint kept.
    done: std::sync::mpsc::Receiver<Result<Option<i64>>>,
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
    /// Writes a batch record (or starts a batch log), retrying I/O errors
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
        let Some(store) = self.store.clone() else {
            return Ok(());
        };
        let g = &mut self.g;
        for (i, s) in g.sources.iter_mut().enumerate() {
            s.attach_log(&store.wal_dir().join(format!("source-{i}")));
        }
        if self.ssc.fresh {
            store.clear()?;
        }
        let Some((cp, shards, skipped)) = store.latest_with_shards()? else {
            // No checkpoint yet: a job that crashed before its first one
            // resumes at the batch times it started with (the outputs it
            // wrote are named by them) and re-runs the batches it logged;
            // a new one (or a fresh start, whose logs are gone) logs its
            // first batch time before running anything.
            let (before_first, first) = store.job_start()?.unwrap_or_else(|| {
                let first = self.first.millis();
                (first - g.interval, first)
            });
            self.first = BatchTime(first);
            let records = self.logged_batches(before_first, 0)?;
            self.batch_log = Some(store.begin_batch_log(before_first, first, &records)?);
            return self.queue_replays(records);
        };
        for s in &skipped {
            tracing::warn!(checkpoint = %s.location, "skipping an unusable checkpoint (set aside as .damaged): {}", s.reason);
        }
        store.set_aside(&skipped)?;
        let plugins = plugin_versions(g);
        self.ssc
            .resume(g, (&cp, &shards), &self.graph, &plugins, &store)?;
        self.first = BatchTime(cp.first_batch_time);
        self.start = cp.batch_index + 1;
        let records = self.logged_batches(cp.batch_time, self.start)?;
        self.batch_log = Some(store.restart_batch_log(cp.batch_time, &records)?);
        self.last_data = Some(cp.batch_time);
        self.queue_replays(records)
    }

    /// The batch records logged after the checkpoint (or start) at
    /// `after`, from batch `start` on without a gap: those to re-run.
    fn logged_batches(&self, after: i64, start: u64) -> Result<Vec<BatchRecord>> {
        let store = self.store.as_ref().expect("a checkpoint store");
        let (records, problems) = store.batches_after(after)?;
        for p in problems {
            tracing::warn!("batch log: {p}; later batches run again from their sources");
        }
        let sources = self.g.sources.len();
        Ok(records
            .into_iter()
            .zip(start..)
            .take_while(|(r, i)| r.batch_index == *i && r.sources.len() == sources)
            .map(|(r, _)| r)
            .collect())
    }

    /// Queues `records` to re-run before anything new, and tells the
    /// sources which batches are down-time ones.
    fn queue_replays(&mut self, records: Vec<BatchRecord>) -> Result<()> {
        if !records.is_empty() {
            tracing::info!(
                batches = records.len(),
                "re-running the batches completed after the checkpoint, with the same input"
            );
        }
        self.replay = records.into_iter().map(|r| (r.batch_index, r)).collect();
        let now = BatchTime(self.ssc.clock.now_ms());
        for s in self.g.sources.iter_mut() {
            s.catch_up(now);
        }
        Ok(())
    }

    /// Makes the previous batch durable: its batch record, once that batch
    /// is reported and before this one commits anything; then, if its
    /// full checkpoint is due, hands it to a writer of its own (after the
    /// one before it is done), so that writing it — several objects,
    /// synced, or a chain of round trips to object storage — overlaps the
    /// next batches instead of delaying them. A crash before it is durable
    /// recovers from the previous checkpoint and the batch log.
    pub(super) fn settle_previous(&mut self, index: u64) -> Result<()> {
        let ssc = self.ssc;
        if let Some(log) = self.batch_log.as_mut() {
            let previous = self
                .first
                .plus(ssc.interval * index.saturating_sub(1) as u32);
            ssc.retrying("batch log", previous, || log.settle())?;
        }
        self.finish_checkpoint(false)?;
        let Some(due) = self.checkpoint_due.take() else {
            return Ok(());
        };
        let Some(store) = self.store.clone() else {
            return Ok(());
        };
        // One at a time, in order.
        self.finish_checkpoint(true)?;
        let DueCheckpoint {
            time,
            cp,
            shards,
            pending,
        } = due;
        let positions = cp.sources.clone();
        let (tx, done) = std::sync::mpsc::channel();
        let stop = ssc.stop.clone();
        std::thread::Builder::new()
            .name("sluice-checkpoint".into())
            .spawn(move || {
                // Failures are retried, refusals (credentials,
                // permissions) not: trying again does not mend them.
                let written = crate::fsutil::retry_write(
                    "checkpoint",
                    time.millis(),
                    || stop.is_stopped(),
                    || match store.write_pruned(&cp, &shards) {
                        Err(e) if e.is_refusal() => Ok(Err(e)),
                        other => other.map(Ok),
                    },
                )
                .and_then(|r| r);
                let _ = tx.send(written);
            })
            .map_err(|e| Error::io("starting the checkpoint writer", e))?;
        self.in_flight = Some(InFlight {
            time,
            positions,
            pending,
            done,
        });
        Ok(())
    }

    /// Once the checkpoint in flight is durable (waiting for it when
    /// `wait`): tells the sources their positions in it are committed,
    /// starts the batch log again after it with every batch record since
    /// (those to re-run, and those of the batches run while it was being
    /// written), and lets the write-ahead logs go up to the oldest
    /// checkpoint kept.
    pub(super) fn finish_checkpoint(&mut self, wait: bool) -> Result<()> {
        let Some(f) = &self.in_flight else {
            return Ok(());
        };
        let written = if wait {
            f.done.recv()
        } else {
            match f.done.try_recv() {
                Ok(r) => Ok(r),
                Err(std::sync::mpsc::TryRecvError::Empty) => return Ok(()),
                Err(std::sync::mpsc::TryRecvError::Disconnected) => Err(std::sync::mpsc::RecvError),
            }
        };
        let InFlight {
            time,
            positions,
            pending,
            ..
        } = self.in_flight.take().expect("a checkpoint in flight");
        let oldest = written.map_err(|_| {
            Error::Internal("the checkpoint writer ended without a result".into())
        })??;
        for (s, position) in self.g.sources.iter_mut().zip(&positions) {
            s.committed(position);
        }
        let Some(store) = &self.store else {
            return Ok(());
        };
        let ssc = self.ssc;
        let (logged, problems) = store.batches_after(time.millis())?;
        for p in problems {
            tracing::warn!("batch log: {p}");
        }
        let mut records: BTreeMap<i64, BatchRecord> =
            pending.into_iter().map(|r| (r.batch_time, r)).collect();
        records.extend(logged.into_iter().map(|r| (r.batch_time, r)));
        let records: Vec<BatchRecord> = records.into_values().collect();
        self.batch_log = Some(ssc.retrying("batch log", time, || {
            store.restart_batch_log(time.millis(), &records)
        })?);
        if let Some(oldest) = oldest {
            for s in self.g.sources.iter_mut() {
                s.truncate_log(BatchTime(oldest));
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
            // Handed to a writer before the next batch (`settle_previous`).
            let pending: Vec<BatchRecord> = self.replay.values().cloned().collect();
            self.checkpoint_due = Some(DueCheckpoint {
                time,
                cp,
                shards: snap.objects,
                pending,
            });
            self.last_data = Some(time.millis());
        }
        // Every batch has its record, the checkpointed ones too: until
        // their checkpoint is durable, the previous one and this record
        // recover them.
        if !replayed && let Some(log) = self.batch_log.as_mut() {
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
