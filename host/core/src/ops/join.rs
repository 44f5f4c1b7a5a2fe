//! Joins of two keyed streams within each batch: `join`, `left_outer_join`,
//! `right_outer_join`, `full_outer_join` and `cogroup`. Both sides are
//! hash-partitioned by key (the same hash as `reduce_by_key`), then each
//! output partition pairs the values of equal keys: per key the cartesian
//! product of both sides (duplicates kept), `null` on a missing side for outer
//! joins; `cogroup` gives `(k, ([left values], [right values]))` for every key
//! on either side, values in arrival order.

use super::keyed::{keyed, split_by_key};
use super::{BatchContext, Exchanged};
use crate::error::{Error, Result};
use crate::rdd::Rdd;
use hashbrown::HashMap;
use sluice_sdk::Batch;

/// Which join.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum JoinKind {
    Inner,
    LeftOuter,
    RightOuter,
    FullOuter,
    Cogroup,
}

impl JoinKind {
    /// Spark's name of the operation.
    pub(crate) fn name(self) -> &'static str {
        match self {
            JoinKind::Inner => "join",
            JoinKind::LeftOuter => "left_outer_join",
            JoinKind::RightOuter => "right_outer_join",
            JoinKind::FullOuter => "full_outer_join",
            JoinKind::Cogroup => "cogroup",
        }
    }
}

const NIL: &[u8] = &[0xc0];

/// Appends a MessagePack array header for `n` elements.
pub(crate) fn array_header(out: &mut Vec<u8>, n: usize) {
    if n < 16 {
        out.push(0x90 | n as u8);
    } else if let Ok(n) = u16::try_from(n) {
        out.push(0xdc);
        out.extend_from_slice(&n.to_be_bytes());
    } else {
        out.push(0xdd);
        out.extend_from_slice(&(n as u32).to_be_bytes());
    }
}

/// The map side of a hash exchange of `rdd` (input `input` of the
/// stream) into `partitions` keyed partitions.
pub(crate) fn bucket(
    input: usize,
    rdd: Rdd,
    partitions: usize,
    ctx: &BatchContext<'_>,
    op: &str,
) -> Result<Exchanged> {
    ctx.exchange(input, partitions, rdd.partitions, |_, batch| {
        if batch.is_empty() {
            return Ok(vec![Batch::default(); partitions]);
        }
        let (keys, values) = keyed(batch, ctx, op)?;
        Ok(split_by_key(&keys, &values, partitions))
    })
}

/// Joins `left` and `right` into `partitions` partitions.
pub(crate) fn join(
    kind: JoinKind,
    partitions: usize,
    left: Rdd,
    right: Rdd,
    ctx: &BatchContext<'_>,
) -> Result<Rdd> {
    let partitions = partitions.max(1);
    let lefts = bucket(0, left, partitions, ctx, kind.name())?;
    let rights = bucket(1, right, partitions, ctx, kind.name())?;
    let out = ctx
        .tasks((0..partitions).collect(), |q, _| {
            join_partition(kind, &ctx.read(&lefts, q)?, &ctx.read(&rights, q)?)
        })
        .into_iter()
        .collect::<Result<Vec<_>>>()?;
    Ok(Rdd { partitions: out })
}

