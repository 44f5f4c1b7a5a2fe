//! Columnar batches: MessagePack values back to back plus offsets (Arrow style).
//!
//! This is the in-memory form of the WIT `column` and `batch` records, shared by
//! the host and the guests so a batch crosses the boundary without per-element
//! objects.

use serde::Serialize;

/// Appends `bytes` to `out`: `extend_from_slice`, with copies of up to 16
/// bytes (most words, keys and small values) done as two overlapping loads
/// and stores. A copy of a variable length otherwise becomes a call to
/// `memcpy`, which in a wasm guest is `memory.copy`, a call out of the
/// guest's code into the runtime. Inlined where values are encoded (a call
/// per element costs a wasm guest a frame, a stack check and an epoch
/// check); longer copies out of line.
#[inline(always)]
pub(crate) fn append(out: &mut Vec<u8>, bytes: &[u8]) {
    if bytes.len() > 16 {
        append_long(out, None, bytes);
        return;
    }
    out.reserve(16);
    // SAFETY: `reserve(16)` leaves room for the at most 16 bytes written.
    unsafe { copy_short(out, bytes) }
}

/// Appends the byte `head` then `bytes` (a fixstr's marker and its bytes)
/// with one capacity check: [`append`] for a value with a one-byte header.
#[inline(always)]
pub(crate) fn append_headed(out: &mut Vec<u8>, head: u8, bytes: &[u8]) {
    if bytes.len() > 16 {
        append_long(out, Some(head), bytes);
        return;
    }
    out.reserve(17);
    // SAFETY: `reserve(17)` leaves room for the header byte and the at most
    // 16 bytes after it.
    unsafe {
        let len = out.len();
        *out.as_mut_ptr().add(len) = head;
        out.set_len(len + 1);
        copy_short(out, bytes);
    }
}

/// [`append`] and [`append_headed`] of more than 16 bytes.
#[inline(never)]
fn append_long(out: &mut Vec<u8>, head: Option<u8>, bytes: &[u8]) {
    out.reserve(1 + bytes.len());
    out.extend(head);
    out.extend_from_slice(bytes);
}

/// Copies `bytes` (at most 16) after `out`'s end and extends it over them.
///
/// # Safety
/// `out` must have room for 16 more bytes.
#[inline(always)]
unsafe fn copy_short(out: &mut Vec<u8>, bytes: &[u8]) {
    let n = bytes.len();
    debug_assert!(n <= 16 && out.capacity() - out.len() >= 16);
    let len = out.len();
    let src = bytes.as_ptr();
    // SAFETY (with the caller's room for 16 bytes): every read is within
    // `bytes` (each branch reads only where `n` allows) and every write
    // within those 16 bytes; `set_len` covers only the `n` bytes written.
    unsafe {
        let dst = out.as_mut_ptr().add(len);
        if n >= 8 {
            let a = src.cast::<u64>().read_unaligned();
            let b = src.add(n - 8).cast::<u64>().read_unaligned();
            dst.cast::<u64>().write_unaligned(a);
            dst.add(n - 8).cast::<u64>().write_unaligned(b);
        } else if n >= 4 {
            let a = src.cast::<u32>().read_unaligned();
            let b = src.add(n - 4).cast::<u32>().read_unaligned();
            dst.cast::<u32>().write_unaligned(a);
            dst.add(n - 4).cast::<u32>().write_unaligned(b);
        } else if n > 0 {
            // 1 to 3 bytes: first, middle and last (some the same).
            *dst = *src;
            *dst.add(n / 2) = *src.add(n / 2);
            *dst.add(n - 1) = *src.add(n - 1);
        }
        out.set_len(len + n);
    }
}

/// One column of MessagePack-encoded values.
///
/// Element `i` is `bytes[offsets[i]..offsets[i + 1]]`; an empty range is an
/// absent element. A column of `n` elements has `n + 1` offsets, or none when
/// `n` is 0.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Column {
    /// The encoded values, back to back.
    pub bytes: Vec<u8>,
    /// `n + 1` offsets into `bytes`, or none for an empty column.
    pub offsets: Vec<u32>,
}

impl Column {
    /// An empty column.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty column with room for `elements` values of `bytes` bytes in all.
    pub fn with_capacity(elements: usize, bytes: usize) -> Self {
        let mut offsets = Vec::with_capacity(elements + 1);
        offsets.push(0);
        Column {
            bytes: Vec::with_capacity(bytes),
            offsets,
        }
    }

