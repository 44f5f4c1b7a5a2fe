//! The Kafka side of the source: finding the partitions, where each
//! starts, the background reader that fills the per-partition buffers,
//! and re-reading a batch's offset ranges.

use super::client::{Context, Reports, TopicPartition, is_fatal, settings};
use super::{KafkaConfig, StartAt, Topics};
use crate::decode::{Decoding, Elements, RecordRef, Undecodable};
use rdkafka::Offset;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, Headers, Message};
use rdkafka::topic_partition_list::TopicPartitionList;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::ops::Range;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// A record's place in a [`Chunk`].
#[derive(Debug, Clone, Copy)]
struct Meta {
    offset: i64,
    /// When it was stored (ms since the epoch).
    time_ms: i64,
    /// Its element's index in the chunk, or [`LEFT_OUT`].
    element: u32,
}

/// The element index of a record that could not be decoded.
const LEFT_OUT: u32 = u32::MAX;

/// Records of one partition, up to a collection's worth, decoded as the
/// reader polled them: their elements in columns, ready for a batch to
/// copy whole, with no allocation per record.
#[derive(Default)]
pub(super) struct Chunk {
    records: Vec<Meta>,
    elements: Elements,
    /// The records that could not be decoded: index, and why. The policy
    /// applies when a batch takes them.
    undecodable: Vec<(usize, String)>,
    /// Bytes it holds, for the buffer's bound.
    bytes: usize,
}

impl Chunk {
    /// Decodes `m` (of `topic`) onto the end.
    pub(super) fn add(
        &mut self,
        d: &Decoding,
        topic: &str,
        m: &BorrowedMessage<'_>,
        with_headers: bool,
    ) {
        let headers: Vec<(String, String)> = match (with_headers, m.headers()) {
            (true, Some(h)) => (h.iter())
                .map(|h| {
                    let value = h.value.map(String::from_utf8_lossy).unwrap_or_default();
                    (h.key.to_string(), value.into_owned())
                })
                .collect(),
            _ => Vec::new(),
        };
        self.add_record(
            d,
            RecordRef {
                subject: topic,
                partition: Some(m.partition()),
                key: m.key(),
                sequence: m.offset() as u64,
                time_ms: m.timestamp().to_millis().unwrap_or(0),
                headers: &headers,
                payload: m.payload().unwrap_or_default(),
            },
        );
    }

    /// Decodes `record` onto the end. `d`'s policy must be `fail`: every
    /// undecodable record is kept as such here, and whether it fails its
    /// batch or is left out is for the batch ([`Collected::new`] makes it so).
    fn add_record(&mut self, d: &Decoding, record: RecordRef<'_>) {
        let (offset, time_ms) = (record.sequence as i64, record.time_ms);
        let bytes = record.payload.len() + record.key.map_or(0, <[u8]>::len) + 48;
        let before = self.elements.len();
        let element = match self.elements.push(d, record) {
            Ok(()) => before as u32,
            Err(why) => {
                self.undecodable.push((self.records.len(), why));
                LEFT_OUT
            }
        };
        self.records.push(Meta {
            offset,
            time_ms,
            element,
        });
        self.bytes += bytes;
    }

    pub(super) fn len(&self) -> usize {
        self.records.len()
    }

    /// Elements of the records before record `i`.
    fn elements_before(&self, i: usize) -> usize {
        (self.records[i..].iter())
            .find(|r| r.element != LEFT_OUT)
            .map_or(self.elements.len(), |r| r.element as usize)
    }
}

/// Records a batch took of one partition: spans of chunks, in offset
/// order.
#[derive(Default)]
pub(super) struct Records {
    spans: Vec<(Arc<Chunk>, Range<usize>)>,
}

impl Records {
    /// A chunk's records, all of them.
    pub(super) fn whole(chunk: Chunk) -> Records {
        let n = chunk.len();
        Records {
            spans: vec![(Arc::new(chunk), 0..n)],
        }
    }

