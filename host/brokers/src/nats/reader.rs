//! The NATS side of the source: connecting, the durable consumer, the
//! background reader that fills the buffer, and re-reading a batch's range.

use super::client::{Failure, connect};
use super::{NatsConfig, StartAt};
use crate::decode::RecordRef;
use async_nats::jetstream::{self, consumer, stream};
use futures_util::{FutureExt, StreamExt};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;

/// One record read from the stream, with what acknowledges it.
pub(super) struct Received {
    pub(super) sequence: u64,
    /// Records the server still had for the consumer after this one.
    pending: u64,
    time_ms: i64,
    headers: Vec<(String, String)>,
    message: jetstream::Message,
}

impl Received {
    pub(super) fn new(message: jetstream::Message) -> Result<Received, String> {
        let info = message
            .info()
            .map_err(|e| format!("a message without JetStream metadata: {e}"))?;
        let sequence = info.stream_sequence;
        let pending = info.pending;
        let time_ms = (info.published.unix_timestamp_nanos() / 1_000_000) as i64;
        let headers = (message.message.headers.iter())
            .flat_map(|h| h.iter())
            .flat_map(|(name, values)| {
                values
                    .iter()
                    .map(move |v| (name.to_string(), v.as_str().to_string()))
            })
            .collect();
        Ok(Received {
            sequence,
            pending,
            time_ms,
            headers,
            message,
        })
    }

    /// When the stream stored it (ms since the epoch).
    pub(super) fn time_ms(&self) -> i64 {
        self.time_ms
    }

    pub(super) fn as_record(&self) -> RecordRef<'_> {
        RecordRef {
            subject: self.message.message.subject.as_str(),
            partition: None,
            key: None,
            sequence: self.sequence,
            time_ms: self.time_ms,
            headers: &self.headers,
            payload: &self.message.message.payload,
        }
    }

    fn size(&self) -> usize {
        self.message.message.payload.len() + self.message.message.subject.len() + 64
    }

    /// Acknowledges it, and with ack-all every record before it.
    pub(super) async fn ack(self) -> Result<(), String> {
        self.message.ack().await.map_err(|e| e.to_string())
    }

    /// [`Received::ack`], confirmed by the server.
    pub(super) async fn ack_confirmed(self) -> Result<(), String> {
        self.message.double_ack().await.map_err(|e| e.to_string())
    }
}

/// Most records the reader collects before buffering them.
const COLLECT: usize = 4096;

/// What the reader and the batches share.
pub(super) struct Shared {
    buffer: Mutex<Buffer>,
    /// Signalled when a batch takes records (room for the reader).
    room: Notify,
    max_bytes: usize,
    closed: AtomicBool,
    /// What the server had left for the consumer after the latest record
    /// buffered.
    pending: AtomicU64,
    errors: Mutex<Vec<String>>,
    /// An error no retry can mend (credentials, a missing stream).
    fatal: Mutex<Option<String>>,
}

#[derive(Default)]
struct Buffer {
    records: VecDeque<Received>,
    bytes: usize,
    /// The last sequence buffered: later deliveries at or before it are
    /// redeliveries, dropped.
    last: Option<u64>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Shared {
    pub(super) fn new(max_bytes: usize) -> Shared {
        Shared {
            buffer: Mutex::default(),
            room: Notify::new(),
            max_bytes,
            closed: AtomicBool::new(false),
            pending: AtomicU64::new(0),
            errors: Mutex::default(),
            fatal: Mutex::default(),
        }
    }

    /// Takes up to `limit` buffered records from sequence `next` on, and
    /// the last of those before it (taken by earlier batches, or by the
    /// batches a recovery re-ran: dropped, but it may still be the one to
    /// acknowledge).
    pub(super) fn take(&self, next: u64, limit: usize) -> (Vec<Received>, Option<Received>) {
        let mut b = lock(&self.buffer);
        let mut out = Vec::new();
        let mut before = None;
        while out.len() < limit {
            let Some(r) = b.records.pop_front() else {
                break;
            };
            b.bytes -= r.size();
            if r.sequence >= next {
                out.push(r);
            } else {
                before = Some(r);
            }
        }
        drop(b);
        self.room.notify_waiters();
        (out, before)
    }

    /// Buffers `records` (emptying it) once there is room: the buffer may
    /// go over its bound by one collection, [`COLLECT`] records.
    /// Redeliveries of records buffered before are dropped. `false` once
    /// the source stopped.
    pub(super) async fn push(&self, records: &mut Vec<Received>) -> bool {
        loop {
            let room = self.room.notified();
            {
                let mut b = lock(&self.buffer);
                if self.closed.load(Ordering::SeqCst) {
                    return false;
                }
                if b.bytes < self.max_bytes || b.records.is_empty() {
                    for r in records.drain(..) {
                        if b.last.is_some_and(|last| r.sequence <= last) {
                            continue;
                        }
                        b.bytes += r.size();
                        b.last = Some(r.sequence);
                        self.pending.store(r.pending, Ordering::Relaxed);
                        b.records.push_back(r);
                    }
                    return true;
                }
            }
            room.await;
        }
    }

    /// Takes the buffered records from sequence `next` on published at or
    /// before `cut` (ms), stopping at the first published later; and
    /// whether there is such a one (left for a later batch).
    pub(super) fn take_until(&self, next: u64, cut: i64) -> (Vec<Received>, bool) {
        let mut b = lock(&self.buffer);
        let mut out = Vec::new();
        let mut later = false;
        while let Some(r) = b.records.front() {
            if r.sequence >= next && r.time_ms > cut {
                later = true;
                break;
            }
            let r = b.records.pop_front().expect("a front");
            b.bytes -= r.size();
            if r.sequence >= next {
                out.push(r);
            }
        }
        drop(b);
        self.room.notify_waiters();
        (out, later)
    }

    pub(super) fn set_fatal(&self, error: String) {
        lock(&self.fatal).get_or_insert(error);
    }

    /// Records not yet in a batch: buffered here, or still on the server.
    pub(super) fn lag(&self) -> u64 {
        lock(&self.buffer).records.len() as u64 + self.pending.load(Ordering::Relaxed)
    }

    fn last_buffered(&self) -> Option<u64> {
        lock(&self.buffer).last
    }

    pub(super) fn report(&self, error: String) {
        let mut e = lock(&self.errors);
        if e.len() < 100 {
            e.push(error);
        }
    }

    pub(super) fn take_errors(&self) -> Vec<String> {
        std::mem::take(&mut *lock(&self.errors))
    }

    pub(super) fn fatal(&self) -> Option<String> {
        lock(&self.fatal).clone()
    }

    pub(super) fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        self.room.notify_waiters();
    }
}

