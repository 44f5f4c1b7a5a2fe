//! `nats`: a NATS JetStream stream as a source, in the direct model.
//!
//! Each batch is a range of the stream's sequence numbers: the batch
//! record holds the first and last sequence and the count, so a batch
//! re-run after a crash reads exactly the same records again (from the
//! stream, not from a log of Sluice's), and a checkpoint holds the next
//! sequence to read. A background reader pulls from a durable consumer
//! into a bounded buffer; each batch takes what arrived (at most
//! `max_rate` × interval records).
//!
//! The durable consumer (named by `durable`) is where the job's progress
//! shows to NATS tooling: it is acknowledged (ack-all) up to a checkpoint's
//! position once that checkpoint is durable, or after each batch when the
//! job keeps no checkpoints. On start it is recreated at the position the
//! job resumes from; without a checkpoint, an existing durable's
//! acknowledged position wins over `start`, as a Kafka consumer group's
//! committed offsets do. Redeliveries are dropped by sequence, so no record
//! is counted twice.

mod client;
mod history;
mod reader;
mod sink;

pub use sink::{NatsSink, NatsSinkConfig};

use crate::decode::{Decoding, Elements};
use crate::ranges::BatchRanges;
use reader::{Received, Shared};
use sluice_core::error::{Error, Result};
use sluice_core::rdd::Rdd;
use sluice_core::receiver::Source;
use sluice_core::time::BatchTime;
use sluice_sdk::Batch;
use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// Where a job without a checkpoint (and without its durable consumer on
/// the server) starts reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StartAt {
    /// The stream's first record (the default).
    #[default]
    All,
    /// Only records stored after the job starts.
    New,
    /// The record with this stream sequence, and on.
    Sequence(u64),
    /// The first record stored at or after this time (ms since the epoch).
    Time(i64),
}

/// Credentials for the server, if it asks for any.
#[derive(Debug, Clone, Default)]
pub struct NatsAuth {
    /// User and password.
    pub user: Option<(String, String)>,
    /// A token.
    pub token: Option<String>,
    /// A `.creds` file (JWT and NKey seed).
    pub credentials: Option<PathBuf>,
    /// Require TLS.
    pub tls: bool,
    /// CA certificates (PEM) to trust for TLS.
    pub ca: Option<PathBuf>,
}

/// A `nats` source's settings.
#[derive(Debug, Clone)]
pub struct NatsConfig {
    /// The source's name, in errors and logs.
    pub name: String,
    /// Server URL(s), comma separated (`nats://127.0.0.1:4222`).
    pub url: String,
    /// The JetStream stream.
    pub stream: String,
    /// Only records on subjects matching this filter (`None`: all).
    pub subject: Option<String>,
    /// The durable consumer's name.
    pub durable: String,
    /// Where a job without a checkpoint starts.
    pub start: StartAt,
    /// Credentials and TLS.
    pub auth: NatsAuth,
    /// Records per second at most (`None`: all that arrived, each batch).
    pub max_rate: Option<u64>,
    /// Records fetched but not yet in a batch, in bytes, before the reader
    /// waits.
    pub max_buffered_bytes: usize,
    /// How records become elements.
    pub decoding: Decoding,
    /// Partitions of each batch.
    pub partitions: usize,
    /// The job's batch interval (for `max_rate`).
    pub interval: Duration,
}

impl NatsConfig {
    /// A source of `stream` on `url`, with the defaults: every subject,
    /// durable `sluice-<name>`, from the first record, text records.
    pub fn new(name: &str, url: &str, stream: &str, interval: Duration) -> NatsConfig {
        NatsConfig {
            name: name.to_string(),
            url: url.to_string(),
            stream: stream.to_string(),
            subject: None,
            durable: format!("sluice-{name}"),
            start: StartAt::All,
            auth: NatsAuth::default(),
            max_rate: None,
            max_buffered_bytes: 64 << 20,
            decoding: Decoding::default(),
            partitions: 2,
            interval,
        }
    }
}

/// What one batch took: a range of stream sequences.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Range {
    first: u64,
    last: u64,
    count: u64,
}

