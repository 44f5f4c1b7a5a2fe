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
//!                            #   or "s3://bucket/prefix" with checkpoint_logs = "dir" for the batch logs
//! # checkpoint_interval = "10s"  # full checkpoints; default max(10s, 5 × the longest slide)
//! # backpressure = true     # a PID controller limits receivers to what the job keeps up with
//! # initial_rate = 1000     # records/s until its first estimate
//! # remember = "60s"        # keep every stream's batches this long, for slice
//!                            #   (`GET /api/streams/NAME?from=MS&to=MS` on the --ui server)
//!
//! # [object_store]          # how s3:// places are reached (each field defaults to the AWS environment):
//! # endpoint, region, access_key_id, secret_access_key, session_token, virtual_hosted_style
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
//!                            # | queue (path, stream, one_at_a_time = true, default = ["line", ...])
//!                            # | text_files (path = dir, include_existing,
//!                            #   ledger = file remembering the names read; default `.sluice-JOB-SOURCE.read` in dir,
//!                            #   max_files = per batch; path may be s3://bucket/prefix/)
//!                            # | generator (rate, words_per_line, vocabulary, seed)
//!                            # | nats (url, stream, subject, durable, start = "all" | "new" | SEQ | "RFC 3339 time",
//!                            #   max_rate, max_buffered, user, password, token, credentials, tls, ca,
//!                            #   decoder = text | bytes | json | msgpack, element = value | keyed | record,
//!                            #   on_undecodable = fail | skip, max_record_bytes = "1MiB")
//!                            # | mqtt (url = "mqtt://host:port", topics = ["a/#"], qos = 1, client_id,
//!                            #   clean_session = false, user, password, max_rate, max_buffered,
//!                            #   and the decoding fields: text lines by default)
//!                            # | kafka (brokers = "host:port,...", topics = ["t"] | topic_pattern = "regex",
//!                            #   group_id, start = "earliest" | "latest" | "RFC 3339 time" | { "t:0" = OFFSET },
//!                            #   max_rate_per_partition, min_partitions, max_buffered, properties = { librdkafka settings },
//!                            #   user, password (SASL SCRAM-SHA-512 by default), tls, ca, and the decoding fields)
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
//!                            # | transform (from = [a, b, c]: one element per stream, its batch as an array)
//!                            # | window | reduce_by_key_and_window | reduce_by_window | count_by_window
//!                            #   | count_by_value_and_window | group_by_key_and_window (window = "30s", slide = "10s",
//!                            #   inverse = "plugin.fn", filter = "plugin.fn", partitions)
//!                            # | update_state_by_key (function, partitions, initial_state = "file.json")
//!                            # | map_with_state (function, partitions, timeout = "30s" or N batches,
//!                            #   initial_state = "file.json") | state_snapshots (from a map_with_state)
//! function = "wordcount.split"
//!
//! [[outputs]]
//! # name = "counts"          # stable name (default output-INDEX): Kafka transactions and markers, MQTT client id
//! stream = "words"
//! type = "pprint"            # pprint (num) | jsonl (path) | text_files (prefix, suffix)
//!                            # | object_files (prefix); a prefix may be s3://bucket/path/name
//!                            # | nats (url, subject, encoder = text | json | msgpack, user, password, ...)
//!                            # | mqtt (url, topic, qos, user, password, encoder)
//!                            # | kafka (brokers, topic, encoder, exactly_once = false, commit_topic, properties, ...)
//! num = 10
//! ```

mod brokers;
mod confine;
mod kafka;
mod outputs;
mod plugins;
mod sections;
mod sources;
mod storage;
mod streams;

use crate::error::{Error, Result};
use crate::graph::{DStream, StreamingContext};
use crate::plugin::{Limits, LoadPlugins, Plugin};
use crate::time::{ManualClock, SystemClock, parse_duration};
use sections::{JobSection, ObjectStoreSection, SpecFile};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use toml::Spanned;

