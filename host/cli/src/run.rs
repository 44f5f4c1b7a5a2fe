//! `sluice run` (a job spec in the foreground) and `sluice explain` (its plan).

use crate::feed::read_lines;
use crate::progress::Progress;
use anyhow::{Context, Result, bail};
use sluice::feed::{FeedConfig, FeedServer};
use sluice::plugin::CacheOutcome;
use sluice::spec::{self, Job, Overrides};
use sluice_server::metrics::Metrics;
use sluice_server::web::UiServer;
use std::io::IsTerminal;
use std::net::ToSocketAddrs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

/// `sluice explain`: prints the job's physical plan as text or Graphviz.
pub(crate) fn explain(job: &Path, format: &str, workers: Option<usize>) -> Result<()> {
    let overrides = Overrides {
        workers,
        ..Overrides::default()
    };
    let job = spec::load(job, &overrides)?;
    let plan = job.context.explain();
    match format {
        "dot" => print!("{}", plan.to_dot()),
        _ => print!("{plan}"),
    }
    Ok(())
}

/// `sluice run`: loads the job, starts what `--feed` and `--ui` ask for,
/// and runs it until it ends, `batches` are done or a signal stops it.
pub(crate) fn run(
    job: PathBuf,
    batches: Option<u64>,
    (feed, feed_rate): (bool, u32),
    ui: Option<String>,
    overrides: Overrides,
) -> Result<()> {
    let started = Instant::now();
    let job = {
        let _progress = Progress::start("loading the job and compiling its plugins");
        spec::load(&job, &overrides)?
    };
    let feeders = if feed {
        start_feeders(&job, feed_rate)?
    } else {
        Vec::new()
    };
    log_plugins(&job);
    let metrics = Metrics::attach(&job);
    let _ui = match ui {
        Some(addr) => Some(start_ui(&addr, metrics.clone())?),
        None => None,
    };
    if std::io::stderr().is_terminal() {
        print_batches(&job);
    }
    tracing::info!(job = %job.name, startup_ms = started.elapsed().as_millis() as u64, "job started");
    // SIGINT/SIGTERM: finish with a last batch and checkpoint; a second
    // signal exits at once.
    stop_on_signals(&job.context.stop_handle().flag())?;
    let summary = job.context.run(batches)?;
    tracing::info!(job = %job.name, batches = summary.batches, records = summary.input_records, "job finished");
    for f in feeders {
        f.stop();
    }
    Ok(())
}

/// `--feed`: a feed server on every socket source's address.
fn start_feeders(job: &Job, feed_rate: u32) -> Result<Vec<FeedServer>> {
    if job.socket_addrs.is_empty() {
        bail!("--feed: the job has no socket source to feed");
    }
    let mut feeders = Vec::new();
    for source in &job.socket_addrs {
        let (host, port) = (&source.host, source.port);
        let lines = match &source.demo_lines {
            Some(path) => read_lines(path)?,
            None => Vec::new(),
        };
        let addr = (host.as_str(), port)
            .to_socket_addrs()
            .with_context(|| format!("resolving {host}:{port}"))?
            .next()
            .with_context(|| format!("{host}:{port} resolves to nothing"))?;
        let server = FeedServer::start(FeedConfig {
            addr,
            lines_per_second: feed_rate,
            lines,
            repeat: true,
        })
        .with_context(|| format!("--feed: listening on {addr}"))?;
        feeders.push(server);
    }
    Ok(feeders)
}

/// Logs each plugin the job loaded, and whether it had to be compiled.
fn log_plugins(job: &Job) {
    for (name, p) in &job.plugins {
        tracing::info!(
            plugin = %name,
            version = %p.description().version,
            compiled = matches!(p.cache_outcome(), CacheOutcome::Compiled),
            "loaded plugin"
        );
    }
}

/// `--ui ADDR`: the streaming web UI and `/metrics`.
fn start_ui(addr: &str, metrics: Arc<Metrics>) -> Result<UiServer> {
    let at = addr
        .to_socket_addrs()
        .with_context(|| format!("--ui: resolving {addr}"))?
        .next()
        .with_context(|| format!("--ui: {addr} resolves to nothing"))?;
    let server = UiServer::start(at, metrics).with_context(|| format!("--ui: serving on {at}"))?;
    tracing::info!(url = %format!("http://{}/", server.local_addr()), "web UI and /metrics");
    Ok(server)
}

/// Live progress: one line per batch on stderr.
fn print_batches(job: &Job) {
    job.context.add_listener(Box::new(|b| {
        eprintln!(
            "batch {} #{:<5} {:>8} records  processing {:>8.1} ms  delay {:>8.1} ms",
            chrono::DateTime::from_timestamp_millis(b.time.millis())
                .map(|t| t.format("%H:%M:%S%.3f").to_string())
                .unwrap_or_default(),
            b.index,
            b.input_records,
            b.processing_time.as_secs_f64() * 1e3,
            b.total_delay().as_secs_f64() * 1e3,
        );
    }));
}

/// Sets `stop` on SIGINT or SIGTERM; a second signal, once `stop` is set,
/// exits at once (status 130).
pub(crate) fn stop_on_signals(stop: &Arc<AtomicBool>) -> Result<()> {
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register_conditional_shutdown(signal, 130, stop.clone())
            .context("installing the signal handlers")?;
        signal_hook::flag::register(signal, stop.clone())
            .context("installing the signal handlers")?;
    }
    Ok(())
}
