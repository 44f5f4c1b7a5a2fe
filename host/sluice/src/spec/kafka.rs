//! Kafka sources and outputs (`type = "kafka"`): their settings, each
//! checked and named in errors by its field.

use super::Ctx;
use super::brokers::{decoding, encoder, max_buffered, max_rate, user_password};
use super::sections::{OutputSection, SourceSection};
use crate::error::Result;
use crate::graph::StreamingContext;
use sluice_brokers::kafka::{KafkaConfig, KafkaSinkConfig, RESERVED, StartAt, Topics};
use toml::Spanned;

/// A `kafka` source's settings: `brokers`, `topics` or `topic_pattern`,
/// `group_id`, `start`, `max_rate_per_partition`, `min_partitions`, `max_buffered`,
/// `properties`, `user`/`password`, `tls`, `ca` and the decoding fields.
pub(super) fn kafka_config(
    cx: &Ctx<'_>,
    name: &Spanned<String>,
    s: &Spanned<SourceSection>,
    job_name: &str,
    partitions: usize,
    ssc: &StreamingContext,
) -> Result<KafkaConfig> {
    let field = |f: &str| format!("sources.{}.{f}", name.get_ref());
    let sec = s.get_ref();
    let brokers = brokers(cx, &field, (s.span(), &sec.brokers), "source")?;
    let topics = match (&sec.topics, &sec.topic_pattern) {
        (Some(t), None) if !t.get_ref().is_empty() => Topics::Names(t.get_ref().clone()),
        (Some(t), None) => return cx.err(t.span(), &field("topics"), "at least one topic"),
        (None, Some(p)) => {
            let re = regex::Regex::new(&format!("^(?:{})$", p.get_ref()))
                .or_else(|e| cx.err(p.span(), &field("topic_pattern"), e.to_string()))?;
            Topics::Pattern(re)
        }
        (Some(t), Some(_)) => {
            return cx.err(
                t.span(),
                &field("topics"),
                "topics or topic_pattern, not both",
            );
        }
        (None, None) => {
            return cx.err(
                s.span(),
                &field("topics"),
                "a kafka source needs topics (or a topic_pattern)",
            );
        }
    };
    let mut c = KafkaConfig::new(name.get_ref(), &brokers, topics, ssc.batch_interval());
    c.partitions = partitions;
    c.group_id = match &sec.group_id {
        Some(g) if !g.get_ref().is_empty() => g.get_ref().clone(),
        Some(g) => return cx.err(g.span(), &field("group_id"), "a consumer group name"),
        None => format!("sluice-{job_name}-{}", name.get_ref()),
    };
    if let Some(start) = &sec.start {
        c.start =
            start_at(start.get_ref()).or_else(|e| cx.err(start.span(), &field("start"), e))?;
    }
    if let Some(r) = max_rate(cx, &field, &sec.max_rate_per_partition, "record")? {
        c.max_rate_per_partition = Some(r);
    }
    if let Some(m) = &sec.min_partitions {
        if *m.get_ref() == 0 {
            return cx.err(m.span(), &field("min_partitions"), "at least 1");
        }
        c.min_partitions = Some(*m.get_ref());
    }
    if let Some(bytes) = max_buffered(cx, &field, &sec.max_buffered)? {
        c.max_buffered_bytes = bytes;
    }
    c.properties = properties(
        cx,
        &field,
        &sec.properties,
        Security::of(cx, &field, (&sec.user, &sec.password), &sec.tls, &sec.ca)?,
    )?;
    c.decoding = decoding(cx, name, sec)?;
    Ok(c)
}

