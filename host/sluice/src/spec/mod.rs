//! Job specs (TOML) → a ready-to-run [`StreamingContext`]. Every error names
//! the file, the line and the field at fault.
//!
//! ```toml
//! [job]
//! name = "wordcount"
//! batch_interval = "1s"
//! workers = 2                # default: one per core
//! # clock = "manual"         # default: manual when every source is a queue
//! # checkpoint = "ckpt"      # resume from / checkpoint into this directory (or --checkpoint)
//! # checkpoint_interval = "10s"  # full checkpoints; default max(10s, 5 × the longest slide)
//! # backpressure = true     # a PID controller limits receivers to what the job keeps up with
//! # initial_rate = 1000     # records/s until its first estimate
//!
//! [plugins.wordcount]
//! path = "../plugins/target/wasm32-wasip2/release/wordcount.wasm"  # relative to this file
//! memory = "128MiB"          # optional limits (DESIGN §4 defaults)
//! deadline = "1s"
//! max_output = "64MiB"
//! # dir = "out"              # a directory it may read and write (its `.`); nothing by default
//! # connect = ["127.0.0.1:9000"]  # endpoints it may connect to over TCP; none by default
//!
//! [sources.lines]
//! type = "socket"            # socket (host, port, demo_lines = file served by --feed)
//!                            # | queue (path, stream) | text_files (path = dir, include_existing,
//!                            #   ledger = file remembering the names read; default `.sluice-JOB-SOURCE.read` in dir)
//!                            # | generator (rate, words_per_line, vocabulary, seed)
//! host = "127.0.0.1"
//! port = 9999
//! # max_rate = 5000         # socket: lines/s at most (also non_utf8, max_line_bytes,
//!                            #   max_buffered = "64MiB": unbatched input held, bounds the rate)
//!
//! [streams.words]
//! from = "lines"
//! op = "flat_map"            # map | flat_map | filter | map_values | flat_map_values | reduce_by_key
//!                            # | combine_by_key (create, merge_value, merge_combiners) | group_by_key
//!                            # | map_partitions | transform | reduce | count | count_by_value | glom | repartition
//!                            # | union | join | left_outer_join | right_outer_join | full_outer_join | cogroup
//!                            # | transform_with (from = [left, right])
//!                            # | window | reduce_by_key_and_window | reduce_by_window | count_by_window
//!                            #   | count_by_value_and_window (window = "30s", slide = "10s",
//!                            #   inverse = "plugin.fn", filter = "plugin.fn", partitions)
//!                            # | update_state_by_key (function, partitions, initial_state = "file.json")
//!                            # | map_with_state (function, partitions, timeout = N batches)
//! function = "wordcount.split"
//!
//! [[outputs]]
//! stream = "words"
//! type = "pprint"            # pprint (num) | jsonl (path) | text_files (prefix, suffix)
//! num = 10
//! ```

