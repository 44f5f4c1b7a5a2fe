//! The socket receiver's write-ahead log (on when the job checkpoints).
//!
//! A socket cannot replay, so what it receives is logged before it can
//! enter a batch: the receiver thread appends the complete lines of every
//! read as one frame (a `write` per read, so `kill -9` loses at most the
//! read in flight), and only then hands them to the block buffer. A
//! receiver whose records are not text lines (an MQTT source decoding
//! JSON) logs its elements, encoded, as frames of their own. Sealing
//! the batch at time T appends a *seal* frame naming T and syncs the log to
//! disk before the batch runs. The log is a directory of segments
//! `segment-<n>` ([`crate::framelog`] files); a new segment starts at the
//! first seal after each data checkpoint, and segments that no retained
//! checkpoint can need are deleted.
//!
//! The source's checkpoint position is the log offset just past the seal of
//! its last batch. On recovery the log is read from there: the lines before
//! each seal form the batch of that seal's time (re-run with exactly those
//! lines), and lines after the last seal — received, never batched — go into
//! the first batch after the replayed ones, ahead of anything newly
//! received. A torn or damaged frame ends the readable log with a warning.

use crate::framelog::{self, FrameLog};
use sluice_sdk::Column;
use std::collections::{BTreeMap, VecDeque};
use std::io;
use std::path::{Path, PathBuf};

const LINES: u8 = 1;
const SEAL: u8 = 2;
/// Elements, one MessagePack value each, back to back.
const VALUES: u8 = 3;
const PREFIX: &str = "segment-";

/// A place in the log: (segment number, byte offset).
pub(crate) type LogPosition = (u64, u64);

/// Encodes a position for a checkpoint.
pub(crate) fn encode_position(p: LogPosition) -> Vec<u8> {
    let mut b = p.0.to_le_bytes().to_vec();
    b.extend_from_slice(&p.1.to_le_bytes());
    b
}

/// Decodes [`encode_position`]'s bytes.
pub(crate) fn decode_position(b: &[u8]) -> Option<LogPosition> {
    let seq = u64::from_le_bytes(b.get(..8)?.try_into().ok()?);
    let off = u64::from_le_bytes(b.get(8..16)?.try_into().ok()?);
    (b.len() == 16).then_some((seq, off))
}

/// Lines read back from the log, as they were batched before a crash.
#[derive(Debug)]
pub(crate) struct Group {
    /// The batch they were sealed into, or `None`: received, never batched.
    pub(crate) time: Option<i64>,
    pub(crate) lines: Column,
    /// The position just past this group.
    pub(crate) end: LogPosition,
}

/// The log of one socket source.
#[derive(Debug)]
pub(crate) struct Wal {
    dir: PathBuf,
    log: FrameLog,
    seq: u64,
    /// Where each known seal ended: the position a checkpoint of that batch records.
    seals: BTreeMap<i64, LogPosition>,
    rotate: bool,
}

fn segment_path(dir: &Path, seq: u64) -> PathBuf {
    dir.join(format!("{PREFIX}{seq:012}"))
}

fn segments(dir: &Path) -> io::Result<Vec<u64>> {
    let mut seqs: Vec<u64> = std::fs::read_dir(dir)?
        .flatten()
        .filter_map(|e| {
            e.file_name()
                .to_str()
                .and_then(|n| n.strip_prefix(PREFIX))
                .and_then(|n| n.parse().ok())
        })
        .collect();
    seqs.sort_unstable();
    Ok(seqs)
}

/// Splits a `LINES` payload (`\n`-terminated lines) into `into`.
pub(crate) fn push_lines(payload: &[u8], into: &mut Column) -> io::Result<()> {
    let text = String::from_utf8_lossy(payload);
    for line in text.split_terminator('\n') {
        into.push_str(line)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
    }
    Ok(())
}

/// Splits a `VALUES` payload (MessagePack values back to back) into
/// `into`.
pub(crate) fn push_values(payload: &[u8], into: &mut Column) -> io::Result<()> {
    let bad = |e: String| io::Error::new(io::ErrorKind::InvalidData, e);
    let mut rest = payload;
    while !rest.is_empty() {
        let n = sluice_sdk::msgpack::value_len(rest).map_err(|e| bad(e.to_string()))?;
        into.push_encoded(&rest[..n])
            .map_err(|e| bad(e.to_string()))?;
        rest = &rest[n..];
    }
    Ok(())
}