    pub(super) fn len(&self) -> usize {
        self.spans.iter().map(|(_, s)| s.len()).sum()
    }

    /// The offset of the last record.
    pub(super) fn last_offset(&self) -> Option<i64> {
        let (chunk, span) = self.spans.last()?;
        Some(chunk.records[span.end - 1].offset)
    }

    pub(super) fn extend(&mut self, other: Records) {
        self.spans.extend(other.spans);
    }

    /// Appends the elements of records `span` (counted over all of them)
    /// to `into`. An undecodable record among them is the error under
    /// `fail`, else it is counted in `into.skipped` (the first few
    /// described in `into.samples`).
    pub(super) fn elements_into(
        &self,
        span: Range<usize>,
        policy: Undecodable,
        into: &mut Elements,
    ) -> Result<(), String> {
        let mut at = 0;
        for (chunk, s) in &self.spans {
            // This span's records among all of them: `at..at + s.len()`.
            let (from, to) = (span.start.max(at), span.end.min(at + s.len()));
            let base = at;
            at += s.len();
            if from >= to {
                continue;
            }
            let records = (s.start + from - base)..(s.start + to - base);
            for (_, why) in (chunk.undecodable.iter()).filter(|(i, _)| records.contains(i)) {
                if policy == Undecodable::Fail {
                    return Err(why.clone());
                }
                into.skipped += 1;
                if into.samples.len() < 3 {
                    into.samples.push(why.clone());
                }
            }
            let elements = chunk.elements_before(records.start)..chunk.elements_before(records.end);
            into.extend_range(&chunk.elements, elements)?;
        }
        Ok(())
    }
}

/// What the reader and the batches share.
pub(super) struct Shared {
    buffers: Mutex<Buffers>,
    /// Signalled when a batch takes records (room for the reader).
    room: Condvar,
    max_bytes: usize,
    closed: AtomicBool,
    /// Where the reader started each partition it found (resolved
    /// offsets): a batch takes from there when it has no position yet.
    starts: Mutex<BTreeMap<TopicPartition, i64>>,
    /// Offsets to commit to the consumer group (for monitoring tools).
    commits: Mutex<Option<BTreeMap<TopicPartition, i64>>>,
    pub(super) reports: Arc<Reports>,
}

#[derive(Default)]
struct Buffers {
    /// Per partition, chunks and where each starts (records before it
    /// were taken).
    parts: BTreeMap<TopicPartition, VecDeque<(Arc<Chunk>, usize)>>,
    bytes: usize,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Shared {
    pub(super) fn new(max_bytes: usize) -> Shared {
        Shared {
            buffers: Mutex::default(),
            room: Condvar::new(),
            max_bytes,
            closed: AtomicBool::new(false),
            starts: Mutex::default(),
            commits: Mutex::default(),
            reports: Arc::default(),
        }
    }

    /// Partitions found, and where the reader started each.
    pub(super) fn starts(&self) -> BTreeMap<TopicPartition, i64> {
        lock(&self.starts).clone()
    }

    /// Takes up to `limit` records of `tp` from offset `next` on (records
    /// before it were taken by earlier batches and are dropped).
    pub(super) fn take(&self, tp: &TopicPartition, next: i64, limit: usize) -> Records {
        self.take_while(tp, next, |taken, _| taken < limit)
    }

    /// Takes the records of `tp` from offset `next` on stored at or before
    /// `cut` (ms), in offset order, stopping at the first stored later;
    /// and that one's time, if there is one buffered (left for a later
    /// batch).
    pub(super) fn take_until(
        &self,
        tp: &TopicPartition,
        next: i64,
        cut: i64,
    ) -> (Records, Option<i64>) {
        let mut later = None;
        let taken = self.take_while(tp, next, |_, r| {
            if r.time_ms > cut {
                later = Some(r.time_ms);
                return false;
            }
            true
        });
        (taken, later)
    }

    /// Takes the records of `tp` from offset `next` on while `more(taken
    /// so far, next record)` says so.
    fn take_while(
        &self,
        tp: &TopicPartition,
        next: i64,
        mut more: impl FnMut(usize, &Meta) -> bool,
    ) -> Records {
        let mut b = lock(&self.buffers);
        let mut out = Records::default();
        let mut taken = 0;
        let mut freed = 0;
        if let Some(q) = b.parts.get_mut(tp) {
            'chunks: while let Some((chunk, start)) = q.front_mut() {
                // Records before `next` were taken by batches a recovery
                // re-ran.
                let from = *start + chunk.records[*start..].partition_point(|r| r.offset < next);
                let mut end = from;
                while end < chunk.len() {
                    if !more(taken, &chunk.records[end]) {
                        if end > from {
                            out.spans.push((chunk.clone(), from..end));
                        }
                        *start = end;
                        break 'chunks;
                    }
                    end += 1;
                    taken += 1;
                }
                if end > from {
                    out.spans.push((chunk.clone(), from..end));
                }
                freed += chunk.bytes;
                q.pop_front();
            }
        }
        b.bytes -= freed;
        drop(b);
        self.room.notify_all();
        out
    }

