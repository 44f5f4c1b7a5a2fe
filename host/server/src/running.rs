//! A job running in this server process ([`Running`]), its event log,
//! what its `pprint` outputs print ([`RecentText`]) and its disk quota
//! ([`Quota`]).

use crate::metrics::Metrics;
use crate::util::{dir_size, now_ms};
use crate::{JobState, RECENT};
use sluice::plugin::Plugin;
use sluice::{BatchInfo, StreamingContext, StreamingListener};
use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A job running (or run) in this server process.
pub(crate) struct Running {
    pub(crate) context: Arc<StreamingContext>,
    pub(crate) plugins: BTreeMap<String, Arc<Plugin>>,
    /// Its streams, for `slice`.
    pub(crate) streams: crate::web::Streams,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) outputs: Arc<Mutex<VecDeque<String>>>,
    pub(crate) events: Arc<Mutex<VecDeque<serde_json::Value>>>,
    pub(crate) state: Arc<Mutex<JobState>>,
    pub(crate) thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    pub(crate) reservation: u64,
}

impl Running {
    pub(crate) fn state(&self) -> JobState {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
    pub(crate) fn is_running(&self) -> bool {
        self.state() == JobState::Running
    }
    pub(crate) fn event(&self, what: serde_json::Value) {
        push_event(&self.events, what);
    }
    pub(crate) fn stop_and_join(&self) {
        self.context.stop_handle().stop();
        let thread = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(t) = thread {
            let _ = t.join();
        }
    }
}

pub(crate) fn push_event(events: &Mutex<VecDeque<serde_json::Value>>, mut what: serde_json::Value) {
    if let Some(o) = what.as_object_mut() {
        o.insert("time_ms".to_string(), now_ms().into());
    }
    let mut e = events.lock().unwrap_or_else(|e| e.into_inner());
    if e.len() == RECENT {
        e.pop_front();
    }
    e.push_back(what);
}

/// Collects what a `pprint` output prints, one batch per entry.
pub(crate) struct RecentText {
    pub(crate) ring: Arc<Mutex<VecDeque<String>>>,
    pub(crate) current: Vec<u8>,
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
pub(crate) struct Quota {
    pub(crate) dir: PathBuf,
    pub(crate) tenant_dir: PathBuf,
    pub(crate) most: u64,
    pub(crate) stop: sluice::StopHandle,
    pub(crate) failure: Arc<Mutex<Option<String>>>,
    pub(crate) checked: std::time::Instant,
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
