//! Broker sources and outputs (`type = "nats"`, `type = "mqtt"`; Kafka's
//! are in [`super::kafka`]): their
//! settings, each checked and named in errors by its field.

use super::sections::{OutputSection, SourceSection};
use super::{Ctx, parse_size};
use crate::error::Result;
use crate::graph::StreamingContext;
use sluice_brokers::{
    Decoder, Decoding, Encoder, MqttConfig, MqttSinkConfig, MqttTls, NatsAuth, NatsConfig,
    NatsSinkConfig, Shape, StartAt, Undecodable,
};
use toml::Spanned;

/// A `nats` source's settings.
pub(super) fn nats_config(
    cx: &Ctx<'_>,
    name: &Spanned<String>,
    s: &Spanned<SourceSection>,
    job_name: &str,
    partitions: usize,
    ssc: &StreamingContext,
) -> Result<NatsConfig> {
    let field = |f: &str| format!("sources.{}.{f}", name.get_ref());
    let sec = s.get_ref();
    let Some(url) = &sec.url else {
        return cx.err(
            s.span(),
            &field("url"),
            "a nats source needs a url (nats://host:port)",
        );
    };
    let Some(stream) = &sec.stream else {
        return cx.err(
            s.span(),
            &field("stream"),
            "a nats source needs a JetStream stream name",
        );
    };
    let interval = ssc.batch_interval();
    let mut c = NatsConfig::new(name.get_ref(), url.get_ref(), stream.get_ref(), interval);
    c.partitions = partitions;
    c.durable = match &sec.durable {
        Some(d) if consumer_name(d.get_ref()) => d.get_ref().clone(),
        Some(d) => {
            return cx.err(
                d.span(),
                &field("durable"),
                "a consumer name of letters, digits, - and _",
            );
        }
        // Job and source names may hold characters NATS refuses in one.
        None => {
            format!("sluice-{job_name}-{}", name.get_ref()).replace(|ch| !consumer_char(ch), "_")
        }
    };
    c.subject = sec.subject.as_ref().map(|v| v.get_ref().clone());
    if let Some(start) = &sec.start {
        c.start =
            start_at(start.get_ref()).or_else(|e| cx.err(start.span(), &field("start"), e))?;
    }
    c.max_rate = max_rate(cx, &field, &sec.max_rate, "record")?;
    if let Some(bytes) = max_buffered(cx, &field, &sec.max_buffered)? {
        c.max_buffered_bytes = bytes;
    }
    c.auth = nats_auth(cx, &field, AuthFields::of_source(sec))?;
    c.decoding = decoding(cx, name, sec)?;
    Ok(c)
}

/// Whether NATS takes `s` as a consumer name.
fn consumer_name(s: &str) -> bool {
    !s.is_empty() && s.chars().all(consumer_char)
}

fn consumer_char(ch: char) -> bool {
    ch.is_ascii_alphanumeric() || ch == '-' || ch == '_'
}

/// An `mqtt` source's settings: `url` (`mqtt://host:port`), `topics`,
/// `qos`, `client_id`, `clean_session`, `user`/`password`, `max_rate`,
/// `max_buffered` and the decoding fields.
pub(super) fn mqtt_config(
    cx: &Ctx<'_>,
    name: &Spanned<String>,
    s: &Spanned<SourceSection>,
    job_name: &str,
    partitions: usize,
) -> Result<MqttConfig> {
    let field = |f: &str| format!("sources.{}.{f}", name.get_ref());
    let sec = s.get_ref();
    let (host, port, tls) = mqtt_broker(cx, &field, (s.span(), &sec.url), ("source", &sec.ca))?;
    let topics = match &sec.topics {
        Some(t) if !t.get_ref().is_empty() => t.get_ref().clone(),
        Some(t) => return cx.err(t.span(), &field("topics"), "at least one topic filter"),
        None => return cx.err(s.span(), &field("topics"), "an mqtt source needs topics"),
    };
    let topic_refs: Vec<&str> = topics.iter().map(String::as_str).collect();
    let mut c = MqttConfig::new(name.get_ref(), &host, port, &topic_refs);
    c.client_id = format!("sluice-{job_name}-{}", name.get_ref());
    c.partitions = partitions;
    c.tls = tls;
    if let Some(q) = qos(cx, &field, &sec.qos)? {
        c.qos = q;
    }
    if let Some(id) = &sec.client_id {
        c.client_id = id.get_ref().clone();
    }
    if let Some(clean) = &sec.clean_session {
        c.clean_session = *clean.get_ref();
    }
    c.user = user_password(cx, &field, &sec.user, &sec.password)?;
    c.max_rate = max_rate(cx, &field, &sec.max_rate, "line")?;
    if let Some(bytes) = max_buffered(cx, &field, &sec.max_buffered)? {
        c.max_buffered_bytes = bytes;
    }
    c.decoding = decoding(cx, name, sec)?;
    Ok(c)
}

