//! Chains of consecutive map and flat-map stages that one plugin call runs.

use super::Graph;
use crate::func::Func;
use crate::guest::Guest;
use std::sync::Arc;

/// A stream's part in a chain of plugin calls this batch (see [`plan_chains`]).
#[derive(Clone)]
pub(super) enum Chained {
    /// Computed with the stream that takes it, in the same plugin call.
    Into,
    /// The last stage of a chain: computes the chain.
    Last(ChainPlan),
}

#[derive(Clone)]
pub(super) struct ChainPlan {
    /// The stream the first stage takes.
    pub(super) input: usize,
    /// Every stage's function, in order.
    pub(super) funcs: Vec<Func>,
    /// The stages before the last: stream name and operator.
    pub(super) before: Vec<(String, String)>,
    /// The plugin version and function indices (`Func::chain_of`).
    pub(super) chain: (Arc<dyn Guest>, Vec<u32>),
}

/// Consecutive map and flat-map stages whose functions one plugin can run
/// in one call (`Func::chain_of`): the values between them then never
/// leave the plugin. A stage joins the one before it only where it is the
/// one before's only taker this batch (no other stream, output or window
/// reads it), so no stream that anything else reads goes uncomputed.
pub(super) fn plan_chains(
    g: &Graph,
    needed: &[bool],
    due: &[bool],
    consumers: &[usize],
) -> Vec<Option<Chained>> {
    let n = g.nodes.len();
    let mut plans: Vec<Option<Chained>> = vec![None; n];
    // Per stream, the stages of the chain ending at it (itself alone if none).
    let mut stages: Vec<Vec<usize>> = (0..n).map(|id| vec![id]).collect();
    let narrow = |id: usize| {
        (needed[id] && due[id])
            .then(|| g.nodes[id].op.chain_link())
            .flatten()
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