impl Wal {
    /// Opens the log in `dir` (created if missing), reads back everything
    /// from `from` on, and starts a new segment for what comes next.
    pub(crate) fn open(dir: &Path, from: LogPosition) -> io::Result<(Wal, VecDeque<Group>)> {
        std::fs::create_dir_all(dir)?;
        let existing = segments(dir)?;
        let mut groups = VecDeque::new();
        let mut seals = BTreeMap::new();
        let mut lines = Column::new();
        let mut last_end = from;
        for &seq in existing.iter().filter(|&&s| s >= from.0) {
            let path = segment_path(dir, seq);
            let start = if seq == from.0 { from.1 } else { 0 };
            let contents = framelog::read(&path, start)?;
            for frame in contents.frames {
                let end = (seq, frame.end);
                match frame.kind {
                    LINES => push_lines(&frame.payload, &mut lines)?,
                    VALUES => push_values(&frame.payload, &mut lines).map_err(|e| {
                        io::Error::new(e.kind(), format!("{}: {e}", path.display()))
                    })?,
                    SEAL => {
                        let time = frame
                            .payload
                            .get(..8)
                            .and_then(|b| b.try_into().ok())
                            .map(i64::from_le_bytes)
                            .ok_or_else(|| {
                                io::Error::new(
                                    io::ErrorKind::InvalidData,
                                    format!("{}: a seal frame without a time", path.display()),
                                )
                            })?;
                        seals.insert(time, end);
                        groups.push_back(Group {
                            time: Some(time),
                            lines: std::mem::take(&mut lines),
                            end,
                        });
                    }
                    other => {
                        return Err(io::Error::new(
                            io::ErrorKind::InvalidData,
                            format!("{}: unknown frame kind {other}", path.display()),
                        ));
                    }
                }
                last_end = end;
            }
            if let Some(damage) = contents.damage {
                // The end of a log cut short by kill -9 is expected; say so.
                tracing::warn!(
                    "write-ahead log: reading stops at {damage} (a write cut short); {} bytes after it are ignored",
                    std::fs::metadata(&path)
                        .map(|m| m.len())
                        .unwrap_or(0)
                        .saturating_sub(contents.valid_len)
                );
            }
        }
        if !lines.is_empty() {
            groups.push_back(Group {
                time: None,
                lines,
                end: last_end,
            });
        }
        let seq = existing
            .last()
            .map_or(from.0, |&last| (last + 1).max(from.0));
        let log = FrameLog::create(&segment_path(dir, seq))?;
        Ok((
            Wal {
                dir: dir.to_path_buf(),
                log,
                seq,
                seals,
                rotate: false,
            },
            groups,
        ))
    }

    /// Logs complete lines (each followed by `\n`) as one frame.
    pub(crate) fn append_lines(&mut self, lines: &[u8]) -> io::Result<()> {
        self.log.append(LINES, lines).map(|_| ())
    }

    /// Logs elements (MessagePack values back to back) as one frame.
    pub(crate) fn append_values(&mut self, values: &[u8]) -> io::Result<()> {
        self.log.append(VALUES, values).map(|_| ())
    }

    /// Logs that everything before now is the batch at `time`, durably;
    /// returns the position past the seal.
    pub(crate) fn seal(&mut self, time: i64) -> io::Result<LogPosition> {
        let end = self.log.append(SEAL, &time.to_le_bytes())?;
        self.log.sync()?;
        let at = (self.seq, end);
        self.seals.insert(time, at);
        if self.rotate {
            self.log = FrameLog::create(&segment_path(&self.dir, self.seq + 1))?;
            self.seq += 1;
            self.rotate = false;
        }
        Ok(at)
    }

