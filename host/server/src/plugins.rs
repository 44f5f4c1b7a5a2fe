//! Tenants' plugin uploads: validating and compiling them (in a child
//! process if so configured) and resolving references to them.

use crate::util::{check_name, now_ms};
use crate::{ApiError, ApiResult, Compiler, PluginRecord, Server};
use sluice::plugin::Plugin;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

impl Server {
    /// Stores, validates and compiles an uploaded plugin version (blocking:
    /// call it off the request path). Re-uploading the same bytes is a no-op.
    pub fn add_plugin(&self, tenant: &str, name: &str, bytes: &[u8]) -> ApiResult<PluginRecord> {
        check_name("plugin", name)?;
        let limits = self.limits(tenant)?;
        if bytes.len() as u64 > self.config.max_plugin_bytes {
            return Err(ApiError::new(
                413,
                format!(
                    "plugin `{name}`: {} bytes is over the {} byte limit",
                    bytes.len(),
                    self.config.max_plugin_bytes
                ),
            ));
        }
        let digest = sluice::plugin::content_hash(bytes);
        if let Some(r) = self.persisted().tenants.get(tenant).and_then(|t| {
            t.plugins
                .get(name)
                .and_then(|v| v.iter().find(|r| r.digest == digest).cloned())
        }) {
            return Ok(r);
        }
        let path = self
            .tenant_dir(tenant)
            .join("plugins")
            .join(format!("{digest}.wasm"));
        sluice::fsutil::write_atomically(&path, bytes)
            .map_err(|e| ApiError::internal(format!("storing plugin `{name}`: {e}")))?;
        if let Some(compiler) = &self.config.compiler
            && let Err(e) = self.compile_in_child(compiler, name, &path)
        {
            let _ = std::fs::remove_file(&path);
            return Err(e);
        }
        let mut plugin_limits = limits.plugin_limits();
        plugin_limits.component_bytes = self.config.max_plugin_bytes;
        let plugin =
            match Plugin::from_bytes(&self.runtime, tenant, name, &path, bytes, plugin_limits) {
                Ok(p) => p,
                Err(e) => {
                    let _ = std::fs::remove_file(&path);
                    return Err(ApiError::new(
                        422,
                        format!("plugin `{name}` is not valid: {e}"),
                    ));
                }
            };
        let d = plugin.description();
        let record = PluginRecord {
            digest,
            version: d.version.clone(),
            size: bytes.len() as u64,
            uploaded_ms: now_ms(),
            functions: d
                .functions
                .iter()
                .map(|f| (f.name.clone(), f.kind.to_string()))
                .collect(),
        };
        let mut p = self.persisted();
        let t = p
            .tenants
            .get_mut(tenant)
            .ok_or_else(|| ApiError::not_found(format!("no tenant `{tenant}`")))?;
        t.plugins
            .entry(name.to_string())
            .or_default()
            .push(record.clone());
        self.save(&p)?;
        Ok(record)
    }

    /// Validates and compiles `path` in a child process (see [`Compiler`]);
    /// the artifact lands in the shared compile cache.
    fn compile_in_child(&self, compiler: &Compiler, name: &str, path: &Path) -> ApiResult<()> {
        use std::process::{Command, Stdio};
        let prlimit = Path::new("/usr/bin/prlimit");
        let mut cmd = if prlimit.exists() {
            let mut c = Command::new(prlimit);
            c.arg(format!("--data={}", compiler.memory_bytes))
                .arg("--")
                .arg(&compiler.exe);
            c
        } else {
            Command::new(&compiler.exe)
        };
        cmd.args(["plugin", "precompile"])
            .arg(path)
            .arg("--cache-dir")
            .arg(self.config.data_dir.join("cache"))
            .arg("--max-instances")
            .arg(self.config.max_instances.to_string())
            .arg("--name")
            .arg(name)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .map_err(|e| ApiError::internal(format!("starting the plugin compiler: {e}")))?;
        let stderr = child.stderr.take();
        let reader = std::thread::spawn(move || {
            let mut text = String::new();
            if let Some(mut e) = stderr {
                use std::io::Read;
                let _ = e.read_to_string(&mut text);
            }
            text
        });
        let started = std::time::Instant::now();
        let status = loop {
            match child.try_wait() {
                Ok(Some(status)) => break status,
                Ok(None) if started.elapsed() > self.config.compile_timeout => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(ApiError::new(
                        504,
                        format!(
                            "plugin `{name}` took over {} s to validate and compile; stopped",
                            self.config.compile_timeout.as_secs()
                        ),
                    ));
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(20)),
                Err(e) => {
                    return Err(ApiError::internal(format!(
                        "waiting for the plugin compiler: {e}"
                    )));
                }
            }
        };
        let text = reader.join().unwrap_or_default();
        if status.success() {
            return Ok(());
        }
        let why = text
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .map(|l| l.trim_start_matches("error: ").to_string())
            .unwrap_or_else(|| {
                format!(
                    "the compiler stopped ({status}); it may have run out of its {} MiB",
                    compiler.memory_bytes >> 20
                )
            });
        Err(ApiError::new(422, why))
    }

    /// The permit to compile a plugin (one at a time).
    pub(crate) fn compile_slot(&self) -> &tokio::sync::Semaphore {
        &self.compiling
    }

    /// A tenant's plugins and their versions.
    pub fn plugins(&self, tenant: &str) -> ApiResult<BTreeMap<String, Vec<PluginRecord>>> {
        self.persisted()
            .tenants
            .get(tenant)
            .map(|t| t.plugins.clone())
            .ok_or_else(|| ApiError::not_found(format!("no tenant `{tenant}`")))
    }

    /// Resolves `name`, `name@<sha256 or a prefix of 8+>` or
    /// `name@<version>` among a tenant's uploads to (`name@sha256`, file).
    pub(crate) fn resolve_plugin(
        &self,
        tenant: &str,
        reference: &str,
    ) -> ApiResult<(String, PathBuf)> {
        let (name, want) = match reference.split_once('@') {
            Some((n, v)) => (n, Some(v)),
            None => (reference, None),
        };
        let p = self.persisted();
        let versions = p
            .tenants
            .get(tenant)
            .and_then(|t| t.plugins.get(name))
            .ok_or_else(|| {
                ApiError::bad(format!(
                    "plugin `{name}` has not been uploaded by this tenant"
                ))
            })?;
        let found = match want {
            None => versions.last(),
            Some(v) => versions
                .iter()
                .rev()
                .find(|r| r.digest == v || (v.len() >= 8 && r.digest.starts_with(v)))
                .or_else(|| versions.iter().rev().find(|r| r.version == v)),
        }
        .ok_or_else(|| {
            ApiError::bad(format!(
                "plugin `{name}` has no version `{}`",
                want.unwrap_or("")
            ))
        })?;
        Ok((
            format!("{name}@{}", found.digest),
            self.tenant_dir(tenant)
                .join("plugins")
                .join(format!("{}.wasm", found.digest)),
        ))
    }
}
