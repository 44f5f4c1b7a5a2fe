//! Entry points for the fuzz targets (`fuzz/`): each takes untrusted bytes
//! — a checkpoint, state shards, a log, a stream of socket bytes, a guest's
//! output columns — and must answer with a result, never a panic. Where an
//! independent reference exists the answer is checked against it too: the
//! socket splitter against a plain line model, column validation's fast
//! path against its thorough one and against `rmpv`'s MessagePack reader.
//!
//! The regression test at the bottom runs every committed corpus file
//! (`fuzz/corpus/TARGET/`) through its target, so what the fuzzer found
//! stays fixed in a plain `cargo test`.

use crate::checkpoint::{self, BatchRecord, StateReader, shards};
use crate::framelog;
use crate::ops::window::{MapWithState, OperatorState, StateByKey, WindowBuffer, WindowedReduce};
use crate::receiver::socket::splitter::LineSplitter;
use crate::receiver::socket::{LineSink, NonUtf8Policy, SocketConfig, SocketStats};
use crate::receiver::wal;
use sluice_sdk::Column;
use std::sync::{Arc, Mutex};

/// A fuzz target: untrusted bytes in, a panic only for a bug.
pub type Target = fn(&[u8]);

/// The targets, by name (the fuzz binaries' and corpus folders' names).
pub const TARGETS: [(&str, Target); 5] = [
    ("checkpoint", checkpoint),
    ("state", state),
    ("logs", logs),
    ("lines", lines),
    ("columns", columns),
];

/// A checkpoint file: as read from disk (magic, version, checksum first),
/// and its payload behind a valid frame, so the decoder behind the
/// checksum is reached; a decoded checkpoint encodes and decodes again to
/// itself. State shard files the same way.
pub fn checkpoint(data: &[u8]) {
    let _ = checkpoint::decode(data);
    if let Ok(cp) = checkpoint::decode(&shards::frame(checkpoint::MAGIC, data)) {
        let again = rmp_serde::to_vec(&cp).expect("a decoded checkpoint encodes");
        let back = checkpoint::decode(&shards::frame(checkpoint::MAGIC, &again))
            .expect("a re-encoded checkpoint decodes");
        assert_eq!(
            rmp_serde::to_vec(&back).expect("encodes"),
            again,
            "a checkpoint round trip"
        );
    }
    let _ = shards::unframe(shards::MAGIC, "state shard", data);
    let framed = shards::frame(shards::MAGIC, data);
    let payload = shards::unframe(shards::MAGIC, "state shard", &framed);
    assert_eq!(
        payload.ok(),
        Some(data),
        "a framed shard unframes to itself"
    );
}

/// Every stateful operator's state restored from the bytes, whole and as a
/// header and shards (cut where the first bytes say).
pub fn state(data: &[u8]) {
    let states = || -> Vec<Box<dyn OperatorState>> {
        vec![
            Box::new(MapWithState::new(2, Some(1))),
            Box::new(StateByKey::new(2)),
            Box::new(WindowedReduce::new(2)),
            Box::new(WindowBuffer::default()),
        ]
    };
    for mut s in states() {
        let _ = s.restore(&mut StateReader::new(data));
    }
    let (cuts, rest) = data.split_at(data.len().min(2));
    let a = cuts.first().map_or(0, |&c| c as usize).min(rest.len());
    let b = cuts.get(1).map_or(0, |&c| c as usize).min(rest.len() - a) + a;
    let (header, shard0, shard1) = (&rest[..a], &rest[a..b], &rest[b..]);
    for mut s in states() {
        let mut shards = [StateReader::new(shard0), StateReader::new(shard1)];
        let _ = s.restore_shards(&mut StateReader::new(header), &mut shards);
    }
}

/// A frame log (write-ahead log segment, batch log): its bytes as read,
/// then a log of valid frames cut from the bytes (a length byte, a kind
/// byte, the payload), each frame's payload decoded as the write-ahead log
/// and the batch log decode theirs.
pub fn logs(data: &[u8]) {
    let _ = framelog::read_bytes(data, 0, &"fuzz");
    let mut log = Vec::from(*b"SLUICEWL");
    log.extend_from_slice(&framelog::FORMAT_VERSION.to_le_bytes());
    let mut frames = 0;
    let mut rest = data;
    while let [len, kind, tail @ ..] = rest {
        let (payload, after) = tail.split_at((*len as usize).min(tail.len()));
        let mut body = vec![*kind];
        body.extend_from_slice(payload);
        log.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        log.extend_from_slice(&body);
        log.extend_from_slice(&xxhash_rust::xxh3::xxh3_64(&body).to_le_bytes());
        frames += 1;
        rest = after;
    }
    let contents = framelog::read_bytes(&log, 0, &"fuzz").expect("a log of valid frames reads");
    assert_eq!(contents.frames.len(), frames, "every valid frame is read");
    assert!(contents.damage.is_none(), "{:?}", contents.damage);
    let mut column = Column::new();
    for frame in &contents.frames {
        let _ = wal::push_lines(&frame.payload, &mut column);
        let _ = wal::push_values(&frame.payload, &mut column);
        let _ = rmp_serde::from_slice::<BatchRecord>(&frame.payload);
    }
    column
        .validate()
        .expect("what the write-ahead log decodes is a valid column");
}

