//! One alert (`Alert`) and its plain-text message, and the outbox's record of it: the alert
//! with one `Delivery` per channel that should hear it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::AlertKind;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlertCause {
    pub code: String,
    pub message: String,
    pub hint: String,
}

/// What an incident group's alert is about: several targets DOWN for one shared cause (see
/// `hub::groups`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlertGroup {
    /// The shared cause, the same on every coordinator and without a time:
    /// `backend:ADDRESS:CODE`, `cert:SHA256:CODE` or `dns:ZONE:CODE`.
    pub key: String,
    /// The shared cause in words ("behind 203.0.113.7:443").
    pub shared_cause: String,
    /// The member targets' URLs, sorted.
    pub members: Vec<String>,
}

/// One event worth telling people about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Alert {
    /// Unique; receivers deduplicate by it.
    pub id: String,
    pub kind: AlertKind,
    /// What it is about: a target URL, a region, a heartbeat's name.
    pub subject: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    pub at_ms: i64,
    /// When the condition began (for `recovered`: when the outage began).
    pub since_ms: i64,
    /// The regions that agree on it (or the silent region).
    #[serde(default)]
    pub regions: Vec<String>,
    /// How many regions judge the target.
    #[serde(default)]
    pub of_regions: usize,
    /// The failing backend address, when one is known.
    #[serde(default)]
    pub backend: Option<String>,
    #[serde(default)]
    pub cause: Option<AlertCause>,
    #[serde(default)]
    pub detail: String,
    /// For `recovered` and the like: how long the problem lasted.
    #[serde(default)]
    pub duration_ms: Option<i64>,
    /// The certificate it is about (for certificate alerts), and the one it replaced.
    #[serde(default)]
    pub fingerprint: Option<String>,
    #[serde(default)]
    pub previous_fingerprint: Option<String>,
    #[serde(default)]
    pub not_after: Option<String>,
    /// Shared by the trigger and the resolve of one problem (PagerDuty's `dedup_key`).
    pub dedup_key: String,
    /// The status page.
    #[serde(default)]
    pub link: String,
    /// For an incident group's `down` and `recovered`: its members and shared cause (the
    /// subject is then the group's key).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<AlertGroup>,
}

/// The dedup key of a region's impairment (its `region_impaired` and the `region_recovered` that
/// ends it), apart from the region's `region_silent` key (`vantage/region/REGION`).
pub fn region_impaired_key(region: &str) -> String {
    format!("vantage/region/{region}/impaired")
}

impl Alert {
    /// The trigger kinds a resolve ends: its kind's, narrowed by the dedup key where one kind
    /// ends several problems (a `region_recovered` ends the region's `region_silent`, or its
    /// `region_impaired`).
    pub fn ended(&self) -> &'static [AlertKind] {
        match self.kind {
            AlertKind::RegionRecovered if self.dedup_key == region_impaired_key(&self.subject) => {
                &[AlertKind::RegionImpaired]
            }
            AlertKind::RegionRecovered => &[AlertKind::RegionSilent],
            kind => kind.ends(),
        }
    }

    /// A new alert of `kind` about `subject`, now; the rest is filled in by the caller.
    pub fn new(kind: AlertKind, subject: &str, at_ms: i64, dedup_key: String) -> Alert {
        Alert {
            id: new_id(),
            kind,
            subject: subject.to_owned(),
            labels: BTreeMap::new(),
            at_ms,
            since_ms: at_ms,
            regions: Vec::new(),
            of_regions: 0,
            backend: None,
            cause: None,
            detail: String::new(),
            duration_ms: None,
            fingerprint: None,
            previous_fingerprint: None,
            not_after: None,
            dedup_key,
            link: String::new(),
            group: None,
        }
    }

    /// What the alert is about, in words: the subject, or for a group "10 targets behind …".
    pub fn about(&self) -> String {
        match &self.group {
            Some(g) => format!("{} targets {}", g.members.len(), g.shared_cause),
            None => self.subject.clone(),
        }
    }

    /// One line: what and where.
    pub fn summary(&self) -> String {
        let mut line = format!("{} {}", self.kind.title(), self.about());
        if let Some(cause) = &self.cause {
            line.push_str(&format!(": {}", cause.code));
        }
        match self.kind {
            AlertKind::Down | AlertKind::Degraded if !self.regions.is_empty() => {
                line.push_str(&format!(
                    " in {} ({} of {} regions)",
                    self.regions.join(", "),
                    self.regions.len(),
                    self.of_regions
                ));
            }
            AlertKind::Recovered
            | AlertKind::DegradedCleared
            | AlertKind::HeartbeatRecovered
            | AlertKind::ChannelRecovered
            | AlertKind::UnknownCleared => {
                if let Some(d) = self.duration_ms {
                    line.push_str(&format!(" after {}", crate::clock::human_duration(d)));
                }
            }
            AlertKind::Flapping if !self.detail.is_empty() => line.push_str(&format!(" ({})", self.detail)),
            AlertKind::FlappingCleared => {
                if let Some(d) = self.duration_ms {
                    line.push_str(&format!(" after {}", crate::clock::human_duration(d)));
                }
                if !self.detail.is_empty() {
                    line.push_str(&format!(", {}", self.detail));
                }
            }
            AlertKind::CertWarning | AlertKind::CertCritical => {
                if let Some(not_after) = &self.not_after {
                    line.push_str(&format!(" (expires {not_after})"));
                }
            }
            _ => {}
        }
        line
    }

    /// The whole message in plain text: what, where, since when, the cause, the fix, the link.
    pub fn text(&self) -> String {
        let mut out = self.summary();
        out.push('\n');
        let mut field = |name: &str, value: &str| {
            if !value.is_empty() {
                out.push_str(&format!("{name:<8}{value}\n"));
            }
        };
        if let Some(cause) = &self.cause {
            field("What:", &cause.message);
        }
        let mut where_ = self.regions.join(", ");
        if self.of_regions > 0 && !self.regions.is_empty() {
            where_ = format!("{where_} ({} of {} regions agree)", self.regions.len(), self.of_regions);
        }
        if let Some(backend) = &self.backend {
            where_ =
                if where_.is_empty() { format!("backend {backend}") } else { format!("{where_}; backend {backend}") };
        }
        field("Where:", &where_);
        field("Group:", &self.group.as_ref().map(|g| g.members.join(", ")).unwrap_or_default());
        field("Since:", &crate::clock::rfc3339(self.since_ms));
        if let Some(d) = self.duration_ms {
            field("Lasted:", &crate::clock::human_duration(d));
        }
        if let Some(fp) = &self.fingerprint {
            field("Cert:", &format!("sha256 {fp}"));
        }
        if let Some(fp) = &self.previous_fingerprint {
            field("Was:", &format!("sha256 {fp}"));
        }
        if let Some(cause) = &self.cause {
            field("Fix:", &cause.hint);
        }
        field("Detail:", &self.detail);
        field("Status:", &self.link);
        out.push_str(&format!("Event:  {}\n", self.id));
        out
    }
}

