//! The batch logs: after each checkpoint, one record per completed batch
//! (its time and what each source took), so that recovery can re-run the
//! batches since the checkpoint with exactly their input.

use super::{BatchRecord, Checkpoints};
use crate::error::{Error, Result};
use std::collections::BTreeMap;
use std::path::PathBuf;

const BATCH: u8 = 1;
/// The first frame of the log a job starts with, before any checkpoint:
/// the time of its first batch (8 bytes, little-endian), so that a crash
/// before the first checkpoint resumes at the same batch times.
const START: u8 = 2;
const LOG_PREFIX: &str = "batches-";
/// Zeros a batch log keeps written ahead of its records (about a thousand
/// records), so that syncing a record commits no file metadata and does
/// not wait for other files' writes (see [`crate::framelog`]).
const LOG_CHUNK: u64 = 64 << 10;

/// The batch log after one checkpoint, open for appending.
///
/// A job appends each batch's record unsynced
/// ([`BatchLog::append_unsynced`]) and [settles](BatchLog::settle) it once
/// the batch is reported, before the next batch runs: so a batch's record
/// is durable before the next batch commits anything, as with a synced
/// append, but the flush — which on a shared disk may wait behind other
/// tenants' writes — is spent in the wait for the next batch rather than
/// in the batch's processing time. (A flush longer than that wait delays
/// the next batch, which its scheduling delay shows.)
#[derive(Debug)]
pub struct BatchLog {
    log: crate::framelog::FrameLog,
    /// Records appended since the last sync.
    unsynced: bool,
}

impl BatchLog {
    fn new(log: crate::framelog::FrameLog) -> BatchLog {
        BatchLog {
            log: log.preallocate(LOG_CHUNK),
            unsynced: false,
        }
    }

    fn error(&self, e: std::io::Error) -> Error {
        Error::io(
            format!("writing the batch log {}", self.log.path().display()),
            e,
        )
    }

    fn encode(r: &BatchRecord) -> Result<Vec<u8>> {
        rmp_serde::to_vec(r).map_err(|e| Error::Internal(format!("encoding a batch record: {e}")))
    }

    /// Appends `r` durably: written and synced. On a write error nothing
    /// is appended; on a sync error the record is written, and the next
    /// [`Self::settle`] syncs it again.
    pub fn append(&mut self, r: &BatchRecord) -> Result<()> {
        self.append_unsynced(r)?;
        self.settle()
    }

    /// Appends `r` without syncing it: it is durable once [`Self::settle`]
    /// returns.
    pub fn append_unsynced(&mut self, r: &BatchRecord) -> Result<()> {
        let payload = Self::encode(r)?;
        self.log
            .append(BATCH, &payload)
            .map_err(|e| self.error(e))?;
        self.unsynced = true;
        Ok(())
    }

    /// Makes every appended record durable (`fdatasync`); after an error,
    /// the next call syncs again.
    pub fn settle(&mut self) -> Result<()> {
        if self.unsynced {
            self.log.sync().map_err(|e| self.error(e))?;
            self.unsynced = false;
        }
        Ok(())
    }
}

impl Drop for BatchLog {
    fn drop(&mut self) {
        if let Err(e) = self.settle() {
            tracing::error!("{e}");
        }
    }
}

impl Checkpoints {
    fn batch_log_path(&self, after: i64) -> PathBuf {
        self.dir.join(format!("{LOG_PREFIX}{after}"))
    }

    /// Batch logs by the checkpoint time they follow, oldest first.
    pub fn batch_logs(&self) -> Result<Vec<(i64, PathBuf)>> {
        let mut logs: Vec<(i64, PathBuf)> = std::fs::read_dir(&self.dir)
            .map_err(|e| Error::io(format!("listing {}", self.dir.display()), e))?
            .flatten()
            .filter_map(|e| {
                let ms = e
                    .file_name()
                    .to_str()?
                    .strip_prefix(LOG_PREFIX)?
                    .parse::<i64>()
                    .ok()?;
                Some((ms, e.path()))
            })
            .collect();
        logs.sort();
        Ok(logs)
    }

