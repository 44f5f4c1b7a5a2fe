//! Task snapshots: the state of a sharded stream is written as one object
//! per partition (`state-<batch ms>-<stream>-<partition>`), each by the task
//! that owns the partition, and the checkpoint points at them. Every
//! object is framed like a checkpoint: magic, format version, length,
//! payload, checksum.

use super::{Checkpoint, Checkpoints, FORMAT_VERSION, name_of};
use crate::error::{Error, Result};
use std::collections::BTreeMap;

pub(crate) const MAGIC: &[u8; 8] = b"SLUICESH";
/// The state shards of a checkpoint: per stream, each partition's bytes.
pub type Shards = BTreeMap<u64, Vec<Vec<u8>>>;

/// Names of state shard objects start with this.
pub(super) const PREFIX: &str = "state-";

/// The object of partition `partition`'s state of stream `stream` in the
/// checkpoint of `batch_time`.
pub(crate) fn shard_name(batch_time: i64, stream: u64, partition: usize) -> String {
    format!("{PREFIX}{batch_time}-{stream}-{partition}")
}

/// `payload` framed: magic, format version, length, payload, checksum.
pub(crate) fn frame(magic: &[u8; 8], payload: &[u8]) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(payload.len() + 28);
    bytes.extend_from_slice(magic);
    bytes.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    bytes.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    bytes.extend_from_slice(payload);
    bytes.extend_from_slice(&xxhash_rust::xxh3::xxh3_64(payload).to_le_bytes());
    bytes
}

/// The payload of a framed `what` (`checkpoint`, `state shard`); the
/// error says what is wrong with it.
pub(crate) fn unframe<'a>(
    magic: &[u8; 8],
    what: &str,
    bytes: &'a [u8],
) -> std::result::Result<&'a [u8], String> {
    if bytes.len() < 20 || &bytes[..8] != magic {
        return Err(format!("not a Sluice {what} (bad magic)"));
    }
    let version = u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]);
    if version != FORMAT_VERSION {
        return Err(format!(
            "{what} format version {version}, this build reads version {FORMAT_VERSION}"
        ));
    }
    let mut len = [0u8; 8];
    len.copy_from_slice(&bytes[12..20]);
    let len = u64::from_le_bytes(len) as usize;
    // Checked: a damaged length near the top of the range must not wrap
    // around to the file's size (found by fuzzing).
    let Some((end, total)) = 20usize
        .checked_add(len)
        .and_then(|end| Some((end, end.checked_add(8)?)))
    else {
        return Err(format!("bad payload length {len}"));
    };
    if bytes.len() != total {
        return Err(format!(
            "truncated or padded: {} bytes, the header says {total}",
            bytes.len()
        ));
    }
    let payload = &bytes[20..end];
    let mut sum = [0u8; 8];
    sum.copy_from_slice(&bytes[end..]);
    if u64::from_le_bytes(sum) != xxhash_rust::xxh3::xxh3_64(payload) {
        return Err("checksum mismatch (the file is damaged)".to_string());
    }
    Ok(payload)
}

impl Checkpoints {
    /// Writes the shards of the checkpoint of `batch_time`. A shard already
    /// there with the same content is no error (the batch was re-run); one
    /// with other content is left over from an attempt that crashed before
    /// its checkpoint was written, and is replaced, unless that checkpoint
    /// exists: then another process is writing this job's checkpoints.
    pub(super) fn put_shards(&self, batch_time: i64, shards: &[(String, Vec<u8>)]) -> Result<()> {
        let framed: Vec<(String, Vec<u8>)> = shards
            .iter()
            .map(|(name, payload)| (name.clone(), frame(MAGIC, payload)))
            .collect();
        let written = self.store.put_all_if_absent(&framed)?;
        for ((name, bytes), written) in framed.iter().zip(written) {
            if !written {
                self.replace_shard(batch_time, name, bytes)?;
            }
        }
        Ok(())
    }

    /// Shard `name` was there already: see [`Checkpoints::put_shards`].
    fn replace_shard(&self, batch_time: i64, name: &str, bytes: &[u8]) -> Result<()> {
        if self.store.get(name)?.is_some_and(|b| b == bytes) {
            return Ok(());
        }
        if self.store.get(&name_of(batch_time))?.is_some() {
            return Err(Error::Plan(format!(
                "state shard {} exists with other content: another process may be writing this job's checkpoints (stop it, or start over with --fresh)",
                self.store.locate(name)
            )));
        }
        self.store.delete(name)?;
        if self.store.put_if_absent(name, bytes)? {
            Ok(())
        } else {
            Err(Error::Plan(format!(
                "state shard {} was written by another process meanwhile",
                self.store.locate(name)
            )))
        }
    }

