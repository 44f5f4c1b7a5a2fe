//! The batch loop: one batch every interval, with checkpoints, recovery,
//! backpressure and listeners.

use super::batch::BatchRun;
use super::listener::{BatchInfo, RunSummary};
use super::{
    Graph, StreamingContext, default_checkpoint_interval, describe_graph, graph_difference, lock,
    physical_plan, plugin_uses, plugin_versions,
};
use crate::checkpoint::{
    BatchLog, BatchRecord, Checkpoint, Checkpoints, PluginVersion, StateWriter, shard_name,
};
use crate::error::{Error, Result};
use crate::exec::{Executor, LocalExecutor, run_tasks};
use crate::rdd::Rdd;
use crate::receiver::rate::PidRateEstimator;
use crate::share::{JobCpu, ThreadGroup};
use crate::time::BatchTime;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// A batch's full checkpoint, its state shards (object name and bytes),
/// its time and the batch records to start the next batch log with:
/// written before the next batch runs.
struct DueCheckpoint {
    time: BatchTime,
    cp: Checkpoint,
    shards: Vec<(String, Vec<u8>)>,
    pending: Vec<BatchRecord>,
}

/// The state of every stateful stream at `time`, for a checkpoint: whole,
/// or sharded by partition, each shard written by the task that owns the
/// partition on `executor`. Returns the checkpoint's `state` and `shards`
/// and the shard objects to write.
fn snapshot_state(g: &Graph, executor: &dyn Executor, time: BatchTime) -> StateSnapshot {
    let mut snap = StateSnapshot::default();
    for (id, node) in g.nodes.iter().enumerate() {
        let n = node.op.shards();
        if n == 0 {
            if let Some(bytes) = node.op.snapshot() {
                snap.state.insert(id as u64, bytes);
            }
            continue;
        }
        let mut header = StateWriter::new();
        node.op.save_header(&mut header);
        snap.state.insert(id as u64, header.into_bytes());
        let stage = g.plan.as_ref().map_or(0, |p| p.streams[id].stage);
        let parts = run_tasks(executor, stage, time, (0..n).collect(), |_, p| {
            let mut w = StateWriter::new();
            node.op.save_shard(p, &mut w);
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
struct StateSnapshot {
    state: BTreeMap<u64, Vec<u8>>,
    shards: BTreeMap<u64, Vec<String>>,
    objects: Vec<(String, Vec<u8>)>,
}

/// A run in progress: the graph taken out of its context, and where the
/// loop stands.
struct Loop<'a> {
    ssc: &'a StreamingContext,
    g: Graph,
    /// The graph's fingerprint, for checkpoints.
    graph: String,
    store: Option<Checkpoints>,
    /// The first batch's time (a resumed run keeps its first run's).
    first: BatchTime,
    /// The index of the first batch this run computes.
    start: u64,
    /// The index at which the run ends, if it does by itself.
    limit: Option<u64>,
    /// How often (ms) a full checkpoint is written.
    every: i64,
    /// Batches the batch log recorded after the checkpoint resumed from,
    /// by index: re-run with the same input before anything new.
    replay: BTreeMap<u64, BatchRecord>,
    batch_log: Option<BatchLog>,
    /// The time of the last batch with a full checkpoint.
    last_data: Option<i64>,
    checkpoint_due: Option<DueCheckpoint>,
    estimator: PidRateEstimator,
    /// Source streams' names, by source index (for listeners).
    source_names: Vec<String>,
    /// A stop was asked for: the batch running is the last.
    stopping: bool,
    summary: RunSummary,
    /// The job's threads, for its CPU share.
    threads: Arc<ThreadGroup>,
    executor: LocalExecutor,
}

impl StreamingContext {
    /// Runs the job: one batch every interval until `batches` batches are done
    /// (when given), every finite source is exhausted (when all are finite and
    /// `batches` is not given), or [`StopHandle::stop`] is called.
    ///
    /// A context runs once: a second call is an error, as is a graph without
    /// outputs.
    pub fn run(&self, batches: Option<u64>) -> Result<RunSummary> {
        if self.started.swap(true, Ordering::SeqCst) {
            return Err(Error::Plan(
                "this StreamingContext has already been started".to_string(),
            ));
        }
        let threads = Arc::new(ThreadGroup::default());
        // With a share, the job's threads are accounted, and their plugin
        // calls charge and give way as they run (see `share`).
        let job_cpu = self
            .cpu_share
            .as_ref()
            .map(|share| JobCpu::new(share.clone(), threads.clone()));
        if let Some(job) = &job_cpu {
            threads.join_current();
            job.enter();
        }
        let joining = job_cpu.clone();
        let executor = LocalExecutor::start(self.workers, move || {
            if let Some(job) = &joining {
                job.threads().join_current();
                job.enter();
            }
        })?;
        let g = self.take_graph()?;
        let mut run = Loop::start(self, g, executor, threads, batches)?;
        let result = run.batches();
        for s in run.g.sources.iter_mut() {
            s.stop();
        }
        result.map(|()| run.summary.clone())
    }

    /// Takes the streams out of the context: the run does not hold the
    /// lock, and anything added from now on is refused instead of silently
    /// never running.
    fn take_graph(&self) -> Result<Graph> {
        let mut shared = lock(&self.graph);
        self.validate(&shared)?;
        let names = shared
            .nodes
            .iter()
            .map(|n| (n.name.clone(), n.slide))
            .collect();
        let plan = physical_plan(&shared, &self.name);
        let mut taken = std::mem::take(&mut *shared);
        taken.plan = Some(plan.clone());
        shared.started = Some(names);
        shared.plan = Some(plan);
        shared.history = taken.history.clone();
        Ok(taken)
    }

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

    /// Restores `g` from checkpoint `cp`, refusing one of another graph.
    pub(super) fn resume(
        &self,
        g: &mut Graph,
        cp: &Checkpoint,
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
        let shards = store
            .read_shards(cp)
            .map_err(|e| Error::Plan(format!("checkpoint {at}: {e}")))?;
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

    /// Every source's batch at `time` (needed or not, so queues stay
    /// aligned), or, for a batch re-run from the batch log, its record's.
    pub(super) fn fetch_inputs(
        g: &mut Graph,
        time: BatchTime,
        replay: Option<&BatchRecord>,
    ) -> Result<Vec<Rdd>> {
        let mut inputs = Vec::with_capacity(g.sources.len());
        for (i, s) in g.sources.iter_mut().enumerate() {
            inputs.push(match replay {
                Some(r) => s.replay_batch(time, r.sources.get(i).map_or(&[][..], |v| v))?,
                None => s.next_batch(time)?,
            });
        }
        Ok(inputs)
    }
}

impl<'a> Loop<'a> {
    /// Opens the checkpoint store, resumes from its newest checkpoint (if
    /// any), and starts the sources.
    fn start(
        ssc: &'a StreamingContext,
        g: Graph,
        executor: LocalExecutor,
        threads: Arc<ThreadGroup>,
        batches: Option<u64>,
    ) -> Result<Loop<'a>> {
        *ssc.uses.lock().unwrap_or_else(|e| e.into_inner()) = plugin_uses(&g);
        let store = ssc.checkpoint.as_ref().map(Checkpoints::open).transpose()?;
        let every = ssc
            .checkpoint_interval
            .map(|d| d.as_millis() as i64)
            .unwrap_or_else(|| default_checkpoint_interval(&g));
        let mut run = Loop {
            ssc,
            graph: describe_graph(&g),
            g,
            store,
            first: BatchTime::next_after(ssc.clock.now_ms(), ssc.interval),
            start: 0,
            limit: None,
            every,
            replay: BTreeMap::new(),
            batch_log: None,
            last_data: None,
            checkpoint_due: None,
            estimator: PidRateEstimator::new(ssc.interval),
            source_names: Vec::new(),
            stopping: false,
            summary: RunSummary {
                batches: 0,
                input_records: 0,
            },
            threads,
            executor,
        };
        run.recover()?;
        let g = &mut run.g;
        run.limit = batches.map(|b| run.start + b).or_else(|| {
            let finite: Option<Vec<u64>> = g.sources.iter().map(|s| s.finite_batches()).collect();
            finite.and_then(|f| f.into_iter().max())
        });
        for s in g.sources.iter_mut() {
            s.start()?;
            if ssc.backpressure {
                s.set_rate(ssc.initial_rate);
            }
        }
        run.source_names = vec![String::new(); g.sources.len()];
        for n in &g.nodes {
            if let Some(i) = n.op.source()
                && let Some(slot) = run.source_names.get_mut(i)
            {
                slot.clone_from(&n.name);
            }
        }
        g.history.lock().unwrap_or_else(|e| e.into_inner()).zero =
            Some(run.first.millis() - g.interval);
        Ok(run)
    }

    /// With a checkpoint store: resumes from its newest usable checkpoint
    /// and queues the batches logged after it to run again.
    fn recover(&mut self) -> Result<()> {
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
        let Some((cp, skipped)) = store.latest()? else {
            return Ok(());
        };
        for s in &skipped {
            tracing::warn!(checkpoint = %s.path.display(), "skipping an unusable checkpoint (set aside as .damaged): {}", s.reason);
        }
        store.set_aside(&skipped)?;
        let plugins = plugin_versions(g);
        self.ssc.resume(g, &cp, &self.graph, &plugins, store)?;
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

    /// The loop: one batch per interval until the limit or a stop.
    fn batches(&mut self) -> Result<()> {
        let ssc = self.ssc;
        for index in self.start.. {
            self.settle_previous(index)?;
            if self.limit.is_some_and(|l| index >= l) || self.stopping {
                break;
            }
            let time = self.first.plus(ssc.interval * index as u32);
            if !self.wait_for(time) {
                break;
            }
            // The group's turn: out of debt and a free slot; what the
            // batch uses is charged when it ends, failed or not.
            let threads = self.threads.clone();
            let _turn = ssc.cpu_share.as_ref().map(|share| {
                let turn = share.turn(&ssc.stop.0, &threads);
                if !turn.waited().is_zero() {
                    tracing::debug!(job = %ssc.name, batch = time.millis(), waited_ms = turn.waited().as_millis() as u64, "waited for the CPU share");
                }
                turn
            });
            self.batch(time, index)?;
        }
        Ok(())
    }

    /// Makes the previous batch durable: its batch record, once that batch
    /// is reported and before this one commits anything, then its full
    /// checkpoint if one was due. The checkpoint syncs several files,
    /// which is no part of that batch's processing (a crash before this
    /// point re-runs the batch, as one before the batch log's settle).
    fn settle_previous(&mut self, index: u64) -> Result<()> {
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

    /// Waits for the batch at `time`; `false`: the run ends before it.
    fn wait_for(&mut self, time: BatchTime) -> bool {
        let ssc = self.ssc;
        if ssc.clock.is_manual() {
            if ssc.stop.is_stopped() {
                return false;
            }
            ssc.clock.advance_to(time.millis());
        } else if ssc.stop.is_stopped() || !ssc.clock.wait_until(time.millis(), &ssc.stop.0) {
            // Stop: one last batch, now, with what was received (and its
            // checkpoint), then end.
            tracing::info!(
                batch = time.millis(),
                "stopping: a last batch with what was received"
            );
            self.stopping = true;
        }
        true
    }

    /// Runs the batch at `time`, records it for recovery and reports it.
    fn batch(&mut self, time: BatchTime, index: u64) -> Result<()> {
        let ssc = self.ssc;
        ssc.tell(|l| l.on_batch_submitted(time));
        for (i, s) in self.g.sources.iter_mut().enumerate() {
            for e in s.take_errors() {
                let name = &self.source_names[i];
                ssc.tell(|l| l.on_receiver_error(name, &e));
            }
        }
        ssc.tell(|l| l.on_batch_started(time, index));
        let started = Instant::now();
        let scheduling_delay =
            Duration::from_millis((ssc.clock.now_ms() - time.millis()).max(0) as u64);
        let record = self.replay.remove(&index);
        let swaps = ssc.begin_swaps();
        let inputs = StreamingContext::fetch_inputs(&mut self.g, time, record.as_ref())?;
        let BatchRun {
            input_records,
            operators,
            stages,
        } = ssc.run_batch_swapping(
            &mut self.g,
            &self.executor,
            (time, index, self.first),
            inputs,
            swaps,
        )?;
        self.record(time, index, record.is_some())?;
        self.summary.batches += 1;
        self.summary.input_records += input_records;
        let mut info = BatchInfo {
            time,
            index,
            input_records,
            scheduling_delay: if ssc.clock.is_manual() {
                Duration::ZERO
            } else {
                scheduling_delay
            },
            processing_time: started.elapsed(),
            operators,
            stages,
            rate_limit: None,
        };
        if ssc.backpressure
            && record.is_none()
            && let Some(rate) = self.estimator.compute(
                time.millis(),
                input_records,
                info.processing_time,
                info.scheduling_delay,
            )
        {
            for s in self.g.sources.iter_mut() {
                s.set_rate(Some(rate));
            }
        }
        info.rate_limit = self
            .g
            .sources
            .iter()
            .filter_map(|s| s.rate_limit())
            .reduce(f64::min);
        ssc.tell(|l| l.on_batch_completed(&info));
        Ok(())
    }

    /// Records the batch just run for recovery: a full checkpoint when one
    /// is due (and for the last batch), else its batch record, unless it
    /// was itself re-run from one (`replayed`).
    fn record(&mut self, time: BatchTime, index: u64, replayed: bool) -> Result<()> {
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
