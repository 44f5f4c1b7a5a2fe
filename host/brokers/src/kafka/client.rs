//! Talking to Kafka, for the source and the sink alike: the client's
//! settings, and a context that turns librdkafka's error and statistics
//! callbacks into what the job reports.

use rdkafka::client::ClientContext;
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::consumer::ConsumerContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::ProducerContext;
use rdkafka::statistics::Statistics;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

/// A topic and a partition.
pub type TopicPartition = (String, i32);

/// Errors and watermarks the client reported, for whoever owns it.
#[derive(Default)]
pub(crate) struct Reports {
    errors: Mutex<Vec<String>>,
    /// An error no retry can mend (refused credentials, a missing topic).
    fatal: Mutex<Option<String>>,
    /// The high watermark of each partition read, from the statistics.
    high: Mutex<BTreeMap<TopicPartition, i64>>,
    /// The first record the brokers did not take since the last look.
    delivery: Mutex<Option<String>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Reports {
    pub(crate) fn report(&self, error: String) {
        let mut e = lock(&self.errors);
        if e.len() < 100 && e.last() != Some(&error) {
            e.push(error);
        }
    }

    pub(crate) fn take_errors(&self) -> Vec<String> {
        std::mem::take(&mut *lock(&self.errors))
    }

    pub(crate) fn set_fatal(&self, error: String) {
        lock(&self.fatal).get_or_insert(error);
    }

    pub(crate) fn fatal(&self) -> Option<String> {
        lock(&self.fatal).clone()
    }

    pub(crate) fn high(&self) -> BTreeMap<TopicPartition, i64> {
        lock(&self.high).clone()
    }

    pub(crate) fn take_delivery_failure(&self) -> Option<String> {
        lock(&self.delivery).take()
    }

    pub(crate) fn set_high(&self, tp: TopicPartition, offset: i64) {
        lock(&self.high).insert(tp, offset);
    }
}

/// The client context: librdkafka's callbacks land in [`Reports`].
#[derive(Clone)]
pub(crate) struct Context {
    pub(crate) what: String,
    pub(crate) brokers: String,
    pub(crate) reports: Arc<Reports>,
}

impl ClientContext for Context {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        if (level as i32) <= (RDKafkaLogLevel::Warning as i32) {
            tracing::warn!(target: "sluice::kafka", "{} ({fac}): {message}", self.what);
        } else {
            tracing::debug!(target: "sluice::kafka", "{} ({fac}): {message}", self.what);
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        if matches!(error, KafkaError::PartitionEOF(_)) {
            return;
        }
        if is_fatal(&error) {
            self.reports.set_fatal(format!(
                "{}: Kafka at {}: {reason} (the brokers refused the credentials or the settings)",
                self.what, self.brokers
            ));
            return;
        }
        let message = match error.rdkafka_error_code() {
            Some(RDKafkaErrorCode::AllBrokersDown | RDKafkaErrorCode::BrokerTransportFailure) => {
                format!(
                    "{}: cannot reach Kafka at {}: {reason}",
                    self.what, self.brokers
                )
            }
            _ => format!("{}: Kafka at {}: {reason}", self.what, self.brokers),
        };
        tracing::warn!(target: "sluice::kafka", "{message}");
        self.reports.report(message);
    }

    fn stats(&self, statistics: Statistics) {
        for (topic, t) in statistics.topics {
            for (partition, p) in t.partitions {
                if partition >= 0 && p.hi_offset >= 0 {
                    self.reports
                        .set_high((topic.clone(), partition), p.hi_offset);
                }
            }
        }
    }
}

impl ConsumerContext for Context {}

impl ProducerContext for Context {
    type DeliveryOpaque = ();
    fn delivery(&self, result: &rdkafka::message::DeliveryResult<'_>, _: ()) {
        if let Err((e, _)) = result {
            lock(&self.reports.delivery)
                .get_or_insert_with(|| format!("a record was not delivered: {e}"));
        }
    }
}

/// Errors that retrying cannot mend.
pub(crate) fn is_fatal(error: &KafkaError) -> bool {
    use RDKafkaErrorCode as C;
    matches!(
        error.rdkafka_error_code(),
        Some(
            C::Authentication
                | C::SaslAuthenticationFailed
                | C::UnsupportedSASLMechanism
                | C::IllegalSASLState
                | C::TopicAuthorizationFailed
                | C::GroupAuthorizationFailed
                | C::ClusterAuthorizationFailed
                | C::TransactionalIdAuthorizationFailed
                | C::InvalidConfig
                | C::SSL
                | C::Fatal
        )
    )
}

/// The client settings for `brokers` with the user's `properties` (any
/// librdkafka property: `security.protocol`, `sasl.mechanism`,
/// `sasl.username`, `ssl.ca.location`, …) over Sluice's own.
pub(crate) fn settings(
    brokers: &str,
    properties: &[(String, String)],
    own: &[(&str, &str)],
) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", brokers)
        .set("statistics.interval.ms", "1000")
        .set("reconnect.backoff.max.ms", "5000")
        .set_log_level(RDKafkaLogLevel::Warning);
    for (k, v) in own {
        c.set(*k, *v);
    }
    for (k, v) in properties {
        c.set(k, v);
    }
    c
}

/// Properties a job may not override: Sluice owns offsets and
/// transactions.
pub const RESERVED: &[&str] = &[
    "bootstrap.servers",
    "enable.auto.commit",
    "enable.auto.offset.store",
    "enable.idempotence",
    "transactional.id",
    "isolation.level",
    "group.id",
];
