//! Append-only logs of checksummed frames: the socket receiver's
//! write-ahead log and the checkpoint store's batch log.
//!
//! A log file (integers little-endian):
//!
//! ```text
//! header    8 bytes "SLUICEWL", u32 FORMAT_VERSION
//! frame*    u32 payload length, u8 kind, payload, u64 xxh3-64 of (kind, payload)
//! ```
//!
//! A frame is written with one `write` call, so after `kill -9` a log ends
//! with whole frames or a torn last frame, which reading stops at. Reading
//! stops at the first frame that is torn or fails its checksum and says
//! where; [`FrameLog::open_append`] cuts such a tail off before appending so
//! that later frames are never hidden behind a damaged one. A failed append
//! is cut back the same way, so a disk-full error leaves the log as it was.
//!
//! A log may be *preallocated* ([`FrameLog::preallocate`]): its file is
//! grown ahead of the frames by writing zeros, a chunk at a time, and frames
//! overwrite them. Syncing a frame then changes no file metadata, so on
//! ext4 (and other journalling file systems) `fdatasync` flushes the frame's
//! block alone instead of committing the journal, which would first write
//! out every other file's pending data — another tenant's, on a shared
//! server. Readers take zeros to the end of the file as the end of the log.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

const MAGIC: &[u8; 8] = b"SLUICEWL";
/// Version of the log format; logs of another version are refused.
pub const FORMAT_VERSION: u32 = 1;
const HEADER: u64 = 12;
/// Largest frame payload accepted when reading (a length beyond it is damage).
const MAX_PAYLOAD: u32 = 1 << 30;

/// One frame: a kind byte chosen by the log's user, and its payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// What the payload is (the user's code).
    pub kind: u8,
    /// The payload.
    pub payload: Vec<u8>,
    /// Offset just past this frame in its file.
    pub end: u64,
}

/// What reading a log found.
#[derive(Debug, Default)]
pub struct Contents {
    /// The whole frames, in order.
    pub frames: Vec<Frame>,
    /// Bytes of valid log (header and whole frames).
    pub valid_len: u64,
    /// Why reading stopped before the end of the file, if it did.
    pub damage: Option<String>,
}

/// Reads every whole, valid frame of the log at `path`, from `from` (an
/// offset of a frame boundary, or 0 for the start).
pub fn read(path: &Path, from: u64) -> io::Result<Contents> {
    let mut bytes = Vec::new();
    File::open(path)?.read_to_end(&mut bytes)?;
    read_bytes(&bytes, from, &path.display())
}

/// [`read`] of a log's bytes; `path` names it in messages.
pub fn read_bytes(bytes: &[u8], from: u64, path: &dyn std::fmt::Display) -> io::Result<Contents> {
    let mut out = Contents::default();
    if bytes.len() < HEADER as usize {
        if !bytes.is_empty() {
            out.damage = Some(format!("{}: torn header", path));
        }
        return Ok(out);
    }
    if &bytes[..8] != MAGIC {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{}: not a Sluice log (bad magic)", path),
        ));
    }
    let version = u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]);
    if version != FORMAT_VERSION {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "{}: log format version {version}, this build reads {FORMAT_VERSION}",
                path
            ),
        ));
    }
    let mut at = from.max(HEADER) as usize;
    out.valid_len = at as u64;
    while at < bytes.len() {
        // Zeros from a frame boundary to the end: a preallocated log's
        // unwritten tail (no frame is all zeros: its checksum is not).
        let problem = |what: &str| {
            if bytes[at..].iter().all(|&b| b == 0) {
                None
            } else {
                Some(format!("{}: {what} at offset {at}", path))
            }
        };
        if bytes.len() - at < 5 {
            out.damage = problem("torn frame header");
            break;
        }
        let len = u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]);
        let end = at + 5 + len as usize + 8;
        if len > MAX_PAYLOAD || end > bytes.len() {
            out.damage = problem("torn frame");
            break;
        }
        let body = &bytes[at + 4..end - 8];
        let mut sum = [0u8; 8];
        sum.copy_from_slice(&bytes[end - 8..end]);
        if u64::from_le_bytes(sum) != xxhash_rust::xxh3::xxh3_64(body) {
            out.damage = problem("checksum mismatch");
            break;
        }
        out.frames.push(Frame {
            kind: body[0],
            payload: body[1..].to_vec(),
            end: end as u64,
        });
        at = end;
        out.valid_len = end as u64;
    }
    Ok(out)
}