    /// The oldest checkpoint that may still be resumed from is of batch
    /// `oldest`: deletes the segments wholly before its position and starts
    /// a new segment at the next seal. Unknown positions keep everything.
    pub(crate) fn truncate(&mut self, oldest: i64) -> io::Result<()> {
        self.rotate = true;
        let Some(&(keep_from, _)) = self.seals.get(&oldest) else {
            return Ok(());
        };
        self.seals = self.seals.split_off(&oldest);
        for seq in segments(&self.dir)?
            .into_iter()
            .filter(|&s| s < keep_from && s != self.seq)
        {
            std::fs::remove_file(segment_path(&self.dir, seq))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(g: &Group) -> Vec<String> {
        g.lines
            .iter()
            .map(|b| rmp_serde::from_slice::<String>(b).unwrap())
            .collect()
    }

    #[test]
    fn sealed_batches_and_the_unsealed_tail_come_back_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let (mut wal, groups) = Wal::open(dir.path(), (0, 0)).unwrap();
        assert!(groups.is_empty());
        wal.append_lines(b"a\nb\n").unwrap();
        let p1 = wal.seal(1000).unwrap();
        wal.append_lines(b"\n").unwrap(); // one empty line
        wal.append_lines(b"c\n").unwrap();
        let p2 = wal.seal(2000).unwrap();
        wal.append_lines(b"d\n").unwrap();
        drop(wal);
        // Resume after batch 1000: batch 2000 again, then the tail.
        let (mut wal, groups) = Wal::open(dir.path(), p1).unwrap();
        let got: Vec<(Option<i64>, Vec<String>)> =
            groups.iter().map(|g| (g.time, lines(g))).collect();
        assert_eq!(
            got,
            [
                (Some(2000), vec![String::new(), "c".to_string()]),
                (None, vec!["d".to_string()]),
            ]
        );
        assert_eq!(groups[0].end, p2);
        // New lines go to a new segment; read across segments, the tail and
        // them form the next batch.
        wal.append_lines(b"e\n").unwrap();
        let p3 = wal.seal(3000).unwrap();
        assert_eq!(p3.0, 1);
        drop(wal);
        let (_, groups) = Wal::open(dir.path(), p2).unwrap();
        let got: Vec<(Option<i64>, Vec<String>)> =
            groups.iter().map(|g| (g.time, lines(g))).collect();
        assert_eq!(got, [(Some(3000), vec!["d".to_string(), "e".to_string()])]);
    }

    #[test]
    fn logged_elements_come_back_as_they_were_among_lines() {
        let dir = tempfile::tempdir().unwrap();
        let (mut wal, _) = Wal::open(dir.path(), (0, 0)).unwrap();
        let mut values = Column::new();
        values
            .push(&serde_json::json!({"t": 21.5, "id": "d1"}))
            .unwrap();
        values.push(&serde_json::json!([1, "two"])).unwrap();
        values.push_str("a\nb").unwrap();
        wal.append_values(&values.bytes).unwrap();
        wal.append_lines(b"line\n").unwrap();
        wal.seal(1000).unwrap();
        drop(wal);
        let (_, groups) = Wal::open(dir.path(), (0, 0)).unwrap();
        assert_eq!(groups.len(), 1);
        let got: Vec<serde_json::Value> = (groups[0].lines.iter())
            .map(|b| rmp_serde::from_slice(b).unwrap())
            .collect();
        assert_eq!(
            got,
            [
                serde_json::json!({"t": 21.5, "id": "d1"}),
                serde_json::json!([1, "two"]),
                serde_json::json!("a\nb"),
                serde_json::json!("line"),
            ]
        );
        // A damaged values frame is an error naming the segment, not lost
        // elements.
        let (mut wal, _) = Wal::open(dir.path(), (0, 0)).unwrap();
        wal.append_values(&[0x92, 0x01]).unwrap(); // an array of 2 cut short
        drop(wal);
        let err = Wal::open(dir.path(), (0, 0)).unwrap_err();
        assert!(err.to_string().contains("segment-"), "{err}");
    }

    #[test]
    fn truncation_keeps_what_the_oldest_checkpoint_needs() {
        let dir = tempfile::tempdir().unwrap();
        let (mut wal, _) = Wal::open(dir.path(), (0, 0)).unwrap();
        wal.append_lines(b"a\n").unwrap();
        wal.seal(1000).unwrap();
        wal.truncate(1000).unwrap(); // a data checkpoint at 1000: rotate
        wal.append_lines(b"b\n").unwrap();
        let p2 = wal.seal(2000).unwrap(); // ends segment 0, starts 1
        assert_eq!(p2.0, 0);
        wal.append_lines(b"c\n").unwrap();
        wal.seal(3000).unwrap();
        wal.truncate(2000).unwrap();
        assert_eq!(
            segments(dir.path()).unwrap(),
            [0, 1],
            "2000 needs segment 0"
        );
        wal.seal(4000).unwrap();
        wal.truncate(3000).unwrap();
        assert_eq!(segments(dir.path()).unwrap(), [1, 2]);
        // A torn frame at the end (kill -9 mid-write) is skipped.
        let seg = segment_path(dir.path(), 2);
        wal.append_lines(b"d\n").unwrap();
        let mut f = std::fs::OpenOptions::new().append(true).open(&seg).unwrap();
        std::io::Write::write_all(&mut f, &[200, 0, 0, 0, 1, b'x']).unwrap();
        drop(wal);
        let (_, groups) = Wal::open(dir.path(), (1, 0)).unwrap();
        let got: Vec<(Option<i64>, Vec<String>)> =
            groups.iter().map(|g| (g.time, lines(g))).collect();
        assert_eq!(
            got,
            [
                (Some(3000), vec!["c".to_string()]),
                (Some(4000), vec![]),
                (None, vec!["d".to_string()])
            ]
        );
    }
}
