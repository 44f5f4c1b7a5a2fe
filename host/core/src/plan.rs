//! The physical plan: the logical DStream graph cut into **stages** at its
//! exchanges (shuffles and gathers), as Spark's DAG scheduler cuts a job.
//!
//! Within a stage every operator is narrow: a partition of its output
//! depends on one partition of its input, so a stage runs as one task per
//! partition with no data crossing between tasks. An operator that needs
//! the elements of one key together (`reduce_by_key`, `join`,
//! `update_state_by_key`, …), all elements together (`count`, `reduce`,
//! `transform`) or a new partitioning (`repartition`) starts a new stage,
//! whose tasks read the previous stage's output through the exchange.
//!
//! `sluice explain JOB.toml` prints the plan as text or Graphviz dot.

use std::fmt::{self, Write as _};

/// How an operator's input crosses from one stage to the next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exchange {
    /// By a stable hash of each element's key into `partitions`.
    Hash {
        /// Partitions (and tasks) on the reading side.
        partitions: usize,
    },
    /// Every partition to one task (an aggregate, or a function that sees
    /// the batch whole).
    Gather,
    /// Round robin into `partitions`, whatever the keys.
    Rebalance {
        /// Partitions on the reading side.
        partitions: usize,
    },
}

impl Exchange {
    fn describe(self) -> String {
        match self {
            Exchange::Hash { partitions } => format!("hash of the key into {partitions}"),
            Exchange::Gather => "gather into 1".to_string(),
            Exchange::Rebalance { partitions } => format!("round robin into {partitions}"),
        }
    }
}

/// What an operator does to partitioning: what the planner needs of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// An input stream, received into at least `partitions` partitions.
    Source {
        /// Partitions per batch (a receiver cuts a large batch into more).
        partitions: usize,
    },
    /// Partition `i` of the output from partition `i` of the one input.
    Narrow,
    /// The partitions of every input, one after the other.
    Union,
    /// The partitions of the input's last `batches` batches.
    Window {
        /// Input batches in one window.
        batches: usize,
    },
    /// The input is exchanged first: the operator starts a stage. With
    /// `Gather`, `output` says how many partitions come out (`None`: the
    /// user's function decides).
    Exchange {
        /// How the input crosses.
        exchange: Exchange,
        /// Partitions of the output, when the operator fixes them.
        output: Option<usize>,
    },
}

/// One stream of the logical graph, as the planner takes it.
#[derive(Debug, Clone)]
pub struct LogicalStream {
    /// The stream's name.
    pub name: String,
    /// The operator that makes it, described.
    pub operator: String,
    /// The streams it reads (indices into the graph).
    pub parents: Vec<usize>,
    /// Its slide (ms): it produces a batch every `slide_ms`.
    pub slide_ms: i64,
    /// What its operator does to partitioning.
    pub shape: Shape,
    /// Its exchange is preceded by combining each input partition by key
    /// (in the tasks of the stage before), so that less crosses it.
    pub combines_map_side: bool,
    /// Computed in one plugin call with its input stream (consecutive
    /// map and flat-map functions of one plugin).
    pub chained: bool,
}

/// One stream, placed in a stage.
#[derive(Debug, Clone)]
pub struct PlannedStream {
    /// The logical stream.
    pub stream: LogicalStream,
    /// The stage computing it.
    pub stage: usize,
    /// Partitions per batch (`None`: a user function decides at run time).
    pub partitions: Option<usize>,
}

/// Where a stage's tasks get their input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StageInput {
    /// Received by a source stream of the stage.
    Source {
        /// The source stream.
        stream: usize,
    },
    /// Another stage's output, through an exchange.
    Exchange {
        /// The stage writing it.
        from_stage: usize,
        /// The stream written (in `from_stage`).
        from_stream: usize,
        /// The stream reading it (in this stage).
        into_stream: usize,
        /// How it crosses.
        exchange: Exchange,
    },
}

/// A group of operators run together, one task per partition.
#[derive(Debug, Clone)]
pub struct Stage {
    /// Its number: stages are numbered in the order they run.
    pub id: usize,
    /// Its streams, in graph order.
    pub streams: Vec<usize>,
    /// Where its input comes from.
    pub inputs: Vec<StageInput>,
    /// The outputs fed by its streams (indices into [`Plan::outputs`]).
    pub outputs: Vec<usize>,
    /// Tasks per batch: the widest partitioning among its streams (`None`:
    /// decided by a user function at run time).
    pub tasks: Option<usize>,
}

