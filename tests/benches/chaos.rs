//! The chaos harness in its long form ([`sluice_tests::chaos`]): a socket
//! job with running totals and an incremental window, killed with SIGKILL
//! `BENCH_CHAOS_KILLS` times (default 100) at random moments, 0.3–3 s
//! apart, and restarted each time; then stopped gently and checked (no
//! line counted twice, gaps only where lines were in flight at a kill,
//! per-key totals, each batch once, the window against the totals).
//!
//! `scripts/chaos [KILLS]` or `cargo bench -p sluice-tests --bench chaos`
//! (with `target/release/sluice` built; `BENCH_CHAOS_DIR=DIR` keeps the
//! runs' logs, outputs and checkpoints there). Exits non-zero on any
//! problem.

use sluice_tests::chaos::{Chaos, run};
use sluice_tests::env_or;
use std::time::Duration;

fn main() {
    let kills = env_or("BENCH_CHAOS_KILLS", 100);
    // `BENCH_CHAOS_DIR`: run there and keep it (the runs' logs, outputs,
    // checkpoints), else in a temporary directory.
    let kept = std::env::var_os("BENCH_CHAOS_DIR").map(std::path::PathBuf::from);
    let temp = tempfile::tempdir().expect("temp dir");
    let dir = kept.as_deref().unwrap_or(temp.path());
    std::fs::create_dir_all(dir).expect("the chaos directory");
    let chaos = Chaos {
        kills,
        run_ms: (300, 3000),
        ..Chaos::short()
    };
    let report = run(dir, &chaos);
    let mut restarts = report.restarts.clone();
    restarts.sort();
    let at = |q: f64| {
        restarts
            .get(((restarts.len() as f64 - 1.0) * q).round() as usize)
            .copied()
            .unwrap_or_default()
    };
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!("## Chaos: kill -9 of a socket job with state and a window\n");
    println!("```");
    println!("kills survived:                     {}", report.kills);
    println!("batches run:                        {}", report.batches);
    println!("lines sent:                         {}", report.sent);
    println!(
        "lines lost in flight at a kill:     {}",
        report.lost_in_flight
    );
    println!(
        "lines lost otherwise:               {}",
        report.unexplained.len()
    );
    println!(
        "lines counted twice:                {}",
        report.repeated.len()
    );
    println!(
        "key and output checks failed:       {}",
        report.key_errors.len() + report.output_errors.len()
    );
    println!(
        "restart to first batch written:     p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms ({} restarts seen)",
        ms(at(0.5)),
        ms(at(0.99)),
        ms(at(1.0)),
        restarts.len()
    );
    println!("seed:                               {}", report.seed);
    println!("```");
    let problems = report.problems();
    if !problems.is_empty() {
        eprintln!("{}", problems.join("\n"));
        std::process::exit(1);
    }
}
