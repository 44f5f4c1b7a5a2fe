//! Operators: how each DStream transformation computes one batch.

pub(crate) mod aggregate;
pub(crate) mod join;
pub(crate) mod keyed;
pub(crate) mod narrow;

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
