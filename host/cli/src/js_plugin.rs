//! JavaScript plugins for the `sluice` CLI: `sluice plugin new --lang js`
//! and `sluice plugin build` of a JavaScript project (rolldown and
//! ComponentizeJS).

use crate::plugin::{WIT, plugin_sources, write_files};
use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};

/// The JavaScript guest SDK, built into `sluice` so that `sluice plugin
/// new|build --lang js` work anywhere.
const JS_SDK: [(&str, &str); 1] = [("sluice.js", include_str!("../../../guest-sdk/js/sluice.js"))];

/// `sluice plugin new --lang js NAME`: a module, its `node --test` test,
/// and a copy of the SDK.
pub(crate) fn new_js_plugin(name: &str) -> Result<()> {
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

/// A JavaScript project's modules (not tests, not the SDK) and those whose
/// default export is `sluice.plugin(...)`.
pub(crate) fn js_sources(dir: &Path) -> Result<(Vec<PathBuf>, Vec<PathBuf>)> {
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
pub(crate) fn build_js_plugin(dir: &Path) -> Result<PathBuf> {
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
    stage(&build, &module, &sources)?;
    let wasm = build.join(format!("{module}.wasm"));
    let run = |tool: &str, args: &[&str]| run_js_tool(tool, args, &build, dir, &module);
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

/// Lays out `build/` for bundling: `src/` with the project's `sources`, the
/// SDK and an entry module exporting the plugin `module`; `wit/` with the
/// contract.
fn stage(build: &Path, module: &str, sources: &[PathBuf]) -> Result<()> {
    let src = build.join("src");
    let _ = std::fs::remove_dir_all(&src);
    std::fs::create_dir_all(&src).with_context(|| format!("creating {}", src.display()))?;
    for s in sources {
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
    Ok(())
}

/// Runs a JavaScript build tool in `build`; an error names the project's
/// `module` in `dir`.
fn run_js_tool(tool: &str, args: &[&str], build: &Path, dir: &Path, module: &str) -> Result<()> {
    let status = std::process::Command::new(js_tool(tool))
        .args(args)
        .current_dir(build)
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
}
