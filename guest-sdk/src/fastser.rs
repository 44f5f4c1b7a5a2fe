//! Encoding values with serde as canonical MessagePack, quickly for the
//! shapes streams are made of — strings, numbers, booleans, options and
//! tuples of them — and by `rmp_serde` (structs as maps) for everything
//! else. The fast paths write exactly the bytes `rmp_serde` writes (the
//! same `rmp::encode` calls), without its per-value error plumbing.

use rmp::encode;
use rmp_serde::config::{DefaultConfig, StructMapConfig};
use rmp_serde::encode::Error;
use serde::ser::{Serialize, SerializeTuple, Serializer};

type Inner<'w> = rmp_serde::Serializer<&'w mut Vec<u8>, StructMapConfig<DefaultConfig>>;

/// Appends the encoding of `value` to `out`; the same bytes as
/// `rmp_serde::Serializer::new(out).with_struct_map()`.
#[inline]
pub(crate) fn write<T: Serialize + ?Sized>(out: &mut Vec<u8>, value: &T) -> Result<(), Error> {
    let mut ser = Fast(rmp_serde::Serializer::new(out).with_struct_map());
    value.serialize(&mut ser)
}

pub(crate) struct Fast<'w>(Inner<'w>);

/// A string of 32 bytes or more: `str8`, `str16` or `str32` as
/// `rmp::encode::write_str` writes it (out of line: rarer than fixstrs,
/// and a wasm guest's fast path stays small without it).
#[inline(never)]
fn write_long_str(out: &mut Vec<u8>, v: &str) {
    let n = v.len();
    if n < 0x100 {
        out.extend_from_slice(&[0xd9, n as u8]);
    } else if n < 0x1_0000 {
        out.push(0xda);
        out.extend_from_slice(&(n as u16).to_be_bytes());
    } else {
        out.push(0xdb);
        out.extend_from_slice(&(n as u32).to_be_bytes());
    }
    crate::columnar::append(out, v.as_bytes());
}

/// Appends `v` as `rmp::encode::write_sint` encodes it (its choices,
/// written straight into the Vec).
#[inline]
pub(crate) fn put_i64(out: &mut Vec<u8>, v: i64) {
    match v {
        0.. => put_u64(out, v as u64),
        -32..=-1 => out.push(v as u8),
        -0x80..=-33 => out.extend_from_slice(&[0xd0, v as u8]),
        -0x8000..=-0x81 => {
            out.push(0xd1);
            out.extend_from_slice(&(v as i16).to_be_bytes());
        }
        -0x8000_0000..=-0x8001 => {
            out.push(0xd2);
            out.extend_from_slice(&(v as i32).to_be_bytes());
        }
        _ => {
            out.push(0xd3);
            out.extend_from_slice(&v.to_be_bytes());
        }
    }
}

/// Appends `v` as `rmp::encode::write_uint` encodes it.
#[inline]
pub(crate) fn put_u64(out: &mut Vec<u8>, v: u64) {
    match v {
        0..=0x7f => out.push(v as u8),
        0x80..=0xff => out.extend_from_slice(&[0xcc, v as u8]),
        0x100..=0xffff => {
            out.push(0xcd);
            out.extend_from_slice(&(v as u16).to_be_bytes());
        }
        0x1_0000..=0xffff_ffff => {
            out.push(0xce);
            out.extend_from_slice(&(v as u32).to_be_bytes());
        }
        _ => {
            out.push(0xcf);
            out.extend_from_slice(&v.to_be_bytes());
        }
    }
}

/// Appends `v` as `rmp::encode::write_str` encodes it: a fixstr inline
/// (most words and keys), longer strings out of line.
#[inline(always)]
pub(crate) fn put_str(out: &mut Vec<u8>, v: &str) {
    let n = v.len();
    if n < 32 {
        crate::columnar::append_headed(out, 0xa0 | n as u8, v.as_bytes());
    } else {
        write_long_str(out, v);
    }
}

impl Fast<'_> {
    #[inline]
    fn out(&mut self) -> &mut Vec<u8> {
        self.0.get_mut()
    }
}

/// A tuple whose items are encoded by [`Fast`] too.
pub(crate) struct Tuple<'a, 'w>(&'a mut Fast<'w>);

impl SerializeTuple for Tuple<'_, '_> {
    type Ok = ();
    type Error = Error;

    #[inline]
    fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Error> {
        value.serialize(&mut *self.0)
    }

