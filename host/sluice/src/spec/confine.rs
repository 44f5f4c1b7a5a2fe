//! The checks of a confined spec ([`Overrides::confine`]): every file
//! stays inside the job's directory, sockets reach only granted endpoints.

use super::sections::SpecFile;
use super::{Ctx, Grants, Overrides};
use crate::error::Result;
use std::path::Path;
use toml::Spanned;

/// Why `p` (relative to the spec's folder `root`) may not be used by a
/// confined spec, if it may not.
fn escapes(root: &Path, p: &str) -> Option<String> {
    let path = Path::new(p);
    if path.is_absolute() {
        return Some(format!(
            "`{p}`: absolute paths are not allowed (use a path inside the job's directory)"
        ));
    }
    for c in path.components() {
        match c {
            std::path::Component::Normal(_) | std::path::Component::CurDir => {}
            _ => return Some(format!("`{p}`: `..` would leave the job's directory")),
        }
    }
    // A symlink on the way must not lead out: resolve what exists of it.
    let Ok(root) = root.canonicalize() else {
        return Some(format!(
            "the job's directory {} cannot be resolved",
            root.display()
        ));
    };
    let mut existing = root.join(path);
    while !existing.exists() {
        match existing.parent() {
            Some(parent) => existing = parent.to_path_buf(),
            None => break,
        }
    }
    match existing.canonicalize() {
        Ok(real) if real.starts_with(&root) => None,
        Ok(real) => Some(format!(
            "`{p}` leads out of the job's directory (to {})",
            real.display()
        )),
        Err(e) => Some(format!("`{p}`: {e}")),
    }
}

/// The checks of a confined spec ([`Overrides::confine`]).
pub(super) fn check_confined(
    cx: &Ctx,
    spec: &SpecFile,
    grants: &Grants,
    overrides: &Overrides,
) -> Result<()> {
    let root = cx
        .path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut paths: Vec<(&Spanned<String>, String)> = Vec::new();
    if let Some(c) = &spec.job.get_ref().checkpoint {
        paths.push((c, "job.checkpoint".to_string()));
    }
    if let Some(c) = &spec.job.get_ref().checkpoint_logs {
        paths.push((c, "job.checkpoint_logs".to_string()));
    }
    check_plugins(cx, spec, grants, overrides, &mut paths)?;
    check_sources(cx, spec, grants, &mut paths)?;
    for (name, st) in &spec.streams {
        if let Some(v) = &st.get_ref().initial_state {
            paths.push((v, format!("streams.{}.initial_state", name.get_ref())));
        }
    }
    for (i, o) in spec.outputs.iter().enumerate() {
        let sec = o.get_ref();
        for (value, field) in [
            (&sec.path, "path"),
            (&sec.prefix, "prefix"),
            (&sec.credentials, "credentials"),
            (&sec.ca, "ca"),
        ] {
            if let Some(v) = value {
                paths.push((v, format!("outputs[{i}].{field}")));
            }
        }
        if let Some(url) = sec.url.as_ref().filter(|_| sec.kind.get_ref() == "nats") {
            check_broker_url(cx, grants, url, &format!("outputs[{i}].url"))?;
        }
        if let Some(url) = sec.url.as_ref().filter(|_| sec.kind.get_ref() == "mqtt") {
            check_mqtt_url(cx, grants, url, &format!("outputs[{i}].url"))?;
        }
        if let Some(b) = sec
            .brokers
            .as_ref()
            .filter(|_| sec.kind.get_ref() == "kafka")
        {
            check_kafka_brokers(cx, grants, b, &format!("outputs[{i}].brokers"))?;
        }
    }
    for (value, field) in paths {
        if value.get_ref().contains("://") {
            return cx.err(
                value.span(),
                &field,
                "object storage is not granted to jobs run on a server: use a path beside the spec",
            );
        }
        if let Some(why) = escapes(root, value.get_ref()) {
            return cx.err(value.span(), &field, why);
        }
    }
    Ok(())
}

/// A confined spec's plugins: uploaded ones only, if so granted; their
/// files and directories (added to `paths`) and endpoints.
fn check_plugins<'s>(
    cx: &Ctx,
    spec: &'s SpecFile,
    grants: &Grants,
    overrides: &Overrides,
    paths: &mut Vec<(&'s Spanned<String>, String)>,
) -> Result<()> {
    for (name, p) in &spec.plugins {
        if overrides.plugin_paths.contains_key(name.get_ref()) {
            continue;
        }
        let field = format!("plugins.{}.path", name.get_ref());
        if grants.uploaded_plugins_only {
            return cx.err(
                p.get_ref().path.span(),
                &field,
                format!(
                    "plugin `{}` must be an uploaded plugin: upload it and name it in the submission's `plugins`",
                    name.get_ref()
                ),
            );
        }
        paths.push((&p.get_ref().path, field));
    }
    for (name, p) in &spec.plugins {
        if let Some(d) = &p.get_ref().dir {
            paths.push((d, format!("plugins.{}.dir", name.get_ref())));
        }
        if let Some(c) = &p.get_ref().connect {
            for endpoint in c.get_ref() {
                if !grants.sockets.contains(endpoint) {
                    return cx.err(
                        c.span(),
                        &format!("plugins.{}.connect", name.get_ref()),
                        format!("connecting to {endpoint} is not granted to this job"),
                    );
                }
            }
        }
    }
    Ok(())
}

