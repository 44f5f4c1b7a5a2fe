//! Recovery at every batch boundary.

use super::invariance::*;
use super::*;

/// The streams of the recovery job whose outputs are compared.
pub(super) const RECOVERY_STREAMS: [&str; 8] = [
    "running totals",
    "incremental window, slide 1",
    "window, slide 2",
    "map_with_state",
    "window + count_by_value, slide 2",
    "update_state_by_key removing keys",
    "state snapshots of a map_with_state with a timeout and an initial state",
    "that map_with_state",
];

/// A run's outputs of the recovery job: per (stream, batch index).
pub(super) type RecoveryOut = BTreeMap<(usize, u64), Vec<String>>;

/// A word count job with state: the streams of [`RECOVERY_STREAMS`]; optionally
/// checkpointed (directory, full checkpoint every so many batches). The
/// last output fails at batch `crash_at`: a crash before the batch is
/// recorded (after the other outputs saw it).
pub(super) fn recovery_job(
    input: &Batches,
    p: usize,
    w: usize,
    checkpoint: Option<(&std::path::Path, u32)>,
    crash_at: Option<u64>,
) -> (StreamingContext, Vec<Collected>) {
    let mut ssc = context(w);
    if let Some((dir, every)) = checkpoint {
        ssc = ssc
            .with_checkpoint(dir)
            .with_checkpoint_interval(every * SECOND);
    }
    let words = ssc.queue_stream(input.clone(), p).flat_map(split());
    let pairs = words.map(pair());
    let totals = pairs.update_state_by_key(running_total(), p);
    let timed = pairs.map_with_state(
        StateSpec::function(occurrence())
            .num_partitions(p)
            .timeout(SECOND)
            .initial_state(&[("a", 7i64), ("never", 1)]),
    );
    let streams = [
        totals.clone(),
        pairs.reduce_by_key_and_window(add(), Some(subtract()), 3 * SECOND, SECOND, p, None),
        pairs.reduce_by_key_and_window(add(), None, 3 * SECOND, 2 * SECOND, p, None),
        pairs.map_with_state(StateSpec::function(occurrence()).num_partitions(p)),
        words.window(3 * SECOND, 2 * SECOND).count_by_value(p),
        pairs.update_state_by_key(streak_total(), p),
        timed.state_snapshots(),
        timed,
    ];
    let outs = streams.iter().map(DStream::collect).collect();
    totals.foreach_batch(move |b| match crash_at {
        Some(i) if b.index == i => Err(Error::Internal(format!("a crash at batch {i}"))),
        _ => Ok(()),
    });
    (ssc, outs)
}

pub(super) fn recovery_out(outs: &[Collected]) -> RecoveryOut {
    let mut all = RecoveryOut::new();
    for (s, c) in outs.iter().enumerate() {
        for (i, records) in collected(c, identity).0 {
            all.insert((s, i), records);
        }
    }
    all
}

/// The batches of `out` with an index in `range`.
pub(super) fn within(out: &RecoveryOut, range: impl std::ops::RangeBounds<u64>) -> RecoveryOut {
    out.iter()
        .filter(|((_, i), _)| range.contains(i))
        .map(|(k, v)| (*k, v.clone()))
        .collect()
}

/// Where two outputs of the recovery job first differ, for the failure message.
pub(super) fn first_difference(got: &RecoveryOut, want: &RecoveryOut) -> String {
    let keys: std::collections::BTreeSet<_> = got.keys().chain(want.keys()).collect();
    for key in keys {
        let (g, w) = (got.get(key), want.get(key));
        if g != w {
            return format!(
                "{} at batch {}: got {g:?}, want {w:?}",
                RECOVERY_STREAMS[key.0], key.1
            );
        }
    }
    "no difference".to_string()
}

