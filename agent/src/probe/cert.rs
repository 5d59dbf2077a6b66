//! Stage 4, the certificate: facts about the served chain (x509-parser) and a verdict against
//! the trust roots (webpki, through rustls). When a certificate has several faults the trust
//! fault is reported first, then validity dates, then the name: a self-signed certificate that
//! also expired is, first of all, a certificate nobody should trust. Pins are checked once the
//! chain holds up; `watch` compares the served leaf with a renewed one on this machine's disk.

pub mod watch;

use rustls::client::{verify_server_cert_signed_by_trust_anchor, verify_server_name};
use rustls::pki_types::SignatureVerificationAlgorithm;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::ParsedCertificate;
use rustls::{CertificateError, RootCertStore};
use time::OffsetDateTime;
use vantage_shared::failure::FailureCode;
use vantage_shared::report::{CertHealth, CertReport, ChainCert, rfc3339};
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};
use x509_parser::public_key::PublicKey;

#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("the server sent no certificate")]
    Missing,
    #[error("{subject} expired on {not_after}")]
    Expired { subject: String, not_after: String },
    #[error("{subject} is not valid before {not_before}")]
    NotYetValid { subject: String, not_before: String },
    #[error("the certificate covers {sans:?}, not {host}")]
    HostnameMismatch { host: String, sans: Vec<String> },
    #[error("{subject} is self-signed")]
    SelfSigned { subject: String },
    #[error("the chain ends at {root}, which is not a trusted root")]
    UntrustedRoot { root: String },
    #[error("the issuer {issuer} was neither served nor trusted")]
    ChainIncomplete { issuer: String },
    #[error("{detail}")]
    Invalid { detail: String },
    #[error(
        "the served leaf (sha256 {sha256}, public key sha256 {spki_sha256}) matches none of the {pins} pinned hash(es)"
    )]
    PinMismatch { sha256: String, spki_sha256: String, pins: usize },
    #[error("{0}")]
    NotReloaded(Box<watch::Stale>),
}

impl CertError {
    pub fn code(&self) -> FailureCode {
        match self {
            CertError::Missing | CertError::Invalid { .. } => FailureCode::CertInvalid,
            CertError::Expired { .. } => FailureCode::CertExpired,
            CertError::NotYetValid { .. } => FailureCode::CertNotYetValid,
            CertError::HostnameMismatch { .. } => FailureCode::CertHostnameMismatch,
            CertError::SelfSigned { .. } => FailureCode::CertSelfSigned,
            CertError::UntrustedRoot { .. } => FailureCode::CertUntrustedRoot,
            CertError::ChainIncomplete { .. } => FailureCode::CertChainIncomplete,
            CertError::PinMismatch { .. } => FailureCode::CertPinMismatch,
            CertError::NotReloaded(_) => FailureCode::CertNotReloaded,
        }
    }
}

/// Whether the leaf's certificate or public key (SubjectPublicKeyInfo) hash is one of `pins`
/// (normalized by `vantage_shared::pin::parse_pin`); no pins, no check.
pub fn check_pins(leaf: &CertificateDer<'_>, pins: &[String]) -> Result<(), CertError> {
    if pins.is_empty() {
        return Ok(());
    }
    let facts = read_facts(leaf)?;
    if pins.iter().any(|pin| *pin == facts.sha256 || *pin == facts.spki_sha256) {
        return Ok(());
    }
    Err(CertError::PinMismatch { sha256: facts.sha256, spki_sha256: facts.spki_sha256, pins: pins.len() })
}

/// What x509-parser reads from one certificate.
struct Facts {
    subject: String,
    issuer: String,
    subject_raw: Vec<u8>,
    issuer_raw: Vec<u8>,
    not_before: i64,
    not_after: i64,
    sans: Vec<String>,
    key: String,
    signature_algorithm: String,
    sha256: String,
    /// SHA-256 of the DER SubjectPublicKeyInfo, the hash HPKP and curl's --pinnedpubkey use.
    spki_sha256: String,
}

