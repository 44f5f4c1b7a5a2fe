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
//! * Lines are split on `\n`. One trailing `\r` is stripped from each line, so
//!   `\r\n` works; other `\r` bytes are kept.
//! * Empty lines are delivered as `""` (as Spark does).
//! * If the connection ends in the middle of a line (bytes after the last
//!   `\n`), that partial last line **is delivered** before reconnecting, as
//!   Spark's `BufferedReader.readLine` does. This applies to an orderly close
//!   and to a read error alike. Lines never span connections: the next
//!   connection starts with an empty line buffer.
//! * On [`SocketReceiver::stop`] a partial line that is still buffered is
//!   discarded (the server may still have been sending it).
//!
//! **Over-long lines.** A line whose content (without its `\n` or `\r\n`
//! terminator) exceeds [`SocketConfig::max_line_bytes`] (default 1 MiB) is
//! dropped entirely. As soon as the limit is exceeded the bytes buffered so
//! far are released and the rest of the line, up to the next `\n`, is skipped
//! as it streams in without being buffered, so memory stays bounded by one
//! line buffer of at most `max_line_bytes + 1` bytes plus one 64 KiB read
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

use crate::stop::StopSignal;
use std::io::{self, ErrorKind, Read};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

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
    /// Longest accepted line in bytes, excluding the `\n` / `\r\n` terminator
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

/// Per-connection read timeout: bounds how long `stop` waits on an idle connection.
const READ_TIMEOUT: Duration = Duration::from_millis(50);
/// Timeout of one connect attempt to one address (runs on a helper thread).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How often the receiver thread checks the stop flag while a connect is pending.
const CONNECT_POLL: Duration = Duration::from_millis(20);
/// Size of the reusable read buffer.
const READ_CHUNK: usize = 64 * 1024;

/// How one connection ended.
enum ConnEnd {
    Stopped,
    Eof,
    Error(io::Error),
}

struct Worker {
    config: SocketConfig,
    sink: Arc<dyn LineSink>,
    stop: Arc<StopSignal>,
    stats: Arc<SocketStats>,
}

impl Worker {
    fn run(self) {
        let host = self.config.host.clone();
        let port = self.config.port;
        let span =
            tracing::info_span!("socket_receiver", endpoint = %format_args!("{host}:{port}"));
        let _entered = span.enter();
        let mut splitter = LineSplitter::new(&self.config, Arc::clone(&self.stats));
        let mut buf = vec![0u8; READ_CHUNK];
        let mut delay = self.config.reconnect_initial;
        while !self.stop.is_stopped() {
            let reason = match self.connect() {
                None => break,
                Some(Err(err)) => {
                    bump(&self.stats.connect_failures, 1);
                    format!("Error connecting to {host}:{port}: {err}")
                }
                Some(Ok(stream)) => {
                    bump(&self.stats.connects, 1);
                    delay = self.config.reconnect_initial;
                    tracing::info!("Connected to {host}:{port}");
                    match self.read_connection(stream, &mut splitter, &mut buf) {
                        ConnEnd::Stopped => break,
                        ConnEnd::Eof => {
                            bump(&self.stats.disconnects, 1);
                            "Socket data stream had no more data".to_string()
                        }
                        ConnEnd::Error(err) => {
                            bump(&self.stats.disconnects, 1);
                            format!("Error reading from {host}:{port}: {err}")
                        }
                    }
                }
            };
            tracing::warn!(
                "Restarting receiver with delay {} ms: {reason}",
                delay.as_millis()
            );
            {
                let mut errors = self.stats.errors.lock().unwrap_or_else(|e| e.into_inner());
                if errors.len() < 100 {
                    errors.push_back(reason);
                }
            }
            if self.stop.wait(delay) {
                break;
            }
            delay = delay.saturating_mul(2).min(self.config.reconnect_max);
        }
        tracing::info!("Socket receiver for {host}:{port} stopped");
    }

