//! The fuzz entry point for the HTTP API's requests (`fuzz/`, target
//! `api`): untrusted method, path, token and body, sent through the real
//! router to a server in a temporary directory (one tenant, `t`). The
//! answer must be an answer — never a panic, never a 500 — and every
//! refusal a JSON `{"error": ...}`. The server admits no job (its memory
//! reservation is zero), so a submission is checked whole, spec included,
//! and refused at admission instead of running.
//!
//! Input: the first byte picks the call, the second the token (admin,
//! the tenant's, none, or a wrong one); the rest is the body (for `GET`
//! calls, the query).

use crate::{Server, ServerConfig, TenantLimits};
use axum::body::Body;
use axum::http::{Method, Request};
use std::sync::{Arc, OnceLock};

const ADMIN: &str = "fuzz-admin-token-0123456789";

/// The calls a request may be, with a path parameter each.
const CALLS: [(&str, &str); 10] = [
    ("POST", "/api/tenants"),
    ("PUT", "/api/tenants/t/limits"),
    ("POST", "/api/tenants/t/tokens"),
    ("POST", "/api/plugins/p"),
    ("POST", "/api/jobs"),
    ("POST", "/api/jobs/j/swap"),
    ("POST", "/api/jobs/j/stop"),
    ("GET", "/api/jobs/j/streams/s"),
    ("GET", "/api/jobs/j/outputs"),
    ("GET", "/api/audit"),
];

struct Fixture {
    server: Arc<Server>,
    router: axum::Router,
    tenant_token: String,
    runtime: tokio::runtime::Runtime,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("sluice-fuzz-api-{}", std::process::id()));
        let mut config = ServerConfig::new(dir, ADMIN.to_string());
        config.memory_reservation = 0;
        config.default_limits = TenantLimits {
            api_rate: 1e12,
            api_burst: u32::MAX,
            ..TenantLimits::default()
        };
        let server = Server::open(config).expect("a server");
        let tenant_token = server.create_tenant("t", None).expect("tenant t");
        Fixture {
            router: crate::api::router(server.clone()),
            server,
            tenant_token,
            runtime: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime"),
        }
    })
}

/// One request.
pub fn request(data: &[u8]) {
    use tower::ServiceExt;
    let [call, token, rest @ ..] = data else {
        return;
    };
    let f = fixture();
    let (method, path) = CALLS[*call as usize % CALLS.len()];
    let token = match token % 4 {
        0 => Some(ADMIN),
        1 => Some(f.tenant_token.as_str()),
        2 => None,
        _ => Some("slt_not_a_token"),
    };
    let uri = if method == "GET" {
        let query: String = String::from_utf8_lossy(rest)
            .chars()
            .filter(|c| c.is_ascii_graphic() && *c != '#')
            .collect();
        format!("{path}?{query}")
    } else {
        path.to_string()
    };
    let mut builder = Request::builder()
        .method(Method::from_bytes(method.as_bytes()).expect("a method"))
        .uri(uri.as_str());
    if let Some(t) = token {
        builder = builder.header("authorization", format!("Bearer {t}"));
    }
    let body = if method == "GET" {
        Vec::new()
    } else {
        rest.to_vec()
    };
    let Ok(request) = builder.body(Body::from(body)) else {
        return; // a query that is not a URI: refused before the server
    };
    let response = f
        .runtime
        .block_on(f.router.clone().oneshot(request))
        .expect("the router answers");
    let status = response.status().as_u16();
    assert_ne!(status, 500, "{method} {uri}: an internal error");
    if status >= 400 {
        let bytes = f
            .runtime
            .block_on(axum::body::to_bytes(response.into_body(), 1 << 20))
            .expect("the body");
        let v: serde_json::Value = serde_json::from_slice(&bytes).expect("a refusal is JSON");
        assert!(v["error"].is_string(), "{method} {uri}: {v}");
    }
    // What a request created goes, so that runs stay alike.
    if (method, path) == ("POST", "/api/tenants") && status == 201 {
        for name in f.server.tenant_names() {
            if name != "t" {
                let _ = f.server.delete_tenant(&name);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    /// Every committed corpus input of the `api` target (and every
    /// crash the fuzzer found, kept there) runs through it.
    #[test]
    fn the_api_corpus_runs_through_the_target() {
        let ran = sluice::fuzz::run_corpus("api", super::request);
        assert!(ran >= 5, "a seed corpus of requests");
    }
}
