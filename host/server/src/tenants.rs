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
        // Hashes of equal length, compared without stopping at the first
        // difference: the time taken tells nothing about the token.
        let hash = token_hash(token);
        if self.admin_hash.as_ref().is_some_and(|h| same(h, &hash)) {
            return Some(Caller::Admin);
        }
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
        self.allowances
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(name);
        let _ = std::fs::remove_dir_all(self.tenant_dir(name));
        Ok(())
    }

    /// The tenants' names.
    pub fn tenant_names(&self) -> Vec<String> {
        self.persisted().tenants.keys().cloned().collect()
    }

    pub(crate) fn limits(&self, tenant: &str) -> ApiResult<TenantLimits> {
        self.persisted()
            .tenants
            .get(tenant)
            .map(|t| t.limits.clone())
            .ok_or_else(|| ApiError::not_found(format!("no tenant `{tenant}`")))
    }

    /// Takes one API call from `tenant`'s allowance ([`TenantLimits::api_rate`]
    /// per second, up to [`TenantLimits::api_burst`] at once), or refuses
    /// it with 429 and when to try again.
    pub(crate) fn take_call(&self, tenant: &str) -> ApiResult<()> {
        let limits = self.limits(tenant)?;
        let mut allowances = self.allowances.lock().unwrap_or_else(|e| e.into_inner());
        let allowance = allowances
            .entry(tenant.to_string())
            .or_insert_with(|| Allowance::full(&limits));
        allowance.take(&limits, std::time::Instant::now()).map_err(|wait| {
            let mut e = ApiError::new(
                429,
                format!(
                    "too many requests: tenant `{tenant}` may make {} calls/s ({} at once); retry in {} ms",
                    limits.api_rate,
                    limits.api_burst,
                    wait.as_millis()
                ),
            );
            e.retry_after = Some(wait);
            e
        })
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

/// A tenant's API calls left (a token bucket).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Allowance {
    calls: f64,
    at: std::time::Instant,
}

impl Allowance {
    fn full(limits: &TenantLimits) -> Allowance {
        Allowance {
            calls: f64::from(limits.api_burst),
            at: std::time::Instant::now(),
        }
    }

    /// Takes a call at `now`, or says how long until one is left.
    fn take(&mut self, limits: &TenantLimits, now: std::time::Instant) -> Result<(), Duration> {
        let earned = now.saturating_duration_since(self.at).as_secs_f64() * limits.api_rate;
        self.calls = (self.calls + earned).min(f64::from(limits.api_burst));
        self.at = now;
        if self.calls >= 1.0 {
            self.calls -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64(
                (1.0 - self.calls) / limits.api_rate,
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_allowance_gives_its_burst_then_its_rate() {
        let limits = TenantLimits {
            api_rate: 10.0,
            api_burst: 3,
            ..TenantLimits::default()
        };
        let mut a = Allowance::full(&limits);
        let t0 = a.at;
        for _ in 0..3 {
            assert_eq!(a.take(&limits, t0), Ok(()));
        }
        let wait = a.take(&limits, t0).unwrap_err();
        assert_eq!(wait, Duration::from_millis(100));
        // 100 ms later one more call, and no more.
        let t1 = t0 + Duration::from_millis(100);
        assert_eq!(a.take(&limits, t1), Ok(()));
        assert!(a.take(&limits, t1).is_err());
        // Idle for long: the burst again, not more.
        let t2 = t1 + Duration::from_secs(60);
        for _ in 0..3 {
            assert_eq!(a.take(&limits, t2), Ok(()));
        }
        assert!(a.take(&limits, t2).is_err());
    }
}
