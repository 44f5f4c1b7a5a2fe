//! A real MQTT broker for the tests: Debian's `mosquitto` on an ephemeral
//! loopback port (plain, with a password file, or with a TLS listener too),
//! stopped by its pid.

use crate::brokers::free_port;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A `mosquitto` of the test's own on 127.0.0.1 (Debian's package): anonymous
/// clients, queued messages for offline persistent sessions unbounded.
pub struct Mosquitto {
    /// The server process (`None`: a handle to one started elsewhere).
    pub child: Option<Child>,
    /// Its port.
    pub port: u16,
}

impl Mosquitto {
    /// Starts one with its config in `dir`.
    pub fn start(dir: &Path) -> Mosquitto {
        Mosquitto::start_with(dir, None)
    }

    /// Starts one that admits only `user` with `password` (when given).
    pub fn start_with(dir: &Path, user: Option<(&str, &str)>) -> Mosquitto {
        Mosquitto::start_on(dir, free_port(), user)
    }

    /// [`Mosquitto::start_with`] on a given port.
    pub fn start_on(dir: &Path, port: u16, user: Option<(&str, &str)>) -> Mosquitto {
        Mosquitto::start_with_listeners(dir, port, user, "")
    }

    /// Starts one with a second listener, on the port returned, that
    /// speaks TLS with a certificate for 127.0.0.1 signed by a CA made for
    /// the test (`openssl`), whose certificate is `dir/ca.pem`.
    pub fn start_tls(dir: &Path) -> (Mosquitto, u16) {
        crate::tls::test_certificates(dir);
        let tls_port = free_port();
        let tls = format!(
            // Run as root, mosquitto would drop to its own user, who
            // cannot read the test's key in its private temp dir.
            "user root\nlistener {tls_port} 127.0.0.1\ncafile {}\ncertfile {}\nkeyfile {}\n",
            dir.join("ca.pem").display(),
            dir.join("server.pem").display(),
            dir.join("server.key").display()
        );
        let m = Mosquitto::start_with_listeners(dir, free_port(), None, &tls);
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", tls_port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "mosquitto's TLS listener did not answer on {tls_port}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        (m, tls_port)
    }

    fn start_with_listeners(
        dir: &Path,
        port: u16,
        user: Option<(&str, &str)>,
        more: &str,
    ) -> Mosquitto {
        let conf = dir.join("mosquitto.conf");
        let mut text = format!(
            "listener {port} 127.0.0.1\npersistence false\nmax_queued_messages 0\nmax_inflight_messages 100\n"
        );
        match user {
            None => text.push_str("allow_anonymous true\n"),
            Some((u, p)) => {
                let file = dir.join("mosquitto.passwd");
                let status = Command::new("mosquitto_passwd")
                    .args(["-b", "-c"])
                    .arg(&file)
                    .args([u, p])
                    .status()
                    .expect("mosquitto_passwd");
                assert!(status.success(), "mosquitto_passwd");
                text.push_str(&format!(
                    "allow_anonymous false\npassword_file {}\n",
                    file.display()
                ));
            }
        }
        text.push_str(more);
        std::fs::write(&conf, text).expect("mosquitto.conf");
        let bin = std::env::var_os("SLUICE_MOSQUITTO")
            .map_or_else(|| PathBuf::from("/usr/sbin/mosquitto"), PathBuf::from);
        assert!(
            bin.exists(),
            "mosquitto is not installed at {}: run scripts/test (or scripts/brokers), which installs it",
            bin.display()
        );
        let child = Command::new(bin)
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting mosquitto");
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "mosquitto did not answer on {port}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Mosquitto {
            child: Some(child),
            port,
        }
    }

    /// Kills it (SIGKILL, by its pid) and waits for it.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Publishes every payload on `topic` at QoS 1, returning once the
    /// broker acknowledged them all.
    pub fn publish(&self, topic: &str, payloads: impl IntoIterator<Item = Vec<u8>>) {
        use rumqttc::{Client, Event, MqttOptions, Packet, QoS};
        let id = format!("test-publisher-{}", free_port());
        let (client, mut connection) =
            Client::new(MqttOptions::new(id, "127.0.0.1", self.port), 64);
        let payloads: Vec<Vec<u8>> = payloads.into_iter().collect();
        let n = payloads.len();
        let topic = topic.to_string();
        let sender = std::thread::spawn(move || {
            for p in payloads {
                client
                    .publish(topic.as_str(), QoS::AtLeastOnce, false, p)
                    .expect("publish");
            }
            client
        });
        let mut acked = 0;
        for event in connection.iter() {
            if let Ok(Event::Incoming(Packet::PubAck(_))) = event {
                acked += 1;
                if acked == n {
                    break;
                }
            }
        }
        let client = sender.join().expect("publisher");
        let _ = client.disconnect();
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        self.kill();
    }
}
