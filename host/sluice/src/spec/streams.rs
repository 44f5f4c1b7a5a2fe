//! The job's streams (`[streams.NAME]`), resolved in dependency order
//! (a cycle is an error), each an operation on the streams it is `from`.

use super::Ctx;
use super::plugins::plugin_function;
use super::sections::{SpecFile, StreamSection};
use crate::error::{Error, Result};
use crate::func::Func;
use crate::graph::{DStream, StateSpec};
use crate::plugin::Plugin;
use crate::time::parse_duration;
use sluice_sdk::Kind;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use toml::Spanned;

/// Adds the job's streams to `streams` (which holds its sources); returns
/// the names of the streams some stream reads from.
pub(super) fn add_streams(
    cx: &Ctx<'_>,
    spec: &SpecFile,
    streams: &mut HashMap<String, DStream>,
    plugins: &BTreeMap<String, Arc<Plugin>>,
) -> Result<HashSet<String>> {
    let defs: HashMap<&str, &Spanned<StreamSection>> = spec
        .streams
        .iter()
        .map(|(k, v)| (k.get_ref().as_str(), v))
        .collect();
    for name in spec.streams.keys() {
        if streams.contains_key(name.get_ref()) {
            return cx.err(
                name.span(),
                &format!("streams.{}", name.get_ref()),
                "a source already has this name",
            );
        }
    }
    let mut used: HashSet<String> = HashSet::new();
    for name in spec.streams.keys() {
        let mut chain: Vec<&str> = Vec::new();
        resolve_stream(
            name.get_ref(),
            &defs,
            streams,
            plugins,
            cx,
            &mut chain,
            &mut used,
        )?;
    }
    Ok(used)
}

/// Refuses, at its `op` line, the first stream that keeps state across
/// batches (keyed state, an incremental window) in a job without a
/// checkpoint directory, as Spark refuses to start it.
pub(super) fn check_state_is_checkpointed(cx: &Ctx<'_>, spec: &SpecFile) -> Result<()> {
    for (name, def) in &spec.streams {
        let sec = def.get_ref();
        let op = sec.op.get_ref().as_str();
        let stateful = match op {
            "update_state_by_key"
            | "map_with_state"
            | "count_by_window"
            | "count_by_value_and_window" => true,
            "reduce_by_key_and_window" | "reduce_by_window" => sec.inverse.is_some(),
            _ => false,
        };
        if stateful {
            return cx.err(
                sec.op.span(),
                &format!("streams.{}.op", name.get_ref()),
                format!(
                    "`{op}` keeps state across batches, but the checkpoint directory has not been set: set `checkpoint = \"DIR\"` under [job] or run with --checkpoint DIR"
                ),
            );
        }
    }
    Ok(())
}

/// The error for a stream that is not defined (yet), listing those that are.
pub(super) fn unknown_stream(name: &str, streams: &HashMap<String, DStream>) -> String {
    let mut known: Vec<&str> = streams.keys().map(String::as_str).collect();
    known.sort_unstable();
    format!(
        "unknown stream `{name}` (defined so far: {})",
        known.join(", ")
    )
}

