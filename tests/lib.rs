//! Helpers shared by the end-to-end tests and benches: where the built plugins
//! are, one shared wasm runtime (one engine, one compile cache), the `sluice`
//! binary, the Spark reference outputs, and golden comparisons that print a
//! readable expected/got diff.

pub mod brokers;
pub mod chaos;
pub mod mosquitto;
pub mod redis;
pub mod s3;
pub mod tansu;
pub mod tls;

use serde_json::Value;
use sluice::LoadPlugins;
use sluice::{Runtime, RuntimeConfig};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

/// The workspace root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ is inside the workspace")
        .to_path_buf()
}

/// The word-count plugin and running totals of a job's `lines`, as spec
/// sections: lines → `words` → `pairs` → `totals`
/// (`update_state_by_key`), the totals into `out.jsonl`. What the kill
/// and broker tests' jobs share after their `[job]` and source.
pub fn totals_streams() -> String {
    format!(
        r#"
[plugins.wordcount]
path = "{}"

[streams.words]
from = "lines"
op = "flat_map"
function = "wordcount.split"

[streams.pairs]
from = "words"
op = "map"
function = "wordcount.pair"

[streams.totals]
from = "pairs"
op = "update_state_by_key"
function = "wordcount.running_total"

[[outputs]]
stream = "totals"
type = "jsonl"
path = "out.jsonl"
"#,
        plugin("wordcount").display()
    )
}

/// A built plugin component, e.g. `plugin("wordcount")`.
pub fn plugin(name: &str) -> PathBuf {
    Path::new(env!("SLUICE_PLUGIN_DIR")).join(format!("{name}.wasm"))
}

/// A C plugin of `plugins/c/NAME`, built once per test run by `sluice
/// plugin build` (as a user builds one) into `plugins/c/NAME/build/`.
pub fn c_plugin(name: &str) -> PathBuf {
    static BUILT: Mutex<BTreeMap<String, PathBuf>> = Mutex::new(BTreeMap::new());
    let mut built = BUILT.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(wasm) = built.get(name) {
        return wasm.clone();
    }
    let out = run_ok(
        std::process::Command::new(sluice_bin())
            .args(["plugin", "build"])
            .arg(root().join("plugins").join("c").join(name))
            .env("SLUICE_CACHE_DIR", cache_dir()),
    );
    let wasm = PathBuf::from(out.lines().last().expect("the component's path"));
    assert!(wasm.is_file(), "{out}");
    built.insert(name.to_string(), wasm.clone());
    wasm
}

/// The compile cache shared by every test (and the CLI runs they start).
pub fn cache_dir() -> PathBuf {
    root().join("target").join("sluice-cache")
}

/// One runtime for the whole test process: one engine, compiled components shared.
pub fn runtime() -> Arc<Runtime> {
    static RT: OnceLock<Arc<Runtime>> = OnceLock::new();
    RT.get_or_init(|| {
        Runtime::new(RuntimeConfig {
            cache_dir: Some(cache_dir()),
            ..RuntimeConfig::default()
        })
        .expect("creating the wasm runtime")
    })
    .clone()
}

/// Spark's recorded outputs and their inputs (`tests/reference`, see its
/// README), or `$SLUICE_REFERENCE` to check against another recording.
pub fn reference() -> PathBuf {
    let dir = std::env::var_os("SLUICE_REFERENCE")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("tests").join("reference"));
    assert!(
        dir.join("golden").is_dir(),
        "the Spark reference outputs are missing at {} (set SLUICE_REFERENCE)",
        dir.display()
    );
    dir
}

/// The `sluice` binary built beside this test (by `cargo test --workspace`).
pub fn sluice_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("SLUICE_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("current exe");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>/deps/..");
    let bin = dir.join(format!("sluice{}", std::env::consts::EXE_SUFFIX));
    assert!(
        bin.exists(),
        "{} is missing: run the tests with `cargo test --release --workspace`, which builds it",
        bin.display()
    );
    bin
}

/// Parses a JSON-lines file.
pub fn read_jsonl(path: &Path) -> Vec<Value> {
    let text =
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str(l).unwrap_or_else(|e| panic!("{}:{}: {e}", path.display(), i + 1))
        })
        .collect()
}

fn canonical(v: &Value) -> String {
    v.to_string()
}

fn sorted(records: &Value) -> Vec<String> {
    let mut r: Vec<String> = records
        .as_array()
        .map(|a| a.iter().map(canonical).collect())
        .unwrap_or_default();
    r.sort();
    r
}

