//! The `sluice` command: run jobs, inspect plugins, feed demo traffic.

mod c_plugin;
mod client;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use sluice::LoadPlugins;
use sluice::feed::{FeedConfig, FeedServer};
use sluice::plugin::{CacheOutcome, Limits, Plugin, Runtime};
use sluice::spec::{self, Overrides};
use std::io::IsTerminal;
use std::net::ToSocketAddrs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Parser)]
#[command(
    name = "sluice",
    version,
    about = "Micro-batch stream processing with sandboxed WebAssembly operators"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Runs a job spec in the foreground.
    Run {
        /// The job spec (TOML).
        job: PathBuf,
        /// Stop after this many batches (default: run until the queue ends, or for ever).
        #[arg(long)]
        batches: Option<u64>,
        /// Also serve demo lines on every socket source's address (no `nc` needed).
        #[arg(long)]
        feed: bool,
        /// Lines per second served by --feed.
        #[arg(long, default_value_t = 20)]
        feed_rate: u32,
        /// Worker threads (default: the spec's, else one per core).
        #[arg(long)]
        workers: Option<usize>,
        /// Checkpoint into DIR and resume from its newest valid checkpoint.
        #[arg(long, value_name = "DIR")]
        checkpoint: Option<PathBuf>,
        /// With a checkpoint directory: remove its checkpoints and start over.
        #[arg(long)]
        fresh: bool,
        /// Serve the streaming web UI and Prometheus `/metrics` on ADDR
        /// (e.g. 127.0.0.1:4040; port 0 picks a free one).
        #[arg(long, value_name = "ADDR")]
        ui: Option<String>,
        /// Treat the spec as untrusted: every file it names must stay inside
        /// its directory, and socket sources need --grant-socket.
        #[arg(long)]
        confine: bool,
        /// With --confine: a `host:port` socket sources may connect to.
        #[arg(long, value_name = "HOST:PORT")]
        grant_socket: Vec<String>,
    },
    /// Prints a job's physical plan: its streams cut into stages at the
    /// shuffles, the tasks of each stage, and where each output reads.
    Explain {
        /// The job spec (TOML).
        job: PathBuf,
        /// `text`, or `dot` for Graphviz (`sluice explain job.toml --format
        /// dot | dot -Tsvg > plan.svg`).
        #[arg(long, default_value = "text", value_parser = ["text", "dot"])]
        format: String,
        /// Worker threads (default: the spec's, else one per core): sources
        /// without a partition count get one per worker.
        #[arg(long)]
        workers: Option<usize>,
    },
    /// Runs the multi-tenant job server: an HTTP API (tenants, plugin
    /// uploads, jobs, hot swap), each job's web UI and Prometheus metrics.
    /// Jobs that were running are resumed from their checkpoints.
    Serve {
        /// Where tenants, plugins, jobs and checkpoints are kept.
        #[arg(long, default_value = "sluice-data")]
        data: PathBuf,
        /// Address to listen on (port 0 picks a free one).
        #[arg(long, default_value = "127.0.0.1:7070")]
        addr: String,
        /// Memory the server may promise to jobs' plugins (default: half
        /// the machine's); a job that does not fit is refused.
        #[arg(long, value_name = "SIZE")]
        memory: Option<String>,
        /// Read the admin token from FILE (default: $SLUICE_ADMIN_TOKEN,
        /// else DATA/admin.token, created on first start).
        #[arg(long, value_name = "FILE")]
        admin_token_file: Option<PathBuf>,
        /// Default limits of new tenants, as JSON (see `TenantLimits`).
        #[arg(long, value_name = "JSON")]
        tenant_defaults: Option<String>,
    },
    /// Submits a job spec to a running `sluice serve`, as spark-submit
    /// does: uploads its plugins and the files it reads, then starts it.
    Submit {
        /// The job spec (TOML); `[job] name` names the job.
        spec: PathBuf,
        /// Use FILE for the spec's plugin NAME instead of its `path`.
        #[arg(long, value_name = "NAME=FILE")]
        plugin: Vec<String>,
        #[command(flatten)]
        remote: Remote,
    },
    /// Jobs on a running `sluice serve` (a tenant's token).
    Job {
        #[command(subcommand)]
        command: JobCommand,
        #[command(flatten)]
        remote: Remote,
    },
    /// Tenants of a running `sluice serve` (the admin token).
    Tenant {
        #[command(subcommand)]
        command: TenantCommand,
        #[command(flatten)]
        remote: Remote,
    },
    /// Checkpoint tools.
    Checkpoint {
        #[command(subcommand)]
        command: CheckpointCommand,
    },
    /// Plugin tools.
    Plugin {
        #[command(subcommand)]
        command: PluginCommand,
    },
    /// Prints object files (`save_as_object_files`) as JSON, one element per line.
    Cat {
        /// Batch directories (`prefix-<ms>`) or single part files.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
    },
    /// Serves text lines over TCP to whoever connects (a demo traffic source).
    Feed {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:9999")]
        addr: String,
        /// Lines per second to each client.
        #[arg(long, default_value_t = 20)]
        rate: u32,
        /// Serve the lines of this file instead of the built-in corpus.
        #[arg(long)]
        file: Option<PathBuf>,
        /// Serve the lines once instead of looping.
        #[arg(long)]
        once: bool,
    },
}

/// Where `sluice serve` is and the token to use.
#[derive(clap::Args)]
struct Remote {
    /// The server's URL.
    #[arg(
        long,
        env = "SLUICE_SERVER",
        default_value = "http://127.0.0.1:7070",
        global = true
    )]
    server: String,
    /// A tenant's token (the admin token for `sluice tenant`).
    #[arg(long, env = "SLUICE_TOKEN", hide_env_values = true, global = true)]
    token: Option<String>,
}

