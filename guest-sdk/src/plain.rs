//! Codecs of their own for the shapes streams are mostly made of —
//! strings, integers, booleans, floats, options and tuples of them — that
//! inline into each kind's loop. Through serde, each element goes through
//! calls the compiler keeps out of line (`Deserialize for &str`,
//! `Serialize for &T`, a tuple's `serialize`); in a wasm guest each call
//! costs a frame, a stack check and an epoch check.
//!
//! The macros pick these codecs for an argument or result whose type is such
//! a shape ([`Plain`]), and serde for any other: the pick is made on the
//! concrete type where the macro expands (autoref specialization: see
//! [`Pick`]), so an alias or a nested shape is picked the same way.
//!
//! The results are exactly serde's. An encoding is `rmp_serde`'s byte for
//! byte. A decoding takes only canonical encodings whose value serde
//! produces the same way; anything else (another width, another shape, out
//! of range, invalid UTF-8, trailing bytes) goes to serde, which gives the
//! same value or the same error.

use crate::columnar::{Column, EncodeError};
use crate::run::CallError;
use serde::{Deserialize, Serialize};
use std::marker::PhantomData;

/// A shape with a codec here: both [`Take`] and [`Put`] are implemented.
pub trait Plain {}

/// Decoding one value from the start of some bytes.
pub trait Take<'a>: Sized {
    /// The value at the start of `b` and the bytes after it; `None` when
    /// `b` does not start with a canonical encoding of this shape (serde
    /// then decides).
    fn take(b: &'a [u8]) -> Option<(Self, &'a [u8])>;
}

/// Encoding one value, the bytes `rmp_serde` writes.
pub trait Put {
    /// Appends the encoding of `self` to `out`.
    fn put(&self, out: &mut Vec<u8>);
}

/// An integer as encoded: unsigned (positive fixint, `uint` 8–64) or
/// signed (negative fixint, `int` 8–64).
#[derive(Clone, Copy)]
enum Int {
    U(u64),
    I(i64),
}

/// The `N` big-endian bytes at the start of `b` and the bytes after them.
#[inline(always)]
fn be<const N: usize>(b: &[u8]) -> Option<(u64, &[u8])> {
    if b.len() < N {
        return None;
    }
    let (head, rest) = b.split_at(N);
    let mut word = [0u8; 8];
    word[8 - N..].copy_from_slice(head);
    Some((u64::from_be_bytes(word), rest))
}

#[inline(always)]
fn take_int(b: &[u8]) -> Option<(Int, &[u8])> {
    let (&m, rest) = b.split_first()?;
    Some(match m {
        0x00..=0x7f => (Int::U(u64::from(m)), rest),
        0xe0..=0xff => (Int::I(i64::from(m as i8)), rest),
        0xcc => with(be::<1>(rest)?, Int::U),
        0xcd => with(be::<2>(rest)?, Int::U),
        0xce => with(be::<4>(rest)?, Int::U),
        0xcf => with(be::<8>(rest)?, Int::U),
        0xd0 => with(be::<1>(rest)?, |v| Int::I(i64::from(v as u8 as i8))),
        0xd1 => with(be::<2>(rest)?, |v| Int::I(i64::from(v as u16 as i16))),
        0xd2 => with(be::<4>(rest)?, |v| Int::I(i64::from(v as u32 as i32))),
        0xd3 => with(be::<8>(rest)?, |v| Int::I(v as i64)),
        _ => return None,
    })
}

/// `f` of a value read by [`be`], with the bytes after it.
#[inline(always)]
fn with<T>((v, rest): (u64, &[u8]), f: impl FnOnce(u64) -> T) -> (T, &[u8]) {
    (f(v), rest)
}

// Every integer type takes any encoded integer in its range, as serde's
// visitors do (out of range: serde's error); signed types are written as
// `rmp::encode::write_sint` writes them, unsigned as `write_uint`.
macro_rules! ints {
    ($($t:ty => $put:ident as $wide:ty),* $(,)?) => {$(
        impl Plain for $t {}
        impl Take<'_> for $t {
            #[inline(always)]
            fn take(b: &[u8]) -> Option<(Self, &[u8])> {
                let (v, rest) = take_int(b)?;
                let v = match v {
                    Int::U(u) => <$t>::try_from(u).ok()?,
                    Int::I(i) => <$t>::try_from(i).ok()?,
                };
                Some((v, rest))
            }
        }
        impl Put for $t {
            #[inline(always)]
            fn put(&self, out: &mut Vec<u8>) {
                crate::fastser::$put(out, *self as $wide);
            }
        }
    )*};
}

ints!(
    i8 => put_i64 as i64,
    i16 => put_i64 as i64,
    i32 => put_i64 as i64,
    i64 => put_i64 as i64,
    u8 => put_u64 as u64,
    u16 => put_u64 as u64,
    u32 => put_u64 as u64,
    u64 => put_u64 as u64,
);