/// A `kafka` output's settings: `brokers`, `topic`, `encoder`,
/// `exactly_once`, `commit_topic`, `properties` and credentials.
pub(super) fn kafka_sink_config(
    cx: &Ctx<'_>,
    field: &dyn Fn(&str) -> String,
    o: &Spanned<OutputSection>,
    job_name: &str,
    output: &str,
) -> Result<KafkaSinkConfig> {
    let sec = o.get_ref();
    let brokers = brokers(cx, field, (o.span(), &sec.brokers), "output")?;
    let Some(topic) = &sec.topic else {
        return cx.err(o.span(), &field("topic"), "a kafka output needs a topic");
    };
    let mut c = KafkaSinkConfig::new(job_name, output, &brokers, topic.get_ref());
    if let Some(e) = &sec.encoder {
        c.encoder = encoder(cx, field, e)?;
    }
    c.exactly_once = sec.exactly_once.as_ref().is_some_and(|e| *e.get_ref());
    if let Some(t) = &sec.commit_topic {
        if t.get_ref().is_empty() || t.get_ref() == topic.get_ref() {
            return cx.err(
                t.span(),
                &field("commit_topic"),
                "a topic of its own for the markers",
            );
        }
        c.commit_topic = t.get_ref().clone();
    }
    c.properties = properties(
        cx,
        field,
        &sec.properties,
        Security::of(cx, field, (&sec.user, &sec.password), &sec.tls, &sec.ca)?,
    )?;
    Ok(c)
}

/// `brokers`: `host:port[,host:port…]`.
fn brokers(
    cx: &Ctx<'_>,
    field: &dyn Fn(&str) -> String,
    (span, brokers): (std::ops::Range<usize>, &Option<Spanned<String>>),
    what: &str,
) -> Result<String> {
    let Some(b) = brokers else {
        return cx.err(
            span,
            &field("brokers"),
            format!("a kafka {what} needs brokers (host:port, comma separated)"),
        );
    };
    let list: Vec<&str> = b.get_ref().split(',').map(str::trim).collect();
    if let Some(bad) = list.iter().find(|e| broker_endpoint(e).is_none()) {
        return cx.err(
            b.span(),
            &field("brokers"),
            format!("`{bad}` is not host:port"),
        );
    }
    Ok(list.join(","))
}

/// A bootstrap broker's `host:port` (a `PLAINTEXT://` or similar scheme
/// allowed), if it is one.
pub(super) fn broker_endpoint(entry: &str) -> Option<String> {
    let rest = entry.trim();
    let rest = rest.split_once("://").map_or(rest, |(_, r)| r);
    let (host, port) = rest.rsplit_once(':')?;
    (!host.is_empty() && port.parse::<u16>().is_ok()).then(|| format!("{host}:{port}"))
}

/// The credential and TLS fields a Kafka section shares with the others.
struct Security {
    user: Option<(String, String)>,
    tls: bool,
    ca: Option<String>,
}

type Field = Option<Spanned<String>>;

impl Security {
    /// A section's `user`/`password`, `tls` and `ca`.
    fn of(
        cx: &Ctx<'_>,
        field: &dyn Fn(&str) -> String,
        (user, password): (&Field, &Field),
        tls: &Option<Spanned<bool>>,
        ca: &Field,
    ) -> Result<Security> {
        Ok(Security {
            user: user_password(cx, field, user, password)?,
            tls: tls.as_ref().is_some_and(|t| *t.get_ref()),
            ca: ca
                .as_ref()
                .map(|p| cx.resolve(p.get_ref()).display().to_string()),
        })
    }
}

