//! Where lines end in a byte stream arriving in chunks, as Spark's text
//! sources see it: `socketTextStream` reads with Java's
//! `BufferedReader.readLine` and `textFileStream` with Hadoop's
//! `LineRecordReader`, and both end a line at `\n`, at `\r`, or at `\r\n`
//! (one terminator, even when a chunk boundary falls between its two bytes).

/// The line-end state carried from one chunk to the next.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct LineEnds {
    /// The previous chunk ended with a `\r` terminator, so a `\n` starting
    /// the next chunk belongs to it.
    after_cr: bool,
}

impl LineEnds {
    /// Calls `line` with each line that ends in `chunk`, without its
    /// terminator (the first continues whatever the previous chunk left
    /// unterminated), and returns the bytes after the last terminator: the
    /// start of a line still to come.
    pub(crate) fn split<'a>(
        &mut self,
        chunk: &'a [u8],
        mut line: impl FnMut(&'a [u8]),
    ) -> &'a [u8] {
        // The position of a `\n` that completes a `\r\n`.
        let mut lf_of_crlf = self.after_cr.then_some(0);
        let mut start = 0;
        for pos in memchr::memchr2_iter(b'\n', b'\r', chunk) {
            if chunk[pos] == b'\n' && lf_of_crlf == Some(pos) {
                start = pos + 1;
                continue;
            }
            line(&chunk[start..pos]);
            start = pos + 1;
            if chunk[pos] == b'\r' {
                lf_of_crlf = Some(start);
            }
        }
        self.after_cr = lf_of_crlf == Some(chunk.len());
        &chunk[start..]
    }

    /// A new stream begins (a new connection, a new file).
    pub(crate) fn reset(&mut self) {
        self.after_cr = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(chunks: &[&[u8]]) -> Vec<String> {
        let mut ends = LineEnds::default();
        let mut out = Vec::new();
        let mut partial = Vec::new();
        for chunk in chunks {
            let rest = ends.split(chunk, |l| {
                partial.extend_from_slice(l);
                out.push(String::from_utf8(std::mem::take(&mut partial)).unwrap());
            });
            partial.extend_from_slice(rest);
        }
        if !partial.is_empty() {
            out.push(String::from_utf8(partial).unwrap());
        }
        out
    }

    #[test]
    fn every_terminator_java_reads_for_every_chunking() {
        // What java.io.BufferedReader.readLine returns for this text.
        let text: &[u8] = b"a\nb\r\nc\rd\n\re\r\r\nf\n\n\r\r\ng";
        let want = ["a", "b", "c", "d", "", "e", "", "f", "", "", "", "g"];
        for a in 0..=text.len() {
            for b in a..=text.len() {
                assert_eq!(
                    lines(&[&text[..a], &text[a..b], &text[b..]]),
                    want,
                    "chunks split at {a} and {b}"
                );
            }
        }
        let bytes: Vec<&[u8]> = text.chunks(1).collect();
        assert_eq!(lines(&bytes), want);
    }

    #[test]
    fn a_lf_after_a_reset_is_a_line_of_its_own() {
        let mut ends = LineEnds::default();
        let mut n = 0;
        assert!(ends.split(b"x\r", |_| n += 1).is_empty());
        ends.reset();
        ends.split(b"\n", |_| n += 1);
        assert_eq!(n, 2);
    }
}
