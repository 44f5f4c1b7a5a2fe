//! `save_as_text_files(prefix, suffix)` in Spark's layout: per batch a
//! directory `prefix-<batch ms>[.suffix]` holding `part-00000` …
//! `part-0000(N-1)` (one per partition, empty for empty partitions; each
//! element as Python's `str` of it plus `\n`, UTF-8) and an empty `_SUCCESS`,
//! each with the `.NAME.crc` checksum file Hadoop's local file system
//! writes beside it (so the directory lists as Spark's does, and Hadoop
//! tools reading it verify it).
//!
//! A batch is committed atomically: written into a hidden temporary directory,
//! files synced, then renamed into place, so a half-written batch is never
//! visible; a batch written again (a re-run) replaces the earlier copy.

use super::Output;
use crate::error::{Error, Result};
use crate::rdd::Rdd;
use crate::render::{element, py_str};
use crate::time::BatchTime;
use sluice_sdk::Batch;
use std::io::Write;
use std::path::{Path, PathBuf};

pub(crate) struct TextFiles {
    pub(crate) prefix: PathBuf,
    pub(crate) suffix: Option<String>,
}

/// The directory of one batch: `prefix-<ms>[.suffix]`.
pub(crate) fn batch_dir(prefix: &Path, suffix: Option<&str>, time: BatchTime) -> PathBuf {
    let name = prefix
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    prefix.with_file_name(batch_dir_name(&name, suffix, time))
}

/// The name of one batch's directory for the prefix named `name`:
/// `name-<ms>[.suffix]`, Spark's.
pub fn batch_dir_name(name: &str, suffix: Option<&str>, time: BatchTime) -> String {
    let mut name = format!("{name}-{}", time.millis());
    if let Some(s) = suffix.filter(|s| !s.is_empty()) {
        name.push('.');
        name.push_str(s);
    }
    name
}

/// Writes one line per element: Python's `str` of it.
pub(crate) fn write_text_part(f: &mut dyn Write, b: &Batch) -> std::io::Result<()> {
    let empty: &[u8] = &[];
    for j in 0..b.len() {
        let k = if b.has_keys() { b.keys.get(j) } else { empty };
        f.write_all(py_str(&element(k, b.values.get(j))).as_bytes())?;
        f.write_all(b"\n")?;
    }
    Ok(())
}

/// Writes `part-0000N` per partition (with `write_part`) and `_SUCCESS` into a
/// hidden temporary directory, syncs them, and renames it to `target`,
/// replacing an earlier copy: the batch appears whole or not at all.
pub(crate) fn commit_batch_dir(
    target: &Path,
    time: BatchTime,
    rdd: &Rdd,
    write_part: fn(&mut dyn Write, &Batch) -> std::io::Result<()>,
) -> Result<()> {
    let what = |doing: &str| format!("{doing} {} for batch {time}", target.display());
    let parent = target
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).map_err(|e| Error::io(what("creating the parent of"), e))?;
    let tmp = parent.join(format!(
        ".{}.tmp-{}",
        target
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        std::process::id()
    ));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp)
            .map_err(|e| Error::io(what("clearing a stale temporary copy of"), e))?;
    }
    std::fs::create_dir(&tmp).map_err(|e| Error::io(what("creating a temporary copy of"), e))?;
    let written = (|| -> std::io::Result<()> {
        for (i, b) in rdd.partitions.iter().enumerate() {
            let name = format!("part-{i:05}");
            let mut f = Checksummed::new(std::io::BufWriter::new(std::fs::File::create(
                tmp.join(&name),
            )?));
            write_part(&mut f, b)?;
            let (f, crc) = f.finish();
            f.into_inner().map_err(|e| e.into_error())?.sync_all()?;
            write_synced(&tmp.join(format!(".{name}.crc")), &crc)?;
        }
        std::fs::File::create(tmp.join("_SUCCESS"))?.sync_all()?;
        let (_, crc) = Checksummed::new(std::io::sink()).finish();
        write_synced(&tmp.join("._SUCCESS.crc"), &crc)
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(Error::io(what("writing"), e));
    }
    if target.exists() {
        std::fs::remove_dir_all(target).map_err(|e| Error::io(what("replacing"), e))?;
    }
    std::fs::rename(&tmp, target).map_err(|e| Error::io(what("committing"), e))?;
    // Make the rename itself durable.
    if let Ok(d) = std::fs::File::open(parent) {
        let _ = d.sync_all();
    }
    Ok(())
}

