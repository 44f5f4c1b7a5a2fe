//! The columnar loops behind each function kind: decode each input value,
//! call the typed function, encode its results. Shared by wasm guests and by
//! the host's native operators, so both run the same code.

use crate::columnar::{Batch, Column, EncodeError};
use crate::plain::{Decode, Encode, SerdeCodec};
use serde::{Deserialize, Serialize, de::DeserializeOwned};

/// Category of a failed call; mirrors the WIT `error-kind`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// An input element the function refuses.
    InvalidInput,
    /// No function with that index.
    UnknownFunction,
    /// The function cannot take this kind of input.
    Unsupported,
    /// Any other failure.
    Failed,
}

/// A function refused its input or failed; mirrors the WIT `plugin-error`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallError {
    /// Category.
    pub kind: ErrorKind,
    /// Explanation.
    pub message: String,
    /// Index of the input element at fault, when one is.
    pub element: Option<u32>,
}

impl CallError {
    /// An `invalid-input` error about element `index`.
    pub fn invalid_input(index: usize, message: impl Into<String>) -> Self {
        CallError {
            kind: ErrorKind::InvalidInput,
            message: message.into(),
            element: u32::try_from(index).ok(),
        }
    }

    /// A `failed` error not tied to an element.
    pub fn failed(message: impl Into<String>) -> Self {
        CallError {
            kind: ErrorKind::Failed,
            message: message.into(),
            element: None,
        }
    }
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.element {
            Some(i) => write!(f, "element {i}: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

impl std::error::Error for CallError {}

/// Decodes element `i` of `input`. Inlined into each kind's loop, with its
/// error path out of line: a call per element costs a wasm guest a frame,
/// a stack check and an epoch check.
#[inline(always)]
pub(crate) fn decode<'a, T: Deserialize<'a>>(input: &'a Column, i: usize) -> Result<T, CallError> {
    crate::fastde::from_slice(input.get(i)).map_err(|e| decode_err(i, e))
}

#[cold]
#[inline(never)]
fn decode_err(i: usize, e: rmp_serde::decode::Error) -> CallError {
    CallError::invalid_input(i, e.to_string())
}

#[cold]
#[inline(never)]
fn encode_err(i: usize, e: EncodeError) -> CallError {
    CallError::invalid_input(i, format!("cannot encode the result: {e}"))
}

/// `map`: one output per input.
pub fn map<'a, I, O, F>(input: &'a Column, f: F) -> Result<Column, CallError>
where
    I: Deserialize<'a>,
    O: Serialize,
    F: FnMut(I) -> O,
{
    map_with(input, f, SerdeCodec, SerdeCodec)
}

/// [`map`] with the codecs of its input and output (the macros pick
/// [`PlainCodec`](crate::plain::PlainCodec) for plain shapes).
pub fn map_with<'a, I, O, F, D, E>(
    input: &'a Column,
    mut f: F,
    dec: D,
    enc: E,
) -> Result<Column, CallError>
where
    F: FnMut(I) -> O,
    D: Decode<'a, I>,
    E: Encode<O>,
{
    try_map_with(
        input,
        |x: I| Ok::<O, std::convert::Infallible>(f(x)),
        dec,
        enc,
    )
}

/// `map` whose function may refuse an element with `Err`.
pub fn try_map<'a, I, O, E, F>(input: &'a Column, f: F) -> Result<Column, CallError>
where
    I: Deserialize<'a>,
    O: Serialize,
    E: std::fmt::Display,
    F: FnMut(I) -> Result<O, E>,
{
    try_map_with(input, f, SerdeCodec, SerdeCodec)
}

/// [`try_map`] with the codecs of its input and output.
pub fn try_map_with<'a, I, O, Er, F, D, E>(
    input: &'a Column,
    mut f: F,
    dec: D,
    enc: E,
) -> Result<Column, CallError>
where
    Er: std::fmt::Display,
    F: FnMut(I) -> Result<O, Er>,
    D: Decode<'a, I>,
    E: Encode<O>,
{
    let mut out = Column::with_capacity(input.len(), input.bytes.len());
    for i in 0..input.len() {
        let v = f(dec.decode(input, i)?).map_err(|e| CallError::invalid_input(i, e.to_string()))?;
        enc.push(&mut out, &v).map_err(|e| encode_err(i, e))?;
    }
    Ok(out)
}

