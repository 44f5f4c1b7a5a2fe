//! Sluice on object storage: S3 and S3-compatible servers (MinIO, R2,
//! SeaweedFS, moto, ...), reached through the `object_store` crate.
//!
//! - [`S3Url`] and [`S3Settings`]: where (`s3://bucket/prefix`) and how
//!   (endpoint, region, credentials, addressing style);
//! - [`Bucket`]: a blocking client of one bucket under one prefix, for the
//!   engine's synchronous threads (its requests run on one shared tokio
//!   runtime);
//! - [`S3Store`]: the engine's [`sluice_core::checkpoint::CheckpointStore`]
//!   on a bucket, whose create-only puts (`If-None-Match: *`) keep two
//!   processes that think they own a job from both committing a checkpoint;
//! - [`S3Files`]: `save_as_text_files` / `save_as_object_files` to a
//!   bucket, exactly once (create-only parts, then a `_SUCCESS` marker that
//!   a re-run batch finds);
//! - [`S3Dir`]: the objects under a prefix as a `text_file_stream`'s
//!   files (Spark's `textFileStream` on S3).

mod bucket;
mod checkpoint;
mod files;
mod profile;
mod source;
mod url;

pub use bucket::{Bucket, ObjectInfo};
pub use checkpoint::S3Store;
pub use files::{S3Files, SUCCESS};
pub use source::S3Dir;
pub use url::{S3Settings, S3Url};
