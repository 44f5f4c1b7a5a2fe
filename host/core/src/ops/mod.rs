//! Operators: how each DStream transformation computes one batch.

pub(crate) mod aggregate;
pub(crate) mod join;
pub(crate) mod keyed;
pub(crate) mod narrow;
pub(crate) mod window;

use crate::time::BatchTime;

/// What an operator needs to compute one batch.
pub(crate) struct BatchContext<'a> {
    /// The batch being computed.
    pub(crate) time: BatchTime,
    /// What runs the partitions' tasks.
    pub(crate) executor: &'a dyn crate::exec::Executor,
    /// The stage of the plan the stream belongs to (names its tasks).
    pub(crate) stage: usize,
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

    /// Runs `f` with a two-worker context at batch time 1000 ms.
    pub(crate) fn with_ctx<R>(f: impl FnOnce(&BatchContext<'_>) -> R) -> R {
        f(&BatchContext {
            time: BatchTime(1000),
            executor: executor(),
            stage: 0,
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
