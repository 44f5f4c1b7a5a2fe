//! Small file-system helpers shared by the durable writers.

use std::io::Write;
use std::path::Path;

/// Writes `bytes` to `path` atomically: to the hidden temporary
/// `.NAME.tmp` beside it, fsynced, renamed over `path`, then the directory
/// fsynced. On error the temporary file is removed and `path` is untouched.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(path.file_name().unwrap_or_default());
    tmp_name.push(".tmp");
    let tmp = dir.join(tmp_name);
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        std::fs::File::open(dir)?.sync_all()
    };
    write().inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}

/// Runs `write` until it succeeds: each failure (disk full, I/O error) is
/// reported and retried after 100 ms, doubling to 5 s, so nothing goes on
/// as if it had been written. Gives the error back once `give_up()` holds.
pub fn retry_write<T, E: std::fmt::Display>(
    what: &str,
    batch_ms: i64,
    give_up: impl Fn() -> bool,
    mut write: impl FnMut() -> Result<T, E>,
) -> Result<T, E> {
    let mut delay = std::time::Duration::from_millis(100);
    loop {
        match write() {
            Ok(v) => return Ok(v),
            Err(e) if give_up() => return Err(e),
            Err(e) => {
                tracing::error!(
                    batch = batch_ms,
                    "{what} not written, retrying in {delay:?}: {e}"
                );
                std::thread::sleep(delay);
                delay = (delay * 2).min(std::time::Duration::from_secs(5));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_the_file_and_leaves_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        write_atomically(&p, b"one").unwrap();
        write_atomically(&p, b"two").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