fn write_synced(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut f = std::fs::File::create(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

/// Bytes Hadoop's checksum files cover with one CRC.
const BYTES_PER_CHECKSUM: usize = 512;

/// A writer that also computes the file's Hadoop checksum file (what its
/// `ChecksumFileSystem` writes as `.NAME.crc`): `crc\0`, the bytes per
/// checksum (512, big-endian), then the big-endian CRC-32 of each 512-byte
/// chunk, the last one short.
struct Checksummed<W> {
    inner: W,
    chunk: crc32fast::Hasher,
    in_chunk: usize,
    file: Vec<u8>,
}

impl<W: Write> Checksummed<W> {
    fn new(inner: W) -> Self {
        let mut file = b"crc\0".to_vec();
        file.extend_from_slice(&(BYTES_PER_CHECKSUM as u32).to_be_bytes());
        Checksummed {
            inner,
            chunk: crc32fast::Hasher::new(),
            in_chunk: 0,
            file,
        }
    }

    fn end_chunk(&mut self) {
        let crc = std::mem::take(&mut self.chunk).finalize();
        self.file.extend_from_slice(&crc.to_be_bytes());
        self.in_chunk = 0;
    }

    /// The writer and the checksum file's bytes.
    fn finish(mut self) -> (W, Vec<u8>) {
        if self.in_chunk > 0 {
            self.end_chunk();
        }
        (self.inner, self.file)
    }
}

impl<W: Write> Write for Checksummed<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        let mut rest = &buf[..n];
        while !rest.is_empty() {
            let take = rest.len().min(BYTES_PER_CHECKSUM - self.in_chunk);
            self.chunk.update(&rest[..take]);
            self.in_chunk += take;
            rest = &rest[take..];
            if self.in_chunk == BYTES_PER_CHECKSUM {
                self.end_chunk();
            }
        }
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

impl Output for TextFiles {
    fn describe(&self) -> String {
        match &self.suffix {
            Some(s) => format!("save_as_text_files {} {s}", self.prefix.display()),
            None => format!("save_as_text_files {}", self.prefix.display()),
        }
    }
    fn emit(&mut self, time: BatchTime, _index: u64, rdd: &Rdd) -> Result<()> {
        let target = batch_dir(&self.prefix, self.suffix.as_deref(), time);
        commit_batch_dir(&target, time, rdd, write_text_part)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_sdk::{Batch, Column};

    #[test]
    fn checksums_cover_each_512_bytes_however_written() {
        let data: Vec<u8> = (0..1500u32).map(|i| (i * 7 % 251) as u8).collect();
        let mut want = b"crc\0\0\0\x02\0".to_vec();
        for chunk in data.chunks(BYTES_PER_CHECKSUM) {
            want.extend_from_slice(&crc32fast::hash(chunk).to_be_bytes());
        }
        for piece in [1, 100, 512, 700, 1500] {
            let mut w = Checksummed::new(Vec::new());
            for p in data.chunks(piece) {
                w.write_all(p).unwrap();
            }
            let (written, crc) = w.finish();
            assert_eq!(written, data);
            assert_eq!(crc, want, "written {piece} bytes at a time");
        }
    }

    #[test]
    fn writes_spark_layout_and_replaces_a_rerun() {
        let dir = tempfile::tempdir().unwrap();
        let prefix = dir.path().join("out").join("counts");
        let mut c = Column::new();
        c.push(&("the", 2i64)).unwrap();
        c.push(&("naïve", 1i64)).unwrap();
        let rdd = Rdd {
            partitions: vec![Batch::from_values(c), Batch::default()],
        };
        let mut out = TextFiles {
            prefix: prefix.clone(),
            suffix: Some("txt".into()),
        };
        out.emit(BatchTime(5000), 0, &rdd).unwrap();
        out.emit(BatchTime(5000), 0, &rdd).unwrap();
        let d = dir.path().join("out").join("counts-5000.txt");
        let mut files: Vec<String> = std::fs::read_dir(&d)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        files.sort();
        assert_eq!(
            files,
            [
                "._SUCCESS.crc",
                ".part-00000.crc",
                ".part-00001.crc",
                "_SUCCESS",
                "part-00000",
                "part-00001"
            ]
        );
        // Hadoop's checksums: the header, then one CRC-32 per 512 bytes.
        let header = [b'c', b'r', b'c', 0, 0, 0, 2, 0];
        assert_eq!(std::fs::read(d.join("._SUCCESS.crc")).unwrap(), header);
        let part = std::fs::read(d.join("part-00000")).unwrap();
        let mut want = header.to_vec();
        want.extend_from_slice(&crc32fast::hash(&part).to_be_bytes());
        assert_eq!(std::fs::read(d.join(".part-00000.crc")).unwrap(), want);
        assert_eq!(
            std::fs::read_to_string(d.join("part-00000")).unwrap(),
            "('the', 2)\n('naïve', 1)\n"
        );
        assert_eq!(std::fs::read_to_string(d.join("part-00001")).unwrap(), "");
        let leftovers: Vec<_> = std::fs::read_dir(dir.path().join("out")).unwrap().collect();
        assert_eq!(leftovers.len(), 1, "no temporary directories left behind");
        assert_eq!(
            batch_dir(Path::new("w"), None, BatchTime(7)),
            PathBuf::from("w-7")
        );
    }
}