/// The physical plan of a job.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The job's name.
    pub job: String,
    /// The batch interval (ms).
    pub interval_ms: i64,
    /// Every stream of the graph, placed.
    pub streams: Vec<PlannedStream>,
    /// The stages, in the order they run.
    pub stages: Vec<Stage>,
    /// The outputs: the stream each one takes, and what it is.
    pub outputs: Vec<(usize, String)>,
}

impl Plan {
    /// Cuts `streams` (in graph order: parents before children) into
    /// stages. A source or an exchanging operator starts a stage; a narrow
    /// operator joins its input's stage, and one that reads streams of
    /// several stages (a union) merges them into one.
    pub fn build(
        job: &str,
        interval_ms: i64,
        streams: Vec<LogicalStream>,
        outputs: Vec<(usize, String)>,
    ) -> Plan {
        let (partitions, stage_of) = cut(&streams);
        let count = stage_of.iter().map(|s| s + 1).max().unwrap_or(0);
        let mut stages: Vec<Stage> = (0..count)
            .map(|id| Stage {
                id,
                streams: Vec::new(),
                inputs: Vec::new(),
                outputs: Vec::new(),
                tasks: Some(0),
            })
            .collect();
        let placed: Vec<PlannedStream> = (streams.into_iter().enumerate())
            .map(|(id, stream)| PlannedStream {
                stream,
                stage: stage_of[id],
                partitions: partitions[id],
            })
            .collect();
        for (id, p) in placed.iter().enumerate() {
            let stage = &mut stages[p.stage];
            stage.streams.push(id);
            stage.tasks = match (stage.tasks, p.partitions) {
                (Some(a), Some(b)) => Some(a.max(b)),
                _ => None,
            };
            match p.stream.shape {
                Shape::Source { .. } => stage.inputs.push(StageInput::Source { stream: id }),
                Shape::Exchange { exchange, .. } => {
                    for &from in &p.stream.parents {
                        stage.inputs.push(StageInput::Exchange {
                            from_stage: placed[from].stage,
                            from_stream: from,
                            into_stream: id,
                            exchange,
                        });
                    }
                }
                _ => {}
            }
        }
        for (i, (stream, _)) in outputs.iter().enumerate() {
            if let Some(p) = placed.get(*stream) {
                stages[p.stage].outputs.push(i);
            }
        }
        Plan {
            job: job.to_string(),
            interval_ms,
            streams: placed,
            stages,
            outputs,
        }
    }

    /// The plan as Graphviz dot: a cluster per stage, a node per stream
    /// and output, exchanges as dashed edges.
    pub fn to_dot(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "digraph {} {{", quote(&self.job));
        out.push_str("  rankdir=LR;\n  node [shape=box, fontname=\"monospace\"];\n");
        for stage in &self.stages {
            let _ = writeln!(out, "  subgraph cluster_stage{} {{", stage.id);
            let _ = writeln!(
                out,
                "    label={};",
                quote(&format!("stage {} ({})", stage.id, tasks(stage.tasks)))
            );
            for &s in &stage.streams {
                let p = &self.streams[s];
                let label = format!(
                    "{}\n{}\n{}",
                    p.stream.name,
                    p.stream.operator,
                    partitions(p.partitions)
                );
                let _ = writeln!(out, "    s{s} [label={}];", quote(&label));
            }
            for &o in &stage.outputs {
                let label = format!("output {o}\n{}", self.outputs[o].1);
                let _ = writeln!(out, "    o{o} [label={}, shape=note];", quote(&label));
            }
            out.push_str("  }\n");
        }
        for (id, p) in self.streams.iter().enumerate() {
            let exchange = match p.stream.shape {
                Shape::Exchange { exchange, .. } => Some(exchange),
                _ => None,
            };
            for &from in &p.stream.parents {
                match exchange {
                    Some(e) => {
                        let _ = writeln!(
                            out,
                            "  s{from} -> s{id} [style=dashed, label={}];",
                            quote(&e.describe())
                        );
                    }
                    None => {
                        let _ = writeln!(out, "  s{from} -> s{id};");
                    }
                }
            }
        }
        for (o, (stream, _)) in self.outputs.iter().enumerate() {
            let _ = writeln!(out, "  s{stream} -> o{o};");
        }
        out.push_str("}\n");
        out
    }
}