/// Compares per-batch outputs with a golden file: the same batches, and per
/// batch the same records as multisets (and `partitions` where the golden
/// file records it). Panics with a readable expected/got diff.
pub fn assert_matches_golden(got: &[Value], golden: &[Value], what: &str) {
    let mut problems = Vec::new();
    let index = |v: &Value| v["batch"].as_u64().unwrap_or(u64::MAX);
    let got_batches: Vec<u64> = got.iter().map(index).collect();
    let want_batches: Vec<u64> = golden.iter().map(index).collect();
    if got_batches != want_batches {
        problems.push(format!(
            "batches: expected {want_batches:?}\n         got      {got_batches:?}"
        ));
    }
    for want in golden {
        let b = index(want);
        let Some(have) = got.iter().find(|g| index(g) == b) else {
            continue;
        };
        let (w, h) = (sorted(&want["records"]), sorted(&have["records"]));
        if w != h {
            let missing: Vec<&String> = w.iter().filter(|x| !h.contains(x)).collect();
            let extra: Vec<&String> = h.iter().filter(|x| !w.contains(x)).collect();
            problems.push(format!(
                "batch {b}:\n  expected {}\n  got      {}\n  missing  {missing:?}\n  extra    {extra:?}",
                w.join(" "),
                h.join(" ")
            ));
        }
        if let Some(p) = want.get("partitions")
            && have.get("partitions") != Some(p)
        {
            problems.push(format!(
                "batch {b}: expected {p} partitions, got {:?}",
                have.get("partitions")
            ));
        }
    }
    assert!(
        problems.is_empty(),
        "{what} differs from the golden output:\n{}",
        problems.join("\n")
    );
}

/// Runs a command that must succeed; panics with its stderr otherwise, and
/// returns its stdout.
pub fn run_ok(cmd: &mut std::process::Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A context for library tests: 1 s batches on a manual clock (batches run
/// back to back), the shared runtime, state in memory (no checkpoint).
pub fn test_context() -> sluice::StreamingContext {
    sluice::StreamingContext::new(std::time::Duration::from_secs(1))
        .with_clock(Arc::new(sluice::ManualClock::new(0)))
        .with_runtime(runtime())
        .with_state_in_memory()
}

/// `sluice run JOB` with the shared compile cache; returns its stdout.
pub fn run_job(job: &Path) -> String {
    run_ok(
        std::process::Command::new(sluice_bin())
            .arg("run")
            .arg(job)
            .env("SLUICE_CACHE_DIR", cache_dir()),
    )
}

/// Writes `tests/cases/CASE/job.toml` into `dir` with its placeholders
/// filled in (`${PLUGINS}`: the built plugins, `${REFERENCE}`: the Spark
/// reference, `${CASE}`: the case's own directory); returns its path.
pub fn case_job(case: &str, dir: &Path) -> PathBuf {
    let case_dir = root().join("tests/cases").join(case);
    let template = std::fs::read_to_string(case_dir.join("job.toml"))
        .unwrap_or_else(|e| panic!("reading the job.toml of case {case}: {e}"));
    let plugins = plugin("wordcount")
        .parent()
        .expect("plugin dir")
        .display()
        .to_string();
    let text = template
        .replace("${PLUGINS}", &plugins)
        .replace("${REFERENCE}", &reference().display().to_string())
        .replace("${CASE}", &case_dir.display().to_string());
    let path = dir.join("job.toml");
    std::fs::write(&path, text).expect("writing job.toml");
    path
}

/// A number from the environment variable `name` (benchmarks' knobs), else `default`.
pub fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// `lines` lines of 10 words `w<n>` drawn from `vocab` words by a seeded
/// xorshift (deterministic): the benches' input.
pub fn random_lines(lines: usize, vocab: u64, seed: u64) -> Vec<String> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..lines)
        .map(|_| {
            (0..10)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    format!("w{}", x % vocab)
                })
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect()
}

/// `examples/NAME` copied into `dir` as the tests run it: its socket on a
/// free port (so tests run in parallel), its plugins and demo files by
/// absolute path.
pub fn example_job(name: &str, dir: &Path) -> PathBuf {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let mut out = String::new();
    let mut ported = false;
    for line in example_spec(name, &[]).lines() {
        if line.starts_with("port = ") {
            ported = true;
            out.push_str(&format!("port = {port}"));
        } else {
            out.push_str(line);
        }
        out.push('\n');
    }
    assert!(ported, "{name} has a socket port");
    let job = dir.join(name);
    std::fs::write(&job, out).expect("write the example");
    job
}

