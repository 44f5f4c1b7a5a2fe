//! Checkpoints: one object per checkpoint in a [`CheckpointStore`],
//! written once, checked when read, the newest valid one found on
//! recovery.
//!
//! A checkpoint object `checkpoint-<batch ms>` (all integers little-endian):
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
//! Checkpoint objects go through the [`CheckpointStore`] trait
//! (put-if-absent, get, list, delete: the local filesystem now, object
//! storage next), and are never replaced: a crash leaves either the old
//! set or the new object complete, and a second writer of the same
//! checkpoint is refused. Only the newest [`KEEP`] are kept, with the batch
//! logs that follow them. [`Checkpoints::latest`] tries them newest first:
//! a damaged, truncated or foreign one is skipped with a warning naming the
//! object and what is wrong ([`Checkpoints::set_aside`] then moves it to
//! `NAME.damaged`, so the batch it held can be checkpointed again), and
//! when checkpoints exist but none is valid the result is an error, never
//! an empty start. Batch logs and sources' write-ahead logs are appended
//! files, kept in the local directory beside the store.

mod batch_log;
mod codec;
pub(crate) mod shards;
mod store;

pub use batch_log::BatchLog;
pub use codec::{StateReader, StateWriter};
pub use shards::Shards;
pub(crate) use shards::shard_name;
pub use store::{CheckpointStore, LocalStore};

use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub(crate) const MAGIC: &[u8; 8] = b"SLUICECK";
/// Version of the checkpoint file format; files of another version are refused.
pub const FORMAT_VERSION: u32 = 2;
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
    /// Per stateful stream (by graph position), its opaque state: whole,
    /// or for a stream in `shards`, what of it is not per partition.
    pub state: BTreeMap<u64, Vec<u8>>,
    /// Per stream whose state is sharded by partition, the objects holding
    /// its shards in partition order (`state-<batch ms>-<stream>-<p>`),
    /// each written by the task that owns the partition.
    pub shards: BTreeMap<u64, Vec<String>>,
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

/// A checkpoint that could not be used, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    /// Its name in the store.
    pub name: String,
    /// Where it is (a file, or an object's URL), for messages.
    pub location: String,
    /// What is wrong with it.
    pub reason: String,
}

/// A run's hold on its checkpoint directory ([`Checkpoints::lock`]).
#[derive(Debug)]
pub struct DirLock {
    _file: std::fs::File,
}

/// A job's checkpoints: the objects in its [`CheckpointStore`], and the
/// local directory of its batch logs and write-ahead logs.
#[derive(Debug, Clone)]
pub struct Checkpoints {
    store: Arc<dyn CheckpointStore>,
    dir: PathBuf,
}

fn name_of(batch_time: i64) -> String {
    format!("{PREFIX}{batch_time}")
}

impl Checkpoints {
    /// Opens (creating if needed) the checkpoint directory `dir`, its
    /// checkpoints kept in a [`LocalStore`] there.
    pub fn open(dir: impl AsRef<Path>) -> Result<Self> {
        let store = LocalStore::open(dir)?;
        Ok(Checkpoints {
            dir: store.dir().to_path_buf(),
            store: Arc::new(store),
        })
    }

    /// The checkpoints of `store`, with batch logs and write-ahead logs in
    /// the local directory `dir` (created if needed).
    pub fn with_store(dir: impl AsRef<Path>, store: Arc<dyn CheckpointStore>) -> Result<Self> {
        let dir = dir.as_ref().to_path_buf();
        std::fs::create_dir_all(&dir).map_err(|e| {
            Error::io(
                format!("creating the checkpoint log directory {}", dir.display()),
                e,
            )
        })?;
        Ok(Checkpoints { store, dir })
    }

