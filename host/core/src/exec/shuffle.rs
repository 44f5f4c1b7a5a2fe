//! Shuffles: how the tasks on either side of an exchange meet.
//!
//! A map task writes its output for every reduce partition as a block
//! addressed by [`BlockId`] (the exchange, its own partition, the reduce
//! partition); a reduce task then reads the blocks addressed to its
//! partition, from every map task, in map partition order. Neither side
//! sees the other's memory: a [`LocalShuffle`] hands the blocks over inside
//! the process, an [`EncodedShuffle`] keeps them as bytes (what a shuffle
//! between processes carries), and a cluster's shuffle puts them on the
//! wire.

use crate::checkpoint::{StateReader, StateWriter};
use crate::error::{Error, Result};
use crate::time::BatchTime;
use sluice_sdk::Batch;
use std::collections::HashMap;
use std::fmt;
use std::sync::Mutex;

/// One exchange of one batch: the input `input` of stage `stage` (a join
/// reads two), at batch time `batch`. Spark's shuffle id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ExchangeId {
    /// The stage that reads the exchange (`sluice explain`).
    pub stage: usize,
    /// Which of that stage's exchanged inputs (0 for most; a join's right
    /// side is 1, a keyed state's initial state 1).
    pub input: usize,
    /// The batch.
    pub batch: BatchTime,
}

/// One block of an exchange: what map partition `map` sends to reduce
/// partition `reduce`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BlockId {
    /// The exchange.
    pub exchange: ExchangeId,
    /// The writing task's partition.
    pub map: usize,
    /// The reading task's partition.
    pub reduce: usize,
}

impl fmt::Display for BlockId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let e = &self.exchange;
        write!(
            f,
            "shuffle block (stage {}, input {}, map {}, reduce {}) of batch {}",
            e.stage, e.input, self.map, self.reduce, e.batch
        )
    }
}

/// Where an exchange's blocks wait between its map and its reduce tasks.
pub trait Shuffle: Send + Sync {
    /// Writes a map task's block for one reduce partition. A block written
    /// twice (a task run again) replaces the first: it is the same data.
    fn put(&self, block: BlockId, data: Batch) -> Result<()>;

    /// Takes the blocks for reduce partition `reduce` of `exchange` from
    /// map partitions `0..maps`, in map partition order, leaving none
    /// behind; a map partition that wrote none gives an empty batch.
    fn take(&self, exchange: ExchangeId, reduce: usize, maps: usize) -> Result<Vec<Batch>>;

    /// Drops whatever is left of batch `batch`'s blocks: called when the
    /// batch ends, so that an attempt that failed half way (a batch that a
    /// hot swap runs again) leaves nothing for the next one to read.
    fn forget(&self, batch: BatchTime);
}

/// A shuffle inside one process: a map task's blocks are moved, not
/// copied, to the reduce task that takes them.
#[derive(Default)]
pub struct LocalShuffle {
    blocks: Mutex<HashMap<BlockId, Batch>>,
}

impl Shuffle for LocalShuffle {
    fn put(&self, block: BlockId, data: Batch) -> Result<()> {
        lock(&self.blocks).insert(block, data);
        Ok(())
    }

    fn take(&self, exchange: ExchangeId, reduce: usize, maps: usize) -> Result<Vec<Batch>> {
        let mut blocks = lock(&self.blocks);
        Ok((0..maps)
            .map(|map| {
                blocks
                    .remove(&BlockId {
                        exchange,
                        map,
                        reduce,
                    })
                    .unwrap_or_default()
            })
            .collect())
    }

    fn forget(&self, batch: BatchTime) {
        let mut blocks = lock(&self.blocks);
        if !blocks.is_empty() {
            blocks.retain(|id, _| id.exchange.batch != batch);
        }
    }
}

/// A shuffle that keeps every block as bytes (its keys and values columns
/// framed, as [`StateWriter::batch`] writes them) and validates them when
/// they are read back: what crosses between processes, so a run on it
/// shows that nothing but a block's bytes passes an exchange.
#[derive(Default)]
pub struct EncodedShuffle {
    blocks: Mutex<HashMap<BlockId, Vec<u8>>>,
}

impl EncodedShuffle {
    /// A block's bytes.
    pub fn encode(data: &Batch) -> Vec<u8> {
        let mut w = StateWriter::new();
        w.batch(data);
        w.into_bytes()
    }

