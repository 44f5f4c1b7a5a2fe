//! A real job on a real TCP server: word count over the socket receiver,
//! through a disconnect and reconnect, with a non-UTF-8 line, on the system clock.

use sluice::LoadPlugins;
use sluice::{Func, StreamingContext};
use sluice_tests::{plugin, runtime};
use std::collections::BTreeMap;
use std::io::Write;
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[test]
fn word_count_over_a_socket_survives_a_reconnect() {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let server = std::thread::spawn(move || {
        // First connection: lines, a non-UTF-8 line, a partial last line, then close.
        let (mut c, _) = listener.accept().expect("accept 1");
        c.write_all(b"hello world hello\r\nthe quick brown fox\n\xff\xfe bad\npartial")
            .expect("write");
        drop(c);
        // The receiver reconnects with a new connection.
        let (mut c, _) = listener.accept().expect("accept 2");
        c.write_all("after reconnect über\n".as_bytes())
            .expect("write");
        std::thread::sleep(Duration::from_secs(30));
    });
    let ssc = StreamingContext::new(Duration::from_millis(200))
        .with_workers(2)
        .with_runtime(runtime());
    let wc = ssc
        .load_plugin("wordcount", plugin("wordcount"))
        .expect("wordcount");
    let counts = ssc
        .socket_text_stream("127.0.0.1", port)
        .flat_map(wc.func("split").expect("split"))
        .map(wc.func("pair").expect("pair"))
        .reduce_by_key(wc.func("add").expect("add"), 2);
    let totals: Arc<Mutex<BTreeMap<String, i64>>> = Arc::default();
    let t = totals.clone();
    counts.foreach_batch(move |b| {
        let mut t = t.lock().expect("lock");
        for r in &b.records {
            *t.entry(r[0].as_str().expect("word").to_string())
                .or_default() += r[1].as_i64().expect("count");
        }
        Ok(())
    });
    let stop = ssc.stop_handle();
    let runner = std::thread::spawn(move || ssc.run(None));
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline && !totals.lock().expect("lock").contains_key("über") {
        std::thread::sleep(Duration::from_millis(50));
    }
    stop.stop();
    runner.join().expect("join").expect("the job ran");
    drop(server);
    let t = totals.lock().expect("lock").clone();
    assert_eq!(t.get("hello"), Some(&2), "{t:?}");
    assert_eq!(t.get("fox"), Some(&1), "{t:?}");
    assert_eq!(
        t.get("partial"),
        Some(&1),
        "the partial line at disconnect is delivered: {t:?}"
    );
    assert_eq!(
        t.get("\u{fffd}\u{fffd}"),
        Some(&1),
        "non-UTF-8 bytes are replaced: {t:?}"
    );
    assert_eq!(t.get("reconnect"), Some(&1), "{t:?}");
    assert_eq!(t.get("über"), Some(&1), "{t:?}");
}

#[test]
fn native_word_count_over_a_socket() {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        let (mut c, _) = listener.accept().expect("accept");
        for _ in 0..100 {
            c.write_all(b"a b a\n").expect("write");
        }
        std::thread::sleep(Duration::from_secs(30));
    });
    let ssc = StreamingContext::new(Duration::from_millis(100)).with_workers(2);
    let counts = ssc
        .socket_text_stream("127.0.0.1", port)
        .flat_map(Func::flat_map("split", |l: String| {
            l.split(' ').map(str::to_string).collect::<Vec<_>>()
        }))
        .map(Func::map("pair", |w: String| (w, 1i64)))
        .reduce_by_key(Func::reduce("add", |a: i64, b: i64| a + b), 2);
    let total = Arc::new(Mutex::new(0i64));
    let t = total.clone();
    counts.foreach_batch(move |b| {
        *t.lock().expect("lock") += b
            .records
            .iter()
            .map(|r| r[1].as_i64().unwrap_or(0))
            .sum::<i64>();
        Ok(())
    });
    let stop = ssc.stop_handle();
    let runner = std::thread::spawn(move || ssc.run(None));
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline && *total.lock().expect("lock") < 300 {
        std::thread::sleep(Duration::from_millis(20));
    }
    stop.stop();
    runner.join().expect("join").expect("ran");
    assert_eq!(*total.lock().expect("lock"), 300);
}

/// Per batch: total delay and the rate limit in force.
type Delays = Vec<(Duration, Option<f64>)>;

