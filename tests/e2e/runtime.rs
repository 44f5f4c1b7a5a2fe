//! The plugin runtime across restarts: the compile cache.

use sluice::LoadPlugins;
use sluice::plugin::CacheOutcome;
use sluice::{Limits, ManualClock, Plugin, Runtime, RuntimeConfig, StreamingContext};
use sluice_tests::plugin;
use std::sync::Arc;
use std::time::Duration;

/// A second start of the same plugin (a new engine, as after a restart) loads
/// the precompiled artifact instead of compiling, and the artifact works.
#[test]
fn a_second_start_skips_compilation() {
    let cache = tempfile::tempdir().expect("temp dir");
    let config = || RuntimeConfig {
        cache_dir: Some(cache.path().to_path_buf()),
        max_instances: 8,
        ..RuntimeConfig::default()
    };
    let first = Runtime::new(config()).expect("runtime");
    let p =
        Plugin::load(&first, "wordcount", &plugin("wordcount"), Limits::default()).expect("load");
    assert_eq!(p.cache_outcome(), CacheOutcome::Compiled);
    let artifacts = std::fs::read_dir(cache.path()).expect("cache dir").count();
    assert_eq!(artifacts, 1, "one precompiled artifact is stored");
    drop(p);
    drop(first);

    let second = Runtime::new(config()).expect("runtime");
    let p = Plugin::load(
        &second,
        "wordcount",
        &plugin("wordcount"),
        Limits::default(),
    )
    .expect("load");
    assert_eq!(p.cache_outcome(), CacheOutcome::Hit);
    let ssc = StreamingContext::new(Duration::from_secs(1))
        .with_clock(Arc::new(ManualClock::new(0)))
        .with_runtime(second.clone());
    let out = ssc
        .queue_stream(vec![vec!["x y x".to_string()]], 1)
        .flat_map(p.func("split").expect("split"))
        .collect();
    ssc.run(None).expect("run");
    assert_eq!(out.lock().expect("lock")[0].records.len(), 3);

    // A damaged artifact is discarded and recompiled, not trusted.
    for entry in std::fs::read_dir(cache.path()).expect("cache dir") {
        std::fs::write(entry.expect("entry").path(), b"garbage").expect("damage");
    }
    let p = Plugin::load(
        &second,
        "wordcount",
        &plugin("wordcount"),
        Limits::default(),
    )
    .expect("load");
    assert_eq!(p.cache_outcome(), CacheOutcome::Compiled);
}