    /// Starts a job with no checkpoint yet: the batch log that precedes
    /// its first checkpoint, named as if after a checkpoint one interval
    /// before the first batch (`before_first`), recording the first batch's
    /// time and holding `records` (batches logged before a crash, to be
    /// re-run). See [`Checkpoints::job_start`].
    pub fn begin_batch_log(
        &self,
        before_first: i64,
        first: i64,
        records: &[BatchRecord],
    ) -> Result<BatchLog> {
        self.rewrite_batch_log(before_first, Some(first), records)
    }

    /// The first batch time of a job that has started and may have run
    /// batches but has no checkpoint yet (the log
    /// [`Checkpoints::begin_batch_log`] wrote), if there is one.
    pub fn job_start(&self) -> Result<Option<(i64, i64)>> {
        for (after, path) in self.batch_logs()? {
            let Ok(contents) = crate::framelog::read(&path, 0) else {
                continue;
            };
            let start = (contents.frames.iter())
                .find(|f| f.kind == START)
                .and_then(|f| f.payload.get(..8)?.try_into().ok())
                .map(i64::from_le_bytes);
            if let Some(first) = start {
                return Ok(Some((after, first)));
            }
        }
        Ok(None)
    }

    /// The batches recorded after the checkpoint at `after` (from the log
    /// current at `after` and any later one), in time order, each once; and what was wrong
    /// with the logs, if anything (reading stops at damage, so the batches
    /// after it are re-run from their sources as new).
    pub fn batches_after(&self, after: i64) -> Result<(Vec<BatchRecord>, Vec<String>)> {
        let mut records = BTreeMap::new();
        let mut problems = Vec::new();
        // The log that was current at `after` may hold later records too
        // (batches run while that checkpoint was being written).
        let logs = self.batch_logs()?;
        let from = (logs.iter().map(|(t, _)| *t))
            .filter(|t| *t <= after)
            .max()
            .unwrap_or(i64::MIN);
        for (_, path) in logs.into_iter().filter(|(t, _)| *t >= from) {
            let contents = match crate::framelog::read(&path, 0) {
                Ok(c) => c,
                Err(e) => {
                    problems.push(format!("{}: {e}", path.display()));
                    continue;
                }
            };
            for frame in contents.frames.iter().filter(|f| f.kind == BATCH) {
                match rmp_serde::from_slice::<BatchRecord>(&frame.payload) {
                    Ok(r) if r.batch_time > after => {
                        records.insert(r.batch_time, r);
                    }
                    Ok(_) => {}
                    Err(e) => problems.push(format!(
                        "{}: an undecodable batch record: {e}",
                        path.display()
                    )),
                }
            }
            problems.extend(contents.damage);
        }
        Ok((records.into_values().collect(), problems))
    }

    /// Rewrites the batch log after `after` to hold exactly `records` (the
    /// batches being re-run on recovery) and removes later logs, so that
    /// appending goes on from one clean log.
    pub fn restart_batch_log(&self, after: i64, records: &[BatchRecord]) -> Result<BatchLog> {
        self.rewrite_batch_log(after, None, records)
    }

