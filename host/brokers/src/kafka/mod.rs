//! `kafka`: Kafka topics as a source, in Spark's direct model
//! (`KafkaUtils.createDirectStream`), and as an output.
//!
//! Each batch is a set of **offset ranges**, one per topic-partition
//! (`from` up to `until`, and how many records): written to the source's
//! own log (with checkpoints) before the batch runs and kept in the job's
//! batch record, so a batch re-run after a crash reads exactly the same
//! records again from the brokers. A checkpoint holds the next offset of
//! every partition. A background reader (librdkafka through `rdkafka`)
//! fetches into a bounded buffer per partition; each batch takes what
//! arrived, at most `max_rate_per_partition` × the interval per
//! partition.
//!
//! Partitions map onto the stage's tasks: the batch's topic-partitions,
//! in order, go to task 0, 1, … round-robin (one Kafka partition per task
//! when `partitions` equals their number, as Spark's KafkaRDD). With
//! `min_partitions` (Spark's `minPartitions`), a batch whose records sit
//! in fewer topic-partitions than that has their ranges split into
//! contiguous offset pieces first: a partition that lags behind the
//! others, or a job catching up on one, keeps every task busy.
//!
//! Offsets are committed to the consumer group (`group_id`) after each
//! checkpoint (or after each batch without checkpoints), for monitoring
//! tools only: a restarted job resumes from its checkpoint, and the
//! group's offsets are where a job without one starts.

mod client;
mod history;
mod reader;
mod sink;

pub use client::{RESERVED, TopicPartition};
pub use sink::{KafkaSink, KafkaSinkConfig};

use crate::decode::{Decoding, Elements};
use crate::ranges::BatchRanges;
use reader::{Records, Shared};
use serde::{Deserialize, Serialize};
use sluice_core::error::{Error, Result};
use sluice_core::rdd::Rdd;
use sluice_core::receiver::Source;
use sluice_core::time::BatchTime;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// Which topics a source reads.
#[derive(Debug, Clone)]
pub enum Topics {
    /// These topics (each must exist).
    Names(Vec<String>),
    /// Every topic whose whole name matches this regular expression, as
    /// topics come and go (Spark's `SubscribePattern`).
    Pattern(regex::Regex),
}

impl Topics {
    fn matches(&self, topic: &str) -> bool {
        match self {
            Topics::Names(names) => names.iter().any(|n| n == topic),
            Topics::Pattern(re) => re.is_match(topic),
        }
    }

    fn describe(&self) -> String {
        match self {
            Topics::Names(n) => n.join(","),
            Topics::Pattern(re) => format!("/{}/", re.as_str()),
        }
    }
}

/// Where a job without a checkpoint (and without committed offsets in its
/// consumer group) starts reading each partition.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum StartAt {
    /// The partition's first record (the default).
    #[default]
    Earliest,
    /// Only records written after the job starts.
    Latest,
    /// The first record with a timestamp at or after this (ms since the
    /// epoch).
    Time(i64),
    /// These offsets (topic, partition, offset); partitions not named
    /// start at their first record.
    Offsets(Vec<(String, i32, i64)>),
}

/// A `kafka` source's settings.
#[derive(Debug, Clone)]
pub struct KafkaConfig {
    /// The source's name, in errors and logs.
    pub name: String,
    /// Bootstrap brokers, comma separated (`127.0.0.1:9092`).
    pub brokers: String,
    /// The topics.
    pub topics: Topics,
    /// The consumer group offsets are committed to.
    pub group_id: String,
    /// librdkafka properties (security and tuning: `security.protocol`,
    /// `sasl.mechanism`, `sasl.username`, `sasl.password`,
    /// `ssl.ca.location`, …).
    pub properties: Vec<(String, String)>,
    /// Where a job without a checkpoint starts.
    pub start: StartAt,
    /// Records per second per partition at most (`None`: all that
    /// arrived, each batch).
    pub max_rate_per_partition: Option<u64>,
    /// Records fetched but not yet in a batch, in bytes, before the
    /// reader waits.
    pub max_buffered_bytes: usize,
    /// How records become elements.
    pub decoding: Decoding,
    /// Partitions (tasks) of each batch.
    pub partitions: usize,
    /// Spark's `minPartitions`: when fewer topic-partitions than this have
    /// records in a batch, their ranges are split into contiguous offset
    /// pieces, in proportion to their sizes, so that the batch has about
    /// this many; the pieces are dealt onto the tasks. `None` (the
    /// default): one piece per topic-partition, as Spark's KafkaRDD.
    pub min_partitions: Option<usize>,
    /// The job's batch interval (for the rate).
    pub interval: Duration,
    /// Reading history for a replay (set by [`Source::replay_history`]):
    /// only the partitions found then, no offsets committed.
    replaying: bool,
}

