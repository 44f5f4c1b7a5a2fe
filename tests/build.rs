//! Builds the example and hostile plugins for wasm32-wasip2, once, into
//! `target/plugins` (a target dir of its own, so the nested cargo does not
//! wait on the outer one's lock), and tells the tests where they are.

use std::path::PathBuf;
use std::process::Command;

fn main() {
    let manifest =
        PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let root = manifest
        .parent()
        .expect("tests/ is inside the workspace")
        .to_path_buf();
    for p in [
        "plugins/Cargo.toml",
        "plugins/wordcount",
        "plugins/wordcount_v2",
        "plugins/text",
        "plugins/hostile",
        "plugins/iot",
        "guest-sdk/src",
        "guest-sdk/macros/src",
        "guest-sdk/Cargo.toml",
        "wit",
    ] {
        println!("cargo:rerun-if-changed={}", root.join(p).display());
    }
    let target_dir = root.join("target").join("plugins");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
    let status = Command::new(cargo)
        .args([
            "build",
            "--release",
            "--target",
            "wasm32-wasip2",
            "--manifest-path",
        ])
        .arg(root.join("plugins").join("Cargo.toml"))
        .env("CARGO_TARGET_DIR", &target_dir)
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("CARGO_BUILD_TARGET")
        .status()
        .expect("running cargo to build the plugins");
    assert!(
        status.success(),
        "building the plugins failed (is the wasm32-wasip2 target installed? `rustup target add wasm32-wasip2`)"
    );
    println!(
        "cargo:rustc-env=SLUICE_PLUGIN_DIR={}",
        target_dir.join("wasm32-wasip2").join("release").display()
    );
}