/// Options given on the command line that override the spec.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// Worker threads.
    pub workers: Option<usize>,
    /// Puts every file output (jsonl, text files) in this directory instead.
    pub output_dir: Option<PathBuf>,
    /// Checkpoint directory, or `s3://bucket/prefix` (overrides
    /// `job.checkpoint`).
    pub checkpoint: Option<PathBuf>,
    /// With checkpoints in object storage: the local directory of the
    /// batch logs and write-ahead logs (overrides `job.checkpoint_logs`).
    pub checkpoint_logs: Option<PathBuf>,
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
    /// Every source and every shuffle in this many partitions, whatever
    /// the spec says (tests and benches that vary the partitioning).
    pub partitions: Option<usize>,
    /// A Kappa replay (`sluice run --from`): the manual clock, no
    /// checkpoints, and no outputs to brokers (the live job's).
    pub replay: bool,
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
    /// Its sources and streams by name (to [`DStream::slice`] them).
    pub streams: BTreeMap<String, DStream>,
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
    /// [`Overrides::partitions`].
    partitions: Option<usize>,
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
    let cx = Ctx {
        path,
        text,
        partitions: overrides.partitions.map(|p| p.max(1)),
    };
    let spec: SpecFile = toml::from_str(text).map_err(|e| Error::Spec {
        path: path.to_path_buf(),
        line: e.span().map_or(0, |s| cx.line(s)),
        field: "spec".to_string(),
        message: e.message().to_string(),
    })?;
    if let Some(grants) = &overrides.confine {
        confine::check_confined(&cx, &spec, grants, overrides)?;
    }
    let (ssc, job_name, default_partitions) = job_context(&cx, &spec, overrides)?;
    let plugins = plugins::load_plugins(&cx, &spec, overrides, &ssc)?;
    if ssc.refuses_state() {
        streams::check_state_is_checkpointed(&cx, &spec)?;
    }
    let (mut streams, socket_addrs) =
        sources::add_sources(&cx, &spec, &ssc, (&job_name, &plugins), default_partitions)?;
    let mut used = streams::add_streams(&cx, &spec, &mut streams, &plugins)?;
    let wiring = outputs::Wiring {
        job_name: &job_name,
        streams: &streams,
        plugins: &plugins,
    };
    outputs::add_outputs(&cx, &spec, overrides, &wiring, &mut used)?;
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
        streams: streams.into_iter().collect(),
    })
}

/// Adds one source of the spec's types to `ssc` from the fields of its
/// `[sources.NAME]` table, given as JSON: for drivers that build jobs in
/// code (the Python driver's broker streams), with the spec's own checks,
/// so an error names the field at fault and `origin`, the file and line
/// that asked for the source (its folder locates relative paths). Custom
/// receivers, which need the spec's plugins, are not among its types.
pub fn add_source(
    ssc: &StreamingContext,
    job_name: &str,
    name: &str,
    settings: &serde_json::Value,
    (origin, line): (&Path, usize),
) -> Result<DStream> {
    let refused = |message: String| Error::Spec {
        path: origin.to_path_buf(),
        line,
        field: format!("sources.{name}"),
        message,
    };
    let table = <toml::Table as serde::Deserialize>::deserialize(settings)
        .map_err(|e| refused(format!("not a table of settings: {e}")))?;
    let mut sources = toml::Table::new();
    sources.insert(name.to_string(), toml::Value::Table(table));
    let mut root = toml::Table::new();
    let mut job = toml::Table::new();
    job.insert("batch_interval".into(), toml::Value::String("1s".into()));
    root.insert("job".into(), toml::Value::Table(job));
    root.insert("sources".into(), toml::Value::Table(sources));
    let text = toml::to_string(&root).map_err(|e| refused(e.to_string()))?;
    let cx = Ctx {
        path: origin,
        text: &text,
        partitions: None,
    };
    let spec: SpecFile = toml::from_str(&text).map_err(|e| refused(e.message().to_string()))?;
    if spec
        .sources
        .values()
        .any(|s| s.get_ref().kind.get_ref() == "receiver")
    {
        return Err(refused(
            "a custom receiver needs its plugin: use a job spec".to_string(),
        ));
    }
    let (mut streams, _) =
        sources::add_sources(&cx, &spec, ssc, (job_name, &BTreeMap::new()), ssc.workers())
            // The spec's errors cite lines of the text made here: cite the caller's.
            .map_err(|mut e| {
                if let Error::Spec { line: at, .. } = &mut e {
                    *at = line;
                }
                e
            })?;
    streams
        .remove(name)
        .ok_or_else(|| refused("the source was not built".to_string()))
}

/// The `[job]` section: the context with its clock, the job's name, and
/// (from [`configure`]) the default number of partitions.
fn job_context(
    cx: &Ctx<'_>,
    spec: &SpecFile,
    overrides: &Overrides,
) -> Result<(StreamingContext, String, usize)> {
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
        cx.path
            .file_stem()
            .map_or("job".to_string(), |s| s.to_string_lossy().into_owned())
    });
    let mut ssc = StreamingContext::new(interval).with_name(&job_name);
    if let Some(rt) = &overrides.runtime {
        ssc = ssc.with_runtime(rt.clone());
    }
    if let Some(share) = &overrides.cpu_share {
        ssc = ssc.with_cpu_share(share.clone());
    }
    if manual || overrides.replay {
        ssc = ssc.with_clock(Arc::new(ManualClock::new(0)));
    } else {
        ssc = ssc.with_clock(Arc::new(SystemClock));
    }
    configure(cx, job, spec.object_store.as_ref(), overrides, ssc)
        .map(|(ssc, partitions)| (ssc, job_name, partitions))
}

