//! The batch loop, the story of a run: start (resume from a checkpoint,
//! start the sources), then per interval: make the previous batch durable,
//! wait for the batch time, take a turn of the CPU share, run the batch,
//! record it for recovery (`recovery`), report it, and set the receiving
//! rate (backpressure).

use super::batch::{BatchRun, StageMap};
use super::listener::{BatchInfo, RunSummary, SourceLag};
use super::op::{Operator, Step};
use super::recovery::{DueCheckpoint, InFlight};
use super::{
    Graph, Node, StreamingContext, default_checkpoint_interval, describe_graph, lock,
    physical_plan, plugin_uses,
};
use crate::checkpoint::{BatchLog, BatchRecord, Checkpoints, DirLock};
use crate::error::{Error, Result};
use crate::exec::LocalExecutor;
use crate::plan::Shape;
use crate::rdd::Rdd;
use crate::receiver::rate::PidRateEstimator;
use crate::share::{JobCpu, ThreadGroup};
use crate::time::BatchTime;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// A run in progress: the graph taken out of its context, and where the
/// loop stands.
pub(super) struct Loop<'a> {
    pub(super) ssc: &'a StreamingContext,
    pub(super) g: Graph,
    /// The graph's fingerprint, for checkpoints.
    pub(super) graph: String,
    pub(super) store: Option<Checkpoints>,
    /// The run's hold on its checkpoint directory.
    _lock: Option<DirLock>,
    /// The first batch's time (a resumed run keeps its first run's).
    pub(super) first: BatchTime,
    /// The index of the first batch this run computes.
    pub(super) start: u64,
    /// The index at which the run ends, if it does by itself.
    pub(super) limit: Option<u64>,
    /// How often (ms) a full checkpoint is written.
    pub(super) every: i64,
    /// Batches the batch log recorded after the checkpoint resumed from,
    /// by index: re-run with the same input before anything new.
    pub(super) replay: BTreeMap<u64, BatchRecord>,
    pub(super) batch_log: Option<BatchLog>,
    /// The time of the last batch with a full checkpoint.
    pub(super) last_data: Option<i64>,
    pub(super) checkpoint_due: Option<DueCheckpoint>,
    /// The checkpoint being written while the next batches run.
    pub(super) in_flight: Option<InFlight>,
    pub(super) estimator: PidRateEstimator,
    /// Source streams' names, by source index (for listeners).
    pub(super) source_names: Vec<String>,
    /// A stop was asked for: the batch running is the last.
    pub(super) stopping: bool,
    pub(super) summary: RunSummary,
    /// The job's threads, for its CPU share.
    pub(super) threads: Arc<ThreadGroup>,
    pub(super) executor: LocalExecutor,
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
        result?;
        // What was added while it ran never ran: the run says so.
        match lock(&self.graph).late.first() {
            Some(late) => Err(Error::Plan(late.clone())),
            None => Ok(run.summary.clone()),
        }
    }

    /// Takes the operators, sources and outputs out of the context: the run
    /// does not hold the lock, and anything added from now on is refused
    /// instead of silently never running. The streams stay, each with a
    /// stand-in operator, for their names and slides.
    fn take_graph(&self) -> Result<Graph> {
        let mut shared = lock(&self.graph);
        self.validate(&shared)?;
        let plan = physical_plan(&shared, &self.name);
        let nodes = (shared.nodes.iter_mut())
            .map(|n| {
                let stand_in = Box::new(Started(n.op.describe()));
                Node {
                    name: n.name.clone(),
                    op: std::mem::replace(&mut n.op, stand_in),
                    parents: n.parents.clone(),
                    slide: n.slide,
                }
            })
            .collect();
        let taken = Graph {
            nodes,
            sources: std::mem::take(&mut shared.sources),
            outputs: std::mem::take(&mut shared.outputs),
            started: false,
            late: Vec::new(),
            interval: shared.interval,
            errors: Vec::new(),
            plan: Some(plan.clone()),
            stage_map: Arc::new(StageMap::of(&plan)),
            history: shared.history.clone(),
        };
        shared.started = true;
        shared.plan = Some(plan);
        Ok(taken)
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
        let store = match (&ssc.checkpoint, &ssc.checkpoint_store) {
            (Some(dir), Some(objects)) => Some(Checkpoints::with_store(dir, objects.clone())?),
            (Some(dir), None) => Some(Checkpoints::open(dir)?),
            (None, _) => None,
        };
        let lock = store.as_ref().map(Checkpoints::lock).transpose()?;
        let every = ssc
            .checkpoint_interval
            .map(|d| d.as_millis() as i64)
            .unwrap_or_else(|| default_checkpoint_interval(&g));
        let mut run = Loop {
            ssc,
            graph: describe_graph(&g),
            g,
            store,
            _lock: lock,
            first: BatchTime::next_after(ssc.clock.now_ms(), ssc.interval),
            start: 0,
            limit: None,
            every,
            replay: BTreeMap::new(),
            batch_log: None,
            last_data: None,
            checkpoint_due: None,
            in_flight: None,
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

    /// The loop: one batch per interval until the limit or a stop.
    fn batches(&mut self) -> Result<()> {
        let result = self.run_batches();
        // The last checkpoint is durable before the run returns (after a
        // failure too: a run started again at once must not race it).
        let written = self.finish_checkpoint(true);
        result.and(written)
    }

    fn run_batches(&mut self) -> Result<()> {
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
            source_lag: Vec::new(),
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
        for (i, s) in self.g.sources.iter().enumerate() {
            for (partition, records) in s.lag() {
                info.source_lag.push(SourceLag {
                    source: self.source_names[i].clone(),
                    partition,
                    records,
                });
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
}

/// The operator a started context keeps in place of each stream's (which
/// the run took): it describes it, and never runs.
struct Started(String);

impl Operator for Started {
    fn describe(&self) -> String {
        self.0.clone()
    }

    fn shape(&self, _: Option<i64>, _: &[usize]) -> Shape {
        Shape::Narrow
    }

    fn compute(&mut self, _: &mut Step<'_, '_>) -> Result<Option<Rdd>> {
        Err(Error::Internal(
            "a started context's stream ran".to_string(),
        ))
    }
}
