//! `generator`: synthetic lines for demos and benchmarks — each batch gets
//! `lines_per_second × interval` lines of `words_per_line` words drawn from a
//! vocabulary by a seeded generator, so a run is reproducible.

use super::Source;
use crate::error::Result;
use crate::rdd::Rdd;
use crate::time::BatchTime;
use sluice_sdk::Column;
use std::time::Duration;

/// Settings of a generator source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GeneratorConfig {
    /// Lines per second of stream time.
    pub lines_per_second: u64,
    /// Words in each line.
    pub words_per_line: usize,
    /// The words to draw from; empty: a built-in 1000-word vocabulary.
    pub vocabulary: Vec<String>,
    /// Seed of the generator.
    pub seed: u64,
}

impl Default for GeneratorConfig {
    fn default() -> Self {
        GeneratorConfig {
            lines_per_second: 1000,
            words_per_line: 10,
            vocabulary: Vec::new(),
            seed: 42,
        }
    }
}

pub(crate) struct GeneratorSource {
    vocabulary: Vec<String>,
    lines_per_batch: usize,
    words_per_line: usize,
    state: u64,
    /// The state the last batch started from.
    batch_start: u64,
    partitions: usize,
}

impl GeneratorSource {
    pub(crate) fn new(config: GeneratorConfig, interval: Duration, partitions: usize) -> Self {
        let vocabulary = if config.vocabulary.is_empty() {
            (0..1000).map(|i| format!("w{i:03}")).collect()
        } else {
            config.vocabulary
        };
        let lines_per_batch =
            (config.lines_per_second as u128 * interval.as_millis() / 1000) as usize;
        GeneratorSource {
            vocabulary,
            lines_per_batch,
            words_per_line: config.words_per_line.max(1),
            state: config.seed | 1,
            batch_start: config.seed | 1,
            partitions,
        }
    }

    fn next(&mut self) -> u64 {
        // xorshift64: fast, seeded, good enough to pick words.
        self.state ^= self.state << 13;
        self.state ^= self.state >> 7;
        self.state ^= self.state << 17;
        self.state
    }
}

impl Source for GeneratorSource {
    fn describe(&self) -> String {
        format!("generator, {} lines a batch", self.lines_per_batch)
    }
    fn partitions(&self) -> usize {
        self.partitions
    }
    fn next_batch(&mut self, _time: BatchTime) -> Result<Rdd> {
        self.batch_start = self.state;
        let mut lines = Column::with_capacity(
            self.lines_per_batch,
            self.lines_per_batch * self.words_per_line * 6,
        );
        let mut line = String::new();
        for _ in 0..self.lines_per_batch {
            line.clear();
            for w in 0..self.words_per_line {
                if w > 0 {
                    line.push(' ');
                }
                let i = (self.next() % self.vocabulary.len() as u64) as usize;
                line.push_str(&self.vocabulary[i]);
            }
            let _ = lines.push_str(&line);
        }
        Ok(Rdd::from_received(&lines, self.partitions))
    }

    /// The generator's state: a resumed job goes on with the same sequence.
    fn position(&self) -> Option<Vec<u8>> {
        Some(self.state.to_le_bytes().to_vec())
    }

    fn restore(&mut self, position: &[u8]) -> Result<()> {
        self.state = <[u8; 8]>::try_from(position)
            .map(u64::from_le_bytes)
            .map_err(|_| {
                crate::error::Error::Internal("a generator position is 8 bytes".to_string())
            })?;
        Ok(())
    }

    /// A batch re-run after a crash starts from the state it started from.
    fn batch_record(&self) -> Vec<u8> {
        self.batch_start.to_le_bytes().to_vec()
    }

    fn replay_batch(&mut self, time: BatchTime, record: &[u8]) -> Result<Rdd> {
        if let Ok(b) = <[u8; 8]>::try_from(record) {
            self.state = u64::from_le_bytes(b);
        }
        self.next_batch(time)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generates_the_rate_reproducibly() {
        let config = GeneratorConfig {
            lines_per_second: 50,
            words_per_line: 3,
            vocabulary: vec!["a".into(), "b".into()],
            seed: 7,
        };
        let mut g = GeneratorSource::new(config.clone(), Duration::from_millis(200), 2);
        let a = g.next_batch(BatchTime(0)).unwrap();
        assert_eq!(a.count(), 10);
        assert_eq!(a.partitions.len(), 2);
        for (_, v) in a.elements() {
            let line: String = rmp_serde::from_slice(v).unwrap();
            assert_eq!(line.split(' ').count(), 3);
            assert!(line.split(' ').all(|w| w == "a" || w == "b"));
        }
        let mut again = GeneratorSource::new(config, Duration::from_millis(200), 2);
        assert_eq!(again.next_batch(BatchTime(0)).unwrap(), a);
    }
}
