//! The HTTP API of `sluice serve` (JSON; documented in `openapi.json`,
//! served at `/api/openapi.json`).
//!
//! Every call but `/api/health` and `/api/openapi.json` needs a token:
//! `Authorization: Bearer TOKEN` (or `?token=TOKEN`, for the web pages).
//! The admin token manages tenants; a tenant's token reaches only that
//! tenant's plugins and jobs — another tenant's job is "not found".
//!
//! | call | who | what |
//! |---|---|---|
//! | `POST /api/tenants` `{name, limits?}` | admin | create a tenant; returns its token |
//! | `GET /api/tenants` | admin | tenants, limits, jobs, memory reserved |
//! | `PUT /api/tenants/{t}/limits` | admin | change a tenant's limits |
//! | `POST /api/tenants/{t}/tokens` | admin | another token |
//! | `DELETE /api/tenants/{t}` | admin | remove a tenant and everything it has |
//! | `POST /api/plugins/{name}` (body: the `.wasm`) | tenant | upload a version |
//! | `GET /api/plugins` | tenant | plugins and versions |
//! | `POST /api/jobs` `{spec, plugins, files}` | tenant | submit and start a job |
//! | `GET /api/jobs`, `GET /api/jobs/{j}` | tenant | jobs, one job |
//! | `POST /api/jobs/{j}/stop`, `/start` | tenant | stop (last batch + checkpoint), start again |
//! | `DELETE /api/jobs/{j}` | tenant | stop and remove |
//! | `POST /api/jobs/{j}/swap` `{plugin, to, wait_ms?}` | tenant | hot swap a plugin |
//! | `GET /api/jobs/{j}/outputs?n=` | tenant | recent `pprint` outputs |
//! | `GET /api/jobs/{j}/logs` | tenant | job events and guest logs |
//! | `GET /api/jobs/{j}/status` | tenant | batch metrics (the web UI's data) |
//! | `GET /api/jobs/{j}/streams/{s}?from=&to=` | tenant | `slice` of a stream's remembered batches |
//! | `GET /jobs/{j}/`, `/jobs/{j}/metrics` | tenant | web UI, Prometheus |
//! | `GET /api/audit?n=` | admin | the audit log's last entries (see `audit`) |
//!
//! A tenant's calls are limited to its `api_rate` per second (`api_burst`
//! at once): more are refused with 429 and `Retry-After`. A request body
//! over `max_request_bytes` (plugin uploads: `max_plugin_bytes`; jobs:
//! twice `max_job_files_bytes`) is refused with 413.

use super::{ApiError, Caller, Server, TenantLimits};
use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post, put};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// The OpenAPI description of this API.
pub const OPENAPI: &str = include_str!("openapi.json");

type Shared = State<Arc<Server>>;

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut response = (
            status,
            axum::Json(serde_json::json!({"error": self.message})),
        )
            .into_response();
        if let Some(wait) = self.retry_after {
            // Whole seconds, rounded up (RFC 9110).
            let secs = wait.as_millis().div_ceil(1000).max(1);
            if let Ok(v) = header::HeaderValue::from_str(&secs.to_string()) {
                response.headers_mut().insert(header::RETRY_AFTER, v);
            }
        }
        response
    }
}

type Reply = Result<Response, ApiError>;

fn json(status: StatusCode, value: serde_json::Value) -> Reply {
    Ok((status, axum::Json(value)).into_response())
}

fn query(uri: &Uri, key: &str) -> Option<String> {
    uri.query()?.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k == key).then(|| v.to_string())
    })
}

/// The caller of a request, from its token.
/// The caller of a request, from its token; a tenant's call is taken
/// from its allowance.
fn caller(server: &Server, headers: &HeaderMap, uri: &Uri) -> Result<Caller, ApiError> {
    let caller = authenticated(server, headers, uri)?;
    if let Caller::Tenant(t) = &caller {
        server.take_call(t)?;
    }
    Ok(caller)
}

/// Who holds the request's token, or why nobody does (401).
fn authenticated(server: &Server, headers: &HeaderMap, uri: &Uri) -> Result<Caller, ApiError> {
    let token = token(headers, uri)
        .ok_or_else(|| ApiError::new(401, "a token is needed: `Authorization: Bearer TOKEN`"))?;
    server
        .authenticate(token.trim())
        .ok_or_else(|| ApiError::new(401, "the token is not valid"))
}

