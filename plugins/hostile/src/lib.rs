//! Hostile plugins: each function breaks one sandbox promise on purpose, so
//! the tests can show the host contains it. Each acts only on elements that
//! ask for it (`"boom"`, `"spin"`, …) and passes other elements through, so a
//! test can show the next batch is served normally.

use sluice_sdk as sluice;

/// Panics on the element `"boom"`: a trap with a message.
#[sluice::map]
fn trap(s: &str) -> String {
    if s == "boom" {
        panic!("boom requested by the input");
    }
    s.to_string()
}

/// Panics on `"flaky"` on the first attempt only: the host's retry succeeds.
#[sluice::map]
fn flaky(s: &str) -> String {
    if s == "flaky" && sluice::context().attempt == 0 {
        panic!("flaky element on attempt 0");
    }
    s.to_string()
}

/// Loops for ever on `"spin"`: the per-call deadline must stop it.
#[sluice::map]
fn spin(s: &str) -> String {
    if s == "spin" {
        let mut x: u64 = 0;
        loop {
            x = std::hint::black_box(x.wrapping_add(1));
        }
    }
    s.to_string()
}

/// Works hard, legitimately, on `"burn:N"`: N million loop iterations
/// (a tenant using more than its CPU share).
#[sluice::map]
fn burn(s: &str) -> String {
    let n: u64 = s
        .strip_prefix("burn:")
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    let mut x: u64 = 0;
    for _ in 0..n * 1_000_000 {
        x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
    }
    format!("{s} {}", x % 10)
}

/// Allocates without bound on `"bomb"`: the memory cap must stop it.
#[sluice::map]
fn bomb(s: &str) -> String {
    if s == "bomb" {
        let mut hoard: Vec<Vec<u8>> = Vec::new();
        loop {
            let mut block = vec![0u8; 16 << 20];
            block[0] = 1;
            hoard.push(std::hint::black_box(block));
        }
    }
    s.to_string()
}

/// Emits 20 MiB of output on `"flood"`: the output cap must stop it.
#[sluice::flat_map]
fn flood(s: &str) -> Vec<String> {
    if s == "flood" {
        let chunk = "x".repeat(1 << 20);
        return (0..20).map(|_| chunk.clone()).collect();
    }
    vec![s.to_string()]
}

/// Logs every element, then a flood of lines on `"chatty"`: the log caps must hold.
#[sluice::map]
fn chatty(s: &str) -> String {
    sluice::info!("saw {s}");
    if s == "chatty" {
        let long = "y".repeat(10_000);
        for _ in 0..1000 {
            sluice::warn!("{long}");
        }
    }
    s.to_string()
}

/// Tries to read the file named by the element: no directory is granted, so it must fail.
#[sluice::map]
fn snoop(path: &str) -> Result<String, String> {
    std::fs::read_to_string(path).map_err(|e| format!("cannot read {path}: {e}"))
}

/// Tries to write a file at the path in the element: only inside a granted directory.
#[sluice::map]
fn scribble(path: &str) -> Result<String, String> {
    std::fs::write(path, "scribbled")
        .map(|()| format!("wrote {path}"))
        .map_err(|e| format!("cannot write {path}: {e}"))
}

/// Tries to connect to the `host:port` in the element: no network is granted, so it must fail.
#[sluice::map]
fn dial(addr: &str) -> Result<String, String> {
    std::net::TcpStream::connect(addr)
        .map(|_| format!("connected to {addr}"))
        .map_err(|e| format!("cannot connect to {addr}: {e}"))
}

/// Counts the environment variables and arguments it can see (none are granted).
#[sluice::map]
fn environment(_s: &str) -> i64 {
    (std::env::vars().count() + std::env::args().count()) as i64
}

/// A receiver that panics on every third poll (after giving two batches
/// of records `crash-N`): each panic discards its instance.
pub struct Crashing {
    polls: u64,
}

impl sluice::Receiver for Crashing {
    fn poll(&mut self, _max: usize, wait: std::time::Duration) -> Result<Vec<String>, String> {
        self.polls += 1;
        if self.polls.is_multiple_of(3) {
            panic!("receiver crash requested on poll {}", self.polls);
        }
        std::thread::sleep(wait);
        Ok(vec![format!("crash-{}", self.polls)])
    }
}

/// Gives one record, then panics every third poll.
#[sluice::receiver]
fn crashing(_settings: &sluice::Settings) -> Result<Crashing, String> {
    Ok(Crashing { polls: 0 })
}

/// A receiver that gives `before`, then loops for ever in its next poll:
/// the deadline must stop it.
pub struct Looping {
    polled: bool,
}

impl sluice::Receiver for Looping {
    fn poll(&mut self, _max: usize, _wait: std::time::Duration) -> Result<Vec<String>, String> {
        if !std::mem::replace(&mut self.polled, true) {
            return Ok(vec!["before".to_string()]);
        }
        let mut x: u64 = 0;
        loop {
            x = std::hint::black_box(x.wrapping_add(1));
        }
    }
}

/// Gives `before`, then spins.
#[sluice::receiver]
fn looping(_settings: &sluice::Settings) -> Result<Looping, String> {
    Ok(Looping { polled: false })
}

/// A receiver that returns as many records as it may on every poll,
/// without waiting: only the host's backpressure holds it back.
pub struct Flooding {
    line: String,
}

impl sluice::Receiver for Flooding {
    fn poll(&mut self, max: usize, _wait: std::time::Duration) -> Result<Vec<String>, String> {
        Ok(vec![self.line.clone(); max])
    }
}

/// Floods with `line` (a setting, default `flood`).
#[sluice::receiver]
fn flooding(settings: &sluice::Settings) -> Result<Flooding, String> {
    Ok(Flooding {
        line: settings.get("line").unwrap_or("flood").to_string(),
    })
}

sluice::export!(
    trap,
    flaky,
    spin,
    burn,
    bomb,
    flood,
    chatty,
    snoop,
    scribble,
    dial,
    environment,
    crashing,
    looping,
    flooding
);
