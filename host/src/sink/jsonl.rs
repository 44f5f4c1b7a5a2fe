//! The `jsonl` output of the test contract (DESIGN §6): one line per batch,
//! `{"batch": i, "time": ms, "partitions": n, "records": [...]}`, records
//! rendered as JSON and sorted by their canonical JSON text.

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

impl Output for Jsonl {
    fn emit(&mut self, time: BatchTime, index: u64, rdd: &Rdd) -> Result<()> {
        let what = || format!("writing {}", self.path.display());
        if self.file.is_none() {
            if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir).map_err(|e| Error::io(what(), e))?;
            }
            let f = std::fs::File::create(&self.path).map_err(|e| Error::io(what(), e))?;
            self.file = Some(std::io::BufWriter::new(f));
        }
        let b = CollectedBatch::of(time, index, rdd);
        let line = serde_json::json!({
            "batch": index,
            "time": time.millis(),
            "partitions": b.partitions,
            "records": b.sorted_records(),
        });
        if let Some(f) = self.file.as_mut() {
            writeln!(f, "{line}")
                .and_then(|()| f.flush())
                .map_err(|e| Error::io(what(), e))?;
        }
        Ok(())
    }
}
