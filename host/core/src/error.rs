//! Errors that say whose fault they are and carry their context.

use crate::time::BatchTime;
use std::path::PathBuf;
use std::time::Duration;

/// Result with the crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Whose fault an error is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Domain {
    /// The job spec or library call is wrong; fix the input.
    User,
    /// A plugin misbehaved; fix or replace the plugin.
    Plugin,
    /// The outside world failed (disk, network); may succeed on retry.
    External,
    /// A bug in Sluice.
    Internal,
}

/// What went wrong inside a plugin call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PluginFault {
    /// The guest trapped (panic, unreachable, bad memory access) on both attempts.
    Trap {
        /// The guest's last error line (its panic message) or the trap itself.
        message: String,
    },
    /// The call ran past its deadline on both attempts.
    Deadline {
        /// The deadline that was exceeded.
        deadline: Duration,
    },
    /// The guest tried to grow its memory past the cap on both attempts.
    Memory {
        /// The cap, in bytes.
        limit: u64,
    },
    /// The call returned more bytes than allowed.
    OutputTooLarge {
        /// Bytes returned.
        bytes: u64,
        /// The cap, in bytes.
        limit: u64,
    },
    /// The call returned a malformed batch (bad offsets, invalid MessagePack,
    /// wrong element count).
    BadOutput {
        /// What is wrong.
        message: String,
    },
    /// The function refused its input with a typed error.
    Refused {
        /// The plugin's error kind (`invalid-input`, `failed`, ...).
        kind: String,
        /// The plugin's message.
        message: String,
        /// Index of the element at fault within the partition-batch, when known.
        element: Option<u64>,
    },
}

impl std::fmt::Display for PluginFault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PluginFault::Trap { message } => write!(f, "trapped (also on retry): {message}"),
            PluginFault::Deadline { deadline } => write!(
                f,
                "exceeded its {} ms call deadline (also on retry)",
                deadline.as_millis()
            ),
            PluginFault::Memory { limit } => write!(
                f,
                "exceeded its memory limit of {} MiB (also on retry)",
                limit >> 20
            ),
            PluginFault::OutputTooLarge { bytes, limit } => write!(
                f,
                "returned {bytes} bytes, over its output limit of {limit} bytes"
            ),
            PluginFault::BadOutput { message } => {
                write!(f, "returned a malformed batch: {message}")
            }
            PluginFault::Refused {
                kind,
                message,
                element,
            } => match element {
                Some(i) => write!(f, "refused element {i} ({kind}): {message}"),
                None => write!(f, "failed ({kind}): {message}"),
            },
        }
    }
}

/// Everything that can go wrong in Sluice.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A plugin file could not be loaded (not a component, too large, does not
    /// implement `sluice:plugin`, fails to compile or describe itself).
    #[error("plugin `{plugin}` ({path}): {message}")]
    PluginLoad {
        /// Plugin name in the job.
        plugin: String,
        /// Component file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A plugin function failed while processing a batch.
    #[error(
        "plugin `{plugin}` function `{function}` at batch {batch}, partition {partition}: {fault}"
    )]
    Plugin {
        /// Plugin name in the job.
        plugin: String,
        /// Function name.
        function: String,
        /// Batch being processed.
        batch: BatchTime,
        /// Partition being processed.
        partition: u32,
        /// What happened (boxed: keeps `Error` small on the happy path).
        fault: Box<PluginFault>,
    },
    /// A job spec is invalid.
    #[error("{path}:{line}: {field}: {message}")]
    Spec {
        /// Spec file.
        path: PathBuf,
        /// 1-based line of the offending item (0 when unknown).
        line: usize,
        /// The field or item at fault, e.g. `streams.words.function`.
        field: String,
        /// What is wrong.
        message: String,
    },
    /// The stream graph built through the library API is invalid.
    #[error("invalid job: {0}")]
    Plan(String),
    /// An element does not fit the operation applied to it.
    #[error("stream `{stream}` at batch {batch}: {message}")]
    Element {
        /// The stream whose operation failed.
        stream: String,
        /// The batch.
        batch: BatchTime,
        /// What is wrong, naming the element.
        message: String,
    },
    /// An input file is invalid.
    #[error("{path}: {message}")]
    Input {
        /// The file.
        path: PathBuf,
        /// What is wrong, with a line or element where known.
        message: String,
    },
    /// A source cannot go on: its server refused it, its stream is
    /// missing, or records a batch must re-read are gone.
    #[error("source `{name}`: {message}")]
    Source {
        /// The source, as the job names it.
        name: String,
        /// What is wrong, naming the server, stream or records.
        message: String,
    },
    /// An I/O operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done, naming the file or address.
        what: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A bug in Sluice.
    #[error("internal error: {0}")]
    Internal(String),
}

impl Error {
    /// Whose fault the error is.
    pub fn domain(&self) -> Domain {
        match self {
            Error::PluginLoad { .. } | Error::Plugin { .. } => Domain::Plugin,
            Error::Spec { .. } | Error::Plan(_) | Error::Input { .. } | Error::Element { .. } => {
                Domain::User
            }
            Error::Io { .. } | Error::Source { .. } => Domain::External,
            Error::Internal(_) => Domain::Internal,
        }
    }

    /// Whether this is a refusal (credentials, permissions): trying again
    /// does not mend it.
    pub fn is_refusal(&self) -> bool {
        matches!(self, Error::Io { source, .. } if source.kind() == std::io::ErrorKind::PermissionDenied)
    }

    /// An I/O error with what was being done.
    pub fn io(what: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            what: what.into(),
            source,
        }
    }
}
