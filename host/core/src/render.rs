//! Rendering elements for people and tests: JSON (the golden-file contract,
//! DESIGN §6) and Python `repr` (Spark's `pprint`).

use rmpv::Value;

/// Decodes one MessagePack value (validated bytes; malformed input renders as `null`).
pub fn decode(bytes: &[u8]) -> Value {
    let mut r = bytes;
    rmpv::decode::read_value(&mut r).unwrap_or(Value::Nil)
}

/// The element `(key, value)` — or the lone value when there is no key — as a
/// MessagePack value (a keyed element is the pair `[key, value]`).
pub fn element(key: &[u8], value: &[u8]) -> Value {
    if key.is_empty() {
        decode(value)
    } else {
        Value::Array(vec![decode(key), decode(value)])
    }
}

/// A value as JSON: arrays for tuples and lists, objects for maps (keys as
/// strings), bytes as arrays of numbers.
pub fn to_json(v: &Value) -> serde_json::Value {
    use serde_json::Value as J;
    match v {
        Value::Nil => J::Null,
        Value::Boolean(b) => J::Bool(*b),
        Value::Integer(i) => {
            if let Some(n) = i.as_i64() {
                J::from(n)
            } else if let Some(n) = i.as_u64() {
                J::from(n)
            } else {
                J::Null
            }
        }
        Value::F32(f) => serde_json::Number::from_f64(f64::from(*f)).map_or(J::Null, J::Number),
        Value::F64(f) => serde_json::Number::from_f64(*f).map_or(J::Null, J::Number),
        Value::String(s) => J::String(s.as_str().map_or_else(
            || String::from_utf8_lossy(s.as_bytes()).into_owned(),
            str::to_string,
        )),
        Value::Binary(b) => J::Array(b.iter().map(|x| J::from(*x)).collect()),
        Value::Array(a) => J::Array(a.iter().map(to_json).collect()),
        Value::Map(m) => J::Object(
            m.iter()
                .map(|(k, v)| {
                    let key = match k {
                        Value::String(s) => s.as_str().unwrap_or_default().to_string(),
                        other => canonical_json(&to_json(other)),
                    };
                    (key, to_json(v))
                })
                .collect(),
        ),
        Value::Ext(_, b) => J::Array(b.iter().map(|x| J::from(*x)).collect()),
    }
}

/// Canonical JSON text: compact, object keys sorted, non-ASCII kept — Python's
/// `json.dumps(x, ensure_ascii=False, sort_keys=True, separators=(",", ":"))`.
pub fn canonical_json(v: &serde_json::Value) -> String {
    // serde_json's Map is a BTreeMap (no `preserve_order`), so keys come out sorted.
    v.to_string()
}

/// Python's `repr` of the value as PySpark would print it: strings quoted,
/// arrays as tuples (`('the', 2)`), `None`, `True`/`False`, maps as dicts.
pub fn py_repr(v: &Value) -> String {
    let mut s = String::new();
    write_repr(v, &mut s);
    s
}

/// Python's `str` of the value, as `saveAsTextFiles` writes it: a string is
/// its text, anything else its `repr` (so `('the', 2)` for a pair).
pub fn py_str(v: &Value) -> String {
    match v {
        Value::String(s) => match s.as_str() {
            Some(s) => s.to_string(),
            None => String::from_utf8_lossy(s.as_bytes()).into_owned(),
        },
        other => py_repr(other),
    }
}

fn write_repr(v: &Value, out: &mut String) {
    use std::fmt::Write;
    match v {
        Value::Nil => out.push_str("None"),
        Value::Boolean(true) => out.push_str("True"),
        Value::Boolean(false) => out.push_str("False"),
        Value::Integer(i) => {
            let _ = write!(out, "{i}");
        }
        Value::F32(f) => write_float(f64::from(*f), out),
        Value::F64(f) => write_float(*f, out),
        Value::String(s) => match s.as_str() {
            Some(s) => write_str_repr(s, out),
            None => write_str_repr(&String::from_utf8_lossy(s.as_bytes()), out),
        },
        Value::Binary(b) | Value::Ext(_, b) => {
            out.push_str("b'");
            for &c in b {
                match c {
                    b'\\' => out.push_str("\\\\"),
                    b'\'' => out.push_str("\\'"),
                    b'\n' => out.push_str("\\n"),
                    b'\r' => out.push_str("\\r"),
                    b'\t' => out.push_str("\\t"),
                    0x20..=0x7e => out.push(c as char),
                    _ => {
                        let _ = write!(out, "\\x{c:02x}");
                    }
                }
            }
            out.push('\'');
        }
        Value::Array(a) => {
            out.push('(');
            for (i, e) in a.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_repr(e, out);
            }
            if a.len() == 1 {
                out.push(',');
            }
            out.push(')');
        }
        Value::Map(m) => {
            out.push('{');
            for (i, (k, e)) in m.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_repr(k, out);
                out.push_str(": ");
                write_repr(e, out);
            }
            out.push('}');
        }
    }
}

fn write_float(f: f64, out: &mut String) {
    use std::fmt::Write;
    if f.is_nan() {
        out.push_str("nan");
    } else if f.is_infinite() {
        out.push_str(if f > 0.0 { "inf" } else { "-inf" });
    } else if f == f.trunc() && f.abs() < 1e16 {
        let _ = write!(out, "{f:.1}");
    } else {
        let _ = write!(out, "{f}");
    }
}

/// Python's `repr(str)`: single quotes unless the text has `'` and no `"`;
/// backslash escapes for quotes, `\\`, `\n`, `\r`, `\t` and other control
/// characters; printable Unicode as is.
fn write_str_repr(s: &str, out: &mut String) {
    use std::fmt::Write;
    let quote = if s.contains('\'') && !s.contains('"') {
        '"'
    } else {
        '\''
    };
    out.push(quote);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c if (0x80..0xa0).contains(&(c as u32)) => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push(quote);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc<T: serde::Serialize>(v: &T) -> Vec<u8> {
        rmp_serde::to_vec(v).unwrap()
    }

    #[test]
    fn python_reprs_match_pyspark() {
        assert_eq!(py_repr(&decode(&enc(&("the", 2)))), "('the', 2)");
        assert_eq!(py_repr(&decode(&enc(&"it's"))), "\"it's\"");
        assert_eq!(py_repr(&decode(&enc(&"a\tb"))), "'a\\tb'");
        assert_eq!(py_repr(&decode(&enc(&"日本 🙂"))), "'日本 🙂'");
        assert_eq!(
            py_repr(&decode(&enc(&(1.0f64, Option::<i64>::None, true)))),
            "(1.0, None, True)"
        );
    }

    #[test]
    fn json_is_canonical() {
        let v = element(&enc(&"naïve"), &enc(&3));
        assert_eq!(canonical_json(&to_json(&v)), "[\"naïve\",3]");
    }
}
