//! The job's web UI and Prometheus endpoint (`sluice run --ui ADDR`):
//!
//! - `GET /` — the streaming page: timelines and histograms of input rate,
//!   scheduling delay, processing time and total delay (as Spark's
//!   Streaming tab), the recent batches, and the time of every operator;
//!   it polls `/api/status` every second, so it updates live.
//! - `GET /api/status` — [`Metrics::status`] as JSON.
//! - `GET /metrics` — [`Metrics::prometheus`] in Prometheus' text format.
//! - `GET /api/streams/NAME?from=MS&to=MS` — `slice(from, to)` of a source
//!   or stream: its remembered batches with times in `[from, to]` (both
//!   optional), as `{stream, remember_ms, batches: [{time, index,
//!   partitions, records}]}`; the job must remember batches (`[job]
//!   remember`).
//!
//! The server runs on its own thread with a small tokio runtime and never
//! touches the batch path: it only reads the metrics under their lock.

use crate::metrics::Metrics;
use crate::{ApiError, ApiResult};
use axum::Router;
use axum::http::{StatusCode, Uri, header};
use axum::response::{Html, IntoResponse};
use axum::routing::get;
use sluice::{BatchTime, DStream};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

/// The streaming page (also served per job by `sluice serve`).
pub(crate) const PAGE: &str = include_str!("ui.html");

/// A running UI server; dropping it stops it.
#[derive(Debug)]
pub struct UiServer {
    addr: SocketAddr,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// A job's sources and streams by name, and how long it remembers their
/// batches: what `slice` reads.
#[derive(Clone, Default)]
pub struct Streams {
    /// By name.
    pub streams: BTreeMap<String, DStream>,
    /// The job's `remember` duration.
    pub remember: std::time::Duration,
}

impl Streams {
    /// The job's streams, as [`sluice::spec::build`] named them.
    pub fn of(job: &sluice::spec::Job) -> Streams {
        Streams {
            streams: job.streams.clone(),
            remember: job.context.remembered(),
        }
    }

    /// `slice(from, to)` of stream `name`, `from` and `to` (ms) taken from
    /// the query of `uri` (default: everything remembered).
    pub(crate) fn slice(&self, name: &str, uri: &Uri) -> ApiResult<serde_json::Value> {
        let stream = self.streams.get(name).ok_or_else(|| {
            ApiError::not_found(format!(
                "no stream `{name}` (the job has {})",
                self.streams.keys().cloned().collect::<Vec<_>>().join(", ")
            ))
        })?;
        if self.remember.is_zero() {
            return Err(ApiError::conflict(
                "the job remembers no batches: set `remember` in its [job] section",
            ));
        }
        let bound = |key: &str, default: i64| -> ApiResult<i64> {
            let value = uri.query().and_then(|q| {
                q.split('&')
                    .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
            });
            match value {
                None => Ok(default),
                Some(v) => v.parse().map_err(|_| {
                    ApiError::bad(format!(
                        "`{key}`: `{v}` is not a time in ms since the epoch"
                    ))
                }),
            }
        };
        let (from, to) = (bound("from", i64::MIN / 2)?, bound("to", i64::MAX / 2)?);
        let batches: Vec<serde_json::Value> = stream
            .slice(BatchTime(from), BatchTime(to))
            .into_iter()
            .map(|b| {
                serde_json::json!({
                    "time": b.time.millis(),
                    "index": b.index,
                    "partitions": b.partitions,
                    "records": b.records,
                })
            })
            .collect();
        Ok(serde_json::json!({
            "stream": name,
            "remember_ms": self.remember.as_millis() as u64,
            "batches": batches,
        }))
    }
}

fn router(metrics: Arc<Metrics>, streams: Streams) -> Router {
    let (status, prom) = (metrics.clone(), metrics);
    Router::new()
        .route("/", get(|| async { Html(PAGE) }))
        .route(
            "/api/status",
            get(move || {
                let m = status.clone();
                async move { axum::Json(m.status()) }
            }),
        )
        .route(
            "/metrics",
            get(move || {
                let m = prom.clone();
                async move {
                    (
                        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
                        m.prometheus(),
                    )
                        .into_response()
                }
            }),
        )
        .route(
            "/api/streams/{name}",
            get(
                move |axum::extract::Path(name): axum::extract::Path<String>, uri: Uri| {
                    let streams = streams.clone();
                    async move {
                        match streams.slice(&name, &uri) {
                            Ok(v) => (StatusCode::OK, axum::Json(v)).into_response(),
                            Err(e) => e.into_response(),
                        }
                    }
                },
            ),
        )
}

impl UiServer {
    /// Binds `addr` (port 0: any free port) and serves `metrics` and the
    /// slices of `streams` from a thread of its own. Binding errors are
    /// returned here.
    pub fn start(
        addr: SocketAddr,
        metrics: Arc<Metrics>,
        streams: Streams,
    ) -> std::io::Result<UiServer> {
        let listener = std::net::TcpListener::bind(addr)?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .enable_time()
            .build()?;
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let app = router(metrics, streams);
        let thread = std::thread::Builder::new()
            .name("sluice-ui".to_string())
            .spawn(move || {
                runtime.block_on(async move {
                    let listener = match tokio::net::TcpListener::from_std(listener) {
                        Ok(l) => l,
                        Err(e) => {
                            tracing::error!("web UI: {e}");
                            return;
                        }
                    };
                    let served = axum::serve(listener, app).with_graceful_shutdown(async {
                        let _ = rx.await;
                    });
                    if let Err(e) = served.await {
                        tracing::error!("web UI stopped: {e}");
                    }
                });
            })?;
        Ok(UiServer {
            addr,
            shutdown: Some(tx),
            thread: Some(thread),
        })
    }

    /// The address served.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for UiServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
