//! The web UI and `/metrics` of `sluice run --ui`: a real job (the word
//! count fed by `--feed`), the Prometheus text read over HTTP, and the page
//! rendered in headless Chromium (its DOM shows batches; a screenshot is
//! taken).

use sluice_tests::{chromium, root, sluice_bin};
use std::io::{Read, Write};
use std::time::{Duration, Instant};

/// A GET over plain HTTP/1.1 that must succeed; returns the body.
pub(crate) fn get(addr: &str, path: &str) -> String {
    let (status, body) = get_status(addr, path);
    assert_eq!(status, 200, "{path}: {body}");
    body
}

/// A GET over plain HTTP/1.1: the status and the body.
fn get_status(addr: &str, path: &str) -> (u16, String) {
    let mut s = std::net::TcpStream::connect(addr).expect("connect to the UI");
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .expect("request");
    let mut text = String::new();
    s.read_to_string(&mut text).expect("response");
    let (head, body) = text.split_once("\r\n\r\n").expect("an HTTP response");
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("{path}: {head}"));
    (status, body.to_string())
}

pub(crate) fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{name} in:\n{text}"))
}

/// `sluice run --feed --ui 127.0.0.1:0 JOB`: the job and its UI's address.
fn run_with_ui(job: &std::path::Path) -> (std::process::Child, String) {
    let mut child = std::process::Command::new(sluice_bin())
        .args(["run", "--feed", "--feed-rate", "200", "--ui", "127.0.0.1:0"])
        .arg(job)
        .env("SLUICE_CACHE_DIR", sluice_tests::cache_dir())
        .env("SLUICE_LOG", "info")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    let addr = sluice_tests::ui_address(&mut child);
    (child, addr)
}

