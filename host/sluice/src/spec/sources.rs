//! The job's sources (`[sources.NAME]`): sockets, queues, watched
//! directories (local or in object storage), generators, brokers
//! (`brokers.rs`) and plugins' custom receivers.

use super::sections::{SourceSection, SpecFile};
use super::{Ctx, SocketFeed, parse_size};
use crate::error::Result;
use crate::graph::{DStream, StreamingContext};
use crate::plugin::Plugin;
use crate::receiver::file_store::{FileStore, LocalDir};
use crate::receiver::generator::GeneratorConfig;
use crate::receiver::queue::read_queue_file;
use crate::receiver::socket::{NonUtf8Policy, SocketConfig};
use sluice_brokers::NatsSource;
use sluice_brokers::kafka::KafkaSource;
use sluice_objects::S3Dir;
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use toml::Spanned;

/// The job's sources as streams of `ssc` by name, and its socket sources
/// (for `--feed`).
pub(super) fn add_sources(
    cx: &Ctx<'_>,
    spec: &SpecFile,
    ssc: &StreamingContext,
    (job_name, plugins): (&str, &BTreeMap<String, Arc<Plugin>>),
    default_partitions: usize,
) -> Result<(HashMap<String, DStream>, Vec<SocketFeed>)> {
    let mut streams: HashMap<String, DStream> = HashMap::new();
    let mut socket_addrs = Vec::new();
    for (name, s) in &spec.sources {
        let field = |f: &str| format!("sources.{}.{f}", name.get_ref());
        let sec = s.get_ref();
        let partitions = match &sec.partitions {
            Some(p) if *p.get_ref() == 0 => {
                return cx.err(p.span(), &field("partitions"), "must be at least 1");
            }
            Some(p) => Some(*p.get_ref()),
            None => None,
        };
        let partitions = cx.partitions.or(partitions);
        let stream = match sec.kind.get_ref().as_str() {
            "socket" => {
                let config = socket_config(cx, name, s)?;
                socket_addrs.push(SocketFeed {
                    host: config.host.clone(),
                    port: config.port,
                    buffered_bytes: config.max_buffered_bytes as u64,
                    demo_lines: sec.demo_lines.as_ref().map(|d| cx.resolve(d.get_ref())),
                });
                ssc.socket_text_stream_with(config, partitions.unwrap_or(default_partitions))
            }
            "queue" => {
                let Some(p) = &sec.path else {
                    return cx.err(
                        s.span(),
                        &field("path"),
                        "a queue source needs a path to a JSON file of batches",
                    );
                };
                let q = read_queue_file(
                    &cx.resolve(p.get_ref()),
                    sec.stream.as_ref().map(|s| s.get_ref().as_str()),
                )
                .or_else(|e| cx.err(p.span(), &field("path"), e.to_string()))?;
                let parts = partitions.or(q.partitions).unwrap_or(2);
                ssc.queue_stream_with(
                    q.batches,
                    parts,
                    sec.one_at_a_time.as_ref().is_none_or(|o| *o.get_ref()),
                    sec.default.as_ref().map(|d| d.get_ref().clone()),
                )
            }
            "text_files" => text_files_source(
                cx,
                spec,
                ssc,
                job_name,
                name,
                s,
                partitions.unwrap_or(default_partitions),
            )?,
            "generator" => {
                let config = generator_config(cx, name, sec)?;
                ssc.generator_stream(config, partitions.unwrap_or(default_partitions))
            }
            "mqtt" => {
                let parts = partitions.unwrap_or(default_partitions);
                let config = super::brokers::mqtt_config(cx, name, s, job_name, parts)?;
                ssc.source_stream(name.get_ref(), Box::new(config.source()))
            }
            "nats" => {
                let parts = partitions.unwrap_or(default_partitions);
                let config = super::brokers::nats_config(cx, name, s, job_name, parts, ssc)?;
                ssc.source_stream(name.get_ref(), Box::new(NatsSource::new(config)))
            }
            "kafka" => {
                let parts = partitions.unwrap_or(default_partitions);
                let config = super::kafka::kafka_config(cx, name, s, job_name, parts, ssc)?;
                ssc.source_stream(name.get_ref(), Box::new(KafkaSource::new(config)))
            }
            "receiver" => {
                let parts = partitions.unwrap_or(default_partitions);
                let source = receiver_source(cx, name, s, plugins, parts)?;
                ssc.source_stream(name.get_ref(), Box::new(source))
            }
            other => {
                return cx.err(
                    sec.kind.span(),
                    &field("type"),
                    format!(
                        "unknown source type `{other}` (use socket, queue, text_files, generator, nats, mqtt, kafka or receiver)"
                    ),
                );
            }
        };
        streams.insert(name.get_ref().clone(), stream.named(name.get_ref()));
    }
    Ok((streams, socket_addrs))
}