impl Range {
    fn encode(&self) -> Vec<u8> {
        [self.first, self.last, self.count]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect()
    }

    fn decode(bytes: &[u8]) -> Option<Range> {
        if bytes.len() != 24 {
            return None;
        }
        let v =
            |i: usize| u64::from_le_bytes(bytes[i * 8..i * 8 + 8].try_into().unwrap_or_default());
        Some(Range {
            first: v(0),
            last: v(1),
            count: v(2),
        })
    }
}

/// The `nats` source.
pub struct NatsSource {
    config: Arc<NatsConfig>,
    runtime: Option<tokio::runtime::Runtime>,
    shared: Arc<Shared>,
    /// The next stream sequence a batch may take (records before it were
    /// taken by earlier batches).
    next: u64,
    /// What the last batch took.
    last: Range,
    /// The last record of each batch not yet acknowledged: (its sequence,
    /// the record), acknowledged when a checkpoint past it commits.
    unacked: VecDeque<(u64, Received)>,
    /// The job keeps checkpoints: acknowledge on commit, not per batch.
    /// The write-ahead record of batch ranges (with checkpoints).
    log: BatchRanges,
    /// Backpressure's rate, if lower than `max_rate`.
    rate: Option<f64>,
    /// A Kappa replay's bounds, when replaying.
    replay: Option<history::Replay>,
}

impl NatsSource {
    /// A source with these settings; it connects when the job starts.
    pub fn new(config: NatsConfig) -> NatsSource {
        let shared = Arc::new(Shared::new(config.max_buffered_bytes));
        NatsSource {
            config: Arc::new(config),
            runtime: None,
            shared,
            next: 0,
            last: Range::default(),
            unacked: VecDeque::new(),
            log: BatchRanges::default(),
            rate: None,
            replay: None,
        }
    }

    fn error(&self, message: impl Into<String>) -> Error {
        Error::Source {
            name: self.config.name.clone(),
            message: message.into(),
        }
    }

    fn runtime(&mut self) -> Result<&tokio::runtime::Runtime> {
        if self.runtime.is_none() {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .thread_name(format!("sluice-nats-{}", self.config.name))
                .enable_all()
                .build()
                .map_err(|e| {
                    Error::io(
                        format!("starting the NATS client of source `{}`", self.config.name),
                        e,
                    )
                })?;
            self.runtime = Some(rt);
        }
        Ok(self.runtime.as_ref().expect("just made"))
    }

    /// Records a batch may take now: `max_rate` (or backpressure's rate)
    /// × the interval, at least one.
    fn limit(&self) -> usize {
        let per_second = match (self.config.max_rate.map(|r| r as f64), self.rate) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        match per_second {
            Some(r) => ((r * self.config.interval.as_secs_f64()).floor() as usize).max(1),
            None => usize::MAX,
        }
    }

    /// The batch at `time` again, as it took `range` before.
    fn reread(&mut self, time: BatchTime, range: Range) -> Result<Rdd> {
        self.last = range;
        if range.count == 0 {
            return Ok(Rdd::empty(self.config.partitions));
        }
        let config = self.config.clone();
        let records = self
            .runtime()?
            .block_on(reader::replay(config, range.first, range.last, range.count))
            .map_err(|e| self.error(format!("re-running batch {time}: {e}")))?;
        self.next = self.next.max(range.last + 1);
        self.to_rdd(&records, time)
    }

    /// Decodes records into one column, then cuts it into the partitions.
    fn to_rdd(&self, records: &[Received], time: BatchTime) -> Result<Rdd> {
        let mut elements = Elements::default();
        for r in records {
            elements
                .push(&self.config.decoding, r.as_record())
                .map_err(|e| self.error(format!("batch {time}: {e}")))?;
        }
        if elements.skipped > 0 {
            tracing::warn!(
                source = %self.config.name,
                batch = %time,
                skipped = elements.skipped,
                "left out undecodable records, e.g. {}",
                elements.samples.join("; ")
            );
            self.shared.report(format!(
                "batch {time}: left out {} undecodable records: {}",
                elements.skipped,
                elements.samples.join("; ")
            ));
        }
        Ok(partitioned(elements.into_batch(), self.config.partitions))
    }