/// An `mqtt` output's settings: `url`, `topic`, `qos`, `user`/`password`,
/// `encoder`.
pub(super) fn mqtt_sink_config(
    cx: &Ctx<'_>,
    field: &dyn Fn(&str) -> String,
    o: &Spanned<OutputSection>,
    job_name: &str,
    output: &str,
) -> Result<MqttSinkConfig> {
    let sec = o.get_ref();
    let (host, port, tls) = mqtt_broker(cx, field, (o.span(), &sec.url), ("output", &sec.ca))?;
    let Some(topic) = &sec.topic else {
        return cx.err(o.span(), &field("topic"), "an mqtt output needs a topic");
    };
    if topic.get_ref().is_empty() || topic.get_ref().contains(['+', '#']) {
        return cx.err(
            topic.span(),
            &field("topic"),
            "a topic to publish to, without wildcards",
        );
    }
    let client_id = format!("sluice-{job_name}-{output}");
    let mut c = MqttSinkConfig::new(&host, port, topic.get_ref(), &client_id);
    c.tls = tls;
    if let Some(q) = qos(cx, field, &sec.qos)? {
        c.qos = q;
    }
    c.user = user_password(cx, field, &sec.user, &sec.password)?;
    if let Some(e) = &sec.encoder {
        c.encoder = encoder(cx, field, e)?;
    }
    Ok(c)
}

/// A `nats` output's settings: `url`, `subject`, credentials, `encoder`.
pub(super) fn nats_sink_config(
    cx: &Ctx<'_>,
    field: &dyn Fn(&str) -> String,
    o: &Spanned<OutputSection>,
    job_name: &str,
) -> Result<NatsSinkConfig> {
    let sec = o.get_ref();
    let Some(url) = &sec.url else {
        return cx.err(
            o.span(),
            &field("url"),
            "a nats output needs a url (nats://host:port)",
        );
    };
    let Some(subject) = &sec.subject else {
        return cx.err(o.span(), &field("subject"), "a nats output needs a subject");
    };
    let mut c = NatsSinkConfig::new(job_name, url.get_ref(), subject.get_ref());
    c.auth = nats_auth(cx, field, AuthFields::of_output(sec))?;
    if let Some(e) = &sec.encoder {
        c.encoder = encoder(cx, field, e)?;
    }
    Ok(c)
}

/// `mqtt://host[:port]` → host, port (1883 by default) and no TLS;
/// `mqtts://host[:port]` → host, port (8883 by default) and TLS.
pub(super) fn mqtt_address(url: &str) -> Option<(String, u16, bool)> {
    let url = url.trim();
    let (rest, tls) = match url.strip_prefix("mqtts://") {
        Some(rest) => (rest, true),
        None => (
            url.strip_prefix("mqtt://")
                .or_else(|| url.strip_prefix("tcp://"))?,
            false,
        ),
    };
    let rest = rest.trim_end_matches('/');
    match rest.rsplit_once(':') {
        Some((h, p)) => Some((h.to_string(), p.parse().ok()?, tls)),
        None if !rest.is_empty() => Some((rest.to_string(), if tls { 8883 } else { 1883 }, tls)),
        None => None,
    }
}