/// A `str` whose bytes are borrowed: fixstr, `str8`, `str16` or `str32`,
/// valid UTF-8.
#[inline(always)]
pub(crate) fn take_str(b: &[u8]) -> Option<(&str, &[u8])> {
    let (&m, rest) = b.split_first()?;
    let (n, rest) = match m {
        0xa0..=0xbf => (usize::from(m & 0x1f), rest),
        0xd9 => with(be::<1>(rest)?, |n| n as usize),
        0xda => with(be::<2>(rest)?, |n| n as usize),
        0xdb => with(be::<4>(rest)?, |n| n as usize),
        _ => return None,
    };
    if rest.len() < n {
        return None;
    }
    let (s, rest) = rest.split_at(n);
    Some((crate::fastde::utf8(s)?, rest))
}

impl Plain for &str {}
impl<'a> Take<'a> for &'a str {
    #[inline(always)]
    fn take(b: &'a [u8]) -> Option<(Self, &'a [u8])> {
        take_str(b)
    }
}
impl Put for str {
    #[inline(always)]
    fn put(&self, out: &mut Vec<u8>) {
        crate::fastser::put_str(out, self);
    }
}

impl Plain for String {}
impl Take<'_> for String {
    #[inline(always)]
    fn take(b: &[u8]) -> Option<(Self, &[u8])> {
        take_str(b).map(|(s, rest)| (s.to_owned(), rest))
    }
}
impl Put for String {
    #[inline(always)]
    fn put(&self, out: &mut Vec<u8>) {
        crate::fastser::put_str(out, self);
    }
}

impl<T: Put + ?Sized> Put for &T {
    #[inline(always)]
    fn put(&self, out: &mut Vec<u8>) {
        (**self).put(out);
    }
}

impl Plain for bool {}
impl Take<'_> for bool {
    #[inline(always)]
    fn take(b: &[u8]) -> Option<(Self, &[u8])> {
        match b.split_first()? {
            (0xc2, rest) => Some((false, rest)),
            (0xc3, rest) => Some((true, rest)),
            _ => None,
        }
    }
}
impl Put for bool {
    #[inline(always)]
    fn put(&self, out: &mut Vec<u8>) {
        out.push(0xc2 | u8::from(*self));
    }
}

impl Plain for f64 {}
impl Take<'_> for f64 {
    /// Only `float64`: serde reads a `float32` or an integer as an `f64`
    /// too, and decides those.
    #[inline(always)]
    fn take(b: &[u8]) -> Option<(Self, &[u8])> {
        match b.split_first()? {
            (0xcb, rest) => be::<8>(rest).map(|(v, rest)| (f64::from_bits(v), rest)),
            _ => None,
        }
    }
}
impl Put for f64 {
    #[inline(always)]
    fn put(&self, out: &mut Vec<u8>) {
        out.push(0xcb);
        out.extend_from_slice(&self.to_bits().to_be_bytes());
    }
}

impl<T: Plain> Plain for Option<T> {}
impl<'a, T: Take<'a>> Take<'a> for Option<T> {
    /// `nil` is `None` (as `rmp_serde` decodes it, whatever `T`).
    #[inline(always)]
    fn take(b: &'a [u8]) -> Option<(Self, &'a [u8])> {
        match b.split_first()? {
            (0xc0, rest) => Some((None, rest)),
            _ => T::take(b).map(|(v, rest)| (Some(v), rest)),
        }
    }
}
impl<T: Put> Put for Option<T> {
    #[inline(always)]
    fn put(&self, out: &mut Vec<u8>) {
        match self {
            None => out.push(0xc0),
            Some(v) => v.put(out),
        }
    }
}

// Tuples: a fixarray of exactly their arity (`rmp_serde` writes the array
// header, then each item).
macro_rules! tuples {
    ($($n:literal: ($($t:ident $v:ident),+)),* $(,)?) => {$(
        impl<$($t: Plain),+> Plain for ($($t,)+) {}
        impl<'a, $($t: Take<'a>),+> Take<'a> for ($($t,)+) {
            #[inline(always)]
            fn take(b: &'a [u8]) -> Option<(Self, &'a [u8])> {
                let rest = match b.split_first()? {
                    (&m, rest) if m == 0x90 | $n => rest,
                    _ => return None,
                };
                $(let ($v, rest) = $t::take(rest)?;)+
                Some((($($v,)+), rest))
            }
        }
        impl<$($t: Put),+> Put for ($($t,)+) {
            #[inline(always)]
            fn put(&self, out: &mut Vec<u8>) {
                out.push(0x90 | $n);
                let ($($v,)+) = self;
                $($v.put(out);)+
            }
        }
    )*};
}