/// The socket receiver's line splitter, fed the bytes (after a settings
/// byte) in chunks of the sizes the bytes say, against a plain model: the
/// lines ended by `\n`, `\r` or `\r\n` (as Java's `readLine`), lines over
/// the limit dropped,
/// invalid UTF-8 replaced or skipped, a last unterminated line delivered at
/// the end of the connection.
pub fn lines(data: &[u8]) {
    let Some((&settings, data)) = data.split_first() else {
        return;
    };
    let max_line_bytes = 1 + (settings & 0x3f) as usize;
    let skip = settings & 0x40 != 0;
    let config = SocketConfig {
        max_line_bytes,
        non_utf8: if skip {
            NonUtf8Policy::Skip
        } else {
            NonUtf8Policy::Replace
        },
        ..SocketConfig::default()
    };
    let sink = Lines::default();
    let mut splitter = LineSplitter::new(&config, Arc::new(SocketStats::default()));
    let mut rest = data;
    let mut step = settings as usize % 7 + 1;
    while !rest.is_empty() {
        let (chunk, after) = rest.split_at(step.min(rest.len()));
        splitter.feed(chunk, &sink);
        step = (step * 5 + chunk.first().map_or(1, |&b| b as usize)) % 64 + 1;
        rest = after;
    }
    splitter.finish(&sink);
    let mut want = Vec::new();
    let mut parts: Vec<&[u8]> = Vec::new();
    let (mut start, mut i) = (0, 0);
    while i < data.len() {
        let end = i;
        i += match (data[i], data.get(i + 1)) {
            (b'\r', Some(b'\n')) => 2,
            (b'\r' | b'\n', _) => 1,
            _ => {
                i += 1;
                continue;
            }
        };
        parts.push(&data[start..end]);
        start = i;
    }
    if start < data.len() {
        parts.push(&data[start..]);
    }
    for line in parts {
        if line.len() > max_line_bytes {
            continue;
        }
        match std::str::from_utf8(line) {
            Ok(s) => want.push(s.to_string()),
            Err(_) if skip => {}
            Err(_) => want.push(String::from_utf8_lossy(line).into_owned()),
        }
    }
    let got = sink.0.into_inner().unwrap_or_else(|e| e.into_inner());
    assert_eq!(
        got, want,
        "lines of {data:?} (limit {max_line_bytes}, skip {skip})"
    );
}

/// What the splitter delivers.
#[derive(Default)]
struct Lines(Mutex<Vec<String>>);

impl LineSink for Lines {
    fn push_line(&self, line: &str) {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(line.to_string());
    }

    fn push_encoded(&self, _: &Column) {}
}

/// A guest's output column (offsets from the first bytes, then the
/// values' bytes) validated as the host validates it: the fast path and
/// the thorough one agree, and a valid column's every value is exactly one
/// MessagePack value to `rmpv` too.
pub fn columns(data: &[u8]) {
    let Some((&n, data)) = data.split_first() else {
        return;
    };
    let n = (n as usize % 16).min(data.len() / 4);
    let (offsets, bytes) = data.split_at(n * 4);
    let column = Column {
        offsets: offsets
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
        bytes: bytes.to_vec(),
    };
    // Offsets that fit, as most guest output's do: the values reach the
    // MessagePack checks.
    let spread = Column {
        offsets: (0..=n)
            .map(|i| (i * bytes.len() / n.max(1)) as u32)
            .filter(|_| n > 0)
            .collect(),
        bytes: if n > 0 { bytes.to_vec() } else { Vec::new() },
    };
    for c in [column, spread] {
        let fast = c.validate();
        let thorough = c.validate_thoroughly();
        assert_eq!(
            fast.is_ok(),
            thorough.is_ok(),
            "fast {fast:?}, thorough {thorough:?}"
        );
        if fast.is_ok() {
            for i in 0..c.len() {
                let mut value = c.get(i);
                if value.is_empty() {
                    continue;
                }
                match rmpv::decode::read_value(&mut value) {
                    Ok(_) => assert!(value.is_empty(), "value {i} is one MessagePack value"),
                    // The reference stops at a nesting depth; the
                    // validator, iterative, has no such limit.
                    Err(rmpv::decode::Error::DepthLimitExceeded) => {}
                    Err(e) => panic!("value {i} of a valid column does not read: {e}"),
                }
            }
        }
    }
}

