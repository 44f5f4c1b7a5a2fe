//! `sluice feed`: a tiny TCP *server* that serves text lines to whoever
//! connects, so the socket word-count demo needs no `nc` (the role of the
//! "Tweeter" thread in the original socket word-count demo).
//!
//! [`FeedServer::start`] binds [`FeedConfig::addr`] and spawns an accept
//! thread (`sluice-feed-accept`). Every client that connects gets its own
//! thread (`sluice-feed-client`) which writes the lines, each terminated by
//! `\n`, starting from the first line, at [`FeedConfig::lines_per_second`]
//! (paced with sleeps against a schedule, so the rate does not drift; a
//! client that falls behind is not sent a burst to catch up beyond one
//! second's worth). The lines are [`FeedConfig::lines`], or the embedded
//! [`default_corpus`] if that is empty. With [`FeedConfig::repeat`] (the
//! default) the lines loop forever; without it the server closes the
//! connection after the last line. A line that itself contains `\n` reaches
//! the client as several lines.
//!
//! A client that disconnects (or whose connection fails) is dropped quietly
//! with a `debug!` log; other clients are unaffected. [`FeedServer::stop`]
//! (or dropping the server) stops accepting, closes every client connection
//! and joins all threads; it returns promptly even if a client is not
//! reading (its socket is shut down under the blocked write).
//!
//! This is a demo traffic generator, not part of the engine's data path.

use crate::stop::StopSignal;
use std::io::{self, ErrorKind, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// Configuration of a [`FeedServer`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeedConfig {
    /// Address to listen on, e.g. `127.0.0.1:9999` (port 0 picks a free port).
    pub addr: SocketAddr,
    /// Lines written per second to each client (default 10). Must be at least 1.
    pub lines_per_second: u32,
    /// Lines to serve; empty means the embedded [`default_corpus`].
    pub lines: Vec<String>,
    /// Loop over the lines forever (default true); otherwise close after the last one.
    pub repeat: bool,
}

impl Default for FeedConfig {
    fn default() -> Self {
        FeedConfig {
            addr: SocketAddr::from(([127, 0, 0, 1], 9999)),
            lines_per_second: 10,
            lines: Vec::new(),
            repeat: true,
        }
    }
}

/// A running feed server; stops on [`stop`](Self::stop) or drop.
#[derive(Debug)]
pub struct FeedServer {
    local_addr: SocketAddr,
    shared: Arc<Shared>,
    accept_thread: Option<JoinHandle<()>>,
}

impl FeedServer {
    /// Binds `config.addr` and starts serving.
    ///
    /// Fails with `InvalidInput` if `lines_per_second` is 0, with the bind
    /// error if the address cannot be bound, or with the spawn error.
    pub fn start(config: FeedConfig) -> io::Result<FeedServer> {
        if config.lines_per_second == 0 {
            return Err(io::Error::new(
                ErrorKind::InvalidInput,
                "feed: lines_per_second must be at least 1",
            ));
        }
        let listener = TcpListener::bind(config.addr)?;
        let local_addr = listener.local_addr()?;
        listener.set_nonblocking(true)?;
        let lines: Vec<Box<[u8]>> = if config.lines.is_empty() {
            default_corpus().iter().map(|l| terminated(l)).collect()
        } else {
            config.lines.iter().map(|l| terminated(l)).collect()
        };
        let plan = Arc::new(Plan {
            lines,
            interval: Duration::from_secs(1) / config.lines_per_second,
            repeat: config.repeat,
        });
        let shared = Arc::new(Shared::default());
        let accept_shared = Arc::clone(&shared);
        let accept_thread = thread::Builder::new()
            .name("sluice-feed-accept".to_string())
            .spawn(move || accept_loop(listener, plan, accept_shared))?;
        tracing::info!("feed serving on {local_addr}");
        Ok(FeedServer {
            local_addr,
            shared,
            accept_thread: Some(accept_thread),
        })
    }

    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops accepting, closes all client connections and joins the threads.
    pub fn stop(self) {
        // Drop does the work.
    }

