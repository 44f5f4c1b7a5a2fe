//! The DStream graph and the Spark-like API over it: [`StreamingContext`]
//! creates input streams, [`DStream`] methods add transformations and outputs,
//! [`StreamingContext::run`] generates a batch every interval and computes it.

use crate::error::{Error, Result};
use crate::func::Func;
use crate::ops::BatchContext;
use crate::ops::aggregate;
use crate::ops::join::{JoinKind, join};
use crate::ops::keyed::{count_by_value, group_by_key, map_values, reduce_by_key};
use crate::ops::narrow::{self, Narrow};
use crate::plugin::{Limits, Plugin, Runtime};
use crate::rdd::Rdd;
use crate::receiver::queue::QueueSource;
use crate::receiver::socket::SocketConfig;
use crate::receiver::{SocketSource, Source};
use crate::sink::{Collect, CollectedBatch, ForEach, Output};
use crate::time::{BatchTime, Clock, SystemClock};
use sluice_sdk::Kind;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

enum Op {
    Source(usize),
    Narrow(Narrow, Func),
    ReduceByKey { func: Func, partitions: usize },
    Count,
    Reduce(Func),
    CountByValue { partitions: usize },
    Union,
    Join { kind: JoinKind, partitions: usize },
    GroupByKey { partitions: usize },
    MapValues(Func),
    Glom,
    Repartition(usize),
    Transform(Func),
}

struct Node {
    name: String,
    op: Op,
    parents: Vec<usize>,
}

#[derive(Default)]
struct Graph {
    nodes: Vec<Node>,
    sources: Vec<Box<dyn Source>>,
    outputs: Vec<(usize, Box<dyn Output>)>,
    /// Set by `run`, which takes the streams out; the names stay for `DStream::name`.
    started: Option<Vec<String>>,
}

const ADDED_AFTER_START: &str = "adding new inputs, transformations, and output operations after starting a context is not supported";

impl Graph {
    /// Panics when the context has started (Spark's `IllegalStateException`).
    fn check_open(&self) {
        assert!(self.started.is_none(), "{ADDED_AFTER_START}");
    }
}

/// What happened in one batch, as told to listeners.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchInfo {
    /// Batch time.
    pub time: BatchTime,
    /// Batch number from 0.
    pub index: u64,
    /// Elements received from all sources.
    pub input_records: u64,
    /// From the batch time to the start of processing.
    pub scheduling_delay: Duration,
    /// Time spent computing the batch and running its outputs.
    pub processing_time: Duration,
}

impl BatchInfo {
    /// Scheduling delay plus processing time.
    pub fn total_delay(&self) -> Duration {
        self.scheduling_delay + self.processing_time
    }
}

/// Called after each batch completes (Spark's `StreamingListener.onBatchCompleted`).
pub type Listener = Box<dyn FnMut(&BatchInfo) + Send>;

/// Stops a running context from another thread (or a signal handler).
#[derive(Debug, Clone, Default)]
pub struct StopHandle(Arc<AtomicBool>);

