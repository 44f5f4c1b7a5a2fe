//! The Kafka side of the source: finding the partitions, where each
//! starts, the background reader that fills the per-partition buffers,
//! and re-reading a batch's offset ranges.

use super::client::{Context, Reports, TopicPartition, is_fatal, settings};
use super::{KafkaConfig, StartAt, Topics};
use rdkafka::Offset;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, Headers, Message};
use rdkafka::topic_partition_list::TopicPartitionList;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// One record, held until a batch takes it.
pub(super) struct Held {
    pub(super) offset: i64,
    pub(super) time_ms: i64,
    pub(super) key: Option<Vec<u8>>,
    pub(super) payload: Vec<u8>,
    pub(super) headers: Vec<(String, String)>,
}

impl Held {
    pub(super) fn of(m: &BorrowedMessage<'_>, with_headers: bool) -> Held {
        let headers = match (with_headers, m.headers()) {
            (true, Some(h)) => (h.iter())
                .map(|h| {
                    let value = h.value.map(String::from_utf8_lossy).unwrap_or_default();
                    (h.key.to_string(), value.into_owned())
                })
                .collect(),
            _ => Vec::new(),
        };
        Held {
            offset: m.offset(),
            time_ms: m.timestamp().to_millis().unwrap_or(0),
            key: m.key().map(<[u8]>::to_vec),
            payload: m.payload().unwrap_or_default().to_vec(),
            headers,
        }
    }

    fn size(&self) -> usize {
        self.payload.len() + self.key.as_ref().map_or(0, Vec::len) + 48
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
    parts: BTreeMap<TopicPartition, VecDeque<Held>>,
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
    pub(super) fn take(&self, tp: &TopicPartition, next: i64, limit: usize) -> Vec<Held> {
        let mut b = lock(&self.buffers);
        let mut out = Vec::new();
        let mut freed = 0;
        if let Some(q) = b.parts.get_mut(tp) {
            while out.len() < limit {
                let Some(r) = q.pop_front() else { break };
                freed += r.size();
                if r.offset >= next {
                    out.push(r);
                }
            }
        }
        b.bytes -= freed;
        drop(b);
        self.room.notify_all();
        out
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
    ) -> (Vec<Held>, Option<i64>) {
        let mut b = lock(&self.buffers);
        let mut out = Vec::new();
        let mut freed = 0;
        let mut later = None;
        if let Some(q) = b.parts.get_mut(tp) {
            while let Some(r) = q.front() {
                if r.offset >= next && r.time_ms > cut {
                    later = Some(r.time_ms);
                    break;
                }
                let r = q.pop_front().expect("a front");
                freed += r.size();
                if r.offset >= next {
                    out.push(r);
                }
            }
        }
        b.bytes -= freed;
        drop(b);
        self.room.notify_all();
        (out, later)
    }

    /// Records buffered and not yet in a batch, per partition.
    pub(super) fn buffered(&self) -> BTreeMap<TopicPartition, usize> {
        (lock(&self.buffers).parts.iter())
            .map(|(tp, q)| (tp.clone(), q.len()))
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
        b.bytes += collected.bytes;
        for (tp, records) in collected.parts.iter_mut() {
            if records.is_empty() {
                continue;
            }
            match b.parts.get_mut(tp) {
                Some(q) => q.extend(records.drain(..)),
                None => {
                    b.parts.insert(tp.clone(), records.drain(..).collect());
                }
            }
        }
        collected.count = 0;
        collected.bytes = 0;
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
#[derive(Default)]
struct Collected {
    /// Few partitions per source: a list, the last one used first.
    parts: Vec<(TopicPartition, Vec<Held>)>,
    last: usize,
    count: usize,
    bytes: usize,
}

impl Collected {
    fn add(&mut self, m: &BorrowedMessage<'_>, with_headers: bool) {
        let (topic, partition) = (m.topic(), m.partition());
        let same = |(tp, _): &(TopicPartition, Vec<Held>)| tp.1 == partition && tp.0 == topic;
        if !self.parts.get(self.last).is_some_and(same) {
            self.last = match self.parts.iter().position(same) {
                Some(i) => i,
                None => {
                    self.parts
                        .push(((topic.to_string(), partition), Vec::new()));
                    self.parts.len() - 1
                }
            };
        }
        let held = Held::of(m, with_headers);
        self.bytes += held.size();
        self.count += 1;
        self.parts[self.last].1.push(held);
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
    let with_headers = config.decoding.shape == crate::Shape::Record;
    let mut assigned: BTreeMap<TopicPartition, i64> = BTreeMap::new();
    let mut backoff = Duration::from_millis(200);
    let mut next_discovery = Instant::now();
    let mut missing_since: Option<Instant> = None;
    let mut collected = Collected::default();
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
        let error = collect(&consumer, &mut collected, with_headers);
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
fn collect(
    consumer: &BaseConsumer<Context>,
    collected: &mut Collected,
    with_headers: bool,
) -> Option<KafkaError> {
    let mut wait = Duration::from_millis(100);
    while collected.count < COLLECT {
        match consumer.poll(wait)? {
            Ok(m) => collected.add(&m, with_headers),
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
