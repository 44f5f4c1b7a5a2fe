//! Hostile plugins: every sandbox promise, broken on purpose. Each must come
//! back as its documented error naming plugin, function and batch time, and
//! the host must go on serving the next batch with the same plugin.

use sluice::LoadPlugins;
use sluice::error::PluginFault;
use sluice::{BatchTime, Error, Limits, Plugin, StreamingContext};
use sluice_tests::{plugin, runtime};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

fn hostile(limits: Limits) -> Arc<Plugin> {
    Plugin::load(&runtime(), "hostile", &plugin("hostile"), limits)
        .expect("loading the hostile plugin")
}

fn ctx() -> StreamingContext {
    sluice_tests::test_context().with_workers(2)
}

fn batches(items: &[&[&str]]) -> Vec<Vec<String>> {
    items
        .iter()
        .map(|b| b.iter().map(|s| s.to_string()).collect())
        .collect()
}

/// Runs `function` over batches `["a"], [poison], ["b"]`: returns the error
/// and the batches output before it.
fn run_poisoned(p: &Arc<Plugin>, function: &str, poison: &str) -> (Error, Vec<u64>) {
    let ssc = ctx();
    let f = p.func(function).expect("function");
    let input = ssc.queue_stream(batches(&[&["a"], &[poison], &["b"]]), 1);
    let out = if f.kind() == sluice_sdk::Kind::FlatMap {
        input.flat_map(f)
    } else {
        input.map(f)
    }
    .collect();
    let err = ssc.run(None).expect_err("the poisoned batch must fail");
    let done = out.lock().expect("lock").iter().map(|b| b.index).collect();
    (err, done)
}

/// The same plugin object still serves a normal batch afterwards.
fn assert_still_serves(p: &Arc<Plugin>, function: &str) {
    let ssc = ctx();
    let f = p.func(function).expect("function");
    let input = ssc.queue_stream(batches(&[&["c", "d"]]), 2);
    let out = if f.kind() == sluice_sdk::Kind::FlatMap {
        input.flat_map(f)
    } else {
        input.map(f)
    }
    .collect();
    ssc.run(None).expect("a normal batch after the hostile one");
    let got = out.lock().expect("lock")[0].sorted_records();
    assert_eq!(got, vec![serde_json::json!("c"), serde_json::json!("d")]);
}

/// The fault of `err`, a plugin error of `hostile`'s `function` at batch
/// 2000 ms (the poisoned one).
pub(crate) fn fault_of(err: &Error, function: &str) -> PluginFault {
    match err {
        Error::Plugin {
            plugin,
            function: f,
            batch,
            fault,
            ..
        } => {
            assert_eq!(plugin, "hostile");
            assert_eq!(f, function);
            assert_eq!(
                *batch,
                BatchTime(2000),
                "the error names the poisoned batch"
            );
            (**fault).clone()
        }
        other => panic!("expected a plugin error, got: {other}"),
    }
}

#[test]
fn a_trap_is_retried_once_then_fails_the_job_with_the_panic_message() {
    let p = hostile(Limits::default());
    let retries = p.stats().retries.load(Ordering::Relaxed);
    let (err, done) = run_poisoned(&p, "trap", "boom");
    assert_eq!(done, vec![0], "batch 0 was output before the failure");
    match fault_of(&err, "trap") {
        PluginFault::Trap { message } => {
            assert!(message.contains("boom requested by the input"), "{message}")
        }
        other => panic!("expected a trap, got {other}"),
    }
    let text = err.to_string();
    assert!(
        text.contains("plugin `hostile` function `trap` at batch 2000 ms"),
        "{text}"
    );
    assert_eq!(
        p.stats().retries.load(Ordering::Relaxed),
        retries + 1,
        "retried exactly once"
    );
    assert_still_serves(&p, "trap");
}

#[test]
fn a_trap_on_the_first_attempt_only_is_healed_by_the_retry() {
    let p = hostile(Limits::default());
    let ssc = ctx();
    let out = ssc
        .queue_stream(batches(&[&["x", "flaky", "y"]]), 1)
        .map(p.func("flaky").expect("flaky"))
        .collect();
    ssc.run(None).expect("the retry succeeds");
    let got = out.lock().expect("lock")[0].sorted_records();
    assert_eq!(
        got,
        vec![
            serde_json::json!("flaky"),
            serde_json::json!("x"),
            serde_json::json!("y")
        ]
    );
    assert!(p.stats().retries.load(Ordering::Relaxed) >= 1);
}

