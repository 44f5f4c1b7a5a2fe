//! Sources: where batches come from. A receiver thread (socket) fills a
//! [`BlockBuffer`]; at each batch time the engine seals what arrived into the
//! batch's partitions. Replayable sources (queue) produce their batch directly.

pub(crate) mod file;
pub mod file_store;
pub mod generator;
mod lines;
pub mod queue;
pub mod rate;
pub mod socket;
pub(crate) mod wal;

use crate::error::Result;
use crate::rdd::Rdd;
use crate::time::BatchTime;
use sluice_sdk::Column;
use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// A source of batches for one input stream: the seam a connector
/// implements (this module's sockets, files, queues and generators; the
/// broker connectors of `sluice-brokers`), added to a job with
/// [`StreamingContext::source_stream`](crate::StreamingContext::source_stream).
///
/// The engine calls it from the batch loop, one call at a time: `restore`
/// (resuming from a checkpoint), `start`, then per batch `next_batch` (or
/// `replay_batch` for a batch re-run after a crash) followed by
/// `batch_record`, and `committed` once a checkpoint holding its
/// `position` is durable.
pub trait Source: Send {
    /// What it reads, for the plan (`sluice explain`).
    fn describe(&self) -> String;
    /// Partitions per batch (a receiver cuts a large batch into more).
    fn partitions(&self) -> usize;
    /// Starts receiving (spawns receiver threads). Called once before the first batch.
    fn start(&mut self) -> Result<()> {
        Ok(())
    }
    /// The data of the batch at `time`: what arrived in `(time - interval, time]`.
    fn next_batch(&mut self, time: BatchTime) -> Result<Rdd>;
    /// Stops receiving.
    fn stop(&mut self) {}
    /// For finite sources: how many batches they hold.
    fn finite_batches(&self) -> Option<u64> {
        None
    }
    /// Where the source stands after its last batch, for checkpoints
    /// (`None`: it cannot resume from a position).
    fn position(&self) -> Option<Vec<u8>> {
        None
    }
    /// Resumes at a position [`Source::position`] returned (before `start`).
    fn restore(&mut self, _position: &[u8]) -> Result<()> {
        Ok(())
    }
    /// The job checkpoints: a source that cannot replay keeps a write-ahead
    /// log in `dir` (called before `restore` and `start`).
    fn attach_log(&mut self, _dir: &Path) {}
    /// The oldest retained checkpoint is of batch `oldest`: log data only
    /// it could need may go.
    fn truncate_log(&mut self, _oldest: BatchTime) {}
    /// Resumed after a stop: batches before `now` are down-time batches,
    /// each of which should get the data of its own interval if the source
    /// can tell (the file source, by modification time).
    fn catch_up(&mut self, _now: BatchTime) {}
    /// What the last batch took, for the batch log: enough for
    /// [`Source::replay_batch`] to take the same again (empty when the
    /// source's own position decides).
    fn batch_record(&self) -> Vec<u8> {
        Vec::new()
    }
    /// The batch at `time` again, after a crash, as [`Source::batch_record`]
    /// described it.
    fn replay_batch(&mut self, time: BatchTime, _record: &[u8]) -> Result<Rdd> {
        self.next_batch(time)
    }
    /// Backpressure: the rate (records/s) the job can take now (`None`:
    /// unlimited); receivers that can slow down hold to it.
    fn set_rate(&mut self, _rate: Option<f64>) {}
    /// The receiving rate in force, if the source is limited.
    fn rate_limit(&self) -> Option<f64> {
        None
    }
    /// Errors of the receiver since the last call (connection failures,
    /// unreadable files), for listeners.
    fn take_errors(&mut self) -> Vec<String> {
        Vec::new()
    }
    /// How far behind the source's input the job is after a batch: per
    /// partition of the input (a label), the records there not yet read
    /// (empty: the source cannot tell).
    fn lag(&self) -> Vec<(String, u64)> {
        Vec::new()
    }
    /// A checkpoint holding `position` (what [`Source::position`] gave) is
    /// durable: no recovery will read before it again, so a source may now
    /// acknowledge what it took up to there (a broker's consumer).
    fn committed(&mut self, _position: &[u8]) {}
    /// A Kappa replay: read the history stored from `from` (ms since the
    /// epoch; `None`: the earliest retained) up to `to` instead of live
    /// input, each batch at `t` taking the records stored in
    /// `(t - interval, t]` — so the batches, and the windows over them, are
    /// those a live run had. Called before `start`; returns the time of the
    /// first record in the range (`None`: nothing there). Sources that
    /// cannot replay (a socket, MQTT) refuse.
    fn replay_history(&mut self, _from: Option<i64>, _to: i64) -> Result<Option<i64>> {
        Err(crate::error::Error::Plan(format!(
            "{} cannot replay history: only broker sources that keep it (kafka, nats) can",
            self.describe()
        )))
    }
}

