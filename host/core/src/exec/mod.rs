//! Executors: what runs a batch's tasks.
//!
//! A task is one partition of one stage's work for one batch, named by its
//! [`TaskId`] (stage, partition, batch time). Operators hand their
//! partition-parallel work to the [`Executor`] of the run as tasks; the
//! [`LocalExecutor`] runs them on the job's worker threads. Tasks take
//! their input and give their output as values, never through shared
//! state, so another executor can run them elsewhere; across an exchange,
//! map tasks write blocks to a [`Shuffle`] addressed by exchange (stage,
//! input, batch time) and partition, and reduce tasks read them there.

mod local;
mod shuffle;

pub use local::LocalExecutor;
pub use shuffle::{BlockId, EncodedShuffle, ExchangeId, LocalShuffle, Shuffle};

use crate::time::BatchTime;
use std::sync::Mutex;

/// One task: a partition of a stage's work for one batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TaskId {
    /// The stage of the plan (`sluice explain`).
    pub stage: usize,
    /// The partition it computes.
    pub partition: usize,
    /// The batch.
    pub batch: BatchTime,
}

/// Runs tasks.
pub trait Executor: Send + Sync {
    /// Runs `task(i)` for every `tasks[i]`, in parallel where it can, and
    /// returns once every one has run. A task that panics takes the panic
    /// to the caller.
    fn run(&self, tasks: &[TaskId], task: &(dyn Fn(usize) + Sync));
}

/// Runs `f(task, input)` for every input on `executor`, input `i` as task
/// `(stage, i, batch)`; the outputs in input order.
pub(crate) fn run_tasks<I: Send, T: Send>(
    executor: &dyn Executor,
    stage: usize,
    batch: BatchTime,
    inputs: Vec<I>,
    f: impl Fn(TaskId, I) -> T + Sync,
) -> Vec<T> {
    let ids: Vec<TaskId> = (0..inputs.len())
        .map(|partition| TaskId {
            stage,
            partition,
            batch,
        })
        .collect();
    let inputs: Vec<Mutex<Option<I>>> = inputs.into_iter().map(|i| Mutex::new(Some(i))).collect();
    let outputs: Vec<Mutex<Option<T>>> = inputs.iter().map(|_| Mutex::new(None)).collect();
    executor.run(&ids, &|i| {
        let input = inputs[i]
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
            .expect("an executor runs each task once");
        let out = f(ids[i], input);
        *outputs[i].lock().unwrap_or_else(|e| e.into_inner()) = Some(out);
    });
    outputs
        .into_iter()
        .map(|o| {
            o.into_inner()
                .unwrap_or_else(|e| e.into_inner())
                .expect("an executor runs every task before it returns")
        })
        .collect()
}
