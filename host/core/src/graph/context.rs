//! The context's settings, listeners and validation.

use super::listener::{Completed, Listener, StopHandle, StreamingListener};
use super::{
    ADDED_AFTER_START, DStream, Graph, StreamingContext, describe_graph, lock, physical_plan,
};
use crate::error::{Error, Result};
use crate::func::Func;
use crate::plan::Plan;
use crate::share::CpuShare;
use crate::time::{Clock, SystemClock};
use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Duration;

impl StreamingContext {
    /// `transform(streams, f)` (Spark's `StreamingContext.transform`): see
    /// [`DStream::transform_all`].
    ///
    /// # Panics
    /// When `streams` is empty or a stream comes from another context.
    pub fn transform(&self, streams: &[DStream], f: Func) -> DStream {
        assert!(
            streams.iter().all(|s| Arc::ptr_eq(&self.graph, &s.graph)),
            "transform of streams from another StreamingContext"
        );
        DStream::transform_all(streams, f)
    }

    /// A context with `batch_interval`, the system clock and one worker per core.
    pub fn new(batch_interval: Duration) -> Self {
        StreamingContext {
            name: "job".to_string(),
            graph: Arc::new(Mutex::new(Graph {
                interval: batch_interval.as_millis() as i64,
                ..Graph::default()
            })),
            interval: batch_interval,
            clock: Arc::new(SystemClock),
            workers: std::thread::available_parallelism().map_or(2, |n| n.get()),
            extensions: Vec::new(),
            stop: StopHandle::default(),
            listeners: Mutex::new(Vec::new()),
            started: AtomicBool::new(false),
            checkpoint: None,
            checkpoint_store: None,
            checkpoint_interval: None,
            backpressure: false,
            initial_rate: None,
            swaps: Mutex::default(),
            uses: Mutex::default(),
            fresh: false,
            state_in_memory: false,
            cpu_share: None,
            shuffle: Arc::new(crate::exec::LocalShuffle::default()),
        }
    }

    /// Charges the CPU time this job's threads use to `share` after every
    /// batch, and waits before a batch while the share is in debt: a group
    /// of jobs (a tenant) that uses more than its share falls behind alone
    /// (see [`crate::share`]).
    pub fn with_cpu_share(mut self, share: Arc<CpuShare>) -> Self {
        self.cpu_share = Some(share);
        self
    }

    /// Checkpoints into `dir` (a full checkpoint every
    /// [`Self::with_checkpoint_interval`], a batch-log record per batch in
    /// between, a write-ahead log for socket sources) and, when it holds a
    /// valid checkpoint of this same job graph, resumes from it (Spark's
    /// `getOrCreate`): operator state, source positions and the batch
    /// clock, then the logged batches re-run with their input. A damaged
    /// newest checkpoint falls back to an older one with a warning; a
    /// directory with checkpoints but none valid, or one of another graph,
    /// is an error.
    pub fn with_checkpoint(mut self, dir: impl AsRef<Path>) -> Self {
        self.checkpoint = Some(dir.as_ref().to_path_buf());
        self
    }

    /// Lets stateful operators (keyed state, incremental windows) run
    /// without a checkpoint directory: their state lives in memory only, and
    /// a run that stops or fails starts over. For tests and replays; without
    /// it (or a checkpoint), `run` refuses them, as Spark's `start` does.
    pub fn with_state_in_memory(mut self) -> Self {
        self.state_in_memory = true;
        self
    }

    /// Whether `run` would refuse a stateful operator: no checkpoint
    /// directory, and no [`Self::with_state_in_memory`].
    pub fn refuses_state(&self) -> bool {
        self.checkpoint.is_none() && !self.state_in_memory
    }

    /// [`Self::with_checkpoint`] with the checkpoint objects (full
    /// checkpoints and state shards) in `store` — object storage, say —
    /// and only the batch logs and write-ahead logs in the local `dir`.
    pub fn with_checkpoint_store(
        mut self,
        dir: impl AsRef<Path>,
        store: Arc<dyn crate::checkpoint::CheckpointStore>,
    ) -> Self {
        self.checkpoint = Some(dir.as_ref().to_path_buf());
        self.checkpoint_store = Some(store);
        self
    }

