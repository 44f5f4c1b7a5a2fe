//! The checkpoint store: one file per checkpoint in a directory, written
//! atomically, checked when read, the newest valid one found on recovery.
//!
//! A checkpoint file `checkpoint-<batch ms>` (all integers little-endian):
//!
//! ```text
//! magic     8 bytes  "SLUICECK"
//! version   u32      FORMAT_VERSION
//! length    u64      payload bytes
//! payload   length bytes: the Checkpoint, MessagePack (rmp-serde)
//! checksum  u64      xxh3-64 of the payload
//! ```
//!
//! A checkpoint file holds everything (graph, sources' positions, operator
//! state) and is written every *checkpoint interval*; in between, each
//! completed batch appends a [`BatchRecord`] (its time and what each source
//! took) to the *batch log* `batches-<ms of the checkpoint it follows>`, a
//! [`crate::framelog`] synced per batch. Recovery restores the newest valid
//! checkpoint and re-runs the batches the logs record after it, each with
//! exactly the input it had, so the state comes out the same and outputs
//! keyed by batch time are rewritten identically.
//!
//! Files are written to a hidden temporary name, fsynced, renamed, and the
//! directory fsynced, so a crash leaves either the old set or the new file
//! complete; only the newest [`KEEP`] are kept, with the batch logs that
//! follow them. [`CheckpointStore::latest`]
//! tries the files newest first: a damaged, truncated or foreign one is
//! skipped with a warning naming the file and what is wrong, and when files
//! exist but none is valid the result is an error, never an empty start.

mod batch_log;
mod codec;

pub use batch_log::BatchLog;
pub use codec::{StateReader, StateWriter};

use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

const MAGIC: &[u8; 8] = b"SLUICECK";
/// Version of the checkpoint file format; files of another version are refused.
pub const FORMAT_VERSION: u32 = 1;
/// How many checkpoints are kept.
pub const KEEP: usize = 10;
const PREFIX: &str = "checkpoint-";

/// The version of a plugin a checkpoint was taken with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PluginVersion {
    /// The plugin's own version (`describe().version`).
    pub version: String,
    /// Its functions and their kinds, `name:kind`, as the job used them.
    pub functions: Vec<String>,
}

/// What one checkpoint holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// Fingerprint of the job graph (streams, operators, functions,
    /// durations); a checkpoint of another graph is refused.
    pub graph: String,
    /// Time of the last completed batch (ms since the epoch).
    pub batch_time: i64,
    /// Index of that batch, from 0.
    pub batch_index: u64,
    /// Time of the job's first batch.
    pub first_batch_time: i64,
    /// The plugins in use, by job name.
    pub plugins: BTreeMap<String, PluginVersion>,
    /// Per source, in declaration order, its opaque position.
    pub sources: Vec<Vec<u8>>,
    /// Per stateful stream (by graph position), its opaque state.
    pub state: BTreeMap<u64, Vec<u8>>,
}

/// One completed batch, as the batch log records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchRecord {
    /// The batch's time (ms since the epoch).
    pub batch_time: i64,
    /// Its index, from 0.
    pub batch_index: u64,
    /// Per source, what it took ([`crate::receiver`]'s `batch_record`).
    pub sources: Vec<Vec<u8>>,
}

/// A checkpoint file that could not be used, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    /// The file.
    pub path: PathBuf,
    /// What is wrong with it.
    pub reason: String,
}

/// A directory of checkpoints.
#[derive(Debug, Clone)]
pub struct CheckpointStore {
    dir: PathBuf,
}

