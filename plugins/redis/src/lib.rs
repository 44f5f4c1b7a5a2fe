//! A reliable Redis Streams receiver: reads a stream through a consumer
//! group (`XREADGROUP`) and acknowledges entries (`XACK`) only once the host
//! has stored them, so entries received but not stored when the job died are
//! read again (from the group's pending list) when it starts again.
//!
//! Settings: `address` (`host:port`, which the job must grant the plugin
//! with `connect`), `stream`, `group` (default `sluice`), `consumer`
//! (default `sluice-1`), `field` (the entry field that is the record,
//! default `data`; an entry without it is logged and skipped) and `start`
//! (where a new group begins: `0` for the whole stream, the default, or `$`
//! for new entries only).
//!
//! Speaks RESP over `std::net::TcpStream`: no client library, so the
//! component stays small.

use sluice_sdk as sluice;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::time::Duration;

/// A RESP reply.
#[derive(Debug, PartialEq)]
enum Reply {
    Simple(String),
    Error(String),
    Int(i64),
    Bulk(Option<Vec<u8>>),
    Array(Option<Vec<Reply>>),
}

/// One connection to the Redis server.
struct Conn {
    reader: BufReader<TcpStream>,
}

fn io(what: &str, e: std::io::Error) -> String {
    format!("{what}: {e}")
}

impl Conn {
    fn open(address: &str) -> Result<Conn, String> {
        let addr: std::net::SocketAddr = address
            .parse()
            .map_err(|e| format!("`{address}` is not an IP address and port: {e}"))?;
        let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
            .map_err(|e| io(&format!("connecting to {address}"), e))?;
        // No effect where the platform lacks it: XREADGROUP's BLOCK bounds
        // the wait anyway.
        let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
        Ok(Conn {
            reader: BufReader::new(stream),
        })
    }

    /// Sends one command and reads its reply.
    fn call(&mut self, args: &[&[u8]]) -> Result<Reply, String> {
        let mut out = format!("*{}\r\n", args.len()).into_bytes();
        for a in args {
            out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
            out.extend_from_slice(a);
            out.extend_from_slice(b"\r\n");
        }
        self.reader
            .get_mut()
            .write_all(&out)
            .map_err(|e| io("sending a command", e))?;
        read_reply(&mut self.reader)
    }
}

fn read_reply(r: &mut impl BufRead) -> Result<Reply, String> {
    let mut line = Vec::new();
    r.read_until(b'\n', &mut line)
        .map_err(|e| io("reading a reply", e))?;
    if line.is_empty() {
        return Err("the server closed the connection".to_string());
    }
    let text = String::from_utf8_lossy(&line[1..])
        .trim_end_matches(['\r', '\n'])
        .to_string();
    let number = || {
        text.parse::<i64>()
            .map_err(|_| format!("a malformed reply `{text}`"))
    };
    Ok(match line[0] {
        b'+' => Reply::Simple(text),
        b'-' => Reply::Error(text),
        b':' => Reply::Int(number()?),
        b'$' => match number()? {
            n if n < 0 => Reply::Bulk(None),
            n => {
                let mut data = vec![0; n as usize + 2];
                std::io::Read::read_exact(r, &mut data).map_err(|e| io("reading a reply", e))?;
                data.truncate(n as usize);
                Reply::Bulk(Some(data))
            }
        },
        b'*' => match number()? {
            n if n < 0 => Reply::Array(None),
            n => Reply::Array(Some(
                (0..n).map(|_| read_reply(r)).collect::<Result<_, _>>()?,
            )),
        },
        other => return Err(format!("an unknown reply type `{}`", other as char)),
    })
}

/// One stream entry as read.
#[derive(Debug, PartialEq)]
struct Entry {
    id: Vec<u8>,
    /// The value of the receiver's field (`None`: the entry lacks it).
    record: Option<String>,
}