/// The job's workers, checkpoints and backpressure; the context and the
/// default number of partitions (one per worker).
fn configure(
    cx: &Ctx<'_>,
    job: &JobSection,
    objects: Option<&Spanned<ObjectStoreSection>>,
    overrides: &Overrides,
    mut ssc: StreamingContext,
) -> Result<(StreamingContext, usize)> {
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
    match storage::checkpoint(cx, job, objects, overrides)?.filter(|_| !overrides.replay) {
        Some(storage::Checkpoint::Dir(dir)) => {
            ssc = ssc.with_checkpoint(dir).with_fresh_start(overrides.fresh);
        }
        Some(storage::Checkpoint::Objects { logs, store }) => {
            ssc = ssc
                .with_checkpoint_store(logs, store)
                .with_fresh_start(overrides.fresh);
        }
        // A replay starts from nothing and keeps its state in memory.
        None if overrides.replay => ssc = ssc.with_state_in_memory(),
        None => {}
    }
    if let Some(every) = &job.checkpoint_interval {
        let d = parse_duration(every.get_ref())
            .or_else(|m| cx.err(every.span(), "job.checkpoint_interval", m))?;
        if d.is_zero() {
            return cx.err(every.span(), "job.checkpoint_interval", "must be positive");
        }
        ssc = ssc.with_checkpoint_interval(d);
    }
    if let Some(r) = &job.remember {
        let d = parse_duration(r.get_ref()).or_else(|m| cx.err(r.span(), "job.remember", m))?;
        ssc.remember(d);
    }
    if job.backpressure == Some(true) {
        ssc = ssc.with_backpressure(job.initial_rate.as_ref().map(|r| *r.get_ref() as f64));
    } else if let Some(r) = &job.initial_rate {
        return cx.err(r.span(), "job.initial_rate", "needs backpressure = true");
    }
    let default_partitions =
        workers.unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()));
    Ok((ssc, default_partitions))
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
    fn watched_files_may_be_in_object_storage() {
        let spec = |path: &str, more: &str| {
            format!(
                "[job]\nbatch_interval = \"1s\"\n[sources.files]\ntype = \"text_files\"\npath = \"{path}\"\n{more}[[outputs]]\nstream = \"files\"\ntype = \"pprint\"\n[object_store]\nendpoint = \"http://127.0.0.1:9\"\naccess_key_id = \"k\"\nsecret_access_key = \"s\"\n"
            )
        };
        let ok = |text: &str| build(Path::new("job.toml"), text, &Overrides::default()).map(|_| ());
        ok(&spec("s3://inbox/drop/", "max_files = 10\n")).expect("an S3 prefix");
        let e = err_of(&spec("s3://inbox/drop/", "max_files = 0\n"));
        assert!(
            e.starts_with("job.toml:6: sources.files.max_files: must be at least 1"),
            "{e}"
        );
        let e = err_of(&spec("s3://x/drop/", ""));
        assert!(
            e.starts_with("job.toml:5: sources.files.path:")
                && e.contains("`s3://x/drop/` is not an S3 location"),
            "{e}"
        );
    }

    #[test]
    fn output_names_are_valid_and_unique() {
        let spec = |a: &str, b: &str| {
            format!(
                "[job]\nbatch_interval = \"1s\"\n[sources.lines]\ntype = \"socket\"\nport = 9\n[[outputs]]\n{a}stream = \"lines\"\ntype = \"pprint\"\n[[outputs]]\n{b}stream = \"lines\"\ntype = \"pprint\"\n"
            )
        };
        let ok = |text: &str| build(Path::new("job.toml"), text, &Overrides::default()).map(|_| ());
        ok(&spec("name = \"counts\"\n", "name = \"totals.v2\"\n")).expect("two names");
        ok(&spec("name = \"counts\"\n", "")).expect("a name and a default");
        let e = err_of(&spec("name = \"a b\"\n", ""));
        assert!(
            e.starts_with("job.toml:7: outputs[0].name: a name of letters"),
            "{e}"
        );
        let e = err_of(&spec("name = \"x\"\n", "name = \"x\"\n"));
        assert!(
            e.starts_with("job.toml:11: outputs[1].name: another output is already named `x`"),
            "{e}"
        );
        let e = err_of(&spec("name = \"output-1\"\n", ""));
        assert!(
            e.contains("outputs[1]: its default name `output-1` is another output's"),
            "{e}"
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
