//! A Kappa replay of a NATS stream: the records stored from a time (or
//! the first) to the last one stored when the replay began, each batch
//! taking those published in its interval, read by an ordered consumer
//! (the job's durable consumer is left alone).

use super::client::{Failure, connect};
use super::reader::{Received, Shared, open_stream};
use super::{NatsConfig, NatsSource, Range};
use async_nats::jetstream::{self, consumer};
use futures_util::StreamExt;
use sluice_core::error::Result;
use sluice_core::rdd::Rdd;
use sluice_core::time::BatchTime;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What a replay reads: sequences up to `end`, records published up to
/// `to` (ms since the epoch).
pub(super) struct Replay {
    pub(super) end: u64,
    pub(super) to: i64,
}

/// An ordered consumer of the stream from `start`.
async fn ordered(
    config: &NatsConfig,
    stream: &jetstream::stream::Stream,
    deliver_policy: consumer::DeliverPolicy,
) -> std::result::Result<consumer::pull::Ordered, String> {
    let c = stream
        .create_consumer(consumer::pull::OrderedConfig {
            filter_subject: config.subject.clone().unwrap_or_default(),
            deliver_policy,
            ..Default::default()
        })
        .await
        .map_err(|e| format!("reading the stream's history: {e}"))?;
    c.messages()
        .await
        .map_err(|e| format!("reading the stream's history: {e}"))
}

/// Where the history from `from` (`None`: the first record) begins:
/// its first sequence and time, and the stream's last sequence now.
async fn bounds(
    config: &NatsConfig,
    from: Option<i64>,
) -> std::result::Result<Option<(u64, i64, u64)>, String> {
    let client = connect(&config.name, &config.url, &config.auth)
        .await
        .map_err(|f| f.message().to_string())?;
    let (stream, info) = open_stream(config, &jetstream::new(client))
        .await
        .map_err(|f: Failure| f.message().to_string())?;
    if info.state.messages == 0 {
        return Ok(None);
    }
    let policy = match from {
        None => consumer::DeliverPolicy::All,
        Some(ms) => consumer::DeliverPolicy::ByStartTime {
            start_time: time::OffsetDateTime::from_unix_timestamp_nanos(ms as i128 * 1_000_000)
                .map_err(|e| format!("--from {ms} ms: {e}"))?,
        },
    };
    let mut messages = ordered(config, &stream, policy).await?;
    let first = tokio::time::timeout(Duration::from_secs(5), messages.next()).await;
    match first {
        Ok(Some(Ok(m))) => {
            let r = Received::new(m)?;
            Ok(Some((r.sequence, r.time_ms(), info.state.last_sequence)))
        }
        Ok(Some(Err(e))) => Err(format!("reading the stream's history: {e}")),
        // Nothing stored at or after `from` (under the subject filter).
        Ok(None) | Err(_) => Ok(None),
    }
}

/// Buffers the stream's records from `from` to `end` for the replay's
/// batches.
pub(super) async fn read(config: Arc<NatsConfig>, shared: Arc<Shared>, from: u64, end: u64) {
    let attempt = async {
        let client = connect(&config.name, &config.url, &config.auth)
            .await
            .map_err(|f| f.message().to_string())?;
        let (stream, _) = open_stream(&config, &jetstream::new(client))
            .await
            .map_err(|f| f.message().to_string())?;
        let policy = consumer::DeliverPolicy::ByStartSequence {
            start_sequence: from.max(1),
        };
        let mut messages = ordered(&config, &stream, policy).await?;
        while let Some(m) = messages.next().await {
            let r = Received::new(m.map_err(|e| e.to_string())?)?;
            let last = r.sequence >= end;
            if r.sequence > end || !shared.push(&mut vec![r]).await || last {
                break;
            }
        }
        Ok::<(), String>(())
    };
    if let Err(e) = attempt.await {
        shared.set_fatal(format!("replaying stream `{}`: {e}", config.stream));
    }
}

impl NatsSource {
    /// Finds the history a replay reads; the time of its first record.
    pub(super) fn find_history(&mut self, from: Option<i64>, to: i64) -> Result<Option<i64>> {
        let config = self.config.clone();
        let found = self
            .runtime()?
            .block_on(bounds(&config, from))
            .map_err(|e| self.error(e))?;
        let Some((start, first, end)) = found else {
            self.replay = Some(Replay { end: 0, to });
            return Ok(None);
        };
        self.next = start;
        self.replay = Some(Replay { end, to });
        Ok(Some(first))
    }

    /// A replay's batch at `time`: the records published up to `time` (and
    /// the replay's end), waiting until a later one is buffered or the
    /// history is read.
    pub(super) fn history_batch(&mut self, time: BatchTime) -> Result<Rdd> {
        let Some(replay) = &self.replay else {
            return Err(self.error("not replaying"));
        };
        let (cut, end) = (time.millis().min(replay.to), replay.end);
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut taken: Vec<Received> = Vec::new();
        while self.next <= end {
            if let Some(fatal) = self.shared.fatal() {
                return Err(self.error(fatal));
            }
            let (more, later) = self.shared.take_until(self.next, cut);
            if let Some(last) = more.last() {
                self.next = last.sequence + 1;
            }
            taken.extend(more);
            if later {
                break;
            }
            if Instant::now() > deadline {
                return Err(self.error(format!(
                    "replaying batch {time}: nothing past sequence {} in 60 s (the history ends at {end})",
                    self.next
                )));
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        self.last = match (taken.first(), taken.last()) {
            (Some(f), Some(l)) => Range {
                first: f.sequence,
                last: l.sequence,
                count: taken.len() as u64,
            },
            _ => Range::default(),
        };
        self.to_rdd(&taken, time)
    }
}
