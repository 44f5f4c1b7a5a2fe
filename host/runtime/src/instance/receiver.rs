//! Custom receivers: a plugin function of kind `receiver` as a job's
//! source. Each runs on a receiver thread of its own, in an instance of its
//! own (never pooled; its clocks are the host's), and feeds core's
//! [`LineSource`]: what a poll returns is pushed into the source's buffer
//! (which holds a fast receiver back under backpressure and the rate limit),
//! made durable there (the write-ahead log, when the job checkpoints), and
//! only then acknowledged to the guest, which may acknowledge it to its own
//! source.
//!
//! Every call has the plugin's deadline and memory cap. A trap (a panic, a
//! loop past the deadline, the memory cap) discards the instance: the error
//! is reported to the job's listeners and a fresh instance is started after
//! a pause that doubles up to [`MAX_PAUSE`]. A typed error from `poll` or
//! `ack` is reported and the call repeated after the pause; an
//! `invalid-input` error from `start` (a missing or bad setting) stops the
//! job, naming the source's function.

use super::Plugin;
use super::store::{Clocks, Instance};
use crate::bindings::{PluginError, ReceiverExport, WitErrorKind};
use sluice_core::error::{Error, PluginFault, Result};
use sluice_core::receiver::socket::LineSink;
use sluice_core::receiver::{LineSource, Receiver};
use sluice_core::time::BatchTime;
use sluice_sdk::Kind;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

/// Most records one poll may return.
pub const MAX_RECORDS_PER_POLL: u32 = 4096;
/// Longest a poll is asked to wait for a first record (at most a quarter
/// of the plugin's deadline).
pub const POLL_WAIT: Duration = Duration::from_millis(100);
/// Longest pause before a failed call is tried again.
pub const MAX_PAUSE: Duration = Duration::from_secs(5);
const FIRST_PAUSE: Duration = Duration::from_millis(100);

/// How a receiver call went wrong.
enum Failure {
    /// A typed error from the guest.
    Refused(PluginError),
    /// A trap, or output over the limit: the instance is discarded.
    Fault(PluginFault),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Refused(e) => f.write_str(&e.message),
            Failure::Fault(fault) => write!(f, "{fault}"),
        }
    }
}

/// What the receiver thread and its [`Running`] handle share.
#[derive(Default)]
struct Shared {
    stop: AtomicBool,
    errors: Mutex<Vec<String>>,
    failed: Mutex<Option<String>>,
}

impl Shared {
    fn stopping(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    fn error(&self, message: String) {
        tracing::warn!("{message}");
        let mut errors = self.errors.lock().unwrap_or_else(|e| e.into_inner());
        // Listeners that never ask keep at most the latest hundred.
        if errors.len() >= 100 {
            errors.remove(0);
        }
        errors.push(message);
    }

    /// Sleeps `pause` (cut short by a stop), then doubles it up to [`MAX_PAUSE`].
    fn pause(&self, pause: &mut Duration) {
        let until = Instant::now() + *pause;
        while !self.stopping() && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(10).min(until - Instant::now()));
        }
        *pause = (*pause * 2).min(MAX_PAUSE);
    }
}

/// A receiver plugin's thread, as core's [`LineSource`] holds it.
struct Running {
    shared: Arc<Shared>,
    done: mpsc::Receiver<()>,
    thread: Option<std::thread::JoinHandle<()>>,
    what: String,
    /// How long a call may keep the thread from seeing a stop.
    grace: Duration,
}

