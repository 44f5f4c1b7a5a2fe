//! Compile-once cache of precompiled components on disk, keyed by the
//! component's content hash and the engine's compatibility hash, so a second
//! start of the same plugin skips Cranelift. Only artifacts this host produced
//! are ever loaded: a tenant cannot hand in a precompiled file.

use sha2::{Digest, Sha256};
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use wasmtime::Engine;
use wasmtime::component::Component;

/// How a component was obtained.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheOutcome {
    /// Loaded a precompiled artifact from the cache.
    Hit,
    /// Compiled with Cranelift (and stored, when the cache is on).
    Compiled,
}

pub(crate) struct CompileCache {
    dir: Option<PathBuf>,
    engine_key: String,
}

/// The hex SHA-256 of `bytes`: a plugin version's identity.
pub fn content_hash(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

impl CompileCache {
    pub(crate) fn new(dir: Option<PathBuf>, engine: &Engine) -> Self {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut h);
        CompileCache {
            dir,
            engine_key: format!("{:016x}", h.finish()),
        }
    }

    fn path_for(&self, dir: &Path, hash: &str) -> PathBuf {
        dir.join(format!("{hash}-{}.cwasm", self.engine_key))
    }

    /// The compiled component for `bytes` (whose content hash is `hash`).
    pub(crate) fn load(
        &self,
        engine: &Engine,
        bytes: &[u8],
        hash: &str,
    ) -> Result<(Component, CacheOutcome), wasmtime::Error> {
        if let Some(dir) = &self.dir {
            let path = self.path_for(dir, hash);
            // Read, not mmap: a file truncated or rewritten in place under a
            // live mapping would kill the process with SIGBUS.
            if let Ok(artifact) = std::fs::read(&path) {
                // SAFETY: the file was written by `store_atomically` below from this
                // engine's own `precompile_component` output, under a name that
                // includes the engine's compatibility hash, in a directory only the
                // host writes; wasmtime also checks its header and version.
                match unsafe { Component::deserialize(engine, &artifact) } {
                    Ok(c) => return Ok((c, CacheOutcome::Hit)),
                    Err(e) => tracing::warn!(
                        "discarding unusable compiled plugin {}: {e:#}",
                        path.display()
                    ),
                }
            }
            let compiled = engine.precompile_component(bytes)?;
            if let Err(e) = store_atomically(dir, &path, &compiled) {
                tracing::warn!("cannot cache compiled plugin in {}: {e}", dir.display());
            }
            // SAFETY: `compiled` was produced just now by this engine.
            let c = unsafe { Component::deserialize(engine, &compiled)? };
            return Ok((c, CacheOutcome::Compiled));
        }
        Ok((Component::new(engine, bytes)?, CacheOutcome::Compiled))
    }
}

fn store_atomically(dir: &Path, path: &Path, data: &[u8]) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(format!(
        ".tmp-{}-{:?}",
        std::process::id(),
        std::thread::current().id()
    ));
    std::fs::write(&tmp, data)?;
    std::fs::rename(&tmp, path)
}
