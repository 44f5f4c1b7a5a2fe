//! Jobs: submitting, starting (with admission against the memory
//! reservation), inspecting, stopping and deleting them.

use crate::metrics::Metrics;
use crate::running::{Quota, RecentText, Running, push_event};
use crate::util::{check_name, check_relative, now_ms};
use crate::{ApiError, ApiResult, Desired, JobRecord, JobState, RECENT, Server, TenantLimits};
use sluice::spec::{self, Grants, Overrides, PprintTarget};
use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

impl Server {
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
        let name = job_name(spec_text)?;
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
            if let Err(e) = write_job_files(&dir, spec_text, &paths, files) {
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
        let overrides = self.job_overrides(tenant, &limits, &dir, plugin_paths, outputs.clone());
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
        let streams = crate::web::Streams::of(&job);
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
            context,
            plugins: job.plugins,
            streams,
            metrics,
            outputs,
            events,
            state,
            thread: Mutex::new(None),
            reservation,
        });
        self.admit(key, &running, name, workers, socket_buffers)?;
        running
            .event(serde_json::json!({"event": "started", "reserved_memory_bytes": reservation}));
        spawn_job_thread(&running, tenant, name, failure)?;
        tracing::info!(
            tenant,
            job = name,
            reserved_mib = reservation >> 20,
            "job started"
        );
        Ok(())
    }

    /// What a tenant's job is built with: confined to its directory and
    /// grants, its plugins' uploaded files, the tenant's limits and CPU
    /// share, and `pprint` collected into `outputs`.
    fn job_overrides(
        &self,
        tenant: &str,
        limits: &TenantLimits,
        dir: &Path,
        plugin_paths: BTreeMap<String, PathBuf>,
        outputs: Arc<Mutex<VecDeque<String>>>,
    ) -> Overrides {
        Overrides {
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
                    ring: outputs.clone(),
                    current: Vec::new(),
                })
            }))),
            runtime: Some(self.runtime.clone()),
            cpu_share: Some(self.share(tenant, limits.cpu_share)),
            ..Overrides::default()
        }
    }

    /// Registers `running` under `key` if the memory it reserves fits in
    /// what is left of the server's reservation.
    fn admit(
        &self,
        key: (String, String),
        running: &Arc<Running>,
        name: &str,
        workers: u64,
        socket_buffers: u64,
    ) -> ApiResult<()> {
        let reservation = running.reservation;
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
        all.insert(key, running.clone());
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

    pub(crate) fn get_running(&self, tenant: &str, name: &str) -> Option<Arc<Running>> {
        self.running()
            .get(&(tenant.to_string(), name.to_string()))
            .cloned()
    }

    pub(crate) fn record(&self, tenant: &str, name: &str) -> ApiResult<JobRecord> {
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

    /// `slice` of stream `stream` of the tenant's job `name` (bounds in the
    /// query of `uri`; see [`crate::web::Streams`]).
    pub fn slice(
        &self,
        tenant: &str,
        (name, stream): (&str, &str),
        uri: &axum::http::Uri,
    ) -> ApiResult<serde_json::Value> {
        self.record(tenant, name)?;
        let running = self.get_running(tenant, name).ok_or_else(|| {
            ApiError::not_found(format!("job `{name}` has not run since the server started"))
        })?;
        running.streams.slice(stream, uri)
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
}

/// Runs the job on its own thread, which records how it ends (`failure`:
/// why the server stopped it, if it did).
fn spawn_job_thread(
    running: &Running,
    tenant: &str,
    name: &str,
    failure: Arc<Mutex<Option<String>>>,
) -> ApiResult<()> {
    let (context, state) = (running.context.clone(), running.state.clone());
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
    Ok(())
}

/// The job's name: the spec's `[job] name`, checked.
fn job_name(spec_text: &str) -> ApiResult<String> {
    let parsed: toml::Value = toml::from_str(spec_text)
        .map_err(|e| ApiError::bad(format!("job.toml: {}", e.message())))?;
    let name = parsed
        .get("job")
        .and_then(|j| j.get("name"))
        .and_then(|n| n.as_str())
        .ok_or_else(|| ApiError::bad("job.toml: the server needs `[job] name`"))?
        .to_string();
    check_name("job", &name)?;
    Ok(name)
}

/// Writes a submitted job's spec and files (at `paths`, checked) into `dir`.
fn write_job_files(
    dir: &Path,
    spec_text: &str,
    paths: &[PathBuf],
    files: &BTreeMap<String, String>,
) -> std::io::Result<()> {
    std::fs::write(dir.join("job.toml"), spec_text)?;
    for (rel, content) in paths.iter().zip(files.values()) {
        let to = dir.join(rel);
        if let Some(parent) = to.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(to, content)?;
    }
    Ok(())
}