/// Every endpoint of a broker URL must be granted to a confined job.
fn check_broker_url(cx: &Ctx, grants: &Grants, url: &Spanned<String>, field: &str) -> Result<()> {
    for endpoint in url.get_ref().split(',').map(broker_endpoint) {
        if !grants.sockets.contains(&endpoint) {
            return cx.err(
                url.span(),
                field,
                format!("connecting to {endpoint} is not granted to this job"),
            );
        }
    }
    Ok(())
}

/// An MQTT broker's `host:port` must be granted to a confined job.
fn check_mqtt_url(cx: &Ctx, grants: &Grants, url: &Spanned<String>, field: &str) -> Result<()> {
    let endpoint = super::brokers::mqtt_address(url.get_ref())
        .map_or_else(|| url.get_ref().clone(), |(h, p, _)| format!("{h}:{p}"));
    if grants.sockets.contains(&endpoint) {
        return Ok(());
    }
    cx.err(
        url.span(),
        field,
        format!("connecting to {endpoint} is not granted to this job"),
    )
}

/// Every bootstrap broker of a Kafka source or output must be granted to
/// a confined job. (The brokers a cluster's metadata names beyond them
/// are its own: grant those too.)
fn check_kafka_brokers(
    cx: &Ctx,
    grants: &Grants,
    brokers: &Spanned<String>,
    field: &str,
) -> Result<()> {
    for entry in brokers.get_ref().split(',') {
        let endpoint =
            super::kafka::broker_endpoint(entry).unwrap_or_else(|| entry.trim().to_string());
        if !grants.sockets.contains(&endpoint) {
            return cx.err(
                brokers.span(),
                field,
                format!("connecting to {endpoint} is not granted to this job"),
            );
        }
    }
    Ok(())
}

/// The `host:port` of a broker URL (`nats://user@host:port`; NATS's
/// default port when none is given).
fn broker_endpoint(url: &str) -> String {
    let rest = url.trim();
    let rest = rest.split_once("://").map_or(rest, |(_, r)| r);
    let rest = rest.rsplit_once('@').map_or(rest, |(_, r)| r);
    let rest = rest.split('/').next().unwrap_or(rest);
    if rest
        .rsplit_once(':')
        .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
    {
        rest.to_string()
    } else {
        format!("{rest}:4222")
    }
}

/// A confined spec's sources: their files (added to `paths`) and the
/// endpoints of socket sources.
fn check_sources<'s>(
    cx: &Ctx,
    spec: &'s SpecFile,
    grants: &Grants,
    paths: &mut Vec<(&'s Spanned<String>, String)>,
) -> Result<()> {
    for (name, src) in &spec.sources {
        let sec = src.get_ref();
        for (value, field) in [
            (&sec.path, "path"),
            (&sec.ledger, "ledger"),
            (&sec.demo_lines, "demo_lines"),
            (&sec.credentials, "credentials"),
            (&sec.ca, "ca"),
        ] {
            if let Some(v) = value.as_ref().filter(|v| !v.get_ref().is_empty()) {
                paths.push((v, format!("sources.{}.{field}", name.get_ref())));
            }
        }
        if let Some(url) = sec.url.as_ref().filter(|_| sec.kind.get_ref() == "nats") {
            check_broker_url(cx, grants, url, &format!("sources.{}.url", name.get_ref()))?;
        }
        if let Some(url) = sec.url.as_ref().filter(|_| sec.kind.get_ref() == "mqtt") {
            check_mqtt_url(cx, grants, url, &format!("sources.{}.url", name.get_ref()))?;
        }
        if let Some(b) = sec
            .brokers
            .as_ref()
            .filter(|_| sec.kind.get_ref() == "kafka")
        {
            check_kafka_brokers(
                cx,
                grants,
                b,
                &format!("sources.{}.brokers", name.get_ref()),
            )?;
        }
        if sec.kind.get_ref() == "socket" {
            let host = sec
                .host
                .as_ref()
                .map_or("127.0.0.1", |h| h.get_ref().as_str());
            let port = sec.port.as_ref().map_or(0, |p| *p.get_ref());
            let endpoint = format!("{host}:{port}");
            if !grants.sockets.contains(&endpoint) {
                return cx.err(
                    sec.port.as_ref().map_or(src.span(), |p| p.span()),
                    &format!("sources.{}.port", name.get_ref()),
                    format!("connecting to {endpoint} is not granted to this job"),
                );
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::broker_endpoint;

    #[test]
    fn broker_endpoints_are_host_and_port() {
        assert_eq!(broker_endpoint("nats://127.0.0.1:4333"), "127.0.0.1:4333");
        assert_eq!(broker_endpoint(" nats://u:p@broker "), "broker:4222");
        assert_eq!(broker_endpoint("tls://h:7422/x"), "h:7422");
    }
}
