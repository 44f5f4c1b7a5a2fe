//! The `sluice` command: run jobs, inspect plugins, feed demo traffic.
//!
//! This file holds the command line (the clap definitions, which are the
//! `--help` text) and dispatches each subcommand to the module that
//! carries it out.

mod c_plugin;
mod cat;
mod checkpoint;
mod client;
mod feed;
mod js_plugin;
mod logging;
mod plugin;
mod progress;
mod python_plugin;
mod remote;
mod run;
mod serve;

use anyhow::Result;
use clap::{Parser, Subcommand};
use sluice::spec::{self, Overrides};
use std::path::PathBuf;

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
        /// Checkpoint into DIR (or s3://bucket/prefix) and resume from its
        /// newest valid checkpoint.
        #[arg(long, value_name = "DIR")]
        checkpoint: Option<PathBuf>,
        /// With --checkpoint s3://…: the local directory of the batch logs
        /// and write-ahead logs.
        #[arg(long, value_name = "DIR")]
        checkpoint_logs: Option<PathBuf>,
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
        /// Kappa replay: reprocess the history the job's broker sources
        /// keep, from `earliest` or a time (RFC 3339, or ms since the
        /// epoch), in batches cut by record time, as fast as it goes;
        /// needs --output-dir, keeps no checkpoints.
        #[arg(long, value_name = "earliest|TIME")]
        from: Option<String>,
        /// With --from: the end of the replayed history (`now` by default).
        #[arg(long, value_name = "now|TIME", requires = "from")]
        to: Option<String>,
        /// Write every file output (jsonl, text files) into DIR instead.
        #[arg(long, value_name = "DIR")]
        output_dir: Option<PathBuf>,
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
        /// Serve HTTPS with this certificate chain (PEM, the server's
        /// certificate first); needs --tls-key.
        #[arg(long, value_name = "FILE", requires = "tls_key")]
        tls_cert: Option<PathBuf>,
        /// The private key (PEM) of --tls-cert.
        #[arg(long, value_name = "FILE", requires = "tls_cert")]
        tls_key: Option<PathBuf>,
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
    /// For an `https://` server: the CA certificate (PEM) its certificate
    /// chains to (default: the system's CAs).
    #[arg(long, env = "SLUICE_CA_CERT", value_name = "FILE", global = true)]
    ca_cert: Option<PathBuf>,
}

impl Remote {
    /// A client of the server this names.
    fn client(self) -> Result<client::Client> {
        client::Client::new(&self.server, self.token, self.ca_cert.as_deref())
    }
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
        /// What the example is: `operator` (a word count's functions) or
        /// `receiver` (a custom source reading lines from a TCP server;
        /// rust and python).
        #[arg(long, default_value = "operator")]
        kind: String,
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

fn main() {
    sluice::allocator::keep_freed_memory();
    logging::init_logging();
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
            checkpoint_logs,
            fresh,
            ui,
            confine,
            grant_socket,
            from,
            to,
            output_dir,
        } => run::run(
            job,
            (batches, run::Replay::parse(from.as_deref(), to.as_deref())?),
            (feed, feed_rate),
            ui,
            Overrides {
                workers,
                replay: from.is_some(),
                output_dir,
                checkpoint,
                checkpoint_logs,
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
        } => run::explain(&job, &format, workers),
        Command::Serve {
            data,
            addr,
            memory,
            admin_token_file,
            tenant_defaults,
            tls_cert,
            tls_key,
        } => serve::serve(serve::Options {
            data,
            addr,
            memory,
            admin_token_file,
            tenant_defaults,
            tls: tls_cert.zip(tls_key),
        }),
        Command::Submit {
            spec,
            plugin,
            remote,
        } => remote::submit(&spec, &plugin, remote),
        Command::Job { command, remote } => remote::job_command(command, remote),
        Command::Tenant { command, remote } => remote::tenant_command(command, remote),
        Command::Checkpoint {
            command: CheckpointCommand::Inspect { dir },
        } => checkpoint::inspect_checkpoint(&dir),
        Command::Plugin { command } => plugin_command(command),
        Command::Cat { paths } => cat::cat(&paths),
        Command::Feed {
            addr,
            rate,
            file,
            once,
        } => feed::feed(&addr, rate, file, once),
    }
}

fn plugin_command(command: PluginCommand) -> Result<()> {
    match command {
        PluginCommand::Inspect { wasm } => plugin::inspect(wasm),
        PluginCommand::Check { wasm } => plugin::check_plugin(&wasm),
        PluginCommand::Precompile {
            wasm,
            cache_dir,
            max_instances,
            name,
        } => plugin::precompile(&wasm, cache_dir, max_instances, name),
        PluginCommand::New {
            name,
            lang,
            kind,
            sdk,
        } => plugin::new_plugin(&name, &lang, &kind, sdk),
        PluginCommand::Build { dir } => plugin::build_plugin(&dir),
        PluginCommand::Test {
            wasm,
            function,
            input,
            json,
        } => plugin::test_plugin(&wasm, &function, input, json),
    }
}