/// `flat_map`: zero or more outputs per input, in order.
pub fn flat_map<'a, I, O, R, F>(input: &'a Column, f: F) -> Result<Column, CallError>
where
    I: Deserialize<'a>,
    O: Serialize,
    R: IntoIterator<Item = O>,
    F: FnMut(I) -> R,
{
    flat_map_with(input, f, SerdeCodec, SerdeCodec)
}

/// [`flat_map`] with the codecs of its input and output items.
pub fn flat_map_with<'a, I, O, R, F, D, E>(
    input: &'a Column,
    mut f: F,
    dec: D,
    enc: E,
) -> Result<Column, CallError>
where
    R: IntoIterator<Item = O>,
    F: FnMut(I) -> R,
    D: Decode<'a, I>,
    E: Encode<O>,
{
    try_flat_map_with(
        input,
        |x: I| Ok::<R, std::convert::Infallible>(f(x)),
        dec,
        enc,
    )
}

/// `flat_map` whose function may refuse an element with `Err`.
pub fn try_flat_map<'a, I, O, R, E, F>(input: &'a Column, f: F) -> Result<Column, CallError>
where
    I: Deserialize<'a>,
    O: Serialize,
    R: IntoIterator<Item = O>,
    E: std::fmt::Display,
    F: FnMut(I) -> Result<R, E>,
{
    try_flat_map_with(input, f, SerdeCodec, SerdeCodec)
}

/// [`try_flat_map`] with the codecs of its input and output items.
pub fn try_flat_map_with<'a, I, O, R, Er, F, D, E>(
    input: &'a Column,
    mut f: F,
    dec: D,
    enc: E,
) -> Result<Column, CallError>
where
    R: IntoIterator<Item = O>,
    Er: std::fmt::Display,
    F: FnMut(I) -> Result<R, Er>,
    D: Decode<'a, I>,
    E: Encode<O>,
{
    let mut out = Column::with_capacity(input.len() * 4, input.bytes.len() + input.len() * 4);
    for i in 0..input.len() {
        let items =
            f(dec.decode(input, i)?).map_err(|e| CallError::invalid_input(i, e.to_string()))?;
        for v in items {
            enc.push(&mut out, &v).map_err(|e| encode_err(i, e))?;
        }
    }
    Ok(out)
}

/// `map_partitions` and `transform`: `f` sees every value of the call at
/// once and returns any number of values.
pub fn map_partitions<'a, I, O, R, F>(input: &'a Column, mut f: F) -> Result<Column, CallError>
where
    I: Deserialize<'a>,
    O: Serialize,
    R: IntoIterator<Item = O>,
    F: FnMut(Vec<I>) -> R,
{
    try_map_partitions(input, |x: Vec<I>| Ok::<R, std::convert::Infallible>(f(x)))
}

/// `map_partitions`/`transform` whose function may fail with `Err` (a
/// `failed` error: no single element is at fault).
pub fn try_map_partitions<'a, I, O, R, E, F>(
    input: &'a Column,
    mut f: F,
) -> Result<Column, CallError>
where
    I: Deserialize<'a>,
    O: Serialize,
    R: IntoIterator<Item = O>,
    E: std::fmt::Display,
    F: FnMut(Vec<I>) -> Result<R, E>,
{
    let items = (0..input.len())
        .map(|i| decode(input, i))
        .collect::<Result<Vec<I>, _>>()?;
    let results = f(items).map_err(|e| CallError::failed(e.to_string()))?;
    let mut out = Column::with_capacity(input.len(), input.bytes.len());
    for (i, v) in results.into_iter().enumerate() {
        out.push(&v).map_err(|e| encode_err(i, e))?;
    }
    Ok(out)
}