/// The entries of an `XREADGROUP` reply.
fn entries(reply: Reply, field: &str) -> Result<Vec<Entry>, String> {
    let streams = match reply {
        Reply::Array(None) => return Ok(Vec::new()),
        Reply::Array(Some(s)) => s,
        Reply::Error(e) => return Err(format!("XREADGROUP: {e}")),
        other => return Err(format!("XREADGROUP: unexpected reply {other:?}")),
    };
    let mut out = Vec::new();
    for stream in streams {
        let Reply::Array(Some(mut pair)) = stream else {
            return Err("XREADGROUP: a malformed stream reply".to_string());
        };
        let Some(Reply::Array(Some(items))) = pair.pop() else {
            return Err("XREADGROUP: a malformed entry list".to_string());
        };
        for item in items {
            let Reply::Array(Some(mut entry)) = item else {
                return Err("XREADGROUP: a malformed entry".to_string());
            };
            let fields = entry.pop();
            let Some(Reply::Bulk(Some(id))) = entry.pop() else {
                return Err("XREADGROUP: an entry without id".to_string());
            };
            let mut record = None;
            if let Some(Reply::Array(Some(kv))) = fields {
                for pair in kv.chunks(2) {
                    if let [Reply::Bulk(Some(k)), Reply::Bulk(Some(v))] = pair
                        && k == field.as_bytes()
                    {
                        record = Some(String::from_utf8_lossy(v).into_owned());
                    }
                }
            }
            out.push(Entry { id, record });
        }
    }
    Ok(out)
}

/// A running Redis Streams receiver.
pub struct RedisStreams {
    address: String,
    stream: String,
    group: String,
    consumer: String,
    field: String,
    start: String,
    conn: Option<Conn>,
    /// Still reading the entries delivered before but never acknowledged.
    pending: bool,
    /// Ids polled since the last ack.
    unacked: Vec<Vec<u8>>,
}

impl RedisStreams {
    /// Connects and makes sure the group exists.
    fn connect(&mut self) -> Result<&mut Conn, String> {
        if self.conn.is_none() {
            let mut conn = Conn::open(&self.address)?;
            let created = conn.call(&[
                b"XGROUP",
                b"CREATE",
                self.stream.as_bytes(),
                self.group.as_bytes(),
                self.start.as_bytes(),
                b"MKSTREAM",
            ])?;
            match created {
                Reply::Simple(_) => sluice::info!(
                    "created group `{}` on stream `{}` from `{}`",
                    self.group,
                    self.stream,
                    self.start
                ),
                Reply::Error(e) if e.starts_with("BUSYGROUP") => {}
                Reply::Error(e) => return Err(format!("XGROUP CREATE: {e}")),
                other => return Err(format!("XGROUP CREATE: unexpected reply {other:?}")),
            }
            // Entries delivered to this consumer and never acknowledged (a
            // stop before the host stored them) come first.
            self.pending = true;
            self.unacked.clear();
            self.conn = Some(conn);
        }
        Ok(self.conn.as_mut().expect("just connected"))
    }
}

impl sluice::Receiver for RedisStreams {
    fn poll(&mut self, max: usize, wait: Duration) -> Result<Vec<String>, String> {
        let count = max.max(1).to_string();
        let block = wait.as_millis().max(1).to_string();
        let pending = self.pending;
        let (stream, group, consumer) = (
            self.stream.clone(),
            self.group.clone(),
            self.consumer.clone(),
        );
        let conn = self.connect()?;
        let from: &[u8] = if pending { b"0" } else { b">" };
        let mut args: Vec<&[u8]> = vec![
            b"XREADGROUP",
            b"GROUP",
            group.as_bytes(),
            consumer.as_bytes(),
            b"COUNT",
            count.as_bytes(),
        ];
        if !pending {
            args.extend([b"BLOCK".as_slice(), block.as_bytes()]);
        }
        args.extend([b"STREAMS".as_slice(), stream.as_bytes(), from]);
        let reply = match conn.call(&args) {
            Ok(r) => r,
            Err(e) => {
                self.conn = None;
                return Err(e);
            }
        };
        let got = entries(reply, &self.field)?;
        if pending && got.is_empty() {
            self.pending = false;
        }
        let mut records = Vec::with_capacity(got.len());
        for Entry { id, record } in got {
            match record {
                Some(r) => records.push(r),
                None => sluice::warn!(
                    "entry {} has no field `{}`: skipped",
                    String::from_utf8_lossy(&id),
                    self.field
                ),
            }
            self.unacked.push(id);
        }
        Ok(records)
    }

