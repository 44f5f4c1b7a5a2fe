//! A Sluice receiver plugin: lines read from a TCP server, one record each
//! (a line protocol, as `socket_text_stream` reads, but in the sandbox).
//! Build it with `sluice plugin build` and use it in a job spec as a source,
//! granting it the server's address:
//!
//! ```toml
//! [plugins.lines]
//! path = "target/wasm32-wasip2/release/lines.wasm"
//! connect = ["127.0.0.1:9999"]
//!
//! [sources.events]
//! type = "receiver"
//! function = "lines.tcp_lines"
//! settings = { address = "127.0.0.1:9999" }
//! ```

use sluice_sdk as sluice;
use std::io::Read;
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// A connection to a line server and the partial line read so far.
pub struct TcpLines {
    address: SocketAddr,
    max_line_bytes: usize,
    conn: Option<TcpStream>,
    pending: Vec<u8>,
}

impl TcpLines {
    /// Takes up to `max` whole lines out of what was read.
    fn take_lines(&mut self, max: usize) -> Vec<String> {
        let mut lines = Vec::new();
        let mut start = 0;
        while lines.len() < max {
            let Some(end) = self.pending[start..].iter().position(|&b| b == b'\n') else {
                break;
            };
            let line = &self.pending[start..start + end];
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            lines.push(String::from_utf8_lossy(line).into_owned());
            start += end + 1;
        }
        self.pending.drain(..start);
        lines
    }
}

impl sluice::Receiver for TcpLines {
    fn poll(&mut self, max: usize, wait: Duration) -> Result<Vec<String>, String> {
        let ready = self.take_lines(max);
        if !ready.is_empty() {
            return Ok(ready);
        }
        if self.pending.len() > self.max_line_bytes {
            return Err(format!("a line longer than {} bytes", self.max_line_bytes));
        }
        let conn = match &mut self.conn {
            Some(c) => c,
            None => {
                let c = TcpStream::connect_timeout(&self.address, Duration::from_secs(5))
                    .map_err(|e| format!("connecting to {}: {e}", self.address))?;
                sluice::info!("connected to {}", self.address);
                self.conn.insert(c)
            }
        };
        conn.set_read_timeout(Some(wait.max(Duration::from_millis(1))))
            .map_err(|e| format!("setting a read timeout: {e}"))?;
        let mut buf = [0u8; 64 << 10];
        match conn.read(&mut buf) {
            Ok(0) => {
                self.conn = None;
                Err(format!("{} closed the connection", self.address))
            }
            Ok(n) => {
                self.pending.extend_from_slice(&buf[..n]);
                Ok(self.take_lines(max))
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                Ok(Vec::new())
            }
            Err(e) => {
                self.conn = None;
                Err(format!("reading from {}: {e}", self.address))
            }
        }
    }

    fn stop(&mut self) {
        self.conn = None;
    }
}

/// Lines read from a TCP server (`address` = ip:port; `max_line_bytes`, default 1 MiB).
#[sluice::receiver]
fn tcp_lines(settings: &sluice::Settings) -> Result<TcpLines, String> {
    let address = settings.require("address")?;
    Ok(TcpLines {
        address: address
            .parse()
            .map_err(|e| format!("the setting `address` = `{address}`: {e}"))?,
        max_line_bytes: settings.parse_or("max_line_bytes", 1 << 20)?,
        conn: None,
        pending: Vec::new(),
    })
}

sluice::export!(tcp_lines);

#[cfg(test)]
mod tests {
    use super::*;
    use sluice::Receiver;
    use std::io::Write;

    fn settings(pairs: &[(&str, &str)]) -> sluice::Settings {
        sluice::Settings::new(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    #[test]
    fn reads_whole_lines_from_a_server() {
        let server = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let address = server.local_addr().unwrap().to_string();
        let mut r = tcp_lines(&settings(&[("address", &address)])).unwrap();
        let feeder = std::thread::spawn(move || {
            let (mut c, _) = server.accept().unwrap();
            c.write_all(b"a b\r\nc").unwrap();
            c.flush().unwrap();
            std::thread::sleep(Duration::from_millis(100));
            c.write_all(b"\nd\n").unwrap();
        });
        let mut got = Vec::new();
        while got.len() < 3 {
            got.extend(r.poll(10, Duration::from_millis(50)).unwrap());
        }
        feeder.join().unwrap();
        assert_eq!(got, ["a b", "c", "d"]);
    }

    #[test]
    fn a_bad_address_names_the_setting() {
        let e = tcp_lines(&settings(&[("address", "nowhere")]))
            .err()
            .unwrap();
        assert!(e.starts_with("the setting `address` = `nowhere`"), "{e}");
        let e = tcp_lines(&settings(&[])).err().unwrap();
        assert_eq!(e, "the setting `address` is required");
    }
}
