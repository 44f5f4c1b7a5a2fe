//! The job's web UI and Prometheus endpoint (`sluice run --ui ADDR`):
//!
//! - `GET /` — the streaming page: timelines and histograms of input rate,
//!   scheduling delay, processing time and total delay (as Spark's
//!   Streaming tab), the recent batches, and the time of every operator;
//!   it polls `/api/status` every second, so it updates live.
//! - `GET /api/status` — [`Metrics::status`] as JSON.
//! - `GET /metrics` — [`Metrics::prometheus`] in Prometheus' text format.
//!
//! The server runs on its own thread with a small tokio runtime and never
//! touches the batch path: it only reads the metrics under their lock.

use crate::metrics::Metrics;
use axum::Router;
use axum::http::header;
use axum::response::{Html, IntoResponse};
use axum::routing::get;
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

fn router(metrics: Arc<Metrics>) -> Router {
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
}

impl UiServer {
    /// Binds `addr` (port 0: any free port) and serves `metrics` from a
    /// thread of its own. Binding errors are returned here.
    pub fn start(addr: SocketAddr, metrics: Arc<Metrics>) -> std::io::Result<UiServer> {
        let listener = std::net::TcpListener::bind(addr)?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .enable_time()
            .build()?;
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let app = router(metrics);
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