use crate::error::{Error, Result};
use crate::func::Func;
use crate::graph::{DStream, StreamingContext};
use crate::plugin::{Limits, LoadPlugins, Plugin};
use crate::receiver::generator::GeneratorConfig;
use crate::receiver::queue::read_queue_file;
use crate::receiver::socket::{NonUtf8Policy, SocketConfig};
use crate::time::{ManualClock, SystemClock, parse_duration};
use serde::Deserialize;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use toml::Spanned;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SpecFile {
    job: Spanned<JobSection>,
    #[serde(default)]
    plugins: BTreeMap<Spanned<String>, Spanned<PluginSection>>,
    #[serde(default)]
    sources: BTreeMap<Spanned<String>, Spanned<SourceSection>>,
    #[serde(default)]
    streams: BTreeMap<Spanned<String>, Spanned<StreamSection>>,
    #[serde(default)]
    outputs: Vec<Spanned<OutputSection>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct JobSection {
    name: Option<String>,
    batch_interval: Spanned<String>,
    workers: Option<Spanned<usize>>,
    clock: Option<Spanned<String>>,
    /// Checkpoint directory, relative to the spec.
    checkpoint: Option<Spanned<String>>,
    checkpoint_interval: Option<Spanned<String>>,
    /// Spark's backpressure: a PID controller sets the receiving rate.
    backpressure: Option<bool>,
    /// Records/s receivers take until the controller's first estimate.
    initial_rate: Option<Spanned<u64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PluginSection {
    path: Spanned<String>,
    memory: Option<Spanned<String>>,
    deadline: Option<Spanned<String>>,
    max_output: Option<Spanned<String>>,
    /// A directory (relative to the spec) the plugin may read and write,
    /// as its current directory.
    dir: Option<Spanned<String>>,
    /// `host:port` endpoints the plugin may connect to.
    connect: Option<Spanned<Vec<String>>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SourceSection {
    #[serde(rename = "type")]
    kind: Spanned<String>,
    host: Option<Spanned<String>>,
    port: Option<Spanned<u16>>,
    max_line_bytes: Option<Spanned<String>>,
    /// Socket: unbatched input held at most (a size).
    max_buffered: Option<Spanned<String>>,
    /// Socket: at most this many lines per second.
    max_rate: Option<Spanned<u64>>,
    non_utf8: Option<Spanned<String>>,
    path: Option<Spanned<String>>,
    stream: Option<Spanned<String>>,
    partitions: Option<Spanned<usize>>,
    rate: Option<Spanned<u64>>,
    words_per_line: Option<Spanned<usize>>,
    vocabulary: Option<Spanned<Vec<String>>>,
    seed: Option<Spanned<u64>>,
    include_existing: Option<Spanned<bool>>,
    /// text_files sources: where the names read are remembered across
    /// restarts (default: hidden in the directory; "" for memory only).
    ledger: Option<Spanned<String>>,
    /// Socket sources: a file of lines that `sluice run --feed` serves.
    demo_lines: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct StreamSection {
    /// A stream name, or a list of them (`union`).
    from: Spanned<toml::Value>,
    op: Spanned<String>,
    function: Option<Spanned<String>>,
    partitions: Option<Spanned<usize>>,
    /// combine_by_key's three functions.
    create: Option<Spanned<String>>,
    merge_value: Option<Spanned<String>>,
    merge_combiners: Option<Spanned<String>>,
    /// Windows: length and slide (default: the parent's slide).
    window: Option<Spanned<String>>,
    slide: Option<Spanned<String>>,
    /// Windowed reductions: the inverse function and the filter.
    inverse: Option<Spanned<String>>,
    filter: Option<Spanned<String>>,
    /// update_state_by_key: a JSON file of `[key, state]` pairs.
    initial_state: Option<Spanned<String>>,
    /// map_with_state: batches without values after which a key times out.
    timeout: Option<Spanned<u64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct OutputSection {
    stream: Spanned<String>,
    #[serde(rename = "type")]
    kind: Spanned<String>,
    num: Option<Spanned<usize>>,
    path: Option<Spanned<String>>,
    prefix: Option<Spanned<String>>,
    suffix: Option<Spanned<String>>,
    function: Option<Spanned<String>>,
}

/// Options given on the command line that override the spec.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// Worker threads.
    pub workers: Option<usize>,
    /// Puts every file output (jsonl, text files) in this directory instead.
    pub output_dir: Option<PathBuf>,
    /// Checkpoint directory (overrides `job.checkpoint`).
    pub checkpoint: Option<PathBuf>,
    /// Start over: remove the checkpoints instead of resuming.
    pub fresh: bool,
    /// Confine the spec to the directory it is in (a tenant's job on a
    /// server): every file it names — plugins, inputs, ledgers, initial
    /// state, outputs, checkpoints — must be a relative path that stays
    /// inside (no `..`, no absolute path, no symlink out), and socket
    /// sources may connect only to the `host:port` pairs granted here.
    pub confine: Option<Grants>,
    /// Plugin files chosen by whoever runs the spec (a server's uploaded
    /// plugins), by the spec's plugin name: used instead of its `path`.
    pub plugin_paths: BTreeMap<String, PathBuf>,
    /// The most one plugin instance may use (a tenant's limits): the
    /// limits of plugins that set none, and a ceiling the spec's `memory`,
    /// `deadline` and `max_output` may lower but not raise.
    pub limits: Option<Limits>,
    /// The most worker threads the job may have (the spec's `workers` and
    /// the default are capped to it).
    pub max_workers: Option<usize>,
    /// Where `pprint` outputs print (default: standard output).
    pub pprint: Option<PprintTarget>,
    /// The wasm runtime to load plugins into (default: the process's).
    pub runtime: Option<Arc<crate::plugin::Runtime>>,
    /// The CPU share the job's batches are charged to (a tenant's).
    pub cpu_share: Option<Arc<crate::share::CpuShare>>,
}

/// Makes the writer each `pprint` output prints to.
#[derive(Clone)]
pub struct PprintTarget(pub Arc<dyn Fn() -> Box<dyn std::io::Write + Send> + Send + Sync>);

impl std::fmt::Debug for PprintTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PprintTarget")
    }
}

/// What a confined spec may reach beyond its own directory.
#[derive(Debug, Clone, Default)]
pub struct Grants {
    /// `host:port` pairs socket sources may connect to.
    pub sockets: Vec<String>,
    /// Every plugin must come from [`Overrides::plugin_paths`] (a server's
    /// uploads, validated on upload), not from a file beside the spec.
    pub uploaded_plugins_only: bool,
}

/// A job built from a spec, ready to run.
pub struct Job {
    /// The job's name.
    pub name: String,
    /// The context holding its graph.
    pub context: StreamingContext,
    /// Every socket source (for `sluice run --feed`).
    pub socket_addrs: Vec<SocketFeed>,
    /// The plugins it loaded, by job name.
    pub plugins: BTreeMap<String, Arc<Plugin>>,
}

/// A socket source as `sluice run --feed` serves it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SocketFeed {
    /// Host the source connects to.
    pub host: String,
    /// Port the source connects to.
    pub port: u16,
    /// Unbatched input it may hold (its memory, for admission).
    pub buffered_bytes: u64,
    /// The source's `demo_lines` file: what `--feed` serves (default: the
    /// built-in corpus).
    pub demo_lines: Option<PathBuf>,
}

struct Ctx<'a> {
    path: &'a Path,
    text: &'a str,
}

/// Why `p` (relative to the spec's folder `root`) may not be used by a
/// confined spec, if it may not.
fn escapes(root: &Path, p: &str) -> Option<String> {
    let path = Path::new(p);
    if path.is_absolute() {
        return Some(format!(
            "`{p}`: absolute paths are not allowed (use a path inside the job's directory)"
        ));
    }
    for c in path.components() {
        match c {
            std::path::Component::Normal(_) | std::path::Component::CurDir => {}
            _ => return Some(format!("`{p}`: `..` would leave the job's directory")),
        }
    }
    // A symlink on the way must not lead out: resolve what exists of it.
    let Ok(root) = root.canonicalize() else {
        return Some(format!(
            "the job's directory {} cannot be resolved",
            root.display()
        ));
    };
    let mut existing = root.join(path);
    while !existing.exists() {
        match existing.parent() {
            Some(parent) => existing = parent.to_path_buf(),
            None => break,
        }
    }
    match existing.canonicalize() {
        Ok(real) if real.starts_with(&root) => None,
        Ok(real) => Some(format!(
            "`{p}` leads out of the job's directory (to {})",
            real.display()
        )),
        Err(e) => Some(format!("`{p}`: {e}")),
    }
}

