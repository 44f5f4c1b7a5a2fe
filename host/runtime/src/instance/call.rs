//! Calling a plugin: on a pooled instance, retried once on a fresh one
//! after a trap, with the accounting, guest logs and output checks every
//! call has.

use super::store::{GuestLogs, Instance};
use super::{GuestLogLine, Plugin, RECENT_LOG_LINES};
use crate::bindings::{self, CallContext, CallInput, CallOutput, LogLevel, PluginError, WitColumn};
use sluice_core::error::{Error, PluginFault, Result};
use sluice_core::time::BatchTime;
use std::sync::atomic::Ordering;
use std::time::Instant;

impl Plugin {
    /// Calls function `index` on one partition-batch: on a pooled instance,
    /// retried once on a fresh instance after a trap. Typed errors are not
    /// retried. Checks the output size (but not its shape: see the caller).
    pub(super) fn invoke_wit(
        &self,
        index: u32,
        ctx: CallContext,
        input: &CallInput,
    ) -> Result<CallOutput> {
        self.call(&[index], ctx, output_bytes, |inst, ctx| {
            let out = inst.plugin.sluice_plugin_operator().call_invoke(
                &mut inst.store,
                index,
                ctx,
                input,
            )?;
            Ok(out.map_err(|e| (0, e)))
        })
    }

    /// Calls the map and flat-map functions `indices` in turn on `values`
    /// (elements without keys), in one call of the component's `chain`
    /// export: the last one's values, and how many elements each produced.
    /// Retried and checked as [`Guest::invoke`]; a typed error names the
    /// function that returned it, a trap the whole chain.
    pub(super) fn invoke_chain_wit(
        &self,
        indices: &[u32],
        ctx: CallContext,
        values: &WitColumn,
    ) -> Result<bindings::ChainOutput> {
        if self.chain.is_none() || indices.is_empty() {
            return Err(Error::Internal(format!(
                "plugin `{}` cannot chain {}",
                self.name,
                self.functions_name(indices)
            )));
        }
        let size = |o: &bindings::ChainOutput| column_bytes(&o.values);
        self.call(indices, ctx, size, |inst, ctx| {
            let chain = inst
                .chain
                .as_ref()
                .ok_or_else(|| wasmtime::format_err!("the instance has no `chain` export"))?;
            let out = chain.call_invoke_chain(&mut inst.store, indices, ctx, values)?;
            Ok(out.map_err(|e| (e.position, e.error)))
        })
    }

    /// The functions `indices` as errors and logs name them: `split`, or
    /// `split → pair` for a chain.
    pub(super) fn functions_name(&self, indices: &[u32]) -> String {
        indices
            .iter()
            .map(|&i| self.function_name(i))
            .collect::<Vec<_>>()
            .join(" → ")
    }

    /// One call of `functions` (`run` makes it) with the pooling, retry,
    /// accounting, log and output checks every call has. `run`'s typed error
    /// carries the position in `functions` of the function at fault.
    fn call<T>(
        &self,
        functions: &[u32],
        mut ctx: CallContext,
        size: impl Fn(&T) -> u64,
        mut run: impl FnMut(
            &mut Instance,
            CallContext,
        ) -> wasmtime::Result<std::result::Result<T, (u32, PluginError)>>,
    ) -> Result<T> {
        let batch = BatchTime(ctx.batch_time_ms);
        let partition = ctx.partition;
        let name = self.functions_name(functions);
        let fail = |function: &str, fault: PluginFault| Error::Plugin {
            plugin: self.name.clone(),
            function: function.to_string(),
            batch,
            partition,
            fault: Box::new(fault),
        };
        let mut last_fault = None;
        for attempt in 0..2u32 {
            ctx.attempt = attempt;
            let popped = self.pool_mut().pop();
            let mut inst = match popped {
                Some(i) => i,
                None => self.instantiate().map_err(|m| {
                    fail(
                        &name,
                        PluginFault::Trap {
                            message: format!("cannot instantiate: {m}"),
                        },
                    )
                })?,
            };
            inst.clock.store(ctx.batch_time_ms, Ordering::Relaxed);
            inst.store.data_mut().limiter.hit = false;
            inst.begin_call();
            let started = Instant::now();
            let result = run(&mut inst, ctx);
            inst.store.data_mut().call.end();
            let nanos = started.elapsed().as_nanos() as u64;
            self.account(functions, nanos, result.is_err());
            let last_error = self.flush_logs(&mut inst, &name, batch);
            match result {
                Ok(Ok(out)) => {
                    self.pool_mut().push(inst);
                    let bytes = size(&out);
                    if bytes > self.limits.output_bytes {
                        return Err(fail(
                            &name,
                            PluginFault::OutputTooLarge {
                                bytes,
                                limit: self.limits.output_bytes,
                            },
                        ));
                    }
                    return Ok(out);
                }
                Ok(Err((position, e))) => {
                    self.pool_mut().push(inst);
                    let (at_fault, fault) = self.refused(functions, &name, position, e);
                    return Err(fail(&at_fault, fault));
                }
                Err(trap) => {
                    self.stats.traps.fetch_add(1, Ordering::Relaxed);
                    let memory_hit = inst.store.data().limiter.hit;
                    // Discarding the instance zeroes its memory: not while
                    // a lighter tenant's batch runs, nor on its processor.
                    sluice_core::share::hold_processor(|| drop(inst));
                    let fault = self.trap_fault(&trap, memory_hit, last_error);
                    if attempt == 0 {
                        self.stats.retries.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(
                            job = %self.job,
                            plugin = %self.name,
                            function = %name,
                            batch = ctx.batch_time_ms,
                            partition = ctx.partition,
                            "instance discarded, retrying on a fresh one: {fault}"
                        );
                    }
                    last_fault = Some(fault);
                }
            }
        }
        Err(fail(
            &name,
            last_fault.unwrap_or(PluginFault::Trap {
                message: "unknown failure".to_string(),
            }),
        ))
    }

