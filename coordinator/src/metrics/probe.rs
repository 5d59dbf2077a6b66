//! `GET /probe?target=URL`: one target's newest result from each of its regions, in
//! blackbox_exporter's metric names and each labelled `region="…"`, plus each region's opinion.
//! Prometheus scrapes it per target with blackbox_exporter's usual relabeling
//! (`deploy/prometheus/vantage-scrape.yml`), so dashboards and rules written for blackbox carry
//! over, and `/metrics` stays one line per target. Nothing is probed on request: the page shows
//! what the agents last sent. `/probe/targets` lists the targets for Prometheus's discovery.

use vantage_proto::v1::{HistoryEntry, ProbeResult, ProbeStatus, TargetStatus};
use vantage_shared::limits::MAX_URL;

use super::text::Text;
use crate::hub::Hub;

/// Why `/probe` has no page to give.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProbeError {
    #[error("give the target to show, as configured: /probe?target=https://example.com/")]
    Missing,
    #[error("the target parameter is {len} bytes; target URLs hold at most {MAX_URL}")]
    TooLong { len: usize },
    #[error("{0}")]
    Invalid(#[from] vantage_shared::TargetError),
    #[error("the coordinator does not watch {0} (`vantage-coordinator targets ls` lists what it watches)")]
    Unknown(String),
}

impl ProbeError {
    /// The HTTP status that says it: 404 for a target not watched, 400 for a bad request.
    pub fn http_status(&self) -> u16 {
        match self {
            ProbeError::Unknown(_) => 404,
            ProbeError::Missing | ProbeError::TooLong { .. } | ProbeError::Invalid(_) => 400,
        }
    }
}

/// The target a `/probe` query names, normalised as the API does (`https://Example.COM` is
/// `https://example.com/`). Other parameters (a blackbox job's `module`) are ignored.
pub fn target_of(query: &str) -> Result<String, ProbeError> {
    let asked = url::form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == "target")
        .map(|(_, v)| v.into_owned())
        .filter(|v| !v.trim().is_empty())
        .ok_or(ProbeError::Missing)?;
    if asked.len() > MAX_URL {
        return Err(ProbeError::TooLong { len: asked.len() });
    }
    Ok(vantage_shared::TargetUrl::parse(&asked)?.to_string())
}

/// The page for the target `query` names.
pub fn answer(hub: &Hub, query: &str) -> Result<String, ProbeError> {
    let url = target_of(query)?;
    let status = hub.statuses(std::slice::from_ref(&url)).pop().ok_or(ProbeError::Unknown(url.clone()))?;
    Ok(render(&status, &hub.latest_of(&url)))
}

/// `GET /probe/targets`: every watched target in Prometheus's HTTP service discovery format
/// (`http_sd_configs`), so the `/probe` job's target list is Vantage's own and never drifts.
pub fn targets_sd(hub: &Hub) -> String {
    let mut urls: Vec<String> = hub.targets().into_iter().map(|t| t.url).collect();
    urls.sort_unstable();
    serde_json::json!([{ "targets": urls, "labels": {} }]).to_string() + "\n"
}

type Extract = fn(&ProbeResult) -> Option<f64>;

