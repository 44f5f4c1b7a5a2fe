//! `save_as_object_files(prefix)`: typed elements in a documented binary
//! format, per batch a directory `prefix-<batch ms>` of `part-0000N` files
//! and `_SUCCESS`, committed atomically like the text files. `sluice cat DIR`
//! (or [`read_object_dir`]) reads them back.
//!
//! Format of a part file (all integers little-endian):
//!
//! ```text
//! magic    8 bytes  "SLUICEOB"
//! version  u8       1
//! then per element:
//!   key_len   u32   0 when the element has no key
//!   key       key_len bytes of canonical MessagePack
//!   value_len u32
//!   value     value_len bytes of canonical MessagePack
//! trailer:
//!   0xFFFFFFFF u32  end marker
//!   count      u64  number of elements
//!   checksum   u64  xxh3-64 of every byte before the trailer
//! ```
//!
//! A reader refuses a file with another magic or version, a truncated file,
//! a count or checksum that does not match, or an element that is not one
//! well-formed MessagePack value, naming the file and the offset.

use super::Output;
use super::text::commit_batch_dir;
use crate::error::{Error, Result};
use crate::rdd::Rdd;
use crate::time::BatchTime;
use sluice_sdk::Batch;
use std::io::Write;
use std::path::{Path, PathBuf};

const MAGIC: &[u8; 8] = b"SLUICEOB";
const VERSION: u8 = 1;
const END: u32 = u32::MAX;

pub(crate) struct ObjectFiles {
    pub(crate) prefix: PathBuf,
}

pub(crate) fn write_object_part(f: &mut dyn Write, b: &Batch) -> std::io::Result<()> {
    let mut buf = Vec::with_capacity(b.keys.bytes.len() + b.values.bytes.len() + 8 * b.len() + 32);
    buf.extend_from_slice(MAGIC);
    buf.push(VERSION);
    for i in 0..b.len() {
        let k: &[u8] = if b.has_keys() { b.keys.get(i) } else { &[] };
        let v = b.values.get(i);
        buf.extend_from_slice(&(k.len() as u32).to_le_bytes());
        buf.extend_from_slice(k);
        buf.extend_from_slice(&(v.len() as u32).to_le_bytes());
        buf.extend_from_slice(v);
    }
    let checksum = xxhash_rust::xxh3::xxh3_64(&buf);
    buf.extend_from_slice(&END.to_le_bytes());
    buf.extend_from_slice(&(b.len() as u64).to_le_bytes());
    buf.extend_from_slice(&checksum.to_le_bytes());
    f.write_all(&buf)
}

impl Output for ObjectFiles {
    fn describe(&self) -> String {
        format!("save_as_object_files {}", self.prefix.display())
    }
    fn emit(&mut self, time: BatchTime, _index: u64, rdd: &Rdd) -> Result<()> {
        let target = super::text::batch_dir(&self.prefix, None, time);
        commit_batch_dir(&target, time, rdd, write_object_part)
    }
}

/// One element read back: its key (empty when none) and value, as canonical
/// MessagePack.
pub type Element = (Vec<u8>, Vec<u8>);