    /// Records buffered and not yet in a batch, per partition.
    pub(super) fn buffered(&self) -> BTreeMap<TopicPartition, usize> {
        (lock(&self.buffers).parts.iter())
            .map(|(tp, q)| (tp.clone(), q.iter().map(|(c, start)| c.len() - start).sum()))
            .collect()
    }

    /// Buffers what the reader collected once there is room (the buffer
    /// may go over its bound by one collection, [`COLLECT`] records);
    /// `false` once the source stopped.
    fn push(&self, collected: &mut Collected) -> bool {
        let mut b = lock(&self.buffers);
        while b.bytes >= self.max_bytes && !self.closed.load(Ordering::SeqCst) {
            b = self
                .room
                .wait_timeout(b, Duration::from_millis(200))
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        if self.closed.load(Ordering::SeqCst) {
            return false;
        }
        for (tp, chunk) in collected.parts.iter_mut() {
            if chunk.len() == 0 {
                continue;
            }
            let chunk = Arc::new(std::mem::take(chunk));
            b.bytes += chunk.bytes;
            b.parts.entry(tp.clone()).or_default().push_back((chunk, 0));
        }
        collected.count = 0;
        true
    }

    /// Asks the reader to commit these offsets to the consumer group.
    pub(super) fn commit(&self, offsets: BTreeMap<TopicPartition, i64>) {
        *lock(&self.commits) = Some(offsets);
    }

    pub(super) fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        self.room.notify_all();
    }

    fn closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst)
    }
}

/// Most records the reader collects before handing them to the buffers:
/// one lock and one wake-up per collection instead of per record.
const COLLECT: usize = 4096;

/// Records the reader polled and has not buffered yet, by partition.
pub(super) struct Collected {
    /// Few partitions per source: a list, the last one used first.
    parts: Vec<(TopicPartition, Chunk)>,
    last: usize,
    count: usize,
    decoding: Decoding,
    with_headers: bool,
}

impl Collected {
    pub(super) fn new(decoding: Decoding) -> Collected {
        Collected {
            parts: Vec::new(),
            last: 0,
            count: 0,
            decoding: Decoding {
                on_undecodable: Undecodable::Fail,
                ..decoding
            },
            with_headers: decoding.shape == crate::Shape::Record,
        }
    }

    pub(super) fn add(&mut self, m: &BorrowedMessage<'_>) {
        let (topic, partition) = (m.topic(), m.partition());
        let same = |(tp, _): &(TopicPartition, Chunk)| tp.1 == partition && tp.0 == topic;
        if !self.parts.get(self.last).is_some_and(same) {
            self.last = match self.parts.iter().position(same) {
                Some(i) => i,
                None => {
                    (self.parts).push(((topic.to_string(), partition), Chunk::default()));
                    self.parts.len() - 1
                }
            };
        }
        let (tp, chunk) = &mut self.parts[self.last];
        chunk.add(&self.decoding, &tp.0, m, self.with_headers);
        self.count += 1;
    }

