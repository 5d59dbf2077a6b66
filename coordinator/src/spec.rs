//! Target specifications: defaults filled in and every field checked, the same way for the API
//! and the config file, so a target in the store is always one an agent can probe.

use std::net::IpAddr;
use std::time::Duration;

use vantage_proto::v1::TargetSpec;
use vantage_shared::TargetUrl;
use vantage_shared::limits::{DEFAULT_CRITICAL_DAYS, DEFAULT_WARN_DAYS, MAX_URL};

pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(60);
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
const MAX_REGIONS: usize = 64;
const MAX_NAME: usize = 64;
const MAX_LABELS: usize = 32;
const MAX_LABEL_VALUE: usize = 256;
const MAX_PINS: usize = 8;
/// Longest hold-down (`alert_after`, `recover_after`, per target and in `[alerts]`): a page held
/// back longer than a day is a page lost.
pub const MAX_HOLD: Duration = Duration::from_secs(86_400);
/// Longest flap window (per target and in `[alerts]`): the changes kept per target are at most
/// this many.
pub const MAX_FLAP_WINDOW: u32 = 100;

/// A field that cannot be accepted, named so the operator can find it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct SpecError {
    pub field: &'static str,
    pub reason: String,
}

fn bad(field: &'static str, reason: impl Into<String>) -> SpecError {
    SpecError { field, reason: reason.into() }
}

pub fn to_duration(d: Option<&prost_types::Duration>) -> Option<Duration> {
    d.and_then(|d| {
        let secs = u64::try_from(d.seconds).ok()?;
        Some(Duration::new(secs, u32::try_from(d.nanos).ok()?))
    })
}

pub fn from_duration(d: Duration) -> prost_types::Duration {
    prost_types::Duration { seconds: d.as_secs() as i64, nanos: d.subsec_nanos() as i32 }
}

