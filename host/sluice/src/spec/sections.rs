//! The spec file's TOML sections as they are deserialized (with spans, so
//! that errors can name their line).

use serde::Deserialize;
use std::collections::BTreeMap;
use toml::Spanned;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct SpecFile {
    pub(super) job: Spanned<JobSection>,
    #[serde(default)]
    pub(super) plugins: BTreeMap<Spanned<String>, Spanned<PluginSection>>,
    #[serde(default)]
    pub(super) sources: BTreeMap<Spanned<String>, Spanned<SourceSection>>,
    #[serde(default)]
    pub(super) streams: BTreeMap<Spanned<String>, Spanned<StreamSection>>,
    #[serde(default)]
    pub(super) outputs: Vec<Spanned<OutputSection>>,
    /// How `s3://` locations are reached.
    pub(super) object_store: Option<Spanned<ObjectStoreSection>>,
}

/// `[object_store]`: the S3 endpoint and credentials for `s3://` places
/// (each field defaults to the AWS environment).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ObjectStoreSection {
    pub(super) endpoint: Option<String>,
    pub(super) region: Option<String>,
    pub(super) access_key_id: Option<String>,
    pub(super) secret_access_key: Option<String>,
    pub(super) session_token: Option<String>,
    pub(super) virtual_hosted_style: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct JobSection {
    pub(super) name: Option<String>,
    pub(super) batch_interval: Spanned<String>,
    pub(super) workers: Option<Spanned<usize>>,
    pub(super) clock: Option<Spanned<String>>,
    /// Checkpoint directory, relative to the spec, or `s3://bucket/prefix`.
    pub(super) checkpoint: Option<Spanned<String>>,
    /// With checkpoints in object storage: the local directory of the
    /// batch logs and write-ahead logs.
    pub(super) checkpoint_logs: Option<Spanned<String>>,
    pub(super) checkpoint_interval: Option<Spanned<String>>,
    /// Spark's backpressure: a PID controller sets the receiving rate.
    pub(super) backpressure: Option<bool>,
    /// Records/s receivers take until the controller's first estimate.
    pub(super) initial_rate: Option<Spanned<u64>>,
    /// Spark's `remember`: how long every stream's batches are kept for
    /// `slice` (the web UI's `/api/streams/NAME`).
    pub(super) remember: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct PluginSection {
    pub(super) path: Spanned<String>,
    pub(super) memory: Option<Spanned<String>>,
    pub(super) deadline: Option<Spanned<String>>,
    pub(super) max_output: Option<Spanned<String>>,
    /// A directory (relative to the spec) the plugin may read and write,
    /// as its current directory.
    pub(super) dir: Option<Spanned<String>>,
    /// `host:port` endpoints the plugin may connect to.
    pub(super) connect: Option<Spanned<Vec<String>>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct SourceSection {
    #[serde(rename = "type")]
    pub(super) kind: Spanned<String>,
    pub(super) host: Option<Spanned<String>>,
    pub(super) port: Option<Spanned<u16>>,
    pub(super) max_line_bytes: Option<Spanned<String>>,
    /// Socket: unbatched input held at most (a size).
    pub(super) max_buffered: Option<Spanned<String>>,
    /// Socket: at most this many lines per second.
    pub(super) max_rate: Option<Spanned<u64>>,
    pub(super) non_utf8: Option<Spanned<String>>,
    pub(super) path: Option<Spanned<String>>,
    pub(super) stream: Option<Spanned<String>>,
    pub(super) partitions: Option<Spanned<usize>>,
    pub(super) rate: Option<Spanned<u64>>,
    pub(super) words_per_line: Option<Spanned<usize>>,
    pub(super) vocabulary: Option<Spanned<Vec<String>>>,
    pub(super) seed: Option<Spanned<u64>>,
    pub(super) include_existing: Option<Spanned<bool>>,
    /// queue sources: one batch of the file per batch (default), or all of
    /// them in the first; the lines of every batch after them.
    pub(super) one_at_a_time: Option<Spanned<bool>>,
    pub(super) default: Option<Spanned<Vec<String>>>,
    /// text_files sources: where the names read are remembered across
    /// restarts (default: hidden in the directory, none for object
    /// storage; "" for memory only).
    pub(super) ledger: Option<Spanned<String>>,
    /// text_files sources: at most this many files per batch.
    pub(super) max_files: Option<Spanned<usize>>,
    /// Socket sources: a file of lines that `sluice run --feed` serves.
    pub(super) demo_lines: Option<Spanned<String>>,
    /// Broker sources: server URL(s), comma separated.
    pub(super) url: Option<Spanned<String>>,
    /// NATS: the subject filter.
    pub(super) subject: Option<Spanned<String>>,
    /// NATS: the durable consumer's name.
    pub(super) durable: Option<Spanned<String>>,
    /// Broker sources: where a job without a checkpoint starts (`all`,
    /// `new`, a sequence number, or an RFC 3339 time).
    pub(super) start: Option<Spanned<toml::Value>>,
    /// Broker sources: credentials and TLS.
    pub(super) user: Option<Spanned<String>>,
    pub(super) password: Option<Spanned<String>>,
    pub(super) token: Option<Spanned<String>>,
    pub(super) credentials: Option<Spanned<String>>,
    pub(super) tls: Option<Spanned<bool>>,
    pub(super) ca: Option<Spanned<String>>,
    /// Broker sources: text | bytes | json | msgpack.
    pub(super) decoder: Option<Spanned<String>>,
    /// Broker sources: value | keyed | record.
    pub(super) element: Option<Spanned<String>>,
    /// Broker sources: fail | skip.
    pub(super) on_undecodable: Option<Spanned<String>>,
    /// Broker sources: records over this size are undecodable.
    pub(super) max_record_bytes: Option<Spanned<String>>,
    /// MQTT: topic filters, quality of service, client id, clean session.
    pub(super) topics: Option<Spanned<Vec<String>>>,
    pub(super) qos: Option<Spanned<u8>>,
    pub(super) client_id: Option<Spanned<String>>,
    pub(super) clean_session: Option<Spanned<bool>>,
    /// Kafka: bootstrap brokers, a topic pattern (instead of `topics`),
    /// the consumer group, librdkafka properties, records per second per
    /// partition, the least pieces a batch's ranges are split into.
    pub(super) brokers: Option<Spanned<String>>,
    pub(super) topic_pattern: Option<Spanned<String>>,
    pub(super) group_id: Option<Spanned<String>>,
    pub(super) properties: Option<Spanned<toml::Table>>,
    pub(super) max_rate_per_partition: Option<Spanned<u64>>,
    pub(super) min_partitions: Option<Spanned<usize>>,
    /// Receiver sources: the plugin's receiver function (`plugin.function`)
    /// and its settings (values given to it as text).
    pub(super) function: Option<Spanned<String>>,
    pub(super) settings: Option<Spanned<toml::Table>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct StreamSection {
    /// A stream name, or a list of them (`union`).
    pub(super) from: Spanned<toml::Value>,
    pub(super) op: Spanned<String>,
    pub(super) function: Option<Spanned<String>>,
    pub(super) partitions: Option<Spanned<usize>>,
    /// combine_by_key's three functions.
    pub(super) create: Option<Spanned<String>>,
    pub(super) merge_value: Option<Spanned<String>>,
    pub(super) merge_combiners: Option<Spanned<String>>,
    /// Windows: length and slide (default: the parent's slide).
    pub(super) window: Option<Spanned<String>>,
    pub(super) slide: Option<Spanned<String>>,
    /// Windowed reductions: the inverse function and the filter.
    pub(super) inverse: Option<Spanned<String>>,
    pub(super) filter: Option<Spanned<String>>,
    /// update_state_by_key: a JSON file of `[key, state]` pairs.
    pub(super) initial_state: Option<Spanned<String>>,
    /// map_with_state: how long a key may go without values before it
    /// times out: a duration, or a number of the parent's batches.
    pub(super) timeout: Option<Spanned<toml::Value>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct OutputSection {
    /// The output's stable name (default `output-INDEX`): it names a Kafka
    /// output's transactions and markers and an MQTT output's client, so
    /// that reordering a job's outputs keeps them.
    pub(super) name: Option<Spanned<String>>,
    pub(super) stream: Spanned<String>,
    #[serde(rename = "type")]
    pub(super) kind: Spanned<String>,
    pub(super) num: Option<Spanned<usize>>,
    pub(super) path: Option<Spanned<String>>,
    pub(super) prefix: Option<Spanned<String>>,
    pub(super) suffix: Option<Spanned<String>>,
    pub(super) function: Option<Spanned<String>>,
    /// Broker outputs: server URL(s), the subject, credentials, TLS and
    /// the encoder (text | json | msgpack).
    pub(super) url: Option<Spanned<String>>,
    pub(super) subject: Option<Spanned<String>>,
    pub(super) user: Option<Spanned<String>>,
    pub(super) password: Option<Spanned<String>>,
    pub(super) token: Option<Spanned<String>>,
    pub(super) credentials: Option<Spanned<String>>,
    pub(super) tls: Option<Spanned<bool>>,
    pub(super) ca: Option<Spanned<String>>,
    pub(super) encoder: Option<Spanned<String>>,
    /// MQTT outputs: the topic and the quality of service.
    pub(super) topic: Option<Spanned<String>>,
    pub(super) qos: Option<Spanned<u8>>,
    /// Kafka outputs: bootstrap brokers, librdkafka properties, one
    /// transaction per batch and partition, the markers' topic.
    pub(super) brokers: Option<Spanned<String>>,
    pub(super) properties: Option<Spanned<toml::Table>>,
    pub(super) exactly_once: Option<Spanned<bool>>,
    pub(super) commit_topic: Option<Spanned<String>>,
}