/// `properties` (librdkafka's, as strings; Sluice's own refused), with
/// `user`/`password` as SASL (SCRAM-SHA-512 unless `sasl.mechanism` says
/// otherwise), `tls` and `ca` as SSL.
fn properties(
    cx: &Ctx<'_>,
    field: &dyn Fn(&str) -> String,
    given: &Option<Spanned<toml::Table>>,
    security: Security,
) -> Result<Vec<(String, String)>> {
    let mut out: Vec<(String, String)> = Vec::new();
    if let Some(table) = given {
        for (k, v) in table.get_ref() {
            if RESERVED.contains(&k.as_str()) {
                return cx.err(
                    table.span(),
                    &field(&format!("properties.{k}")),
                    "Sluice sets this itself (offsets, transactions and brokers are the job's)",
                );
            }
            let value = match v {
                toml::Value::String(s) => s.clone(),
                toml::Value::Integer(i) => i.to_string(),
                toml::Value::Boolean(b) => b.to_string(),
                toml::Value::Float(f) => f.to_string(),
                _ => {
                    return cx.err(
                        table.span(),
                        &field(&format!("properties.{k}")),
                        "a string, number or boolean",
                    );
                }
            };
            out.push((k.clone(), value));
        }
    }
    let has = |out: &[(String, String)], k: &str| out.iter().any(|(n, _)| n == k);
    if let Some((user, password)) = security.user {
        if !has(&out, "sasl.mechanism") {
            out.push(("sasl.mechanism".into(), "SCRAM-SHA-512".into()));
        }
        out.push(("sasl.username".into(), user));
        out.push(("sasl.password".into(), password));
    }
    let sasl = has(&out, "sasl.username");
    if !has(&out, "security.protocol") && (sasl || security.tls || security.ca.is_some()) {
        let tls = security.tls || security.ca.is_some();
        let protocol = match (sasl, tls) {
            (true, true) => "SASL_SSL",
            (true, false) => "SASL_PLAINTEXT",
            _ => "SSL",
        };
        out.push(("security.protocol".into(), protocol.into()));
    }
    if let Some(ca) = security.ca {
        out.push(("ssl.ca.location".into(), ca));
    }
    Ok(out)
}

/// `start`: `earliest`, `latest`, an RFC 3339 time, or a table of
/// offsets by `"topic:partition"`.
fn start_at(v: &toml::Value) -> std::result::Result<StartAt, String> {
    match v {
        toml::Value::String(s) if s == "earliest" => Ok(StartAt::Earliest),
        toml::Value::String(s) if s == "latest" => Ok(StartAt::Latest),
        toml::Value::String(s) => chrono::DateTime::parse_from_rfc3339(s)
            .map(|t| StartAt::Time(t.timestamp_millis()))
            .map_err(|e| format!("`{s}` is not earliest, latest or an RFC 3339 time ({e})")),
        toml::Value::Datetime(d) => chrono::DateTime::parse_from_rfc3339(&d.to_string())
            .map(|t| StartAt::Time(t.timestamp_millis()))
            .map_err(|e| format!("`{d}` needs a date, a time and an offset ({e})")),
        toml::Value::Table(t) => {
            let mut offsets = Vec::new();
            for (k, v) in t {
                let (topic, partition) = k
                    .rsplit_once(':')
                    .and_then(|(t, p)| Some((t.to_string(), p.parse::<i32>().ok()?)))
                    .ok_or_else(|| format!("`{k}` is not \"topic:partition\""))?;
                let offset = v
                    .as_integer()
                    .filter(|o| *o >= 0)
                    .ok_or_else(|| format!("the offset of `{k}` is not a number of 0 or more"))?;
                offsets.push((topic, partition, offset));
            }
            Ok(StartAt::Offsets(offsets))
        }
        other => Err(format!(
            "`{other}` is not earliest, latest, an RFC 3339 time or a table of \"topic:partition\" = offset"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_positions_and_endpoints() {
        let s = |v: &str| start_at(&toml::Value::String(v.into()));
        assert_eq!(s("earliest"), Ok(StartAt::Earliest));
        assert_eq!(s("latest"), Ok(StartAt::Latest));
        assert_eq!(
            s("2026-12-06T00:00:01Z"),
            Ok(StartAt::Time(1_796_515_201_000))
        );
        assert!(s("soon").unwrap_err().contains("RFC 3339"));
        let table: toml::Table = toml::from_str("\"events:1\" = 42").unwrap();
        assert_eq!(
            start_at(&toml::Value::Table(table)),
            Ok(StartAt::Offsets(vec![("events".into(), 1, 42)]))
        );
        let bad: toml::Table = toml::from_str("events = 42").unwrap();
        assert!(
            start_at(&toml::Value::Table(bad))
                .unwrap_err()
                .contains("topic:partition")
        );
        assert_eq!(
            broker_endpoint("127.0.0.1:9092").as_deref(),
            Some("127.0.0.1:9092")
        );
        assert_eq!(
            broker_endpoint("PLAINTEXT://k:19092").as_deref(),
            Some("k:19092")
        );
        assert_eq!(broker_endpoint("k"), None);
    }
}
