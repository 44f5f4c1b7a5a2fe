//! One instance of a plugin: what its `Store` holds (WASI with only what
//! is granted, the memory limiter, captured output, the call's logs and
//! clock), the guest's clocks, and instantiating it.

use super::Plugin;
use crate::bindings::{self, LogLevel};
use crate::capture::Capture;
use crate::limits::{Limits, MemoryLimiter};
use sluice_core::share::CallCpu;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;
use wasmtime::component::ResourceTable;
use wasmtime::{Store, UpdateDeadline};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

/// Guest log lines of one call, capped.
#[derive(Debug, Default)]
pub(super) struct GuestLogs {
    pub(super) lines: Vec<(LogLevel, String)>,
    bytes: usize,
    pub(super) dropped: u64,
    pub(super) last_error: Option<String>,
}

/// Everything a plugin `Store` holds: WASI with nothing granted, the memory
/// limiter, captured output and the current call's logs.
pub struct StoreState {
    wasi: WasiCtx,
    table: ResourceTable,
    pub(super) limiter: MemoryLimiter,
    pub(super) logs: GuestLogs,
    limits: Limits,
    pub(super) stdout: Capture,
    pub(super) stderr: Capture,
    /// The current call's clock, for its deadline and the CPU share.
    pub(super) call: CallCpu,
}

impl StoreState {
    /// At each epoch tick during a call (and when a lighter tenant's batch
    /// starts, see [`sluice_core::share`]): charge the CPU used, give way if the
    /// tenant must, and stop the call once it has run for its deadline
    /// (pauses do not count).
    fn on_epoch(&mut self) -> wasmtime::Result<UpdateDeadline> {
        self.call.check();
        if self.call.running() >= self.limits.call_deadline {
            return Ok(UpdateDeadline::Interrupt);
        }
        Ok(UpdateDeadline::Continue(1))
    }
}

impl wasmtime::ResourceLimiter for StoreState {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        // Growing is where a call's page-faulting work begins (the kernel
        // zeroing what it touches, which no epoch check interrupts): a
        // point to give way to lighter tenants, as at an epoch check.
        self.call.check();
        self.limiter.memory_growing(current, desired, maximum)
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        self.limiter.table_growing(current, desired, maximum)
    }
}

impl WasiView for StoreState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl bindings::sluice::plugin::types::Host for StoreState {}

impl bindings::sluice::plugin::host::Host for StoreState {
    fn log(&mut self, level: LogLevel, mut message: String) {
        let logs = &mut self.logs;
        if level == LogLevel::Error {
            let mut m = message.clone();
            truncate_utf8(&mut m, 4096);
            logs.last_error = Some(m);
        }
        if logs.bytes >= self.limits.log_call_bytes {
            logs.dropped += 1;
            return;
        }
        if message.len() > self.limits.log_line_bytes {
            truncate_utf8(&mut message, self.limits.log_line_bytes);
            message.push_str(" …[truncated]");
        }
        logs.bytes += message.len();
        logs.lines.push((level, message));
    }
}

fn truncate_utf8(s: &mut String, max: usize) {
    if s.len() > max {
        let mut cut = max;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
    }
}

/// Guest clocks read the batch time, not the host's clock.
struct BatchClock(Arc<AtomicI64>);

impl wasmtime_wasi::HostWallClock for BatchClock {
    fn resolution(&self) -> Duration {
        Duration::from_millis(1)
    }
    fn now(&self) -> Duration {
        Duration::from_millis(self.0.load(Ordering::Relaxed).max(0) as u64)
    }
}

impl wasmtime_wasi::HostMonotonicClock for BatchClock {
    fn resolution(&self) -> u64 {
        1_000_000
    }
    fn now(&self) -> u64 {
        self.0.load(Ordering::Relaxed).max(0) as u64 * 1_000_000
    }
}

/// What an instance's clocks read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Clocks {
    /// The time of the batch being processed (operators: reproducible).
    Batch,
    /// The host's clocks (receivers, which wait, time out and stamp what
    /// they receive).
    Host,
}

/// A live instance, pooled between calls.
pub(super) struct Instance {
    pub(super) store: Store<StoreState>,
    pub(super) plugin: bindings::Plugin,
    /// The `chain` export, when the component has one.
    pub(super) chain: Option<bindings::ChainExport>,
    /// The `receiver` export, when the component has one.
    pub(super) receiver: Option<bindings::ReceiverExport>,
    pub(super) clock: Arc<AtomicI64>,
}

impl Instance {
    /// Starts the clock of a call: its deadline counts from now.
    pub(super) fn begin_call(&mut self) {
        self.store.data_mut().call.begin();
        self.store.set_epoch_deadline(1);
    }
}

