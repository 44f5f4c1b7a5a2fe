//! DStream: windows and keyed state.

use super::op::{
    Rekey, Rekeyed, StateSnapshots, UpdateState, Window, Windowed, WithState, count_add,
    count_subtract,
};
use super::{DStream, lock};
use crate::func::Func;
use crate::ops::window::{MapWithState, StateByKey, WindowBuffer, WindowedReduce};
use crate::rdd::Rdd;
use sluice_sdk::Batch;
use std::time::Duration;

impl DStream {
    /// `window(length, slide)`: every `slide`, the elements of the last
    /// `length` (the parent batches with times in `(T - length, T]`; the
    /// first windows are partial). Both must be multiples of this stream's
    /// slide, else `run` fails naming the stream and the durations.
    pub fn window(&self, length: Duration, slide: Duration) -> DStream {
        self.derive_window(
            "window",
            Window {
                length: length.as_millis() as i64,
                buffer: WindowBuffer::default(),
            },
            length,
            slide,
        )
    }

    /// `reduce_by_key_and_window(f, inverse, length, slide, partitions,
    /// filter)`: per key, the values of the last `length` combined with `f`,
    /// every `slide`, in `partitions` partitions.
    ///
    /// Without `inverse` each window is reduced anew (an empty window gives
    /// no element). With `inverse` (a `(acc, old) -> acc` function undoing
    /// `f`) the window is kept and updated incrementally: each slide costs
    /// calls for the batches that enter and leave, not for the whole window,
    /// and a key whose value falls back to the identity stays unless
    /// `filter` (a filter of `(key, value)` pairs) drops it, as in Spark's
    /// Scala API.
    pub fn reduce_by_key_and_window(
        &self,
        f: Func,
        inverse: Option<Func>,
        length: Duration,
        slide: Duration,
        partitions: usize,
        filter: Option<Func>,
    ) -> DStream {
        self.derive_window(
            "reduce_by_key_and_window",
            Windowed {
                reduce: f,
                inverse,
                filter,
                length: length.as_millis() as i64,
                state: WindowedReduce::new(partitions.max(1)),
            },
            length,
            slide,
        )
    }

    /// `reduce_by_window(f, inverse, length, slide)`: all elements of the
    /// last `length` combined with `f`, as one element, every `slide`.
    /// Without `inverse` an empty window gives no element; with it, the
    /// running value is kept (so an emptied window gives the identity).
    pub fn reduce_by_window(
        &self,
        f: Func,
        inverse: Option<Func>,
        length: Duration,
        slide: Duration,
    ) -> DStream {
        match inverse {
            None => self
                .reduce(f.clone())
                .window(length, slide)
                .reduce(f)
                .renamed("reduce_by_window"),
            Some(inv) => self
                .derive("key", Rekeyed(Rekey::Constant))
                .reduce_by_key_and_window(f, Some(inv), length, slide, 1, None)
                .derive("reduce_by_window", Rekeyed(Rekey::Values)),
        }
    }

    /// `group_by_key_and_window(length, slide, partitions)`: per key of the
    /// last `length`, `(k, [values])` (values in arrival order), every
    /// `slide`, in `partitions` partitions. Elements must be `(key, value)`
    /// pairs.
    pub fn group_by_key_and_window(
        &self,
        length: Duration,
        slide: Duration,
        partitions: usize,
    ) -> DStream {
        self.window(length, slide)
            .group_by_key(partitions)
            .renamed("group_by_key_and_window")
    }

    /// `count_by_window(length, slide)`: the number of elements of the last
    /// `length`, every `slide` (incremental; `0` for an emptied window).
    pub fn count_by_window(&self, length: Duration, slide: Duration) -> DStream {
        self.derive("one", Rekeyed(Rekey::One))
            .reduce_by_window(count_add(), Some(count_subtract()), length, slide)
            .renamed("count_by_window")
    }

    /// `count_by_value_and_window(length, slide, partitions)`: each distinct
    /// element of the last `length` with its number of occurrences, every
    /// `slide` (incremental; elements whose count falls to 0 are dropped).
    pub fn count_by_value_and_window(
        &self,
        length: Duration,
        slide: Duration,
        partitions: usize,
    ) -> DStream {
        let nonzero = Func::filter("nonzero", |kv: (serde::de::IgnoredAny, i64)| kv.1 != 0);
        self.derive("by_value", Rekeyed(Rekey::ByValueOne))
            .reduce_by_key_and_window(
                count_add(),
                Some(count_subtract()),
                length,
                slide,
                partitions,
                Some(nonzero),
            )
            .renamed("count_by_value_and_window")
    }

    /// `update_state_by_key(f, partitions)`: the host keeps a state per key;
    /// every batch `f(new values, previous state)` runs for every key that
    /// has state or new values, and returns the new state or none (the key
    /// is removed; if it comes back it starts again). The stream is the
    /// whole state, every batch. Elements must be `(key, value)` pairs.
    pub fn update_state_by_key(&self, f: Func, partitions: usize) -> DStream {
        self.derive(
            "update_state_by_key",
            UpdateState {
                func: f,
                initial: None,
                state: StateByKey::new(partitions.max(1)),
            },
        )
    }

