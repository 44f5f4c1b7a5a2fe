//! The CLI's side of `sluice serve`: `sluice submit`, `sluice job …`,
//! `sluice tenant …` call the server's HTTP API (see `sluice_server::api`).

use anyhow::{Context, Result, bail};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Where the server is and who we are.
pub(crate) struct Client {
    agent: ureq::Agent,
    base: String,
    token: Option<String>,
}

/// How often a call refused for the tenant's call rate (429) is tried again.
const RETRIES_WHEN_LIMITED: u32 = 5;

/// TLS for an `https://` server: its certificate must chain to one in
/// `ca_cert` (PEM) or, without it, to one the system trusts.
fn tls_config(ca_cert: Option<&Path>) -> Result<ureq::tls::TlsConfig> {
    use ureq::tls::{Certificate, PemItem, RootCerts, TlsConfig};
    let roots: Vec<Certificate<'static>> = match ca_cert {
        Some(path) => {
            let pem = std::fs::read(path)
                .with_context(|| format!("reading the CA certificate {}", path.display()))?;
            let mut certs = Vec::new();
            for item in ureq::tls::parse_pem(&pem) {
                if let PemItem::Certificate(c) =
                    item.with_context(|| format!("{}: not PEM", path.display()))?
                {
                    certs.push(c.to_owned());
                }
            }
            if certs.is_empty() {
                bail!("{}: holds no certificate", path.display());
            }
            certs
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            if found.certs.is_empty() {
                bail!(
                    "no system CA certificates to check the server's with (give the server's CA with --ca-cert): {:?}",
                    found.errors
                );
            }
            (found.certs.iter())
                .map(|c| Certificate::from_der(c.as_ref()).to_owned())
                .collect()
        }
    };
    #[allow(deprecated)] // ring: see `sluice_server::tls`
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    Ok(TlsConfig::builder()
        .root_certs(RootCerts::new_with_certs(&roots))
        .unversioned_rustls_crypto_provider(provider)
        .build())
}

/// A request body.
#[derive(Clone, Copy)]
pub(crate) enum Body<'a> {
    None,
    Json(&'a Value),
    Wasm(&'a [u8]),
}

impl Client {
    /// A client of the server at `server` as the holder of `token`; an
    /// `https://` server is checked against the certificates in `ca_cert`
    /// (PEM) when given, else against the system's.
    pub(crate) fn new(
        server: &str,
        token: Option<String>,
        ca_cert: Option<&Path>,
    ) -> Result<Client> {
        let mut config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(600)));
        if server.starts_with("https://") {
            config = config.tls_config(tls_config(ca_cert)?);
        }
        Ok(Client {
            agent: config.build().into(),
            base: server.trim_end_matches('/').to_string(),
            token,
        })
    }

    pub(crate) fn base(&self) -> &str {
        &self.base
    }

    /// Calls `method path` and returns the JSON answer (`null` for none);
    /// an error status is an error carrying the server's message.
    pub(crate) fn call(&self, method: &str, path: &str, body: Body) -> Result<(u16, Value)> {
        self.call_attempt(method, path, body, 0)
    }

    fn call_attempt(
        &self,
        method: &str,
        path: &str,
        body: Body,
        attempt: u32,
    ) -> Result<(u16, Value)> {
        let url = format!("{}{path}", self.base);
        let auth = self.token.as_ref().map(|t| format!("Bearer {t}"));
        macro_rules! with_auth {
            ($req:expr) => {{
                let r = $req;
                match &auth {
                    Some(a) => r.header("Authorization", a),
                    None => r,
                }
            }};
        }
        let response = match (method, body) {
            ("GET", _) => with_auth!(self.agent.get(&url)).call(),
            ("DELETE", _) => with_auth!(self.agent.delete(&url)).call(),
            ("POST", Body::Json(v)) => with_auth!(self.agent.post(&url)).send_json(v),
            ("PUT", Body::Json(v)) => with_auth!(self.agent.put(&url)).send_json(v),
            ("POST", Body::Wasm(b)) => with_auth!(self.agent.post(&url))
                .header("Content-Type", "application/wasm")
                .send(b),
            ("POST", Body::None) => with_auth!(self.agent.post(&url)).send_empty(),
            (m, _) => bail!("unsupported method {m}"),
        };
        let mut response = response.with_context(|| format!("calling {url}"))?;
        if response.status().as_u16() == 429 && attempt < RETRIES_WHEN_LIMITED {
            // Over the tenant's call rate: wait as the server says, again.
            let wait = (response.headers().get("retry-after"))
                .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
                .unwrap_or(1)
                .min(10);
            std::thread::sleep(Duration::from_secs(wait));
            return self.call_attempt(method, path, body, attempt + 1);
        }
        let status = response.status().as_u16();
        let text = response
            .body_mut()
            .read_to_string()
            .with_context(|| format!("reading the answer of {url}"))?;
        let value: Value = if text.trim().is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        if status >= 400 && !(status == 409 && value.get("outcome").is_some()) {
            let message = value
                .get("error")
                .and_then(Value::as_str)
                .map_or_else(|| value.to_string(), str::to_string);
            bail!("{method} {path}: {message} (HTTP {status})");
        }
        Ok((status, value))
    }

    /// Uploads a plugin file as `name`; returns its `name@sha256`.
    pub(crate) fn upload(&self, name: &str, wasm: &Path) -> Result<String> {
        let bytes =
            std::fs::read(wasm).with_context(|| format!("reading plugin {}", wasm.display()))?;
        let (_, v) = self
            .call("POST", &format!("/api/plugins/{name}"), Body::Wasm(&bytes))
            .with_context(|| format!("uploading {}", wasm.display()))?;
        let digest = v["digest"].as_str().unwrap_or_default();
        eprintln!(
            "uploaded plugin `{name}` {} ({}…)",
            v["version"].as_str().unwrap_or("?"),
            &digest[..digest.len().min(12)]
        );
        Ok(format!("{name}@{digest}"))
    }
}

