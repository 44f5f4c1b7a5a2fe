//! Where a file source's files are: the [`FileStore`] seam, the local
//! directory behind it, and the line splitter that turns a file read in
//! chunks into lines.

use crate::error::{Error, Result};
use crate::receiver::lines::LineEnds;
use sluice_sdk::Column;
use std::ffi::{OsStr, OsString};
use std::io::Read;
use std::path::PathBuf;
use std::time::SystemTime;

/// A flat set of named files a `text_file_stream` watches: a local
/// directory ([`LocalDir`]), or a prefix in object storage
/// (`sluice-objects`' `S3Dir`).
pub trait FileStore: Send {
    /// Where, for messages and the plan: a directory, or a URL.
    fn describe(&self) -> String;

    /// Where the file `name` is, for messages.
    fn locate(&self, name: &OsStr) -> String;

    /// The candidate files with their modification times, in any order:
    /// regular files directly in the store, without hidden names (`.`) or
    /// markers (`_`).
    fn list(&self) -> Result<Vec<(SystemTime, OsString)>>;

    /// Reads the file `name`, handing its bytes to `chunk` a piece at a
    /// time (so that nothing holds a whole large file twice); `Ok(false)`
    /// when the file is gone.
    fn read(&self, name: &OsStr, chunk: &mut dyn FnMut(&[u8]) -> Result<()>) -> Result<bool>;

    /// Whether failures are passing ones: a remote store that cannot be
    /// listed gives an empty batch and one whose file cannot be read tries
    /// it again at the next batch, each reported; a local file that cannot
    /// be read is reported and skipped for good.
    fn remote(&self) -> bool {
        false
    }

    /// Whether `e`, a failure of this store, may pass: a remote store's,
    /// unless it is a refusal (credentials, permissions), which trying
    /// again does not mend.
    fn passing(&self, e: &Error) -> bool {
        self.remote() && !e.is_refusal()
    }
}

/// A local directory (nested directories are not watched).
pub struct LocalDir(pub PathBuf);

impl FileStore for LocalDir {
    fn describe(&self) -> String {
        self.0.display().to_string()
    }

    fn locate(&self, name: &OsStr) -> String {
        self.0.join(name).display().to_string()
    }

    fn list(&self) -> Result<Vec<(SystemTime, OsString)>> {
        let entries = std::fs::read_dir(&self.0).map_err(|e| {
            Error::io(
                format!("listing the watched directory {}", self.0.display()),
                e,
            )
        })?;
        let mut files = Vec::new();
        for entry in entries {
            let Ok(entry) = entry else { continue };
            let name = entry.file_name();
            let text = name.to_string_lossy();
            if text.starts_with('.') || text.starts_with('_') {
                continue;
            }
            let Ok(meta) = entry.metadata() else { continue };
            if !meta.is_file() {
                continue;
            }
            let mtime = meta.modified().unwrap_or(std::time::UNIX_EPOCH);
            files.push((mtime, name));
        }
        Ok(files)
    }

    fn read(&self, name: &OsStr, chunk: &mut dyn FnMut(&[u8]) -> Result<()>) -> Result<bool> {
        let path = self.0.join(name);
        let what = || format!("reading {}", path.display());
        let mut f = match std::fs::File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(Error::io(what(), e)),
        };
        // A buffer of the file's size (one read of a small file, no 1 MiB
        // allocation per file), at most 1 MiB.
        let size = f.metadata().map_or(0, |m| m.len()) as usize;
        let mut buf = vec![0u8; (size + 1).clamp(8 << 10, 1 << 20)];
        loop {
            match f.read(&mut buf) {
                Ok(0) => return Ok(true),
                Ok(n) => chunk(&buf[..n])?,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(Error::io(what(), e)),
            }
        }
    }
}

