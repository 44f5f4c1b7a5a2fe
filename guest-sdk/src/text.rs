//! Text helpers for operators, as fast in a wasm32 guest as natively.
//!
//! `str::split(' ')` finds each separator with the standard library's
//! `memchr`, which reads a `usize` at a time: four bytes in wasm32, where
//! the machine underneath has 64-bit registers. [`split_on`] reads eight,
//! and has no per-call set-up, so a line of short words costs a guest about
//! what it costs natively.

/// Splits `s` on every `sep`, as `s.split(sep)` does: `"a  b"` gives `"a"`,
/// `""` and `"b"`; `""` gives one empty piece.
///
/// ```
/// let words: Vec<&str> = sluice_sdk::split_on("to be  or", ' ').collect();
/// assert_eq!(words, ["to", "be", "", "or"]);
/// ```
#[inline]
pub fn split_on(s: &str, sep: char) -> SplitOn<'_> {
    SplitOn(if sep.is_ascii() {
        Inner::Byte {
            s,
            at: 0,
            sep: sep as u8,
            done: false,
        }
    } else {
        Inner::Char(s.split(sep))
    })
}

/// The pieces of [`split_on`].
#[derive(Debug, Clone)]
pub struct SplitOn<'a>(Inner<'a>);

#[derive(Debug, Clone)]
enum Inner<'a> {
    /// An ASCII separator: a byte that is never part of another character.
    Byte {
        s: &'a str,
        at: usize,
        sep: u8,
        done: bool,
    },
    /// Any other separator, by the standard library.
    Char(std::str::Split<'a, char>),
}

impl<'a> Iterator for SplitOn<'a> {
    type Item = &'a str;

    #[inline]
    fn next(&mut self) -> Option<&'a str> {
        match &mut self.0 {
            Inner::Byte { s, at, sep, done } => {
                if *done {
                    return None;
                }
                let start = *at;
                let end = match find_byte(s.as_bytes(), start, *sep) {
                    Some(i) => {
                        *at = i + 1;
                        i
                    }
                    None => {
                        *done = true;
                        s.len()
                    }
                };
                // SAFETY: `start` is 0 or one past an ASCII byte, and `end`
                // is the length or at an ASCII byte: both are character
                // boundaries (UTF-8 never has a byte below 0x80 inside a
                // character), and `start <= end <= s.len()`.
                Some(unsafe { s.get_unchecked(start..end) })
            }
            Inner::Char(split) => split.next(),
        }
    }
}

impl std::iter::FusedIterator for SplitOn<'_> {}

/// The lanes of `x` (eight bytes) equal to zero, as their high bits; exact
/// in every lane (no borrow runs from one lane into the next).
#[inline(always)]
fn zero_lanes(x: u64) -> u64 {
    const LOW7: u64 = 0x7f7f_7f7f_7f7f_7f7f;
    !(((x & LOW7) + LOW7) | x | LOW7)
}

/// The index of the first `b` in `h` at or after `from`, eight bytes at a
/// time: the last (short) stretch is read as the string's last eight bytes,
/// with the lanes before `from` masked off.
#[inline(always)]
fn find_byte(h: &[u8], from: usize, b: u8) -> Option<usize> {
    let n = h.len();
    let pattern = u64::from_le_bytes([b; 8]);
    let word = |i: usize| u64::from_le_bytes(h[i..i + 8].try_into().unwrap_or([0; 8])) ^ pattern;
    let mut i = from;
    while i + 8 <= n {
        let z = zero_lanes(word(i));
        if z != 0 {
            return Some(i + (z.trailing_zeros() / 8) as usize);
        }
        i += 8;
    }
    if i >= n {
        return None;
    }
    if n >= 8 {
        let base = n - 8;
        // Lanes below `i - base` (at most 7) were searched already or lie
        // before `from`.
        let z = zero_lanes(word(base)) & (u64::MAX << (8 * (i - base)));
        return (z != 0).then(|| base + (z.trailing_zeros() / 8) as usize);
    }
    h[i..].iter().position(|&x| x == b).map(|p| i + p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_on_gives_what_str_split_gives() {
        let mut cases: Vec<String> = [
            "",
            " ",
            "  ",
            "a",
            "a b",
            "a  b",
            " a b ",
            "to be or not to be, that is the question",
            "w1x2 w3x4 w5x6 w7x8 w9x0 w1x1",
            "exactly8",
            "exactly8 ",
            " exactly8",
            "caf\u{e9} \u{65e5}\u{672c} \u{1f600}  x",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        // Spaces at every place of every length up to 40.
        for n in 0..=40usize {
            for at in 0..n {
                let mut s = "x".repeat(n);
                s.replace_range(at..at + 1, " ");
                cases.push(s.clone());
                if at + 3 < n {
                    s.replace_range(at + 3..at + 4, " ");
                    cases.push(s);
                }
            }
        }
        for s in &cases {
            for sep in [' ', ',', 'x', '\u{e9}'] {
                let fast: Vec<&str> = split_on(s, sep).collect();
                let plain: Vec<&str> = s.split(sep).collect();
                assert_eq!(fast, plain, "{s:?} on {sep:?}");
            }
        }
    }

    #[test]
    fn zero_lanes_marks_exactly_the_zero_bytes() {
        for x in [
            0u64,
            u64::MAX,
            0x0100_0000_0000_0001,
            0x0001_0100_0000_0100,
            0x8000_0000_0000_0080,
            0x0101_0101_0101_0100,
        ] {
            let want = x
                .to_le_bytes()
                .iter()
                .enumerate()
                .filter(|(_, b)| **b == 0)
                .fold(0u64, |a, (i, _)| a | 0x80 << (8 * i));
            assert_eq!(zero_lanes(x), want, "{x:#018x}");
        }
    }
}