/// Runs every committed corpus input of fuzz target `name`
/// (`fuzz/corpus/NAME/`: the seeds and every crash the fuzzer found, kept
/// there) through `target`, as a regression test does; returns how many.
///
/// # Panics
/// On an input the target panics on (naming its file), or without a corpus.
pub fn run_corpus(name: &str, target: Target) -> usize {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/corpus")
        .join(name);
    let entries = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("the corpus of `{name}` ({}): {e}", dir.display()));
    let mut ran = 0;
    for entry in entries {
        let path = entry.expect("corpus entry").path();
        let bytes = std::fs::read(&path).expect("corpus file");
        let outcome = std::panic::catch_unwind(|| target(&bytes));
        assert!(outcome.is_ok(), "{name}: {} fails", path.display());
        ran += 1;
    }
    ran
}

#[cfg(test)]
mod tests {
    use super::TARGETS;

    /// Every committed corpus input (and every crash the fuzzer found,
    /// kept there) runs through its target.
    #[test]
    fn the_fuzz_corpus_runs_through_every_target() {
        for (name, target) in TARGETS {
            assert!(super::run_corpus(name, target) > 0, "a corpus for `{name}`");
        }
    }

    /// The committed seeds are what this build encodes (a checkpoint, two
    /// operators' state, log frames, ...), so a format change cannot leave
    /// the fuzzer starting from stale inputs; `SLUICE_WRITE_CORPUS=1 cargo
    /// test -p sluice-core --lib fuzz` writes them anew.
    #[test]
    fn the_seed_corpus_holds_this_builds_encodings() {
        use crate::checkpoint::{BatchRecord, Checkpoint, StateReader, StateWriter};
        use crate::ops::window::{MapWithState, OperatorState, StateByKey};
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus");
        let rewrite = std::env::var_os("SLUICE_WRITE_CORPUS").is_some();
        let write = |target: &str, name: &str, bytes: &[u8]| {
            let path = root.join(target).join(name);
            if rewrite {
                std::fs::create_dir_all(root.join(target)).unwrap();
                std::fs::write(&path, bytes).unwrap();
            }
            let committed = std::fs::read(&path).unwrap_or_default();
            assert!(
                committed == bytes,
                "{} is not what this build encodes: SLUICE_WRITE_CORPUS=1 rewrites it",
                path.display()
            );
        };
        let cp = Checkpoint {
            graph: "0 `lines` from [] every 1000 ms: queue of 2 batches\n".to_string(),
            batch_time: 3000,
            batch_index: 2,
            first_batch_time: 1000,
            plugins: Default::default(),
            sources: vec![2u64.to_le_bytes().to_vec()],
            state: [(2, vec![1, 2, 3])].into_iter().collect(),
            shards: [(2, vec!["state-3000-2-0".to_string()])]
                .into_iter()
                .collect(),
        };
        let payload = rmp_serde::to_vec(&cp).unwrap();
        write("checkpoint", "payload", &payload);
        write(
            "checkpoint",
            "file",
            &crate::checkpoint::shards::frame(crate::checkpoint::MAGIC, &payload),
        );
        let mut w = StateWriter::new();
        MapWithState::new(2, Some(1)).snapshot(&mut w);
        write("state", "map_with_state", &w.into_bytes());
        let mut w = StateWriter::new();
        w.u64(2);
        for (k, v) in [(&b"\xa1a"[..], &b"\x01"[..]), (b"\xa1b", b"\x02")] {
            w.u64(1);
            w.bytes(k);
            w.bytes(v);
        }
        let keyed = w.into_bytes();
        let mut restored = StateByKey::new(2);
        restored.restore(&mut StateReader::new(&keyed)).unwrap();
        write("state", "state_by_key", &keyed);
        // logs: (length, kind, payload) frames: lines, values, a seal, a batch record.
        let mut logs = Vec::new();
        for (kind, payload) in [
            (1u8, b"a b\nc\n".to_vec()),
            (3, b"\xa1x\x05".to_vec()),
            (2, 1000i64.to_le_bytes().to_vec()),
            (
                1,
                rmp_serde::to_vec(&BatchRecord {
                    batch_time: 1000,
                    batch_index: 0,
                    sources: vec![vec![0; 8]],
                })
                .unwrap(),
            ),
        ] {
            logs.push(payload.len() as u8);
            logs.push(kind);
            logs.extend_from_slice(&payload);
        }
        write("logs", "frames", &logs);
        write("lines", "crlf", b"\x08ab\r\ncdefghijkl\nmn\xff\no");
        write("lines", "cr", b"\x10a\rb\n\rc\r\r\nd\r");
        write("lines", "skip", b"\x44one\ntwo\xc3\n\n\r\nlast");
        let mut cols = vec![2u8];
        cols.extend_from_slice(&0u32.to_le_bytes());
        cols.extend_from_slice(&2u32.to_le_bytes());
        cols.extend_from_slice(b"\xa1a\x92\x01\xc0");
        write("columns", "values", &cols);
    }
}
