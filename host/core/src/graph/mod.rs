//! The DStream graph and the Spark-like API over it: [`StreamingContext`]
//! creates input streams, [`DStream`] methods add transformations and outputs,
//! [`StreamingContext::run`] generates a batch every interval and computes it.

use crate::checkpoint::PluginVersion;
use crate::func::Func;
use crate::guest::{self, Guest};
use crate::plan::{LogicalStream, Plan};
use crate::rdd::Rdd;
use crate::receiver::Source;
use crate::share::CpuShare;
use crate::sink::Output;
use crate::time::{BatchTime, Clock};
use sluice_sdk::Kind;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Duration;

mod batch;
mod chain;
mod context;
mod dstream;
mod listener;
mod op;
mod pairs;
mod recovery;
mod run;
mod sources;
mod swap;
#[cfg(test)]
mod tests;
mod windowed;

pub use listener::{
    BatchInfo, Listener, OperatorInfo, RunSummary, SourceLag, StageInfo, StopHandle,
    StreamingListener,
};
use op::Operator;
use swap::StagedSwap;
pub use swap::SwapHandle;
pub use windowed::StateSpec;

/// The physical plan of the graph (see [`crate::plan`]).
fn physical_plan(g: &Graph, job: &str) -> Plan {
    let sources: Vec<usize> = g.sources.iter().map(|s| s.partitions()).collect();
    // Chains run only when no batch is remembered for `slice` (see `chain`).
    let chains = g.history.lock().unwrap_or_else(|e| e.into_inner()).remember == 0;
    let mut takers = vec![0usize; g.nodes.len()];
    for node in &g.nodes {
        for &p in &node.parents {
            takers[p] += 1;
        }
    }
    for (id, _) in &g.outputs {
        takers[*id] += 1;
    }
    let streams = g
        .nodes
        .iter()
        .enumerate()
        .map(|(id, node)| {
            let parent_slide = node.parents.first().map(|&p| g.nodes[p].slide);
            let operator = match node.op.source() {
                Some(i) => g.sources[i].describe(),
                None => node.op.describe(),
            };
            LogicalStream {
                name: node.name.clone(),
                operator,
                parents: node.parents.clone(),
                slide_ms: node.slide,
                shape: node.op.shape(parent_slide, &sources),
                combines_map_side: node.op.combines_map_side(),
                chained: chains && chained_with_input(g, &takers, id),
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

/// Whether stream `id` runs in one plugin call with its input: both are
/// map or flat-map functions one plugin can chain, and nothing else takes
/// the input (`takers`: per stream, the streams and outputs reading it).
fn chained_with_input(g: &Graph, takers: &[usize], id: usize) -> bool {
    let node = &g.nodes[id];
    let [p] = node.parents[..] else {
        return false;
    };
    match (g.nodes[p].op.chain_link(), node.op.chain_link()) {
        (Some(a), Some(b)) => takers[p] == 1 && Func::chain_of(&[a, b]).is_some(),
        _ => false,
    }
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

struct Node {
    pub(super) name: String,
    pub(super) op: Box<dyn Operator>,
    pub(super) parents: Vec<usize>,
    /// Produces a batch at `T` iff `T - zero time` is a multiple of this (ms).
    pub(super) slide: i64,
}

#[derive(Default)]
struct Graph {
    nodes: Vec<Node>,
    sources: Vec<Box<dyn Source>>,
    outputs: Vec<(usize, Box<dyn Output>)>,
    /// Set by `run`, which takes the operators, sources and outputs out;
    /// the streams' names, parents and slides stay (for `DStream::name`,
    /// `slide` and `slice`), each with a stand-in operator.
    started: bool,
    /// What was added after the start, refused (never run): `run` returns
    /// it as its error when it ends.
    late: Vec<String>,
    /// The batch interval (ms): the slide of every input stream.
    interval: i64,
    /// Misuses found while building (stream id, message), reported by `run`.
    errors: Vec<(usize, String)>,
    /// The physical plan, made when the run starts.
    plan: Option<Plan>,
    /// The stage of each stream, from the plan, for every batch's figures.
    stage_map: Arc<batch::StageMap>,
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
    /// Whether the graph may still change; once the context has started,
    /// records (and logs) that `what` was refused, which `run` returns as
    /// its error (Spark's `IllegalStateException`, without a panic).
    fn check_open(&mut self, what: &str) -> bool {
        if !self.started {
            return true;
        }
        let message = format!("{ADDED_AFTER_START} ({what})");
        tracing::error!("{message}");
        self.late.push(message);
        false
    }
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
    /// Where checkpoint objects go when not in `checkpoint` itself.
    checkpoint_store: Option<Arc<dyn crate::checkpoint::CheckpointStore>>,
    checkpoint_interval: Option<Duration>,
    backpressure: bool,
    initial_rate: Option<f64>,
    /// Hot swaps waiting for the next batch boundary.
    swaps: Mutex<Vec<StagedSwap>>,
    /// The plugin functions the job uses: (plugin it was made from, function, kind).
    uses: Mutex<Vec<PluginUse>>,
    fresh: bool,
    /// Stateful operators may run without a checkpoint directory.
    state_in_memory: bool,
    cpu_share: Option<Arc<CpuShare>>,
    /// Where exchanges' blocks wait between map and reduce tasks.
    shuffle: Arc<dyn crate::exec::Shuffle>,
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