    /// The shards `cp` names, per stream in partition order; the error
    /// names the shard that is missing or damaged.
    pub fn read_shards(&self, cp: &Checkpoint) -> std::result::Result<Shards, String> {
        let mut out = BTreeMap::new();
        for (&stream, names) in &cp.shards {
            let mut shards = Vec::with_capacity(names.len());
            for name in names {
                let bytes = match self.store.get(name) {
                    Ok(Some(bytes)) => bytes,
                    Ok(None) => return Err(format!("its state shard {name} is missing")),
                    Err(e) => return Err(format!("its state shard {name}: {e}")),
                };
                let payload = unframe(MAGIC, "state shard", &bytes)
                    .map_err(|e| format!("its state shard {name}: {e}"))?;
                shards.push(payload.to_vec());
            }
            out.insert(stream, shards);
        }
        Ok(out)
    }

    /// Removes the shards of the checkpoint of `batch_time`.
    pub(super) fn delete_shards(&self, batch_time: i64) -> Result<()> {
        for name in self.store.list(&format!("{PREFIX}{batch_time}-"))? {
            self.store.delete(&name)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found by fuzzing (`fuzz/corpus/checkpoint/`): a length that wraps
    /// around to the file's size is refused, not a slice past the end.
    #[test]
    fn a_wrapping_length_is_refused() {
        let mut bytes = Vec::from(*b"SLUICECK");
        bytes.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        // 20 + len fits; 20 + len + 8 does not.
        bytes.extend_from_slice(&(u64::MAX - 21).to_le_bytes());
        bytes.push(7);
        let e = unframe(b"SLUICECK", "checkpoint", &bytes).unwrap_err();
        assert!(e.contains("bad payload length"), "{e}");
    }

    fn cp(t: i64, shards: usize) -> (Checkpoint, Vec<(String, Vec<u8>)>) {
        let objects: Vec<(String, Vec<u8>)> = (0..shards)
            .map(|p| (shard_name(t, 3, p), vec![p as u8; 10 + p]))
            .collect();
        let cp = Checkpoint {
            graph: "g".to_string(),
            batch_time: t,
            batch_index: (t / 1000) as u64,
            first_batch_time: 1000,
            plugins: BTreeMap::new(),
            sources: Vec::new(),
            state: BTreeMap::from([(3, vec![7])]),
            shards: BTreeMap::from([(3, objects.iter().map(|(n, _)| n.clone()).collect())]),
        };
        (cp, objects)
    }

    #[test]
    fn shards_are_written_before_their_checkpoint_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let store = Checkpoints::open(dir.path()).unwrap();
        let (c1, s1) = cp(1000, 3);
        store.write_with_shards(&c1, &s1).unwrap();
        let (latest, skipped) = store.latest().unwrap().unwrap();
        assert_eq!((latest, skipped.len()), (c1.clone(), 0));
        let shards = store.read_shards(&c1).unwrap();
        assert_eq!(
            shards[&3],
            s1.iter().map(|(_, b)| b.clone()).collect::<Vec<_>>()
        );
        // Re-writing the same checkpoint (a re-run batch) is no error.
        store.write_with_shards(&c1, &s1).unwrap();
        // A newer checkpoint with a lost shard is skipped, naming it.
        let (c2, s2) = cp(2000, 2);
        store.write_with_shards(&c2, &s2).unwrap();
        std::fs::remove_file(dir.path().join(&s2[1].0)).unwrap();
        let (latest, skipped) = store.latest().unwrap().unwrap();
        assert_eq!(latest.batch_time, 1000);
        assert!(skipped[0].reason.contains(&s2[1].0), "{skipped:?}");
        // Set aside, its shards go too, and the batch checkpoints again.
        store.set_aside(&skipped).unwrap();
        assert!(!dir.path().join(&s2[0].0).exists());
        store.write_with_shards(&c2, &s2).unwrap();
        assert_eq!(store.latest().unwrap().unwrap().0.batch_time, 2000);
    }

    #[test]
    fn a_leftover_shard_is_replaced_but_one_of_a_written_checkpoint_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let store = Checkpoints::open(dir.path()).unwrap();
        let (c1, s1) = cp(1000, 2);
        // A crash left a different shard 0 and no checkpoint: replaced.
        std::fs::write(dir.path().join(&s1[0].0), b"stale").unwrap();
        store.write_with_shards(&c1, &s1).unwrap();
        assert_eq!(store.read_shards(&c1).unwrap()[&3][0], s1[0].1);
        // Another shard for a checkpoint that exists: another writer.
        let mut other = s1.clone();
        other[1].1 = vec![9; 4];
        let e = store
            .write_with_shards(&c1, &other)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains(&other[1].0) && e.contains("another process"),
            "{e}"
        );
    }

    #[test]
    fn pruning_and_clearing_remove_the_shards_too() {
        let dir = tempfile::tempdir().unwrap();
        let store = Checkpoints::open(dir.path()).unwrap();
        for t in 1..=12 {
            let (c, s) = cp(t * 1000, 2);
            store.write_with_shards(&c, &s).unwrap();
        }
        let shards = store.store.list(PREFIX).unwrap();
        assert_eq!(shards.len(), 2 * super::super::KEEP, "{shards:?}");
        assert!(!shards.iter().any(|n| n.starts_with("state-1000-")));
        store.clear().unwrap();
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
