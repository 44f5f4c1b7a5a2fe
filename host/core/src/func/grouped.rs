//! Calls over groups: `reduce` (split into pieces past the input limit,
//! folding a large group left to right), `update-state` and `map-state`.

use super::call::unreachable_kind;
use super::{CallSite, Func, Imp, Native};
use crate::error::{Error, Result};
use sluice_sdk::{Batch, Column};

impl Func {
    /// `update-state`: per group of new `values` (groups as `n + 1`
    /// boundaries, possibly empty) and previous state (`states`, absent for
    /// none), the new state (absent: remove the key).
    pub(crate) fn apply_update_state(
        &self,
        values: &mut Column,
        groups: Vec<u32>,
        states: &mut Column,
        site: CallSite,
    ) -> Result<Column> {
        let n = groups.len().saturating_sub(1);
        if n == 0 {
            return Ok(Column::new());
        }
        let limit = self.input_limit();
        if values.bytes.len() + states.bytes.len() > limit && n > 1 {
            let encode = |e: sluice_sdk::EncodeError| self.bad_output(site, e.to_string());
            let mut out = Column::new();
            for mut piece in pack_groups(None, values, &groups, states, limit).map_err(encode)? {
                let part = self.apply_update_state(
                    &mut piece.values,
                    piece.groups,
                    &mut piece.states,
                    site,
                )?;
                out.extend_from(&part).map_err(encode)?;
            }
            return Ok(out);
        }
        let out = match &self.imp {
            Imp::Native(Native::UpdateState(f)) => {
                f(values, &groups, states).map_err(|e| self.native_err(site, e))?
            }
            Imp::Plugin { .. } => {
                let (plugin, index) = self.live_plugin()?;
                let out = Func::call_plugin(
                    &*plugin,
                    index,
                    site,
                    (&mut Column::new(), values),
                    groups,
                    states,
                )?;
                self.output_column(site, out, "an update-state")?
            }
            Imp::Native(_) => return unreachable_kind(self),
        };
        if out.len() != n {
            return Err(self.bad_output(
                site,
                format!("an update-state returned {} states for {n} keys", out.len()),
            ));
        }
        Ok(out)
    }

    /// `map-state`: per group (one key) of keyed `values` (absent: the key
    /// timed out) and previous state, one mapped element per value (absent:
    /// none) and the new state per group (absent: remove).
    pub(crate) fn apply_map_state(
        &self,
        input: &mut Batch,
        groups: Vec<u32>,
        states: &mut Column,
        site: CallSite,
    ) -> Result<(Column, Column)> {
        let n = groups.len().saturating_sub(1);
        if n == 0 {
            return Ok((Column::new(), Column::new()));
        }
        let limit = self.input_limit();
        let encode = |e: sluice_sdk::EncodeError| self.bad_output(site, e.to_string());
        let size = input.keys.bytes.len() + input.values.bytes.len() + states.bytes.len();
        if size > limit && n > 1 {
            let (mut mapped, mut new_states) = (Column::new(), Column::new());
            let pieces = pack_groups(Some(&input.keys), &input.values, &groups, states, limit)
                .map_err(encode)?;
            for mut piece in pieces {
                let mut batch = Batch {
                    keys: piece.keys,
                    values: piece.values,
                };
                let (m, st) =
                    self.apply_map_state(&mut batch, piece.groups, &mut piece.states, site)?;
                mapped.extend_from(&m).map_err(encode)?;
                new_states.extend_from(&st).map_err(encode)?;
            }
            return Ok((mapped, new_states));
        }
        let out = match &self.imp {
            Imp::Native(Native::MapState(f)) => {
                f(input, &groups, states).map_err(|e| self.native_err(site, e))?
            }
            Imp::Plugin { .. } => {
                let (plugin, index) = self.live_plugin()?;
                let out = Func::call_plugin(
                    &*plugin,
                    index,
                    site,
                    (&mut input.keys, &mut input.values),
                    groups,
                    states,
                )?;
                self.output_column(site, out, "a map-state")?
            }
            Imp::Native(_) => return unreachable_kind(self),
        };
        let records = input.len();
        if out.len() != records + n {
            return Err(self.bad_output(
                site,
                format!(
                    "a map-state returned {} elements for {records} values and {n} keys",
                    out.len()
                ),
            ));
        }
        let (mut mapped, mut new_states) = (Column::new(), Column::new());
        for (i, v) in out.iter().enumerate() {
            if i < records {
                mapped.push_encoded(v).map_err(encode)?;
            } else {
                new_states.push_encoded(v).map_err(encode)?;
            }
        }
        Ok((mapped, new_states))
    }