/// Each stream's partitions per batch and its stage: a source or an
/// exchanging operator starts a stage, a narrow operator joins its
/// input's, and one reading streams of several stages merges them. Stages
/// are numbered in the order their first stream appears.
fn cut(streams: &[LogicalStream]) -> (Vec<Option<usize>>, Vec<usize>) {
    let n = streams.len();
    // Union-find over provisional stages: one per stream that starts one.
    let mut group: Vec<usize> = (0..n).collect();
    fn root(group: &mut [usize], mut i: usize) -> usize {
        while group[i] != i {
            group[i] = group[group[i]];
            i = group[i];
        }
        i
    }
    let mut partitions: Vec<Option<usize>> = Vec::with_capacity(n);
    for (id, s) in streams.iter().enumerate() {
        let input = |i: usize| s.parents.get(i).and_then(|&p| partitions[p]);
        let parts = match s.shape {
            Shape::Source { partitions } => Some(partitions),
            Shape::Narrow => input(0),
            Shape::Window { batches } => input(0).map(|p| p * batches.max(1)),
            Shape::Union => s.parents.iter().map(|&p| partitions[p]).sum(),
            Shape::Exchange { output, .. } => output,
        };
        partitions.push(parts);
        if matches!(s.shape, Shape::Source { .. } | Shape::Exchange { .. }) {
            continue;
        }
        for &p in &s.parents {
            let (a, b) = (root(&mut group, p), root(&mut group, id));
            if a != b {
                group[b.max(a)] = b.min(a);
            }
        }
    }
    let mut number = vec![usize::MAX; n];
    let mut count = 0;
    let stage_of = (0..n)
        .map(|id| {
            let r = root(&mut group, id);
            if number[r] == usize::MAX {
                number[r] = count;
                count += 1;
            }
            number[r]
        })
        .collect();
    (partitions, stage_of)
}

fn tasks(t: Option<usize>) -> String {
    match t {
        Some(1) => "1 task".to_string(),
        Some(n) => format!("{n} tasks"),
        None => "tasks decided by a user function".to_string(),
    }
}

fn partitions(p: Option<usize>) -> String {
    match p {
        Some(1) => "1 partition".to_string(),
        Some(n) => format!("{n} partitions"),
        None => "partitions decided by the function".to_string(),
    }
}