    fn shutdown(&mut self) {
        self.shared.trigger();
        if let Some(t) = self.accept_thread.take()
            && t.join().is_err()
        {
            tracing::warn!("feed accept thread panicked");
        }
        // The accept thread has ended, so no client is added from here on.
        let clients = std::mem::take(&mut *lock(&self.shared.clients));
        for client in &clients {
            // Unblocks a client thread stuck writing to a peer that does not read.
            let _ = client.stream.shutdown(Shutdown::Both);
        }
        for client in clients {
            if client.thread.join().is_err() {
                tracing::warn!("feed client thread panicked");
            }
        }
        tracing::info!("feed on {} stopped", self.local_addr);
    }
}

impl Drop for FeedServer {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// What every client is sent.
struct Plan {
    /// Lines with their `\n`, ready to write in one call.
    lines: Vec<Box<[u8]>>,
    interval: Duration,
    repeat: bool,
}

struct Client {
    /// A second handle to the client's socket, for shutting it down on stop.
    stream: TcpStream,
    thread: JoinHandle<()>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("stream", &self.stream)
            .finish_non_exhaustive()
    }
}

/// Stop flag with interruptible waits, plus the live clients.
#[derive(Debug, Default)]
struct Shared {
    stop: StopSignal,
    clients: Mutex<Vec<Client>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Shared {
    fn trigger(&self) {
        self.stop.trigger();
    }

    fn is_stopped(&self) -> bool {
        self.stop.is_stopped()
    }

    /// Sleeps until `deadline`; returns true if stopped.
    fn wait_until(&self, deadline: Instant) -> bool {
        self.stop.wait_until(deadline)
    }
}

fn terminated(line: &str) -> Box<[u8]> {
    let mut bytes = Vec::with_capacity(line.len() + 1);
    bytes.extend_from_slice(line.as_bytes());
    bytes.push(b'\n');
    bytes.into_boxed_slice()
}

/// How often the (non-blocking) listener is polled for new clients.
const ACCEPT_POLL: Duration = Duration::from_millis(20);

fn accept_loop(listener: TcpListener, plan: Arc<Plan>, shared: Arc<Shared>) {
    loop {
        match listener.accept() {
            Ok((stream, peer)) => {
                if let Err(err) = add_client(stream, peer, &plan, &shared) {
                    tracing::warn!("feed: could not serve {peer}: {err}");
                }
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::Interrupted) => {
                if shared.wait_until(Instant::now() + ACCEPT_POLL) {
                    return;
                }
            }
            Err(e) => {
                // E.g. too many open files: back off instead of spinning.
                tracing::warn!("feed: accept failed: {e}");
                if shared.wait_until(Instant::now() + Duration::from_millis(200)) {
                    return;
                }
            }
        }
        if shared.is_stopped() {
            return;
        }
        // Forget clients that have finished.
        lock(&shared.clients).retain(|c| !c.thread.is_finished());
    }
}

fn add_client(
    stream: TcpStream,
    peer: SocketAddr,
    plan: &Arc<Plan>,
    shared: &Arc<Shared>,
) -> io::Result<()> {
    // Accepted sockets may inherit non-blocking mode on some platforms.
    stream.set_nonblocking(false)?;
    let _ = stream.set_nodelay(true); // lines are small and paced: send each at once
    let handle = stream.try_clone()?;
    let plan = Arc::clone(plan);
    let client_shared = Arc::clone(shared);
    let thread = thread::Builder::new()
        .name("sluice-feed-client".to_string())
        .spawn(move || serve_client(stream, peer, &plan, &client_shared))?;
    tracing::debug!("feed: client {peer} connected");
    lock(&shared.clients).push(Client {
        stream: handle,
        thread,
    });
    Ok(())
}

fn serve_client(mut stream: TcpStream, peer: SocketAddr, plan: &Plan, shared: &Shared) {
    let mut next = Instant::now();
    let mut sent: u64 = 0;
    loop {
        for line in &plan.lines {
            if shared.wait_until(next) {
                return; // stop() shuts the socket down
            }
            if let Err(err) = stream.write_all(line) {
                tracing::debug!("feed: client {peer} dropped after {sent} lines: {err}");
                return;
            }
            sent += 1;
            next += plan.interval;
            // A slow client gets at most a second's worth of catch-up.
            if let Some(floor) = Instant::now().checked_sub(Duration::from_secs(1))
                && next < floor
            {
                next = floor;
            }
        }
        if !plan.repeat || plan.lines.is_empty() {
            break;
        }
    }
    tracing::debug!("feed: sent all {sent} lines to {peer}, closing");
    let _ = stream.shutdown(Shutdown::Both);
}

/// The embedded demo corpus: short tweet-like English sentences with many
/// repeated words (so word counts are interesting) and a few with accents
/// and emoji.
pub fn default_corpus() -> &'static [&'static str] {
    CORPUS
}