/// Reads one part file.
pub fn read_object_file(path: &Path) -> Result<Vec<Element>> {
    let data =
        std::fs::read(path).map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
    let bad = |at: usize, message: &str| Error::Input {
        path: path.to_path_buf(),
        message: format!("at byte {at}: {message}"),
    };
    if data.len() < 9 || &data[..8] != MAGIC {
        return Err(bad(0, "not a Sluice object file (no SLUICEOB header)"));
    }
    if data[8] != VERSION {
        return Err(bad(
            8,
            &format!(
                "format version {} is not supported (this build reads 1)",
                data[8]
            ),
        ));
    }
    let u32_at = |at: usize| -> Result<u32> {
        data.get(at..at + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .ok_or_else(|| bad(at, "truncated"))
    };
    let mut pos = 9;
    let mut out = Vec::new();
    loop {
        let klen = u32_at(pos)?;
        if klen == END {
            break;
        }
        let kstart = pos + 4;
        let kend = kstart + klen as usize;
        let vlen = u32_at(kend)? as usize;
        let vstart = kend + 4;
        let vend = vstart + vlen;
        if vend > data.len() {
            return Err(bad(pos, "truncated element"));
        }
        let (k, v) = (&data[kstart..kend], &data[vstart..vend]);
        for part in [k, v].into_iter().filter(|p| !p.is_empty()) {
            if !matches!(sluice_sdk::msgpack::is_single_value(part), Ok(true)) {
                return Err(bad(
                    pos,
                    "an element is not one well-formed MessagePack value",
                ));
            }
        }
        if v.is_empty() {
            return Err(bad(pos, "an element has no value"));
        }
        out.push((k.to_vec(), v.to_vec()));
        pos = vend;
    }
    let body_end = pos;
    let trailer = data
        .get(pos + 4..pos + 20)
        .ok_or_else(|| bad(pos, "truncated trailer"))?;
    let count = u64::from_le_bytes(trailer[..8].try_into().unwrap_or_default());
    let checksum = u64::from_le_bytes(trailer[8..].try_into().unwrap_or_default());
    if count != out.len() as u64 {
        return Err(bad(
            pos,
            &format!(
                "trailer counts {count} elements, the file holds {}",
                out.len()
            ),
        ));
    }
    if checksum != xxhash_rust::xxh3::xxh3_64(&data[..body_end]) {
        return Err(bad(pos, "checksum mismatch: the file is damaged"));
    }
    if data.len() != pos + 20 {
        return Err(bad(pos + 20, "bytes after the trailer"));
    }
    Ok(out)
}

/// Reads a batch directory written by `save_as_object_files`: its part files
/// in order. A directory without `_SUCCESS` was never committed and is refused.
pub fn read_object_dir(dir: &Path) -> Result<Vec<Element>> {
    if !dir.join("_SUCCESS").exists() {
        return Err(Error::Input {
            path: dir.to_path_buf(),
            message: "no _SUCCESS: not a committed batch of object files".to_string(),
        });
    }
    let mut parts: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| Error::io(format!("listing {}", dir.display()), e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("part-"))
        })
        .collect();
    parts.sort();
    let mut out = Vec::new();
    for p in parts {
        out.extend(read_object_file(&p)?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::testing::batch_of;

    #[test]
    fn round_trips_and_refuses_damage() {
        let dir = tempfile::tempdir().unwrap();
        let mut keyed = batch_of(&[1i64, 2]);
        keyed.keys = batch_of(&["a", "b"]).values;
        let rdd = Rdd {
            partitions: vec![batch_of(&[("x", 1.5f64)]), keyed, Batch::default()],
        };
        let mut out = ObjectFiles {
            prefix: dir.path().join("objs"),
        };
        out.emit(BatchTime(3000), 0, &rdd).unwrap();
        let d = dir.path().join("objs-3000");
        let got = read_object_dir(&d).unwrap();
        assert_eq!(got.len(), 3);
        assert_eq!(got[1], (rmp_serde::to_vec("a").unwrap(), vec![1]));
        assert!(got[0].0.is_empty());
        // Flip one byte: the checksum notices.
        let part = d.join("part-00001");
        let mut bytes = std::fs::read(&part).unwrap();
        bytes[12] ^= 0x01;
        std::fs::write(&part, &bytes).unwrap();
        let e = read_object_dir(&d).unwrap_err().to_string();
        assert!(e.contains("part-00001"), "{e}");
        // Truncation and foreign files are named too.
        std::fs::write(&part, &bytes[..bytes.len() - 3]).unwrap();
        assert!(
            read_object_file(&part)
                .unwrap_err()
                .to_string()
                .contains("truncated")
        );
        std::fs::write(&part, b"hello").unwrap();
        assert!(
            read_object_file(&part)
                .unwrap_err()
                .to_string()
                .contains("not a Sluice object file")
        );
    }
}