    /// Emits the call's guest log lines and captured output through `tracing`,
    /// tagged with plugin, function and batch; returns the last error line.
    pub(super) fn flush_logs(
        &self,
        inst: &mut Instance,
        function: &str,
        batch: BatchTime,
    ) -> Option<String> {
        let state = inst.store.data_mut();
        let logs = std::mem::take(&mut state.logs);
        let (out, out_dropped) = state.stdout.take();
        let (err, err_dropped) = state.stderr.take();
        for (level, line) in &logs.lines {
            let (job, plugin, function, batch) = (&self.job, &self.name, &function, batch.millis());
            match level {
                LogLevel::Trace => {
                    tracing::trace!(target: "sluice::guest", job, plugin, function, batch, "{line}")
                }
                LogLevel::Debug => {
                    tracing::debug!(target: "sluice::guest", job, plugin, function, batch, "{line}")
                }
                LogLevel::Info => {
                    tracing::info!(target: "sluice::guest", job, plugin, function, batch, "{line}")
                }
                LogLevel::Warn => {
                    tracing::warn!(target: "sluice::guest", job, plugin, function, batch, "{line}")
                }
                LogLevel::Error => {
                    tracing::error!(target: "sluice::guest", job, plugin, function, batch, "{line}")
                }
            }
        }
        for (stream, bytes) in [("stdout", &out), ("stderr", &err)] {
            for line in String::from_utf8_lossy(bytes)
                .lines()
                .filter(|l| !l.is_empty())
            {
                tracing::info!(target: "sluice::guest", job = %self.job, plugin = %self.name, function = %function, batch = batch.millis(), stream, "{line}");
            }
        }
        if !logs.lines.is_empty() || !out.is_empty() || !err.is_empty() {
            self.keep_recent(&logs, &out, &err, function, batch);
        }
        let dropped = logs.dropped + u64::from(out_dropped > 0) + u64::from(err_dropped > 0);
        if dropped > 0 {
            self.stats
                .dropped_log_lines
                .fetch_add(dropped, Ordering::Relaxed);
            tracing::warn!(job = %self.job, plugin = %self.name, function = %function, batch = batch.millis(), "guest log over its cap: {} lines and {} output bytes dropped", logs.dropped, out_dropped + err_dropped);
        }
        logs.last_error.or_else(|| {
            let text = String::from_utf8_lossy(&err);
            text.lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .map(str::to_string)
        })
    }