    /// Number of elements.
    #[inline]
    pub fn len(&self) -> usize {
        self.offsets.len().saturating_sub(1)
    }

    /// Whether the column has no elements.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The encoded bytes of element `i` (empty when absent).
    ///
    /// # Panics
    /// When `i >= self.len()` or the offsets are inconsistent; columns received
    /// from elsewhere must pass [`Column::validate`] first.
    #[inline]
    pub fn get(&self, i: usize) -> &[u8] {
        &self.bytes[self.offsets[i] as usize..self.offsets[i + 1] as usize]
    }

    /// Iterates over the encoded elements.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = &[u8]> + '_ {
        self.offsets
            .windows(2)
            .map(move |w| &self.bytes[w[0] as usize..w[1] as usize])
    }

    #[inline]
    fn start_element(&mut self) {
        if self.offsets.is_empty() {
            self.offsets.push(0);
        }
    }

    #[inline]
    fn end_element(&mut self) -> Result<(), EncodeError> {
        let end = u32::try_from(self.bytes.len()).map_err(|_| EncodeError::TooLarge)?;
        self.offsets.push(end);
        Ok(())
    }

    /// Appends an already-encoded value (or an empty slice for an absent element).
    #[inline]
    pub fn push_encoded(&mut self, encoded: &[u8]) -> Result<(), EncodeError> {
        self.start_element();
        append(&mut self.bytes, encoded);
        self.end_element()
    }

    /// Appends an absent element.
    pub fn push_absent(&mut self) -> Result<(), EncodeError> {
        self.push_encoded(&[])
    }

    /// Encodes `value` as canonical MessagePack and appends it.
    #[inline(always)]
    pub fn push<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), EncodeError> {
        self.start_element();
        let before = self.bytes.len();
        if let Err(e) = crate::fastser::write(&mut self.bytes, value) {
            return Err(self.encode_failed(before, e));
        }
        self.end_element()
    }

    /// Appends the value `write` encodes (canonical MessagePack: the
    /// [`Put`](crate::plain::Put) codecs).
    #[inline(always)]
    pub(crate) fn push_with(
        &mut self,
        write: impl FnOnce(&mut Vec<u8>),
    ) -> Result<(), EncodeError> {
        self.start_element();
        write(&mut self.bytes);
        self.end_element()
    }

    /// [`Column::push`]'s error path, out of line: drops the partly written
    /// value and says why it could not be encoded.
    #[cold]
    #[inline(never)]
    fn encode_failed(&mut self, before: usize, e: rmp_serde::encode::Error) -> EncodeError {
        self.bytes.truncate(before);
        EncodeError::Value(e.to_string())
    }

    /// Appends a string value; the fast path of [`Column::push`] for `&str`.
    #[inline]
    pub fn push_str(&mut self, s: &str) -> Result<(), EncodeError> {
        self.start_element();
        // Writing a string to a Vec cannot fail.
        let _ = crate::fastser::write(&mut self.bytes, s);
        self.end_element()
    }

    /// Removes all elements, keeping the allocations.
    pub fn clear(&mut self) {
        self.bytes.clear();
        self.offsets.clear();
    }

    /// Appends all elements of `other`.
    pub fn extend_from(&mut self, other: &Column) -> Result<(), EncodeError> {
        self.extend_from_range(other, 0..other.len())
    }

    /// Appends elements `range` of `other`, in one copy.
    ///
    /// # Panics
    /// When `range` is not within `other`.
    pub fn extend_from_range(
        &mut self,
        other: &Column,
        range: std::ops::Range<usize>,
    ) -> Result<(), EncodeError> {
        if range.is_empty() {
            return Ok(());
        }
        self.start_element();
        let base = self.bytes.len();
        let (from, to) = (
            other.offsets[range.start] as usize,
            other.offsets[range.end] as usize,
        );
        if u32::try_from(base + to - from).is_err() {
            return Err(EncodeError::TooLarge);
        }
        self.bytes.extend_from_slice(&other.bytes[from..to]);
        self.offsets.extend(
            other.offsets[range.start + 1..=range.end]
                .iter()
                .map(|&o| (base + o as usize - from) as u32),
        );
        Ok(())
    }

    /// Checks the offsets (count, monotonicity, bounds) and that every present
    /// element is exactly one well-formed MessagePack value.
    pub fn validate(&self) -> Result<(), ValidationError> {
        self.check(true)
    }

    /// [`Column::validate`] without its fast path for common shapes: the
    /// reference the fast path is fuzzed against.
    #[doc(hidden)]
    pub fn validate_thoroughly(&self) -> Result<(), ValidationError> {
        self.check(false)
    }

    /// [`Column::validate`], with or without the fast path for common shapes.
    fn check(&self, fast: bool) -> Result<(), ValidationError> {
        if self.offsets.is_empty() {
            return if self.bytes.is_empty() {
                Ok(())
            } else {
                Err(ValidationError::Offsets(
                    "bytes without offsets".to_string(),
                ))
            };
        }
        if self.offsets[0] != 0 {
            return Err(ValidationError::Offsets(format!(
                "first offset is {}, not 0",
                self.offsets[0]
            )));
        }
        let last = *self.offsets.last().unwrap_or(&0) as usize;
        if last != self.bytes.len() {
            return Err(ValidationError::Offsets(format!(
                "last offset is {last} but there are {} bytes",
                self.bytes.len()
            )));
        }
        if fast && self.is_plainly_valid() {
            return Ok(());
        }
        for (i, w) in self.offsets.windows(2).enumerate() {
            if w[1] < w[0] {
                return Err(ValidationError::Offsets(format!(
                    "offset {} ({}) is below offset {i} ({})",
                    i + 1,
                    w[1],
                    w[0]
                )));
            }
            // Only the last offset is known to be in bounds: a middle one
            // may point past the end and come back (found by fuzzing).
            let Some(value) = self.bytes.get(w[0] as usize..w[1] as usize) else {
                return Err(ValidationError::Offsets(format!(
                    "offset {} ({}) is past the end ({} bytes)",
                    i + 1,
                    w[1],
                    self.bytes.len()
                )));
            };
            if value.is_empty() {
                continue;
            }
            match crate::msgpack::is_single_value(value) {
                Ok(true) => {}
                Ok(false) => {
                    let n = crate::msgpack::value_len(value).unwrap_or(0);
                    return Err(ValidationError::Element {
                        index: i,
                        message: format!(
                            "{} trailing bytes after a {n}-byte value",
                            value.len() - n
                        ),
                    });
                }
                Err(e) => {
                    return Err(ValidationError::Element {
                        index: i,
                        message: e.to_string(),
                    });
                }
            }
        }
        Ok(())
    }
}