    /// Resolves and connects on a helper thread so that `stop` is never held
    /// up by DNS or a slow connect. `None` means stopped.
    fn connect(&self) -> Option<io::Result<TcpStream>> {
        let (tx, rx) = mpsc::channel();
        let host = self.config.host.clone();
        let port = self.config.port;
        let spawned = thread::Builder::new()
            .name("sluice-socket-connect".to_string())
            .spawn(move || {
                // The receiver may have given up waiting; then nobody listens.
                let _ = tx.send(connect_any(&host, port));
            });
        if let Err(err) = spawned {
            return Some(Err(err));
        }
        loop {
            if self.stop.is_stopped() {
                return None;
            }
            match rx.recv_timeout(CONNECT_POLL) {
                Ok(result) => return Some(result),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => {
                    return Some(Err(io::Error::other("connect helper thread ended")));
                }
            }
        }
    }

    fn read_connection(
        &self,
        mut stream: TcpStream,
        splitter: &mut LineSplitter,
        buf: &mut [u8],
    ) -> ConnEnd {
        if let Err(err) = stream.set_read_timeout(Some(READ_TIMEOUT)) {
            return ConnEnd::Error(err);
        }
        let sink = &*self.sink;
        let end = loop {
            if self.stop.is_stopped() {
                break ConnEnd::Stopped;
            }
            match stream.read(buf) {
                Ok(0) => break ConnEnd::Eof,
                Ok(n) => {
                    bump(&self.stats.bytes, n as u64);
                    splitter.feed(&buf[..n], sink);
                    if !self.flush(sink) {
                        break ConnEnd::Stopped;
                    }
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                    ) => {}
                Err(e) => break ConnEnd::Error(e),
            }
        };
        match end {
            ConnEnd::Stopped => splitter.reset(),
            _ => {
                splitter.finish(sink);
                if !self.flush(sink) {
                    return ConnEnd::Stopped;
                }
            }
        }
        end
    }

    /// Flushes the sink, retrying (100 ms doubling to 2 s) while it fails:
    /// meanwhile nothing is read, so TCP holds the sender back. `false`:
    /// stopped while still failing.
    fn flush(&self, sink: &dyn LineSink) -> bool {
        let mut delay = Duration::from_millis(100);
        while !sink.flush() {
            if self.stop.wait(delay) {
                return false;
            }
            delay = (delay * 2).min(Duration::from_secs(2));
        }
        true
    }
}

fn connect_any(host: &str, port: u16) -> io::Result<TcpStream> {
    let addrs: Vec<SocketAddr> = (host, port).to_socket_addrs()?.collect();
    let mut last_err = io::Error::new(ErrorKind::NotFound, "host resolved to no addresses");
    for addr in addrs {
        match TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT) {
            Ok(stream) => return Ok(stream),
            Err(err) => last_err = err,
        }
    }
    Err(last_err)
}

/// At most one log line per interval; counts what it suppressed.
#[derive(Debug)]
struct RateLimiter {
    interval: Duration,
    last: Option<Instant>,
    suppressed: u64,
}

impl RateLimiter {
    fn new(interval: Duration) -> Self {
        RateLimiter {
            interval,
            last: None,
            suppressed: 0,
        }
    }

