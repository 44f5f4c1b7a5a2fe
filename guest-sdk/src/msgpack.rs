//! Structural MessagePack scanning: lengths, validation and pair splitting,
//! without decoding values.
//!
//! The host uses this to check untrusted guest output and to split a pair
//! value `[k, v]` into its key and value bytes without allocating.

/// Why bytes are not one well-formed MessagePack value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MsgpackError {
    /// The bytes end inside a value.
    Truncated,
    /// A byte that is not a MessagePack type marker (0xc1).
    BadMarker(u8),
    /// A string is not UTF-8.
    BadUtf8,
}

impl std::fmt::Display for MsgpackError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MsgpackError::Truncated => f.write_str("MessagePack value is truncated"),
            MsgpackError::BadMarker(b) => write!(f, "invalid MessagePack marker 0x{b:02x}"),
            MsgpackError::BadUtf8 => f.write_str("MessagePack string is not UTF-8"),
        }
    }
}

impl std::error::Error for MsgpackError {}

#[inline]
fn be(bytes: &[u8], at: usize, n: usize) -> Result<usize, MsgpackError> {
    let s = bytes.get(at..at + n).ok_or(MsgpackError::Truncated)?;
    Ok(s.iter().fold(0usize, |acc, &b| (acc << 8) | b as usize))
}

#[inline]
fn check_utf8(s: &[u8]) -> Result<(), MsgpackError> {
    // Most text is ASCII: a word-at-a-time scan, then the full check only if needed.
    if s.is_ascii() || std::str::from_utf8(s).is_ok() {
        Ok(())
    } else {
        Err(MsgpackError::BadUtf8)
    }
}

/// Whether `value` is exactly one well-formed MessagePack value (strings UTF-8).
///
/// Fast paths for the shapes streams are made of — a small integer, a short
/// string, a pair of them — fall back to the general scan for anything else.
#[inline]
pub fn is_single_value(value: &[u8]) -> Result<bool, MsgpackError> {
    #[inline]
    fn simple_len(b: &[u8]) -> Option<usize> {
        match *b.first()? {
            0x00..=0x7f | 0xe0..=0xff | 0xc0 | 0xc2 | 0xc3 => Some(1),
            m @ 0xa0..=0xbf => {
                let n = 1 + (m & 0x1f) as usize;
                (b.len() >= n && b[1..n].is_ascii()).then_some(n)
            }
            _ => None,
        }
    }
    if let Some(n) = simple_len(value) {
        return Ok(n == value.len());
    }
    if value.first() == Some(&0x92)
        && let Some(k) = simple_len(&value[1..])
        && let Some(v) = simple_len(&value[1 + k..])
    {
        return Ok(1 + k + v == value.len());
    }
    value_len(value).map(|n| n == value.len())
}

/// Length in bytes of the first MessagePack value in `bytes`, checking its
/// structure and that its strings are UTF-8. Iterative: nesting depth cannot
/// overflow the stack.
pub fn value_len(bytes: &[u8]) -> Result<usize, MsgpackError> {
    scan(bytes, true)
}

/// Length in bytes of the first MessagePack value in `bytes`, trusting its
/// strings to be UTF-8 (for values already validated).
#[inline]
pub fn skip_len(bytes: &[u8]) -> Result<usize, MsgpackError> {
    scan(bytes, false)
}

