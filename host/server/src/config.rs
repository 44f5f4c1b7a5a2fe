//! The server's configuration ([`ServerConfig`], [`Compiler`]) and what
//! each tenant may use ([`TenantLimits`]).

use crate::{ApiError, ApiResult};
use serde::{Deserialize, Serialize};
use sluice::plugin::Limits;
use std::path::PathBuf;
use std::time::Duration;

/// What one tenant may use. Missing fields take the server's defaults.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct TenantLimits {
    /// Jobs the tenant may have (running or stopped).
    pub max_jobs: usize,
    /// Linear memory per plugin instance, bytes (ceiling and default).
    pub memory_bytes: u64,
    /// Per-call deadline, milliseconds (ceiling and default).
    pub deadline_ms: u64,
    /// Output bytes one plugin call may return (ceiling and default).
    pub output_bytes: u64,
    /// Guest log bytes kept per call.
    pub log_call_bytes: usize,
    /// Longest guest log line kept.
    pub log_line_bytes: usize,
    /// CPU share of all the tenant's jobs together, in cores.
    pub cpu_share: f64,
    /// Worker threads per job, at most.
    pub max_workers: usize,
    /// Bytes the tenant's job directories (outputs, checkpoints, files)
    /// may hold; a job over it is stopped.
    pub disk_bytes: u64,
    /// `host:port` endpoints the tenant's socket sources may connect to.
    pub sockets: Vec<String>,
    /// API calls per second the tenant's tokens may make, sustained;
    /// more are refused with 429 and `Retry-After`.
    pub api_rate: f64,
    /// API calls the tenant may make at once above [`Self::api_rate`].
    pub api_burst: u32,
}

impl Default for TenantLimits {
    fn default() -> Self {
        let l = Limits::default();
        TenantLimits {
            max_jobs: 8,
            memory_bytes: l.memory_bytes,
            deadline_ms: l.call_deadline.as_millis() as u64,
            output_bytes: l.output_bytes,
            log_call_bytes: l.log_call_bytes,
            log_line_bytes: l.log_line_bytes,
            cpu_share: 1.0,
            max_workers: 2,
            disk_bytes: 1 << 30,
            sockets: Vec::new(),
            api_rate: 20.0,
            api_burst: 40,
        }
    }
}

impl TenantLimits {
    /// The per-plugin sandbox limits these amount to.
    pub fn plugin_limits(&self) -> Limits {
        Limits {
            memory_bytes: self.memory_bytes,
            call_deadline: Duration::from_millis(self.deadline_ms.max(1)),
            output_bytes: self.output_bytes,
            log_call_bytes: self.log_call_bytes,
            log_line_bytes: self.log_line_bytes,
            ..Limits::default()
        }
    }

    pub(crate) fn check(&self) -> ApiResult<()> {
        if self.max_jobs == 0 || self.max_workers == 0 {
            return Err(ApiError::bad(
                "limits: max_jobs and max_workers must be at least 1",
            ));
        }
        if !self.cpu_share.is_finite() || self.cpu_share <= 0.0 {
            return Err(ApiError::bad("limits: cpu_share must be positive (cores)"));
        }
        if !self.api_rate.is_finite() || self.api_rate <= 0.0 || self.api_burst == 0 {
            return Err(ApiError::bad(
                "limits: api_rate must be positive (calls/s) and api_burst at least 1",
            ));
        }
        if self.memory_bytes < (1 << 20) || self.deadline_ms == 0 {
            return Err(ApiError::bad(
                "limits: memory_bytes must be at least 1 MiB and deadline_ms positive",
            ));
        }
        Ok(())
    }
}

/// How the server is set up.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Where tenants, plugins, jobs and checkpoints are kept.
    pub data_dir: PathBuf,
    /// The token that manages tenants.
    pub admin_token: String,
    /// Memory the server may promise to jobs' plugins, in bytes: a job is
    /// admitted only if its reservation fits in what is left.
    pub memory_reservation: u64,
    /// Limits of tenants created without their own.
    pub default_limits: TenantLimits,
    /// Largest plugin upload, bytes.
    pub max_plugin_bytes: u64,
    /// Longest a plugin upload may take to validate and compile.
    pub compile_timeout: Duration,
    /// Largest total of the files sent with a job.
    pub max_job_files_bytes: u64,
    /// Largest body of any other request (JSON), bytes: larger ones are
    /// refused with 413 before they are read whole.
    pub max_request_bytes: usize,
    /// Most plugin instances alive at once (the engine's pool).
    pub max_instances: u32,
    /// Compile uploads in a child process instead of in the server, so that
    /// a hostile upload is stopped at `compile_timeout` and its memory is
    /// bounded; `None`: in this process.
    pub compiler: Option<Compiler>,
}

/// A child process that validates and compiles uploads into the server's
/// compile cache: `EXE plugin precompile FILE --cache-dir DIR
/// --max-instances N` (what `sluice serve` uses, with its own binary), run
/// under `prlimit --data=MEMORY` where `prlimit` exists, and killed past
/// the compile timeout.
#[derive(Debug, Clone)]
pub struct Compiler {
    /// The `sluice` binary.
    pub exe: PathBuf,
    /// Data memory the compile may use (heap; `RLIMIT_DATA`).
    pub memory_bytes: u64,
}

impl ServerConfig {
    /// Defaults for `data_dir` with `admin_token`: half the machine's
    /// memory reserved for plugins, 32 MiB plugins, 120 s to compile.
    pub fn new(data_dir: PathBuf, admin_token: String) -> ServerConfig {
        ServerConfig {
            data_dir,
            admin_token,
            memory_reservation: machine_memory().map_or(4 << 30, |m| m / 2),
            default_limits: TenantLimits::default(),
            max_plugin_bytes: Limits::default().component_bytes,
            compile_timeout: Duration::from_secs(120),
            max_job_files_bytes: 16 << 20,
            max_request_bytes: 1 << 20,
            max_instances: 512,
            compiler: None,
        }
    }
}

/// The machine's memory (`MemTotal`), if known.
fn machine_memory() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}
