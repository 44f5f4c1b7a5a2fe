//! Framing operator state in a checkpoint ([`StateWriter`],
//! [`StateReader`]).

use crate::error::{Error, Result};

/// Writes operator state into a checkpoint: integers little-endian, byte
/// strings and columns length-prefixed (Sluice's state is MessagePack bytes
/// already; this only frames it).
#[derive(Debug, Default)]
pub struct StateWriter {
    out: Vec<u8>,
}

impl StateWriter {
    /// An empty writer.
    pub fn new() -> Self {
        StateWriter::default()
    }

    /// The bytes written.
    pub fn into_bytes(self) -> Vec<u8> {
        self.out
    }

    /// Writes an unsigned integer.
    pub fn u64(&mut self, v: u64) {
        self.out.extend_from_slice(&v.to_le_bytes());
    }

    /// Writes a signed integer.
    pub fn i64(&mut self, v: i64) {
        self.out.extend_from_slice(&v.to_le_bytes());
    }

    /// Writes a byte string.
    pub fn bytes(&mut self, b: &[u8]) {
        self.u64(b.len() as u64);
        self.out.extend_from_slice(b);
    }

    /// Writes a column.
    pub fn column(&mut self, c: &sluice_sdk::Column) {
        self.bytes(&c.bytes);
        self.u64(c.offsets.len() as u64);
        for o in &c.offsets {
            self.out.extend_from_slice(&o.to_le_bytes());
        }
    }

    /// Writes a batch.
    pub fn batch(&mut self, b: &sluice_sdk::Batch) {
        self.column(&b.keys);
        self.column(&b.values);
    }

    /// Writes an RDD.
    pub fn rdd(&mut self, r: &crate::rdd::Rdd) {
        self.u64(r.partitions.len() as u64);
        for b in &r.partitions {
            self.batch(b);
        }
    }
}

/// Reads what a [`StateWriter`] wrote; every read is bounds-checked and a
/// column read back is validated, so damaged state is an error, not a crash.
#[derive(Debug)]
pub struct StateReader<'a> {
    rest: &'a [u8],
}

impl<'a> StateReader<'a> {
    /// A reader over `bytes`.
    pub fn new(bytes: &'a [u8]) -> Self {
        StateReader { rest: bytes }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        if self.rest.len() < n {
            return Err(Error::Internal(format!(
                "checkpoint state is truncated: {n} bytes wanted, {} left",
                self.rest.len()
            )));
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Ok(head)
    }

    /// Whether everything has been read.
    pub fn is_empty(&self) -> bool {
        self.rest.is_empty()
    }

    /// Reads an unsigned integer.
    pub fn u64(&mut self) -> Result<u64> {
        let mut b = [0u8; 8];
        b.copy_from_slice(self.take(8)?);
        Ok(u64::from_le_bytes(b))
    }

    /// Reads a signed integer.
    pub fn i64(&mut self) -> Result<i64> {
        let mut b = [0u8; 8];
        b.copy_from_slice(self.take(8)?);
        Ok(i64::from_le_bytes(b))
    }

    /// Reads a length that must fit in what is left (`unit` bytes each).
    fn len(&mut self, unit: usize) -> Result<usize> {
        let n = self.u64()?;
        match usize::try_from(n) {
            Ok(n) if n.saturating_mul(unit) <= self.rest.len() => Ok(n),
            _ => Err(Error::Internal(format!(
                "checkpoint state is damaged: a length of {n} with {} bytes left",
                self.rest.len()
            ))),
        }
    }

    /// Reads a byte string.
    pub fn bytes(&mut self) -> Result<&'a [u8]> {
        let n = self.len(1)?;
        self.take(n)
    }

    /// Reads a column.
    pub fn column(&mut self) -> Result<sluice_sdk::Column> {
        let bytes = self.bytes()?.to_vec();
        let n = self.len(4)?;
        let raw = self.take(n * 4)?;
        let offsets = raw
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        let c = sluice_sdk::Column { bytes, offsets };
        c.validate().map_err(|e| {
            Error::Internal(format!("checkpoint state holds a damaged column: {e}"))
        })?;
        Ok(c)
    }

    /// Reads a batch.
    pub fn batch(&mut self) -> Result<sluice_sdk::Batch> {
        let keys = self.column()?;
        let values = self.column()?;
        Ok(sluice_sdk::Batch { keys, values })
    }

    /// Reads an RDD.
    pub fn rdd(&mut self) -> Result<crate::rdd::Rdd> {
        let n = self.len(16)?;
        let partitions = (0..n).map(|_| self.batch()).collect::<Result<Vec<_>>>()?;
        Ok(crate::rdd::Rdd { partitions })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_round_trips_and_damage_is_an_error() {
        let mut c = sluice_sdk::Column::new();
        c.push_str("naïve").unwrap();
        c.push(&42i64).unwrap();
        let rdd = crate::rdd::Rdd {
            partitions: vec![
                sluice_sdk::Batch::from_values(c.clone()),
                Default::default(),
            ],
        };
        let mut w = StateWriter::new();
        w.i64(-5);
        w.rdd(&rdd);
        w.bytes(b"tail");
        let bytes = w.into_bytes();
        let mut r = StateReader::new(&bytes);
        assert_eq!(r.i64().unwrap(), -5);
        assert_eq!(r.rdd().unwrap(), rdd);
        assert_eq!(r.bytes().unwrap(), b"tail");
        assert!(r.is_empty());
        for cut in [3, 20, bytes.len() - 1] {
            let mut r = StateReader::new(&bytes[..cut]);
            let e = r
                .i64()
                .and_then(|_| r.rdd())
                .and_then(|_| r.bytes().map(|_| ()));
            assert!(e.is_err(), "cut at {cut}");
        }
        let mut huge = StateWriter::new();
        huge.u64(u64::MAX);
        let b = huge.into_bytes();
        assert!(StateReader::new(&b).bytes().is_err());
    }
}