/// Splits bytes arriving in chunks into lines pushed onto a column: lines
/// end at `\n`, `\r` or `\r\n` (as Hadoop's `LineRecordReader` reads a
/// `textFileStream` file), a last line without a terminator counts, and
/// invalid UTF-8 is replaced with U+FFFD (counted).
pub(crate) struct LineSplitter<'a> {
    lines: &'a mut Column,
    ends: LineEnds,
    /// The start of a line whose end has not arrived yet.
    partial: Vec<u8>,
    /// Lines that were not valid UTF-8.
    pub(crate) invalid: u64,
}

impl<'a> LineSplitter<'a> {
    pub(crate) fn new(lines: &'a mut Column) -> Self {
        LineSplitter {
            lines,
            ends: LineEnds::default(),
            partial: Vec::new(),
            invalid: 0,
        }
    }

    fn push_line(&mut self, line: &[u8]) -> Result<()> {
        let text = match std::str::from_utf8(line) {
            Ok(t) => std::borrow::Cow::Borrowed(t),
            Err(_) => {
                self.invalid += 1;
                String::from_utf8_lossy(line)
            }
        };
        self.lines
            .push_str(&text)
            .map_err(|e| Error::Internal(format!("a line cannot be encoded: {e}")))
    }

    /// Takes the next chunk.
    pub(crate) fn feed(&mut self, bytes: &[u8]) -> Result<()> {
        let mut result = Ok(());
        let mut ends = self.ends;
        let rest = ends.split(bytes, |line| {
            if result.is_err() {
                return;
            }
            result = if self.partial.is_empty() {
                self.push_line(line)
            } else {
                let mut whole = std::mem::take(&mut self.partial);
                whole.extend_from_slice(line);
                self.push_line(&whole)
            };
        });
        self.ends = ends;
        self.partial.extend_from_slice(rest);
        result
    }

    /// The file ended: its last line, if it had no `\n`.
    pub(crate) fn finish(mut self) -> Result<u64> {
        if !self.partial.is_empty() {
            let line = std::mem::take(&mut self.partial);
            self.push_line(&line)?;
        }
        Ok(self.invalid)
    }
}

/// Cuts `column` back to its first `len` elements (a file that failed
/// half-way takes back the lines it had added).
pub(crate) fn truncate(column: &mut Column, len: usize) {
    if len == 0 {
        column.clear();
    } else if len < column.len() {
        column.offsets.truncate(len + 1);
        column.bytes.truncate(column.offsets[len] as usize);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(chunks: &[&[u8]]) -> (Vec<String>, u64) {
        let mut col = Column::new();
        let mut s = LineSplitter::new(&mut col);
        for c in chunks {
            s.feed(c).unwrap();
        }
        let invalid = s.finish().unwrap();
        let lines = col
            .iter()
            .map(|v| rmp_serde::from_slice(v).unwrap())
            .collect();
        (lines, invalid)
    }

    #[test]
    fn lines_split_across_chunks_as_hadoop_reads_them() {
        let text = "a1\r\nsecond line\n\nthird\rlast";
        let want: Vec<String> = ["a1", "second line", "", "third", "last"]
            .map(String::from)
            .to_vec();
        for size in 1..text.len() {
            let chunks: Vec<&[u8]> = text.as_bytes().chunks(size).collect();
            assert_eq!(split(&chunks), (want.clone(), 0), "chunks of {size}");
        }
        assert_eq!(split(&[b"x\n"]), (vec!["x".to_string()], 0));
        assert_eq!(
            split(&[b"ok \xff", b"\n"]),
            (vec!["ok \u{fffd}".to_string()], 1)
        );
    }

    #[test]
    fn truncate_takes_back_a_files_lines() {
        let mut col = Column::new();
        col.push_str("keep").unwrap();
        let mut other = col.clone();
        col.push_str("drop").unwrap();
        col.push_str("drop too").unwrap();
        truncate(&mut col, 1);
        assert_eq!(col, other);
        truncate(&mut other, 0);
        assert!(other.is_empty());
    }
}
