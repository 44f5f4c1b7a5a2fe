//! Output operations: what happens to a stream's batches.

pub(crate) mod jsonl;
pub mod objects;
pub(crate) mod plugin;
pub(crate) mod pprint;
pub mod text;

use crate::error::Result;
use crate::rdd::Rdd;
use crate::time::BatchTime;
use std::sync::{Arc, Mutex};

/// An output operation, run once per batch in registration order.
/// Where a stream's batches go: the seam an output connector implements
/// (this module's files and printers; the brokers of `sluice-brokers`),
/// added with [`DStream::output_to`](crate::DStream::output_to). A batch
/// re-run after a crash is emitted again with the same index and time: an
/// exactly-once output writes it so that the second copy replaces or
/// de-duplicates the first.
pub trait Output: Send {
    /// Handles batch number `index` (from 0) at `time`.
    fn emit(&mut self, time: BatchTime, index: u64, rdd: &Rdd) -> Result<()>;
    /// What it is, for the plan (`sluice explain`).
    fn describe(&self) -> String;
}

/// The part-file formats of [`DStream::save_as_text_files`] and
/// [`DStream::save_as_object_files`](crate::DStream::save_as_object_files),
/// for outputs that write the same layout elsewhere (object storage).
///
/// [`DStream::save_as_text_files`]: crate::DStream::save_as_text_files
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PartFormat {
    /// One line per element, Python's `str` of it.
    Text,
    /// Sluice's binary object format ([`objects`]).
    Objects,
}

impl PartFormat {
    /// Writes one partition as a part file.
    pub fn write(
        self,
        out: &mut dyn std::io::Write,
        part: &sluice_sdk::Batch,
    ) -> std::io::Result<()> {
        match self {
            PartFormat::Text => text::write_text_part(out, part),
            PartFormat::Objects => objects::write_object_part(out, part),
        }
    }

    /// The output operation's name, for the plan.
    pub fn operation(self) -> &'static str {
        match self {
            PartFormat::Text => "save_as_text_files",
            PartFormat::Objects => "save_as_object_files",
        }
    }
}

/// One batch as an output saw it: elements rendered as JSON, in partition order.
#[derive(Debug, Clone, PartialEq)]
pub struct CollectedBatch {
    /// Batch time.
    pub time: BatchTime,
    /// Batch number from 0.
    pub index: u64,
    /// Number of partitions.
    pub partitions: usize,
    /// The elements, rendered as JSON, in partition order.
    pub records: Vec<serde_json::Value>,
}

impl CollectedBatch {
    pub(crate) fn of(time: BatchTime, index: u64, rdd: &Rdd) -> Self {
        CollectedBatch {
            time,
            index,
            partitions: rdd.partitions.len(),
            records: rdd
                .elements()
                .map(|(k, v)| crate::render::to_json(&crate::render::element(k, v)))
                .collect(),
        }
    }

    /// The records sorted by their canonical JSON text (the golden-file order).
    pub fn sorted_records(&self) -> Vec<serde_json::Value> {
        let mut r: Vec<(String, serde_json::Value)> = self
            .records
            .iter()
            .map(|v| (crate::render::canonical_json(v), v.clone()))
            .collect();
        r.sort_by(|a, b| a.0.cmp(&b.0));
        r.into_iter().map(|(_, v)| v).collect()
    }
}

/// Keeps every batch in memory: `DStream::collect`, for tests and embedding.
pub(crate) struct Collect(pub(crate) Arc<Mutex<Vec<CollectedBatch>>>);

impl Output for Collect {
    fn describe(&self) -> String {
        "collect".to_string()
    }
    fn emit(&mut self, time: BatchTime, index: u64, rdd: &Rdd) -> Result<()> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(CollectedBatch::of(time, index, rdd));
        Ok(())
    }
}

/// A native closure per batch (`DStream::foreach_batch`).
pub(crate) struct ForEach<F>(pub(crate) F);

impl<F> Output for ForEach<F>
where
    F: FnMut(&CollectedBatch) -> Result<()> + Send,
{
    fn describe(&self) -> String {
        "foreach_batch (a native closure)".to_string()
    }
    fn emit(&mut self, time: BatchTime, index: u64, rdd: &Rdd) -> Result<()> {
        (self.0)(&CollectedBatch::of(time, index, rdd))
    }
}

/// A native closure per batch over the raw partitions (`DStream::foreach_rdd`).
pub(crate) struct ForEachRdd<F>(pub(crate) F);

impl<F> Output for ForEachRdd<F>
where
    F: FnMut(BatchTime, &Rdd) -> Result<()> + Send,
{
    fn describe(&self) -> String {
        "foreach_rdd (a native closure)".to_string()
    }
    fn emit(&mut self, time: BatchTime, _index: u64, rdd: &Rdd) -> Result<()> {
        (self.0)(time, rdd)
    }
}
