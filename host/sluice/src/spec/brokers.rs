//! Broker sources and outputs (`type = "nats"`): their settings, each
//! checked and named in errors by its field.

use super::sections::{OutputSection, SourceSection};
use super::{Ctx, parse_size};
use crate::error::Result;
use crate::graph::StreamingContext;
use sluice_brokers::{
    Decoder, Decoding, Encoder, MqttConfig, MqttSinkConfig, NatsAuth, NatsConfig, NatsSinkConfig,
    Shape, StartAt, Undecodable,
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
    let mut c = NatsConfig::new(
        name.get_ref(),
        url.get_ref(),
        stream.get_ref(),
        ssc.batch_interval(),
    );
    c.durable = format!("sluice-{job_name}-{}", name.get_ref());
    c.partitions = partitions;
    if let Some(d) = &sec.durable {
        let ok = !d.get_ref().is_empty()
            && d.get_ref()
                .chars()
                .all(|ch| ch.is_ascii_alphanumeric() || ch == '-' || ch == '_');
        if !ok {
            return cx.err(
                d.span(),
                &field("durable"),
                "a consumer name of letters, digits, - and _",
            );
        }
        c.durable = d.get_ref().clone();
    } else if !c
        .durable
        .chars()
        .all(|ch| ch.is_ascii_alphanumeric() || ch == '-' || ch == '_')
    {
        c.durable = c
            .durable
            .replace(|ch: char| !ch.is_ascii_alphanumeric() && ch != '-', "_");
    }
    c.subject = sec.subject.as_ref().map(|v| v.get_ref().clone());
    if let Some(start) = &sec.start {
        c.start =
            start_at(start.get_ref()).or_else(|e| cx.err(start.span(), &field("start"), e))?;
    }
    if let Some(r) = &sec.max_rate {
        if *r.get_ref() == 0 {
            return cx.err(r.span(), &field("max_rate"), "must be at least 1 record/s");
        }
        c.max_rate = Some(*r.get_ref());
    }
    if let Some(m) = &sec.max_buffered {
        c.max_buffered_bytes = parse_size(m.get_ref())
            .or_else(|e| cx.err(m.span(), &field("max_buffered"), e))?
            as usize;
    }
    c.auth = NatsAuth {
        user: match (&sec.user, &sec.password) {
            (Some(u), Some(p)) => Some((u.get_ref().clone(), p.get_ref().clone())),
            (Some(u), None) => {
                return cx.err(u.span(), &field("password"), "a user needs a password");
            }
            (None, Some(p)) => return cx.err(p.span(), &field("user"), "a password needs a user"),
            (None, None) => None,
        },
        token: sec.token.as_ref().map(|t| t.get_ref().clone()),
        credentials: sec.credentials.as_ref().map(|p| cx.resolve(p.get_ref())),
        tls: sec.tls.as_ref().is_some_and(|t| *t.get_ref()),
        ca: sec.ca.as_ref().map(|p| cx.resolve(p.get_ref())),
    };
    c.decoding = decoding(cx, name, sec)?;
    Ok(c)
}

/// An `mqtt` source's settings: `url` (`mqtt://host:port`), `topics`,
/// `qos`, `client_id`, `clean_session`, `user`/`password`, `max_rate`,
/// `max_buffered`.
pub(super) fn mqtt_config(
    cx: &Ctx<'_>,
    name: &Spanned<String>,
    s: &Spanned<SourceSection>,
    job_name: &str,
    partitions: usize,
) -> Result<MqttConfig> {
    let field = |f: &str| format!("sources.{}.{f}", name.get_ref());
    let sec = s.get_ref();
    let Some(url) = &sec.url else {
        return cx.err(
            s.span(),
            &field("url"),
            "an mqtt source needs a url (mqtt://host:port)",
        );
    };
    let Some((host, port)) = mqtt_address(url.get_ref()) else {
        return cx.err(
            url.span(),
            &field("url"),
            "not mqtt://host[:port] (TLS, mqtts://, is not supported yet)",
        );
    };
    let topics = match &sec.topics {
        Some(t) if !t.get_ref().is_empty() => t.get_ref().clone(),
        Some(t) => return cx.err(t.span(), &field("topics"), "at least one topic filter"),
        None => return cx.err(s.span(), &field("topics"), "an mqtt source needs topics"),
    };
    let topic_refs: Vec<&str> = topics.iter().map(String::as_str).collect();
    let mut c = MqttConfig::new(name.get_ref(), &host, port, &topic_refs);
    c.client_id = format!("sluice-{job_name}-{}", name.get_ref());
    c.partitions = partitions;
    if let Some(q) = &sec.qos {
        if *q.get_ref() > 2 {
            return cx.err(q.span(), &field("qos"), "0, 1 or 2");
        }
        c.qos = *q.get_ref();
    }
    if let Some(id) = &sec.client_id {
        c.client_id = id.get_ref().clone();
    }
    if let Some(clean) = &sec.clean_session {
        c.clean_session = *clean.get_ref();
    }
    c.user = match (&sec.user, &sec.password) {
        (Some(u), Some(p)) => Some((u.get_ref().clone(), p.get_ref().clone())),
        (Some(u), None) => return cx.err(u.span(), &field("password"), "a user needs a password"),
        (None, Some(p)) => return cx.err(p.span(), &field("user"), "a password needs a user"),
        (None, None) => None,
    };
    if let Some(r) = &sec.max_rate {
        if *r.get_ref() == 0 {
            return cx.err(r.span(), &field("max_rate"), "must be at least 1 line/s");
        }
        c.max_rate = Some(*r.get_ref());
    }
    if let Some(m) = &sec.max_buffered {
        c.max_buffered_bytes = parse_size(m.get_ref())
            .or_else(|e| cx.err(m.span(), &field("max_buffered"), e))?
            as usize;
    }
    Ok(c)
}