/// Resolves stream `name`, first the streams it is `from` (`chain`: those
/// being resolved, to find cycles; `used`: those read by some stream).
#[allow(clippy::too_many_arguments)]
fn resolve_stream<'a>(
    name: &'a str,
    defs: &HashMap<&'a str, &'a Spanned<StreamSection>>,
    streams: &mut HashMap<String, DStream>,
    plugins: &BTreeMap<String, Arc<Plugin>>,
    cx: &Ctx<'_>,
    chain: &mut Vec<&'a str>,
    used: &mut HashSet<String>,
) -> Result<DStream> {
    if let Some(s) = streams.get(name) {
        return Ok(s.clone());
    }
    let Some(def) = defs.get(name) else {
        return Err(Error::Internal(format!("stream `{name}` is not defined")));
    };
    let field = |f: &str| format!("streams.{name}.{f}");
    if chain.contains(&name) {
        chain.push(name);
        return cx.err(
            def.span(),
            &field("from"),
            format!("streams form a cycle: {}", chain.join(" -> ")),
        );
    }
    chain.push(name);
    let sec = def.get_ref();
    let from: Vec<&str> = match sec.from.get_ref() {
        toml::Value::String(s) => vec![s.as_str()],
        toml::Value::Array(a) if !a.is_empty() => {
            let names: Option<Vec<&str>> = a.iter().map(toml::Value::as_str).collect();
            match names {
                Some(n) => n,
                None => {
                    return cx.err(
                        sec.from.span(),
                        &field("from"),
                        "must be a stream name or a list of them",
                    );
                }
            }
        }
        _ => {
            return cx.err(
                sec.from.span(),
                &field("from"),
                "must be a stream name or a list of them",
            );
        }
    };
    let mut parents = Vec::with_capacity(from.len());
    for f in &from {
        if !defs.contains_key(f) && !streams.contains_key(*f) {
            return cx.err(sec.from.span(), &field("from"), unknown_stream(f, streams));
        }
        parents.push(resolve_stream(f, defs, streams, plugins, cx, chain, used)?);
        used.insert(f.to_string());
    }
    chain.pop();
    let op = sec.op.get_ref().as_str();
    let listed = sec.from.get_ref().is_array();
    if let Some(message) = arity_error(op, parents.len(), listed) {
        return cx.err(sec.from.span(), &field("from"), message);
    }
    let parent_op = defs.get(from[0]).map(|d| d.get_ref().op.get_ref().as_str());
    if op == "state_snapshots" && parent_op != Some("map_with_state") {
        return cx.err(
            sec.from.span(),
            &field("from"),
            format!(
                "state_snapshots reads a map_with_state stream; `{}` is not one",
                from[0]
            ),
        );
    }
    let stream = Op {
        name,
        def,
        plugins,
        cx,
    }
    .apply(&parents)?;
    let stream = stream.named(name);
    streams.insert(name.to_string(), stream.clone());
    Ok(stream)
}

/// Why `op` cannot take `parents` streams (`listed`: given as a list), if
/// it cannot.
fn arity_error(op: &str, parents: usize, listed: bool) -> Option<String> {
    let joins = [
        "join",
        "left_outer_join",
        "right_outer_join",
        "full_outer_join",
        "cogroup",
        "transform_with",
    ];
    if op == "union" && parents < 2 {
        Some("a union needs a list of at least two streams".to_string())
    } else if joins.contains(&op) && parents != 2 {
        Some(format!(
            "`{op}` needs a list of exactly two streams: [left, right]"
        ))
    } else if op == "transform" && listed {
        // Spark's StreamingContext.transform: any number of streams.
        None
    } else if op != "union" && !joins.contains(&op) && parents > 1 {
        Some(format!(
            "`{op}` takes one stream; only union, the joins, transform_with and transform take a list"
        ))
    } else {
        None
    }
}

/// A stream definition's operation being built: its arguments, checked and
/// looked up as the operation needs them.
struct Op<'a> {
    name: &'a str,
    def: &'a Spanned<StreamSection>,
    plugins: &'a BTreeMap<String, Arc<Plugin>>,
    cx: &'a Ctx<'a>,
}