    /// [`Checkpoints::restart_batch_log`], led by a [`START`] frame when
    /// `start` is given.
    fn rewrite_batch_log(
        &self,
        after: i64,
        start: Option<i64>,
        records: &[BatchRecord],
    ) -> Result<BatchLog> {
        for (t, path) in self.batch_logs()? {
            if t > after {
                std::fs::remove_file(&path)
                    .map_err(|e| Error::io(format!("removing {}", path.display()), e))?;
            }
        }
        let path = self.batch_log_path(after);
        let tmp = self.dir.join(format!(".{LOG_PREFIX}{after}.tmp"));
        let what = || format!("rewriting the batch log {}", path.display());
        let mut log = crate::framelog::FrameLog::create(&tmp).map_err(|e| Error::io(what(), e))?;
        if let Some(first) = start {
            log.append(START, &first.to_le_bytes())
                .map_err(|e| Error::io(what(), e))?;
        }
        for r in records {
            let payload = BatchLog::encode(r)?;
            log.append(BATCH, &payload)
                .map_err(|e| Error::io(what(), e))?;
        }
        log.sync().map_err(|e| Error::io(what(), e))?;
        drop(log);
        std::fs::rename(&tmp, &path).map_err(|e| Error::io(what(), e))?;
        let (log, _) =
            crate::framelog::FrameLog::open_append(&path).map_err(|e| Error::io(what(), e))?;
        Ok(BatchLog::new(log))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(t: i64) -> BatchRecord {
        BatchRecord {
            batch_time: t,
            batch_index: (t / 1000) as u64,
            sources: vec![t.to_le_bytes().to_vec()],
        }
    }

    #[test]
    fn batch_records_unsynced_or_not_are_read_back_and_a_restart_keeps_only_those_given() {
        let dir = tempfile::tempdir().unwrap();
        let store = Checkpoints::open(dir.path()).unwrap();
        let mut log = store.restart_batch_log(1000, &[]).unwrap();
        log.append(&record(2000)).unwrap();
        for t in 3..=5 {
            log.append_unsynced(&record(t * 1000)).unwrap();
            log.settle().unwrap();
        }
        // Written at once, so visible (and kept across kill -9) before it
        // is settled; dropping the log settles it.
        log.append_unsynced(&record(6000)).unwrap();
        let (records, problems) = store.batches_after(1000).unwrap();
        assert_eq!(records.len(), 5, "{records:?}");
        assert!(problems.is_empty(), "{problems:?}");
        drop(log);
        // The log is preallocated: its file is longer than its records.
        let path = dir.path().join("batches-1000");
        let size = std::fs::metadata(&path).unwrap().len();
        let used = crate::framelog::read(&path, 0).unwrap().valid_len;
        assert!(size > used && size >= LOG_CHUNK, "{size} vs {used}");
        let (records, _) = store.batches_after(1000).unwrap();
        let times: Vec<i64> = records.iter().map(|r| r.batch_time).collect();
        assert_eq!(times, [2000, 3000, 4000, 5000, 6000]);
        // Recovery keeps the records it will re-run, and appending goes on.
        let mut log = store.restart_batch_log(1000, &records[2..3]).unwrap();
        log.append_unsynced(&record(9000)).unwrap();
        drop(log);
        let (records, problems) = store.batches_after(1000).unwrap();
        let times: Vec<i64> = records.iter().map(|r| r.batch_time).collect();
        assert_eq!(times, [4000, 9000]);
        assert!(problems.is_empty(), "{problems:?}");
    }

    #[test]
    fn records_logged_while_a_checkpoint_was_written_are_found_after_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = Checkpoints::open(dir.path()).unwrap();
        // The log after the checkpoint at 1000 goes on while the one at
        // 3000 is written: it holds batches 2000 to 5000.
        let mut log = store.restart_batch_log(1000, &[]).unwrap();
        for t in 2..=5 {
            log.append(&record(t * 1000)).unwrap();
        }
        drop(log);
        let times = |after| {
            let (records, problems) = store.batches_after(after).unwrap();
            assert!(problems.is_empty(), "{problems:?}");
            records.iter().map(|r| r.batch_time).collect::<Vec<_>>()
        };
        // Recovering from the checkpoint at 3000 before its log began.
        assert_eq!(times(3000), [4000, 5000]);
        // Once it began, with those records, later ones go there.
        let (after, _) = store.batches_after(3000).unwrap();
        let mut log = store.restart_batch_log(3000, &after).unwrap();
        log.append(&record(6000)).unwrap();
        drop(log);
        assert_eq!(times(3000), [4000, 5000, 6000]);
        assert_eq!(times(1000), [2000, 3000, 4000, 5000, 6000]);
    }
}
