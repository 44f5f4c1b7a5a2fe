//! The fuzz entry point for job specs (`fuzz/`, target `spec`): untrusted
//! spec text, built as `sluice serve` builds a tenant's job (confined to its
//! directory, uploaded plugins only, nothing granted), must give a job or
//! an error, never a panic; and an error about the spec must name the
//! spec's file, a field, and a line that exists in the text.
//!
//! Nothing is started: a spec that builds is dropped unrun.

pub use sluice_core::fuzz::run_corpus;

use crate::error::Error;
use crate::spec::{Grants, Overrides, build};
use std::path::PathBuf;
use std::sync::OnceLock;

/// The job directory for the whole fuzzing run: `in.json` only.
fn job_dir() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("sluice-fuzz-spec-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("a job directory");
        // A queue's input, so that specs reading `in.json` build whole.
        std::fs::write(dir.join("in.json"), r#"[["a b", "b"], [], ["c"]]"#).expect("in.json");
        dir
    })
}

/// A job spec from a tenant.
pub fn spec(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let path = job_dir().join("job.toml");
    let overrides = Overrides {
        confine: Some(Grants {
            sockets: Vec::new(),
            uploaded_plugins_only: true,
        }),
        max_workers: Some(2),
        ..Overrides::default()
    };
    match build(&path, text, &overrides) {
        Ok(job) => drop(job),
        Err(Error::Spec {
            path: at,
            line,
            field,
            message,
        }) => {
            assert_eq!(at, path, "{field}: {message}");
            assert!(!field.is_empty(), "no field named: {message}");
            assert!(
                line <= text.lines().count() + 1,
                "{field}: line {line} of {} lines: {message}",
                text.lines().count()
            );
        }
        Err(_) => {}
    }
}

#[cfg(test)]
mod tests {
    /// Every committed corpus input of the `spec` target (and every
    /// crash the fuzzer found, kept there) runs through it.
    #[test]
    fn the_spec_corpus_runs_through_the_target() {
        let ran = sluice_core::fuzz::run_corpus("spec", super::spec);
        assert!(ran >= 5, "a seed corpus of job specs");
    }
}