impl KafkaConfig {
    /// A source of `topics` on `brokers`, with the defaults: group
    /// `sluice-<name>`, from the earliest record, text records.
    pub fn new(name: &str, brokers: &str, topics: Topics, interval: Duration) -> KafkaConfig {
        KafkaConfig {
            name: name.to_string(),
            brokers: brokers.to_string(),
            topics,
            group_id: format!("sluice-{name}"),
            properties: Vec::new(),
            start: StartAt::Earliest,
            max_rate_per_partition: None,
            max_buffered_bytes: 64 << 20,
            decoding: Decoding::default(),
            partitions: 2,
            min_partitions: None,
            interval,
            replaying: false,
        }
    }
}

/// What one batch took of one topic-partition: offsets `from` up to (not
/// including) `until`, `count` records (fewer than `until - from` where
/// the log has gaps: compaction, transaction markers).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OffsetRange {
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: i32,
    /// The first offset the batch may take.
    pub from: i64,
    /// One past the last offset it took.
    pub until: i64,
    /// Records it took.
    pub count: u64,
}

/// A batch's records as pieces, each a range's index in the batch and a
/// span of its records, given each range's record count: one piece per
/// range; or, when fewer than `min` ranges have records, each range with
/// records split into contiguous pieces in proportion to its share of the
/// batch (at least one each), Spark's `minPartitions` rule.
fn pieces(counts: &[usize], min: Option<usize>) -> Vec<(usize, std::ops::Range<usize>)> {
    let with_records = counts.iter().filter(|&&c| c > 0).count();
    let Some(min) = min.filter(|&m| with_records > 0 && with_records < m) else {
        return counts.iter().enumerate().map(|(i, &c)| (i, 0..c)).collect();
    };
    let total: usize = counts.iter().sum();
    let mut out = Vec::with_capacity(min + with_records);
    for (i, &c) in counts.iter().enumerate().filter(|(_, c)| **c > 0) {
        let parts = ((c as f64 / total as f64 * min as f64).round() as usize).clamp(1, c);
        out.extend((0..parts).map(|k| (i, c * k / parts..c * (k + 1) / parts)));
    }
    out
}

/// A batch's ranges, as the batch record and the range log keep them.
fn encode_ranges(ranges: &[OffsetRange]) -> Vec<u8> {
    rmp_serde::to_vec(ranges).unwrap_or_default()
}

fn decode_ranges(bytes: &[u8]) -> Option<Vec<OffsetRange>> {
    rmp_serde::from_slice(bytes).ok()
}

/// The `kafka` source.
pub struct KafkaSource {
    config: Arc<KafkaConfig>,
    shared: Arc<Shared>,
    reader: Option<std::thread::JoinHandle<()>>,
    /// The next offset a batch may take, per partition known.
    next: BTreeMap<TopicPartition, i64>,
    /// What the last batch took.
    last: Vec<OffsetRange>,
    /// Offsets to commit to the group once the current batch is done
    /// (without checkpoints).
    done: Option<BTreeMap<TopicPartition, i64>>,
    /// The write-ahead record of batch ranges (with checkpoints).
    log: BatchRanges,
    /// Backpressure's rate (records per second, all partitions).
    rate: Option<f64>,
    /// A replay: up to when (ms), and where each partition's history ends.
    replay: Option<Replay>,
}

/// What a replay reads.
struct Replay {
    to: i64,
    ends: BTreeMap<TopicPartition, i64>,
}

