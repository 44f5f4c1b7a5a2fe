//! Hot swaps of a running job's plugins, and following their outcome.

use crate::running::push_event;
use crate::{ApiError, ApiResult, Server};
use sluice::SwapHandle;
use sluice::plugin::Plugin;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

impl Server {
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
            move |server: &Server| {
                follow_swap(
                    server, &events, &handle, &tenant, &name, &plugin, &reference,
                )
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
}

/// Waits for a hot swap's outcome and records it: an event, and the job's
/// plugin reference once it is applied. Gives up if the job stops.
fn follow_swap(
    server: &Server,
    events: &Mutex<VecDeque<serde_json::Value>>,
    handle: &SwapHandle,
    tenant: &str,
    name: &str,
    plugin: &str,
    reference: &str,
) {
    loop {
        match handle.wait(Duration::from_secs(3600)) {
            Some(Ok(batch)) => {
                push_event(
                    events,
                    serde_json::json!({"event": "swapped", "plugin": plugin, "to": reference, "batch": batch}),
                );
                let mut p = server.persisted();
                if let Some(j) = p.tenants.get_mut(tenant).and_then(|t| t.jobs.get_mut(name)) {
                    j.plugins.insert(plugin.to_string(), reference.to_string());
                }
                if let Err(e) = server.save(&p) {
                    tracing::error!("recording the swap of `{name}`: {e}");
                }
                break;
            }
            Some(Err(why)) => {
                push_event(
                    events,
                    serde_json::json!({"event": "swap rolled back", "plugin": plugin, "to": reference, "error": why}),
                );
                break;
            }
            None if server
                .get_running(tenant, name)
                .is_none_or(|r| !r.is_running()) =>
            {
                break;
            }
            None => {}
        }
    }
}