/// The token a request carries, if any.
fn token(headers: &HeaderMap, uri: &Uri) -> Option<String> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_string)
        .or_else(|| query(uri, "token"))
}

/// The client's address, as the audit log names it.
#[derive(Debug, Clone, Copy)]
pub struct Peer(pub SocketAddr);

impl
    axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, tokio::net::TcpListener>>
    for Peer
{
    fn connect_info(stream: axum::serve::IncomingStream<'_, tokio::net::TcpListener>) -> Peer {
        Peer(*stream.remote_addr())
    }
}

impl
    axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, crate::tls::TlsListener>>
    for Peer
{
    fn connect_info(stream: axum::serve::IncomingStream<'_, crate::tls::TlsListener>) -> Peer {
        Peer(*stream.remote_addr())
    }
}

/// In front of every route: refuses a call without a valid token (but to
/// the public pages) before its body is read, and writes the audit log's
/// entry for every call that changes something and every refused one
/// (see [`crate::audit`]).
async fn guard(
    State(s): Shared,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let method = request.method().clone();
    let path = request.uri().path().to_string();
    let caller = authenticated(&s, request.headers(), request.uri());
    let who = match &caller {
        Ok(Caller::Admin) => "admin".to_string(),
        Ok(Caller::Tenant(t)) => format!("tenant:{t}"),
        Err(_) => "unknown".to_string(),
    };
    let peer = (request.extensions())
        .get::<axum::extract::ConnectInfo<Peer>>()
        .map_or_else(|| "-".to_string(), |c| c.0.0.to_string());
    let public = matches!(path.as_str(), "/" | "/api/health" | "/api/openapi.json");
    let response = match caller {
        Err(e) if !public => e.into_response(),
        _ => next.run(request).await,
    };
    let status = response.status().as_u16();
    let changes = !matches!(method, axum::http::Method::GET | axum::http::Method::HEAD);
    if changes || matches!(status, 401 | 403 | 413 | 429) {
        s.audit.record(who, peer, method.as_str(), &path, status);
    }
    response
}

/// `GET /api/audit?n=` (admin): the audit log's last `n` entries (100).
async fn audit_log(State(s): Shared, headers: HeaderMap, uri: Uri) -> Reply {
    admin(&s, &headers, &uri)?;
    let n = query(&uri, "n").and_then(|n| n.parse().ok()).unwrap_or(100);
    let entries = s.audit.tail(n).map_err(ApiError::internal)?;
    json(StatusCode::OK, serde_json::json!(entries))
}

fn admin(server: &Server, headers: &HeaderMap, uri: &Uri) -> Result<(), ApiError> {
    match caller(server, headers, uri)? {
        Caller::Admin => Ok(()),
        Caller::Tenant(_) => Err(ApiError::new(403, "this needs the admin token")),
    }
}

fn tenant(server: &Server, headers: &HeaderMap, uri: &Uri) -> Result<String, ApiError> {
    match caller(server, headers, uri)? {
        Caller::Tenant(t) => Ok(t),
        Caller::Admin => Err(ApiError::new(
            403,
            "this needs a tenant's token (the admin token manages tenants only)",
        )),
    }
}

fn parse<T: serde::de::DeserializeOwned>(body: &Bytes) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| ApiError::bad(format!("request body: {e}")))
}

/// Runs blocking server work (compiling, building, stopping jobs) off the
/// request threads.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::internal(format!("server task failed: {e}")))?
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewTenant {
    name: String,
    limits: Option<serde_json::Value>,
}

/// Limits given as JSON, the fields missing taken from the server's
/// defaults for new tenants (not from [`TenantLimits::default`]).
fn limits_over_defaults(s: &Server, given: serde_json::Value) -> Result<TenantLimits, ApiError> {
    let mut limits = serde_json::to_value(&s.config().default_limits)
        .map_err(|e| ApiError::internal(format!("the default limits: {e}")))?;
    let (Some(into), serde_json::Value::Object(given)) = (limits.as_object_mut(), given) else {
        return Err(ApiError::bad("limits: a JSON object is needed"));
    };
    into.extend(given);
    serde_json::from_value(limits).map_err(|e| ApiError::bad(format!("limits: {e}")))
}