/// A log open for appending.
#[derive(Debug)]
pub struct FrameLog {
    path: PathBuf,
    file: File,
    len: u64,
    /// Size of the file: `len` plus zeros written ahead (see [`Self::preallocate`]).
    allocated: u64,
    /// Zeros to write ahead when a frame does not fit; 0: none.
    chunk: u64,
}

impl FrameLog {
    /// Creates (or empties) the log at `path`.
    pub fn create(path: &Path) -> io::Result<FrameLog> {
        let mut file = File::create(path)?;
        let mut header = MAGIC.to_vec();
        header.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        file.write_all(&header)?;
        file.sync_all()?;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            File::open(dir)?.sync_all()?;
        }
        Ok(FrameLog {
            path: path.to_path_buf(),
            file,
            len: HEADER,
            allocated: HEADER,
            chunk: 0,
        })
    }

    /// Opens the log at `path` for appending after its last valid frame,
    /// creating it if missing; a torn or damaged tail is cut off (and
    /// returned as the damage found).
    pub fn open_append(path: &Path) -> io::Result<(FrameLog, Option<String>)> {
        let contents = match read(path, 0) {
            Ok(c) => c,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Ok((Self::create(path)?, None));
            }
            Err(e) => return Err(e),
        };
        if contents.valid_len < HEADER {
            return Ok((Self::create(path)?, contents.damage));
        }
        let mut file = OpenOptions::new().write(true).open(path)?;
        file.set_len(contents.valid_len)?;
        file.seek(SeekFrom::Start(contents.valid_len))?;
        Ok((
            FrameLog {
                path: path.to_path_buf(),
                file,
                len: contents.valid_len,
                allocated: contents.valid_len,
                chunk: 0,
            },
            contents.damage,
        ))
    }

    /// From now on, grows the file `chunk` bytes of zeros ahead of the
    /// frames, so that syncing an appended frame changes no metadata (see
    /// the module's doc). Growing is synced with the next [`Self::sync`].
    pub fn preallocate(mut self, chunk: u64) -> FrameLog {
        self.chunk = chunk;
        self
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Bytes written so far (the offset of the next frame).
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether the log holds no frame.
    pub fn is_empty(&self) -> bool {
        self.len == HEADER
    }

    /// Appends one frame with a single write (not synced: see [`Self::sync`]).
    /// On error the log is cut back to where it was.
    pub fn append(&mut self, kind: u8, payload: &[u8]) -> io::Result<u64> {
        let len = u32::try_from(payload.len())
            .ok()
            .filter(|&l| l <= MAX_PAYLOAD)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "log frame too large"))?;
        let mut frame = Vec::with_capacity(payload.len() + 13);
        frame.extend_from_slice(&len.to_le_bytes());
        frame.push(kind);
        frame.extend_from_slice(payload);
        let sum = xxhash_rust::xxh3::xxh3_64(&frame[4..]);
        frame.extend_from_slice(&sum.to_le_bytes());
        let end = self.len + frame.len() as u64;
        let written = if self.chunk > 0 && end > self.allocated {
            self.grow(end + self.chunk)
        } else {
            Ok(())
        }
        .and_then(|()| self.file.write_all(&frame));
        if let Err(e) = written {
            // Cut a partial frame (and any zeros ahead) off so the log
            // stays readable past it.
            let _ = self
                .file
                .set_len(self.len)
                .and_then(|()| self.file.seek(SeekFrom::Start(self.len)).map(|_| ()));
            self.allocated = self.len;
            return Err(e);
        }
        self.len = end;
        Ok(self.len)
    }

    /// Writes zeros from the end of the file up to `size`, then goes back
    /// to the end of the frames.
    fn grow(&mut self, size: u64) -> io::Result<()> {
        self.file.seek(SeekFrom::Start(self.allocated))?;
        let zeros = vec![0u8; (size - self.allocated) as usize];
        self.file.write_all(&zeros)?;
        self.allocated = size;
        self.file.seek(SeekFrom::Start(self.len))?;
        Ok(())
    }

    /// Makes every appended frame durable (`fdatasync`).
    pub fn sync(&mut self) -> io::Result<()> {
        self.file.sync_data()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_a_torn_tail_is_cut_before_appending() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("log");
        let mut log = FrameLog::create(&p).unwrap();
        assert!(log.is_empty());
        let first_end = log.append(1, b"hello").unwrap();
        log.append(2, b"").unwrap();
        log.sync().unwrap();
        let c = read(&p, 0).unwrap();
        assert_eq!(c.frames.len(), 2);
        assert_eq!(
            (c.frames[0].kind, &c.frames[0].payload[..]),
            (1, &b"hello"[..])
        );
        assert_eq!(c.frames[0].end, first_end);
        assert!(c.damage.is_none());
        // Reading from a frame boundary skips what is before it.
        let c = read(&p, first_end).unwrap();
        assert_eq!(c.frames.len(), 1);
        // kill -9 in the middle of a write: a torn frame at the end.
        let mut f = OpenOptions::new().append(true).open(&p).unwrap();
        f.write_all(&[9, 0, 0, 0, 3, b'x']).unwrap();
        drop(f);
        let c = read(&p, 0).unwrap();
        assert_eq!(c.frames.len(), 2);
        assert!(c.damage.as_deref().unwrap().contains("torn frame"), "{c:?}");
        let (mut log, damage) = FrameLog::open_append(&p).unwrap();
        assert!(damage.is_some());
        log.append(3, b"after").unwrap();
        let c = read(&p, 0).unwrap();
        let kinds: Vec<u8> = c.frames.iter().map(|f| f.kind).collect();
        assert_eq!(kinds, [1, 2, 3]);
        assert!(c.damage.is_none());
    }

    #[test]
    fn a_preallocated_log_reads_to_its_last_frame_and_a_torn_frame_in_the_zeros_is_damage() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("log");
        let mut log = FrameLog::create(&p).unwrap().preallocate(100);
        let mut ends = Vec::new();
        for i in 0..20u8 {
            ends.push(log.append(1, &vec![i; i as usize * 3]).unwrap());
        }
        log.sync().unwrap();
        let size = std::fs::metadata(&p).unwrap().len();
        assert!(size > log.len(), "zeros ahead: {size} vs {}", log.len());
        // Frames are grown into with whole chunks, not once per frame.
        assert!(size < log.len() + 200, "{size} vs {}", log.len());
        let c = read(&p, 0).unwrap();
        assert_eq!(c.frames.len(), 20);
        assert!(c.damage.is_none(), "{c:?}");
        assert_eq!(c.valid_len, log.len());
        assert_eq!(c.frames[19].payload, vec![19; 57]);
        // Reading from a later frame boundary.
        assert_eq!(read(&p, ends[17]).unwrap().frames.len(), 2);
        // A frame torn by a crash, over the zeros.
        let mut f = OpenOptions::new().write(true).open(&p).unwrap();
        f.seek(SeekFrom::Start(log.len())).unwrap();
        f.write_all(&[9, 0, 0, 0, 3, b'x']).unwrap();
        drop((f, log));
        let c = read(&p, 0).unwrap();
        assert_eq!(c.frames.len(), 20);
        assert!(c.damage.as_deref().unwrap().contains("checksum"), "{c:?}");
        let (log, damage) = FrameLog::open_append(&p).unwrap();
        assert!(damage.is_some());
        let mut log = log.preallocate(100);
        log.append(2, b"after").unwrap();
        let c = read(&p, 0).unwrap();
        assert_eq!(c.frames.len(), 21);
        assert_eq!(c.frames[20].kind, 2);
        assert!(c.damage.is_none(), "{c:?}");
    }

    #[test]
    fn a_flipped_byte_stops_reading_there() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("log");
        let mut log = FrameLog::create(&p).unwrap();
        let end = log.append(1, b"one").unwrap();
        log.append(1, b"two").unwrap();
        let mut bytes = std::fs::read(&p).unwrap();
        bytes[end as usize + 6] ^= 0xff;
        std::fs::write(&p, &bytes).unwrap();
        let c = read(&p, 0).unwrap();
        assert_eq!(c.frames.len(), 1);
        assert!(c.damage.unwrap().contains("checksum"));
        std::fs::write(&p, b"not a log at all").unwrap();
        assert!(read(&p, 0).unwrap_err().to_string().contains("bad magic"));
    }
}