    /// The records collected, by partition.
    pub(super) fn into_records(self) -> BTreeMap<TopicPartition, Records> {
        (self.parts.into_iter())
            .map(|(tp, chunk)| (tp, Records::whole(chunk)))
            .collect()
    }

    /// Records collected of `tp`.
    pub(super) fn count_of(&self, tp: &TopicPartition) -> usize {
        (self.parts.iter())
            .find(|(t, _)| t == tp)
            .map_or(0, |(_, c)| c.len())
    }
}

/// A consumer of the source's brokers, reading no group's assignment
/// (partitions are assigned by hand) and committing only when told.
pub(super) fn consumer(
    config: &KafkaConfig,
    what: &str,
    reports: Arc<Reports>,
) -> Result<BaseConsumer<Context>, String> {
    let context = Context {
        what: what.to_string(),
        brokers: config.brokers.clone(),
        reports,
    };
    settings(
        &config.brokers,
        &config.properties,
        &[
            ("group.id", &config.group_id),
            ("enable.auto.commit", "false"),
            ("enable.auto.offset.store", "false"),
            ("auto.offset.reset", "error"),
            ("isolation.level", "read_committed"),
            // A broker may answer a fetch with more than asked for (Tansu
            // does), over the prefetch queue's bound; librdkafka then waits
            // this long (1 s by default) before fetching that partition
            // again, which held the source to ~150k records/s.
            ("fetch.queue.backoff.ms", "10"),
        ],
    )
    .create_with_context(context)
    .map_err(|e| format!("{what}: {e}"))
}