async fn create_tenant(State(s): Shared, headers: HeaderMap, uri: Uri, body: Bytes) -> Reply {
    admin(&s, &headers, &uri)?;
    let req: NewTenant = parse(&body)?;
    let limits = req
        .limits
        .map(|l| limits_over_defaults(&s, l))
        .transpose()?;
    let token = s.create_tenant(&req.name, limits)?;
    json(
        StatusCode::CREATED,
        serde_json::json!({"name": req.name, "token": token}),
    )
}

async fn list_tenants(State(s): Shared, headers: HeaderMap, uri: Uri) -> Reply {
    admin(&s, &headers, &uri)?;
    json(StatusCode::OK, s.tenants())
}

async fn set_limits(
    State(s): Shared,
    headers: HeaderMap,
    uri: Uri,
    Path(t): Path<String>,
    body: Bytes,
) -> Reply {
    admin(&s, &headers, &uri)?;
    let limits = limits_over_defaults(&s, parse(&body)?)?;
    s.set_limits(&t, limits)?;
    json(StatusCode::OK, serde_json::json!({"name": t}))
}

async fn add_token(State(s): Shared, headers: HeaderMap, uri: Uri, Path(t): Path<String>) -> Reply {
    admin(&s, &headers, &uri)?;
    let token = s.add_token(&t)?;
    json(
        StatusCode::CREATED,
        serde_json::json!({"name": t, "token": token}),
    )
}