fn quote(s: &str) -> String {
    let mut q = String::with_capacity(s.len() + 2);
    q.push('"');
    for c in s.chars() {
        match c {
            '"' => q.push_str("\\\""),
            '\\' => q.push_str("\\\\"),
            '\n' => q.push_str("\\n"),
            c => q.push(c),
        }
    }
    q.push('"');
    q
}

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let count = self.stages.len();
        writeln!(
            f,
            "job `{}`: batch interval {} ms, {count} stage{}",
            self.job,
            self.interval_ms,
            if count == 1 { "" } else { "s" }
        )?;
        for stage in &self.stages {
            writeln!(f, "\nstage {}: {}", stage.id, tasks(stage.tasks))?;
            for input in &stage.inputs {
                match input {
                    StageInput::Source { stream } => {
                        let p = &self.streams[*stream];
                        let more = match p.stream.shape {
                            Shape::Source { .. } => ", more for a large batch",
                            _ => "",
                        };
                        writeln!(
                            f,
                            "  reads  [{stream}] {} ({}{more})",
                            p.stream.operator,
                            partitions(p.partitions)
                        )?;
                    }
                    StageInput::Exchange {
                        from_stage,
                        from_stream,
                        into_stream,
                        exchange,
                    } => {
                        let combined = if self.streams[*into_stream].stream.combines_map_side {
                            format!(", combined by key in stage {from_stage}'s tasks first")
                        } else {
                            String::new()
                        };
                        writeln!(
                            f,
                            "  reads  [{from_stream}] of stage {from_stage} into [{into_stream}]: {}{combined}",
                            exchange.describe()
                        )?
                    }
                }
            }
            for &s in &stage.streams {
                let p = &self.streams[s];
                let from = if p.stream.parents.is_empty() {
                    String::new()
                } else {
                    let ids: Vec<String> =
                        p.stream.parents.iter().map(|i| format!("[{i}]")).collect();
                    format!(" from {}", ids.join(", "))
                };
                let chained = match p.stream.parents.first() {
                    Some(i) if p.stream.chained => format!(", one plugin call with [{i}]"),
                    _ => String::new(),
                };
                writeln!(
                    f,
                    "  [{s}] `{}`{from}: {} ({}, every {} ms{chained})",
                    p.stream.name,
                    p.stream.operator,
                    partitions(p.partitions),
                    p.stream.slide_ms
                )?;
            }
            for &o in &stage.outputs {
                let (stream, what) = &self.outputs[o];
                writeln!(f, "  output {o}: {what} of [{stream}]")?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream(name: &str, parents: &[usize], shape: Shape) -> LogicalStream {
        LogicalStream {
            name: name.to_string(),
            operator: name.to_string(),
            parents: parents.to_vec(),
            slide_ms: 1000,
            shape,
            combines_map_side: false,
            chained: false,
        }
    }

    fn word_count() -> Plan {
        let streams = vec![
            stream("lines", &[], Shape::Source { partitions: 2 }),
            stream("words", &[0], Shape::Narrow),
            stream("pairs", &[1], Shape::Narrow),
            stream(
                "counts",
                &[2],
                Shape::Exchange {
                    exchange: Exchange::Hash { partitions: 3 },
                    output: Some(3),
                },
            ),
        ];
        Plan::build("wc", 1000, streams, vec![(3, "pprint".to_string())])
    }

    #[test]
    fn a_shuffle_cuts_the_word_count_into_two_stages() {
        let plan = word_count();
        assert_eq!(plan.stages.len(), 2);
        assert_eq!(plan.stages[0].streams, vec![0, 1, 2]);
        assert_eq!(plan.stages[0].tasks, Some(2));
        assert_eq!(plan.stages[1].streams, vec![3]);
        assert_eq!(plan.stages[1].tasks, Some(3));
        assert_eq!(plan.stages[1].outputs, vec![0]);
        assert_eq!(
            plan.stages[1].inputs,
            vec![StageInput::Exchange {
                from_stage: 0,
                from_stream: 2,
                into_stream: 3,
                exchange: Exchange::Hash { partitions: 3 },
            }]
        );
        let text = plan.to_string();
        assert!(text.contains("2 stages"), "{text}");
        assert!(text.contains("hash of the key into 3"), "{text}");
    }

    #[test]
    fn a_union_of_two_sources_is_one_stage_with_both_partitionings() {
        let streams = vec![
            stream("a", &[], Shape::Source { partitions: 2 }),
            stream("b", &[], Shape::Source { partitions: 3 }),
            stream("a2", &[0], Shape::Narrow),
            stream("both", &[2, 1], Shape::Union),
            stream("w", &[3], Shape::Window { batches: 2 }),
        ];
        let plan = Plan::build("u", 1000, streams, vec![(4, "collect".into())]);
        assert_eq!(plan.stages.len(), 1, "{plan}");
        assert_eq!(plan.stages[0].streams, vec![0, 1, 2, 3, 4]);
        assert_eq!(plan.streams[3].partitions, Some(5));
        assert_eq!(plan.streams[4].partitions, Some(10));
        assert_eq!(plan.stages[0].tasks, Some(10));
        assert_eq!(plan.stages[0].inputs.len(), 2);
    }

    #[test]
    fn a_join_reads_two_stages_and_a_transform_leaves_partitions_open() {
        let hash = Shape::Exchange {
            exchange: Exchange::Hash { partitions: 2 },
            output: Some(2),
        };
        let streams = vec![
            stream("l", &[], Shape::Source { partitions: 1 }),
            stream("r", &[], Shape::Source { partitions: 1 }),
            stream("joined", &[0, 1], hash),
            stream(
                "t",
                &[2],
                Shape::Exchange {
                    exchange: Exchange::Gather,
                    output: None,
                },
            ),
            stream("m", &[3], Shape::Narrow),
        ];
        let plan = Plan::build("j", 500, streams, vec![(4, "print".into())]);
        assert_eq!(plan.stages.len(), 4, "{plan}");
        assert_eq!(plan.stages[2].inputs.len(), 2);
        assert_eq!(plan.stages[3].streams, vec![3, 4]);
        assert_eq!(plan.stages[3].tasks, None);
        assert!(plan.to_string().contains("decided by a user function"));
    }

    #[test]
    fn the_text_says_where_keys_are_combined_and_which_streams_share_a_call() {
        let mut streams = vec![
            stream("lines", &[], Shape::Source { partitions: 2 }),
            stream("words", &[0], Shape::Narrow),
            stream("pairs", &[1], Shape::Narrow),
            stream(
                "counts",
                &[2],
                Shape::Exchange {
                    exchange: Exchange::Hash { partitions: 2 },
                    output: Some(2),
                },
            ),
        ];
        streams[2].chained = true;
        streams[3].combines_map_side = true;
        let text = Plan::build("wc", 1000, streams, vec![(3, "pprint".into())]).to_string();
        assert!(text.contains("one plugin call with [1]"), "{text}");
        assert!(
            text.contains("hash of the key into 2, combined by key in stage 0's tasks first"),
            "{text}"
        );
    }

    #[test]
    fn dot_has_a_cluster_per_stage_and_dashed_exchanges() {
        let dot = word_count().to_dot();
        assert!(dot.starts_with("digraph \"wc\" {"), "{dot}");
        assert_eq!(dot.matches("subgraph cluster_stage").count(), 2);
        assert!(dot.contains("s2 -> s3 [style=dashed"), "{dot}");
        assert!(dot.contains("s3 -> o0;"), "{dot}");
        assert!(dot.trim_end().ends_with('}'));
    }
}