    /// The local directory (batch logs, write-ahead logs).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Takes the directory for one run: an exclusive lock on its `.lock`
    /// file, held until the [`DirLock`] is dropped (or the process dies:
    /// the kernel releases it, so a job killed with `kill -9` restarts at
    /// once). A second run on the directory, in this process or another,
    /// is refused naming the holder, instead of both writing checkpoints.
    pub fn lock(&self) -> Result<DirLock> {
        let path = self.dir.join(".lock");
        let io = |what: &str, e| Error::io(format!("{what} {}", path.display()), e);
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|e| io("opening", e))?;
        match file.try_lock() {
            Ok(()) => {
                use std::io::Write;
                file.set_len(0).map_err(|e| io("writing", e))?;
                writeln!(file, "{}", std::process::id()).map_err(|e| io("writing", e))?;
                Ok(DirLock { _file: file })
            }
            Err(std::fs::TryLockError::WouldBlock) => {
                let holder = std::fs::read_to_string(&path).unwrap_or_default();
                Err(Error::Plan(format!(
                    "the checkpoint directory {} is in use by another run (process {}): two runs on one checkpoint directory would write over each other's checkpoints; stop the other first",
                    self.dir.display(),
                    holder.trim()
                )))
            }
            Err(std::fs::TryLockError::Error(e)) => Err(io("locking", e)),
        }
    }

    /// Where the checkpoint of `batch_time` is, for messages.
    pub fn locate(&self, batch_time: i64) -> String {
        self.store.locate(&name_of(batch_time))
    }

    /// Writes `cp` as `checkpoint-<batch ms>` and removes all but the
    /// newest [`KEEP`]. On error nothing older is touched. A checkpoint of
    /// that batch already there with the same content is no error (the
    /// batch was re-run); with other content it is: another process is
    /// writing this job's checkpoints.
    pub fn write(&self, cp: &Checkpoint) -> Result<PathBuf> {
        self.write_with_shards(cp, &[])
    }

    /// [`Checkpoints::write`] of a checkpoint whose `shards` name
    /// `shards`: the shard objects first, then the checkpoint that points
    /// at them.
    pub fn write_with_shards(
        &self,
        cp: &Checkpoint,
        shards: &[(String, Vec<u8>)],
    ) -> Result<PathBuf> {
        self.write_pruned(cp, shards)?;
        Ok(self.dir.join(name_of(cp.batch_time)))
    }

    /// [`Checkpoints::write_with_shards`], returning the time of the
    /// oldest checkpoint kept after pruning (what write-ahead logs must
    /// still cover).
    pub fn write_pruned(
        &self,
        cp: &Checkpoint,
        shards: &[(String, Vec<u8>)],
    ) -> Result<Option<i64>> {
        let name = name_of(cp.batch_time);
        self.put_shards(cp.batch_time, shards)?;
        let bytes = encode(cp)?;
        if !self.store.put_if_absent(&name, &bytes)? {
            let same = self.store.get(&name)?.is_some_and(|b| b == bytes);
            if !same {
                return Err(Error::Plan(format!(
                    "checkpoint {} exists with other content: another process may be writing this job's checkpoints (stop it, or start over with --fresh)",
                    self.store.locate(&name)
                )));
            }
        }
        self.prune()
    }

    /// Removes every checkpoint, batch log and write-ahead log (`--fresh`).
    pub fn clear(&self) -> Result<()> {
        for name in self.store.list(PREFIX)? {
            self.store.delete(&name)?;
        }
        for name in self.store.list(shards::PREFIX)? {
            self.store.delete(&name)?;
        }
        for (_, path) in self.batch_logs()? {
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

    /// Checkpoints by batch time, newest first.
    pub fn list(&self) -> Result<Vec<(i64, PathBuf)>> {
        let mut files: Vec<(i64, PathBuf)> = (self.store.list(PREFIX)?.into_iter())
            .filter_map(|n| {
                let ms = n.strip_prefix(PREFIX)?.parse::<i64>().ok()?;
                Some((ms, self.dir.join(n)))
            })
            .collect();
        files.sort_by_key(|f| std::cmp::Reverse(f.0));
        Ok(files)
    }

    /// Removes all but the newest [`KEEP`] checkpoints and the batch logs
    /// that follow removed ones; returns the oldest checkpoint kept.
    fn prune(&self) -> Result<Option<i64>> {
        let files = self.list()?;
        for (ms, _) in files.iter().skip(KEEP) {
            self.store.delete(&name_of(*ms))?;
            self.delete_shards(*ms)?;
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

    /// The newest valid checkpoint and the newer ones skipped on the way.
    /// `Ok(None)` when the store has no checkpoint at all; an error when
    /// it has some but none is valid.
    pub fn latest(&self) -> Result<Option<(Checkpoint, Vec<Skipped>)>> {
        Ok(self
            .latest_with_shards()?
            .map(|(cp, _, skipped)| (cp, skipped)))
    }

    /// [`Checkpoints::latest`] with the state shards it names (read once,
    /// to check them and to restore from them).
    pub fn latest_with_shards(&self) -> Result<Option<(Checkpoint, Shards, Vec<Skipped>)>> {
        let files = self.list()?;
        if files.is_empty() {
            return Ok(None);
        }
        let mut skipped = Vec::new();
        for (ms, _) in files {
            let name = name_of(ms);
            let read = match self.store.get(&name) {
                Ok(Some(bytes)) => decode(&bytes).and_then(|cp| {
                    // A checkpoint is valid only with every shard it names.
                    self.read_shards(&cp).map(|shards| (cp, shards))
                }),
                Ok(None) => Err("removed while being read".to_string()),
                Err(e) => Err(format!("cannot read: {e}")),
            };
            match read {
                Ok((cp, shards)) => return Ok(Some((cp, shards, skipped))),
                Err(reason) => skipped.push(Skipped {
                    location: self.store.locate(&name),
                    name,
                    reason,
                }),
            }
        }
        let reasons: Vec<String> = skipped
            .iter()
            .map(|s| format!("{}: {}", s.location, s.reason))
            .collect();
        Err(Error::Plan(format!(
            "no valid checkpoint in {} (start over with --fresh): {}",
            self.store.locate(""),
            reasons.join("; ")
        )))
    }

    /// Moves checkpoints [`Checkpoints::latest`] skipped to `NAME.damaged`
    /// (kept for inspection, no longer read), so that the batches they
    /// held can be checkpointed again when they are re-run.
    pub fn set_aside(&self, skipped: &[Skipped]) -> Result<()> {
        for s in skipped {
            let name = s.name.as_str();
            if let Ok(Some(bytes)) = self.store.get(name) {
                self.store
                    .put_if_absent(&format!("{name}.damaged"), &bytes)?;
            }
            self.store.delete(name)?;
            if let Some(ms) = name.strip_prefix(PREFIX).and_then(|t| t.parse().ok()) {
                self.delete_shards(ms)?;
            }
        }
        Ok(())
    }
}

/// A checkpoint's bytes: header, payload, checksum.
fn encode(cp: &Checkpoint) -> Result<Vec<u8>> {
    let payload = rmp_serde::to_vec(cp)
        .map_err(|e| Error::Internal(format!("encoding a checkpoint: {e}")))?;
    Ok(shards::frame(MAGIC, &payload))
}

/// Reads and checks one checkpoint file; the error says what is wrong.
pub fn read(path: &Path) -> std::result::Result<Checkpoint, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read: {e}"))?;
    decode(&bytes)
}

/// Checks and decodes a checkpoint's bytes; the error says what is wrong.
pub(crate) fn decode(bytes: &[u8]) -> std::result::Result<Checkpoint, String> {
    let payload = shards::unframe(MAGIC, "checkpoint", bytes)?;
    rmp_serde::from_slice(payload).map_err(|e| format!("undecodable payload: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_run_at_a_time_holds_a_checkpoint_directory() {
        let dir = tempfile::tempdir().unwrap();
        let store = Checkpoints::open(dir.path()).unwrap();
        let held = store.lock().unwrap();
        let e = store.lock().unwrap_err().to_string();
        assert!(
            e.contains("is in use by another run")
                && e.contains(&format!("(process {})", std::process::id())),
            "{e}"
        );
        drop(held);
        store.lock().expect("free again");
        // The lock file is no checkpoint, and --fresh leaves it.
        assert!(store.list().unwrap().is_empty());
        store.clear().unwrap();
    }

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
            shards: BTreeMap::new(),
        }
    }

    #[test]
    fn round_trips_and_keeps_the_newest_ten() {
        let dir = tempfile::tempdir().unwrap();
        let store = Checkpoints::open(dir.path().join("ck")).unwrap();
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
        let store = Checkpoints::open(dir.path()).unwrap();
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
    fn a_checkpoint_is_written_once_and_a_damaged_one_is_set_aside() {
        let dir = tempfile::tempdir().unwrap();
        let store = Checkpoints::open(dir.path()).unwrap();
        store.write(&cp(1000)).unwrap();
        // The same checkpoint again (a re-run batch): no error.
        store.write(&cp(1000)).unwrap();
        // Another one of the same batch: a second writer, refused.
        let mut other = cp(1000);
        other.batch_index = 7;
        let e = store.write(&other).unwrap_err().to_string();
        assert!(
            e.contains("checkpoint-1000") && e.contains("another process"),
            "{e}"
        );
        assert_eq!(store.latest().unwrap().unwrap().0, cp(1000));
        // A damaged newer one is skipped, then set aside, so that its batch
        // can be checkpointed again.
        store.write(&cp(2000)).unwrap();
        let p2 = dir.path().join("checkpoint-2000");
        let b = std::fs::read(&p2).unwrap();
        std::fs::write(&p2, &b[..b.len() - 3]).unwrap();
        let (latest, skipped) = store.latest().unwrap().unwrap();
        assert_eq!((latest.batch_time, skipped.len()), (1000, 1));
        store.set_aside(&skipped).unwrap();
        assert!(dir.path().join("checkpoint-2000.damaged").exists());
        assert_eq!(store.list().unwrap().len(), 1, "set aside, not listed");
        store.write(&cp(2000)).unwrap();
        assert_eq!(store.latest().unwrap().unwrap(), (cp(2000), Vec::new()));
        store.clear().unwrap();
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn a_failed_write_leaves_the_previous_checkpoint_valid() {
        let dir = tempfile::tempdir().unwrap();
        let store = Checkpoints::open(dir.path()).unwrap();
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
