//! The input streams a context creates: one method per source connector.

use super::op::Input;
use super::{DStream, Node, StreamingContext, lock};
use crate::receiver::queue::{QueueSource, column_of};
use crate::receiver::socket::SocketConfig;
use crate::receiver::{LineSource, Source};
use sluice_sdk::Column;
use std::path::Path;

impl StreamingContext {
    /// A stream read from `source`, any implementation of [`Source`] (the
    /// broker connectors' way in).
    pub fn source_stream(&self, name: &str, source: Box<dyn Source>) -> DStream {
        self.add_source(name.to_string(), source)
    }

    pub(super) fn add_source(&self, name: String, source: Box<dyn Source>) -> DStream {
        let mut g = lock(&self.graph);
        g.check_open(&format!("source `{name}`"));
        let index = g.sources.len();
        g.sources.push(source);
        let id = g.nodes.len();
        let slide = g.interval;
        g.nodes.push(Node {
            name,
            op: Box::new(Input(index)),
            parents: Vec::new(),
            slide,
        });
        DStream {
            graph: self.graph.clone(),
            id,
        }
    }

    /// Lines from a TCP server at `host:port` (Spark's `socketTextStream`),
    /// sliced into one partition per worker (more for a large batch: see
    /// [`Rdd::from_received`](crate::rdd::Rdd::from_received)).
    pub fn socket_text_stream(&self, host: &str, port: u16) -> DStream {
        let config = SocketConfig {
            host: host.to_string(),
            port,
            ..SocketConfig::default()
        };
        self.socket_text_stream_with(config, self.workers)
    }

    /// Lines from a TCP server, with receiver settings and a partition count.
    pub fn socket_text_stream_with(&self, config: SocketConfig, partitions: usize) -> DStream {
        let name = format!("socket {}:{}", config.host, config.port);
        self.add_source(
            name,
            Box::new(LineSource::socket(config, partitions.max(1))),
        )
    }

    /// A stream whose batch `i` is `batches[i]` (then empty), each sliced into
    /// `partitions` (Spark's `queueStream` with `oneAtATime`).
    pub fn queue_stream(&self, batches: Vec<Vec<String>>, partitions: usize) -> DStream {
        self.queue_stream_with(batches, partitions, true, None)
    }

    /// Spark's `queueStream(queue, oneAtATime, default)`: with
    /// `one_at_a_time` batch `i` is `batches[i]`, else the first batch is
    /// every one of them (their partitions side by side, as Spark's union of
    /// the queued RDDs); once they are taken, every batch is `default`, or
    /// empty without one. A run without a batch limit ends when the queue is
    /// taken, the default being for streams that other sources keep going.
    pub fn queue_stream_with(
        &self,
        batches: Vec<Vec<String>>,
        partitions: usize,
        one_at_a_time: bool,
        default: Option<Vec<String>>,
    ) -> DStream {
        let batches = batches.iter().map(|b| column_of(b)).collect();
        let default = default.as_deref().map(column_of);
        self.queue_stream_columns(batches, partitions, one_at_a_time, default)
    }

    /// [`StreamingContext::queue_stream_with`] of batches already encoded:
    /// each a column of elements (the Python driver's `queueStream`).
    pub fn queue_stream_columns(
        &self,
        batches: Vec<Column>,
        partitions: usize,
        one_at_a_time: bool,
        default: Option<Column>,
    ) -> DStream {
        let source = QueueSource::new(batches, partitions.max(1), one_at_a_time, default);
        self.add_source("queue".to_string(), Box::new(source))
    }

    /// Lines of the files that appear in `dir` (Spark's `textFileStream`): each
    /// new file read once into the batch in which it appeared; files present
    /// at start only with `include_existing`. See [`crate::receiver`]'s file
    /// policy for the details.
    pub fn text_file_stream(&self, dir: impl AsRef<Path>, include_existing: bool) -> DStream {
        self.text_file_stream_with(dir, include_existing, self.workers)
    }

    /// [`StreamingContext::text_file_stream`] sliced into `partitions`.
    pub fn text_file_stream_with(
        &self,
        dir: impl AsRef<Path>,
        include_existing: bool,
        partitions: usize,
    ) -> DStream {
        let store = crate::receiver::file_store::LocalDir(dir.as_ref().to_path_buf());
        self.text_file_stream_in(Box::new(store), include_existing, partitions, None, None)
    }

    /// [`StreamingContext::text_file_stream_with`] remembering the names of
    /// the files read in `ledger`, so that a restart reads no file twice and
    /// reads the files that arrived while the job was down (see
    /// [`crate::receiver`]'s file policy).
    pub fn text_file_stream_remembered(
        &self,
        dir: impl AsRef<Path>,
        include_existing: bool,
        partitions: usize,
        ledger: impl AsRef<Path>,
    ) -> DStream {
        let store = crate::receiver::file_store::LocalDir(dir.as_ref().to_path_buf());
        self.text_file_stream_in(
            Box::new(store),
            include_existing,
            partitions,
            None,
            Some(ledger.as_ref()),
        )
    }

    /// [`StreamingContext::text_file_stream_with`] on any
    /// [`FileStore`](crate::receiver::file_store::FileStore) — object
    /// storage, say — reading at most `max_files` files per batch,
    /// remembering the names read in `ledger` when given.
    pub fn text_file_stream_in(
        &self,
        store: Box<dyn crate::receiver::file_store::FileStore>,
        include_existing: bool,
        partitions: usize,
        max_files: Option<usize>,
        ledger: Option<&Path>,
    ) -> DStream {
        let name = format!("files {}", store.describe());
        let mut source =
            crate::receiver::file::FileSource::on(store, include_existing, partitions.max(1));
        if let Some(max) = max_files {
            source = source.with_max_files(max);
        }
        if let Some(l) = ledger {
            source = source.with_ledger(l.to_path_buf());
        }
        self.add_source(name, Box::new(source))
    }

    /// Synthetic lines at a given rate (demos, benchmarks): see
    /// [`crate::receiver::generator::GeneratorConfig`].
    pub fn generator_stream(
        &self,
        config: crate::receiver::generator::GeneratorConfig,
        partitions: usize,
    ) -> DStream {
        let source = crate::receiver::generator::GeneratorSource::new(
            config,
            self.interval,
            partitions.max(1),
        );
        self.add_source("generator".to_string(), Box::new(source))
    }
}
