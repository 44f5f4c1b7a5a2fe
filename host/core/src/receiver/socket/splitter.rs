//! Framing: splitting the byte stream into lines under the length and
//! UTF-8 policies, with rate-limited warnings.

use super::{LineSink, NonUtf8Policy, SocketConfig, SocketStats, bump};
use crate::receiver::lines::LineEnds;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// At most one log line per interval; counts what it suppressed.
#[derive(Debug)]
pub(super) struct RateLimiter {
    interval: Duration,
    last: Option<Instant>,
    suppressed: u64,
}

impl RateLimiter {
    pub(super) fn new(interval: Duration) -> Self {
        RateLimiter {
            interval,
            last: None,
            suppressed: 0,
        }
    }

    /// `Some(suppressed_since_last)` if a message may be logged at `now`.
    pub(super) fn check(&mut self, now: Instant) -> Option<u64> {
        match self.last {
            Some(last) if now.saturating_duration_since(last) < self.interval => {
                self.suppressed += 1;
                None
            }
            _ => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.suppressed))
            }
        }
    }
}

/// Tail of a rate-limited warning: how many were suppressed since the last one.
fn suppressed_note(suppressed: u64) -> String {
    if suppressed == 0 {
        String::new()
    } else {
        format!(" ({suppressed} similar warnings suppressed in the last second)")
    }
}

/// Splits a byte stream into lines, enforcing the length and UTF-8 policies.
pub(crate) struct LineSplitter {
    max_line_bytes: usize,
    policy: NonUtf8Policy,
    endpoint: String,
    stats: Arc<SocketStats>,
    /// Start of a line that began in an earlier chunk (at most `max_line_bytes` bytes).
    pub(super) partial: Vec<u8>,
    /// Skipping the rest of an over-long line up to its end.
    discarding: bool,
    /// Whether a `\n` starting the next chunk ends a `\r\n` already seen.
    ends: LineEnds,
    overlong_warn: RateLimiter,
    non_utf8_warn: RateLimiter,
}

impl LineSplitter {
    pub(crate) fn new(config: &SocketConfig, stats: Arc<SocketStats>) -> Self {
        LineSplitter {
            max_line_bytes: config.max_line_bytes,
            policy: config.non_utf8,
            endpoint: format!("{}:{}", config.host, config.port),
            stats,
            partial: Vec::new(),
            discarding: false,
            ends: LineEnds::default(),
            overlong_warn: RateLimiter::new(Duration::from_secs(1)),
            non_utf8_warn: RateLimiter::new(Duration::from_secs(1)),
        }
    }

    pub(crate) fn feed(&mut self, chunk: &[u8], sink: &dyn LineSink) {
        // The first line ending here continues a line begun in an earlier
        // chunk (or being discarded); the chunk's whole lines go to the sink
        // together, and a line needing more than a check (over-long, not
        // UTF-8) is delivered alone, in its place.
        let mut continuing = self.discarding || !self.partial.is_empty();
        let mut lines: Vec<&str> = Vec::new();
        let mut ends = self.ends;
        let rest = ends.split(chunk, |line| {
            if std::mem::take(&mut continuing) {
                if std::mem::take(&mut self.discarding) {
                    return; // the end of an over-long line
                }
                if self.partial.len() + line.len() > self.max_line_bytes {
                    self.partial.clear();
                    self.overlong();
                } else {
                    self.append_partial(line);
                    let mut whole = std::mem::take(&mut self.partial);
                    self.deliver(&whole, sink);
                    whole.clear();
                    self.partial = whole; // keep the allocation
                }
                return;
            }
            match std::str::from_utf8(line) {
                Ok(s) if line.len() <= self.max_line_bytes => lines.push(s),
                _ => {
                    self.push_batch(&mut lines, sink);
                    self.deliver(line, sink);
                }
            }
        });
        self.ends = ends;
        self.push_batch(&mut lines, sink);
        self.keep_partial(rest);
    }

    /// Delivers `lines` (valid, within the limit) and empties the list.
    fn push_batch(&self, lines: &mut Vec<&str>, sink: &dyn LineSink) {
        if lines.is_empty() {
            return;
        }
        // Count first: whoever sees the lines must also see them counted.
        bump(&self.stats.lines, lines.len() as u64);
        sink.push_lines(lines);
        lines.clear();
    }

    /// The end of a chunk without `\n`: the start (or more) of a line.
    fn keep_partial(&mut self, rest: &[u8]) {
        if self.discarding || rest.is_empty() {
            return;
        }
        if self.partial.len() + rest.len() > self.max_line_bytes {
            self.partial.clear();
            self.discarding = true;
            self.overlong();
        } else {
            self.append_partial(rest);
        }
    }

    /// Appends to the partial line (the caller checked the limit). Grows
    /// geometrically but never past the limit, so the buffer's capacity
    /// stays within `max_line_bytes`.
    fn append_partial(&mut self, bytes: &[u8]) {
        let needed = self.partial.len() + bytes.len();
        if needed > self.partial.capacity() {
            let target = needed
                .max(self.partial.capacity() * 2)
                .min(self.max_line_bytes);
            self.partial.reserve_exact(target - self.partial.len());
        }
        self.partial.extend_from_slice(bytes);
    }

    /// End of a connection: delivers a pending partial line.
    pub(crate) fn finish(&mut self, sink: &dyn LineSink) {
        if !self.discarding && !self.partial.is_empty() {
            let line = std::mem::take(&mut self.partial);
            self.deliver(&line, sink);
            self.partial = line;
        }
        self.reset();
    }

    /// Forgets any partial line: a new connection begins.
    pub(super) fn reset(&mut self) {
        self.partial.clear();
        self.discarding = false;
        self.ends.reset();
    }

    fn deliver(&mut self, line: &[u8], sink: &dyn LineSink) {
        if line.len() > self.max_line_bytes {
            self.overlong();
            return;
        }
        match std::str::from_utf8(line) {
            Ok(s) => {
                // Count first: whoever sees the line must also see it counted.
                bump(&self.stats.lines, 1);
                sink.push_line(s);
            }
            Err(_) => {
                bump(&self.stats.non_utf8_lines, 1);
                let skip = self.policy == NonUtf8Policy::Skip;
                if let Some(suppressed) = self.non_utf8_warn.check(Instant::now()) {
                    let action = if skip {
                        "skipped"
                    } else {
                        "replaced invalid bytes with U+FFFD"
                    };
                    tracing::warn!(
                        "Line from {} is not valid UTF-8 ({action}){}",
                        self.endpoint,
                        suppressed_note(suppressed)
                    );
                }
                if !skip {
                    bump(&self.stats.lines, 1);
                    sink.push_line(&String::from_utf8_lossy(line));
                }
            }
        }
    }

    fn overlong(&mut self) {
        bump(&self.stats.overlong_lines, 1);
        if let Some(suppressed) = self.overlong_warn.check(Instant::now()) {
            tracing::warn!(
                "Dropped a line from {} longer than max_line_bytes ({} bytes){}",
                self.endpoint,
                self.max_line_bytes,
                suppressed_note(suppressed)
            );
        }
    }
}