#[test]
fn an_infinite_loop_hits_the_call_deadline() {
    let limits = Limits {
        call_deadline: Duration::from_millis(200),
        ..Limits::default()
    };
    let p = hostile(limits);
    let started = Instant::now();
    let (err, _) = run_poisoned(&p, "spin", "spin");
    assert!(
        matches!(fault_of(&err, "spin"), PluginFault::Deadline { deadline } if deadline == Duration::from_millis(200)),
        "{err}"
    );
    // Two attempts of 200 ms each, with generous slack for a loaded machine.
    assert!(started.elapsed() < Duration::from_secs(20));
    assert_still_serves(&p, "spin");
}

#[test]
fn a_memory_bomb_hits_the_memory_cap() {
    let limits = Limits {
        memory_bytes: 64 << 20,
        ..Limits::default()
    };
    let p = hostile(limits);
    let (err, _) = run_poisoned(&p, "bomb", "bomb");
    assert!(
        matches!(fault_of(&err, "bomb"), PluginFault::Memory { limit } if limit == 64 << 20),
        "{err}"
    );
    assert_still_serves(&p, "bomb");
}

#[test]
fn a_huge_output_hits_the_output_cap() {
    let limits = Limits {
        output_bytes: 8 << 20,
        ..Limits::default()
    };
    let p = hostile(limits);
    let (err, _) = run_poisoned(&p, "flood", "flood");
    assert!(
        matches!(fault_of(&err, "flood"), PluginFault::OutputTooLarge { limit, bytes } if limit == 8 << 20 && bytes > limit),
        "{err}"
    );
    assert_still_serves(&p, "flood");
}

#[test]
fn a_log_flood_is_capped_and_the_batch_succeeds() {
    let p = hostile(Limits::default());
    let ssc = ctx();
    let out = ssc
        .queue_stream(batches(&[&["chatty"]]), 1)
        .map(p.func("chatty").expect("chatty"))
        .collect();
    ssc.run(None).expect("logging too much is not an error");
    assert_eq!(out.lock().expect("lock").len(), 1);
    assert!(
        p.stats().dropped_log_lines.load(Ordering::Relaxed) > 0,
        "lines past the cap are dropped and counted"
    );
    // The UI's recent guest logs: bounded, each tagged with its function and batch.
    let logs = p.recent_logs();
    assert!(!logs.is_empty() && logs.len() <= sluice::plugin::RECENT_LOG_LINES);
    assert!(
        logs.iter()
            .all(|l| l.function == "chatty" && l.batch == 1000 && !l.line.is_empty()),
        "{:?}",
        &logs[..1]
    );
    let f = p
        .description()
        .functions
        .iter()
        .position(|f| f.name == "chatty")
        .expect("chatty");
    assert_eq!(p.stats().functions[f].calls.load(Ordering::Relaxed), 1);
}

#[test]
fn files_network_and_environment_are_not_granted() {
    let p = hostile(Limits::default());
    for (function, input, expect) in [
        ("snoop", "/etc/passwd", "cannot read /etc/passwd"),
        ("snoop", "../../Cargo.toml", "cannot read ../../Cargo.toml"),
        ("dial", "127.0.0.1:22", "cannot connect to 127.0.0.1:22"),
    ] {
        let ssc = ctx();
        ssc.queue_stream(batches(&[&[input]]), 1)
            .map(p.func(function).expect("function"))
            .collect();
        let err = ssc.run(None).expect_err("the sandbox must refuse");
        match err {
            Error::Plugin { fault, .. } => match *fault {
                PluginFault::Refused {
                    message, element, ..
                } => {
                    assert!(message.contains(expect), "{message}");
                    assert_eq!(element, Some(0));
                }
                other => panic!("{function}({input}): expected a refusal, got {other}"),
            },
            other => panic!("{function}({input}): expected a plugin error, got {other}"),
        }
    }
    let ssc = ctx();
    let out = ssc
        .queue_stream(batches(&[&["x"]]), 1)
        .map(p.func("environment").expect("environment"))
        .collect();
    ssc.run(None).expect("environment");
    assert_eq!(
        out.lock().expect("lock")[0].records,
        vec![serde_json::json!(0)],
        "no env vars or args"
    );
}

/// One call of `function` on `input`: its output, or the refusal's message.
fn call_once(p: &Arc<Plugin>, function: &str, input: &str) -> Result<String, String> {
    let ssc = ctx();
    let out = ssc
        .queue_stream(batches(&[&[input]]), 1)
        .map(p.func(function).expect("function"))
        .collect();
    match ssc.run(None) {
        Ok(_) => Ok(out.lock().expect("lock")[0].records[0]
            .as_str()
            .expect("a string")
            .to_string()),
        Err(Error::Plugin { fault, .. }) => match *fault {
            PluginFault::Refused { message, .. } => Err(message),
            other => panic!("{function}({input}): expected a refusal, got {other}"),
        },
        Err(other) => panic!("{function}({input}): expected a plugin error, got {other}"),
    }
}

