//! `sluice serve`: the multi-tenant job server and its admin token.

use crate::run::stop_on_signals;
use anyhow::{Context, Result, bail};
use sluice::spec;
use sluice_server::{Server, ServerConfig};
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

/// `sluice serve`'s command line.
pub(crate) struct Options {
    pub(crate) data: PathBuf,
    pub(crate) addr: String,
    pub(crate) memory: Option<String>,
    pub(crate) admin_token_file: Option<PathBuf>,
    pub(crate) tenant_defaults: Option<String>,
    /// HTTPS: the certificate chain and key files.
    pub(crate) tls: Option<(PathBuf, PathBuf)>,
}

/// `sluice serve`.
pub(crate) fn serve(options: Options) -> Result<()> {
    let Options {
        data,
        addr,
        memory,
        admin_token_file,
        tenant_defaults,
        tls,
    } = options;
    let tls = tls
        .map(|(cert, key)| sluice_server::tls::server_config(&cert, &key))
        .transpose()
        .map_err(|e| anyhow::anyhow!("--tls-cert/--tls-key: {e}"))?;
    std::fs::create_dir_all(&data).with_context(|| format!("creating {}", data.display()))?;
    let token_path = data.join("admin.token");
    let admin_token = admin_token(&token_path, admin_token_file.as_deref())?;
    let config = server_config(&data, admin_token, memory, tenant_defaults)?;
    let at = addr
        .to_socket_addrs()
        .with_context(|| format!("resolving {addr}"))?
        .next()
        .with_context(|| format!("{addr} resolves to nothing"))?;
    let server = Server::open(config)?;
    let stop = Arc::new(AtomicBool::new(false));
    stop_on_signals(&stop)?;
    let token_in = if admin_token_file.is_some() {
        "the given file".to_string()
    } else {
        token_path.display().to_string()
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()
        .context("starting the server's runtime")?;
    runtime.block_on(serve_api(&server, (at, tls), &data, &token_in, stop))?;
    eprintln!("sluice serve: stopping every job (a last batch and checkpoint each)");
    server.shutdown();
    Ok(())
}

/// The admin token: from `file`, else `$SLUICE_ADMIN_TOKEN`, else
/// `token_path` (created with a new token on first start); trimmed, and
/// at least 16 characters.
fn admin_token(token_path: &Path, file: Option<&Path>) -> Result<String> {
    let admin_token = if let Some(f) = file {
        std::fs::read_to_string(f)
            .with_context(|| format!("reading the admin token from {}", f.display()))?
    } else if let Ok(t) = std::env::var("SLUICE_ADMIN_TOKEN") {
        t
    } else if token_path.exists() {
        std::fs::read_to_string(token_path)
            .with_context(|| format!("reading {}", token_path.display()))?
    } else {
        let t = sluice_server::new_token().map_err(|e| anyhow::anyhow!("{}", e.message))?;
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(token_path)
            .with_context(|| format!("creating {}", token_path.display()))?;
        writeln!(f, "{t}")?;
        t
    };
    let admin_token = admin_token.trim().to_string();
    if admin_token.len() < 16 {
        bail!("the admin token must be at least 16 characters");
    }
    Ok(admin_token)
}

/// The server's configuration from the command line.
fn server_config(
    data: &Path,
    admin_token: String,
    memory: Option<String>,
    tenant_defaults: Option<String>,
) -> Result<ServerConfig> {
    let mut config = ServerConfig::new(data.to_path_buf(), admin_token);
    // Uploads compile in a child process, bounded in time and memory.
    config.compiler = Some(sluice_server::Compiler {
        exe: std::env::current_exe().context("locating the sluice binary")?,
        memory_bytes: 4 << 30,
    });
    if let Some(m) = memory {
        config.memory_reservation =
            spec::parse_size(&m).map_err(|e| anyhow::anyhow!("--memory: {e}"))?;
    }
    if let Some(d) = tenant_defaults {
        config.default_limits = serde_json::from_str(&d).context("--tenant-defaults")?;
    }
    Ok(config)
}

/// Listens on `at`, resumes the jobs that were running and serves the API
/// until `stop` is set.
async fn serve_api(
    server: &Arc<Server>,
    (at, tls): (SocketAddr, Option<Arc<rustls::ServerConfig>>),
    data: &Path,
    token_in: &str,
    stop: Arc<AtomicBool>,
) -> Result<()> {
    let listener = sluice_server::api::bind(at)
        .await
        .with_context(|| format!("listening on {at}"))?;
    let local = listener.local_addr()?;
    server.set_listen_addr(local);
    for (tenant, job, e) in server.resume_jobs() {
        eprintln!(
            "warning: job `{job}` of tenant `{tenant}` was not resumed: {}",
            e.message
        );
    }
    let scheme = if tls.is_some() { "https" } else { "http" };
    eprintln!(
        "sluice serve: {scheme}://{local}/ (data in {}; admin token in {token_in})",
        data.display(),
    );
    let shutdown = async move {
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    match tls {
        Some(tls) => sluice_server::api::serve_tls(server.clone(), listener, tls, shutdown).await,
        None => sluice_server::api::serve(server.clone(), listener, shutdown).await,
    }
    .context("serving the API")
}
