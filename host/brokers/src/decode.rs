//! What a broker record becomes in a stream: its payload decoded (UTF-8
//! text, bytes, JSON or MessagePack), shaped as the element (the value
//! alone, keyed by subject or topic, or a record with its metadata), and
//! what happens to a record that cannot be decoded.

use sluice_sdk::{Batch, Column, msgpack};
use std::fmt;

/// How a record's payload is decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Decoder {
    /// UTF-8 text, as a string (the default: lines for a word count).
    #[default]
    Text,
    /// The bytes as they are, as MessagePack binary.
    Bytes,
    /// One JSON value.
    Json,
    /// One MessagePack value.
    MessagePack,
}

impl Decoder {
    /// The decoder a spec names: `text`, `bytes`, `json` or `msgpack`.
    pub fn parse(name: &str) -> Result<Decoder, String> {
        Ok(match name {
            "text" => Decoder::Text,
            "bytes" => Decoder::Bytes,
            "json" => Decoder::Json,
            "msgpack" => Decoder::MessagePack,
            other => {
                return Err(format!(
                    "unknown decoder `{other}` (use text, bytes, json or msgpack)"
                ));
            }
        })
    }

    /// Appends `payload`, decoded, to `out` as one MessagePack value.
    pub fn decode_into(self, payload: &[u8], out: &mut Vec<u8>) -> Result<(), String> {
        match self {
            Decoder::Text => {
                let text =
                    std::str::from_utf8(payload).map_err(|e| format!("not UTF-8 text: {e}"))?;
                // Writing to a Vec cannot fail.
                let _ = rmp::encode::write_str(out, text);
            }
            Decoder::Bytes => {
                let _ = rmp::encode::write_bin(out, payload);
            }
            Decoder::Json => {
                let value: serde_json::Value =
                    serde_json::from_slice(payload).map_err(|e| format!("not JSON: {e}"))?;
                let mut c = Column::new();
                c.push(&value).map_err(|e| format!("not encodable: {e}"))?;
                out.extend_from_slice(c.get(0));
            }
            Decoder::MessagePack => match msgpack::is_single_value(payload) {
                Ok(true) => out.extend_from_slice(payload),
                Ok(false) => return Err("not one MessagePack value".to_string()),
                Err(e) => return Err(format!("not MessagePack: {e}")),
            },
        }
        Ok(())
    }
}

impl fmt::Display for Decoder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Decoder::Text => "text",
            Decoder::Bytes => "bytes",
            Decoder::Json => "json",
            Decoder::MessagePack => "msgpack",
        })
    }
}

/// What each record becomes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Shape {
    /// Its decoded payload (the default).
    #[default]
    Value,
    /// Keyed by its subject (NATS) or key (Kafka: UTF-8 text as a
    /// string, other bytes as binary, a null key as nil), its value the
    /// decoded payload: ready for `reduce_by_key` and the like.
    Keyed,
    /// A map of its metadata and value: `subject`, `sequence`, `time` (ms
    /// since the epoch), `headers` (name → list of values) and `value` for
    /// NATS; `topic`, `partition`, `offset`, `key`, `time`, `headers` and
    /// `value` for Kafka.
    Record,
}

impl Shape {
    /// The shape a spec names: `value`, `keyed` or `record`.
    pub fn parse(name: &str) -> Result<Shape, String> {
        Ok(match name {
            "value" => Shape::Value,
            "keyed" => Shape::Keyed,
            "record" => Shape::Record,
            other => {
                return Err(format!(
                    "unknown element `{other}` (use value, keyed or record)"
                ));
            }
        })
    }
}

/// What a record that cannot be decoded (or is over the size limit) does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Undecodable {
    /// The batch fails, naming the record: nothing is skipped silently
    /// (the default).
    #[default]
    Fail,
    /// The record is left out, counted, and the first few of each batch
    /// are logged with their position.
    Skip,
}

