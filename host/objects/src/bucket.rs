//! A blocking client of one bucket under one prefix.

use crate::url::{S3Settings, S3Url};
use bytes::Bytes;
use futures_util::StreamExt;
use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::path::Path;
use object_store::{ClientOptions, ObjectStore, ObjectStoreExt, PutMode, PutOptions, RetryConfig};
use sluice_core::error::{Error, Result};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// The tokio runtime every [`Bucket`]'s requests run on: one thread is
/// plenty for waiting on the network.
fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("sluice-objects")
            .enable_all()
            .build()
            .expect("the object storage runtime starts")
    })
}

/// Runs `fut` on the shared runtime and waits for it; callable from any
/// thread, a tokio worker's included (it blocks that thread, not the
/// runtime).
fn wait<T: Send + 'static>(fut: impl Future<Output = T> + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    runtime().spawn(async move {
        let _ = tx.send(fut.await);
    });
    rx.recv().expect("the object storage runtime runs")
}

/// An object found by [`Bucket::list_objects`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    /// Its name, relative to the prefix.
    pub name: String,
    /// When it was last written.
    pub modified: std::time::SystemTime,
    /// Its size in bytes.
    pub size: u64,
}

/// One bucket under one prefix: names are relative to the prefix.
#[derive(Clone)]
pub struct Bucket {
    store: Arc<dyn ObjectStore>,
    url: S3Url,
}

impl std::fmt::Debug for Bucket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Bucket({})", self.url)
    }
}

impl Bucket {
    /// A client of `url` reached as `settings` say. Nothing is sent yet:
    /// an unreachable server or a wrong key shows in the first request.
    pub fn open(url: &S3Url, settings: &S3Settings) -> Result<Bucket> {
        Bucket::open_retrying(url, settings, 4, Duration::from_secs(20))
    }

    /// [`Self::open`] with its requests retried at most `retries` times
    /// within `within` (`open`: 4 within 20 s) — fewer for a caller that
    /// tries again itself, such as a file source at its next batch.
    pub fn open_retrying(
        url: &S3Url,
        settings: &S3Settings,
        retries: usize,
        within: Duration,
    ) -> Result<Bucket> {
        // reqwest's rustls needs a process-wide crypto provider: ring, as
        // the rest of Sluice's TLS clients use (already set is no error).
        #[allow(deprecated)]
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut b = AmazonS3Builder::from_env()
            .with_bucket_name(&url.bucket)
            .with_virtual_hosted_style_request(settings.virtual_hosted_style)
            .with_retry(RetryConfig {
                max_retries: retries,
                retry_timeout: within,
                ..RetryConfig::default()
            })
            .with_client_options(
                ClientOptions::new()
                    .with_connect_timeout(Duration::from_secs(5))
                    .with_timeout(Duration::from_secs(60)),
            );
        // The shared profile files give the keys (and the region) where
        // neither the spec nor the environment does, as for the AWS tools.
        let profile = crate::profile::from_environment();
        let mut settings = settings.clone();
        if settings.access_key_id.is_none() && std::env::var_os("AWS_ACCESS_KEY_ID").is_none() {
            settings.access_key_id = profile.access_key_id;
            settings.secret_access_key = profile.secret_access_key;
            settings.session_token = profile.session_token;
        }
        if std::env::var_os("AWS_REGION").is_none() && settings.region.is_none() {
            b = b.with_region(profile.region.as_deref().unwrap_or("us-east-1"));
        }
        if let Ok(e) = std::env::var("AWS_ENDPOINT_URL") {
            b = b.with_endpoint(e);
        }
        let set = |b: AmazonS3Builder, key, v: &Option<String>| match v {
            Some(v) => b.with_config(key, v),
            None => b,
        };
        b = set(b, AmazonS3ConfigKey::Endpoint, &settings.endpoint);
        b = set(b, AmazonS3ConfigKey::Region, &settings.region);
        b = set(b, AmazonS3ConfigKey::AccessKeyId, &settings.access_key_id);
        b = set(
            b,
            AmazonS3ConfigKey::SecretAccessKey,
            &settings.secret_access_key,
        );
        b = set(b, AmazonS3ConfigKey::Token, &settings.session_token);
        let endpoint = settings
            .endpoint
            .clone()
            .or_else(|| std::env::var("AWS_ENDPOINT_URL").ok())
            .or_else(|| std::env::var("AWS_ENDPOINT").ok());
        if endpoint
            .as_deref()
            .is_some_and(|e| e.starts_with("http://"))
        {
            b = b.with_allow_http(true);
        }
        let store = b
            .build()
            .map_err(|e| Error::Plan(format!("object storage {url}: {e}")))?;
        Ok(Bucket {
            store: Arc::new(store),
            url: url.clone(),
        })
    }

