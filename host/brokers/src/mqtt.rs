//! `mqtt`: topics of an MQTT broker as a source of text lines, or of
//! decoded messages.
//!
//! MQTT cannot replay what it delivered, so this is a *receiver* with the
//! write-ahead log of core's [`LineSource`]: each message's lines go into
//! the log (with checkpoints) before the message is acknowledged to the
//! broker (manual acks, QoS 1 and 2), and a batch is made only of logged
//! lines. A persistent session (`clean_session = false`, a fixed client id)
//! keeps the broker holding QoS 1/2 messages for the job while it is down,
//! and redelivering the ones it had not acknowledged. So nothing is lost
//! through `kill -9`; a message that was logged but not yet acknowledged
//! when the process died comes again (MQTT's at-least-once: at most the
//! messages in flight at the kill).
//!
//! With the `text` decoder (the default) a message's payload is UTF-8 text
//! split into lines on `\n`: each line is an element. With `bytes`, `json`
//! or `msgpack` the whole payload is one element. The element is the
//! value, or keyed by the message's topic, or a record of its `topic`,
//! `qos`, `retain`, `time` (when it was received, ms since the epoch: MQTT
//! carries no timestamp) and `value`. A message that cannot be decoded
//! (or is over `max_record_bytes`) stops the job, naming its topic, or with
//! `on_undecodable = "skip"` is left out, counted and reported; either way
//! nothing of it is logged, and only a skipped one is acknowledged.
//!
//! The `mqtt` output publishes each element as a message at QoS 1 (or
//! the QoS asked for) and counts a batch written once the broker has
//! acknowledged every message: at least once (a batch re-run after a crash
//! is published again).

use crate::decode::{Decoder, Decoding, Shape, Undecodable};
use crate::encode::Encoder;
use rumqttc::{Client, ConnectReturnCode, ConnectionError, Event, MqttOptions, Packet, QoS};
use sluice_core::error::{Error, Result};
use sluice_core::rdd::Rdd;
use sluice_core::receiver::socket::LineSink;
use sluice_core::receiver::{LineSource, Receiver};
use sluice_core::sink::Output;
use sluice_core::time::BatchTime;
use sluice_sdk::Column;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// An `mqtt` source's settings.
#[derive(Debug, Clone)]
pub struct MqttConfig {
    /// The source's name, in errors and logs.
    pub name: String,
    /// The broker's host.
    pub host: String,
    /// Its port (1883 by default).
    pub port: u16,
    /// Topic filters (`+` and `#` wildcards).
    pub topics: Vec<String>,
    /// The subscription's quality of service: 0, 1 or 2.
    pub qos: u8,
    /// The client id (the persistent session's name).
    pub client_id: String,
    /// Start a fresh session each time (`false`: the broker keeps the
    /// job's session, and its messages, across restarts).
    pub clean_session: bool,
    /// User name and password.
    pub user: Option<(String, String)>,
    /// TLS (`mqtts://`), if used.
    pub tls: Option<MqttTls>,
    /// Lines per second at most.
    pub max_rate: Option<u64>,
    /// Lines received but not yet in a batch, in bytes, before receiving
    /// waits.
    pub max_buffered_bytes: usize,
    /// Partitions of each batch.
    pub partitions: usize,
    /// How messages become elements.
    pub decoding: Decoding,
}

impl MqttConfig {
    /// `topics` of the broker at `host:port`, QoS 1, a persistent session
    /// named `sluice-<name>`.
    pub fn new(name: &str, host: &str, port: u16, topics: &[&str]) -> MqttConfig {
        MqttConfig {
            name: name.to_string(),
            host: host.to_string(),
            port,
            topics: topics.iter().map(|t| t.to_string()).collect(),
            qos: 1,
            client_id: format!("sluice-{name}"),
            clean_session: false,
            user: None,
            tls: None,
            max_rate: None,
            max_buffered_bytes: 64 << 20,
            partitions: 2,
            decoding: Decoding::default(),
        }
    }