impl StopHandle {
    /// Asks the run loop to stop after the batch in progress.
    pub fn stop(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    /// Whether a stop was requested.
    pub fn is_stopped(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// Summary of a finished run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunSummary {
    /// Batches processed.
    pub batches: u64,
    /// Elements received.
    pub input_records: u64,
}

/// The entry point: a batch interval, a clock, worker threads, and the graph
/// of streams built on it (Spark's `StreamingContext`).
///
/// ```
/// use sluice::{Func, ManualClock, StreamingContext};
/// use std::{sync::Arc, time::Duration};
///
/// let ssc = StreamingContext::new(Duration::from_secs(1))
///     .with_clock(Arc::new(ManualClock::new(0)));
/// let lines = ssc.queue_stream(vec![vec!["a b a".into()], vec![]], 2);
/// let counts = lines
///     .flat_map(Func::flat_map("split", |l: String| {
///         l.split(' ').map(str::to_string).collect::<Vec<_>>()
///     }))
///     .map(Func::map("pair", |w: String| (w, 1i64)))
///     .reduce_by_key(Func::reduce("add", |a: i64, b: i64| a + b), 2);
/// let out = counts.collect();
/// ssc.run(None).unwrap();
/// let batches = out.lock().unwrap();
/// assert_eq!(batches[0].sorted_records(), vec![serde_json::json!(["a", 2]), serde_json::json!(["b", 1])]);
/// assert!(batches[1].records.is_empty());
/// ```
pub struct StreamingContext {
    name: String,
    graph: Arc<Mutex<Graph>>,
    interval: Duration,
    clock: Arc<dyn Clock>,
    workers: usize,
    runtime: Option<Arc<Runtime>>,
    stop: StopHandle,
    listeners: Mutex<Vec<Listener>>,
    started: AtomicBool,
}

/// A stream of batches (Spark's DStream): a handle into its context's graph.
///
/// The graph is fixed once [`StreamingContext::run`] starts: adding a stream,
/// transformation or output after that panics, as Spark throws
/// `IllegalStateException` ("adding new inputs, transformations, and output
/// operations after starting a context is not supported").
#[derive(Clone)]
pub struct DStream {
    graph: Arc<Mutex<Graph>>,
    id: usize,
}

fn lock(g: &Mutex<Graph>) -> std::sync::MutexGuard<'_, Graph> {
    g.lock().unwrap_or_else(|e| e.into_inner())
}

impl StreamingContext {
    /// A context with `batch_interval`, the system clock and one worker per core.
    pub fn new(batch_interval: Duration) -> Self {
        StreamingContext {
            name: "job".to_string(),
            graph: Arc::new(Mutex::new(Graph::default())),
            interval: batch_interval,
            clock: Arc::new(SystemClock),
            workers: std::thread::available_parallelism().map_or(2, |n| n.get()),
            runtime: None,
            stop: StopHandle::default(),
            listeners: Mutex::new(Vec::new()),
            started: AtomicBool::new(false),
        }
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

    /// Uses `runtime` for plugins instead of the process-wide one.
    pub fn with_runtime(mut self, runtime: Arc<Runtime>) -> Self {
        self.runtime = Some(runtime);
        self
    }

    /// The batch interval.
    pub fn batch_interval(&self) -> Duration {
        self.interval
    }

    fn runtime(&self) -> Result<Arc<Runtime>> {
        match &self.runtime {
            Some(r) => Ok(r.clone()),
            None => Runtime::shared(),
        }
    }

    /// Loads a plugin component, known in this job as `name`, with default limits.
    pub fn load_plugin(&self, name: &str, path: impl AsRef<Path>) -> Result<Arc<Plugin>> {
        self.load_plugin_with_limits(name, path, Limits::default())
    }

    /// Loads a plugin component with explicit sandbox limits.
    pub fn load_plugin_with_limits(
        &self,
        name: &str,
        path: impl AsRef<Path>,
        limits: Limits,
    ) -> Result<Arc<Plugin>> {
        Plugin::load_for_job(&self.runtime()?, &self.name, name, path.as_ref(), limits)
    }

    fn add_source(&self, name: String, source: Box<dyn Source>) -> DStream {
        let mut g = lock(&self.graph);
        g.check_open();
        let index = g.sources.len();
        g.sources.push(source);
        let id = g.nodes.len();
        g.nodes.push(Node {
            name,
            op: Op::Source(index),
            parents: Vec::new(),
        });
        DStream {
            graph: self.graph.clone(),
            id,
        }
    }

    /// Lines from a TCP server at `host:port` (Spark's `socketTextStream`),
    /// sliced into one partition per worker.
    pub fn socket_text_stream(&self, host: &str, port: u16) -> DStream {
        let config = SocketConfig {
            host: host.to_string(),
            port,
            ..SocketConfig::default()
        };
        self.socket_text_stream_with(config, self.workers)
    }

    /// Lines from a TCP server, with receiver settings and a partition count.
    pub fn socket_text_stream_with(&self, config: SocketConfig, partitions: usize) -> DStream {
        let name = format!("socket {}:{}", config.host, config.port);
        self.add_source(name, Box::new(SocketSource::new(config, partitions.max(1))))
    }

    /// A stream whose batch `i` is `batches[i]` (then empty), each sliced into
    /// `partitions` (Spark's `queueStream` with `oneAtATime`).
    pub fn queue_stream(&self, batches: Vec<Vec<String>>, partitions: usize) -> DStream {
        self.add_source(
            "queue".to_string(),
            Box::new(QueueSource::new(batches, partitions.max(1))),
        )
    }

    /// Lines of the files that appear in `dir` (Spark's `textFileStream`): each
    /// new file read once into the batch in which it appeared; files present
    /// at start only with `include_existing`. See [`crate::receiver`]'s file
    /// policy for the details.
    pub fn text_file_stream(&self, dir: impl AsRef<Path>, include_existing: bool) -> DStream {
        self.text_file_stream_with(dir, include_existing, self.workers)
    }

    /// [`StreamingContext::text_file_stream`] sliced into `partitions`.
    pub fn text_file_stream_with(
        &self,
        dir: impl AsRef<Path>,
        include_existing: bool,
        partitions: usize,
    ) -> DStream {
        let dir = dir.as_ref().to_path_buf();
        let source = crate::receiver::file::FileSource::new(
            dir.clone(),
            include_existing,
            partitions.max(1),
        );
        self.add_source(format!("files {}", dir.display()), Box::new(source))
    }

    /// Synthetic lines at a given rate (demos, benchmarks): see
    /// [`crate::receiver::generator::GeneratorConfig`].
    pub fn generator_stream(
        &self,
        config: crate::receiver::generator::GeneratorConfig,
        partitions: usize,
    ) -> DStream {
        let source = crate::receiver::generator::GeneratorSource::new(
            config,
            self.interval,
            partitions.max(1),
        );
        self.add_source("generator".to_string(), Box::new(source))
    }

    /// Adds a listener called after every batch.
    pub fn add_listener(&self, listener: Listener) {
        self.listeners
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(listener);
    }

    /// A handle that stops [`StreamingContext::run`] from elsewhere.
    pub fn stop_handle(&self) -> StopHandle {
        self.stop.clone()
    }

    fn validate(&self, g: &Graph) -> Result<()> {
        if g.outputs.is_empty() {
            return Err(Error::Plan(
                "no output operations registered, so nothing to execute".to_string(),
            ));
        }
        for node in &g.nodes {
            let (func, want): (&Func, &[Kind]) = match &node.op {
                Op::Source(_) => continue,
                Op::Narrow(Narrow::Map, f) => (f, &[Kind::Map]),
                Op::Narrow(Narrow::FlatMap, f) => (f, &[Kind::FlatMap, Kind::Map]),
                Op::Narrow(Narrow::Filter, f) => (f, &[Kind::Filter]),
                Op::Narrow(Narrow::MapPartitions, f) => (f, &[Kind::MapPartitions]),
                Op::Transform(f) => (f, &[Kind::Transform]),
                Op::ReduceByKey { func, .. } | Op::Reduce(func) => (func, &[Kind::Reduce]),
                Op::MapValues(f) => (f, &[Kind::Map]),
                Op::Count
                | Op::CountByValue { .. }
                | Op::Union
                | Op::Join { .. }
                | Op::GroupByKey { .. }
                | Op::Glom
                | Op::Repartition(_) => continue,
            };
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
        Ok(())
    }

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
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(self.workers)
            .thread_name(|i| format!("sluice-worker-{i}"))
            .build()
            .map_err(|e| Error::Internal(format!("starting worker threads: {e}")))?;
        // Take the streams out: the run does not hold the lock, and anything
        // added from now on is refused instead of silently never running.
        let mut g = {
            let mut shared = lock(&self.graph);
            self.validate(&shared)?;
            let names = shared.nodes.iter().map(|n| n.name.clone()).collect();
            let taken = std::mem::take(&mut *shared);
            shared.started = Some(names);
            taken
        };
        let limit = batches.or_else(|| {
            let finite: Option<Vec<u64>> = g.sources.iter().map(|s| s.finite_batches()).collect();
            finite.and_then(|f| f.into_iter().max())
        });
        for s in g.sources.iter_mut() {
            s.start()?;
        }
        let first = BatchTime::next_after(self.clock.now_ms(), self.interval);
        let mut summary = RunSummary {
            batches: 0,
            input_records: 0,
        };
        let result = (|| -> Result<()> {
            for index in 0.. {
                if limit.is_some_and(|l| index >= l) || self.stop.is_stopped() {
                    break;
                }
                let time = first.plus(self.interval * index as u32);
                if self.clock.is_manual() {
                    self.clock.advance_to(time.millis());
                } else if !self.clock.wait_until(time.millis(), &self.stop.0) {
                    break;
                }
                let started = Instant::now();
                let scheduling_delay =
                    Duration::from_millis((self.clock.now_ms() - time.millis()).max(0) as u64);
                let input_records = self.run_batch(&mut g, &pool, time, index)?;
                summary.batches += 1;
                summary.input_records += input_records;
                let info = BatchInfo {
                    time,
                    index,
                    input_records,
                    scheduling_delay: if self.clock.is_manual() {
                        Duration::ZERO
                    } else {
                        scheduling_delay
                    },
                    processing_time: started.elapsed(),
                };
                for l in self
                    .listeners
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .iter_mut()
                {
                    l(&info);
                }
            }
            Ok(())
        })();
        for s in g.sources.iter_mut() {
            s.stop();
        }
        result.map(|()| summary)
    }

    /// Computes one batch: every stream an output needs, then the outputs in
    /// registration order. Returns the number of input elements.
    fn run_batch(
        &self,
        g: &mut Graph,
        pool: &rayon::ThreadPool,
        time: BatchTime,
        index: u64,
    ) -> Result<u64> {
        let n = g.nodes.len();
        // Streams needed by some output, and how many consumers each has.
        let mut needed = vec![false; n];
        for (id, _) in &g.outputs {
            needed[*id] = true;
        }
        for id in (0..n).rev() {
            if needed[id] {
                for &p in &g.nodes[id].parents {
                    needed[p] = true;
                }
            }
        }
        let mut consumers = vec![0usize; n];
        for (id, _) in &g.outputs {
            consumers[*id] += 1;
        }
        for node in g
            .nodes
            .iter()
            .enumerate()
            .filter(|(i, _)| needed[*i])
            .map(|(_, n)| n)
        {
            for &p in &node.parents {
                consumers[p] += 1;
            }
        }
        // Every source yields its batch, needed or not, so queues stay aligned.
        let mut source_rdds: Vec<Option<Rdd>> = Vec::with_capacity(g.sources.len());
        let mut input_records = 0u64;
        for s in g.sources.iter_mut() {
            let rdd = s.next_batch(time)?;
            input_records += rdd.count() as u64;
            source_rdds.push(Some(rdd));
        }
        let mut values: Vec<Option<Arc<Rdd>>> = vec![None; n];
        let mut take = |values: &mut Vec<Option<Arc<Rdd>>>, id: usize| -> Result<Arc<Rdd>> {
            consumers[id] -= 1;
            let v = if consumers[id] == 0 {
                values[id].take()
            } else {
                values[id].clone()
            };
            v.ok_or_else(|| Error::Internal(format!("stream {id} was not computed")))
        };
        for id in 0..n {
            if !needed[id] {
                continue;
            }
            let node = &g.nodes[id];
            let ctx = BatchContext {
                time,
                pool,
                stream: &node.name,
            };
            let rdd = match &node.op {
                Op::Source(s) => source_rdds[*s].take().unwrap_or_default(),
                Op::Narrow(kind, func) => {
                    let input = Arc::unwrap_or_clone(take(&mut values, node.parents[0])?);
                    narrow::apply(*kind, func, input, &ctx)?
                }
                Op::ReduceByKey { func, partitions } => {
                    let input = Arc::unwrap_or_clone(take(&mut values, node.parents[0])?);
                    reduce_by_key(func, *partitions, input, &ctx)?
                }
                Op::Count => aggregate::count(&*take(&mut values, node.parents[0])?),
                Op::Reduce(func) => {
                    let input = Arc::unwrap_or_clone(take(&mut values, node.parents[0])?);
                    aggregate::reduce(func, input, &ctx)?
                }
                Op::CountByValue { partitions } => {
                    let input = Arc::unwrap_or_clone(take(&mut values, node.parents[0])?);
                    count_by_value(*partitions, input, &ctx)?
                }
                Op::GroupByKey { partitions } => {
                    let input = Arc::unwrap_or_clone(take(&mut values, node.parents[0])?);
                    group_by_key(*partitions, input, &ctx)?
                }
                Op::MapValues(func) => {
                    let input = Arc::unwrap_or_clone(take(&mut values, node.parents[0])?);
                    map_values(func, input, &ctx)?
                }
                Op::Transform(func) => narrow::transform(
                    func,
                    Arc::unwrap_or_clone(take(&mut values, node.parents[0])?),
                    &ctx,
                )?,
                Op::Glom => narrow::glom(Arc::unwrap_or_clone(take(&mut values, node.parents[0])?)),
                Op::Repartition(n) => narrow::repartition(
                    *n,
                    Arc::unwrap_or_clone(take(&mut values, node.parents[0])?),
                ),
                Op::Join { kind, partitions } => {
                    let left = Arc::unwrap_or_clone(take(&mut values, node.parents[0])?);
                    let right = Arc::unwrap_or_clone(take(&mut values, node.parents[1])?);
                    join(*kind, *partitions, left, right, &ctx)?
                }
                Op::Union => {
                    let mut partitions = Vec::new();
                    for &p in &node.parents {
                        partitions.extend(Arc::unwrap_or_clone(take(&mut values, p)?).partitions);
                    }
                    Rdd { partitions }
                }
            };
            values[id] = Some(Arc::new(rdd));
        }
        for i in 0..g.outputs.len() {
            let id = g.outputs[i].0;
            let rdd = take(&mut values, id)?;
            g.outputs[i].1.emit(time, index, &rdd)?;
        }
        Ok(input_records)
    }
}

impl DStream {
    fn derive(&self, name: &str, op: Op) -> DStream {
        self.derive_from(name, op, vec![self.id])
    }