impl Op<'_> {
    /// The name of the spec field `f` of this stream.
    fn field(&self, f: &str) -> String {
        format!("streams.{}.{f}", self.name)
    }

    /// The `partitions` given, or `default`.
    fn partitions(&self, default: usize) -> Result<usize> {
        let (cx, sec) = (self.cx, self.def.get_ref());
        let field = |f: &str| self.field(f);
        match &sec.partitions {
            Some(p) if *p.get_ref() == 0 => {
                cx.err(p.span(), &field("partitions"), "must be at least 1")
            }
            Some(p) => Ok(cx.partitions.unwrap_or(*p.get_ref())),
            None => Ok(cx.partitions.unwrap_or(default)),
        }
    }

    /// The plugin function `f` (the spec's `key`), which must be of kind
    /// `want` (a map function does for a flat map).
    fn named_func(&self, key: &str, f: &Option<Spanned<String>>, want: Kind) -> Result<Func> {
        let (cx, def, sec, plugins) = (self.cx, self.def, self.def.get_ref(), self.plugins);
        let field = |f: &str| self.field(f);
        let Some(f) = f else {
            return cx.err(
                def.span(),
                &field(key),
                format!("`{}` needs `{key} = \"plugin.function\"`", sec.op.get_ref()),
            );
        };
        let func = plugin_function(f, plugins, cx, &field(key))?;
        let ok = func.kind() == want || (want == Kind::FlatMap && func.kind() == Kind::Map);
        if !ok {
            return cx.err(
                f.span(),
                &field(key),
                format!(
                    "`{}` is a {} function, but `{}` needs a {} function",
                    f.get_ref(),
                    func.kind(),
                    sec.op.get_ref(),
                    want
                ),
            );
        }
        Ok(func)
    }

    /// The operation's `function`, of kind `want`.
    fn func(&self, want: Kind) -> Result<Func> {
        self.named_func("function", &self.def.get_ref().function, want)
    }

    /// The plugin function `f` (the spec's `key`), if given.
    fn optional_func(
        &self,
        key: &str,
        f: &Option<Spanned<String>>,
        want: Kind,
    ) -> Result<Option<Func>> {
        f.as_ref()
            .map(|_| self.named_func(key, f, want))
            .transpose()
    }

    /// Window and slide: durations that are multiples of the parent's slide.
    fn windowing(&self, parent: &DStream) -> Result<(std::time::Duration, std::time::Duration)> {
        let (cx, def, sec) = (self.cx, self.def, self.def.get_ref());
        let field = |f: &str| self.field(f);
        let op = sec.op.get_ref().as_str();
        let parent_slide = parent.slide();
        let Some(w) = &sec.window else {
            return cx.err(
                def.span(),
                &field("window"),
                format!("`{op}` needs `window = \"DURATION\"` (e.g. \"30s\")"),
            );
        };
        let duration = |d: &Spanned<String>, key: &str| -> Result<std::time::Duration> {
            let v = parse_duration(d.get_ref()).or_else(|m| cx.err(d.span(), &field(key), m))?;
            let p = parent_slide.as_millis().max(1);
            if !crate::graph::fits_slide(v, p as i64) {
                return cx.err(
                    d.span(),
                    &field(key),
                    format!(
                        "{} must be a multiple of the slide duration of the parent stream ({p} ms), not {}",
                        if key == "window" { "the window duration" } else { "the slide duration" },
                        d.get_ref()
                    ),
                );
            }
            Ok(v)
        };
        let length = duration(w, "window")?;
        let slide = match &sec.slide {
            Some(s) => duration(s, "slide")?,
            None => parent_slide,
        };
        Ok((length, slide))
    }

    /// map_with_state's `timeout`: a duration (`"30s"`) or a number of the
    /// parent's batches.
    fn state_timeout(&self, parent: &DStream) -> Result<Option<std::time::Duration>> {
        let (cx, sec) = (self.cx, self.def.get_ref());
        let Some(t) = &sec.timeout else {
            return Ok(None);
        };
        let field = self.field("timeout");
        match t.get_ref() {
            toml::Value::Integer(n) if *n >= 0 => Ok(Some(parent.slide() * *n as u32)),
            toml::Value::String(d) => parse_duration(d)
                .map(Some)
                .or_else(|m| cx.err(t.span(), &field, m)),
            _ => cx.err(
                t.span(),
                &field,
                "must be a duration (e.g. \"30s\") or a number of batches",
            ),
        }
    }

    /// The `initial_state` file's `[key, state]` pairs (none if not given).
    fn initial_state(&self) -> Result<Vec<(serde_json::Value, serde_json::Value)>> {
        let (cx, sec) = (self.cx, self.def.get_ref());
        let field = |f: &str| self.field(f);
        let Some(p) = &sec.initial_state else {
            return Ok(Vec::new());
        };
        let path = cx.resolve(p.get_ref());
        let text = std::fs::read_to_string(&path).or_else(|e| {
            cx.err(
                p.span(),
                &field("initial_state"),
                format!("{}: {e}", path.display()),
            )
        })?;
        serde_json::from_str(&text).or_else(|e| {
            cx.err(
                p.span(),
                &field("initial_state"),
                format!(
                    "{}: must be a JSON array of [key, state] pairs: {e}",
                    path.display()
                ),
            )
        })
    }

    /// The operation applied to `parents` (one, or a list for a union, a
    /// join or transform_with).
    fn apply(&self, parents: &[DStream]) -> Result<DStream> {
        let (cx, def, sec) = (self.cx, self.def, self.def.get_ref());
        let field = |f: &str| self.field(f);
        let op = sec.op.get_ref().as_str();
        let parent = parents[0].clone();
        let stream = match op {
            "map" => parent.map(self.func(Kind::Map)?),
            "flat_map" => parent.flat_map(self.func(Kind::FlatMap)?),
            "filter" => parent.filter(self.func(Kind::Filter)?),
            "reduce_by_key" => parent.reduce_by_key(self.func(Kind::Reduce)?, self.partitions(2)?),
            "reduce" => parent.reduce(self.func(Kind::Reduce)?),
            "count" => parent.count(),
            "group_by_key" => parent.group_by_key(self.partitions(2)?),
            "map_values" => parent.map_values(self.func(Kind::Map)?),
            "flat_map_values" => parent.flat_map_values(self.func(Kind::FlatMap)?),
            "combine_by_key" => parent.combine_by_key(
                self.named_func("create", &sec.create, Kind::Map)?,
                self.named_func("merge_value", &sec.merge_value, Kind::Reduce)?,
                self.named_func("merge_combiners", &sec.merge_combiners, Kind::Reduce)?,
                self.partitions(2)?,
            ),
            "transform_with" => parent.transform_with(&parents[1], self.func(Kind::Transform)?),
            "window" => {
                let (length, slide) = self.windowing(&parent)?;
                parent.window(length, slide)
            }
            "reduce_by_key_and_window" => {
                let (length, slide) = self.windowing(&parent)?;
                parent.reduce_by_key_and_window(
                    self.func(Kind::Reduce)?,
                    self.optional_func("inverse", &sec.inverse, Kind::InverseReduce)?,
                    length,
                    slide,
                    self.partitions(2)?,
                    self.optional_func("filter", &sec.filter, Kind::Filter)?,
                )
            }
            "reduce_by_window" => {
                let (length, slide) = self.windowing(&parent)?;
                parent.reduce_by_window(
                    self.func(Kind::Reduce)?,
                    self.optional_func("inverse", &sec.inverse, Kind::InverseReduce)?,
                    length,
                    slide,
                )
            }
            "count_by_window" => {
                let (length, slide) = self.windowing(&parent)?;
                parent.count_by_window(length, slide)
            }
            "group_by_key_and_window" => {
                let (length, slide) = self.windowing(&parent)?;
                parent.group_by_key_and_window(length, slide, self.partitions(2)?)
            }
            "count_by_value_and_window" => {
                let (length, slide) = self.windowing(&parent)?;
                parent.count_by_value_and_window(length, slide, self.partitions(2)?)
            }
            "map_with_state" => {
                let mut spec = StateSpec::function(self.func(Kind::MapState)?)
                    .num_partitions(self.partitions(2)?);
                if let Some(t) = self.state_timeout(&parent)? {
                    spec = spec.timeout(t);
                }
                let initial = self.initial_state()?;
                if !initial.is_empty() {
                    spec = spec.initial_state(&initial);
                }
                parent.map_with_state(spec)
            }
            "state_snapshots" => parent.state_snapshots(),
            "update_state_by_key" => {
                let initial = self.initial_state()?;
                if initial.is_empty() {
                    parent.update_state_by_key(self.func(Kind::UpdateState)?, self.partitions(2)?)
                } else {
                    parent.update_state_by_key_with_initial(
                        self.func(Kind::UpdateState)?,
                        self.partitions(2)?,
                        &initial,
                    )
                }
            }
            "glom" => parent.glom(),
            "map_partitions" => parent.map_partitions(self.func(Kind::MapPartitions)?),
            "transform" if sec.from.get_ref().is_array() => {
                DStream::transform_all(parents, self.func(Kind::Transform)?)
            }
            "transform" => parent.transform(self.func(Kind::Transform)?),
            "repartition" => match &sec.partitions {
                Some(_) => parent.repartition(self.partitions(1)?),
                None => {
                    return cx.err(
                        def.span(),
                        &field("partitions"),
                        "repartition needs `partitions = N`",
                    );
                }
            },
            "count_by_value" => parent.count_by_value(self.partitions(2)?),
            "union" => parent.union(&parents[1..]),
            "join" => parent.join(&parents[1], self.partitions(2)?),
            "left_outer_join" => parent.left_outer_join(&parents[1], self.partitions(2)?),
            "right_outer_join" => parent.right_outer_join(&parents[1], self.partitions(2)?),
            "full_outer_join" => parent.full_outer_join(&parents[1], self.partitions(2)?),
            "cogroup" => parent.cogroup(&parents[1], self.partitions(2)?),
            other => {
                return cx.err(
                    sec.op.span(),
                    &field("op"),
                    format!(
                        "unknown operation `{other}` (use map, flat_map, filter, map_values, flat_map_values, map_partitions, transform, transform_with, reduce_by_key, combine_by_key, group_by_key, reduce, count, count_by_value, glom, repartition, union, join, left_outer_join, right_outer_join, full_outer_join, cogroup, window, reduce_by_key_and_window, reduce_by_window, count_by_window, count_by_value_and_window, group_by_key_and_window, update_state_by_key, map_with_state or state_snapshots)"
                    ),
                );
            }
        };
        Ok(stream)
    }
}