/// Checks `spec` and fills in its defaults; the URL becomes its normalized form.
pub fn normalize(mut spec: TargetSpec) -> Result<TargetSpec, SpecError> {
    // Agents report a target by its URL, and the coordinator stores no result whose URL is over
    // the shared limit: a longer one could never be judged. Normalizing may lengthen it
    // (percent-encoding), so the stored form is checked too.
    let too_long = |len: usize| bad("url", format!("at most {MAX_URL} bytes, got {len}"));
    if spec.url.len() > MAX_URL {
        return Err(too_long(spec.url.len()));
    }
    let url = TargetUrl::parse(&spec.url).map_err(|e| bad("url", e.to_string()))?;
    spec.url = url.to_string();
    if spec.url.len() > MAX_URL {
        return Err(too_long(spec.url.len()));
    }
    let interval = match spec.interval.as_ref() {
        None => DEFAULT_INTERVAL,
        Some(d) => to_duration(Some(d)).ok_or_else(|| bad("interval", "must not be negative"))?,
    };
    if interval < Duration::from_secs(1) {
        return Err(bad("interval", format!("{interval:?} is shorter than the minimum of 1s")));
    }
    if interval > Duration::from_secs(86_400) {
        return Err(bad("interval", "must be at most 1 day"));
    }
    let timeout = match spec.timeout.as_ref() {
        None => DEFAULT_TIMEOUT.min(interval / 2),
        Some(d) => to_duration(Some(d)).ok_or_else(|| bad("timeout", "must not be negative"))?,
    };
    if timeout < Duration::from_millis(100) {
        return Err(bad("timeout", "must be at least 100ms"));
    }
    if timeout >= interval {
        return Err(bad("timeout", format!("{timeout:?} must be shorter than the interval ({interval:?})")));
    }
    spec.interval = Some(from_duration(interval));
    spec.timeout = Some(from_duration(timeout));
    if spec.regions.len() > MAX_REGIONS {
        return Err(bad("regions", format!("at most {MAX_REGIONS} regions")));
    }
    for region in &spec.regions {
        check_name("regions", region)?;
    }
    let mut regions = spec.regions.clone();
    regions.sort();
    regions.dedup();
    if regions.len() != spec.regions.len() {
        return Err(bad("regions", "a region is listed twice"));
    }
    if !spec.regions.is_empty() && spec.quorum as usize > spec.regions.len() {
        return Err(bad("quorum", format!("{} is more than the {} regions listed", spec.quorum, spec.regions.len())));
    }
    if let Some(code) = spec.expect_status.iter().find(|c| !(100..=599).contains(*c)) {
        return Err(bad("expect_status", format!("{code} is not an HTTP status (100-599)")));
    }
    for ip in &spec.expect_ips {
        ip.parse::<IpAddr>().map_err(|_| bad("expect_ips", format!("{ip:?} is not an IP address")))?;
    }
    if spec.warn_days == 0 {
        spec.warn_days = DEFAULT_WARN_DAYS;
    }
    if spec.critical_days == 0 {
        spec.critical_days = DEFAULT_CRITICAL_DAYS.min(spec.warn_days);
    }
    if spec.critical_days > spec.warn_days {
        return Err(bad(
            "critical_days",
            format!("{} is more than warn_days ({})", spec.critical_days, spec.warn_days),
        ));
    }
    check_labels(spec.labels.iter())?;
    if spec.pin_sha256.len() > MAX_PINS {
        return Err(bad("pin_sha256", format!("at most {MAX_PINS} pins")));
    }
    spec.pin_sha256 = spec
        .pin_sha256
        .iter()
        .map(|pin| vantage_shared::pin::parse_pin(pin).map_err(|e| bad("pin_sha256", e.to_string())))
        .collect::<Result<_, _>>()?;
    if spec.flap_window.is_some_and(|w| w > MAX_FLAP_WINDOW) {
        return Err(bad("flap_window", format!("at most {MAX_FLAP_WINDOW} intervals (0 turns flap damping off)")));
    }
    match (spec.flap_high, spec.flap_low) {
        (None, None) => {}
        (Some(high), Some(low)) if (1..=100).contains(&high) && (1..high).contains(&low) => {}
        (Some(high), Some(low)) => {
            return Err(bad("flap_low", format!("{low} must be at least 1 and below flap_high ({high}, at most 100)")));
        }
        _ => return Err(bad("flap_high", "flap_high and flap_low are set together")),
    }
    for (field, hold) in [("alert_after", &spec.alert_after), ("recover_after", &spec.recover_after)] {
        if let Some(d) = hold {
            let d = to_duration(Some(d)).ok_or_else(|| bad(field, "must not be negative"))?;
            if d > MAX_HOLD {
                return Err(bad(field, "must be at most 1 day"));
            }
        }
    }
    Ok(spec)
}

/// Labels: at most 32, keys like names, values up to 256 bytes of text.
pub fn check_labels<'a>(labels: impl ExactSizeIterator<Item = (&'a String, &'a String)>) -> Result<(), SpecError> {
    if labels.len() > MAX_LABELS {
        return Err(bad("labels", format!("at most {MAX_LABELS} labels")));
    }
    for (key, value) in labels {
        check_name("labels", key)?;
        if value.len() > MAX_LABEL_VALUE || value.chars().any(char::is_control) {
            return Err(bad("labels", format!("the value of {key:?} must be at most {MAX_LABEL_VALUE} bytes of text")));
        }
    }
    Ok(())
}

/// Region and agent names: short, printable, no spaces.
pub fn check_name(field: &'static str, name: &str) -> Result<(), SpecError> {
    if name.is_empty() || name.len() > MAX_NAME {
        return Err(bad(field, format!("{name:?} must be 1 to {MAX_NAME} characters")));
    }
    if !name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')) {
        return Err(bad(field, format!("{name:?} may hold only letters, digits, '-', '_' and '.'")));
    }
    Ok(())
}

