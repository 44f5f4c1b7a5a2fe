//! The `jsonl` output of the test contract (DESIGN §6): one line per batch,
//! `{"batch": i, "time": ms, "partitions": n, "records": [...]}`, records
//! rendered as JSON and sorted by their canonical JSON text.
//!
//! A fresh run starts the file over; a run resumed from a checkpoint keeps
//! the lines of the batches before its first and replaces the rest, so a
//! batch re-run after a crash appears once.

use super::{CollectedBatch, Output};
use crate::error::{Error, Result};
use crate::rdd::Rdd;
use crate::time::BatchTime;
use std::io::Write;
use std::path::PathBuf;

pub(crate) struct Jsonl {
    pub(crate) path: PathBuf,
    pub(crate) file: Option<std::io::BufWriter<std::fs::File>>,
}

impl Jsonl {
    /// A job resumed at batch `index`: keeps the lines of the batches before
    /// it and drops the rest (batches about to run again, a line cut short),
    /// so every batch appears exactly once. The file is rewritten atomically.
    fn keep_before(&self, index: u64) -> std::io::Result<()> {
        let text = match std::fs::read_to_string(&self.path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        let mut kept = String::new();
        for line in text.lines() {
            if batch_of(line).is_some_and(|b| b < index) {
                kept.push_str(line);
                kept.push('\n');
            }
        }
        if kept.len() != text.len() {
            crate::fsutil::write_atomically(&self.path, kept.as_bytes())?;
        }
        Ok(())
    }
}

/// The batch index of a line this output wrote, `None` for anything else
/// (a line cut short by a crash). Its lines begin `{"batch":N,` (keys in
/// order), so a resumed job skips parsing whole batches — hundreds of
/// megabytes of them after a long run — and parses only what does not.
fn batch_of(line: &str) -> Option<u64> {
    let complete = line.ends_with('}');
    if let Some(rest) = line.strip_prefix("{\"batch\":")
        && let Some((digits, _)) = rest.split_once(',')
        && complete
    {
        return digits.parse().ok();
    }
    serde_json::from_str::<serde_json::Value>(line)
        .ok()
        .and_then(|v| v["batch"].as_u64())
}

impl Output for Jsonl {
    fn describe(&self) -> String {
        format!("jsonl {}", self.path.display())
    }
    fn emit(&mut self, time: BatchTime, index: u64, rdd: &Rdd) -> Result<()> {
        let what = || format!("writing {}", self.path.display());
        if self.file.is_none() {
            if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir).map_err(|e| Error::io(what(), e))?;
            }
            let f = if index == 0 {
                std::fs::File::create(&self.path)
            } else {
                self.keep_before(index).map_err(|e| Error::io(what(), e))?;
                std::fs::OpenOptions::new()
                    .append(true)
                    .create(true)
                    .open(&self.path)
            };
            let f = f.map_err(|e| Error::io(what(), e))?;
            self.file = Some(std::io::BufWriter::new(f));
        }
        let b = CollectedBatch::of(time, index, rdd);
        let line = serde_json::json!({
            "batch": index,
            "time": time.millis(),
            "partitions": b.partitions,
            "records": b.sorted_records(),
        });
        // The whole line in one write: a reader following the file (a test
        // waiting for counts, `tail -f`) never sees half a batch, as it did
        // when a line longer than the buffer went out in pieces.
        let mut text = line.to_string();
        text.push('\n');
        if let Some(f) = self.file.as_mut() {
            f.write_all(text.as_bytes())
                .and_then(|()| f.flush())
                .map_err(|e| Error::io(what(), e))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::batch_of;

    #[test]
    fn the_batch_of_a_line_is_read_from_its_start_or_else_parsed() {
        assert_eq!(
            batch_of(r#"{"batch":12,"partitions":2,"records":[["a",1]],"time":5}"#),
            Some(12)
        );
        // Written otherwise (by hand, another key order): parsed whole.
        assert_eq!(batch_of(r#"{"time":5, "batch": 3}"#), Some(3));
        // Cut short by a crash, or not a batch at all.
        assert_eq!(
            batch_of(r#"{"batch":12,"partitions":2,"records":[["a","#),
            None
        );
        assert_eq!(batch_of(r#"{"batch":x,"time":1}"#), None);
        assert_eq!(batch_of(""), None);
    }
}
