//! One batch of a stream: its partitions, each a columnar [`Batch`].

use sluice_sdk::{Batch, Column};

/// Most lines in one partition of a received batch ([`Rdd::from_received`]).
pub const BLOCK_LINES: usize = 8192;

/// The elements of one stream at one batch time, in partitions (Spark's RDD).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rdd {
    /// The partitions, in order.
    pub partitions: Vec<Batch>,
}

impl Rdd {
    /// An RDD of `n` empty partitions.
    pub fn empty(n: usize) -> Rdd {
        Rdd {
            partitions: vec![Batch::default(); n.max(1)],
        }
    }

    /// Number of elements in all partitions.
    pub fn count(&self) -> usize {
        self.partitions.iter().map(Batch::len).sum()
    }

    /// Splits one column of values into `n` partitions of consecutive
    /// elements, as Spark's `parallelize` slices a list.
    pub fn from_column(values: &Column, n: usize) -> Rdd {
        let n = n.max(1);
        let len = values.len();
        let mut partitions = Vec::with_capacity(n);
        for p in 0..n {
            let (a, b) = (p * len / n, (p + 1) * len / n);
            partitions.push(Batch::from_values(slice(values, a, b)));
        }
        Rdd { partitions }
    }

    /// Splits received lines into at least `n` partitions, and into more
    /// when the batch is large: at most [`BLOCK_LINES`] lines each, as
    /// Spark's receivers cut their input into blocks. Many small partitions
    /// let the workers share a large batch evenly, even while a receiver
    /// thread takes part of a core (the socket word count of `--bench
    /// streaming` with wasm operators: 732k instead of 466k lines/s on 2
    /// cores).
    pub fn from_received(lines: &Column, n: usize) -> Rdd {
        Rdd::from_column(lines, n.max(lines.len().div_ceil(BLOCK_LINES)))
    }

    /// Every element as `(key, value)` bytes (key empty when absent), in
    /// partition order.
    pub fn elements(&self) -> impl Iterator<Item = (&[u8], &[u8])> + '_ {
        self.partitions.iter().flat_map(|b| {
            (0..b.len()).map(move |i| {
                let k = if b.has_keys() { b.keys.get(i) } else { &[][..] };
                (k, b.values.get(i))
            })
        })
    }
}

/// Elements `a..b` of a column, as a column of their own.
pub(crate) fn slice(values: &Column, a: usize, b: usize) -> Column {
    let mut col = Column::new();
    if b > a {
        let (start, end) = (values.offsets[a], values.offsets[b]);
        col.bytes = values.bytes[start as usize..end as usize].to_vec();
        col.offsets = values.offsets[a..=b].iter().map(|o| o - start).collect();
    }
    col
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn received_batches_are_cut_into_blocks() {
        let mut lines = Column::new();
        for i in 0..(BLOCK_LINES * 3 + 1) {
            let _ = lines.push(&format!("line {i}"));
        }
        let rdd = Rdd::from_received(&lines, 2);
        assert_eq!(rdd.partitions.len(), 4);
        assert!(rdd.partitions.iter().all(|p| p.len() <= BLOCK_LINES));
        assert_eq!(rdd.count(), lines.len());
        // Small batches keep the partitions asked for.
        let mut few = Column::new();
        let _ = few.push(&"a");
        assert_eq!(Rdd::from_received(&few, 3).partitions.len(), 3);
    }

    #[test]
    fn slices_like_parallelize() {
        let mut c = Column::new();
        for s in ["a", "b", "c"] {
            c.push_str(s).unwrap();
        }
        let r = Rdd::from_column(&c, 2);
        assert_eq!(r.partitions[0].len(), 1);
        assert_eq!(r.partitions[1].len(), 2);
        assert_eq!(r.partitions[1].values.get(0), b"\xa1b");
        assert_eq!(r.count(), 3);
        assert_eq!(Rdd::from_column(&Column::new(), 2).partitions.len(), 2);
    }
}
