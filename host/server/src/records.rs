//! What the server records about plugins and jobs, who calls it, and the
//! job states its API shows.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

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