fn read_facts(der: &CertificateDer<'_>) -> Result<Facts, CertError> {
    let (_, cert) = X509Certificate::from_der(der.as_ref())
        .map_err(|e| CertError::Invalid { detail: format!("malformed certificate: {e}") })?;
    let sans = match cert.subject_alternative_name() {
        Ok(Some(ext)) => ext
            .value
            .general_names
            .iter()
            .filter_map(|name| match name {
                GeneralName::DNSName(dns) => Some((*dns).to_owned()),
                GeneralName::IPAddress(bytes) => ip_from_bytes(bytes).map(|ip| ip.to_string()),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    };
    let registry = x509_parser::objects::oid_registry();
    let key_alg = &cert.public_key().algorithm.algorithm;
    let key = match cert.public_key().parsed() {
        Ok(PublicKey::RSA(rsa)) => format!("RSA {}", rsa.key_size()),
        Ok(PublicKey::EC(ec)) => format!("ECDSA P-{}", ec.key_size()),
        _ => x509_parser::objects::oid2sn(key_alg, registry).unwrap_or("unknown").to_owned(),
    };
    let sig = &cert.signature_algorithm.algorithm;
    let signature_algorithm =
        x509_parser::objects::oid2sn(sig, registry).map(str::to_owned).unwrap_or_else(|_| sig.to_id_string());
    Ok(Facts {
        subject: cert.subject().to_string(),
        issuer: cert.issuer().to_string(),
        subject_raw: cert.subject().as_raw().to_vec(),
        issuer_raw: cert.issuer().as_raw().to_vec(),
        not_before: cert.validity().not_before.timestamp(),
        not_after: cert.validity().not_after.timestamp(),
        sans,
        key,
        signature_algorithm,
        sha256: vantage_shared::identity::sha256_hex(der.as_ref()),
        spki_sha256: vantage_shared::identity::sha256_hex(cert.public_key().raw),
    })
}

fn ip_from_bytes(bytes: &[u8]) -> Option<std::net::IpAddr> {
    match bytes.len() {
        4 => Some(<[u8; 4]>::try_from(bytes).ok()?.into()),
        16 => Some(<[u8; 16]>::try_from(bytes).ok()?.into()),
        _ => None,
    }
}

fn timestamp(secs: i64) -> String {
    OffsetDateTime::from_unix_timestamp(secs).map(rfc3339).unwrap_or_else(|_| secs.to_string())
}

/// Most chains a prober remembers as verified; past that it forgets them all and starts again.
const MAX_VERIFIED_CHAINS: usize = 1_024;

/// Chains that held up against the prober's roots (trust and dates), by the SHA-256 of their
/// certificates, with their facts: a server serving the same chain probe after probe has it
/// parsed and its signatures checked once, not on every probe. An entry counts only while every
/// certificate of the chain is within its dates (so expiry is judged afresh); the name is
/// checked on every probe, and so is the handshake's own signature (rustls, during the
/// handshake), which proves the server holds the key.
#[derive(Default)]
pub struct VerifiedChains {
    chains: std::sync::Mutex<std::collections::HashMap<[u8; 32], Verified>>,
}

struct Verified {
    facts: std::sync::Arc<[Facts]>,
    /// When every certificate of the chain is within its dates (Unix seconds, from inclusive).
    from: i64,
    until: i64,
}

impl VerifiedChains {
    fn key(chain: &[CertificateDer<'_>]) -> [u8; 32] {
        let mut digest = ring::digest::Context::new(&ring::digest::SHA256);
        for cert in chain {
            digest.update(&(cert.len() as u64).to_be_bytes());
            digest.update(cert.as_ref());
        }
        let mut key = [0; 32];
        key.copy_from_slice(digest.finish().as_ref());
        key
    }

    fn get(&self, key: &[u8; 32], now: i64) -> Option<std::sync::Arc<[Facts]>> {
        let chains = self.chains.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        chains.get(key).filter(|v| (v.from..v.until).contains(&now)).map(|v| v.facts.clone())
    }

    fn remember(&self, key: [u8; 32], facts: std::sync::Arc<[Facts]>, now: i64) {
        let from = facts.iter().map(|f| f.not_before).max().unwrap_or(i64::MAX);
        let until = facts.iter().map(|f| f.not_after).min().unwrap_or(i64::MIN);
        if !(from..until).contains(&now) {
            return;
        }
        let mut chains = self.chains.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if chains.len() >= MAX_VERIFIED_CHAINS {
            chains.clear();
        }
        chains.insert(key, Verified { facts, from, until });
    }
}

/// Thresholds for certificate health, in days.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Thresholds {
    pub warn_days: u32,
    pub critical_days: u32,
}

/// Facts about the served chain and, when it does not hold up, why.
pub struct Inspection {
    pub report: Option<CertReport>,
    pub verdict: Result<(), CertError>,
}

/// Everything the verifier needs besides the chain.
pub struct TrustContext<'a> {
    pub roots: &'a RootCertStore,
    pub algorithms: &'a [&'a dyn SignatureVerificationAlgorithm],
    /// Chains already verified against `roots`.
    pub verified: &'a VerifiedChains,
}

