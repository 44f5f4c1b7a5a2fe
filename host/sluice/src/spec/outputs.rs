//! The job's outputs (`[[outputs]]`): printing, files, sink functions and
//! brokers.

use super::plugins::plugin_function;
use super::sections::{OutputSection, SpecFile};
use super::streams::unknown_stream;
use super::{Ctx, Overrides};
use crate::error::Result;
use crate::func::Func;
use crate::graph::DStream;
use crate::plugin::Plugin;
use crate::sink::{Output, PartFormat};
use sluice_objects::S3Files;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;
use toml::Spanned;

/// What outputs are attached to: the job's name, its streams and plugins.
pub(super) struct Wiring<'a> {
    pub(super) job_name: &'a str,
    pub(super) streams: &'a HashMap<String, DStream>,
    pub(super) plugins: &'a BTreeMap<String, Arc<Plugin>>,
}

/// Registers the job's outputs on their streams (marking those `used`);
/// file outputs go to `overrides.output_dir` when it is given.
pub(super) fn add_outputs(
    cx: &Ctx<'_>,
    spec: &SpecFile,
    overrides: &Overrides,
    wiring: &Wiring<'_>,
    used: &mut HashSet<String>,
) -> Result<()> {
    let (streams, plugins) = (wiring.streams, wiring.plugins);
    let output_path = |p: &str| match &overrides.output_dir {
        Some(dir) => dir.join(Path::new(p).file_name().unwrap_or_default()),
        None => cx.resolve(p),
    };
    let names = output_names(cx, spec)?;
    for (i, o) in spec.outputs.iter().enumerate() {
        let field = |f: &str| format!("outputs[{i}].{f}");
        let sec = o.get_ref();
        let output_name = names[i].as_str();
        let kind = sec.kind.get_ref().as_str();
        if overrides.replay && matches!(kind, "kafka" | "nats" | "mqtt") {
            return cx.err(
                sec.kind.span(),
                &field("type"),
                format!(
                    "a replay writes only to files in --output-dir, never to the live job's brokers, and this is a {kind} output"
                ),
            );
        }
        let Some(stream) = streams.get(sec.stream.get_ref()) else {
            return cx.err(
                sec.stream.span(),
                &field("stream"),
                unknown_stream(sec.stream.get_ref(), streams),
            );
        };
        used.insert(sec.stream.get_ref().clone());
        match sec.kind.get_ref().as_str() {
            "pprint" => {
                let num = sec.num.as_ref().map_or(10, |n| *n.get_ref());
                match &overrides.pprint {
                    Some(target) => stream.pprint_to(num, (target.0)()),
                    None => stream.pprint(num),
                }
            }
            "jsonl" => {
                let Some(p) = &sec.path else {
                    return cx.err(o.span(), &field("path"), "a jsonl output needs a path");
                };
                stream.save_jsonl(output_path(p.get_ref()));
            }
            "text_files" => {
                let Some(p) = &sec.prefix else {
                    return cx.err(
                        o.span(),
                        &field("prefix"),
                        "a text_files output needs a prefix",
                    );
                };
                let suffix = sec.suffix.as_ref().map(|s| s.get_ref().as_str());
                match object_output(
                    cx,
                    spec,
                    overrides,
                    p,
                    &field("prefix"),
                    PartFormat::Text,
                    suffix,
                )? {
                    Some(out) => stream.output_to(out),
                    None => stream.save_as_text_files(output_path(p.get_ref()), suffix),
                }
            }
            "object_files" => {
                let Some(p) = &sec.prefix else {
                    return cx.err(
                        o.span(),
                        &field("prefix"),
                        "an object_files output needs a prefix",
                    );
                };
                match object_output(
                    cx,
                    spec,
                    overrides,
                    p,
                    &field("prefix"),
                    PartFormat::Objects,
                    None,
                )? {
                    Some(out) => stream.output_to(out),
                    None => stream.save_as_object_files(output_path(p.get_ref())),
                }
            }
            "sink" => {
                let func = sink_function(cx, i, o, plugins)?;
                stream.foreach_partition(func);
            }
            "mqtt" => {
                let config =
                    super::brokers::mqtt_sink_config(cx, &field, o, wiring.job_name, output_name)?;
                stream.output_to(Box::new(sluice_brokers::MqttSink::new(config)));
            }
            "nats" => {
                let config = super::brokers::nats_sink_config(cx, &field, o, wiring.job_name)?;
                stream.output_to(Box::new(sluice_brokers::NatsSink::new(config)));
            }
            "kafka" => {
                let config =
                    super::kafka::kafka_sink_config(cx, &field, o, wiring.job_name, output_name)?;
                stream.output_to(Box::new(sluice_brokers::KafkaSink::new(config)));
            }
            other => {
                return cx.err(
                    sec.kind.span(),
                    &field("type"),
                    format!(
                        "unknown output type `{other}` (use pprint, jsonl, text_files, object_files, sink, nats, mqtt or kafka)"
                    ),
                );
            }
        }
    }
    Ok(())
}