#[derive(Subcommand)]
enum JobCommand {
    /// Lists the tenant's jobs.
    List,
    /// Shows one job: state, plugin versions, batches.
    Show {
        /// The job.
        job: String,
    },
    /// Stops a job (a last batch and checkpoint); it stays stopped.
    Stop {
        /// The job.
        job: String,
    },
    /// Starts a stopped job from its checkpoint.
    Start {
        /// The job.
        job: String,
    },
    /// Stops and removes a job with its outputs and checkpoints.
    Delete {
        /// The job.
        job: String,
    },
    /// Hot swaps one of a job's plugins at a batch boundary (rolled back
    /// if the new version fails its first batch).
    Swap {
        /// The job.
        job: String,
        /// The plugin's name in the job's spec.
        plugin: String,
        /// A `.wasm` file (uploaded first) or an uploaded version
        /// (`name@sha256`, `name@version`).
        to: String,
    },
    /// Prints a job's recent pprint outputs.
    Outputs {
        /// The job.
        job: String,
        /// How many batches.
        #[arg(short, default_value_t = 5)]
        n: usize,
    },
    /// Prints a job's events and recent guest logs.
    Logs {
        /// The job.
        job: String,
    },
}

#[derive(Subcommand)]
enum TenantCommand {
    /// Creates a tenant and prints its token.
    Create {
        /// The tenant's name.
        name: String,
        /// Its limits as JSON (`TenantLimits`; missing fields: defaults).
        #[arg(long, value_name = "JSON")]
        limits: Option<String>,
        /// A `host:port` its socket sources may connect to.
        #[arg(long, value_name = "HOST:PORT")]
        grant_socket: Vec<String>,
    },
    /// Lists tenants with their limits and usage.
    List,
    /// Prints another token for a tenant.
    Token {
        /// The tenant.
        name: String,
    },
    /// Removes a tenant with all its jobs and plugins.
    Delete {
        /// The tenant.
        name: String,
    },
}

#[derive(Subcommand)]
enum CheckpointCommand {
    /// Lists a checkpoint directory's files (valid or why not) and shows the
    /// newest valid checkpoint.
    Inspect {
        /// The checkpoint directory.
        dir: PathBuf,
    },
}

