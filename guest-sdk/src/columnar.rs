//! Columnar batches: MessagePack values back to back plus offsets (Arrow style).
//!
//! This is the in-memory form of the WIT `column` and `batch` records, shared by
//! the host and the guests so a batch crosses the boundary without per-element
//! objects.

use serde::Serialize;

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
        self.bytes.extend_from_slice(encoded);
        self.end_element()
    }

    /// Appends an absent element.
    pub fn push_absent(&mut self) -> Result<(), EncodeError> {
        self.push_encoded(&[])
    }

    /// Encodes `value` as canonical MessagePack and appends it.
    #[inline]
    pub fn push<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), EncodeError> {
        self.start_element();
        let before = self.bytes.len();
        if let Err(e) = crate::fastser::write(&mut self.bytes, value) {
            self.bytes.truncate(before);
            return Err(EncodeError::Value(e.to_string()));
        }
        self.end_element()
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
        if other.is_empty() {
            return Ok(());
        }
        self.start_element();
        let base = self.bytes.len();
        let total = base + other.bytes.len();
        if u32::try_from(total).is_err() {
            return Err(EncodeError::TooLarge);
        }
        self.bytes.extend_from_slice(&other.bytes);
        let first = other.offsets[0] as usize;
        self.offsets.extend(
            other.offsets[1..]
                .iter()
                .map(|&o| (base + o as usize - first) as u32),
        );
        Ok(())
    }

    /// Checks the offsets (count, monotonicity, bounds) and that every present
    /// element is exactly one well-formed MessagePack value.
    pub fn validate(&self) -> Result<(), ValidationError> {
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
        for (i, w) in self.offsets.windows(2).enumerate() {
            if w[1] < w[0] {
                return Err(ValidationError::Offsets(format!(
                    "offset {} ({}) is below offset {i} ({})",
                    i + 1,
                    w[1],
                    w[0]
                )));
            }
            let value = &self.bytes[w[0] as usize..w[1] as usize];
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
                out.bytes.extend_from_slice(k);
            }
            out.bytes.extend_from_slice(v);
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
}