    fn ack(&mut self) -> Result<(), String> {
        if self.unacked.is_empty() {
            return Ok(());
        }
        let (stream, group) = (self.stream.clone(), self.group.clone());
        let ids = std::mem::take(&mut self.unacked);
        let conn = self.connect()?;
        let mut args: Vec<&[u8]> = vec![b"XACK", stream.as_bytes(), group.as_bytes()];
        args.extend(ids.iter().map(Vec::as_slice));
        match conn.call(&args) {
            Ok(Reply::Int(_)) => Ok(()),
            Ok(other) => Err(format!("XACK: unexpected reply {other:?}")),
            Err(e) => {
                self.conn = None;
                Err(e)
            }
        }
    }

    fn stop(&mut self) {
        self.conn = None;
    }
}

/// Entries of a Redis stream, through a consumer group, acknowledged once stored.
#[sluice::receiver]
fn streams(settings: &sluice::Settings) -> Result<RedisStreams, String> {
    let start = settings.get("start").unwrap_or("0").to_string();
    if start != "0" && start != "$" {
        return Err(format!(
            "the setting `start` = `{start}`: use 0 (the whole stream) or $ (new entries)"
        ));
    }
    Ok(RedisStreams {
        address: settings.require("address")?.to_string(),
        stream: settings.require("stream")?.to_string(),
        group: settings.get("group").unwrap_or("sluice").to_string(),
        consumer: settings.get("consumer").unwrap_or("sluice-1").to_string(),
        field: settings.get("field").unwrap_or("data").to_string(),
        start,
        conn: None,
        pending: true,
        unacked: Vec::new(),
    })
}

sluice::export!(streams);

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(bytes: &[u8]) -> Reply {
        read_reply(&mut BufReader::new(bytes)).unwrap()
    }

    #[test]
    fn replies_parse() {
        assert_eq!(reply(b"+OK\r\n"), Reply::Simple("OK".into()));
        assert_eq!(reply(b"-ERR no\r\n"), Reply::Error("ERR no".into()));
        assert_eq!(reply(b":3\r\n"), Reply::Int(3));
        assert_eq!(reply(b"$-1\r\n"), Reply::Bulk(None));
        assert_eq!(reply(b"*-1\r\n"), Reply::Array(None));
        assert_eq!(
            reply(b"$3\r\na\nb\r\n"),
            Reply::Bulk(Some(b"a\nb".to_vec()))
        );
    }

    #[test]
    fn entries_take_the_field_and_name_the_ones_without() {
        let r = reply(
            b"*1\r\n*2\r\n$1\r\ns\r\n*2\r\n*2\r\n$3\r\n1-0\r\n*2\r\n$4\r\ndata\r\n$5\r\nhello\r\n*2\r\n$3\r\n2-0\r\n*2\r\n$1\r\nx\r\n$1\r\ny\r\n",
        );
        let got = entries(r, "data").unwrap();
        assert_eq!(
            got,
            vec![
                Entry {
                    id: b"1-0".to_vec(),
                    record: Some("hello".to_string())
                },
                Entry {
                    id: b"2-0".to_vec(),
                    record: None
                }
            ]
        );
    }

    #[test]
    fn settings_are_checked() {
        let s = |pairs: &[(&str, &str)]| {
            sluice::Settings::new(
                pairs
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            )
        };
        let e = streams(&s(&[("stream", "x")])).err().unwrap();
        assert_eq!(e, "the setting `address` is required");
        let e = streams(&s(&[
            ("address", "127.0.0.1:1"),
            ("stream", "x"),
            ("start", "9"),
        ]))
        .err()
        .unwrap();
        assert!(e.contains("`start` = `9`"), "{e}");
        assert!(streams(&s(&[("address", "127.0.0.1:1"), ("stream", "x")])).is_ok());
    }
}