    fn derive_from(&self, name: &str, op: Op, parents: Vec<usize>) -> DStream {
        let mut g = lock(&self.graph);
        g.check_open();
        let id = g.nodes.len();
        let name = format!("{name}#{id}");
        g.nodes.push(Node { name, op, parents });
        DStream {
            graph: self.graph.clone(),
            id,
        }
    }

    /// Names this stream (used in error messages; the job spec names every stream).
    pub fn named(self, name: &str) -> DStream {
        let mut g = lock(&self.graph);
        g.check_open();
        g.nodes[self.id].name = name.to_string();
        drop(g);
        self
    }

    /// The stream's name.
    pub fn name(&self) -> String {
        let g = lock(&self.graph);
        match &g.started {
            Some(names) => names[self.id].clone(),
            None => g.nodes[self.id].name.clone(),
        }
    }

    /// `map(f)`: one output per element.
    pub fn map(&self, f: Func) -> DStream {
        self.derive("map", Op::Narrow(Narrow::Map, f))
    }

    /// `flat_map(f)`: zero or more outputs per element.
    pub fn flat_map(&self, f: Func) -> DStream {
        self.derive("flat_map", Op::Narrow(Narrow::FlatMap, f))
    }

    /// `filter(f)`: the elements for which `f` holds.
    pub fn filter(&self, f: Func) -> DStream {
        self.derive("filter", Op::Narrow(Narrow::Filter, f))
    }