/// A section's MQTT `url` (given at `span` if missing) as host, port and
/// TLS (with `ca`, the CA file to trust, resolved).
fn mqtt_broker(
    cx: &Ctx<'_>,
    field: &dyn Fn(&str) -> String,
    (span, url): (std::ops::Range<usize>, &Option<Spanned<String>>),
    (what, ca): (&str, &Option<Spanned<String>>),
) -> Result<(String, u16, Option<MqttTls>)> {
    let Some(url) = url else {
        return cx.err(
            span,
            &field("url"),
            format!("an mqtt {what} needs a url (mqtt://host:port)"),
        );
    };
    match mqtt_address(url.get_ref()) {
        Some((host, port, true)) => {
            let ca = ca.as_ref().map(|p| cx.resolve(p.get_ref()));
            Ok((host, port, Some(MqttTls { ca })))
        }
        Some((_, _, false)) if ca.is_some() => cx.err(
            url.span(),
            &field("url"),
            "a `ca` is for TLS: use mqtts://host[:port]",
        ),
        Some((host, port, false)) => Ok((host, port, None)),
        None => cx.err(
            url.span(),
            &field("url"),
            "not mqtt://host[:port] or mqtts://host[:port]",
        ),
    }
}

/// `qos`: 0, 1 or 2.
fn qos(
    cx: &Ctx<'_>,
    field: &dyn Fn(&str) -> String,
    q: &Option<Spanned<u8>>,
) -> Result<Option<u8>> {
    match q {
        Some(q) if *q.get_ref() > 2 => cx.err(q.span(), &field("qos"), "0, 1 or 2"),
        q => Ok(q.as_ref().map(|q| *q.get_ref())),
    }
}

/// `max_rate`: at least one `unit` a second.
pub(super) fn max_rate(
    cx: &Ctx<'_>,
    field: &dyn Fn(&str) -> String,
    r: &Option<Spanned<u64>>,
    unit: &str,
) -> Result<Option<u64>> {
    match r {
        Some(r) if *r.get_ref() == 0 => cx.err(
            r.span(),
            &field("max_rate"),
            format!("must be at least 1 {unit}/s"),
        ),
        r => Ok(r.as_ref().map(|r| *r.get_ref())),
    }
}

/// `max_buffered`: a size.
pub(super) fn max_buffered(
    cx: &Ctx<'_>,
    field: &dyn Fn(&str) -> String,
    m: &Option<Spanned<String>>,
) -> Result<Option<usize>> {
    let Some(m) = m else {
        return Ok(None);
    };
    let bytes = parse_size(m.get_ref()).or_else(|e| cx.err(m.span(), &field("max_buffered"), e))?;
    Ok(Some(bytes as usize))
}

/// `encoder`: text, json or msgpack.
pub(super) fn encoder(
    cx: &Ctx<'_>,
    field: &dyn Fn(&str) -> String,
    e: &Spanned<String>,
) -> Result<Encoder> {
    Encoder::parse(e.get_ref()).or_else(|m| cx.err(e.span(), &field("encoder"), m))
}

/// `user` and `password`: both or neither.
pub(super) fn user_password(
    cx: &Ctx<'_>,
    field: &dyn Fn(&str) -> String,
    user: &Option<Spanned<String>>,
    password: &Option<Spanned<String>>,
) -> Result<Option<(String, String)>> {
    match (user, password) {
        (Some(u), Some(p)) => Ok(Some((u.get_ref().clone(), p.get_ref().clone()))),
        (Some(u), None) => cx.err(u.span(), &field("password"), "a user needs a password"),
        (None, Some(p)) => cx.err(p.span(), &field("user"), "a password needs a user"),
        (None, None) => Ok(None),
    }
}

/// A broker section's credential and TLS fields.
struct AuthFields<'a> {
    user: &'a Option<Spanned<String>>,
    password: &'a Option<Spanned<String>>,
    token: &'a Option<Spanned<String>>,
    credentials: &'a Option<Spanned<String>>,
    tls: &'a Option<Spanned<bool>>,
    ca: &'a Option<Spanned<String>>,
}

impl AuthFields<'_> {
    fn of_source(sec: &SourceSection) -> AuthFields<'_> {
        AuthFields {
            user: &sec.user,
            password: &sec.password,
            token: &sec.token,
            credentials: &sec.credentials,
            tls: &sec.tls,
            ca: &sec.ca,
        }
    }

    fn of_output(sec: &OutputSection) -> AuthFields<'_> {
        AuthFields {
            user: &sec.user,
            password: &sec.password,
            token: &sec.token,
            credentials: &sec.credentials,
            tls: &sec.tls,
            ca: &sec.ca,
        }
    }
}

