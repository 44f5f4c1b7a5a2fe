//! `sluice feed`: demo text lines served over TCP, and reading feed files.

use anyhow::{Context, Result, bail};
use sluice::feed::{FeedConfig, FeedServer};
use std::net::ToSocketAddrs;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// `sluice feed`: serves lines on `addr` until killed.
pub(crate) fn feed(addr: &str, rate: u32, file: Option<PathBuf>, once: bool) -> Result<()> {
    let lines = match file {
        Some(f) => read_lines(&f)?,
        None => Vec::new(),
    };
    let addr = addr
        .to_socket_addrs()
        .with_context(|| format!("resolving {addr}"))?
        .next()
        .with_context(|| format!("{addr} resolves to nothing"))?;
    let server = FeedServer::start(FeedConfig {
        addr,
        lines_per_second: rate,
        lines,
        repeat: !once,
    })
    .with_context(|| format!("listening on {addr}"))?;
    eprintln!("serving lines on {} (Ctrl-C to stop)", server.local_addr());
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

/// The lines of a demo feed file.
pub(crate) fn read_lines(path: &Path) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading feed lines from {}", path.display()))?;
    let lines: Vec<String> = text.lines().map(str::to_string).collect();
    if lines.is_empty() {
        bail!("{}: no lines to feed", path.display());
    }
    Ok(lines)
}