    /// The location of `name`, for messages.
    pub fn locate(&self, name: &str) -> String {
        self.url.object(name)
    }

    fn path(&self, name: &str) -> Path {
        if self.url.prefix.is_empty() {
            Path::from(name)
        } else {
            Path::from(format!("{}/{name}", self.url.prefix))
        }
    }

    /// The error of `doing` the object `name`. Refused credentials or
    /// permissions are an I/O error of kind `PermissionDenied` naming the
    /// bucket, which no retry mends.
    fn error(&self, doing: &str, name: &str, e: object_store::Error) -> Error {
        // Some requests (listings) report a refusal only as a generic
        // error with the HTTP status in its text.
        let text = e.to_string();
        let refused = matches!(
            e,
            object_store::Error::PermissionDenied { .. }
                | object_store::Error::Unauthenticated { .. }
        ) || text.contains("403 Forbidden")
            || text.contains("401 Unauthorized");
        let cause = if refused {
            std::io::Error::new(
                std::io::ErrorKind::PermissionDenied,
                format!(
                    "the object store refused the credentials or their permissions for bucket `{}`: {text}",
                    self.url.bucket
                ),
            )
        } else {
            std::io::Error::other(text)
        };
        Error::io(format!("{doing} {}", self.locate(name)), cause)
    }

    /// Writes `bytes` as `name` unless it exists (`If-None-Match: *`):
    /// `Ok(true)` when written, `Ok(false)` when something was there.
    pub fn put_if_absent(&self, name: &str, bytes: &[u8]) -> Result<bool> {
        let written = self.put_all_if_absent(vec![(name.to_string(), bytes.to_vec())])?;
        Ok(written[0])
    }

    /// Writes each `(name, bytes)` unless it exists, all at once (the
    /// requests run concurrently): for each, as [`Self::put_if_absent`]
    /// says, whether it was written.
    pub fn put_all_if_absent(&self, objects: Vec<(String, Vec<u8>)>) -> Result<Vec<bool>> {
        let (names, payloads): (Vec<String>, Vec<Vec<u8>>) = objects.into_iter().unzip();
        let puts = names.iter().zip(payloads).map(|(name, bytes)| {
            let (store, path) = (self.store.clone(), self.path(name));
            let payload = Bytes::from(bytes);
            async move {
                let opts = PutOptions {
                    mode: PutMode::Create,
                    ..PutOptions::default()
                };
                match store.put_opts(&path, payload.into(), opts).await {
                    Ok(_) => Ok(true),
                    Err(object_store::Error::AlreadyExists { .. }) => Ok(false),
                    Err(e) => Err(e),
                }
            }
        });
        let all = futures_util::future::join_all(puts);
        let results = wait(all);
        names
            .iter()
            .zip(results)
            .map(|(name, r)| r.map_err(|e| self.error("writing", name, e)))
            .collect()
    }

