//! End-to-end tests: real plugins built for wasm32-wasip2, real jobs run
//! through the `sluice` CLI and through the library.

mod chain;
mod checkpoint;
mod cli;
mod golden;
mod guests;
mod hostile;
mod invariance;
mod kafka;
mod keyed;
mod mqtt;
mod nats;
mod objects;
mod programs;
mod python;
mod receivers;
mod runtime;
mod serve;
mod sink;
mod socket;
mod swap;
mod tenants;
mod ui;
mod window;