/// Lines received but not yet sealed into a batch, already encoded; with a
/// write-ahead log, only lines already logged (see [`wal`]).
#[derive(Debug, Clone)]
pub struct BlockBuffer {
    inner: Arc<Mutex<Blocks>>,
    throttle: Arc<rate::Throttle>,
    /// Unbatched bytes beyond which pushing waits.
    max_bytes: usize,
    /// Set when the source stops: a receiver waiting for room gives up.
    closed: Arc<std::sync::atomic::AtomicBool>,
}

/// Received-but-unbatched bytes beyond which a socket receiver stops
/// reading until a batch takes them (TCP then holds the sender back), by
/// default ([`SocketConfig::max_buffered_bytes`](socket::SocketConfig::max_buffered_bytes)).
pub const MAX_BUFFERED_BYTES: usize = 64 << 20;

impl Default for BlockBuffer {
    fn default() -> Self {
        BlockBuffer::new(None, MAX_BUFFERED_BYTES)
    }
}

#[derive(Debug, Default)]
struct Blocks {
    /// Lines ready for the next batch.
    ready: Column,
    /// With a log: lines received, `\n`-terminated, not yet logged.
    pending: Vec<u8>,
    /// With a log: elements received (from a receiver of elements rather
    /// than lines), not yet logged.
    pending_values: Column,
    wal: Option<wal::Wal>,
    /// The log is failing (reported once until it works again).
    failing: bool,
}

impl Blocks {
    /// Logs the pending lines and elements, then makes them ready. `false`
    /// on a log error (reported; they stay pending).
    fn flush(&mut self) -> bool {
        let Some(log) = self.wal.as_mut() else {
            return true;
        };
        if self.pending.is_empty() && self.pending_values.is_empty() {
            return true;
        }
        let mut logged = Ok(());
        if !self.pending.is_empty() {
            logged = log.append_lines(&self.pending);
            if logged.is_ok() {
                let text = String::from_utf8_lossy(&self.pending);
                for line in text.split_terminator('\n') {
                    let _ = self.ready.push_str(line);
                }
                self.pending.clear();
            }
        }
        if logged.is_ok() && !self.pending_values.is_empty() {
            logged = log.append_values(&self.pending_values.bytes);
            if logged.is_ok() {
                let _ = self.ready.extend_from(&self.pending_values);
                self.pending_values.clear();
            }
        }
        if let Err(e) = logged {
            if !std::mem::replace(&mut self.failing, true) {
                tracing::error!(
                    "write-ahead log: cannot log received lines, not reading until it works: {e}"
                );
            }
            return false;
        }
        if std::mem::take(&mut self.failing) {
            tracing::info!("write-ahead log: writing again");
        }
        true
    }
}