async fn delete_tenant(
    State(s): Shared,
    headers: HeaderMap,
    uri: Uri,
    Path(t): Path<String>,
) -> Reply {
    admin(&s, &headers, &uri)?;
    blocking(move || s.delete_tenant(&t)).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn upload_plugin(
    State(s): Shared,
    headers: HeaderMap,
    uri: Uri,
    Path(name): Path<String>,
    body: Bytes,
) -> Reply {
    let t = tenant(&s, &headers, &uri)?;
    let timeout = s.config().compile_timeout;
    // One compile at a time; each bounded in time (the size cap bounds
    // its memory).
    let _permit = s
        .compile_slot()
        .acquire()
        .await
        .map_err(|_| ApiError::internal("the server is shutting down"))?;
    let server = s.clone();
    let plugin = name.clone();
    let work = tokio::task::spawn_blocking(move || server.add_plugin(&t, &plugin, &body));
    match tokio::time::timeout(timeout, work).await {
        Ok(Ok(Ok(record))) => json(
            StatusCode::CREATED,
            serde_json::json!({"name": name, "version": record.version, "digest": record.digest, "functions": record.functions}),
        ),
        Ok(Ok(Err(e))) => Err(e),
        Ok(Err(e)) => Err(ApiError::internal(format!(
            "compiling plugin `{name}`: {e}"
        ))),
        Err(_) => Err(ApiError::new(
            504,
            format!(
                "plugin `{name}` took over {} s to validate and compile",
                timeout.as_secs()
            ),
        )),
    }
}

async fn list_plugins(State(s): Shared, headers: HeaderMap, uri: Uri) -> Reply {
    let t = tenant(&s, &headers, &uri)?;
    json(
        StatusCode::OK,
        serde_json::to_value(s.plugins(&t)?).unwrap_or_default(),
    )
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Submission {
    spec: String,
    #[serde(default)]
    plugins: BTreeMap<String, String>,
    #[serde(default)]
    files: BTreeMap<String, String>,
}

async fn submit(State(s): Shared, headers: HeaderMap, uri: Uri, body: Bytes) -> Reply {
    let t = tenant(&s, &headers, &uri)?;
    let req: Submission = parse(&body)?;
    let job = blocking(move || s.submit(&t, &req.spec, &req.plugins, &req.files)).await?;
    json(StatusCode::CREATED, job)
}

async fn list_jobs(State(s): Shared, headers: HeaderMap, uri: Uri) -> Reply {
    let t = tenant(&s, &headers, &uri)?;
    json(StatusCode::OK, s.jobs(&t)?)
}

async fn show_job(State(s): Shared, headers: HeaderMap, uri: Uri, Path(j): Path<String>) -> Reply {
    let t = tenant(&s, &headers, &uri)?;
    json(StatusCode::OK, s.job(&t, &j)?)
}

/// Runs `change` on a tenant's job off the request thread, then shows the job.
async fn change_job(
    s: Arc<Server>,
    headers: &HeaderMap,
    uri: &Uri,
    j: String,
    change: fn(&Arc<Server>, &str, &str) -> Result<(), ApiError>,
) -> Reply {
    let t = tenant(&s, headers, uri)?;
    let (server, tt, jj) = (s.clone(), t.clone(), j.clone());
    blocking(move || change(&server, &tt, &jj)).await?;
    json(StatusCode::OK, s.job(&t, &j)?)
}

async fn stop_job(State(s): Shared, headers: HeaderMap, uri: Uri, Path(j): Path<String>) -> Reply {
    change_job(s, &headers, &uri, j, |s, t, j| s.stop_job(t, j)).await
}

async fn start_job(State(s): Shared, headers: HeaderMap, uri: Uri, Path(j): Path<String>) -> Reply {
    change_job(s, &headers, &uri, j, |s, t, j| s.restart_job(t, j)).await
}

async fn delete_job(
    State(s): Shared,
    headers: HeaderMap,
    uri: Uri,
    Path(j): Path<String>,
) -> Reply {
    let t = tenant(&s, &headers, &uri)?;
    blocking(move || s.delete_job(&t, &j)).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Swap {
    plugin: String,
    to: String,
    /// How long to wait for the outcome (default 30 s).
    wait_ms: Option<u64>,
}

async fn swap(
    State(s): Shared,
    headers: HeaderMap,
    uri: Uri,
    Path(j): Path<String>,
    body: Bytes,
) -> Reply {
    let t = tenant(&s, &headers, &uri)?;
    let req: Swap = parse(&body)?;
    let wait = Duration::from_millis(req.wait_ms.unwrap_or(30_000));
    let (plugin, to) = (req.plugin.clone(), req.to.clone());
    let server = s.clone();
    let (tt, jj) = (t.clone(), j.clone());
    let outcome = blocking(move || server.swap(&tt, &jj, &plugin, &to, wait)).await?;
    let job = s.job(&t, &j)?;
    match outcome {
        Some(Ok(batch)) => json(
            StatusCode::OK,
            serde_json::json!({"outcome": "applied", "batch": batch, "job": job}),
        ),
        Some(Err(why)) => json(
            StatusCode::CONFLICT,
            serde_json::json!({"outcome": "rolled back", "error": why, "job": job}),
        ),
        None => json(
            StatusCode::ACCEPTED,
            serde_json::json!({"outcome": "pending", "job": job}),
        ),
    }
}

async fn outputs(State(s): Shared, headers: HeaderMap, uri: Uri, Path(j): Path<String>) -> Reply {
    let t = tenant(&s, &headers, &uri)?;
    let n = query(&uri, "n")
        .and_then(|n| n.parse().ok())
        .unwrap_or(20usize);
    json(
        StatusCode::OK,
        serde_json::json!({"pprint": s.outputs(&t, &j, n)?}),
    )
}

async fn logs(State(s): Shared, headers: HeaderMap, uri: Uri, Path(j): Path<String>) -> Reply {
    let t = tenant(&s, &headers, &uri)?;
    json(StatusCode::OK, s.logs(&t, &j)?)
}

async fn status(State(s): Shared, headers: HeaderMap, uri: Uri, Path(j): Path<String>) -> Reply {
    let t = tenant(&s, &headers, &uri)?;
    json(StatusCode::OK, s.job_metrics(&t, &j)?.status())
}

async fn slice(
    State(s): Shared,
    headers: HeaderMap,
    uri: Uri,
    Path((j, stream)): Path<(String, String)>,
) -> Reply {
    let t = tenant(&s, &headers, &uri)?;
    json(StatusCode::OK, s.slice(&t, (&j, &stream), &uri)?)
}

async fn prometheus(
    State(s): Shared,
    headers: HeaderMap,
    uri: Uri,
    Path(j): Path<String>,
) -> Reply {
    let t = tenant(&s, &headers, &uri)?;
    let m = s.job_metrics(&t, &j)?;
    Ok((
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        m.prometheus(),
    )
        .into_response())
}

async fn page(State(s): Shared, headers: HeaderMap, uri: Uri, Path(j): Path<String>) -> Reply {
    let t = tenant(&s, &headers, &uri)?;
    s.job_metrics(&t, &j)?;
    Ok(Html(crate::web::PAGE).into_response())
}

async fn index() -> Html<&'static str> {
    Html(INDEX)
}

/// The server's front page: asks for a token, lists the tenant's jobs
/// with links to their pages.
const INDEX: &str = r#"<!doctype html><html><head><meta charset="utf-8"><title>sluice serve</title>
<style>body{font:14px system-ui,sans-serif;margin:2em}td,th{padding:.2em .8em;text-align:left}</style></head>
<body><h1>sluice serve</h1>
<form id="f">Tenant token: <input id="t" size="60"> <button>Show jobs</button></form>
<table id="jobs"></table>
<script>
const f=document.getElementById("f"),t=document.getElementById("t");
t.value=new URLSearchParams(location.search).get("token")||"";
async function show(){const r=await fetch("api/jobs",{headers:{Authorization:"Bearer "+t.value}});
const tb=document.getElementById("jobs");tb.textContent="";
if(!r.ok){tb.textContent=(await r.json()).error;return}
const hdr=tb.insertRow();for(const h of["job","state","batches","plugins"]){const c=document.createElement("th");c.textContent=h;hdr.appendChild(c)}
for(const j of await r.json()){const row=tb.insertRow();const a=document.createElement("a");
a.href="jobs/"+encodeURIComponent(j.name)+"/?token="+encodeURIComponent(t.value);a.textContent=j.name;row.insertCell().appendChild(a);
row.insertCell().textContent=j.status.state+(j.status.error?": "+j.status.error:"");row.insertCell().textContent=j.batches??"";
row.insertCell().textContent=Object.entries(j.plugins).map(([k,v])=>k+"="+v.slice(0,v.indexOf("@")+13)).join(", ")}}
f.onsubmit=e=>{e.preventDefault();show()};if(t.value)show();
</script></body></html>"#;

/// The API's routes over `server`.
pub fn router(server: Arc<Server>) -> Router {
    let upload_limit = server.config().max_plugin_bytes as usize + (1 << 20);
    let files_limit = server.config().max_job_files_bytes as usize * 2 + (1 << 20);
    let request_limit = server.config().max_request_bytes;
    Router::new()
        .route("/", get(index))
        .route(
            "/api/health",
            get(|State(s): Shared| async move {
                axum::Json(serde_json::json!({"status": "ok", "tenants": s.tenants().as_array().map_or(0, Vec::len)}))
            }),
        )
        .route(
            "/api/openapi.json",
            get(|| async { ([(header::CONTENT_TYPE, "application/json")], OPENAPI) }),
        )
        .route("/api/tenants", post(create_tenant).get(list_tenants))
        .route("/api/tenants/{t}", axum::routing::delete(delete_tenant))
        .route("/api/tenants/{t}/limits", put(set_limits))
        .route("/api/tenants/{t}/tokens", post(add_token))
        .route("/api/plugins", get(list_plugins))
        .route(
            "/api/plugins/{name}",
            post(upload_plugin).layer(DefaultBodyLimit::max(upload_limit)),
        )
        .route(
            "/api/jobs",
            post(submit)
                .get(list_jobs)
                .layer(DefaultBodyLimit::max(files_limit)),
        )
        .route("/api/jobs/{j}", get(show_job).delete(delete_job))
        .route("/api/jobs/{j}/stop", post(stop_job))
        .route("/api/jobs/{j}/start", post(start_job))
        .route("/api/jobs/{j}/swap", post(swap))
        .route("/api/jobs/{j}/outputs", get(outputs))
        .route("/api/jobs/{j}/logs", get(logs))
        .route("/api/jobs/{j}/status", get(status))
        .route("/api/jobs/{j}/streams/{s}", get(slice))
        .route("/jobs/{j}/", get(page))
        .route("/jobs/{j}/api/status", get(status))
        .route("/jobs/{j}/metrics", get(prometheus))
        .route("/api/audit", get(audit_log))
        .layer(DefaultBodyLimit::max(request_limit))
        .layer(axum::middleware::from_fn_with_state(server.clone(), guard))
        .with_state(server)
}

/// Serves the API on `listener` until `shutdown` completes.
pub async fn serve(
    server: Arc<Server>,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = router(server).into_make_service_with_connect_info::<Peer>();
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}

/// [`serve`] over TLS with `tls` (see [`crate::tls`]).
pub async fn serve_tls(
    server: Arc<Server>,
    listener: tokio::net::TcpListener,
    tls: Arc<rustls::ServerConfig>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let listener = crate::tls::TlsListener::new(listener, tls)?;
    let app = router(server).into_make_service_with_connect_info::<Peer>();
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}

/// Binds `addr` (port 0: any free port).
pub async fn bind(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr).await
}
