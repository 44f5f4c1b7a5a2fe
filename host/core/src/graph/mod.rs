//! The DStream graph and the Spark-like API over it: [`StreamingContext`]
//! creates input streams, [`DStream`] methods add transformations and outputs,
//! [`StreamingContext::run`] generates a batch every interval and computes it.

use crate::checkpoint::{
    BatchLog, BatchRecord, Checkpoint, CheckpointStore, PluginVersion, StateReader, StateWriter,
};
use crate::error::{Error, Result};
use crate::func::Func;
use crate::guest::{self, Guest};
use crate::ops::BatchContext;
use crate::plan::{Exchange, LogicalStream, Plan, Shape};
use crate::ops::aggregate;
use crate::ops::join::{JoinKind, join};
use crate::ops::keyed::{self, count_by_value, group_by_key, map_values, reduce_by_key};
use crate::ops::narrow::{self, Narrow};
use crate::ops::window::{MapWithState, StateByKey, WindowBuffer, WindowFuncs, WindowedReduce};
use crate::rdd::Rdd;
use crate::receiver::queue::QueueSource;
use crate::receiver::socket::SocketConfig;
use crate::receiver::{SocketSource, Source};
use crate::share::{CpuShare, JobCpu, ThreadGroup};
use crate::sink::{Collect, CollectedBatch, ForEach, Output};
use crate::time::{BatchTime, Clock, SystemClock};
use sluice_sdk::{Batch, Column, Kind};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

enum Op {
    Source(usize),
    Narrow(Narrow, Func),
    ReduceByKey {
        func: Func,
        partitions: usize,
    },
    Count,
    Reduce(Func),
    CountByValue {
        partitions: usize,
    },
    Union,
    Join {
        kind: JoinKind,
        partitions: usize,
    },
    GroupByKey {
        partitions: usize,
    },
    MapValues(Func),
    FlatMapValues(Func),
    CombineByKey {
        create: Func,
        merge_value: Func,
        merge_combiners: Func,
        partitions: usize,
    },
    TransformWith(Func),
    /// `window(length, slide)`: the parent batches of the last `length`.
    Window {
        length: i64,
        buffer: WindowBuffer,
    },
    /// `reduce_by_key_and_window` (and the windowed counts built on it).
    WindowedReduce {
        reduce: Func,
        inverse: Option<Func>,
        filter: Option<Func>,
        length: i64,
        state: WindowedReduce,
    },
    /// `update_state_by_key`: `initial` seeds the state at the first batch.
    UpdateState {
        func: Func,
        initial: Option<Rdd>,
        state: StateByKey,
    },
    /// `map_with_state`.
    MapWithState {
        func: Func,
        state: MapWithState,
    },
    /// Internal: re-keys elements for the windowed counts.
    Rekey(Rekey),
    Glom,
    Repartition(usize),
    Transform(Func),
}

