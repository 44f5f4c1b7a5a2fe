//! Where checkpoints are kept: the [`CheckpointStore`] trait (named
//! objects, each written once, whole or not at all) and its local
//! filesystem implementation, [`LocalStore`]. Object storage (S3 and
//! compatible, with conditional puts) implements the same four calls.

use crate::error::{Error, Result};
use std::io::Write;
use std::path::{Path, PathBuf};

/// A store of named objects that are written once. Names are flat
/// (`checkpoint-1700000000000`), made of ASCII letters, digits, `-`, `_`
/// and `.`, and never start with `.`.
///
/// `put_if_absent` is what makes a store fit for checkpoints: two writers
/// of one job (a restarted process and the one it replaced, or two
/// workers in cluster mode) cannot both believe they wrote the same
/// object. A store that cannot do it cannot hold a cluster job's
/// checkpoints.
pub trait CheckpointStore: Send + Sync + std::fmt::Debug {
    /// Writes `bytes` as `name` unless an object of that name exists:
    /// `Ok(true)` when written, `Ok(false)` when it was there already
    /// (left untouched). Readers see the whole object or none of it, and
    /// once this returns `Ok(true)` the object survives a crash.
    fn put_if_absent(&self, name: &str, bytes: &[u8]) -> Result<bool>;

    /// [`CheckpointStore::put_if_absent`] of several objects, which a
    /// store may make durable together (the local store syncs its
    /// directory once). Each is written whole or not at all, but a crash
    /// may keep some and lose others.
    fn put_all_if_absent(&self, objects: &[(String, Vec<u8>)]) -> Result<Vec<bool>> {
        objects
            .iter()
            .map(|(name, bytes)| self.put_if_absent(name, bytes))
            .collect()
    }

    /// The object `name`, or `None` when there is none.
    fn get(&self, name: &str) -> Result<Option<Vec<u8>>>;

    /// The names starting with `prefix`, sorted.
    fn list(&self, prefix: &str) -> Result<Vec<String>>;

    /// Removes `name`; removing what is not there is no error.
    fn delete(&self, name: &str) -> Result<()>;

    /// Where object `name` is, for messages (`/data/ck/checkpoint-1000`).
    fn locate(&self, name: &str) -> String;
}

/// Checks that `name` is a flat object name (see [`CheckpointStore`]).
pub(crate) fn check_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(Error::Internal(format!(
            "`{name}` is not a checkpoint object name"
        )))
    }
}

/// A [`CheckpointStore`] in a local directory: one file per object,
/// written to a hidden temporary file, fsynced, linked to its name (which
/// fails if the name is taken, so nothing is ever replaced), and the
/// directory fsynced.
#[derive(Debug, Clone)]
pub struct LocalStore {
    dir: PathBuf,
}

impl LocalStore {
    /// The store in `dir`, created if needed.
    pub fn open(dir: impl AsRef<Path>) -> Result<LocalStore> {
        let dir = dir.as_ref().to_path_buf();
        std::fs::create_dir_all(&dir).map_err(|e| {
            Error::io(
                format!("creating the checkpoint directory {}", dir.display()),
                e,
            )
        })?;
        Ok(LocalStore { dir })
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn path(&self, name: &str) -> Result<PathBuf> {
        check_name(name)?;
        Ok(self.dir.join(name))
    }
}

impl LocalStore {
    /// Writes `bytes` to a synced temporary file and links it to `name`
    /// unless that is taken; the directory is not synced.
    fn link_new(&self, name: &str, bytes: &[u8]) -> Result<bool> {
        let path = self.path(name)?;
        let tmp = self.dir.join(format!(".{name}.{}.tmp", std::process::id()));
        let write = || -> std::io::Result<bool> {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(bytes)?;
            f.sync_all()?;
            let linked = match std::fs::hard_link(&tmp, &path) {
                Ok(()) => true,
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => false,
                Err(e) => return Err(e),
            };
            std::fs::remove_file(&tmp)?;
            Ok(linked)
        };
        write()
            .inspect_err(|_| {
                let _ = std::fs::remove_file(&tmp);
            })
            .map_err(|e| Error::io(format!("writing {}", path.display()), e))
    }

    fn sync_dir(&self) -> Result<()> {
        std::fs::File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| Error::io(format!("syncing {}", self.dir.display()), e))
    }
}

impl CheckpointStore for LocalStore {
    fn put_if_absent(&self, name: &str, bytes: &[u8]) -> Result<bool> {
        let linked = self.link_new(name, bytes)?;
        self.sync_dir()?;
        Ok(linked)
    }

    fn put_all_if_absent(&self, objects: &[(String, Vec<u8>)]) -> Result<Vec<bool>> {
        let linked = objects
            .iter()
            .map(|(name, bytes)| self.link_new(name, bytes))
            .collect::<Result<Vec<_>>>()?;
        if !objects.is_empty() {
            self.sync_dir()?;
        }
        Ok(linked)
    }

    fn get(&self, name: &str) -> Result<Option<Vec<u8>>> {
        let path = self.path(name)?;
        match std::fs::read(&path) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io(format!("reading {}", path.display()), e)),
        }
    }

    fn list(&self, prefix: &str) -> Result<Vec<String>> {
        let entries = std::fs::read_dir(&self.dir).map_err(|e| {
            Error::io(
                format!("listing the checkpoint directory {}", self.dir.display()),
                e,
            )
        })?;
        let mut names: Vec<String> = entries
            .flatten()
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|n| n.starts_with(prefix) && check_name(n).is_ok())
            .collect();
        names.sort();
        Ok(names)
    }

    fn delete(&self, name: &str) -> Result<()> {
        let path = self.path(name)?;
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io(format!("removing {}", path.display()), e)),
        }
    }

    fn locate(&self, name: &str) -> String {
        self.dir.join(name).display().to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn objects_are_written_once_read_listed_and_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::open(dir.path().join("ck")).unwrap();
        assert_eq!(store.get("a-1").unwrap(), None);
        assert!(store.put_if_absent("a-1", b"one").unwrap());
        assert!(
            !store.put_if_absent("a-1", b"two").unwrap(),
            "never replaced"
        );
        assert_eq!(store.get("a-1").unwrap().as_deref(), Some(&b"one"[..]));
        assert!(store.put_if_absent("a-2", b"").unwrap());
        assert!(store.put_if_absent("b-1", b"x").unwrap());
        assert_eq!(store.list("a-").unwrap(), ["a-1", "a-2"]);
        assert_eq!(store.list("").unwrap(), ["a-1", "a-2", "b-1"]);
        store.delete("a-1").unwrap();
        store.delete("a-1").unwrap();
        assert_eq!(store.list("a-").unwrap(), ["a-2"]);
        // No temporary file is left behind, and none is listed.
        let files = std::fs::read_dir(store.dir()).unwrap().count();
        assert_eq!(files, 2);
    }

    #[test]
    fn names_that_could_leave_the_store_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::open(dir.path()).unwrap();
        for bad in ["", "../x", "a/b", ".hidden", "a b"] {
            let e = store.put_if_absent(bad, b"x").unwrap_err().to_string();
            assert!(e.contains("not a checkpoint object name"), "{bad}: {e}");
        }
    }
}