impl BlockBuffer {
    /// A buffer whose receiver takes at most `max_rate` lines per second
    /// and holds at most about `max_bytes` unbatched.
    pub fn new(max_rate: Option<f64>, max_bytes: usize) -> Self {
        BlockBuffer {
            inner: Arc::default(),
            throttle: Arc::new(rate::Throttle::new(max_rate)),
            max_bytes,
            closed: Arc::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Blocks> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes everything received so far, leaving the buffer empty.
    pub fn seal(&self) -> Column {
        std::mem::take(&mut self.lock().ready)
    }

    /// With a log: logs the seal of batch `time` durably, then takes the
    /// lines logged before it. On error nothing is taken.
    fn seal_logged(&self, time: BatchTime) -> std::io::Result<(Column, Option<wal::LogPosition>)> {
        let mut b = self.lock();
        b.flush();
        let position = match b.wal.as_mut() {
            Some(log) => Some(log.seal(time.millis())?),
            None => None,
        };
        Ok((std::mem::take(&mut b.ready), position))
    }
}

impl socket::LineSink for BlockBuffer {
    fn push_line(&self, line: &str) {
        self.push_lines(&[line]);
    }

    fn push_lines(&self, lines: &[&str]) {
        if self.throttle.limit().is_some() {
            // Under a rate limit, each line waits for its token, so that
            // lines keep arriving at the rate rather than in bursts.
            for line in lines {
                self.throttle.acquire();
                self.push_now(std::slice::from_ref(line));
            }
        } else {
            self.push_now(lines);
        }
    }

    fn push_encoded(&self, values: &Column) {
        if self.throttle.limit().is_some() {
            for v in values.iter() {
                self.throttle.acquire();
                let mut b = self.room();
                push_value(&mut b, v);
            }
        } else {
            let mut b = self.room();
            if b.wal.is_some() {
                let _ = b.pending_values.extend_from(values);
            } else {
                let _ = b.ready.extend_from(values);
            }
        }
    }

    fn flush(&self) -> bool {
        self.lock().flush()
    }
}

/// Adds one encoded element: pending with a log, else ready.
fn push_value(b: &mut Blocks, value: &[u8]) {
    // Values come from a valid column, so they fit.
    if b.wal.is_some() {
        let _ = b.pending_values.push_encoded(value);
    } else {
        let _ = b.ready.push_encoded(value);
    }
}

impl BlockBuffer {
    /// The buffer, once it has room (or the source stopped).
    fn room(&self) -> std::sync::MutexGuard<'_, Blocks> {
        let mut b = self.lock();
        while b.ready.bytes.len() + b.pending.len() + b.pending_values.bytes.len() > self.max_bytes
            && !self.closed.load(std::sync::atomic::Ordering::Relaxed)
        {
            drop(b);
            std::thread::sleep(std::time::Duration::from_millis(5));
            b = self.lock();
        }
        b
    }

    /// Adds `lines` once there is room for them.
    fn push_now(&self, lines: &[&str]) {
        let mut b = self.room();
        if b.wal.is_some() {
            for line in lines {
                b.pending.extend_from_slice(line.as_bytes());
                b.pending.push(b'\n');
            }
        } else {
            for line in lines {
                let _ = b.ready.push_str(line);
            }
        }
    }
}

/// `socket_text_stream`: a TCP client receiving lines (see [`socket`]);
/// with checkpointing, every line is logged before it enters a batch.
pub struct LineSource {
    /// Starts the receiver (taken when it starts).
    start: Option<StartReceiver>,
    receiver: Option<Box<dyn Receiver>>,
    buffer: BlockBuffer,
    partitions: usize,
    /// What it receives from, for the plan (`socket 127.0.0.1:9999`).
    what: String,
    /// The write-ahead log's directory, when the job checkpoints.
    log_dir: Option<PathBuf>,
    /// Where to read the log from on start (the checkpoint's position).
    from: wal::LogPosition,
    /// Batches read back from the log, to be re-run first.
    recovered: VecDeque<wal::Group>,
    /// The log position after the last batch.
    position: wal::LogPosition,
}

/// A receiver thread feeding a [`LineSource`]: it ends when stopped.
pub trait Receiver: Send {
    /// Stops it (and waits for it).
    fn stop(self: Box<Self>);
    /// Its errors since the last call, for listeners.
    fn take_errors(&self) -> Vec<String> {
        Vec::new()
    }
    /// Why it gave up, if it did (refused credentials): the job stops.
    fn failed(&self) -> Option<String> {
        None
    }
}

/// Starts a receiver that pushes what it receives into the sink (and, for
/// a source that can be told to resend, acknowledges it only once
/// [`LineSink::flush`] returned `true`: then it is in the write-ahead log).
pub type StartReceiver =
    Box<dyn FnOnce(Arc<dyn socket::LineSink>) -> std::io::Result<Box<dyn Receiver>> + Send>;

impl LineSource {
    /// A source of lines from a receiver that `start` starts, described as
    /// `what`, in `partitions` partitions (more for a large batch), taking
    /// at most `max_rate` lines/s and holding at most about `max_bytes`
    /// unbatched. With checkpoints, every line is in the write-ahead log
    /// before it can enter a batch.
    pub fn new(
        what: &str,
        partitions: usize,
        (max_rate, max_bytes): (Option<f64>, usize),
        start: StartReceiver,
    ) -> Self {
        LineSource {
            buffer: BlockBuffer::new(max_rate, max_bytes),
            what: what.to_string(),
            start: Some(start),
            receiver: None,
            partitions: partitions.max(1),
            log_dir: None,
            from: (0, 0),
            recovered: VecDeque::new(),
            position: (0, 0),
        }
    }

