//! One batch: every due stream an output needs, computed in graph order,
//! then the outputs.

use super::chain::{ChainPlan, Chained, plan_chains};
use super::listener::{OperatorInfo, StageInfo};
use super::op::Step;
use super::{Graph, Node, StreamingContext};
use crate::error::{Error, Result};
use crate::exec::{Executor, Shuffle};
use crate::func::Func;
use crate::ops::{BatchContext, narrow};
use crate::plan::Plan;
use crate::rdd::Rdd;
use crate::time::BatchTime;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What computing one batch gave.
pub(super) struct BatchRun {
    /// Elements received from all sources.
    pub(super) input_records: u64,
    /// Each stream computed and each output run, in order.
    pub(super) operators: Vec<OperatorInfo>,
    /// Each stage that ran.
    pub(super) stages: Vec<StageInfo>,
}

/// Which stage each stream is in and which streams a stage passes on:
/// made once per run from the plan, read by every batch's tally.
#[derive(Debug, Default)]
pub(super) struct StageMap {
    /// Per stream, its stage.
    of: Vec<usize>,
    /// Per stream, whether another stage or an output reads it.
    passes_on: Vec<bool>,
    /// Per stage, its figures before a batch.
    empty: Vec<StageInfo>,
}

impl StageMap {
    pub(super) fn of(plan: &Plan) -> StageMap {
        let of: Vec<usize> = plan.streams.iter().map(|s| s.stage).collect();
        let mut passes_on = vec![false; of.len()];
        for (id, s) in plan.streams.iter().enumerate() {
            for &p in &s.stream.parents {
                if of[p] != of[id] {
                    passes_on[p] = true;
                }
            }
        }
        for (stream, _) in &plan.outputs {
            passes_on[*stream] = true;
        }
        let empty = (plan.stages.iter())
            .map(|stage| {
                let names: Vec<&str> = (stage.streams.iter())
                    .map(|&s| plan.streams[s].stream.name.as_str())
                    .collect();
                StageInfo {
                    stage: stage.id,
                    streams: names.join(" → "),
                    tasks: stage.tasks,
                    time: Duration::ZERO,
                    records_out: 0,
                }
            })
            .collect();
        StageMap {
            of,
            passes_on,
            empty,
        }
    }
}

/// Per stage of the plan, the time and output of one batch.
struct StageTally<'a> {
    map: &'a StageMap,
    /// Per stage, its figures and whether it ran.
    stages: Vec<(StageInfo, bool)>,
}

impl StageTally<'_> {
    fn new(map: &StageMap) -> StageTally<'_> {
        let stages = map.empty.iter().map(|s| (s.clone(), false)).collect();
        StageTally { map, stages }
    }

    /// The stage of stream `id` (0 without a plan).
    fn stage_of(&self, id: usize) -> usize {
        self.map.of.get(id).copied().unwrap_or(0)
    }

    /// Stream `id` was computed.
    fn stream(&mut self, id: usize, time: Duration, records: u64) {
        let (Some(&stage), Some(&passes_on)) = (self.map.of.get(id), self.map.passes_on.get(id))
        else {
            return;
        };
        let (info, ran) = &mut self.stages[stage];
        info.time += time;
        if passes_on {
            info.records_out += records;
        }
        *ran = true;
    }

    /// An output of stream `id` ran.
    fn output(&mut self, id: usize, time: Duration) {
        if let Some(&stage) = self.map.of.get(id) {
            let (info, ran) = &mut self.stages[stage];
            info.time += time;
            *ran = true;
        }
    }

    fn finish(self) -> Vec<StageInfo> {
        (self.stages.into_iter())
            .filter_map(|(info, ran)| ran.then_some(info))
            .collect()
    }
}

/// Which streams a batch computes, and how many take each one.
struct Schedule {
    /// The stream's slide divides the time since the zero time.
    due: Vec<bool>,
    /// Some output reads the stream, directly or not.
    needed: Vec<bool>,
    /// How many streams and outputs take the stream's batch now.
    consumers: Vec<usize>,
}

impl Schedule {
    fn of(g: &Graph, time: BatchTime, first: BatchTime) -> Schedule {
        let n = g.nodes.len();
        let zero = first.millis() - g.interval;
        let due: Vec<bool> = g
            .nodes
            .iter()
            .map(|node| (time.millis() - zero) % node.slide == 0)
            .collect();
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
        Schedule {
            due,
            needed,
            consumers,
        }
    }