/// Reads the stream into the buffer until the source stops, reconnecting
/// with backoff; resumes after the last record buffered, or at `from`.
pub(super) async fn read(config: Arc<NatsConfig>, shared: Arc<Shared>, from: Option<u64>) {
    let mut backoff = Duration::from_millis(100);
    while !shared.closed.load(Ordering::SeqCst) {
        let resume = shared.last_buffered().map(|s| s + 1).or(from);
        match session(&config, &shared, resume).await {
            Ok(()) => return,
            Err(Failure::Fatal(m)) => {
                tracing::error!(source = %config.name, "{m}");
                *lock(&shared.fatal) = Some(m);
                return;
            }
            Err(Failure::Retry(m)) => {
                tracing::warn!(source = %config.name, "{m}; retrying in {backoff:?}");
                shared.report(m);
            }
        }
        if shared.last_buffered().map(|s| s + 1) != resume {
            // It read something: the server was there.
            backoff = Duration::from_millis(100);
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

/// The stream, or why not.
pub(super) async fn open_stream(
    config: &NatsConfig,
    js: &jetstream::Context,
) -> Result<(stream::Stream, stream::Info), Failure> {
    let mut s = js.get_stream(&config.stream).await.map_err(|e| {
        if let jetstream::context::GetStreamErrorKind::JetStream(j) = e.kind()
            && j.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND
        {
            Failure::Fatal(format!(
                "stream `{}` does not exist on {}",
                config.stream, config.url
            ))
        } else {
            Failure::Retry(format!("looking up stream `{}`: {e}", config.stream))
        }
    })?;
    let info = s
        .info()
        .await
        .map_err(|e| Failure::Retry(format!("reading stream `{}`: {e}", config.stream)))?
        .clone();
    Ok((s, info))
}

/// Refuses to start at `from` when the stream no longer holds records
/// there: they were dropped by its retention before the job read them.
fn check_retained(config: &NatsConfig, info: &stream::Info, from: u64) -> Result<(), String> {
    let state = &info.state;
    if from < state.first_sequence && from <= state.last_sequence {
        let lost_to = (state.first_sequence - 1).min(state.last_sequence);
        return Err(format!(
            "records {from}..={lost_to} of stream `{}` are gone (dropped by the stream's retention before the job read them); it now starts at {}",
            config.stream, state.first_sequence
        ));
    }
    Ok(())
}

/// One connection: creates the durable consumer at the position to resume
/// from and buffers what it delivers.
async fn session(config: &NatsConfig, shared: &Shared, resume: Option<u64>) -> Result<(), Failure> {
    let client = connect(&config.name, &config.url, &config.auth).await?;
    let js = jetstream::new(client);
    let (stream, info) = open_stream(config, &js).await?;
    let from = match resume {
        Some(s) => Some(s),
        None => match stream.consumer_info(&config.durable).await {
            Ok(c) if c.ack_floor.stream_sequence > 0 => Some(c.ack_floor.stream_sequence + 1),
            Ok(_) => None,
            Err(e) if e.kind() == jetstream::context::ConsumerInfoErrorKind::NotFound => None,
            Err(e) => {
                return Err(Failure::Retry(format!(
                    "reading consumer `{}`: {e}",
                    config.durable
                )));
            }
        },
    };
    if let Some(from) = from {
        check_retained(config, &info, from).map_err(Failure::Fatal)?;
    }
    let deliver_policy = match (from, config.start) {
        (Some(s), _) | (None, StartAt::Sequence(s)) => consumer::DeliverPolicy::ByStartSequence {
            start_sequence: s.max(1),
        },
        (None, StartAt::All) => consumer::DeliverPolicy::All,
        (None, StartAt::New) => consumer::DeliverPolicy::New,
        (None, StartAt::Time(ms)) => consumer::DeliverPolicy::ByStartTime {
            start_time: time::OffsetDateTime::from_unix_timestamp_nanos(ms as i128 * 1_000_000)
                .map_err(|e| Failure::Fatal(format!("start time {ms} ms: {e}")))?,
        },
    };
    // Recreated at the position the job stands at: what it delivered to a
    // process that died is not redelivered out of order after its ack wait.
    let _ = stream.delete_consumer(&config.durable).await;
    let consumer: consumer::PullConsumer = stream
        .create_consumer(consumer::pull::Config {
            durable_name: Some(config.durable.clone()),
            deliver_policy,
            ack_policy: consumer::AckPolicy::All,
            ack_wait: Duration::from_secs(300),
            max_ack_pending: -1,
            filter_subject: config.subject.clone().unwrap_or_default(),
            ..Default::default()
        })
        .await
        .map_err(|e| Failure::Retry(format!("creating consumer `{}`: {e}", config.durable)))?;
    let mut messages = consumer
        .stream()
        .max_messages_per_batch(10_000)
        .heartbeat(Duration::from_secs(2))
        .expires(Duration::from_secs(10))
        .messages()
        .await
        .map_err(|e| Failure::Retry(format!("pulling from `{}`: {e}", config.durable)))?;
    // Takes what the client has in hand without waiting, up to
    // [`COLLECT`], and buffers it with one lock and one wake-up.
    let received = |m: Result<jetstream::Message, _>| {
        let m =
            m.map_err(|e| Failure::Retry(format!("reading stream `{}`: {e}", config.stream)))?;
        Received::new(m).map_err(Failure::Retry)
    };
    let mut collected = Vec::with_capacity(COLLECT);
    let mut ended = false;
    while !ended && let Some(m) = messages.next().await {
        collected.push(received(m)?);
        while collected.len() < COLLECT {
            match messages.next().now_or_never() {
                Some(Some(m)) => collected.push(received(m)?),
                Some(None) => {
                    ended = true;
                    break;
                }
                None => break,
            }
        }
        if !shared.push(&mut collected).await {
            return Ok(());
        }
    }
    Err(Failure::Retry(format!(
        "the messages of consumer `{}` ended",
        config.durable
    )))
}

/// The `count` records of sequences `first..=last` again, for a batch
/// re-run after a crash: an error if the stream no longer holds them all.
pub(super) async fn replay(
    config: Arc<NatsConfig>,
    first: u64,
    last: u64,
    count: u64,
) -> Result<Vec<Received>, String> {
    let mut waited = Duration::ZERO;
    let (stream, info) = loop {
        let attempt = async {
            let client = connect(&config.name, &config.url, &config.auth).await?;
            open_stream(&config, &jetstream::new(client)).await
        };
        match attempt.await {
            Ok(s) => break s,
            Err(Failure::Fatal(m)) => return Err(m),
            Err(Failure::Retry(m)) if waited < Duration::from_secs(60) => {
                tracing::warn!(source = %config.name, "{m}; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                waited += Duration::from_secs(1);
            }
            Err(Failure::Retry(m)) => return Err(m),
        }
    };
    check_retained(&config, &info, first)?;
    let consumer = stream
        .create_consumer(consumer::pull::OrderedConfig {
            filter_subject: config.subject.clone().unwrap_or_default(),
            deliver_policy: consumer::DeliverPolicy::ByStartSequence {
                start_sequence: first,
            },
            ..Default::default()
        })
        .await
        .map_err(|e| format!("reading records {first}..={last} again: {e}"))?;
    let mut messages = consumer
        .messages()
        .await
        .map_err(|e| format!("reading records {first}..={last} again: {e}"))?;
    let mut out = Vec::new();
    while (out.len() as u64) < count {
        let next = tokio::time::timeout(Duration::from_secs(30), messages.next()).await;
        let m = match next {
            Ok(Some(Ok(m))) => m,
            Ok(Some(Err(e))) => return Err(format!("reading records {first}..={last} again: {e}")),
            Ok(None) | Err(_) => break,
        };
        let r = Received::new(m)?;
        if r.sequence > last {
            break;
        }
        out.push(r);
    }
    if out.len() as u64 != count {
        return Err(format!(
            "the batch took {count} records in {first}..={last} of stream `{}`, which now holds {} of them",
            config.stream,
            out.len()
        ));
    }
    Ok(out)
}