/// A random id, `a_` and 24 hex digits.
pub fn new_id() -> String {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 12];
    // The system RNG does not fail on Linux; a zero id would still be unique enough with the time.
    let _ = ring::rand::SystemRandom::new().fill(&mut bytes);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
    bytes[0] ^= nanos as u8;
    bytes.iter().fold(String::from("a_"), |mut s, b| {
        s.push_str(&format!("{b:02x}"));
        s
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryState {
    Pending,
    Delivered,
    /// Refused by the receiver for good (400, 413, 422), or given up after retrying for
    /// the dispatcher's `GIVE_UP_AFTER`; `last_error` says which.
    Failed,
    /// Held back by a silence: never sent.
    Silenced,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delivery {
    pub channel: String,
    pub state: DeliveryState,
    pub attempts: u32,
    pub last_error: String,
    pub next_attempt_ms: i64,
    pub delivered_ms: i64,
}

/// An alert with its deliveries, as the outbox keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlertRecord {
    pub alert: Alert,
    pub deliveries: Vec<Delivery>,
    /// The silence that held it back.
    #[serde(default)]
    pub silenced_by: Option<String>,
}

impl AlertRecord {
    pub fn pending(&self) -> bool {
        self.deliveries.iter().any(|d| d.state == DeliveryState::Pending)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alert(kind: AlertKind) -> Alert {
        Alert::new(kind, "https://shop.example/", 1_000, "vantage/target/https://shop.example/".into())
    }

    #[test]
    fn the_message_says_what_where_since_cause_and_fix() {
        let mut a = alert(AlertKind::Down);
        a.regions = vec!["eu-west".into(), "us-east".into()];
        a.of_regions = 3;
        a.backend = Some("203.0.113.7:443".into());
        a.cause = Some(AlertCause {
            code: "cert_expired".into(),
            message: "The certificate has expired.".into(),
            hint: "Renew it.".into(),
        });
        a.link = "https://vantage.example/".into();
        let text = a.text();
        assert!(text.starts_with("DOWN https://shop.example/: cert_expired in eu-west, us-east (2 of 3 regions)\n"));
        for part in [
            "What:   The certificate has expired.",
            "Where:  eu-west, us-east (2 of 3 regions agree); backend 203.0.113.7:443",
            "Since:  1970-01-01T00:00:01Z",
            "Fix:    Renew it.",
            "Status: https://vantage.example/",
        ] {
            assert!(text.contains(part), "{part} in\n{text}");
        }
        assert_eq!(crate::clock::human_duration(6 * 3_600_000 + 12 * 60_000), "6h 12m");
        assert_eq!(crate::clock::human_duration(61_000), "1m 1s");
    }
}