    /// Whether stream `id` computes now: needed, and due (a window also
    /// when its input is, to take that batch).
    fn runs(&self, g: &Graph, id: usize) -> bool {
        let node = &g.nodes[id];
        self.needed[id] && (self.due[id] || (node.op.is_window() && self.due[node.parents[0]]))
    }
}

/// The batches computed so far, each dropped once its last taker has it.
struct Values {
    values: Vec<Option<Arc<Rdd>>>,
    consumers: Vec<usize>,
}

impl Values {
    fn take(&mut self, id: usize) -> Result<Arc<Rdd>> {
        self.consumers[id] -= 1;
        let v = if self.consumers[id] == 0 {
            self.values[id].take()
        } else {
            self.values[id].clone()
        };
        v.ok_or_else(|| Error::Internal(format!("stream {id} was not computed")))
    }
}

impl StreamingContext {
    /// Computes one batch: every stream an output needs that is due at
    /// `time` (its slide divides the time since the zero time, one interval
    /// before `first`), then the outputs of the due streams in registration
    /// order. Windows take their parent's batches whenever those are due.
    /// Returns the number of input elements.
    pub(super) fn run_batch(
        &self,
        g: &mut Graph,
        executor: &dyn Executor,
        time: BatchTime,
        index: u64,
        first: BatchTime,
        inputs: Vec<Rdd>,
    ) -> Result<BatchRun> {
        let run = self.compute_batch(g, executor, (time, index, first), inputs);
        // Whether it ran or failed, nothing of this batch's exchanges stays.
        self.shuffle.forget(time);
        run
    }

    fn compute_batch(
        &self,
        g: &mut Graph,
        executor: &dyn Executor,
        (time, index, first): (BatchTime, u64, BatchTime),
        inputs: Vec<Rdd>,
    ) -> Result<BatchRun> {
        let shuffle = &*self.shuffle;
        let mut operators = Vec::new();
        let map = g.stage_map.clone();
        let mut stages = StageTally::new(&map);
        let n = g.nodes.len();
        let schedule = Schedule::of(g, time, first);
        let input_records = inputs.iter().map(|r| r.count() as u64).sum();
        let mut sources: Vec<Option<Rdd>> = inputs.into_iter().map(Some).collect();
        let remember = g.history.lock().unwrap_or_else(|e| e.into_inner()).remember;
        let mut chains: Vec<Option<Chained>> = if remember == 0 {
            plan_chains(g, &schedule.needed, &schedule.due, &schedule.consumers)
        } else {
            vec![None; n]
        };
        let mut values = Values {
            values: vec![None; n],
            consumers: schedule.consumers.clone(),
        };
        for (id, chain) in chains.iter_mut().enumerate() {
            if !schedule.runs(g, id) {
                continue;
            }
            let started = Instant::now();
            let (rdd, chained) = match chain.take() {
                Some(Chained::Into) => continue,
                Some(Chained::Last(plan)) => {
                    let node = &g.nodes[id];
                    let ctx = BatchContext {
                        time,
                        executor,
                        stage: stages.stage_of(id),
                        input_stages: &[],
                        shuffle,
                        stream: &node.name,
                    };
                    let (rdd, names) =
                        run_chain(&plan, &node.name, &mut values, &ctx, &mut operators)?;
                    (rdd, Some(names))
                }
                None => {
                    let at = Placement {
                        executor,
                        shuffle,
                        stage: stages.stage_of(id),
                        input_stages: (g.nodes[id].parents.iter())
                            .map(|&p| stages.stage_of(p))
                            .collect(),
                        time,
                        due: schedule.due[id],
                    };
                    let computed =
                        compute(&mut g.nodes[id], at, &schedule, &mut values, &mut sources)?;
                    let Some(rdd) = computed else {
                        continue;
                    };
                    (rdd, None)
                }
            };
            let node = &g.nodes[id];
            let info = OperatorInfo {
                stream: node.name.clone(),
                op: node.op.describe(),
                time: started.elapsed(),
                records_out: rdd.count() as u64,
                chain: chained,
            };
            stages.stream(id, info.time, info.records_out);
            operators.push(info);
            let rdd = Arc::new(rdd);
            if remember > 0 {
                g.remember(id, time, index, remember, &rdd);
            }
            values.values[id] = Some(rdd);
        }
        let outputs = run_outputs(g, (time, index), &schedule, &mut values, &mut stages)?;
        operators.extend(outputs);
        Ok(BatchRun {
            input_records,
            operators,
            stages: stages.finish(),
        })
    }
}

