//! The probe report: what one probe of one URL found. Its JSON form is the stable contract of
//! `vantage-agent check --json` (fields may be added, never renamed).

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use crate::failure::Failure;

/// Overall outcome of a probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProbeStatus {
    Up,
    /// Some backends fail while others pass.
    Degraded,
    Down,
}

/// Certificate health against the warning and critical day thresholds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CertHealth {
    Ok,
    Warning,
    Critical,
    Expired,
}

impl CertHealth {
    /// Health of a certificate with `days_remaining` whole days left (negative once expired).
    pub fn classify(seconds_remaining: i64, warn_days: u32, critical_days: u32) -> CertHealth {
        const DAY: i64 = 86_400;
        if seconds_remaining <= 0 {
            CertHealth::Expired
        } else if seconds_remaining < i64::from(critical_days) * DAY {
            CertHealth::Critical
        } else if seconds_remaining < i64::from(warn_days) * DAY {
            CertHealth::Warning
        } else {
            CertHealth::Ok
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            CertHealth::Ok => "ok",
            CertHealth::Warning => "warning",
            CertHealth::Critical => "critical",
            CertHealth::Expired => "expired",
        }
    }
}

/// One certificate of the served chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChainCert {
    pub subject: String,
    pub issuer: String,
    /// RFC 3339, UTC.
    pub not_after: String,
    pub sha256: String,
}

/// Facts about the served leaf certificate and its chain.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CertReport {
    pub subject: String,
    pub issuer: String,
    pub sans: Vec<String>,
    /// RFC 3339, UTC.
    pub not_before: String,
    /// RFC 3339, UTC.
    pub not_after: String,
    /// Whole days until the first certificate of the served chain expires (negative once expired).
    pub days_remaining: i64,
    pub health: CertHealth,
    /// SHA-256 of the leaf's DER, lowercase hex.
    pub sha256: String,
    /// The earliest `not_after` of any certificate in the served chain, RFC 3339 UTC.
    pub earliest_expiry: String,
    /// Key algorithm and size, e.g. `ECDSA P-256` or `RSA 2048`.
    pub key: String,
    pub signature_algorithm: String,
    /// Whether the chain verified against the trust roots for this host name, now.
    pub trusted: bool,
    /// Every certificate the server sent, leaf first.
    pub chain: Vec<ChainCert>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TlsReport {
    /// `TLSv1.3` or `TLSv1.2`.
    pub version: String,
    pub cipher: String,
    /// Negotiated application protocol (`h2`, `http/1.1`), if any.
    pub alpn: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HttpReport {
    pub status: u16,
    /// `HTTP/1.1` or `HTTP/2`.
    pub version: String,
    /// Each redirect followed: the status and the URL it pointed to.
    pub redirects: Vec<Redirect>,
    /// The URL whose response is reported (after redirects).
    pub final_url: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Redirect {
    pub status: u16,
    pub location: String,
}

/// Time spent in each stage, in milliseconds; `null` for a stage that did not run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Timings {
    pub dns: Option<f64>,
    pub connect: Option<f64>,
    pub tls: Option<f64>,
    pub ttfb: Option<f64>,
    pub total: f64,
}

/// The outcome for one resolved address.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BackendReport {
    pub address: SocketAddr,
    pub status: ProbeStatus,
    pub failure: Option<Failure>,
    pub cert_sha256: Option<String>,
    pub cert_health: Option<CertHealth>,
    pub cert_days_remaining: Option<i64>,
}

/// Everything one probe found. With several backends, the top-level stage facts are those of the
/// backend the failure comes from (or the first backend when all pass).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProbeReport {
    pub url: String,
    pub status: ProbeStatus,
    pub failure: Option<Failure>,
    /// Every address the name resolved to (or was pinned to).
    pub addresses: Vec<std::net::IpAddr>,
    pub cert: Option<CertReport>,
    pub tls: Option<TlsReport>,
    pub http: Option<HttpReport>,
    pub timings_ms: Timings,
    pub backends: Vec<BackendReport>,
    /// When the probe started, RFC 3339 UTC.
    pub checked_at: String,
}

/// Formats a time as RFC 3339 in UTC, to the second (`2026-11-25T10:09:23Z`).
pub fn rfc3339(t: time::OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    let format = time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]Z");
    t.format(&format).unwrap_or_else(|_| t.unix_timestamp().to_string())
}

/// Reads an RFC 3339 time back as Unix seconds.
pub fn parse_rfc3339(text: &str) -> Option<i64> {
    time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339).ok().map(|t| t.unix_timestamp())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_thresholds() {
        const DAY: i64 = 86_400;
        assert_eq!(CertHealth::classify(90 * DAY, 30, 7), CertHealth::Ok);
        assert_eq!(CertHealth::classify(30 * DAY, 30, 7), CertHealth::Ok);
        assert_eq!(CertHealth::classify(30 * DAY - 1, 30, 7), CertHealth::Warning);
        assert_eq!(CertHealth::classify(7 * DAY - 1, 30, 7), CertHealth::Critical);
        assert_eq!(CertHealth::classify(1, 30, 7), CertHealth::Critical);
        assert_eq!(CertHealth::classify(0, 30, 7), CertHealth::Expired);
        assert_eq!(CertHealth::classify(-DAY, 30, 7), CertHealth::Expired);
    }

    #[test]
    fn rfc3339_is_utc_to_the_second() {
        let t = time::macros::datetime!(2026-11-25 10:09:23.5 +02:00);
        assert_eq!(rfc3339(t), "2026-11-25T08:09:23Z");
        assert_eq!(parse_rfc3339("2026-11-25T08:09:23Z"), Some(t.unix_timestamp()));
    }
}