/// `sink`: `f` consumes every value of the call at once.
pub fn sink<'a, I, F>(input: &'a Column, mut f: F) -> Result<(), CallError>
where
    I: Deserialize<'a>,
    F: FnMut(Vec<I>),
{
    try_sink(input, |x: Vec<I>| {
        f(x);
        Ok::<(), std::convert::Infallible>(())
    })
}

/// `sink` whose function may fail (a `failed` error: the host retries it).
pub fn try_sink<'a, I, E, F>(input: &'a Column, mut f: F) -> Result<(), CallError>
where
    I: Deserialize<'a>,
    E: std::fmt::Display,
    F: FnMut(Vec<I>) -> Result<(), E>,
{
    let items = (0..input.len())
        .map(|i| decode(input, i))
        .collect::<Result<Vec<I>, _>>()?;
    f(items).map_err(|e| CallError::failed(e.to_string()))
}

/// `filter`: the indices of the inputs for which `f` holds.
pub fn filter<'a, I, F>(input: &'a Column, f: F) -> Result<Vec<u32>, CallError>
where
    I: Deserialize<'a>,
    F: FnMut(I) -> bool,
{
    filter_with(input, f, SerdeCodec)
}

/// [`filter`] with the codec of its input.
pub fn filter_with<'a, I, F, D>(input: &'a Column, mut f: F, dec: D) -> Result<Vec<u32>, CallError>
where
    F: FnMut(I) -> bool,
    D: Decode<'a, I>,
{
    let mut kept = Vec::with_capacity(input.len());
    for i in 0..input.len() {
        if f(dec.decode(input, i)?) {
            kept.push(i as u32);
        }
    }
    Ok(kept)
}

/// `reduce`: folds each group `values[groups[g]..groups[g + 1]]` into one value.
/// Groups must not be empty.
pub fn reduce<T, F>(values: &Column, groups: &[u32], f: F) -> Result<Column, CallError>
where
    T: DeserializeOwned + Serialize,
    F: FnMut(T, T) -> T,
{
    fold(values, groups, f)
}

/// [`reduce`] with the codec of its values.
pub fn reduce_with<'a, T, F, C>(
    values: &'a Column,
    groups: &[u32],
    f: F,
    codec: C,
) -> Result<Column, CallError>
where
    F: FnMut(T, T) -> T,
    C: Decode<'a, T> + Encode<T>,
{
    fold_with(values, groups, f, codec, codec)
}

/// Checks that `groups` are `n + 1` ascending boundaries within `len` values
/// (`allow_empty`: whether a group may have no value).
fn check_groups(groups: &[u32], len: usize, allow_empty: bool) -> Result<(), CallError> {
    for (g, w) in groups.windows(2).enumerate() {
        let (start, end) = (w[0] as usize, w[1] as usize);
        if start > end || end > len || (!allow_empty && start == end) {
            return Err(CallError {
                kind: ErrorKind::Unsupported,
                message: format!("group {g} is empty or out of range ({start}..{end})"),
                element: None,
            });
        }
    }
    Ok(())
}

/// `fold` (a `reduce` function of another shape, combine_by_key's
/// `merge_value`): in each group the first value is an accumulator `C` and
/// every next value a `V` folded into it.
pub fn fold<C, V, F>(values: &Column, groups: &[u32], f: F) -> Result<Column, CallError>
where
    C: DeserializeOwned + Serialize,
    V: DeserializeOwned,
    F: FnMut(C, V) -> C,
{
    fold_with(values, groups, f, SerdeCodec, SerdeCodec)
}

/// [`fold`] with the codecs of its accumulator and its values.
pub fn fold_with<'a, C, V, F, CC, VC>(
    values: &'a Column,
    groups: &[u32],
    mut f: F,
    acc_codec: CC,
    value_codec: VC,
) -> Result<Column, CallError>
where
    F: FnMut(C, V) -> C,
    CC: Decode<'a, C> + Encode<C>,
    VC: Decode<'a, V>,
{
    check_groups(groups, values.len(), false)?;
    let n = groups.len().saturating_sub(1);
    let mut out = Column::with_capacity(n, values.bytes.len() / 2 + n);
    for w in groups.windows(2) {
        let (start, end) = (w[0] as usize, w[1] as usize);
        let mut acc: C = acc_codec.decode(values, start)?;
        for i in start + 1..end {
            acc = f(acc, value_codec.decode(values, i)?);
        }
        acc_codec
            .push(&mut out, &acc)
            .map_err(|e| encode_err(start, e))?;
    }
    Ok(out)
}