    /// Acknowledges (ack-all) the last record taken before `next`: at a
    /// checkpoint's commit, confirmed by the server before the job goes on
    /// (a job that stops right after still leaves its durable consumer
    /// acknowledged); without checkpoints, after each batch, unconfirmed.
    fn ack_before(&mut self, next: u64) {
        let mut last: Option<(u64, Received)> = None;
        while self.unacked.front().is_some_and(|(s, _)| *s < next) {
            let popped = self.unacked.pop_front();
            if popped.as_ref().map(|p| p.0) > last.as_ref().map(|l| l.0) {
                last = popped;
            }
        }
        let (Some((_, record)), Some(rt)) = (last, self.runtime.as_ref()) else {
            return;
        };
        let name = self.config.name.clone();
        if self.log.attached() {
            let confirmed = rt.block_on(async {
                tokio::time::timeout(Duration::from_secs(2), record.ack_confirmed()).await
            });
            match confirmed {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    tracing::warn!(source = %name, "acknowledging to the durable consumer: {e}")
                }
                Err(_) => {
                    tracing::warn!(source = %name, "acknowledging to the durable consumer: no answer in 2 s")
                }
            }
        } else {
            rt.spawn(async move {
                if let Err(e) = record.ack().await {
                    tracing::warn!(source = %name, "acknowledging to the durable consumer: {e}");
                }
            });
        }
    }
}

/// A batch cut into `n` partitions of consecutive elements.
fn partitioned(batch: Batch, n: usize) -> Rdd {
    if !batch.has_keys() {
        return Rdd::from_received(&batch.values, n);
    }
    let keys = Rdd::from_column(&batch.keys, n);
    let values = Rdd::from_column(&batch.values, n);
    Rdd {
        partitions: (keys.partitions.into_iter().zip(values.partitions))
            .map(|(k, v)| Batch {
                keys: k.values,
                values: v.values,
            })
            .collect(),
    }
}

impl Source for NatsSource {
    fn describe(&self) -> String {
        let subject = self.config.subject.as_deref().unwrap_or(">");
        format!(
            "nats stream {} subject {subject} on {}",
            self.config.stream, self.config.url
        )
    }

    fn partitions(&self) -> usize {
        self.config.partitions
    }

    fn start(&mut self) -> Result<()> {
        let from = (self.next > 0).then_some(self.next);
        let config = self.config.clone();
        let shared = self.shared.clone();
        match &self.replay {
            Some(r) if r.end > 0 => {
                let (next, end) = (self.next, r.end);
                self.runtime()?
                    .spawn(history::read(config, shared, next, end));
            }
            Some(_) => {}
            None => {
                self.runtime()?.spawn(reader::read(config, shared, from));
            }
        }
        Ok(())
    }

    fn replay_history(&mut self, from: Option<i64>, to: i64) -> Result<Option<i64>> {
        self.find_history(from, to)
    }

    fn next_batch(&mut self, time: BatchTime) -> Result<Rdd> {
        if let Some(fatal) = self.shared.fatal() {
            return Err(self.error(fatal));
        }
        if self.replay.is_some() {
            return self.history_batch(time);
        }
        if let Some(record) = self.log.taken_before(time)? {
            // This batch ran before a crash, with its outputs perhaps out:
            // the same records again.
            return self.replay_batch(time, &record);
        }
        let (taken, before) = self.shared.take(self.next, self.limit());
        if let Some(r) = before {
            self.unacked.push_back((r.sequence, r));
        }
        let Some(last) = taken.last() else {
            self.last = Range::default();
            return Ok(Rdd::empty(self.config.partitions));
        };
        let rdd = self.to_rdd(&taken, time)?;
        let range = Range {
            first: taken[0].sequence,
            last: last.sequence,
            count: taken.len() as u64,
        };
        self.log.record(&self.config.name, time, &range.encode())?;
        self.last = range;
        self.next = range.last + 1;
        let last = taken.into_iter().next_back().expect("not empty");
        self.unacked.push_back((range.last, last));
        if !self.log.attached() {
            self.ack_before(self.next);
        }
        Ok(rdd)
    }

