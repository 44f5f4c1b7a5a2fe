//! Tenants: authentication, creation, tokens, limits, deletion and CPU
//! shares.

use crate::util::{check_name, new_token, same, token_hash};
use crate::{ApiError, ApiResult, Caller, Server, TenantLimits, TenantRecord};
use sluice::share::CpuShare;
use std::sync::Arc;
use std::time::Duration;

impl Server {
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

    pub(crate) fn limits(&self, tenant: &str) -> ApiResult<TenantLimits> {
        self.persisted()
            .tenants
            .get(tenant)
            .map(|t| t.limits.clone())
            .ok_or_else(|| ApiError::not_found(format!("no tenant `{tenant}`")))
    }

    pub(crate) fn share(&self, tenant: &str, cores: f64) -> Arc<CpuShare> {
        let mut shares = self.shares.lock().unwrap_or_else(|e| e.into_inner());
        let s = shares
            .entry(tenant.to_string())
            .or_insert_with(|| Arc::new(CpuShare::new(cores)));
        if (s.cores() - cores).abs() > f64::EPSILON {
            *s = Arc::new(CpuShare::new(cores));
        }
        s.clone()
    }
}