/// NATS credentials: `user` and `password`, `token`, `credentials` (a
/// `.creds` file), `tls` and `ca`.
fn nats_auth(cx: &Ctx<'_>, field: &dyn Fn(&str) -> String, f: AuthFields<'_>) -> Result<NatsAuth> {
    Ok(NatsAuth {
        user: user_password(cx, field, f.user, f.password)?,
        token: f.token.as_ref().map(|t| t.get_ref().clone()),
        credentials: f.credentials.as_ref().map(|p| cx.resolve(p.get_ref())),
        tls: f.tls.as_ref().is_some_and(|t| *t.get_ref()),
        ca: f.ca.as_ref().map(|p| cx.resolve(p.get_ref())),
    })
}

/// `start`: `all`, `new`, a sequence number or an RFC 3339 time.
fn start_at(v: &toml::Value) -> std::result::Result<StartAt, String> {
    match v {
        toml::Value::Integer(n) if *n >= 1 => Ok(StartAt::Sequence(*n as u64)),
        toml::Value::String(s) if s == "all" || s == "earliest" => Ok(StartAt::All),
        toml::Value::String(s) if s == "new" || s == "latest" => Ok(StartAt::New),
        toml::Value::String(s) => chrono::DateTime::parse_from_rfc3339(s)
            .map(|t| StartAt::Time(t.timestamp_millis()))
            .map_err(|e| format!("`{s}` is not all, new or an RFC 3339 time ({e})")),
        toml::Value::Datetime(d) => chrono::DateTime::parse_from_rfc3339(&d.to_string())
            .map(|t| StartAt::Time(t.timestamp_millis()))
            .map_err(|e| format!("`{d}` needs a date, a time and an offset ({e})")),
        other => Err(format!(
            "`{other}` is not all, new, a sequence number (1 or more) or an RFC 3339 time"
        )),
    }
}

/// `decoder`, `element`, `on_undecodable` and `max_record_bytes`.
pub(super) fn decoding(
    cx: &Ctx<'_>,
    name: &Spanned<String>,
    sec: &SourceSection,
) -> Result<Decoding> {
    let field = |f: &str| format!("sources.{}.{f}", name.get_ref());
    let mut d = Decoding::default();
    if let Some(v) = &sec.decoder {
        d.decoder =
            Decoder::parse(v.get_ref()).or_else(|e| cx.err(v.span(), &field("decoder"), e))?;
    }
    if let Some(v) = &sec.element {
        d.shape = Shape::parse(v.get_ref()).or_else(|e| cx.err(v.span(), &field("element"), e))?;
    }
    if let Some(v) = &sec.on_undecodable {
        d.on_undecodable = Undecodable::parse(v.get_ref())
            .or_else(|e| cx.err(v.span(), &field("on_undecodable"), e))?;
    }
    if let Some(v) = &sec.max_record_bytes {
        d.max_record_bytes = parse_size(v.get_ref())
            .or_else(|e| cx.err(v.span(), &field("max_record_bytes"), e))?
            as usize;
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_positions() {
        assert_eq!(
            start_at(&toml::Value::String("all".into())),
            Ok(StartAt::All)
        );
        assert_eq!(
            start_at(&toml::Value::String("new".into())),
            Ok(StartAt::New)
        );
        assert_eq!(
            start_at(&toml::Value::Integer(42)),
            Ok(StartAt::Sequence(42))
        );
        assert_eq!(
            start_at(&toml::Value::String("2026-12-06T00:00:01Z".into())),
            Ok(StartAt::Time(1_796_515_201_000))
        );
        assert!(start_at(&toml::Value::Integer(0)).is_err());
        assert!(consumer_name("sluice-job_1") && !consumer_name("a.b") && !consumer_name(""));
        assert_eq!(
            mqtt_address("mqtt://h:1884"),
            Some(("h".to_string(), 1884, false))
        );
        assert_eq!(
            mqtt_address("mqtt://broker"),
            Some(("broker".to_string(), 1883, false))
        );
        assert_eq!(
            mqtt_address("mqtts://broker"),
            Some(("broker".to_string(), 8883, true))
        );
        assert_eq!(mqtt_address("http://broker"), None);
        assert!(
            start_at(&toml::Value::String("yesterday".into()))
                .unwrap_err()
                .contains("RFC 3339")
        );
    }
}
