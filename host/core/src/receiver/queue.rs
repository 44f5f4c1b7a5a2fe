//! `queue_stream`: batches given in advance, one per batch time — the
//! deterministic test contract (DESIGN §6): a JSON file holding an array of
//! batches, each an array of lines, replayed under a manual clock.

use super::Source;
use crate::error::{Error, Result};
use crate::rdd::Rdd;
use crate::time::BatchTime;
use sluice_sdk::Column;
use std::collections::VecDeque;
use std::path::Path;

/// A queue of batches of lines, taken as Spark's `queueStream(queue,
/// oneAtATime, default)` takes them: one item per batch (`one_at_a_time`)
/// or every item in the first batch; once the queue is empty, the default
/// batch, if any, every batch, else empty batches.
pub(crate) struct QueueSource {
    items: VecDeque<Column>,
    total: u64,
    partitions: usize,
    one_at_a_time: bool,
    default: Option<Column>,
}

/// One batch's lines as a column.
pub(crate) fn column_of(lines: &[String]) -> Column {
    let mut c = Column::with_capacity(lines.len(), lines.iter().map(|l| l.len() + 5).sum());
    for l in lines {
        let _ = c.push_str(l);
    }
    c
}

impl QueueSource {
    pub(crate) fn new(
        batches: Vec<Column>,
        partitions: usize,
        one_at_a_time: bool,
        default: Option<Column>,
    ) -> Self {
        QueueSource {
            total: batches.len() as u64,
            items: batches.into(),
            partitions,
            one_at_a_time,
            default,
        }
    }
}

impl Source for QueueSource {
    fn describe(&self) -> String {
        format!(
            "queue of {} batches{}{}",
            self.total,
            if self.one_at_a_time {
                ""
            } else {
                ", all at once"
            },
            if self.default.is_some() {
                ", with a default"
            } else {
                ""
            }
        )
    }
    fn partitions(&self) -> usize {
        self.partitions
    }
    fn next_batch(&mut self, _time: BatchTime) -> Result<Rdd> {
        let taken = if self.one_at_a_time {
            self.items.pop_front()
        } else if self.items.is_empty() {
            None
        } else {
            // Spark unions the queued RDDs, each keeping its partitions.
            let mut partitions = Vec::new();
            for c in self.items.drain(..) {
                partitions.extend(Rdd::from_column(&c, self.partitions).partitions);
            }
            return Ok(Rdd { partitions });
        };
        Ok(match taken.as_ref().or(self.default.as_ref()) {
            Some(c) => Rdd::from_column(c, self.partitions),
            None => Rdd::empty(self.partitions),
        })
    }

    fn finite_batches(&self) -> Option<u64> {
        Some(if self.one_at_a_time {
            self.total
        } else {
            self.total.min(1)
        })
    }

    fn position(&self) -> Option<Vec<u8>> {
        Some(
            (self.total - self.items.len() as u64)
                .to_le_bytes()
                .to_vec(),
        )
    }

    fn restore(&mut self, position: &[u8]) -> Result<()> {
        let taken = <[u8; 8]>::try_from(position)
            .map(u64::from_le_bytes)
            .map_err(|_| Error::Internal("a queue position is 8 bytes".to_string()))?;
        let remaining = self.total.saturating_sub(taken) as usize;
        while self.items.len() > remaining {
            self.items.pop_front();
        }
        Ok(())
    }
}

/// A queue input file: either an array of batches (`[["line", ...], ...]`) or
/// the reference format `{"partitions": 2, "streams": {"lines": [[...], ...]}}`.
#[derive(Debug, Clone, PartialEq)]
pub struct QueueFile {
    /// The batches of lines.
    pub batches: Vec<Vec<String>>,
    /// Partitions named by the file, if any.
    pub partitions: Option<usize>,
}

/// Reads a queue file; `stream` picks a stream of a multi-stream file
/// (default: `lines`, or the only one).
pub fn read_queue_file(path: &Path, stream: Option<&str>) -> Result<QueueFile> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::io(format!("reading queue file {}", path.display()), e))?;
    let bad = |message: String| Error::Input {
        path: path.to_path_buf(),
        message,
    };
    let json: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| bad(format!("line {}, column {}: {e}", e.line(), e.column())))?;
    let (batches_json, partitions) = match &json {
        serde_json::Value::Array(_) => (&json, None),
        serde_json::Value::Object(o) => {
            let streams = o
                .get("streams")
                .and_then(|s| s.as_object())
                .ok_or_else(|| {
                    bad("expected an array of batches or an object with \"streams\"".to_string())
                })?;
            let name = match stream {
                Some(s) => s.to_string(),
                None if streams.len() == 1 => streams.keys().next().cloned().unwrap_or_default(),
                None => "lines".to_string(),
            };
            let b = streams.get(&name).ok_or_else(|| {
                bad(format!(
                    "no stream `{name}` (it has: {})",
                    streams.keys().cloned().collect::<Vec<_>>().join(", ")
                ))
            })?;
            let parts = o
                .get("partitions")
                .and_then(|p| p.as_u64())
                .map(|p| p as usize);
            (b, parts)
        }
        _ => return Err(bad("expected an array of batches".to_string())),
    };
    let arr = batches_json
        .as_array()
        .ok_or_else(|| bad("the batches must be an array".to_string()))?;
    let mut batches = Vec::with_capacity(arr.len());
    for (i, b) in arr.iter().enumerate() {
        let lines = b
            .as_array()
            .ok_or_else(|| bad(format!("batch {i} is not an array of lines")))?;
        let mut out = Vec::with_capacity(lines.len());
        for (j, l) in lines.iter().enumerate() {
            out.push(
                l.as_str()
                    .ok_or_else(|| bad(format!("batch {i}, element {j} is not a string: {l}")))?
                    .to_string(),
            );
        }
        batches.push(out);
    }
    Ok(QueueFile {
        batches,
        partitions,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_both_formats_and_names_bad_elements() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.json");
        std::fs::write(&a, r#"[["x y"], []]"#).unwrap();
        let q = read_queue_file(&a, None).unwrap();
        assert_eq!(q.batches, vec![vec!["x y".to_string()], vec![]]);
        let b = dir.path().join("b.json");
        std::fs::write(&b, r#"{"partitions": 3, "streams": {"lines": [["a"]]}}"#).unwrap();
        let q = read_queue_file(&b, None).unwrap();
        assert_eq!(q.partitions, Some(3));
        let c = dir.path().join("c.json");
        std::fs::write(&c, r#"[["ok", 5]]"#).unwrap();
        let err = read_queue_file(&c, None).unwrap_err().to_string();
        assert!(err.contains("batch 0, element 1"), "{err}");
    }
}
