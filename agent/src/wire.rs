//! Between the probe's own types and the wire: reports become `vantage.v1.ProbeResult`, and the
//! coordinator's `TargetSpec`s become probe targets.

use std::net::IpAddr;
use std::time::Duration;

use vantage_proto::v1 as pb;
use vantage_shared::TargetUrl;
use vantage_shared::failure::{Failure, Stage};
use vantage_shared::report::{CertHealth, ProbeReport, ProbeStatus, parse_rfc3339};

use crate::probe::{Target, cert, cert::Thresholds};

fn timestamp(rfc3339: &str) -> Option<prost_types::Timestamp> {
    parse_rfc3339(rfc3339).map(|seconds| prost_types::Timestamp { seconds, nanos: 0 })
}

fn status(s: ProbeStatus) -> i32 {
    let status = match s {
        ProbeStatus::Up => pb::ProbeStatus::Up,
        ProbeStatus::Degraded => pb::ProbeStatus::Degraded,
        ProbeStatus::Down => pb::ProbeStatus::Down,
    };
    status as i32
}

fn failure(f: &Failure) -> pb::Failure {
    let stage = match f.stage {
        Stage::Dns => pb::Stage::Dns,
        Stage::Connect => pb::Stage::Connect,
        Stage::Tls => pb::Stage::Tls,
        Stage::Certificate => pb::Stage::Certificate,
        Stage::Http => pb::Stage::Http,
    };
    pb::Failure {
        stage: stage as i32,
        code: f.code.as_str().into(),
        message: f.message.clone(),
        hint: f.hint.clone(),
        detail: f.detail.clone(),
    }
}

/// A report as the coordinator receives it; `checked_at` is when the probe started.
pub fn result(report: &ProbeReport, checked_at: std::time::SystemTime) -> pb::ProbeResult {
    let since_epoch = checked_at.duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    pb::ProbeResult {
        url: report.url.clone(),
        status: status(report.status),
        failure: report.failure.as_ref().map(failure),
        cert: report.cert.as_ref().map(|c| pb::Certificate {
            subject: c.subject.clone(),
            issuer: c.issuer.clone(),
            sans: c.sans.clone(),
            not_before: timestamp(&c.not_before),
            not_after: timestamp(&c.not_after),
            days_remaining: c.days_remaining,
            health: match c.health {
                CertHealth::Ok => pb::CertHealth::Ok,
                CertHealth::Warning => pb::CertHealth::Warning,
                CertHealth::Critical => pb::CertHealth::Critical,
                CertHealth::Expired => pb::CertHealth::Expired,
            } as i32,
            sha256: c.sha256.clone(),
            earliest_expiry: timestamp(&c.earliest_expiry),
            key: c.key.clone(),
            signature_algorithm: c.signature_algorithm.clone(),
            chain: c
                .chain
                .iter()
                .map(|x| pb::ChainCertificate {
                    subject: x.subject.clone(),
                    issuer: x.issuer.clone(),
                    not_after: timestamp(&x.not_after),
                    sha256: x.sha256.clone(),
                })
                .collect(),
        }),
        tls_version: report.tls.as_ref().map(|t| t.version.clone()).unwrap_or_default(),
        tls_cipher: report.tls.as_ref().map(|t| t.cipher.clone()).unwrap_or_default(),
        alpn: report.tls.as_ref().and_then(|t| t.alpn.clone()).unwrap_or_default(),
        http_status: report.http.as_ref().map_or(0, |h| u32::from(h.status)),
        timings: Some(pb::Timings {
            dns_ms: report.timings_ms.dns,
            connect_ms: report.timings_ms.connect,
            tls_ms: report.timings_ms.tls,
            ttfb_ms: report.timings_ms.ttfb,
            total_ms: report.timings_ms.total,
        }),
        backends: report
            .backends
            .iter()
            .map(|b| pb::Backend {
                address: b.address.to_string(),
                status: status(b.status),
                failure: b.failure.as_ref().map(failure),
                cert_sha256: b.cert_sha256.clone().unwrap_or_default(),
            })
            .collect(),
        checked_at: Some(prost_types::Timestamp {
            seconds: since_epoch.as_secs() as i64,
            nanos: since_epoch.subsec_nanos() as i32,
        }),
    }
}

/// A coordinator's target as the probe takes it.
pub fn target(spec: &pb::TargetSpec) -> Result<Target, String> {
    let url = TargetUrl::parse(&spec.url).map_err(|e| e.to_string())?;
    let mut target = Target::new(url);
    if let Some(timeout) = spec.timeout.as_ref() {
        target.timeout = Duration::new(timeout.seconds.max(0) as u64, timeout.nanos.max(0) as u32);
    }
    target.expect_ips = spec.expect_ips.iter().filter_map(|ip| ip.parse::<IpAddr>().ok()).collect();
    target.expect_status = spec.expect_status.iter().filter_map(|s| u16::try_from(*s).ok()).collect();
    target.all_backends = spec.all_backends;
    let warn_days = if spec.warn_days == 0 { 30 } else { spec.warn_days };
    let critical_days = if spec.critical_days == 0 { 7.min(warn_days) } else { spec.critical_days };
    target.thresholds = Thresholds { warn_days, critical_days };
    target.pins = spec.pin_sha256.iter().map(|pin| cert::parse_pin(pin)).collect::<Result<_, _>>()?;
    Ok(target)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pins_travel_from_the_spec_and_a_bad_one_refuses_the_target() {
        let pin = "ab".repeat(32);
        let spec =
            pb::TargetSpec { url: "https://a.example/".into(), pin_sha256: vec![pin.clone()], ..Default::default() };
        assert_eq!(target(&spec).unwrap().pins, vec![pin]);
        let bad = pb::TargetSpec { pin_sha256: vec!["nope".into()], ..spec };
        assert!(target(&bad).is_err(), "a target whose pin cannot be checked is not probed unpinned");
    }
}
