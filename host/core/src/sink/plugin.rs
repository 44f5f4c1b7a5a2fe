//! `foreach_partition(sink)`: a plugin `sink` function called once per
//! partition of every batch (Spark's `foreachRDD` + `foreachPartition`
//! pattern). The plugin's instances stay alive between batches, so a sink can
//! keep a connection (once grants allow one); it gets the batch time through
//! its call context, so its writes can be idempotent.
//!
//! A sink that fails with an error is retried — up to `SINK_ATTEMPTS` calls,
//! 100 ms then 200 ms apart — because sinks talk to the outside world; a sink
//! that traps gets the runtime's own retry on a fresh instance. If every
//! attempt fails, the job fails with an error naming plugin, function, batch
//! time and partition.

use super::Output;
use crate::error::{Error, PluginFault, Result};
use crate::func::{CallSite, Func};
use crate::rdd::Rdd;
use crate::time::BatchTime;
use std::time::Duration;

/// Calls per partition before a failing sink fails the batch.
pub(crate) const SINK_ATTEMPTS: u32 = 3;

pub(crate) struct PluginSink {
    pub(crate) func: Func,
}

impl Output for PluginSink {
    fn describe(&self) -> String {
        format!("foreach_rdd {} ({})", self.func.name(), self.func.kind())
    }
    fn emit(&mut self, time: BatchTime, _index: u64, rdd: &Rdd) -> Result<()> {
        let n = rdd.partitions.len() as u32;
        for (p, batch) in rdd.partitions.iter().enumerate() {
            let mut values = batch.joined_values().into_owned();
            let site = CallSite {
                batch: time,
                partition: p as u32,
                partitions: n,
            };
            let mut attempt = 1;
            loop {
                match self.func.apply_sink(&mut values, site) {
                    Ok(()) => break,
                    Err(Error::Plugin { fault, .. })
                        if matches!(*fault, PluginFault::Refused { .. })
                            && attempt < SINK_ATTEMPTS =>
                    {
                        tracing::warn!(
                            sink = %self.func.name(),
                            batch = time.millis(),
                            partition = p,
                            attempt,
                            "sink failed, retrying: {fault}"
                        );
                        std::thread::sleep(Duration::from_millis(100 << (attempt - 1)));
                        attempt += 1;
                    }
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(())
    }
}