/// Runs the outputs of the due streams, in registration order, on batch
/// `index` at `time`.
fn run_outputs(
    g: &mut Graph,
    (time, index): (BatchTime, u64),
    schedule: &Schedule,
    values: &mut Values,
    stages: &mut StageTally<'_>,
) -> Result<Vec<OperatorInfo>> {
    let mut infos = Vec::new();
    for i in 0..g.outputs.len() {
        let id = g.outputs[i].0;
        if !schedule.due[id] {
            continue;
        }
        let rdd = values.take(id)?;
        let started = Instant::now();
        g.outputs[i].1.emit(time, index, &rdd)?;
        let took = started.elapsed();
        stages.output(id, took);
        infos.push(OperatorInfo {
            stream: format!("output {i}"),
            op: format!("output of `{}`", g.nodes[id].name),
            time: took,
            records_out: 0,
            chain: None,
        });
    }
    Ok(infos)
}

/// Where a stream's tasks run and what they are named.
struct Placement<'a> {
    executor: &'a dyn Executor,
    shuffle: &'a dyn Shuffle,
    /// Its stage.
    stage: usize,
    /// Its inputs' stages.
    input_stages: Vec<usize>,
    time: BatchTime,
    /// Its own batch is due (a window also runs when only its input's is).
    due: bool,
}

/// Computes `node`'s batch with its operator, its inputs taken from
/// `values` (`None`: nothing this batch), its tasks placed by `at`.
fn compute(
    node: &mut Node,
    at: Placement<'_>,
    schedule: &Schedule,
    values: &mut Values,
    sources: &mut [Option<Rdd>],
) -> Result<Option<Rdd>> {
    let Node {
        name,
        op,
        parents,
        slide,
    } = node;
    let ctx = BatchContext {
        time: at.time,
        executor: at.executor,
        stage: at.stage,
        input_stages: &at.input_stages,
        shuffle: at.shuffle,
        stream: name,
    };
    let mut take = |i: usize| values.take(parents[i]);
    let mut step = Step {
        ctx: &ctx,
        due: at.due,
        slide: *slide,
        inputs_due: parents.iter().map(|&p| schedule.due[p]).collect(),
        take: &mut take,
        sources,
    };
    op.compute(&mut step)
}

/// Runs a chain of map and flat-map stages in one plugin call per piece;
/// the stages before the last are reported with their element counts and
/// their time counted in the last one's. Returns the last stage's batch
/// and the chain's description (`a → b → c`).
fn run_chain(
    plan: &ChainPlan,
    last: &str,
    values: &mut Values,
    ctx: &BatchContext<'_>,
    operators: &mut Vec<OperatorInfo>,
) -> Result<(Rdd, String)> {
    let funcs: Vec<&Func> = plan.funcs.iter().collect();
    let input = Arc::unwrap_or_clone(values.take(plan.input)?);
    let (rdd, counts) = narrow::apply_chain(&funcs, &plan.chain, input, ctx)?;
    let names = (plan.before.iter().map(|(s, _)| s.as_str()))
        .chain([last])
        .collect::<Vec<_>>()
        .join(" → ");
    for ((stream, op), &records_out) in plan.before.iter().zip(&counts) {
        operators.push(OperatorInfo {
            stream: stream.clone(),
            op: op.clone(),
            time: Duration::ZERO,
            records_out,
            chain: Some(names.clone()),
        });
    }
    Ok((rdd, names))
}

impl Graph {
    /// Keeps stream `id`'s batch for `slice`, dropping those older than
    /// `remember` (ms).
    fn remember(&self, id: usize, time: BatchTime, index: u64, remember: i64, rdd: &Arc<Rdd>) {
        let mut h = self.history.lock().unwrap_or_else(|e| e.into_inner());
        let kept = h.batches.entry(id).or_default();
        kept.push_back((time, index, rdd.clone()));
        while kept
            .front()
            .is_some_and(|(t, _, _)| t.millis() <= time.millis() - remember)
        {
            kept.pop_front();
        }
    }
}
