//! Decoding one canonical MessagePack value with serde, quickly for the
//! shapes streams are made of — strings, integers, and tuples of them —
//! and by `rmp_serde` for everything else, so that values, visits and
//! errors are exactly `rmp_serde`'s: the fast paths only take the cases
//! whose result they produce the same way (a valid UTF-8 string borrowed,
//! an integer visited at its encoded width, a tuple of exactly its arity).

use rmp_serde::decode::Error;
use serde::de::{self, DeserializeSeed, Deserializer, SeqAccess, Visitor};

/// Decodes `bytes` (one value) as `T`; the same result as
/// `rmp_serde::from_slice`.
#[inline]
pub(crate) fn from_slice<'a, T: de::Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, Error> {
    T::deserialize(Value(bytes))
}

/// `b` as a string if it is valid UTF-8: an ASCII string (most words and
/// keys) is recognised by OR-ing its bytes eight at a time, which is
/// cheaper than the general check, above all in wasm32 guests, where the
/// standard library's check reads four bytes at a time.
#[inline(always)]
pub(crate) fn utf8(b: &[u8]) -> Option<&str> {
    if is_ascii(b) {
        // SAFETY: every byte is below 0x80, and ASCII is valid UTF-8.
        return Some(unsafe { std::str::from_utf8_unchecked(b) });
    }
    std::str::from_utf8(b).ok()
}

/// Whether every byte of `b` is below 0x80. The bytes past the last whole
/// eight are read as one more (overlapping) eight, or as two overlapping
/// fours, or as first, middle and last: no loop over a tail, so the check
/// stays small enough to inline where strings are decoded.
#[inline(always)]
fn is_ascii(b: &[u8]) -> bool {
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let n = b.len();
    let u64_at = |i: usize| u64::from_le_bytes(b[i..i + 8].try_into().unwrap_or([0x80; 8]));
    let u32_at = |i: usize| u32::from_le_bytes(b[i..i + 4].try_into().unwrap_or([0x80; 4]));
    if n >= 8 {
        let mut high = u64_at(n - 8);
        for c in b.chunks_exact(8) {
            high |= u64::from_le_bytes(c.try_into().unwrap_or([0x80; 8]));
        }
        high & HIGH == 0
    } else if n >= 4 {
        (u32_at(0) | u32_at(n - 4)) & 0x8080_8080 == 0
    } else if n > 0 {
        // 1 to 3 bytes: first, middle and last (some the same).
        (b[0] | b[n / 2] | b[n - 1]) < 0x80
    } else {
        true
    }
}

/// One encoded value.
struct Value<'a>(&'a [u8]);

impl<'a> Value<'a> {
    #[inline]
    fn fallback(self) -> rmp_serde::Deserializer<rmp_serde::decode::ReadRefReader<'a, [u8]>> {
        rmp_serde::Deserializer::from_read_ref(self.0)
    }

    /// A string that is not a short ASCII or valid UTF-8 `str` of the
    /// fast path, or not a string at all: `rmp_serde` decides. Kept out of
    /// line, so that the fast path, inlined into every loop that decodes
    /// strings, stays small (in a wasm guest, above all, a call per
    /// element costs a frame, a stack check and an epoch check).
    #[cold]
    #[inline(never)]
    fn slow_str<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value, Error> {
        self.fallback().deserialize_string(visitor)
    }

    /// The value as a string, when it is exactly a valid UTF-8 `str`.
    #[inline(always)]
    fn str(&self) -> Option<&'a str> {
        match crate::plain::take_str(self.0)? {
            (s, []) => Some(s),
            _ => None,
        }
    }

    /// An integer, visited at its encoded width as `rmp_serde` does
    /// (whose integer methods all read any number: `deserialize_i64` is
    /// the fallback for each).
    #[inline]
    fn int<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value, Error> {
        let b = self.0;
        let be = |n: usize| -> Option<u64> {
            let s = b.get(1..1 + n)?;
            (b.len() == 1 + n).then(|| s.iter().fold(0u64, |a, &x| (a << 8) | x as u64))
        };
        let Some(&m) = b.first() else {
            return self.fallback().deserialize_i64(visitor);
        };
        match m {
            0x00..=0x7f if b.len() == 1 => visitor.visit_u8(m),
            0xe0..=0xff if b.len() == 1 => visitor.visit_i8(m as i8),
            0xcc => match be(1) {
                Some(v) => visitor.visit_u8(v as u8),
                None => self.fallback().deserialize_i64(visitor),
            },
            0xcd => match be(2) {
                Some(v) => visitor.visit_u16(v as u16),
                None => self.fallback().deserialize_i64(visitor),
            },
            0xce => match be(4) {
                Some(v) => visitor.visit_u32(v as u32),
                None => self.fallback().deserialize_i64(visitor),
            },
            0xcf => match be(8) {
                Some(v) => visitor.visit_u64(v),
                None => self.fallback().deserialize_i64(visitor),
            },
            0xd0 => match be(1) {
                Some(v) => visitor.visit_i8(v as u8 as i8),
                None => self.fallback().deserialize_i64(visitor),
            },
            0xd1 => match be(2) {
                Some(v) => visitor.visit_i16(v as u16 as i16),
                None => self.fallback().deserialize_i64(visitor),
            },
            0xd2 => match be(4) {
                Some(v) => visitor.visit_i32(v as u32 as i32),
                None => self.fallback().deserialize_i64(visitor),
            },
            0xd3 => match be(8) {
                Some(v) => visitor.visit_i64(v as i64),
                None => self.fallback().deserialize_i64(visitor),
            },
            _ => self.fallback().deserialize_i64(visitor),
        }
    }
}

