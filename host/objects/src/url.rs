//! Where objects are (`s3://bucket/prefix`) and how to reach them.

use sluice_core::error::{Error, Result};

/// An `s3://bucket/prefix` location.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Url {
    /// The bucket.
    pub bucket: String,
    /// The key prefix, without leading or trailing `/` (may be empty).
    pub prefix: String,
}

impl S3Url {
    /// Parses `s3://bucket[/prefix[/]]`; the error names what is wrong.
    pub fn parse(url: &str) -> Result<S3Url> {
        let bad = |why: &str| Error::Plan(format!("`{url}` is not an S3 location: {why}"));
        let rest = url
            .strip_prefix("s3://")
            .ok_or_else(|| bad("it must start with s3://"))?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        let valid_bucket = (3..=63).contains(&bucket.len())
            && bucket
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.');
        if !valid_bucket {
            return Err(bad(
                "the bucket name must be 3 to 63 lowercase letters, digits, `-` or `.`",
            ));
        }
        let prefix = prefix.trim_matches('/');
        if prefix.split('/').any(|p| p == "." || p == "..") || prefix.contains("//") {
            return Err(bad("the prefix has an empty, `.` or `..` segment"));
        }
        Ok(S3Url {
            bucket: bucket.to_string(),
            prefix: prefix.to_string(),
        })
    }

    /// `s3://bucket/prefix/name`, for messages.
    pub fn object(&self, name: &str) -> String {
        match (self.prefix.is_empty(), name.is_empty()) {
            (true, _) => format!("s3://{}/{name}", self.bucket),
            (false, true) => format!("s3://{}/{}/", self.bucket, self.prefix),
            (false, false) => format!("s3://{}/{}/{name}", self.bucket, self.prefix),
        }
    }
}

impl std::fmt::Display for S3Url {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.object(""))
    }
}

/// How to reach a bucket. Fields left `None` come from the environment
/// as the AWS tools read it (`AWS_ENDPOINT_URL` or `AWS_ENDPOINT`,
/// `AWS_REGION`, `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
/// `AWS_SESSION_TOKEN`), then from the shared profile files
/// (`~/.aws/credentials`, `~/.aws/config`; profile `$AWS_PROFILE` or
/// `default`), then from web identity or the instance's metadata service
/// (on EC2, ECS, EKS).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct S3Settings {
    /// The server, e.g. `http://127.0.0.1:9000`; AWS itself when `None`.
    pub endpoint: Option<String>,
    /// The region (`us-east-1` when neither this nor the environment says).
    pub region: Option<String>,
    /// Access key id (with `secret_access_key`).
    pub access_key_id: Option<String>,
    /// Secret access key.
    pub secret_access_key: Option<String>,
    /// Session token of temporary credentials.
    pub session_token: Option<String>,
    /// Virtual-host addressing (`bucket.endpoint/key`) instead of
    /// path-style (`endpoint/bucket/key`); path-style is the default, as
    /// most S3-compatible servers want it.
    pub virtual_hosted_style: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_buckets_and_prefixes() {
        let u = S3Url::parse("s3://my-bucket/jobs/wc/").unwrap();
        assert_eq!(
            (u.bucket.as_str(), u.prefix.as_str()),
            ("my-bucket", "jobs/wc")
        );
        assert_eq!(
            u.object("checkpoint-1"),
            "s3://my-bucket/jobs/wc/checkpoint-1"
        );
        assert_eq!(u.to_string(), "s3://my-bucket/jobs/wc/");
        let u = S3Url::parse("s3://bkt").unwrap();
        assert_eq!(u.prefix, "");
        assert_eq!(u.object("x"), "s3://bkt/x");
        for bad in [
            "bkt/x",
            "s3://B/x",
            "s3://ab",
            "s3://bkt/a//b",
            "s3://bkt/a/../b",
        ] {
            let e = S3Url::parse(bad).unwrap_err().to_string();
            assert!(e.contains(bad) && e.contains("not an S3 location"), "{e}");
        }
    }
}