    /// `reduce`: one value per group of `values` (groups as `n + 1` boundaries,
    /// none empty).
    pub(crate) fn apply_reduce(
        &self,
        values: &mut Column,
        groups: Vec<u32>,
        site: CallSite,
    ) -> Result<Column> {
        let n_groups = groups.len().saturating_sub(1);
        if n_groups == 0 {
            return Ok(Column::new());
        }
        let limit = self.input_limit();
        // Two values must meet in one call however large they are.
        if values.bytes.len() > limit && values.len() > 2 {
            return self.reduce_in_chunks(values, &groups, limit, site);
        }
        let out = match &self.imp {
            Imp::Native(Native::Reduce(f)) => {
                f(values, &groups).map_err(|e| self.native_err(site, e))?
            }
            Imp::Plugin { .. } => {
                let (plugin, index) = self.live_plugin()?;
                let out = Func::call_values(&*plugin, index, site, values, groups)?;
                let c = self.output_column(site, out, "a reduce")?;
                if c.iter().any(<[u8]>::is_empty) {
                    return Err(
                        self.bad_output(site, "a reduce returned an absent value".to_string())
                    );
                }
                c
            }
            Imp::Native(_) => {
                return Err(Error::Plan(format!(
                    "`{}` is a {}, not a reduce function",
                    self.name, self.kind
                )));
            }
        };
        if out.len() != n_groups {
            return Err(self.bad_output(
                site,
                format!(
                    "a reduce returned {} values for {n_groups} groups",
                    out.len()
                ),
            ));
        }
        Ok(out)
    }

    /// Reduces groups whose values exceed the per-call input limit: packs
    /// whole groups into calls of at most `limit` bytes; a group that alone is
    /// larger is folded piece by piece, each piece (of at least two values)
    /// starting with the result of the previous one.
    fn reduce_in_chunks(
        &self,
        values: &Column,
        groups: &[u32],
        limit: usize,
        site: CallSite,
    ) -> Result<Column> {
        let encode = |e: sluice_sdk::EncodeError| self.bad_output(site, e.to_string());
        let size =
            |a: u32, b: u32| (values.offsets[b as usize] - values.offsets[a as usize]) as usize;
        let mut out = Column::new();
        let mut chunk = Column::new();
        let mut chunk_groups = vec![0u32];
        let flush =
            |chunk: &mut Column, chunk_groups: &mut Vec<u32>, out: &mut Column| -> Result<()> {
                if chunk_groups.len() > 1 {
                    let groups = std::mem::replace(chunk_groups, vec![0]);
                    let part = self.apply_reduce(&mut std::mem::take(chunk), groups, site)?;
                    out.extend_from(&part).map_err(encode)?;
                }
                Ok(())
            };
        for w in groups.windows(2) {
            let (a, b) = (w[0], w[1]);
            if size(a, b) > limit && b - a > 2 {
                flush(&mut chunk, &mut chunk_groups, &mut out)?;
                // Left to right: each piece starts with the result so far, so
                // this is exact for folds `(C, V) -> C` as well as reductions.
                let mut piece = Column::new();
                for i in a..b {
                    let v = values.get(i as usize);
                    if piece.len() >= 2 && piece.bytes.len() + v.len() > limit {
                        let n = piece.len() as u32;
                        let r =
                            self.apply_reduce(&mut std::mem::take(&mut piece), vec![0, n], site)?;
                        piece.push_encoded(r.get(0)).map_err(encode)?;
                    }
                    piece.push_encoded(v).map_err(encode)?;
                }
                let n = piece.len() as u32;
                let r = self.apply_reduce(&mut piece, vec![0, n], site)?;
                out.extend_from(&r).map_err(encode)?;
                continue;
            }
            if chunk.bytes.len() + size(a, b) > limit {
                flush(&mut chunk, &mut chunk_groups, &mut out)?;
            }
            for i in a..b {
                chunk.push_encoded(values.get(i as usize)).map_err(encode)?;
            }
            chunk_groups.push(chunk.len() as u32);
        }
        flush(&mut chunk, &mut chunk_groups, &mut out)?;
        Ok(out)
    }
}

/// A run of whole groups, cut out of a grouped call input.
struct GroupPiece {
    keys: Column,
    values: Column,
    groups: Vec<u32>,
    states: Column,
}

/// Packs whole groups of `values` (and `keys`, when given) with their
/// `states` into pieces of at most `limit` bytes; a group that alone is
/// larger forms a piece of its own.
fn pack_groups(
    keys: Option<&Column>,
    values: &Column,
    groups: &[u32],
    states: &Column,
    limit: usize,
) -> std::result::Result<Vec<GroupPiece>, sluice_sdk::EncodeError> {
    let n = groups.len().saturating_sub(1);
    let element =
        |i: u32| values.get(i as usize).len() + keys.map_or(0, |k| k.get(i as usize).len());
    let size =
        |g: usize| (groups[g]..groups[g + 1]).map(element).sum::<usize>() + states.get(g).len();
    let mut pieces = Vec::new();
    let mut g0 = 0;
    while g0 < n {
        let (mut g1, mut bytes) = (g0 + 1, size(g0));
        while g1 < n && bytes + size(g1) <= limit {
            bytes += size(g1);
            g1 += 1;
        }
        let mut piece = GroupPiece {
            keys: Column::new(),
            values: Column::new(),
            groups: vec![0],
            states: Column::new(),
        };
        for g in g0..g1 {
            for i in groups[g]..groups[g + 1] {
                piece.values.push_encoded(values.get(i as usize))?;
                if let Some(k) = keys {
                    piece.keys.push_encoded(k.get(i as usize))?;
                }
            }
            piece.groups.push(piece.values.len() as u32);
            piece.states.push_encoded(states.get(g))?;
        }
        pieces.push(piece);
        g0 = g1;
    }
    Ok(pieces)
}