/// The checks of a confined spec ([`Overrides::confine`]).
fn check_confined(cx: &Ctx, spec: &SpecFile, grants: &Grants, overrides: &Overrides) -> Result<()> {
    let root = cx
        .path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut paths: Vec<(&Spanned<String>, String)> = Vec::new();
    if let Some(c) = &spec.job.get_ref().checkpoint {
        paths.push((c, "job.checkpoint".to_string()));
    }
    for (name, p) in &spec.plugins {
        if overrides.plugin_paths.contains_key(name.get_ref()) {
            continue;
        }
        let field = format!("plugins.{}.path", name.get_ref());
        if grants.uploaded_plugins_only {
            return cx.err(
                p.get_ref().path.span(),
                &field,
                format!(
                    "plugin `{}` must be an uploaded plugin: upload it and name it in the submission's `plugins`",
                    name.get_ref()
                ),
            );
        }
        paths.push((&p.get_ref().path, field));
    }
    for (name, p) in &spec.plugins {
        if let Some(d) = &p.get_ref().dir {
            paths.push((d, format!("plugins.{}.dir", name.get_ref())));
        }
        if let Some(c) = &p.get_ref().connect {
            for endpoint in c.get_ref() {
                if !grants.sockets.contains(endpoint) {
                    return cx.err(
                        c.span(),
                        &format!("plugins.{}.connect", name.get_ref()),
                        format!("connecting to {endpoint} is not granted to this job"),
                    );
                }
            }
        }
    }
    for (name, src) in &spec.sources {
        let sec = src.get_ref();
        for (value, field) in [
            (&sec.path, "path"),
            (&sec.ledger, "ledger"),
            (&sec.demo_lines, "demo_lines"),
        ] {
            if let Some(v) = value.as_ref().filter(|v| !v.get_ref().is_empty()) {
                paths.push((v, format!("sources.{}.{field}", name.get_ref())));
            }
        }
        if sec.kind.get_ref() == "socket" {
            let host = sec
                .host
                .as_ref()
                .map_or("127.0.0.1", |h| h.get_ref().as_str());
            let port = sec.port.as_ref().map_or(0, |p| *p.get_ref());
            let endpoint = format!("{host}:{port}");
            if !grants.sockets.contains(&endpoint) {
                return cx.err(
                    sec.port.as_ref().map_or(src.span(), |p| p.span()),
                    &format!("sources.{}.port", name.get_ref()),
                    format!("connecting to {endpoint} is not granted to this job"),
                );
            }
        }
    }
    for (name, st) in &spec.streams {
        if let Some(v) = &st.get_ref().initial_state {
            paths.push((v, format!("streams.{}.initial_state", name.get_ref())));
        }
    }
    for (i, o) in spec.outputs.iter().enumerate() {
        let sec = o.get_ref();
        for (value, field) in [(&sec.path, "path"), (&sec.prefix, "prefix")] {
            if let Some(v) = value {
                paths.push((v, format!("outputs[{i}].{field}")));
            }
        }
    }
    for (value, field) in paths {
        if let Some(why) = escapes(root, value.get_ref()) {
            return cx.err(value.span(), &field, why);
        }
    }
    Ok(())
}

impl Ctx<'_> {
    /// A path from the spec: relative paths are relative to the spec's folder.
    fn resolve(&self, p: &str) -> PathBuf {
        let p = Path::new(p);
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.path
                .parent()
                .map(Path::to_path_buf)
                .unwrap_or_default()
                .join(p)
        }
    }
}

impl Ctx<'_> {
    fn line(&self, span: std::ops::Range<usize>) -> usize {
        let end = span.start.min(self.text.len());
        self.text[..end].bytes().filter(|&b| b == b'\n').count() + 1
    }

    fn err<T>(
        &self,
        span: std::ops::Range<usize>,
        field: &str,
        message: impl Into<String>,
    ) -> Result<T> {
        Err(Error::Spec {
            path: self.path.to_path_buf(),
            line: self.line(span),
            field: field.to_string(),
            message: message.into(),
        })
    }
}

/// Parses a size such as `128MiB`, `64MB`, `1GiB`, `4096` (bytes).
pub fn parse_size(s: &str) -> std::result::Result<u64, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("`{s}` is not a size (e.g. `128MiB`)"))?;
    let mult: u64 = match unit.trim() {
        "" | "B" => 1,
        "KiB" | "K" | "k" => 1 << 10,
        "KB" | "kB" => 1000,
        "MiB" | "M" => 1 << 20,
        "MB" => 1_000_000,
        "GiB" | "G" => 1 << 30,
        "GB" => 1_000_000_000,
        u => {
            return Err(format!(
                "unknown unit `{u}` in `{s}` (use B, KiB, MiB, GiB)"
            ));
        }
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("`{s}` is too large"))
}

/// Reads and builds the job at `path`.
pub fn load(path: &Path, overrides: &Overrides) -> Result<Job> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::io(format!("reading job spec {}", path.display()), e))?;
    build(path, &text, overrides)
}