    /// How often a full checkpoint (state and positions) is written; in
    /// between each batch only appends a record to the batch log, and
    /// recovery re-runs the batches since the last full checkpoint. Default
    /// max(10 s, 5 × the longest slide).
    pub fn with_checkpoint_interval(mut self, every: Duration) -> Self {
        self.checkpoint_interval = Some(every);
        self
    }

    /// Backpressure (Spark's `spark.streaming.backpressure.enabled`): after
    /// each batch a PID controller (see [`crate::receiver::rate`]) sets the
    /// rate receivers may take in, so that processing keeps up and the
    /// scheduling delay levels off; `initial_rate` (records/s) holds them
    /// until the first estimate.
    pub fn with_backpressure(mut self, initial_rate: Option<f64>) -> Self {
        self.backpressure = true;
        self.initial_rate = initial_rate;
        self
    }

    /// Ignores (and removes) the checkpoints of [`Self::with_checkpoint`]'s
    /// directory and starts over.
    pub fn with_fresh_start(mut self, fresh: bool) -> Self {
        self.fresh = fresh;
        self
    }

    /// Names the job (tags its plugins' logs; default `job`).
    pub fn with_name(mut self, name: &str) -> Self {
        self.name = name.to_string();
        self
    }

    /// The job's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Uses `clock` instead of the system clock (e.g. a [`crate::ManualClock`]:
    /// batches then run back to back without waiting).
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Number of worker threads that run partitions in parallel.
    pub fn with_workers(mut self, workers: usize) -> Self {
        self.workers = workers.max(1);
        self
    }

    /// Where exchanges keep their blocks between map and reduce tasks:
    /// the process's memory by default ([`crate::exec::LocalShuffle`]); an
    /// [`crate::exec::EncodedShuffle`] keeps them as bytes, as a shuffle
    /// between processes does.
    pub fn with_shuffle(mut self, shuffle: Arc<dyn crate::exec::Shuffle>) -> Self {
        self.shuffle = shuffle;
        self
    }

    /// Attaches `value` to the context, one per type: how the layers above
    /// the engine keep what they need beside a job (the plugin runtime that
    /// loads the job's plugins, say) without the engine knowing them.
    pub fn with_extension<T: std::any::Any + Send + Sync>(mut self, value: Arc<T>) -> Self {
        self.extensions.retain(|e| !e.is::<T>());
        self.extensions.push(value);
        self
    }

    /// The value of type `T` attached by [`Self::with_extension`].
    pub fn extension<T: std::any::Any + Send + Sync>(&self) -> Option<Arc<T>> {
        self.extensions
            .iter()
            .find_map(|e| e.clone().downcast::<T>().ok())
    }

    /// Worker threads that run partitions in parallel.
    pub fn workers(&self) -> usize {
        self.workers
    }

    /// The batch interval.
    pub fn batch_interval(&self) -> Duration {
        self.interval
    }

    /// The job graph as checkpoints fingerprint it: one line per stream
    /// (index, name, parents, slide, operator), then the outputs.
    pub fn describe_graph(&self) -> String {
        describe_graph(&lock(&self.graph))
    }

    /// The physical plan: the graph cut into stages at its shuffles (see
    /// [`crate::plan`]). Once the context runs, the plan it runs.
    pub fn explain(&self) -> Plan {
        let g = lock(&self.graph);
        match &g.plan {
            Some(plan) => plan.clone(),
            None => physical_plan(&g, &self.name),
        }
    }

    /// Adds a listener called after every batch.
    pub fn add_listener(&self, listener: Listener) {
        self.add_streaming_listener(Box::new(Completed(listener)));
    }

    /// Adds a listener of every batch event and receiver error.
    pub fn add_streaming_listener(&self, listener: Box<dyn StreamingListener>) {
        self.listeners
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(listener);
    }

    pub(super) fn tell(&self, event: impl Fn(&mut dyn StreamingListener)) {
        for l in self
            .listeners
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter_mut()
        {
            event(l.as_mut());
        }
    }

