//! A direct-model source's own write-ahead record of what each batch
//! took (a NATS sequence range, Kafka offset ranges): synced here *before*
//! the batch runs, so that a batch whose outputs went out but whose record
//! in the job's batch log did not (a crash in between) takes exactly the
//! same records when it runs again — an output that de-duplicates by batch
//! (NATS message ids, Kafka transactions) then sees the same messages,
//! never different ones under the same ids.

use sluice_core::error::{Error, Result};
use sluice_core::framelog::{self, FrameLog};
use sluice_core::time::BatchTime;
use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};

const RANGE: u8 = 1;
/// Entries beyond the ones kept after which a truncation rewrites the file.
const REWRITE_AFTER: usize = 1024;

/// The ranges of the batches since the oldest checkpoint, by batch time.
pub(crate) struct RangeLog {
    path: PathBuf,
    log: FrameLog,
    ranges: BTreeMap<i64, Vec<u8>>,
    /// Frames in the file (kept or not).
    frames: usize,
}

fn encode(time: i64, record: &[u8]) -> Vec<u8> {
    let mut p = time.to_le_bytes().to_vec();
    p.extend_from_slice(record);
    p
}

impl RangeLog {
    /// Opens (or creates) the log in `dir`.
    pub(crate) fn open(dir: &Path) -> io::Result<RangeLog> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join("ranges.log");
        let (log, damage) = FrameLog::open_append(&path)?;
        if let Some(d) = damage {
            tracing::warn!("{d}: cut off (a batch it named had not run)");
        }
        let mut ranges = BTreeMap::new();
        let contents = framelog::read(&path, 0)?;
        for f in &contents.frames {
            if f.kind != RANGE || f.payload.len() < 8 {
                continue;
            }
            let time = i64::from_le_bytes(f.payload[..8].try_into().unwrap_or_default());
            ranges.insert(time, f.payload[8..].to_vec());
        }
        Ok(RangeLog {
            path,
            log,
            frames: contents.frames.len(),
            ranges,
        })
    }

    /// The record of what batch `time` took before, if it ran.
    pub(crate) fn get(&self, time: i64) -> Option<&[u8]> {
        self.ranges.get(&time).map(Vec::as_slice)
    }

    /// Records, durably, that batch `time` takes what `record` says.
    pub(crate) fn put(&mut self, time: i64, record: &[u8]) -> io::Result<()> {
        self.log.append(RANGE, &encode(time, record))?;
        self.log.sync()?;
        self.ranges.insert(time, record.to_vec());
        self.frames += 1;
        Ok(())
    }

    /// Forgets the batches before `oldest` (no recovery re-runs them),
    /// rewriting the file once it holds many such.
    pub(crate) fn truncate(&mut self, oldest: i64) -> io::Result<()> {
        self.ranges = self.ranges.split_off(&oldest);
        if self.frames < self.ranges.len() + REWRITE_AFTER {
            return Ok(());
        }
        let fresh = self.path.with_extension("log.new");
        let mut log = FrameLog::create(&fresh)?;
        for (t, r) in &self.ranges {
            log.append(RANGE, &encode(*t, r))?;
        }
        log.sync()?;
        std::fs::rename(&fresh, &self.path)?;
        if let Some(dir) = self.path.parent() {
            std::fs::File::open(dir)?.sync_all()?;
        }
        (self.log, _) = FrameLog::open_append(&self.path)?;
        self.frames = self.ranges.len();
        Ok(())
    }
}

/// A direct source's range log as the source holds it: attached when the
/// job keeps checkpoints, opened at the first batch (after a fresh start
/// cleared the directory).
#[derive(Default)]
pub(crate) struct BatchRanges {
    dir: Option<PathBuf>,
    log: Option<RangeLog>,
}

impl BatchRanges {
    /// The job checkpoints into `dir`'s parent: keep the log there.
    pub(crate) fn attach(&mut self, dir: &Path) {
        self.dir = Some(dir.to_path_buf());
    }

    /// Whether the job keeps checkpoints (and so this log).
    pub(crate) fn attached(&self) -> bool {
        self.dir.is_some()
    }

    /// What batch `time` took before a crash, if it ran.
    pub(crate) fn taken_before(&mut self, time: BatchTime) -> Result<Option<Vec<u8>>> {
        if let (Some(dir), None) = (&self.dir, &self.log) {
            let log = RangeLog::open(dir)
                .map_err(|e| Error::io(format!("opening {}", dir.display()), e))?;
            self.log = Some(log);
        }
        Ok(self
            .log
            .as_ref()
            .and_then(|l| l.get(time.millis()))
            .map(<[u8]>::to_vec))
    }

    /// Records, durably, what batch `time` of source `source` takes.
    pub(crate) fn record(&mut self, source: &str, time: BatchTime, record: &[u8]) -> Result<()> {
        match self.log.as_mut() {
            Some(log) => log
                .put(time.millis(), record)
                .map_err(|e| Error::io(format!("source `{source}`: recording batch {time}"), e)),
            None => Ok(()),
        }
    }

    /// Forgets the batches before `oldest`.
    pub(crate) fn truncate(&mut self, source: &str, oldest: BatchTime) {
        if let Some(log) = self.log.as_mut()
            && let Err(e) = log.truncate(oldest.millis())
        {
            tracing::warn!(source = %source, "truncating the batch ranges: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_survive_a_reopen_and_truncation() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = RangeLog::open(dir.path()).unwrap();
        for t in 1..=1100i64 {
            log.put(t * 100, &t.to_le_bytes()).unwrap();
        }
        log.truncate(1090 * 100).unwrap();
        assert_eq!(log.get(100), None);
        assert_eq!(log.get(1095 * 100), Some(&1095i64.to_le_bytes()[..]));
        drop(log);
        let log = RangeLog::open(dir.path()).unwrap();
        assert_eq!(log.frames, 11, "rewritten with the kept ones");
        assert_eq!(log.get(1100 * 100), Some(&1100i64.to_le_bytes()[..]));
    }
}
