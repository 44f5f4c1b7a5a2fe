//! Unit tests of the windowed and stateful operators.

use super::*;
use crate::func::Func;
use crate::ops::testing::{batch_of, rendered, with_ctx};

fn at<'a>(ctx: &BatchContext<'a>, ms: i64) -> BatchContext<'a> {
    BatchContext {
        time: BatchTime(ms),
        executor: ctx.executor,
        stage: 0,
        input_stages: &[],
        shuffle: ctx.shuffle,
        stream: "test",
    }
}

fn pairs(items: &[(&str, i64)]) -> Rdd {
    Rdd {
        partitions: vec![batch_of(items)],
    }
}

#[test]
fn window_buffer_keeps_only_what_windows_need() {
    let mut w = WindowBuffer::default();
    for t in 1..=5 {
        w.push(BatchTime(t * 1000), Arc::new(pairs(&[("x", t)])));
        let out = w.window(BatchTime(t * 1000), 3000);
        assert_eq!(out.count() as i64, t.min(3));
        assert!(w.len() <= 3, "at most the window's batches are held");
    }
}

#[test]
fn window_buffer_shards_hold_one_partition_of_every_batch() {
    let mut w = WindowBuffer::default();
    let wide = Rdd {
        partitions: vec![batch_of(&[1i64]), batch_of(&[2i64, 3]), batch_of(&[4i64])],
    };
    w.push(BatchTime(1000), Arc::new(pairs(&[("x", 1)])));
    w.push(BatchTime(2000), Arc::new(wide));
    assert_eq!(w.shards(), 3, "as many as the widest batch has partitions");
    let mut header = StateWriter::new();
    w.snapshot_header(&mut header);
    let shards: Vec<Vec<u8>> = (0..w.shards())
        .map(|p| {
            let mut s = StateWriter::new();
            w.snapshot_shard(p, &mut s);
            s.into_bytes()
        })
        .collect();
    let header = header.into_bytes();
    let mut back = WindowBuffer::default();
    let mut readers: Vec<StateReader<'_>> = shards.iter().map(|s| StateReader::new(s)).collect();
    back.restore_shards(&mut StateReader::new(&header), &mut readers)
        .unwrap();
    assert!(readers.iter().all(StateReader::is_empty));
    let (a, b) = (
        w.window(BatchTime(2000), 2000),
        back.window(BatchTime(2000), 2000),
    );
    assert_eq!(a, b);
    assert_eq!(b.partitions.len(), 4);
    // A shard missing is an error, not a shorter window.
    let mut back = WindowBuffer::default();
    let mut two: Vec<StateReader<'_>> = shards[..2].iter().map(|s| StateReader::new(s)).collect();
    let err = back
        .restore_shards(&mut StateReader::new(&header), &mut two)
        .unwrap_err();
    assert!(
        err.to_string().contains("3 partitions but 2 shards"),
        "{err}"
    );
}

