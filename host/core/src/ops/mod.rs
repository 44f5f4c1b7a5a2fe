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
    /// The worker threads that run partitions in parallel.
    pub(crate) pool: &'a rayon::ThreadPool,
    /// Name of the stream being computed, for error messages.
    pub(crate) stream: &'a str,
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

    /// Runs `f` with a two-worker context at batch time 1000 ms.
    pub(crate) fn with_ctx<R>(f: impl FnOnce(&BatchContext<'_>) -> R) -> R {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .unwrap();
        f(&BatchContext {
            time: BatchTime(1000),
            pool: &pool,
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
