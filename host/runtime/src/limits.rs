//! Per-plugin sandbox limits and the store's resource limiter.

use std::time::Duration;

/// What one plugin instance may use. Defaults are DESIGN §4's; a job may lower
/// them and an administrator may raise them up to the engine's ceilings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Linear memory per instance, in bytes.
    pub memory_bytes: u64,
    /// Wall-clock time one call may take.
    pub call_deadline: Duration,
    /// Output bytes one call may return (for a chained call, what its last
    /// function returns: the values between its functions stay in the
    /// guest, under `memory_bytes`).
    pub output_bytes: u64,
    /// Longest guest log line kept (longer lines are truncated).
    pub log_line_bytes: usize,
    /// Guest log bytes kept per call (later lines are dropped and counted).
    pub log_call_bytes: usize,
    /// Largest component file accepted.
    pub component_bytes: u64,
    /// Input bytes per call: larger partition-batches are split.
    pub input_bytes_per_call: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            memory_bytes: 128 << 20,
            call_deadline: Duration::from_secs(1),
            output_bytes: 64 << 20,
            log_line_bytes: 1024,
            log_call_bytes: 64 << 10,
            component_bytes: 32 << 20,
            input_bytes_per_call: 8 << 20,
        }
    }
}

/// What a plugin may reach beyond its sandbox (DESIGN §4: nothing unless
/// granted). A granted directory is the plugin's current directory (`.`)
/// through WASI: it reads and writes files inside it, while absolute
/// paths, `..` and symlinks that lead out are refused by the host. Granted
/// endpoints are the only addresses its TCP sockets may connect to (no
/// name lookup, no UDP, no listening).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Capabilities {
    /// A host directory the plugin may read and write, as `.`.
    pub dir: Option<std::path::PathBuf>,
    /// Addresses the plugin may connect to over TCP.
    pub connect: Vec<std::net::SocketAddr>,
}

/// Enforces the memory cap and remembers that it was hit, so a guest that
/// aborts on a failed allocation is reported as over its memory limit.
#[derive(Debug)]
pub(crate) struct MemoryLimiter {
    pub(crate) max_bytes: usize,
    pub(crate) hit: bool,
}

impl wasmtime::ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.max_bytes {
            self.hit = true;
            return Ok(false);
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= super::engine::MAX_TABLE_ELEMENTS)
    }
}
