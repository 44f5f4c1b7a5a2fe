//! Chained plugin calls: consecutive map and flat-map stages of one plugin
//! run in one call of its `chain` export, with the same batches, counts
//! and errors as one call per stage, and the sandbox's limits inside.

use crate::hostile::fault_of;
use sluice::LoadPlugins;
use sluice::error::PluginFault;
use sluice::{BatchInfo, Limits, ManualClock, Plugin, StreamingContext};
use sluice_tests::{plugin, runtime};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

fn context() -> StreamingContext {
    StreamingContext::new(Duration::from_secs(1))
        .with_clock(Arc::new(ManualClock::new(0)))
        .with_runtime(runtime())
}

fn load(name: &str, file: &str) -> Arc<Plugin> {
    Plugin::load_for_job(&runtime(), "chain", name, &plugin(file), Limits::default())
        .expect("load plugin")
}

/// Three batches of lines, the second of them long enough to be cut into
/// several calls (over 256 KiB).
fn lines() -> Vec<Vec<String>> {
    let long: Vec<String> = (0..12_000)
        .map(|i| format!("w{} w{} x y z", i % 97, i % 13))
        .collect();
    vec![
        vec!["a b a".to_string(), "c  a".to_string()],
        long,
        vec!["".to_string(), "b".to_string()],
    ]
}

type Infos = Arc<Mutex<Vec<BatchInfo>>>;

/// Word count of [`lines`]: split and pair from `first` and `second`; the
/// sorted counts per batch and what the listener saw.
fn word_count(first: &Arc<Plugin>, second: &Arc<Plugin>) -> (Vec<Vec<String>>, Infos) {
    let ssc = context();
    let infos: Infos = Arc::default();
    let seen = infos.clone();
    ssc.add_listener(Box::new(move |b: &BatchInfo| {
        seen.lock().expect("lock").push(b.clone())
    }));
    let counts = ssc
        .queue_stream(lines(), 2)
        .flat_map(first.func("split").expect("split"))
        .named("words")
        .map(second.func("pair").expect("pair"))
        .named("pairs")
        .reduce_by_key(second.func("add").expect("add"), 2)
        .collect();
    ssc.run(None).expect("run");
    let batches = counts
        .lock()
        .expect("lock")
        .iter()
        .map(|b| {
            let mut r: Vec<String> = b.records.iter().map(|v| v.to_string()).collect();
            r.sort();
            r
        })
        .collect();
    (batches, infos)
}

fn operator<'a>(b: &'a BatchInfo, stream: &str) -> &'a sluice::OperatorInfo {
    b.operators
        .iter()
        .find(|o| o.stream == stream)
        .unwrap_or_else(|| panic!("no operator for `{stream}` in {:?}", b.operators))
}

/// Split and pair of one plugin run in one call per piece; the batches
/// are those of one call per stage (split and pair from two loads of the
/// plugin, which cannot chain), and the listener still sees every stream
/// with the elements it produced.
#[test]
fn chained_stages_give_the_batches_and_counts_of_one_call_each() {
    let wc = load("wordcount", "wordcount");
    assert!(wc.chains(), "the Rust SDK exports `chain`");
    let calls = |p: &Plugin| p.stats().calls.load(Ordering::Relaxed);
    let (chained, infos) = word_count(&wc, &wc);
    let chained_calls = calls(&wc);
    let (apart, apart_infos) = word_count(&load("wordcount", "wordcount"), &wc);
    assert_eq!(chained, apart);
    assert_eq!(chained.len(), 3);
    assert_eq!(
        chained[0],
        ["[\"\",1]", "[\"a\",3]", "[\"b\",1]", "[\"c\",1]"]
    );

    let infos = infos.lock().expect("lock");
    let apart_infos = apart_infos.lock().expect("lock");
    let words_per_batch = [6, 60_000, 2];
    for ((b, a), words) in infos.iter().zip(apart_infos.iter()).zip(words_per_batch) {
        let (w, p) = (operator(b, "words"), operator(b, "pairs"));
        assert_eq!(w.records_out, words, "{w:?}");
        assert_eq!(p.records_out, words, "{p:?}");
        assert_eq!(w.chain.as_deref(), Some("words → pairs"), "{w:?}");
        assert_eq!(p.chain.as_deref(), Some("words → pairs"), "{p:?}");
        assert_eq!(w.time, Duration::ZERO, "its time is counted in pairs'");
        assert_eq!(w.op, "FlatMap wordcount.split (flat-map)");
        let (aw, ap) = (operator(a, "words"), operator(a, "pairs"));
        assert_eq!((aw.records_out, ap.records_out), (words, words));
        assert_eq!((&aw.chain, &ap.chain), (&None, &None));
        assert_eq!((&aw.op, &ap.op), (&w.op, &p.op));
    }
    // One call per piece does both functions: fewer calls than one each.
    let (first, second) = (
        load("wordcount", "wordcount"),
        load("wordcount", "wordcount"),
    );
    word_count(&first, &second);
    assert!(
        chained_calls < calls(&first) + calls(&second),
        "{chained_calls} calls chained, {} + {} apart",
        calls(&first),
        calls(&second)
    );
}