    /// `reduce_by_key(f, partitions)`: per key, the values combined with the
    /// associative `f`, in exactly `partitions` partitions (hash of the key).
    /// Elements must be `(key, value)` pairs.
    pub fn reduce_by_key(&self, f: Func, partitions: usize) -> DStream {
        self.derive(
            "reduce_by_key",
            Op::ReduceByKey {
                func: f,
                partitions: partitions.max(1),
            },
        )
    }

    /// `group_by_key(partitions)`: per key, `(k, [values])`, values in arrival
    /// order, in `partitions` partitions. Elements must be `(key, value)` pairs.
    pub fn group_by_key(&self, partitions: usize) -> DStream {
        self.derive(
            "group_by_key",
            Op::GroupByKey {
                partitions: partitions.max(1),
            },
        )
    }

    /// `map_values(f)`: `(k, f(v))` for every pair, keys and partitions kept.
    pub fn map_values(&self, f: Func) -> DStream {
        self.derive("map_values", Op::MapValues(f))
    }

    /// `map_partitions(f)`: `f` sees each partition's elements at once (empty
    /// partitions too) and returns any number of elements.
    pub fn map_partitions(&self, f: Func) -> DStream {
        self.derive("map_partitions", Op::Narrow(Narrow::MapPartitions, f))
    }

