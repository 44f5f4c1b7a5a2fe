//! Connecting to NATS, for the source and the sink alike.

use super::NatsAuth;
use std::time::Duration;

/// Why talking to the server failed.
pub(super) enum Failure {
    /// Worth trying again (the server is down, the connection dropped).
    Retry(String),
    /// Not (the server refused the credentials; the stream does not exist).
    Fatal(String),
}

impl Failure {
    pub(super) fn message(&self) -> &str {
        match self {
            Failure::Retry(m) | Failure::Fatal(m) => m,
        }
    }
}

/// A client of `url` (comma-separated URLs: any of them) with `auth`,
/// named after the connector `name` in the server's connection list.
pub(super) async fn connect(
    name: &str,
    url: &str,
    auth: &NatsAuth,
) -> Result<async_nats::Client, Failure> {
    let mut opts = async_nats::ConnectOptions::new()
        .name(format!("sluice {name}"))
        .connection_timeout(Duration::from_secs(5));
    if let Some((user, password)) = &auth.user {
        opts = opts.user_and_password(user.clone(), password.clone());
    }
    if let Some(token) = &auth.token {
        opts = opts.token(token.clone());
    }
    if let Some(creds) = &auth.credentials {
        opts = opts.credentials_file(creds).await.map_err(|e| {
            Failure::Fatal(format!("reading the credentials {}: {e}", creds.display()))
        })?;
    }
    if auth.tls {
        opts = opts.require_tls(true);
    }
    if let Some(ca) = &auth.ca {
        opts = opts.add_root_certificates(ca.clone());
    }
    let urls: Vec<&str> = url.split(',').map(str::trim).collect();
    opts.connect(urls.as_slice()).await.map_err(|e| {
        use async_nats::ConnectErrorKind as K;
        match e.kind() {
            K::AuthorizationViolation | K::Authentication => {
                Failure::Fatal(format!("{url}: the server refused the credentials ({e})"))
            }
            K::ServerParse | K::Tls => Failure::Fatal(format!("{url}: {e}")),
            _ => Failure::Retry(format!("cannot reach NATS at {url}: {e}")),
        }
    })
}