/// A stream that something else reads too (here an output) is computed on
/// its own: it is not folded into the next stage's call.
#[test]
fn a_stream_read_twice_is_not_chained_away() {
    let wc = load("wordcount", "wordcount");
    let ssc = context();
    let words = ssc
        .queue_stream(vec![vec!["a b a".to_string()]], 1)
        .flat_map(wc.func("split").expect("split"))
        .named("words");
    let seen_words = words.collect();
    let pairs = words.map(wc.func("pair").expect("pair")).collect();
    ssc.run(None).expect("run");
    let records = |c: &Arc<Mutex<Vec<sluice::CollectedBatch>>>| {
        c.lock().expect("lock")[0]
            .records
            .iter()
            .map(|v| v.to_string())
            .collect::<Vec<_>>()
    };
    assert_eq!(records(&seen_words), ["\"a\"", "\"b\"", "\"a\""]);
    assert_eq!(records(&pairs), ["[\"a\",1]", "[\"b\",1]", "[\"a\",1]"]);
}

/// A typed error from the second function of a chain names that function
/// (not the chain) and the batch, and says which of the values between the
/// two it refused.
#[test]
fn an_error_in_a_chained_function_names_that_function() {
    let text = load("text", "text");
    let ssc = context();
    ssc.queue_stream(vec![vec!["1 2".to_string(), "3 x 4".to_string()]], 1)
        .flat_map(text.func("words").expect("words"))
        .map(text.func("parse_int").expect("parse_int"))
        .collect();
    let e = ssc.run(None).expect_err("x is not an integer").to_string();
    assert!(e.contains("parse_int"), "{e}");
    assert!(
        !e.contains("words →"),
        "names the function, not the chain: {e}"
    );
    assert!(
        e.contains("element 3 of the values `words` produced"),
        "{e}"
    );
    assert!(e.contains("batch"), "{e}");
}

fn hostile(limits: Limits) -> Arc<Plugin> {
    Plugin::load(&runtime(), "hostile", &plugin("hostile"), limits).expect("hostile plugin")
}

/// `flood` then `second` of `p`, chained, over batches `["a"], [poison],
/// ["b"]`: the error, and the batches output before it.
fn run_chained(p: &Arc<Plugin>, second: &str, poison: &str) -> (sluice::Error, Vec<u64>) {
    let ssc = context();
    let out = ssc
        .queue_stream(
            [&["a"][..], &[poison], &["b"]]
                .iter()
                .map(|b| b.iter().map(|s| s.to_string()).collect())
                .collect(),
            1,
        )
        .flat_map(p.func("flood").expect("flood"))
        .map(p.func(second).expect("function"))
        .collect();
    let e = ssc.run(None).expect_err("the poisoned batch fails");
    let done = out.lock().expect("lock").iter().map(|b| b.index).collect();
    (e, done)
}

/// A trap inside a chain (in its second function) is retried once on a
/// fresh instance, then fails the batch naming the chain and the panic.
#[test]
fn a_trap_inside_a_chain_is_retried_then_names_the_chain() {
    let p = hostile(Limits::default());
    let retries = p.stats().retries.load(Ordering::Relaxed);
    let (e, done) = run_chained(&p, "trap", "boom");
    assert_eq!(done, [0]);
    match fault_of(&e, "flood → trap") {
        PluginFault::Trap { message } => assert!(message.contains("boom requested"), "{message}"),
        other => panic!("expected a trap, got {other}"),
    }
    assert_eq!(p.stats().retries.load(Ordering::Relaxed), retries + 1);
    // A trap on the first attempt only is healed by the retry.
    let ssc = context();
    let out = ssc
        .queue_stream(vec![vec!["x".to_string(), "flaky".to_string()]], 1)
        .flat_map(p.func("flood").expect("flood"))
        .map(p.func("flaky").expect("flaky"))
        .collect();
    ssc.run(None).expect("the retry succeeds");
    assert_eq!(
        out.lock().expect("lock")[0].records,
        [serde_json::json!("x"), serde_json::json!("flaky")]
    );
}

/// The limits hold inside a chain: the memory cap on what its second
/// function allocates, the output cap on what its last function returns
/// (`flood`'s 20 MiB, passed on by `trap`, never reach the host between).
#[test]
fn the_memory_and_output_caps_hold_inside_a_chain() {
    let p = hostile(Limits {
        memory_bytes: 64 << 20,
        ..Limits::default()
    });
    let (e, _) = run_chained(&p, "bomb", "bomb");
    assert!(
        matches!(fault_of(&e, "flood → bomb"), PluginFault::Memory { limit } if limit == 64 << 20),
        "{e}"
    );
    let p = hostile(Limits {
        output_bytes: 8 << 20,
        ..Limits::default()
    });
    let (e, _) = run_chained(&p, "trap", "flood");
    assert!(
        matches!(fault_of(&e, "flood → trap"), PluginFault::OutputTooLarge { limit, bytes } if limit == 8 << 20 && bytes > limit),
        "{e}"
    );
}
