//! `text_file_stream(dir)`: new files in a directory, one batch of lines per
//! batch interval, each file read once.
//!
//! Policy:
//! - The directory is listed at every batch; files that appeared since the
//!   last listing are read whole into that batch, in order of modification
//!   time then name. Write files elsewhere and move them in with an atomic
//!   rename, so a half-written file is never read.
//! - Files present when the stream starts are ignored unless
//!   `include_existing` is set (Spark's `newFilesOnly`).
//! - A file is new by its *name*, not its modification time: unlike Spark, a
//!   file moved in with an old mtime is still read.
//! - The files may be in a local directory or in object storage (a
//!   [`FileStore`]; `s3://bucket/prefix/` from `sluice-objects`): the same
//!   rules hold for both. A store that cannot be listed fails the stream
//!   when it is local; a remote one gives empty batches meanwhile, each
//!   failure reported, and its new files come in the first batch that
//!   lists it again — unless it refuses the credentials, which fails the
//!   stream naming the bucket.
//! - `max_files` bounds the files read per batch (oldest first; the rest
//!   wait for the next batches).
//! - Files are read in 1 MiB chunks and split into lines as they arrive,
//!   so a large file is held once, as the batch's lines.
//! - Nested directories are not watched; names starting with `.` or `_`
//!   (temporary files, `_SUCCESS` markers) are skipped.
//! - Lines end at `\n`, `\r` or `\r\n`, as Hadoop reads them; non-UTF-8 bytes are
//!   replaced with U+FFFD and reported.
//! - A file that vanishes before it is read is reported and skipped; one
//!   that cannot be read is reported and skipped for good when local, and
//!   tried again at the next batch when remote (its lines read so far are
//!   taken back). The batch goes on.
//! - Memory stays bounded by the directory: names no longer listed are
//!   forgotten, so a file removed and later re-added under the same name is
//!   read again.
//! - With a *ledger* (a file, by default hidden in the watched directory
//!   for job specs) the names read are remembered across restarts: the
//!   ledger is rewritten atomically (temp file, fsync, rename) after every
//!   batch that read or forgot files. A restart reads nothing already in the
//!   ledger and everything else, so files that arrived while the job was
//!   down are read in its first batch; files ignored at the very first start
//!   are recorded too and stay ignored. A ledger that cannot be written is
//!   warned about and the names stay in memory. Names that are not UTF-8 are
//!   remembered in memory only. Without a checkpoint a crash between reading
//!   a file and finishing its batch loses that file; with one, the names read
//!   are part of each checkpoint and a resumed job reads again the files of a
//!   batch cut short.
//! - With a checkpoint, each batch's file names go into the batch log, and a
//!   batch re-run on recovery reads exactly its files again. Batches that
//!   were due while the job was down (Spark's down-time batches) each take
//!   the files modified by their own time (a file is in the first down-time
//!   batch at or after its modification time), not all in the first.

use super::Source;
use super::file_store::{FileStore, LineSplitter, truncate};
use crate::error::{Error, Result};
use crate::rdd::Rdd;
use crate::time::BatchTime;
use sluice_sdk::Column;
use std::collections::HashSet;
use std::ffi::OsString;
use std::path::PathBuf;
use std::time::SystemTime;

pub(crate) struct FileSource {
    store: Box<dyn FileStore>,
    include_existing: bool,
    partitions: usize,
    /// At most this many files per batch.
    max_files: usize,
    /// A remote store that could not be listed when the stream started:
    /// the names read before (checkpoint or ledger) and the start time,
    /// for the first listing that works.
    pending_start: Option<(Option<HashSet<OsString>>, SystemTime)>,
    seen: HashSet<OsString>,
    /// Where the names read are remembered across restarts.
    ledger: Option<PathBuf>,
    /// The names read, from a checkpoint (wins over the ledger).
    restored: Option<HashSet<OsString>>,
    /// Files read so far (for stats and tests).
    pub(crate) files_read: u64,
    /// The names the last batch read, in order (its batch-log record).
    last_batch: Vec<String>,
    /// Files that could not be read, for listeners.
    errors: Vec<String>,
    /// Resumed after a stop at this time: batches before it are down-time
    /// batches, each taking the files modified by its own time.
    catch_up_until: Option<i64>,
}

