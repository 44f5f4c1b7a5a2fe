//! Builds the PySpark runner component (CPython in wasm running the job's
//! lambdas) with componentize-py, for `src/lib.rs` to embed: a driver needs
//! no tool beside its wheel.

use std::path::PathBuf;
use std::process::Command;

fn main() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR")).join("runner.wasm");
    for input in [
        "wit/plugin.wit",
        "wit/types.wit",
        "python/runner/sluice_runner.py",
        "python/sluice/_values.py",
        "python/sluice/_carried.py",
        "python/sluice/_rdd.py",
    ] {
        println!("cargo:rerun-if-changed={}", root.join(input).display());
    }
    let status = Command::new("componentize-py")
        .arg("-d")
        .arg(root.join("wit"))
        .args(["-w", "runner-plugin", "componentize", "sluice_runner", "-p"])
        .arg(root.join("python/runner"))
        .arg("-p")
        .arg(root.join("python/sluice"))
        .arg("-o")
        .arg(&out)
        .status()
        .unwrap_or_else(|e| {
            panic!(
                "running componentize-py to build the PySpark runner ({e}): install it with `pip install componentize-py==0.25.1`"
            )
        });
    assert!(
        status.success(),
        "componentize-py failed building the PySpark runner (python/runner/sluice_runner.py)"
    );
}
