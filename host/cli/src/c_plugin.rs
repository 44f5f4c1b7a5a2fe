//! C plugins for the `sluice` CLI: `sluice plugin new --lang c` and
//! `sluice plugin build` of a C project.
//!
//! A build generates the contract's C bindings with `wit-bindgen c` (as a
//! library: nothing to install), compiles the project's sources with the C
//! SDK (`guest-sdk/c`, built into `sluice`) by clang for `wasm32-wasi`
//! against wasi-libc (Debian: `clang lld wasi-libc
//! libclang-rt-14-dev-wasm32`), and encodes the core module as a component
//! with the WASI preview 1 adapter.

use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};

/// The C guest SDK, built into `sluice` so that `sluice plugin new|build
/// --lang c` work anywhere.
const C_SDK: [(&str, &str); 2] = [
    ("sluice.h", include_str!("../../../guest-sdk/c/sluice.h")),
    ("sluice.c", include_str!("../../../guest-sdk/c/sluice.c")),
];

/// Whether `dir` holds a C plugin: a `.c` file declaring `SLUICE_PLUGIN(...)`.
/// (Several such files still make it a C project: the build says which.)
pub(crate) fn is_c_project(dir: &Path) -> bool {
    scan(dir).is_ok_and(|(mains, _)| !mains.is_empty())
}

fn scan(dir: &Path) -> Result<(Vec<PathBuf>, Vec<PathBuf>)> {
    crate::plugin::plugin_sources(
        dir,
        ".c",
        "sluice.c",
        |f| f.starts_with("test_"),
        |t| t.contains("SLUICE_PLUGIN("),
    )
}

