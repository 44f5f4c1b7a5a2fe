//! `pprint(num)` in PySpark's exact format:
//!
//! ```text
//! -------------------------------------------
//! Time: 2026-11-24 13:57:36
//! -------------------------------------------
//! ('b', 1)
//! ...
//!
//! ```
//! 43 dashes; the batch time in local time (`.ffffff` only for non-whole
//! seconds); at most `num` elements in partition order, each as Python's
//! `print` writes it (PySpark's `pprint` calls `print(record)`, Scala's
//! `print()` `println(record)`): a string as its text, anything else as its
//! repr (`('b', 1)`); `...` when there are more; an empty line.

use super::Output;
use crate::error::{Error, Result};
use crate::rdd::Rdd;
use crate::render::{element, py_str};
use crate::time::BatchTime;
use chrono::TimeZone;
use std::io::Write;

pub(crate) struct Pprint {
    pub(crate) num: usize,
    pub(crate) out: Box<dyn Write + Send>,
}

/// The `Time:` text of a batch time, as Python's `str(datetime)` in local time.
pub(crate) fn format_time(time: BatchTime) -> String {
    let ms = time.millis();
    match chrono::Local.timestamp_millis_opt(ms).single() {
        Some(t) if ms.rem_euclid(1000) == 0 => t.format("%Y-%m-%d %H:%M:%S").to_string(),
        Some(t) => t.format("%Y-%m-%d %H:%M:%S%.6f").to_string(),
        None => format!("{ms} ms"),
    }
}

/// The text `pprint` prints for one batch.
pub(crate) fn render(time: BatchTime, rdd: &Rdd, num: usize) -> String {
    let dashes = "-".repeat(43);
    let mut s = format!("{dashes}\nTime: {}\n{dashes}\n", format_time(time));
    for (i, (k, v)) in rdd.elements().enumerate() {
        if i == num {
            s.push_str("...\n");
            break;
        }
        s.push_str(&py_str(&element(k, v)));
        s.push('\n');
    }
    s.push('\n');
    s
}

impl Output for Pprint {
    fn describe(&self) -> String {
        format!("pprint {}", self.num)
    }
    fn emit(&mut self, time: BatchTime, _index: u64, rdd: &Rdd) -> Result<()> {
        let text = render(time, rdd, self.num);
        self.out
            .write_all(text.as_bytes())
            .and_then(|()| self.out.flush())
            .map_err(|e| Error::io("writing pprint output", e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_sdk::{Batch, Column};

    #[test]
    fn prints_like_pyspark() {
        let mut c = Column::new();
        for i in 0..12i64 {
            c.push(&("w", i)).unwrap();
        }
        let rdd = Rdd {
            partitions: vec![Batch::from_values(c)],
        };
        let text = render(BatchTime(0), &rdd, 10);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "-".repeat(43));
        assert!(lines[1].starts_with("Time: "));
        assert_eq!(lines[3], "('w', 0)");
        assert_eq!(lines[13], "...");
        assert_eq!(lines.len(), 15);
        assert!(text.ends_with("...\n\n"));
        let empty = render(BatchTime(0), &Rdd::empty(2), 10);
        assert_eq!(empty.lines().count(), 4);
    }

    /// PySpark prints each record with `print`: a string is its own text
    /// (`plain`, not `'plain'`), inside a tuple its repr; floats as Python
    /// writes them.
    #[test]
    fn a_string_prints_as_itself_as_pyspark_s_print_does() {
        let mut c = Column::new();
        c.push("plain").unwrap();
        c.push("it's\ta tab").unwrap();
        c.push(&("w", 1.0f64)).unwrap();
        c.push(&2.5f64).unwrap();
        let rdd = Rdd {
            partitions: vec![Batch::from_values(c)],
        };
        let text = render(BatchTime(0), &rdd, 10);
        let lines: Vec<&str> = text.lines().skip(3).collect();
        assert_eq!(lines, ["plain", "it's\ta tab", "('w', 1.0)", "2.5", ""]);
    }
}
