//! Between the probe's own types and the wire: reports become `vantage.v1.ProbeResult`, cut to
//! the shared size limits (so the agent never sends what the coordinator refuses), and the
//! coordinator's `TargetSpec`s become probe targets.

use std::net::IpAddr;
use std::time::Duration;

use vantage_proto::v1 as pb;
use vantage_shared::TargetUrl;
use vantage_shared::failure::{Failure, Stage};
use vantage_shared::limits::{self, truncate, truncate_list, truncated_more};
use vantage_shared::report::{CertHealth, ProbeReport, ProbeStatus, parse_rfc3339};

use crate::probe::{Target, cert::Thresholds};

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

/// A report as the coordinator receives it, cut to the limits by [`fit`]; `checked_at` is when
/// the probe started.
pub fn result(report: &ProbeReport, checked_at: std::time::SystemTime) -> pb::ProbeResult {
    let mut result = unbounded(report, checked_at);
    fit(&mut result);
    result
}

/// Cuts whatever a server controls to the shared limits, marking each cut: text ends in
/// [`limits::TRUNCATED`]; a list cut short (SANs, chain, backends) ends in an entry reading
/// `…[truncated: N more]` (the SAN itself, the chain certificate's subject, the backend's address).
/// Worst case, a result stays well under [`limits::MAX_RESULT_BYTES`] (a test builds it).
pub fn fit(result: &mut pb::ProbeResult) {
    if let Some(f) = result.failure.as_mut() {
        fit_failure(f, limits::MAX_TEXT);
    }
    if let Some(cert) = result.cert.as_mut() {
        for name in [&mut cert.subject, &mut cert.issuer, &mut cert.key, &mut cert.signature_algorithm] {
            truncate(name, limits::MAX_NAME);
        }
        truncate(&mut cert.sha256, limits::MAX_ID * 2);
        fit_sans(&mut cert.sans);
        truncate_list(&mut cert.chain, limits::MAX_CHAIN, |more| pb::ChainCertificate {
            subject: truncated_more(more),
            ..Default::default()
        });
        for c in &mut cert.chain {
            truncate(&mut c.subject, limits::MAX_NAME);
            truncate(&mut c.issuer, limits::MAX_NAME);
            truncate(&mut c.sha256, limits::MAX_ID * 2);
        }
    }
    for text in [&mut result.tls_version, &mut result.tls_cipher, &mut result.alpn] {
        truncate(text, limits::MAX_ID);
    }
    truncate_list(&mut result.backends, limits::MAX_BACKENDS, |more| pb::Backend {
        address: truncated_more(more),
        ..Default::default()
    });
    for b in &mut result.backends {
        truncate(&mut b.address, limits::MAX_ID);
        truncate(&mut b.cert_sha256, limits::MAX_ID * 2);
        if let Some(f) = b.failure.as_mut() {
            fit_failure(f, limits::MAX_BACKEND_TEXT);
        }
    }
}

fn fit_failure(f: &mut pb::Failure, max: usize) {
    truncate(&mut f.code, limits::MAX_ID);
    for text in [&mut f.message, &mut f.hint, &mut f.detail] {
        truncate(text, max);
    }
}

/// At most [`limits::MAX_SANS`] names of [`limits::MAX_NAME`] bytes, [`limits::MAX_SANS_BYTES`]
/// in all; the last kept entry counts the names left out.
fn fit_sans(sans: &mut Vec<String>) {
    let mut total = 0;
    let mut keep = 0;
    for san in sans.iter_mut() {
        truncate(san, limits::MAX_NAME);
        if keep == limits::MAX_SANS || total + san.len() > limits::MAX_SANS_BYTES {
            break;
        }
        total += san.len();
        keep += 1;
    }
    if keep < sans.len() {
        // The marker takes the place of the last kept name, so the count stays within MAX_SANS.
        let keep = keep.saturating_sub(1);
        let more = sans.len() - keep;
        sans.truncate(keep);
        sans.push(truncated_more(more));
    }
}