impl Column {
    /// The common case of [`Column::validate`] in one tight pass: offsets in
    /// order, and every element a scalar, a short string, or a pair of them,
    /// their string bytes all ASCII. `false` means "not shown here", never
    /// "invalid": the exact check then runs and names the element at fault.
    /// Needs `offsets[0] == 0` and the last offset equal to `bytes.len()`.
    fn is_plainly_valid(&self) -> bool {
        /// Per marker, the length of the scalar or fixstr it starts (0:
        /// neither): positive and negative fixints, nil, false, true, and
        /// fixstrs. A table, not tests: string lengths vary from element
        /// to element, and a mispredicted jump per element would cost more
        /// than the rest.
        const SIMPLE_LEN: [u8; 256] = {
            let mut t = [0u8; 256];
            let mut m = 0;
            while m < 256 {
                t[m] = match m as u8 {
                    0x00..=0x7f | 0xe0..=0xff | 0xc0 | 0xc2 | 0xc3 => 1,
                    0xa0..=0xbf => 1 + (m as u8 & 0x1f),
                    _ => 0,
                };
                m += 1;
            }
            t
        };
        let simple_len = |m: u8| SIMPLE_LEN[m as usize] as usize;
        let bytes = &self.bytes[..];
        let mut start = 0usize;
        // Markers with the high bit set. The elements cover every byte, and
        // in these shapes every byte is a marker or a string byte; so the
        // strings are ASCII exactly when the column has no other high bytes.
        let mut high_markers = 0usize;
        for &end in &self.offsets[1..] {
            let end = end as usize;
            // `None` also when the offsets decrease.
            let Some(v) = bytes.get(start..end) else {
                return false;
            };
            start = end;
            let Some(&m) = v.first() else {
                continue;
            };
            high_markers += (m >> 7) as usize;
            let n = if m == 0x92 {
                let Some(&k) = v.get(1) else { return false };
                let kn = simple_len(k);
                let Some(&w) = v.get(1 + kn) else {
                    return false;
                };
                let wn = simple_len(w);
                if kn == 0 || wn == 0 {
                    return false;
                }
                high_markers += (k >> 7) as usize + (w >> 7) as usize;
                1 + kn + wn
            } else {
                simple_len(m)
            };
            if n != v.len() {
                return false;
            }
        }
        high_bytes(bytes) == high_markers
    }
}

