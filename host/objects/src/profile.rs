//! The AWS shared profile files, as the AWS tools read them: credentials
//! from `~/.aws/credentials` (or `$AWS_SHARED_CREDENTIALS_FILE`), then
//! `~/.aws/config` (or `$AWS_CONFIG_FILE`), for profile `$AWS_PROFILE`
//! (default `default`; in the config file `[profile NAME]`, or `[default]`);
//! the region from the config file. `object_store` reads the environment,
//! web identity and the instance's metadata service but not these files.

use std::collections::BTreeMap;
use std::path::PathBuf;

/// What a profile gives.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Profile {
    pub(crate) access_key_id: Option<String>,
    pub(crate) secret_access_key: Option<String>,
    pub(crate) session_token: Option<String>,
    pub(crate) region: Option<String>,
}

/// The profile the environment names, from the files where it says they
/// are (files that do not exist give nothing).
pub(crate) fn from_environment() -> Profile {
    let home = std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".aws"));
    let file = |var: &str, name: &str| {
        std::env::var_os(var)
            .map(PathBuf::from)
            .or_else(|| home.as_ref().map(|h| h.join(name)))
            .and_then(|p| std::fs::read_to_string(p).ok())
    };
    let profile = std::env::var("AWS_PROFILE").unwrap_or_else(|_| "default".to_string());
    from_files(
        file("AWS_SHARED_CREDENTIALS_FILE", "credentials").as_deref(),
        file("AWS_CONFIG_FILE", "config").as_deref(),
        &profile,
    )
}

/// Profile `name` of a credentials file's and a config file's text.
pub(crate) fn from_files(credentials: Option<&str>, config: Option<&str>, name: &str) -> Profile {
    let credentials = credentials.map(sections).unwrap_or_default();
    let config = config.map(sections).unwrap_or_default();
    // The config file names profiles `[profile NAME]`, except `[default]`.
    let in_config = config
        .get(&format!("profile {name}"))
        .or_else(|| config.get(name).filter(|_| name == "default"));
    let in_credentials = credentials.get(name);
    let get = |key: &str| {
        in_credentials
            .and_then(|s| s.get(key))
            .or_else(|| in_config.and_then(|s| s.get(key)))
            .cloned()
    };
    Profile {
        access_key_id: get("aws_access_key_id"),
        secret_access_key: get("aws_secret_access_key"),
        session_token: get("aws_session_token"),
        region: in_config.and_then(|s| s.get("region")).cloned(),
    }
}

/// An INI file's sections: `[name]` then `key = value` lines (`#` and `;`
/// comments, blank lines skipped).
fn sections(text: &str) -> BTreeMap<String, BTreeMap<String, String>> {
    let mut out: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    let mut current: Option<String> = None;
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            let name = name.split_whitespace().collect::<Vec<_>>().join(" ");
            out.entry(name.clone()).or_default();
            current = Some(name);
        } else if let (Some(section), Some((key, value))) = (&current, line.split_once('=')) {
            out.entry(section.clone())
                .or_default()
                .insert(key.trim().to_string(), value.trim().to_string());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const CREDENTIALS: &str = "# keys\n[default]\naws_access_key_id = AKIDEFAULT\naws_secret_access_key = secret-default\n\n[ci]\naws_access_key_id=AKICI\naws_secret_access_key=secret-ci\naws_session_token = token-ci\n";
    const CONFIG: &str = "[default]\nregion = eu-west-1\n\n[profile ci]\nregion = us-west-2\n\n[profile only-config]\naws_access_key_id = AKICONF\naws_secret_access_key = secret-conf\nregion = ap-south-1\n";

    #[test]
    fn profiles_take_keys_from_credentials_then_config_and_the_region_from_config() {
        let p = from_files(Some(CREDENTIALS), Some(CONFIG), "default");
        assert_eq!(p.access_key_id.as_deref(), Some("AKIDEFAULT"));
        assert_eq!(p.region.as_deref(), Some("eu-west-1"));
        assert_eq!(p.session_token, None);
        let p = from_files(Some(CREDENTIALS), Some(CONFIG), "ci");
        assert_eq!(
            (p.access_key_id.as_deref(), p.session_token.as_deref()),
            (Some("AKICI"), Some("token-ci"))
        );
        assert_eq!(p.region.as_deref(), Some("us-west-2"));
        let p = from_files(Some(CREDENTIALS), Some(CONFIG), "only-config");
        assert_eq!(p.secret_access_key.as_deref(), Some("secret-conf"));
        assert_eq!(p.region.as_deref(), Some("ap-south-1"));
    }

    #[test]
    fn a_missing_profile_or_file_gives_nothing() {
        assert_eq!(
            from_files(Some(CREDENTIALS), Some(CONFIG), "nope"),
            Profile::default()
        );
        assert_eq!(from_files(None, None, "default"), Profile::default());
        // `[ci]` in the config file is not profile `ci` (it is `[profile ci]`).
        let p = from_files(None, Some("[ci]\nregion = x\n"), "ci");
        assert_eq!(p.region, None);
    }
}
