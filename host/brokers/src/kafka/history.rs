//! Reading what was read before, or long ago: a batch's offset ranges
//! again after a crash, and the history a Kappa replay reads.

use super::client::{Reports, TopicPartition};
use super::reader::{Collected, Failure, Records, consume_error, consumer, discover};
use super::{KafkaConfig, KafkaSource, OffsetRange};
use rdkafka::Offset;
use rdkafka::consumer::Consumer;
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::topic_partition_list::TopicPartitionList;
use sluice_core::error::Result as EngineResult;
use sluice_core::rdd::Rdd;
use sluice_core::time::BatchTime;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The history a replay reads.
pub(super) struct History {
    /// Per partition: the first offset to read and the end (exclusive).
    pub(super) ranges: BTreeMap<TopicPartition, (i64, i64)>,
    /// When the first of those records was stored (ms since the epoch).
    pub(super) first: Option<i64>,
}

impl KafkaSource {
    /// A replay's batch at `time`: per partition, the records stored up to
    /// `time` (and the replay's end), waiting until each partition shows a
    /// later record or its history is read.
    pub(super) fn history_batch(&mut self, time: BatchTime) -> EngineResult<Rdd> {
        let Some(replay) = &self.replay else {
            return Err(self.error("not replaying"));
        };
        let cut = time.millis().min(replay.to);
        let mut ranges = Vec::with_capacity(self.next.len());
        let mut records = BTreeMap::new();
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        for (tp, next) in &self.next {
            let end = replay.ends.get(tp).copied().unwrap_or(*next);
            let mut taken = Records::default();
            let mut at = *next;
            loop {
                if let Some(fatal) = self.shared.reports.fatal() {
                    return Err(self.error(fatal));
                }
                let (more, later) = self.shared.take_until(tp, at, cut);
                if let Some(last) = more.last_offset() {
                    at = last + 1;
                }
                taken.extend(more);
                if later.is_some() || at >= end {
                    break;
                }
                if std::time::Instant::now() > deadline {
                    return Err(self.error(format!(
                        "replaying batch {time}: topic `{}` partition {} gave nothing past offset {at} in 60 s (its history ends at {end})",
                        tp.0, tp.1
                    )));
                }
                std::thread::sleep(Duration::from_millis(2));
            }
            ranges.push(OffsetRange {
                topic: tp.0.clone(),
                partition: tp.1,
                from: *next,
                until: at,
                count: taken.len() as u64,
            });
            records.insert(tp.clone(), taken);
        }
        let rdd = self.to_rdd(time, &ranges, &records)?;
        self.next = Self::offsets_of(&ranges);
        self.last = ranges;
        Ok(rdd)
    }
}

/// Reads the records of `ranges` again (a batch re-run after a crash),
/// by topic-partition.
pub(super) fn replay(
    config: &KafkaConfig,
    ranges: &[OffsetRange],
) -> Result<BTreeMap<TopicPartition, Records>, String> {
    let reports = Arc::new(Reports::default());
    let consumer = consumer(
        config,
        &format!("source `{}` (re-reading)", config.name),
        reports.clone(),
    )?;
    let mut tpl = TopicPartitionList::new();
    let mut got = Collected::new(config.decoding);
    let mut open = 0;
    for r in ranges.iter().filter(|r| r.count > 0) {
        let _ = tpl.add_partition_offset(&r.topic, r.partition, Offset::Offset(r.from));
        open += 1;
    }
    if open == 0 {
        return Ok(BTreeMap::new());
    }
    consumer.assign(&tpl).map_err(|e| e.to_string())?;
    let mut last_progress = Instant::now();
    while open > 0 {
        if let Some(f) = reports.fatal() {
            return Err(f);
        }
        if last_progress.elapsed() > Duration::from_secs(30) {
            let missing = unread(ranges, &got);
            return Err(format!(
                "{} could not be read again in 30 s (brokers down, or the records deleted by retention): {}",
                missing.join(", "),
                reports.take_errors().join("; ")
            ));
        }
        match consumer.poll(Duration::from_millis(200)) {
            None => {}
            Some(Err(e)) => {
                if let Some(fatal) = consume_error(config, &consumer, &e) {
                    return Err(fatal);
                }
            }
            Some(Ok(m)) => {
                let Some(range) = ranges
                    .iter()
                    .find(|r| r.partition == m.partition() && r.topic == m.topic())
                else {
                    continue;
                };
                let tp = (range.topic.clone(), range.partition);
                if (got.count_of(&tp) as u64) >= range.count
                    || m.offset() < range.from
                    || m.offset() >= range.until
                {
                    continue;
                }
                got.add(&m);
                last_progress = Instant::now();
                if got.count_of(&tp) as u64 == range.count {
                    open -= 1;
                }
            }
        }
    }
    Ok(got.into_records())
}