/// Families with one sample per region: name, help, value (none: the region's result lacks it).
const PER_REGION: [(&str, &str, Extract); 8] = [
    ("probe_success", "Whether the region's newest probe succeeded (1) or not (0).", |r| {
        Some(if r.status == ProbeStatus::Up as i32 { 1.0 } else { 0.0 })
    }),
    ("probe_duration_seconds", "How long the region's newest probe took, in seconds.", |r| {
        r.timings.as_ref().map(|t| seconds(t.total_ms))
    }),
    ("probe_dns_lookup_time_seconds", "How long the newest probe's DNS lookup took, in seconds.", |r| {
        r.timings.as_ref()?.dns_ms.map(seconds)
    }),
    ("probe_http_status_code", "The final HTTP status of the newest probe (0 when none arrived).", |r| {
        Some(f64::from(r.http_status))
    }),
    // As blackbox_exporter's: about the response, so 0 (and no version) when none arrived.
    ("probe_http_ssl", "Whether the newest probe's final response came over TLS.", |r| {
        Some(if r.http_status != 0 && !r.tls_version.is_empty() { 1.0 } else { 0.0 })
    }),
    ("probe_http_version", "The HTTP version of the newest probe's response (by ALPN: 2 or 1.1).", |r| {
        match (r.http_status, r.alpn.as_str()) {
            (0, _) => None,
            (_, "h2") => Some(2.0),
            (_, "http/1.1") => Some(1.1),
            _ => None,
        }
    }),
    (
        "probe_ssl_earliest_cert_expiry",
        "When the first certificate of the served chain to expire does so, in Unix seconds.",
        |r| {
            let cert = r.cert.as_ref()?;
            cert.earliest_expiry.or(cert.not_after).map(|t| t.seconds as f64)
        },
    ),
    ("vantage_probe_timestamp_seconds", "When the region's newest probe ran, in Unix seconds.", |r| {
        r.checked_at.as_ref().map(|t| crate::clock::ms(t) as f64 / 1000.0)
    }),
];

/// The exposition for one target: `status` for the regions' opinions, `latest` the newest entry
/// of each region.
pub fn render(status: &TargetStatus, latest: &[HistoryEntry]) -> String {
    let results: Vec<(&str, &ProbeResult)> =
        latest.iter().filter_map(|e| Some((e.region.as_str(), e.result.as_ref()?))).collect();
    let mut text = Text::new();
    for (name, help, extract) in PER_REGION {
        text.family(name, "gauge", help);
        for &(region, result) in &results {
            if let Some(value) = extract(result) {
                text.sample(name, &[("region", region)], value);
            }
        }
    }
    text.family("probe_http_duration_seconds", "gauge", "Duration of each phase of the newest probe, in seconds.");
    for &(region, result) in &results {
        let Some(t) = &result.timings else { continue };
        for (phase, ms) in
            [("resolve", t.dns_ms), ("connect", t.connect_ms), ("tls", t.tls_ms), ("processing", t.ttfb_ms)]
        {
            if let Some(ms) = ms {
                text.sample("probe_http_duration_seconds", &[("region", region), ("phase", phase)], seconds(ms));
            }
        }
    }
    text.family("probe_tls_version_info", "gauge", "The TLS version the newest probe negotiated.");
    for &(region, result) in &results {
        if !result.tls_version.is_empty() {
            let version = tls_version(&result.tls_version);
            text.sample("probe_tls_version_info", &[("region", region), ("version", &version)], 1.0);
        }
    }
    text.family("probe_ssl_last_chain_info", "gauge", "The served leaf certificate of the newest probe.");
    for &(region, result) in &results {
        let Some(cert) = &result.cert else { continue };
        let sans = cert.sans.join(",");
        let labels = [
            ("region", region),
            ("fingerprint_sha256", cert.sha256.as_str()),
            ("subject", cert.subject.as_str()),
            ("issuer", cert.issuer.as_str()),
            ("subjectalternative", sans.as_str()),
        ];
        text.sample("probe_ssl_last_chain_info", &labels, 1.0);
    }
    text.family(
        "vantage_probe_failure_info",
        "gauge",
        "The failure code of the region's newest probe, when it failed (see the README's failure codes).",
    );
    for &(region, result) in &results {
        let code = result.failure.as_ref().and_then(|f| vantage_shared::FailureCode::from_code(&f.code));
        // Only known codes: an agent cannot mint label values.
        if let Some(code) = code {
            text.sample("vantage_probe_failure_info", &[("region", region), ("code", code.as_str())], 1.0);
        }
    }
    text.family(
        "vantage_region_opinion",
        "gauge",
        "Each region's opinion of the target: one series per region, labelled with the current opinion, value 1.",
    );
    for r in &status.regions {
        let opinion = crate::names::opinion(r.opinion);
        text.sample("vantage_region_opinion", &[("region", &r.region), ("opinion", opinion)], 1.0);
    }
    text.finish()
}

/// Milliseconds as seconds, to the microsecond: `0.004003`, not `0.0040030000000000005`.
fn seconds(ms: f64) -> f64 {
    (ms * 1000.0).round() / 1e6
}

