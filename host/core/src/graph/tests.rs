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

#[test]
#[should_panic(expected = "after starting a context is not supported")]
fn adding_after_start_panics_like_spark() {
    let ssc = ctx();
    let lines = ssc.queue_stream(vec![vec!["a".into()]], 1);
    lines.collect();
    ssc.run(None).unwrap();
    assert!(lines.name().starts_with("queue"), "names survive the start");
    lines.count();
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
