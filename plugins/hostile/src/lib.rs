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
    environment
);