impl CheckpointStore {
    /// Opens (creating if needed) the checkpoint directory `dir`.
    pub fn open(dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref().to_path_buf();
        std::fs::create_dir_all(&dir).map_err(|e| {
            Error::io(
                format!("creating the checkpoint directory {}", dir.display()),
                e,
            )
        })?;
        Ok(CheckpointStore { dir })
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn path_of(&self, batch_time: i64) -> PathBuf {
        self.dir.join(format!("{PREFIX}{batch_time}"))
    }

    /// Writes `cp` atomically as `checkpoint-<batch ms>` and removes all but
    /// the newest [`KEEP`]. On error nothing older is touched.
    pub fn write(&self, cp: &Checkpoint) -> Result<PathBuf> {
        let path = self.path_of(cp.batch_time);
        let payload = rmp_serde::to_vec(cp)
            .map_err(|e| Error::Internal(format!("encoding a checkpoint: {e}")))?;
        let mut bytes = Vec::with_capacity(payload.len() + 28);
        bytes.extend_from_slice(MAGIC);
        bytes.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        bytes.extend_from_slice(&(payload.len() as u64).to_le_bytes());
        bytes.extend_from_slice(&payload);
        bytes.extend_from_slice(&xxhash_rust::xxh3::xxh3_64(&payload).to_le_bytes());
        crate::fsutil::write_atomically(&path, &bytes)
            .map_err(|e| Error::io(format!("writing checkpoint {}", path.display()), e))?;
        self.prune()?;
        Ok(path)
    }

    /// Removes every checkpoint, batch log and write-ahead log (`--fresh`).
    pub fn clear(&self) -> Result<()> {
        for path in self
            .list()?
            .into_iter()
            .chain(self.batch_logs()?)
            .map(|(_, p)| p)
        {
            std::fs::remove_file(&path)
                .map_err(|e| Error::io(format!("removing {}", path.display()), e))?;
        }
        let wal = self.wal_dir();
        if wal.exists() {
            std::fs::remove_dir_all(&wal)
                .map_err(|e| Error::io(format!("removing {}", wal.display()), e))?;
        }
        Ok(())
    }

    /// Where sources that cannot replay keep their write-ahead logs.
    pub fn wal_dir(&self) -> PathBuf {
        self.dir.join("wal")
    }

    /// Checkpoint files by batch time, newest first.
    pub fn list(&self) -> Result<Vec<(i64, PathBuf)>> {
        let entries = std::fs::read_dir(&self.dir).map_err(|e| {
            Error::io(
                format!("listing the checkpoint directory {}", self.dir.display()),
                e,
            )
        })?;
        let mut files = Vec::new();
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(ms) = name
                .to_str()
                .and_then(|n| n.strip_prefix(PREFIX))
                .and_then(|t| t.parse::<i64>().ok())
            else {
                continue;
            };
            files.push((ms, entry.path()));
        }
        files.sort_by_key(|f| std::cmp::Reverse(f.0));
        Ok(files)
    }

    /// Removes all but the newest [`KEEP`] checkpoints and the batch logs
    /// that follow removed ones; returns the oldest checkpoint kept.
    fn prune(&self) -> Result<Option<i64>> {
        let files = self.list()?;
        for (_, path) in files.iter().skip(KEEP) {
            std::fs::remove_file(path)
                .map_err(|e| Error::io(format!("removing old checkpoint {}", path.display()), e))?;
        }
        let oldest = files
            .get(files.len().min(KEEP).wrapping_sub(1))
            .map(|f| f.0);
        if let Some(oldest) = oldest {
            for (t, path) in self.batch_logs()? {
                if t < oldest {
                    std::fs::remove_file(&path)
                        .map_err(|e| Error::io(format!("removing {}", path.display()), e))?;
                }
            }
        }
        Ok(oldest)
    }

    /// The time of the oldest checkpoint kept (what write-ahead logs must cover).
    pub fn oldest(&self) -> Result<Option<i64>> {
        Ok(self.list()?.last().map(|f| f.0))
    }

    /// The newest valid checkpoint and the newer files skipped on the way.
    /// `Ok(None)` when the directory has no checkpoint at all; an error when
    /// it has some but none is valid.
    pub fn latest(&self) -> Result<Option<(Checkpoint, Vec<Skipped>)>> {
        let files = self.list()?;
        if files.is_empty() {
            return Ok(None);
        }
        let mut skipped = Vec::new();
        for (_, path) in files {
            match read(&path) {
                Ok(cp) => return Ok(Some((cp, skipped))),
                Err(reason) => skipped.push(Skipped { path, reason }),
            }
        }
        let reasons: Vec<String> = skipped
            .iter()
            .map(|s| format!("{}: {}", s.path.display(), s.reason))
            .collect();
        Err(Error::Plan(format!(
            "no valid checkpoint in {} (start over with --fresh): {}",
            self.dir.display(),
            reasons.join("; ")
        )))
    }
}