/// `inverse-reduce`: per element `f(accumulated[i], removed[i])`, the value
/// `removed[i]` taken out of `accumulated[i]` (the inverse of a `reduce`).
pub fn inverse_reduce<T, F>(
    accumulated: &Column,
    removed: &Column,
    f: F,
) -> Result<Column, CallError>
where
    T: DeserializeOwned + Serialize,
    F: FnMut(T, T) -> T,
{
    inverse_reduce_with(accumulated, removed, f, SerdeCodec)
}

/// [`inverse_reduce`] with the codec of its values.
pub fn inverse_reduce_with<'a, T, F, C>(
    accumulated: &'a Column,
    removed: &'a Column,
    mut f: F,
    codec: C,
) -> Result<Column, CallError>
where
    F: FnMut(T, T) -> T,
    C: Decode<'a, T> + Encode<T>,
{
    if accumulated.len() != removed.len() {
        return Err(CallError {
            kind: ErrorKind::Unsupported,
            message: format!(
                "{} accumulated values but {} values to remove",
                accumulated.len(),
                removed.len()
            ),
            element: None,
        });
    }
    let mut out = Column::with_capacity(accumulated.len(), accumulated.bytes.len());
    for i in 0..accumulated.len() {
        let v = f(codec.decode(accumulated, i)?, codec.decode(removed, i)?);
        codec.push(&mut out, &v).map_err(|e| encode_err(i, e))?;
    }
    Ok(out)
}

/// The previous state of group `g`: `None` when absent.
fn decode_state<S: DeserializeOwned>(states: &Column, g: usize) -> Result<Option<S>, CallError> {
    let bytes = states.get(g);
    if bytes.is_empty() {
        return Ok(None);
    }
    crate::fastde::from_slice(bytes)
        .map(Some)
        .map_err(|e| CallError::invalid_input(g, format!("state: {e}")))
}

/// `update-state`: per group `g`, `f(new values of g, previous state of g)`;
/// `None` (written as an absent element) removes the key's state.
pub fn update_state<V, S, F>(
    values: &Column,
    groups: &[u32],
    states: &Column,
    mut f: F,
) -> Result<Column, CallError>
where
    V: DeserializeOwned,
    S: DeserializeOwned + Serialize,
    F: FnMut(Vec<V>, Option<S>) -> Option<S>,
{
    check_groups(groups, values.len(), true)?;
    let n = groups.len().saturating_sub(1);
    if states.len() != n {
        return Err(CallError {
            kind: ErrorKind::Unsupported,
            message: format!("{n} groups but {} previous states", states.len()),
            element: None,
        });
    }
    let mut out = Column::with_capacity(n, states.bytes.len() + values.bytes.len() / 2);
    for (g, w) in groups.windows(2).enumerate() {
        let (start, end) = (w[0] as usize, w[1] as usize);
        let new = (start..end)
            .map(|i| decode(values, i))
            .collect::<Result<Vec<V>, _>>()?;
        match f(new, decode_state(states, g)?) {
            Some(s) => out.push(&s).map_err(|e| encode_err(g, e))?,
            None => out.push_absent().map_err(|e| encode_err(g, e))?,
        }
    }
    Ok(out)
}

/// The state of one key as a `map-state` function (`map_with_state`) sees
/// and changes it.
#[derive(Debug)]
pub struct State<S> {
    value: Option<S>,
    timing_out: bool,
}

impl<S> State<S> {
    /// The state, if the key has one.
    pub fn get(&self) -> Option<&S> {
        self.value.as_ref()
    }

    /// Whether the key has a state.
    pub fn exists(&self) -> bool {
        self.value.is_some()
    }