/// Builds the job from spec text (`path` locates relative files and names errors).
pub fn build(path: &Path, text: &str, overrides: &Overrides) -> Result<Job> {
    let cx = Ctx { path, text };
    let spec: SpecFile = toml::from_str(text).map_err(|e| Error::Spec {
        path: path.to_path_buf(),
        line: e.span().map_or(0, |s| cx.line(s)),
        field: "spec".to_string(),
        message: e.message().to_string(),
    })?;
    let resolve = |p: &str| cx.resolve(p);
    if let Some(grants) = &overrides.confine {
        check_confined(&cx, &spec, grants, overrides)?;
    }

    let job = spec.job.get_ref();
    let interval = parse_duration(job.batch_interval.get_ref())
        .or_else(|m| cx.err(job.batch_interval.span(), "job.batch_interval", m))?;
    if interval.is_zero() {
        return cx.err(
            job.batch_interval.span(),
            "job.batch_interval",
            "must be greater than zero",
        );
    }
    if spec.sources.is_empty() {
        return cx.err(spec.job.span(), "sources", "the job has no sources");
    }
    if spec.outputs.is_empty() {
        return cx.err(
            spec.job.span(),
            "outputs",
            "no output operations registered, so nothing to execute (add an [[outputs]] entry)",
        );
    }
    let all_queues = spec
        .sources
        .values()
        .all(|s| s.get_ref().kind.get_ref() == "queue");
    let manual = match &job.clock {
        None => all_queues,
        Some(c) => match c.get_ref().as_str() {
            "manual" => true,
            "system" => false,
            other => {
                return cx.err(
                    c.span(),
                    "job.clock",
                    format!("unknown clock `{other}` (use system or manual)"),
                );
            }
        },
    };
    let job_name = job.name.clone().unwrap_or_else(|| {
        path.file_stem()
            .map_or("job".to_string(), |s| s.to_string_lossy().into_owned())
    });
    let mut ssc = StreamingContext::new(interval).with_name(&job_name);
    if let Some(rt) = &overrides.runtime {
        ssc = ssc.with_runtime(rt.clone());
    }
    if let Some(share) = &overrides.cpu_share {
        ssc = ssc.with_cpu_share(share.clone());
    }
    if manual {
        ssc = ssc.with_clock(Arc::new(ManualClock::new(0)));
    } else {
        ssc = ssc.with_clock(Arc::new(SystemClock));
    }
    let workers = overrides
        .workers
        .or(job.workers.as_ref().map(|w| *w.get_ref()));
    let workers = match overrides.max_workers {
        Some(max) => Some(workers.map_or(max, |w| w.min(max))),
        None => workers,
    };
    if let Some(w) = workers {
        if w == 0 {
            return cx.err(
                job.workers.as_ref().map_or(0..0, |w| w.span()),
                "job.workers",
                "must be at least 1",
            );
        }
        ssc = ssc.with_workers(w);
    }
    let checkpoint = overrides
        .checkpoint
        .clone()
        .or_else(|| job.checkpoint.as_ref().map(|c| resolve(c.get_ref())));
    if let Some(dir) = checkpoint {
        ssc = ssc.with_checkpoint(dir).with_fresh_start(overrides.fresh);
    }
    if let Some(every) = &job.checkpoint_interval {
        let d = parse_duration(every.get_ref())
            .or_else(|m| cx.err(every.span(), "job.checkpoint_interval", m))?;
        if d.is_zero() {
            return cx.err(every.span(), "job.checkpoint_interval", "must be positive");
        }
        ssc = ssc.with_checkpoint_interval(d);
    }
    if job.backpressure == Some(true) {
        ssc = ssc.with_backpressure(job.initial_rate.as_ref().map(|r| *r.get_ref() as f64));
    } else if let Some(r) = &job.initial_rate {
        return cx.err(r.span(), "job.initial_rate", "needs backpressure = true");
    }
    let default_partitions =
        workers.unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()));

    // Plugins.
    let mut plugins = BTreeMap::new();
    for (name, p) in &spec.plugins {
        let field = |f: &str| format!("plugins.{}.{f}", name.get_ref());
        let sec = p.get_ref();
        let ceiling = overrides.limits;
        let mut limits = ceiling.unwrap_or_default();
        let over = |what: &str, asked: String, most: String| {
            format!("{asked} is over this job's limit for {what} ({most})")
        };
        if let Some(m) = &sec.memory {
            limits.memory_bytes =
                parse_size(m.get_ref()).or_else(|e| cx.err(m.span(), &field("memory"), e))?;
            if let Some(c) = ceiling.filter(|c| limits.memory_bytes > c.memory_bytes) {
                let most = format!("{} MiB", c.memory_bytes >> 20);
                return cx.err(
                    m.span(),
                    &field("memory"),
                    over("memory", m.get_ref().clone(), most),
                );
            }
        }
        if let Some(d) = &sec.deadline {
            limits.call_deadline =
                parse_duration(d.get_ref()).or_else(|e| cx.err(d.span(), &field("deadline"), e))?;
            if let Some(c) = ceiling.filter(|c| limits.call_deadline > c.call_deadline) {
                let most = format!("{:?}", c.call_deadline);
                return cx.err(
                    d.span(),
                    &field("deadline"),
                    over("the call deadline", d.get_ref().clone(), most),
                );
            }
        }
        if let Some(o) = &sec.max_output {
            limits.output_bytes =
                parse_size(o.get_ref()).or_else(|e| cx.err(o.span(), &field("max_output"), e))?;
            if let Some(c) = ceiling.filter(|c| limits.output_bytes > c.output_bytes) {
                let most = format!("{} bytes", c.output_bytes);
                return cx.err(
                    o.span(),
                    &field("max_output"),
                    over("output per call", o.get_ref().clone(), most),
                );
            }
        }
        let path = match overrides.plugin_paths.get(name.get_ref()) {
            Some(p) => p.clone(),
            None => resolve(sec.path.get_ref()),
        };
        let mut capabilities = crate::plugin::Capabilities::default();
        if let Some(d) = &sec.dir {
            let dir = resolve(d.get_ref());
            std::fs::create_dir_all(&dir).or_else(|e| {
                cx.err(
                    d.span(),
                    &field("dir"),
                    format!("cannot create {}: {e}", dir.display()),
                )
            })?;
            capabilities.dir = Some(dir);
        }
        if let Some(c) = &sec.connect {
            for endpoint in c.get_ref() {
                let addr = endpoint.parse::<std::net::SocketAddr>().or_else(|_| {
                    cx.err(
                        c.span(),
                        &field("connect"),
                        format!("`{endpoint}` is not an IP address and port (e.g. 127.0.0.1:9000)"),
                    )
                })?;
                capabilities.connect.push(addr);
            }
        }
        let plugin = ssc
            .load_plugin_granted(name.get_ref(), path, limits, capabilities)
            .or_else(|e| cx.err(sec.path.span(), &field("path"), e.to_string()))?;
        plugins.insert(name.get_ref().clone(), plugin);
    }

    // Sources.
    let mut streams: HashMap<String, DStream> = HashMap::new();
    let mut socket_addrs = Vec::new();
    for (name, s) in &spec.sources {
        let field = |f: &str| format!("sources.{}.{f}", name.get_ref());
        let sec = s.get_ref();
        let partitions = match &sec.partitions {
            Some(p) if *p.get_ref() == 0 => {
                return cx.err(p.span(), &field("partitions"), "must be at least 1");
            }
            Some(p) => Some(*p.get_ref()),
            None => None,
        };
        let stream = match sec.kind.get_ref().as_str() {
            "socket" => {
                let mut config = SocketConfig::default();
                if let Some(h) = &sec.host {
                    config.host = h.get_ref().clone();
                }
                match &sec.port {
                    Some(p) => config.port = *p.get_ref(),
                    None => {
                        return cx.err(s.span(), &field("port"), "a socket source needs a port");
                    }
                }
                if let Some(r) = &sec.max_rate {
                    if *r.get_ref() == 0 {
                        return cx.err(r.span(), &field("max_rate"), "must be at least 1 line/s");
                    }
                    config.max_rate = Some(*r.get_ref());
                }
                if let Some(m) = &sec.max_line_bytes {
                    config.max_line_bytes = parse_size(m.get_ref())
                        .or_else(|e| cx.err(m.span(), &field("max_line_bytes"), e))?
                        as usize;
                }
                if let Some(m) = &sec.max_buffered {
                    let bytes = parse_size(m.get_ref())
                        .or_else(|e| cx.err(m.span(), &field("max_buffered"), e))?;
                    if bytes < 1 << 20 {
                        return cx.err(m.span(), &field("max_buffered"), "must be at least 1MiB");
                    }
                    config.max_buffered_bytes = bytes as usize;
                }
                if let Some(p) = &sec.non_utf8 {
                    config.non_utf8 = match p.get_ref().as_str() {
                        "replace" => NonUtf8Policy::Replace,
                        "skip" => NonUtf8Policy::Skip,
                        other => {
                            return cx.err(
                                p.span(),
                                &field("non_utf8"),
                                format!("unknown policy `{other}` (use replace or skip)"),
                            );
                        }
                    };
                }
                socket_addrs.push(SocketFeed {
                    host: config.host.clone(),
                    port: config.port,
                    buffered_bytes: config.max_buffered_bytes as u64,
                    demo_lines: sec.demo_lines.as_ref().map(|d| resolve(d.get_ref())),
                });
                ssc.socket_text_stream_with(config, partitions.unwrap_or(default_partitions))
            }
            "queue" => {
                let Some(p) = &sec.path else {
                    return cx.err(
                        s.span(),
                        &field("path"),
                        "a queue source needs a path to a JSON file of batches",
                    );
                };
                let q = read_queue_file(
                    &resolve(p.get_ref()),
                    sec.stream.as_ref().map(|s| s.get_ref().as_str()),
                )
                .or_else(|e| cx.err(p.span(), &field("path"), e.to_string()))?;
                let parts = partitions.or(q.partitions).unwrap_or(2);
                ssc.queue_stream(q.batches, parts)
            }
            "text_files" => {
                let Some(p) = &sec.path else {
                    return cx.err(
                        s.span(),
                        &field("path"),
                        "a text_files source needs the path of a directory to watch",
                    );
                };
                let dir = resolve(p.get_ref());
                if !dir.is_dir() {
                    return cx.err(
                        p.span(),
                        &field("path"),
                        format!("{} is not a directory", dir.display()),
                    );
                }
                let include = sec.include_existing.as_ref().is_some_and(|b| *b.get_ref());
                let ledger = match &sec.ledger {
                    Some(l) if l.get_ref().is_empty() => None,
                    Some(l) => Some(resolve(l.get_ref())),
                    None => Some(dir.join(format!(".sluice-{}-{}.read", job_name, name.get_ref()))),
                };
                let parts = partitions.unwrap_or(default_partitions);
                match ledger {
                    Some(l) => ssc.text_file_stream_remembered(&dir, include, parts, l),
                    None => ssc.text_file_stream_with(&dir, include, parts),
                }
            }
            "generator" => {
                let mut config = GeneratorConfig::default();
                if let Some(r) = &sec.rate {
                    config.lines_per_second = *r.get_ref();
                }
                if let Some(w) = &sec.words_per_line {
                    if *w.get_ref() == 0 {
                        return cx.err(w.span(), &field("words_per_line"), "must be at least 1");
                    }
                    config.words_per_line = *w.get_ref();
                }
                if let Some(v) = &sec.vocabulary {
                    if v.get_ref().is_empty() {
                        return cx.err(
                            v.span(),
                            &field("vocabulary"),
                            "must list at least one word",
                        );
                    }
                    config.vocabulary = v.get_ref().clone();
                }
                if let Some(s) = &sec.seed {
                    config.seed = *s.get_ref();
                }
                ssc.generator_stream(config, partitions.unwrap_or(default_partitions))
            }
            other => {
                return cx.err(
                    sec.kind.span(),
                    &field("type"),
                    format!(
                        "unknown source type `{other}` (use socket, queue, text_files or generator)"
                    ),
                );
            }
        };
        streams.insert(name.get_ref().clone(), stream.named(name.get_ref()));
    }

    // Streams, resolved in dependency order; a cycle is an error.
    let defs: HashMap<&str, &Spanned<StreamSection>> = spec
        .streams
        .iter()
        .map(|(k, v)| (k.get_ref().as_str(), v))
        .collect();
    for name in spec.streams.keys() {
        if streams.contains_key(name.get_ref()) {
            return cx.err(
                name.span(),
                &format!("streams.{}", name.get_ref()),
                "a source already has this name",
            );
        }
    }
    let mut used: std::collections::HashSet<String> = std::collections::HashSet::new();
    for name in spec.streams.keys() {
        let mut chain: Vec<&str> = Vec::new();
        resolve_stream(
            name.get_ref(),
            &defs,
            &mut streams,
            &plugins,
            &cx,
            &mut chain,
            &mut used,
        )?;
    }

    // Outputs; file outputs go to `overrides.output_dir` when it is given.
    let output_path = |p: &str| match &overrides.output_dir {
        Some(dir) => dir.join(Path::new(p).file_name().unwrap_or_default()),
        None => resolve(p),
    };
    for (i, o) in spec.outputs.iter().enumerate() {
        let field = |f: &str| format!("outputs[{i}].{f}");
        let sec = o.get_ref();
        let Some(stream) = streams.get(sec.stream.get_ref()) else {
            return cx.err(
                sec.stream.span(),
                &field("stream"),
                unknown_stream(sec.stream.get_ref(), &streams),
            );
        };
        used.insert(sec.stream.get_ref().clone());
        match sec.kind.get_ref().as_str() {
            "pprint" => {
                let num = sec.num.as_ref().map_or(10, |n| *n.get_ref());
                match &overrides.pprint {
                    Some(target) => stream.pprint_to(num, (target.0)()),
                    None => stream.pprint(num),
                }
            }
            "jsonl" => {
                let Some(p) = &sec.path else {
                    return cx.err(o.span(), &field("path"), "a jsonl output needs a path");
                };
                stream.save_jsonl(output_path(p.get_ref()));
            }
            "text_files" => {
                let Some(p) = &sec.prefix else {
                    return cx.err(
                        o.span(),
                        &field("prefix"),
                        "a text_files output needs a prefix",
                    );
                };
                let prefix = output_path(p.get_ref());
                stream
                    .save_as_text_files(prefix, sec.suffix.as_ref().map(|s| s.get_ref().as_str()));
            }
            "object_files" => {
                let Some(p) = &sec.prefix else {
                    return cx.err(
                        o.span(),
                        &field("prefix"),
                        "an object_files output needs a prefix",
                    );
                };
                let prefix = output_path(p.get_ref());
                stream.save_as_object_files(prefix);
            }
            "sink" => {
                let Some(f) = &sec.function else {
                    return cx.err(
                        o.span(),
                        &field("function"),
                        "a sink output needs a function (`plugin.function`)",
                    );
                };
                let func = plugin_function(f, &plugins, &cx, &field("function"))?;
                if func.kind() != sluice_sdk::Kind::Sink {
                    return cx.err(
                        f.span(),
                        &field("function"),
                        format!(
                            "`{}` is a {} function, but a sink output needs a sink function",
                            f.get_ref(),
                            func.kind()
                        ),
                    );
                }
                stream.foreach_partition(func);
            }
            other => {
                return cx.err(
                    sec.kind.span(),
                    &field("type"),
                    format!(
                        "unknown output type `{other}` (use pprint, jsonl, text_files, object_files or sink)"
                    ),
                );
            }
        }
    }
    for (name, s) in spec
        .sources
        .iter()
        .map(|(n, s)| (n, s.span()))
        .chain(spec.streams.iter().map(|(n, s)| (n, s.span())))
    {
        if !used.contains(name.get_ref()) {
            return cx.err(
                s,
                name.get_ref(),
                "this stream is not used by any stream or output",
            );
        }
    }
    Ok(Job {
        name: job_name,
        context: ssc,
        socket_addrs,
        plugins,
    })
}

