//! `foreach_partition` with a plugin sink: called once per partition of every
//! batch on instances kept alive across batches; failures retried, then
//! reported with plugin, function and batch time.

use sluice::LoadPlugins;
use sluice::error::PluginFault;
use sluice::{BatchTime, Error};
use sluice_tests::{plugin, test_context};
use std::sync::atomic::Ordering;

fn lines(batches: &[&[&str]]) -> Vec<Vec<String>> {
    batches
        .iter()
        .map(|b| b.iter().map(|s| s.to_string()).collect())
        .collect()
}

#[test]
fn a_sink_sees_every_partition_of_every_batch_on_warm_instances() {
    let ssc = test_context().with_workers(2);
    let text = ssc.load_plugin("text", plugin("text")).expect("text");
    let (calls, instances) = (
        text.stats().calls.load(Ordering::Relaxed),
        text.stats().instances.load(Ordering::Relaxed),
    );
    ssc.queue_stream(lines(&[&["a", "b"], &["c"], &[]]), 2)
        .foreach_partition(text.func("audit").expect("audit"));
    ssc.run(None).expect("run");
    assert_eq!(
        text.stats().calls.load(Ordering::Relaxed) - calls,
        6,
        "3 batches x 2 partitions"
    );
    assert_eq!(
        text.stats().instances.load(Ordering::Relaxed),
        instances,
        "no new instance per batch: the one made at load serves every call"
    );
}

#[test]
fn a_failing_sink_is_retried_then_reported_with_its_batch_time() {
    let ssc = test_context();
    let text = ssc.load_plugin("text", plugin("text")).expect("text");
    let calls = text.stats().calls.load(Ordering::Relaxed);
    ssc.queue_stream(lines(&[&["fine"], &["poison"]]), 1)
        .foreach_partition(text.func("audit").expect("audit"));
    let err = ssc.run(None).expect_err("the poisoned batch fails");
    match &err {
        Error::Plugin {
            plugin,
            function,
            batch,
            fault,
            ..
        } => {
            assert_eq!(
                (plugin.as_str(), function.as_str(), *batch),
                ("text", "audit", BatchTime(2000))
            );
            match &**fault {
                PluginFault::Refused { message, .. } => assert_eq!(message, "poison at batch 2000"),
                other => panic!("expected a refusal, got {other}"),
            }
        }
        other => panic!("expected a plugin error, got {other}"),
    }
    assert_eq!(
        text.stats().calls.load(Ordering::Relaxed) - calls,
        1 + 3,
        "one good call, three attempts"
    );
}
