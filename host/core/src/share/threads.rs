//! The threads of one job and the CPU time they use (the kernel's
//! per-thread accounting).

use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

/// The threads of one job, and the CPU time they have used.
#[derive(Debug, Default)]
pub(crate) struct ThreadGroup {
    /// Each thread's id and `schedstat` file.
    threads: Mutex<Vec<(i32, PathBuf)>>,
    /// CPU time (ns) plugin calls charged as they ran during the current turn.
    pub(super) precharged: AtomicU64,
}

impl ThreadGroup {
    /// Adds the calling thread.
    pub(crate) fn join_current(&self) {
        static WARNED: AtomicBool = AtomicBool::new(false);
        match std::fs::read_link("/proc/thread-self") {
            Ok(link) => {
                // "<pid>/task/<tid>"
                let tid = link
                    .file_name()
                    .and_then(|t| t.to_str()?.parse().ok())
                    .unwrap_or(0);
                let stat = PathBuf::from("/proc").join(link).join("schedstat");
                self.threads
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push((tid, stat));
            }
            Err(e) => {
                if !WARNED.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        "CPU shares limit parallelism only: no per-thread CPU accounting ({e})"
                    );
                }
            }
        }
    }

    /// The threads' ids.
    pub(super) fn tids(&self) -> Vec<i32> {
        let threads = self.threads.lock().unwrap_or_else(|e| e.into_inner());
        threads.iter().map(|(t, _)| *t).filter(|t| *t > 0).collect()
    }

    /// CPU time used so far by the group's live threads.
    pub(crate) fn cpu_time(&self) -> Duration {
        let threads = self.threads.lock().unwrap_or_else(|e| e.into_inner());
        let nanos: u64 = threads
            .iter()
            .filter_map(|(_, p)| std::fs::read_to_string(p).ok())
            .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
            .sum();
        Duration::from_nanos(nanos)
    }
}