/// Reads the topics into the buffers until the source stops: finds the
/// partitions (again every few seconds: new ones are read from their
/// start), starts each at `from` (the job's position), else at the
/// group's committed offset, else at the configured start.
pub(super) fn read(
    config: Arc<KafkaConfig>,
    shared: Arc<Shared>,
    from: BTreeMap<TopicPartition, i64>,
) {
    let what = format!("source `{}`", config.name);
    let consumer = match consumer(&config, &what, shared.reports.clone()) {
        Ok(c) => c,
        Err(e) => return shared.reports.set_fatal(e),
    };
    let mut assigned: BTreeMap<TopicPartition, i64> = BTreeMap::new();
    let mut backoff = Duration::from_millis(200);
    let mut next_discovery = Instant::now();
    let mut missing_since: Option<Instant> = None;
    let mut collected = Collected::new(config.decoding);
    while !shared.closed() {
        if Instant::now() >= next_discovery {
            let timeout = (backoff * 5).clamp(Duration::from_secs(1), Duration::from_secs(10));
            match discover(&config, &consumer, &assigned, &from, timeout) {
                Ok(found) if !found.is_empty() => {
                    let mut tpl = TopicPartitionList::new();
                    for (tp, offset) in &found {
                        let _ = tpl.add_partition_offset(&tp.0, tp.1, Offset::Offset(*offset));
                    }
                    if let Err(e) = consumer.incremental_assign(&tpl) {
                        shared
                            .reports
                            .report(format!("{what}: assigning partitions: {e}"));
                        continue;
                    }
                    lock(&shared.starts).extend(found.clone());
                    assigned.extend(found);
                    next_discovery = Instant::now() + Duration::from_secs(10);
                    backoff = Duration::from_millis(200);
                }
                Ok(_) => {
                    next_discovery = Instant::now()
                        + Duration::from_secs(if assigned.is_empty() { 1 } else { 10 })
                }
                Err(Failure::Missing(m)) => {
                    let since = *missing_since.get_or_insert_with(Instant::now);
                    if since.elapsed() >= MISSING_GRACE {
                        return shared.reports.set_fatal(format!("{what}: {m}"));
                    }
                    shared.reports.report(format!("{what}: {m}"));
                    next_discovery = Instant::now() + Duration::from_millis(500);
                }
                Err(Failure::Retry(m)) => {
                    tracing::warn!(source = %config.name, "{m}; trying again in {backoff:?}");
                    shared.reports.report(format!("{what}: {m}"));
                    next_discovery = Instant::now() + backoff;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
        if !config.replaying {
            commit(&config, &consumer, &shared, CommitMode::Async);
        }
        let error = collect(&consumer, &mut collected);
        if collected.count > 0 && !shared.push(&mut collected) {
            break;
        }
        if let Some(e) = error {
            if let Some(fatal) = consume_error(&config, &consumer, &e) {
                return shared.reports.set_fatal(format!("{what}: {fatal}"));
            }
            tracing::warn!(source = %config.name, "{e}");
            shared.reports.report(format!("{what}: {e}"));
        }
    }
    // The last checkpoint's offsets, before the job goes.
    if !config.replaying {
        commit(&config, &consumer, &shared, CommitMode::Sync);
    }
}

/// Polls records into `collected`, waiting up to 100 ms for the first and
/// not at all for the rest, until they pause or [`COLLECT`] are in hand;
/// an error the consumer reported stops it.
fn collect(consumer: &BaseConsumer<Context>, collected: &mut Collected) -> Option<KafkaError> {
    let mut wait = Duration::from_millis(100);
    while collected.count < COLLECT {
        match consumer.poll(wait)? {
            Ok(m) => collected.add(&m),
            Err(e) => return Some(e),
        }
        wait = Duration::ZERO;
    }
    None
}

/// Commits the offsets a batch or checkpoint asked for, if any.
fn commit(
    config: &KafkaConfig,
    consumer: &BaseConsumer<Context>,
    shared: &Shared,
    mode: CommitMode,
) {
    let Some(offsets) = lock(&shared.commits).take() else {
        return;
    };
    let mut tpl = TopicPartitionList::new();
    for ((t, p), o) in offsets {
        let _ = tpl.add_partition_offset(&t, p, Offset::Offset(o));
    }
    if let Err(e) = consumer.commit(&tpl, mode) {
        tracing::warn!(source = %config.name, "committing offsets to group `{}`: {e}", config.group_id);
    }
}

/// Why a step failed.
pub(super) enum Failure {
    /// Worth trying again (no broker answers; refused credentials come
    /// through the client's error callback as fatal).
    Retry(String),
    /// A named topic does not exist: fatal unless it appears within
    /// [`MISSING_GRACE`] (a broker that just came up, its topics being
    /// made).
    Missing(String),
}

/// How long a named topic may be missing before the job stops.
const MISSING_GRACE: Duration = Duration::from_secs(5);

/// What a consumer error means: `Some` when no retry can mend it (a
/// position deleted by retention, refused credentials).
pub(super) fn consume_error(
    config: &KafkaConfig,
    consumer: &BaseConsumer<Context>,
    e: &KafkaError,
) -> Option<String> {
    let code = e.rdkafka_error_code();
    if matches!(
        code,
        Some(RDKafkaErrorCode::AutoOffsetReset | RDKafkaErrorCode::OffsetOutOfRange)
    ) {
        let lost = consumer
            .position()
            .ok()
            .map(|tpl| {
                (tpl.elements().iter())
                    .filter_map(|el| {
                        let Offset::Offset(at) = el.offset() else {
                            return None;
                        };
                        let (low, _) = consumer
                            .fetch_watermarks(el.topic(), el.partition(), Duration::from_secs(5))
                            .ok()?;
                        (at < low).then(|| {
                            format!(
                                "topic `{}` partition {} offsets {at}..{}",
                                el.topic(),
                                el.partition(),
                                low - 1
                            )
                        })
                    })
                    .collect::<Vec<_>>()
                    .join(", ")
            })
            .unwrap_or_default();
        return Some(format!(
            "the brokers no longer hold records the job has not read: {} deleted by retention before it read them ({e}); nothing was skipped — start over with --fresh (and a `start`) to go on from what is left",
            if lost.is_empty() {
                "a range".to_string()
            } else {
                lost
            }
        ));
    }
    if is_fatal(e)
        || matches!(
            code,
            Some(RDKafkaErrorCode::UnknownTopicOrPartition | RDKafkaErrorCode::UnknownTopic)
        )
    {
        return Some(format!("Kafka at {}: {e}", config.brokers));
    }
    None
}

/// Partitions of the configured topics not in `known`, each with the
/// offset to start at.
pub(super) fn discover(
    config: &KafkaConfig,
    consumer: &BaseConsumer<Context>,
    known: &BTreeMap<TopicPartition, i64>,
    from: &BTreeMap<TopicPartition, i64>,
    timeout: Duration,
) -> Result<BTreeMap<TopicPartition, i64>, Failure> {
    let metadata = consumer
        .fetch_metadata(None, timeout)
        .map_err(|e| Failure::Retry(format!("cannot reach Kafka at {}: {e}", config.brokers)))?;
    let mut found = Vec::new();
    let mut present = Vec::new();
    for t in metadata.topics() {
        if !config.topics.matches(t.name()) || t.error().is_some() {
            continue;
        }
        if config.replaying && !from.is_empty() && !from.keys().any(|(topic, _)| topic == t.name())
        {
            // A replay reads the partitions it started with.
            continue;
        }
        present.push(t.name().to_string());
        for p in t.partitions() {
            let tp = (t.name().to_string(), p.id());
            if !known.contains_key(&tp) {
                found.push(tp);
            }
        }
    }
    if let Topics::Names(names) = &config.topics {
        let missing: Vec<&String> = names.iter().filter(|n| !present.contains(n)).collect();
        if !missing.is_empty() {
            let list: Vec<String> = missing.iter().map(|m| format!("`{m}`")).collect();
            return Err(Failure::Missing(format!(
                "topic {} does not exist on Kafka at {} (create it, or fix `topics`)",
                list.join(", "),
                config.brokers
            )));
        }
    }
    found.sort();
    starting_offsets(config, consumer, &found, from, known.is_empty())
}

/// Where each new partition starts: the job's own position, else the
/// group's committed offset, else `start` (for partitions found after
/// the job began: their first record).
fn starting_offsets(
    config: &KafkaConfig,
    consumer: &BaseConsumer<Context>,
    found: &[TopicPartition],
    from: &BTreeMap<TopicPartition, i64>,
    at_start: bool,
) -> Result<BTreeMap<TopicPartition, i64>, Failure> {
    let timeout = Duration::from_secs(5);
    let unreachable =
        |e: KafkaError| Failure::Retry(format!("cannot reach Kafka at {}: {e}", config.brokers));
    let mut out = BTreeMap::new();
    let mut rest = Vec::new();
    for tp in found {
        match from.get(tp) {
            Some(o) => {
                out.insert(tp.clone(), *o);
            }
            None => rest.push(tp.clone()),
        }
    }
    if rest.is_empty() {
        return Ok(out);
    }
    let mut tpl = TopicPartitionList::new();
    for (t, p) in &rest {
        tpl.add_partition(t, *p);
    }
    let committed = consumer
        .committed_offsets(tpl, timeout)
        .map_err(unreachable)?;
    let committed: HashMap<(String, i32), Offset> = committed.to_topic_map();
    let mut by_time = TopicPartitionList::new();
    for tp in rest {
        if let Some(Offset::Offset(o)) = committed.get(&tp) {
            out.insert(tp, *o);
            continue;
        }
        let (low, high) = consumer
            .fetch_watermarks(&tp.0, tp.1, timeout)
            .map_err(unreachable)?;
        let start = if at_start {
            &config.start
        } else {
            &StartAt::Earliest
        };
        match start {
            StartAt::Earliest => {
                out.insert(tp, low);
            }
            StartAt::Latest => {
                out.insert(tp, high);
            }
            StartAt::Offsets(given) => {
                let o = (given.iter())
                    .find(|(t, p, _)| (t, *p) == (&tp.0, tp.1))
                    .map_or(low, |g| g.2);
                out.insert(tp, o.clamp(low, high));
            }
            StartAt::Time(ms) => {
                let _ = by_time.add_partition_offset(&tp.0, tp.1, Offset::Offset(*ms));
                out.insert(tp, high);
            }
        }
    }
    if by_time.count() > 0 {
        let at = consumer
            .offsets_for_times(by_time, timeout)
            .map_err(unreachable)?;
        for el in at.elements() {
            if let Offset::Offset(o) = el.offset() {
                out.insert((el.topic().to_string(), el.partition()), o);
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A chunk of `topic` partition 0 holding `payloads` from `offset` on,
    /// stored at 1000 ms + offset.
    fn chunk(offset: i64, payloads: &[&[u8]]) -> Chunk {
        let mut c = Chunk::default();
        for (i, p) in payloads.iter().enumerate() {
            let o = offset + i as i64;
            c.add_record(
                &Decoding::default(), // the default policy: fail
                RecordRef {
                    subject: "t",
                    partition: Some(0),
                    key: None,
                    sequence: o as u64,
                    time_ms: 1000 + o,
                    headers: &[],
                    payload: p,
                },
            );
        }
        c
    }

    fn buffered(shared: &Shared, chunks: Vec<Chunk>) {
        let tp = ("t".to_string(), 0);
        let mut b = lock(&shared.buffers);
        for c in chunks {
            b.bytes += c.bytes;
            b.parts
                .entry(tp.clone())
                .or_default()
                .push_back((Arc::new(c), 0));
        }
    }

    fn texts(
        records: &Records,
        span: Range<usize>,
        policy: Undecodable,
    ) -> Result<(Vec<String>, u64), String> {
        let mut e = Elements::default();
        records.elements_into(span, policy, &mut e)?;
        let skipped = e.skipped;
        let batch = e.into_batch();
        let texts = (batch.values.iter())
            .map(|v| rmp_serde::from_slice::<String>(v).expect("a string"))
            .collect();
        Ok((texts, skipped))
    }

    #[test]
    fn batches_take_spans_of_chunks_with_their_elements_in_offset_order() {
        let shared = Shared::new(1 << 20);
        let tp = ("t".to_string(), 0);
        buffered(
            &shared,
            vec![
                chunk(0, &[b"a", b"b", b"\xff", b"d"]),
                chunk(4, &[b"e", b"f", b"g"]),
            ],
        );
        // Offsets before `next` (taken before a restart) are dropped; a
        // take may end inside a chunk, the next one goes on from there.
        let first = shared.take(&tp, 1, 4);
        assert_eq!((first.len(), first.last_offset()), (4, Some(4)));
        assert_eq!(shared.buffered()[&tp], 2);
        // The undecodable record: left out and counted, or the error.
        assert_eq!(
            texts(&first, 0..4, Undecodable::Skip),
            Ok((vec!["b".to_string(), "d".to_string(), "e".to_string()], 1))
        );
        let err = texts(&first, 1..3, Undecodable::Fail).unwrap_err();
        assert!(
            err.starts_with("record 2 on `t` cannot be decoded as text"),
            "{err}"
        );
        assert_eq!(
            texts(&first, 2..4, Undecodable::Fail),
            Ok((vec!["d".to_string(), "e".to_string()], 0))
        );
        // By time: up to 1005 ms, and the next one's time.
        let (rest, later) = shared.take_until(&tp, 5, 1005);
        assert_eq!((rest.len(), later), (1, Some(1006)));
        assert_eq!(
            texts(&rest, 0..1, Undecodable::Fail),
            Ok((vec!["f".to_string()], 0))
        );
        let last = shared.take(&tp, 6, usize::MAX);
        assert_eq!((last.len(), last.last_offset()), (1, Some(6)));
        assert!(shared.buffered()[&tp] == 0 && lock(&shared.buffers).bytes == 0);
    }
}
