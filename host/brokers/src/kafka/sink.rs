//! `kafka` output: every element a record of one topic, keyed by the
//! element's key (text as is, anything else as JSON) when it has one.
//!
//! The producer is idempotent: retries never duplicate a record. With
//! `exactly_once`, each batch's partition is written in one Kafka
//! transaction by a producer whose `transactional.id` is derived from the
//! job, the output and the partition (so a restarted job fences its
//! predecessor's open transactions), and the same transaction writes a
//! marker (`<job>/<output>/<partition>` → batch time) to a commit topic.
//! A restarted job reads the markers first: a batch re-run after a crash
//! whose transaction had committed writes nothing again. Consumers of the
//! topic read with `isolation.level=read_committed`.

use super::client::{Context, Reports, settings};
use crate::encode::Encoder;
use rdkafka::Offset;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::topic_partition_list::TopicPartitionList;
use sluice_core::error::{Error, Result};
use sluice_core::rdd::Rdd;
use sluice_core::sink::Output;
use sluice_core::time::BatchTime;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A `kafka` output's settings.
#[derive(Debug, Clone)]
pub struct KafkaSinkConfig {
    /// The job's name, part of transactional ids and markers.
    pub job: String,
    /// The output's name within the job (several may write one topic).
    pub output: String,
    /// Bootstrap brokers, comma separated.
    pub brokers: String,
    /// The topic written.
    pub topic: String,
    /// librdkafka properties (security, tuning).
    pub properties: Vec<(String, String)>,
    /// How element values become payloads.
    pub encoder: Encoder,
    /// One transaction per batch and partition, never twice.
    pub exactly_once: bool,
    /// Where the transactions' markers go (one partition, compacted;
    /// created if missing).
    pub commit_topic: String,
    /// How long a batch keeps trying while the brokers are unreachable
    /// before the job fails (it re-runs the batch when restarted).
    pub retry_for: Duration,
}

impl KafkaSinkConfig {
    /// Writes to `topic` on `brokers` for job `job`, text payloads,
    /// idempotent but not transactional.
    pub fn new(job: &str, output: &str, brokers: &str, topic: &str) -> KafkaSinkConfig {
        KafkaSinkConfig {
            job: job.to_string(),
            output: output.to_string(),
            brokers: brokers.to_string(),
            topic: topic.to_string(),
            properties: Vec::new(),
            encoder: Encoder::Text,
            exactly_once: false,
            commit_topic: "sluice-commits".to_string(),
            retry_for: Duration::from_secs(30),
        }
    }

    fn marker_key(&self, partition: usize) -> String {
        format!("{}/{}/{partition}", self.job, self.output)
    }
}

/// The `kafka` output.
pub struct KafkaSink {
    config: KafkaSinkConfig,
    reports: Arc<Reports>,
    /// The idempotent producer (without `exactly_once`).
    plain: Option<BaseProducer<Context>>,
    /// One transactional producer per partition (with `exactly_once`).
    transactional: HashMap<usize, BaseProducer<Context>>,
    /// The last batch each partition committed, from the markers.
    committed: Option<HashMap<String, i64>>,
}

impl KafkaSink {
    /// An output with these settings; it connects at its first batch.
    pub fn new(config: KafkaSinkConfig) -> KafkaSink {
        KafkaSink {
            config,
            reports: Arc::default(),
            plain: None,
            transactional: HashMap::new(),
            committed: None,
        }
    }

    fn what(&self) -> String {
        format!("output to kafka topic `{}`", self.config.topic)
    }

    fn failed(&self, time: BatchTime, message: &str) -> Error {
        Error::io(
            format!("{} at batch {time}", self.what()),
            std::io::Error::other(message.to_string()),
        )
    }

    fn context(&self) -> Context {
        Context {
            what: self.what(),
            brokers: self.config.brokers.clone(),
            reports: self.reports.clone(),
        }
    }

    fn producer(
        &self,
        transactional_id: Option<&str>,
    ) -> std::result::Result<BaseProducer<Context>, KafkaError> {
        let mut own = vec![("enable.idempotence", "true"), ("linger.ms", "5")];
        if let Some(id) = transactional_id {
            own.push(("transactional.id", id));
        }
        settings(&self.config.brokers, &self.config.properties, &own)
            .create_with_context(self.context())
    }