/// A target's interval and timeout.
pub fn timing(spec: &TargetSpec) -> (Duration, Duration) {
    (
        to_duration(spec.interval.as_ref()).unwrap_or(DEFAULT_INTERVAL),
        to_duration(spec.timeout.as_ref()).unwrap_or(DEFAULT_TIMEOUT),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(url: &str) -> TargetSpec {
        TargetSpec { url: url.into(), ..Default::default() }
    }

    #[test]
    fn defaults_are_filled_in() {
        let s = normalize(spec("https://Shop.Example.com")).unwrap();
        assert_eq!(s.url, "https://shop.example.com/");
        assert_eq!(timing(&s), (DEFAULT_INTERVAL, DEFAULT_TIMEOUT));
        assert_eq!((s.warn_days, s.critical_days), (30, 7));
        let mut short = spec("https://a.example/");
        short.interval = Some(from_duration(Duration::from_secs(5)));
        assert_eq!(timing(&normalize(short).unwrap()).1, Duration::from_millis(2500));
    }

    #[test]
    fn a_url_of_the_limit_is_accepted() {
        let path = "x".repeat(MAX_URL - "https://a.example/".len());
        let s = normalize(spec(&format!("https://a.example/{path}"))).unwrap();
        assert_eq!(s.url.len(), MAX_URL);
        let over = normalize(spec(&format!("https://a.example/{path}x"))).unwrap_err();
        assert_eq!(over.to_string(), format!("url: at most {MAX_URL} bytes, got {}", MAX_URL + 1));
    }

    #[test]
    fn pins_are_stored_lowercase_without_colons() {
        let colons = vec!["AB"; 32].join(":");
        let s = normalize(TargetSpec { pin_sha256: vec![colons], ..spec("https://a.example/") }).unwrap();
        assert_eq!(s.pin_sha256, vec!["ab".repeat(32)]);
    }

    #[test]
    fn each_bad_field_is_named() {
        let cases: Vec<(TargetSpec, &str)> = vec![
            (spec("ftp://a.example/"), "url"),
            (spec(&format!("https://a.example/{}", "x".repeat(MAX_URL))), "url"),
            // Within the limit as typed, over it once spaces are percent-encoded.
            (spec(&format!("https://a.example/{}", " x".repeat(MAX_URL / 2 - 20))), "url"),
            (
                TargetSpec { interval: Some(from_duration(Duration::from_millis(500))), ..spec("https://a.example/") },
                "interval",
            ),
            (
                TargetSpec {
                    interval: Some(from_duration(Duration::from_secs(10))),
                    timeout: Some(from_duration(Duration::from_secs(10))),
                    ..spec("https://a.example/")
                },
                "timeout",
            ),
            (TargetSpec { regions: vec!["eu west".into()], ..spec("https://a.example/") }, "regions"),
            (TargetSpec { regions: vec!["eu".into(), "eu".into()], ..spec("https://a.example/") }, "regions"),
            (TargetSpec { regions: vec!["eu".into()], quorum: 2, ..spec("https://a.example/") }, "quorum"),
            (TargetSpec { expect_status: vec![700], ..spec("https://a.example/") }, "expect_status"),
            (TargetSpec { expect_ips: vec!["nope".into()], ..spec("https://a.example/") }, "expect_ips"),
            (TargetSpec { warn_days: 5, critical_days: 9, ..spec("https://a.example/") }, "critical_days"),
            (TargetSpec { labels: [("team name".into(), "x".into())].into(), ..spec("https://a.example/") }, "labels"),
            (TargetSpec { labels: [("team".into(), "x".repeat(300))].into(), ..spec("https://a.example/") }, "labels"),
            (
                TargetSpec {
                    labels: (0..33).map(|i| (format!("k{i}"), String::new())).collect(),
                    ..spec("https://a.example/")
                },
                "labels",
            ),
            (TargetSpec { pin_sha256: vec!["ab".repeat(31)], ..spec("https://a.example/") }, "pin_sha256"),
            (TargetSpec { pin_sha256: vec!["a".repeat(64); 9], ..spec("https://a.example/") }, "pin_sha256"),
        ];
        for (s, field) in cases {
            assert_eq!(normalize(s.clone()).unwrap_err().field, field, "{s:?}");
        }
    }
}
