//! Unit tests of the keyed operators.

use super::combine::KEY_SAMPLE;
use super::*;
use crate::ops::testing::{batch_of, rendered, with_ctx};

#[test]
fn counts_are_exact_past_the_key_sample_with_many_keys_or_few() {
    // Every key of the sample new (the table is sized up after it), then
    // some seen again; and three keys over and over (it stays small).
    let n = 3 * KEY_SAMPLE;
    let distinct: Vec<(String, i64)> = (0..n)
        .map(|i| (format!("k{}", i % (2 * KEY_SAMPLE)), 1))
        .collect();
    let few: Vec<(String, i64)> = (0..n).map(|i| (format!("k{}", i % 3), 1)).collect();
    with_ctx(|ctx| {
        let add = Func::reduce("add", |a: i64, b: i64| a + b);
        let rdd = Rdd {
            partitions: vec![batch_of(&distinct)],
        };
        let out = rendered(&reduce_by_key(&add, 1, rdd, ctx).unwrap());
        assert_eq!(out.len(), 2 * KEY_SAMPLE);
        let twice = out.iter().filter(|e| e.ends_with(",2]")).count();
        let once = out.iter().filter(|e| e.ends_with(",1]")).count();
        assert_eq!((twice, once), (KEY_SAMPLE, KEY_SAMPLE), "{:?}", &out[..3]);
        let rdd = Rdd {
            partitions: vec![batch_of(&few)],
        };
        let out = rendered(&reduce_by_key(&add, 1, rdd, ctx).unwrap());
        let each = n / 3;
        assert_eq!(out, [0, 1, 2].map(|k| format!(r#"["k{k}",{each}]"#)));
    });
}

#[test]
fn reduces_across_partitions_into_n_partitions() {
    with_ctx(|ctx| {
        let rdd = Rdd {
            partitions: vec![
                batch_of(&[("a", 1), ("b", 1), ("a", 1)]),
                batch_of(&[("a", 1), ("c", 1)]),
            ],
        };
        let add = Func::reduce("add", |a: i64, b: i64| a + b);
        let out = reduce_by_key(&add, 3, rdd, ctx).unwrap();
        assert_eq!(out.partitions.len(), 3);
        assert_eq!(rendered(&out), [r#"["a",3]"#, r#"["b",1]"#, r#"["c",1]"#]);
        // Every key lands in the partition its hash names.
        for (q, b) in out.partitions.iter().enumerate() {
            for k in b.keys.iter() {
                assert_eq!(partition_of(k, 3), q);
            }
        }
    });
}

#[test]
fn groups_and_maps_values_by_key() {
    with_ctx(|ctx| {
        let rdd = || Rdd {
            partitions: vec![batch_of(&[("a", 1), ("b", 2)]), batch_of(&[("a", 3)])],
        };
        let grouped = group_by_key(4, rdd(), ctx).unwrap();
        assert_eq!(grouped.partitions.len(), 4);
        assert_eq!(rendered(&grouped), [r#"["a",[1,3]]"#, r#"["b",[2]]"#]);
        let doubled = map_values(&Func::map("double", |v: i64| v * 2), rdd(), ctx).unwrap();
        assert_eq!(doubled.partitions.len(), 2, "partitioning is kept");
        assert_eq!(
            rendered(&doubled),
            [r#"["a",2]"#, r#"["a",6]"#, r#"["b",4]"#]
        );
    });
}

#[test]
fn combine_by_key_folds_then_merges_like_spark_average() {
    with_ctx(|ctx| {
        let rdd = Rdd {
            partitions: vec![
                batch_of(&[("a", 1), ("b", 10), ("a", 3)]),
                batch_of(&[("a", 5), ("c", 7)]),
            ],
        };
        // (sum, count): create (v, 1), merge_value adds a value, merge_combiners adds pairs.
        let create = Func::map("create", |v: i64| (v, 1i64));
        let merge_value = Func::fold("merge_value", |c: (i64, i64), v: i64| (c.0 + v, c.1 + 1));
        let merge = Func::reduce("merge", |a: (i64, i64), b: (i64, i64)| {
            (a.0 + b.0, a.1 + b.1)
        });
        let combiner = Combiner {
            create: Some(&create),
            merge_value: &merge_value,
            merge_combiners: &merge,
        };
        let out = combine_by_key(&combiner, 3, rdd, ctx, "combine_by_key").unwrap();
        assert_eq!(out.partitions.len(), 3);
        assert_eq!(
            rendered(&out),
            [r#"["a",[9,3]]"#, r#"["b",[10,1]]"#, r#"["c",[7,1]]"#]
        );
    });
}

#[test]
fn flat_map_values_keeps_each_outputs_key() {
    with_ctx(|ctx| {
        let rdd = Rdd {
            partitions: vec![batch_of(&[("a", 2), ("b", 0)]), batch_of(&[("c", 3)])],
        };
        let f = Func::flat_map("upto", |n: i64| 0..n);
        let out = flat_map_values(&f, rdd.clone(), ctx).unwrap();
        assert_eq!(out.partitions.len(), 2, "partitioning is kept");
        assert_eq!(
            rendered(&out),
            [
                r#"["a",0]"#,
                r#"["a",1]"#,
                r#"["c",0]"#,
                r#"["c",1]"#,
                r#"["c",2]"#
            ]
        );
        // Split into calls of one element each, the result is the same.
        let small = Func::flat_map("upto", |n: i64| 0..n).with_input_limit(1);
        assert_eq!(
            rendered(&flat_map_values(&small, rdd, ctx).unwrap()),
            rendered(&out)
        );
    });
}

#[test]
fn pairs_are_read_in_place_as_keys_and_values() {
    with_ctx(|ctx| {
        let items = [
            ("a", serde_json::json!(1)),
            ("bb", serde_json::json!([1, 2])),
            ("", serde_json::json!("x")),
        ];
        let pairs = KeyedElements::of(batch_of(&items), ctx, "test").unwrap();
        assert!(matches!(pairs, KeyedElements::Pairs(..)));
        // A keyed batch of the same elements reads the same.
        let (keys, values) = pairs.into_columns();
        let keyed = KeyedElements::of(
            Batch {
                keys: keys.clone(),
                values: values.clone(),
            },
            ctx,
            "test",
        )
        .unwrap();
        assert!(matches!(keyed, KeyedElements::Keyed(..)));
        let pairs = KeyedElements::of(batch_of(&items), ctx, "test").unwrap();
        assert_eq!(pairs.len(), 3);
        for (i, (k, v)) in items.iter().enumerate() {
            let mut kb = Column::new();
            kb.push(k).unwrap();
            let mut vb = Column::new();
            vb.push(v).unwrap();
            assert_eq!(pairs.key(i), kb.get(0), "key {i}");
            assert_eq!(pairs.value(i), vb.get(0), "value {i}");
            assert_eq!(keyed.key(i), pairs.key(i));
            assert_eq!(keyed.value(i), pairs.value(i));
        }
    });
}

#[test]
fn non_pairs_are_a_clear_error() {
    with_ctx(|ctx| {
        let rdd = Rdd {
            partitions: vec![batch_of(&["lonely"])],
        };
        let add = Func::reduce("add", |a: i64, b: i64| a + b);
        let err = reduce_by_key(&add, 1, rdd, ctx).unwrap_err().to_string();
        assert!(
            err.contains("stream `test`") && err.contains("'lonely'"),
            "{err}"
        );
    });
}
