//! The job's plugins (`[plugins.NAME]`): their limits within the job's
//! ceiling, their capabilities, loading them, and resolving
//! `plugin.function` references.

use super::sections::{PluginSection, SpecFile};
use super::{Ctx, Overrides, parse_size};
use crate::error::{Error, Result};
use crate::func::Func;
use crate::graph::StreamingContext;
use crate::plugin::{Capabilities, Limits, LoadPlugins, Plugin};
use crate::time::parse_duration;
use std::collections::BTreeMap;
use std::sync::Arc;
use toml::Spanned;

/// Loads the job's plugins into `ssc`, by their names in the spec.
pub(super) fn load_plugins(
    cx: &Ctx<'_>,
    spec: &SpecFile,
    overrides: &Overrides,
    ssc: &StreamingContext,
) -> Result<BTreeMap<String, Arc<Plugin>>> {
    let mut plugins = BTreeMap::new();
    for (name, p) in &spec.plugins {
        let field = |f: &str| format!("plugins.{}.{f}", name.get_ref());
        let sec = p.get_ref();
        let limits = plugin_limits(cx, name.get_ref(), sec, overrides.limits)?;
        let path = match overrides.plugin_paths.get(name.get_ref()) {
            Some(p) => p.clone(),
            None => cx.resolve(sec.path.get_ref()),
        };
        let capabilities = plugin_capabilities(cx, name.get_ref(), sec)?;
        let plugin = ssc
            .load_plugin_granted(name.get_ref(), path, limits, capabilities)
            .or_else(|e| cx.err(sec.path.span(), &field("path"), e.to_string()))?;
        plugins.insert(name.get_ref().clone(), plugin);
    }
    Ok(plugins)
}

/// A plugin's limits: the spec's `memory`, `deadline` and `max_output`,
/// none over `ceiling` (which is also the default).
fn plugin_limits(
    cx: &Ctx<'_>,
    name: &str,
    sec: &PluginSection,
    ceiling: Option<Limits>,
) -> Result<Limits> {
    let field = |f: &str| format!("plugins.{name}.{f}");
    let mut limits = ceiling.unwrap_or_default();
    let over = |what: &str, asked: String, most: String| {
        format!("{asked} is over this job's limit for {what} ({most})")
    };
    if let Some(m) = &sec.memory {
        limits.memory_bytes =
            parse_size(m.get_ref()).or_else(|e| cx.err(m.span(), &field("memory"), e))?;
        if let Some(c) = ceiling.filter(|c| limits.memory_bytes > c.memory_bytes) {
            let most = format!("{} MiB", c.memory_bytes >> 20);
            return cx.err(
                m.span(),
                &field("memory"),
                over("memory", m.get_ref().clone(), most),
            );
        }
    }
    if let Some(d) = &sec.deadline {
        limits.call_deadline =
            parse_duration(d.get_ref()).or_else(|e| cx.err(d.span(), &field("deadline"), e))?;
        if let Some(c) = ceiling.filter(|c| limits.call_deadline > c.call_deadline) {
            let most = format!("{:?}", c.call_deadline);
            return cx.err(
                d.span(),
                &field("deadline"),
                over("the call deadline", d.get_ref().clone(), most),
            );
        }
    }
    if let Some(o) = &sec.max_output {
        limits.output_bytes =
            parse_size(o.get_ref()).or_else(|e| cx.err(o.span(), &field("max_output"), e))?;
        if let Some(c) = ceiling.filter(|c| limits.output_bytes > c.output_bytes) {
            let most = format!("{} bytes", c.output_bytes);
            return cx.err(
                o.span(),
                &field("max_output"),
                over("output per call", o.get_ref().clone(), most),
            );
        }
    }
    Ok(limits)
}

/// What a plugin may reach: its `dir` (created) and `connect` endpoints.
fn plugin_capabilities(cx: &Ctx<'_>, name: &str, sec: &PluginSection) -> Result<Capabilities> {
    let field = |f: &str| format!("plugins.{name}.{f}");
    let mut capabilities = Capabilities::default();
    if let Some(d) = &sec.dir {
        let dir = cx.resolve(d.get_ref());
        std::fs::create_dir_all(&dir).or_else(|e| {
            cx.err(
                d.span(),
                &field("dir"),
                format!("cannot create {}: {e}", dir.display()),
            )
        })?;
        capabilities.dir = Some(dir);
    }
    if let Some(c) = &sec.connect {
        for endpoint in c.get_ref() {
            let addr = endpoint.parse::<std::net::SocketAddr>().or_else(|_| {
                cx.err(
                    c.span(),
                    &field("connect"),
                    format!("`{endpoint}` is not an IP address and port (e.g. 127.0.0.1:9000)"),
                )
            })?;
            capabilities.connect.push(addr);
        }
    }
    Ok(capabilities)
}

/// Resolves `plugin.function` against the job's plugins.
pub(super) fn plugin_function(
    f: &Spanned<String>,
    plugins: &BTreeMap<String, Arc<Plugin>>,
    cx: &Ctx<'_>,
    field: &str,
) -> Result<Func> {
    let (p, fname) = plugin_of(f, plugins, cx, field)?;
    p.func(fname).or_else(|e| plan_error(cx, f, field, e))
}

/// The plugin and function name of `plugin.function`, the plugin among the
/// job's.
pub(super) fn plugin_of<'a, 'f>(
    f: &'f Spanned<String>,
    plugins: &'a BTreeMap<String, Arc<Plugin>>,
    cx: &Ctx<'_>,
    field: &str,
) -> Result<(&'a Arc<Plugin>, &'f str)> {
    let Some((plugin, fname)) = f.get_ref().split_once('.') else {
        return cx.err(
            f.span(),
            field,
            format!("`{}` is not of the form plugin.function", f.get_ref()),
        );
    };
    let Some(p) = plugins.get(plugin) else {
        let known: Vec<&str> = plugins.keys().map(String::as_str).collect();
        return cx.err(
            f.span(),
            field,
            format!("unknown plugin `{plugin}` (declared: {})", known.join(", ")),
        );
    };
    Ok((p, fname))
}

/// `e`, about the function `f` names, as the spec error at `f`: the spec
/// error already says where, so only what is wrong is kept.
pub(super) fn plan_error<T>(cx: &Ctx<'_>, f: &Spanned<String>, field: &str, e: Error) -> Result<T> {
    let message = match e {
        Error::Plan(m) => m,
        other => other.to_string(),
    };
    cx.err(f.span(), field, message)
}