    /// `Some(suppressed_since_last)` if a message may be logged at `now`.
    fn check(&mut self, now: Instant) -> Option<u64> {
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
struct LineSplitter {
    max_line_bytes: usize,
    policy: NonUtf8Policy,
    endpoint: String,
    stats: Arc<SocketStats>,
    /// Start of a line that began in an earlier chunk (at most `max_line_bytes + 1` bytes).
    partial: Vec<u8>,
    /// Skipping the rest of an over-long line up to the next `\n`.
    discarding: bool,
    overlong_warn: RateLimiter,
    non_utf8_warn: RateLimiter,
}

impl LineSplitter {
    fn new(config: &SocketConfig, stats: Arc<SocketStats>) -> Self {
        LineSplitter {
            max_line_bytes: config.max_line_bytes,
            policy: config.non_utf8,
            endpoint: format!("{}:{}", config.host, config.port),
            stats,
            partial: Vec::new(),
            discarding: false,
            overlong_warn: RateLimiter::new(Duration::from_secs(1)),
            non_utf8_warn: RateLimiter::new(Duration::from_secs(1)),
        }
    }

    /// Bytes a partial line may hold before it is certainly over-long:
    /// the limit plus one byte for a `\r` that may precede the coming `\n`.
    fn partial_cap(&self) -> usize {
        self.max_line_bytes.saturating_add(1)
    }

    fn feed(&mut self, mut chunk: &[u8], sink: &dyn LineSink) {
        // A line begun in an earlier chunk (or being discarded) ends at
        // the first `\n`.
        if self.discarding || !self.partial.is_empty() {
            let Some(pos) = memchr::memchr(b'\n', chunk) else {
                self.keep_partial(chunk);
                return;
            };
            let seg = &chunk[..pos];
            chunk = &chunk[pos + 1..];
            if self.discarding {
                self.discarding = false;
            } else if self.partial.len() + seg.len() > self.partial_cap() {
                self.partial.clear();
                self.overlong();
            } else {
                self.append_partial(seg);
                let mut line = std::mem::take(&mut self.partial);
                self.deliver(&line, sink);
                line.clear();
                self.partial = line; // keep the allocation
            }
        }
        // The chunk's whole lines go to the sink together; a line needing
        // more than a check (over-long, not UTF-8) is delivered alone, in
        // its place.
        let mut lines: Vec<&str> = Vec::new();
        let mut start = 0;
        for pos in memchr::memchr_iter(b'\n', chunk) {
            let seg = &chunk[start..pos];
            start = pos + 1;
            let line = seg.strip_suffix(b"\r").unwrap_or(seg);
            match std::str::from_utf8(line) {
                Ok(s) if line.len() <= self.max_line_bytes => lines.push(s),
                _ => {
                    self.push_batch(&mut lines, sink);
                    self.deliver(seg, sink);
                }
            }
        }
        self.push_batch(&mut lines, sink);
        self.keep_partial(&chunk[start..]);
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
        if self.partial.len() + rest.len() > self.partial_cap() {
            self.partial.clear();
            self.discarding = true;
            self.overlong();
        } else {
            self.append_partial(rest);
        }
    }

    /// Appends to the partial line (the caller checked the cap). Grows
    /// geometrically but never past the cap, so the buffer's capacity stays
    /// within `max_line_bytes + 1`.
    fn append_partial(&mut self, bytes: &[u8]) {
        let needed = self.partial.len() + bytes.len();
        if needed > self.partial.capacity() {
            let target = needed
                .max(self.partial.capacity() * 2)
                .min(self.partial_cap());
            self.partial.reserve_exact(target - self.partial.len());
        }
        self.partial.extend_from_slice(bytes);
    }

    /// End of a connection: delivers a pending partial line.
    fn finish(&mut self, sink: &dyn LineSink) {
        if !self.discarding && !self.partial.is_empty() {
            let line = std::mem::take(&mut self.partial);
            self.deliver(&line, sink);
            self.partial = line;
        }
        self.reset();
    }

    /// Forgets any partial line.
    fn reset(&mut self) {
        self.partial.clear();
        self.discarding = false;
    }

    fn deliver(&mut self, line: &[u8], sink: &dyn LineSink) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::net::TcpListener;
    use std::sync::{Condvar, Mutex};

    const WAIT: Duration = Duration::from_secs(10);

    /// Collects lines; lets tests wait for them with a deadline.
    #[derive(Default)]
    struct Collect {
        lines: Mutex<Vec<String>>,
        cv: Condvar,
    }

    impl LineSink for Collect {
        fn push_line(&self, line: &str) {
            self.lines.lock().unwrap().push(line.to_string());
            self.cv.notify_all();
        }
    }

    impl Collect {
        /// Waits until at least `n` lines arrived (panics after `WAIT`); returns a copy.
        fn wait_for(&self, n: usize) -> Vec<String> {
            let deadline = Instant::now() + WAIT;
            let mut lines = self.lines.lock().unwrap();
            while lines.len() < n {
                let now = Instant::now();
                assert!(
                    now < deadline,
                    "timed out waiting for {n} lines, got {:?}",
                    *lines
                );
                lines = self.cv.wait_timeout(lines, deadline - now).unwrap().0;
            }
            lines.clone()
        }

        fn snapshot(&self) -> Vec<String> {
            self.lines.lock().unwrap().clone()
        }
    }

    fn poll_until(what: &str, mut cond: impl FnMut() -> bool) {
        let deadline = Instant::now() + WAIT;
        while !cond() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            thread::sleep(Duration::from_millis(5));
        }
    }

    fn accept(listener: &TcpListener) -> TcpStream {
        listener.set_nonblocking(true).unwrap();
        let deadline = Instant::now() + WAIT;
        loop {
            match listener.accept() {
                Ok((s, _)) => {
                    s.set_nonblocking(false).unwrap();
                    return s;
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    assert!(Instant::now() < deadline, "receiver never connected");
                    thread::sleep(Duration::from_millis(5));
                }
                Err(e) => panic!("accept: {e}"),
            }
        }
    }

    fn config(port: u16) -> SocketConfig {
        SocketConfig {
            port,
            reconnect_initial: Duration::from_millis(10),
            reconnect_max: Duration::from_millis(50),
            ..SocketConfig::default()
        }
    }

    fn start(cfg: SocketConfig) -> (SocketReceiver, Arc<Collect>) {
        let sink = Arc::new(Collect::default());
        let rx = SocketReceiver::start(cfg, sink.clone()).unwrap();
        (rx, sink)
    }

    fn listener() -> (TcpListener, u16) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        (l, port)
    }