    fn replay_batch(&mut self, time: BatchTime, record: &[u8]) -> Result<Rdd> {
        let range = Range::decode(record).ok_or_else(|| {
            self.error(format!(
                "the batch record of batch {time} is not a sequence range"
            ))
        })?;
        self.reread(time, range)
    }

    fn batch_record(&self) -> Vec<u8> {
        self.last.encode()
    }

    fn position(&self) -> Option<Vec<u8>> {
        let mut p = self.next.to_le_bytes().to_vec();
        p.extend_from_slice(self.config.stream.as_bytes());
        Some(p)
    }

    fn restore(&mut self, position: &[u8]) -> Result<()> {
        let (next, stream) = position
            .split_at_checked(8)
            .ok_or_else(|| self.error("the checkpoint's position is not a stream sequence"))?;
        let stream = String::from_utf8_lossy(stream);
        if stream != self.config.stream {
            return Err(self.error(format!(
                "the checkpoint read stream `{stream}`, the source reads `{}` (start over with --fresh to change it)",
                self.config.stream
            )));
        }
        self.next = u64::from_le_bytes(next.try_into().unwrap_or_default());
        Ok(())
    }

    fn attach_log(&mut self, dir: &Path) {
        // The stream is the log: only the range of each batch is written
        // (before it runs), and only what a checkpoint covers is
        // acknowledged. Opened at the first batch, after a fresh start
        // cleared the directory.
        self.log.attach(dir);
    }

    fn truncate_log(&mut self, oldest: BatchTime) {
        self.log.truncate(&self.config.name, oldest);
    }

    fn committed(&mut self, position: &[u8]) {
        if let Some(next) = position.get(..8) {
            self.ack_before(u64::from_le_bytes(next.try_into().unwrap_or_default()));
        }
    }

    fn stop(&mut self) {
        self.shared.close();
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_timeout(Duration::from_secs(2));
        }
    }

    fn set_rate(&mut self, rate: Option<f64>) {
        self.rate = rate;
    }

    fn rate_limit(&self) -> Option<f64> {
        match (self.config.max_rate.map(|r| r as f64), self.rate) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn take_errors(&mut self) -> Vec<String> {
        self.shared.take_errors()
    }

    /// One partition: the stream (with its subject filter).
    fn lag(&self) -> Vec<(String, u64)> {
        let name = match &self.config.subject {
            Some(s) => format!("{} {s}", self.config.stream),
            None => self.config.stream.clone(),
        };
        vec![(name, self.shared.lag())]
    }
}

impl Drop for NatsSource {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_round_trip_and_garbage_is_refused() {
        let r = Range {
            first: 5,
            last: 90,
            count: 40,
        };
        assert_eq!(Range::decode(&r.encode()), Some(r));
        assert_eq!(Range::decode(b"short"), None);
    }

    #[test]
    fn a_position_of_another_stream_is_refused() {
        let mut a = NatsSource::new(NatsConfig::new(
            "s",
            "nats://127.0.0.1:1",
            "A",
            Duration::from_secs(1),
        ));
        a.next = 42;
        let pos = a.position().unwrap();
        let mut b = NatsSource::new(NatsConfig::new(
            "s",
            "nats://127.0.0.1:1",
            "B",
            Duration::from_secs(1),
        ));
        let err = b.restore(&pos).unwrap_err().to_string();
        assert!(
            err.contains("source `s`: the checkpoint read stream `A`"),
            "{err}"
        );
        let mut a2 = NatsSource::new(NatsConfig::new(
            "s",
            "nats://127.0.0.1:1",
            "A",
            Duration::from_secs(1),
        ));
        a2.restore(&pos).unwrap();
        assert_eq!(a2.next, 42);
    }

    #[test]
    fn the_rate_bounds_a_batch() {
        let mut c = NatsConfig::new("s", "nats://127.0.0.1:1", "A", Duration::from_millis(500));
        c.max_rate = Some(1000);
        let mut s = NatsSource::new(c);
        assert_eq!(s.limit(), 500);
        s.set_rate(Some(10.0));
        assert_eq!(s.limit(), 5);
        assert_eq!(s.rate_limit(), Some(10.0));
    }
}
