//! Unit tests of [`Func`]'s calls: splitting past the input limit.

use super::pieces::{chunks, copy_elements};
use super::*;
use crate::error::PluginFault;

fn col(items: &[i64]) -> Column {
    let mut c = Column::new();
    for i in items {
        c.push(i).unwrap();
    }
    c
}

fn site() -> CallSite {
    CallSite {
        batch: BatchTime(1000),
        partition: 0,
        partitions: 1,
    }
}

/// A native function with a tiny per-call limit, counting its calls.
fn counting_sum(limit: usize, calls: Arc<std::sync::atomic::AtomicUsize>) -> Func {
    let mut f = Func::reduce("sum", |a: i64, b: i64| a + b);
    let Imp::Native(Native::Reduce(inner)) = f.imp.clone() else {
        unreachable!()
    };
    f.imp = Imp::Native(Native::Reduce(Arc::new(move |c: &Column, g: &[u32]| {
        calls.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        assert!(
            c.bytes.len() <= limit || c.len() <= 2,
            "a call of {} bytes and {} values over the {limit} byte limit",
            c.bytes.len(),
            c.len()
        );
        inner(c, g)
    })));
    f.with_input_limit(limit)
}

#[test]
fn reductions_over_the_input_limit_are_split_and_still_exact() {
    // Groups: 1 value, 100 values (a big group), 2 values, 3 values.
    let mut values: Vec<i64> = vec![7];
    values.extend(1..=100);
    values.extend([1000, 2000, 5, 6, 300]);
    let groups = vec![0, 1, 101, 103, 106];
    for limit in [1, 2, 3, 7, 64, 1 << 20] {
        let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let f = counting_sum(limit, calls.clone());
        let out = f
            .apply_reduce(&mut col(&values), groups.clone(), site())
            .unwrap();
        assert_eq!(out, col(&[7, 5050, 3000, 311]), "limit {limit}");
        if limit == 1 << 20 {
            assert_eq!(calls.load(std::sync::atomic::Ordering::Relaxed), 1);
        }
    }
}

#[test]
fn folds_over_the_input_limit_are_chained_left_to_right() {
    // One group: a (sum, count) combiner, then 60 plain values.
    let mut values = Column::new();
    values.push(&(0i64, 0i64)).unwrap();
    for v in 1..=60i64 {
        values.push(&v).unwrap();
    }
    for limit in [1, 5, 20, 1 << 20] {
        let f =
            Func::fold("avg", |c: (i64, i64), v: i64| (c.0 + v, c.1 + 1)).with_input_limit(limit);
        let out = f
            .apply_reduce(&mut values.clone(), vec![0, 61], site())
            .unwrap();
        let mut want = Column::new();
        want.push(&(1830i64, 60i64)).unwrap();
        assert_eq!(out, want, "limit {limit}");
    }
}

#[test]
fn chunks_cover_the_column_in_order_each_as_long_as_the_limit_allows() {
    let mut input = Column::new();
    for s in ["aa", "", "bbbbbbbbbb", "c", "", "", "dd", "eee"] {
        if s.is_empty() {
            input.push_absent().unwrap();
        } else {
            input.push(s).unwrap();
        }
    }
    let size =
        |r: &std::ops::Range<usize>| (input.offsets[r.end] - input.offsets[r.start]) as usize;
    for limit in 1..=40 {
        let ranges: Vec<_> = chunks(&input, limit).collect();
        let mut joined = Column::new();
        let mut piece = Column::new();
        let mut next = 0;
        for r in &ranges {
            assert_eq!(r.start, next, "limit {limit}: {ranges:?}");
            assert!(!r.is_empty());
            assert!(r.len() == 1 || size(r) <= limit, "limit {limit}: {r:?}");
            if r.end < input.len() {
                assert!(size(&(r.start..r.end + 1)) > limit, "limit {limit}: {r:?}");
            }
            next = r.end;
            copy_elements(&input, r.clone(), &mut piece);
            piece.validate().unwrap();
            joined.extend_from(&piece).unwrap();
        }
        assert_eq!(next, input.len());
        assert_eq!(joined, input, "limit {limit}");
    }
    assert_eq!(chunks(&Column::new(), 10).count(), 0);
}

#[test]
fn maps_and_filters_over_the_input_limit_are_split_in_order() {
    let input = col(&(0..50).collect::<Vec<_>>());
    let f = Func::map("double", |x: i64| x * 2).with_input_limit(5);
    let out = f.apply_values(&mut input.clone(), site()).unwrap();
    assert_eq!(out, col(&(0..50).map(|x| x * 2).collect::<Vec<_>>()));
    let f = Func::filter("odd", |x: i64| x % 2 == 1).with_input_limit(3);
    let kept = f.apply_filter(&mut input.clone(), site()).unwrap();
    assert_eq!(kept, (0..50).filter(|x| x % 2 == 1).collect::<Vec<u32>>());
}

#[test]
fn an_element_refused_in_a_later_piece_is_numbered_within_the_partition() {
    let input = col(&(0..50).collect::<Vec<_>>());
    let f = Func::native_values("no_37", Kind::Map, |c| {
        sluice_sdk::run::try_map(c, |x: i64| if x == 37 { Err("37") } else { Ok(x) })
    })
    .with_input_limit(5);
    let e = f.apply_values(&mut input.clone(), site()).unwrap_err();
    let Error::Plugin { fault, .. } = e else {
        panic!("{e}");
    };
    assert!(
        matches!(
            *fault,
            PluginFault::Refused {
                element: Some(37),
                ..
            }
        ),
        "{fault}"
    );
}