pub fn inspect(
    chain: &[CertificateDer<'_>],
    server_name: &ServerName<'_>,
    trust: &TrustContext<'_>,
    thresholds: Thresholds,
    now: OffsetDateTime,
) -> Inspection {
    if chain.is_empty() {
        return Inspection { report: None, verdict: Err(CertError::Missing) };
    }
    let now_ts = now.unix_timestamp();
    let key = VerifiedChains::key(chain);
    let known = trust.verified.get(&key, now_ts);
    let facts = match &known {
        Some(facts) => facts.clone(),
        None => match chain.iter().map(read_facts).collect::<Result<Vec<Facts>, CertError>>() {
            Ok(facts) => facts.into(),
            Err(e) => return Inspection { report: None, verdict: Err(e) },
        },
    };
    let verdict = judge(chain, &facts, server_name, trust, now_ts, known.is_some());
    if known.is_none() && matches!(verdict, Ok(()) | Err(CertError::HostnameMismatch { .. })) {
        trust.verified.remember(key, facts.clone(), now_ts);
    }
    let leaf = &facts[0];
    // With a path valid now, an expired served certificate is not on it: it does not count.
    let path_valid = matches!(verdict, Ok(()) | Err(CertError::HostnameMismatch { .. }));
    let earliest = facts
        .iter()
        .filter(|f| !path_valid || f.not_after > now_ts)
        .map(|f| f.not_after)
        .min()
        .unwrap_or(leaf.not_after);
    let seconds_left = earliest - now.unix_timestamp();
    let report = CertReport {
        subject: leaf.subject.clone(),
        issuer: leaf.issuer.clone(),
        sans: leaf.sans.clone(),
        not_before: timestamp(leaf.not_before),
        not_after: timestamp(leaf.not_after),
        days_remaining: seconds_left.div_euclid(86_400),
        health: CertHealth::classify(seconds_left, thresholds.warn_days, thresholds.critical_days),
        sha256: leaf.sha256.clone(),
        earliest_expiry: timestamp(earliest),
        key: leaf.key.clone(),
        signature_algorithm: leaf.signature_algorithm.clone(),
        trusted: verdict.is_ok(),
        chain: facts
            .iter()
            .map(|f| ChainCert {
                subject: f.subject.clone(),
                issuer: f.issuer.clone(),
                not_after: timestamp(f.not_after),
                sha256: f.sha256.clone(),
            })
            .collect(),
    };
    Inspection { report: Some(report), verdict }
}

fn is_time_error(e: &rustls::Error) -> bool {
    matches!(
        e,
        rustls::Error::InvalidCertificate(
            CertificateError::Expired
                | CertificateError::ExpiredContext { .. }
                | CertificateError::NotValidYet
                | CertificateError::NotValidYetContext { .. }
        )
    )
}

/// Trust, then dates (unless the chain is `known` to hold up now), then name.
fn judge(
    chain: &[CertificateDer<'_>],
    facts: &[Facts],
    server_name: &ServerName<'_>,
    trust: &TrustContext<'_>,
    now: i64,
    known: bool,
) -> Result<(), CertError> {
    let leaf = ParsedCertificate::try_from(&chain[0])
        .map_err(|e| CertError::Invalid { detail: format!("the leaf certificate cannot be used: {e}") })?;
    if !known {
        trust_and_dates(chain, &leaf, facts, trust, now)?;
    }
    verify_server_name(&leaf, server_name).map_err(|e| match e {
        rustls::Error::InvalidCertificate(
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
        ) => CertError::HostnameMismatch { host: server_name.to_str().into_owned(), sans: facts[0].sans.clone() },
        other => CertError::Invalid { detail: other.to_string() },
    })
}

/// Whether a path from the served chain to a trusted root holds up now.
fn trust_and_dates(
    chain: &[CertificateDer<'_>],
    leaf: &ParsedCertificate<'_>,
    facts: &[Facts],
    trust: &TrustContext<'_>,
    now: i64,
) -> Result<(), CertError> {
    let verify_at = |secs: i64| {
        let at = UnixTime::since_unix_epoch(std::time::Duration::from_secs(secs.max(0) as u64));
        verify_server_cert_signed_by_trust_anchor(leaf, trust.roots, &chain[1..], at, trust.algorithms)
    };

    // Trust is judged at a moment when the dates do not get in the way: now, or else a moment
    // inside the validity of one of the served certificates.
    let at_now = verify_at(now);
    let trust_result = match &at_now {
        Err(e) if is_time_error(e) => facts
            .iter()
            .flat_map(|f| [f.not_before + 1, f.not_after - 1, f.not_before / 2 + f.not_after / 2])
            .map(verify_at)
            .find(|r| !matches!(r, Err(e) if is_time_error(e)))
            .unwrap_or(Ok(())),
        other => other.clone(),
    };
    if let Err(e) = trust_result {
        return Err(trust_fault(e, facts));
    }

    // Dates, when the path is not valid now: the first served certificate, leaf or chain, out of
    // its dates. When the path is valid, an expired extra certificate in the served chain (an
    // old cross-sign, say) is not on it and breaks nothing.
    if let Err(e) = at_now {
        if let Some(f) = facts.iter().find(|f| f.not_after <= now) {
            return Err(CertError::Expired { subject: f.subject.clone(), not_after: timestamp(f.not_after) });
        }
        if let Some(f) = facts.iter().find(|f| f.not_before > now) {
            return Err(CertError::NotYetValid { subject: f.subject.clone(), not_before: timestamp(f.not_before) });
        }
        // The served certificates are in date, yet the path is not: it runs through a trusted
        // certificate that is not (a root from the trust store).
        return Err(CertError::Invalid { detail: format!("the path to a trusted root is not valid now: {e}") });
    }
    Ok(())
}

fn trust_fault(error: rustls::Error, facts: &[Facts]) -> CertError {
    match error {
        rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer) => {
            let leaf = &facts[0];
            if leaf.subject_raw == leaf.issuer_raw {
                return CertError::SelfSigned { subject: leaf.subject.clone() };
            }
            // Follow issuer names through what was served; reaching a self-issued certificate
            // means the whole chain was there and only its root is not trusted.
            let mut current = leaf;
            for _ in 0..facts.len() {
                match facts.iter().find(|f| f.subject_raw == current.issuer_raw) {
                    Some(issuer) if issuer.subject_raw == issuer.issuer_raw => {
                        return CertError::UntrustedRoot { root: issuer.subject.clone() };
                    }
                    Some(issuer) => current = issuer,
                    None => break,
                }
            }
            CertError::ChainIncomplete { issuer: current.issuer.clone() }
        }
        other => CertError::Invalid { detail: other.to_string() },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vantage_shared::lab::pki::{self, LeafSpec};

    #[test]
    fn a_chain_verified_once_is_judged_alike_after_and_its_dates_and_name_still_count() {
        let root = pki::Ca::root("Remembered Root").unwrap();
        let chain = root.identity(&LeafSpec::new(&["kept.example"]).valid(-10, 30), &[]).unwrap().chain;
        let mut roots = RootCertStore::empty();
        roots.add(root.cert.clone()).unwrap();
        let provider = rustls::crypto::ring::default_provider();
        let verified = VerifiedChains::default();
        let trust = TrustContext {
            roots: &roots,
            algorithms: provider.signature_verification_algorithms.all,
            verified: &verified,
        };
        let thresholds = Thresholds { warn_days: 14, critical_days: 3 };
        let name = |n: &'static str| ServerName::try_from(n).unwrap();
        let now = OffsetDateTime::now_utc();
        let judge = |server: &ServerName<'_>, at: OffsetDateTime| {
            let i = inspect(&chain, server, &trust, thresholds, at);
            (i.verdict.map_err(|e| e.code()), i.report)
        };

        let first = judge(&name("kept.example"), now);
        assert_eq!(first.0, Ok(()));
        assert_eq!(verified.chains.lock().unwrap().len(), 1, "the chain is remembered");
        assert_eq!(judge(&name("kept.example"), now), first, "judged alike from memory");
        // Whatever is remembered, the name is checked every time, and the dates: 40 days on
        // the leaf has expired.
        assert_eq!(judge(&name("other.example"), now).0, Err(FailureCode::CertHostnameMismatch));
        assert_eq!(judge(&name("kept.example"), now + time::Duration::days(40)).0, Err(FailureCode::CertExpired));
        // Another set of roots (another prober) knows nothing of it.
        let empty = RootCertStore::empty();
        let elsewhere = VerifiedChains::default();
        let other = TrustContext { roots: &empty, algorithms: trust.algorithms, verified: &elsewhere };
        let verdict = inspect(&chain, &name("kept.example"), &other, thresholds, now).verdict;
        assert_eq!(verdict.map_err(|e| e.code()), Err(FailureCode::CertChainIncomplete));
    }

    #[test]
    fn a_pin_matches_the_certificate_or_its_public_key() {
        let leaf = pki::self_signed(&LeafSpec::new(&["pin.example"])).unwrap().chain.remove(0);
        let (cert_pin, key_pin) = (vantage_shared::identity::sha256_hex(leaf.as_ref()), pki::spki_sha256(&leaf));
        let other = "0".repeat(64);
        assert!(check_pins(&leaf, &[]).is_ok(), "no pins, no check");
        assert!(check_pins(&leaf, &[other.clone(), cert_pin.clone()]).is_ok());
        assert!(check_pins(&leaf, std::slice::from_ref(&key_pin)).is_ok());
        match check_pins(&leaf, &[other]) {
            Err(CertError::PinMismatch { sha256, spki_sha256, pins: 1 }) => {
                assert_eq!((sha256, spki_sha256), (cert_pin, key_pin));
            }
            other => panic!("expected a pin mismatch, got {other:?}"),
        }
    }
}