    /// A handle that stops [`StreamingContext::run`] from elsewhere.
    pub fn stop_handle(&self) -> StopHandle {
        self.stop.clone()
    }

    pub(super) fn validate(&self, g: &Graph) -> Result<()> {
        if let Some((id, message)) = g.errors.first() {
            return Err(Error::Plan(format!(
                "stream `{}`: {message}",
                g.nodes[*id].name
            )));
        }
        if self.interval.is_zero() || !self.interval.subsec_nanos().is_multiple_of(1_000_000) {
            return Err(Error::Plan(format!(
                "the batch interval must be a positive whole number of milliseconds, not {:?}",
                self.interval
            )));
        }
        if g.outputs.is_empty() {
            return Err(Error::Plan(
                "no output operations registered, so nothing to execute".to_string(),
            ));
        }
        if self.refuses_state()
            && let Some(node) = g.nodes.iter().find(|n| n.op.needs_checkpoint())
        {
            return Err(Error::Plan(format!(
                "stream `{}` keeps state across batches, but the checkpoint directory has not been set: set it with StreamingContext::with_checkpoint (or keep the state in memory only with with_state_in_memory)",
                node.name
            )));
        }
        for node in &g.nodes {
            for (func, want) in node.op.functions() {
                if !want.contains(&func.kind()) {
                    return Err(Error::Plan(format!(
                        "stream `{}` needs a {} function, but `{}` is a {}",
                        node.name,
                        want[0],
                        func.name(),
                        func.kind()
                    )));
                }
            }
        }
        Ok(())
    }

    /// Makes the run a Kappa replay (see [`crate::receiver::Source::replay_history`]): every
    /// source reads its history from `from` (`None`: the earliest
    /// retained) to `to`, batches back to back on the manual clock, the
    /// first at the interval holding the first record. Returns how many
    /// batches cover the range (0: nothing to replay), the count to give
    /// [`StreamingContext::run`].
    pub fn replay(&self, from: Option<i64>, to: i64) -> Result<u64> {
        if !self.clock.is_manual() {
            return Err(Error::Plan(
                "a replay runs on the manual clock (batches back to back)".to_string(),
            ));
        }
        let mut g = lock(&self.graph);
        if g.started {
            return Err(Error::Plan(format!(
                "{ADDED_AFTER_START} (a replay of a started context)"
            )));
        }
        let names: Vec<String> = (0..g.sources.len())
            .map(|i| {
                (g.nodes.iter())
                    .find(|n| n.op.source() == Some(i))
                    .map_or_else(|| format!("source {i}"), |n| n.name.clone())
            })
            .collect();
        let mut first: Option<i64> = None;
        for (s, name) in g.sources.iter_mut().zip(&names) {
            let t = s.replay_history(from, to).map_err(|e| match e {
                Error::Plan(m) => Error::Source {
                    name: name.clone(),
                    message: m,
                },
                other => other,
            })?;
            first = match (first, t) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
        }
        let Some(start) = from.or(first) else {
            return Ok(0);
        };
        let i = self.interval.as_millis().max(1) as i64;
        let ceil = |t: i64| (t + i - 1).div_euclid(i) * i;
        let (t0, end) = (ceil(start), ceil(to));
        if end < t0 {
            return Ok(0);
        }
        self.clock.advance_to(t0 - 1);
        Ok(((end - t0) / i + 1) as u64)
    }

    /// Keeps every stream's batches for at least `duration`, so that
    /// [`DStream::slice`] can return them (Spark's `remember`). Without it no
    /// batch is kept.
    pub fn remember(&self, duration: Duration) {
        let mut g = lock(&self.graph);
        if !g.check_open("remember") {
            return;
        }
        g.history.lock().unwrap_or_else(|e| e.into_inner()).remember = duration.as_millis() as i64;
    }

    /// How long batches are kept for [`DStream::slice`] (zero: none are).
    pub fn remembered(&self) -> Duration {
        let g = lock(&self.graph);
        let ms = g.history.lock().unwrap_or_else(|e| e.into_inner()).remember;
        Duration::from_millis(ms.max(0) as u64)
    }
}