    /// A block from its bytes; damaged bytes are an error naming the block.
    pub fn decode(block: BlockId, bytes: &[u8]) -> Result<Batch> {
        let mut r = StateReader::new(bytes);
        let damaged = |e: &dyn fmt::Display| Error::Internal(format!("{block} is damaged: {e}"));
        let data = r.batch().map_err(|e| damaged(&e))?;
        if !r.is_empty() {
            return Err(damaged(&"trailing bytes"));
        }
        Ok(data)
    }
}

impl Shuffle for EncodedShuffle {
    fn put(&self, block: BlockId, data: Batch) -> Result<()> {
        let bytes = EncodedShuffle::encode(&data);
        lock(&self.blocks).insert(block, bytes);
        Ok(())
    }

    fn take(&self, exchange: ExchangeId, reduce: usize, maps: usize) -> Result<Vec<Batch>> {
        let taken: Vec<(BlockId, Option<Vec<u8>>)> = {
            let mut blocks = lock(&self.blocks);
            (0..maps)
                .map(|map| {
                    let id = BlockId {
                        exchange,
                        map,
                        reduce,
                    };
                    (id, blocks.remove(&id))
                })
                .collect()
        };
        taken
            .into_iter()
            .map(|(id, bytes)| match bytes {
                Some(b) => EncodedShuffle::decode(id, &b),
                None => Ok(Batch::default()),
            })
            .collect()
    }

    fn forget(&self, batch: BatchTime) {
        let mut blocks = lock(&self.blocks);
        if !blocks.is_empty() {
            blocks.retain(|id, _| id.exchange.batch != batch);
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_sdk::Column;

    fn block(map: usize, reduce: usize) -> BlockId {
        BlockId {
            exchange: ExchangeId {
                stage: 1,
                input: 0,
                batch: BatchTime(2000),
            },
            map,
            reduce,
        }
    }

    fn keyed(k: &str, v: i64) -> Batch {
        let (mut keys, mut values) = (Column::new(), Column::new());
        keys.push(&k).unwrap();
        values.push(&v).unwrap();
        Batch { keys, values }
    }

    #[test]
    fn reduce_tasks_take_their_blocks_in_map_order_once() {
        for shuffle in [
            &LocalShuffle::default() as &dyn Shuffle,
            &EncodedShuffle::default(),
        ] {
            shuffle.put(block(1, 0), keyed("b", 2)).unwrap();
            shuffle.put(block(0, 0), keyed("a", 1)).unwrap();
            shuffle.put(block(0, 1), keyed("c", 3)).unwrap();
            let e = block(0, 0).exchange;
            let got = shuffle.take(e, 0, 3).unwrap();
            assert_eq!(got, vec![keyed("a", 1), keyed("b", 2), Batch::default()]);
            // Taken: nothing left for a second reader.
            assert_eq!(shuffle.take(e, 0, 2).unwrap(), vec![Batch::default(); 2]);
            // Another exchange (a later batch) does not see them.
            let later = ExchangeId {
                batch: BatchTime(3000),
                ..e
            };
            assert_eq!(shuffle.take(later, 1, 1).unwrap(), vec![Batch::default()]);
            assert_eq!(shuffle.take(e, 1, 1).unwrap(), vec![keyed("c", 3)]);
            // What a failed attempt left is forgotten when its batch ends.
            shuffle.put(block(2, 5), keyed("d", 4)).unwrap();
            shuffle.forget(BatchTime(2000));
            assert_eq!(shuffle.take(e, 5, 3).unwrap(), vec![Batch::default(); 3]);
        }
    }

    #[test]
    fn a_damaged_block_is_an_error_naming_it() {
        let mut bytes = EncodedShuffle::encode(&keyed("a", 1));
        let last = bytes.len() - 1;
        bytes[last] = 0xff;
        let err = EncodedShuffle::decode(block(3, 4), &bytes)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("shuffle block (stage 1, input 0, map 3, reduce 4) of batch"),
            "{err}"
        );
        let mut longer = EncodedShuffle::encode(&keyed("a", 1));
        longer.push(0);
        assert!(EncodedShuffle::decode(block(0, 0), &longer).is_err());
    }
}
