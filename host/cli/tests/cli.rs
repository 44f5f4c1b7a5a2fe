//! Smoke tests of the `sluice` binary that need no plugins (the end-to-end
//! suite in `tests/` covers real jobs). Also makes `cargo test` build the binary.

use std::process::Command;

#[test]
fn help_lists_the_commands() {
    let out = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .arg("--help")
        .output()
        .expect("run");
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for cmd in ["run", "plugin", "feed"] {
        assert!(text.contains(cmd), "{text}");
    }
}

#[test]
fn inspecting_a_missing_file_names_it() {
    let out = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["plugin", "inspect", "/nonexistent/thing.wasm"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("/nonexistent/thing.wasm") && err.contains("cannot read"),
        "{err}"
    );
}
