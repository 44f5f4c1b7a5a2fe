//! The receiver thread: connecting (on a helper thread, with back-off),
//! reading a connection into the [`LineSplitter`], flushing the sink.

use super::splitter::LineSplitter;
use super::{LineSink, SocketConfig, SocketStats, bump};
use crate::stop::StopSignal;
use std::io::{self, ErrorKind, Read};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread;
use std::time::Duration;

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

/// The receiver thread's state.
pub(super) struct Worker {
    pub(super) config: SocketConfig,
    pub(super) sink: Arc<dyn LineSink>,
    pub(super) stop: Arc<StopSignal>,
    pub(super) stats: Arc<SocketStats>,
}

impl Worker {
    /// Connects, reads and reconnects until stopped.
    pub(super) fn run(self) {
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

    /// Reads `stream` into `splitter` until it ends or the receiver stops.
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

/// Connects to the first of `host`'s addresses that accepts.
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