    /// Sets the key's state. (A key that is timing out is removed anyway.)
    pub fn update(&mut self, state: S) {
        self.value = Some(state);
    }

    /// Removes the key's state; if the key comes back it starts again.
    pub fn remove(&mut self) {
        self.value = None;
    }

    /// Whether this call is the key's timeout (no new value: the key had no
    /// values for the timeout and is removed after this call).
    pub fn is_timing_out(&self) -> bool {
        self.timing_out
    }
}

/// `map-state`: per group `g` (one key), `f(key, value, state)` for each of
/// its values in order, the state carried from call to call; an absent value
/// is the key's timeout call (`None`). The output has one element per value
/// (absent when `f` returns `None`), then the final state of each group
/// (absent: removed).
pub fn map_state<'a, K, V, S, O, F>(
    input: &'a Batch,
    groups: &[u32],
    states: &Column,
    mut f: F,
) -> Result<Column, CallError>
where
    K: Deserialize<'a>,
    V: Deserialize<'a>,
    S: DeserializeOwned + Serialize,
    O: Serialize,
    F: FnMut(K, Option<V>, &mut State<S>) -> Option<O>,
{
    check_groups(groups, input.len(), false)?;
    let n = groups.len().saturating_sub(1);
    if states.len() != n || input.keys.len() != input.len() {
        return Err(CallError {
            kind: ErrorKind::Unsupported,
            message: format!(
                "{n} groups, {} states, {} keys, {} values",
                states.len(),
                input.keys.len(),
                input.len()
            ),
            element: None,
        });
    }
    let mut out = Column::with_capacity(input.len() + n, input.values.bytes.len());
    let mut finals = Vec::with_capacity(n);
    for (g, w) in groups.windows(2).enumerate() {
        let mut state = State {
            value: decode_state(states, g)?,
            timing_out: false,
        };
        for i in w[0] as usize..w[1] as usize {
            let key: K = decode(&input.keys, i)?;
            let value: Option<V> = if input.values.get(i).is_empty() {
                state.timing_out = true;
                None
            } else {
                Some(decode(&input.values, i)?)
            };
            match f(key, value, &mut state) {
                Some(o) => out.push(&o).map_err(|e| encode_err(i, e))?,
                None => out.push_absent().map_err(|e| encode_err(i, e))?,
            }
        }
        finals.push(if state.timing_out { None } else { state.value });
    }
    for (g, s) in finals.into_iter().enumerate() {
        match s {
            Some(s) => out.push(&s).map_err(|e| encode_err(g, e))?,
            None => out.push_absent().map_err(|e| encode_err(g, e))?,
        }
    }
    Ok(out)
}

/// `transform_with`: `f` sees both streams' values of the batch at once.
pub fn transform_with<'a, A, B, O, R, F>(
    left: &'a Column,
    right: &'a Column,
    mut f: F,
) -> Result<Column, CallError>
where
    A: Deserialize<'a>,
    B: Deserialize<'a>,
    O: Serialize,
    R: IntoIterator<Item = O>,
    F: FnMut(Vec<A>, Vec<B>) -> R,
{
    try_transform_with(left, right, |a: Vec<A>, b: Vec<B>| {
        Ok::<R, std::convert::Infallible>(f(a, b))
    })
}

/// `transform_with` whose function may fail with `Err`.
pub fn try_transform_with<'a, A, B, O, R, E, F>(
    left: &'a Column,
    right: &'a Column,
    mut f: F,
) -> Result<Column, CallError>
where
    A: Deserialize<'a>,
    B: Deserialize<'a>,
    O: Serialize,
    R: IntoIterator<Item = O>,
    E: std::fmt::Display,
    F: FnMut(Vec<A>, Vec<B>) -> Result<R, E>,
{
    let a = (0..left.len())
        .map(|i| decode(left, i))
        .collect::<Result<Vec<A>, _>>()?;
    let b = (0..right.len())
        .map(|i| {
            crate::fastde::from_slice(right.get(i))
                .map_err(|e| CallError::invalid_input(i, format!("second stream: {e}")))
        })
        .collect::<Result<Vec<B>, _>>()?;
    let results = f(a, b).map_err(|e| CallError::failed(e.to_string()))?;
    let mut out = Column::with_capacity(left.len() + right.len(), left.bytes.len());
    for (i, v) in results.into_iter().enumerate() {
        out.push(&v).map_err(|e| encode_err(i, e))?;
    }
    Ok(out)
}