    /// Whether an object `name` exists (a `HEAD` request).
    pub fn exists(&self, name: &str) -> Result<bool> {
        let (store, path) = (self.store.clone(), self.path(name));
        match wait(async move { store.head(&path).await }) {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(self.error("looking for", name, e)),
        }
    }

    /// The object `name`, or `None` when there is none.
    pub fn get(&self, name: &str) -> Result<Option<Vec<u8>>> {
        let (store, path) = (self.store.clone(), self.path(name));
        let r = wait(async move {
            match store.get(&path).await {
                Ok(r) => r.bytes().await.map(Some),
                Err(object_store::Error::NotFound { .. }) => Ok(None),
                Err(e) => Err(e),
            }
        });
        r.map(|b| b.map(|b| b.to_vec()))
            .map_err(|e| self.error("reading", name, e))
    }

    /// The names under the prefix that start with `start` (all of them,
    /// however many pages the listing takes), sorted.
    pub fn list(&self, start: &str) -> Result<Vec<String>> {
        let mut names: Vec<String> = self
            .list_objects()?
            .into_iter()
            .map(|o| o.name)
            .filter(|n| n.starts_with(start))
            .collect();
        names.sort();
        Ok(names)
    }

    /// The objects directly under the prefix (not in nested "folders"),
    /// with their times and sizes: every page of the listing, in no
    /// particular order.
    pub fn list_objects(&self) -> Result<Vec<ObjectInfo>> {
        let store = self.store.clone();
        let base = (!self.url.prefix.is_empty()).then(|| self.path(""));
        let r = wait(async move { store.list_with_delimiter(base.as_ref()).await });
        let listed = r.map_err(|e| self.error("listing", "", e))?;
        let strip = if self.url.prefix.is_empty() {
            String::new()
        } else {
            format!("{}/", self.url.prefix)
        };
        Ok(listed
            .objects
            .into_iter()
            .filter_map(|m| {
                let name = m.location.as_ref().strip_prefix(&strip)?.to_string();
                Some(ObjectInfo {
                    name,
                    modified: std::time::SystemTime::from(m.last_modified),
                    size: m.size,
                })
            })
            .collect())
    }

    /// Reads the object `name`, handing its bytes to `chunk` as they
    /// arrive (a few chunks are buffered, so memory stays bounded whatever
    /// the object's size); `Ok(false)` when there is no such object.
    pub fn read_chunks(
        &self,
        name: &str,
        chunk: &mut dyn FnMut(&[u8]) -> Result<()>,
    ) -> Result<bool> {
        let (store, path) = (self.store.clone(), self.path(name));
        let (tx, rx) = std::sync::mpsc::sync_channel::<object_store::Result<Option<Bytes>>>(8);
        runtime().spawn(async move {
            let mut body = match store.get(&path).await {
                Ok(r) => r.into_stream(),
                Err(e) => {
                    let _ = tx.send(Err(e));
                    return;
                }
            };
            while let Some(piece) = body.next().await {
                let end = piece.is_err();
                // A reader that stopped (its callback failed) ends the read.
                if tx.send(piece.map(Some)).is_err() || end {
                    return;
                }
            }
            let _ = tx.send(Ok(None));
        });
        loop {
            match rx.recv() {
                Ok(Ok(Some(bytes))) => chunk(&bytes)?,
                Ok(Ok(None)) => return Ok(true),
                Ok(Err(object_store::Error::NotFound { .. })) => return Ok(false),
                Ok(Err(e)) => return Err(self.error("reading", name, e)),
                Err(_) => {
                    return Err(Error::Internal(format!(
                        "reading {}: the object storage runtime stopped",
                        self.locate(name)
                    )));
                }
            }
        }
    }

    /// Removes `name`; removing what is not there is no error.
    pub fn delete(&self, name: &str) -> Result<()> {
        let (store, path) = (self.store.clone(), self.path(name));
        match wait(async move { store.delete(&path).await }) {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.error("removing", name, e)),
        }
    }
}