/// `sluice submit SPEC`: uploads the spec's plugins (each under its name
/// in the spec) and the files it reads, then submits it.
pub(crate) fn submit(client: &Client, spec: &Path, plugin_files: &[String]) -> Result<Value> {
    let text =
        std::fs::read_to_string(spec).with_context(|| format!("reading {}", spec.display()))?;
    let parsed: toml::Value = toml::from_str(&text)
        .map_err(|e| anyhow::anyhow!("{}: {}", spec.display(), e.message()))?;
    let dir = spec
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .to_path_buf();
    let mut given: BTreeMap<String, PathBuf> = BTreeMap::new();
    for p in plugin_files {
        let (k, v) = p
            .split_once('=')
            .with_context(|| format!("--plugin `{p}`: use NAME=FILE.wasm"))?;
        given.insert(k.to_string(), PathBuf::from(v));
    }
    let mut plugins = BTreeMap::new();
    if let Some(table) = parsed.get("plugins").and_then(toml::Value::as_table) {
        for (name, section) in table {
            let file = match given.remove(name) {
                Some(f) => f,
                None => {
                    let path = section
                        .get("path")
                        .and_then(toml::Value::as_str)
                        .with_context(|| {
                            format!("{}: plugins.{name} has no path", spec.display())
                        })?;
                    dir.join(path)
                }
            };
            plugins.insert(name.clone(), client.upload(name, &file)?);
        }
    }
    if let Some(extra) = given.keys().next() {
        bail!("--plugin {extra}: the spec has no plugin of that name");
    }
    // Files the spec reads: queue inputs, socket demo lines, initial state.
    let mut files = BTreeMap::new();
    let mut add = |p: &str| -> Result<()> {
        let file = dir.join(p);
        if file.is_file() && !files.contains_key(p) {
            let content = std::fs::read_to_string(&file)
                .with_context(|| format!("reading {}", file.display()))?;
            files.insert(p.to_string(), content);
        }
        Ok(())
    };
    for (section, keys) in [
        ("sources", &["path", "demo_lines"][..]),
        ("streams", &["initial_state"][..]),
    ] {
        if let Some(table) = parsed.get(section).and_then(toml::Value::as_table) {
            for entry in table.values() {
                for key in keys {
                    if let Some(p) = entry.get(*key).and_then(toml::Value::as_str) {
                        add(p)?;
                    }
                }
            }
        }
    }
    let body = serde_json::json!({"spec": text, "plugins": plugins, "files": files});
    let (_, job) = client.call("POST", "/api/jobs", Body::Json(&body))?;
    Ok(job)
}

/// `sluice job swap JOB PLUGIN NEW`: NEW is a `.wasm` file (uploaded
/// first, as the plugin the job uses) or an uploaded reference.
pub(crate) fn swap(client: &Client, job: &str, plugin: &str, new: &str) -> Result<Value> {
    let to = if Path::new(new).is_file() {
        let (_, j) = client.call("GET", &format!("/api/jobs/{job}"), Body::None)?;
        let current = j["plugins"][plugin]
            .as_str()
            .with_context(|| format!("job `{job}` has no plugin `{plugin}`"))?;
        let name = current.split('@').next().unwrap_or(plugin).to_string();
        client.upload(&name, Path::new(new))?
    } else {
        new.to_string()
    };
    let body = serde_json::json!({"plugin": plugin, "to": to});
    let (_, v) = client.call("POST", &format!("/api/jobs/{job}/swap"), Body::Json(&body))?;
    Ok(v)
}