impl Receiver for Running {
    fn stop(mut self: Box<Self>) {
        self.shared.stop.store(true, Ordering::Relaxed);
        // A guest blocked in a read without a timeout cannot be interrupted
        // (the deadline counts running code): the thread is then left to
        // end on its own rather than holding up the job's stop.
        match self.done.recv_timeout(self.grace) {
            Ok(()) | Err(mpsc::RecvTimeoutError::Disconnected) => {
                if let Some(t) = self.thread.take() {
                    let _ = t.join();
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => tracing::warn!(
                "{}: still inside a call {:?} after the stop (blocked without a timeout?); not waiting for it",
                self.what,
                self.grace
            ),
        }
    }

    fn take_errors(&self) -> Vec<String> {
        std::mem::take(&mut *self.shared.errors.lock().unwrap_or_else(|e| e.into_inner()))
    }

    fn failed(&self) -> Option<String> {
        self.shared
            .failed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

impl Plugin {
    /// A source of the records that this plugin's receiver `function`
    /// receives once started with `settings`: in `partitions` partitions
    /// (more for a large batch), at most `max_rate` records/s and about
    /// `max_bytes` held unbatched (`limits`). With checkpoints, every record
    /// is in the write-ahead log before the guest's `ack`.
    pub fn receiver_source(
        self: &Arc<Self>,
        function: &str,
        settings: Vec<(String, String)>,
        partitions: usize,
        limits: (Option<f64>, usize),
    ) -> Result<LineSource> {
        self.receiver_index(function)?;
        let what = format!("receiver {}.{function}", self.name);
        let plugin = Arc::clone(self);
        let function = function.to_string();
        let label = what.clone();
        let grace = POLL_WAIT + 2 * self.limits.call_deadline + Duration::from_secs(1);
        Ok(LineSource::new(
            &what,
            partitions,
            limits,
            Box::new(move |sink| {
                let shared = Arc::new(Shared::default());
                let (done_tx, done) = mpsc::channel();
                let thread = {
                    let shared = shared.clone();
                    let what = label.clone();
                    std::thread::Builder::new()
                        .name(format!("sluice-{what}"))
                        .spawn(move || {
                            run(&plugin, &function, &settings, &*sink, &shared, &what);
                            let _ = done_tx.send(());
                        })?
                };
                Ok(Box::new(Running {
                    shared,
                    done,
                    thread: Some(thread),
                    what: label,
                    grace,
                }) as Box<dyn Receiver>)
            }),
        ))
    }

    /// The index of receiver `function`, or why the job cannot use it.
    fn receiver_index(&self, function: &str) -> Result<u32> {
        let receivers = || {
            let names: Vec<&str> = (self.description.functions.iter())
                .filter(|f| f.kind == Kind::Receiver)
                .map(|f| f.name.as_str())
                .collect();
            if names.is_empty() {
                "it has none".to_string()
            } else {
                format!("its receivers: {}", names.join(", "))
            }
        };
        match self.function(function) {
            Some((index, f)) if f.kind == Kind::Receiver && self.receives() => Ok(index),
            Some((_, f)) if f.kind == Kind::Receiver => Err(Error::Plan(format!(
                "plugin `{}` describes receiver `{function}` but does not export sluice:plugin/receiver (build it for the receiver-plugin or full-plugin world)",
                self.name
            ))),
            Some((_, f)) => Err(Error::Plan(format!(
                "`{}.{function}` is a {} function, not a receiver ({})",
                self.name,
                f.kind,
                receivers()
            ))),
            None => Err(Error::Plan(format!(
                "plugin `{}` has no function `{function}` ({})",
                self.name,
                receivers()
            ))),
        }
    }

    /// One call of the `receiver` export on `inst`, with the deadline,
    /// accounting and guest logs every call has.
    fn receiver_call<T>(
        &self,
        inst: &mut Instance,
        index: u32,
        call: impl FnOnce(
            &ReceiverExport,
            &mut wasmtime::Store<super::StoreState>,
        ) -> wasmtime::Result<std::result::Result<T, PluginError>>,
    ) -> std::result::Result<T, Failure> {
        inst.store.data_mut().limiter.hit = false;
        inst.begin_call();
        let started = Instant::now();
        let result = match inst.receiver.as_ref() {
            Some(export) => call(export, &mut inst.store),
            None => Err(wasmtime::format_err!(
                "the instance has no `receiver` export"
            )),
        };
        inst.store.data_mut().call.end();
        self.account(
            &[index],
            started.elapsed().as_nanos() as u64,
            result.is_err(),
        );
        let now = BatchTime(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as i64),
        );
        let last_error = self.flush_logs(inst, &self.function_name(index), now);
        match result {
            Ok(Ok(out)) => Ok(out),
            Ok(Err(e)) => Err(Failure::Refused(e)),
            Err(trap) => {
                self.stats.traps.fetch_add(1, Ordering::Relaxed);
                let memory_hit = inst.store.data().limiter.hit;
                Err(Failure::Fault(
                    self.trap_fault(&trap, memory_hit, last_error),
                ))
            }
        }
    }
}

/// The receiver thread: starts an instance, polls it, stores what it
/// returns, acknowledges, and starts a fresh instance after a trap, until
/// the source stops.
fn run(
    plugin: &Arc<Plugin>,
    function: &str,
    settings: &[(String, String)],
    sink: &dyn LineSink,
    shared: &Shared,
    what: &str,
) {
    let mut pause = FIRST_PAUSE;
    while !shared.stopping() {
        // A hot swap takes effect at the next instance.
        let plugin = plugin.live();
        let index = match plugin.receiver_index(function) {
            Ok(i) => i,
            Err(e) => {
                *shared.failed.lock().unwrap_or_else(|e| e.into_inner()) = Some(e.to_string());
                return;
            }
        };
        let mut inst = match plugin.instantiate_with(Clocks::Host) {
            Ok(i) => i,
            Err(m) => {
                shared.error(format!("{what}: cannot instantiate the plugin: {m}"));
                shared.pause(&mut pause);
                continue;
            }
        };
        match plugin.receiver_call(&mut inst, index, |r, s| r.call_start(s, index, settings)) {
            Ok(()) => {}
            Err(Failure::Refused(e)) if e.kind == WitErrorKind::InvalidInput => {
                let message = format!("{what}: cannot start: {}", e.message);
                tracing::error!("{message}");
                *shared.failed.lock().unwrap_or_else(|e| e.into_inner()) = Some(message);
                return;
            }
            Err(f) => {
                shared.error(format!("{what}: cannot start: {f}"));
                match f {
                    // Told to stop, as it may have connected.
                    Failure::Refused(_) => discard(&plugin, inst, index),
                    // Trapped: it cannot be called again.
                    Failure::Fault(_) => sluice_core::share::hold_processor(|| drop(inst)),
                }
                shared.pause(&mut pause);
                continue;
            }
        }
        match receive(&plugin, &mut inst, index, sink, shared, what, &mut pause) {
            // Stopped: the guest closes its connections.
            Ok(()) => discard(&plugin, inst, index),
            Err(f) => {
                shared.error(format!("{what}: {f}; starting a fresh instance"));
                sluice_core::share::hold_processor(|| drop(inst));
                shared.pause(&mut pause);
            }
        }
    }
}

/// Polls `inst` until the source stops (`Ok`) or a call faults (the
/// instance is then unusable).
fn receive(
    plugin: &Plugin,
    inst: &mut Instance,
    index: u32,
    sink: &dyn LineSink,
    shared: &Shared,
    what: &str,
    pause: &mut Duration,
) -> std::result::Result<(), Failure> {
    let wait = POLL_WAIT.min(plugin.limits.call_deadline / 4);
    let wait_ms = wait.as_millis() as u32;
    while !shared.stopping() {
        let started = Instant::now();
        let records = match plugin.receiver_call(inst, index, |r, s| {
            r.call_poll(s, MAX_RECORDS_PER_POLL, wait_ms)
        }) {
            Ok(records) => records,
            Err(Failure::Refused(e)) => {
                shared.error(format!("{what}: poll failed: {}", e.message));
                shared.pause(pause);
                continue;
            }
            Err(fault) => return Err(fault),
        };
        if records.is_empty() {
            // A guest that does not wait is not polled in a busy loop.
            if started.elapsed() < wait / 2 {
                std::thread::sleep(wait / 2);
            }
            continue;
        }
        let bytes: u64 = records.iter().map(|r| r.len() as u64 + 1).sum();
        if records.len() > MAX_RECORDS_PER_POLL as usize || bytes > plugin.limits.output_bytes {
            return Err(Failure::Fault(PluginFault::OutputTooLarge {
                bytes,
                limit: plugin.limits.output_bytes,
            }));
        }
        let lines: Vec<&str> = records.iter().flat_map(|r| r.split('\n')).collect();
        // Waits for room (backpressure) and for the rate limit's tokens.
        sink.push_lines(&lines);
        // Not acknowledged until stored: a stop now leaves the guest's
        // source to send them again.
        while !sink.flush() {
            if shared.stopping() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        match plugin.receiver_call(inst, index, |r, s| r.call_ack(s)) {
            Ok(()) => *pause = FIRST_PAUSE,
            Err(Failure::Refused(e)) => {
                shared.error(format!("{what}: ack failed: {}", e.message));
            }
            Err(fault) => return Err(fault),
        }
    }
    Ok(())
}

/// Tells a live instance to stop (closing its connections), then drops it.
fn discard(plugin: &Plugin, mut inst: Instance, index: u32) {
    let _ = plugin.receiver_call(&mut inst, index, |r, s| r.call_stop(s).map(Ok));
    sluice_core::share::hold_processor(|| drop(inst));
}