/// blackbox_exporter's spelling of a TLS version (`TLS 1.3`); the agent reports rustls's
/// (`TLSv1.3`).
fn tls_version(agent: &str) -> String {
    match agent.strip_prefix("TLSv") {
        Some(number) => format!("TLS {number}"),
        None => agent.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use vantage_proto::v1::{Certificate, Failure, Opinion, RegionStatus, Timings, Verdict};

    use super::*;

    fn entry(region: &str, result: ProbeResult) -> HistoryEntry {
        HistoryEntry {
            region: region.into(),
            agent: format!("agent-{region}"),
            result: Some(result),
            ..Default::default()
        }
    }

    fn up() -> ProbeResult {
        ProbeResult {
            url: "https://shop.example/".into(),
            status: ProbeStatus::Up as i32,
            cert: Some(Certificate {
                subject: "CN=shop.example".into(),
                issuer: "CN=Lab CA".into(),
                sans: vec!["shop.example".into(), "www.shop.example".into()],
                sha256: "ab12".into(),
                not_after: Some(prost_types::Timestamp { seconds: 1_800_000_000, nanos: 0 }),
                earliest_expiry: Some(prost_types::Timestamp { seconds: 1_790_000_000, nanos: 0 }),
                ..Default::default()
            }),
            tls_version: "TLSv1.3".into(),
            alpn: "h2".into(),
            http_status: 200,
            timings: Some(Timings {
                dns_ms: Some(2.0),
                connect_ms: Some(10.0),
                tls_ms: Some(20.0),
                ttfb_ms: Some(30.0),
                total_ms: 62.5,
            }),
            checked_at: Some(prost_types::Timestamp { seconds: 1_764_000_000, nanos: 250_000_000 }),
            ..Default::default()
        }
    }

    fn refused() -> ProbeResult {
        ProbeResult {
            url: "https://shop.example/".into(),
            status: ProbeStatus::Down as i32,
            failure: Some(Failure { code: "tcp_refused".into(), ..Default::default() }),
            timings: Some(Timings { dns_ms: Some(1.0), total_ms: 3.0, ..Default::default() }),
            ..Default::default()
        }
    }

    fn status(opinions: &[(&str, Opinion)]) -> TargetStatus {
        TargetStatus {
            url: "https://shop.example/".into(),
            verdict: Verdict::Degraded as i32,
            regions: opinions
                .iter()
                .map(|(region, o)| RegionStatus { region: (*region).into(), opinion: *o as i32, ..Default::default() })
                .collect(),
            ..Default::default()
        }
    }

    fn lines(text: &str) -> Vec<&str> {
        text.lines().filter(|l| !l.starts_with('#')).collect()
    }

    #[test]
    fn each_region_gets_blackbox_names_and_its_opinion() {
        let latest = [entry("eu-west", up()), entry("us-east", refused())];
        let text = render(
            &status(&[("eu-west", Opinion::Up), ("us-east", Opinion::Down), ("ap-south", Opinion::Unknown)]),
            &latest,
        );
        assert_eq!(
            lines(&text),
            [
                "probe_success{region=\"eu-west\"} 1",
                "probe_success{region=\"us-east\"} 0",
                "probe_duration_seconds{region=\"eu-west\"} 0.0625",
                "probe_duration_seconds{region=\"us-east\"} 0.003",
                "probe_dns_lookup_time_seconds{region=\"eu-west\"} 0.002",
                "probe_dns_lookup_time_seconds{region=\"us-east\"} 0.001",
                "probe_http_status_code{region=\"eu-west\"} 200",
                "probe_http_status_code{region=\"us-east\"} 0",
                "probe_http_ssl{region=\"eu-west\"} 1",
                "probe_http_ssl{region=\"us-east\"} 0",
                "probe_http_version{region=\"eu-west\"} 2",
                "probe_ssl_earliest_cert_expiry{region=\"eu-west\"} 1790000000",
                "vantage_probe_timestamp_seconds{region=\"eu-west\"} 1764000000.25",
                "probe_http_duration_seconds{region=\"eu-west\",phase=\"resolve\"} 0.002",
                "probe_http_duration_seconds{region=\"eu-west\",phase=\"connect\"} 0.01",
                "probe_http_duration_seconds{region=\"eu-west\",phase=\"tls\"} 0.02",
                "probe_http_duration_seconds{region=\"eu-west\",phase=\"processing\"} 0.03",
                "probe_http_duration_seconds{region=\"us-east\",phase=\"resolve\"} 0.001",
                "probe_tls_version_info{region=\"eu-west\",version=\"TLS 1.3\"} 1",
                "probe_ssl_last_chain_info{region=\"eu-west\",fingerprint_sha256=\"ab12\",subject=\"CN=shop.example\",\
                 issuer=\"CN=Lab CA\",subjectalternative=\"shop.example,www.shop.example\"} 1",
                "vantage_probe_failure_info{region=\"us-east\",code=\"tcp_refused\"} 1",
                "vantage_region_opinion{region=\"eu-west\",opinion=\"up\"} 1",
                "vantage_region_opinion{region=\"us-east\",opinion=\"down\"} 1",
                "vantage_region_opinion{region=\"ap-south\",opinion=\"unknown\"} 1",
            ]
        );
        // No target label: Prometheus's relabeling gives it, as for blackbox_exporter.
        assert!(!text.contains("target="), "{text}");
    }

    #[test]
    fn a_handshake_without_a_response_is_no_ssl_response_as_in_blackbox() {
        let mut expired = up();
        expired.status = ProbeStatus::Down as i32;
        expired.http_status = 0;
        expired.failure = Some(Failure { code: "cert_expired".into(), ..Default::default() });
        let text = render(&status(&[("eu-west", Opinion::Down)]), &[entry("eu-west", expired)]);
        assert!(text.contains("\nprobe_http_ssl{region=\"eu-west\"} 0\n"), "{text}");
        assert!(!text.contains("probe_http_version{"), "{text}");
        assert!(text.contains("\nprobe_tls_version_info{region=\"eu-west\",version=\"TLS 1.3\"} 1\n"), "{text}");
        assert!(text.contains("\nvantage_probe_failure_info{region=\"eu-west\",code=\"cert_expired\"} 1\n"), "{text}");
    }

    #[test]
    fn an_unknown_failure_code_mints_no_label() {
        let mut odd = refused();
        odd.failure = Some(Failure { code: "made_up_by_an_agent".into(), ..Default::default() });
        let text = render(&status(&[("eu-west", Opinion::Down)]), &[entry("eu-west", odd)]);
        assert!(!text.contains("made_up"), "{text}");
    }

    #[test]
    fn the_target_parameter_is_required_bounded_and_normalised() {
        assert_eq!(target_of(""), Err(ProbeError::Missing));
        assert_eq!(target_of("module=http_2xx"), Err(ProbeError::Missing));
        assert_eq!(target_of("target="), Err(ProbeError::Missing));
        let long = format!("target=https://a.example/{}", "x".repeat(MAX_URL));
        assert!(matches!(target_of(&long), Err(ProbeError::TooLong { .. })));
        assert_eq!(target_of(&long).unwrap_err().http_status(), 400);
        let invalid = target_of("target=shop.example").unwrap_err();
        assert!(matches!(invalid, ProbeError::Invalid(_)) && invalid.http_status() == 400, "{invalid}");
        assert_eq!(target_of("module=http_2xx&target=https%3A%2F%2FShop.Example").unwrap(), "https://shop.example/");
        assert_eq!(ProbeError::Unknown("https://a.example/".into()).http_status(), 404);
    }

    #[test]
    fn seconds_carry_no_float_noise() {
        assert_eq!(seconds(4.003).to_string(), "0.004003");
        assert_eq!(seconds(0.685).to_string(), "0.000685");
        assert_eq!(seconds(62.5).to_string(), "0.0625");
    }

    #[test]
    fn tls_versions_are_spelled_as_blackbox_does() {
        assert_eq!(tls_version("TLSv1.3"), "TLS 1.3");
        assert_eq!(tls_version("TLSv1.2"), "TLS 1.2");
        assert_eq!(tls_version("unknown"), "unknown");
    }
}