impl Op {
    /// The user functions of this operator, each with the kinds it accepts
    /// (the first one named in errors).
    fn functions(&self) -> Vec<(&Func, &'static [Kind])> {
        match self {
            Op::Narrow(Narrow::Map, f) | Op::MapValues(f) => vec![(f, &[Kind::Map])],
            Op::Narrow(Narrow::FlatMap, f) | Op::FlatMapValues(f) => {
                vec![(f, &[Kind::FlatMap, Kind::Map])]
            }
            Op::Narrow(Narrow::Filter, f) => vec![(f, &[Kind::Filter])],
            Op::Narrow(Narrow::MapPartitions, f) => vec![(f, &[Kind::MapPartitions])],
            Op::Transform(f) | Op::TransformWith(f) => vec![(f, &[Kind::Transform])],
            Op::WindowedReduce {
                reduce,
                inverse,
                filter,
                ..
            } => {
                let mut v: Vec<(&Func, &'static [Kind])> = vec![(reduce, &[Kind::Reduce])];
                if let Some(i) = inverse {
                    v.push((i, &[Kind::InverseReduce]));
                }
                if let Some(f) = filter {
                    v.push((f, &[Kind::Filter]));
                }
                v
            }
            Op::UpdateState { func, .. } => vec![(func, &[Kind::UpdateState])],
            Op::MapWithState { func, .. } => vec![(func, &[Kind::MapState])],
            Op::ReduceByKey { func, .. } | Op::Reduce(func) => vec![(func, &[Kind::Reduce])],
            Op::CombineByKey {
                create,
                merge_value,
                merge_combiners,
                ..
            } => vec![
                (create, &[Kind::Map]),
                (merge_value, &[Kind::Reduce]),
                (merge_combiners, &[Kind::Reduce]),
            ],
            Op::Source(_)
            | Op::Count
            | Op::CountByValue { .. }
            | Op::Union
            | Op::Join { .. }
            | Op::GroupByKey { .. }
            | Op::Glom
            | Op::Repartition(_)
            | Op::Window { .. }
            | Op::Rekey(_) => Vec::new(),
        }
    }

    /// What this operator is, for the graph fingerprint of checkpoints:
    /// kind, functions (name and kind) and parameters.
    fn describe(&self) -> String {
        let f = |f: &Func| format!("{} ({})", f.name(), f.kind());
        let opt = |o: &Option<Func>| o.as_ref().map_or("-".to_string(), f);
        match self {
            Op::Source(i) => format!("source {i}"),
            Op::Narrow(kind, func) => format!("{kind:?} {}", f(func)),
            Op::ReduceByKey { func, partitions } => {
                format!("reduce_by_key {} into {partitions}", f(func))
            }
            Op::Count => "count".to_string(),
            Op::Reduce(func) => format!("reduce {}", f(func)),
            Op::CountByValue { partitions } => format!("count_by_value into {partitions}"),
            Op::Union => "union".to_string(),
            Op::Join { kind, partitions } => format!("{} into {partitions}", kind.name()),
            Op::GroupByKey { partitions } => format!("group_by_key into {partitions}"),
            Op::MapValues(func) => format!("map_values {}", f(func)),
            Op::FlatMapValues(func) => format!("flat_map_values {}", f(func)),
            Op::CombineByKey {
                create,
                merge_value,
                merge_combiners,
                partitions,
            } => format!(
                "combine_by_key {} {} {} into {partitions}",
                f(create),
                f(merge_value),
                f(merge_combiners)
            ),
            Op::TransformWith(func) => format!("transform_with {}", f(func)),
            Op::Window { length, .. } => format!("window {length} ms"),
            Op::WindowedReduce {
                reduce,
                inverse,
                filter,
                length,
                state,
            } => format!(
                "reduce_by_key_and_window {} inverse {} filter {} over {length} ms into {}",
                f(reduce),
                opt(inverse),
                opt(filter),
                state.partitions()
            ),
            Op::UpdateState { func, state, .. } => {
                format!(
                    "update_state_by_key {} into {}",
                    f(func),
                    state.partitions()
                )
            }
            Op::MapWithState { func, state } => {
                format!("map_with_state {} into {}", f(func), state.partitions())
            }
            Op::Rekey(how) => format!("rekey {how:?}"),
            Op::Glom => "glom".to_string(),
            Op::Repartition(n) => format!("repartition into {n}"),
            Op::Transform(func) => format!("transform {}", f(func)),
        }
    }

    /// The operator's state for a checkpoint (`None`: it has none).
    fn snapshot(&self) -> Option<Vec<u8>> {
        let mut w = StateWriter::new();
        match self {
            Op::Window { buffer, .. } => buffer.snapshot(&mut w),
            Op::WindowedReduce { state, .. } => state.snapshot(&mut w),
            Op::UpdateState { state, .. } => state.snapshot(&mut w),
            Op::MapWithState { state, .. } => state.snapshot(&mut w),
            _ => return None,
        }
        Some(w.into_bytes())
    }

    /// Restores the state [`Op::snapshot`] took.
    fn restore(&mut self, bytes: &[u8]) -> Result<()> {
        let mut r = StateReader::new(bytes);
        match self {
            Op::Window { buffer, .. } => buffer.restore(&mut r)?,
            Op::WindowedReduce { state, .. } => state.restore(&mut r)?,
            Op::UpdateState { state, initial, .. } => {
                // The initial state is in the checkpoint already.
                *initial = None;
                state.restore(&mut r)?;
            }
            Op::MapWithState { state, .. } => state.restore(&mut r)?,
            _ => {
                return Err(Error::Plan(
                    "the checkpoint has state for a stream that keeps none".to_string(),
                ));
            }
        }
        if !r.is_empty() {
            return Err(Error::Internal(
                "checkpoint state has trailing bytes".to_string(),
            ));
        }
        Ok(())
    }

    /// What the operator does to partitioning, for the planner.
    /// `parent_slide` is its input's slide (ms); `sources` the partitions
    /// of each source.
    fn shape(&self, parent_slide: Option<i64>, sources: &[usize]) -> Shape {
        let hash = |partitions: usize| Shape::Exchange {
            exchange: Exchange::Hash { partitions },
            output: Some(partitions),
        };
        let gather = |output: Option<usize>| Shape::Exchange {
            exchange: Exchange::Gather,
            output,
        };
        match self {
            Op::Source(i) => Shape::Source {
                partitions: sources.get(*i).copied().unwrap_or(1),
            },
            Op::Narrow(..)
            | Op::MapValues(_)
            | Op::FlatMapValues(_)
            | Op::Glom
            | Op::Rekey(_) => Shape::Narrow,
            Op::Union => Shape::Union,
            Op::Window { length, .. } => Shape::Window {
                batches: parent_slide.map_or(1, |s| (*length / s.max(1)).max(1) as usize),
            },
            Op::ReduceByKey { partitions, .. }
            | Op::CountByValue { partitions }
            | Op::Join { partitions, .. }
            | Op::GroupByKey { partitions }
            | Op::CombineByKey { partitions, .. } => hash(*partitions),
            Op::WindowedReduce { state, .. } => hash(state.partitions()),
            Op::UpdateState { state, .. } => hash(state.partitions()),
            Op::MapWithState { state, .. } => hash(state.partitions()),
            Op::Count | Op::Reduce(_) => gather(Some(1)),
            Op::Transform(_) | Op::TransformWith(_) => gather(None),
            Op::Repartition(n) => Shape::Exchange {
                exchange: Exchange::Rebalance { partitions: *n },
                output: Some(*n),
            },
        }
    }

    /// Whether this operator takes its parent's batches at the parent's
    /// times but produces its own only at its own (slower) slide.
    fn is_window(&self) -> bool {
        matches!(self, Op::Window { .. } | Op::WindowedReduce { .. })
    }
}

/// The physical plan of the graph (see [`crate::plan`]).
fn physical_plan(g: &Graph, job: &str) -> Plan {
    let sources: Vec<usize> = g.sources.iter().map(|s| s.partitions()).collect();
    let streams = g
        .nodes
        .iter()
        .map(|node| {
            let parent_slide = node.parents.first().map(|&p| g.nodes[p].slide);
            let operator = match &node.op {
                Op::Source(i) => g.sources[*i].describe(),
                op => op.describe(),
            };
            LogicalStream {
                name: node.name.clone(),
                operator,
                parents: node.parents.clone(),
                slide_ms: node.slide,
                shape: node.op.shape(parent_slide, &sources),
            }
        })
        .collect();
    let outputs = g
        .outputs
        .iter()
        .map(|(id, out)| (*id, out.describe()))
        .collect();
    Plan::build(job, g.interval, streams, outputs)
}

/// The job graph as checkpoints record it: one line per stream (name,
/// parents, slide, operator). A checkpoint of another graph is refused.
fn describe_graph(g: &Graph) -> String {
    let mut out = String::new();
    for (id, node) in g.nodes.iter().enumerate() {
        out.push_str(&format!(
            "{id} `{}` from {:?} every {} ms: {}\n",
            node.name,
            node.parents,
            node.slide,
            node.op.describe()
        ));
    }
    for (id, _) in &g.outputs {
        out.push_str(&format!("output of {id}\n"));
    }
    out
}

/// The first line where two graph descriptions differ.
fn graph_difference(checkpoint: &str, job: &str) -> String {
    let (a, b): (Vec<&str>, Vec<&str>) = (checkpoint.lines().collect(), job.lines().collect());
    for i in 0..a.len().max(b.len()) {
        let (x, y) = (a.get(i), b.get(i));
        if x != y {
            return format!(
                "the checkpoint has {} where the job has {}",
                x.map_or("nothing".to_string(), |l| format!("`{l}`")),
                y.map_or("nothing".to_string(), |l| format!("`{l}`"))
            );
        }
    }
    "no difference".to_string()
}

/// The plugins the graph's functions come from, with their versions.
fn plugin_versions(g: &Graph) -> std::collections::BTreeMap<String, PluginVersion> {
    let mut out: std::collections::BTreeMap<String, PluginVersion> = Default::default();
    for node in &g.nodes {
        for (func, _) in node.op.functions() {
            if let Some(p) = func.plugin_ref() {
                let live = guest::live(p);
                let entry = out
                    .entry(p.name().to_string())
                    .or_insert_with(|| PluginVersion {
                        version: live.description().version.clone(),
                        functions: Vec::new(),
                    });
                let f = format!("{}:{}", func.name(), func.kind());
                if !entry.functions.contains(&f) {
                    entry.functions.push(f);
                }
            }
        }
    }
    for v in out.values_mut() {
        v.functions.sort();
    }
    out
}

/// The plugin functions of the graph: (plugin made from, function, kind).
/// A plugin function a job uses: (plugin it was made from, function, kind).
type PluginUse = (Arc<dyn Guest>, String, Kind);

fn plugin_uses(g: &Graph) -> Vec<PluginUse> {
    let mut out: Vec<(Arc<dyn Guest>, String, Kind)> = Vec::new();
    for node in &g.nodes {
        for (func, _) in node.op.functions() {
            if let Some(p) = func.plugin_ref() {
                let name = func
                    .name()
                    .strip_prefix(&format!("{}.", p.name()))
                    .unwrap_or(func.name())
                    .to_string();
                if !out.iter().any(|(q, n, _)| Arc::ptr_eq(q, p) && *n == name) {
                    out.push((p.clone(), name, func.kind()));
                }
            }
        }
    }
    out
}

/// The default interval of full checkpoints: max(10 s, 5 × the longest
/// slide), a multiple of that slide (DESIGN §5).
fn default_checkpoint_interval(g: &Graph) -> i64 {
    let slide = g
        .nodes
        .iter()
        .map(|n| n.slide)
        .max()
        .unwrap_or(g.interval)
        .max(1);
    let want = (10_000i64).max(5 * slide);
    (want + slide - 1) / slide * slide
}

/// Whether `d` is a positive whole number of milliseconds and a multiple of
/// a parent's slide of `parent_ms` (the rule for window and slide durations).
pub fn fits_slide(d: Duration, parent_ms: i64) -> bool {
    let ms = d.as_millis() as i64;
    ms > 0 && d.subsec_nanos().is_multiple_of(1_000_000) && ms % parent_ms.max(1) == 0
}

fn count_add() -> Func {
    Func::reduce("count", |a: i64, b: i64| a + b)
}

fn count_subtract() -> Func {
    Func::inverse_reduce("uncount", |a: i64, b: i64| a - b)
}

/// How [`Op::Rekey`] re-keys each element `e`.
#[derive(Debug, Clone, Copy)]
enum Rekey {
    /// `(nil, e)`: one key for everything (`reduce_by_window`).
    Constant,
    /// `(e, 1)`: counting elements by value.
    ByValueOne,
    /// `1`: counting elements.
    One,
    /// The value of a `(k, v)` element.
    Values,
}

/// A stream's part in a chain of plugin calls this batch (see [`plan_chains`]).
#[derive(Clone)]
enum Chained {
    /// Computed with the stream that takes it, in the same plugin call.
    Into,
    /// The last stage of a chain: computes the chain.
    Last(ChainPlan),
}

#[derive(Clone)]
struct ChainPlan {
    /// The stream the first stage takes.
    input: usize,
    /// Every stage's function, in order.
    funcs: Vec<Func>,
    /// The stages before the last: stream name and operator.
    before: Vec<(String, String)>,
    /// The plugin version and function indices (`Func::chain_of`).
    chain: (Arc<dyn Guest>, Vec<u32>),
}

/// Consecutive map and flat-map stages whose functions one plugin can run
/// in one call (`Func::chain_of`): the values between them then never
/// leave the plugin. A stage joins the one before it only where it is the
/// one before's only taker this batch (no other stream, output or window
/// reads it), so no stream that anything else reads goes uncomputed.
fn plan_chains(
    g: &Graph,
    needed: &[bool],
    due: &[bool],
    consumers: &[usize],
) -> Vec<Option<Chained>> {
    let n = g.nodes.len();
    let mut plans: Vec<Option<Chained>> = vec![None; n];
    // Per stream, the stages of the chain ending at it (itself alone if none).
    let mut stages: Vec<Vec<usize>> = (0..n).map(|id| vec![id]).collect();
    let narrow = |id: usize| match &g.nodes[id].op {
        Op::Narrow(Narrow::Map | Narrow::FlatMap, f) if needed[id] && due[id] => Some(f),
        _ => None,
    };
    for id in 0..n {
        if narrow(id).is_none() {
            continue;
        }
        let [p] = g.nodes[id].parents[..] else {
            continue;
        };
        if consumers[p] != 1 || narrow(p).is_none() {
            continue;
        }
        let mut candidate = stages[p].clone();
        candidate.push(id);
        let funcs: Vec<&Func> = candidate.iter().filter_map(|&s| narrow(s)).collect();
        let Some(chain) = Func::chain_of(&funcs) else {
            continue;
        };
        for &s in &candidate[..candidate.len() - 1] {
            plans[s] = Some(Chained::Into);
        }
        plans[id] = Some(Chained::Last(ChainPlan {
            input: g.nodes[candidate[0]].parents[0],
            funcs: funcs.into_iter().cloned().collect(),
            before: candidate[..candidate.len() - 1]
                .iter()
                .map(|&s| (g.nodes[s].name.clone(), g.nodes[s].op.describe()))
                .collect(),
            chain,
        }));
        stages[id] = candidate;
    }
    plans
}

fn rekey(how: Rekey, rdd: Rdd, ctx: &BatchContext<'_>) -> Result<Rdd> {
    let partitions = rdd
        .partitions
        .into_iter()
        .map(|b| {
            // A column of `n` copies of one encoded value.
            let repeat = |encoded: u8| {
                let mut c = Column::with_capacity(b.len(), b.len());
                for _ in 0..b.len() {
                    let _ = c.push_encoded(&[encoded]);
                }
                c
            };
            Ok(match how {
                Rekey::Constant => Batch {
                    keys: repeat(0xc0),
                    values: b.joined_values().into_owned(),
                },
                Rekey::ByValueOne => Batch {
                    keys: b.joined_values().into_owned(),
                    values: repeat(1),
                },
                Rekey::One => Batch::from_values(repeat(1)),
                Rekey::Values => {
                    let (_, values) = crate::ops::keyed::keyed(b, ctx, "values")?;
                    Batch::from_values(values)
                }
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Rdd { partitions })
}

/// A run's worker threads. Dropping it ends them and joins them, so that a
/// run leaves no threads behind when it returns. That matters beyond
/// tidiness: glibc gives a thread's malloc arena to a new thread only once
/// the thread has exited, so a job started right after another one (a
/// restart, a bench's next round) would otherwise find the arenas still
/// taken and put its workers on arenas that other threads use: in the word
/// count bench, 2 workers ran 1.2-1.6× as fast as one instead of about 2×.
struct Workers {
    pool: Option<rayon::ThreadPool>,
    threads: Vec<std::thread::JoinHandle<()>>,
    /// Workers that have not finished their loop yet.
    live: Arc<(Mutex<usize>, std::sync::Condvar)>,
}

impl Workers {
    /// Starts `n` worker threads, each running `on_start` first.
    fn start(n: usize, on_start: impl Fn() + Send + Sync + 'static) -> Result<Workers> {
        let live = Arc::new((Mutex::new(0usize), std::sync::Condvar::new()));
        let leaving = live.clone();
        let mut threads = Vec::with_capacity(n);
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .thread_name(|i| format!("sluice-worker-{i}"))
            .spawn_handler(|worker| {
                let mut b = std::thread::Builder::new();
                if let Some(name) = worker.name() {
                    b = b.name(name.to_string());
                }
                *live.0.lock().unwrap_or_else(|e| e.into_inner()) += 1;
                threads.push(b.spawn(|| worker.run())?);
                Ok(())
            })
            .start_handler(move |_| on_start())
            .exit_handler(move |_| {
                *leaving.0.lock().unwrap_or_else(|e| e.into_inner()) -= 1;
                leaving.1.notify_all();
            })
            .build()
            .map_err(|e| Error::Internal(format!("starting worker threads: {e}")))?;
        Ok(Workers {
            pool: Some(pool),
            threads,
            live,
        })
    }
}

impl std::ops::Deref for Workers {
    type Target = rayon::ThreadPool;
    fn deref(&self) -> &rayon::ThreadPool {
        self.pool
            .as_ref()
            .expect("the pool lives until the run ends")
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        drop(self.pool.take());
        // Idle workers leave at once. The bound is for a worker that is
        // somehow still busy: it is then left to finish on its own rather
        // than holding up the job's end.
        let deadline = Instant::now() + Duration::from_secs(10);
        let (count, changed) = &*self.live;
        let mut left = count.lock().unwrap_or_else(|e| e.into_inner());
        while *left > 0 {
            let wait = deadline.saturating_duration_since(Instant::now());
            if wait.is_zero() {
                tracing::warn!(
                    threads = *left,
                    "worker threads still busy 10 s after the run ended; not waiting for them"
                );
                return;
            }
            left = changed
                .wait_timeout(left, wait)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        drop(left);
        // Past their loop, the threads only have their thread-locals to
        // free; joining makes sure their arenas are released.
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

struct Node {
    name: String,
    op: Op,
    parents: Vec<usize>,
    /// Produces a batch at `T` iff `T - zero time` is a multiple of this (ms).
    slide: i64,
}

#[derive(Default)]
struct Graph {
    nodes: Vec<Node>,
    sources: Vec<Box<dyn Source>>,
    outputs: Vec<(usize, Box<dyn Output>)>,
    /// Set by `run`, which takes the streams out; the names stay for `DStream::name`.
    started: Option<Vec<(String, i64)>>,
    /// The batch interval (ms): the slide of every input stream.
    interval: i64,
    /// Misuses found while building (stream id, message), reported by `run`.
    errors: Vec<(usize, String)>,
    /// The physical plan, made when the run starts.
    plan: Option<Plan>,
    /// What `remember` keeps for `slice`; shared with the started graph.
    history: Arc<Mutex<History>>,
}

/// The batches each stream produced within the remember duration.
#[derive(Default)]
struct History {
    /// How long to keep batches (ms); 0: nothing is kept.
    remember: i64,
    /// One interval before the first batch time, once running.
    zero: Option<i64>,
    /// Per stream id, its batches, oldest first.
    batches:
        std::collections::HashMap<usize, std::collections::VecDeque<(BatchTime, u64, Arc<Rdd>)>>,
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
    /// Each stream computed and each output run, in order, with its time.
    pub operators: Vec<OperatorInfo>,
    /// The receiving rate in force after this batch (records/s), when a
    /// receiver is limited (backpressure or its maximum rate).
    pub rate_limit: Option<f64>,
}

/// The time and output of one operator (or output) in one batch.
#[derive(Debug, Clone, PartialEq)]
pub struct OperatorInfo {
    /// The stream's name (`output N` for outputs).
    pub stream: String,
    /// What the operator is (`FlatMap wordcount.split (flat-map)`).
    pub op: String,
    /// Time spent computing it, plugin calls included.
    pub time: Duration,
    /// Elements it produced.
    pub records_out: u64,
    /// Set when the stream was computed in one plugin call with others
    /// (consecutive map and flat-map stages of one plugin): the streams of
    /// that chain, in order (`words → pairs`). The chain's time is counted
    /// on its last stream; the others show none.
    pub chain: Option<String>,
}

impl BatchInfo {
    /// Scheduling delay plus processing time.
    pub fn total_delay(&self) -> Duration {
        self.scheduling_delay + self.processing_time
    }
}

/// Called after each batch completes (Spark's `StreamingListener.onBatchCompleted`).
pub type Listener = Box<dyn FnMut(&BatchInfo) + Send>;

/// Spark's `StreamingListener`: told when a batch is due, when it starts,
/// when it completes, and of receiver errors (a refused connection, a
/// dropped one, an unreadable file). Every method has a default that does
/// nothing; all run on the job's thread, between batches.
pub trait StreamingListener: Send {
    /// The batch at `time` is due (its interval has passed).
    fn on_batch_submitted(&mut self, _time: BatchTime) {}
    /// Batch `index` at `time` starts processing.
    fn on_batch_started(&mut self, _time: BatchTime, _index: u64) {}
    /// A batch completed.
    fn on_batch_completed(&mut self, _info: &BatchInfo) {}
    /// A receiver of source stream `source` reported an error.
    fn on_receiver_error(&mut self, _source: &str, _message: &str) {}
}

/// A hot swap waiting for (or in) its first batch.
struct StagedSwap {
    root: Arc<dyn Guest>,
    new: Arc<dyn Guest>,
    handle: Arc<SwapHandle>,
}

/// What became of a hot swap ([`StreamingContext::swap_plugin`]).
#[derive(Debug, Default)]
pub struct SwapHandle {
    outcome: Mutex<Option<std::result::Result<u64, String>>>,
    settled: std::sync::Condvar,
}

impl SwapHandle {
    fn settle(&self, outcome: std::result::Result<u64, String>) {
        *self.outcome.lock().unwrap_or_else(|e| e.into_inner()) = Some(outcome);
        self.settled.notify_all();
    }

    /// `None` while the new version has not finished its first batch; then
    /// `Ok(index of that batch)`, or `Err(why)` when it failed and was
    /// rolled back (that batch ran again on the previous version).
    pub fn outcome(&self) -> Option<std::result::Result<u64, String>> {
        self.outcome
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Waits up to `timeout` for the outcome.
    pub fn wait(&self, timeout: Duration) -> Option<std::result::Result<u64, String>> {
        let guard = self.outcome.lock().unwrap_or_else(|e| e.into_inner());
        let (guard, _) = self
            .settled
            .wait_timeout_while(guard, timeout, |o| o.is_none())
            .unwrap_or_else(|e| e.into_inner());
        guard.clone()
    }
}

/// A plain [`Listener`] as a [`StreamingListener`] of completed batches.
struct Completed(Listener);

impl StreamingListener for Completed {
    fn on_batch_completed(&mut self, info: &BatchInfo) {
        (self.0)(info)
    }
}

/// Stops a running context from another thread (or a signal handler).
#[derive(Debug, Clone, Default)]
pub struct StopHandle(Arc<AtomicBool>);

impl StopHandle {
    /// Asks the run loop to stop: after the batch in progress it runs one
    /// last batch at once with what was received (checkpointed like any
    /// other), then returns. (Replayed, manual-clock runs just stop.)
    pub fn stop(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    /// Whether a stop was requested.
    pub fn is_stopped(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }

    /// The flag behind the handle, for signal handlers (setting it stops the run).
    pub fn flag(&self) -> Arc<AtomicBool> {
        self.0.clone()
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
/// use sluice_core::{Func, ManualClock, StreamingContext};
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
    /// What the layers above attached ([`StreamingContext::with_extension`]).
    extensions: Vec<Arc<dyn std::any::Any + Send + Sync>>,
    stop: StopHandle,
    listeners: Mutex<Vec<Box<dyn StreamingListener>>>,
    started: AtomicBool,
    checkpoint: Option<std::path::PathBuf>,
    checkpoint_interval: Option<Duration>,
    backpressure: bool,
    initial_rate: Option<f64>,
    /// Hot swaps waiting for the next batch boundary.
    swaps: Mutex<Vec<StagedSwap>>,
    /// The plugin functions the job uses: (plugin it was made from, function, kind).
    uses: Mutex<Vec<PluginUse>>,
    fresh: bool,
    cpu_share: Option<Arc<CpuShare>>,
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
            checkpoint_interval: None,
            backpressure: false,
            initial_rate: None,
            swaps: Mutex::default(),
            uses: Mutex::default(),
            fresh: false,
            cpu_share: None,
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

    fn add_source(&self, name: String, source: Box<dyn Source>) -> DStream {
        let mut g = lock(&self.graph);
        g.check_open();
        let index = g.sources.len();
        g.sources.push(source);
        let id = g.nodes.len();
        let slide = g.interval;
        g.nodes.push(Node {
            name,
            op: Op::Source(index),
            parents: Vec::new(),
            slide,
        });
        DStream {
            graph: self.graph.clone(),
            id,
        }
    }

    /// Lines from a TCP server at `host:port` (Spark's `socketTextStream`),
    /// sliced into one partition per worker (more for a large batch: see
    /// [`Rdd::from_received`](crate::rdd::Rdd::from_received)).
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

    /// [`StreamingContext::text_file_stream_with`] remembering the names of
    /// the files read in `ledger`, so that a restart reads no file twice and
    /// reads the files that arrived while the job was down (see
    /// [`crate::receiver`]'s file policy).
    pub fn text_file_stream_remembered(
        &self,
        dir: impl AsRef<Path>,
        include_existing: bool,
        partitions: usize,
        ledger: impl AsRef<Path>,
    ) -> DStream {
        let dir = dir.as_ref().to_path_buf();
        let source = crate::receiver::file::FileSource::new(
            dir.clone(),
            include_existing,
            partitions.max(1),
        )
        .with_ledger(ledger.as_ref().to_path_buf());
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

    /// Keeps every stream's batches for at least `duration`, so that
    /// [`DStream::slice`] can return them (Spark's `remember`). Without it no
    /// batch is kept.
    pub fn remember(&self, duration: Duration) {
        let g = lock(&self.graph);
        g.check_open();
        g.history.lock().unwrap_or_else(|e| e.into_inner()).remember = duration.as_millis() as i64;
    }

    /// Hot swap (DESIGN §4): replaces `plugin` (as loaded for this job) by
    /// `new` — loaded and compiled by the caller, off the batch path — at
    /// the next batch boundary, so every batch runs wholly on one version.
    /// Host-owned state (windows, `update_state_by_key`) carries over. The
    /// new version must export every function the job uses from `plugin`
    /// with the same kind, or the swap is refused here. If it fails its
    /// first batch (trap, deadline, memory, refusal), it is rolled back and
    /// that batch runs again on the previous version; the handle tells.
    /// Callable before or while the job runs (from another thread).
    pub fn swap_plugin<P: Guest + 'static>(
        &self,
        plugin: &Arc<P>,
        new: Arc<P>,
    ) -> Result<Arc<SwapHandle>> {
        let plugin: Arc<dyn Guest> = plugin.clone();
        let new: Arc<dyn Guest> = new;
        let plugin = &plugin;
        let uses = {
            let recorded = self.uses.lock().unwrap_or_else(|e| e.into_inner()).clone();
            if recorded.is_empty() {
                plugin_uses(&lock(&self.graph))
            } else {
                recorded
            }
        };
        let mine: Vec<&(Arc<dyn Guest>, String, Kind)> = uses
            .iter()
            .filter(|(p, _, _)| Arc::ptr_eq(p, plugin))
            .collect();
        if mine.is_empty() {
            return Err(Error::Plan(format!(
                "plugin `{}` is not used by this job (swap the plugin the job's functions were made from)",
                plugin.name()
            )));
        }
        for (_, function, kind) in mine {
            match new.description().function(function) {
                Some((_, f)) if f.kind == *kind => {}
                Some((_, f)) => {
                    return Err(Error::Plan(format!(
                        "cannot swap `{}` to {} {}: `{function}` is a {} function there, the job uses it as {kind}",
                        plugin.name(),
                        new.description().name,
                        new.description().version,
                        f.kind
                    )));
                }
                None => {
                    return Err(Error::Plan(format!(
                        "cannot swap `{}` to {} {}: it lacks `{function}`, which the job uses",
                        plugin.name(),
                        new.description().name,
                        new.description().version
                    )));
                }
            }
        }
        let handle = Arc::new(SwapHandle::default());
        self.swaps
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(StagedSwap {
                root: plugin.clone(),
                new,
                handle: handle.clone(),
            });
        Ok(handle)
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

    fn tell(&self, event: impl Fn(&mut dyn StreamingListener)) {
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

    fn validate(&self, g: &Graph) -> Result<()> {
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
        let pool = Workers::start(self.workers, move || {
            if let Some(job) = &joining {
                job.threads().join_current();
                job.enter();
            }
        })?;
        // Take the streams out: the run does not hold the lock, and anything
        // added from now on is refused instead of silently never running.
        let mut g = {
            let mut shared = lock(&self.graph);
            self.validate(&shared)?;
            let names = shared
                .nodes
                .iter()
                .map(|n| (n.name.clone(), n.slide))
                .collect();
            let plan = physical_plan(&shared, &self.name);
            let taken = std::mem::take(&mut *shared);
            shared.started = Some(names);
            shared.plan = Some(plan);
            shared.history = taken.history.clone();
            taken
        };
        let graph = describe_graph(&g);
        let plugins = plugin_versions(&g);
        *self.uses.lock().unwrap_or_else(|e| e.into_inner()) = plugin_uses(&g);
        let store = self
            .checkpoint
            .as_ref()
            .map(CheckpointStore::open)
            .transpose()?;
        let mut first = BatchTime::next_after(self.clock.now_ms(), self.interval);
        let mut start = 0u64;
        let every = self
            .checkpoint_interval
            .map(|d| d.as_millis() as i64)
            .unwrap_or_else(|| default_checkpoint_interval(&g));
        // Batches the batch log recorded after the checkpoint resumed from,
        // by index: re-run with the same input before anything new.
        let mut replay: std::collections::BTreeMap<u64, BatchRecord> = Default::default();
        let mut batch_log: Option<BatchLog> = None;
        let mut last_data: Option<i64> = None;
        if let Some(store) = &store {
            for (i, s) in g.sources.iter_mut().enumerate() {
                s.attach_log(&store.wal_dir().join(format!("source-{i}")));
            }
            if self.fresh {
                store.clear()?;
            } else if let Some((cp, skipped)) = store.latest()? {
                for s in &skipped {
                    tracing::warn!(checkpoint = %s.path.display(), "skipping an unusable checkpoint: {}", s.reason);
                }
                self.resume(&mut g, &cp, &graph, &plugins, store)?;
                first = BatchTime(cp.first_batch_time);
                start = cp.batch_index + 1;
                let (records, problems) = store.batches_after(cp.batch_time)?;
                for p in problems {
                    tracing::warn!("batch log: {p}; later batches run again from their sources");
                }
                let records: Vec<BatchRecord> = records
                    .into_iter()
                    .zip(start..)
                    .take_while(|(r, i)| r.batch_index == *i && r.sources.len() == g.sources.len())
                    .map(|(r, _)| r)
                    .collect();
                batch_log = Some(store.restart_batch_log(cp.batch_time, &records)?);
                if !records.is_empty() {
                    tracing::info!(
                        batches = records.len(),
                        "re-running the batches completed after the checkpoint, with the same input"
                    );
                }
                replay = records.into_iter().map(|r| (r.batch_index, r)).collect();
                last_data = Some(cp.batch_time);
                let now = BatchTime(self.clock.now_ms());
                for s in g.sources.iter_mut() {
                    s.catch_up(now);
                }
            }
        }
        let limit = batches.map(|b| start + b).or_else(|| {
            let finite: Option<Vec<u64>> = g.sources.iter().map(|s| s.finite_batches()).collect();
            finite.and_then(|f| f.into_iter().max())
        });
        for s in g.sources.iter_mut() {
            s.start()?;
            if self.backpressure {
                s.set_rate(self.initial_rate);
            }
        }
        let mut estimator = crate::receiver::rate::PidRateEstimator::new(self.interval);
        // Source streams' names, by source index (for listeners).
        let mut source_names = vec![String::new(); g.sources.len()];
        for n in &g.nodes {
            if let Op::Source(i) = n.op
                && let Some(slot) = source_names.get_mut(i)
            {
                slot.clone_from(&n.name);
            }
        }
        g.history.lock().unwrap_or_else(|e| e.into_inner()).zero =
            Some(first.millis() - g.interval);
        let mut summary = RunSummary {
            batches: 0,
            input_records: 0,
        };
        let result = (|| -> Result<()> {
            let mut stopping = false;
            // A batch's full checkpoint, its time and the batch records to
            // start the next batch log with.
            let mut checkpoint_due: Option<(BatchTime, Checkpoint, Vec<BatchRecord>)> = None;
            for index in start.. {
                // The previous batch's record is made durable, once that
                // batch is reported and before this one commits anything.
                if let Some(log) = batch_log.as_mut() {
                    let previous = first.plus(self.interval * index.saturating_sub(1) as u32);
                    self.retrying("batch log", previous, || log.settle())?;
                }
                // And the previous batch's full checkpoint, if it was due,
                // is written now: it syncs several files, which is no part
                // of that batch's processing (a crash before this point
                // re-runs the batch, as one before the batch log's settle).
                if let (Some(store), Some((time, cp, pending))) = (&store, checkpoint_due.take()) {
                    self.retrying("checkpoint", time, || store.write(&cp))?;
                    batch_log = Some(self.retrying("batch log", time, || {
                        store.restart_batch_log(time.millis(), &pending)
                    })?);
                    if let Some(oldest) = store.oldest()? {
                        for s in g.sources.iter_mut() {
                            s.truncate_log(BatchTime(oldest));
                        }
                    }
                }
                if limit.is_some_and(|l| index >= l) || stopping {
                    break;
                }
                let time = first.plus(self.interval * index as u32);
                if self.clock.is_manual() {
                    if self.stop.is_stopped() {
                        break;
                    }
                    self.clock.advance_to(time.millis());
                } else if self.stop.is_stopped()
                    || !self.clock.wait_until(time.millis(), &self.stop.0)
                {
                    // Stop: one last batch, now, with what was received
                    // (and its checkpoint), then end.
                    tracing::info!(
                        batch = time.millis(),
                        "stopping: a last batch with what was received"
                    );
                    stopping = true;
                }
                // The group's turn: out of debt and a free slot; what the
                // batch uses is charged when it ends, failed or not.
                let _turn = self.cpu_share.as_ref().map(|share| {
                    let turn = share.turn(&self.stop.0, &threads);
                    if !turn.waited().is_zero() {
                        tracing::debug!(job = %self.name, batch = time.millis(), waited_ms = turn.waited().as_millis() as u64, "waited for the CPU share");
                    }
                    turn
                });
                self.tell(|l| l.on_batch_submitted(time));
                for (i, s) in g.sources.iter_mut().enumerate() {
                    for e in s.take_errors() {
                        let name = &source_names[i];
                        self.tell(|l| l.on_receiver_error(name, &e));
                    }
                }
                self.tell(|l| l.on_batch_started(time, index));
                let started = Instant::now();
                let scheduling_delay =
                    Duration::from_millis((self.clock.now_ms() - time.millis()).max(0) as u64);
                let record = replay.remove(&index);
                let swaps = self.begin_swaps();
                let inputs = Self::fetch_inputs(&mut g, time, record.as_ref())?;
                let (input_records, operators) =
                    self.run_batch_swapping(&mut g, &pool, (time, index, first), inputs, swaps)?;
                if store.is_some() {
                    let last = stopping || limit.is_some_and(|l| index + 1 >= l);
                    let due = last_data.is_none_or(|d| time.millis() - d >= every);
                    if last || (record.is_none() && due) {
                        // A full checkpoint, then a new batch log after it
                        // (holding any batches still to be re-run).
                        let cp = Checkpoint {
                            graph: graph.clone(),
                            batch_time: time.millis(),
                            batch_index: index,
                            first_batch_time: first.millis(),
                            plugins: plugin_versions(&g),
                            sources: g
                                .sources
                                .iter()
                                .map(|s| s.position().unwrap_or_default())
                                .collect(),
                            state: g
                                .nodes
                                .iter()
                                .enumerate()
                                .filter_map(|(id, n)| n.op.snapshot().map(|b| (id as u64, b)))
                                .collect(),
                        };
                        // Written before the next batch (above).
                        let pending: Vec<BatchRecord> = replay.values().cloned().collect();
                        checkpoint_due = Some((time, cp, pending));
                        last_data = Some(time.millis());
                    } else if record.is_none()
                        && let Some(log) = batch_log.as_mut()
                    {
                        let r = BatchRecord {
                            batch_time: time.millis(),
                            batch_index: index,
                            sources: g.sources.iter().map(|s| s.batch_record()).collect(),
                        };
                        self.retrying("batch log", time, || log.append_unsynced(&r))?;
                    }
                }
                summary.batches += 1;
                summary.input_records += input_records;
                let mut info = BatchInfo {
                    time,
                    index,
                    input_records,
                    scheduling_delay: if self.clock.is_manual() {
                        Duration::ZERO
                    } else {
                        scheduling_delay
                    },
                    processing_time: started.elapsed(),
                    operators,
                    rate_limit: None,
                };
                if self.backpressure
                    && record.is_none()
                    && let Some(rate) = estimator.compute(
                        time.millis(),
                        input_records,
                        info.processing_time,
                        info.scheduling_delay,
                    )
                {
                    for s in g.sources.iter_mut() {
                        s.set_rate(Some(rate));
                    }
                }
                info.rate_limit = g
                    .sources
                    .iter()
                    .filter_map(|s| s.rate_limit())
                    .reduce(f64::min);
                self.tell(|l| l.on_batch_completed(&info));
            }
            Ok(())
        })();
        for s in g.sources.iter_mut() {
            s.stop();
        }
        result.map(|()| summary)
    }

    /// Writes a batch's checkpoint or batch record, retrying I/O errors
    /// before the next batch runs (the previous checkpoint stays valid);
    /// the job only gives up when asked to stop.
    fn retrying<T>(
        &self,
        what: &str,
        batch: BatchTime,
        write: impl FnMut() -> Result<T>,
    ) -> Result<T> {
        crate::fsutil::retry_write(what, batch.millis(), || self.stop.is_stopped(), write)
    }

    /// Restores `g` from checkpoint `cp`, refusing one of another graph.
    fn resume(
        &self,
        g: &mut Graph,
        cp: &Checkpoint,
        graph: &str,
        plugins: &std::collections::BTreeMap<String, PluginVersion>,
        store: &CheckpointStore,
    ) -> Result<()> {
        let at = store.dir().join(format!("checkpoint-{}", cp.batch_time));
        if cp.graph != graph {
            return Err(Error::Plan(format!(
                "checkpoint {} is of another job graph: {} (start over with --fresh, or use another directory)",
                at.display(),
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
                at.display(),
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
                    at.display()
                ))
            })?;
            node.op.restore(bytes).map_err(|e| {
                Error::Plan(format!(
                    "checkpoint {}: the state of stream `{}` cannot be restored: {e}",
                    at.display(),
                    node.name
                ))
            })?;
        }
        let due = (self.clock.now_ms() - cp.batch_time) / g.interval.max(1);
        tracing::info!(
            checkpoint = %at.display(),
            batch = cp.batch_time,
            down_time_batches = due.max(0),
            "resuming from a checkpoint"
        );
        Ok(())
    }

    /// Every source's batch at `time` (needed or not, so queues stay
    /// aligned), or, for a batch re-run from the batch log, its record's.
    fn fetch_inputs(
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

    /// Puts the hot swaps staged since the last batch in force; returns
    /// them with the version each replaced, for a rollback.
    fn begin_swaps(&self) -> Vec<(StagedSwap, Arc<dyn Guest>)> {
        let staged = std::mem::take(&mut *self.swaps.lock().unwrap_or_else(|e| e.into_inner()));
        staged
            .into_iter()
            .map(|sw| {
                let previous = guest::live(&sw.root);
                tracing::info!(
                    plugin = %sw.root.name(),
                    from = %previous.description().version,
                    to = %sw.new.description().version,
                    "hot swap: the new version takes over at this batch"
                );
                sw.root.live_version().set(Some(sw.new.clone()));
                (sw, previous)
            })
            .collect()
    }

    /// Runs a batch; when plugins were just swapped, a plugin failure of a
    /// new version rolls it back (state restored to before the batch) and
    /// the batch runs again, wholly on the previous version.
    fn run_batch_swapping(
        &self,
        g: &mut Graph,
        pool: &rayon::ThreadPool,
        (time, index, first): (BatchTime, u64, BatchTime),
        inputs: Vec<Rdd>,
        swaps: Vec<(StagedSwap, Arc<dyn Guest>)>,
    ) -> Result<(u64, Vec<OperatorInfo>)> {
        if swaps.is_empty() {
            return self.run_batch(g, pool, time, index, first, inputs);
        }
        let kept = inputs.clone();
        let before: Vec<(usize, Vec<u8>)> = g
            .nodes
            .iter()
            .enumerate()
            .filter_map(|(id, n)| n.op.snapshot().map(|b| (id, b)))
            .collect();
        // A seed of update_state_by_key not yet applied is applied by this
        // batch: a rollback puts it back.
        let seeds: Vec<(usize, Rdd)> = g
            .nodes
            .iter()
            .enumerate()
            .filter_map(|(id, n)| match &n.op {
                Op::UpdateState {
                    initial: Some(seed),
                    ..
                } => Some((id, seed.clone())),
                _ => None,
            })
            .collect();
        let result = self.run_batch(g, pool, time, index, first, inputs);
        let failed = match &result {
            Err(Error::Plugin { plugin, .. }) => swaps
                .iter()
                .any(|(sw, _)| sw.root.name() == plugin.as_str()),
            _ => false,
        };
        if !failed {
            for (sw, _) in &swaps {
                sw.handle.settle(Ok(index));
            }
            return result;
        }
        let why = result.err().map(|e| e.to_string()).unwrap_or_default();
        for (sw, previous) in &swaps {
            let back = (!Arc::ptr_eq(previous, &sw.root)).then(|| previous.clone());
            sw.root.live_version().set(back);
            tracing::error!(
                plugin = %sw.root.name(),
                version = %sw.new.description().version,
                batch = time.millis(),
                "hot swap rolled back: the new version failed its first batch: {why}"
            );
            sw.handle.settle(Err(why.clone()));
        }
        for (id, bytes) in before {
            g.nodes[id].op.restore(&bytes)?;
        }
        for (id, seed) in seeds {
            if let Op::UpdateState { initial, .. } = &mut g.nodes[id].op {
                *initial = Some(seed);
            }
        }
        self.run_batch(g, pool, time, index, first, kept)
    }

    /// Computes one batch: every stream an output needs that is due at
    /// `time` (its slide divides the time since the zero time, one interval
    /// before `first`), then the outputs of the due streams in registration
    /// order. Windows take their parent's batches whenever those are due.
    /// Returns the number of input elements.
    fn run_batch(
        &self,
        g: &mut Graph,
        pool: &rayon::ThreadPool,
        time: BatchTime,
        index: u64,
        first: BatchTime,
        inputs: Vec<Rdd>,
    ) -> Result<(u64, Vec<OperatorInfo>)> {
        let mut operators = Vec::new();
        let n = g.nodes.len();
        let zero = first.millis() - g.interval;
        let due: Vec<bool> = g
            .nodes
            .iter()
            .map(|node| (time.millis() - zero) % node.slide == 0)
            .collect();
        // Streams needed by some output, and how many take each one now.
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
            if due[*id] {
                consumers[*id] += 1;
            }
        }
        for (id, node) in g.nodes.iter().enumerate() {
            if !needed[id] {
                continue;
            }
            for &p in &node.parents {
                if due[p] && (due[id] || node.op.is_window()) {
                    consumers[p] += 1;
                }
            }
        }
        let input_records = inputs.iter().map(|r| r.count() as u64).sum();
        let mut source_rdds: Vec<Option<Rdd>> = inputs.into_iter().map(Some).collect();
        let remember = g.history.lock().unwrap_or_else(|e| e.into_inner()).remember;
        let mut chains: Vec<Option<Chained>> = if remember == 0 {
            plan_chains(g, &needed, &due, &consumers)
        } else {
            vec![None; n]
        };
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
            let Node {
                name,
                op,
                parents,
                slide,
            } = &mut g.nodes[id];
            if !needed[id] || !(due[id] || (op.is_window() && due[parents[0]])) {
                continue;
            }
            let chain = match chains[id].take() {
                Some(Chained::Into) => continue,
                Some(Chained::Last(plan)) => Some(plan),
                None => None,
            };
            let ctx = BatchContext {
                time,
                pool,
                stream: name,
            };
            let mut input = |i: usize| -> Result<Rdd> {
                Ok(Arc::unwrap_or_clone(take(&mut values, parents[i])?))
            };
            let started = Instant::now();
            let label = op.describe();
            let mut chained = None;
            let rdd = match op {
                _ if let Some(plan) = &chain => {
                    let funcs: Vec<&Func> = plan.funcs.iter().collect();
                    let input = Arc::unwrap_or_clone(take(&mut values, plan.input)?);
                    let (rdd, counts) = narrow::apply_chain(&funcs, &plan.chain, input, &ctx)?;
                    let names = (plan.before.iter().map(|(s, _)| s.as_str()))
                        .chain([name.as_str()])
                        .collect::<Vec<_>>()
                        .join(" → ");
                    // The stages before the last are computed with it: their
                    // time is counted in the last one's.
                    for ((stream, op), &records_out) in plan.before.iter().zip(&counts) {
                        operators.push(OperatorInfo {
                            stream: stream.clone(),
                            op: op.clone(),
                            time: Duration::ZERO,
                            records_out,
                            chain: Some(names.clone()),
                        });
                    }
                    chained = Some(names);
                    rdd
                }
                Op::Source(s) => source_rdds[*s].take().unwrap_or_default(),
                Op::Narrow(kind, func) => narrow::apply(*kind, func, input(0)?, &ctx)?,
                Op::ReduceByKey { func, partitions } => {
                    reduce_by_key(func, *partitions, input(0)?, &ctx)?
                }
                Op::Count => aggregate::count(&input(0)?),
                Op::Reduce(func) => aggregate::reduce(func, input(0)?, &ctx)?,
                Op::CountByValue { partitions } => count_by_value(*partitions, input(0)?, &ctx)?,
                Op::GroupByKey { partitions } => group_by_key(*partitions, input(0)?, &ctx)?,
                Op::MapValues(func) => map_values(func, input(0)?, &ctx)?,
                Op::FlatMapValues(func) => keyed::flat_map_values(func, input(0)?, &ctx)?,
                Op::CombineByKey {
                    create,
                    merge_value,
                    merge_combiners,
                    partitions,
                } => {
                    let combiner = keyed::Combiner {
                        create: Some(create),
                        merge_value,
                        merge_combiners,
                    };
                    keyed::combine_by_key(
                        &combiner,
                        *partitions,
                        input(0)?,
                        &ctx,
                        "combine_by_key",
                    )?
                }
                Op::TransformWith(func) => {
                    let left = input(0)?;
                    narrow::transform_with(func, left, input(1)?, &ctx)?
                }
                Op::Transform(func) => narrow::transform(func, input(0)?, &ctx)?,
                Op::Glom => narrow::glom(input(0)?),
                Op::Repartition(n) => narrow::repartition(*n, input(0)?),
                Op::Join { kind, partitions } => {
                    let left = input(0)?;
                    join(*kind, *partitions, left, input(1)?, &ctx)?
                }
                Op::Union => {
                    let mut partitions = Vec::new();
                    for i in 0..parents.len() {
                        partitions.extend(input(i)?.partitions);
                    }
                    Rdd { partitions }
                }
                Op::Window { length, buffer } => {
                    if due[parents[0]] {
                        buffer.push(time, take(&mut values, parents[0])?);
                    }
                    if !due[id] {
                        continue;
                    }
                    buffer.window(time, *length)
                }
                Op::WindowedReduce {
                    reduce,
                    inverse,
                    filter,
                    length,
                    state,
                } => {
                    if due[parents[0]] {
                        state.push(input(0)?, reduce, &ctx)?;
                    }
                    if !due[id] {
                        continue;
                    }
                    let funcs = WindowFuncs {
                        reduce,
                        inverse: inverse.as_ref(),
                        filter: filter.as_ref(),
                    };
                    state.window(*length, *slide, &funcs, &ctx)?
                }
                Op::UpdateState {
                    func,
                    initial,
                    state,
                } => {
                    if let Some(seed) = initial.take() {
                        state.seed(seed, &ctx)?;
                    }
                    state.update(func, input(0)?, &ctx)?
                }
                Op::MapWithState { func, state } => state.update(func, input(0)?, &ctx)?,
                Op::Rekey(how) => rekey(*how, input(0)?, &ctx)?,
            };
            operators.push(OperatorInfo {
                stream: name.clone(),
                op: label,
                time: started.elapsed(),
                records_out: rdd.count() as u64,
                chain: chained,
            });
            let rdd = Arc::new(rdd);
            if remember > 0 {
                let mut h = g.history.lock().unwrap_or_else(|e| e.into_inner());
                let kept = h.batches.entry(id).or_default();
                kept.push_back((time, index, rdd.clone()));
                while kept
                    .front()
                    .is_some_and(|(t, _, _)| t.millis() <= time.millis() - remember)
                {
                    kept.pop_front();
                }
            }
            values[id] = Some(rdd);
        }
        for i in 0..g.outputs.len() {
            let id = g.outputs[i].0;
            if !due[id] {
                continue;
            }
            let rdd = take(&mut values, id)?;
            let started = Instant::now();
            g.outputs[i].1.emit(time, index, &rdd)?;
            operators.push(OperatorInfo {
                stream: format!("output {i}"),
                op: format!("output of `{}`", g.nodes[id].name),
                time: started.elapsed(),
                records_out: 0,
                chain: None,
            });
        }
        Ok((input_records, operators))
    }
}

impl DStream {
    fn derive(&self, name: &str, op: Op) -> DStream {
        self.derive_from(name, op, vec![self.id])
    }

    fn derive_from(&self, name: &str, op: Op, parents: Vec<usize>) -> DStream {
        self.derive_with_slide(name, op, parents, None)
    }

    /// Adds a stream; its slide is `slide` (windows) or its parents', which
    /// must all be equal.
    fn derive_with_slide(
        &self,
        name: &str,
        op: Op,
        parents: Vec<usize>,
        slide: Option<i64>,
    ) -> DStream {
        let mut g = lock(&self.graph);
        g.check_open();
        let id = g.nodes.len();
        let name = format!("{name}#{id}");
        let parent_slide = g.nodes[parents[0]].slide;
        if parents.iter().any(|&p| g.nodes[p].slide != parent_slide) {
            let slides: Vec<String> = parents
                .iter()
                .map(|&p| format!("`{}` every {} ms", g.nodes[p].name, g.nodes[p].slide))
                .collect();
            g.errors.push((
                id,
                format!(
                    "some of the streams have different slide durations: {}",
                    slides.join(", ")
                ),
            ));
        }
        g.nodes.push(Node {
            name,
            op,
            parents,
            slide: slide.unwrap_or(parent_slide),
        });
        DStream {
            graph: self.graph.clone(),
            id,
        }
    }

    /// How often this stream produces a batch: the batch interval for input
    /// streams, the slide for windows, else its parent's.
    pub fn slide(&self) -> Duration {
        let g = lock(&self.graph);
        let slide = match &g.started {
            Some(names) => names[self.id].1,
            None => g.nodes[self.id].slide,
        };
        Duration::from_millis(slide as u64)
    }

    /// Checks a window's durations against this (the parent) stream's slide;
    /// an error names both, as Spark's does.
    fn window_durations(&self, length: Duration, slide: Duration) -> Option<String> {
        let parent = {
            let g = lock(&self.graph);
            g.check_open();
            g.nodes[self.id].slide
        };
        if !fits_slide(length, parent) {
            Some(format!(
                "the window duration ({} ms) must be a multiple of the slide duration of the parent stream ({parent} ms)",
                length.as_secs_f64() * 1000.0
            ))
        } else if !fits_slide(slide, parent) {
            Some(format!(
                "the slide duration ({} ms) must be a multiple of the slide duration of the parent stream ({parent} ms)",
                slide.as_secs_f64() * 1000.0
            ))
        } else {
            None
        }
    }

    fn derive_window(&self, name: &str, op: Op, length: Duration, slide: Duration) -> DStream {
        let error = self.window_durations(length, slide);
        let s = (slide.as_millis() as i64).max(1);
        let stream = self.derive_with_slide(name, op, vec![self.id], Some(s));
        if let Some(e) = error {
            lock(&self.graph).errors.push((stream.id, e));
        }
        stream
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
            Some(names) => names[self.id].0.clone(),
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

    /// `flat_map_values(f)`: `(k, w)` for every `w` in `f(v)`, for every
    /// `(k, v)`; keys and partitions kept. `f` is a flat-map (or map) function
    /// of the values alone.
    pub fn flat_map_values(&self, f: Func) -> DStream {
        self.derive("flat_map_values", Op::FlatMapValues(f))
    }

    /// `combine_by_key(create, merge_value, merge_combiners, partitions)`: per
    /// key one combiner, built in each partition from the key's first value
    /// by `create` (a map), with the next values folded in by `merge_value`
    /// (a fold `(C, V) -> C`, e.g. `#[sluice::fold]`), then merged across
    /// partitions by `merge_combiners` (a reduce `(C, C) -> C`), in exactly
    /// `partitions` partitions. Elements must be `(key, value)` pairs.
    pub fn combine_by_key(
        &self,
        create: Func,
        merge_value: Func,
        merge_combiners: Func,
        partitions: usize,
    ) -> DStream {
        self.derive(
            "combine_by_key",
            Op::CombineByKey {
                create,
                merge_value,
                merge_combiners,
                partitions: partitions.max(1),
            },
        )
    }

    /// `transform_with(other, f)`: `f` sees this stream's and `other`'s whole
    /// batches in one call and returns the new batch (one partition).
    ///
    /// # Panics
    /// When `other` comes from another [`StreamingContext`].
    pub fn transform_with(&self, other: &DStream, f: Func) -> DStream {
        assert!(
            Arc::ptr_eq(&self.graph, &other.graph),
            "transform_with of streams from different StreamingContexts"
        );
        self.derive_from(
            "transform_with",
            Op::TransformWith(f),
            vec![self.id, other.id],
        )
    }

    /// `window(length, slide)`: every `slide`, the elements of the last
    /// `length` (the parent batches with times in `(T - length, T]`; the
    /// first windows are partial). Both must be multiples of this stream's
    /// slide, else `run` fails naming the stream and the durations.
    pub fn window(&self, length: Duration, slide: Duration) -> DStream {
        self.derive_window(
            "window",
            Op::Window {
                length: length.as_millis() as i64,
                buffer: WindowBuffer::default(),
            },
            length,
            slide,
        )
    }

    /// `reduce_by_key_and_window(f, inverse, length, slide, partitions,
    /// filter)`: per key, the values of the last `length` combined with `f`,
    /// every `slide`, in `partitions` partitions.
    ///
    /// Without `inverse` each window is reduced anew (an empty window gives
    /// no element). With `inverse` (a `(acc, old) -> acc` function undoing
    /// `f`) the window is kept and updated incrementally: each slide costs
    /// calls for the batches that enter and leave, not for the whole window,
    /// and a key whose value falls back to the identity stays unless
    /// `filter` (a filter of `(key, value)` pairs) drops it, as in Spark's
    /// Scala API.
    pub fn reduce_by_key_and_window(
        &self,
        f: Func,
        inverse: Option<Func>,
        length: Duration,
        slide: Duration,
        partitions: usize,
        filter: Option<Func>,
    ) -> DStream {
        self.derive_window(
            "reduce_by_key_and_window",
            Op::WindowedReduce {
                reduce: f,
                inverse,
                filter,
                length: length.as_millis() as i64,
                state: WindowedReduce::new(partitions.max(1)),
            },
            length,
            slide,
        )
    }

    /// `reduce_by_window(f, inverse, length, slide)`: all elements of the
    /// last `length` combined with `f`, as one element, every `slide`.
    /// Without `inverse` an empty window gives no element; with it, the
    /// running value is kept (so an emptied window gives the identity).
    pub fn reduce_by_window(
        &self,
        f: Func,
        inverse: Option<Func>,
        length: Duration,
        slide: Duration,
    ) -> DStream {
        match inverse {
            None => self
                .reduce(f.clone())
                .window(length, slide)
                .reduce(f)
                .renamed("reduce_by_window"),
            Some(inv) => self
                .derive("key", Op::Rekey(Rekey::Constant))
                .reduce_by_key_and_window(f, Some(inv), length, slide, 1, None)
                .derive("reduce_by_window", Op::Rekey(Rekey::Values)),
        }
    }

    /// `count_by_window(length, slide)`: the number of elements of the last
    /// `length`, every `slide` (incremental; `0` for an emptied window).
    pub fn count_by_window(&self, length: Duration, slide: Duration) -> DStream {
        self.derive("one", Op::Rekey(Rekey::One))
            .reduce_by_window(count_add(), Some(count_subtract()), length, slide)
            .renamed("count_by_window")
    }

    /// `count_by_value_and_window(length, slide, partitions)`: each distinct
    /// element of the last `length` with its number of occurrences, every
    /// `slide` (incremental; elements whose count falls to 0 are dropped).
    pub fn count_by_value_and_window(
        &self,
        length: Duration,
        slide: Duration,
        partitions: usize,
    ) -> DStream {
        let nonzero = Func::filter("nonzero", |kv: (serde::de::IgnoredAny, i64)| kv.1 != 0);
        self.derive("by_value", Op::Rekey(Rekey::ByValueOne))
            .reduce_by_key_and_window(
                count_add(),
                Some(count_subtract()),
                length,
                slide,
                partitions,
                Some(nonzero),
            )
            .renamed("count_by_value_and_window")
    }

    /// `update_state_by_key(f, partitions)`: the host keeps a state per key;
    /// every batch `f(new values, previous state)` runs for every key that
    /// has state or new values, and returns the new state or none (the key
    /// is removed; if it comes back it starts again). The stream is the
    /// whole state, every batch. Elements must be `(key, value)` pairs.
    pub fn update_state_by_key(&self, f: Func, partitions: usize) -> DStream {
        self.derive(
            "update_state_by_key",
            Op::UpdateState {
                func: f,
                initial: None,
                state: StateByKey::new(partitions.max(1)),
            },
        )
    }

    /// [`DStream::update_state_by_key`] starting from `initial` `(key, state)` pairs.
    ///
    /// # Panics
    /// When a key or state cannot be encoded.
    pub fn update_state_by_key_with_initial<K: serde::Serialize, S: serde::Serialize>(
        &self,
        f: Func,
        partitions: usize,
        initial: &[(K, S)],
    ) -> DStream {
        let mut seed = Batch::default();
        for (k, s) in initial {
            seed.keys.push(k).expect("an initial key that encodes");
            seed.values.push(s).expect("an initial state that encodes");
        }
        self.derive(
            "update_state_by_key",
            Op::UpdateState {
                func: f,
                initial: Some(Rdd {
                    partitions: vec![seed],
                }),
                state: StateByKey::new(partitions.max(1)),
            },
        )
    }

    /// `slice(from, to)`: the remembered batches of this stream with times in
    /// `[from, to]`, both included, oldest first. Bounds off the stream's
    /// slide grid are floored onto it; times at or before the zero time (one
    /// interval before the first batch) are skipped; `from > to` gives none.
    /// Only batches kept by [`StreamingContext::remember`] are returned.
    pub fn slice(&self, from: BatchTime, to: BatchTime) -> Vec<CollectedBatch> {
        let g = lock(&self.graph);
        let slide = match &g.started {
            Some(names) => names[self.id].1,
            None => g.nodes[self.id].slide,
        };
        let history = g.history.lock().unwrap_or_else(|e| e.into_inner());
        let Some(zero) = history.zero else {
            return Vec::new();
        };
        let floor = |t: i64| zero + (t - zero).div_euclid(slide) * slide;
        let (from, to) = (floor(from.millis()).max(zero + 1), floor(to.millis()));
        history
            .batches
            .get(&self.id)
            .map(|kept| {
                kept.iter()
                    .filter(|(t, _, _)| t.millis() >= from && t.millis() <= to)
                    .map(|(t, index, rdd)| CollectedBatch::of(*t, *index, rdd))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// `map_with_state(f, partitions, timeout)`: per-record mapping with a
    /// state per key, kept by the host. For each new value of a key, in
    /// order, `f(key, Some(value), state)` may read, update or remove the
    /// key's state and returns a mapped element or none; the stream is the
    /// mapped elements. Only keys with new values are processed. With a
    /// `timeout` of N batches, a key without values for N batches gets one
    /// last call `f(key, None, state)` (`state.is_timing_out()`) and is
    /// removed. Elements must be `(key, value)` pairs.
    pub fn map_with_state(&self, f: Func, partitions: usize, timeout: Option<u64>) -> DStream {
        self.derive(
            "map_with_state",
            Op::MapWithState {
                func: f,
                state: MapWithState::new(partitions.max(1), timeout),
            },
        )
    }

    fn renamed(self, name: &str) -> DStream {
        let id = self.id;
        self.named(&format!("{name}#{id}"))
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

    #[test]
    #[cfg(target_os = "linux")]
    fn a_run_s_worker_threads_have_exited_when_it_is_dropped() {
        let tids = Arc::new(Mutex::new(Vec::new()));
        let t = tids.clone();
        let workers = Workers::start(2, move || {
            // SAFETY: gettid has no preconditions.
            let tid = unsafe { libc::gettid() };
            t.lock().unwrap().push(tid);
        })
        .unwrap();
        // Both threads have started once both ran a job.
        let barrier = std::sync::Barrier::new(2);
        workers.broadcast(|_| {
            barrier.wait();
        });
        let tids = tids.lock().unwrap().clone();
        assert_eq!(tids.len(), 2);
        for &tid in &tids {
            assert!(Path::new(&format!("/proc/self/task/{tid}")).exists());
        }
        drop(workers);
        for tid in tids {
            assert!(
                !Path::new(&format!("/proc/self/task/{tid}")).exists(),
                "worker {tid} still running"
            );
        }
    }
}