#[inline]
fn scan(bytes: &[u8], utf8: bool) -> Result<usize, MsgpackError> {
    let mut pos = 0usize;
    let mut pending = 1usize;
    while pending > 0 {
        pending -= 1;
        let marker = *bytes.get(pos).ok_or(MsgpackError::Truncated)?;
        pos += 1;
        // (payload bytes to skip, child values, payload is a string)
        let (skip, children, is_str) = match marker {
            0x00..=0x7f | 0xe0..=0xff | 0xc0 | 0xc2 | 0xc3 => (0, 0, false),
            0x80..=0x8f => (0, 2 * (marker & 0x0f) as usize, false),
            0x90..=0x9f => (0, (marker & 0x0f) as usize, false),
            0xa0..=0xbf => ((marker & 0x1f) as usize, 0, true),
            0xc4 => (1 + be(bytes, pos, 1)?, 0, false),
            0xc5 => (2 + be(bytes, pos, 2)?, 0, false),
            0xc6 => (4 + be(bytes, pos, 4)?, 0, false),
            0xc7 => (2 + be(bytes, pos, 1)?, 0, false),
            0xc8 => (3 + be(bytes, pos, 2)?, 0, false),
            0xc9 => (5 + be(bytes, pos, 4)?, 0, false),
            0xca => (4, 0, false),
            0xcb => (8, 0, false),
            0xcc | 0xd0 => (1, 0, false),
            0xcd | 0xd1 => (2, 0, false),
            0xce | 0xd2 => (4, 0, false),
            0xcf | 0xd3 => (8, 0, false),
            0xd4 => (2, 0, false),
            0xd5 => (3, 0, false),
            0xd6 => (5, 0, false),
            0xd7 => (9, 0, false),
            0xd8 => (17, 0, false),
            0xd9 => {
                let n = be(bytes, pos, 1)?;
                pos += 1;
                (n, 0, true)
            }
            0xda => {
                let n = be(bytes, pos, 2)?;
                pos += 2;
                (n, 0, true)
            }
            0xdb => {
                let n = be(bytes, pos, 4)?;
                pos += 4;
                (n, 0, true)
            }
            0xdc => (2, be(bytes, pos, 2)?, false),
            0xdd => (4, be(bytes, pos, 4)?, false),
            0xde => (2, 2 * be(bytes, pos, 2)?, false),
            0xdf => (4, 2 * be(bytes, pos, 4)?, false),
            0xc1 => return Err(MsgpackError::BadMarker(marker)),
        };
        let end = pos.checked_add(skip).ok_or(MsgpackError::Truncated)?;
        if end > bytes.len() {
            return Err(MsgpackError::Truncated);
        }
        if is_str && utf8 {
            check_utf8(&bytes[pos..end])?;
        }
        pos = end;
        pending = pending
            .checked_add(children)
            .ok_or(MsgpackError::Truncated)?;
        // Every pending value needs at least one byte.
        if pending > bytes.len() - pos {
            return Err(MsgpackError::Truncated);
        }
    }
    Ok(pos)
}

/// Splits a two-element array value `[k, v]` into the bytes of `k` and `v`;
/// `None` when the value is not such an array. Assumes `value` is valid.
pub fn split_pair(value: &[u8]) -> Option<(&[u8], &[u8])> {
    if value.first() != Some(&0x92) {
        return None;
    }
    let rest = &value[1..];
    let klen = skip_len(rest).ok()?;
    Some((&rest[..klen], &rest[klen..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc<T: serde::Serialize>(v: &T) -> Vec<u8> {
        rmp_serde::to_vec(v).unwrap()
    }

    #[test]
    fn lengths_of_nested_values() {
        let v = enc(&("word", vec![1i64, 2, 300], ("x", -5i64, 1.5f64)));
        assert_eq!(value_len(&v), Ok(v.len()));
        let mut twice = v.clone();
        twice.extend_from_slice(&v);
        assert_eq!(value_len(&twice), Ok(v.len()));
    }

    #[test]
    fn rejects_truncation_bad_markers_and_bad_utf8() {
        let v = enc(&("word", 1i64));
        assert_eq!(value_len(&v[..v.len() - 1]), Err(MsgpackError::Truncated));
        assert_eq!(value_len(&[0xc1]), Err(MsgpackError::BadMarker(0xc1)));
        assert_eq!(value_len(&[0xa2, 0xff, 0xfe]), Err(MsgpackError::BadUtf8));
        // An array32 header claiming 4 billion elements fails fast.
        assert_eq!(
            value_len(&[0xdd, 0xff, 0xff, 0xff, 0xff, 0x01]),
            Err(MsgpackError::Truncated)
        );
        assert_eq!(value_len(&[]), Err(MsgpackError::Truncated));
    }

    #[test]
    fn deep_nesting_does_not_overflow() {
        let mut v = vec![0x91u8; 1_000_000];
        v.push(0x01);
        assert_eq!(value_len(&v), Ok(v.len()));
    }

    #[test]
    fn fast_paths_agree_with_the_general_scan() {
        let cases: Vec<Vec<u8>> = vec![
            enc(&1),
            enc(&-3),
            enc(&"word"),
            enc(&"naïve"),
            enc(&("the", 2)),
            enc(&("日本", 300)),
            enc(&(1, 2)),
            enc(&vec![1, 2, 3]),
            vec![0xa3, b'a', b'b'],
            vec![0xa2, 0xff, 0xfe],
            vec![0x92, 0xa1, b'a'],
            vec![0x01, 0x02],
            vec![0x92, 0x01, 0x02, 0x03],
        ];
        for c in cases {
            let general = value_len(&c).map(|n| n == c.len());
            assert_eq!(is_single_value(&c), general, "{c:02x?}");
        }
    }

    #[test]
    fn splits_pairs() {
        let v = enc(&("the", 2i64));
        let (k, val) = split_pair(&v).unwrap();
        assert_eq!(k, enc(&"the").as_slice());
        assert_eq!(val, enc(&2i64).as_slice());
        assert!(split_pair(&enc(&"plain")).is_none());
        assert!(split_pair(&enc(&(1, 2, 3))).is_none());
    }
}
