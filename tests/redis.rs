//! A real Redis for the tests: Debian's `redis-server` on an ephemeral
//! loopback port, nothing persisted, stopped by its pid; and the few
//! commands the tests send it (RESP over a `TcpStream`).

use crate::brokers::free_port;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// A `redis-server` of the test's own on 127.0.0.1.
pub struct RedisServer {
    child: Option<Child>,
    /// Its port.
    pub port: u16,
    dir: PathBuf,
}

impl RedisServer {
    /// Starts one, its log in `dir`.
    pub fn start(dir: &Path) -> RedisServer {
        let mut s = RedisServer {
            child: None,
            port: free_port(),
            dir: dir.to_path_buf(),
        };
        s.restart();
        s
    }

    /// `127.0.0.1:PORT`.
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Starts it again (after [`RedisServer::kill`]) on the same port
    /// (empty: nothing is persisted).
    pub fn restart(&mut self) {
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port"])
            .arg(self.port.to_string())
            .args(["--save", "", "--appendonly", "no", "--dir"])
            .arg(&self.dir)
            .stdout(std::fs::File::create(self.dir.join("redis.log")).expect("redis log"))
            .stderr(Stdio::null())
            .spawn()
            .expect(
                "starting redis-server (Debian's redis-server package; scripts/test installs it)",
            );
        self.child = Some(child);
        let port = self.port;
        crate::brokers::wait_for_server(
            self.child.as_mut(),
            &format!("redis-server on {port}"),
            &self.dir.join("redis.log"),
            || {
                TcpStream::connect(("127.0.0.1", port)).is_ok_and(|mut c| {
                    matches!(command(&mut c, &[b"PING"]).as_deref(), Ok("+PONG"))
                })
            },
        );
    }

    /// Stops it by its pid.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// How many entries of `stream` consumer group `group` has delivered
    /// and not had acknowledged (`XPENDING`).
    pub fn pending(&self, stream: &str, group: &str) -> u64 {
        let mut c = TcpStream::connect(("127.0.0.1", self.port)).expect("connecting to redis");
        let first =
            command(&mut c, &[b"XPENDING", stream.as_bytes(), group.as_bytes()]).expect("XPENDING");
        let mut r = BufReader::new(c);
        assert!(first.starts_with('*'), "XPENDING: {first}");
        let count = read_line(&mut r);
        count
            .strip_prefix(':')
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("XPENDING: {count}"))
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Appends one entry `{field: value}` per value to `stream` (`XADD`) of
/// the server on `port`, in one pipelined write.
pub fn xadd(port: u16, stream: &str, field: &str, values: &[Vec<u8>]) {
    let mut c = TcpStream::connect(("127.0.0.1", port)).expect("connecting to redis");
    let mut out = Vec::new();
    for v in values {
        encode(
            &[b"XADD", stream.as_bytes(), b"*", field.as_bytes(), v],
            &mut out,
        );
    }
    c.write_all(&out).expect("XADD");
    let mut r = BufReader::new(c);
    for _ in values {
        let reply = read_line(&mut r);
        assert!(reply.starts_with('$'), "XADD: {reply}");
        read_line(&mut r);
    }
}

fn encode(args: &[&[u8]], out: &mut Vec<u8>) {
    out.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
    for a in args {
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
}

fn read_line(r: &mut impl BufRead) -> String {
    let mut line = String::new();
    r.read_line(&mut line).expect("reading from redis");
    line.trim_end().to_string()
}

/// Sends one command and returns the first line of its reply.
fn command(c: &mut TcpStream, args: &[&[u8]]) -> std::io::Result<String> {
    let mut out = Vec::new();
    encode(args, &mut out);
    c.write_all(&out)?;
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while !line.ends_with(b"\r\n") {
        if std::io::Read::read(c, &mut byte)? == 0 {
            break;
        }
        line.push(byte[0]);
    }
    Ok(String::from_utf8_lossy(&line).trim_end().to_string())
}
