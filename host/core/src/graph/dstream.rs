//! DStream: naming, narrow transformations, aggregates and outputs.

use super::op::{
    Count, Glom, NarrowOp, Operator, Reduce, Repartition, Transform, TransformAll, Union,
};
use super::{DStream, Node, fits_slide, lock};
use crate::error::Result;
use crate::func::Func;
use crate::ops::narrow::Narrow;
use crate::rdd::Rdd;
use crate::sink::{Collect, CollectedBatch, ForEach, Output};
use crate::time::BatchTime;
use sluice_sdk::Kind;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

impl DStream {
    pub(super) fn derive(&self, name: &str, op: impl Operator + 'static) -> DStream {
        self.derive_from(name, op, vec![self.id])
    }

    pub(super) fn derive_from(
        &self,
        name: &str,
        op: impl Operator + 'static,
        parents: Vec<usize>,
    ) -> DStream {
        self.derive_with_slide(name, op, parents, None)
    }

    /// Adds a stream; its slide is `slide` (windows) or its parents', which
    /// must all be equal.
    pub(super) fn derive_with_slide(
        &self,
        name: &str,
        op: impl Operator + 'static,
        parents: Vec<usize>,
        slide: Option<i64>,
    ) -> DStream {
        let mut g = lock(&self.graph);
        let id = g.nodes.len();
        let name = format!("{name}#{id}");
        g.check_open(&format!("stream `{name}`"));
        let parent_slide = g.nodes[parents[0]].slide;
        if parents.iter().any(|&p| g.nodes[p].slide != parent_slide) {
            let slides: Vec<String> = parents
                .iter()
                .map(|&p| format!("`{}` every {} ms", g.nodes[p].name, g.nodes[p].slide))
                .collect();
            g.errors.push((
                id,
                format!(
                    "some of the streams have different slide durations: {}",
                    slides.join(", ")
                ),
            ));
        }
        g.nodes.push(Node {
            name,
            op: Box::new(op),
            parents,
            slide: slide.unwrap_or(parent_slide),
        });
        DStream {
            graph: self.graph.clone(),
            id,
        }
    }

    /// How often this stream produces a batch: the batch interval for input
    /// streams, the slide for windows, else its parent's.
    pub fn slide(&self) -> Duration {
        Duration::from_millis(lock(&self.graph).nodes[self.id].slide as u64)
    }

    /// Checks a window's durations against this (the parent) stream's slide;
    /// an error names both, as Spark's does.
    pub(super) fn window_durations(&self, length: Duration, slide: Duration) -> Option<String> {
        let parent = lock(&self.graph).nodes[self.id].slide;
        if !fits_slide(length, parent) {
            Some(format!(
                "the window duration ({} ms) must be a multiple of the slide duration of the parent stream ({parent} ms)",
                length.as_secs_f64() * 1000.0
            ))
        } else if !fits_slide(slide, parent) {
            Some(format!(
                "the slide duration ({} ms) must be a multiple of the slide duration of the parent stream ({parent} ms)",
                slide.as_secs_f64() * 1000.0
            ))
        } else {
            None
        }
    }

    pub(super) fn derive_window(
        &self,
        name: &str,
        op: impl Operator + 'static,
        length: Duration,
        slide: Duration,
    ) -> DStream {
        let error = self.window_durations(length, slide);
        let s = (slide.as_millis() as i64).max(1);
        let stream = self.derive_with_slide(name, op, vec![self.id], Some(s));
        if let Some(e) = error {
            lock(&self.graph).errors.push((stream.id, e));
        }
        stream
    }

    /// Names this stream (used in error messages; the job spec names every stream).
    pub fn named(self, name: &str) -> DStream {
        let mut g = lock(&self.graph);
        if g.check_open(&format!("naming `{name}`")) {
            g.nodes[self.id].name = name.to_string();
        }
        drop(g);
        self
    }

    /// The stream's name.
    pub fn name(&self) -> String {
        lock(&self.graph).nodes[self.id].name.clone()
    }

    /// `map(f)`: one output per element.
    pub fn map(&self, f: Func) -> DStream {
        self.derive("map", NarrowOp(Narrow::Map, f))
    }

    /// `flat_map(f)`: zero or more outputs per element.
    pub fn flat_map(&self, f: Func) -> DStream {
        self.derive("flat_map", NarrowOp(Narrow::FlatMap, f))
    }

