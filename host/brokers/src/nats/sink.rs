//! `nats` output: every element published to a JetStream subject, each
//! with a `Nats-Msg-Id` made of the job, the batch time, the partition and
//! the element's place in it. A batch re-run after a crash publishes the
//! same ids, which the stream drops as duplicates (within its duplicate
//! window, two minutes by default): exactly once, end to end. A batch
//! counts as written when the stream has acknowledged every message.

use super::NatsAuth;
use super::client::{Failure, connect};
use crate::encode::Encoder;
use async_nats::HeaderMap;
use async_nats::jetstream;
use sluice_core::error::{Error, Result};
use sluice_core::rdd::Rdd;
use sluice_core::sink::Output;
use sluice_core::time::BatchTime;
use std::time::{Duration, Instant};

/// A `nats` output's settings.
#[derive(Debug, Clone)]
pub struct NatsSinkConfig {
    /// The job's name: the first part of every message id.
    pub job: String,
    /// Server URL(s), comma separated.
    pub url: String,
    /// The subject published to (a JetStream stream must capture it).
    pub subject: String,
    /// Credentials and TLS.
    pub auth: NatsAuth,
    /// How elements become payloads.
    pub encoder: Encoder,
    /// How long a batch keeps trying while the server is unreachable
    /// before the job fails (it re-runs the batch when restarted).
    pub retry_for: Duration,
}

impl NatsSinkConfig {
    /// Publishes to `subject` on `url` for job `job`, text payloads.
    pub fn new(job: &str, url: &str, subject: &str) -> NatsSinkConfig {
        NatsSinkConfig {
            job: job.to_string(),
            url: url.to_string(),
            subject: subject.to_string(),
            auth: NatsAuth::default(),
            encoder: Encoder::Text,
            retry_for: Duration::from_secs(30),
        }
    }
}

/// The `nats` output.
pub struct NatsSink {
    config: NatsSinkConfig,
    runtime: Option<tokio::runtime::Runtime>,
    js: Option<jetstream::Context>,
}

impl NatsSink {
    /// An output with these settings; it connects at its first batch.
    pub fn new(config: NatsSinkConfig) -> NatsSink {
        NatsSink {
            config,
            runtime: None,
            js: None,
        }
    }

    fn failed(&self, time: BatchTime, message: &str) -> Error {
        Error::io(
            format!(
                "output to nats subject `{}` at batch {time}",
                self.config.subject
            ),
            std::io::Error::other(message.to_string()),
        )
    }

    /// Publishes one batch, every message acknowledged by the stream.
    async fn publish(
        config: &NatsSinkConfig,
        js: &jetstream::Context,
        messages: &[(String, Vec<u8>)],
    ) -> std::result::Result<(), Failure> {
        let mut acks = Vec::with_capacity(1024);
        for (id, payload) in messages {
            let mut headers = HeaderMap::new();
            headers.insert("Nats-Msg-Id", id.as_str());
            let ack = js
                .publish_with_headers(config.subject.clone(), headers, payload.clone().into())
                .await
                .map_err(|e| Failure::Retry(format!("publishing: {e}")))?;
            acks.push(ack);
            if acks.len() == 1024 {
                for a in acks.drain(..) {
                    a.await.map_err(|e| stored(config, e))?;
                }
            }
        }
        for a in acks {
            a.await.map_err(|e| stored(config, e))?;
        }
        Ok(())
    }
}

/// A publish the stream did not acknowledge: no stream on the subject is
/// a mistake to report, anything else worth retrying.
fn stored(config: &NatsSinkConfig, e: jetstream::context::PublishError) -> Failure {
    if e.kind() == jetstream::context::PublishErrorKind::StreamNotFound {
        Failure::Fatal(format!(
            "no JetStream stream captures subject `{}` on {}",
            config.subject, config.url
        ))
    } else {
        Failure::Retry(format!("publishing to `{}`: {e}", config.subject))
    }
}

impl Output for NatsSink {
    fn describe(&self) -> String {
        format!(
            "nats subject {} on {} (exactly once by message id)",
            self.config.subject, self.config.url
        )
    }

    fn emit(&mut self, time: BatchTime, _index: u64, rdd: &Rdd) -> Result<()> {
        let messages: Vec<(String, Vec<u8>)> = (rdd.partitions.iter().enumerate())
            .flat_map(|(p, b)| {
                let encoder = self.config.encoder;
                let job = &self.config.job;
                (0..b.len()).map(move |i| {
                    let key = if b.has_keys() { b.keys.get(i) } else { &[][..] };
                    (
                        format!("{job}/{}/{p}/{i}", time.millis()),
                        encoder.encode(key, b.values.get(i)),
                    )
                })
            })
            .collect();
        if messages.is_empty() {
            return Ok(());
        }
        if self.runtime.is_none() {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .thread_name("sluice-nats-out")
                .enable_all()
                .build()
                .map_err(|e| Error::io("starting the NATS client of an output", e))?;
            self.runtime = Some(rt);
        }
        let rt = self.runtime.as_ref().expect("just made");
        let started = Instant::now();
        let mut backoff = Duration::from_millis(100);
        loop {
            let attempt = rt.block_on(async {
                let js = match &self.js {
                    Some(js) => js.clone(),
                    None => {
                        let client = connect("output", &self.config.url, &self.config.auth).await?;
                        jetstream::new(client)
                    }
                };
                NatsSink::publish(&self.config, &js, &messages).await?;
                Ok::<_, Failure>(js)
            });
            match attempt {
                Ok(js) => {
                    self.js = Some(js);
                    return Ok(());
                }
                Err(Failure::Fatal(m)) => return Err(self.failed(time, &m)),
                Err(f) if started.elapsed() >= self.config.retry_for => {
                    return Err(self.failed(
                        time,
                        &format!("{}; gave up after {:?}", f.message(), self.config.retry_for),
                    ));
                }
                Err(f) => {
                    tracing::warn!(subject = %self.config.subject, batch = %time, "{}; retrying the batch in {backoff:?}", f.message());
                    self.js = None;
                    std::thread::sleep(backoff);
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
    }
}

impl Drop for NatsSink {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_timeout(Duration::from_secs(2));
        }
    }
}