/// The text of `examples/NAME` as the tests run it: each `(from, to)` of
/// `replacements` made (a broker's address), its plugins and demo files by
/// absolute path.
pub fn example_spec(name: &str, replacements: &[(&str, &str)]) -> String {
    let examples = root().join("examples");
    let mut text = std::fs::read_to_string(examples.join(name)).expect("example");
    for (from, to) in replacements {
        assert!(text.contains(from), "{name} holds {from}");
        text = text.replace(from, to);
    }
    let mut out = String::new();
    for line in text.lines() {
        let line = if let Some(rest) = line
            .strip_prefix("path = \"../target/plugins/wasm32-wasip2/release/")
            .and_then(|r| r.strip_suffix(".wasm\""))
        {
            format!("path = {:?}", plugin(rest).display().to_string())
        } else if let Some(file) = line
            .strip_prefix("demo_lines = \"")
            .and_then(|r| r.strip_suffix('"'))
        {
            format!(
                "demo_lines = {:?}",
                examples.join(file).display().to_string()
            )
        } else {
            line.to_string()
        };
        out.push_str(&line);
        out.push('\n');
    }
    out
}

/// Opens `url` in headless Chromium (Debian's `chromium`, which `.ci/run`
/// installs) with `extra` flags (`--dump-dom`, `--screenshot=FILE`), after
/// letting its scripts run for 3 s of virtual time.
pub fn chromium(url: &str, extra: &[String]) -> std::process::Output {
    let browser = ["chromium", "chromium-browser"]
        .into_iter()
        .find(|c| {
            std::process::Command::new(c)
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success())
        })
        .expect("Chromium is needed for this test (apt-get install chromium; .ci/run installs it)");
    let profile = tempfile::tempdir().expect("profile dir");
    std::process::Command::new(browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--virtual-time-budget=3000",
            "--window-size=1200,1400",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(extra)
        .arg(url)
        .output()
        .expect("chromium")
}

/// A `sluice serve` server in this process (no HTTP), its data in `dir`
/// and its compile cache seeded with the tests' compiled plugins.
pub fn in_process_server(dir: &Path, max_instances: u32) -> Arc<sluice_server::Server> {
    seed_cache(&dir.join("cache"));
    let mut config =
        sluice_server::ServerConfig::new(dir.to_path_buf(), "in-process-admin-token".to_string());
    config.max_instances = max_instances;
    sluice_server::Server::open(config).expect("open the server")
}

/// Uploads the built plugin `name` for `tenant`; returns `name@sha256`.
pub fn upload_plugin(server: &sluice_server::Server, tenant: &str, name: &str) -> String {
    let bytes = std::fs::read(plugin(name)).expect("plugin");
    let r = server.add_plugin(tenant, name, &bytes).expect("upload");
    format!("{name}@{}", r.digest)
}

/// Tenant limits from JSON (missing fields: the defaults).
pub fn tenant_limits(json: Value) -> Option<sluice_server::TenantLimits> {
    Some(serde_json::from_value(json).expect("limits"))
}

/// A job spec over a queue of `batches` on the system clock (100 ms
/// batches), mapping each line with `hostile.FUNCTION` (flat-mapping, for
/// `flood`) into `out.jsonl`; returns the spec and its files.
pub fn hostile_queue_job(
    name: &str,
    function: &str,
    batches: &Value,
) -> (String, std::collections::BTreeMap<String, String>) {
    let spec = format!(
        r#"[job]
name = "{name}"
batch_interval = "100ms"
clock = "system"

[plugins.hostile]
path = "hostile.wasm"

[sources.lines]
type = "queue"
path = "in.json"

[streams.out]
from = "lines"
op = "{op}"
function = "hostile.{function}"

[[outputs]]
stream = "out"
type = "jsonl"
path = "out.jsonl"
"#,
        op = if function == "flood" {
            "flat_map"
        } else {
            "map"
        }
    );
    (spec, [("in.json".to_string(), batches.to_string())].into())
}

/// Copies the tests' compiled plugins into the compile cache `cache` (of a
/// server under test), so it does not wait for Cranelift.
pub fn seed_cache(cache: &Path) {
    std::fs::create_dir_all(cache).expect("cache dir");
    if let Ok(entries) = std::fs::read_dir(cache_dir()) {
        for e in entries.flatten() {
            let _ = std::fs::copy(e.path(), cache.join(e.file_name()));
        }
    }
}

/// The address a `sluice run --ui 127.0.0.1:0` child serves its UI on (read
/// from its log on stderr, which it must pipe); the rest of its stderr is
/// drained on a thread so the job never blocks on it.
pub fn ui_address(child: &mut std::process::Child) -> String {
    use std::io::BufRead;
    let stderr = child.stderr.take().expect("a piped stderr");
    let mut lines = std::io::BufReader::new(stderr).lines();
    let addr = loop {
        let line = lines
            .next()
            .expect("the job ended before serving its UI")
            .expect("stderr");
        if let Some(at) = line.split("url=http://").nth(1) {
            break at.trim_end_matches('/').to_string();
        }
    };
    std::thread::spawn(move || for _ in lines {});
    addr
}