    /// The elements of `rdd`'s partition `p` as (key, payload) records.
    fn records(&self, rdd: &Rdd, p: usize) -> Vec<(Option<Vec<u8>>, Vec<u8>)> {
        let b = &rdd.partitions[p];
        (0..b.len())
            .map(|i| {
                let key = b
                    .has_keys()
                    .then(|| Encoder::Text.encode(&[], b.keys.get(i)));
                (key, self.config.encoder.encode(&[], b.values.get(i)))
            })
            .collect()
    }

    /// Queues `records` (and a marker) on `producer` and waits until the
    /// brokers have them.
    fn send(
        &self,
        producer: &BaseProducer<Context>,
        records: &[(Option<Vec<u8>>, Vec<u8>)],
        marker: Option<(&str, String)>,
    ) -> std::result::Result<(), String> {
        let queue = |topic: &str,
                     key: Option<&[u8]>,
                     payload: &[u8]|
         -> std::result::Result<(), KafkaError> {
            loop {
                let mut r = BaseRecord::to(topic).payload(payload);
                if let Some(k) = key {
                    r = r.key(k);
                }
                match producer.send(r) {
                    Ok(()) => return Ok(()),
                    Err((
                        KafkaError::MessageProduction(rdkafka::types::RDKafkaErrorCode::QueueFull),
                        _,
                    )) => {
                        producer.poll(Duration::from_millis(10));
                    }
                    Err((e, _)) => return Err(e),
                }
            }
        };
        for (k, v) in records {
            queue(&self.config.topic, k.as_deref(), v).map_err(|e| e.to_string())?;
        }
        if let Some((key, time)) = marker {
            queue(
                &self.config.commit_topic,
                Some(key.as_bytes()),
                time.as_bytes(),
            )
            .map_err(|e| e.to_string())?;
        }
        producer
            .flush(Duration::from_secs(30))
            .map_err(|e| e.to_string())?;
        match self.reports.take_delivery_failure() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Makes sure the commit topic exists and reads its markers.
    fn read_markers(&self) -> std::result::Result<HashMap<String, i64>, String> {
        ensure_topic(&self.config, &self.context())?;
        let consumer: BaseConsumer<Context> = settings(
            &self.config.brokers,
            &self.config.properties,
            &[
                ("group.id", &format!("sluice-{}-markers", self.config.job)),
                ("enable.auto.commit", "false"),
                ("isolation.level", "read_committed"),
                ("enable.partition.eof", "true"),
            ],
        )
        .create_with_context(self.context())
        .map_err(|e| e.to_string())?;
        let mut tpl = TopicPartitionList::new();
        let _ = tpl.add_partition_offset(&self.config.commit_topic, 0, Offset::Beginning);
        consumer.assign(&tpl).map_err(|e| e.to_string())?;
        let mut markers = HashMap::new();
        let prefix = format!("{}/{}/", self.config.job, self.config.output);
        let started = Instant::now();
        loop {
            if started.elapsed() > Duration::from_secs(30) {
                return Err(format!(
                    "reading the markers of topic `{}` took over 30 s",
                    self.config.commit_topic
                ));
            }
            match consumer.poll(Duration::from_millis(500)) {
                Some(Err(KafkaError::PartitionEOF(_))) => return Ok(markers),
                Some(Err(e)) => {
                    return Err(format!(
                        "reading the markers of topic `{}`: {e}",
                        self.config.commit_topic
                    ));
                }
                Some(Ok(m)) => {
                    let key = m.key().map(String::from_utf8_lossy).unwrap_or_default();
                    let time = m
                        .payload()
                        .and_then(|p| std::str::from_utf8(p).ok()?.parse::<i64>().ok());
                    if let (true, Some(t)) = (key.starts_with(&prefix), time) {
                        let e = markers.entry(key.into_owned()).or_insert(t);
                        *e = (*e).max(t);
                    }
                }
                None => {}
            }
        }
    }

    /// Writes partition `p` of batch `time` in one transaction, unless a
    /// marker says it was.
    fn write_transaction(
        &mut self,
        time: BatchTime,
        rdd: &Rdd,
        p: usize,
    ) -> std::result::Result<(), String> {
        let s = |e: KafkaError| e.to_string();
        let key = self.config.marker_key(p);
        if self
            .committed
            .as_ref()
            .and_then(|c| c.get(&key))
            .is_some_and(|t| *t >= time.millis())
        {
            tracing::info!(output = %self.config.topic, batch = %time, partition = p, "written before a restart: skipped");
            return Ok(());
        }
        let records = self.records(rdd, p);
        if records.is_empty() {
            return Ok(());
        }
        if !self.transactional.contains_key(&p) {
            let producer = self.producer(Some(&format!("sluice-{key}"))).map_err(s)?;
            producer
                .init_transactions(Duration::from_secs(30))
                .map_err(s)?;
            self.transactional.insert(p, producer);
        }
        let producer = &self.transactional[&p];
        producer.begin_transaction().map_err(s)?;
        let sent = self.send(producer, &records, Some((&key, time.millis().to_string())));
        let result = sent.and_then(|()| {
            producer
                .commit_transaction(Duration::from_secs(30))
                .map_err(s)
        });
        if let Err(e) = result {
            let _ = producer.abort_transaction(Duration::from_secs(10));
            // A fresh producer next time: the old one may be fenced.
            self.transactional.remove(&p);
            return Err(e);
        }
        if let Some(c) = self.committed.as_mut() {
            c.insert(key, time.millis());
        }
        Ok(())
    }

    fn write(&mut self, time: BatchTime, rdd: &Rdd) -> std::result::Result<(), String> {
        if let Some(f) = self.reports.fatal() {
            return Err(f);
        }
        if !self.config.exactly_once {
            if self.plain.is_none() {
                self.plain = Some(self.producer(None).map_err(|e| e.to_string())?);
            }
            let records: Vec<_> = (0..rdd.partitions.len())
                .flat_map(|p| self.records(rdd, p))
                .collect();
            let producer = self.plain.as_ref().expect("just made");
            return self.send(producer, &records, None);
        }
        if self.committed.is_none() {
            self.committed = Some(self.read_markers()?);
        }
        for p in 0..rdd.partitions.len() {
            self.write_transaction(time, rdd, p)?;
        }
        Ok(())
    }
}

/// Creates the commit topic (one partition) if it is missing.
fn ensure_topic(config: &KafkaSinkConfig, context: &Context) -> std::result::Result<(), String> {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    let admin: AdminClient<Context> = settings(&config.brokers, &config.properties, &[])
        .create_with_context(context.clone())
        .map_err(|e| e.to_string())?;
    // Compacted: a restart reads one marker per key, not every batch's.
    let topic = NewTopic::new(&config.commit_topic, 1, TopicReplication::Fixed(1))
        .set("cleanup.policy", "compact");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let created = rt.block_on(admin.create_topics(
        [&topic],
        &AdminOptions::new().request_timeout(Some(Duration::from_secs(10))),
    ));
    match created.map_err(|e| e.to_string())?.pop() {
        Some(Err((_, rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists)))
        | Some(Ok(_))
        | None => Ok(()),
        Some(Err((t, code))) => Err(format!("creating the commit topic `{t}`: {code}")),
    }
}

impl Output for KafkaSink {
    fn describe(&self) -> String {
        let how = if self.config.exactly_once {
            "exactly once: a transaction per batch and partition"
        } else {
            "idempotent producer: at least once across restarts"
        };
        format!(
            "kafka topic {} on {} ({how})",
            self.config.topic, self.config.brokers
        )
    }

    fn emit(&mut self, time: BatchTime, _index: u64, rdd: &Rdd) -> Result<()> {
        if rdd.partitions.iter().all(|b| b.is_empty()) {
            return Ok(());
        }
        let started = Instant::now();
        let mut backoff = Duration::from_millis(100);
        loop {
            match self.write(time, rdd) {
                Ok(()) => return Ok(()),
                Err(m) if self.reports.fatal().is_some() => return Err(self.failed(time, &m)),
                Err(m) if started.elapsed() >= self.config.retry_for => {
                    return Err(self.failed(
                        time,
                        &format!("{m}; gave up after {:?}", self.config.retry_for),
                    ));
                }
                Err(m) => {
                    tracing::warn!(topic = %self.config.topic, batch = %time, "{m}; retrying the batch in {backoff:?}");
                    self.plain = None;
                    std::thread::sleep(backoff);
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
    }
}