/// Runs a per-element `call` (map or flat-map) on each value of a keyed batch
/// separately and gives every output the key of the input it came from: how
/// `map_values` and `flat_map_values` see only values yet keep their keys.
pub fn keyed<F>(keys: &Column, values: &Column, mut call: F) -> Result<Batch, CallError>
where
    F: FnMut(&Column) -> Result<Column, CallError>,
{
    if keys.len() != values.len() {
        return Err(CallError {
            kind: ErrorKind::Unsupported,
            message: format!("{} keys for {} values", keys.len(), values.len()),
            element: None,
        });
    }
    let mut out = Batch {
        keys: Column::with_capacity(values.len(), keys.bytes.len()),
        values: Column::with_capacity(values.len(), values.bytes.len()),
    };
    let mut one = Column::new();
    for i in 0..values.len() {
        one.clear();
        one.push_encoded(values.get(i))
            .map_err(|e| encode_err(i, e))?;
        let produced = call(&one).map_err(|mut e| {
            if e.element.is_some() {
                e.element = u32::try_from(i).ok();
            }
            e
        })?;
        for v in produced.iter() {
            out.keys
                .push_encoded(keys.get(i))
                .map_err(|e| encode_err(i, e))?;
            out.values.push_encoded(v).map_err(|e| encode_err(i, e))?;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn col<T: Serialize>(items: &[T]) -> Column {
        let mut c = Column::new();
        for i in items {
            c.push(i).unwrap();
        }
        c
    }

    #[test]
    fn flat_map_splits_lines_borrowing_input() {
        let input = col(&["a b", "", "c  d"]);
        let out = flat_map(&input, |l: &str| l.split(' ')).unwrap();
        assert_eq!(out, col(&["a", "b", "", "c", "", "d"]));
    }

    #[test]
    fn map_and_filter() {
        let input = col(&["x", "long"]);
        assert_eq!(
            map(&input, |w: &str| (w, 1i64)).unwrap(),
            col(&[("x", 1i64), ("long", 1)])
        );
        assert_eq!(filter(&input, |w: &str| w.len() >= 4).unwrap(), vec![1]);
    }

    #[test]
    fn wrong_type_names_the_element() {
        let mut input = col(&["a"]);
        input.push(&5i64).unwrap();
        let err = map(&input, |w: &str| w.len() as i64).unwrap_err();
        assert_eq!(err.kind, ErrorKind::InvalidInput);
        assert_eq!(err.element, Some(1));
    }

    #[test]
    fn map_partitions_sees_all_values() {
        let input = col(&[3i64, 1, 2]);
        let out = map_partitions(&input, |mut v: Vec<i64>| {
            v.sort();
            v.into_iter().rev().take(2)
        })
        .unwrap();
        assert_eq!(out, col(&[3i64, 2]));
        let err = try_map_partitions(&input, |_: Vec<i64>| Err::<Vec<i64>, _>("no")).unwrap_err();
        assert_eq!((err.kind, err.message.as_str()), (ErrorKind::Failed, "no"));
    }

    #[test]
    fn reduce_folds_each_group() {
        let values = col(&[1i64, 2, 3, 10, 20]);
        let out = reduce(&values, &[0, 3, 5], |a: i64, b: i64| a + b).unwrap();
        assert_eq!(out, col(&[6i64, 30]));
        assert!(reduce(&values, &[0, 0], |a: i64, b: i64| a + b).is_err());
    }

    #[test]
    fn try_map_reports_refusals() {
        let input = col(&[1i64, -1]);
        let err = try_map(
            &input,
            |v: i64| if v >= 0 { Ok(v) } else { Err("negative") },
        )
        .unwrap_err();
        assert_eq!(err.element, Some(1));
        assert_eq!(err.message, "negative");
    }
}
