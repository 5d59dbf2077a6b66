//! The coordinator's TOML config file: targets, checked while loading, with the file, line and
//! reason on any error.

use std::path::Path;

use serde::Deserialize;
use vantage_proto::v1::TargetSpec;

use crate::spec;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    target: Vec<toml::Spanned<TargetEntry>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TargetEntry {
    url: String,
    #[serde(default, deserialize_with = "duration")]
    interval: Option<std::time::Duration>,
    #[serde(default, deserialize_with = "duration")]
    timeout: Option<std::time::Duration>,
    #[serde(default)]
    regions: Vec<String>,
    #[serde(default)]
    quorum: u32,
    #[serde(default)]
    all_backends: bool,
    #[serde(default)]
    expect_status: Vec<u32>,
    #[serde(default)]
    expect_ips: Vec<String>,
    #[serde(default)]
    warn_days: u32,
    #[serde(default)]
    critical_days: u32,
    #[serde(default)]
    labels: std::collections::HashMap<String, String>,
    #[serde(default)]
    pin_sha256: Vec<String>,
}

fn duration<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<std::time::Duration>, D::Error> {
    let text = String::deserialize(d)?;
    vantage_shared::duration::parse_duration(&text).map(Some).map_err(serde::de::Error::custom)
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("{path}: {message}")]
    Parse { path: String, message: String },
    #[error("{path}:{line}: target {url}: {source}")]
    Target { path: String, line: usize, url: String, source: spec::SpecError },
    #[error("{path}:{line}: target {url} is listed twice")]
    Duplicate { path: String, line: usize, url: String },
}

/// Loads and checks every target of the file at `path`.
pub fn load(path: &Path) -> Result<Vec<TargetSpec>, ConfigError> {
    let display = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: display.clone(), source })?;
    parse(&text, &display)
}

/// Parses config text; `path` only names it in errors.
pub fn parse(text: &str, path: &str) -> Result<Vec<TargetSpec>, ConfigError> {
    let file: File = toml::from_str(text)
        .map_err(|e| ConfigError::Parse { path: path.to_owned(), message: e.to_string().trim_end().to_owned() })?;
    let mut specs: Vec<TargetSpec> = Vec::new();
    for entry in file.target {
        let line = text[..entry.span().start.min(text.len())].matches('\n').count() + 1;
        let t = entry.into_inner();
        let raw = TargetSpec {
            url: t.url.clone(),
            interval: t.interval.map(spec::from_duration),
            timeout: t.timeout.map(spec::from_duration),
            regions: t.regions,
            quorum: t.quorum,
            all_backends: t.all_backends,
            expect_status: t.expect_status,
            expect_ips: t.expect_ips,
            warn_days: t.warn_days,
            critical_days: t.critical_days,
            source: "config".into(),
            labels: t.labels,
            pin_sha256: t.pin_sha256,
        };
        let normalized = spec::normalize(raw).map_err(|source| ConfigError::Target {
            path: path.to_owned(),
            line,
            url: t.url.clone(),
            source,
        })?;
        if specs.iter().any(|s| s.url == normalized.url) {
            return Err(ConfigError::Duplicate { path: path.to_owned(), line, url: t.url });
        }
        specs.push(normalized);
    }
    Ok(specs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_documented_example_loads() {
        let text = r#"
[[target]]
url = "https://shop.example.com/"
interval = "30s"          # default 60s
timeout = "10s"
regions = ["eu-west", "us-east", "ap-south"]   # default: every region with agents
quorum = 2                # default: strict majority of regions
all_backends = true
expect_status = [200]
expect_ips = ["203.0.113.7"]
warn_days = 30
critical_days = 7
"#;
        let specs = parse(text, "vantage.toml").unwrap();
        assert_eq!(specs.len(), 1);
        assert_eq!(specs[0].regions.len(), 3);
        assert_eq!(spec::timing(&specs[0]).0, std::time::Duration::from_secs(30));
    }

    #[test]
    fn errors_name_the_file_line_and_reason() {
        let text = "[[target]]\nurl = \"https://a.example/\"\n\n[[target]]\nurl = \"https://b.example/\"\nquorum = 4\nregions = [\"eu\"]\n";
        let e = parse(text, "v.toml").unwrap_err().to_string();
        assert!(e.starts_with("v.toml:4: target https://b.example/: quorum:"), "{e}");

        let e =
            parse("[[target]]\nurl = \"https://a.example/\"\ninterval = \"soon\"\n", "v.toml").unwrap_err().to_string();
        assert!(e.contains("v.toml") && e.contains("line 3") && e.contains("invalid duration"), "{e}");

        let e =
            parse("[[target]]\nurl = \"https://a.example/\"\nintervl = \"5s\"\n", "v.toml").unwrap_err().to_string();
        assert!(e.contains("unknown field `intervl`"), "{e}");

        let e = parse("[[target]]\nurl = \"https://a.example/\"\n[[target]]\nurl = \"https://A.example\"\n", "v.toml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("listed twice"), "{e}");
    }
}
