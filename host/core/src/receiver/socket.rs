//! `socket_text_stream`: a receiver that connects as a TCP *client* to
//! `host:port` and turns the newline-separated text it reads into lines for
//! the engine, like Spark Streaming's `socketTextStream`.
//!
//! [`SocketReceiver::start`] spawns one long-lived thread named
//! `sluice-socket-HOST:PORT` that connects, reads, splits lines and pushes
//! them into a [`LineSink`] (the engine's block buffer). The receiver never
//! panics on network input and never stops on its own: only
//! [`SocketReceiver::stop`] (or dropping the handle) ends it.
//!
//! # Policy
//!
//! **Connecting and reconnecting.**
//! * The host is resolved on every attempt (so a DNS change is picked up) and
//!   each resolved address is tried in turn with a connect timeout of
//!   5 seconds. Resolution and connecting run on a short-lived helper thread
//!   (`sluice-socket-connect`) so that `stop` never waits for a slow DNS
//!   lookup or a black-holed SYN; an abandoned helper ends by itself once its
//!   own timeout expires and its result is discarded.
//! * A failed attempt (refused, unreachable, timed out, unresolvable)
//!   increments [`SocketStats::connect_failures`] and logs
//!   `warn!("Restarting receiver with delay {ms} ms: Error connecting to {host}:{port}: {err}")`,
//!   then waits and retries. The delay starts at
//!   [`SocketConfig::reconnect_initial`] (default 100 ms) and doubles after
//!   each consecutive failure up to [`SocketConfig::reconnect_max`]
//!   (default 2 s, which is Spark's fixed retry interval).
//! * A successful connection increments [`SocketStats::connects`], logs at
//!   `info!` and resets the delay to `reconnect_initial`.
//! * When the server closes the connection (end of stream) the receiver
//!   increments [`SocketStats::disconnects`], logs
//!   `warn!("Restarting receiver with delay {ms} ms: Socket data stream had no more data")`
//!   and opens a *new* connection after the (reset) delay. A read error
//!   (e.g. connection reset) is handled the same way, with
//!   `Error reading from {host}:{port}: {err}` as the reason.
//! * Because the delay is reset on every successful connection, a server that
//!   accepts and immediately closes is reconnected to every
//!   `reconnect_initial`.
//!
//! **Framing.**
//! * Lines end at `\n`, `\r` or `\r\n`, as Java's `BufferedReader.readLine`
//!   (Spark's reader) ends them.
//! * Empty lines are delivered as `""` (as Spark does).
//! * If the connection ends in the middle of a line (bytes after the last
//!   `\n`), that partial last line **is delivered** before reconnecting, as
//!   Spark's `BufferedReader.readLine` does. This applies to an orderly close
//!   and to a read error alike. Lines never span connections: the next
//!   connection starts with an empty line buffer.
//! * On [`SocketReceiver::stop`] a partial line that is still buffered is
//!   discarded (the server may still have been sending it).
//!
//! **Over-long lines.** A line whose content (without its terminator)
//! exceeds [`SocketConfig::max_line_bytes`] (default 1 MiB) is
//! dropped entirely. As soon as the limit is exceeded the bytes buffered so
//! far are released and the rest of the line, up to its end, is skipped
//! as it streams in without being buffered, so memory stays bounded by one
//! line buffer of at most `max_line_bytes` bytes plus one 64 KiB read
//! buffer, whatever the server sends.
//! Each such line increments [`SocketStats::overlong_lines`] once and logs a
//! warning, rate-limited to at most one per second per receiver; the next
//! warning that is logged says how many were suppressed since the previous
//! one (the counters always have the exact totals).
//!
//! **Invalid UTF-8.** A line that is not valid UTF-8 increments
//! [`SocketStats::non_utf8_lines`] and, per [`SocketConfig::non_utf8`], is
//! either delivered with each invalid sequence replaced by U+FFFD
//! ([`NonUtf8Policy::Replace`], the default) or dropped
//! ([`NonUtf8Policy::Skip`]). Warnings are rate-limited like the over-long
//! ones (a separate limit of one per second).
//!
//! **Stopping.** The socket has a 50 ms read timeout, back-off waits are
//! interruptible and connect attempts run on a helper thread, so
//! [`SocketReceiver::stop`] returns within about 50 ms in every state
//! (connecting, backing off, reading an idle connection), unless the
//! [`LineSink`] itself blocks.
//!
//! **Efficiency.** Data is read in 64 KiB chunks into one reusable buffer.
//! A line that lies entirely inside one chunk and is valid UTF-8 is handed to
//! the sink as a borrowed `&str` without copying; only a line that straddles
//! two reads is copied into a reusable line buffer (and only a lossily
//! decoded line allocates).
//!
//! **Logging.** All events of the receiver thread are inside a
//! `socket_receiver` span with an `endpoint = "host:port"` field.
//!
//! **Counters** ([`SocketStats`]) can be read at any time while running:
//! `lines` delivered to the sink (including lossily decoded ones), `bytes`
//! read from the socket (all of them, terminators and dropped lines
//! included), `non_utf8_lines`, `overlong_lines`, `connects`,
//! `connect_failures` and `disconnects` (connections that ended other than by
//! `stop`).

