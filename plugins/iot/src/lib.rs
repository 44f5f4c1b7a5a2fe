//! The IoT device log of the socket lesson's end project: lines
//! `<timestamp> <device> power on|off`, parsed in the sandbox and counted
//! per device by the host (`examples/iot.toml`).

use sluice_sdk as sluice;

/// Parses `<timestamp> <device> power on|off` into `(device, action)`.
fn parse_line(line: &str) -> Option<(&str, &str)> {
    let mut fields = line.split_whitespace();
    let (_ts, device, what, state) = (
        fields.next()?,
        fields.next()?,
        fields.next()?,
        fields.next()?,
    );
    if fields.next().is_some() || what != "power" || !matches!(state, "on" | "off") {
        return None;
    }
    Some((device, state))
}

/// `(device, "on"|"off")` for a well-formed line; a malformed line is logged
/// (a warning naming the line) and dropped, so one bad device cannot fail the batch.
#[sluice::flat_map]
fn parse(line: &str) -> Option<(&str, &str)> {
    let parsed = parse_line(line);
    if parsed.is_none() && !line.trim().is_empty() {
        sluice::warn!("not a device action, skipped: {line:?}");
    }
    parsed
}

/// `(device, 1)` for every action of a well-formed line (malformed lines
/// are logged and dropped, as by `parse`).
#[sluice::flat_map]
fn actions(line: &str) -> Option<(&str, i64)> {
    parse(line).map(|(device, _)| (device, 1))
}

/// Adds two counts.
#[sluice::reduce]
fn add(a: i64, b: i64) -> i64 {
    a + b
}

/// Takes a count back out (the inverse of `add`, for incremental windows).
#[sluice::inverse_reduce]
fn subtract(a: i64, b: i64) -> i64 {
    a - b
}

/// Keeps devices with at least one action (drops those whose windowed count fell to 0).
#[sluice::filter]
fn active(pair: (&str, i64)) -> bool {
    pair.1 > 0
}

sluice::export!(parse, actions, add, subtract, active);
