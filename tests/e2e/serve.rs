//! `sluice serve` as a user drives it: a real server process, two tenants
//! created with `sluice tenant create`, the word count submitted for each
//! with `sluice submit`, one tenant's plugin hot-swapped with `sluice job
//! swap` while both run, the server killed gently and restarted. Every
//! batch is checked: the sum of the counts equals the words counted
//! (×10 from the swap on, the v2 plugin's pair value), so no batch is lost
//! or split between versions, and the other tenant's batches never change.
//! Also: tenants cannot see or touch each other's jobs and plugins, a job
//! over the memory reservation is refused, a spec reaching outside its
//! directory is refused.

use serde_json::Value;
use sluice_server::{Server, TenantLimits};
use sluice_tests::{chromium, plugin, read_jsonl, sluice_bin};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const ADMIN: &str = "admin-token-for-the-serve-test";

struct ServerProcess {
    child: Child,
    url: String,
}

impl ServerProcess {
    fn start(data: &Path) -> ServerProcess {
        ServerProcess::start_with(data, r#"{"max_workers": 1, "cpu_share": 1.0}"#, &[])
    }

    /// A server whose new tenants get `tenant_defaults`, with `more`
    /// arguments.
    fn start_with(data: &Path, tenant_defaults: &str, more: &[&str]) -> ServerProcess {
        let mut child = Command::new(sluice_bin())
            .args(["serve", "--addr", "127.0.0.1:0", "--memory", "1GiB"])
            .arg("--data")
            .arg(data)
            .args(["--tenant-defaults", tenant_defaults])
            .args(more)
            .env("SLUICE_ADMIN_TOKEN", ADMIN)
            .env("SLUICE_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn sluice serve");
        let mut lines = BufReader::new(child.stderr.take().expect("stderr")).lines();
        let url = loop {
            let line = lines
                .next()
                .expect("the server ended before listening")
                .expect("stderr");
            if let Some(rest) = line.strip_prefix("sluice serve: ") {
                break rest
                    .split_whitespace()
                    .next()
                    .expect("url")
                    .trim_end_matches('/')
                    .to_string();
            }
        };
        std::thread::spawn(move || for _ in lines {});
        ServerProcess { child, url }
    }

    /// SIGTERM: every job ends with a last batch and checkpoint.
    fn stop(mut self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
        let started = Instant::now();
        loop {
            if let Some(s) = self.child.try_wait().expect("wait") {
                assert!(s.success(), "the server exited with {s}");
                return;
            }
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "the server did not stop"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs the CLI against the server with `token`; returns stdout.
fn cli(url: &str, token: &str, args: &[&str]) -> String {
    let out = Command::new(sluice_bin())
        .args(args)
        .env("SLUICE_SERVER", url)
        .env("SLUICE_TOKEN", token)
        .output()
        .expect("run sluice");
    assert!(
        out.status.success(),
        "sluice {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8")
}

/// Like [`cli`], expecting failure; returns stderr.
fn cli_fails(url: &str, token: &str, args: &[&str]) -> String {
    let out = Command::new(sluice_bin())
        .args(args)
        .env("SLUICE_SERVER", url)
        .env("SLUICE_TOKEN", token)
        .output()
        .expect("run sluice");
    assert!(!out.status.success(), "sluice {args:?} should have failed");
    String::from_utf8(out.stderr).expect("utf-8")
}

/// A raw API call: (status, JSON body).
fn api(url: &str, method: &str, path: &str, token: Option<&str>) -> (u16, Value) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let full = format!("{url}{path}");
    let req = match method {
        "GET" => agent
            .get(&full)
            .header("Authorization", format!("Bearer {}", token.unwrap_or("")))
            .call(),
        "DELETE" => agent
            .delete(&full)
            .header("Authorization", format!("Bearer {}", token.unwrap_or("")))
            .call(),
        _ => agent
            .post(&full)
            .header("Authorization", format!("Bearer {}", token.unwrap_or("")))
            .send_empty(),
    };
    let mut resp = req.expect("HTTP call");
    let status = resp.status().as_u16();
    let text = resp.body_mut().read_to_string().expect("body");
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

/// The word-count job: a generator source, the counts and the number of
/// words per batch, both to JSON lines.
fn write_job(dir: &Path, name: &str) -> PathBuf {
    std::fs::create_dir_all(dir).expect("dir");
    std::fs::copy(plugin("wordcount"), dir.join("wordcount.wasm")).expect("copy plugin");
    let spec = dir.join(format!("{name}.toml"));
    std::fs::write(&spec, wordcount_spec(name)).expect("write spec");
    spec
}

fn wordcount_spec(name: &str) -> String {
    format!(
        r#"[job]
name = "{name}"
batch_interval = "200ms"
checkpoint_interval = "1s"
remember = "2s"

[plugins.wordcount]
path = "wordcount.wasm"

[sources.lines]
type = "generator"
rate = 500
words_per_line = 4
vocabulary = ["apple", "pear", "plum", "fig", "kiwi"]

[streams.words]
from = "lines"
op = "flat_map"
function = "wordcount.split"

[streams.pairs]
from = "words"
op = "map"
function = "wordcount.pair"

[streams.counts]
from = "pairs"
op = "reduce_by_key"
function = "wordcount.add"
partitions = 2

[streams.n]
from = "words"
op = "count"

[[outputs]]
stream = "counts"
type = "jsonl"
path = "counts.jsonl"

[[outputs]]
stream = "n"
type = "jsonl"
path = "n.jsonl"

[[outputs]]
stream = "counts"
type = "pprint"
"#
    )
}

/// Per batch time: (sum of counts) / (words), checked to be a whole
/// factor, for the batches both files have.
fn factors(job_dir: &Path) -> Vec<(i64, i64)> {
    let counts = read_jsonl(&job_dir.join("counts.jsonl"));
    let n = read_jsonl(&job_dir.join("n.jsonl"));
    let words: std::collections::HashMap<i64, i64> = n
        .iter()
        .map(|b| {
            (
                b["time"].as_i64().expect("time"),
                b["records"][0].as_i64().unwrap_or(0),
            )
        })
        .collect();
    let mut out = Vec::new();
    for b in &counts {
        let time = b["time"].as_i64().expect("time");
        let Some(&w) = words.get(&time) else { continue };
        let sum: i64 = b["records"]
            .as_array()
            .expect("records")
            .iter()
            .map(|r| r[1].as_i64().expect("count"))
            .sum();
        if w == 0 {
            assert_eq!(sum, 0, "batch {time}: counts without words");
            continue;
        }
        assert_eq!(sum % w, 0, "batch {time}: {sum} counted for {w} words");
        out.push((time, sum / w));
    }
    out
}

fn wait_for_batches(url: &str, token: &str, job: &str, at_least: i64) -> Value {
    let started = Instant::now();
    loop {
        let (status, j) = api(url, "GET", &format!("/api/jobs/{job}"), Some(token));
        assert_eq!(status, 200, "{j}");
        if j["batches"].as_i64().unwrap_or(0) >= at_least {
            return j;
        }
        assert!(
            j["status"]["state"] == "running",
            "job {job} is not running: {j}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "job {job}: no {at_least} batches: {j}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn two_tenants_submit_swap_and_survive_a_server_restart() {
    let tmp = tempfile::tempdir().expect("temp");
    let data = tmp.path().join("data");
    // The server compiles into its own cache; seed it with the tests'
    // compiled plugins so the test does not wait for Cranelift.
    sluice_tests::seed_cache(&data.join("cache"));
    let server = ServerProcess::start(&data);
    let url = server.url.clone();

    // The admin creates two tenants.
    let token_a = cli(&url, ADMIN, &["tenant", "create", "alpha"])
        .trim()
        .to_string();
    let token_b = cli(&url, ADMIN, &["tenant", "create", "beta"])
        .trim()
        .to_string();
    assert!(token_a.starts_with("slt_") && token_a != token_b);
    assert!(cli_fails(&url, &token_a, &["tenant", "list"]).contains("admin token"));
    // A broken upload is refused by the compiler child, naming the plugin.
    let junk = tmp.path().join("junk.wasm");
    std::fs::write(&junk, "not a component").expect("junk");
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let mut resp = agent
        .post(format!("{url}/api/plugins/junk"))
        .header("Authorization", format!("Bearer {token_a}"))
        .send(std::fs::read(&junk).expect("junk"))
        .expect("upload");
    assert_eq!(resp.status().as_u16(), 422);
    let body = resp.body_mut().read_to_string().expect("body");
    assert!(
        body.contains("plugin `junk`") && body.contains("not a WebAssembly file"),
        "{body}"
    );

    // Each submits the word count (the same spec, in its own namespace).
    let spec_a = write_job(&tmp.path().join("a"), "wordcount");
    let spec_b = write_job(&tmp.path().join("b"), "wordcount");
    cli(&url, &token_a, &["submit", spec_a.to_str().expect("utf-8")]);
    cli(&url, &token_b, &["submit", spec_b.to_str().expect("utf-8")]);
    wait_for_batches(&url, &token_a, "wordcount", 5);
    let before_b = wait_for_batches(&url, &token_b, "wordcount", 5);

    // Isolation: B sees only its own job and plugins; A's private job is
    // invisible to B; no token, or a wrong one, gets nothing.
    let spec_private = write_job(&tmp.path().join("a2"), "private");
    cli(
        &url,
        &token_a,
        &["submit", spec_private.to_str().expect("utf-8")],
    );
    let (status, _) = api(&url, "GET", "/api/jobs/private", Some(&token_b));
    assert_eq!(status, 404);
    // `slice` of a stream of the tenant's job (it remembers 2 s); another
    // tenant's is not found.
    let (status, slice) = api(&url, "GET", "/api/jobs/private/streams/n", Some(&token_a));
    assert_eq!(status, 200, "{slice}");
    assert_eq!(slice["remember_ms"], 2000, "{slice}");
    let (status, slice) = api(
        &url,
        "GET",
        "/api/jobs/wordcount/streams/counts",
        Some(&token_b),
    );
    assert_eq!(status, 200, "{slice}");
    assert!(
        !slice["batches"].as_array().expect("batches").is_empty(),
        "{slice}"
    );
    let (status, _) = api(&url, "GET", "/api/jobs/private/streams/n", Some(&token_b));
    assert_eq!(status, 404);
    let (status, _) = api(&url, "POST", "/api/jobs/private/stop", Some(&token_b));
    assert_eq!(status, 404);
    let (status, _) = api(&url, "DELETE", "/api/jobs/private", Some(&token_b));
    assert_eq!(status, 404);
    let (_, jobs_b) = api(&url, "GET", "/api/jobs", Some(&token_b));
    let names: Vec<&str> = jobs_b
        .as_array()
        .expect("jobs")
        .iter()
        .map(|j| j["name"].as_str().expect("name"))
        .collect();
    assert_eq!(names, ["wordcount"]);
    assert_eq!(api(&url, "GET", "/api/jobs", None).0, 401);
    assert_eq!(api(&url, "GET", "/api/jobs", Some("slt_nope")).0, 401);
    assert_eq!(api(&url, "GET", "/api/tenants", Some(&token_b)).0, 403);
    // A's private job is still running and untouched.
    let (_, private) = api(&url, "GET", "/api/jobs/private", Some(&token_a));
    assert_eq!(private["status"]["state"], "running", "{private}");
    // B's front page (in headless Chromium) lists B's job, not A's.
    let dom = chromium(
        &format!("{url}/?token={token_b}"),
        &["--dump-dom".to_string()],
    );
    let dom = String::from_utf8_lossy(&dom.stdout);
    assert!(
        dom.contains("jobs/wordcount/?token=") && dom.contains("running"),
        "the front page lists the tenant's jobs:\n{dom}"
    );
    assert!(
        !dom.contains("private"),
        "only the tenant's own jobs, not A's `private`:\n{dom}"
    );
    cli(&url, &token_a, &["job", "delete", "private"]);

    // Tenant A swaps its plugin to v2 while both jobs run.
    let swapped = cli(
        &url,
        &token_a,
        &[
            "job",
            "swap",
            "wordcount",
            "wordcount",
            plugin("wordcount_v2").to_str().expect("utf-8"),
        ],
    );
    let swapped: Value = serde_json::from_str(&swapped).expect("swap answer");
    assert_eq!(swapped["outcome"], "applied", "{swapped}");
    assert_eq!(
        swapped["job"]["versions"]["wordcount"]["version"], "0.2.0",
        "{swapped}"
    );
    let swap_index = swapped["batch"].as_i64().expect("batch index");
    let after_a = wait_for_batches(&url, &token_a, "wordcount", swap_index + 5);
    wait_for_batches(
        &url,
        &token_b,
        "wordcount",
        before_b["batches"].as_i64().expect("batches") + 5,
    );
    let outputs = cli(&url, &token_a, &["job", "outputs", "wordcount", "-n", "2"]);
    assert!(outputs.contains("Time: "), "{outputs}");
    let logs: Value =
        serde_json::from_str(&cli(&url, &token_a, &["job", "logs", "wordcount"])).expect("logs");
    assert!(
        logs["events"]
            .as_array()
            .expect("events")
            .iter()
            .any(|e| e["event"] == "swapped"),
        "{logs}"
    );
    // The job's web UI, in headless Chromium.
    let dom = chromium(
        &format!("{url}/jobs/wordcount/?token={token_a}"),
        &["--dump-dom".to_string()],
    );
    let dom = String::from_utf8_lossy(&dom.stdout);
    assert!(
        dom.contains("class=\"batch\"") && dom.contains(">live<"),
        "the job page shows no batches:\n{dom}"
    );
    assert!(
        dom.contains("wordcount 0.2.0"),
        "the swapped version:\n{dom}"
    );
    let metrics = ureq::get(format!("{url}/jobs/wordcount/metrics"))
        .header("Authorization", format!("Bearer {token_b}"))
        .call()
        .expect("metrics")
        .body_mut()
        .read_to_string()
        .expect("metrics body");
    assert!(metrics.contains("sluice_batches_total"), "{metrics}");
    assert!(after_a["status"]["state"] == "running");

    // Admission: a tenant whose plugins may each use 1 GiB does not fit in
    // what is left of the server's 1 GiB reservation.
    let token_c = cli(
        &url,
        ADMIN,
        &[
            "tenant",
            "create",
            "gamma",
            "--limits",
            r#"{"memory_bytes": 1073741824}"#,
        ],
    )
    .trim()
    .to_string();
    let spec_c = write_job(&tmp.path().join("c"), "big");
    let refused = cli_fails(&url, &token_c, &["submit", spec_c.to_str().expect("utf-8")]);
    assert!(
        refused.contains("not admitted") && refused.contains("reservation"),
        "{refused}"
    );
    // Confinement: an output outside the job's directory is refused by field.
    let escape = tmp.path().join("c").join("escape.toml");
    let text = std::fs::read_to_string(&spec_c)
        .expect("spec")
        .replace("name = \"big\"", "name = \"escape\"")
        .replace(
            "path = \"n.jsonl\"",
            "path = \"../../beta/jobs/wordcount/n.jsonl\"",
        );
    std::fs::write(&escape, text).expect("write");
    // Even granted by mistake, the server's own port is out of reach.
    let own = url.trim_start_matches("http://").to_string();
    let token_d = cli(
        &url,
        ADMIN,
        &["tenant", "create", "delta", "--grant-socket", &own],
    )
    .trim()
    .to_string();
    let refused = cli_fails(&url, &token_d, &["submit", escape.to_str().expect("utf-8")]);
    assert!(
        refused.contains("outputs[1].path") && refused.contains("`..`"),
        "{refused}"
    );
    let port = own.rsplit(':').next().expect("port");
    let text = std::fs::read_to_string(&spec_c)
        .expect("spec")
        .replace("name = \"big\"", "name = \"dialer\"")
        .replace(
            "type = \"generator\"\nrate = 500",
            &format!("type = \"socket\"\nhost = \"127.0.0.1\"\nport = {port}"),
        )
        .replace("words_per_line = 4\n", "")
        .replace(
            "vocabulary = [\"apple\", \"pear\", \"plum\", \"fig\", \"kiwi\"]\n",
            "",
        );
    let dialer = tmp.path().join("c").join("dialer.toml");
    std::fs::write(&dialer, text).expect("write");
    let refused = cli_fails(&url, &token_d, &["submit", dialer.to_str().expect("utf-8")]);
    assert!(
        refused.contains("sources.lines.port") && refused.contains("is not granted"),
        "{refused}"
    );

    // The server stops gently and starts again: both jobs resume from
    // their checkpoints, A still on v2.
    server.stop();
    let server = ServerProcess::start(&data);
    let url = server.url.clone();
    let resumed = wait_for_batches(&url, &token_a, "wordcount", 3);
    assert_eq!(
        resumed["versions"]["wordcount"]["version"], "0.2.0",
        "{resumed}"
    );
    wait_for_batches(&url, &token_b, "wordcount", 3);
    server.stop();

    // Every batch of A: ×1 before the swap, ×10 from it on; B: ×1 always.
    let a_dir = data.join("tenants/alpha/jobs/wordcount");
    let b_dir = data.join("tenants/beta/jobs/wordcount");
    let a = factors(&a_dir);
    let b = factors(&b_dir);
    assert!(a.len() as i64 > swap_index + 5, "{a:?}");
    let counts_a = read_jsonl(&a_dir.join("counts.jsonl"));
    let swap_time = counts_a
        .iter()
        .find(|c| c["batch"].as_i64() == Some(swap_index))
        .map(|c| c["time"].as_i64().expect("time"))
        .expect("the swap batch in the output");
    for (time, f) in &a {
        let want = if *time < swap_time { 1 } else { 10 };
        assert_eq!(
            *f, want,
            "tenant A, batch at {time} (swap at {swap_time}): {a:?}"
        );
    }
    assert!(b.iter().all(|(_, f)| *f == 1), "tenant B: {b:?}");
    // Each batch is in the output once, across the restart.
    for dir in [&a_dir, &b_dir] {
        let batches: Vec<i64> = read_jsonl(&dir.join("counts.jsonl"))
            .iter()
            .map(|c| c["batch"].as_i64().expect("batch"))
            .collect();
        let want: Vec<i64> = (0..batches.len() as i64).collect();
        assert_eq!(batches, want, "{}", dir.display());
    }
}

/// An HTTPS call trusting only the CA in `ca`: (status, `Retry-After`,
/// JSON body).
fn https(
    url: &str,
    (method, path): (&str, &str),
    token: Option<&str>,
    body: Option<&[u8]>,
    ca: &Path,
) -> (u16, Option<String>, Value) {
    use ureq::tls::{Certificate, RootCerts, TlsConfig};
    let pem = std::fs::read(ca).expect("CA");
    #[allow(deprecated)]
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let tls = TlsConfig::builder()
        .root_certs(RootCerts::new_with_certs(&[
            Certificate::from_pem(&pem).expect("PEM")
        ]))
        .unversioned_rustls_crypto_provider(provider)
        .build();
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .tls_config(tls)
        .build()
        .into();
    let full = format!("{url}{path}");
    let auth = format!("Bearer {}", token.unwrap_or(""));
    let response = match (method, body) {
        ("GET", _) => agent.get(&full).header("Authorization", &auth).call(),
        ("PUT", Some(b)) => agent.put(&full).header("Authorization", &auth).send(b),
        ("POST", Some(b)) => agent.post(&full).header("Authorization", &auth).send(b),
        ("POST", None) => agent
            .post(&full)
            .header("Authorization", &auth)
            .send_empty(),
        other => panic!("no call {other:?}"),
    };
    let mut response = response.expect("HTTPS call");
    let retry =
        (response.headers().get("retry-after")).map(|v| v.to_str().expect("ascii").to_string());
    let text = response.body_mut().read_to_string().expect("body");
    let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (response.status().as_u16(), retry, value)
}

/// The server hardened: HTTPS only (plain HTTP and an unknown CA fail),
/// each refusal with its status — no token, a bad one, the wrong caller,
/// an oversized body, too many calls (429 with `Retry-After`, and the CLI
/// waits and goes on) — and every change and refusal in the audit log,
/// which only the admin reads.
#[test]
fn the_server_speaks_tls_refuses_what_it_must_and_audits() {
    let tmp = tempfile::tempdir().expect("temp dir");
    sluice_tests::tls::test_certificates(tmp.path());
    let (cert, key, ca) = (
        tmp.path().join("server.pem"),
        tmp.path().join("server.key"),
        tmp.path().join("ca.pem"),
    );
    let data = tmp.path().join("data");
    let server = ServerProcess::start_with(
        &data,
        r#"{"max_workers": 1, "api_rate": 2.0, "api_burst": 5}"#,
        &[
            "--tls-cert",
            cert.to_str().expect("utf-8"),
            "--tls-key",
            key.to_str().expect("utf-8"),
        ],
    );
    let url = server.url.clone();
    assert!(url.starts_with("https://127.0.0.1:"), "{url}");
    // The CLI trusts the test's CA when told to, and only then.
    let with_ca = |token: &str, args: &[&str]| {
        Command::new(sluice_bin())
            .args(args)
            .env("SLUICE_SERVER", &url)
            .env("SLUICE_TOKEN", token)
            .env("SLUICE_CA_CERT", &ca)
            .output()
            .expect("run sluice")
    };
    let created = with_ca(ADMIN, &["tenant", "create", "alpha"]);
    assert!(
        created.status.success(),
        "{}",
        String::from_utf8_lossy(&created.stderr)
    );
    let token = String::from_utf8(created.stdout)
        .expect("utf-8")
        .trim()
        .to_string();
    let unknown_ca = cli_fails(&url, ADMIN, &["tenant", "list"]);
    assert!(
        unknown_ca.contains("certificate") || unknown_ca.contains("UnknownIssuer"),
        "{unknown_ca}"
    );
    // Plain HTTP to the HTTPS port gets no answer.
    let plain = url.replacen("https://", "http://", 1);
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(5)))
        .build()
        .into();
    assert!(agent.get(format!("{plain}/api/health")).call().is_err());

    // Refusals, each with its status.
    let call = |m: &str, p: &str, t: Option<&str>, b: Option<&[u8]>| https(&url, (m, p), t, b, &ca);
    assert_eq!(call("GET", "/api/jobs", None, None).0, 401);
    assert_eq!(call("GET", "/api/jobs", Some("slt_0000"), None).0, 401);
    assert_eq!(call("GET", "/api/tenants", Some(&token), None).0, 403);
    assert_eq!(call("GET", "/api/audit", Some(&token), None).0, 403);
    let huge = vec![b' '; (1 << 20) + 1024];
    let (status, _, body) = call("PUT", "/api/tenants/alpha/limits", Some(ADMIN), Some(&huge));
    assert_eq!(status, 413, "{body}");
    // Once the tenant's allowance is full again: a burst of 5 calls (6 if
    // half a second passes), then 429.
    std::thread::sleep(Duration::from_secs(3));
    let statuses: Vec<(u16, Option<String>)> = (0..8)
        .map(|_| {
            let (s, retry, _) = call("GET", "/api/jobs", Some(&token), None);
            (s, retry)
        })
        .collect();
    let ok = statuses.iter().take_while(|(s, _)| *s == 200).count();
    assert!((5..=6).contains(&ok), "{statuses:?}");
    let (status, retry) = &statuses[ok];
    assert_eq!(*status, 429, "{statuses:?}");
    assert_eq!(retry.as_deref(), Some("1"), "{statuses:?}");
    // The CLI, refused for the rate, waits as told and succeeds.
    let listed = with_ca(&token, &["job", "list"]);
    assert!(
        listed.status.success(),
        "{}",
        String::from_utf8_lossy(&listed.stderr)
    );

    // The audit log has the change and every refusal, by caller, without
    // query strings; the admin reads it.
    let (status, _, entries) = call("GET", "/api/audit?n=1000&token=x", Some(ADMIN), None);
    assert_eq!(status, 200, "{entries}");
    let entries = entries.as_array().expect("entries");
    let seen = |who: &str, method: &str, path: &str, status: u64| {
        entries.iter().any(|e| {
            e["who"] == who && e["method"] == method && e["path"] == path && e["status"] == status
        })
    };
    assert!(seen("admin", "POST", "/api/tenants", 201), "{entries:?}");
    assert!(seen("unknown", "GET", "/api/jobs", 401), "{entries:?}");
    assert!(
        seen("tenant:alpha", "GET", "/api/tenants", 403),
        "{entries:?}"
    );
    assert!(
        seen("admin", "PUT", "/api/tenants/alpha/limits", 413),
        "{entries:?}"
    );
    assert!(seen("tenant:alpha", "GET", "/api/jobs", 429), "{entries:?}");
    assert!(
        entries.iter().all(|e| e["peer"]
            .as_str()
            .is_some_and(|p| p.starts_with("127.0.0.1:"))
            && !e["path"].as_str().expect("path").contains('?')),
        "{entries:?}"
    );
    assert!(
        !entries
            .iter()
            .any(|e| e["method"] == "GET" && e["status"] == 200),
        "reads that succeed are not audited: {entries:?}"
    );
    assert!(data.join("audit.jsonl").exists());
}

fn in_process_server(dir: &Path) -> std::sync::Arc<Server> {
    sluice_tests::in_process_server(dir, 32)
}

fn upload(server: &Server, tenant: &str, name: &str) -> String {
    sluice_tests::upload_plugin(server, tenant, name)
}

/// Submits a job over a queue of `batches` on the system clock, mapping
/// each line with `hostile.function`.
fn hostile_job(
    server: &std::sync::Arc<Server>,
    tenant: &str,
    job: &str,
    function: &str,
    batches: Value,
) -> Value {
    let (spec, files) = sluice_tests::hostile_queue_job(job, function, &batches);
    let plugins = [("hostile".to_string(), "hostile".to_string())].into();
    server
        .submit(tenant, &spec, &plugins, &files)
        .unwrap_or_else(|e| panic!("submitting {job}: {e}"))
}

fn state(server: &Server, tenant: &str, job: &str) -> Value {
    server.job(tenant, job).expect("job")["status"].clone()
}

fn limits(json: Value) -> Option<TenantLimits> {
    sluice_tests::tenant_limits(json)
}

#[test]
fn a_hostile_tenant_fails_alone_on_a_shared_server() {
    let tmp = tempfile::tempdir().expect("temp");
    let server = in_process_server(tmp.path());
    server
        .create_tenant(
            "mallory",
            limits(serde_json::json!({"deadline_ms": 300, "memory_bytes": 64 << 20, "output_bytes": 8 << 20, "max_workers": 1})),
        )
        .expect("tenant");
    server
        .create_tenant("bob", limits(serde_json::json!({"max_workers": 1})))
        .expect("tenant");
    upload(&server, "mallory", "hostile");
    let wc = upload(&server, "bob", "wordcount");
    let plugins = [("wordcount".to_string(), wc)].into();
    server
        .submit(
            "bob",
            &wordcount_spec("counting"),
            &plugins,
            &BTreeMap::new(),
        )
        .expect("bob's job");
    for (job, function) in [("loop", "spin"), ("bomb", "bomb"), ("flood", "flood")] {
        hostile_job(
            &server,
            "mallory",
            job,
            function,
            serde_json::json!([["a"], ["b"], [function], ["c"]]),
        );
    }
    // Every hostile job fails on its poisoned batch, naming its function.
    let started = Instant::now();
    for (job, function) in [("loop", "spin"), ("bomb", "bomb"), ("flood", "flood")] {
        loop {
            let s = state(&server, "mallory", job);
            if s["state"] == "failed" {
                let error = s["error"].as_str().expect("error");
                assert!(error.contains(function), "{job}: {error}");
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "{job} did not fail: {s}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    // Bob's job goes on, every batch correct, each once.
    let done = server.job("bob", "counting").expect("job")["batches"]
        .as_i64()
        .expect("batches");
    let started = Instant::now();
    while server.job("bob", "counting").expect("job")["batches"]
        .as_i64()
        .unwrap_or(0)
        < done + 5
    {
        assert_eq!(state(&server, "bob", "counting")["state"], "running");
        assert!(started.elapsed() < Duration::from_secs(30));
        std::thread::sleep(Duration::from_millis(50));
    }
    server.shutdown();
    let dir = tmp.path().join("tenants/bob/jobs/counting");
    let f = factors(&dir);
    assert!(f.len() as i64 >= done + 4, "{f:?}");
    assert!(f.iter().all(|(_, x)| *x == 1), "{f:?}");
}

#[test]
fn a_tenant_over_its_cpu_share_falls_behind_alone() {
    let tmp = tempfile::tempdir().expect("temp");
    let server = in_process_server(tmp.path());
    server
        .create_tenant(
            "greedy",
            limits(serde_json::json!({"cpu_share": 0.1, "max_workers": 1})),
        )
        .expect("tenant");
    server
        .create_tenant(
            "calm",
            limits(serde_json::json!({"cpu_share": 1.0, "max_workers": 1})),
        )
        .expect("tenant");
    upload(&server, "greedy", "hostile");
    upload(&server, "calm", "hostile");
    // Greedy: each 100 ms batch burns some tens of ms of CPU — within a
    // core, but several times its 0.1-core share. Calm: almost nothing.
    let heavy: Vec<Value> = (0..25).map(|_| serde_json::json!(["burn:20"])).collect();
    let light: Vec<Value> = (0..25).map(|_| serde_json::json!(["burn:0"])).collect();
    hostile_job(&server, "greedy", "work", "burn", Value::Array(heavy));
    hostile_job(&server, "calm", "work", "burn", Value::Array(light));
    let started = Instant::now();
    for tenant in ["greedy", "calm"] {
        while state(&server, tenant, "work")["state"] == "running" {
            assert!(
                started.elapsed() < Duration::from_secs(120),
                "{tenant} did not finish"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        assert_eq!(state(&server, tenant, "work")["state"], "finished");
    }
    let delays = |tenant: &str| -> Vec<f64> {
        server
            .job_metrics(tenant, "work")
            .expect("metrics")
            .status()["recent"]
            .as_array()
            .expect("recent")
            .iter()
            .map(|b| b["scheduling_delay_ms"].as_f64().expect("delay"))
            .collect()
    };
    let greedy = delays("greedy");
    let calm = delays("calm");
    assert_eq!(greedy.len(), 25);
    assert_eq!(calm.len(), 25);
    let last = *greedy.last().expect("batches");
    let mut sorted = calm.clone();
    sorted.sort_by(f64::total_cmp);
    let calm_median = sorted[sorted.len() / 2];
    // Greedy's delay grows batch after batch; calm's does not.
    assert!(
        last > 1000.0 && last > greedy[5] + 500.0,
        "greedy's scheduling delay should grow: {greedy:?}"
    );
    assert!(
        calm_median * 5.0 < last,
        "calm's delays {calm:?} vs greedy's {greedy:?}"
    );
    // The admin's tenant list shows who used the CPU and who waited for it.
    let tenants = server.tenants();
    let of = |name: &str| {
        tenants
            .as_array()
            .expect("tenants")
            .iter()
            .find(|t| t["name"] == name)
            .cloned()
            .expect("tenant")
    };
    let (g, c) = (of("greedy"), of("calm"));
    assert!(
        g["cpu_share_waited_seconds"].as_f64().expect("waited") > 1.0
            && g["cpu_seconds"].as_f64().expect("cpu") > c["cpu_seconds"].as_f64().expect("cpu"),
        "{tenants}"
    );
    // Both computed every batch.
    for tenant in ["greedy", "calm"] {
        let out = read_jsonl(
            &tmp.path()
                .join(format!("tenants/{tenant}/jobs/work/out.jsonl")),
        );
        assert_eq!(out.len(), 25, "{tenant}");
    }
}

#[test]
fn a_broken_version_is_rolled_back_and_the_job_goes_on() {
    let tmp = tempfile::tempdir().expect("temp");
    let server = in_process_server(tmp.path());
    server
        .create_tenant("carol", limits(serde_json::json!({"max_workers": 1})))
        .expect("tenant");
    let v1 = upload(&server, "carol", "wordcount");
    // v2, uploaded as a new version of the same plugin: it traps on
    // `crash-v2`, which every batch holds.
    let bytes = std::fs::read(plugin("wordcount_v2")).expect("v2");
    server
        .add_plugin("carol", "wordcount", &bytes)
        .expect("upload v2");
    let batches: Vec<Value> = (0..40)
        .map(|i| serde_json::json!([format!("crash-v2 a b{}", i % 3)]))
        .collect();
    let spec = r#"[job]
name = "counting"
batch_interval = "100ms"
clock = "system"
[plugins.wordcount]
path = "wordcount.wasm"
[sources.lines]
type = "queue"
path = "in.json"
[streams.words]
from = "lines"
op = "flat_map"
function = "wordcount.split"
[streams.counts]
from = "words"
op = "map"
function = "wordcount.pair"
[[outputs]]
stream = "counts"
type = "jsonl"
path = "out.jsonl"
"#;
    let plugins = [("wordcount".to_string(), v1.clone())].into();
    let files = [("in.json".to_string(), Value::Array(batches).to_string())].into();
    server
        .submit("carol", spec, &plugins, &files)
        .expect("submit");
    while server.job("carol", "counting").expect("job")["batches"]
        .as_i64()
        .unwrap_or(0)
        < 3
    {
        std::thread::sleep(Duration::from_millis(20));
    }
    let outcome = server
        .swap(
            "carol",
            "counting",
            "wordcount",
            "wordcount@0.2.0",
            Duration::from_secs(30),
        )
        .expect("swap accepted");
    match outcome {
        Some(Err(why)) => assert!(why.contains("split") || why.contains("pair"), "{why}"),
        other => panic!("expected a rollback, got {other:?}"),
    }
    let job = server.job("carol", "counting").expect("job");
    assert_eq!(job["versions"]["wordcount"]["version"], "0.1.0", "{job}");
    assert_eq!(job["plugins"]["wordcount"], v1.as_str(), "{job}");
    let logs = server.logs("carol", "counting").expect("logs");
    assert!(
        logs["events"]
            .as_array()
            .expect("events")
            .iter()
            .any(|e| e["event"] == "swap rolled back"),
        "{logs}"
    );
    // The job finishes every batch on v1: each pair counts 1.
    while server.job("carol", "counting").expect("job")["status"]["state"] == "running" {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(state(&server, "carol", "counting")["state"], "finished");
    let out = read_jsonl(&tmp.path().join("tenants/carol/jobs/counting/out.jsonl"));
    assert_eq!(out.len(), 40);
    for b in &out {
        let records = b["records"].as_array().expect("records");
        assert_eq!(records.len(), 3, "{b}");
        assert!(records.iter().all(|r| r[1] == 1), "{b}");
    }
}