impl KafkaSource {
    /// A source with these settings; it connects when the job starts.
    pub fn new(config: KafkaConfig) -> KafkaSource {
        let shared = Arc::new(Shared::new(config.max_buffered_bytes));
        KafkaSource {
            config: Arc::new(config),
            shared,
            reader: None,
            next: BTreeMap::new(),
            last: Vec::new(),
            done: None,
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

    /// Records one partition's share of a batch may take.
    fn limit(&self, partitions: usize) -> usize {
        let interval = self.config.interval.as_secs_f64();
        let per_partition = self.config.max_rate_per_partition.map(|r| r as f64);
        let backpressure = self.rate.map(|r| r / partitions.max(1) as f64);
        let per_second = match (per_partition, backpressure) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        per_second.map_or(usize::MAX, |r| ((r * interval).floor() as usize).max(1))
    }

    /// Elements of `records` by topic-partition: the ranges (in the order
    /// of `ranges`), or the pieces [`pieces`] splits them into, dealt
    /// round-robin onto the tasks.
    fn to_rdd(
        &self,
        time: BatchTime,
        ranges: &[OffsetRange],
        records: &BTreeMap<TopicPartition, Records>,
    ) -> Result<Rdd> {
        let n = self.config.partitions.max(1);
        let mut tasks: Vec<Elements> = (0..n).map(|_| Elements::default()).collect();
        let none = Records::default();
        let held: Vec<&Records> = (ranges.iter())
            .map(|r| {
                records
                    .get(&(r.topic.clone(), r.partition))
                    .unwrap_or(&none)
            })
            .collect();
        let counts: Vec<usize> = held.iter().map(|h| h.len()).collect();
        for (j, (i, span)) in pieces(&counts, self.config.min_partitions)
            .into_iter()
            .enumerate()
        {
            held[i]
                .elements_into(span, self.config.decoding.on_undecodable, &mut tasks[j % n])
                .map_err(|e| {
                    self.error(format!(
                        "batch {time}: partition {}: {e}",
                        ranges[i].partition
                    ))
                })?;
        }
        let skipped: u64 = tasks.iter().map(|t| t.skipped).sum();
        if skipped > 0 {
            let samples: Vec<String> = tasks
                .iter()
                .flat_map(|t| t.samples.clone())
                .take(3)
                .collect();
            tracing::warn!(source = %self.config.name, batch = %time, skipped, "left out undecodable records, e.g. {}", samples.join("; "));
            self.shared.reports.report(format!(
                "batch {time}: left out {skipped} undecodable records: {}",
                samples.join("; ")
            ));
        }
        Ok(Rdd {
            partitions: tasks.into_iter().map(Elements::into_batch).collect(),
        })
    }

    /// The batch at `time` again, as it took `ranges` before.
    fn reread(&mut self, time: BatchTime, ranges: Vec<OffsetRange>) -> Result<Rdd> {
        let records = history::replay(&self.config, &ranges)
            .map_err(|e| self.error(format!("re-running batch {time}: {e}")))?;
        for r in &ranges {
            let next = self
                .next
                .entry((r.topic.clone(), r.partition))
                .or_insert(r.until);
            *next = (*next).max(r.until);
        }
        let rdd = self.to_rdd(time, &ranges, &records);
        self.last = ranges;
        rdd
    }

    fn offsets_of(ranges: &[OffsetRange]) -> BTreeMap<TopicPartition, i64> {
        (ranges.iter())
            .map(|r| ((r.topic.clone(), r.partition), r.until))
            .collect()
    }
}

impl Source for KafkaSource {
    fn describe(&self) -> String {
        format!(
            "kafka topics {} on {} (direct, offset ranges per partition)",
            self.config.topics.describe(),
            self.config.brokers
        )
    }

    fn partitions(&self) -> usize {
        self.config.partitions
    }

    fn start(&mut self) -> Result<()> {
        let config = self.config.clone();
        let shared = self.shared.clone();
        let from = self.next.clone();
        let handle = std::thread::Builder::new()
            .name(format!("sluice-kafka-{}", self.config.name))
            .spawn(move || reader::read(config, shared, from))
            .map_err(|e| {
                Error::io(
                    format!("starting the Kafka reader of source `{}`", self.config.name),
                    e,
                )
            })?;
        self.reader = Some(handle);
        Ok(())
    }

    fn next_batch(&mut self, time: BatchTime) -> Result<Rdd> {
        if let Some(fatal) = self.shared.reports.fatal() {
            return Err(self.error(fatal));
        }
        if self.replay.is_some() {
            return self.history_batch(time);
        }
        if let Some(done) = self.done.take() {
            // The previous batch ran: its offsets to the group.
            self.shared.commit(done);
        }
        if let Some(record) = self.log.taken_before(time)? {
            // This batch ran before a crash, with its outputs perhaps out:
            // the same records again.
            return self.replay_batch(time, &record);
        }
        for (tp, start) in self.shared.starts() {
            self.next.entry(tp).or_insert(start);
        }
        let limit = self.limit(self.next.len());
        let mut ranges = Vec::with_capacity(self.next.len());
        let mut records = BTreeMap::new();
        for (tp, next) in &self.next {
            let taken = self.shared.take(tp, *next, limit);
            let until = taken.last_offset().map_or(*next, |o| o + 1);
            ranges.push(OffsetRange {
                topic: tp.0.clone(),
                partition: tp.1,
                from: *next,
                until,
                count: taken.len() as u64,
            });
            records.insert(tp.clone(), taken);
        }
        let rdd = self.to_rdd(time, &ranges, &records)?;
        self.log
            .record(&self.config.name, time, &encode_ranges(&ranges))?;
        self.next = Self::offsets_of(&ranges);
        if !self.log.attached() {
            self.done = Some(self.next.clone());
        }
        self.last = ranges;
        Ok(rdd)
    }

    fn replay_batch(&mut self, time: BatchTime, record: &[u8]) -> Result<Rdd> {
        let ranges = decode_ranges(record).ok_or_else(|| {
            self.error(format!(
                "the batch record of batch {time} is not a list of offset ranges"
            ))
        })?;
        self.reread(time, ranges)
    }

    fn batch_record(&self) -> Vec<u8> {
        encode_ranges(&self.last)
    }

    fn position(&self) -> Option<Vec<u8>> {
        let offsets: Vec<(&str, i32, i64)> = (self.next.iter())
            .map(|((t, p), o)| (t.as_str(), *p, *o))
            .collect();
        rmp_serde::to_vec(&("kafka", offsets)).ok()
    }

    fn restore(&mut self, position: &[u8]) -> Result<()> {
        let (tag, offsets): (String, Vec<(String, i32, i64)>) = rmp_serde::from_slice(position)
            .map_err(|_| self.error("the checkpoint's position is not a set of Kafka offsets"))?;
        if tag != "kafka" {
            return Err(self.error("the checkpoint's position is not a set of Kafka offsets"));
        }
        if let Some((t, _, _)) = offsets
            .iter()
            .find(|(t, _, _)| !self.config.topics.matches(t))
        {
            return Err(self.error(format!(
                "the checkpoint read topic `{t}`, the source reads {} (start over with --fresh to change it)",
                self.config.topics.describe()
            )));
        }
        self.next = offsets.into_iter().map(|(t, p, o)| ((t, p), o)).collect();
        Ok(())
    }

    fn attach_log(&mut self, dir: &Path) {
        self.log.attach(dir);
    }

    fn truncate_log(&mut self, oldest: BatchTime) {
        self.log.truncate(&self.config.name, oldest);
    }

    fn replay_history(&mut self, from: Option<i64>, to: i64) -> Result<Option<i64>> {
        let mut config = (*self.config).clone();
        config.replaying = true;
        let history::History { ranges, first } =
            history::history(&config, from).map_err(|e| self.error(e))?;
        self.config = Arc::new(config);
        self.next = ranges
            .iter()
            .map(|(tp, (start, _))| (tp.clone(), *start))
            .collect();
        self.replay = Some(Replay {
            to,
            ends: ranges.into_iter().map(|(tp, (_, end))| (tp, end)).collect(),
        });
        Ok(first)
    }

    fn committed(&mut self, position: &[u8]) {
        if let Ok((_, offsets)) =
            rmp_serde::from_slice::<(String, Vec<(String, i32, i64)>)>(position)
        {
            self.shared
                .commit(offsets.into_iter().map(|(t, p, o)| ((t, p), o)).collect());
        }
    }

    fn stop(&mut self) {
        if let Some(done) = self.done.take() {
            self.shared.commit(done);
        }
        self.shared.close();
        if let Some(h) = self.reader.take() {
            let _ = h.join();
        }
    }

    fn set_rate(&mut self, rate: Option<f64>) {
        self.rate = rate;
    }

    fn rate_limit(&self) -> Option<f64> {
        let n = self.next.len().max(1) as f64;
        match (
            self.config.max_rate_per_partition.map(|r| r as f64 * n),
            self.rate,
        ) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn take_errors(&mut self) -> Vec<String> {
        self.shared.reports.take_errors()
    }

    /// One row per topic-partition: records on the brokers (by the last
    /// high watermark seen) not yet in a batch.
    fn lag(&self) -> Vec<(String, u64)> {
        let high = self.shared.reports.high();
        let buffered = self.shared.buffered();
        (self.next.iter())
            .map(|(tp, next)| {
                let on_brokers = high.get(tp).map_or(0, |h| (h - next).max(0) as u64);
                let held = buffered.get(tp).copied().unwrap_or(0) as u64;
                (format!("{} [{}]", tp.0, tp.1), on_brokers.max(held))
            })
            .collect()
    }
}

impl Drop for KafkaSource {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source(topics: Topics) -> KafkaSource {
        KafkaSource::new(KafkaConfig::new(
            "k",
            "127.0.0.1:1",
            topics,
            Duration::from_secs(1),
        ))
    }

    #[test]
    fn ranges_round_trip_and_garbage_is_refused() {
        let r = vec![OffsetRange {
            topic: "t".into(),
            partition: 3,
            from: 10,
            until: 20,
            count: 9,
        }];
        assert_eq!(decode_ranges(&encode_ranges(&r)), Some(r));
        assert_eq!(decode_ranges(b"\xc1garbage"), None);
    }

    #[test]
    fn a_position_of_other_topics_is_refused() {
        let mut a = source(Topics::Names(vec!["a".into()]));
        a.next.insert(("a".into(), 0), 42);
        a.next.insert(("a".into(), 1), 7);
        let pos = a.position().unwrap();
        let mut b = source(Topics::Names(vec!["b".into()]));
        let err = b.restore(&pos).unwrap_err().to_string();
        assert!(
            err.contains("source `k`: the checkpoint read topic `a`"),
            "{err}"
        );
        let mut p = source(Topics::Pattern(regex::Regex::new("^(a|c)$").unwrap()));
        p.restore(&pos).unwrap();
        assert_eq!(p.next.get(&("a".to_string(), 1)), Some(&7));
        assert!(b.restore(b"nonsense").is_err());
    }

    #[test]
    fn min_partitions_splits_the_ranges_with_records_in_proportion() {
        // One piece per range, empty ones too, without it or with enough
        // ranges.
        assert_eq!(
            pieces(&[3, 0, 5], None),
            vec![(0, 0..3), (1, 0..0), (2, 0..5)]
        );
        assert_eq!(pieces(&[3, 5], Some(2)), vec![(0, 0..3), (1, 0..5)]);
        // A lagging partition: its range in three pieces, the other whole.
        assert_eq!(
            pieces(&[900, 0, 300], Some(4)),
            vec![(0, 0..300), (0, 300..600), (0, 600..900), (2, 0..300)]
        );
        // Every record once, in order, whatever the sizes.
        for counts in [vec![1, 0, 0], vec![7], vec![10, 1], vec![0, 13, 2]] {
            for min in 1..6 {
                let p = pieces(&counts, Some(min));
                for (i, &c) in counts.iter().enumerate() {
                    let spans: Vec<_> = p
                        .iter()
                        .filter(|(r, _)| *r == i)
                        .map(|(_, s)| s.clone())
                        .collect();
                    let joined: Vec<usize> = spans.iter().flat_map(|s| s.clone()).collect();
                    assert_eq!(joined, (0..c).collect::<Vec<_>>(), "{counts:?} min {min}");
                }
            }
        }
        assert!(pieces(&[0, 0], Some(4)).iter().all(|(_, s)| s.is_empty()));
    }

    #[test]
    fn the_rate_bounds_each_partition() {
        let mut c = KafkaConfig::new(
            "k",
            "x:1",
            Topics::Names(vec!["t".into()]),
            Duration::from_millis(500),
        );
        c.max_rate_per_partition = Some(1000);
        let mut s = KafkaSource::new(c);
        assert_eq!(s.limit(4), 500);
        s.set_rate(Some(40.0));
        assert_eq!(s.limit(4), 5);
    }
}