    /// A port with (very probably) nobody listening on it.
    fn free_port() -> u16 {
        listener().1
    }

    fn stop_timed(rx: SocketReceiver) -> Duration {
        let t = Instant::now();
        rx.stop();
        t.elapsed()
    }

    #[test]
    fn default_config() {
        let c = SocketConfig::default();
        assert_eq!((c.host.as_str(), c.port), ("127.0.0.1", 9999));
        assert_eq!(c.max_line_bytes, 1 << 20);
        assert_eq!(c.non_utf8, NonUtf8Policy::Replace);
        assert_eq!(c.reconnect_initial, Duration::from_millis(100));
        assert_eq!(c.reconnect_max, Duration::from_secs(2));
    }

    #[test]
    fn rejects_invalid_config() {
        let sink: Arc<dyn LineSink> = Arc::new(Collect::default());
        let bad = [
            SocketConfig {
                host: String::new(),
                ..config(1)
            },
            SocketConfig {
                max_line_bytes: 0,
                ..config(1)
            },
            SocketConfig {
                reconnect_initial: Duration::ZERO,
                ..config(1)
            },
            SocketConfig {
                reconnect_max: Duration::from_millis(1),
                ..config(1)
            },
        ];
        for cfg in bad {
            let err = SocketReceiver::start(cfg, sink.clone()).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidInput);
        }
    }

    #[test]
    fn thread_is_named_after_endpoint() {
        struct Name(Mutex<Option<String>>);
        impl LineSink for Name {
            fn push_line(&self, _: &str) {
                *self.0.lock().unwrap() = thread::current().name().map(str::to_string);
            }
        }
        let (l, port) = listener();
        let sink = Arc::new(Name(Mutex::new(None)));
        let rx = SocketReceiver::start(config(port), sink.clone()).unwrap();
        let mut s = accept(&l);
        s.write_all(b"x\n").unwrap();
        poll_until("a line", || rx.stats().lines() == 1);
        assert_eq!(
            sink.0.lock().unwrap().as_deref(),
            Some(format!("sluice-socket-127.0.0.1:{port}").as_str())
        );
        rx.stop();
    }

    #[test]
    fn receives_lines_crlf_and_utf8() {
        let (l, port) = listener();
        let (rx, sink) = start(config(port));
        let mut s = accept(&l);
        let text = "hello world\r\nçà et là, naïve café\n日本語のテキスト\n🎉 party 🦀\n\nbare\rcr kept\ntwo cr\r\r\n\r\nlast\n";
        s.write_all(text.as_bytes()).unwrap();
        let expected = [
            "hello world",
            "çà et là, naïve café",
            "日本語のテキスト",
            "🎉 party 🦀",
            "",
            "bare\rcr kept",
            "two cr\r",
            "",
            "last",
        ];
        assert_eq!(sink.wait_for(expected.len()), expected);
        let stats = rx.stats();
        assert_eq!(stats.lines(), expected.len() as u64);
        assert_eq!(stats.bytes(), text.len() as u64);
        assert_eq!(stats.connects(), 1);
        assert_eq!(
            (
                stats.non_utf8_lines(),
                stats.overlong_lines(),
                stats.disconnects()
            ),
            (0, 0, 0)
        );
        rx.stop();
    }

    #[test]
    fn connection_refused_then_server_appears() {
        let port = free_port();
        let (rx, sink) = start(config(port));
        let stats = rx.stats();
        poll_until("two failed connects", || stats.connect_failures() >= 2);
        assert_eq!(stats.connects(), 0);
        let l = TcpListener::bind(("127.0.0.1", port)).unwrap();
        let mut s = accept(&l);
        s.write_all(b"finally\n").unwrap();
        assert_eq!(sink.wait_for(1), ["finally"]);
        assert_eq!(stats.connects(), 1);
        rx.stop();
    }

    #[test]
    fn partial_line_on_disconnect_then_reconnects() {
        let (l, port) = listener();
        let (rx, sink) = start(config(port));
        let stats = rx.stats();
        {
            let mut s = accept(&l);
            s.write_all(b"full line\npartial li").unwrap();
        } // server closes the first connection mid-line
        let mut s2 = accept(&l);
        s2.write_all(b"ne? no, a new line\n").unwrap();
        assert_eq!(
            sink.wait_for(3),
            ["full line", "partial li", "ne? no, a new line"]
        );
        assert_eq!(stats.connects(), 2);
        assert_eq!(stats.disconnects(), 1);
        rx.stop();
    }

    fn non_utf8(policy: NonUtf8Policy) -> Vec<String> {
        let (l, port) = listener();
        let (rx, sink) = start(SocketConfig {
            non_utf8: policy,
            ..config(port)
        });
        let mut s = accept(&l);
        s.write_all(b"ok\nbad \xff\xfe bytes\r\nafter\n").unwrap();
        poll_until("all lines", || {
            sink.snapshot().last().map(String::as_str) == Some("after")
        });
        assert_eq!(rx.stats().non_utf8_lines(), 1);
        rx.stop();
        sink.snapshot()
    }

    #[test]
    fn non_utf8_replace() {
        assert_eq!(
            non_utf8(NonUtf8Policy::Replace),
            ["ok", "bad \u{FFFD}\u{FFFD} bytes", "after"]
        );
    }

    #[test]
    fn non_utf8_skip() {
        assert_eq!(non_utf8(NonUtf8Policy::Skip), ["ok", "after"]);
    }

    #[test]
    fn overlong_line_dropped_neighbours_kept() {
        let (l, port) = listener();
        let (rx, sink) = start(config(port)); // max 1 MiB
        let mut s = accept(&l);
        let mut data = b"before\n".to_vec();
        data.resize(data.len() + 5 * 1024 * 1024, b'x');
        data.extend_from_slice(b"\nafter\n");
        s.write_all(&data).unwrap();
        assert_eq!(sink.wait_for(2), ["before", "after"]);
        let stats = rx.stats();
        assert_eq!(stats.overlong_lines(), 1);
        assert_eq!(stats.lines(), 2);
        assert_eq!(stats.bytes(), data.len() as u64);
        rx.stop();
    }

    #[test]
    fn stop_is_prompt_while_backing_off() {
        let port = free_port();
        let cfg = SocketConfig {
            reconnect_initial: Duration::from_secs(30),
            reconnect_max: Duration::from_secs(30),
            ..config(port)
        };
        let (rx, _sink) = start(cfg);
        let stats = rx.stats();
        poll_until("a failed connect", || stats.connect_failures() >= 1);
        // Spec: < ~250 ms; allow slack for a loaded machine, far below the 30 s back-off.
        assert!(stop_timed(rx) < Duration::from_secs(1));
    }

    #[test]
    fn stop_is_prompt_while_connected_idle() {
        let (l, port) = listener();
        let (rx, _sink) = start(config(port));
        let _s = accept(&l);
        let stats = rx.stats();
        poll_until("connected", || stats.connects() == 1);
        thread::sleep(Duration::from_millis(20)); // let it block in read
        assert!(stop_timed(rx) < Duration::from_secs(1));
    }

    #[test]
    fn stop_is_prompt_while_connecting() {
        // An unresolvable name: resolution may take long; stop must not wait for it.
        let cfg = SocketConfig {
            host: "sluice-no-such-host.invalid".to_string(),
            ..config(1)
        };
        let (rx, _sink) = start(cfg);
        thread::sleep(Duration::from_millis(30));
        assert!(stop_timed(rx) < Duration::from_secs(1));
    }

    #[test]
    fn drop_stops_the_receiver() {
        let (l, port) = listener();
        let (rx, _sink) = start(config(port));
        let mut s = accept(&l);
        drop(rx);
        // The receiver closed its end: reading sees EOF promptly.
        s.set_read_timeout(Some(WAIT)).unwrap();
        let mut b = [0u8; 1];
        assert_eq!(s.read(&mut b).unwrap(), 0);
    }

    // --- LineSplitter, deterministic chunking ---

    fn split(
        max: usize,
        chunks: &[&[u8]],
        policy: NonUtf8Policy,
    ) -> (Vec<String>, Arc<SocketStats>) {
        let stats = Arc::new(SocketStats::default());
        let cfg = SocketConfig {
            max_line_bytes: max,
            non_utf8: policy,
            ..SocketConfig::default()
        };
        let mut sp = LineSplitter::new(&cfg, stats.clone());
        let sink = Collect::default();
        for c in chunks {
            sp.feed(c, &sink);
            assert!(
                sp.partial.capacity() <= max + 1,
                "partial buffer exceeded the cap"
            );
        }
        sp.finish(&sink);
        (sink.snapshot(), stats)
    }

    #[test]
    fn splitter_same_result_for_every_chunking() {
        let input: &[u8] = b"12345678\r\n123456789\nabc\r\n\n12345678\r\n1234567890123\n\xffx\nend";
        let expected = ["12345678", "abc", "", "12345678", "\u{FFFD}x", "end"];
        for a in 0..=input.len() {
            for b in a..=input.len() {
                let (lines, stats) = split(
                    8,
                    &[&input[..a], &input[a..b], &input[b..]],
                    NonUtf8Policy::Replace,
                );
                assert_eq!(lines, expected, "split at {a},{b}");
                assert_eq!(stats.overlong_lines(), 2, "split at {a},{b}");
                assert_eq!(stats.non_utf8_lines(), 1);
            }
        }
        // Byte-at-a-time too.
        let bytes: Vec<&[u8]> = input.chunks(1).collect();
        assert_eq!(split(8, &bytes, NonUtf8Policy::Replace).0, expected);
    }

    #[test]
    fn splitter_limit_is_on_content_without_terminator() {
        assert_eq!(
            split(
                3,
                &[b"abc\r\n", b"abcd\n", b"ab\r\r\n"],
                NonUtf8Policy::Replace
            )
            .0,
            ["abc", "ab\r"]
        );
        assert_eq!(
            split(3, &[b"abc\r", b"\nabc\r", b"d\n"], NonUtf8Policy::Replace).0,
            ["abc"]
        );
    }

    #[test]
    fn splitter_overlong_partial_at_eof_is_dropped() {
        let (lines, stats) = split(4, &[b"ok\n", b"toolong", b"still"], NonUtf8Policy::Replace);
        assert_eq!(lines, ["ok"]);
        assert_eq!(stats.overlong_lines(), 1);
    }

    #[test]
    fn rate_limiter_suppresses_within_interval() {
        let mut r = RateLimiter::new(Duration::from_secs(1));
        let t0 = Instant::now();
        assert_eq!(r.check(t0), Some(0));
        assert_eq!(r.check(t0 + Duration::from_millis(10)), None);
        assert_eq!(r.check(t0 + Duration::from_millis(999)), None);
        assert_eq!(r.check(t0 + Duration::from_millis(1000)), Some(2));
        assert_eq!(r.check(t0 + Duration::from_millis(1001)), None);
    }
}
