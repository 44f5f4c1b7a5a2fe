//! The audit log, `DATA/audit.jsonl`: one JSON line per call that changes
//! something (every `POST`, `PUT` and `DELETE`: tenants, limits, tokens,
//! plugins, jobs, swaps) and per refused call (401, 403, 413, 429), with
//! who made it (`admin`, `tenant:NAME` or `unknown`), from where, what and
//! the answer's status. Query strings are left out (they may carry a
//! token). The admin reads it with `GET /api/audit`.

use crate::util::now_ms;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// One audited call.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, PartialEq)]
pub struct AuditEntry {
    /// When it was answered, ms since the epoch.
    pub time_ms: i64,
    /// `admin`, `tenant:NAME`, or `unknown` (no valid token).
    pub who: String,
    /// The client's address.
    pub peer: String,
    /// HTTP method.
    pub method: String,
    /// The path, without its query.
    pub path: String,
    /// The answer's HTTP status.
    pub status: u16,
}

/// The audit log file, appended to by one writer at a time.
#[derive(Debug)]
pub(crate) struct AuditLog {
    path: PathBuf,
    file: Mutex<Option<std::fs::File>>,
}

impl AuditLog {
    pub(crate) fn new(data_dir: &Path) -> AuditLog {
        AuditLog {
            path: data_dir.join("audit.jsonl"),
            file: Mutex::new(None),
        }
    }

    /// Appends an entry for a call answered now. A log that cannot be
    /// written is reported and the call's answer stands.
    pub(crate) fn record(&self, who: String, peer: String, method: &str, path: &str, status: u16) {
        let entry = AuditEntry {
            time_ms: now_ms(),
            who,
            peer,
            method: method.to_string(),
            path: path.to_string(),
            status,
        };
        let mut line = serde_json::to_vec(&entry).unwrap_or_default();
        line.push(b'\n');
        let mut file = self.file.lock().unwrap_or_else(|e| e.into_inner());
        if file.is_none() {
            *file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.path)
                .map_err(|e| tracing::error!("audit log {}: {e}", self.path.display()))
                .ok();
        }
        if let Some(f) = file.as_mut()
            && let Err(e) = f.write_all(&line)
        {
            tracing::error!("audit log {}: {e}", self.path.display());
            *file = None;
        }
    }

    /// The last `n` entries, oldest first.
    pub(crate) fn tail(&self, n: usize) -> Result<Vec<AuditEntry>, String> {
        let text = match std::fs::read_to_string(&self.path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(format!("reading {}: {e}", self.path.display())),
        };
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..]
            .iter()
            .enumerate()
            .map(|(i, l)| {
                serde_json::from_str(l).map_err(|e| {
                    format!(
                        "{} line {}: {e}",
                        self.path.display(),
                        lines.len().saturating_sub(n) + i + 1
                    )
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_are_appended_and_read_back_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let log = AuditLog::new(dir.path());
        assert_eq!(log.tail(10).unwrap(), []);
        for (i, status) in [200, 401, 429].into_iter().enumerate() {
            log.record(
                format!("tenant:t{i}"),
                "127.0.0.1:1".into(),
                "POST",
                "/api/jobs",
                status,
            );
        }
        let got: Vec<(String, u16)> = (log.tail(2).unwrap().into_iter())
            .map(|e| (e.who, e.status))
            .collect();
        assert_eq!(got, [("tenant:t1".into(), 401), ("tenant:t2".into(), 429)]);
        std::fs::write(dir.path().join("audit.jsonl"), "{\"bad\n").unwrap();
        let e = log.tail(5).unwrap_err();
        assert!(e.contains("audit.jsonl line 1"), "{e}");
    }
}