tuples!(
    1: (A a),
    2: (A a, B b),
    3: (A a, B b, C c),
    4: (A a, B b, C c, D d),
);

/// The codec for any type: serde (with the SDK's own fast serializer and
/// deserializer underneath).
#[derive(Clone, Copy)]
pub struct SerdeCodec;

/// The codec for [`Plain`] shapes; what it does not take goes to serde.
#[derive(Clone, Copy)]
pub struct PlainCodec;

/// How a kind's loop decodes element `i` of a column as a `T`.
pub trait Decode<'a, T>: Copy {
    /// Element `i` of `input` as a `T`, or an `invalid-input` error naming it.
    fn decode(self, input: &'a Column, i: usize) -> Result<T, CallError>;
}

/// How a kind's loop appends a `T` to a column.
pub trait Encode<T: ?Sized>: Copy {
    /// Appends `v` to `out`.
    fn push(self, out: &mut Column, v: &T) -> Result<(), EncodeError>;
}

impl<'a, T: Deserialize<'a>> Decode<'a, T> for SerdeCodec {
    #[inline(always)]
    fn decode(self, input: &'a Column, i: usize) -> Result<T, CallError> {
        crate::run::decode(input, i)
    }
}

impl<T: Serialize + ?Sized> Encode<T> for SerdeCodec {
    #[inline(always)]
    fn push(self, out: &mut Column, v: &T) -> Result<(), EncodeError> {
        out.push(v)
    }
}

impl<'a, T: Take<'a> + Deserialize<'a>> Decode<'a, T> for PlainCodec {
    #[inline(always)]
    fn decode(self, input: &'a Column, i: usize) -> Result<T, CallError> {
        match T::take(input.get(i)) {
            Some((v, [])) => Ok(v),
            _ => crate::run::decode(input, i),
        }
    }
}

impl<T: Put + ?Sized> Encode<T> for PlainCodec {
    #[inline(always)]
    fn push(self, out: &mut Column, v: &T) -> Result<(), EncodeError> {
        out.push_with(|bytes| v.put(bytes))
    }
}

/// The macros' pick of a codec for `T`: `(&Pick::<T>::NEW).codec()`, with
/// [`PickPlain`] and [`PickSerde`] in scope, is [`PlainCodec`] when
/// `T: Plain` (the method found on `&Pick<T>` as it is) and [`SerdeCodec`]
/// otherwise (found only after one more `&`).
pub struct Pick<T: ?Sized>(PhantomData<T>);

impl<T: ?Sized> Pick<T> {
    /// The pick for `T`.
    pub const NEW: Self = Pick(PhantomData);
}

/// See [`Pick`].
pub trait PickPlain {
    /// [`PlainCodec`].
    fn codec(&self) -> PlainCodec {
        PlainCodec
    }
}

impl<T: Plain + ?Sized> PickPlain for Pick<T> {}

/// See [`Pick`].
pub trait PickSerde {
    /// [`SerdeCodec`].
    fn codec(&self) -> SerdeCodec {
        SerdeCodec
    }
}

