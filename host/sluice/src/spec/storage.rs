//! Where a job's checkpoints go: a local directory, or object storage
//! (`s3://bucket/prefix`, reached as the `[object_store]` section says)
//! with the batch logs and write-ahead logs in a local directory.

use super::sections::{JobSection, ObjectStoreSection};
use super::{Ctx, Overrides};
use crate::error::{Error, Result};
use sluice_objects::{Bucket, S3Settings, S3Store, S3Url};
use std::path::PathBuf;
use std::sync::Arc;
use toml::Spanned;

/// The checkpoint place a spec and its overrides name.
pub(super) enum Checkpoint {
    /// A local directory.
    Dir(PathBuf),
    /// Object storage, with the local directory of the logs.
    Objects {
        logs: PathBuf,
        store: Arc<dyn sluice_core::checkpoint::CheckpointStore>,
    },
}

/// `job.checkpoint` (or `--checkpoint`) as a place; `None` without one.
pub(super) fn checkpoint(
    cx: &Ctx<'_>,
    job: &JobSection,
    objects: Option<&Spanned<ObjectStoreSection>>,
    overrides: &Overrides,
) -> Result<Option<Checkpoint>> {
    let span = job.checkpoint.as_ref().map_or(0..0, |c| c.span());
    let named = match &overrides.checkpoint {
        Some(p) => p.to_string_lossy().into_owned(),
        None => match &job.checkpoint {
            Some(c) => c.get_ref().clone(),
            None => {
                if let Some(l) = &job.checkpoint_logs {
                    return cx.err(l.span(), "job.checkpoint_logs", "needs job.checkpoint");
                }
                if overrides.checkpoint_logs.is_some() {
                    return Err(Error::Plan(
                        "--checkpoint-logs needs a checkpoint in object storage (--checkpoint s3://…)".into(),
                    ));
                }
                return Ok(None);
            }
        },
    };
    if !named.contains("://") {
        if overrides.checkpoint_logs.is_some() {
            return Err(Error::Plan(format!(
                "--checkpoint-logs is for checkpoints in object storage; the checkpoint directory {named} holds its own logs"
            )));
        }
        if let Some(l) = &job.checkpoint_logs {
            return cx.err(
                l.span(),
                "job.checkpoint_logs",
                "is for checkpoints in object storage (job.checkpoint = \"s3://bucket/prefix\"); a local checkpoint directory holds its own logs",
            );
        }
        let dir = match &overrides.checkpoint {
            Some(p) => p.clone(),
            None => cx.resolve(&named),
        };
        return Ok(Some(Checkpoint::Dir(dir)));
    }
    let logs = match (&overrides.checkpoint_logs, &job.checkpoint_logs) {
        (Some(dir), _) => dir.clone(),
        (None, Some(logs)) => cx.resolve(logs.get_ref()),
        (None, None) => {
            return cx.err(
                span,
                "job.checkpoint",
                format!(
                    "checkpoints in {named} need job.checkpoint_logs (or --checkpoint-logs): a local directory for the batch logs and write-ahead logs"
                ),
            );
        }
    };
    let bucket = open(cx, objects, (&named, span, "job.checkpoint"), Bucket::open)?;
    Ok(Some(Checkpoint::Objects {
        logs,
        store: Arc::new(S3Store::new(bucket)),
    }))
}

/// What `text` — the `s3://` value of `field`, at `span` — names, opened
/// with `open`, reached as the `[object_store]` section says; an error
/// names the field.
pub(super) fn open<T>(
    cx: &Ctx<'_>,
    objects: Option<&Spanned<ObjectStoreSection>>,
    (text, span, field): (&str, std::ops::Range<usize>, &str),
    open: impl FnOnce(&S3Url, &S3Settings) -> Result<T>,
) -> Result<T> {
    let url = S3Url::parse(text).or_else(|e| cx.err(span.clone(), field, e.to_string()))?;
    open(&url, &settings(objects)).or_else(|e| cx.err(span, field, e.to_string()))
}

/// The `[object_store]` section as client settings (the environment
/// fills in what it leaves out).
fn settings(objects: Option<&Spanned<ObjectStoreSection>>) -> S3Settings {
    let Some(o) = objects.map(Spanned::get_ref) else {
        return S3Settings::default();
    };
    S3Settings {
        endpoint: o.endpoint.clone(),
        region: o.region.clone(),
        access_key_id: o.access_key_id.clone(),
        secret_access_key: o.secret_access_key.clone(),
        session_token: o.session_token.clone(),
        virtual_hosted_style: o.virtual_hosted_style.unwrap_or(false),
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Overrides, build};

    /// A queue job whose `[job]` section ends with `job` and whose spec
    /// ends with `more`: its error, or `None` when it builds.
    fn error_of(job: &str, more: &str) -> Option<String> {
        let dir = tempfile::tempdir().unwrap();
        let q = dir.path().join("q.json");
        std::fs::write(&q, "[[\"a\"]]").unwrap();
        let text = format!(
            "[job]\nbatch_interval = \"1s\"\n{job}[sources.lines]\ntype = \"queue\"\npath = \"{}\"\n[[outputs]]\nstream = \"lines\"\ntype = \"pprint\"\n{more}",
            q.display()
        );
        build(&dir.path().join("job.toml"), &text, &Overrides::default())
            .err()
            .map(|e| e.to_string())
    }

    #[test]
    fn checkpoints_in_object_storage_need_a_log_directory_and_a_valid_url() {
        let e = error_of("checkpoint = \"s3://ckpts/jobs\"\n", "").expect("an error");
        assert!(
            e.contains("job.toml:3: job.checkpoint: checkpoints in s3://ckpts/jobs need job.checkpoint_logs"),
            "{e}"
        );
        let e = error_of("checkpoint_logs = \"logs\"\n", "").expect("an error");
        assert!(
            e.contains("job.toml:3: job.checkpoint_logs: needs job.checkpoint"),
            "{e}"
        );
        let e =
            error_of("checkpoint = \"ck\"\ncheckpoint_logs = \"logs\"\n", "").expect("an error");
        assert!(
            e.contains("job.toml:4: job.checkpoint_logs: is for checkpoints in object storage"),
            "{e}"
        );
        let e = error_of(
            "checkpoint = \"gs://ckpts/jobs\"\ncheckpoint_logs = \"logs\"\n",
            "",
        )
        .expect("an error");
        assert!(e.contains("job.toml:3: job.checkpoint:"), "{e}");
        assert!(e.contains("gs://ckpts/jobs"), "{e}");
        let e = error_of(
            "checkpoint = \"s3://ckpts/jobs\"\ncheckpoint_logs = \"logs\"\n",
            "[object_store]\nendpoint = \"http://127.0.0.1:9\"\nbucket = \"b\"\n",
        )
        .expect("an error");
        assert!(e.contains("bucket"), "{e}");
        assert_eq!(
            error_of(
                "checkpoint = \"s3://ckpts/jobs\"\ncheckpoint_logs = \"logs\"\n",
                "[object_store]\nendpoint = \"http://127.0.0.1:9\"\naccess_key_id = \"k\"\nsecret_access_key = \"s\"\n",
            ),
            None
        );
        assert_eq!(error_of("checkpoint = \"ck\"\n", ""), None);
    }
}