    /// The source.
    pub fn source(self) -> LineSource {
        let what = format!(
            "mqtt {} on {}:{} (qos {})",
            self.topics.join(","),
            self.host,
            self.port,
            self.qos
        );
        let limits = (self.max_rate.map(|r| r as f64), self.max_buffered_bytes);
        let partitions = self.partitions;
        LineSource::new(
            &what,
            partitions,
            limits,
            Box::new(move |sink| {
                let r = MqttReceiver::start(self, sink)?;
                Ok(Box::new(r) as Box<dyn Receiver>)
            }),
        )
    }
}

fn qos(n: u8) -> QoS {
    match n {
        0 => QoS::AtMostOnce,
        1 => QoS::AtLeastOnce,
        _ => QoS::ExactlyOnce,
    }
}

/// The receiving thread.
struct MqttReceiver {
    stop: Arc<AtomicBool>,
    errors: Arc<Mutex<Vec<String>>>,
    fatal: Arc<Mutex<Option<String>>>,
    thread: Option<JoinHandle<()>>,
}

impl MqttReceiver {
    fn start(config: MqttConfig, sink: Arc<dyn LineSink>) -> std::io::Result<MqttReceiver> {
        let stop = Arc::new(AtomicBool::new(false));
        let errors: Arc<Mutex<Vec<String>>> = Arc::default();
        let fatal: Arc<Mutex<Option<String>>> = Arc::default();
        let (s, e, f) = (stop.clone(), errors.clone(), fatal.clone());
        let thread = std::thread::Builder::new()
            .name(format!("sluice-mqtt-{}", config.name))
            .spawn(move || receive(&config, sink.as_ref(), &s, &e, &f))?;
        Ok(MqttReceiver {
            stop,
            errors,
            fatal,
            thread: Some(thread),
        })
    }
}