    /// `transform(f)`: `f` sees each whole batch (all partitions, in order) in
    /// one call and returns the new batch (one partition), e.g. a top 3.
    pub fn transform(&self, f: Func) -> DStream {
        self.derive("transform", Op::Transform(f))
    }

    /// `glom()`: each partition as one element, the array of its elements.
    pub fn glom(&self) -> DStream {
        self.derive("glom", Op::Glom)
    }

    /// `repartition(n)`: the same elements spread evenly over exactly `n` partitions.
    pub fn repartition(&self, n: usize) -> DStream {
        self.derive("repartition", Op::Repartition(n.max(1)))
    }

    /// `count()`: the number of elements of each batch, as one element
    /// (`0` for an empty batch).
    pub fn count(&self) -> DStream {
        self.derive("count", Op::Count)
    }

    /// `reduce(f)`: all elements of each batch combined with the associative
    /// `f`, as one element (none for an empty batch).
    pub fn reduce(&self, f: Func) -> DStream {
        self.derive("reduce", Op::Reduce(f))
    }

    /// `count_by_value()`: each distinct element with its number of
    /// occurrences, as `(element, count)` pairs in `partitions` partitions.
    pub fn count_by_value(&self, partitions: usize) -> DStream {
        self.derive(
            "count_by_value",
            Op::CountByValue {
                partitions: partitions.max(1),
            },
        )
    }

