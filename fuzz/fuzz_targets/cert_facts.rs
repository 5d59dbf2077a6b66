//! Arbitrary bytes as a served certificate chain, through the agent's certificate stage
//! (`probe::cert::inspect`): x509 facts of every certificate, then the trust, date and name
//! verdict.
//!
//! Input layout (`examples/make_seeds.rs` writes seeds in it):
//! byte 0 picks the server name, bytes 1..9 are "now" (big-endian Unix seconds), bytes 9 and 10
//! the warn and critical days; then up to `MAX_CHAIN` certificates, each a big-endian u16 length
//! and that many DER bytes (a short last one takes what is left).

#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use rustls::RootCertStore;
use rustls::pki_types::{CertificateDer, ServerName};
use time::OffsetDateTime;
use vantage_agent::probe::cert::{self, Thresholds, TrustContext};

/// More than any server sends; keeps one input from becoming thousands of certificates.
const MAX_CHAIN: usize = 8;

const SERVER_NAMES: &[&str] =
    &["www.example.com", "example.com", "localhost", "fuzz.example", "127.0.0.1", "::1", "xn--bcher-kva.example"];

/// 2026-01-01T00:00:00Z, when the input's clock bytes are not a valid time.
const FALLBACK_NOW: i64 = 1_767_225_600;

/// The public web's roots plus the root the seeds' chains end at (its key is not kept).
static ROOTS: LazyLock<RootCertStore> = LazyLock::new(|| {
    let mut roots = RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() };
    roots.add(CertificateDer::from(&include_bytes!("../fixtures/trust-root.der")[..])).expect("fixture root parses");
    roots
});

static PROVIDER: LazyLock<rustls::crypto::CryptoProvider> = LazyLock::new(rustls::crypto::ring::default_provider);

fuzz_target!(|data: &[u8]| {
    let Some((header, mut rest)) = data.split_at_checked(11) else { return };
    let server_name = ServerName::try_from(SERVER_NAMES[usize::from(header[0]) % SERVER_NAMES.len()]).unwrap();
    let secs = i64::from_be_bytes(header[1..9].try_into().unwrap());
    let now = OffsetDateTime::from_unix_timestamp(secs)
        .unwrap_or_else(|_| OffsetDateTime::from_unix_timestamp(FALLBACK_NOW).unwrap());
    let thresholds = Thresholds { warn_days: header[9].into(), critical_days: header[10].into() };

    let mut chain = Vec::new();
    while !rest.is_empty() && chain.len() < MAX_CHAIN {
        let len = match rest {
            [hi, lo, tail @ ..] => {
                rest = tail;
                usize::from(u16::from_be_bytes([*hi, *lo])).min(rest.len())
            }
            _ => break,
        };
        let (der, tail) = rest.split_at(len);
        chain.push(CertificateDer::from(der));
        rest = tail;
    }

    let verified = cert::VerifiedChains::default();
    let trust = TrustContext { roots: &ROOTS, algorithms: PROVIDER.signature_verification_algorithms.all, verified: &verified };
    let inspection = cert::inspect(&chain, &server_name, &trust, thresholds, now);
    if let Err(e) = &inspection.verdict {
        let _ = (e.to_string(), e.code());
    }
    if let Some(report) = &inspection.report {
        assert_eq!(report.chain.len(), chain.len(), "the report lists every served certificate");
        assert_eq!(report.trusted, inspection.verdict.is_ok());
    }
});