impl FileSource {
    #[cfg(test)]
    pub(crate) fn new(dir: PathBuf, include_existing: bool, partitions: usize) -> Self {
        Self::on(
            Box::new(super::file_store::LocalDir(dir)),
            include_existing,
            partitions,
        )
    }

    /// The files of `store`.
    pub(crate) fn on(store: Box<dyn FileStore>, include_existing: bool, partitions: usize) -> Self {
        FileSource {
            store,
            include_existing,
            partitions,
            max_files: usize::MAX,
            pending_start: None,
            seen: HashSet::new(),
            ledger: None,
            restored: None,
            files_read: 0,
            last_batch: Vec::new(),
            errors: Vec::new(),
            catch_up_until: None,
        }
    }

    /// Reads at most `max` files per batch.
    pub(crate) fn with_max_files(mut self, max: usize) -> Self {
        self.max_files = max.max(1);
        self
    }

    /// Remembers the names read in `ledger` (see the module's policy).
    pub(crate) fn with_ledger(mut self, ledger: PathBuf) -> Self {
        self.ledger = Some(ledger);
        self
    }

    /// The names in the ledger, or `None` when there is no ledger yet.
    fn load_ledger(&self) -> Result<Option<HashSet<OsString>>> {
        let Some(path) = &self.ledger else {
            return Ok(None);
        };
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => {
                return Err(Error::io(
                    format!("reading the file ledger {}", path.display()),
                    e,
                ));
            }
        };
        let mut names = HashSet::new();
        for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.is_empty()) {
            let name: String = serde_json::from_str(line).map_err(|e| Error::Input {
                path: path.clone(),
                message: format!("line {}: not a file name in JSON: {e}", i + 1),
            })?;
            names.insert(OsString::from(name));
        }
        Ok(Some(names))
    }

    /// Rewrites the ledger with the names remembered now.
    fn save_ledger(&self) {
        let Some(path) = &self.ledger else { return };
        let mut names: Vec<&str> = self.seen.iter().filter_map(|n| n.to_str()).collect();
        names.sort_unstable();
        let mut text = String::new();
        for n in names {
            text.push_str(&serde_json::Value::from(n).to_string());
            text.push('\n');
        }
        if let Err(e) = crate::fsutil::write_atomically(path, text.as_bytes()) {
            tracing::warn!(ledger = %path.display(), "cannot write the file ledger (files read are remembered in memory only): {e}");
        }
    }

    /// Candidate files, oldest first (then by name).
    fn list(&self) -> Result<Vec<(SystemTime, OsString)>> {
        let mut files = self.store.list()?;
        files.sort();
        Ok(files)
    }

    /// [`Self::list`], or `None` with the failure reported when the
    /// store is remote (its files wait for a listing that works).
    fn list_or_report(&mut self, time: BatchTime) -> Result<Option<Vec<(SystemTime, OsString)>>> {
        match self.list() {
            Ok(files) => Ok(Some(files)),
            Err(e) if self.store.passing(&e) => {
                tracing::warn!(files = %self.store.describe(), batch = time.millis(), "cannot list the watched files (tried again next batch): {e}");
                self.errors.push(format!("{e} (tried again next batch)"));
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// Decides what was read before this start: exactly the names of
    /// `read` (a checkpoint's or the ledger's) when there are some, else
    /// every file listed unless `include_existing` — with a `started`
    /// time (a remote store listed late), only files modified before it.
    fn first_listing(
        &mut self,
        files: &[(SystemTime, OsString)],
        read: Option<HashSet<OsString>>,
        started: Option<SystemTime>,
    ) {
        self.seen = match read {
            Some(read) => files
                .iter()
                .filter(|(_, n)| read.contains(n))
                .map(|(_, n)| n.clone())
                .collect(),
            None if self.include_existing => HashSet::new(),
            None => files
                .iter()
                .filter(|(mtime, _)| started.is_none_or(|s| *mtime < s))
                .map(|(_, n)| n.clone())
                .collect(),
        };
        self.save_ledger();
    }
}

impl Source for FileSource {
    fn describe(&self) -> String {
        format!("text files in {}", self.store.describe())
    }
    fn partitions(&self) -> usize {
        self.partitions
    }
    fn start(&mut self) -> Result<()> {
        // Resumed from a checkpoint: exactly the names it had read; else
        // after a restart with a ledger: everything not read before is new.
        let read = match self.restored.take() {
            Some(read) => Some(read),
            None => self.load_ledger()?,
        };
        match self.list() {
            Ok(files) => self.first_listing(&files, read, None),
            Err(e) if self.store.passing(&e) => {
                tracing::warn!(files = %self.store.describe(), "cannot list the watched files at start (tried again every batch): {e}");
                self.errors.push(format!("{e} (tried again next batch)"));
                self.pending_start = Some((read, SystemTime::now()));
            }
            Err(e) => return Err(e),
        }
        Ok(())
    }

    fn next_batch(&mut self, time: BatchTime) -> Result<Rdd> {
        let Some(files) = self.list_or_report(time)? else {
            return self.read_files(time, Vec::new(), false, false);
        };
        if let Some((read, started)) = self.pending_start.take() {
            self.first_listing(&files, read, Some(started));
        }
        let listed: HashSet<&OsString> = files.iter().map(|(_, n)| n).collect();
        // Forget names that are gone: memory stays bounded by the directory.
        let before = self.seen.len();
        self.seen.retain(|n| listed.contains(n));
        let changed = self.seen.len() != before;
        // A down-time batch takes only what was modified by its own time.
        let cutoff = self
            .catch_up_until
            .filter(|&until| time.millis() < until)
            .map(|_| {
                std::time::UNIX_EPOCH
                    + std::time::Duration::from_millis(time.millis().max(0) as u64)
            });
        let names: Vec<OsString> = files
            .iter()
            .filter(|(mtime, name)| !self.seen.contains(name) && cutoff.is_none_or(|c| *mtime <= c))
            .take(self.max_files)
            .map(|(_, n)| n.clone())
            .collect();
        self.read_files(time, names, changed, false)
    }

    fn batch_record(&self) -> Vec<u8> {
        serde_json::to_vec(&self.last_batch).unwrap_or_default()
    }

    fn replay_batch(&mut self, time: BatchTime, record: &[u8]) -> Result<Rdd> {
        let names: Vec<String> = serde_json::from_slice(record).map_err(|e| {
            Error::Internal(format!(
                "a file source batch record is a JSON list of names: {e}"
            ))
        })?;
        let names = names.into_iter().map(OsString::from).collect();
        self.read_files(time, names, false, true)
    }

    fn take_errors(&mut self) -> Vec<String> {
        std::mem::take(&mut self.errors)
    }

    fn catch_up(&mut self, now: BatchTime) {
        self.catch_up_until = Some(now.millis());
    }

    fn position(&self) -> Option<Vec<u8>> {
        let mut names: Vec<&str> = self.seen.iter().filter_map(|n| n.to_str()).collect();
        names.sort_unstable();
        serde_json::to_vec(&names).ok()
    }

    fn restore(&mut self, position: &[u8]) -> Result<()> {
        let names: Vec<String> = serde_json::from_slice(position).map_err(|e| {
            Error::Internal(format!(
                "a file source position is a JSON list of names: {e}"
            ))
        })?;
        self.restored = Some(names.into_iter().map(OsString::from).collect());
        Ok(())
    }
}

impl FileSource {
    /// Reads the files `names` (in order) into the batch at `time` and
    /// remembers them as read. A file of a remote store that cannot be
    /// read is left for the next batch — or, in a batch re-run on
    /// recovery (`replaying`), which must read exactly its files, fails it.
    fn read_files(
        &mut self,
        time: BatchTime,
        names: Vec<OsString>,
        mut changed: bool,
        replaying: bool,
    ) -> Result<Rdd> {
        self.last_batch.clear();
        let mut lines = Column::new();
        for name in names {
            let before = lines.len();
            let mut split = LineSplitter::new(&mut lines);
            let read = self
                .store
                .read(&name, &mut |chunk| split.feed(chunk))
                .and_then(|found| Ok((found, split.finish()?)));
            let at = self.store.locate(&name);
            match read {
                Ok((true, invalid)) => {
                    self.files_read += 1;
                    if invalid > 0 {
                        tracing::warn!(file = %at, lines = invalid, "file is not valid UTF-8: invalid bytes replaced with U+FFFD");
                    }
                }
                Ok((false, _)) => {
                    tracing::warn!(file = %at, batch = time.millis(), "skipping a file that vanished before it was read");
                    self.errors
                        .push(format!("{}: vanished before it was read, skipped", at));
                }
                Err(e) if self.store.passing(&e) => {
                    truncate(&mut lines, before);
                    if replaying {
                        return Err(e);
                    }
                    tracing::warn!(file = %at, batch = time.millis(), "cannot read a file (tried again next batch): {e}");
                    self.errors.push(format!("{e} (tried again next batch)"));
                    continue;
                }
                // A remote store that refuses: no retry mends it.
                Err(e) if self.store.remote() => return Err(e),
                Err(e) => {
                    truncate(&mut lines, before);
                    tracing::warn!(file = %at, batch = time.millis(), "skipping a file that cannot be read: {e}");
                    self.errors
                        .push(format!("{}: cannot be read, skipped: {e}", at));
                }
            }
            if let Some(n) = name.to_str() {
                self.last_batch.push(n.to_string());
            }
            self.seen.insert(name);
            changed = true;
        }
        if changed {
            self.save_ledger();
        }
        Ok(Rdd::from_received(&lines, self.partitions))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::receiver::file_store::LocalDir;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering::SeqCst};

    fn lines_of(rdd: &Rdd) -> Vec<String> {
        let mut v: Vec<String> = rdd
            .elements()
            .map(|(_, v)| rmp_serde::from_slice(v).unwrap())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn reads_new_files_once_and_skips_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::write(d.join("old.txt"), "before start\n").unwrap();
        let mut s = FileSource::new(d.to_path_buf(), false, 2);
        s.start().unwrap();
        assert!(
            lines_of(&s.next_batch(BatchTime(1)).unwrap()).is_empty(),
            "files present at start are ignored"
        );

        std::fs::write(d.join(".a.tmp"), "a1\r\na2\n").unwrap();
        std::fs::rename(d.join(".a.tmp"), d.join("a.txt")).unwrap();
        std::fs::create_dir(d.join("nested")).unwrap();
        std::fs::write(d.join("nested").join("x.txt"), "nested\n").unwrap();
        std::fs::write(d.join("_SUCCESS"), "").unwrap();
        std::fs::write(d.join("bad.txt"), b"ok \xff\n").unwrap();
        assert_eq!(
            lines_of(&s.next_batch(BatchTime(2)).unwrap()),
            ["a1", "a2", "ok \u{fffd}"]
        );
        assert!(
            lines_of(&s.next_batch(BatchTime(3)).unwrap()).is_empty(),
            "each file is read once"
        );

        // Removed and re-added: a new file.
        std::fs::remove_file(d.join("a.txt")).unwrap();
        assert!(lines_of(&s.next_batch(BatchTime(4)).unwrap()).is_empty());
        std::fs::write(d.join("a.txt"), "again\n").unwrap();
        assert_eq!(lines_of(&s.next_batch(BatchTime(5)).unwrap()), ["again"]);
        assert_eq!(s.files_read, 3);
    }

    #[test]
    fn down_time_batches_take_the_files_of_their_own_interval() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let mut s = FileSource::new(d.to_path_buf(), false, 1);
        s.start().unwrap();
        let at = |ms: u64| std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms);
        for (name, mtime) in [("a", 1_000_500), ("b", 1_002_500), ("c", 1_010_000)] {
            let f = std::fs::File::create(d.join(name)).unwrap();
            std::io::Write::write_all(&mut &f, format!("{name}\n").as_bytes()).unwrap();
            f.set_modified(at(mtime)).unwrap();
        }
        // Resumed at 1005 s: batches before it are down-time batches.
        s.catch_up(BatchTime(1_005_000));
        let batch = |s: &mut FileSource, ms| lines_of(&s.next_batch(BatchTime(ms)).unwrap());
        assert_eq!(batch(&mut s, 1_001_000), ["a"]);
        assert!(batch(&mut s, 1_002_000).is_empty());
        assert_eq!(batch(&mut s, 1_003_000), ["b"]);
        assert_eq!(s.batch_record(), br#"["b"]"#);
        assert!(batch(&mut s, 1_004_000).is_empty());
        // Live again: everything new, whatever its time.
        assert_eq!(batch(&mut s, 1_005_000), ["c"]);
        // A batch re-run after a crash reads exactly its recorded files.
        let mut again = FileSource::new(d.to_path_buf(), false, 1);
        again.restore(br#"["a"]"#).unwrap();
        again.start().unwrap();
        let rdd = again
            .replay_batch(BatchTime(1_003_000), br#"["b"]"#)
            .unwrap();
        assert_eq!(lines_of(&rdd), ["b"]);
        assert_eq!(
            lines_of(&again.next_batch(BatchTime(1_004_000)).unwrap()),
            ["c"]
        );
    }

    #[test]
    fn include_existing_reads_files_present_at_start() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("old.txt"), "x\ny\n").unwrap();
        let mut s = FileSource::new(dir.path().to_path_buf(), true, 1);
        s.start().unwrap();
        assert_eq!(lines_of(&s.next_batch(BatchTime(1)).unwrap()), ["x", "y"]);
    }

    #[test]
    fn a_ledger_remembers_the_files_read_across_restarts() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let ledger = d.join(".ledger");
        std::fs::write(d.join("old.txt"), "before the first start\n").unwrap();
        let mut s = FileSource::new(d.to_path_buf(), false, 1).with_ledger(ledger.clone());
        s.start().unwrap();
        std::fs::write(d.join("a.txt"), "a\n").unwrap();
        assert_eq!(lines_of(&s.next_batch(BatchTime(1)).unwrap()), ["a"]);
        drop(s);
        // While the job is down: a new file arrives.
        std::fs::write(d.join("b.txt"), "b\n").unwrap();
        let mut s = FileSource::new(d.to_path_buf(), false, 1).with_ledger(ledger.clone());
        s.start().unwrap();
        assert_eq!(
            lines_of(&s.next_batch(BatchTime(2)).unwrap()),
            ["b"],
            "only the file that arrived while down; old.txt stays ignored, a.txt was read"
        );
        assert!(lines_of(&s.next_batch(BatchTime(3)).unwrap()).is_empty());
        // Even with include_existing, a restart reads nothing already read.
        let mut s = FileSource::new(d.to_path_buf(), true, 1).with_ledger(ledger.clone());
        s.start().unwrap();
        assert!(lines_of(&s.next_batch(BatchTime(4)).unwrap()).is_empty());
        // A damaged ledger is an error naming it, not a silent re-read.
        std::fs::write(&ledger, "not json\n").unwrap();
        let mut s = FileSource::new(d.to_path_buf(), false, 1).with_ledger(ledger.clone());
        let e = s.start().unwrap_err().to_string();
        assert!(e.contains(".ledger") && e.contains("line 1"), "{e}");
    }

    #[test]
    fn a_checkpointed_position_wins_over_the_ledger() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let ledger = d.join(".ledger");
        let mut s = FileSource::new(d.to_path_buf(), false, 1).with_ledger(ledger.clone());
        s.start().unwrap();
        std::fs::write(d.join("a.txt"), "a\n").unwrap();
        assert_eq!(lines_of(&s.next_batch(BatchTime(1)).unwrap()), ["a"]);
        let checkpointed = s.position().unwrap();
        std::fs::write(d.join("b.txt"), "b\n").unwrap();
        assert_eq!(lines_of(&s.next_batch(BatchTime(2)).unwrap()), ["b"]);
        // Crash before batch 2 was checkpointed: b.txt is in the ledger, not
        // in the checkpoint, and is read again.
        let mut s = FileSource::new(d.to_path_buf(), false, 1).with_ledger(ledger);
        s.restore(&checkpointed).unwrap();
        s.start().unwrap();
        assert_eq!(lines_of(&s.next_batch(BatchTime(2)).unwrap()), ["b"]);
    }

    /// A local directory that behaves as a remote store whose listing
    /// fails while `.1` is set and whose reads fail half-way while `.2` is.
    struct Flaky(LocalDir, Arc<AtomicBool>, Arc<AtomicBool>);

    impl FileStore for Flaky {
        fn describe(&self) -> String {
            self.0.describe()
        }
        fn locate(&self, name: &std::ffi::OsStr) -> String {
            self.0.locate(name)
        }
        fn list(&self) -> Result<Vec<(SystemTime, OsString)>> {
            if self.1.load(SeqCst) {
                return Err(Error::Internal("the store is down".into()));
            }
            self.0.list()
        }
        fn read(
            &self,
            name: &std::ffi::OsStr,
            chunk: &mut dyn FnMut(&[u8]) -> Result<()>,
        ) -> Result<bool> {
            if self.2.load(SeqCst) {
                chunk(b"a line of a read cut short\n")?;
                return Err(Error::Internal("the store went down".into()));
            }
            self.0.read(name, chunk)
        }
        fn remote(&self) -> bool {
            true
        }
    }

    #[test]
    fn a_remote_store_that_fails_loses_nothing_and_max_files_bounds_a_batch() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::write(d.join("old.txt"), "old\n").unwrap();
        let (list_down, read_down) = (
            Arc::new(AtomicBool::new(true)),
            Arc::new(AtomicBool::new(false)),
        );
        let store = Flaky(
            LocalDir(d.to_path_buf()),
            list_down.clone(),
            read_down.clone(),
        );
        let mut s = FileSource::on(Box::new(store), false, 1).with_max_files(2);
        // Down at start: no error but a report; old.txt (modified before
        // the start) stays ignored once the store answers.
        s.start().unwrap();
        assert_eq!(s.take_errors().len(), 1);
        std::thread::sleep(std::time::Duration::from_millis(20));
        for f in ["a", "b", "c"] {
            std::fs::write(d.join(f), format!("{f}\n")).unwrap();
        }
        assert!(lines_of(&s.next_batch(BatchTime(1)).unwrap()).is_empty());
        assert_eq!(s.take_errors().len(), 1, "the failed listing is reported");
        // Listed, but the reads fail half-way: their lines are taken back
        // and the files wait for the next batch.
        list_down.store(false, SeqCst);
        read_down.store(true, SeqCst);
        assert!(lines_of(&s.next_batch(BatchTime(2)).unwrap()).is_empty());
        assert_eq!(s.take_errors().len(), 2);
        assert_eq!(s.batch_record(), b"[]");
        read_down.store(false, SeqCst);
        // Two files a batch at most, oldest first.
        assert_eq!(lines_of(&s.next_batch(BatchTime(3)).unwrap()), ["a", "b"]);
        assert_eq!(lines_of(&s.next_batch(BatchTime(4)).unwrap()), ["c"]);
        assert!(lines_of(&s.next_batch(BatchTime(5)).unwrap()).is_empty());
        assert_eq!(s.files_read, 3);
        // A batch re-run on recovery must read its files: a failure fails it.
        read_down.store(true, SeqCst);
        let e = s.replay_batch(BatchTime(3), br#"["a"]"#).unwrap_err();
        assert!(e.to_string().contains("went down"), "{e}");
    }

    #[test]
    fn a_missing_directory_is_a_clear_error() {
        let mut s = FileSource::new(PathBuf::from("/nonexistent/inbox"), false, 1);
        let e = s.start().unwrap_err().to_string();
        assert!(e.contains("/nonexistent/inbox"), "{e}");
    }
}