    /// `filter(f)`: the elements for which `f` holds.
    pub fn filter(&self, f: Func) -> DStream {
        self.derive("filter", NarrowOp(Narrow::Filter, f))
    }

    pub(super) fn renamed(self, name: &str) -> DStream {
        let id = self.id;
        self.named(&format!("{name}#{id}"))
    }

    /// `map_partitions(f)`: `f` sees each partition's elements at once (empty
    /// partitions too) and returns any number of elements.
    pub fn map_partitions(&self, f: Func) -> DStream {
        self.derive("map_partitions", NarrowOp(Narrow::MapPartitions, f))
    }

    /// `transform(f)`: `f` sees each whole batch (all partitions, in order) in
    /// one call and returns the new batch, e.g. a top 3, in as many
    /// partitions as this stream's batch had (as Spark's `transform` keeps
    /// the partitioning of an RDD mapped inside it).
    pub fn transform(&self, f: Func) -> DStream {
        self.derive("transform", Transform(f))
    }

    /// `transform_all(streams, f)` (Spark's `StreamingContext.transform`):
    /// every batch, `f` (a `transform` function) sees one element per
    /// stream, in order, the array of that stream's whole batch, and returns
    /// the new batch, in as many partitions as the first stream's. The
    /// streams must have the same slide.
    ///
    /// # Panics
    /// When `streams` is empty or its streams come from different contexts.
    pub fn transform_all(streams: &[DStream], f: Func) -> DStream {
        let first = streams.first().expect("transform of no streams");
        assert!(
            streams.iter().all(|s| Arc::ptr_eq(&first.graph, &s.graph)),
            "transform of streams from different StreamingContexts"
        );
        let parents = streams.iter().map(|s| s.id).collect();
        first.derive_from("transform", TransformAll(f, streams.len()), parents)
    }

    /// `glom()`: each partition as one element, the array of its elements.
    pub fn glom(&self) -> DStream {
        self.derive("glom", Glom)
    }

    /// `repartition(n)`: the same elements spread evenly over exactly `n` partitions.
    pub fn repartition(&self, n: usize) -> DStream {
        self.derive("repartition", Repartition(n.max(1)))
    }

    /// `count()`: the number of elements of each batch, as one element
    /// (`0` for an empty batch).
    pub fn count(&self) -> DStream {
        self.derive("count", Count)
    }

    /// `reduce(f)`: all elements of each batch combined with the associative
    /// `f`, as one element (none for an empty batch).
    pub fn reduce(&self, f: Func) -> DStream {
        self.derive("reduce", Reduce(f))
    }

    /// `union(others)`: the elements of this stream and of every stream in
    /// `others`, batch by batch (their partitions side by side).
    ///
    /// # Panics
    /// When a stream comes from another [`StreamingContext`].
    pub fn union(&self, others: &[DStream]) -> DStream {
        let mut parents = vec![self.id];
        for o in others {
            assert!(
                Arc::ptr_eq(&self.graph, &o.graph),
                "union of streams from different StreamingContexts"
            );
            parents.push(o.id);
        }
        self.derive_from("union", Union, parents)
    }

    /// Sends every batch to `out`, any implementation of [`Output`] (the
    /// broker connectors' way out).
    pub fn output_to(&self, out: Box<dyn Output>) {
        self.add_output(out);
    }

    pub(super) fn add_output(&self, out: Box<dyn Output>) {
        let mut g = lock(&self.graph);
        let what = format!("an output of `{}`", g.nodes[self.id].name);
        if g.check_open(&what) {
            g.outputs.push((self.id, out));
        }
    }

    /// `pprint(num)`: prints the first `num` elements of every batch to stdout.
    pub fn pprint(&self, num: usize) {
        self.pprint_to(num, Box::new(std::io::stdout()));
    }

    /// `pprint(num)` to any writer.
    pub fn pprint_to(&self, num: usize, out: Box<dyn std::io::Write + Send>) {
        self.add_output(Box::new(crate::sink::pprint::Pprint { num, out }));
    }

    /// Writes every batch as a line of JSON to `path` (the test contract).
    pub fn save_jsonl(&self, path: impl AsRef<Path>) {
        self.add_output(Box::new(crate::sink::jsonl::Jsonl {
            path: path.as_ref().to_path_buf(),
            file: None,
        }));
    }