fn unbounded(report: &ProbeReport, checked_at: std::time::SystemTime) -> pb::ProbeResult {
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
    let warn_days = if spec.warn_days == 0 { limits::DEFAULT_WARN_DAYS } else { spec.warn_days };
    let critical_days =
        if spec.critical_days == 0 { limits::DEFAULT_CRITICAL_DAYS.min(warn_days) } else { spec.critical_days };
    target.thresholds = Thresholds { warn_days, critical_days };
    target.pins = spec
        .pin_sha256
        .iter()
        .map(|pin| vantage_shared::pin::parse_pin(pin).map_err(|e| e.to_string()))
        .collect::<Result<_, _>>()?;
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

    fn big_failure(len: usize) -> pb::Failure {
        pb::Failure {
            stage: pb::Stage::Http as i32,
            code: "http_too_many_redirects".into(),
            message: "m".repeat(len),
            hint: "h".repeat(len),
            detail: format!("following the redirect to https://a.example/{}", "é".repeat(len)),
        }
    }

    /// Every field a server controls at many times its limit.
    fn oversized() -> pb::ProbeResult {
        pb::ProbeResult {
            url: "https://a.example/".into(),
            failure: Some(big_failure(limits::MAX_TEXT * 4)),
            cert: Some(pb::Certificate {
                subject: "CN=".to_owned() + &"s".repeat(limits::MAX_NAME * 8),
                issuer: "i".repeat(limits::MAX_NAME * 8),
                sans: (0..1000).map(|n| format!("{n}.{}", "x".repeat(limits::MAX_NAME * 2))).collect(),
                key: "k".repeat(limits::MAX_NAME * 2),
                signature_algorithm: "a".repeat(limits::MAX_NAME * 2),
                chain: (0..40)
                    .map(|n| pb::ChainCertificate {
                        subject: format!("{n}{}", "c".repeat(limits::MAX_NAME * 2)),
                        issuer: "i".repeat(limits::MAX_NAME * 2),
                        sha256: "0".repeat(64),
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            }),
            tls_cipher: "c".repeat(10_000),
            backends: (0..500)
                .map(|n| pb::Backend {
                    address: format!("192.0.2.{}:443", n % 256),
                    failure: Some(big_failure(limits::MAX_TEXT * 2)),
                    cert_sha256: "0".repeat(64),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn oversized_fields_are_cut_and_marked() {
        let mut r = oversized();
        fit(&mut r);
        let f = r.failure.as_ref().unwrap();
        for text in [&f.message, &f.hint, &f.detail] {
            assert!(text.len() <= limits::MAX_TEXT && text.ends_with(limits::TRUNCATED), "{}", text.len());
        }
        assert!(f.detail.starts_with("following the redirect to https://a.example/é"));
        let cert = r.cert.as_ref().unwrap();
        assert!(cert.subject.len() <= limits::MAX_NAME && cert.subject.ends_with(limits::TRUNCATED));
        assert!(cert.issuer.len() <= limits::MAX_NAME);
        assert!(cert.sans.len() <= limits::MAX_SANS);
        let (marker, kept) = cert.sans.split_last().unwrap();
        assert!(kept.iter().all(|s| s.len() <= limits::MAX_NAME && s.ends_with(limits::TRUNCATED)));
        assert!(kept.iter().map(String::len).sum::<usize>() <= limits::MAX_SANS_BYTES);
        assert_eq!(*marker, limits::truncated_more(1000 - kept.len()), "the marker counts what was left out");
        assert_eq!(cert.chain.len(), limits::MAX_CHAIN);
        assert_eq!(cert.chain.last().unwrap().subject, "…[truncated: 25 more]");
        assert!(cert.chain.iter().all(|c| c.subject.len() <= limits::MAX_NAME && c.issuer.len() <= limits::MAX_NAME));
        assert_eq!(r.backends.len(), limits::MAX_BACKENDS);
        assert_eq!(r.backends.last().unwrap().address, "…[truncated: 437 more]");
        let backend_failure = r.backends[0].failure.as_ref().unwrap();
        assert!(backend_failure.detail.len() <= limits::MAX_BACKEND_TEXT);
        assert!(r.tls_cipher.len() <= limits::MAX_ID);
    }

    #[test]
    fn the_largest_result_after_cutting_fits_the_result_cap() {
        use prost::Message as _;
        let mut r = oversized();
        // SANs as many as allowed and each as long as allowed, short of the byte budget: the
        // worst case for the certificate.
        r.cert.as_mut().unwrap().sans = vec!["s".repeat(limits::MAX_NAME); limits::MAX_SANS];
        fit(&mut r);
        let result = pb::TargetResult {
            target_url: "u".repeat(limits::MAX_URL),
            result: Some(r),
            run_now_id: "r".repeat(limits::MAX_ID),
            first_failure_code: "f".repeat(limits::MAX_ID),
            ..Default::default()
        };
        let len = result.encoded_len();
        assert!(len < limits::MAX_RESULT_BYTES, "{len} bytes");
    }

    #[test]
    fn a_result_within_the_limits_is_unchanged() {
        let mut r = pb::ProbeResult {
            url: "https://a.example/".into(),
            failure: Some(big_failure(100)),
            cert: Some(pb::Certificate {
                subject: "CN=a.example".into(),
                sans: vec!["a.example".into()],
                ..Default::default()
            }),
            ..Default::default()
        };
        let before = r.clone();
        fit(&mut r);
        assert_eq!(r, before);
    }
}
