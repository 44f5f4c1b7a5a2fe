//! Small helpers: the time, name and path checks, tokens, directory sizes.

use crate::{ApiError, ApiResult};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// A name for a tenant, plugin or job: 1–64 of `[A-Za-z0-9_-]`.
pub(crate) fn check_name(what: &str, name: &str) -> ApiResult<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(ApiError::bad(format!(
            "{what} name `{name}` is not allowed: use 1 to 64 letters, digits, `-` or `_`"
        )))
    }
}

/// A relative path that stays where it is put (no `..`, not absolute).
pub(crate) fn check_relative(path: &str) -> ApiResult<PathBuf> {
    let p = Path::new(path);
    let ok = !path.is_empty()
        && p.components()
            .all(|c| matches!(c, std::path::Component::Normal(_)));
    if ok {
        Ok(p.to_path_buf())
    } else {
        Err(ApiError::bad(format!(
            "file `{path}`: use a relative path inside the job's directory (no `..`, not absolute)"
        )))
    }
}

/// A fresh random token (`slt_` and 48 hex digits).
pub fn new_token() -> ApiResult<String> {
    use std::io::Read;
    let mut bytes = [0u8; 24];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .map_err(|e| ApiError::internal(format!("reading /dev/urandom for a token: {e}")))?;
    Ok(format!("slt_{}", hex::encode(bytes)))
}

pub(crate) fn token_hash(token: &str) -> String {
    sluice::plugin::content_hash(token.as_bytes())
}

/// Compares without stopping at the first difference.
pub(crate) fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

pub(crate) fn dir_size(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => dir_size(&e.path()),
            Ok(t) if t.is_file() => e.metadata().map_or(0, |m| m.len()),
            _ => 0,
        })
        .sum()
}
