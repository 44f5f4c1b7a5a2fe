//! # sluice-server: `sluice serve`, many tenants' jobs in one process
//!
//! Also the streaming web UI and Prometheus metrics of one job
//! ([`metrics`], [`web`]), which `sluice run --ui` serves too.
//!
//! The server keeps everything under one data directory:
//!
//! ```text
//! DATA/server.json                       tenants (limits, token hashes), plugins, jobs
//! DATA/admin.token                       the admin token (0600), unless given
//! DATA/cache/                            compiled plugins (shared, by content hash)
//! DATA/tenants/T/plugins/<sha256>.wasm   a tenant's uploaded plugin versions
//! DATA/tenants/T/jobs/J/job.toml         a job's spec, its files and outputs
//! DATA/tenants/T/jobs/J/checkpoint/      its checkpoints (always on)
//! ```
//!
//! A tenant's jobs are confined specs ([`sluice::spec::Overrides::confine`]):
//! every file stays inside the job's directory, sockets reach only the
//! tenant's granted endpoints, plugins are uploaded ones (validated and
//! compiled when uploaded). Each tenant has [`TenantLimits`]: plugin
//! memory, call deadline and output ceilings, guest log caps, a CPU share
//! (see [`sluice::share`]), a job count, worker threads and a disk quota;
//! the server admits a job only while the memory its plugins may use fits
//! in its reservation. Jobs that were running when the server stopped are
//! started again from their checkpoints when it starts.
//!
//! The HTTP API is in [`api`]; `api/openapi.json` documents it.

pub mod api;
mod audit;
mod config;
pub mod fuzz;
mod jobs;
pub mod metrics;
mod plugins;
mod records;
mod running;
mod swap;
mod tenants;
pub mod tls;
mod util;
pub mod web;

pub use crate::audit::AuditEntry;
pub use crate::config::{Compiler, ServerConfig, TenantLimits};
pub use crate::records::{Caller, Desired, JobRecord, JobState, PluginRecord};
pub use crate::util::new_token;

use crate::running::Running;
use serde::{Deserialize, Serialize};
use sluice::plugin::{Runtime, RuntimeConfig};
use sluice::share::CpuShare;
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

/// How many pprint blocks and job events a job keeps for the API.
const RECENT: usize = 200;

/// A server error with the HTTP status it maps to.
#[derive(Debug, Clone)]
pub struct ApiError {
    /// HTTP status code.
    pub status: u16,
    /// What went wrong, naming the thing at fault.
    pub message: String,
    /// For 429: when to try again.
    pub retry_after: Option<std::time::Duration>,
}

impl ApiError {
    fn new(status: u16, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
            retry_after: None,
        }
    }
    fn bad(message: impl Into<String>) -> ApiError {
        ApiError::new(400, message)
    }
    fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(404, message)
    }
    fn conflict(message: impl Into<String>) -> ApiError {
        ApiError::new(409, message)
    }
    fn internal(message: impl Into<String>) -> ApiError {
        ApiError::new(500, message)
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.message, self.status)
    }
}

impl std::error::Error for ApiError {}

type ApiResult<T> = std::result::Result<T, ApiError>;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct TenantRecord {
    limits: TenantLimits,
    /// SHA-256 of each token.
    tokens: Vec<String>,
    plugins: BTreeMap<String, Vec<PluginRecord>>,
    jobs: BTreeMap<String, JobRecord>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Persisted {
    tenants: BTreeMap<String, TenantRecord>,
}

/// The server: tenants, their plugins and jobs. Shared by the HTTP API.
pub struct Server {
    config: ServerConfig,
    runtime: Arc<Runtime>,
    persisted: Mutex<Persisted>,
    running: Mutex<HashMap<(String, String), Arc<Running>>>,
    shares: Mutex<HashMap<String, Arc<CpuShare>>>,
    /// One plugin compile at a time (they use every core).
    compiling: tokio::sync::Semaphore,
    /// The API's address: never granted to a job.
    own_addr: Mutex<Option<std::net::SocketAddr>>,
    /// SHA-256 of the admin token (compared as tenants' tokens are).
    admin_hash: Option<String>,
    /// Each tenant's allowance of API calls.
    allowances: Mutex<HashMap<String, tenants::Allowance>>,
    audit: audit::AuditLog,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("data_dir", &self.config.data_dir)
            .finish()
    }
}