#[derive(Subcommand)]
enum PluginCommand {
    /// Loads a plugin component and lists its functions and kinds.
    Inspect {
        /// The component (`.wasm`).
        wasm: PathBuf,
    },
    /// Creates a plugin project that builds and passes its own test out of
    /// the box: `src/lib.rs` with an example function and its unit test.
    New {
        /// The project's (and plugin's) name; a directory of that name is created.
        name: String,
        /// The guest language: rust, python, js or c.
        #[arg(long, default_value = "rust")]
        lang: String,
        /// Where the guest SDK is (default: the one this sluice was built from,
        /// or $SLUICE_SDK_PATH).
        #[arg(long)]
        sdk: Option<PathBuf>,
    },
    /// Builds a plugin project into a component (Rust: `cargo build
    /// --release --target wasm32-wasip2`; Python: componentize-py into
    /// `build/`; JavaScript: rolldown and ComponentizeJS into `build/`; C:
    /// wit-bindgen c and clang for wasm32-wasi into `build/`),
    /// checks it, and prints its path.
    Build {
        /// The project directory (default: the current one).
        #[arg(default_value = ".")]
        dir: PathBuf,
    },
    /// Validates a component against the plugin contract (it loads in the
    /// sandbox, describes itself, every function is named uniquely with a
    /// known kind) and prints its functions; exits non-zero saying what is
    /// wrong otherwise.
    Check {
        /// The component (`.wasm`).
        wasm: PathBuf,
    },
    /// Validates and compiles a component into a compile cache (what
    /// `sluice serve` runs in a child process for each upload).
    #[command(hide = true)]
    Precompile {
        /// The component (`.wasm`).
        wasm: PathBuf,
        /// The compile cache to store the artifact in.
        #[arg(long)]
        cache_dir: PathBuf,
        /// The engine's instance pool size (must match the server's).
        #[arg(long)]
        max_instances: u32,
        /// The plugin's name in messages (default: the file's stem).
        #[arg(long)]
        name: Option<String>,
    },
    /// Runs one function of a plugin on sample input and prints what it
    /// returns, one JSON value per line (map, flat_map, filter, transform,
    /// map_partitions: each input element; reduce: all inputs folded).
    Test {
        /// The component (`.wasm`).
        wasm: PathBuf,
        /// The function to run.
        function: String,
        /// Input elements (text lines; JSON values with --json). Default:
        /// the lines of standard input.
        input: Vec<String>,
        /// Read each input as a JSON value instead of a string.
        #[arg(long)]
        json: bool,
    },
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("SLUICE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,sluice=info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}

fn main() {
    sluice::allocator::keep_freed_memory();
    init_logging();
    if let Err(e) = real_main() {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

fn real_main() -> Result<()> {
    match Cli::parse().command {
        Command::Run {
            job,
            batches,
            feed,
            feed_rate,
            workers,
            checkpoint,
            fresh,
            ui,
            confine,
            grant_socket,
        } => run(
            job,
            batches,
            (feed, feed_rate),
            ui,
            Overrides {
                workers,
                output_dir: None,
                checkpoint,
                fresh,
                confine: confine.then_some(spec::Grants {
                    sockets: grant_socket,
                    uploaded_plugins_only: false,
                }),
                ..Overrides::default()
            },
        ),
        Command::Explain {
            job,
            format,
            workers,
        } => explain(&job, &format, workers),
        Command::Serve {
            data,
            addr,
            memory,
            admin_token_file,
            tenant_defaults,
        } => serve(data, &addr, memory, admin_token_file, tenant_defaults),
        Command::Submit {
            spec,
            plugin,
            remote,
        } => {
            let client = client::Client::new(&remote.server, remote.token);
            let job = client::submit(&client, &spec, &plugin)?;
            let name = job["name"].as_str().unwrap_or("?");
            println!("{}", serde_json::to_string_pretty(&job)?);
            eprintln!(
                "job `{name}` submitted; web UI: {}/jobs/{name}/?token=…",
                client.base()
            );
            Ok(())
        }
        Command::Job { command, remote } => job_command(command, remote),
        Command::Tenant { command, remote } => tenant_command(command, remote),
        Command::Checkpoint {
            command: CheckpointCommand::Inspect { dir },
        } => inspect_checkpoint(&dir),
        Command::Plugin {
            command: PluginCommand::Inspect { wasm },
        } => inspect(wasm),
        Command::Plugin {
            command: PluginCommand::Check { wasm },
        } => check_plugin(&wasm),
        Command::Plugin {
            command:
                PluginCommand::Precompile {
                    wasm,
                    cache_dir,
                    max_instances,
                    name,
                },
        } => {
            let runtime = Runtime::new(sluice::RuntimeConfig {
                max_instances,
                cache_dir: Some(cache_dir),
                ..sluice::RuntimeConfig::default()
            })?;
            let limits = Limits::default();
            let name = name.unwrap_or_else(|| plugin_name(&wasm));
            Plugin::load(&runtime, &name, &wasm, limits)?;
            Ok(())
        }
        Command::Plugin {
            command: PluginCommand::New { name, lang, sdk },
        } => new_plugin(&name, &lang, sdk),
        Command::Plugin {
            command: PluginCommand::Build { dir },
        } => build_plugin(&dir),
        Command::Plugin {
            command:
                PluginCommand::Test {
                    wasm,
                    function,
                    input,
                    json,
                },
        } => test_plugin(&wasm, &function, input, json),
        Command::Cat { paths } => cat(&paths),
        Command::Feed {
            addr,
            rate,
            file,
            once,
        } => {
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
    }
}

fn job_command(command: JobCommand, remote: Remote) -> Result<()> {
    use client::Body;
    let client = client::Client::new(&remote.server, remote.token);
    let print = |v: &serde_json::Value| -> Result<()> {
        println!("{}", serde_json::to_string_pretty(v)?);
        Ok(())
    };
    match command {
        JobCommand::List => print(&client.call("GET", "/api/jobs", Body::None)?.1),
        JobCommand::Show { job } => print(
            &client
                .call("GET", &format!("/api/jobs/{job}"), Body::None)?
                .1,
        ),
        JobCommand::Stop { job } => print(
            &client
                .call("POST", &format!("/api/jobs/{job}/stop"), Body::None)?
                .1,
        ),
        JobCommand::Start { job } => print(
            &client
                .call("POST", &format!("/api/jobs/{job}/start"), Body::None)?
                .1,
        ),
        JobCommand::Delete { job } => {
            client.call("DELETE", &format!("/api/jobs/{job}"), Body::None)?;
            eprintln!("job `{job}` deleted");
            Ok(())
        }
        JobCommand::Swap { job, plugin, to } => {
            let v = client::swap(&client, &job, &plugin, &to)?;
            print(&v)?;
            match v["outcome"].as_str() {
                Some("applied") | Some("pending") => Ok(()),
                _ => bail!(
                    "the swap was rolled back: {}",
                    v["error"].as_str().unwrap_or("?")
                ),
            }
        }
        JobCommand::Outputs { job, n } => {
            let (_, v) =
                client.call("GET", &format!("/api/jobs/{job}/outputs?n={n}"), Body::None)?;
            for block in v["pprint"].as_array().into_iter().flatten() {
                print!("{}", block.as_str().unwrap_or_default());
            }
            Ok(())
        }
        JobCommand::Logs { job } => print(
            &client
                .call("GET", &format!("/api/jobs/{job}/logs"), Body::None)?
                .1,
        ),
    }
}

fn tenant_command(command: TenantCommand, remote: Remote) -> Result<()> {
    use client::Body;
    let client = client::Client::new(&remote.server, remote.token);
    match command {
        TenantCommand::Create {
            name,
            limits,
            grant_socket,
        } => {
            let mut limits: serde_json::Value = match limits {
                Some(l) => serde_json::from_str(&l).context("--limits: not JSON")?,
                None => serde_json::json!({}),
            };
            if !grant_socket.is_empty() {
                limits["sockets"] = serde_json::json!(grant_socket);
            }
            let body = serde_json::json!({"name": name, "limits": limits});
            let (_, v) = client.call("POST", "/api/tenants", client::Body::Json(&body))?;
            eprintln!("tenant `{name}` created; its token:");
            println!("{}", v["token"].as_str().unwrap_or_default());
        }
        TenantCommand::List => {
            let (_, v) = client.call("GET", "/api/tenants", Body::None)?;
            println!("{}", serde_json::to_string_pretty(&v)?);
        }
        TenantCommand::Token { name } => {
            let (_, v) = client.call("POST", &format!("/api/tenants/{name}/tokens"), Body::None)?;
            println!("{}", v["token"].as_str().unwrap_or_default());
        }
        TenantCommand::Delete { name } => {
            client.call("DELETE", &format!("/api/tenants/{name}"), Body::None)?;
            eprintln!("tenant `{name}` deleted");
        }
    }
    Ok(())
}

/// `sluice serve`.
fn serve(
    data: PathBuf,
    addr: &str,
    memory: Option<String>,
    admin_token_file: Option<PathBuf>,
    tenant_defaults: Option<String>,
) -> Result<()> {
    use sluice_server::{Server, ServerConfig};
    std::fs::create_dir_all(&data).with_context(|| format!("creating {}", data.display()))?;
    let token_path = data.join("admin.token");
    let admin_token = if let Some(f) = &admin_token_file {
        std::fs::read_to_string(f)
            .with_context(|| format!("reading the admin token from {}", f.display()))?
    } else if let Ok(t) = std::env::var("SLUICE_ADMIN_TOKEN") {
        t
    } else if token_path.exists() {
        std::fs::read_to_string(&token_path)
            .with_context(|| format!("reading {}", token_path.display()))?
    } else {
        let t = sluice_server::new_token().map_err(|e| anyhow::anyhow!("{}", e.message))?;
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&token_path)
            .with_context(|| format!("creating {}", token_path.display()))?;
        writeln!(f, "{t}")?;
        t
    };
    let admin_token = admin_token.trim().to_string();
    if admin_token.len() < 16 {
        bail!("the admin token must be at least 16 characters");
    }
    let mut config = ServerConfig::new(data.clone(), admin_token);
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
    let at = addr
        .to_socket_addrs()
        .with_context(|| format!("resolving {addr}"))?
        .next()
        .with_context(|| format!("{addr} resolves to nothing"))?;
    let server = Server::open(config)?;
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register_conditional_shutdown(signal, 130, stop.clone())
            .context("installing the signal handlers")?;
        signal_hook::flag::register(signal, stop.clone())
            .context("installing the signal handlers")?;
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()
        .context("starting the server's runtime")?;
    runtime.block_on(async {
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
        eprintln!(
            "sluice serve: http://{local}/ (data in {}; admin token in {})",
            data.display(),
            if admin_token_file.is_some() {
                "the given file".to_string()
            } else {
                token_path.display().to_string()
            }
        );
        let shutdown = async move {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        };
        sluice_server::api::serve(server.clone(), listener, shutdown)
            .await
            .context("serving the API")
    })?;
    eprintln!("sluice serve: stopping every job (a last batch and checkpoint each)");
    server.shutdown();
    Ok(())
}

fn explain(job: &Path, format: &str, workers: Option<usize>) -> Result<()> {
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

fn run(
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
    let mut feeders = Vec::new();
    if feed {
        if job.socket_addrs.is_empty() {
            bail!("--feed: the job has no socket source to feed");
        }
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
    }
    for (name, p) in &job.plugins {
        tracing::info!(
            plugin = %name,
            version = %p.description().version,
            compiled = matches!(p.cache_outcome(), CacheOutcome::Compiled),
            "loaded plugin"
        );
    }
    let metrics = sluice_server::metrics::Metrics::attach(&job);
    let _ui = match ui {
        Some(addr) => {
            let at = addr
                .to_socket_addrs()
                .with_context(|| format!("--ui: resolving {addr}"))?
                .next()
                .with_context(|| format!("--ui: {addr} resolves to nothing"))?;
            let server = sluice_server::web::UiServer::start(at, metrics.clone())
                .with_context(|| format!("--ui: serving on {at}"))?;
            tracing::info!(url = %format!("http://{}/", server.local_addr()), "web UI and /metrics");
            Some(server)
        }
        None => None,
    };
    if std::io::stderr().is_terminal() {
        // Live progress: one line per batch on a terminal, nothing otherwise.
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
    tracing::info!(job = %job.name, startup_ms = started.elapsed().as_millis() as u64, "job started");
    // SIGINT/SIGTERM: finish with a last batch and checkpoint; a second
    // signal exits at once.
    let stop = job.context.stop_handle().flag();
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register_conditional_shutdown(signal, 130, stop.clone())
            .context("installing the signal handlers")?;
        signal_hook::flag::register(signal, stop.clone())
            .context("installing the signal handlers")?;
    }
    let summary = job.context.run(batches)?;
    tracing::info!(job = %job.name, batches = summary.batches, records = summary.input_records, "job finished");
    for f in feeders {
        f.stop();
    }
    Ok(())
}

/// A progress indicator on a terminal for slow steps (compiling a 15 MB
/// Python or JavaScript plugin takes seconds): after a second it shows the
/// step and the time so far, cleared when done. Silent when stderr is not
/// a terminal.
struct Progress {
    done: Option<std::sync::mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Progress {
    fn start(what: &'static str) -> Progress {
        if !std::io::stderr().is_terminal() {
            return Progress {
                done: None,
                thread: None,
            };
        }
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let thread = std::thread::spawn(move || {
            let started = Instant::now();
            if !matches!(
                rx.recv_timeout(Duration::from_secs(1)),
                Err(std::sync::mpsc::RecvTimeoutError::Timeout)
            ) {
                return;
            }
            let frames = ['|', '/', '-', '\\'];
            for i in 0.. {
                eprint!(
                    "\r{} {what}… {:.0} s",
                    frames[i % frames.len()],
                    started.elapsed().as_secs_f64()
                );
                if !matches!(
                    rx.recv_timeout(Duration::from_millis(250)),
                    Err(std::sync::mpsc::RecvTimeoutError::Timeout)
                ) {
                    break;
                }
            }
            eprint!("\r\x1b[K");
        });
        Progress {
            done: Some(tx),
            thread: Some(thread),
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        drop(self.done.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The lines of a demo feed file.
fn read_lines(path: &std::path::Path) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading feed lines from {}", path.display()))?;
    let lines: Vec<String> = text.lines().map(str::to_string).collect();
    if lines.is_empty() {
        bail!("{}: no lines to feed", path.display());
    }
    Ok(lines)
}

fn cat(paths: &[PathBuf]) -> Result<()> {
    use sluice::render::{element, to_json};
    use sluice::sink::objects::{read_object_dir, read_object_file};
    use std::io::Write;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    for path in paths {
        let elements = if path.is_dir() {
            read_object_dir(path)?
        } else {
            read_object_file(path)?
        };
        for (k, v) in elements {
            writeln!(out, "{}", to_json(&element(&k, &v)))?;
        }
    }
    out.flush()?;
    Ok(())
}

fn inspect_checkpoint(dir: &std::path::Path) -> Result<()> {
    use sluice::checkpoint::{Checkpoints, read};
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
        match read(path) {
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
            let state: serde_json::Map<String, serde_json::Value> = cp
                .state
                .iter()
                .map(|(id, b)| {
                    (
                        format!("stream {id}"),
                        serde_json::json!(format!("{} bytes", b.len())),
                    )
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
            summary["batches_logged_after"] = serde_json::json!(logged
                .iter()
                .map(|r| serde_json::json!({"batch_time": r.batch_time, "batch_index": r.batch_index}))
                .collect::<Vec<_>>());
            summary["batch_log_problems"] = serde_json::json!(problems);
            summary["write_ahead_logs"] = serde_json::json!(wal);
            println!("newest valid:\n{}", serde_json::to_string_pretty(&summary)?);
            Ok(())
        }
        Ok(None) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// The guest SDK to point new plugin projects at.
fn sdk_path(given: Option<PathBuf>) -> Result<PathBuf> {
    let path = given
        .or_else(|| std::env::var_os("SLUICE_SDK_PATH").map(PathBuf::from))
        .unwrap_or_else(|| {
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../..")
                .join("guest-sdk")
        });
    if !path.join("Cargo.toml").is_file() {
        bail!(
            "no guest SDK at {} (give its directory with --sdk or SLUICE_SDK_PATH)",
            path.display()
        );
    }
    path.canonicalize()
        .with_context(|| format!("resolving {}", path.display()))
}

/// The Python guest SDK and the WIT contract, built into `sluice` so that
/// `sluice plugin new|build --lang python` work anywhere.
const PYTHON_SDK: [(&str, &str); 3] = [
    (
        "__init__.py",
        include_str!("../../../guest-sdk/python/sluice/__init__.py"),
    ),
    (
        "_guest.py",
        include_str!("../../../guest-sdk/python/sluice/_guest.py"),
    ),
    (
        "_msgpack.py",
        include_str!("../../../guest-sdk/python/sluice/_msgpack.py"),
    ),
];
const JS_SDK: [(&str, &str); 1] = [("sluice.js", include_str!("../../../guest-sdk/js/sluice.js"))];
const WIT: [(&str, &str); 2] = [
    ("plugin.wit", include_str!("../../../wit/plugin.wit")),
    ("types.wit", include_str!("../../../wit/types.wit")),
];

fn write_files(dir: &std::path::Path, files: &[(&str, &str)]) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    for (name, text) in files {
        std::fs::write(dir.join(name), text)
            .with_context(|| format!("writing {}", dir.join(name).display()))?;
    }
    Ok(())
}

/// `sluice plugin new --lang python NAME`: a module, its unit test, and a
/// copy of the SDK (so `python3 -m unittest` runs as is).
fn new_python_plugin(name: &str) -> Result<()> {
    let module = name.replace('-', "_");
    let dir = PathBuf::from(name);
    write_files(&dir.join("sluice"), &PYTHON_SDK)?;
    let code = r#""""A Sluice plugin in Python. Build it with `sluice plugin build`, try a
function with `sluice plugin test build/NAME.wasm split "a b"`, and use it in
a job spec as `NAME.split`."""

import sluice


@sluice.flat_map
def split(line):
    """Splits a line into words."""
    return line.split()


@sluice.map
def pair(word):
    """Pairs a word with the count 1."""
    return (word, 1)


@sluice.reduce
def add(a, b):
    """Adds two counts."""
    return a + b


Operator = sluice.export(split, pair, add, name="NAME", version="0.1.0")
"#
    .replace("NAME", name);
    let test = r#"import unittest

import MODULE


class Test(unittest.TestCase):
    def test_splits_pairs_and_adds(self):
        self.assertEqual(MODULE.split(" a b  c"), ["a", "b", "c"])
        self.assertEqual(MODULE.pair("a"), ("a", 1))
        self.assertEqual(MODULE.add(2, 3), 5)


if __name__ == "__main__":
    unittest.main()
"#
    .replace("MODULE", &module);
    std::fs::write(dir.join(format!("{module}.py")), code).context("writing the module")?;
    std::fs::write(dir.join(format!("test_{module}.py")), test).context("writing the test")?;
    std::fs::write(dir.join(".gitignore"), "/build\n__pycache__/\n")
        .context("writing .gitignore")?;
    println!(
        "created {name}/ (python): `cd {name} && python3 -m unittest`, then `sluice plugin build` (needs `pip install componentize-py`)"
    );
    Ok(())
}

/// `sluice plugin build` of a Python project: the module that calls
/// `sluice.export`, componentized with the SDK and WIT built into sluice.
fn build_python_plugin(dir: &std::path::Path) -> Result<PathBuf> {
    let mut modules = Vec::new();
    for e in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = e?.path();
        let stem = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        if path.extension().is_some_and(|x| x == "py")
            && !stem.starts_with("test_")
            && std::fs::read_to_string(&path).is_ok_and(|t| t.contains("sluice.export("))
        {
            modules.push(stem);
        }
    }
    let module = match modules.as_slice() {
        [m] => m.clone(),
        [] => bail!(
            "{} is not a plugin project: no Cargo.toml, no Python module calling `sluice.export(...)`, no JavaScript module with `export default sluice.plugin(...)`, no C file declaring `SLUICE_PLUGIN(...)`",
            dir.display()
        ),
        many => bail!(
            "{}: several modules call `sluice.export` ({}); keep one per plugin",
            dir.display(),
            many.join(", ")
        ),
    };
    let build = dir.join("build");
    write_files(&build.join("wit"), &WIT)?;
    write_files(&build.join("sdk").join("sluice"), &PYTHON_SDK)?;
    let wasm = build.join(format!("{module}.wasm"));
    let status = std::process::Command::new("componentize-py")
        .arg("-d")
        .arg(build.join("wit"))
        .args(["-w", "plugin", "componentize", &module, "-p"])
        .arg(dir)
        .arg("-p")
        .arg(build.join("sdk"))
        .arg("-o")
        .arg(&wasm)
        .status()
        .map_err(|e| anyhow::anyhow!("running componentize-py ({e}): install it with `pip install componentize-py==0.25.1`"))?;
    if !status.success() {
        bail!(
            "componentize-py failed building {}",
            dir.join(format!("{module}.py")).display()
        );
    }
    Ok(wasm)
}

/// `sluice plugin new --lang js NAME`: a module, its `node --test` test,
/// and a copy of the SDK.
fn new_js_plugin(name: &str) -> Result<()> {
    let module = name.replace('-', "_");
    let dir = PathBuf::from(name);
    write_files(&dir, &JS_SDK)?;
    let code = r#"// A Sluice plugin in JavaScript. Build it with `sluice plugin build`, try a
// function with `sluice plugin test build/MODULE.wasm split "a b"`, and use
// it in a job spec as `NAME.split`.
import * as sluice from "./sluice.js";

export const split = sluice.flatMap((line) => line.split(/\s+/).filter((w) => w !== ""), "Splits a line into words.");
export const pair = sluice.map((word) => [word, 1], "Pairs a word with the count 1.");
export const add = sluice.reduce((a, b) => a + b, "Adds two counts.");

export default sluice.plugin({ name: "NAME", version: "0.1.0", functions: { split, pair, add } });
"#
    .replace("MODULE", &module)
    .replace("NAME", name);
    let test = r#"import { test } from "node:test";
import assert from "node:assert/strict";
import { split, pair, add } from "./MODULE.js";

test("splits, pairs and adds", () => {
  assert.deepEqual(split(" a b  c"), ["a", "b", "c"]);
  assert.deepEqual(pair("a"), ["a", 1]);
  assert.equal(add(2, 3), 5);
});
"#
    .replace("MODULE", &module);
    std::fs::write(dir.join(format!("{module}.js")), code).context("writing the module")?;
    std::fs::write(dir.join(format!("{module}.test.mjs")), test).context("writing the test")?;
    std::fs::write(
        dir.join("package.json"),
        format!(
            "{{\n  \"name\": \"{name}\",\n  \"private\": true,\n  \"type\": \"module\",\n  \"scripts\": {{ \"test\": \"node --test\" }}\n}}\n"
        ),
    )
    .context("writing package.json")?;
    std::fs::write(dir.join(".gitignore"), "/build\n/node_modules\n")
        .context("writing .gitignore")?;
    println!(
        "created {name}/ (js): `cd {name} && node --test`, then `sluice plugin build` (needs `npm install -g @bytecodealliance/componentize-js@0.23.0 rolldown@1.3.2`, or $SLUICE_JS_TOOLS)"
    );
    Ok(())
}

/// A JavaScript build tool: in `$SLUICE_JS_TOOLS/node_modules/.bin`, else
/// on the PATH.
fn js_tool(name: &str) -> PathBuf {
    std::env::var_os("SLUICE_JS_TOOLS")
        .map(|d| {
            PathBuf::from(d)
                .join("node_modules")
                .join(".bin")
                .join(name)
        })
        .filter(|p| p.exists())
        .unwrap_or_else(|| PathBuf::from(name))
}

/// A plugin project's source files ending in `ext` (not its tests, not
/// the vendored SDK file `sdk`), sorted, and those among them whose text
/// declares the plugin.
fn plugin_sources(
    dir: &std::path::Path,
    ext: &str,
    sdk: &str,
    is_test: impl Fn(&str) -> bool,
    declares: impl Fn(&str) -> bool,
) -> Result<(Vec<PathBuf>, Vec<PathBuf>)> {
    let mut mains = Vec::new();
    let mut sources = Vec::new();
    for e in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = e?.path();
        let file = path
            .file_name()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        if !file.ends_with(ext) || is_test(&file) || file == sdk {
            continue;
        }
        if std::fs::read_to_string(&path).is_ok_and(|t| declares(&t)) {
            mains.push(path.clone());
        }
        sources.push(path);
    }
    mains.sort();
    sources.sort();
    Ok((mains, sources))
}

/// A JavaScript project's modules (not tests, not the SDK) and those whose
/// default export is `sluice.plugin(...)`.
fn js_sources(dir: &std::path::Path) -> Result<(Vec<PathBuf>, Vec<PathBuf>)> {
    plugin_sources(
        dir,
        ".js",
        "sluice.js",
        |f| f.contains(".test."),
        |t| t.contains("export default sluice.plugin("),
    )
}

/// `sluice plugin build` of a JavaScript project: the module whose default
/// export is `sluice.plugin(...)`, bundled with the SDK built into sluice
/// (rolldown) and componentized (ComponentizeJS).
fn build_js_plugin(dir: &std::path::Path) -> Result<PathBuf> {
    let (mains, sources) = js_sources(dir)?;
    let modules: Vec<String> = mains
        .iter()
        .filter_map(|p| p.file_stem().map(|s| s.to_string_lossy().into_owned()))
        .collect();
    let module = match modules.as_slice() {
        [m] => m.clone(),
        [] => bail!(
            "{} is not a plugin project: no Cargo.toml, no Python module calling `sluice.export(...)`, no JavaScript module with `export default sluice.plugin(...)`, no C file declaring `SLUICE_PLUGIN(...)`",
            dir.display()
        ),
        many => bail!(
            "{}: several modules export a plugin ({}); keep one per plugin",
            dir.display(),
            many.join(", ")
        ),
    };
    let build = dir.join("build");
    let src = build.join("src");
    let _ = std::fs::remove_dir_all(&src);
    std::fs::create_dir_all(&src).with_context(|| format!("creating {}", src.display()))?;
    for s in &sources {
        std::fs::copy(s, src.join(s.file_name().unwrap_or_default()))
            .with_context(|| format!("copying {}", s.display()))?;
    }
    write_files(&src, &JS_SDK)?;
    write_files(&build.join("wit"), &WIT)?;
    std::fs::write(
        src.join("__entry.js"),
        format!(
            "import {{ log }} from \"sluice:plugin/host@0.1.0\";\nimport {{ setLog }} from \"./sluice.js\";\nimport plugin from \"./{module}.js\";\nsetLog(log);\nexport const operator = plugin;\n"
        ),
    )
    .context("writing the entry module")?;
    let wasm = build.join(format!("{module}.wasm"));
    let run = |tool: &str, args: &[&str]| -> Result<()> {
        let status = std::process::Command::new(js_tool(tool))
            .args(args)
            .current_dir(&build)
            .status()
            .map_err(|e| {
                anyhow::anyhow!(
                    "running {tool} ({e}): install it with `npm install -g @bytecodealliance/componentize-js@0.23.0 rolldown@1.3.2` (or set $SLUICE_JS_TOOLS to where they are installed)"
                )
            })?;
        if !status.success() {
            bail!(
                "{tool} failed building {}",
                dir.join(format!("{module}.js")).display()
            );
        }
        Ok(())
    };
    run(
        "rolldown",
        &[
            "src/__entry.js",
            "-o",
            "bundle.js",
            "-f",
            "esm",
            "-e",
            "sluice:plugin/host@0.1.0",
        ],
    )?;
    let out = format!("{module}.wasm");
    run(
        "componentize-js",
        &[
            "bundle.js",
            "--wit",
            "wit",
            "-n",
            "plugin",
            "-d",
            "http",
            "fetch-event",
            "-o",
            &out,
        ],
    )?;
    Ok(wasm)
}

fn new_plugin(name: &str, lang: &str, sdk: Option<PathBuf>) -> Result<()> {
    if !matches!(lang, "rust" | "python" | "js" | "c") {
        bail!("--lang {lang}: rust, python, js and c plugins can be scaffolded");
    }
    let valid = !name.is_empty()
        && name.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if !valid {
        bail!("plugin name `{name}`: use letters, digits, `_` and `-`, starting with a letter");
    }
    let dir = PathBuf::from(name);
    if dir.exists() {
        bail!("{} already exists", dir.display());
    }
    if lang == "python" {
        return new_python_plugin(name);
    }
    if lang == "js" {
        return new_js_plugin(name);
    }
    if lang == "c" {
        return c_plugin::new_c_plugin(name);
    }
    let sdk = sdk_path(sdk)?;
    std::fs::create_dir_all(dir.join("src"))
        .with_context(|| format!("creating {}", dir.display()))?;
    let manifest = format!(
        r#"[package]
name = "{name}"
version = "0.1.0"
edition = "2024"
publish = false

[lib]
crate-type = ["cdylib", "rlib"]

[dependencies]
sluice-sdk = {{ path = {sdk:?} }}

# A workspace of its own.
[workspace]

[profile.release]
opt-level = 3
lto = true
codegen-units = 1
panic = "unwind"
strip = "debuginfo"
"#,
        sdk = sdk.display().to_string()
    );
    let lib = r#"//! A Sluice plugin. Build it with `sluice plugin build`, try a function
//! with `sluice plugin test target/wasm32-wasip2/release/NAME.wasm split "a b"`,
//! and use it in a job spec as `NAME.split`.

use sluice_sdk as sluice;

/// Splits a line into words.
#[sluice::flat_map]
fn split(line: &str) -> impl Iterator<Item = &str> {
    line.split_whitespace()
}

/// Pairs a word with the count 1.
#[sluice::map]
fn pair(word: &str) -> (&str, i64) {
    (word, 1)
}

/// Adds two counts.
#[sluice::reduce]
fn add(a: i64, b: i64) -> i64 {
    a + b
}

sluice::export!(split, pair, add);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_pairs_and_adds() {
        assert_eq!(split(" a b  c").collect::<Vec<_>>(), ["a", "b", "c"]);
        assert_eq!(pair("a"), ("a", 1));
        assert_eq!(add(2, 3), 5);
    }
}
"#
    .replace("NAME", name);
    std::fs::write(dir.join("Cargo.toml"), manifest).context("writing Cargo.toml")?;
    std::fs::write(dir.join("src").join("lib.rs"), lib).context("writing src/lib.rs")?;
    std::fs::write(
        dir.join(".gitignore"),
        "/target
",
    )
    .context("writing .gitignore")?;
    println!(
        "created {name}/ (rust, SDK {}): `cd {name} && cargo test`, then `sluice plugin build`",
        sdk.display()
    );
    Ok(())
}

fn build_plugin(dir: &std::path::Path) -> Result<()> {
    let manifest = dir.join("Cargo.toml");
    if !manifest.exists() {
        let is_js = js_sources(dir).is_ok_and(|(mains, _)| !mains.is_empty());
        let wasm = if c_plugin::is_c_project(dir) {
            c_plugin::build_c_plugin(dir)?
        } else if is_js {
            build_js_plugin(dir)?
        } else {
            build_python_plugin(dir)?
        };
        check_plugin(&wasm)?;
        println!("{}", wasm.display());
        return Ok(());
    }
    let text = std::fs::read_to_string(&manifest)
        .with_context(|| format!("{} is not a plugin project", dir.display()))?;
    let name = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("name = \""))
        .and_then(|r| r.strip_suffix('"'))
        .with_context(|| format!("{}: no package name", manifest.display()))?
        .replace('-', "_");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
    let status = std::process::Command::new(cargo)
        .args([
            "build",
            "--release",
            "--target",
            "wasm32-wasip2",
            "--manifest-path",
        ])
        .arg(&manifest)
        .status()
        .context("running cargo")?;
    if !status.success() {
        bail!(
            "building {} failed (is the wasm32-wasip2 target installed? `rustup target add wasm32-wasip2`)",
            dir.display()
        );
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| dir.join("target"));
    let wasm = target
        .join("wasm32-wasip2")
        .join("release")
        .join(format!("{name}.wasm"));
    check_plugin(&wasm)?;
    println!("{}", wasm.display());
    Ok(())
}

fn plugin_name(wasm: &std::path::Path) -> String {
    wasm.file_stem()
        .map_or("plugin".to_string(), |s| s.to_string_lossy().into_owned())
}

fn check_plugin(wasm: &std::path::Path) -> Result<()> {
    let runtime = Runtime::shared()?;
    let plugin = Plugin::load(&runtime, &plugin_name(wasm), wasm, Limits::default())?;
    let d = plugin.description();
    let mut problems = Vec::new();
    if d.functions.is_empty() {
        problems.push("it exports no functions".to_string());
    }
    if d.version.trim().is_empty() {
        problems.push("it describes no version".to_string());
    }
    for f in &d.functions {
        let ok = !f.name.is_empty()
            && f.name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        if !ok {
            problems.push(format!(
                "function name `{}` is not an identifier (letters, digits, `_`, `-`)",
                f.name
            ));
        }
    }
    if !problems.is_empty() {
        bail!("{}: {}", wasm.display(), problems.join("; "));
    }
    println!(
        "{}: ok — {} {} ({}), {} functions",
        wasm.display(),
        d.name,
        d.version,
        d.sdk,
        d.functions.len()
    );
    for f in &d.functions {
        println!("  {:<16} {}", f.name, f.kind);
    }
    Ok(())
}

fn test_plugin(
    wasm: &std::path::Path,
    function: &str,
    input: Vec<String>,
    json: bool,
) -> Result<()> {
    use sluice::Func;
    use sluice_sdk::Kind;
    let input = if input.is_empty() {
        let mut lines = Vec::new();
        for line in std::io::stdin().lines() {
            lines.push(line.context("reading input from standard input")?);
        }
        lines
    } else {
        input
    };
    let ssc = sluice::StreamingContext::new(Duration::from_secs(1))
        .with_clock(std::sync::Arc::new(sluice::ManualClock::new(0)))
        .with_runtime(Runtime::shared()?)
        .with_workers(1);
    let plugin = ssc.load_plugin(&plugin_name(wasm), wasm)?;
    let f = plugin.func(function)?;
    if json {
        for s in &input {
            serde_json::from_str::<serde_json::Value>(s)
                .with_context(|| format!("input `{s}` is not JSON"))?;
        }
    }
    let mut values = ssc.queue_stream(vec![input], 1);
    if json {
        values = values.map(Func::map("json", |s: String| {
            serde_json::from_str::<serde_json::Value>(&s).unwrap_or(serde_json::Value::Null)
        }));
    }
    let out = match f.kind() {
        Kind::Map => values.map(f),
        Kind::FlatMap => values.flat_map(f),
        Kind::Filter => values.filter(f),
        Kind::Transform => values.transform(f),
        Kind::MapPartitions => values.map_partitions(f),
        Kind::Reduce => values.reduce(f),
        other => bail!(
            "`{function}` is a {other} function: `plugin test` runs map, flat-map, filter, transform, map-partitions and reduce functions"
        ),
    }
    .collect();
    ssc.run(Some(1))?;
    for batch in out.lock().unwrap_or_else(|e| e.into_inner()).iter() {
        for r in &batch.records {
            println!("{r}");
        }
    }
    Ok(())
}

fn inspect(wasm: PathBuf) -> Result<()> {
    let runtime = Runtime::shared()?;
    let name = wasm
        .file_stem()
        .map_or("plugin".to_string(), |s| s.to_string_lossy().into_owned());
    let started = Instant::now();
    let plugin = Plugin::load(&runtime, &name, &wasm, Limits::default())?;
    let d = plugin.description();
    println!("plugin   {} {}", d.name, d.version);
    println!("sdk      {}", d.sdk);
    println!(
        "file     {} ({})",
        wasm.display(),
        &plugin.content_hash()[..16]
    );
    println!(
        "load     {} ms ({})",
        started.elapsed().as_millis(),
        match plugin.cache_outcome() {
            CacheOutcome::Hit => "cached",
            CacheOutcome::Compiled => "compiled",
        }
    );
    println!("functions:");
    for f in &d.functions {
        if f.doc.is_empty() {
            println!("  {:<16} {}", f.name, f.kind);
        } else {
            println!("  {:<16} {:<14} {}", f.name, f.kind, f.doc);
        }
    }
    Ok(())
}