/// The ranges of `ranges` not read in full into `got`, described.
fn unread(ranges: &[OffsetRange], got: &Collected) -> Vec<String> {
    (ranges.iter())
        .filter(|r| r.count > 0)
        .filter(|r| (got.count_of(&(r.topic.clone(), r.partition)) as u64) < r.count)
        .map(|r| {
            let last = r.until - 1;
            format!(
                "topic `{}` partition {} offsets {}..{last}",
                r.topic, r.partition, r.from
            )
        })
        .collect()
}

/// The history a replay reads: per partition of the topics, the offsets
/// from the first record stored at or after `from` (`None`: the earliest
/// retained) up to the end now; and the time of the first of those
/// records.
pub(super) fn history(config: &KafkaConfig, from: Option<i64>) -> Result<History, String> {
    let reports = Arc::new(Reports::default());
    let consumer = consumer(
        config,
        &format!("source `{}` (replaying)", config.name),
        reports.clone(),
    )?;
    let timeout = Duration::from_secs(10);
    let failed = |e: Failure| match e {
        Failure::Retry(m) | Failure::Missing(m) => m,
    };
    let tps = discover(
        config,
        &consumer,
        &BTreeMap::new(),
        &BTreeMap::new(),
        timeout,
    )
    .map_err(failed)?;
    let unreachable = |e: KafkaError| format!("Kafka at {}: {e}", config.brokers);
    let mut ranges = BTreeMap::new();
    let mut by_time = TopicPartitionList::new();
    for tp in tps.keys() {
        let (low, high) = consumer
            .fetch_watermarks(&tp.0, tp.1, timeout)
            .map_err(unreachable)?;
        ranges.insert(tp.clone(), (low, high));
        if let Some(ms) = from {
            let _ = by_time.add_partition_offset(&tp.0, tp.1, Offset::Offset(ms));
        }
    }
    if by_time.count() > 0 {
        let at = consumer
            .offsets_for_times(by_time, timeout)
            .map_err(unreachable)?;
        for el in at.elements() {
            let tp = (el.topic().to_string(), el.partition());
            if let Some((start, end)) = ranges.get_mut(&tp) {
                *start = match el.offset() {
                    Offset::Offset(o) => o.min(*end),
                    _ => *end,
                };
            }
        }
    }
    // The first record's time: one record from every partition that has
    // any in the range.
    let mut tpl = TopicPartitionList::new();
    let mut waiting = 0;
    for ((t, p), (start, end)) in &ranges {
        if start < end {
            let _ = tpl.add_partition_offset(t, *p, Offset::Offset(*start));
            waiting += 1;
        }
    }
    let mut first: Option<i64> = None;
    if waiting > 0 {
        consumer.assign(&tpl).map_err(|e| e.to_string())?;
        let mut seen = std::collections::BTreeSet::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        while seen.len() < waiting {
            if let Some(f) = reports.fatal() {
                return Err(f);
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "no record came from Kafka at {} in 30 s",
                    config.brokers
                ));
            }
            if let Some(Ok(m)) = consumer.poll(Duration::from_millis(200))
                && seen.insert((m.topic().to_string(), m.partition()))
            {
                let t = m.timestamp().to_millis().unwrap_or(0);
                first = Some(first.map_or(t, |f| f.min(t)));
            }
        }
    }
    Ok(History { ranges, first })
}
