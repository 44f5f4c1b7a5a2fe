//! Plugin tools: `sluice plugin inspect`, `check`, `precompile`, `test`,
//! `new` and `build` (Rust projects here; Python, JavaScript and C ones in
//! their own modules), and what those share.

use crate::{c_plugin, js_plugin, python_plugin};
use anyhow::{Context, Result, bail};
use sluice::LoadPlugins;
use sluice::plugin::{CacheOutcome, Limits, Plugin, Runtime};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The WIT contract, built into `sluice` so that `sluice plugin build` works
/// anywhere.
pub(crate) const WIT: [(&str, &str); 2] = [
    ("plugin.wit", include_str!("../../../wit/plugin.wit")),
    ("types.wit", include_str!("../../../wit/types.wit")),
];

/// The guest SDK to point new plugin projects at.
fn sdk_path(given: Option<PathBuf>) -> Result<PathBuf> {
    let path = given
        .or_else(|| std::env::var_os("SLUICE_SDK_PATH").map(PathBuf::from))
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR"))
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

/// Writes `files` (name, text) into `dir`, creating it.
pub(crate) fn write_files(dir: &Path, files: &[(&str, &str)]) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    for (name, text) in files {
        std::fs::write(dir.join(name), text)
            .with_context(|| format!("writing {}", dir.join(name).display()))?;
    }
    Ok(())
}

/// A plugin project's source files ending in `ext` (not its tests, not
/// the vendored SDK file `sdk`), sorted, and those among them whose text
/// declares the plugin.
pub(crate) fn plugin_sources(
    dir: &Path,
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

/// `sluice plugin new`: a project for `lang` in a new directory `name`.
pub(crate) fn new_plugin(name: &str, lang: &str, kind: &str, sdk: Option<PathBuf>) -> Result<()> {
    if !matches!(lang, "rust" | "python" | "js" | "c") {
        bail!("--lang {lang}: rust, python, js and c plugins can be scaffolded");
    }
    let receiver = match kind {
        "operator" => false,
        "receiver" if matches!(lang, "rust" | "python") => true,
        "receiver" => bail!(
            "--kind receiver: the rust and python SDKs write receivers (the {lang} SDK writes operators)"
        ),
        other => bail!("--kind {other}: use operator or receiver"),
    };
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
    match lang {
        "python" => python_plugin::new_python_plugin(name, receiver),
        "js" => js_plugin::new_js_plugin(name),
        "c" => c_plugin::new_c_plugin(name),
        _ => new_rust_plugin(name, receiver, sdk),
    }
}

/// The `src/lib.rs` of a new Rust receiver project: the line-protocol
/// receiver of `plugins/lines`, renamed.
fn rust_receiver_lib(name: &str) -> String {
    include_str!("../../../plugins/lines/src/lib.rs")
        .replace("[plugins.lines]", &format!("[plugins.{name}]"))
        .replace("release/lines.wasm", &format!("release/{name}.wasm"))
        .replace("\"lines.tcp_lines\"", &format!("\"{name}.tcp_lines\""))
}

/// The `src/lib.rs` of a new Rust plugin project (`NAME`: its name).
const RUST_LIB: &str = r#"//! A Sluice plugin. Build it with `sluice plugin build`, try a function
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
"#;

/// `sluice plugin new NAME` (Rust): a crate depending on the guest SDK,
/// with an example plugin (a receiver's, with `receiver`) and its unit test.
fn new_rust_plugin(name: &str, receiver: bool, sdk: Option<PathBuf>) -> Result<()> {
    let dir = PathBuf::from(name);
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
    let lib = if receiver {
        rust_receiver_lib(name)
    } else {
        RUST_LIB.replace("NAME", name)
    };
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

/// `sluice plugin build`: builds the project in `dir` (Rust, C, JavaScript
/// or Python), checks the component and prints its path.
pub(crate) fn build_plugin(dir: &Path) -> Result<()> {
    let manifest = dir.join("Cargo.toml");
    let wasm = if manifest.exists() {
        build_rust_plugin(dir, &manifest)?
    } else {
        let is_js = js_plugin::js_sources(dir).is_ok_and(|(mains, _)| !mains.is_empty());
        if c_plugin::is_c_project(dir) {
            c_plugin::build_c_plugin(dir)?
        } else if is_js {
            js_plugin::build_js_plugin(dir)?
        } else {
            python_plugin::build_python_plugin(dir)?
        }
    };
    check_plugin(&wasm)?;
    println!("{}", wasm.display());
    Ok(())
}

/// `sluice plugin build` of a Rust project: `cargo build --release --target
/// wasm32-wasip2`; returns the component's path.
fn build_rust_plugin(dir: &Path, manifest: &Path) -> Result<PathBuf> {
    let text = std::fs::read_to_string(manifest)
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
        .arg(manifest)
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
    Ok(target
        .join("wasm32-wasip2")
        .join("release")
        .join(format!("{name}.wasm")))
}

/// A plugin's name in messages: its file's stem.
fn plugin_name(wasm: &Path) -> String {
    wasm.file_stem()
        .map_or("plugin".to_string(), |s| s.to_string_lossy().into_owned())
}

/// `sluice plugin check`: validates a component against the plugin
/// contract and prints its functions.
pub(crate) fn check_plugin(wasm: &Path) -> Result<()> {
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
    if d.functions
        .iter()
        .any(|f| f.kind == sluice_sdk::Kind::Receiver)
        && !plugin.receives()
    {
        problems.push(
            "it describes receiver functions but does not export sluice:plugin/receiver"
                .to_string(),
        );
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

/// `sluice plugin test`: runs one function on sample input, one batch, and
/// prints its output.
pub(crate) fn test_plugin(
    wasm: &Path,
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

/// `sluice plugin inspect`: loads a component and lists its functions.
pub(crate) fn inspect(wasm: PathBuf) -> Result<()> {
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

/// `sluice plugin precompile` (what `sluice serve` runs for each upload):
/// validates `wasm` and stores its compiled artifact in `cache_dir`.
pub(crate) fn precompile(
    wasm: &Path,
    cache_dir: PathBuf,
    max_instances: u32,
    name: Option<String>,
) -> Result<()> {
    let runtime = Runtime::new(sluice::RuntimeConfig {
        max_instances,
        cache_dir: Some(cache_dir),
        ..sluice::RuntimeConfig::default()
    })?;
    let limits = Limits::default();
    let name = name.unwrap_or_else(|| plugin_name(wasm));
    Plugin::load(&runtime, &name, wasm, limits)?;
    Ok(())
}