    /// `save_as_text_files(prefix, suffix)`: per batch a directory
    /// `prefix-<batch ms>[.suffix]` of `part-0000N` files (one element per
    /// line, as Python's `str` of it) and `_SUCCESS`, committed atomically.
    pub fn save_as_text_files(&self, prefix: impl AsRef<Path>, suffix: Option<&str>) {
        self.add_output(Box::new(crate::sink::text::TextFiles {
            prefix: prefix.as_ref().to_path_buf(),
            suffix: suffix.map(str::to_string),
        }));
    }

    /// `save_as_object_files(prefix)`: per batch a directory `prefix-<batch ms>`
    /// of typed elements in Sluice's binary object format (see
    /// [`crate::sink::objects`]; read back with `sluice cat DIR`), committed
    /// atomically.
    pub fn save_as_object_files(&self, prefix: impl AsRef<Path>) {
        self.add_output(Box::new(crate::sink::objects::ObjectFiles {
            prefix: prefix.as_ref().to_path_buf(),
        }));
    }

    /// Keeps every batch in memory; read the returned list after (or during) a run.
    pub fn collect(&self) -> Arc<Mutex<Vec<CollectedBatch>>> {
        let store = Arc::new(Mutex::new(Vec::new()));
        self.add_output(Box::new(Collect(store.clone())));
        store
    }

    /// Calls `f` with every batch's raw partitions (Spark's `foreachRDD`, natively,
    /// without rendering: for embedding and benchmarks).
    pub fn foreach_rdd<F>(&self, f: F)
    where
        F: FnMut(BatchTime, &Rdd) -> Result<()> + Send + 'static,
    {
        self.add_output(Box::new(crate::sink::ForEachRdd(f)));
    }

    /// `foreach_partition(sink)`: calls the plugin (or native) `sink` function
    /// on every partition of every batch, with the batch time in its context;
    /// a failing sink is retried, then fails the job (see
    /// `sink::plugin`).
    ///
    /// # Panics
    /// When `sink` is not a sink function.
    pub fn foreach_partition(&self, sink: Func) {
        assert_eq!(
            sink.kind(),
            Kind::Sink,
            "`{}` is a {}, not a sink function",
            sink.name(),
            sink.kind()
        );
        self.add_output(Box::new(crate::sink::plugin::PluginSink { func: sink }));
    }

    /// Calls `f` with every batch, rendered as JSON records.
    pub fn foreach_batch<F>(&self, f: F)
    where
        F: FnMut(&CollectedBatch) -> Result<()> + Send + 'static,
    {
        self.add_output(Box::new(ForEach(f)));
    }

    /// `slice(from, to)`: the remembered batches of this stream with times in
    /// `[from, to]`, both included, oldest first. Bounds off the stream's
    /// slide grid are floored onto it; times at or before the zero time (one
    /// interval before the first batch) are skipped; `from > to` gives none.
    /// Only batches kept by [`StreamingContext::remember`] are returned.
    pub fn slice(&self, from: BatchTime, to: BatchTime) -> Vec<CollectedBatch> {
        self.slice_rdds(from, to)
            .iter()
            .map(|(t, index, rdd)| CollectedBatch::of(*t, *index, rdd))
            .collect()
    }

    /// [`DStream::slice`] as the batches themselves: `(time, batch number,
    /// batch)`.
    pub fn slice_rdds(&self, from: BatchTime, to: BatchTime) -> Vec<(BatchTime, u64, Arc<Rdd>)> {
        let g = lock(&self.graph);
        let slide = g.nodes[self.id].slide;
        let history = g.history.lock().unwrap_or_else(|e| e.into_inner());
        let Some(zero) = history.zero else {
            return Vec::new();
        };
        let floor = |t: i64| zero + (t - zero).div_euclid(slide) * slide;
        let (from, to) = (floor(from.millis()).max(zero + 1), floor(to.millis()));
        history
            .batches
            .get(&self.id)
            .map(|kept| {
                kept.iter()
                    .filter(|(t, _, _)| t.millis() >= from && t.millis() <= to)
                    .cloned()
                    .collect()
            })
            .unwrap_or_default()
    }
}