impl<T: ?Sized> PickSerde for &Pick<T> {}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fastser::tests::EDGE_INTS;

    fn enc<T: Serialize + ?Sized>(v: &T) -> Vec<u8> {
        let mut out = Vec::new();
        v.serialize(&mut rmp_serde::Serializer::new(&mut out).with_struct_map())
            .expect("rmp_serde");
        out
    }

    /// `v` encodes as rmp_serde encodes it, and decodes from that (and
    /// from that with a byte after it) to itself.
    fn round<'a, T>(v: &T, bytes: &'a mut Vec<u8>) -> T
    where
        T: Put + Take<'a> + Serialize + PartialEq + std::fmt::Debug,
    {
        let want = enc(v);
        let mut got = Vec::new();
        v.put(&mut got);
        assert_eq!(got, want, "encoding {v:?}");
        want.clone_into(bytes);
        bytes.push(0x07);
        let (back, rest) = T::take(bytes).unwrap_or_else(|| panic!("decoding {v:?}"));
        assert_eq!(rest, [0x07], "the bytes after {v:?}");
        back
    }

    #[test]
    fn encodes_as_rmp_serde_and_decodes_back() {
        let mut buf = Vec::new();
        for i in EDGE_INTS {
            assert_eq!(round(&i, &mut buf), i);
            let i32_ = i as i32;
            assert_eq!(round(&i32_, &mut buf), i32_);
            let i8_ = i as i8;
            assert_eq!(round(&i8_, &mut buf), i8_);
            let u64_ = i as u64;
            assert_eq!(round(&u64_, &mut buf), u64_);
            let u16_ = i as u16;
            assert_eq!(round(&u16_, &mut buf), u16_);
        }
        for n in [0, 1, 5, 31, 32, 255, 256, 300, 70_000] {
            let s = "é".repeat(n / 2) + &"x".repeat(n % 2);
            let owned = round(&s, &mut buf);
            assert_eq!(owned, s);
        }
        assert!(round(&true, &mut buf));
        assert!(!round(&false, &mut buf));
        assert_eq!(round(&-2.5f64, &mut buf), -2.5);
        assert_eq!(round(&Some(3i64), &mut buf), Some(3));
        assert_eq!(round(&None::<i64>, &mut buf), None);
        let t = ("word".to_string(), -7i64, Some(true), 1.5f64);
        assert_eq!(round(&t, &mut buf), t);
        let t = ((1u8,), ("k".to_string(), None::<String>));
        assert_eq!(round(&t, &mut buf), t);
        let word = "word";
        let mut got = Vec::new();
        (word, 1i64).put(&mut got);
        assert_eq!(got, enc(&(word, 1i64)));
    }

    /// Whatever `Take` accepts, serde decodes to the same value; what it
    /// declines, the codec hands to serde (same value or same error).
    fn agrees<'a, T>(col: &'a Column)
    where
        T: Take<'a> + Deserialize<'a> + PartialEq + std::fmt::Debug,
    {
        let bytes = col.get(0);
        let serde: Result<T, _> = rmp_serde::from_slice(bytes);
        match T::take(bytes) {
            Some((v, [])) => assert_eq!(Some(&v), serde.as_ref().ok(), "{bytes:02x?}"),
            _ => {
                let codec: Result<T, _> = PlainCodec.decode(col, 0);
                let via_serde: Result<T, _> = SerdeCodec.decode(col, 0);
                assert_eq!(codec, via_serde, "{bytes:02x?}");
            }
        }
    }

    #[test]
    fn decodes_what_serde_decodes_and_leaves_the_rest_to_it() {
        let mut cases: Vec<Vec<u8>> = vec![
            vec![],
            vec![0xc0],
            vec![0xc2],
            vec![0xc3],
            vec![0xc4, 1, 0x61],
            vec![0xa1, 0xff],
            vec![0xa2, 0x61],
            vec![0xa1, 0x61, 0x00],
            vec![0xd9, 1, 0x61],
            vec![0xdb, 0, 0, 0, 1, 0x61],
            vec![0xcc],
            vec![0xcd, 0xff, 0xff],
            vec![0xcf, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff],
            vec![0xd0, 0x05],
            vec![0xd3, 0x80, 0, 0, 0, 0, 0, 0, 0],
            vec![0xca, 0x3f, 0x80, 0, 0],
            vec![0xcb, 0x3f, 0xf0, 0, 0, 0, 0, 0, 0],
            vec![0x92, 0xa1, 0x61, 0x01],
            vec![0x92, 0xa1, 0x61],
            vec![0x93, 0xa1, 0x61, 0x01, 0xc3],
            vec![0xdc, 0, 2, 0xa1, 0x61, 0x01],
            vec![0x82, 0xa1, 0x61, 0x01, 0xa1, 0x62, 0x02],
        ];
        for i in EDGE_INTS {
            cases.push(enc(&i));
            cases.push(enc(&(i as u64)));
        }
        for b in &cases {
            let mut col = Column::new();
            col.push_encoded(b).expect("push");
            let b = &col;
            agrees::<i64>(b);
            agrees::<i32>(b);
            agrees::<u8>(b);
            agrees::<u64>(b);
            agrees::<i8>(b);
            agrees::<bool>(b);
            agrees::<f64>(b);
            agrees::<&str>(b);
            agrees::<String>(b);
            agrees::<Option<i64>>(b);
            agrees::<Option<&str>>(b);
            agrees::<(&str, i64)>(b);
            agrees::<(String, u8, bool)>(b);
        }
    }

    #[test]
    // The `&` is the pick: `PickSerde` is found only after one more `&`.
    #[allow(clippy::needless_borrow)]
    fn the_pick_is_plain_for_plain_shapes_and_serde_for_others() {
        fn name<C>(_: C) -> &'static str {
            std::any::type_name::<C>().rsplit("::").next().unwrap_or("")
        }
        assert_eq!(name((&Pick::<&str>::NEW).codec()), "PlainCodec");
        assert_eq!(name((&Pick::<(&str, i64)>::NEW).codec()), "PlainCodec");
        assert_eq!(
            name((&Pick::<Option<(String, u32)>>::NEW).codec()),
            "PlainCodec"
        );
        assert_eq!(name((&Pick::<Vec<i64>>::NEW).codec()), "SerdeCodec");
        assert_eq!(name((&Pick::<(&str, Vec<u8>)>::NEW).codec()), "SerdeCodec");
        assert_eq!(name((&Pick::<char>::NEW).codec()), "SerdeCodec");
    }
}
