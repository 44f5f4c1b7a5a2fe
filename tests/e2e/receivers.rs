//! Custom receivers written as wasm plugins: a Redis Streams receiver
//! (Rust) against a real `redis-server` through `kill -9`, a line-protocol
//! TCP receiver in Rust and in Python, a connection to an ungranted host,
//! and receivers that trap, loop and flood.

use sluice::LoadPlugins;
use sluice::{Limits, StreamingContext};
use sluice_tests::brokers::{self, seq_counts, seq_lines};
use sluice_tests::redis::RedisServer;
use sluice_tests::{plugin, runtime};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The word-totals job (`brokers::totals_job`) reading `lines` from
/// receiver `function` of the built plugin `wasm`, granted `connect`.
fn receiver_job(dir: &Path, wasm: &str, function: &str, settings: &str, connect: &str) -> PathBuf {
    receiver_job_at(dir, &plugin(wasm), function, settings, connect)
}

/// [`receiver_job`] of the component at `wasm`.
fn receiver_job_at(
    dir: &Path,
    wasm: &Path,
    function: &str,
    settings: &str,
    connect: &str,
) -> PathBuf {
    let source = format!(
        "type = \"receiver\"\nfunction = \"{function}\"\nsettings = {{ {settings} }}\n\n[plugins.{}]\npath = {:?}\nconnect = [\"{connect}\"]\n",
        function.split('.').next().expect("plugin.function"),
        wasm.display().to_string()
    );
    brokers::totals_job(dir, "receivertotals", &source, None)
}

