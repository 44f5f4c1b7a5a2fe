use super::*;
use crate::func::Func;
use crate::time::ManualClock;

fn ctx() -> StreamingContext {
    StreamingContext::new(Duration::from_secs(1)).with_clock(Arc::new(ManualClock::new(0)))
}

#[test]
fn a_context_without_outputs_or_run_twice_is_refused() {
    let ssc = ctx();
    ssc.queue_stream(vec![vec!["a".into()]], 1);
    let e = ssc.run(None).unwrap_err().to_string();
    assert!(e.contains("no output operations registered"), "{e}");
    let ssc = ctx();
    ssc.queue_stream(vec![vec!["a".into()]], 1).collect();
    assert_eq!(ssc.run(None).unwrap().batches, 1);
    let e = ssc.run(None).unwrap_err().to_string();
    assert!(e.contains("already been started"), "{e}");
}

/// Adding to a started context is refused without a panic (Spark throws
/// `IllegalStateException`): nothing added runs, and the run, which goes
/// on, ends with the error naming what was added.
#[test]
fn adding_after_start_is_an_error_not_a_panic() {
    let ssc = ctx();
    let lines = ssc.queue_stream(vec![vec!["a".into()], vec!["b".into()]], 1);
    let seen = lines.collect();
    let late = lines.clone();
    lines.foreach_batch(move |b| {
        if b.index == 0 {
            let counts = late.count();
            counts.collect();
            assert!(late.name().starts_with("queue"), "names survive the start");
            assert_eq!(late.slide(), Duration::from_secs(1));
        }
        Ok(())
    });
    let e = ssc.run(None).unwrap_err().to_string();
    assert!(
        e.contains(
            "adding new inputs, transformations, and output operations after starting a context is not supported (stream `count#"
        ),
        "{e}"
    );
    assert_eq!(seen.lock().unwrap().len(), 2, "the run went on");
    // After the run as well: refused, no panic.
    lines.map(Func::map("id", |l: String| l)).collect();
    assert!(ssc.run(None).is_err());
}

#[test]
fn every_batch_reports_the_time_and_output_of_each_stage_of_the_plan() {
    let ssc = ctx().with_workers(2);
    let lines = ssc.queue_stream(vec![vec!["a b a".into(), "c".into()], vec![]], 2);
    let counts = lines
        .flat_map(Func::flat_map("split", |l: String| {
            l.split(' ').map(str::to_string).collect::<Vec<_>>()
        }))
        .map(Func::map("pair", |w: String| (w, 1i64)))
        .reduce_by_key(Func::reduce("add", |a: i64, b: i64| a + b), 3);
    counts.collect();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let into = seen.clone();
    ssc.add_listener(Box::new(move |b: &BatchInfo| {
        into.lock().unwrap().push(b.stages.clone())
    }));
    let plan = ssc.explain();
    assert_eq!(plan.stages.len(), 2, "{plan}");
    ssc.run(None).unwrap();
    let seen = seen.lock().unwrap();
    let first = &seen[0];
    assert_eq!(first.len(), 2, "{first:?}");
    assert_eq!(first[0].stage, 0);
    assert_eq!(first[0].tasks, Some(2));
    assert!(first[0].streams.contains(" → "), "{first:?}");
    // Stage 0 passes the four pairs to the shuffle; stage 1 the three
    // counts to the output.
    assert_eq!(first[0].records_out, 4);
    assert_eq!((first[1].stage, first[1].tasks), (1, Some(3)));
    assert_eq!(first[1].records_out, 3);
    assert_eq!(seen[1][0].records_out, 0);
    // Once it runs, the context explains the plan it runs.
    assert_eq!(ssc.explain().stages.len(), 2);
}

/// Keyed state and incremental windows need a checkpoint directory, as in
/// Spark ("The checkpoint directory has not been set", at start); a window
/// reduced anew needs none; `with_state_in_memory` runs them without.
#[test]
fn state_without_a_checkpoint_directory_is_refused_at_start() {
    let add = || Func::reduce("add", |a: i64, b: i64| a + b);
    let sub = || Func::inverse_reduce("sub", |a: i64, b: i64| a - b);
    let pairs = |ssc: &StreamingContext| {
        ssc.queue_stream(vec![vec!["a".into()]], 1)
            .map(Func::map("pair", |w: String| (w, 1i64)))
    };
    let sum = || {
        Func::update_state("sum", |v: Vec<i64>, s: Option<i64>| {
            Some(v.iter().sum::<i64>() + s.unwrap_or(0))
        })
    };
    let secs = Duration::from_secs;
    type Build = Box<dyn Fn(&DStream) -> DStream>;
    let cases: Vec<(&str, Build, bool)> = vec![
        (
            "update_state_by_key",
            Box::new(move |p| p.update_state_by_key(sum(), 2)),
            true,
        ),
        (
            "reduce_by_key_and_window",
            Box::new(move |p| {
                p.reduce_by_key_and_window(add(), Some(sub()), secs(3), secs(1), 2, None)
            }),
            true,
        ),
        (
            "reduce_by_key_and_window",
            Box::new(move |p| p.count_by_window(secs(3), secs(1))),
            true,
        ),
        (
            "count_by_value_and_window",
            Box::new(move |p| {
                p.map(Func::map("v", |kv: (String, i64)| kv.0))
                    .count_by_value_and_window(secs(3), secs(1), 2)
            }),
            true,
        ),
        (
            "",
            Box::new(move |p| p.reduce_by_key_and_window(add(), None, secs(3), secs(1), 2, None)),
            false,
        ),
    ];
    for (stream, build, refused) in cases {
        let ssc = ctx();
        build(&pairs(&ssc)).collect();
        match ssc.run(None) {
            Err(e) if refused => {
                let e = e.to_string();
                assert!(
                    e.contains("the checkpoint directory has not been set"),
                    "{e}"
                );
                assert!(e.contains(&format!("stream `{stream}#")), "{e}");
            }
            Ok(_) if !refused => {}
            other => panic!("{stream}: {other:?}"),
        }
        let ssc = ctx().with_state_in_memory();
        build(&pairs(&ssc)).collect();
        ssc.run(None).expect("state in memory");
        let dir = tempfile::tempdir().unwrap();
        let ssc = ctx().with_checkpoint(dir.path());
        build(&pairs(&ssc)).collect();
        ssc.run(None).expect("a checkpoint directory");
    }
}
