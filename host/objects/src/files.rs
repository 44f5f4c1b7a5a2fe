//! `save_as_text_files` and `save_as_object_files` to object storage,
//! exactly once.
//!
//! A batch at time *t* is written under `prefix-<t ms>[.suffix]/` in
//! Spark's layout: `part-00000` … one per partition, then an empty
//! `_SUCCESS`. Every object is put create-only (`If-None-Match: *`) and the
//! marker last, so a reader that finds `_SUCCESS` finds every part whole.
//! A batch run again after a crash finds its marker and writes nothing;
//! one whose earlier run died before the marker keeps the parts that run
//! wrote (the re-run recomputes the same batch from the same logged input)
//! and writes the rest and the marker. Nothing is ever overwritten, so of
//! two processes writing one job's output the first part wins and neither
//! can replace what the other committed.

use crate::bucket::Bucket;
use crate::url::{S3Settings, S3Url};
use sluice_core::error::{Error, Result};
use sluice_core::rdd::Rdd;
use sluice_core::sink::text::batch_dir_name;
use sluice_core::sink::{Output, PartFormat};
use sluice_core::time::BatchTime;

/// The marker written after a batch's parts.
pub const SUCCESS: &str = "_SUCCESS";

/// An output of part files in object storage (see the module's docs).
#[derive(Debug)]
pub struct S3Files {
    /// The bucket at the prefix's parent.
    bucket: Bucket,
    /// The prefix's last segment: batch directories are `name-<ms>`.
    name: String,
    suffix: Option<String>,
    format: PartFormat,
    url: S3Url,
}

impl S3Files {
    /// Batches of `format` under `url` (`s3://bucket/path/name`: batch
    /// directories `path/name-<ms>[.suffix]`), reached as `settings` say.
    pub fn new(
        url: &S3Url,
        settings: &S3Settings,
        format: PartFormat,
        suffix: Option<&str>,
    ) -> Result<S3Files> {
        let (parent, name) = match url.prefix.rsplit_once('/') {
            Some((parent, name)) => (parent, name),
            None => ("", url.prefix.as_str()),
        };
        if name.is_empty() {
            return Err(Error::Plan(format!(
                "{} names no prefix for the batches' directories (use s3://{}/NAME)",
                url, url.bucket
            )));
        }
        let at = S3Url {
            bucket: url.bucket.clone(),
            prefix: parent.to_string(),
        };
        Ok(S3Files {
            bucket: Bucket::open(&at, settings)?,
            name: name.to_string(),
            suffix: suffix.filter(|s| !s.is_empty()).map(str::to_string),
            format,
            url: url.clone(),
        })
    }

    /// The directory of the batch at `time`, relative to the bucket's prefix.
    fn batch_dir(&self, time: BatchTime) -> String {
        batch_dir_name(&self.name, self.suffix.as_deref(), time)
    }
}

impl Output for S3Files {
    fn describe(&self) -> String {
        let url = self.url.to_string();
        let url = url.trim_end_matches('/');
        match &self.suffix {
            Some(s) => format!("{} {url} {s}", self.format.operation()),
            None => format!("{} {url}", self.format.operation()),
        }
    }

    fn emit(&mut self, time: BatchTime, _index: u64, rdd: &Rdd) -> Result<()> {
        let dir = self.batch_dir(time);
        let marker = format!("{dir}/{SUCCESS}");
        if self.bucket.exists(&marker)? {
            return Ok(());
        }
        let mut parts = Vec::with_capacity(rdd.partitions.len());
        for (i, b) in rdd.partitions.iter().enumerate() {
            let mut bytes = Vec::new();
            self.format
                .write(&mut bytes, b)
                .map_err(|e| Error::io(format!("rendering batch {time} for {}", self.url), e))?;
            parts.push((format!("{dir}/part-{i:05}"), bytes));
        }
        self.bucket.put_all_if_absent(parts)?;
        self.bucket.put_if_absent(&marker, &[])?;
        Ok(())
    }
}