impl Undecodable {
    /// The policy a spec names: `fail` or `skip`.
    pub fn parse(name: &str) -> Result<Undecodable, String> {
        Ok(match name {
            "fail" => Undecodable::Fail,
            "skip" => Undecodable::Skip,
            other => return Err(format!("unknown policy `{other}` (use fail or skip)")),
        })
    }
}

/// How records become elements.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decoding {
    /// The payload's decoder.
    pub decoder: Decoder,
    /// What the element is.
    pub shape: Shape,
    /// What an undecodable record does.
    pub on_undecodable: Undecodable,
    /// Payloads larger than this are undecodable.
    pub max_record_bytes: usize,
}

impl Default for Decoding {
    fn default() -> Self {
        Decoding {
            decoder: Decoder::Text,
            shape: Shape::Value,
            on_undecodable: Undecodable::Fail,
            max_record_bytes: 1 << 20,
        }
    }
}

/// One record as a broker gave it.
#[derive(Debug, Clone, Copy)]
pub struct RecordRef<'a> {
    /// Its subject (NATS) or topic (Kafka, MQTT).
    pub subject: &'a str,
    /// Its partition (Kafka).
    pub partition: Option<i32>,
    /// Its key (Kafka; `None` for a null key).
    pub key: Option<&'a [u8]>,
    /// Its position: stream sequence (NATS) or offset (Kafka).
    pub sequence: u64,
    /// When the broker stored it (ms since the epoch).
    pub time_ms: i64,
    /// Its headers, name and value, in order.
    pub headers: &'a [(String, String)],
    /// Its payload.
    pub payload: &'a [u8],
}

/// Builds a batch's elements from records, by a [`Decoding`].
#[derive(Debug, Default)]
pub struct Elements {
    keys: Column,
    values: Column,
    scratch: Vec<u8>,
    /// Records left out as undecodable.
    pub skipped: u64,
    /// The first few of those, described, for the log.
    pub samples: Vec<String>,
}

impl Elements {
    /// Adds `record`'s element. An undecodable record is an error when the
    /// policy says fail (the message names its subject and position), else
    /// it is counted.
    pub fn push(&mut self, d: &Decoding, record: RecordRef<'_>) -> Result<(), String> {
        self.scratch.clear();
        let decoded = if record.payload.len() > d.max_record_bytes {
            Err(format!(
                "{} bytes, over the limit of {}",
                record.payload.len(),
                d.max_record_bytes
            ))
        } else {
            d.decoder.decode_into(record.payload, &mut self.scratch)
        };
        if let Err(why) = decoded {
            let what = format!(
                "record {} on `{}` cannot be decoded as {}: {why}",
                record.sequence, record.subject, d.decoder
            );
            if d.on_undecodable == Undecodable::Fail {
                return Err(what);
            }
            self.skipped += 1;
            if self.samples.len() < 3 {
                self.samples.push(what);
            }
            return Ok(());
        }
        let bad = |e: sluice_sdk::EncodeError| format!("record {}: {e}", record.sequence);
        match d.shape {
            Shape::Value => self.values.push_encoded(&self.scratch).map_err(bad)?,
            Shape::Keyed => {
                match (record.partition, record.key) {
                    (None, _) => self.keys.push_str(record.subject).map_err(bad)?,
                    (Some(_), key) => {
                        let mut k = Vec::new();
                        write_key(&mut k, key);
                        self.keys.push_encoded(&k).map_err(bad)?;
                    }
                }
                self.values.push_encoded(&self.scratch).map_err(bad)?;
            }
            Shape::Record => {
                let mut out = Vec::with_capacity(self.scratch.len() + 64);
                if let Some(partition) = record.partition {
                    let _ = rmp::encode::write_map_len(&mut out, 7);
                    let _ = rmp::encode::write_str(&mut out, "topic");
                    let _ = rmp::encode::write_str(&mut out, record.subject);
                    let _ = rmp::encode::write_str(&mut out, "partition");
                    let _ = rmp::encode::write_sint(&mut out, i64::from(partition));
                    let _ = rmp::encode::write_str(&mut out, "offset");
                    let _ = rmp::encode::write_uint(&mut out, record.sequence);
                    let _ = rmp::encode::write_str(&mut out, "key");
                    write_key(&mut out, record.key);
                } else {
                    let _ = rmp::encode::write_map_len(&mut out, 5);
                    let _ = rmp::encode::write_str(&mut out, "subject");
                    let _ = rmp::encode::write_str(&mut out, record.subject);
                    let _ = rmp::encode::write_str(&mut out, "sequence");
                    let _ = rmp::encode::write_uint(&mut out, record.sequence);
                }
                let _ = rmp::encode::write_str(&mut out, "time");
                let _ = rmp::encode::write_sint(&mut out, record.time_ms);
                let _ = rmp::encode::write_str(&mut out, "headers");
                write_headers(&mut out, record.headers);
                let _ = rmp::encode::write_str(&mut out, "value");
                out.extend_from_slice(&self.scratch);
                self.values.push_encoded(&out).map_err(bad)?;
            }
        }
        Ok(())
    }

