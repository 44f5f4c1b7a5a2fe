//! `sluice checkpoint inspect`: a checkpoint directory's files and its
//! newest valid checkpoint.

use anyhow::{Result, bail};
use sluice::checkpoint::{Checkpoint, Checkpoints, read};
use std::path::Path;

/// Lists the checkpoints in `dir` (valid or why not) and summarizes the
/// newest valid one.
pub(crate) fn inspect_checkpoint(dir: &Path) -> Result<()> {
    if !dir.is_dir() {
        bail!("{} is not a directory", dir.display());
    }
    let store = Checkpoints::open(dir)?;
    let files = store.list()?;
    if files.is_empty() {
        println!("no checkpoints in {}", dir.display());
        return Ok(());
    }
    for (_, path) in &files {
        // Valid only with every state shard it names.
        match read(path).and_then(|cp| store.read_shards(&cp).map(|_| cp)) {
            Ok(cp) => println!(
                "{}: valid, batch {} (#{})",
                path.display(),
                cp.batch_time,
                cp.batch_index
            ),
            Err(why) => println!("{}: unusable: {why}", path.display()),
        }
    }
    match store.latest() {
        Ok(Some((cp, _))) => {
            let summary = summarize(&store, &cp)?;
            println!("newest valid:\n{}", serde_json::to_string_pretty(&summary)?);
            Ok(())
        }
        Ok(None) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// A checkpoint as JSON: its batch, plugins, sizes of source and stream
/// state, graph, and the batch log and write-ahead logs that follow it.
fn summarize(store: &Checkpoints, cp: &Checkpoint) -> Result<serde_json::Value> {
    let shards = store.read_shards(cp).map_err(anyhow::Error::msg)?;
    let state: serde_json::Map<String, serde_json::Value> = cp
        .state
        .iter()
        .map(|(id, b)| {
            let size = match shards.get(id) {
                Some(parts) => format!(
                    "{} bytes and {} task shards of {} bytes",
                    b.len(),
                    parts.len(),
                    parts.iter().map(Vec::len).sum::<usize>()
                ),
                None => format!("{} bytes", b.len()),
            };
            (format!("stream {id}"), serde_json::json!(size))
        })
        .collect();
    let summary = serde_json::json!({
        "batch_time": cp.batch_time,
        "batch_index": cp.batch_index,
        "first_batch_time": cp.first_batch_time,
        "plugins": cp.plugins.iter().map(|(n, p)| (n.clone(), serde_json::json!({"version": p.version, "functions": p.functions}))).collect::<serde_json::Map<_, _>>(),
        "sources": cp.sources.iter().map(|s| format!("{} bytes", s.len())).collect::<Vec<_>>(),
        "state": state,
        "graph": cp.graph.lines().collect::<Vec<_>>(),
    });
    let (logged, problems) = store.batches_after(cp.batch_time)?;
    let wal: Vec<String> = std::fs::read_dir(store.wal_dir())
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| {
            let segments = std::fs::read_dir(e.path()).map_or(0, |d| d.count());
            format!("{}: {segments} segment(s)", e.path().display())
        })
        .collect();
    let mut summary = summary;
    summary["batches_logged_after"] =
        serde_json::json!(logged
        .iter()
        .map(|r| serde_json::json!({"batch_time": r.batch_time, "batch_index": r.batch_index}))
        .collect::<Vec<_>>());
    summary["batch_log_problems"] = serde_json::json!(problems);
    summary["write_ahead_logs"] = serde_json::json!(wal);
    Ok(summary)
}