/// The project's C sources to build (not its tests, not a vendored SDK) and
/// the one among them that declares the plugin.
fn c_sources(dir: &Path) -> Result<(Option<PathBuf>, Vec<PathBuf>)> {
    let (mut main, sources) = scan(dir)?;
    if main.len() > 1 {
        bail!(
            "{}: several files declare SLUICE_PLUGIN ({}); keep one per plugin",
            dir.display(),
            main.iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    Ok((main.pop(), sources))
}

/// `sluice plugin new --lang c NAME`: the plugin, its native unit test, a
/// copy of the SDK and a Makefile (`make test`, `make plugin`).
pub(crate) fn new_c_plugin(name: &str) -> Result<()> {
    let module = name.replace('-', "_");
    let dir = PathBuf::from(name);
    crate::plugin::write_files(&dir, &C_SDK)?;
    let code = r#"/*
 * A Sluice plugin in C. Build it with `sluice plugin build` (or `make plugin`),
 * try a function with `sluice plugin test build/MODULE.wasm split "a b"`, and
 * use it in a job spec as `NAME.split`.
 */
#include "sluice.h"

/* Splits a line into words. */
static int split(sluice_call *call, sluice_value line, sluice_writer *out) {
    const char *s;
    size_t n;
    if (!sluice_get_str(line, &s, &n))
        return sluice_refuse(call, "expected text, got %s", sluice_type_name(sluice_type_of(line)));
    size_t start = 0;
    for (size_t i = 0; i <= n; i++) {
        if (i == n || s[i] == ' ' || s[i] == '\t') {
            if (i > start) sluice_put_strn(out, s + start, i - start);
            start = i + 1;
        }
    }
    return SLUICE_OK;
}

/* Pairs a word with the count 1. */
static int pair(sluice_call *call, sluice_value word, sluice_writer *out) {
    (void)call;
    sluice_put_array(out, 2);
    sluice_put_value(out, word);
    sluice_put_int(out, 1);
    return SLUICE_OK;
}

/* Adds two counts. */
static int add(sluice_call *call, sluice_value a, sluice_value b, sluice_writer *out) {
    int64_t x, y;
    if (!sluice_get_int(a, &x) || !sluice_get_int(b, &y))
        return sluice_refuse(call, "expected two counts");
    sluice_put_int(out, x + y);
    return SLUICE_OK;
}

SLUICE_PLUGIN("NAME", "0.1.0",
              SLUICE_FLAT_MAP(split, "Splits a line into words."),
              SLUICE_MAP(pair, "Pairs a word with the count 1."),
              SLUICE_REDUCE(add, "Adds two counts."));
"#
    .replace("MODULE", &module)
    .replace("NAME", name);
    let test = r#"/* Unit tests, compiled natively: `make test`. */
#include <assert.h>
#include <stdio.h>

#include "MODULE.c"

int main(void) {
    sluice_writer line = SLUICE_WRITER_INIT, words = SLUICE_WRITER_INIT;
    sluice_put_str(&line, " a b  c");
    assert(split(NULL, sluice_written(&line, 0), &words) == SLUICE_OK);
    assert(words.count == 3);
    assert(sluice_str_eq(sluice_written(&words, 0), "a"));
    assert(sluice_str_eq(sluice_written(&words, 2), "c"));

    sluice_writer pairs = SLUICE_WRITER_INIT;
    assert(pair(NULL, sluice_written(&words, 0), &pairs) == SLUICE_OK);
    sluice_value p = sluice_written(&pairs, 0);
    int64_t one;
    assert(sluice_len(p) == 2 && sluice_str_eq(sluice_at(p, 0), "a"));
    assert(sluice_get_int(sluice_at(p, 1), &one) && one == 1);

    sluice_writer counts = SLUICE_WRITER_INIT, sum = SLUICE_WRITER_INIT;
    sluice_put_int(&counts, 2);
    sluice_put_int(&counts, 3);
    assert(add(NULL, sluice_written(&counts, 0), sluice_written(&counts, 1), &sum) == SLUICE_OK);
    int64_t five;
    assert(sluice_get_int(sluice_written(&sum, 0), &five) && five == 5);
    assert(add(NULL, sluice_written(&words, 0), sluice_written(&counts, 0), &sum) == SLUICE_REFUSED);

    sluice_writer_free(&line);
    sluice_writer_free(&words);
    sluice_writer_free(&pairs);
    sluice_writer_free(&counts);
    sluice_writer_free(&sum);
    puts("ok: split, pair, add");
    return 0;
}
"#
    .replace("MODULE", &module);
    let makefile = "# `make test`: the unit tests, natively; `make plugin`: the component.\n\
CC ?= cc\n\n\
test:\n\
\tmkdir -p build\n\
\t$(CC) -std=c11 -Wall -Wextra -o build/test test_MODULE.c sluice.c\n\
\t./build/test\n\n\
plugin:\n\
\tsluice plugin build\n\n\
.PHONY: test plugin\n"
        .replace("MODULE", &module);
    std::fs::write(dir.join(format!("{module}.c")), code).context("writing the plugin")?;
    std::fs::write(dir.join(format!("test_{module}.c")), test).context("writing the test")?;
    std::fs::write(dir.join("Makefile"), makefile).context("writing the Makefile")?;
    std::fs::write(dir.join(".gitignore"), "/build\n").context("writing .gitignore")?;
    println!(
        "created {name}/ (c): `cd {name} && make test`, then `sluice plugin build` (needs clang for wasm32-wasi: `apt-get install clang lld wasi-libc libclang-rt-14-dev-wasm32`)"
    );
    Ok(())
}

/// `sluice plugin build` of a C project: bindings, clang, component.
pub(crate) fn build_c_plugin(dir: &Path) -> Result<PathBuf> {
    let (main, sources) = c_sources(dir)?;
    let main = main.with_context(|| {
        format!(
            "{} is not a C plugin project: no .c file declares SLUICE_PLUGIN(...)",
            dir.display()
        )
    })?;
    let module = main
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "plugin".to_string());
    let build = dir.join("build");
    let gen_dir = build.join("gen");
    crate::plugin::write_files(&build.join("wit"), &crate::plugin::WIT)?;
    generate_bindings(&build.join("wit"), &gen_dir)?;
    // The project's own copy of the SDK when it has one (kept beside its
    // header), else the one built into sluice.
    let sdk_c = if dir.join("sluice.c").is_file() {
        dir.join("sluice.c")
    } else {
        let sdk = build.join("sdk");
        crate::plugin::write_files(&sdk, &C_SDK)?;
        sdk.join("sluice.c")
    };
    let core = build.join(format!("{module}.core.wasm"));
    let clang = std::env::var_os("SLUICE_CLANG").unwrap_or_else(|| "clang".into());
    let mut cmd = std::process::Command::new(&clang);
    cmd.args([
        "--target=wasm32-wasi",
        "-mexec-model=reactor",
        "-O2",
        "-std=c11",
        "-Wall",
        "-Wextra",
        "-Wno-unused-parameter",
    ])
    .arg("-I")
    .arg(dir)
    .arg("-I")
    .arg(build.join("sdk"))
    .arg("-I")
    .arg(&gen_dir)
    .arg("-o")
    .arg(&core)
    .args(&sources)
    .arg(&sdk_c)
    .arg(gen_dir.join("plugin.c"))
    .arg(gen_dir.join("plugin_component_type.o"));
    let status = cmd.status().map_err(|e| {
        anyhow::anyhow!(
            "running {} ({e}): install clang for wasm32-wasi (`apt-get install clang lld wasi-libc libclang-rt-14-dev-wasm32`) or set $SLUICE_CLANG",
            clang.to_string_lossy()
        )
    })?;
    if !status.success() {
        bail!("clang failed building {}", main.display());
    }
    let module_bytes =
        std::fs::read(&core).with_context(|| format!("reading {}", core.display()))?;
    let component = wit_component::ComponentEncoder::default()
        .module(&module_bytes)
        .and_then(|e| {
            e.adapter(
                "wasi_snapshot_preview1",
                wasi_preview1_component_adapter_provider::WASI_SNAPSHOT_PREVIEW1_REACTOR_ADAPTER,
            )
        })
        .and_then(|e| e.validate(true).encode())
        .with_context(|| format!("making a component of {}", core.display()))?;
    let wasm = build.join(format!("{module}.wasm"));
    std::fs::write(&wasm, component).with_context(|| format!("writing {}", wasm.display()))?;
    Ok(wasm)
}

/// `wit-bindgen c` for the `plugin` world: `plugin.h`, `plugin.c` and
/// `plugin_component_type.o` into `out`.
fn generate_bindings(wit: &Path, out: &Path) -> Result<()> {
    let mut resolve = wit_parser::Resolve::default();
    let (package, _) = resolve
        .push_dir(wit)
        .with_context(|| format!("reading the contract in {}", wit.display()))?;
    let world = resolve.select_world(&[package], Some("plugin"))?;
    let mut files = wit_bindgen_core::Files::default();
    wit_bindgen_c::Opts::default()
        .build()
        .generate(&mut resolve, world, &mut files)
        .context("generating the C bindings")?;
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    for (name, bytes) in files.iter() {
        std::fs::write(out.join(name), bytes)
            .with_context(|| format!("writing {}", out.join(name).display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bindings_are_generated_for_the_contract() {
        let dir = tempfile::tempdir().expect("temp");
        crate::plugin::write_files(&dir.path().join("wit"), &crate::plugin::WIT).expect("wit");
        generate_bindings(&dir.path().join("wit"), &dir.path().join("gen")).expect("bindings");
        let header = std::fs::read_to_string(dir.path().join("gen").join("plugin.h")).expect("h");
        assert!(
            header.contains("exports_sluice_plugin_operator_invoke"),
            "{header}"
        );
        assert!(
            dir.path()
                .join("gen")
                .join("plugin_component_type.o")
                .is_file()
        );
    }

    #[test]
    fn a_c_project_is_found_by_its_plugin_declaration() {
        let dir = tempfile::tempdir().expect("temp");
        std::fs::write(dir.path().join("test_x.c"), "SLUICE_PLUGIN(").expect("w");
        assert!(!is_c_project(dir.path()));
        std::fs::write(dir.path().join("x.c"), "SLUICE_PLUGIN(\"x\", \"0.1.0\");").expect("w");
        std::fs::write(dir.path().join("util.c"), "int f(void);").expect("w");
        assert!(is_c_project(dir.path()));
        let (main, sources) = c_sources(dir.path()).expect("sources");
        assert_eq!(main, Some(dir.path().join("x.c")));
        assert_eq!(sources.len(), 2);
        std::fs::write(dir.path().join("y.c"), "SLUICE_PLUGIN(").expect("w");
        assert!(is_c_project(dir.path()), "the C build says which files");
        let err = c_sources(dir.path()).expect_err("two plugins");
        assert!(err.to_string().contains("several files"), "{err}");
    }
}
