//! Loading a job's plugins through its [`StreamingContext`]: the runtime a
//! context uses is attached to it, and plugins are loaded under the job's
//! name (their guest logs are tagged with it).

use crate::{Capabilities, Limits, Plugin, Runtime};
use sluice_core::{Result, StreamingContext};
use std::path::Path;
use std::sync::Arc;

/// The plugin methods of a [`StreamingContext`] (import it, or
/// `sluice::prelude::*`, to call them).
pub trait LoadPlugins: Sized {
    /// Uses `runtime` for plugins instead of the process-wide one
    /// ([`Runtime::shared`]).
    fn with_runtime(self, runtime: Arc<Runtime>) -> Self;

    /// The runtime this context loads plugins with.
    fn runtime(&self) -> Result<Arc<Runtime>>;

    /// Loads a plugin component, known in this job as `name`, with default limits.
    fn load_plugin(&self, name: &str, path: impl AsRef<Path>) -> Result<Arc<Plugin>> {
        self.load_plugin_with_limits(name, path, Limits::default())
    }

    /// Loads a plugin component with explicit sandbox limits.
    fn load_plugin_with_limits(
        &self,
        name: &str,
        path: impl AsRef<Path>,
        limits: Limits,
    ) -> Result<Arc<Plugin>>;

    /// Loads a plugin component with explicit sandbox limits and
    /// capabilities (a directory it may use, endpoints it may connect to).
    fn load_plugin_granted(
        &self,
        name: &str,
        path: impl AsRef<Path>,
        limits: Limits,
        capabilities: Capabilities,
    ) -> Result<Arc<Plugin>>;
}

impl LoadPlugins for StreamingContext {
    fn with_runtime(self, runtime: Arc<Runtime>) -> Self {
        self.with_extension(runtime)
    }

    fn runtime(&self) -> Result<Arc<Runtime>> {
        match self.extension::<Runtime>() {
            Some(r) => Ok(r),
            None => Runtime::shared(),
        }
    }

    fn load_plugin_with_limits(
        &self,
        name: &str,
        path: impl AsRef<Path>,
        limits: Limits,
    ) -> Result<Arc<Plugin>> {
        Plugin::load_for_job(&self.runtime()?, self.name(), name, path.as_ref(), limits)
    }

    fn load_plugin_granted(
        &self,
        name: &str,
        path: impl AsRef<Path>,
        limits: Limits,
        capabilities: Capabilities,
    ) -> Result<Arc<Plugin>> {
        Plugin::load_granted(
            &self.runtime()?,
            self.name(),
            name,
            path.as_ref(),
            limits,
            capabilities,
        )
    }
}
