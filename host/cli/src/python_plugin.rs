//! Python plugins for the `sluice` CLI: `sluice plugin new --lang python`
//! and `sluice plugin build` of a Python project (componentize-py).

use crate::plugin::{WIT, write_files};
use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};

/// The Python guest SDK, built into `sluice` (as is the WIT contract) so
/// that `sluice plugin new|build --lang python` work anywhere.
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

/// `sluice plugin new --lang python NAME`: a module, its unit test, and a
/// copy of the SDK (so `python3 -m unittest` runs as is); with `receiver`,
/// the line-protocol receiver of `plugins/python/lines`, renamed.
pub(crate) fn new_python_plugin(name: &str, receiver: bool) -> Result<()> {
    let module = name.replace('-', "_");
    let dir = PathBuf::from(name);
    write_files(&dir.join("sluice"), &PYTHON_SDK)?;
    let (code, test) = if receiver {
        let code = include_str!("../../../plugins/python/lines/lines.py")
            .replace("name=\"lines\"", &format!("name=\"{name}\""));
        let test = include_str!("../../../plugins/python/lines/test_lines.py")
            .replace("import lines", &format!("import {module}"))
            .replace("lines.tcp_lines", &format!("{module}.tcp_lines"));
        (code, test)
    } else {
        python_operator(name, &module)
    };
    std::fs::write(dir.join(format!("{module}.py")), code).context("writing the module")?;
    std::fs::write(dir.join(format!("test_{module}.py")), test).context("writing the test")?;
    std::fs::write(dir.join(".gitignore"), "/build\n__pycache__/\n")
        .context("writing .gitignore")?;
    let what = if receiver {
        format!("python receiver, a source `function = \"{name}.tcp_lines\"`")
    } else {
        "python".to_string()
    };
    println!(
        "created {name}/ ({what}): `cd {name} && python3 -m unittest`, then `sluice plugin build` (needs `pip install componentize-py`)"
    );
    Ok(())
}

/// The example operator module of a new Python project, and its test.
fn python_operator(name: &str, module: &str) -> (String, String) {
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
    .replace("MODULE", module);
    (code, test)
}

/// `sluice plugin build` of a Python project: the module that calls
/// `sluice.export`, componentized with the SDK and WIT built into sluice.
pub(crate) fn build_python_plugin(dir: &Path) -> Result<PathBuf> {
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
    // A module with receivers exports them too (and assigns `Receiver`).
    let source = std::fs::read_to_string(dir.join(format!("{module}.py")))
        .with_context(|| format!("reading {module}.py"))?;
    let world = if source.contains("@sluice.receiver") {
        if !source.contains("Receiver = ") {
            bail!(
                "{}: a module with receivers must also assign `Receiver = Operator.Receiver`",
                dir.join(format!("{module}.py")).display()
            );
        }
        "receiver-plugin"
    } else {
        "plugin"
    };
    let status = std::process::Command::new("componentize-py")
        .arg("-d")
        .arg(build.join("wit"))
        .args(["-w", world, "componentize", &module, "-p"])
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