    /// `union(others)`: the elements of this stream and of every stream in
    /// `others`, batch by batch (their partitions side by side).
    ///
    /// # Panics
    /// When a stream comes from another [`StreamingContext`].
    pub fn union(&self, others: &[DStream]) -> DStream {
        let mut parents = vec![self.id];
        for o in others {
            assert!(
                Arc::ptr_eq(&self.graph, &o.graph),
                "union of streams from different StreamingContexts"
            );
            parents.push(o.id);
        }
        self.derive_from("union", Op::Union, parents)
    }

    fn join_with(&self, other: &DStream, kind: JoinKind, partitions: usize) -> DStream {
        assert!(
            Arc::ptr_eq(&self.graph, &other.graph),
            "{} of streams from different StreamingContexts",
            kind.name()
        );
        self.derive_from(
            kind.name(),
            Op::Join {
                kind,
                partitions: partitions.max(1),
            },
            vec![self.id, other.id],
        )
    }

    /// `join(other, partitions)`: per batch and key, every `(k, (v, w))` with
    /// `(k, v)` here and `(k, w)` in `other` (duplicates kept). Both streams
    /// must hold `(key, value)` pairs.
    ///
    /// # Panics
    /// When `other` comes from another [`StreamingContext`] (likewise for the
    /// other joins).
    pub fn join(&self, other: &DStream, partitions: usize) -> DStream {
        self.join_with(other, JoinKind::Inner, partitions)
    }

    /// `left_outer_join`: like [`DStream::join`], plus `(k, (v, null))` for
    /// keys missing from `other`.
    pub fn left_outer_join(&self, other: &DStream, partitions: usize) -> DStream {
        self.join_with(other, JoinKind::LeftOuter, partitions)
    }

    /// `right_outer_join`: like [`DStream::join`], plus `(k, (null, w))` for
    /// keys missing here.
    pub fn right_outer_join(&self, other: &DStream, partitions: usize) -> DStream {
        self.join_with(other, JoinKind::RightOuter, partitions)
    }

    /// `full_outer_join`: both outer joins at once.
    pub fn full_outer_join(&self, other: &DStream, partitions: usize) -> DStream {
        self.join_with(other, JoinKind::FullOuter, partitions)
    }

    /// `cogroup(other, partitions)`: for every key on either side,
    /// `(k, ([values here], [values in other]))`, values in arrival order.
    pub fn cogroup(&self, other: &DStream, partitions: usize) -> DStream {
        self.join_with(other, JoinKind::Cogroup, partitions)
    }

    fn add_output(&self, out: Box<dyn Output>) {
        let mut g = lock(&self.graph);
        g.check_open();
        g.outputs.push((self.id, out));
    }

    /// `pprint(num)`: prints the first `num` elements of every batch to stdout.
    pub fn pprint(&self, num: usize) {
        self.pprint_to(num, Box::new(std::io::stdout()));
    }

