//! DStream: key-value transformations and joins (each a shuffle).

use super::DStream;
use super::op::{
    CombineByKey, CountByValue, FlatMapValues, GroupByKey, Join, MapValues, ReduceByKey,
    TransformWith,
};
use crate::func::Func;
use crate::ops::join::JoinKind;
use std::sync::Arc;

impl DStream {
    /// `reduce_by_key(f, partitions)`: per key, the values combined with the
    /// associative `f`, in exactly `partitions` partitions (hash of the key).
    /// Elements must be `(key, value)` pairs.
    pub fn reduce_by_key(&self, f: Func, partitions: usize) -> DStream {
        self.derive(
            "reduce_by_key",
            ReduceByKey {
                func: f,
                partitions: partitions.max(1),
            },
        )
    }

    /// `group_by_key(partitions)`: per key, `(k, [values])`, values in arrival
    /// order, in `partitions` partitions. Elements must be `(key, value)` pairs.
    pub fn group_by_key(&self, partitions: usize) -> DStream {
        self.derive(
            "group_by_key",
            GroupByKey {
                partitions: partitions.max(1),
            },
        )
    }

    /// `map_values(f)`: `(k, f(v))` for every pair, keys and partitions kept.
    pub fn map_values(&self, f: Func) -> DStream {
        self.derive("map_values", MapValues(f))
    }

    /// `flat_map_values(f)`: `(k, w)` for every `w` in `f(v)`, for every
    /// `(k, v)`; keys and partitions kept. `f` is a flat-map (or map) function
    /// of the values alone.
    pub fn flat_map_values(&self, f: Func) -> DStream {
        self.derive("flat_map_values", FlatMapValues(f))
    }

    /// `combine_by_key(create, merge_value, merge_combiners, partitions)`: per
    /// key one combiner, built in each partition from the key's first value
    /// by `create` (a map), with the next values folded in by `merge_value`
    /// (a fold `(C, V) -> C`, e.g. `#[sluice::fold]`), then merged across
    /// partitions by `merge_combiners` (a reduce `(C, C) -> C`), in exactly
    /// `partitions` partitions. Elements must be `(key, value)` pairs.
    pub fn combine_by_key(
        &self,
        create: Func,
        merge_value: Func,
        merge_combiners: Func,
        partitions: usize,
    ) -> DStream {
        self.derive(
            "combine_by_key",
            CombineByKey {
                create,
                merge_value,
                merge_combiners,
                partitions: partitions.max(1),
            },
        )
    }

    /// `transform_with(other, f)`: `f` sees this stream's and `other`'s whole
    /// batches in one call and returns the new batch (one partition).
    ///
    /// # Panics
    /// When `other` comes from another [`StreamingContext`].
    pub fn transform_with(&self, other: &DStream, f: Func) -> DStream {
        assert!(
            Arc::ptr_eq(&self.graph, &other.graph),
            "transform_with of streams from different StreamingContexts"
        );
        self.derive_from("transform_with", TransformWith(f), vec![self.id, other.id])
    }

    /// `count_by_value()`: each distinct element with its number of
    /// occurrences, as `(element, count)` pairs in `partitions` partitions.
    pub fn count_by_value(&self, partitions: usize) -> DStream {
        self.derive(
            "count_by_value",
            CountByValue {
                partitions: partitions.max(1),
            },
        )
    }

    pub(super) fn join_with(&self, other: &DStream, kind: JoinKind, partitions: usize) -> DStream {
        assert!(
            Arc::ptr_eq(&self.graph, &other.graph),
            "{} of streams from different StreamingContexts",
            kind.name()
        );
        self.derive_from(
            kind.name(),
            Join {
                kind,
                partitions: partitions.max(1),
            },
            vec![self.id, other.id],
        )
    }

    /// `join(other, partitions)`: per batch and key, every `(k, (v, w))` with
    /// `(k, v)` here and `(k, w)` in `other` (duplicates kept). Both streams
    /// must hold `(key, value)` pairs.
    ///
    /// # Panics
    /// When `other` comes from another [`StreamingContext`] (likewise for the
    /// other joins).
    pub fn join(&self, other: &DStream, partitions: usize) -> DStream {
        self.join_with(other, JoinKind::Inner, partitions)
    }

    /// `left_outer_join`: like [`DStream::join`], plus `(k, (v, null))` for
    /// keys missing from `other`.
    pub fn left_outer_join(&self, other: &DStream, partitions: usize) -> DStream {
        self.join_with(other, JoinKind::LeftOuter, partitions)
    }

    /// `right_outer_join`: like [`DStream::join`], plus `(k, (null, w))` for
    /// keys missing here.
    pub fn right_outer_join(&self, other: &DStream, partitions: usize) -> DStream {
        self.join_with(other, JoinKind::RightOuter, partitions)
    }

    /// `full_outer_join`: both outer joins at once.
    pub fn full_outer_join(&self, other: &DStream, partitions: usize) -> DStream {
        self.join_with(other, JoinKind::FullOuter, partitions)
    }

    /// `cogroup(other, partitions)`: for every key on either side,
    /// `(k, ([values here], [values in other]))`, values in arrival order.
    pub fn cogroup(&self, other: &DStream, partitions: usize) -> DStream {
        self.join_with(other, JoinKind::Cogroup, partitions)
    }
}
