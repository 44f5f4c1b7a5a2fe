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
pub mod metrics;
pub mod web;

use crate::metrics::Metrics;
use serde::{Deserialize, Serialize};
use sluice::plugin::{Limits, Plugin, Runtime, RuntimeConfig};
use sluice::share::CpuShare;
use sluice::spec::{self, Grants, Overrides, PprintTarget};
use sluice::{BatchInfo, StreamingContext, StreamingListener};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How many pprint blocks and job events a job keeps for the API.
const RECENT: usize = 200;

/// A server error with the HTTP status it maps to.
#[derive(Debug, Clone)]
pub struct ApiError {
    /// HTTP status code.
    pub status: u16,
    /// What went wrong, naming the thing at fault.
    pub message: String,
}

impl ApiError {
    fn new(status: u16, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
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

    fn check(&self) -> ApiResult<()> {
        if self.max_jobs == 0 || self.max_workers == 0 {
            return Err(ApiError::bad(
                "limits: max_jobs and max_workers must be at least 1",
            ));
        }
        if !self.cpu_share.is_finite() || self.cpu_share <= 0.0 {
            return Err(ApiError::bad("limits: cpu_share must be positive (cores)"));
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

/// One uploaded plugin version.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PluginRecord {
    /// SHA-256 of the component: the version's identity.
    pub digest: String,
    /// The version the plugin describes itself with.
    pub version: String,
    /// Component size in bytes.
    pub size: u64,
    /// Upload time, ms since the epoch.
    pub uploaded_ms: i64,
    /// Its functions: (name, kind).
    pub functions: Vec<(String, String)>,
}

/// Whether a job should run.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Desired {
    /// Run it (and again after a server restart).
    Running,
    /// Leave it stopped.
    Stopped,
}

/// A submitted job as the server remembers it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobRecord {
    /// The spec's plugin names → uploaded `name@sha256`.
    pub plugins: BTreeMap<String, String>,
    /// Whether it should run.
    pub desired: Desired,
    /// Submission time, ms since the epoch.
    pub submitted_ms: i64,
}

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

/// Who a request comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// The administrator.
    Admin,
    /// A tenant, by name.
    Tenant(String),
}

/// A job's state as the API shows it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(tag = "state", rename_all = "lowercase")]
pub enum JobState {
    /// Running batches.
    Running,
    /// Stopped on request (or by the server stopping).
    Stopped,
    /// Every finite source ended.
    Finished,
    /// Stopped by an error.
    Failed {
        /// Why.
        error: String,
    },
}

/// A job running (or run) in this server process.
struct Running {
    context: Arc<StreamingContext>,
    plugins: BTreeMap<String, Arc<Plugin>>,
    metrics: Arc<Metrics>,
    outputs: Arc<Mutex<VecDeque<String>>>,
    events: Arc<Mutex<VecDeque<serde_json::Value>>>,
    state: Arc<Mutex<JobState>>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    reservation: u64,
}

impl Running {
    fn state(&self) -> JobState {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
    fn is_running(&self) -> bool {
        self.state() == JobState::Running
    }
    fn event(&self, what: serde_json::Value) {
        push_event(&self.events, what);
    }
    fn stop_and_join(&self) {
        self.context.stop_handle().stop();
        let thread = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(t) = thread {
            let _ = t.join();
        }
    }
}

fn push_event(events: &Mutex<VecDeque<serde_json::Value>>, mut what: serde_json::Value) {
    if let Some(o) = what.as_object_mut() {
        o.insert("time_ms".to_string(), now_ms().into());
    }
    let mut e = events.lock().unwrap_or_else(|e| e.into_inner());
    if e.len() == RECENT {
        e.pop_front();
    }
    e.push_back(what);
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// A name for a tenant, plugin or job: 1–64 of `[A-Za-z0-9_-]`.
fn check_name(what: &str, name: &str) -> ApiResult<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(ApiError::bad(format!(
            "{what} name `{name}` is not allowed: use 1 to 64 letters, digits, `-` or `_`"
        )))
    }
}