    #[inline]
    fn end(self) -> Result<(), Error> {
        Ok(())
    }
}

// Writes into a Vec cannot fail: the results of `rmp::encode` are dropped.
impl<'a, 'w> Serializer for &'a mut Fast<'w> {
    type Ok = ();
    type Error = Error;
    type SerializeSeq = <&'a mut Inner<'w> as Serializer>::SerializeSeq;
    type SerializeTuple = Tuple<'a, 'w>;
    type SerializeTupleStruct = <&'a mut Inner<'w> as Serializer>::SerializeTupleStruct;
    type SerializeTupleVariant = <&'a mut Inner<'w> as Serializer>::SerializeTupleVariant;
    type SerializeMap = <&'a mut Inner<'w> as Serializer>::SerializeMap;
    type SerializeStruct = <&'a mut Inner<'w> as Serializer>::SerializeStruct;
    type SerializeStructVariant = <&'a mut Inner<'w> as Serializer>::SerializeStructVariant;

    fn is_human_readable(&self) -> bool {
        false
    }

    #[inline]
    fn serialize_bool(self, v: bool) -> Result<(), Error> {
        let _ = encode::write_bool(self.out(), v);
        Ok(())
    }
    #[inline]
    fn serialize_i8(self, v: i8) -> Result<(), Error> {
        self.serialize_i64(i64::from(v))
    }
    #[inline]
    fn serialize_i16(self, v: i16) -> Result<(), Error> {
        self.serialize_i64(i64::from(v))
    }
    #[inline]
    fn serialize_i32(self, v: i32) -> Result<(), Error> {
        self.serialize_i64(i64::from(v))
    }
    #[inline]
    fn serialize_i64(self, v: i64) -> Result<(), Error> {
        put_i64(self.out(), v);
        Ok(())
    }
    #[inline]
    fn serialize_u8(self, v: u8) -> Result<(), Error> {
        self.serialize_u64(u64::from(v))
    }
    #[inline]
    fn serialize_u16(self, v: u16) -> Result<(), Error> {
        self.serialize_u64(u64::from(v))
    }
    #[inline]
    fn serialize_u32(self, v: u32) -> Result<(), Error> {
        self.serialize_u64(u64::from(v))
    }
    #[inline]
    fn serialize_u64(self, v: u64) -> Result<(), Error> {
        put_u64(self.out(), v);
        Ok(())
    }
    #[inline]
    fn serialize_f32(self, v: f32) -> Result<(), Error> {
        let _ = encode::write_f32(self.out(), v);
        Ok(())
    }
    #[inline]
    fn serialize_f64(self, v: f64) -> Result<(), Error> {
        let _ = encode::write_f64(self.out(), v);
        Ok(())
    }
    #[inline(always)]
    fn serialize_str(self, v: &str) -> Result<(), Error> {
        put_str(self.out(), v);
        Ok(())
    }
    #[inline]
    fn serialize_none(self) -> Result<(), Error> {
        let _ = encode::write_nil(self.out());
        Ok(())
    }
    #[inline]
    fn serialize_some<T: Serialize + ?Sized>(self, v: &T) -> Result<(), Error> {
        v.serialize(self)
    }
    #[inline]
    fn serialize_unit(self) -> Result<(), Error> {
        self.serialize_none()
    }
    #[inline]
    fn serialize_tuple(self, len: usize) -> Result<Tuple<'a, 'w>, Error> {
        // rmp_serde's default bytes mode writes the array header up front.
        let _ = encode::write_array_len(self.out(), len as u32);
        Ok(Tuple(self))
    }

