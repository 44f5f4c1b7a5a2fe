//! `text_file_stream` on object storage: the objects under a prefix as
//! the engine's [`FileStore`].

use crate::bucket::Bucket;
use crate::url::{S3Settings, S3Url};
use sluice_core::error::Result;
use sluice_core::receiver::file_store::FileStore;
use std::ffi::{OsStr, OsString};
use std::time::{Duration, SystemTime};

/// The objects directly under `s3://bucket/prefix/` watched by a file
/// source: every page of the listing each batch, objects in nested
/// "folders" and names starting with `.` or `_` skipped, each object
/// streamed in the chunks the server sends. Failures are passing ones
/// ([`FileStore::remote`]): a listing or read that fails after one quick
/// retry (within 2 s) is reported and tried again at the next batch.
#[derive(Debug)]
pub struct S3Dir {
    bucket: Bucket,
}

impl S3Dir {
    /// The objects under `url`, reached as `settings` say.
    pub fn new(url: &S3Url, settings: &S3Settings) -> Result<S3Dir> {
        Ok(S3Dir {
            // One quick retry: a batch waits on this, and the next batch
            // tries again anyway.
            bucket: Bucket::open_retrying(url, settings, 1, Duration::from_secs(2))?,
        })
    }
}

impl FileStore for S3Dir {
    fn describe(&self) -> String {
        self.bucket.locate("")
    }

    fn locate(&self, name: &OsStr) -> String {
        self.bucket.locate(&name.to_string_lossy())
    }

    fn list(&self) -> Result<Vec<(SystemTime, OsString)>> {
        Ok(self
            .bucket
            .list_objects()?
            .into_iter()
            .filter(|o| !o.name.starts_with('.') && !o.name.starts_with('_'))
            .map(|o| (o.modified, OsString::from(o.name)))
            .collect())
    }

    fn read(&self, name: &OsStr, chunk: &mut dyn FnMut(&[u8]) -> Result<()>) -> Result<bool> {
        self.bucket.read_chunks(&name.to_string_lossy(), chunk)
    }

    fn remote(&self) -> bool {
        true
    }
}