/// A deliberately slow operator (1 ms a line) behind a socket fed at
/// 2000 lines/s in 100 ms batches: without backpressure each batch holds
/// twice the work of the one before and the delay grows batch after batch;
/// with it, the PID controller lowers the receiving rate (TCP holds the
/// sender back) and the delay levels off. Runs `batches` batches; returns
/// the total delays and rate limits.
fn slow_job(backpressure: bool, batches: u64) -> Delays {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let d = done.clone();
    let server = std::thread::spawn(move || {
        let (mut c, _) = listener.accept().expect("accept");
        let mut i = 0u64;
        while !d.load(std::sync::atomic::Ordering::SeqCst) {
            // 20 lines every 10 ms; blocks when the receiver stops reading.
            let chunk: String = (0..20).map(|k| format!("line {}\n", i + k)).collect();
            i += 20;
            if c.write_all(chunk.as_bytes()).is_err() {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    });
    let mut ssc = StreamingContext::new(Duration::from_millis(100)).with_workers(1);
    if backpressure {
        ssc = ssc.with_backpressure(None);
    }
    ssc.socket_text_stream("127.0.0.1", port)
        .map(Func::map("slow", |l: String| {
            std::thread::sleep(Duration::from_millis(1));
            l.len() as i64
        }))
        .count()
        .foreach_batch(|_| Ok(()));
    let infos: Arc<Mutex<Delays>> = Arc::default();
    let seen = infos.clone();
    ssc.add_listener(Box::new(move |b| {
        seen.lock()
            .expect("infos")
            .push((b.total_delay(), b.rate_limit));
    }));
    ssc.run(Some(batches)).expect("the job ran");
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    drop(server);
    infos.lock().expect("infos").clone()
}

#[test]
fn backpressure_keeps_the_delay_from_growing() {
    let free = slow_job(false, 4);
    let held = slow_job(true, 20);
    let last = |v: &[(Duration, Option<f64>)]| v[v.len() - 1].0;
    assert!(
        free.iter().all(|(_, r)| r.is_none()),
        "no limit without backpressure"
    );
    let limit = held
        .last()
        .and_then(|(_, r)| *r)
        .expect("the controller set a rate");
    assert!(
        limit < 1000.0,
        "lowered below the 2000 lines/s offered: {limit}"
    );
    // Without the controller the delay grows with every batch (already
    // after 4 batches beyond where it stays with the controller after 20).
    assert!(
        free.windows(2).all(|w| w[1].0 > w[0].0),
        "without backpressure the delay grows: {free:?}"
    );
    assert!(
        last(&free) > last(&held),
        "delay with backpressure {:?}, without {:?}",
        last(&held),
        last(&free)
    );
    // And it levels off: the last 5 batches are no later than the 5 before.
    let mean = |s: &[(Duration, Option<f64>)]| s.iter().map(|x| x.0).sum::<Duration>() / 5;
    assert!(
        mean(&held[15..20]) <= mean(&held[10..15]) + Duration::from_millis(300),
        "the delay keeps growing: {held:?}"
    );
    eprintln!(
        "delay after 20 batches: {:?} without, {:?} with backpressure (rate {limit:.0}/s)",
        last(&free),
        last(&held)
    );
}

/// Spark's StreamingListener: every batch is submitted, started and
/// completed in that order, and a socket nobody serves is reported as
/// receiver errors naming the source stream.
#[test]
fn listeners_hear_batch_events_and_receiver_errors() {
    #[derive(Default)]
    struct Events(Arc<Mutex<Vec<String>>>);
    impl sluice::StreamingListener for Events {
        fn on_batch_submitted(&mut self, time: sluice::BatchTime) {
            self.0
                .lock()
                .expect("events")
                .push(format!("submitted {}", time.millis() % 100_000));
        }
        fn on_batch_started(&mut self, time: sluice::BatchTime, index: u64) {
            self.0
                .lock()
                .expect("events")
                .push(format!("started {} #{index}", time.millis() % 100_000));
        }
        fn on_batch_completed(&mut self, info: &sluice::BatchInfo) {
            self.0
                .lock()
                .expect("events")
                .push(format!("completed {}", info.time.millis() % 100_000));
        }
        fn on_receiver_error(&mut self, source: &str, message: &str) {
            self.0
                .lock()
                .expect("events")
                .push(format!("error {source}: {message}"));
        }
    }
    // A port with nothing listening.
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let ssc = StreamingContext::new(Duration::from_millis(200));
    let lines = ssc.socket_text_stream("127.0.0.1", port).named("lines");
    lines.count().foreach_batch(|_| Ok(()));
    let events: Arc<Mutex<Vec<String>>> = Arc::default();
    ssc.add_streaming_listener(Box::new(Events(events.clone())));
    ssc.run(Some(4)).expect("the job runs without its server");
    let events = events.lock().expect("events").clone();
    let batches: Vec<&String> = events.iter().filter(|e| !e.starts_with("error")).collect();
    assert_eq!(batches.len(), 12, "{events:?}");
    for b in batches.chunks(3) {
        let t = b[0].strip_prefix("submitted ").expect("submitted first");
        assert!(b[1].starts_with(&format!("started {t} #")), "{events:?}");
        assert_eq!(b[2], &format!("completed {t}"), "{events:?}");
    }
    assert!(
        events
            .iter()
            .any(|e| e.starts_with("error lines: Error connecting to 127.0.0.1")),
        "the refused connection is reported: {events:?}"
    );
}