/// A socket source's settings: `host`, `port`, `max_rate`,
/// `max_line_bytes`, `max_buffered` and `non_utf8`.
fn socket_config(
    cx: &Ctx<'_>,
    name: &Spanned<String>,
    s: &Spanned<SourceSection>,
) -> Result<SocketConfig> {
    let field = |f: &str| format!("sources.{}.{f}", name.get_ref());
    let sec = s.get_ref();
    let mut config = SocketConfig::default();
    if let Some(h) = &sec.host {
        config.host = h.get_ref().clone();
    }
    match &sec.port {
        Some(p) => config.port = *p.get_ref(),
        None => {
            return cx.err(s.span(), &field("port"), "a socket source needs a port");
        }
    }
    let (rate, buffered) = receiving_limits(cx, name, sec, "line")?;
    config.max_rate = rate;
    if let Some(b) = buffered {
        config.max_buffered_bytes = b;
    }
    if let Some(m) = &sec.max_line_bytes {
        config.max_line_bytes = parse_size(m.get_ref())
            .or_else(|e| cx.err(m.span(), &field("max_line_bytes"), e))?
            as usize;
    }
    if let Some(p) = &sec.non_utf8 {
        config.non_utf8 = match p.get_ref().as_str() {
            "replace" => NonUtf8Policy::Replace,
            "skip" => NonUtf8Policy::Skip,
            other => {
                return cx.err(
                    p.span(),
                    &field("non_utf8"),
                    format!("unknown policy `{other}` (use replace or skip)"),
                );
            }
        };
    }
    Ok(config)
}

/// A receiver's `max_rate` (`unit`s a second, at least one) and
/// `max_buffered` (a size, at least 1 MiB), where the spec sets them.
fn receiving_limits(
    cx: &Ctx<'_>,
    name: &Spanned<String>,
    sec: &SourceSection,
    unit: &str,
) -> Result<(Option<u64>, Option<usize>)> {
    let field = |f: &str| format!("sources.{}.{f}", name.get_ref());
    let mut rate = None;
    if let Some(r) = &sec.max_rate {
        if *r.get_ref() == 0 {
            return cx.err(
                r.span(),
                &field("max_rate"),
                format!("must be at least 1 {unit}/s"),
            );
        }
        rate = Some(*r.get_ref());
    }
    let mut buffered = None;
    if let Some(m) = &sec.max_buffered {
        let bytes =
            parse_size(m.get_ref()).or_else(|e| cx.err(m.span(), &field("max_buffered"), e))?;
        if bytes < 1 << 20 {
            return cx.err(m.span(), &field("max_buffered"), "must be at least 1MiB");
        }
        buffered = Some(bytes as usize);
    }
    Ok((rate, buffered))
}

