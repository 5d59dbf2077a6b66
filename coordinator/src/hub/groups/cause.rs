//! The cause several targets can share, for incident groups: the backend address the probes
//! failed against, the certificate served, or the DNS zone, with the failure code; and which
//! targets could fail for it too. Pure.

use vantage_shared::FailureCode;
use vantage_shared::failure::Stage;

use crate::alert::Alert;
use crate::hub::targets::Target;

/// What the members of one group share besides their failure code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Identity {
    /// The IP:port the probes failed against.
    Backend(String),
    /// The served certificate's SHA-256.
    Cert(String),
    /// The DNS zone of the target's host (the name less its first label).
    Zone(String),
}

/// The cause several targets can share: what they have in common, and the failure code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedCause {
    pub identity: Identity,
    pub code: String,
}

impl SharedCause {
    /// The group's key: the same on every coordinator, without a time.
    pub fn key(&self) -> String {
        match &self.identity {
            Identity::Backend(address) => format!("backend:{address}:{}", self.code),
            Identity::Cert(sha256) => format!("cert:{sha256}:{}", self.code),
            Identity::Zone(zone) => format!("dns:{zone}:{}", self.code),
        }
    }

    /// In words, after "N targets …".
    pub fn words(&self) -> String {
        match &self.identity {
            Identity::Backend(address) => format!("behind {address}"),
            Identity::Cert(sha256) => format!("serving certificate {}", &sha256[..sha256.len().min(16)]),
            Identity::Zone(zone) => format!("in the DNS zone {zone}"),
        }
    }
}

/// The host of a normalized target URL (`https://host:port/path`), brackets kept off IPv6.
fn host_of(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or(rest);
    let authority = authority.rsplit_once('@').map_or(authority, |(_, host)| host);
    if let Some(v6) = authority.strip_prefix('[') {
        return v6.split(']').next().unwrap_or(v6);
    }
    authority.split(':').next().unwrap_or(authority)
}

/// The DNS zone a target's name is in: its name less the first label (a name of two labels or
/// fewer is its own zone). `None` for an IP address.
pub fn zone_of(url: &str) -> Option<String> {
    let host = host_of(url).trim_end_matches('.').to_ascii_lowercase();
    if host.is_empty() || host.parse::<std::net::IpAddr>().is_ok() {
        return None;
    }
    match host.split_once('.') {
        Some((_, parent)) if parent.contains('.') => Some(parent.to_owned()),
        _ => Some(host),
    }
}

/// The cause a target's `down` alert can share with other targets: a DNS failure's zone, a
/// certificate failure's certificate, else the backend the probes failed against. `None` when
/// there is nothing to share (no known code, no backend).
pub fn shared_cause(target: &Target, down: &Alert) -> Option<SharedCause> {
    let code = down.cause.as_ref()?.code.clone();
    let identity = match FailureCode::from_code(&code)?.stage() {
        Stage::Dns => Identity::Zone(zone_of(&target.spec.url)?),
        Stage::Certificate => {
            let served = down.regions.iter().filter_map(|r| target.latest_in(r)).find_map(|l| l.cert.as_deref());
            match served.filter(|c| !c.sha256.is_empty()) {
                Some(cert) => Identity::Cert(cert.sha256.clone()),
                None => Identity::Backend(down.backend.clone()?),
            }
        }
        Stage::Connect | Stage::Tls | Stage::Http => Identity::Backend(down.backend.clone()?),
    };
    Some(SharedCause { identity, code })
}

/// Whether `target` could fail for `identity` too: it is served from that address or serves
/// that certificate (by any region's newest result, passing or not), or is in that zone.
pub fn shares(target: &Target, identity: &Identity) -> bool {
    match identity {
        Identity::Backend(address) => {
            target.address.as_deref() == Some(address.as_str())
                || target
                    .latest
                    .iter()
                    .any(|(_, l)| l.failure.as_ref().and_then(|f| f.backend.as_deref()) == Some(address.as_str()))
        }
        Identity::Cert(sha256) => {
            target.latest.iter().any(|(_, l)| l.cert.as_ref().is_some_and(|c| c.sha256 == *sha256))
        }
        Identity::Zone(zone) => zone_of(&target.spec.url).as_deref() == Some(zone.as_str()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alert::{AlertCause, AlertKind};
    use crate::hub::targets::{FailureFacts, Latest, Name};
    use vantage_proto::v1::TargetSpec;
    use vantage_shared::ProbeStatus;

    const BACKEND: &str = "203.0.113.7:443";

    /// A target DOWN in r1 with `code`, against BACKEND, and its `down` alert.
    fn failing(url: &str, code: &str) -> (Target, Alert) {
        let mut t = Target::new(TargetSpec { url: url.into(), ..Default::default() });
        let down = Latest {
            counted: 0,
            tracked: None,
            at_ms: 1_000,
            timed: true,
            status: Some(ProbeStatus::Down),
            code: FailureCode::from_code(code),
            latency_ms: 1.0,
            agent: "a".into(),
            failure: Some(Box::new(FailureFacts {
                code: code.into(),
                detail: "".into(),
                backend: Some(BACKEND.into()),
                failing_since: Some(1_000),
            })),
            cert: None,
        };
        t.observe(Name::from("r1"), down);
        let mut alert = Alert::new(AlertKind::Down, url, 1_000, String::new());
        alert.regions = vec!["r1".into()];
        alert.backend = Some(BACKEND.into());
        alert.cause = Some(AlertCause { code: code.into(), message: "m".into(), hint: "h".into() });
        (t, alert)
    }

    #[test]
    fn causes_are_the_backend_the_certificate_or_the_dns_zone() {
        assert_eq!(zone_of("https://a.shop.example.com:8443/x"), Some("shop.example.com".into()));
        assert_eq!(zone_of("https://example.com/"), Some("example.com".into()));
        assert_eq!(zone_of("https://127.0.0.1:443/"), None);
        assert_eq!(zone_of("https://[::1]:443/"), None);
        let url = "https://site0.shop.test/";
        let (target, mut dns) = failing(url, "dns_nxdomain");
        dns.backend = None;
        let cause = shared_cause(&target, &dns).unwrap();
        assert_eq!(cause.key(), "dns:shop.test:dns_nxdomain");
        assert_eq!(cause.words(), "in the DNS zone shop.test");
        let (target, tcp) = failing(url, "tcp_timeout");
        assert_eq!(shared_cause(&target, &tcp).unwrap().key(), format!("backend:{BACKEND}:tcp_timeout"));
        assert!(shares(&target, &Identity::Backend(BACKEND.into())), "by its failing backend");
        let mut unknown = tcp.clone();
        unknown.cause.as_mut().unwrap().code = "no_such_code".into();
        assert_eq!(shared_cause(&target, &unknown), None);
    }
}