/// The items of a fixed-size array, each decoded as a [`Value`].
struct Items<'a> {
    rest: &'a [u8],
    left: u32,
}

impl<'a> SeqAccess<'a> for Items<'a> {
    type Error = Error;

    #[inline]
    fn next_element_seed<T: DeserializeSeed<'a>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, Error> {
        if self.left == 0 {
            return Ok(None);
        }
        let n = crate::msgpack::skip_len(self.rest)
            .map_err(|e| Error::Syntax(format!("array item: {e}")))?;
        let (item, rest) = self.rest.split_at(n);
        self.rest = rest;
        self.left -= 1;
        seed.deserialize(Value(item)).map(Some)
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.left as usize)
    }
}

macro_rules! fallback {
    ($($method:ident($($arg:ident: $ty:ty),*)),* $(,)?) => {
        $(
            #[inline]
            fn $method<V: Visitor<'a>>(self, $($arg: $ty,)* visitor: V) -> Result<V::Value, Error> {
                self.fallback().$method($($arg,)* visitor)
            }
        )*
    };
}

impl<'a> Deserializer<'a> for Value<'a> {
    type Error = Error;

    #[inline(always)]
    fn deserialize_str<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value, Error> {
        match self.str() {
            Some(s) => visitor.visit_borrowed_str(s),
            None => self.slow_str(visitor),
        }
    }

    #[inline(always)]
    fn deserialize_string<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value, Error> {
        match self.str() {
            Some(s) => visitor.visit_borrowed_str(s),
            None => self.slow_str(visitor),
        }
    }

    #[inline]
    fn deserialize_i64<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value, Error> {
        self.int(visitor)
    }

    #[inline]
    fn deserialize_u64<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value, Error> {
        self.int(visitor)
    }

    #[inline]
    fn deserialize_i32<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value, Error> {
        self.int(visitor)
    }

    #[inline]
    fn deserialize_u32<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value, Error> {
        self.int(visitor)
    }

    #[inline]
    fn deserialize_tuple<V: Visitor<'a>>(self, len: usize, visitor: V) -> Result<V::Value, Error> {
        match self.0.first() {
            // Well-formed throughout (else rmp_serde says what is wrong).
            Some(&m)
                if (0x90..=0x9f).contains(&m)
                    && (m & 0x0f) as usize == len
                    && crate::msgpack::is_single_value(self.0) == Ok(true) =>
            {
                let mut items = Items {
                    rest: &self.0[1..],
                    left: len as u32,
                };
                let value = visitor.visit_seq(&mut items)?;
                match items.left {
                    0 => Ok(value),
                    excess => Err(Error::LengthMismatch(len as u32 - excess)),
                }
            }
            _ => self.fallback().deserialize_tuple(len, visitor),
        }
    }

    fallback! {
        deserialize_any(),
        deserialize_bool(),
        deserialize_i8(),
        deserialize_i16(),
        deserialize_u8(),
        deserialize_u16(),
        deserialize_f32(),
        deserialize_f64(),
        deserialize_char(),
        deserialize_bytes(),
        deserialize_byte_buf(),
        deserialize_option(),
        deserialize_unit(),
        deserialize_seq(),
        deserialize_map(),
        deserialize_identifier(),
        deserialize_ignored_any(),
        deserialize_unit_struct(name: &'static str),
        deserialize_newtype_struct(name: &'static str),
        deserialize_tuple_struct(name: &'static str, len: usize),
        deserialize_struct(name: &'static str, fields: &'static [&'static str]),
        deserialize_enum(name: &'static str, variants: &'static [&'static str]),
    }

    fn is_human_readable(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::{Deserialize, Serialize};

    #[test]
    fn utf8_agrees_with_the_standard_check() {
        let mut cases: Vec<Vec<u8>> = vec![
            b"".to_vec(),
            b"word".to_vec(),
            b"exactly8".to_vec(),
            b"a line of more than sixteen ascii bytes".to_vec(),
            "caf\u{e9}".as_bytes().to_vec(),
            "\u{65e5}\u{672c}\u{8a9e} and ascii after"
                .as_bytes()
                .to_vec(),
            b"\x80".to_vec(),
            b"\xff\xfe".to_vec(),
            // Invalid bytes in the 8-byte chunks and in the tail.
            b"abcdefg\xc3".to_vec(),
            b"\xc3abcdefgh".to_vec(),
            b"abcdefghijklmno\xe2\x82".to_vec(),
            b"abcdefgh\xed\xa0\x80xyz".to_vec(),
        ];
        // Every cut of a string with multi-byte characters: some cuts fall
        // inside a character.
        let mixed = "ab\u{e9}cd\u{20ac}efgh\u{1f600}ij".as_bytes();
        for end in 0..=mixed.len() {
            cases.push(mixed[..end].to_vec());
        }
        for c in &cases {
            assert_eq!(utf8(c), std::str::from_utf8(c).ok(), "{c:?}");
        }
    }

    #[test]
    fn is_ascii_finds_a_high_byte_at_every_place_of_every_length() {
        for n in 0..=40usize {
            let plain = vec![b'a'; n];
            assert!(is_ascii(&plain), "{n} ASCII bytes");
            for at in 0..n {
                let mut high = plain.clone();
                high[at] = 0x80;
                assert!(!is_ascii(&high), "{n} bytes, high at {at}");
            }
        }
    }

    fn enc<T: Serialize>(v: &T) -> Vec<u8> {
        let mut out = Vec::new();
        v.serialize(&mut rmp_serde::Serializer::new(&mut out).with_struct_map())
            .expect("encode");
        out
    }

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Reading {
        device: String,
        watts: f64,
        tags: Vec<String>,
    }

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    enum Shape {
        Dot,
        Line(i64),
    }

    /// Decodes with both and requires the same outcome.
    fn same<'a, T: Deserialize<'a> + PartialEq + std::fmt::Debug>(bytes: &'a [u8]) {
        let fast: Result<T, Error> = from_slice(bytes);
        let slow: Result<T, Error> = rmp_serde::from_slice(bytes);
        match (&fast, &slow) {
            (Ok(a), Ok(b)) => assert_eq!(a, b, "{bytes:02x?}"),
            (Err(a), Err(b)) => assert_eq!(a.to_string(), b.to_string(), "{bytes:02x?}"),
            _ => panic!("{bytes:02x?}: fast {fast:?}, rmp_serde {slow:?}"),
        }
    }

    #[test]
    fn agrees_with_rmp_serde() {
        let long = "x".repeat(300);
        for s in ["", "word", "ünïcödé", &long] {
            same::<&str>(&enc(&s));
            same::<String>(&enc(&s));
            same::<i64>(&enc(&s));
            same::<(&str, i64)>(&enc(&s));
        }
        for i in crate::fastser::tests::EDGE_INTS {
            same::<i64>(&enc(&i));
            same::<u64>(&enc(&i));
            same::<i32>(&enc(&i));
            same::<u32>(&enc(&i));
            same::<u8>(&enc(&i));
            same::<f64>(&enc(&i));
            same::<&str>(&enc(&i));
        }
        same::<u64>(&enc(&u64::MAX));
        same::<(&str, i64)>(&enc(&("a", 1)));
        same::<(&str, i64)>(&enc(&("a", "b")));
        same::<(&str, i64, bool)>(&enc(&("a", 1)));
        same::<(&str,)>(&enc(&("a", 1)));
        same::<(String, (i64, f64))>(&enc(&("k", (3, 1.5))));
        same::<Vec<&str>>(&enc(&vec!["a", "b"]));
        same::<Option<i64>>(&enc(&Some(3)));
        same::<Option<i64>>(&enc(&None::<i64>));
        same::<f64>(&enc(&2.5));
        same::<bool>(&enc(&true));
        same::<Reading>(&enc(&Reading {
            device: "fan".into(),
            watts: 3.5,
            tags: vec!["a".into()],
        }));
        same::<Shape>(&enc(&Shape::Dot));
        same::<Shape>(&enc(&Shape::Line(4)));
        same::<serde_json::Value>(&enc(&("a", 1, [1.5, 2.0])));
        // Invalid UTF-8 and truncated values: rmp_serde's own errors.
        same::<&str>(&[0xa2, 0xff, 0xfe]);
        same::<String>(&[0xa3, b'a']);
        same::<(&str, i64)>(&[0x92, 0xa1]);
        same::<i64>(&[0xcd, 0x01]);
        same::<i64>(&[]);
    }
}
