//! A real S3 server for the tests: moto's (PyPI `moto[server]`, installed
//! by scripts/brokers) on an ephemeral loopback port, stopped by its pid.
//! It keeps objects in memory and honours create-only puts
//! (`If-None-Match: *` → 412) as S3 does; it checks no signature unless
//! started to refuse every key.

use crate::brokers::free_port;
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A moto S3 server of the test's own on 127.0.0.1.
pub struct S3Server {
    child: Option<Child>,
    /// Its port.
    pub port: u16,
}

fn moto_bin() -> PathBuf {
    let bin = std::env::var_os("SLUICE_MOTO_SERVER").map(PathBuf::from);
    let bin = bin.unwrap_or_else(|| crate::root().join("target/brokers-venv/bin/moto_server"));
    assert!(
        bin.exists(),
        "moto_server is not installed at {}: run scripts/test (or source scripts/brokers), which installs it",
        bin.display()
    );
    bin
}

impl S3Server {
    /// Starts one on a free port.
    pub fn start() -> S3Server {
        S3Server::start_on(free_port())
    }

    /// Starts one on `port`, waiting until it answers.
    pub fn start_on(port: u16) -> S3Server {
        S3Server::spawn(port, None)
    }

    /// Starts one that creates `buckets` and then checks every request's
    /// signature (moto's `INITIAL_NO_AUTH_ACTION_COUNT`): it knows no key,
    /// so it refuses every client.
    pub fn start_refusing_every_key(buckets: &[&str]) -> S3Server {
        let s = S3Server::spawn(free_port(), Some(buckets.len()));
        for b in buckets {
            s.create_bucket(b);
        }
        s
    }

    fn spawn(port: u16, unchecked_requests: Option<usize>) -> S3Server {
        let mut command = Command::new(moto_bin());
        if let Some(n) = unchecked_requests {
            command.env("INITIAL_NO_AUTH_ACTION_COUNT", n.to_string());
        }
        let child = command
            .args(["-H", "127.0.0.1", "-p"])
            .arg(port.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting moto_server");
        let mut s = S3Server {
            child: Some(child),
            port,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            let exited = s.child.as_mut().and_then(|c| c.try_wait().ok().flatten());
            assert!(
                exited.is_none() && Instant::now() < deadline,
                "moto_server did not answer on {port} ({exited:?})"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        s
    }

    /// `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Creates bucket `name`.
    pub fn create_bucket(&self, name: &str) {
        ureq::put(format!("{}/{name}", self.endpoint()))
            .send_empty()
            .unwrap_or_else(|e| panic!("creating bucket {name}: {e}"));
    }

    /// An outage: kills the server, waits `down`, and starts a new one on
    /// the same port with `bucket` (moto keeps objects in memory: the new
    /// one starts empty).
    pub fn outage(mut self, down: Duration, bucket: &str) -> S3Server {
        let port = self.port;
        self.kill();
        std::thread::sleep(down);
        let s = S3Server::start_on(port);
        s.create_bucket(bucket);
        s
    }

    /// Every key in `bucket` under `prefix`, straight from the server's
    /// listing (ListObjectsV2), sorted.
    pub fn keys(&self, bucket: &str, prefix: &str) -> Vec<String> {
        let xml = ureq::get(format!(
            "{}/{bucket}?list-type=2&prefix={prefix}",
            self.endpoint()
        ))
        .call()
        .and_then(|mut r| r.body_mut().read_to_string())
        .unwrap_or_else(|e| panic!("listing {bucket}/{prefix}: {e}"));
        assert!(
            !xml.contains("<IsTruncated>true"),
            "one page holds the test's keys"
        );
        let mut keys: Vec<String> = xml
            .split("<Key>")
            .skip(1)
            .filter_map(|k| k.split_once("</Key>").map(|(k, _)| k.to_string()))
            .collect();
        keys.sort();
        keys
    }

    /// A client of `s3://bucket/prefix` on this server.
    pub fn bucket(&self, bucket: &str, prefix: &str) -> sluice_objects::Bucket {
        let url = sluice_objects::S3Url::parse(&format!("s3://{bucket}/{prefix}")).expect("url");
        sluice_objects::Bucket::open(&url, &self.settings()).expect("bucket")
    }

    /// Settings that reach this server.
    pub fn settings(&self) -> sluice_objects::S3Settings {
        sluice_objects::S3Settings {
            endpoint: Some(self.endpoint()),
            region: Some("us-east-1".to_string()),
            access_key_id: Some("sluice-test".to_string()),
            secret_access_key: Some("sluice-test-secret".to_string()),
            ..Default::default()
        }
    }

    /// The `[object_store]` section of a job spec that reaches this server.
    pub fn spec_section(&self) -> String {
        format!(
            "[object_store]\nendpoint = \"{}\"\nregion = \"us-east-1\"\naccess_key_id = \"sluice-test\"\nsecret_access_key = \"sluice-test-secret\"\n",
            self.endpoint()
        )
    }

    /// Kills it (SIGKILL, by its pid) and waits for it: its objects are gone.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        self.kill();
    }
}
