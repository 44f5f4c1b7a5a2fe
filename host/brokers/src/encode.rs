//! How elements become broker payloads, for every broker output alike.

/// How elements become message payloads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Encoder {
    /// Strings as their UTF-8 text, anything else as JSON (the default).
    #[default]
    Text,
    /// Every element as JSON (a keyed element as `[key, value]`).
    Json,
    /// Every element as MessagePack (a keyed element as `[key, value]`).
    MessagePack,
}

impl Encoder {
    /// The encoder a spec names: `text`, `json` or `msgpack`.
    pub fn parse(name: &str) -> std::result::Result<Encoder, String> {
        Ok(match name {
            "text" => Encoder::Text,
            "json" => Encoder::Json,
            "msgpack" => Encoder::MessagePack,
            other => {
                return Err(format!(
                    "unknown encoder `{other}` (use text, json or msgpack)"
                ));
            }
        })
    }

    /// An element (`key` empty when it has none) as a payload.
    pub fn encode(self, key: &[u8], value: &[u8]) -> Vec<u8> {
        match self {
            Encoder::MessagePack if key.is_empty() => value.to_vec(),
            Encoder::MessagePack => {
                let mut out = Vec::with_capacity(1 + key.len() + value.len());
                out.push(0x92);
                out.extend_from_slice(key);
                out.extend_from_slice(value);
                out
            }
            Encoder::Text | Encoder::Json => {
                let json = sluice_core::render::to_json(&sluice_core::render::element(key, value));
                match json {
                    serde_json::Value::String(s) if self == Encoder::Text => s.into_bytes(),
                    other => other.to_string().into_bytes(),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoders() {
        let mut c = sluice_sdk::Column::new();
        c.push(&"word").unwrap();
        c.push(&3i64).unwrap();
        c.push(&"plain").unwrap();
        let (k, v, s) = (c.get(0), c.get(1), c.get(2));
        assert_eq!(Encoder::Text.encode(&[], s), b"plain");
        assert_eq!(Encoder::Json.encode(&[], s), b"\"plain\"");
        assert_eq!(Encoder::Text.encode(k, v), br#"["word",3]"#);
        assert_eq!(
            Encoder::MessagePack.encode(k, v),
            [&[0x92][..], k, v].concat()
        );
        assert!(Encoder::parse("xml").is_err());
    }
}