#[test]
fn a_granted_directory_and_endpoint_are_all_a_plugin_reaches() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let granted = tmp.path().join("granted");
    std::fs::create_dir(&granted).expect("dir");
    std::fs::write(granted.join("inside.txt"), "in").expect("write");
    std::fs::write(tmp.path().join("secret.txt"), "secret").expect("write");
    std::os::unix::fs::symlink(tmp.path(), granted.join("link")).expect("symlink");
    std::os::unix::fs::symlink(tmp.path().join("secret.txt"), granted.join("secret-link"))
        .expect("symlink");
    let allowed = std::net::TcpListener::bind("127.0.0.1:0").expect("listen");
    let other = std::net::TcpListener::bind("127.0.0.1:0").expect("listen");
    let p = Plugin::load_granted(
        &runtime(),
        "grants",
        "hostile",
        &plugin("hostile"),
        Limits::default(),
        sluice::Capabilities {
            dir: Some(granted.clone()),
            connect: vec![allowed.local_addr().expect("addr")],
        },
    )
    .expect("load");
    // What is granted works.
    assert_eq!(call_once(&p, "snoop", "inside.txt"), Ok("in".to_string()));
    assert_eq!(
        call_once(&p, "scribble", "made.txt"),
        Ok("wrote made.txt".to_string())
    );
    assert_eq!(
        std::fs::read_to_string(granted.join("made.txt")).expect("made"),
        "scribbled"
    );
    let to = allowed.local_addr().expect("addr").to_string();
    assert_eq!(call_once(&p, "dial", &to), Ok(format!("connected to {to}")));
    // Everything else is refused: traversal, absolute paths, symlinks
    // out, another port on the same host.
    let outside = tmp.path().join("pwned.txt");
    for (function, input) in [
        ("snoop", "../secret.txt"),
        ("snoop", "link/secret.txt"),
        ("snoop", "secret-link"),
        (
            "snoop",
            tmp.path().join("secret.txt").to_str().expect("utf-8"),
        ),
        ("snoop", "/etc/passwd"),
        ("scribble", "../pwned.txt"),
        ("scribble", "link/pwned.txt"),
        ("scribble", outside.to_str().expect("utf-8")),
        ("dial", &other.local_addr().expect("addr").to_string()),
        ("dial", "127.0.0.1:22"),
    ] {
        let got = call_once(&p, function, input);
        assert!(
            got.is_err(),
            "{function}({input}) must be refused, got {got:?}"
        );
    }
    assert!(!outside.exists(), "nothing was written outside the grant");
    assert_eq!(
        std::fs::read_to_string(tmp.path().join("secret.txt")).expect("secret"),
        "secret"
    );
}

#[test]
fn files_that_are_not_components_are_refused_by_name() {
    let dir = tempfile::tempdir().expect("temp dir");
    let cases: [(&str, &[u8], &str); 3] = [
        (
            "garbage.wasm",
            b"this is not wasm at all",
            "not a WebAssembly file",
        ),
        (
            "core.wasm",
            b"\0asm\x01\0\0\0",
            "a core WebAssembly module, not a component",
        ),
        (
            "broken.wasm",
            b"\0asm\x0d\0\x01\0\xff\xff",
            "not a valid component",
        ),
    ];
    for (name, bytes, expect) in cases {
        let path = dir.path().join(name);
        std::fs::write(&path, bytes).expect("write");
        let err =
            Plugin::load(&runtime(), "bad", &path, Limits::default()).expect_err("must be refused");
        let text = err.to_string();
        assert!(
            text.contains(expect) && text.contains(name),
            "{name}: {text}"
        );
    }
    let err = Plugin::load(
        &runtime(),
        "big",
        &plugin("wordcount"),
        Limits {
            component_bytes: 1000,
            ..Limits::default()
        },
    )
    .expect_err("over the size cap");
    assert!(
        err.to_string().contains("over the 1000 byte limit"),
        "{err}"
    );
}

#[test]
fn unknown_functions_and_wrong_kinds_are_refused_before_the_first_batch() {
    let ssc = ctx();
    let wc = ssc
        .load_plugin("wordcount", plugin("wordcount"))
        .expect("wordcount");
    let err = wc.func("nope").expect_err("no such function").to_string();
    assert!(
        err.contains("no function `nope`") && err.contains("split, pair, add"),
        "{err}"
    );
    let out = ssc
        .queue_stream(batches(&[&["a b"]]), 1)
        .map(wc.func("split").expect("split"))
        .collect();
    let err = ssc
        .run(None)
        .expect_err("split is a flat-map, not a map")
        .to_string();
    assert!(
        err.contains("needs a map function") && err.contains("wordcount.split"),
        "{err}"
    );
    assert!(out.lock().expect("lock").is_empty(), "no batch ran");
}