const CORPUS: &[&str] = &[
    "the quick brown fox jumps over the lazy dog",
    "streaming data is just data that never stops",
    "micro batches make the stream feel like a table",
    "the dog sleeps while the fox runs",
    "coffee first then code then more coffee",
    "every batch is a small table of the stream",
    "spark streaming taught us to count words",
    "count the words in the stream and count them again",
    "the stream never sleeps and neither does the dog",
    "a word count is the hello world of streaming",
    "hello world hello stream hello batch",
    "rust makes the stream fast and the code safe",
    "the fox and the dog are friends now",
    "window of ten seconds sliding every two seconds",
    "late data is still data",
    "the quick stream jumps over the lazy batch",
    "more data more batches more words to count",
    "just shipped a new release of the stream engine",
    "is it a bug or a feature asks the fox",
    "the lazy dog counts sheep not words",
    "café au lait and a croissant before the deploy ☕",
    "naïve word counts split on spaces and that is fine",
    "the stream is on fire today 🔥🔥",
    "happy friday to everyone counting words 🎉",
    "small data big ideas",
    "big data small batches",
    "words words words said hamlet to the stream",
    "the batch is late because the dog ate it",
    "one fish two fish red fish blue fish",
    "to be or not to be streamed",
    "the fox counts faster than the dog",
    "every second a new batch every batch a new count",
    "a sandboxed operator is a happy operator",
    "the stream goes on and on and on",
    "checkpoint early checkpoint often",
    "hello again world the stream is back",
    "the quick brown fox is quick again",
    "zürich to são paulo the data flows",
    "good night stream see you in the next batch 🌙",
    "the end of the corpus is the start of the loop",
];

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader, Read};

    const WAIT: Duration = Duration::from_secs(10);

    fn start(lines_per_second: u32, lines: &[&str], repeat: bool) -> FeedServer {
        FeedServer::start(FeedConfig {
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            lines_per_second,
            lines: lines.iter().map(|s| s.to_string()).collect(),
            repeat,
        })
        .unwrap()
    }

    fn connect(server: &FeedServer) -> BufReader<TcpStream> {
        let s = TcpStream::connect(server.local_addr()).unwrap();
        s.set_read_timeout(Some(WAIT)).unwrap();
        BufReader::new(s)
    }

    /// Reads `n` lines (the read timeout bounds the wait).
    fn read_lines(r: &mut BufReader<TcpStream>, n: usize) -> Vec<String> {
        (0..n)
            .map(|_| {
                let mut l = String::new();
                assert!(r.read_line(&mut l).unwrap() > 0, "unexpected EOF");
                assert_eq!(l.pop(), Some('\n'));
                l
            })
            .collect()
    }

    fn read_to_eof(r: &mut BufReader<TcpStream>) -> Vec<String> {
        let mut s = String::new();
        r.read_to_string(&mut s).unwrap();
        s.lines().map(str::to_string).collect()
    }

    #[test]
    fn corpus_is_sane() {
        let c = default_corpus();
        assert!((30..=50).contains(&c.len()));
        assert!(
            c.iter()
                .all(|l| !l.is_empty() && !l.contains('\n') && !l.contains('\r'))
        );
        assert!(c.iter().any(|l| !l.is_ascii()));
        let the = c
            .iter()
            .filter(|l| l.split(' ').any(|w| w == "the"))
            .count();
        assert!(the > 10, "words should repeat across lines");
    }

    #[test]
    fn client_receives_corpus_in_order() {
        let server = start(50, &[], true);
        let mut r = connect(&server);
        let got = read_lines(&mut r, 8);
        assert_eq!(got, default_corpus()[..8]);
        server.stop();
    }

    #[test]
    fn two_clients_both_receive() {
        let server = start(100, &[], true);
        let mut a = connect(&server);
        let mut b = connect(&server);
        assert_eq!(read_lines(&mut a, 5), default_corpus()[..5]);
        assert_eq!(read_lines(&mut b, 5), default_corpus()[..5]);
        server.stop();
    }

    #[test]
    fn repeat_loops_the_lines() {
        let server = start(1000, &["x", "y"], true);
        let mut r = connect(&server);
        assert_eq!(read_lines(&mut r, 5), ["x", "y", "x", "y", "x"]);
        server.stop();
    }

    #[test]
    fn no_repeat_closes_after_last_line() {
        let server = start(1000, &["alpha", "béta 🚀", "", "gamma"], false);
        let mut r = connect(&server);
        assert_eq!(read_to_eof(&mut r), ["alpha", "béta 🚀", "", "gamma"]);
        server.stop();
    }

    #[test]
    fn stop_is_prompt_and_closes_clients() {
        let server = start(1, &[], true); // slow: the client thread sleeps ~1 s between lines
        let mut r = connect(&server);
        assert_eq!(read_lines(&mut r, 1), default_corpus()[..1]);
        let t = Instant::now();
        server.stop();
        assert!(
            t.elapsed() < Duration::from_secs(1),
            "stop took {:?}",
            t.elapsed()
        );
        let mut rest = Vec::new();
        // EOF (Ok) or reset (Err) both mean closed; a timeout would fail the test.
        match r.read_to_end(&mut rest) {
            Ok(_) => {}
            Err(e) => assert!(
                !matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut),
                "{e}"
            ),
        }
    }

    #[test]
    fn stop_is_prompt_with_a_client_that_does_not_read() {
        let server = start(
            1_000_000,
            &["a line that fills the socket buffers quickly"],
            true,
        );
        let _c = TcpStream::connect(server.local_addr()).unwrap();
        thread::sleep(Duration::from_millis(100)); // let the writer fill the buffers and block
        let t = Instant::now();
        server.stop();
        assert!(
            t.elapsed() < Duration::from_secs(1),
            "stop took {:?}",
            t.elapsed()
        );
    }

    #[test]
    fn disconnecting_client_does_not_disturb_others() {
        let server = start(200, &[], true);
        let gone = connect(&server);
        let mut stays = connect(&server);
        drop(gone);
        assert_eq!(read_lines(&mut stays, 20), default_corpus()[..20]);
        server.stop();
    }

    #[test]
    fn rejects_zero_rate_and_reports_bind_errors() {
        let err = FeedServer::start(FeedConfig {
            lines_per_second: 0,
            ..FeedConfig::default()
        })
        .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidInput);
        let server = start(10, &[], true);
        let err = FeedServer::start(FeedConfig {
            addr: server.local_addr(),
            ..FeedConfig::default()
        })
        .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::AddrInUse);
        server.stop();
    }
}