/// How many of `bytes` have the high bit set: eight at a time in byte lanes
/// (plain `filter().count()` widens every byte to 64 bits).
fn high_bytes(bytes: &[u8]) -> usize {
    const LOW: u64 = 0x0101_0101_0101_0101;
    /// Sum of the eight byte lanes of `acc`.
    fn lanes(acc: u64) -> usize {
        let pairs = (acc & 0x00ff_00ff_00ff_00ff) + ((acc >> 8) & 0x00ff_00ff_00ff_00ff);
        (pairs.wrapping_mul(0x0001_0001_0001_0001) >> 48) as usize
    }
    let word = |w: &[u8]| (u64::from_le_bytes(w.try_into().unwrap_or([0; 8])) >> 7) & LOW;
    let mut total = 0;
    // At most 255 words per block, so that no lane overflows.
    let mut blocks = bytes.chunks_exact(8 * 255);
    for block in &mut blocks {
        total += lanes(block.chunks_exact(8).map(word).sum());
    }
    let rest = blocks.remainder();
    let mut words = rest.chunks_exact(8);
    total += lanes((&mut words).map(word).sum());
    total + words.remainder().iter().filter(|&&b| b >= 0x80).count()
}

/// A batch of elements: optional keys beside values (the WIT `batch`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Batch {
    /// Keys; empty when no element has a key, else as long as `values`.
    pub keys: Column,
    /// Values.
    pub values: Column,
}

impl Batch {
    /// A batch of values without keys.
    pub fn from_values(values: Column) -> Self {
        Batch {
            keys: Column::new(),
            values,
        }
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.values.len()
    }

    /// Whether the batch has no elements.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// Whether any element may have a key.
    pub fn has_keys(&self) -> bool {
        !self.keys.offsets.is_empty()
    }

    /// The elements as one value column: a keyed element `(k, v)` becomes the
    /// two-element array `[k, v]`, an element without key stays as it is.
    /// Borrows when there are no keys.
    pub fn joined_values(&self) -> std::borrow::Cow<'_, Column> {
        if !self.has_keys() {
            return std::borrow::Cow::Borrowed(&self.values);
        }
        let mut out = Column::with_capacity(
            self.values.len(),
            self.keys.bytes.len() + self.values.bytes.len() + self.values.len(),
        );
        for i in 0..self.values.len() {
            let k = self.keys.get(i);
            let v = self.values.get(i);
            out.start_element();
            if !k.is_empty() {
                out.bytes.push(0x92);
                append(&mut out.bytes, k);
            }
            append(&mut out.bytes, v);
            // Offsets fit: the joined size was checked by the caller's limits.
            let _ = out.end_element();
        }
        std::borrow::Cow::Owned(out)
    }

    /// Checks both columns and that keys, when present, match the values in count.
    pub fn validate(&self) -> Result<(), ValidationError> {
        self.values.validate()?;
        if self.has_keys() {
            self.keys.validate()?;
            if self.keys.len() != self.values.len() {
                return Err(ValidationError::Offsets(format!(
                    "{} keys for {} values",
                    self.keys.len(),
                    self.values.len()
                )));
            }
        }
        Ok(())
    }
}

/// A value could not be appended to a column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EncodeError {
    /// The value cannot be encoded (e.g. a map with non-string keys in a format that needs them).
    Value(String),
    /// The column would exceed 4 GiB.
    TooLarge,
}

impl std::fmt::Display for EncodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EncodeError::Value(m) => write!(f, "cannot encode value: {m}"),
            EncodeError::TooLarge => f.write_str("column exceeds 4 GiB"),
        }
    }
}

impl std::error::Error for EncodeError {}

/// A column received from elsewhere is malformed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ValidationError {
    /// The offsets do not describe the bytes.
    Offsets(String),
    /// One element is not a single well-formed MessagePack value.
    Element {
        /// Index of the element.
        index: usize,
        /// What is wrong with it.
        message: String,
    },
}

impl std::fmt::Display for ValidationError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ValidationError::Offsets(m) => write!(f, "malformed column: {m}"),
            ValidationError::Element { index, message } => {
                write!(f, "malformed element {index}: {message}")
            }
        }
    }
}

