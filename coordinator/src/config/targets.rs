//! A target's fields as the config file and the target files spell them, and their conversion
//! into a checked `TargetSpec` (the API's checks, `spec::normalize`).

use serde::Deserialize;
use vantage_proto::v1::TargetSpec;

use super::{ConfigError, duration, line_of};
use crate::spec;

/// One `[[target]]` (or one URL of a target file's group, with the group's settings).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct TargetEntry {
    pub url: String,
    #[serde(default, deserialize_with = "duration")]
    pub interval: Option<std::time::Duration>,
    #[serde(default, deserialize_with = "duration")]
    pub timeout: Option<std::time::Duration>,
    #[serde(default)]
    pub regions: Vec<String>,
    #[serde(default)]
    pub quorum: u32,
    #[serde(default)]
    pub all_backends: bool,
    #[serde(default)]
    pub expect_status: Vec<u32>,
    #[serde(default)]
    pub expect_ips: Vec<String>,
    #[serde(default)]
    pub warn_days: u32,
    #[serde(default)]
    pub critical_days: u32,
    #[serde(default)]
    pub labels: std::collections::HashMap<String, String>,
    #[serde(default)]
    pub pin_sha256: Vec<String>,
    /// Hold-down: its own, over `[alerts]`' defaults.
    #[serde(default, deserialize_with = "duration")]
    pub alert_after: Option<std::time::Duration>,
    #[serde(default, deserialize_with = "duration")]
    pub recover_after: Option<std::time::Duration>,
    /// Flap damping: its own, over `[alerts]`' defaults.
    pub flap_window: Option<u32>,
    pub flap_high: Option<u32>,
    pub flap_low: Option<u32>,
}

impl TargetEntry {
    /// The checked spec, marked as coming from `source`.
    pub fn spec(self, source: &str) -> Result<TargetSpec, spec::SpecError> {
        spec::normalize(TargetSpec {
            url: self.url,
            interval: self.interval.map(spec::from_duration),
            timeout: self.timeout.map(spec::from_duration),
            regions: self.regions,
            quorum: self.quorum,
            all_backends: self.all_backends,
            expect_status: self.expect_status,
            expect_ips: self.expect_ips,
            warn_days: self.warn_days,
            critical_days: self.critical_days,
            source: source.into(),
            labels: self.labels,
            pin_sha256: self.pin_sha256,
            alert_after: self.alert_after.map(spec::from_duration),
            recover_after: self.recover_after.map(spec::from_duration),
            flap_window: self.flap_window,
            flap_high: self.flap_high,
            flap_low: self.flap_low,
        })
    }
}

/// The config file's `[[target]]`s, checked; a URL listed twice is an error.
pub(super) fn targets(
    entries: Vec<toml::Spanned<TargetEntry>>,
    text: &str,
    path: &str,
) -> Result<Vec<TargetSpec>, ConfigError> {
    let mut specs: Vec<TargetSpec> = Vec::with_capacity(entries.len());
    // Linear however many targets: URLs seen so far in a set, and a target's line counted only
    // for an error.
    let mut seen: std::collections::HashSet<String> = std::collections::HashSet::with_capacity(entries.len());
    for entry in entries {
        let span = entry.span();
        let line = || line_of(text, span.clone());
        let t = entry.into_inner();
        let url = t.url.clone();
        let normalized = t.spec("config").map_err(|source| ConfigError::Target {
            path: path.to_owned(),
            line: line(),
            url: url.clone(),
            source,
        })?;
        if !seen.insert(normalized.url.clone()) {
            return Err(ConfigError::Duplicate { path: path.to_owned(), line: line(), url });
        }
        specs.push(normalized);
    }
    Ok(specs)
}
