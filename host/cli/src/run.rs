//! `sluice run` (a job spec in the foreground) and `sluice explain` (its plan).

use crate::feed::read_lines;
use crate::progress::Progress;
use anyhow::{Context, Result, bail};
use sluice::feed::{FeedConfig, FeedServer};
use sluice::plugin::CacheOutcome;
use sluice::spec::{self, Job, Overrides};
use sluice_server::metrics::Metrics;
use sluice_server::web::{Streams, UiServer};
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
/// `--from`/`--to`: the history a Kappa replay reads (ms since the epoch;
/// `from` `None`: the earliest retained).
pub(crate) struct Replay {
    from: Option<i64>,
    to: i64,
}

impl Replay {
    /// The replay `--from` and `--to` ask for, if any.
    pub(crate) fn parse(from: Option<&str>, to: Option<&str>) -> Result<Option<Replay>> {
        let Some(from) = from else {
            return Ok(None);
        };
        let time = |flag: &str, v: &str| -> Result<i64> {
            if let Ok(ms) = v.parse::<i64>() {
                return Ok(ms);
            }
            chrono::DateTime::parse_from_rfc3339(v)
                .map(|t| t.timestamp_millis())
                .with_context(|| format!("{flag} {v}: not an RFC 3339 time (2026-12-06T08:00:00Z) nor ms since the epoch"))
        };
        let from = match from {
            "earliest" => None,
            t => Some(time("--from", t)?),
        };
        let now = chrono::Utc::now().timestamp_millis();
        let to = match to {
            None | Some("now") => now,
            Some(t) => time("--to", t)?,
        };
        if from.is_some_and(|f| f > to) {
            bail!("--from is after --to: nothing to replay");
        }
        Ok(Some(Replay { from, to }))
    }
}

pub(crate) fn run(
    job: PathBuf,
    (batches, replay): (Option<u64>, Option<Replay>),
    (feed, feed_rate): (bool, u32),
    ui: Option<String>,
    overrides: Overrides,
) -> Result<()> {
    let started = Instant::now();
    if replay.is_some() {
        if overrides.output_dir.is_none() {
            bail!("a replay writes into a separate output: give --output-dir DIR");
        }
        if overrides.checkpoint.is_some() {
            bail!("a replay keeps no checkpoints: leave out --checkpoint");
        }
        if feed {
            bail!("--feed: a replay reads history, not sockets");
        }
    }
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
        Some(addr) => Some(start_ui(&addr, metrics.clone(), Streams::of(&job))?),
        None => None,
    };
    if std::io::stderr().is_terminal() {
        print_batches(&job);
    }
    tracing::info!(job = %job.name, startup_ms = started.elapsed().as_millis() as u64, "job started");
    // SIGINT/SIGTERM: finish with a last batch and checkpoint; a second
    // signal exits at once.
    stop_on_signals(&job.context.stop_handle().flag())?;
    let batches = match &replay {
        Some(r) => {
            let n = job.context.replay(r.from, r.to)?;
            if n == 0 {
                tracing::info!(job = %job.name, "nothing stored in the replayed range");
                return Ok(());
            }
            tracing::info!(job = %job.name, batches = n, "replaying history");
            Some(batches.map_or(n, |b| b.min(n)))
        }
        None => batches,
    };
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
fn start_ui(addr: &str, metrics: Arc<Metrics>, streams: Streams) -> Result<UiServer> {
    let at = addr
        .to_socket_addrs()
        .with_context(|| format!("--ui: resolving {addr}"))?
        .next()
        .with_context(|| format!("--ui: {addr} resolves to nothing"))?;
    let server =
        UiServer::start(at, metrics, streams).with_context(|| format!("--ui: serving on {at}"))?;
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