/// A relative path that stays where it is put (no `..`, not absolute).
fn check_relative(path: &str) -> ApiResult<PathBuf> {
    let p = Path::new(path);
    let ok = !path.is_empty()
        && p.components()
            .all(|c| matches!(c, std::path::Component::Normal(_)));
    if ok {
        Ok(p.to_path_buf())
    } else {
        Err(ApiError::bad(format!(
            "file `{path}`: use a relative path inside the job's directory (no `..`, not absolute)"
        )))
    }
}

/// A fresh random token (`slt_` and 48 hex digits).
pub fn new_token() -> ApiResult<String> {
    use std::io::Read;
    let mut bytes = [0u8; 24];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .map_err(|e| ApiError::internal(format!("reading /dev/urandom for a token: {e}")))?;
    Ok(format!("slt_{}", hex::encode(bytes)))
}

fn token_hash(token: &str) -> String {
    sluice::plugin::content_hash(token.as_bytes())
}

/// Compares without stopping at the first difference.
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

fn dir_size(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => dir_size(&e.path()),
            Ok(t) if t.is_file() => e.metadata().map_or(0, |m| m.len()),
            _ => 0,
        })
        .sum()
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
        Ok(Arc::new(Server {
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

    /// Who holds `token`, if anyone.
    pub fn authenticate(&self, token: &str) -> Option<Caller> {
        if !self.config.admin_token.is_empty() && same(token, &self.config.admin_token) {
            return Some(Caller::Admin);
        }
        let hash = token_hash(token);
        self.persisted()
            .tenants
            .iter()
            .find(|(_, t)| t.tokens.iter().any(|h| same(h, &hash)))
            .map(|(name, _)| Caller::Tenant(name.clone()))
    }

    /// Creates tenant `name` with `limits` (default: the server's) and
    /// returns its first token.
    pub fn create_tenant(&self, name: &str, limits: Option<TenantLimits>) -> ApiResult<String> {
        check_name("tenant", name)?;
        let limits = limits.unwrap_or_else(|| self.config.default_limits.clone());
        limits.check()?;
        let token = new_token()?;
        let mut p = self.persisted();
        if p.tenants.contains_key(name) {
            return Err(ApiError::conflict(format!(
                "tenant `{name}` already exists"
            )));
        }
        std::fs::create_dir_all(self.tenant_dir(name).join("plugins")).map_err(|e| {
            ApiError::internal(format!("creating tenant `{name}`'s directory: {e}"))
        })?;
        p.tenants.insert(
            name.to_string(),
            TenantRecord {
                limits,
                tokens: vec![token_hash(&token)],
                ..TenantRecord::default()
            },
        );
        self.save(&p)?;
        Ok(token)
    }

    /// A new token for tenant `name`.
    pub fn add_token(&self, name: &str) -> ApiResult<String> {
        let token = new_token()?;
        let mut p = self.persisted();
        let t = p
            .tenants
            .get_mut(name)
            .ok_or_else(|| ApiError::not_found(format!("no tenant `{name}`")))?;
        t.tokens.push(token_hash(&token));
        self.save(&p)?;
        Ok(token)
    }

    /// Changes tenant `name`'s limits (running jobs keep theirs until restarted).
    pub fn set_limits(&self, name: &str, limits: TenantLimits) -> ApiResult<()> {
        limits.check()?;
        let mut p = self.persisted();
        let t = p
            .tenants
            .get_mut(name)
            .ok_or_else(|| ApiError::not_found(format!("no tenant `{name}`")))?;
        t.limits = limits;
        self.save(&p)
    }

    /// Every tenant with its limits and job count.
    pub fn tenants(&self) -> serde_json::Value {
        let p = self.persisted();
        let running = self.running();
        let shares = self.shares.lock().unwrap_or_else(|e| e.into_inner());
        serde_json::Value::Array(
            p.tenants
                .iter()
                .map(|(name, t)| {
                    let reserved: u64 = running
                        .iter()
                        .filter(|((tn, _), r)| tn == name && r.is_running())
                        .map(|(_, r)| r.reservation)
                        .sum();
                    // CPU charged to the tenant's share, time its batches
                    // waited for it, and time its calls were paused for
                    // lighter tenants (since the server started).
                    let (cpu, waited) = shares
                        .get(name)
                        .map_or_else(Default::default, |s| s.totals());
                    let paused = shares.get(name).map_or(Duration::ZERO, |s| s.paused());
                    serde_json::json!({
                        "name": name,
                        "limits": t.limits,
                        "jobs": t.jobs.len(),
                        "plugins": t.plugins.len(),
                        "reserved_memory_bytes": reserved,
                        "cpu_seconds": cpu.as_secs_f64(),
                        "cpu_share_waited_seconds": waited.as_secs_f64(),
                        "cpu_share_paused_seconds": paused.as_secs_f64(),
                    })
                })
                .collect(),
        )
    }

    /// Deletes tenant `name`: stops and removes its jobs, plugins and files.
    pub fn delete_tenant(&self, name: &str) -> ApiResult<()> {
        let jobs: Vec<String> = {
            let p = self.persisted();
            let t = p
                .tenants
                .get(name)
                .ok_or_else(|| ApiError::not_found(format!("no tenant `{name}`")))?;
            t.jobs.keys().cloned().collect()
        };
        for job in jobs {
            self.delete_job(name, &job)?;
        }
        let mut p = self.persisted();
        p.tenants.remove(name);
        self.save(&p)?;
        drop(p);
        self.shares
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(name);
        let _ = std::fs::remove_dir_all(self.tenant_dir(name));
        Ok(())
    }

    fn limits(&self, tenant: &str) -> ApiResult<TenantLimits> {
        self.persisted()
            .tenants
            .get(tenant)
            .map(|t| t.limits.clone())
            .ok_or_else(|| ApiError::not_found(format!("no tenant `{tenant}`")))
    }

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
    fn resolve_plugin(&self, tenant: &str, reference: &str) -> ApiResult<(String, PathBuf)> {
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

    /// Submits a job: stores its spec and files, then starts it. The
    /// spec's `[job] name` names it; `plugins` maps the spec's plugin names
    /// to uploaded plugins (`name`, `name@sha256`, `name@version`).
    pub fn submit(
        self: &Arc<Self>,
        tenant: &str,
        spec_text: &str,
        plugins: &BTreeMap<String, String>,
        files: &BTreeMap<String, String>,
    ) -> ApiResult<serde_json::Value> {
        let limits = self.limits(tenant)?;
        let parsed: toml::Value = toml::from_str(spec_text)
            .map_err(|e| ApiError::bad(format!("job.toml: {}", e.message())))?;
        let name = parsed
            .get("job")
            .and_then(|j| j.get("name"))
            .and_then(|n| n.as_str())
            .ok_or_else(|| ApiError::bad("job.toml: the server needs `[job] name`"))?
            .to_string();
        check_name("job", &name)?;
        let mut resolved = BTreeMap::new();
        for (key, reference) in plugins {
            resolved.insert(key.clone(), self.resolve_plugin(tenant, reference)?.0);
        }
        let total: usize = files.values().map(String::len).sum();
        if total as u64 > self.config.max_job_files_bytes {
            return Err(ApiError::new(
                413,
                format!(
                    "the job's files are {total} bytes, over the {} byte limit",
                    self.config.max_job_files_bytes
                ),
            ));
        }
        let paths = files
            .keys()
            .map(|k| check_relative(k))
            .collect::<ApiResult<Vec<_>>>()?;
        let dir = self.job_dir(tenant, &name);
        {
            let mut p = self.persisted();
            let t = p
                .tenants
                .get_mut(tenant)
                .ok_or_else(|| ApiError::not_found(format!("no tenant `{tenant}`")))?;
            if t.jobs.contains_key(&name) {
                return Err(ApiError::conflict(format!(
                    "job `{name}` already exists (delete it first, or swap its plugins)"
                )));
            }
            if t.jobs.len() >= limits.max_jobs {
                return Err(ApiError::conflict(format!(
                    "tenant `{tenant}` already has {} jobs, its limit",
                    t.jobs.len()
                )));
            }
            std::fs::create_dir_all(&dir).map_err(|e| {
                ApiError::internal(format!("creating job `{name}`'s directory: {e}"))
            })?;
            let write = || -> std::io::Result<()> {
                std::fs::write(dir.join("job.toml"), spec_text)?;
                for (rel, content) in paths.iter().zip(files.values()) {
                    let to = dir.join(rel);
                    if let Some(parent) = to.parent() {
                        std::fs::create_dir_all(parent)?;
                    }
                    std::fs::write(to, content)?;
                }
                Ok(())
            };
            if let Err(e) = write() {
                let _ = std::fs::remove_dir_all(&dir);
                return Err(ApiError::internal(format!("storing job `{name}`: {e}")));
            }
            t.jobs.insert(
                name.clone(),
                JobRecord {
                    plugins: resolved,
                    desired: Desired::Running,
                    submitted_ms: now_ms(),
                },
            );
        }
        if let Err(e) = self.start_job(tenant, &name) {
            // Not admitted or not valid: forget it entirely.
            self.persisted()
                .tenants
                .get_mut(tenant)
                .map(|t| t.jobs.remove(&name));
            let _ = std::fs::remove_dir_all(&dir);
            return Err(e);
        }
        {
            let p = self.persisted();
            self.save(&p)?;
        }
        self.job(tenant, &name)
    }

    fn share(&self, tenant: &str, cores: f64) -> Arc<CpuShare> {
        let mut shares = self.shares.lock().unwrap_or_else(|e| e.into_inner());
        let s = shares
            .entry(tenant.to_string())
            .or_insert_with(|| Arc::new(CpuShare::new(cores)));
        if (s.cores() - cores).abs() > f64::EPSILON {
            *s = Arc::new(CpuShare::new(cores));
        }
        s.clone()
    }

    /// Builds and starts a job from its stored spec (resuming from its
    /// checkpoint), if the server's memory reservation admits it.
    fn start_job(self: &Arc<Self>, tenant: &str, name: &str) -> ApiResult<()> {
        let key = (tenant.to_string(), name.to_string());
        if self.running().get(&key).is_some_and(|r| r.is_running()) {
            return Err(ApiError::conflict(format!(
                "job `{name}` is already running"
            )));
        }
        let (limits, record) = {
            let p = self.persisted();
            let t = p
                .tenants
                .get(tenant)
                .ok_or_else(|| ApiError::not_found(format!("no tenant `{tenant}`")))?;
            let r = t
                .jobs
                .get(name)
                .ok_or_else(|| ApiError::not_found(format!("no job `{name}`")))?;
            (t.limits.clone(), r.clone())
        };
        let dir = self.job_dir(tenant, name);
        let spec_path = dir.join("job.toml");
        let text = std::fs::read_to_string(&spec_path)
            .map_err(|e| ApiError::internal(format!("reading job `{name}`'s spec: {e}")))?;
        let mut plugin_paths = BTreeMap::new();
        for (key, reference) in &record.plugins {
            plugin_paths.insert(key.clone(), self.resolve_plugin(tenant, reference)?.1);
        }
        let outputs: Arc<Mutex<VecDeque<String>>> = Arc::default();
        let sink = outputs.clone();
        let overrides = Overrides {
            checkpoint: Some(dir.join("checkpoint")),
            confine: Some(Grants {
                sockets: limits
                    .sockets
                    .iter()
                    .filter(|e| !self.is_own(e))
                    .cloned()
                    .collect(),
                uploaded_plugins_only: true,
            }),
            plugin_paths,
            limits: Some(limits.plugin_limits()),
            max_workers: Some(limits.max_workers),
            pprint: Some(PprintTarget(Arc::new(move || {
                Box::new(RecentText {
                    ring: sink.clone(),
                    current: Vec::new(),
                })
            }))),
            runtime: Some(self.runtime.clone()),
            cpu_share: Some(self.share(tenant, limits.cpu_share)),
            ..Overrides::default()
        };
        let shown = format!("{}/", dir.display());
        let job = spec::build(&spec_path, &text, &overrides)
            .map_err(|e| ApiError::bad(e.to_string().replace(&shown, "")))?;
        let workers = job.context.workers() as u64;
        let socket_buffers: u64 = job.socket_addrs.iter().map(|s| s.buffered_bytes).sum();
        let reservation = job
            .plugins
            .values()
            .map(|p| p.limits().memory_bytes * workers)
            .sum::<u64>()
            + socket_buffers;
        let metrics = Metrics::attach(&job);
        let context = Arc::new(job.context);
        let state = Arc::new(Mutex::new(JobState::Running));
        let failure: Arc<Mutex<Option<String>>> = Arc::default();
        let events: Arc<Mutex<VecDeque<serde_json::Value>>> = Arc::default();
        context.add_streaming_listener(Box::new(Quota {
            dir: dir.clone(),
            tenant_dir: self.tenant_dir(tenant).join("jobs"),
            most: limits.disk_bytes,
            stop: context.stop_handle(),
            failure: failure.clone(),
            checked: std::time::Instant::now() - Duration::from_secs(2),
        }));
        let running = Arc::new(Running {
            context: context.clone(),
            plugins: job.plugins,
            metrics,
            outputs,
            events,
            state: state.clone(),
            thread: Mutex::new(None),
            reservation,
        });
        {
            let mut all = self.running();
            let reserved: u64 = all
                .values()
                .filter(|r| r.is_running())
                .map(|r| r.reservation)
                .sum();
            let left = self.config.memory_reservation.saturating_sub(reserved);
            if reservation > left {
                return Err(ApiError::conflict(format!(
                    "job `{name}` is not admitted: it reserves {} MiB ({} plugin(s) × {} worker(s) × their memory limit{}), and the server has {} MiB of its {} MiB reservation left",
                    reservation >> 20,
                    running.plugins.len(),
                    workers,
                    if socket_buffers > 0 {
                        format!(", plus {} MiB of socket buffers", socket_buffers >> 20)
                    } else {
                        String::new()
                    },
                    left >> 20,
                    self.config.memory_reservation >> 20
                )));
            }
            all.insert(key.clone(), running.clone());
        }
        running
            .event(serde_json::json!({"event": "started", "reserved_memory_bytes": reservation}));
        let (events, tenant_name, job_name) =
            (running.events.clone(), tenant.to_string(), name.to_string());
        let thread = std::thread::Builder::new()
            .name(format!("job-{tenant}-{name}"))
            .spawn(move || {
                let result = context.run(None);
                let failed = failure.lock().unwrap_or_else(|e| e.into_inner()).clone();
                let end = match (result, failed) {
                    (_, Some(why)) => JobState::Failed { error: why },
                    (Err(e), None) => JobState::Failed {
                        error: e.to_string(),
                    },
                    (Ok(_), None) if context.stop_handle().is_stopped() => JobState::Stopped,
                    (Ok(_), None) => JobState::Finished,
                };
                match &end {
                    JobState::Failed { error } => {
                        tracing::warn!(tenant = %tenant_name, job = %job_name, "job failed: {error}")
                    }
                    other => {
                        tracing::info!(tenant = %tenant_name, job = %job_name, "job ended: {other:?}")
                    }
                }
                push_event(&events, serde_json::json!({"event": "ended", "state": end}));
                *state.lock().unwrap_or_else(|e| e.into_inner()) = end;
            })
            .map_err(|e| ApiError::internal(format!("starting job `{name}`'s thread: {e}")))?;
        *running.thread.lock().unwrap_or_else(|e| e.into_inner()) = Some(thread);
        tracing::info!(
            tenant,
            job = name,
            reserved_mib = reservation >> 20,
            "job started"
        );
        Ok(())
    }

    /// Starts every job that should run (after the server starts). Jobs
    /// that cannot start are reported and left stopped.
    pub fn resume_jobs(self: &Arc<Self>) -> Vec<(String, String, ApiError)> {
        let todo: Vec<(String, String)> = {
            let p = self.persisted();
            p.tenants
                .iter()
                .flat_map(|(t, r)| {
                    r.jobs
                        .iter()
                        .filter(|(_, j)| j.desired == Desired::Running)
                        .map(move |(j, _)| (t.clone(), j.clone()))
                })
                .collect()
        };
        let mut failed = Vec::new();
        for (tenant, job) in todo {
            if let Err(e) = self.start_job(&tenant, &job) {
                tracing::warn!(tenant = %tenant, job = %job, "cannot resume the job: {e}");
                failed.push((tenant, job, e));
            }
        }
        failed
    }

    fn get_running(&self, tenant: &str, name: &str) -> Option<Arc<Running>> {
        self.running()
            .get(&(tenant.to_string(), name.to_string()))
            .cloned()
    }

    fn record(&self, tenant: &str, name: &str) -> ApiResult<JobRecord> {
        self.persisted()
            .tenants
            .get(tenant)
            .and_then(|t| t.jobs.get(name).cloned())
            .ok_or_else(|| ApiError::not_found(format!("no job `{name}`")))
    }

    /// A tenant's jobs, each as [`Server::job`] shows it.
    pub fn jobs(&self, tenant: &str) -> ApiResult<serde_json::Value> {
        let names: Vec<String> = self
            .persisted()
            .tenants
            .get(tenant)
            .map(|t| t.jobs.keys().cloned().collect())
            .unwrap_or_default();
        names
            .iter()
            .map(|n| self.job(tenant, n))
            .collect::<ApiResult<Vec<_>>>()
            .map(serde_json::Value::Array)
    }

    /// One job: its state, plugins (with the versions in force), batches
    /// done and latest batch, memory reserved.
    pub fn job(&self, tenant: &str, name: &str) -> ApiResult<serde_json::Value> {
        let record = self.record(tenant, name)?;
        let running = self.get_running(tenant, name);
        let state = running.as_ref().map_or(JobState::Stopped, |r| r.state());
        let mut out = serde_json::json!({
            "name": name,
            "desired": record.desired,
            "status": state,
            "plugins": record.plugins,
            "submitted_ms": record.submitted_ms,
        });
        if let Some(r) = running {
            let (batches, input_records, last) = r.metrics.summary();
            out["batches"] = batches.into();
            out["input_records"] = input_records.into();
            out["last_batch"] = serde_json::to_value(last).unwrap_or_default();
            out["versions"] = r
                .plugins
                .iter()
                .map(|(k, p)| {
                    let live = p.live();
                    (
                        k.clone(),
                        serde_json::json!({"version": live.description().version, "digest": live.content_hash()}),
                    )
                })
                .collect::<serde_json::Map<_, _>>()
                .into();
            out["reserved_memory_bytes"] = r.reservation.into();
        }
        Ok(out)
    }

    /// Stops a job (a last batch and checkpoint) and leaves it stopped.
    pub fn stop_job(&self, tenant: &str, name: &str) -> ApiResult<()> {
        self.record(tenant, name)?;
        self.set_desired(tenant, name, Desired::Stopped)?;
        if let Some(r) = self.get_running(tenant, name) {
            r.event(serde_json::json!({"event": "stop requested"}));
            r.stop_and_join();
        }
        Ok(())
    }

    /// Starts a stopped job again from its checkpoint.
    pub fn restart_job(self: &Arc<Self>, tenant: &str, name: &str) -> ApiResult<()> {
        self.record(tenant, name)?;
        self.start_job(tenant, name)?;
        self.set_desired(tenant, name, Desired::Running)
    }

    fn set_desired(&self, tenant: &str, name: &str, desired: Desired) -> ApiResult<()> {
        let mut p = self.persisted();
        if let Some(j) = p.tenants.get_mut(tenant).and_then(|t| t.jobs.get_mut(name)) {
            j.desired = desired;
        }
        self.save(&p)
    }

    /// Stops a job and removes it with its files, outputs and checkpoints.
    pub fn delete_job(&self, tenant: &str, name: &str) -> ApiResult<()> {
        self.record(tenant, name)?;
        if let Some(r) = self.get_running(tenant, name) {
            r.stop_and_join();
        }
        self.running()
            .remove(&(tenant.to_string(), name.to_string()));
        let mut p = self.persisted();
        if let Some(t) = p.tenants.get_mut(tenant) {
            t.jobs.remove(name);
        }
        self.save(&p)?;
        drop(p);
        let _ = std::fs::remove_dir_all(self.job_dir(tenant, name));
        Ok(())
    }

    /// The job's metrics (what its web UI shows).
    pub fn job_metrics(&self, tenant: &str, name: &str) -> ApiResult<Arc<Metrics>> {
        self.record(tenant, name)?;
        self.get_running(tenant, name)
            .map(|r| r.metrics.clone())
            .ok_or_else(|| {
                ApiError::not_found(format!("job `{name}` has not run since the server started"))
            })
    }

    /// The job's most recent `pprint` outputs (at most `n`, oldest first).
    pub fn outputs(&self, tenant: &str, name: &str, n: usize) -> ApiResult<Vec<String>> {
        self.record(tenant, name)?;
        Ok(self.get_running(tenant, name).map_or_else(Vec::new, |r| {
            let o = r.outputs.lock().unwrap_or_else(|e| e.into_inner());
            o.iter().skip(o.len().saturating_sub(n)).cloned().collect()
        }))
    }

    /// The job's events (started, swaps, stop, end) and recent guest logs.
    pub fn logs(&self, tenant: &str, name: &str) -> ApiResult<serde_json::Value> {
        self.record(tenant, name)?;
        Ok(match self.get_running(tenant, name) {
            Some(r) => serde_json::json!({
                "events": *r.events.lock().unwrap_or_else(|e| e.into_inner()),
                "guest": r.metrics.recent_logs(RECENT),
            }),
            None => serde_json::json!({"events": [], "guest": []}),
        })
    }

    /// Hot swap: job `name`'s plugin `plugin` (the spec's name for it) to
    /// the uploaded `to`, compiled here (off the batch path) and switched
    /// at a batch boundary; rolled back if it fails its first batch. Waits
    /// up to `wait` for the outcome: `Some(Ok(batch))` applied from that
    /// batch, `Some(Err(why))` refused or rolled back, `None` still pending
    /// (the job's record follows once it is applied).
    pub fn swap(
        self: &Arc<Self>,
        tenant: &str,
        name: &str,
        plugin: &str,
        to: &str,
        wait: Duration,
    ) -> ApiResult<Option<std::result::Result<u64, String>>> {
        self.record(tenant, name)?;
        let running = self
            .get_running(tenant, name)
            .filter(|r| r.is_running())
            .ok_or_else(|| ApiError::conflict(format!("job `{name}` is not running")))?;
        let current = running
            .plugins
            .get(plugin)
            .ok_or_else(|| ApiError::bad(format!("job `{name}` has no plugin `{plugin}`")))?;
        let (reference, path) = self.resolve_plugin(tenant, to)?;
        let new = Plugin::load_granted(
            &self.runtime,
            running.context.name(),
            plugin,
            &path,
            *current.limits(),
            current.capabilities().clone(),
        )
        .map_err(|e| ApiError::new(422, e.to_string()))?;
        let version = new.description().version.clone();
        let handle = running
            .context
            .swap_plugin(current, new)
            .map_err(|e| ApiError::new(422, e.to_string()))?;
        running.event(serde_json::json!({"event": "swap requested", "plugin": plugin, "to": reference, "version": version}));
        // Follow the outcome to the end, whoever waits for it.
        let follow = {
            let (events, handle, reference, plugin) = (
                running.events.clone(),
                handle.clone(),
                reference.clone(),
                plugin.to_string(),
            );
            let (tenant, name) = (tenant.to_string(), name.to_string());
            move |server: &Server| loop {
                match handle.wait(Duration::from_secs(3600)) {
                    Some(Ok(batch)) => {
                        push_event(
                            &events,
                            serde_json::json!({"event": "swapped", "plugin": plugin, "to": reference, "batch": batch}),
                        );
                        let mut p = server.persisted();
                        if let Some(j) = p
                            .tenants
                            .get_mut(&tenant)
                            .and_then(|t| t.jobs.get_mut(&name))
                        {
                            j.plugins.insert(plugin.clone(), reference.clone());
                        }
                        if let Err(e) = server.save(&p) {
                            tracing::error!("recording the swap of `{name}`: {e}");
                        }
                        break;
                    }
                    Some(Err(why)) => {
                        push_event(
                            &events,
                            serde_json::json!({"event": "swap rolled back", "plugin": plugin, "to": reference, "error": why}),
                        );
                        break;
                    }
                    None if server
                        .get_running(&tenant, &name)
                        .is_none_or(|r| !r.is_running()) =>
                    {
                        break;
                    }
                    None => {}
                }
            }
        };
        let outcome = handle.wait(wait);
        match outcome {
            Some(_) => follow(self),
            None => {
                // Keep following in the background.
                let me = self.clone();
                std::thread::spawn(move || follow(&me));
            }
        }
        Ok(outcome)
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

/// Collects what a `pprint` output prints, one batch per entry.
struct RecentText {
    ring: Arc<Mutex<VecDeque<String>>>,
    current: Vec<u8>,
}

impl std::io::Write for RecentText {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.current.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if self.current.is_empty() {
            return Ok(());
        }
        let text = String::from_utf8_lossy(&std::mem::take(&mut self.current)).into_owned();
        let mut ring = self.ring.lock().unwrap_or_else(|e| e.into_inner());
        if ring.len() == RECENT {
            ring.pop_front();
        }
        ring.push_back(text);
        Ok(())
    }
}

/// Stops a job whose tenant's job directories grow over the disk quota.
struct Quota {
    dir: PathBuf,
    tenant_dir: PathBuf,
    most: u64,
    stop: sluice::StopHandle,
    failure: Arc<Mutex<Option<String>>>,
    checked: std::time::Instant,
}

impl StreamingListener for Quota {
    fn on_batch_completed(&mut self, _info: &BatchInfo) {
        // At most once a second per job: walking the directories is not free.
        if self.checked.elapsed() < Duration::from_secs(1) {
            return;
        }
        self.checked = std::time::Instant::now();
        let used = dir_size(&self.tenant_dir);
        if used > self.most {
            let why = format!(
                "stopped: the tenant's job directories hold {used} bytes, over its disk quota of {} bytes ({} is this job's)",
                self.most,
                self.dir
                    .file_name()
                    .map_or(String::new(), |n| n.to_string_lossy().into_owned())
            );
            *self.failure.lock().unwrap_or_else(|e| e.into_inner()) = Some(why);
            self.stop.stop();
        }
    }
}