pub(crate) mod splitter;
#[cfg(test)]
mod tests;
mod worker;

use crate::stop::StopSignal;
use sluice_sdk::Column;
use std::io::{self, ErrorKind};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::{self, JoinHandle};
use std::time::Duration;
use worker::Worker;

/// Receives newline-separated text lines; implemented by the engine's block buffer.
pub trait LineSink: Send + Sync + 'static {
    /// Called once per received line, without its terminator, in arrival order.
    fn push_line(&self, line: &str);
    /// Several consecutive lines at once (the whole lines of one read), in
    /// order; the same as [`push_line`](Self::push_line) for each.
    fn push_lines(&self, lines: &[&str]) {
        for line in lines {
            self.push_line(line);
        }
    }
    /// Elements already encoded (one MessagePack value each), in order:
    /// from a receiver whose records are not text lines (an MQTT source
    /// decoding JSON). Logged as they are where the sink logs.
    fn push_encoded(&self, values: &Column);
    /// Called after the lines of each read: makes them durable where the
    /// sink logs (the write-ahead log). `false`: not done (the error is the
    /// sink's to report); the receiver stops reading and calls again later.
    fn flush(&self) -> bool {
        true
    }
}

/// What to do with a line that is not valid UTF-8.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum NonUtf8Policy {
    /// Decode lossily, replacing each invalid sequence with U+FFFD (the default).
    #[default]
    Replace,
    /// Drop the line.
    Skip,
}

/// Configuration of a [`SocketReceiver`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SocketConfig {
    /// Host name or IP address to connect to (an IPv6 literal without brackets).
    pub host: String,
    /// TCP port to connect to.
    pub port: u16,
    /// Longest accepted line in bytes, excluding its terminator
    /// (default 1 MiB). Longer lines are dropped. Must be at least 1.
    pub max_line_bytes: usize,
    /// What to do with lines that are not valid UTF-8 (default: replace).
    pub non_utf8: NonUtf8Policy,
    /// First reconnect delay, doubled after each consecutive failure
    /// (default 100 ms). Must be non-zero.
    pub reconnect_initial: Duration,
    /// Largest reconnect delay (default 2 s, Spark's retry interval).
    /// Must be at least `reconnect_initial`.
    pub reconnect_max: Duration,
    /// At most this many lines per second (Spark's
    /// `spark.streaming.receiver.maxRate`); `None`: no limit of its own.
    pub max_rate: Option<u64>,
    /// Received lines not yet taken by a batch, in bytes, beyond which the
    /// receiver stops reading until a batch takes them (TCP then holds the
    /// sender back). It bounds the source's memory and so the rate: a 1 s
    /// batch interval takes at most this much per second (64 MiB: ~1.3 M
    /// lines/s of 50 bytes). Default [`MAX_BUFFERED_BYTES`](crate::receiver::MAX_BUFFERED_BYTES); must be
    /// at least 1 MiB.
    pub max_buffered_bytes: usize,
}

impl Default for SocketConfig {
    fn default() -> Self {
        SocketConfig {
            host: "127.0.0.1".to_string(),
            port: 9999,
            max_line_bytes: 1024 * 1024,
            non_utf8: NonUtf8Policy::Replace,
            reconnect_initial: Duration::from_millis(100),
            reconnect_max: Duration::from_secs(2),
            max_rate: None,
            max_buffered_bytes: crate::receiver::MAX_BUFFERED_BYTES,
        }
    }
}