/// Every output's name: its `name`, else `output-INDEX`; a name must be
/// letters, digits, `.`, `_` or `-`, and unique.
fn output_names(cx: &Ctx<'_>, spec: &SpecFile) -> Result<Vec<String>> {
    let mut names: Vec<String> = Vec::with_capacity(spec.outputs.len());
    for (i, o) in spec.outputs.iter().enumerate() {
        let Some(n) = &o.get_ref().name else {
            let name = format!("output-{i}");
            if names.contains(&name) {
                return cx.err(
                    o.span(),
                    &format!("outputs[{i}]"),
                    format!("its default name `{name}` is another output's: name this one"),
                );
            }
            names.push(name);
            continue;
        };
        let name = n.get_ref();
        let valid = !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
        if !valid {
            return cx.err(
                n.span(),
                &format!("outputs[{i}].name"),
                "a name of letters, digits, `.`, `_` or `-`",
            );
        }
        if names.contains(name) {
            return cx.err(
                n.span(),
                &format!("outputs[{i}].name"),
                format!("another output is already named `{name}`"),
            );
        }
        names.push(name.clone());
    }
    Ok(names)
}

/// A file output to object storage when `prefix` is a URL (`s3://…`) and
/// no `--output-dir` takes the files elsewhere; `None` for a local prefix.
fn object_output(
    cx: &Ctx<'_>,
    spec: &SpecFile,
    overrides: &Overrides,
    prefix: &Spanned<String>,
    field: &str,
    format: PartFormat,
    suffix: Option<&str>,
) -> Result<Option<Box<dyn Output>>> {
    if !prefix.get_ref().contains("://") || overrides.output_dir.is_some() {
        return Ok(None);
    }
    let place = (prefix.get_ref().as_str(), prefix.span(), field);
    let out = super::storage::open(cx, spec.object_store.as_ref(), place, |url, settings| {
        S3Files::new(url, settings, format, suffix)
    })?;
    Ok(Some(Box::new(out)))
}

/// A sink output's `function`, which must be a sink function.
fn sink_function(
    cx: &Ctx<'_>,
    i: usize,
    o: &Spanned<OutputSection>,
    plugins: &BTreeMap<String, Arc<Plugin>>,
) -> Result<Func> {
    let field = |f: &str| format!("outputs[{i}].{f}");
    let sec = o.get_ref();
    let Some(f) = &sec.function else {
        return cx.err(
            o.span(),
            &field("function"),
            "a sink output needs a function (`plugin.function`)",
        );
    };
    let func = plugin_function(f, plugins, cx, &field("function"))?;
    if func.kind() != sluice_sdk::Kind::Sink {
        return cx.err(
            f.span(),
            &field("function"),
            format!(
                "`{}` is a {} function, but a sink output needs a sink function",
                f.get_ref(),
                func.kind()
            ),
        );
    }
    Ok(func)
}
