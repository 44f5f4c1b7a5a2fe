//! What a run tells the outside: batch and operator figures, listeners, the stop handle.

use crate::time::BatchTime;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

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
    /// Each stage of the plan that ran, with its time and output.
    pub stages: Vec<StageInfo>,
    /// The receiving rate in force after this batch (records/s), when a
    /// receiver is limited (backpressure or its maximum rate).
    pub rate_limit: Option<f64>,
    /// How far behind its input each source that can tell is, per
    /// partition of the input, after this batch.
    pub source_lag: Vec<SourceLag>,
}

/// Records of one partition of a source's input not yet read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceLag {
    /// The source stream's name.
    pub source: String,
    /// The partition of its input (a broker's partition or stream).
    pub partition: String,
    /// Records there not yet read.
    pub records: u64,
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

/// The time and output of one stage of the plan (`sluice explain`) in one
/// batch.
#[derive(Debug, Clone, PartialEq)]
pub struct StageInfo {
    /// The stage's number in the plan.
    pub stage: usize,
    /// Its streams, in order (`lines → words → pairs`).
    pub streams: String,
    /// Its tasks per batch, as planned (`None`: a user function decides).
    pub tasks: Option<usize>,
    /// Time spent in its operators and the outputs it feeds.
    pub time: Duration,
    /// Elements it passed on: to the next stage's exchange, or to outputs.
    pub records_out: u64,
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

/// A plain [`Listener`] as a [`StreamingListener`] of completed batches.
pub(super) struct Completed(pub(super) Listener);

impl StreamingListener for Completed {
    fn on_batch_completed(&mut self, info: &BatchInfo) {
        (self.0)(info)
    }
}

/// Stops a running context from another thread (or a signal handler).
#[derive(Debug, Clone, Default)]
pub struct StopHandle(pub(super) Arc<AtomicBool>);

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