    /// Counts a call of `functions` that took `nanos` (and trapped, if
    /// `trapped`) in the plugin's and each function's counters.
    pub(super) fn account(&self, functions: &[u32], nanos: u64, trapped: bool) {
        self.stats.calls.fetch_add(1, Ordering::Relaxed);
        self.stats.nanos.fetch_add(nanos, Ordering::Relaxed);
        // A chain's time is shared equally among its functions: the
        // host cannot see where one ends and the next begins.
        let share = nanos / functions.len().max(1) as u64;
        for &index in functions {
            if let Some(f) = self.stats.functions.get(index as usize) {
                f.calls.fetch_add(1, Ordering::Relaxed);
                f.nanos.fetch_add(share, Ordering::Relaxed);
                if trapped {
                    f.traps.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }

    /// The function at fault (of `functions`, called as `name`) and the
    /// fault, for a typed error `e` of the function at `position`.
    pub(super) fn refused(
        &self,
        functions: &[u32],
        name: &str,
        position: u32,
        e: PluginError,
    ) -> (String, PluginFault) {
        let kind = match e.kind {
            bindings::WitErrorKind::InvalidInput => "invalid-input",
            bindings::WitErrorKind::UnknownFunction => "unknown-function",
            bindings::WitErrorKind::Unsupported => "unsupported",
            bindings::WitErrorKind::Failed => "failed",
        };
        let at_fault = match functions.get(position as usize) {
            Some(&index) => self.function_name(index),
            None => name.to_string(),
        };
        // Past a chain's first function, the element is one of
        // the values the one before made, which never left the
        // plugin: said in the message, not as an input index.
        let (message, element) = match (position, e.element) {
            (0, element) => (e.message, element.map(u64::from)),
            (p, Some(i)) => {
                let before = self.function_name(functions[p as usize - 1]);
                let message = format!(
                    "{} (element {i} of the values `{before}` produced)",
                    e.message
                );
                (message, None)
            }
            (_, None) => (e.message, None),
        };
        (
            at_fault,
            PluginFault::Refused {
                kind: kind.to_string(),
                message,
                element,
            },
        )
    }

    /// What a trap means: the deadline, the memory limit (`memory_hit`) or
    /// the guest's failure (its `last_error` logged, if any).
    pub(super) fn trap_fault(
        &self,
        trap: &wasmtime::Error,
        memory_hit: bool,
        last_error: Option<String>,
    ) -> PluginFault {
        if matches!(
            trap.downcast_ref::<wasmtime::Trap>(),
            Some(wasmtime::Trap::Interrupt)
        ) {
            PluginFault::Deadline {
                deadline: self.limits.call_deadline,
            }
        } else if memory_hit {
            PluginFault::Memory {
                limit: self.limits.memory_bytes,
            }
        } else {
            let detail = format!("{trap:#}");
            let message = match last_error {
                Some(m) => format!("{m} ({})", first_line(&detail)),
                None => detail,
            };
            PluginFault::Trap { message }
        }
    }

    /// Keeps a call's guest log lines and output among the recent lines
    /// the UI lists (the latest [`RECENT_LOG_LINES`]).
    fn keep_recent(
        &self,
        logs: &GuestLogs,
        out: &[u8],
        err: &[u8],
        function: &str,
        batch: BatchTime,
    ) {
        let mut recent = self.recent_logs.lock().unwrap_or_else(|e| e.into_inner());
        let levels = logs.lines.iter().map(|(level, line)| {
            let level = match level {
                LogLevel::Trace => "trace",
                LogLevel::Debug => "debug",
                LogLevel::Info => "info",
                LogLevel::Warn => "warn",
                LogLevel::Error => "error",
            };
            (level.to_string(), line.clone())
        });
        let output = [("stdout", out), ("stderr", err)]
            .into_iter()
            .flat_map(|(stream, bytes)| {
                String::from_utf8_lossy(bytes)
                    .lines()
                    .filter(|l| !l.is_empty())
                    .map(|l| (stream.to_string(), l.to_string()))
                    .collect::<Vec<_>>()
            });
        for (level, line) in levels.chain(output) {
            recent.push_back(GuestLogLine {
                plugin: self.name.clone(),
                function: function.to_string(),
                batch: batch.millis(),
                level,
                line,
            });
            if recent.len() > RECENT_LOG_LINES {
                recent.pop_front();
            }
        }
    }
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or(s)
}

fn column_bytes(c: &WitColumn) -> u64 {
    (c.bytes.len() + 4 * c.offsets.len()) as u64
}

fn output_bytes(out: &CallOutput) -> u64 {
    match out {
        CallOutput::Batch(b) => column_bytes(&b.keys) + column_bytes(&b.values),
        CallOutput::Selection(s) => 4 * s.len() as u64,
        CallOutput::None => 0,
    }
}
