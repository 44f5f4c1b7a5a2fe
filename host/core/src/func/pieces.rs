//! Cutting a partition into pieces for calls that see one element at a
//! time, and joining what the pieces return.

use crate::error::{Error, PluginFault, Result};
use sluice_sdk::Column;

/// Input bytes per plugin call of a function that sees one element at a
/// time (map, flat-map, filter), unless the job sets a limit of its own:
/// a partition of a few megabytes goes to the plugin in pieces of about
/// this size. Each piece is then copied into the guest, processed, copied
/// out and validated while it is still in the processor's cache, where
/// one call over the whole partition would stream it from memory four
/// times; the guest's memory also stays small.
pub(super) const CALL_CHUNK_BYTES: usize = 256 << 10;

/// The most a piecewise call reserves for its output up front (it grows
/// past this as any column does).
const RESERVE_CAP: usize = 64 << 20;

/// Consecutive element ranges of `input` of at most `limit` bytes each (a
/// larger element forms a range of its own). `input`'s offsets must be in
/// order, as a validated column's are.
pub(super) fn chunks(
    input: &Column,
    limit: usize,
) -> impl Iterator<Item = std::ops::Range<usize>> + '_ {
    let n = input.len();
    let mut lo = 0;
    std::iter::from_fn(move || {
        if lo >= n {
            return None;
        }
        let base = input.offsets[lo] as usize;
        let fit = input.offsets[lo + 1..=n].partition_point(|&end| end as usize - base <= limit);
        let hi = lo + fit.max(1);
        let range = lo..hi;
        lo = hi;
        Some(range)
    })
}

/// `call` (a map, flat-map or chain of them) over `input` cut into pieces of
/// at most `limit` bytes ([`chunks`]): the pieces' outputs joined in order,
/// each piece's other result given to `each`, and an element at fault
/// numbered within `input`. `bad` makes the error of an output too large
/// to join.
pub(super) fn piecewise<T>(
    input: &Column,
    limit: usize,
    mut call: impl FnMut(&mut Column) -> Result<(Column, T)>,
    mut each: impl FnMut(T),
    bad: impl Fn(String) -> Error,
) -> Result<Column> {
    let mut out = Column::new();
    let mut chunk = Column::new();
    for range in chunks(input, limit) {
        let start = range.start;
        copy_elements(input, range, &mut chunk);
        let (part, other) = call(&mut chunk).map_err(|e| at_offset(e, start))?;
        if out.is_empty() && !part.is_empty() {
            // Room for the whole output, as the first piece suggests,
            // rather than growing (and copying) it piece by piece; capped,
            // as a flat-map's first piece may say nothing of the rest.
            let pieces = input.bytes.len() / chunk.bytes.len().max(1) + 1;
            out = Column::with_capacity(
                part.len().saturating_mul(pieces).min(RESERVE_CAP / 4),
                part.bytes.len().saturating_mul(pieces).min(RESERVE_CAP),
            );
        }
        out.extend_from(&part).map_err(|e| bad(e.to_string()))?;
        each(other);
    }
    Ok(out)
}

/// `e`, from a call on the elements from `start` of a partition, with the
/// element at fault (if any) numbered within the whole partition.
pub(super) fn at_offset(mut e: Error, start: usize) -> Error {
    if let Error::Plugin { fault, .. } = &mut e
        && let PluginFault::Refused {
            element: Some(i), ..
        } = fault.as_mut()
    {
        *i += start as u64;
    }
    e
}

/// Makes `out` the elements `range` of `input` (reusing `out`'s buffers).
pub(super) fn copy_elements(input: &Column, range: std::ops::Range<usize>, out: &mut Column) {
    let (start, end) = (input.offsets[range.start], input.offsets[range.end]);
    out.bytes.clear();
    out.bytes
        .extend_from_slice(&input.bytes[start as usize..end as usize]);
    out.offsets.clear();
    out.offsets.extend(
        input.offsets[range.start..=range.end]
            .iter()
            .map(|&o| o - start),
    );
}