    /// A TCP socket's lines (`socket_text_stream`).
    pub(crate) fn socket(config: socket::SocketConfig, partitions: usize) -> Self {
        let what = format!("socket {}:{}", config.host, config.port);
        let limits = (config.max_rate.map(|r| r as f64), config.max_buffered_bytes);
        LineSource::new(
            &what,
            partitions,
            limits,
            Box::new(move |sink| {
                let r = socket::SocketReceiver::start(config, sink)?;
                Ok(Box::new(r) as Box<dyn Receiver>)
            }),
        )
    }
}

impl Receiver for socket::SocketReceiver {
    fn stop(self: Box<Self>) {
        socket::SocketReceiver::stop(*self);
    }

    fn take_errors(&self) -> Vec<String> {
        self.stats().take_errors()
    }
}

impl Source for LineSource {
    fn describe(&self) -> String {
        self.what.clone()
    }
    fn partitions(&self) -> usize {
        self.partitions
    }
    fn attach_log(&mut self, dir: &Path) {
        self.log_dir = Some(dir.to_path_buf());
    }

    fn restore(&mut self, position: &[u8]) -> Result<()> {
        self.from = wal::decode_position(position).ok_or_else(|| {
            crate::error::Error::Internal("a socket position is 16 bytes".to_string())
        })?;
        self.position = self.from;
        Ok(())
    }

    fn start(&mut self) -> Result<()> {
        if let Some(dir) = &self.log_dir {
            let (log, recovered) = wal::Wal::open(dir, self.from).map_err(|e| {
                crate::error::Error::io(format!("opening the write-ahead log {}", dir.display()), e)
            })?;
            if !recovered.is_empty() {
                let lines: usize = recovered.iter().map(|g| g.lines.len()).sum();
                tracing::info!(
                    log = %dir.display(),
                    lines,
                    batches = recovered.iter().filter(|g| g.time.is_some()).count(),
                    "write-ahead log: replaying lines received before the stop"
                );
            }
            self.recovered = recovered;
            self.buffer.lock().wal = Some(log);
        }
        if let Some(start) = self.start.take() {
            let what = format!("starting the receiver of {}", self.what);
            let r = start(Arc::new(self.buffer.clone()))
                .map_err(|e| crate::error::Error::io(what, e))?;
            self.receiver = Some(r);
        }
        Ok(())
    }

    fn next_batch(&mut self, time: BatchTime) -> Result<Rdd> {
        if let Some(why) = self.receiver.as_ref().and_then(|r| r.failed()) {
            return Err(crate::error::Error::Source {
                name: self.what.clone(),
                message: why,
            });
        }
        // Batches sealed before a crash come back with exactly their lines
        // (older ones, from before a restart at new times, merge in).
        let mut lines = Column::new();
        let mut replayed = false;
        while let Some(g) = self
            .recovered
            .front()
            .filter(|g| g.time.is_some_and(|t| t <= time.millis()))
        {
            let _ = lines.extend_from(&g.lines);
            self.position = g.end;
            replayed = true;
            self.recovered.pop_front();
        }
        if replayed || self.recovered.front().is_some_and(|g| g.time.is_some()) {
            return Ok(Rdd::from_received(&lines, self.partitions));
        }
        // Received and logged but never batched, then what is new.
        if let Some(tail) = self.recovered.pop_front() {
            lines = tail.lines;
        }
        // A batch is not formed from an unlogged seal.
        let (live, position) = crate::fsutil::retry_write(
            "the write-ahead log's seal",
            time.millis(),
            || false,
            || self.buffer.seal_logged(time),
        )
        .map_err(|e| crate::error::Error::io("sealing a batch in the write-ahead log", e))?;
        let _ = lines.extend_from(&live);
        if let Some(p) = position {
            self.position = p;
        }
        Ok(Rdd::from_received(&lines, self.partitions))
    }

    fn position(&self) -> Option<Vec<u8>> {
        self.log_dir
            .as_ref()
            .map(|_| wal::encode_position(self.position))
    }

    fn truncate_log(&mut self, oldest: BatchTime) {
        if let Some(log) = self.buffer.lock().wal.as_mut()
            && let Err(e) = log.truncate(oldest.millis())
        {
            tracing::warn!("write-ahead log: cannot remove old segments: {e}");
        }
    }

    fn set_rate(&mut self, rate: Option<f64>) {
        self.buffer.throttle.set(rate);
    }

    fn rate_limit(&self) -> Option<f64> {
        self.buffer.throttle.limit()
    }

    fn take_errors(&mut self) -> Vec<String> {
        self.receiver
            .as_ref()
            .map(|r| r.take_errors())
            .unwrap_or_default()
    }

    fn stop(&mut self) {
        self.buffer
            .closed
            .store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(r) = self.receiver.take() {
            r.stop();
        }
    }
}