/// Waits until the totals count every one of `n` sequences.
fn wait_for_all(dir: &Path, n: usize, within: Duration) {
    let deadline = Instant::now() + within;
    while seq_counts(dir).len() < n {
        assert!(
            Instant::now() < deadline,
            "counted {} of {n} records in {within:?}: {}",
            seq_counts(dir).len(),
            std::fs::read_to_string(dir.join("stderr.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The Redis Streams receiver through six `kill -9`s of the job while
/// 1200 entries arrive: every entry is counted (none lost: the receiver
/// acknowledges an entry only once it is in the write-ahead log, so the
/// ones a kill caught in flight are read again from the group's pending
/// list), and at the end the group has nothing pending.
#[test]
fn a_redis_streams_receiver_loses_nothing_through_kill_nine() {
    let dir = tempfile::tempdir().expect("temp dir");
    let redis = RedisServer::start(dir.path());
    let job = receiver_job(
        dir.path(),
        "redis_streams",
        "redis.streams",
        &format!("address = \"{}\", stream = \"seq\"", redis.address()),
        &redis.address(),
    );
    let ck = dir.path().join("ck");
    let port = redis.port;
    let publisher = std::thread::spawn(move || {
        for chunk in 0..100u64 {
            let lines = seq_lines(chunk * 12..chunk * 12 + 12);
            sluice_tests::redis::xadd(port, "seq", "data", &lines);
            std::thread::sleep(Duration::from_millis(30));
        }
    });
    let kills = 6;
    brokers::kill_nine_runs(&job, &ck, kills, 300, 500);
    publisher.join().expect("publisher");
    let mut child = brokers::spawn_logged(&job, &ck, dir.path());
    wait_for_all(dir.path(), 1200, Duration::from_secs(60));
    // The last entries' acknowledgements follow their batch.
    let deadline = Instant::now() + Duration::from_secs(10);
    while redis.pending("seq", "sluice") > 0 {
        assert!(Instant::now() < deadline, "entries left pending");
        std::thread::sleep(Duration::from_millis(50));
    }
    child.kill().expect("kill");
    child.wait().expect("wait");
    let counts = brokers::assert_none_lost(dir.path(), 1200, "entry");
    let twice = counts.values().filter(|n| **n > 1).count();
    eprintln!(
        "{twice} of 1200 entries counted twice over {kills} kills (stored, not yet acknowledged at a kill)"
    );
}

/// A line server for the test: serves `lines` to each connection, a few at
/// a time.
fn line_server(lines: Vec<Vec<u8>>) -> (String, std::thread::JoinHandle<()>) {
    let server = std::net::TcpListener::bind("127.0.0.1:0").expect("listen");
    let address = server.local_addr().expect("address").to_string();
    let serving = std::thread::spawn(move || {
        let (mut c, _) = server.accept().expect("accept");
        for chunk in lines.chunks(25) {
            let mut out = Vec::new();
            for l in chunk {
                out.extend_from_slice(l);
                out.push(b'\n');
            }
            if c.write_all(&out).is_err() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        // Stays connected until the job is gone.
        let _ = std::io::copy(&mut c, &mut std::io::sink());
    });
    (address, serving)
}

/// The line-protocol receiver, written in Rust and in Python, reads 500
/// lines from a TCP server granted to it: each counted once.
#[test]
fn line_receivers_in_rust_and_python_read_a_tcp_server() {
    for wasm in ["lines", "lines_py"] {
        let dir = tempfile::tempdir().expect("temp dir");
        let (address, serving) = line_server(seq_lines(0..500));
        let job = receiver_job(
            dir.path(),
            wasm,
            "lines.tcp_lines",
            &format!("address = \"{address}\""),
            &address,
        );
        let mut child = brokers::spawn_logged(&job, &dir.path().join("ck"), dir.path());
        wait_for_all(dir.path(), 500, Duration::from_secs(60));
        child.kill().expect("kill");
        child.wait().expect("wait");
        serving.join().expect("server");
        let counts = seq_counts(dir.path());
        assert!(
            counts.values().all(|n| *n == 1),
            "{wasm}: each line once: {counts:?}"
        );
    }
}

/// `sluice plugin new --kind receiver` in Rust and in Python: each
/// project passes its own test, builds, and its receiver reads a line
/// server in a job.
#[test]
fn scaffolded_receivers_test_build_and_read_a_line_server() {
    let root = sluice_tests::root();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
    for (lang, name, mut unit, env) in [
        (
            "rust",
            "myrecv",
            std::process::Command::new(&cargo),
            ("CARGO_TARGET_DIR", root.join("target").join("scaffold")),
        ),
        (
            "python",
            "pyrecv",
            std::process::Command::new("python3"),
            ("SLUICE_CACHE_DIR", sluice_tests::cache_dir()),
        ),
    ] {
        if lang == "rust" {
            unit.args(["test", "--quiet"]);
        } else {
            unit.args(["-B", "-m", "unittest", "-q"]);
        }
        let dir = tempfile::tempdir().expect("temp dir");
        let (wasm, built) =
            crate::cli::scaffold_kind(dir.path(), (lang, "receiver"), name, &mut unit, env);
        assert!(
            built.contains("tcp_lines") && built.contains("receiver"),
            "{built}"
        );
        let (address, serving) = line_server(seq_lines(0..100));
        let job = receiver_job_at(
            dir.path(),
            Path::new(&wasm),
            &format!("{name}.tcp_lines"),
            &format!("address = \"{address}\""),
            &address,
        );
        let mut child = brokers::spawn_logged(&job, &dir.path().join("ck"), dir.path());
        wait_for_all(dir.path(), 100, Duration::from_secs(60));
        child.kill().expect("kill");
        child.wait().expect("wait");
        serving.join().expect("server");
    }
}

/// A receiver whose settings name a host its plugin is not granted: the
/// connection is refused by the host and logged, the error reaches the
/// job's listeners, nothing is received, and the job keeps running.
#[test]
fn a_receiver_connecting_to_an_ungranted_host_is_refused_and_logged() {
    let dir = tempfile::tempdir().expect("temp dir");
    let redis = RedisServer::start(dir.path());
    let granted = format!("127.0.0.1:{}", brokers::free_port());
    let job = receiver_job(
        dir.path(),
        "redis_streams",
        "redis.streams",
        &format!("address = \"{}\", stream = \"seq\"", redis.address()),
        &granted,
    );
    sluice_tests::redis::xadd(redis.port, "seq", "data", &seq_lines(0..10));
    let mut child = brokers::start_without_broker(
        &job,
        &dir.path().join("ck"),
        dir.path(),
        Duration::from_secs(3),
    );
    child.kill().expect("kill");
    child.wait().expect("wait");
    brokers::assert_logged(
        dir.path(),
        &format!(
            "refused the plugin's TcpConnect to {}: not among its granted endpoints",
            redis.address()
        ),
    );
    brokers::assert_logged(
        dir.path(),
        &format!(
            "receiver redis.streams: poll failed: connecting to {}: Permission denied",
            redis.address()
        ),
    );
    assert!(seq_counts(dir.path()).is_empty(), "nothing received");
}

/// What a job with one receiver source of the hostile plugin saw: the
/// records per batch and the receiver errors its listeners heard.
fn run_hostile(function: &str, limits: Limits, max_rate: Option<f64>) -> (Vec<u64>, Vec<String>) {
    #[derive(Default)]
    struct Errors(Arc<Mutex<Vec<String>>>);
    impl sluice::StreamingListener for Errors {
        fn on_receiver_error(&mut self, _source: &str, message: &str) {
            self.0.lock().expect("errors").push(message.to_string());
        }
    }
    let ssc = StreamingContext::new(Duration::from_millis(250))
        .with_workers(2)
        .with_runtime(runtime());
    let p = ssc
        .load_plugin_with_limits("hostile", plugin("hostile"), limits)
        .expect("hostile plugin");
    let source = p
        .receiver_source(function, Vec::new(), 2, (max_rate, 8 << 20))
        .expect("a receiver");
    let counts: Arc<Mutex<Vec<u64>>> = Arc::default();
    let seen = counts.clone();
    ssc.source_stream(function, Box::new(source))
        .count()
        .foreach_batch(move |b| {
            let n: u64 = b.records.iter().map(|v| v.as_u64().unwrap_or(0)).sum();
            seen.lock().expect("counts").push(n);
            Ok(())
        });
    let errors: Arc<Mutex<Vec<String>>> = Arc::default();
    ssc.add_streaming_listener(Box::new(Errors(errors.clone())));
    ssc.run(Some(12))
        .expect("the job outlives its receiver's faults");
    let counts = counts.lock().expect("counts").clone();
    let errors = errors.lock().expect("errors").clone();
    (counts, errors)
}

/// A receiver that panics: each panic is reported (with its message) and
/// a fresh instance goes on receiving.
#[test]
fn a_trapping_receiver_is_restarted_and_reported() {
    let (counts, errors) = run_hostile("crashing", Limits::default(), None);
    assert!(
        errors
            .iter()
            .any(|e| e.contains("receiver hostile.crashing")
                && e.contains("receiver crash requested on poll 3")),
        "{errors:?}"
    );
    assert!(
        counts.iter().sum::<u64>() >= 4,
        "records from several instances: {counts:?}"
    );
}

/// A receiver that loops: its deadline stops the call, the error names
/// the deadline, and a fresh instance gives its first record again.
#[test]
fn a_looping_receiver_is_stopped_by_its_deadline() {
    let limits = Limits {
        call_deadline: Duration::from_millis(200),
        ..Limits::default()
    };
    let (counts, errors) = run_hostile("looping", limits, None);
    assert!(
        errors
            .iter()
            .any(|e| e.contains("receiver hostile.looping") && e.contains("deadline")),
        "{errors:?}"
    );
    assert!(counts.iter().sum::<u64>() >= 2, "restarted: {counts:?}");
}

/// A receiver that floods: the source's rate limit holds it back (at most
/// the rate's records per batch, with one batch's slack for the bucket),
/// and the job keeps receiving.
#[test]
fn a_flooding_receiver_is_held_to_its_rate() {
    let rate = 4000.0;
    let (counts, errors) = run_hostile("flooding", Limits::default(), Some(rate));
    assert!(errors.is_empty(), "{errors:?}");
    let per_batch = rate * 0.25;
    assert!(
        counts.iter().all(|n| (*n as f64) <= 2.0 * per_batch),
        "at most about {per_batch} per batch: {counts:?}"
    );
    let total: u64 = counts.iter().sum();
    assert!(
        total as f64 >= per_batch * 4.0,
        "the flood keeps coming: {counts:?}"
    );
}

/// A receiver source's spec is checked before the job starts, each error
/// at its line and field.
#[test]
fn receiver_sources_are_checked_by_field_and_line() {
    let dir = tempfile::tempdir().expect("temp dir");
    let head = format!(
        "[job]\nbatch_interval = \"1s\"\n[plugins.hostile]\npath = {:?}\n[sources.events]\ntype = \"receiver\"\n",
        plugin("hostile").display().to_string()
    );
    let tail = "[[outputs]]\nstream = \"events\"\ntype = \"pprint\"\n";
    let receivers = "(its receivers: crashing, looping, flooding)";
    for (fields, want) in [
        (
            "function = \"hostile.trap\"\n".to_string(),
            format!(
                ":7: sources.events.function: `hostile.trap` is a map function, not a receiver {receivers}"
            ),
        ),
        (
            "function = \"hostile.nothing\"\n".to_string(),
            format!(
                ":7: sources.events.function: plugin `hostile` has no function `nothing` {receivers}"
            ),
        ),
        (
            "function = \"nope.x\"\n".to_string(),
            ":7: sources.events.function: unknown plugin `nope` (declared: hostile)".to_string(),
        ),
        (
            "settings = { a = 1 }\n".to_string(),
            ":5: sources.events.function: a receiver source needs `function = \"plugin.receiver\"`"
                .to_string(),
        ),
        (
            "function = \"hostile.flooding\"\nsettings = { line = [1] }\n".to_string(),
            ":8: sources.events.settings.line: a receiver setting is a string, number or boolean"
                .to_string(),
        ),
        (
            "function = \"hostile.flooding\"\nmax_rate = 0\n".to_string(),
            ":8: sources.events.max_rate: must be at least 1 record/s".to_string(),
        ),
    ] {
        crate::cli::assert_refused(dir.path(), &format!("{head}{fields}{tail}"), &want);
    }
}

/// A receiver that cannot start for want of a setting stops the job,
/// naming the source's function and the setting.
#[test]
fn a_receiver_missing_a_setting_stops_the_job() {
    let dir = tempfile::tempdir().expect("temp dir");
    let job = receiver_job(
        dir.path(),
        "redis_streams",
        "redis.streams",
        "address = \"127.0.0.1:6379\"",
        "127.0.0.1:6379",
    );
    let out = brokers::sluice_run(&job, &dir.path().join("ck"))
        .output()
        .expect("run");
    assert!(!out.status.success(), "the job must fail");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("receiver redis.streams: cannot start: the setting `stream` is required"),
        "{err}"
    );
}
