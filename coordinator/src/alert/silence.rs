//! Silences: time windows in which the alerts they cover are recorded but not sent, from the
//! API or the config file, and the checks a new one must pass.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{labels_match, new_id};

/// A time window in which matching alerts are recorded but not sent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Silence {
    pub id: String,
    /// One subject (a target URL, a region, a heartbeat), or empty.
    #[serde(default)]
    pub target: String,
    /// Every label must match (with `target` empty: every subject when this is empty too).
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    pub start_ms: i64,
    pub end_ms: i64,
    #[serde(default)]
    pub comment: String,
    /// "api" or "config".
    #[serde(default)]
    pub source: String,
}

impl Silence {
    pub fn active(&self, now_ms: i64) -> bool {
        self.start_ms <= now_ms && now_ms < self.end_ms
    }

    pub fn matches(&self, subject: &str, labels: &BTreeMap<String, String>) -> bool {
        (self.target.is_empty() || self.target == subject) && labels_match(&self.labels, labels)
    }

    pub fn describe(&self) -> String {
        let what = if self.comment.is_empty() { self.id.clone() } else { format!("{} ({})", self.id, self.comment) };
        format!("{what} until {}", crate::clock::rfc3339(self.end_ms))
    }
}

/// Checks a silence (from the API or the config) and fills in its id and start.
pub fn check_silence(
    target: &str,
    labels: BTreeMap<String, String>,
    start_ms: Option<i64>,
    end_ms: Option<i64>,
    comment: &str,
    source: &str,
    now_ms: i64,
) -> Result<Silence, crate::spec::SpecError> {
    use crate::spec::SpecError;
    let bad = |field: &'static str, reason: &str| SpecError { field, reason: reason.into() };
    // A target URL is normalized; anything else must be a region's or heartbeat's name.
    let target = match target {
        "" => String::new(),
        t if t.contains("://") => {
            vantage_shared::TargetUrl::parse(t).map_err(|e| bad("target", &e.to_string()))?.to_string()
        }
        t => {
            crate::spec::check_name("target", t)?;
            t.to_owned()
        }
    };
    crate::spec::check_labels(labels.iter())?;
    if target.is_empty() && labels.is_empty() {
        return Err(bad("target", "give a target or labels (a silence of everything is not accepted)"));
    }
    let start_ms = start_ms.unwrap_or(now_ms);
    let end_ms = end_ms.ok_or_else(|| bad("end", "missing"))?;
    if end_ms <= start_ms || end_ms <= now_ms {
        return Err(bad("end", "must be after the start and in the future"));
    }
    if end_ms - start_ms > 366 * 86_400_000 {
        return Err(bad("end", "a silence lasts at most a year"));
    }
    if comment.len() > 256 {
        return Err(bad("comment", "at most 256 bytes"));
    }
    let id = format!("s_{}", &new_id()[2..14]);
    Ok(Silence { id, target, labels, start_ms, end_ms, comment: comment.to_owned(), source: source.to_owned() })
}
