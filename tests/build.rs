//! Builds the example and hostile plugins for wasm32-wasip2, once, into
//! `target/plugins` (a target dir of its own, so the nested cargo does not
//! wait on the outer one's lock), and tells the tests where they are. The
//! Python plugins (`plugins/python/*`) are built beside them with
//! componentize-py, as `<name>_py.wasm`, and the JavaScript ones
//! (`plugins/js/*`) with rolldown and ComponentizeJS from `target/js-tools`
//! (what `scripts/test` installs), as `<name>_js.wasm`, when their sources
//! changed.

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
        "plugins/redis",
        "plugins/lines",
        "guest-sdk/src",
        "guest-sdk/macros/src",
        "guest-sdk/Cargo.toml",
        "guest-sdk/python",
        "guest-sdk/js",
        "plugins/python",
        "plugins/js",
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
    let out_dir = target_dir.join("wasm32-wasip2").join("release");
    build_python_plugins(&root, &out_dir);
    build_js_plugins(&root, &out_dir);
    println!("cargo:rustc-env=SLUICE_PLUGIN_DIR={}", out_dir.display());
}

/// Newest modification time of the files under `dir`.
fn newest(dir: &std::path::Path) -> std::time::SystemTime {
    let mut t = std::time::UNIX_EPOCH;
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let path = e.path();
            // Interpreter caches are not sources.
            if e.file_name() == "__pycache__" || e.file_name() == "node_modules" {
                continue;
            }
            let m = if path.is_dir() {
                newest(&path)
            } else {
                e.metadata()
                    .and_then(|m| m.modified())
                    .unwrap_or(std::time::UNIX_EPOCH)
            };
            t = t.max(m);
        }
    }
    t
}

fn build_python_plugins(root: &std::path::Path, out_dir: &std::path::Path) {
    let sdk = root.join("guest-sdk").join("python");
    let wit = root.join("wit");
    let Ok(entries) = std::fs::read_dir(root.join("plugins").join("python")) else {
        return;
    };
    for e in entries.flatten() {
        let dir = e.path();
        let Some(name) = dir.file_name().and_then(|n| n.to_str()).map(str::to_string) else {
            continue;
        };
        if !dir.join(format!("{name}.py")).is_file() {
            continue;
        }
        let out = out_dir.join(format!("{name}_py.wasm"));
        let built = std::fs::metadata(&out)
            .and_then(|m| m.modified())
            .unwrap_or(std::time::UNIX_EPOCH);
        if built > newest(&dir).max(newest(&sdk)).max(newest(&wit)) {
            continue;
        }
        // A module with receivers exports them too.
        let module = std::fs::read_to_string(dir.join(format!("{name}.py"))).unwrap_or_default();
        let world = if module.contains("@sluice.receiver") {
            "receiver-plugin"
        } else {
            "plugin"
        };
        let status = Command::new("componentize-py")
            .arg("-d")
            .arg(&wit)
            .args(["-w", world, "componentize", &name, "-p"])
            .arg(&dir)
            .arg("-p")
            .arg(&sdk)
            .arg("-o")
            .arg(&out)
            .status();
        match status {
            Ok(s) if s.success() => {}
            Ok(s) => panic!("componentize-py failed ({s}) building plugins/python/{name}"),
            Err(e) => panic!(
                "building plugins/python/{name} needs componentize-py ({e}): `pip install componentize-py==0.25.1` (scripts/test installs it)"
            ),
        }
    }
}

fn build_js_plugins(root: &std::path::Path, out_dir: &std::path::Path) {
    let sdk = root.join("guest-sdk").join("js");
    let wit = root.join("wit");
    let tools = std::env::var_os("SLUICE_JS_TOOLS")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target").join("js-tools"))
        .join("node_modules")
        .join(".bin");
    let Ok(entries) = std::fs::read_dir(root.join("plugins").join("js")) else {
        return;
    };
    for e in entries.flatten() {
        let dir = e.path();
        let Some(name) = dir.file_name().and_then(|n| n.to_str()).map(str::to_string) else {
            continue;
        };
        if !dir.join(format!("{name}.js")).is_file() {
            continue;
        }
        let out = out_dir.join(format!("{name}_js.wasm"));
        let built = std::fs::metadata(&out)
            .and_then(|m| m.modified())
            .unwrap_or(std::time::UNIX_EPOCH);
        if built > newest(&dir).max(newest(&sdk)).max(newest(&wit)) {
            continue;
        }
        let work = out_dir.join(format!("{name}_js.build"));
        let src = work.join("src");
        let _ = std::fs::remove_dir_all(&work);
        std::fs::create_dir_all(&src).expect("JS build dir");
        std::fs::create_dir_all(work.join("wit")).expect("JS build dir");
        for f in std::fs::read_dir(&dir).expect("plugin dir").flatten() {
            let p = f.path();
            if p.extension().is_some_and(|x| x == "js") {
                std::fs::copy(&p, src.join(f.file_name())).expect("copy JS source");
            }
        }
        std::fs::copy(sdk.join("sluice.js"), src.join("sluice.js")).expect("copy the JS SDK");
        for w in ["plugin.wit", "types.wit"] {
            std::fs::copy(wit.join(w), work.join("wit").join(w)).expect("copy WIT");
        }
        std::fs::write(
            src.join("__entry.js"),
            format!(
                "import {{ log }} from \"sluice:plugin/host@0.1.0\";\nimport {{ setLog }} from \"./sluice.js\";\nimport plugin from \"./{name}.js\";\nsetLog(log);\nexport const operator = plugin;\n"
            ),
        )
        .expect("entry module");
        let run = |tool: &str, args: &[&str]| {
            let status = Command::new(tools.join(tool))
                .args(args)
                .current_dir(&work)
                .status();
            match status {
                Ok(s) if s.success() => {}
                Ok(s) => panic!("{tool} failed ({s}) building plugins/js/{name}"),
                Err(e) => panic!(
                    "building plugins/js/{name} needs {tool} in {} ({e}): `npm install --prefix target/js-tools @bytecodealliance/componentize-js@0.23.0 rolldown@1.3.2` (scripts/test installs them)",
                    tools.display()
                ),
            }
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
        );
        let out_str = out.to_str().expect("UTF-8 path");
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
                out_str,
            ],
        );
    }
}
