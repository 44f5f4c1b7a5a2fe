//! Sources: where batches come from. A receiver thread (socket) fills a
//! [`BlockBuffer`]; at each batch time the engine seals what arrived into the
//! batch's partitions. Replayable sources (queue) produce their batch directly.

pub(crate) mod file;
pub mod generator;
pub mod queue;
pub mod socket;

use crate::error::Result;
use crate::rdd::Rdd;
use crate::time::BatchTime;
use sluice_sdk::Column;
use std::sync::{Arc, Mutex};

/// A source of batches for one input stream.
pub(crate) trait Source: Send {
    /// Starts receiving (spawns receiver threads). Called once before the first batch.
    fn start(&mut self) -> Result<()> {
        Ok(())
    }
    /// The data of the batch at `time`: what arrived in `(time - interval, time]`.
    fn next_batch(&mut self, time: BatchTime) -> Result<Rdd>;
    /// Stops receiving.
    fn stop(&mut self) {}
    /// For finite sources: how many batches they hold.
    fn finite_batches(&self) -> Option<u64> {
        None
    }
    /// Where the source stands after its last batch, for checkpoints
    /// (`None`: it cannot resume from a position).
    fn position(&self) -> Option<Vec<u8>> {
        None
    }
    /// Resumes at a position [`Source::position`] returned (before `start`).
    fn restore(&mut self, _position: &[u8]) -> Result<()> {
        Ok(())
    }
}

/// Lines received but not yet sealed into a batch, already encoded.
#[derive(Debug, Clone, Default)]
pub struct BlockBuffer {
    inner: Arc<Mutex<Column>>,
}

impl BlockBuffer {
    /// Takes everything received so far, leaving the buffer empty.
    pub fn seal(&self) -> Column {
        std::mem::take(&mut *self.inner.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

impl socket::LineSink for BlockBuffer {
    fn push_line(&self, line: &str) {
        let _ = self
            .inner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push_str(line);
    }
}

/// `socket_text_stream`: a TCP client receiving lines (see [`socket`]).
pub(crate) struct SocketSource {
    config: Option<socket::SocketConfig>,
    receiver: Option<socket::SocketReceiver>,
    buffer: BlockBuffer,
    partitions: usize,
}

impl SocketSource {
    pub(crate) fn new(config: socket::SocketConfig, partitions: usize) -> Self {
        SocketSource {
            config: Some(config),
            receiver: None,
            buffer: BlockBuffer::default(),
            partitions,
        }
    }
}

impl Source for SocketSource {
    fn start(&mut self) -> Result<()> {
        if let Some(config) = self.config.take() {
            let what = format!(
                "starting the socket receiver for {}:{}",
                config.host, config.port
            );
            let r = socket::SocketReceiver::start(config, Arc::new(self.buffer.clone()))
                .map_err(|e| crate::error::Error::io(what, e))?;
            self.receiver = Some(r);
        }
        Ok(())
    }

    fn next_batch(&mut self, _time: BatchTime) -> Result<Rdd> {
        Ok(Rdd::from_column(&self.buffer.seal(), self.partitions))
    }

    fn stop(&mut self) {
        if let Some(r) = self.receiver.take() {
            r.stop();
        }
    }
}