    // Everything else as rmp_serde encodes it.
    fn serialize_i128(self, v: i128) -> Result<(), Error> {
        self.0.serialize_i128(v)
    }
    fn serialize_u128(self, v: u128) -> Result<(), Error> {
        self.0.serialize_u128(v)
    }
    fn serialize_char(self, v: char) -> Result<(), Error> {
        self.0.serialize_char(v)
    }
    fn serialize_bytes(self, v: &[u8]) -> Result<(), Error> {
        self.0.serialize_bytes(v)
    }
    fn serialize_unit_struct(self, name: &'static str) -> Result<(), Error> {
        self.0.serialize_unit_struct(name)
    }
    fn serialize_unit_variant(
        self,
        name: &'static str,
        index: u32,
        variant: &'static str,
    ) -> Result<(), Error> {
        self.0.serialize_unit_variant(name, index, variant)
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        name: &'static str,
        v: &T,
    ) -> Result<(), Error> {
        self.0.serialize_newtype_struct(name, v)
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        name: &'static str,
        index: u32,
        variant: &'static str,
        v: &T,
    ) -> Result<(), Error> {
        self.0.serialize_newtype_variant(name, index, variant, v)
    }
    fn serialize_seq(self, len: Option<usize>) -> Result<Self::SerializeSeq, Error> {
        self.0.serialize_seq(len)
    }
    fn serialize_tuple_struct(
        self,
        name: &'static str,
        len: usize,
    ) -> Result<Self::SerializeTupleStruct, Error> {
        self.0.serialize_tuple_struct(name, len)
    }
    fn serialize_tuple_variant(
        self,
        name: &'static str,
        index: u32,
        variant: &'static str,
        len: usize,
    ) -> Result<Self::SerializeTupleVariant, Error> {
        self.0.serialize_tuple_variant(name, index, variant, len)
    }
    fn serialize_map(self, len: Option<usize>) -> Result<Self::SerializeMap, Error> {
        self.0.serialize_map(len)
    }
    fn serialize_struct(
        self,
        name: &'static str,
        len: usize,
    ) -> Result<Self::SerializeStruct, Error> {
        self.0.serialize_struct(name, len)
    }
    fn serialize_struct_variant(
        self,
        name: &'static str,
        index: u32,
        variant: &'static str,
        len: usize,
    ) -> Result<Self::SerializeStructVariant, Error> {
        self.0.serialize_struct_variant(name, index, variant, len)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use serde::Serialize;
    use std::collections::BTreeMap;

    /// Integers at every boundary of MessagePack's encodings (shared by
    /// the decoder's tests).
    pub(crate) const EDGE_INTS: [i64; 22] = [
        0i64,
        1,
        127,
        128,
        255,
        256,
        65_535,
        65_536,
        (1 << 32) - 1,
        1 << 32,
        -1,
        -32,
        -33,
        -128,
        -129,
        -32_768,
        -32_769,
        -40_000,
        -2_147_483_648,
        -2_147_483_649,
        i64::MIN,
        i64::MAX,
    ];

    #[derive(Serialize)]
    struct Reading {
        device: String,
        watts: f64,
        tags: Vec<&'static str>,
    }

    #[derive(Serialize)]
    enum Shape {
        Dot,
        Line(i64),
        Box { w: u32, h: u32 },
        Pair(i8, String),
    }

    #[derive(Serialize)]
    struct Meters(f64);

    fn same<T: Serialize>(v: &T) {
        let mut slow = Vec::new();
        v.serialize(&mut rmp_serde::Serializer::new(&mut slow).with_struct_map())
            .expect("rmp_serde");
        let mut fast = Vec::new();
        write(&mut fast, v).expect("fast");
        assert_eq!(fast, slow);
    }

    #[test]
    fn writes_what_rmp_serde_writes() {
        for i in EDGE_INTS {
            same(&i);
            same(&(i as i32));
            same(&(i as i8));
            same(&(i as u64));
            same(&(i as u16));
        }
        same(&u64::MAX);
        same(&1.5f64);
        same(&-0.25f32);
        same(&true);
        same(&"word");
        same(&"x".repeat(31));
        same(&"x".repeat(32));
        same(&"x".repeat(40));
        same(&"x".repeat(255));
        same(&"x".repeat(256));
        same(&"x".repeat(300));
        same(&"y".repeat(70_000));
        same(&'ß');
        same(&("a", 1));
        same(&("a", 1, false, 2.5));
        same(&(("k", 3), [1u8, 2, 3]));
        same(&Some(("a", Some(2))));
        same(&None::<i64>);
        same(&());
        same(&vec![("a", 1), ("b", 2)]);
        same(&[1u8, 2, 3]);
        same(&serde_bytes_like());
        let mut m = BTreeMap::new();
        m.insert("k", (1, "v"));
        same(&m);
        same(&Reading {
            device: "fan".into(),
            watts: 3.5,
            tags: vec!["a"],
        });
        for s in [
            Shape::Dot,
            Shape::Line(4),
            Shape::Box { w: 1, h: 2 },
            Shape::Pair(-3, "p".into()),
        ] {
            same(&s);
            same(&("shape", s));
        }
        same(&Meters(2.0));
        same(&(1u128 << 100));
    }

    fn serde_bytes_like() -> Vec<(String, Vec<u8>)> {
        vec![("bytes".to_string(), vec![0, 255])]
    }
}