impl Receiver for MqttReceiver {
    fn stop(mut self: Box<Self>) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }

    fn take_errors(&self) -> Vec<String> {
        std::mem::take(&mut *self.errors.lock().unwrap_or_else(|e| e.into_inner()))
    }

    fn failed(&self) -> Option<String> {
        self.fatal.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl Drop for MqttReceiver {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// Puts a message's elements into the sink (see the module's docs), or
/// why it cannot be decoded.
fn push_message(p: &rumqttc::Publish, d: &Decoding, sink: &dyn LineSink) -> Result<(), String> {
    if p.payload.len() > d.max_record_bytes {
        return Err(format!(
            "{} bytes, over the limit of {}",
            p.payload.len(),
            d.max_record_bytes
        ));
    }
    let mut elements = Column::new();
    let mut value = Vec::new();
    if d.decoder == Decoder::Text {
        let text = std::str::from_utf8(&p.payload).map_err(|e| format!("not UTF-8 text: {e}"))?;
        let lines: Vec<&str> = (text.split('\n'))
            .map(|l| l.strip_suffix('\r').unwrap_or(l))
            .collect();
        if d.shape == Shape::Value {
            sink.push_lines(&lines);
            return Ok(());
        }
        for line in lines {
            value.clear();
            let _ = rmp::encode::write_str(&mut value, line);
            shaped(p, d.shape, &value, &mut elements)?;
        }
    } else {
        d.decoder.decode_into(&p.payload, &mut value)?;
        shaped(p, d.shape, &value, &mut elements)?;
    }
    sink.push_encoded(&elements);
    Ok(())
}

/// Adds the element `shape` makes of message `p` with decoded `value`.
fn shaped(
    p: &rumqttc::Publish,
    shape: Shape,
    value: &[u8],
    into: &mut Column,
) -> Result<(), String> {
    let mut out = Vec::with_capacity(value.len() + p.topic.len() + 48);
    match shape {
        Shape::Value => out.extend_from_slice(value),
        Shape::Keyed => {
            let _ = rmp::encode::write_array_len(&mut out, 2);
            let _ = rmp::encode::write_str(&mut out, &p.topic);
            out.extend_from_slice(value);
        }
        Shape::Record => {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as i64);
            let _ = rmp::encode::write_map_len(&mut out, 5);
            let _ = rmp::encode::write_str(&mut out, "topic");
            let _ = rmp::encode::write_str(&mut out, &p.topic);
            let _ = rmp::encode::write_str(&mut out, "qos");
            let _ = rmp::encode::write_uint(&mut out, p.qos as u64);
            let _ = rmp::encode::write_str(&mut out, "retain");
            let _ = rmp::encode::write_bool(&mut out, p.retain);
            let _ = rmp::encode::write_str(&mut out, "time");
            let _ = rmp::encode::write_sint(&mut out, now);
            let _ = rmp::encode::write_str(&mut out, "value");
            out.extend_from_slice(value);
        }
    }
    into.push_encoded(&out).map_err(|e| e.to_string())
}

/// Puts a message's elements into the sink and waits until they are in the
/// write-ahead log, before the broker hears of it: `Ok(false)` if stopped
/// first. An undecodable message is the error when the policy says fail,
/// else it is left out (counted in `skipped`, reported).
fn logged(
    p: &rumqttc::Publish,
    config: &MqttConfig,
    sink: &dyn LineSink,
    stop: &AtomicBool,
    (skipped, report): (&mut u64, &dyn Fn(String)),
) -> Result<bool, String> {
    if let Err(why) = push_message(p, &config.decoding, sink) {
        let what = format!(
            "a message on topic `{}` cannot be decoded as {}: {why}",
            p.topic, config.decoding.decoder
        );
        if config.decoding.on_undecodable == Undecodable::Fail {
            return Err(what);
        }
        *skipped += 1;
        if *skipped <= 3 || skipped.is_multiple_of(1000) {
            report(format!(
                "left out {skipped} undecodable messages so far; the latest: {what}"
            ));
        }
    }
    while !sink.flush() {
        if stop.load(Ordering::SeqCst) {
            return Ok(false);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(true)
}

/// Receives until stopped: each message's lines into the sink, logged,
/// then acknowledged.
fn receive(
    config: &MqttConfig,
    sink: &dyn LineSink,
    stop: &AtomicBool,
    errors: &Mutex<Vec<String>>,
    fatal: &Mutex<Option<String>>,
) {
    let fail = |m: String| {
        tracing::error!(source = %config.name, "{m}");
        *fatal.lock().unwrap_or_else(|e| e.into_inner()) = Some(m);
    };
    let mut options = match options(
        &config.client_id,
        (&config.host, config.port),
        &config.user,
        &config.tls,
    ) {
        Ok(o) => o,
        Err(m) => return fail(m),
    };
    options
        .set_clean_session(config.clean_session)
        .set_manual_acks(true);
    let (client, mut connection) = Client::new(options, 1024);
    let report = |m: String| {
        tracing::warn!(source = %config.name, "{m}");
        let mut e = errors.lock().unwrap_or_else(|e| e.into_inner());
        if e.len() < 100 {
            e.push(m);
        }
    };
    let mut unacked = Vec::new();
    let mut skipped = 0;
    let mut backoff = Duration::from_millis(100);
    while !stop.load(Ordering::SeqCst) {
        match connection.recv_timeout(Duration::from_millis(50)) {
            Ok(Ok(Event::Incoming(Packet::ConnAck(_)))) => {
                backoff = Duration::from_millis(100);
                let topics = config
                    .topics
                    .iter()
                    .map(|t| rumqttc::SubscribeFilter::new(t.clone(), qos(config.qos)));
                if let Err(e) = client.try_subscribe_many(topics) {
                    report(format!("subscribing to {}: {e}", config.topics.join(",")));
                }
            }
            Ok(Ok(Event::Incoming(Packet::Publish(p)))) => {
                match logged(&p, config, sink, stop, (&mut skipped, &report)) {
                    Ok(true) => {}
                    Ok(false) => return,
                    Err(m) => return fail(m),
                }
                if p.qos != QoS::AtMostOnce {
                    unacked.push(p);
                }
            }
            Ok(Ok(_)) | Err(rumqttc::RecvTimeoutError::Timeout) => {}
            Ok(Err(ConnectionError::ConnectionRefused(
                code @ (ConnectReturnCode::BadUserNamePassword | ConnectReturnCode::NotAuthorized),
            ))) => {
                let (host, port) = (&config.host, config.port);
                return fail(format!(
                    "{host}:{port}: the broker refused the credentials ({code:?})"
                ));
            }
            Ok(Err(ConnectionError::Tls(e))) => {
                return fail(format!("{}:{}: TLS: {e}", config.host, config.port));
            }
            Ok(Err(e)) => {
                report(format!(
                    "cannot reach MQTT at {}:{}: {e}",
                    config.host, config.port
                ));
                let until = std::time::Instant::now() + backoff;
                while std::time::Instant::now() < until && !stop.load(Ordering::SeqCst) {
                    std::thread::sleep(Duration::from_millis(20));
                }
                backoff = (backoff * 2).min(Duration::from_secs(2));
            }
            Err(rumqttc::RecvTimeoutError::Disconnected) => return,
        }
        unacked.retain(|p| client.try_ack(p).is_err());
    }
    let _ = client.try_disconnect();
}

/// TLS to the broker.
#[derive(Debug, Clone, Default)]
pub struct MqttTls {
    /// CA certificates (PEM) to trust (`None`: the system's).
    pub ca: Option<std::path::PathBuf>,
}

/// A client's options: keep-alive, credentials, TLS.
fn options(
    client_id: &str,
    (host, port): (&str, u16),
    user: &Option<(String, String)>,
    tls: &Option<MqttTls>,
) -> std::result::Result<MqttOptions, String> {
    let mut options = MqttOptions::new(client_id, host, port);
    options.set_keep_alive(Duration::from_secs(10));
    if let Some((user, password)) = user {
        options.set_credentials(user, password);
    }
    if let Some(tls) = tls {
        // One crypto provider for the process: ring, which async-nats
        // builds already (aws-lc-rs, with post-quantum key exchange, would
        // add a C build of its own).
        #[allow(deprecated)]
        let _ = rustls::crypto::ring::default_provider().install_default();
        let config = match &tls.ca {
            Some(ca) => rumqttc::TlsConfiguration::Simple {
                ca: std::fs::read(ca)
                    .map_err(|e| format!("reading the CA {}: {e}", ca.display()))?,
                alpn: None,
                client_auth: None,
            },
            None => {
                let mut roots = rustls::RootCertStore::empty();
                for cert in rustls_native_certs::load_native_certs().certs {
                    let _ = roots.add(cert);
                }
                let config = rustls::ClientConfig::builder()
                    .with_root_certificates(roots)
                    .with_no_client_auth();
                rumqttc::TlsConfiguration::Rustls(std::sync::Arc::new(config))
            }
        };
        options.set_transport(rumqttc::Transport::tls_with_config(config));
    }
    Ok(options)
}

/// An `mqtt` output's settings.
#[derive(Debug, Clone)]
pub struct MqttSinkConfig {
    /// The broker's host and port.
    pub host: String,
    /// Its port.
    pub port: u16,
    /// The topic published to.
    pub topic: String,
    /// 0, 1 (the default) or 2.
    pub qos: u8,
    /// The client id.
    pub client_id: String,
    /// User name and password.
    pub user: Option<(String, String)>,
    /// TLS (`mqtts://`), if used.
    pub tls: Option<MqttTls>,
    /// How elements become payloads.
    pub encoder: Encoder,
    /// How long a batch waits for the broker's acknowledgements before
    /// the job fails.
    pub ack_timeout: Duration,
}

impl MqttSinkConfig {
    /// Publishes to `topic` at `host:port`, QoS 1, as client `client_id`.
    pub fn new(host: &str, port: u16, topic: &str, client_id: &str) -> MqttSinkConfig {
        MqttSinkConfig {
            host: host.to_string(),
            port,
            topic: topic.to_string(),
            qos: 1,
            client_id: client_id.to_string(),
            user: None,
            tls: None,
            encoder: Encoder::Text,
            ack_timeout: Duration::from_secs(30),
        }
    }
}

/// A connection and the thread that drives it, telling acknowledgements.
struct Publisher {
    client: Client,
    acks: mpsc::Receiver<std::result::Result<(), String>>,
    thread: Option<JoinHandle<()>>,
}

impl Publisher {
    fn connect(config: &MqttSinkConfig) -> std::result::Result<Publisher, String> {
        let options = options(
            &config.client_id,
            (&config.host, config.port),
            &config.user,
            &config.tls,
        )?;
        let (client, mut connection) = Client::new(options, 1024);
        let (tx, acks) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("sluice-mqtt-out".to_string())
            .spawn(move || {
                for event in connection.iter() {
                    let told = match event {
                        Ok(Event::Incoming(Packet::PubAck(_) | Packet::PubComp(_))) => {
                            tx.send(Ok(()))
                        }
                        Ok(Event::Outgoing(rumqttc::Outgoing::Disconnect)) => return,
                        Ok(_) => Ok(()),
                        Err(e) => {
                            let told = tx.send(Err(e.to_string()));
                            std::thread::sleep(Duration::from_millis(100));
                            told
                        }
                    };
                    if told.is_err() {
                        return;
                    }
                }
            })
            .ok();
        Ok(Publisher {
            client,
            acks,
            thread,
        })
    }
}

impl Drop for Publisher {
    fn drop(&mut self) {
        let _ = self.client.try_disconnect();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The `mqtt` output.
pub struct MqttSink {
    config: MqttSinkConfig,
    publisher: Option<Publisher>,
}

impl MqttSink {
    /// An output with these settings; it connects at its first batch.
    pub fn new(config: MqttSinkConfig) -> MqttSink {
        MqttSink {
            config,
            publisher: None,
        }
    }

    fn failed(&self, time: BatchTime, message: &str) -> Error {
        Error::io(
            format!(
                "output to mqtt topic `{}` on {}:{} at batch {time}",
                self.config.topic, self.config.host, self.config.port
            ),
            std::io::Error::other(message.to_string()),
        )
    }
}

impl Output for MqttSink {
    fn describe(&self) -> String {
        format!(
            "mqtt topic {} on {}:{} (qos {})",
            self.config.topic, self.config.host, self.config.port, self.config.qos
        )
    }

    fn emit(&mut self, time: BatchTime, _index: u64, rdd: &Rdd) -> Result<()> {
        let payloads: Vec<Vec<u8>> = (rdd.partitions.iter())
            .flat_map(|b| {
                let encoder = self.config.encoder;
                (0..b.len()).map(move |i| {
                    let key = if b.has_keys() { b.keys.get(i) } else { &[][..] };
                    encoder.encode(key, b.values.get(i))
                })
            })
            .collect();
        if payloads.is_empty() {
            return Ok(());
        }
        let config = self.config.clone();
        if self.publisher.is_none() {
            let connected = Publisher::connect(&config).map_err(|m| self.failed(time, &m))?;
            self.publisher = Some(connected);
        }
        let publisher = self.publisher.as_mut().expect("just made");
        // Acknowledgements of earlier batches' resent messages: not ours.
        while publisher.acks.try_recv().is_ok() {}
        let n = payloads.len();
        for p in payloads {
            if let Err(e) =
                publisher
                    .client
                    .publish(config.topic.as_str(), qos(config.qos), false, p)
            {
                let m = format!("publishing: {e}");
                self.publisher = None;
                return Err(self.failed(time, &m));
            }
        }
        if config.qos == 0 {
            return Ok(());
        }
        let deadline = std::time::Instant::now() + config.ack_timeout;
        let mut acked = 0;
        let mut last_error = String::new();
        while acked < n {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match publisher.acks.recv_timeout(left) {
                Ok(Ok(())) => acked += 1,
                Ok(Err(e)) => {
                    tracing::warn!(topic = %config.topic, batch = %time, "{e}; the client reconnects and resends");
                    last_error = e;
                }
                Err(_) => {
                    self.publisher = None;
                    let m = format!(
                        "{acked} of {n} messages acknowledged in {:?} (last error: {last_error})",
                        config.ack_timeout
                    );
                    return Err(self.failed(time, &m));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Keeps what a receiver pushes, lines rendered as JSON strings.
    #[derive(Default)]
    struct Kept(Mutex<Vec<serde_json::Value>>);

    impl LineSink for Kept {
        fn push_line(&self, line: &str) {
            self.0.lock().unwrap().push(serde_json::json!(line));
        }

        fn push_encoded(&self, values: &Column) {
            for v in values.iter() {
                let v = sluice_core::render::to_json(&sluice_core::render::decode(v));
                self.0.lock().unwrap().push(v);
            }
        }
    }

    fn pushed(payload: &[u8], decoding: Decoding) -> Result<Vec<serde_json::Value>, String> {
        let p = rumqttc::Publish::new("dev/7", QoS::AtLeastOnce, payload.to_vec());
        let kept = Kept::default();
        push_message(&p, &decoding, &kept)?;
        Ok(kept.0.into_inner().unwrap())
    }

    fn decoding(decoder: Decoder, shape: Shape) -> Decoding {
        Decoding {
            decoder,
            shape,
            ..Decoding::default()
        }
    }

    #[test]
    fn a_message_becomes_lines_or_one_decoded_element() {
        use serde_json::json;
        // Text: each line an element, keyed by the topic on request.
        assert_eq!(
            pushed(b"a b\r\nc", Decoding::default()),
            Ok(vec![json!("a b"), json!("c")])
        );
        assert_eq!(
            pushed(b"a\nb", decoding(Decoder::Text, Shape::Keyed)),
            Ok(vec![json!(["dev/7", "a"]), json!(["dev/7", "b"])])
        );
        // JSON: the whole payload one element.
        let reading = br#"{"t": 21.5, "id": "d7"}"#;
        assert_eq!(
            pushed(reading, decoding(Decoder::Json, Shape::Value)),
            Ok(vec![json!({"t": 21.5, "id": "d7"})])
        );
        assert_eq!(
            pushed(reading, decoding(Decoder::Json, Shape::Keyed)),
            Ok(vec![json!(["dev/7", {"t": 21.5, "id": "d7"}])])
        );
        let record = pushed(b"\x01\x02", decoding(Decoder::Bytes, Shape::Record)).unwrap();
        assert_eq!(record.len(), 1);
        let r = &record[0];
        assert_eq!(
            (&r["topic"], &r["qos"], &r["retain"], &r["value"]),
            (&json!("dev/7"), &json!(1), &json!(false), &json!([1, 2]))
        );
        assert!(r["time"].as_i64().unwrap() > 1_700_000_000_000, "{r}");
        // What cannot be decoded says why, and nothing of it is pushed.
        let err = pushed(b"{not json", decoding(Decoder::Json, Shape::Value)).unwrap_err();
        assert!(err.starts_with("not JSON"), "{err}");
        let err = pushed(b"\xff\xfe", Decoding::default()).unwrap_err();
        assert!(err.starts_with("not UTF-8"), "{err}");
        let small = Decoding {
            max_record_bytes: 4,
            ..Decoding::default()
        };
        assert_eq!(
            pushed(b"12345", small),
            Err("5 bytes, over the limit of 4".to_string())
        );
    }
}