impl Plugin {
    /// A fresh instance in its own `Store`, granted the plugin's
    /// capabilities and nothing else; its clocks read the batch time.
    pub(super) fn instantiate(&self) -> std::result::Result<Instance, String> {
        self.instantiate_with(Clocks::Batch)
    }

    /// A fresh instance whose clocks are `clocks`.
    pub(super) fn instantiate_with(&self, clocks: Clocks) -> std::result::Result<Instance, String> {
        let stdout = Capture::new(self.limits.log_call_bytes);
        let stderr = Capture::new(self.limits.log_call_bytes);
        let clock = Arc::new(AtomicI64::new(0));
        let mut wasi = WasiCtx::builder();
        if clocks == Clocks::Batch {
            wasi.wall_clock(BatchClock(clock.clone()))
                .monotonic_clock(BatchClock(clock.clone()));
        }
        wasi.stdout(stdout.clone())
            .stderr(stderr.clone())
            .insecure_random_seed(0x5eed_5eed)
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false);
        if let Some(dir) = &self.capabilities.dir {
            wasi.preopened_dir(dir, ".", wasmtime_wasi::FsPerms::ReadWrite)
                .map_err(|e| format!("granting directory {}: {e:#}", dir.display()))?;
        }
        // Sockets may connect only to the granted endpoints (none: no
        // connection at all); every other use is refused by the host and
        // logged (the first ten refusals of an instance, then at powers of
        // two, so that a plugin cannot flood the log).
        let allowed = Arc::new(self.capabilities.connect.clone());
        let (job, plugin) = (self.job.clone(), self.name.clone());
        let refusals = Arc::new(std::sync::atomic::AtomicU64::new(0));
        wasi.allow_tcp(true).socket_addr_check(move |addr, used| {
            use wasmtime_wasi::sockets::SocketAddrUse as Use;
            let ok = match used {
                Use::TcpConnect => allowed.contains(&addr),
                // The implicit bind before a connect (to the wildcard
                // address, any port): the connect is checked next, and
                // listening (checked apart) stays refused.
                Use::TcpBind => addr.ip().is_unspecified() && addr.port() == 0,
                _ => false,
            };
            if !ok {
                let n = refusals.fetch_add(1, Ordering::Relaxed) + 1;
                if n <= 10 || n.is_power_of_two() {
                    tracing::warn!(
                        job = %job,
                        plugin = %plugin,
                        refusals = n,
                        "refused the plugin's {used:?} to {addr}: not among its granted endpoints"
                    );
                }
            }
            Box::pin(async move { ok })
        });
        let wasi = wasi.build();
        let state = StoreState {
            wasi,
            table: ResourceTable::new(),
            limiter: MemoryLimiter {
                max_bytes: self.limits.memory_bytes as usize,
                hit: false,
            },
            logs: GuestLogs::default(),
            limits: self.limits,
            stdout,
            stderr,
            call: CallCpu::default(),
        };
        let mut store = Store::new(&self.runtime.engine, state);
        store.limiter(|s| s);
        // Every tick is a check (cheap): the deadline is kept in real
        // running time, so that an extra tick (a lighter tenant's batch
        // starting) neither shortens it nor lengthens it.
        store.epoch_deadline_callback(|mut cx| cx.data_mut().on_epoch());
        store.set_epoch_deadline(1);
        let instance = self
            .pre
            .instantiate(&mut store)
            .map_err(|e| format!("{e:#}"))?;
        let plugin = self
            .indices
            .load(&mut store, &instance)
            .map_err(|e| format!("{e:#}"))?;
        let chain = match &self.chain {
            Some(c) => Some(
                c.load(&mut store, &instance)
                    .map_err(|e| format!("the `chain` export: {e:#}"))?,
            ),
            None => None,
        };
        let receiver = match &self.receiver {
            Some(r) => Some(
                r.load(&mut store, &instance)
                    .map_err(|e| format!("the `receiver` export: {e:#}"))?,
            ),
            None => None,
        };
        if let Some((define, program)) = &self.define {
            let define = define
                .load(&mut store, &instance)
                .map_err(|e| format!("the `define` export: {e:#}"))?;
            store.data_mut().call.begin();
            store.set_epoch_deadline(1);
            let defined = define.call_define(&mut store, program);
            store.data_mut().call.end();
            match defined {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return Err(format!("its program is refused: {}", e.message)),
                Err(trap) => return Err(format!("`define` trapped: {trap:#}")),
            }
        }
        self.stats.instances.fetch_add(1, Ordering::Relaxed);
        Ok(Instance {
            store,
            plugin,
            chain,
            receiver,
            clock,
        })
    }
}
