//! Broker connectors for Sluice: sources and sinks that read
//! brokers in the direct model — each batch a range of the broker's own
//! positions, recorded before the batch runs, so that a batch re-run after
//! a crash reads exactly the same records.
//!
//! - [`kafka`]: Kafka topics (`rdkafka`, librdkafka built in), in as
//!   offset ranges per partition and out idempotently or in transactions.
//! - [`nats`]: a NATS JetStream stream (`async-nats`), in and out.
//! - [`mqtt`]: MQTT topics (`rumqttc`), a receiver with core's
//!   write-ahead log: MQTT cannot replay.
//!
//! The connectors implement the engine's synchronous
//! [`Source`](sluice_core::receiver::Source) trait over an async client
//! on a runtime of their own; [`decode`] turns records into elements the
//! same way for every broker.

pub mod decode;
pub mod encode;
pub mod kafka;
pub mod mqtt;
pub mod nats;
mod ranges;

pub use decode::{Decoder, Decoding, Shape, Undecodable};
pub use encode::Encoder;
pub use kafka::{KafkaConfig, KafkaSink, KafkaSinkConfig, KafkaSource};
pub use mqtt::{MqttConfig, MqttSink, MqttSinkConfig, MqttTls};
pub use nats::{NatsAuth, NatsConfig, NatsSink, NatsSinkConfig, NatsSource, StartAt};