    /// [`DStream::update_state_by_key`] starting from `initial` `(key, state)` pairs.
    ///
    /// # Panics
    /// When a key or state cannot be encoded.
    pub fn update_state_by_key_with_initial<K: serde::Serialize, S: serde::Serialize>(
        &self,
        f: Func,
        partitions: usize,
        initial: &[(K, S)],
    ) -> DStream {
        self.update_state_by_key_from(f, partitions, initial_batch(initial))
    }

    /// [`DStream::update_state_by_key`] starting from the states of
    /// `initial` (a batch keyed by the state's keys).
    pub fn update_state_by_key_from(&self, f: Func, partitions: usize, initial: Batch) -> DStream {
        self.derive(
            "update_state_by_key",
            UpdateState {
                func: f,
                initial: Some(Rdd {
                    partitions: vec![initial],
                }),
                state: StateByKey::new(partitions.max(1)),
            },
        )
    }

    /// `map_with_state(spec)`: per-record mapping with a state per key,
    /// kept by the host (Spark's `mapWithState(StateSpec)`). For each new
    /// value of a key, in order, the spec's function `f(key, Some(value),
    /// state)` may read, update or remove the key's state and returns a
    /// mapped element or none; the stream is the mapped elements. Only keys
    /// with new values are processed. With a timeout, a key idle for at
    /// least the timeout (Spark's rule: last updated before the batch time
    /// minus the timeout) gets one last call `f(key, None, state)`
    /// (`state.is_timing_out()`) and is removed; the timeout is counted in
    /// this stream's batches (whole slides of the timeout). Elements must be
    /// `(key, value)` pairs. [`DStream::state_snapshots`] of the result is
    /// the state itself.
    pub fn map_with_state(&self, spec: StateSpec) -> DStream {
        let slide = lock(&self.graph).nodes[self.id].slide.max(1);
        let timeout = spec.timeout.map(|t| t.as_millis() as u64 / slide as u64);
        let partitions = spec.partitions.max(1);
        self.derive(
            "map_with_state",
            WithState {
                func: spec.func,
                initial: spec.initial.map(|seed| Rdd {
                    partitions: vec![seed],
                }),
                state: MapWithState::new(partitions, timeout),
                snapshots: None,
            },
        )
    }

    /// `state_snapshots()` of a [`DStream::map_with_state`] stream: after
    /// each of its batches, every key with its state, in the state's
    /// partitions (Spark's `stateSnapshots`). On any other stream, `run`
    /// fails naming it.
    pub fn state_snapshots(&self) -> DStream {
        let slot = lock(&self.graph).nodes[self.id].op.snapshot_slot();
        let (slot, partitions) = slot.unwrap_or_default();
        let stream = self.derive("state_snapshots", StateSnapshots { slot, partitions });
        if partitions == 0 {
            let mut g = lock(&self.graph);
            let error = format!(
                "state_snapshots applies to a map_with_state stream; `{}` is not one",
                g.nodes[self.id].name
            );
            g.errors.push((stream.id, error));
        }
        stream
    }
}

/// What [`DStream::map_with_state`] does (Spark's `StateSpec`): the
/// function, the state's partitions (default 2), the timeout and the
/// initial state.
///
/// ```
/// # use sluice_core::{Func, StateSpec};
/// # let f = Func::map_state("count", |k: String, v: Option<i64>, s: &mut sluice_sdk::State<i64>| {
/// #     let n = s.get().copied().unwrap_or(0) + v.unwrap_or(0);
/// #     s.update(n);
/// #     Some((k, n))
/// # });
/// let spec = StateSpec::function(f)
///     .num_partitions(4)
///     .timeout(std::time::Duration::from_secs(30))
///     .initial_state(&[("a", 10i64)]);
/// ```
#[derive(Clone)]
pub struct StateSpec {
    func: Func,
    partitions: usize,
    timeout: Option<Duration>,
    initial: Option<Batch>,
}

impl StateSpec {
    /// A spec of the `map-state` function `f`.
    pub fn function(f: Func) -> StateSpec {
        StateSpec {
            func: f,
            partitions: 2,
            timeout: None,
            initial: None,
        }
    }

    /// The state's hash partitions.
    pub fn num_partitions(mut self, n: usize) -> StateSpec {
        self.partitions = n;
        self
    }

    /// A key without values for at least `idle` times out.
    pub fn timeout(mut self, idle: Duration) -> StateSpec {
        self.timeout = Some(idle);
        self
    }

    /// The state starts as these `(key, state)` pairs, as updated at the
    /// first batch.
    ///
    /// # Panics
    /// When a key or state cannot be encoded.
    pub fn initial_state<K: serde::Serialize, S: serde::Serialize>(
        mut self,
        initial: &[(K, S)],
    ) -> StateSpec {
        self.initial = Some(initial_batch(initial));
        self
    }
}

/// `(key, state)` pairs as one keyed batch.
///
/// # Panics
/// When a key or state cannot be encoded.
fn initial_batch<K: serde::Serialize, S: serde::Serialize>(initial: &[(K, S)]) -> Batch {
    let mut seed = Batch::default();
    for (k, s) in initial {
        seed.keys.push(k).expect("an initial key that encodes");
        seed.values.push(s).expect("an initial state that encodes");
    }
    seed
}