#[test]
fn incremental_window_keeps_zero_keys_unless_filtered() {
    with_ctx(|outer| {
        let add = Func::reduce("add", |a: i64, b: i64| a + b);
        let sub = Func::inverse_reduce("sub", |a: i64, b: i64| a - b);
        let positive = Func::filter("positive", |kv: (String, i64)| kv.1 > 0);
        let batches = [vec![("a", 1), ("b", 1)], vec![("a", 1)], vec![], vec![]];
        for (filter, want_last) in [
            (None, vec![r#"["a",0]"#, r#"["b",0]"#]),
            (Some(&positive), vec![]),
        ] {
            let funcs = WindowFuncs {
                reduce: &add,
                inverse: Some(&sub),
                filter,
            };
            let mut w = WindowedReduce::new(2);
            let mut last = Vec::new();
            for (i, b) in batches.iter().enumerate() {
                let ctx = at(outer, (i as i64 + 1) * 1000);
                w.push(pairs(b), &add, &ctx).unwrap();
                let out = w.window(2000, 1000, &funcs, &ctx).unwrap();
                assert_eq!(out.partitions.len(), 2);
                if i == 1 {
                    assert_eq!(rendered(&out), [r#"["a",2]"#, r#"["b",1]"#]);
                }
                if i == 2 {
                    let want: Vec<&str> = if filter.is_some() {
                        vec![r#"["a",1]"#]
                    } else {
                        vec![r#"["a",1]"#, r#"["b",0]"#]
                    };
                    assert_eq!(rendered(&out), want);
                }
                last = rendered(&out);
                assert!(w.buffered() <= 2);
            }
            assert_eq!(last, want_last);
        }
    });
}

#[test]
fn map_with_state_is_the_same_in_tiny_calls() {
    with_ctx(|ctx| {
        let count = |limit: usize| {
            Func::map_state(
                "count",
                |k: String, v: Option<i64>, s: &mut sluice_sdk::State<i64>| {
                    let n = s.get().copied().unwrap_or(0) + v.unwrap_or(0);
                    s.update(n);
                    Some((k, n))
                },
            )
            .with_input_limit(limit)
        };
        let input = || pairs(&[("a", 1), ("b", 2), ("a", 3), ("c", 4), ("b", 5)]);
        let mut whole = MapWithState::new(2, None);
        let mut tiny = MapWithState::new(2, None);
        for _ in 0..2 {
            let a = whole.update(&count(1 << 20), input(), ctx).unwrap();
            let b = tiny.update(&count(4), input(), ctx).unwrap();
            assert_eq!(rendered(&a), rendered(&b));
        }
        let a = whole.update(&count(1 << 20), input(), ctx).unwrap();
        assert!(
            rendered(&a).contains(&r#"["a",12]"#.to_string()),
            "{:?}",
            rendered(&a)
        );
    });
}

#[test]
fn operator_state_survives_a_snapshot() {
    with_ctx(|ctx| {
        let add = Func::reduce("add", |a: i64, b: i64| a + b);
        let sub = Func::inverse_reduce("sub", |a: i64, b: i64| a - b);
        let funcs = WindowFuncs {
            reduce: &add,
            inverse: Some(&sub),
            filter: None,
        };
        let sum = Func::update_state("sum", |vs: Vec<i64>, s: Option<i64>| {
            Some(vs.iter().sum::<i64>() + s.unwrap_or(0))
        });
        // Two copies of each operator: one runs on, one is restored midway.
        let mut w1 = WindowedReduce::new(2);
        let mut s1 = StateByKey::new(2);
        let mut b1 = WindowBuffer::default();
        let batches = [
            vec![("a", 1), ("b", 1)],
            vec![("a", 2)],
            vec![("c", 1)],
            vec![],
        ];
        let mut restored = None;
        for (i, b) in batches.iter().enumerate() {
            let t = BatchContext {
                time: BatchTime((i as i64 + 1) * 1000),
                executor: ctx.executor,
                stage: 0,
                input_stages: &[],
                shuffle: ctx.shuffle,
                stream: "test",
            };
            if i == 2 {
                let mut w = StateWriter::new();
                w1.snapshot(&mut w);
                s1.snapshot(&mut w);
                b1.snapshot(&mut w);
                let bytes = w.into_bytes();
                let mut r = StateReader::new(&bytes);
                let (mut w2, mut s2, mut b2) = (
                    WindowedReduce::new(2),
                    StateByKey::new(2),
                    WindowBuffer::default(),
                );
                w2.restore(&mut r).unwrap();
                s2.restore(&mut r).unwrap();
                b2.restore(&mut r).unwrap();
                assert!(r.is_empty());
                // A job with other partition counts refuses the state.
                let mut r = StateReader::new(&bytes);
                assert!(WindowedReduce::new(3).restore(&mut r).is_err());
                restored = Some((w2, s2, b2));
            }
            let step = |w: &mut WindowedReduce, s: &mut StateByKey, buf: &mut WindowBuffer| {
                w.push(pairs(b), &add, &t).unwrap();
                buf.push(t.time, Arc::new(pairs(b)));
                (
                    rendered(&w.window(2000, 1000, &funcs, &t).unwrap()),
                    rendered(&s.update(&sum, pairs(b), &t).unwrap()),
                    rendered(&buf.window(t.time, 2000)),
                )
            };
            let one = step(&mut w1, &mut s1, &mut b1);
            if let Some((w2, s2, b2)) = restored.as_mut() {
                assert_eq!(step(w2, s2, b2), one, "batch {i}");
            }
        }
        // map_with_state: tick and last-seen survive too.
        let f = Func::map_state(
            "count",
            |k: String, v: Option<i64>, s: &mut sluice_sdk::State<i64>| {
                let n = s.get().copied().unwrap_or(0) + v.unwrap_or(0);
                s.update(n);
                Some((k, n))
            },
        );
        let mut m1 = MapWithState::new(2, Some(1));
        m1.update(&f, pairs(&[("a", 1)]), ctx).unwrap();
        let mut w = StateWriter::new();
        m1.snapshot(&mut w);
        let bytes = w.into_bytes();
        let mut m2 = MapWithState::new(2, Some(1));
        m2.restore(&mut StateReader::new(&bytes)).unwrap();
        let next = || pairs(&[("b", 1)]);
        assert_eq!(
            rendered(&m1.update(&f, next(), ctx).unwrap()),
            rendered(&m2.update(&f, next(), ctx).unwrap())
        );
    });
}

#[test]
fn state_updates_every_key_and_removes_on_none() {
    with_ctx(|ctx| {
        // Running sum; a key is dropped when its new values sum to 0 and it had state.
        let f = Func::update_state("sum", |vs: Vec<i64>, s: Option<i64>| {
            let n: i64 = vs.iter().sum();
            match s {
                Some(_) if n == 0 => None,
                _ => Some(n + s.unwrap_or(0)),
            }
        });
        let mut s = StateByKey::new(3);
        let out = s
            .update(&f, pairs(&[("a", 1), ("b", 2), ("a", 3)]), ctx)
            .unwrap();
        assert_eq!(out.partitions.len(), 3);
        assert_eq!(rendered(&out), [r#"["a",4]"#, r#"["b",2]"#]);
        let out = s.update(&f, pairs(&[("b", 1), ("c", 5)]), ctx).unwrap();
        assert_eq!(
            rendered(&out),
            [r#"["b",3]"#, r#"["c",5]"#],
            "a had no values: removed"
        );
        let out = s.update(&f, pairs(&[("a", 7)]), ctx).unwrap();
        assert_eq!(
            rendered(&out),
            [r#"["a",7]"#],
            "a starts again; b and c are removed"
        );
        assert_eq!(s.len(), 1);
    });
}
