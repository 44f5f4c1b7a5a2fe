//! `sluice cat`: object files (`save_as_object_files`) printed as JSON lines.

use anyhow::Result;
use std::path::PathBuf;

/// Prints the elements of batch directories or part files, one JSON value
/// per line.
pub(crate) fn cat(paths: &[PathBuf]) -> Result<()> {
    use sluice::render::{element, to_json};
    use sluice::sink::objects::{read_object_dir, read_object_file};
    use std::io::Write;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    for path in paths {
        let elements = if path.is_dir() {
            read_object_dir(path)?
        } else {
            read_object_file(path)?
        };
        for (k, v) in elements {
            writeln!(out, "{}", to_json(&element(&k, &v)))?;
        }
    }
    out.flush()?;
    Ok(())
}
