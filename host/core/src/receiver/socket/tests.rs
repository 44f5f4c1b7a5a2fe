//! Tests of the socket receiver: against real TCP servers, and of its
//! line splitter with every chunking.

#![allow(clippy::unwrap_used)]

use super::splitter::{LineSplitter, RateLimiter};
use super::*;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Condvar, Mutex};
use std::time::Instant;

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

    fn push_encoded(&self, _: &Column) {
        unreachable!("a socket receiver pushes lines");
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

        fn push_encoded(&self, _: &Column) {
            unreachable!("a socket receiver pushes lines");
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
        "bare",
        "cr kept",
        "two cr",
        "",
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

fn split(max: usize, chunks: &[&[u8]], policy: NonUtf8Policy) -> (Vec<String>, Arc<SocketStats>) {
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
        ["abc", "ab", ""]
    );
    assert_eq!(
        split(
            3,
            &[b"abc\r", b"\nabcd\r", b"\nd\n"],
            NonUtf8Policy::Replace
        )
        .0,
        ["abc", "d"]
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