impl Server {
    /// Opens (or creates) the server's data directory. Jobs are not
    /// started: call [`Server::resume_jobs`].
    pub fn open(config: ServerConfig) -> sluice::Result<Arc<Server>> {
        let io = |what: String| move |e| sluice::Error::io(what, e);
        std::fs::create_dir_all(config.data_dir.join("tenants"))
            .map_err(io(format!("creating {}", config.data_dir.display())))?;
        let state_path = config.data_dir.join("server.json");
        let persisted = match std::fs::read(&state_path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
                sluice::Error::Plan(format!("{} is damaged: {e}", state_path.display()))
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Persisted::default(),
            Err(e) => {
                return Err(sluice::Error::io(
                    format!("reading {}", state_path.display()),
                    e,
                ));
            }
        };
        let runtime = Runtime::new(RuntimeConfig {
            max_instances: config.max_instances,
            cache_dir: Some(config.data_dir.join("cache")),
            ..RuntimeConfig::default()
        })?;
        let admin_hash =
            (!config.admin_token.is_empty()).then(|| util::token_hash(&config.admin_token));
        let audit = audit::AuditLog::new(&config.data_dir);
        Ok(Arc::new(Server {
            admin_hash,
            allowances: Mutex::default(),
            audit,
            config,
            runtime,
            persisted: Mutex::new(persisted),
            running: Mutex::default(),
            shares: Mutex::default(),
            compiling: tokio::sync::Semaphore::new(1),
            own_addr: Mutex::default(),
        }))
    }

    /// Tells the server the address its API listens on: no job's socket
    /// source or plugin may connect to it, whatever its tenant's grants.
    pub fn set_listen_addr(&self, addr: std::net::SocketAddr) {
        *self.own_addr.lock().unwrap_or_else(|e| e.into_inner()) = Some(addr);
    }

    /// Whether `endpoint` (`host:port`) is the server's own API.
    fn is_own(&self, endpoint: &str) -> bool {
        let Some(own) = *self.own_addr.lock().unwrap_or_else(|e| e.into_inner()) else {
            return false;
        };
        use std::net::ToSocketAddrs;
        endpoint.to_socket_addrs().is_ok_and(|mut addrs| {
            addrs.any(|a| {
                a.port() == own.port()
                    && (a.ip() == own.ip()
                        || own.ip().is_unspecified()
                        || (a.ip().is_loopback() && own.ip().is_loopback()))
            })
        })
    }

    /// The server's settings.
    pub fn config(&self) -> &ServerConfig {
        &self.config
    }

    fn persisted(&self) -> std::sync::MutexGuard<'_, Persisted> {
        self.persisted.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn running(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String), Arc<Running>>> {
        self.running.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Writes `server.json` (atomically).
    fn save(&self, p: &Persisted) -> ApiResult<()> {
        let bytes = serde_json::to_vec_pretty(p)
            .map_err(|e| ApiError::internal(format!("encoding the server state: {e}")))?;
        sluice::fsutil::write_atomically(&self.config.data_dir.join("server.json"), &bytes)
            .map_err(|e| ApiError::internal(format!("saving the server state: {e}")))
    }

    fn tenant_dir(&self, tenant: &str) -> PathBuf {
        self.config.data_dir.join("tenants").join(tenant)
    }

    fn job_dir(&self, tenant: &str, job: &str) -> PathBuf {
        self.tenant_dir(tenant).join("jobs").join(job)
    }

    /// Stops every job (each ends with a last batch and checkpoint) without
    /// changing whether it should run: a restarted server resumes them.
    pub fn shutdown(&self) {
        let all: Vec<Arc<Running>> = self.running().values().cloned().collect();
        for r in &all {
            r.context.stop_handle().stop();
        }
        for r in all {
            r.stop_and_join();
        }
    }
}