/// Reads and checks one checkpoint file; the error says what is wrong.
pub fn read(path: &Path) -> std::result::Result<Checkpoint, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read: {e}"))?;
    if bytes.len() < 20 || &bytes[..8] != MAGIC {
        return Err("not a Sluice checkpoint (bad magic)".to_string());
    }
    let version = u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]);
    if version != FORMAT_VERSION {
        return Err(format!(
            "checkpoint format version {version}, this build reads version {FORMAT_VERSION}"
        ));
    }
    let mut len = [0u8; 8];
    len.copy_from_slice(&bytes[12..20]);
    let len = u64::from_le_bytes(len) as usize;
    let Some(end) = 20usize.checked_add(len) else {
        return Err("bad payload length".to_string());
    };
    if bytes.len() != end + 8 {
        return Err(format!(
            "truncated or padded: {} bytes, the header says {}",
            bytes.len(),
            end + 8
        ));
    }
    let payload = &bytes[20..end];
    let mut sum = [0u8; 8];
    sum.copy_from_slice(&bytes[end..]);
    if u64::from_le_bytes(sum) != xxhash_rust::xxh3::xxh3_64(payload) {
        return Err("checksum mismatch (the file is damaged)".to_string());
    }
    rmp_serde::from_slice(payload).map_err(|e| format!("undecodable payload: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cp(t: i64) -> Checkpoint {
        Checkpoint {
            graph: "g1".to_string(),
            batch_time: t,
            batch_index: (t / 1000) as u64,
            first_batch_time: 1000,
            plugins: BTreeMap::from([(
                "wordcount".to_string(),
                PluginVersion {
                    version: "0.1.0".to_string(),
                    functions: vec!["add:reduce".to_string()],
                },
            )]),
            sources: vec![vec![1, 2, 3]],
            state: BTreeMap::from([(4, vec![9; 100])]),
        }
    }

    #[test]
    fn round_trips_and_keeps_the_newest_ten() {
        let dir = tempfile::tempdir().unwrap();
        let store = CheckpointStore::open(dir.path().join("ck")).unwrap();
        assert!(store.latest().unwrap().is_none(), "an empty directory");
        for t in 1..=12 {
            store.write(&cp(t * 1000)).unwrap();
        }
        let files = store.list().unwrap();
        assert_eq!(files.len(), KEEP);
        assert_eq!(files[0].0, 12_000);
        assert_eq!(files[KEEP - 1].0, 3_000);
        let (latest, skipped) = store.latest().unwrap().unwrap();
        assert_eq!(latest, cp(12_000));
        assert!(skipped.is_empty());
        let leftovers = std::fs::read_dir(store.dir())
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .ends_with(".tmp")
            })
            .count();
        assert_eq!(leftovers, 0);
    }

    #[test]
    fn damaged_newest_checkpoints_fall_back_to_an_older_one() {
        let dir = tempfile::tempdir().unwrap();
        let store = CheckpointStore::open(dir.path()).unwrap();
        for t in [1000, 2000, 3000, 4000] {
            store.write(&cp(t)).unwrap();
        }
        // 4000 truncated, 3000 with a flipped byte, 2000 from another format.
        let p4 = dir.path().join("checkpoint-4000");
        let b = std::fs::read(&p4).unwrap();
        std::fs::write(&p4, &b[..b.len() - 5]).unwrap();
        let p3 = dir.path().join("checkpoint-3000");
        let mut b = std::fs::read(&p3).unwrap();
        b[30] ^= 0xff;
        std::fs::write(&p3, &b).unwrap();
        let p2 = dir.path().join("checkpoint-2000");
        let mut b = std::fs::read(&p2).unwrap();
        b[8] = 9;
        std::fs::write(&p2, &b).unwrap();
        let (latest, skipped) = store.latest().unwrap().unwrap();
        assert_eq!(latest.batch_time, 1000);
        let reasons: Vec<&str> = skipped.iter().map(|s| s.reason.as_str()).collect();
        assert!(reasons[0].contains("truncated"), "{reasons:?}");
        assert!(reasons[1].contains("checksum"), "{reasons:?}");
        assert!(reasons[2].contains("format version 9"), "{reasons:?}");
        // With the last one foreign too, there is no valid checkpoint: an error.
        std::fs::write(dir.path().join("checkpoint-1000"), b"hello").unwrap();
        let e = store.latest().unwrap_err().to_string();
        assert!(
            e.contains("no valid checkpoint") && e.contains("bad magic") && e.contains("--fresh"),
            "{e}"
        );
    }

    #[test]
    fn a_failed_write_leaves_the_previous_checkpoint_valid() {
        let dir = tempfile::tempdir().unwrap();
        let store = CheckpointStore::open(dir.path()).unwrap();
        store.write(&cp(1000)).unwrap();
        // The next file's name is taken by a directory: the rename fails.
        std::fs::create_dir(dir.path().join("checkpoint-2000")).unwrap();
        std::fs::write(dir.path().join("checkpoint-2000").join("x"), "x").unwrap();
        let e = store.write(&cp(2000)).unwrap_err().to_string();
        assert!(e.contains("checkpoint-2000"), "{e}");
        let files: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert!(!files.iter().any(|f| f.ends_with(".tmp")), "{files:?}");
        assert_eq!(read(&dir.path().join("checkpoint-1000")).unwrap(), cp(1000));
    }
}