/// Resolves `plugin.function` against the job's plugins.
fn plugin_function(
    f: &Spanned<String>,
    plugins: &BTreeMap<String, Arc<Plugin>>,
    cx: &Ctx<'_>,
    field: &str,
) -> Result<Func> {
    let Some((plugin, fname)) = f.get_ref().split_once('.') else {
        return cx.err(
            f.span(),
            field,
            format!("`{}` is not of the form plugin.function", f.get_ref()),
        );
    };
    let Some(p) = plugins.get(plugin) else {
        let known: Vec<&str> = plugins.keys().map(String::as_str).collect();
        return cx.err(
            f.span(),
            field,
            format!("unknown plugin `{plugin}` (declared: {})", known.join(", ")),
        );
    };
    p.func(fname).or_else(|e| {
        // The spec error already says where; keep only what is wrong.
        let message = match e {
            Error::Plan(m) => m,
            other => other.to_string(),
        };
        cx.err(f.span(), field, message)
    })
}

fn unknown_stream(name: &str, streams: &HashMap<String, DStream>) -> String {
    let mut known: Vec<&str> = streams.keys().map(String::as_str).collect();
    known.sort_unstable();
    format!(
        "unknown stream `{name}` (defined so far: {})",
        known.join(", ")
    )
}

#[allow(clippy::too_many_arguments)]
fn resolve_stream<'a>(
    name: &'a str,
    defs: &HashMap<&'a str, &'a Spanned<StreamSection>>,
    streams: &mut HashMap<String, DStream>,
    plugins: &BTreeMap<String, Arc<Plugin>>,
    cx: &Ctx<'_>,
    chain: &mut Vec<&'a str>,
    used: &mut std::collections::HashSet<String>,
) -> Result<DStream> {
    if let Some(s) = streams.get(name) {
        return Ok(s.clone());
    }
    let Some(def) = defs.get(name) else {
        return Err(Error::Internal(format!("stream `{name}` is not defined")));
    };
    let field = |f: &str| format!("streams.{name}.{f}");
    if chain.contains(&name) {
        chain.push(name);
        return cx.err(
            def.span(),
            &field("from"),
            format!("streams form a cycle: {}", chain.join(" -> ")),
        );
    }
    chain.push(name);
    let sec = def.get_ref();
    let from: Vec<&str> = match sec.from.get_ref() {
        toml::Value::String(s) => vec![s.as_str()],
        toml::Value::Array(a) if !a.is_empty() => {
            let names: Option<Vec<&str>> = a.iter().map(toml::Value::as_str).collect();
            match names {
                Some(n) => n,
                None => {
                    return cx.err(
                        sec.from.span(),
                        &field("from"),
                        "must be a stream name or a list of them",
                    );
                }
            }
        }
        _ => {
            return cx.err(
                sec.from.span(),
                &field("from"),
                "must be a stream name or a list of them",
            );
        }
    };
    let mut parents = Vec::with_capacity(from.len());
    for f in &from {
        if !defs.contains_key(f) && !streams.contains_key(*f) {
            return cx.err(sec.from.span(), &field("from"), unknown_stream(f, streams));
        }
        parents.push(resolve_stream(f, defs, streams, plugins, cx, chain, used)?);
        used.insert(f.to_string());
    }
    chain.pop();
    let op = sec.op.get_ref().as_str();
    let joins = [
        "join",
        "left_outer_join",
        "right_outer_join",
        "full_outer_join",
        "cogroup",
        "transform_with",
    ];
    let arity_error = if op == "union" && parents.len() < 2 {
        Some("a union needs a list of at least two streams".to_string())
    } else if joins.contains(&op) && parents.len() != 2 {
        Some(format!(
            "`{op}` needs a list of exactly two streams: [left, right]"
        ))
    } else if op != "union" && !joins.contains(&op) && parents.len() > 1 {
        Some(format!(
            "`{op}` takes one stream; only union, the joins and transform_with take a list"
        ))
    } else {
        None
    };
    if let Some(message) = arity_error {
        return cx.err(sec.from.span(), &field("from"), message);
    }
    let parent = parents[0].clone();
    let partitions = |default: usize| -> Result<usize> {
        match &sec.partitions {
            Some(p) if *p.get_ref() == 0 => {
                cx.err(p.span(), &field("partitions"), "must be at least 1")
            }
            Some(p) => Ok(*p.get_ref()),
            None => Ok(default),
        }
    };
    let named_func =
        |key: &str, f: &Option<Spanned<String>>, want: sluice_sdk::Kind| -> Result<Func> {
            let Some(f) = f else {
                return cx.err(
                    def.span(),
                    &field(key),
                    format!("`{}` needs `{key} = \"plugin.function\"`", sec.op.get_ref()),
                );
            };
            let func = plugin_function(f, plugins, cx, &field(key))?;
            let ok = func.kind() == want
                || (want == sluice_sdk::Kind::FlatMap && func.kind() == sluice_sdk::Kind::Map);
            if !ok {
                return cx.err(
                    f.span(),
                    &field(key),
                    format!(
                        "`{}` is a {} function, but `{}` needs a {} function",
                        f.get_ref(),
                        func.kind(),
                        sec.op.get_ref(),
                        want
                    ),
                );
            }
            Ok(func)
        };
    let func = |want: sluice_sdk::Kind| named_func("function", &sec.function, want);
    let optional_func = |key: &str, f: &Option<Spanned<String>>, want: sluice_sdk::Kind| {
        f.as_ref().map(|_| named_func(key, f, want)).transpose()
    };
    // Window and slide: durations that are multiples of the parent's slide.
    let windowing = || -> Result<(std::time::Duration, std::time::Duration)> {
        let parent_slide = parent.slide();
        let Some(w) = &sec.window else {
            return cx.err(
                def.span(),
                &field("window"),
                format!("`{op}` needs `window = \"DURATION\"` (e.g. \"30s\")"),
            );
        };
        let duration = |d: &Spanned<String>, key: &str| -> Result<std::time::Duration> {
            let v = parse_duration(d.get_ref()).or_else(|m| cx.err(d.span(), &field(key), m))?;
            let p = parent_slide.as_millis().max(1);
            if !crate::graph::fits_slide(v, p as i64) {
                return cx.err(
                    d.span(),
                    &field(key),
                    format!(
                        "{} must be a multiple of the slide duration of the parent stream ({p} ms), not {}",
                        if key == "window" { "the window duration" } else { "the slide duration" },
                        d.get_ref()
                    ),
                );
            }
            Ok(v)
        };
        let length = duration(w, "window")?;
        let slide = match &sec.slide {
            Some(s) => duration(s, "slide")?,
            None => parent_slide,
        };
        Ok((length, slide))
    };
    let initial_state = || -> Result<Vec<(serde_json::Value, serde_json::Value)>> {
        let Some(p) = &sec.initial_state else {
            return Ok(Vec::new());
        };
        let path = cx.resolve(p.get_ref());
        let text = std::fs::read_to_string(&path).or_else(|e| {
            cx.err(
                p.span(),
                &field("initial_state"),
                format!("{}: {e}", path.display()),
            )
        })?;
        serde_json::from_str(&text).or_else(|e| {
            cx.err(
                p.span(),
                &field("initial_state"),
                format!(
                    "{}: must be a JSON array of [key, state] pairs: {e}",
                    path.display()
                ),
            )
        })
    };
    use sluice_sdk::Kind;
    let stream = match op {
        "map" => parent.map(func(Kind::Map)?),
        "flat_map" => parent.flat_map(func(Kind::FlatMap)?),
        "filter" => parent.filter(func(Kind::Filter)?),
        "reduce_by_key" => parent.reduce_by_key(func(Kind::Reduce)?, partitions(2)?),
        "reduce" => parent.reduce(func(Kind::Reduce)?),
        "count" => parent.count(),
        "group_by_key" => parent.group_by_key(partitions(2)?),
        "map_values" => parent.map_values(func(Kind::Map)?),
        "flat_map_values" => parent.flat_map_values(func(Kind::FlatMap)?),
        "combine_by_key" => parent.combine_by_key(
            named_func("create", &sec.create, Kind::Map)?,
            named_func("merge_value", &sec.merge_value, Kind::Reduce)?,
            named_func("merge_combiners", &sec.merge_combiners, Kind::Reduce)?,
            partitions(2)?,
        ),
        "transform_with" => parent.transform_with(&parents[1], func(Kind::Transform)?),
        "window" => {
            let (length, slide) = windowing()?;
            parent.window(length, slide)
        }
        "reduce_by_key_and_window" => {
            let (length, slide) = windowing()?;
            parent.reduce_by_key_and_window(
                func(Kind::Reduce)?,
                optional_func("inverse", &sec.inverse, Kind::InverseReduce)?,
                length,
                slide,
                partitions(2)?,
                optional_func("filter", &sec.filter, Kind::Filter)?,
            )
        }
        "reduce_by_window" => {
            let (length, slide) = windowing()?;
            parent.reduce_by_window(
                func(Kind::Reduce)?,
                optional_func("inverse", &sec.inverse, Kind::InverseReduce)?,
                length,
                slide,
            )
        }
        "count_by_window" => {
            let (length, slide) = windowing()?;
            parent.count_by_window(length, slide)
        }
        "count_by_value_and_window" => {
            let (length, slide) = windowing()?;
            parent.count_by_value_and_window(length, slide, partitions(2)?)
        }
        "map_with_state" => parent.map_with_state(
            func(Kind::MapState)?,
            partitions(2)?,
            sec.timeout.as_ref().map(|t| *t.get_ref()),
        ),
        "update_state_by_key" => {
            let initial = initial_state()?;
            if initial.is_empty() {
                parent.update_state_by_key(func(Kind::UpdateState)?, partitions(2)?)
            } else {
                parent.update_state_by_key_with_initial(
                    func(Kind::UpdateState)?,
                    partitions(2)?,
                    &initial,
                )
            }
        }
        "glom" => parent.glom(),
        "map_partitions" => parent.map_partitions(func(Kind::MapPartitions)?),
        "transform" => parent.transform(func(Kind::Transform)?),
        "repartition" => match &sec.partitions {
            Some(_) => parent.repartition(partitions(1)?),
            None => {
                return cx.err(
                    def.span(),
                    &field("partitions"),
                    "repartition needs `partitions = N`",
                );
            }
        },
        "count_by_value" => parent.count_by_value(partitions(2)?),
        "union" => parent.union(&parents[1..]),
        "join" => parent.join(&parents[1], partitions(2)?),
        "left_outer_join" => parent.left_outer_join(&parents[1], partitions(2)?),
        "right_outer_join" => parent.right_outer_join(&parents[1], partitions(2)?),
        "full_outer_join" => parent.full_outer_join(&parents[1], partitions(2)?),
        "cogroup" => parent.cogroup(&parents[1], partitions(2)?),
        other => {
            return cx.err(
                sec.op.span(),
                &field("op"),
                format!(
                    "unknown operation `{other}` (use map, flat_map, filter, map_values, flat_map_values, map_partitions, transform, transform_with, reduce_by_key, combine_by_key, group_by_key, reduce, count, count_by_value, glom, repartition, union, join, left_outer_join, right_outer_join, full_outer_join, cogroup, window, reduce_by_key_and_window, reduce_by_window, count_by_window, count_by_value_and_window, update_state_by_key or map_with_state)"
                ),
            );
        }
    };
    let stream = stream.named(name);
    streams.insert(name.to_string(), stream.clone());
    Ok(stream)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err_of(text: &str) -> String {
        match build(Path::new("job.toml"), text, &Overrides::default()) {
            Ok(_) => panic!("expected an error"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("128MiB"), Ok(128 << 20));
        assert_eq!(parse_size("10"), Ok(10));
        assert!(parse_size("5 parsecs").is_err());
    }

    #[test]
    fn a_socket_buffer_is_a_size_of_at_least_a_mebibyte() {
        let spec = |size: &str| {
            format!(
                "[job]\nbatch_interval = \"1s\"\n[sources.lines]\ntype = \"socket\"\nport = 9\nmax_buffered = \"{size}\"\n[[outputs]]\nstream = \"lines\"\ntype = \"pprint\"\n"
            )
        };
        let e = err_of(&spec("512KiB"));
        assert!(
            e.starts_with("job.toml:6: sources.lines.max_buffered: must be at least 1MiB"),
            "{e}"
        );
        let job = build(
            Path::new("job.toml"),
            &spec("256MiB"),
            &Overrides::default(),
        )
        .expect("a valid spec");
        assert_eq!(job.socket_addrs[0].buffered_bytes, 256 << 20);
        let job = build(
            Path::new("job.toml"),
            &spec("64MiB").replace("max_buffered = \"64MiB\"\n", ""),
            &Overrides::default(),
        )
        .expect("a valid spec");
        assert_eq!(
            job.socket_addrs[0].buffered_bytes,
            crate::receiver::MAX_BUFFERED_BYTES as u64
        );
    }

    #[test]
    fn errors_name_line_and_field() {
        let e = err_of("[job]\nbatch_interval = \"1s\"\nbogus = 1\n");
        assert!(e.starts_with("job.toml:3: spec:"), "{e}");
        let e = err_of("[job]\nbatch_interval = \"fast\"\n[sources.a]\ntype = \"queue\"\n");
        assert!(e.starts_with("job.toml:2: job.batch_interval:"), "{e}");
        let dir = tempfile::tempdir().unwrap();
        let q = dir.path().join("q.json");
        std::fs::write(&q, "[[\"a\"]]").unwrap();
        let head = format!(
            "[job]\nbatch_interval = \"1s\"\n[sources.lines]\ntype = \"queue\"\npath = \"{}\"\n",
            q.display()
        );
        let e = err_of(&format!(
            "{head}[streams.w]\nfrom = \"nope\"\nop = \"map\"\nfunction = \"p.f\"\n[[outputs]]\nstream = \"w\"\ntype = \"pprint\"\n"
        ));
        assert!(
            e.starts_with("job.toml:7: streams.w.from: unknown stream `nope`"),
            "{e}"
        );
        let e = err_of(&format!(
            "{head}[streams.a]\nfrom = \"b\"\nop = \"map\"\n[streams.b]\nfrom = \"a\"\nop = \"map\"\n[[outputs]]\nstream = \"a\"\ntype = \"pprint\"\n"
        ));
        assert!(e.contains("cycle"), "{e}");
        let e = err_of(&format!(
            "{head}[streams.w]\nfrom = \"lines\"\nop = \"map\"\nfunction = \"p.f\"\n[[outputs]]\nstream = \"w\"\ntype = \"pprint\"\n"
        ));
        assert!(
            e.contains("job.toml:9: streams.w.function: unknown plugin `p`"),
            "{e}"
        );
        let e = err_of(&format!(
            "{head}[[outputs]]\nstream = \"lines\"\ntype = \"teleport\"\n"
        ));
        assert!(
            e.contains("job.toml:8: outputs[0].type: unknown output type `teleport`"),
            "{e}"
        );
    }
}