fn join_partition(kind: JoinKind, left: &[Batch], right: &[Batch]) -> Result<Batch> {
    // Per key, in order of first appearance: the left and right values.
    type Sides<'a> = (Vec<&'a [u8]>, Vec<&'a [u8]>);
    let mut index: HashMap<&[u8], usize> = HashMap::new();
    let mut groups: Vec<(&[u8], Sides<'_>)> = Vec::new();
    for (side, batches) in [(0, left), (1, right)] {
        for b in batches {
            for i in 0..b.len() {
                let k = b.keys.get(i);
                let g = *index.entry(k).or_insert_with(|| {
                    groups.push((k, (Vec::new(), Vec::new())));
                    groups.len() - 1
                });
                let sides = &mut groups[g].1;
                if side == 0 {
                    &mut sides.0
                } else {
                    &mut sides.1
                }
                .push(b.values.get(i));
            }
        }
    }
    let mut out = Batch::default();
    let mut value = Vec::new();
    let emit = |out: &mut Batch, k: &[u8], value: &[u8]| -> Result<()> {
        out.keys
            .push_encoded(k)
            .map_err(|e| Error::Internal(e.to_string()))?;
        out.values
            .push_encoded(value)
            .map_err(|e| Error::Internal(e.to_string()))
    };
    for (k, (ls, rs)) in &groups {
        if kind == JoinKind::Cogroup {
            value.clear();
            array_header(&mut value, 2);
            for side in [ls, rs] {
                array_header(&mut value, side.len());
                for v in side.iter() {
                    value.extend_from_slice(v);
                }
            }
            emit(&mut out, k, &value)?;
            continue;
        }
        let keep_left = matches!(kind, JoinKind::LeftOuter | JoinKind::FullOuter);
        let keep_right = matches!(kind, JoinKind::RightOuter | JoinKind::FullOuter);
        let nil = [NIL];
        let ls: &[&[u8]] = if ls.is_empty() && keep_right {
            &nil
        } else {
            ls
        };
        let rs: &[&[u8]] = if rs.is_empty() && keep_left { &nil } else { rs };
        for l in ls {
            for r in rs {
                value.clear();
                value.push(0x92);
                value.extend_from_slice(l);
                value.extend_from_slice(r);
                emit(&mut out, k, &value)?;
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::testing::{batch_of, rendered, with_ctx};
    use serde_json::json;

    fn run(kind: JoinKind) -> Vec<String> {
        with_ctx(|ctx| {
            let left = Rdd {
                partitions: vec![batch_of(&[("a", 1), ("b", 2), ("a", 5)])],
            };
            let right = Rdd {
                partitions: vec![batch_of(&[("a", 3), ("c", 4)])],
            };
            let out = join(kind, 3, left, right, ctx).unwrap();
            assert_eq!(out.partitions.len(), 3);
            rendered(&out)
        })
    }

    fn texts(v: &[serde_json::Value]) -> Vec<String> {
        let mut t: Vec<String> = v.iter().map(|x| x.to_string()).collect();
        t.sort();
        t
    }

    #[test]
    fn joins_pair_every_value_of_a_key_with_nulls_for_outer_sides() {
        assert_eq!(
            run(JoinKind::Inner),
            texts(&[json!(["a", [1, 3]]), json!(["a", [5, 3]])])
        );
        assert_eq!(
            run(JoinKind::LeftOuter),
            texts(&[
                json!(["a", [1, 3]]),
                json!(["a", [5, 3]]),
                json!(["b", [2, null]])
            ])
        );
        assert_eq!(
            run(JoinKind::RightOuter),
            texts(&[
                json!(["a", [1, 3]]),
                json!(["a", [5, 3]]),
                json!(["c", [null, 4]])
            ])
        );
        assert_eq!(
            run(JoinKind::FullOuter),
            texts(&[
                json!(["a", [1, 3]]),
                json!(["a", [5, 3]]),
                json!(["b", [2, null]]),
                json!(["c", [null, 4]])
            ])
        );
        assert_eq!(
            run(JoinKind::Cogroup),
            texts(&[
                json!(["a", [[1, 5], [3]]]),
                json!(["b", [[2], []]]),
                json!(["c", [[], [4]]])
            ])
        );
    }

    #[test]
    fn large_groups_get_long_array_headers() {
        let mut v = Vec::new();
        array_header(&mut v, 20);
        array_header(&mut v, 70_000);
        assert_eq!(v, [0xdc, 0x00, 20, 0xdd, 0x00, 0x01, 0x11, 0x70]);
    }
}
