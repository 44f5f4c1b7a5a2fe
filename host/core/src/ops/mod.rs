//! Operators: how each DStream transformation computes one batch.

pub(crate) mod aggregate;
pub(crate) mod join;
pub(crate) mod keyed;
pub(crate) mod narrow;
pub(crate) mod window;

use crate::error::Result;
use crate::exec::{BlockId, ExchangeId, Shuffle};
use crate::time::BatchTime;
use sluice_sdk::Batch;

/// What an operator needs to compute one batch.
pub(crate) struct BatchContext<'a> {
    /// The batch being computed.
    pub(crate) time: BatchTime,
    /// What runs the partitions' tasks.
    pub(crate) executor: &'a dyn crate::exec::Executor,
    /// The stage of the plan the stream belongs to (names its tasks).
    pub(crate) stage: usize,
    /// The stage of each of its inputs (names the tasks of an exchange's
    /// map side).
    pub(crate) input_stages: &'a [usize],
    /// Where its exchanges' blocks go between map and reduce tasks.
    pub(crate) shuffle: &'a dyn Shuffle,
    /// Name of the stream being computed, for error messages.
    pub(crate) stream: &'a str,
}

impl BatchContext<'_> {
    /// `f(partition, input)` for every input, each a task of this stage
    /// and batch on the executor; the outputs in input order.
    pub(crate) fn tasks<I: Send, T: Send>(
        &self,
        inputs: Vec<I>,
        f: impl Fn(usize, I) -> T + Sync,
    ) -> Vec<T> {
        crate::exec::run_tasks(
            self.executor,
            self.stage,
            self.time,
            inputs,
            |task, input| f(task.partition, input),
        )
    }

    /// The map side of an exchange of input `input` into `partitions`
    /// partitions: `map(p, input)` gives map partition `p`'s block for
    /// every reduce partition, each written to the shuffle by its task (a
    /// task of the input's stage). Reduce tasks then [`read`] them.
    ///
    /// [`read`]: BatchContext::read
    pub(crate) fn exchange<I: Send>(
        &self,
        input: usize,
        partitions: usize,
        inputs: Vec<I>,
        map: impl Fn(usize, I) -> Result<Vec<Batch>> + Sync,
    ) -> Result<Exchanged> {
        let exchange = ExchangeId {
            stage: self.stage,
            input,
            batch: self.time,
        };
        let maps = inputs.len();
        let stage = self.input_stages.get(input).copied().unwrap_or(self.stage);
        crate::exec::run_tasks(self.executor, stage, self.time, inputs, |task, i| {
            let blocks = map(task.partition, i)?;
            debug_assert_eq!(blocks.len(), partitions);
            for (reduce, data) in blocks.into_iter().enumerate() {
                if data.is_empty() {
                    continue;
                }
                let block = BlockId {
                    exchange,
                    map: task.partition,
                    reduce,
                };
                self.shuffle.put(block, data)?;
            }
            Ok(())
        })
        .into_iter()
        .collect::<Result<()>>()?;
        Ok(Exchanged {
            id: exchange,
            maps,
            partitions,
        })
    }

    /// The reduce side of an exchange: the blocks written for reduce
    /// partition `q`, in map partition order (empty ones left out).
    pub(crate) fn read(&self, exchanged: &Exchanged, q: usize) -> Result<Vec<Batch>> {
        debug_assert!(q < exchanged.partitions);
        let mut blocks = self.shuffle.take(exchanged.id, q, exchanged.maps)?;
        blocks.retain(|b| !b.is_empty());
        Ok(blocks)
    }
}

/// An exchange whose map side has run: its blocks wait in the shuffle for
/// the reduce tasks.
#[derive(Debug)]
pub(crate) struct Exchanged {
    id: ExchangeId,
    maps: usize,
    /// Reduce partitions.
    partitions: usize,
}

/// Shared scaffolding for the operator tests.
#[cfg(test)]
pub(crate) mod testing {
    use super::BatchContext;
    use crate::rdd::Rdd;
    use crate::time::BatchTime;
    use sluice_sdk::{Batch, Column};

    /// A partition of the given values, unkeyed.
    pub(crate) fn batch_of<T: serde::Serialize>(items: &[T]) -> Batch {
        let mut c = Column::new();
        for i in items {
            c.push(i).unwrap();
        }
        Batch::from_values(c)
    }

    /// Two worker threads, shared by the operator tests.
    pub(crate) fn executor() -> &'static crate::exec::LocalExecutor {
        static EXECUTOR: std::sync::OnceLock<crate::exec::LocalExecutor> =
            std::sync::OnceLock::new();
        EXECUTOR.get_or_init(|| crate::exec::LocalExecutor::start(2, || {}).unwrap())
    }

    /// Runs `f` with a two-worker context at batch time 1000 ms, on a
    /// shuffle of its own that encodes every block and reads it back.
    pub(crate) fn with_ctx<R>(f: impl FnOnce(&BatchContext<'_>) -> R) -> R {
        let shuffle = crate::exec::EncodedShuffle::default();
        f(&BatchContext {
            time: BatchTime(1000),
            executor: executor(),
            stage: 0,
            input_stages: &[],
            shuffle: &shuffle,
            stream: "test",
        })
    }

    /// The elements as canonical JSON texts, sorted.
    pub(crate) fn rendered(rdd: &Rdd) -> Vec<String> {
        let mut v: Vec<String> = rdd
            .elements()
            .map(|(k, v)| crate::render::to_json(&crate::render::element(k, v)).to_string())
            .collect();
        v.sort();
        v
    }
}