/// A plugin's custom receiver: `function = "plugin.name"`, its `settings`
/// (a table of strings, numbers and booleans, given to it as text),
/// `max_rate` (records/s) and `max_buffered`.
fn receiver_source(
    cx: &Ctx<'_>,
    name: &Spanned<String>,
    s: &Spanned<SourceSection>,
    plugins: &BTreeMap<String, Arc<Plugin>>,
    partitions: usize,
) -> Result<crate::receiver::LineSource> {
    let field = |f: &str| format!("sources.{}.{f}", name.get_ref());
    let sec = s.get_ref();
    let Some(f) = &sec.function else {
        return cx.err(
            s.span(),
            &field("function"),
            "a receiver source needs `function = \"plugin.receiver\"`",
        );
    };
    let (p, function) = super::plugins::plugin_of(f, plugins, cx, &field("function"))?;
    let mut settings = Vec::new();
    if let Some(t) = &sec.settings {
        for (key, value) in t.get_ref() {
            let text = match value {
                toml::Value::String(v) => v.clone(),
                toml::Value::Integer(v) => v.to_string(),
                toml::Value::Float(v) => v.to_string(),
                toml::Value::Boolean(v) => v.to_string(),
                toml::Value::Datetime(v) => v.to_string(),
                toml::Value::Array(_) | toml::Value::Table(_) => {
                    return cx.err(
                        t.span(),
                        &field(&format!("settings.{key}")),
                        "a receiver setting is a string, number or boolean",
                    );
                }
            };
            settings.push((key.clone(), text));
        }
    }
    let (rate, buffered) = receiving_limits(cx, name, sec, "record")?;
    let limits = (
        rate.map(|r| r as f64),
        buffered.unwrap_or(crate::receiver::MAX_BUFFERED_BYTES),
    );
    p.receiver_source(function, settings, partitions, limits)
        .or_else(|e| super::plugins::plan_error(cx, f, &field("function"), e))
}

/// A source watching a directory for new text files (remembering the names
/// read in its ledger, unless that is `""`).
fn text_files_source(
    cx: &Ctx<'_>,
    spec: &SpecFile,
    ssc: &StreamingContext,
    job_name: &str,
    name: &Spanned<String>,
    s: &Spanned<SourceSection>,
    partitions: usize,
) -> Result<DStream> {
    let field = |f: &str| format!("sources.{}.{f}", name.get_ref());
    let sec = s.get_ref();
    let Some(p) = &sec.path else {
        return cx.err(
            s.span(),
            &field("path"),
            "a text_files source needs the path of a directory to watch (or s3://bucket/prefix/)",
        );
    };
    let include = sec.include_existing.as_ref().is_some_and(|b| *b.get_ref());
    let max_files = match &sec.max_files {
        Some(m) if *m.get_ref() == 0 => {
            return cx.err(m.span(), &field("max_files"), "must be at least 1");
        }
        m => m.as_ref().map(|m| *m.get_ref()),
    };
    let ledger = |default: Option<PathBuf>| match &sec.ledger {
        Some(l) if l.get_ref().is_empty() => None,
        Some(l) => Some(cx.resolve(l.get_ref())),
        None => default,
    };
    let (store, ledger): (Box<dyn FileStore>, _) = if p.get_ref().contains("://") {
        let at = field("path");
        let place = (p.get_ref().as_str(), p.span(), at.as_str());
        let dir = super::storage::open(cx, spec.object_store.as_ref(), place, S3Dir::new)?;
        (Box::new(dir), ledger(None))
    } else {
        let dir = cx.resolve(p.get_ref());
        if !dir.is_dir() {
            return cx.err(
                p.span(),
                &field("path"),
                format!("{} is not a directory", dir.display()),
            );
        }
        let hidden = dir.join(format!(".sluice-{}-{}.read", job_name, name.get_ref()));
        (Box::new(LocalDir(dir)), ledger(Some(hidden)))
    };
    Ok(ssc.text_file_stream_in(store, include, partitions, max_files, ledger.as_deref()))
}

/// A generator source's settings: `rate`, `words_per_line`, `vocabulary`
/// and `seed`.
fn generator_config(
    cx: &Ctx<'_>,
    name: &Spanned<String>,
    sec: &SourceSection,
) -> Result<GeneratorConfig> {
    let field = |f: &str| format!("sources.{}.{f}", name.get_ref());
    let mut config = GeneratorConfig::default();
    if let Some(r) = &sec.rate {
        config.lines_per_second = *r.get_ref();
    }
    if let Some(w) = &sec.words_per_line {
        if *w.get_ref() == 0 {
            return cx.err(w.span(), &field("words_per_line"), "must be at least 1");
        }
        config.words_per_line = *w.get_ref();
    }
    if let Some(v) = &sec.vocabulary {
        if v.get_ref().is_empty() {
            return cx.err(
                v.span(),
                &field("vocabulary"),
                "must list at least one word",
            );
        }
        config.vocabulary = v.get_ref().clone();
    }
    if let Some(s) = &sec.seed {
        config.seed = *s.get_ref();
    }
    Ok(config)
}
