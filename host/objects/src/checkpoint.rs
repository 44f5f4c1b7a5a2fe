//! The checkpoint store on a bucket.

use crate::bucket::Bucket;
use sluice_core::checkpoint::CheckpointStore;
use sluice_core::error::Result;

/// A [`CheckpointStore`] on object storage: one object per checkpoint
/// object under the bucket's prefix, written with a create-only put, so
/// that of two processes writing the same checkpoint only one succeeds
/// and the other learns it (S3 answers `412 Precondition Failed`).
/// Object puts are atomic: a reader sees a whole object or none.
#[derive(Debug, Clone)]
pub struct S3Store {
    bucket: Bucket,
}

impl S3Store {
    /// The store on `bucket`.
    pub fn new(bucket: Bucket) -> S3Store {
        S3Store { bucket }
    }
}

impl CheckpointStore for S3Store {
    fn put_if_absent(&self, name: &str, bytes: &[u8]) -> Result<bool> {
        self.bucket.put_if_absent(name, bytes)
    }

    fn get(&self, name: &str) -> Result<Option<Vec<u8>>> {
        self.bucket.get(name)
    }

    fn list(&self, prefix: &str) -> Result<Vec<String>> {
        self.bucket.list(prefix)
    }

    fn delete(&self, name: &str) -> Result<()> {
        self.bucket.delete(name)
    }

    fn locate(&self, name: &str) -> String {
        self.bucket.locate(name)
    }
}