impl std::error::Error for ValidationError {}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found by fuzzing (`fuzz/corpus/state/`): a middle offset past the
    /// end of the bytes, the last one back in bounds, is refused, not a
    /// panic — a guest's output is validated with this.
    #[test]
    fn an_offset_past_the_end_is_refused() {
        for c in [
            Column {
                offsets: vec![0, 256, 0],
                bytes: Vec::new(),
            },
            Column {
                offsets: vec![0, 9, 9, 1],
                bytes: vec![0x01],
            },
        ] {
            let e = c.validate().unwrap_err().to_string();
            assert!(e.contains("is past the end"), "{e}");
            assert!(c.validate_thoroughly().is_err());
        }
    }

    #[test]
    fn append_headed_writes_the_header_then_the_bytes() {
        let source: Vec<u8> = (0..40u8).collect();
        for n in 0..=source.len() {
            let mut fast = vec![7u8; 3];
            fast.shrink_to_fit();
            append_headed(&mut fast, 0xa0, &source[..n]);
            let mut plain = vec![7u8; 3];
            plain.push(0xa0);
            plain.extend_from_slice(&source[..n]);
            assert_eq!(fast, plain, "{n} bytes");
        }
    }

    #[test]
    fn append_copies_every_length_like_extend_from_slice() {
        let source: Vec<u8> = (0..40u8)
            .map(|b| b.wrapping_mul(37).wrapping_add(1))
            .collect();
        for prefix in [0usize, 1, 5, 15] {
            for n in 0..=source.len() {
                let mut fast = vec![0xee; prefix];
                let mut plain = fast.clone();
                // A capacity that is exactly full, so `append` must grow it.
                fast.shrink_to_fit();
                append(&mut fast, &source[..n]);
                plain.extend_from_slice(&source[..n]);
                assert_eq!(fast, plain, "prefix {prefix}, {n} bytes");
                // Appending again goes after what was written.
                append(&mut fast, &source[source.len() - n..]);
                plain.extend_from_slice(&source[source.len() - n..]);
                assert_eq!(fast, plain, "prefix {prefix}, twice {n} bytes");
            }
        }
    }

    #[test]
    fn push_and_get_round_trip() {
        let mut c = Column::new();
        c.push_str("hello").unwrap();
        c.push(&("the", 2i64)).unwrap();
        c.push_absent().unwrap();
        assert_eq!(c.len(), 3);
        assert_eq!(c.get(0), b"\xa5hello");
        assert_eq!(c.get(1), b"\x92\xa3the\x02");
        assert!(c.get(2).is_empty());
        c.validate().unwrap();
    }

    #[test]
    fn integers_use_the_smallest_encoding() {
        let mut c = Column::new();
        c.push(&1i64).unwrap();
        c.push(&300u64).unwrap();
        c.push(&-1i32).unwrap();
        assert_eq!(c.get(0), &[0x01]);
        assert_eq!(c.get(1), &[0xcd, 0x01, 0x2c]);
        assert_eq!(c.get(2), &[0xff]);
    }

    #[test]
    fn validation_rejects_bad_offsets_and_values() {
        let c = Column {
            bytes: vec![0x01, 0x02],
            offsets: vec![0, 2],
        };
        assert!(matches!(
            c.validate(),
            Err(ValidationError::Element { index: 0, .. })
        ));
        let c = Column {
            bytes: vec![0x01],
            offsets: vec![0, 5],
        };
        assert!(matches!(c.validate(), Err(ValidationError::Offsets(_))));
        let c = Column {
            bytes: vec![0x01, 0x02],
            offsets: vec![0, 2, 1],
        };
        assert!(c.validate().is_err());
        let c = Column {
            bytes: vec![0xa5, b'h'],
            offsets: vec![0, 2],
        };
        assert!(c.validate().is_err());
    }

    /// Elements of the shapes the fast path knows, and near misses of them.
    const SHAPES: &[&[u8]] = &[
        b"\x01",
        b"\xff",
        b"\xc0",
        b"\xc3",
        b"\xa0",
        b"\xa3abc",
        b"\xa2\xc3\xa9", // "é": UTF-8, not ASCII
        b"\xa2\xff\xfe", // not UTF-8
        b"\xa1\x80",     // a lone continuation byte
        b"\xa3ab",       // truncated
        b"\xa1ab",       // trailing byte
        b"\x92\xa1k\x01",
        b"\x92\xa2\xc3\xa9\x01",
        b"\x92\xa1\xff\x01",
        b"\x92\xa1k",            // pair missing its value
        b"\x92\xa1k\x01\x02",    // trailing byte
        b"\x92\x92\x01\x02\x03", // nested pair
        b"\xcb\0\0\0\0\0\0\0\0",
        b"\xc1",
        b"\xd9\x01a",
        b"",
    ];

    #[test]
    fn fast_validation_agrees_with_the_exact_check() {
        let mut x = 0x2545_f491_4f6c_dd1du64;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for round in 0..20_000 {
            let n = 1 + (next() % 6) as usize;
            let mut c = Column::new();
            let mut offset = 0u32;
            c.offsets.push(0);
            for _ in 0..n {
                let e = SHAPES[(next() % SHAPES.len() as u64) as usize];
                c.bytes.extend_from_slice(e);
                offset += e.len() as u32;
                c.offsets.push(offset);
            }
            if round % 7 == 0 && n > 1 {
                // Offsets out of order.
                c.offsets.swap(1, 2);
            }
            let exact = c.check(false);
            if c.offsets[0] == 0
                && *c.offsets.last().unwrap() as usize == c.bytes.len()
                && c.is_plainly_valid()
            {
                assert_eq!(exact, Ok(()), "fast path accepted {c:?}");
            }
            assert_eq!(c.validate(), exact, "{c:?}");
        }
        // The shapes of a word count are taken by the fast path.
        let mut c = Column::new();
        c.push(&"word").unwrap();
        c.push(&("word", 1i64)).unwrap();
        c.push(&-3i64).unwrap();
        c.push_encoded(b"").unwrap();
        assert!(c.is_plainly_valid());
    }

    #[test]
    fn the_fast_path_takes_every_scalar_and_fixstr_marker_and_no_other() {
        let simple =
            |m: u8| matches!(m, 0x00..=0x7f | 0xe0..=0xff | 0xc0 | 0xc2 | 0xc3 | 0xa0..=0xbf);
        for m in 0..=255u8 {
            // The marker, then the bytes a fixstr of its length needs.
            let n = if m & 0xe0 == 0xa0 {
                (m & 0x1f) as usize
            } else {
                0
            };
            let mut one = vec![m];
            one.resize(1 + n, b'a');
            let mut c = Column::new();
            c.push_encoded(&one).unwrap();
            assert_eq!(c.is_plainly_valid(), simple(m), "marker {m:#04x}");
            let mut pair = vec![0x92, 0xa1, b'k'];
            pair.extend_from_slice(&one);
            let mut c = Column::new();
            c.push_encoded(&pair).unwrap();
            assert_eq!(c.is_plainly_valid(), simple(m), "pair value {m:#04x}");
            if simple(m) {
                assert_eq!(c.check(false), Ok(()), "pair value {m:#04x}");
            }
        }
    }

    #[test]
    fn joined_values_turn_keys_into_pairs() {
        let mut b = Batch::default();
        b.keys.push_str("a").unwrap();
        b.values.push(&1i64).unwrap();
        b.keys.push_absent().unwrap();
        b.values.push_str("plain").unwrap();
        let j = b.joined_values();
        assert_eq!(j.get(0), b"\x92\xa1a\x01");
        assert_eq!(j.get(1), b"\xa5plain");
    }

    #[test]
    fn extend_rebases_offsets() {
        let mut a = Column::new();
        a.push_str("x").unwrap();
        let mut b = Column::new();
        b.push_str("yy").unwrap();
        b.push_str("z").unwrap();
        a.extend_from(&b).unwrap();
        assert_eq!(a.len(), 3);
        assert_eq!(a.get(1), b"\xa2yy");
        assert_eq!(a.get(2), b"\xa1z");
        a.validate().unwrap();
    }

    #[test]
    fn a_range_of_a_column_appends_as_its_elements_would() {
        let mut other = Column::new();
        for s in ["a", "", "ccc", "dd"] {
            other.push_str(s).unwrap();
        }
        other.push_absent().unwrap();
        for range in [0..0, 0..5, 1..3, 2..5, 4..5] {
            let mut got = Column::new();
            got.push_str("first").unwrap();
            got.extend_from_range(&other, range.clone()).unwrap();
            let mut want = Column::new();
            want.push_str("first").unwrap();
            for i in range.clone() {
                want.push_encoded(other.get(i)).unwrap();
            }
            assert_eq!(got, want, "{range:?}");
            got.validate().unwrap();
        }
    }
}