/// Stopping cleanly after batch `k` (`run(Some(k))`) for every `k`, then
/// resuming in a fresh context on the same checkpoint directory (with the
/// other worker count): the two runs together produce the uninterrupted
/// run's batches, each once.
pub(super) fn check_stop_and_resume(
    input: &Batches,
    p: usize,
    w: usize,
) -> Result<(), TestCaseError> {
    let n = input.len() as u64;
    let (ssc, outs) = recovery_job(input, p, w, None, None);
    ssc.run(None).expect("the uninterrupted run");
    let reference = recovery_out(&outs);
    for every in [1, 3] {
        for k in 1..n {
            let dir = tempfile::tempdir().expect("a temporary directory");
            let (ssc, outs) = recovery_job(input, p, w, Some((dir.path(), every)), None);
            let summary = ssc.run(Some(k)).expect("the first run");
            prop_assert_eq!(summary.batches, k);
            let (got, want) = (recovery_out(&outs), within(&reference, ..k));
            prop_assert!(
                got == want,
                "stopped after {k} batches (P={p}, W={w}, checkpoint every {every}): {}",
                first_difference(&got, &want)
            );
            // The worker count is no part of the checkpoint: resume with the other.
            let (ssc, outs) = recovery_job(input, p, 3 - w, Some((dir.path(), every)), None);
            ssc.run(None).expect("the resumed run");
            let (got, want) = (recovery_out(&outs), within(&reference, k..));
            prop_assert!(
                got == want,
                "resumed after {k} batches (P={p}, W={w} then {}, checkpoint every {every}): {}",
                3 - w,
                first_difference(&got, &want)
            );
        }
    }
    Ok(())
}

/// Crashing in batch `k` for every `k`, then resuming: the resumed run
/// starts after the last full checkpoint written (every `every` batches:
/// batches 0, every, 2 every, ...; each written before the next batch
/// runs), re-runs the batches logged since, and produces the uninterrupted
/// run's batches from there.
pub(super) fn check_crash_and_resume(
    input: &Batches,
    p: usize,
    w: usize,
) -> Result<(), TestCaseError> {
    let n = input.len() as u64;
    let (ssc, outs) = recovery_job(input, p, w, None, None);
    ssc.run(None).expect("the uninterrupted run");
    let reference = recovery_out(&outs);
    for every in [1u32, 2, 3] {
        for k in 0..n {
            let dir = tempfile::tempdir().expect("a temporary directory");
            let (ssc, outs) = recovery_job(input, p, w, Some((dir.path(), every)), Some(k));
            let e = ssc.run(None).expect_err("the crash").to_string();
            prop_assert!(e.contains("a crash"), "{}", e);
            let (got, want) = (recovery_out(&outs), within(&reference, ..=k));
            prop_assert!(
                got == want,
                "crashed in batch {k} (P={p}, W={w}, checkpoint every {every}): {}",
                first_difference(&got, &want)
            );
            let resumed_at = match k {
                0 => 0,
                k => (k - 1) / u64::from(every) * u64::from(every) + 1,
            };
            let (ssc, outs) = recovery_job(input, p, w, Some((dir.path(), every)), None);
            ssc.run(None).expect("the resumed run");
            let (got, want) = (recovery_out(&outs), within(&reference, resumed_at..));
            prop_assert!(
                got == want,
                "resumed after a crash in batch {k} (P={p}, W={w}, checkpoint every {every}, \
                 resuming at batch {resumed_at}): {}",
                first_difference(&got, &want)
            );
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(config(16))]

    #[test]
    fn a_stopped_job_resumes_at_every_batch_boundary(
        input in batches(6),
        p in prop::sample::select(vec![1usize, 2, 3]),
        w in prop::sample::select(vec![1usize, 2]),
    ) {
        check_stop_and_resume(&padded(input, 2), p, w)?;
    }

    #[test]
    fn a_crashed_job_resumes_at_every_batch_boundary(
        input in batches(6),
        p in prop::sample::select(vec![1usize, 2, 3]),
        w in prop::sample::select(vec![1usize, 2]),
    ) {
        check_crash_and_resume(&padded(input, 2), p, w)?;
    }
}