#[test]
fn the_ui_and_metrics_show_live_batches() {
    let dir = tempfile::tempdir().expect("temp");
    let job = sluice_tests::example_job("wordcount.toml", dir.path());
    let (mut child, addr) = run_with_ui(&job);
    let page = get(&addr, "/");
    assert!(page.contains("Sluice streaming"), "{page}");
    // Wait for a few batches (1 s each).
    let started = Instant::now();
    let metrics = loop {
        let m = get(&addr, "/metrics");
        if metric(&m, "sluice_batches_total{") >= 3.0 {
            break m;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "no batches:\n{m}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(metric(&metrics, "sluice_input_records_total{job=\"wordcount\"}") > 0.0);
    assert!(metrics.contains("# TYPE sluice_batch_processing_seconds histogram"));
    assert_eq!(
        metric(
            &metrics,
            "sluice_source_records_total{job=\"wordcount\",source=\"lines\"}"
        ),
        metric(&metrics, "sluice_input_records_total{job=\"wordcount\"}"),
        "one source: its records are the input"
    );
    assert!(metrics.contains("sluice_batch_total_delay_seconds_count{job=\"wordcount\"}"));
    assert!(
        metrics.contains("sluice_operator_seconds_total{job=\"wordcount\",stream=\"words\",op=\"FlatMap wordcount.split (flat-map)\"}"),
        "{metrics}"
    );
    assert!(
        metrics.contains("sluice_plugin_function_seconds_total{job=\"wordcount\",plugin=\"wordcount\",version=\"0.1.0\",function=\"split\"}"),
        "{metrics}"
    );
    assert!(
        metric(
            &metrics,
            "sluice_plugin_function_calls_total{job=\"wordcount\",plugin=\"wordcount\",version=\"0.1.0\",function=\"pair\"}"
        ) > 0.0
    );
    let status: serde_json::Value =
        serde_json::from_str(&get(&addr, "/api/status")).expect("status JSON");
    assert!(status["recent"].as_array().expect("recent").len() >= 3);
    let graph: Vec<&str> = status["graph"]
        .as_array()
        .expect("graph")
        .iter()
        .filter_map(|l| l.as_str())
        .collect();
    assert!(
        graph.iter().any(|l| l.contains("`words` from [0]")),
        "{graph:?}"
    );
    let streams: Vec<&str> = status["operators"]
        .as_array()
        .expect("operators")
        .iter()
        .map(|o| o["stream"].as_str().expect("stream"))
        .collect();
    assert_eq!(
        streams,
        ["lines", "words", "pairs", "counts", "output 0"],
        "in graph order"
    );
    assert!(
        status["operators"][3]["records_out"]
            .as_u64()
            .expect("counts")
            > 0
    );

    // Per stage of the plan: the word count's two, the shuffle between them.
    let stages = status["stages"].as_array().expect("stages");
    assert_eq!(stages.len(), 2, "{stages:?}");
    assert_eq!(stages[0]["streams"], "lines → words → pairs");
    assert_eq!(stages[1]["streams"], "counts");
    assert!(stages[1]["records_out"].as_u64().expect("records") > 0);
    assert!(metrics.contains("sluice_stage_seconds_total{job=\"wordcount\",stage=\"1\"}"));

    // The page in headless Chromium: the script fetched the status and drew
    // the batches; a screenshot for people.
    let shot = root().join("target").join("ui-screenshot.png");
    let _ = std::fs::remove_file(&shot);
    let url = format!("http://{addr}/");
    let dom = chromium(&url, &["--dump-dom".to_string()]);
    let dom = String::from_utf8_lossy(&dom.stdout);
    assert!(
        dom.contains("class=\"batch\""),
        "no batch rows rendered:\n{dom}"
    );
    assert!(
        dom.contains(">live<"),
        "the page did not reach the status API:\n{dom}"
    );
    assert!(dom.contains("<polyline"), "no timeline drawn:\n{dom}");
    assert!(dom.contains("`counts` from [2]"), "no job graph:\n{dom}");
    assert!(dom.contains("class=\"stage\""), "no stage rows:\n{dom}");
    let out = chromium(&url, &[format!("--screenshot={}", shot.display())]);
    assert!(
        shot.metadata().is_ok_and(|m| m.len() > 1000),
        "no screenshot: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Without `remember` no batch is kept to slice: said so.
    let (status, body) = get_status(&addr, "/api/streams/counts");
    assert_eq!(status, 409, "{body}");
    assert!(body.contains("remember"), "{body}");
    child.kill().expect("kill");
    child.wait().expect("reap");
}

/// `[job] remember` in the spec keeps every stream's recent batches, and
/// the UI serves `slice(from, to)` of any of them (Spark's
/// `DStream.slice`): each batch in the bounds, both included, with its
/// records; an unknown stream is named with the job's streams.
#[test]
fn a_spec_that_remembers_batches_serves_their_slices() {
    let dir = tempfile::tempdir().expect("temp");
    let job = sluice_tests::example_job("wordcount.toml", dir.path());
    let text = std::fs::read_to_string(&job).expect("spec");
    std::fs::write(
        &job,
        text.replacen("[job]\n", "[job]\nremember = \"4s\"\n", 1),
    )
    .expect("spec");
    let (mut child, addr) = run_with_ui(&job);
    let slice = |path: &str| -> serde_json::Value {
        serde_json::from_str(&get(&addr, path)).expect("slice JSON")
    };
    // Every batch of `counts` (1 s each) as it ran; then as many as 4 s keep.
    let started = Instant::now();
    let all = loop {
        let all = slice("/api/streams/counts");
        if all["batches"].as_array().expect("batches").len() >= 3 {
            break all;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "{all}");
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(all["stream"], "counts");
    assert_eq!(all["remember_ms"], 4000);
    let batches = all["batches"].as_array().expect("batches");
    let times: Vec<i64> = batches
        .iter()
        .map(|b| b["time"].as_i64().expect("time"))
        .collect();
    assert!(times.windows(2).all(|w| w[1] - w[0] == 1000), "{times:?}");
    assert!(
        batches
            .iter()
            .any(|b| !b["records"].as_array().expect("records").is_empty()),
        "{all}"
    );
    // One batch by its time; two by bounds off the grid (floored onto it,
    // as Spark's `slice` does).
    let one = slice(&format!("/api/streams/counts?from={0}&to={0}", times[1]));
    assert_eq!(
        one["batches"].as_array().expect("batches").len(),
        1,
        "{one}"
    );
    assert_eq!(one["batches"][0], batches[1]);
    let two = slice(&format!(
        "/api/streams/words?from={}&to={}",
        times[0] + 1,
        times[1] + 999
    ));
    let two: Vec<i64> = (two["batches"].as_array().expect("batches").iter())
        .map(|b| b["time"].as_i64().expect("time"))
        .collect();
    assert_eq!(
        two,
        [times[0], times[1]],
        "both bounds floored onto the grid"
    );
    // A source too; an unknown stream is named with the job's streams.
    assert!(
        !slice("/api/streams/lines")["batches"]
            .as_array()
            .expect("batches")
            .is_empty()
    );
    let (status, body) = get_status(&addr, "/api/streams/nope");
    assert_eq!(status, 404, "{body}");
    assert!(body.contains("`nope`") && body.contains("counts"), "{body}");
    let (status, body) = get_status(&addr, "/api/streams/counts?from=yesterday");
    assert_eq!(status, 400, "{body}");
    // Batches older than the remember duration go.
    std::thread::sleep(Duration::from_secs(6));
    let kept = slice("/api/streams/counts");
    let kept: Vec<i64> = (kept["batches"].as_array().expect("batches").iter())
        .map(|b| b["time"].as_i64().expect("time"))
        .collect();
    assert!(!kept.contains(&times[0]), "{kept:?} still has {}", times[0]);
    assert!(kept.len() <= 5, "{kept:?}");
    child.kill().expect("kill");
    child.wait().expect("reap");
}