/// Counters of a running [`SocketReceiver`], readable at any time.
#[derive(Debug, Default)]
pub struct SocketStats {
    /// Errors not yet taken by the engine (for listeners), at most 100.
    errors: std::sync::Mutex<std::collections::VecDeque<String>>,
    lines: AtomicU64,
    bytes: AtomicU64,
    non_utf8_lines: AtomicU64,
    overlong_lines: AtomicU64,
    connects: AtomicU64,
    connect_failures: AtomicU64,
    disconnects: AtomicU64,
}

impl SocketStats {
    /// Takes the connection errors recorded since the last call.
    pub fn take_errors(&self) -> Vec<String> {
        self.errors
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain(..)
            .collect()
    }

    /// Lines delivered to the sink (lossily decoded ones included).
    pub fn lines(&self) -> u64 {
        self.lines.load(Ordering::Relaxed)
    }
    /// Bytes read from the socket, terminators and dropped lines included.
    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }
    /// Lines that were not valid UTF-8 (replaced or skipped per policy).
    pub fn non_utf8_lines(&self) -> u64 {
        self.non_utf8_lines.load(Ordering::Relaxed)
    }
    /// Lines dropped for exceeding `max_line_bytes`.
    pub fn overlong_lines(&self) -> u64 {
        self.overlong_lines.load(Ordering::Relaxed)
    }
    /// Successful connections.
    pub fn connects(&self) -> u64 {
        self.connects.load(Ordering::Relaxed)
    }
    /// Failed connection attempts.
    pub fn connect_failures(&self) -> u64 {
        self.connect_failures.load(Ordering::Relaxed)
    }
    /// Connections that ended (closed by the server or a read error), not counting `stop`.
    pub fn disconnects(&self) -> u64 {
        self.disconnects.load(Ordering::Relaxed)
    }
}

fn bump(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}

/// Handle to a running socket receiver thread; stops it on [`stop`](Self::stop) or drop.
#[derive(Debug)]
pub struct SocketReceiver {
    stop: Arc<StopSignal>,
    stats: Arc<SocketStats>,
    thread: Option<JoinHandle<()>>,
}

impl SocketReceiver {
    /// Validates `config` and spawns the receiver thread `sluice-socket-HOST:PORT`.
    ///
    /// Fails with `InvalidInput` if the host is empty, `max_line_bytes` or
    /// `reconnect_initial` is zero, or `reconnect_max < reconnect_initial`,
    /// and with the spawn error if the thread cannot be created. Connection
    /// problems are never reported here: the thread retries forever.
    pub fn start(config: SocketConfig, sink: Arc<dyn LineSink>) -> io::Result<SocketReceiver> {
        let invalid = |msg: &str| Err(io::Error::new(ErrorKind::InvalidInput, msg.to_string()));
        if config.host.is_empty() {
            return invalid("socket receiver: host is empty");
        }
        if config.max_line_bytes == 0 {
            return invalid("socket receiver: max_line_bytes must be at least 1");
        }
        if config.max_buffered_bytes < 1 << 20 {
            return invalid("socket receiver: max_buffered_bytes must be at least 1 MiB");
        }
        if config.reconnect_initial.is_zero() {
            return invalid("socket receiver: reconnect_initial must be non-zero");
        }
        if config.reconnect_max < config.reconnect_initial {
            return invalid("socket receiver: reconnect_max must be at least reconnect_initial");
        }
        let stop = Arc::new(StopSignal::default());
        let stats = Arc::new(SocketStats::default());
        let name = format!("sluice-socket-{}:{}", config.host, config.port);
        let worker = Worker {
            config,
            sink,
            stop: Arc::clone(&stop),
            stats: Arc::clone(&stats),
        };
        let thread = thread::Builder::new()
            .name(name)
            .spawn(move || worker.run())?;
        Ok(SocketReceiver {
            stop,
            stats,
            thread: Some(thread),
        })
    }

    /// The receiver's live counters.
    pub fn stats(&self) -> Arc<SocketStats> {
        Arc::clone(&self.stats)
    }

    /// Stops the receiver and waits for its thread to end (promptly, in any state).
    pub fn stop(self) {
        // Drop does the work.
    }

    fn shutdown(&mut self) {
        self.stop.trigger();
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            tracing::warn!("socket receiver thread panicked");
        }
    }
}

impl Drop for SocketReceiver {
    fn drop(&mut self) {
        self.shutdown();
    }
}