    /// `pprint(num)` to any writer.
    pub fn pprint_to(&self, num: usize, out: Box<dyn std::io::Write + Send>) {
        self.add_output(Box::new(crate::sink::pprint::Pprint { num, out }));
    }

    /// Writes every batch as a line of JSON to `path` (the test contract).
    pub fn save_jsonl(&self, path: impl AsRef<Path>) {
        self.add_output(Box::new(crate::sink::jsonl::Jsonl {
            path: path.as_ref().to_path_buf(),
            file: None,
        }));
    }

    /// `save_as_text_files(prefix, suffix)`: per batch a directory
    /// `prefix-<batch ms>[.suffix]` of `part-0000N` files (one element per
    /// line, as Python's `str` of it) and `_SUCCESS`, committed atomically.
    pub fn save_as_text_files(&self, prefix: impl AsRef<Path>, suffix: Option<&str>) {
        self.add_output(Box::new(crate::sink::text::TextFiles {
            prefix: prefix.as_ref().to_path_buf(),
            suffix: suffix.map(str::to_string),
        }));
    }

    /// `save_as_object_files(prefix)`: per batch a directory `prefix-<batch ms>`
    /// of typed elements in Sluice's binary object format (see
    /// [`crate::sink::objects`]; read back with `sluice cat DIR`), committed
    /// atomically.
    pub fn save_as_object_files(&self, prefix: impl AsRef<Path>) {
        self.add_output(Box::new(crate::sink::objects::ObjectFiles {
            prefix: prefix.as_ref().to_path_buf(),
        }));
    }

    /// Keeps every batch in memory; read the returned list after (or during) a run.
    pub fn collect(&self) -> Arc<Mutex<Vec<CollectedBatch>>> {
        let store = Arc::new(Mutex::new(Vec::new()));
        self.add_output(Box::new(Collect(store.clone())));
        store
    }

    /// Calls `f` with every batch's raw partitions (Spark's `foreachRDD`, natively,
    /// without rendering: for embedding and benchmarks).
    pub fn foreach_rdd<F>(&self, f: F)
    where
        F: FnMut(BatchTime, &Rdd) -> Result<()> + Send + 'static,
    {
        self.add_output(Box::new(crate::sink::ForEachRdd(f)));
    }

    /// `foreach_partition(sink)`: calls the plugin (or native) `sink` function
    /// on every partition of every batch, with the batch time in its context;
    /// a failing sink is retried, then fails the job (see
    /// `sink::plugin`).
    ///
    /// # Panics
    /// When `sink` is not a sink function.
    pub fn foreach_partition(&self, sink: Func) {
        assert_eq!(
            sink.kind(),
            Kind::Sink,
            "`{}` is a {}, not a sink function",
            sink.name(),
            sink.kind()
        );
        self.add_output(Box::new(crate::sink::plugin::PluginSink { func: sink }));
    }

    /// Calls `f` with every batch, rendered as JSON records.
    pub fn foreach_batch<F>(&self, f: F)
    where
        F: FnMut(&CollectedBatch) -> Result<()> + Send + 'static,
    {
        self.add_output(Box::new(ForEach(f)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::ManualClock;

    fn ctx() -> StreamingContext {
        StreamingContext::new(Duration::from_secs(1)).with_clock(Arc::new(ManualClock::new(0)))
    }

    #[test]
    fn a_context_without_outputs_or_run_twice_is_refused() {
        let ssc = ctx();
        ssc.queue_stream(vec![vec!["a".into()]], 1);
        let e = ssc.run(None).unwrap_err().to_string();
        assert!(e.contains("no output operations registered"), "{e}");
        let ssc = ctx();
        ssc.queue_stream(vec![vec!["a".into()]], 1).collect();
        assert_eq!(ssc.run(None).unwrap().batches, 1);
        let e = ssc.run(None).unwrap_err().to_string();
        assert!(e.contains("already been started"), "{e}");
    }

    #[test]
    #[should_panic(expected = "after starting a context is not supported")]
    fn adding_after_start_panics_like_spark() {
        let ssc = ctx();
        let lines = ssc.queue_stream(vec![vec!["a".into()]], 1);
        lines.collect();
        ssc.run(None).unwrap();
        assert!(lines.name().starts_with("queue"), "names survive the start");
        lines.count();
    }
}
