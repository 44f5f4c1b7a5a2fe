//! Custom receivers: a plugin's own sources (Spark's Receiver API), run by
//! the host on a receiver thread of their own.
//!
//! A receiver is a type implementing [`Receiver`] and a function marked
//! `#[sluice::receiver]` that starts one from the job's [`Settings`]:
//!
//! ```
//! use sluice_sdk as sluice;
//! use std::time::Duration;
//!
//! /// Counts up from `start` (a setting), `step` at a time.
//! struct Counter { next: i64, step: i64 }
//!
//! impl sluice::Receiver for Counter {
//!     fn poll(&mut self, max: usize, _wait: Duration) -> Result<Vec<String>, String> {
//!         let out = (0..max.min(100)).map(|i| (self.next + i as i64 * self.step).to_string()).collect();
//!         self.next += max.min(100) as i64 * self.step;
//!         Ok(out)
//!     }
//! }
//!
//! /// Counts up.
//! #[sluice::receiver]
//! fn counter(settings: &sluice::Settings) -> Result<Counter, String> {
//!     Ok(Counter { next: settings.parse_or("start", 0)?, step: settings.parse_or("step", 1)? })
//! }
//!
//! sluice::export!(counter);
//! # fn main() {
//! #     let f = &__sluice_plugin_functions()[0];
//! #     assert_eq!((f.name, f.kind), ("counter", sluice::Kind::Receiver));
//! #     let sluice::Call::Receiver(start) = f.call else { panic!() };
//! #     let mut r = start(&sluice::Settings::new(vec![("step".into(), "2".into())])).ok().unwrap();
//! #     assert_eq!(r.poll(3, Duration::ZERO).unwrap(), ["0", "2", "4"]);
//! # }
//! ```
//!
//! A job uses it as a source: `[sources.numbers] type = "receiver"`,
//! `function = "myplugin.counter"`, `settings = { step = 2 }`. The host
//! polls it whenever it has room for more records (its backpressure and the
//! source's rate limit hold a fast receiver back), and calls
//! [`Receiver::ack`] once what the polls returned is stored (in the
//! write-ahead log when the job checkpoints): a reliable receiver
//! acknowledges to its source there, so that a crash before it makes the
//! source send the records again.
//!
//! Each call runs under the plugin's deadline and memory cap. Network access
//! is `std::net::TcpStream` to the endpoints the job grants the plugin
//! (`connect = ["127.0.0.1:6379"]`); any other address is refused. A poll
//! should not block longer than its `wait`: set read timeouts.

use crate::run::{CallError, ErrorKind};
use std::time::Duration;

/// A running receiver: what `#[sluice::receiver]` functions start.
pub trait Receiver: 'static {
    /// What arrived: at most `max` records, in order, waiting at most
    /// `wait` for the first (an empty `Vec`: nothing yet). An `Err` is
    /// reported and the poll retried after a pause.
    fn poll(&mut self, max: usize, wait: Duration) -> Result<Vec<String>, String>;

    /// Every record the polls so far returned is stored: acknowledge them
    /// to the source (a reliable receiver). By default nothing to do.
    fn ack(&mut self) -> Result<(), String> {
        Ok(())
    }

    /// Stops receiving: close connections. By default nothing to do.
    fn stop(&mut self) {}
}

/// The job's settings of a receiver source (its `settings` table), values
/// as text.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Settings(Vec<(String, String)>);

impl Settings {
    /// Settings from name-value pairs.
    pub fn new(pairs: Vec<(String, String)>) -> Self {
        Settings(pairs)
    }

    /// The value of `name`, if set.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The value of `name`, or an error saying that the setting is missing.
    pub fn require(&self, name: &str) -> Result<&str, String> {
        self.get(name)
            .ok_or_else(|| format!("the setting `{name}` is required"))
    }

    /// The value of `name` parsed as a `T`, or `default` when unset; an
    /// error names the setting and its value.
    pub fn parse_or<T: std::str::FromStr>(&self, name: &str, default: T) -> Result<T, String>
    where
        T::Err: std::fmt::Display,
    {
        match self.get(name) {
            None => Ok(default),
            Some(v) => v
                .parse()
                .map_err(|e| format!("the setting `{name}` = `{v}`: {e}")),
        }
    }

    /// Every setting, in the job's order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(n, v)| (n.as_str(), v.as_str()))
    }
}

/// What a `#[sluice::receiver]` function's adapter does: starts it, its
/// error an `invalid-input` error (a missing or bad setting stops the job).
#[doc(hidden)]
pub fn start<R: Receiver, E: std::fmt::Display>(
    settings: &Settings,
    f: impl FnOnce(&Settings) -> Result<R, E>,
) -> Result<Box<dyn Receiver>, CallError> {
    f(settings)
        .map(|r| Box::new(r) as Box<dyn Receiver>)
        .map_err(|e| CallError {
            kind: ErrorKind::InvalidInput,
            message: e.to_string(),
            element: None,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_are_found_parsed_and_missing_ones_named() {
        let s = Settings::new(vec![
            ("host".into(), "127.0.0.1".into()),
            ("port".into(), "x".into()),
        ]);
        assert_eq!(s.get("host"), Some("127.0.0.1"));
        assert_eq!(
            s.require("stream").unwrap_err(),
            "the setting `stream` is required"
        );
        assert_eq!(s.parse_or("count", 5u32), Ok(5));
        let e = s.parse_or("port", 0u16).unwrap_err();
        assert!(e.starts_with("the setting `port` = `x`: "), "{e}");
        assert_eq!(s.iter().count(), 2);
    }
}