    /// Elements so far.
    pub fn len(&self) -> usize {
        self.values.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// Appends elements `range` of `other` (made with the same shape).
    pub fn extend_range(
        &mut self,
        other: &Elements,
        range: std::ops::Range<usize>,
    ) -> Result<(), String> {
        if !other.keys.is_empty() {
            (self.keys)
                .extend_from_range(&other.keys, range.clone())
                .map_err(|e| e.to_string())?;
        }
        (self.values)
            .extend_from_range(&other.values, range)
            .map_err(|e| e.to_string())
    }

    /// The elements so far, as one partition's batch.
    pub fn into_batch(self) -> Batch {
        Batch {
            keys: self.keys,
            values: self.values,
        }
    }
}

/// A Kafka key: UTF-8 text as a string, other bytes as binary, none as nil.
fn write_key(out: &mut Vec<u8>, key: Option<&[u8]>) {
    match key {
        None => {
            let _ = rmp::encode::write_nil(out);
        }
        Some(k) => match std::str::from_utf8(k) {
            Ok(text) => {
                let _ = rmp::encode::write_str(out, text);
            }
            Err(_) => {
                let _ = rmp::encode::write_bin(out, k);
            }
        },
    }
}

/// Headers as a map of name → list of values (a name may repeat), names
/// in order of first appearance.
fn write_headers(out: &mut Vec<u8>, headers: &[(String, String)]) {
    let mut names: Vec<&str> = Vec::new();
    for (n, _) in headers {
        if !names.contains(&n.as_str()) {
            names.push(n);
        }
    }
    let _ = rmp::encode::write_map_len(out, names.len() as u32);
    for name in names {
        let _ = rmp::encode::write_str(out, name);
        let values: Vec<&str> = (headers.iter())
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
            .collect();
        let _ = rmp::encode::write_array_len(out, values.len() as u32);
        for v in values {
            let _ = rmp::encode::write_str(out, v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn record<'a>(payload: &'a [u8], headers: &'a [(String, String)]) -> RecordRef<'a> {
        RecordRef {
            subject: "events.a",
            partition: None,
            key: None,
            sequence: 7,
            time_ms: 1_700_000_000_000,
            headers,
            payload,
        }
    }

    fn rendered(b: &Batch) -> Vec<serde_json::Value> {
        (0..b.len())
            .map(|i| {
                let k = if b.has_keys() { b.keys.get(i) } else { &[][..] };
                sluice_core::render::to_json(&sluice_core::render::element(k, b.values.get(i)))
            })
            .collect()
    }

    #[test]
    fn every_decoder_and_shape() {
        let headers = vec![
            ("a".to_string(), "1".to_string()),
            ("a".to_string(), "2".to_string()),
        ];
        let cases: [(Decoder, &[u8], serde_json::Value); 3] = [
            (Decoder::Text, b"hello world", json!("hello world")),
            (
                Decoder::Json,
                br#"{"n": [1, 2.5, null]}"#,
                json!({"n": [1, 2.5, null]}),
            ),
            (
                Decoder::MessagePack,
                &[0x92, 0x01, 0xa1, b'x'],
                json!([1, "x"]),
            ),
        ];
        for (decoder, payload, want) in cases {
            let d = Decoding {
                decoder,
                ..Decoding::default()
            };
            let mut e = Elements::default();
            e.push(&d, record(payload, &headers)).unwrap();
            assert_eq!(rendered(&e.into_batch()), vec![want.clone()], "{decoder}");
            let keyed = Decoding {
                shape: Shape::Keyed,
                ..d
            };
            let mut e = Elements::default();
            e.push(&keyed, record(payload, &headers)).unwrap();
            assert_eq!(rendered(&e.into_batch()), vec![json!(["events.a", want])]);
        }
        let d = Decoding {
            shape: Shape::Record,
            ..Decoding::default()
        };
        let mut e = Elements::default();
        e.push(&d, record(b"hi", &headers)).unwrap();
        assert_eq!(
            rendered(&e.into_batch()),
            vec![
                json!({"subject": "events.a", "sequence": 7, "time": 1_700_000_000_000i64,
                         "headers": {"a": ["1", "2"]}, "value": "hi"})
            ]
        );
    }

    #[test]
    fn kafka_records_carry_partition_offset_and_key() {
        let kafka = RecordRef {
            subject: "clicks",
            partition: Some(2),
            key: Some(b"user-1"),
            ..record(b"7", &[])
        };
        let d = Decoding {
            decoder: Decoder::Json,
            shape: Shape::Record,
            ..Decoding::default()
        };
        let mut e = Elements::default();
        e.push(&d, kafka).unwrap();
        assert_eq!(
            rendered(&e.into_batch()),
            vec![
                json!({"topic": "clicks", "partition": 2, "offset": 7, "key": "user-1",
                   "time": 1_700_000_000_000i64, "headers": {}, "value": 7})
            ]
        );
        let keyed = Decoding {
            shape: Shape::Keyed,
            ..d
        };
        let mut e = Elements::default();
        e.push(&keyed, kafka).unwrap();
        e.push(&keyed, RecordRef { key: None, ..kafka }).unwrap();
        e.push(
            &keyed,
            RecordRef {
                key: Some(&[0xff]),
                ..kafka
            },
        )
        .unwrap();
        let rows = rendered(&e.into_batch());
        assert_eq!(rows[0], json!(["user-1", 7]));
        assert_eq!(rows[1], json!([null, 7]));
        assert_eq!(rows.len(), 3, "a binary key too");
    }

    #[test]
    fn undecodable_records_fail_or_are_counted() {
        let fail = Decoding {
            decoder: Decoder::Json,
            ..Decoding::default()
        };
        let mut e = Elements::default();
        let err = e.push(&fail, record(b"{nope", &[])).unwrap_err();
        assert!(
            err.contains("record 7 on `events.a` cannot be decoded as json"),
            "{err}"
        );
        let skip = Decoding {
            on_undecodable: Undecodable::Skip,
            max_record_bytes: 4,
            ..Decoding::default()
        };
        e.push(&skip, record(&[0xff, 0xfe], &[])).unwrap();
        e.push(&skip, record(b"too long", &[])).unwrap();
        e.push(&skip, record(b"ok", &[])).unwrap();
        assert_eq!(e.skipped, 2);
        assert!(
            e.samples[1].contains("over the limit of 4"),
            "{:?}",
            e.samples
        );
        assert_eq!(rendered(&e.into_batch()), vec![json!("ok")]);
    }
}