/// An `mqtt` output's settings: `url`, `topic`, `qos`, `user`/`password`,
/// `encoder`.
pub(super) fn mqtt_sink_config(
    cx: &Ctx<'_>,
    field: &dyn Fn(&str) -> String,
    o: &Spanned<OutputSection>,
    job_name: &str,
    index: usize,
) -> Result<MqttSinkConfig> {
    let sec = o.get_ref();
    let Some(url) = &sec.url else {
        return cx.err(
            o.span(),
            &field("url"),
            "an mqtt output needs a url (mqtt://host:port)",
        );
    };
    let Some((host, port)) = mqtt_address(url.get_ref()) else {
        return cx.err(
            url.span(),
            &field("url"),
            "not mqtt://host[:port] (TLS, mqtts://, is not supported yet)",
        );
    };
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
    let client_id = format!("sluice-{job_name}-output-{index}");
    let mut c = MqttSinkConfig::new(&host, port, topic.get_ref(), &client_id);
    if let Some(q) = &sec.qos {
        if *q.get_ref() > 2 {
            return cx.err(q.span(), &field("qos"), "0, 1 or 2");
        }
        c.qos = *q.get_ref();
    }
    c.user = match (&sec.user, &sec.password) {
        (Some(u), Some(p)) => Some((u.get_ref().clone(), p.get_ref().clone())),
        (Some(u), None) => return cx.err(u.span(), &field("password"), "a user needs a password"),
        (None, Some(p)) => return cx.err(p.span(), &field("user"), "a password needs a user"),
        (None, None) => None,
    };
    if let Some(e) = &sec.encoder {
        c.encoder =
            Encoder::parse(e.get_ref()).or_else(|m| cx.err(e.span(), &field("encoder"), m))?;
    }
    Ok(c)
}

/// `mqtt://host[:port]` → host and port (1883 by default).
pub(super) fn mqtt_address(url: &str) -> Option<(String, u16)> {
    let rest = url
        .trim()
        .strip_prefix("mqtt://")
        .or_else(|| url.trim().strip_prefix("tcp://"))?;
    let rest = rest.trim_end_matches('/');
    match rest.rsplit_once(':') {
        Some((h, p)) => Some((h.to_string(), p.parse().ok()?)),
        None if !rest.is_empty() => Some((rest.to_string(), 1883)),
        None => None,
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

/// `user` and `password` (both or neither), `token`, `credentials` (a
/// `.creds` file), `tls` and `ca`.
fn auth(cx: &Ctx<'_>, field: &dyn Fn(&str) -> String, f: AuthFields<'_>) -> Result<NatsAuth> {
    Ok(NatsAuth {
        user: match (f.user, f.password) {
            (Some(u), Some(p)) => Some((u.get_ref().clone(), p.get_ref().clone())),
            (Some(u), None) => {
                return cx.err(u.span(), &field("password"), "a user needs a password");
            }
            (None, Some(p)) => return cx.err(p.span(), &field("user"), "a password needs a user"),
            (None, None) => None,
        },
        token: f.token.as_ref().map(|t| t.get_ref().clone()),
        credentials: f.credentials.as_ref().map(|p| cx.resolve(p.get_ref())),
        tls: f.tls.as_ref().is_some_and(|t| *t.get_ref()),
        ca: f.ca.as_ref().map(|p| cx.resolve(p.get_ref())),
    })
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
    let fields = AuthFields {
        user: &sec.user,
        password: &sec.password,
        token: &sec.token,
        credentials: &sec.credentials,
        tls: &sec.tls,
        ca: &sec.ca,
    };
    c.auth = auth(cx, field, fields)?;
    if let Some(e) = &sec.encoder {
        c.encoder =
            Encoder::parse(e.get_ref()).or_else(|m| cx.err(e.span(), &field("encoder"), m))?;
    }
    Ok(c)
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
fn decoding(cx: &Ctx<'_>, name: &Spanned<String>, sec: &SourceSection) -> Result<Decoding> {
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
        assert_eq!(mqtt_address("mqtt://h:1884"), Some(("h".to_string(), 1884)));
        assert_eq!(
            mqtt_address("mqtt://broker"),
            Some(("broker".to_string(), 1883))
        );
        assert_eq!(mqtt_address("mqtts://broker"), None);
        assert!(
            start_at(&toml::Value::String("yesterday".into()))
                .unwrap_err()
                .contains("RFC 3339")
        );
    }
}
