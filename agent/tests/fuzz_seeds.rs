//! Every committed seed of the `cert_facts` fuzz target (`fuzz/seeds/cert_facts/`), replayed by
//! `cargo test` through what `fuzz/fuzz_targets/cert_facts.rs` runs: the input decoded the same
//! way, the agent's certificate stage (`probe::cert::inspect`), the same assertions. The fuzzer
//! needs nightly and libFuzzer; this keeps the seeds, and the invariants, checked on every run.

use rustls::RootCertStore;
use rustls::pki_types::{CertificateDer, ServerName};
use time::OffsetDateTime;
use vantage_agent::probe::cert::{self, Thresholds, TrustContext};

/// As in the fuzz target.
const MAX_CHAIN: usize = 8;
const SERVER_NAMES: &[&str] =
    &["www.example.com", "example.com", "localhost", "fuzz.example", "127.0.0.1", "::1", "xn--bcher-kva.example"];
const FALLBACK_NOW: i64 = 1_767_225_600;

/// The seeds of one fuzz target, by name, read from the fuzz folder beside this crate.
fn seeds(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/seeds").join(target);
    let mut seeds: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| {
            let path = entry.expect("seed entry").path();
            let name = path.file_name().expect("file name").to_string_lossy().into_owned();
            (name, std::fs::read(&path).expect("seed reads"))
        })
        .collect();
    seeds.sort();
    assert!(!seeds.is_empty(), "no seeds in {}", dir.display());
    seeds
}

/// One fuzz input through the certificate stage, as the fuzz target runs it; `None` when the
/// input is too short to be one. Returns the verdict's failure code, if any.
fn cert_facts(data: &[u8]) -> Option<Option<String>> {
    let mut roots = RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() };
    let root = include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/../fuzz/fixtures/trust-root.der"));
    roots.add(CertificateDer::from(&root[..])).expect("fixture root parses");
    let provider = rustls::crypto::ring::default_provider();

    let (header, mut rest) = data.split_at_checked(11)?;
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
    let trust =
        TrustContext { roots: &roots, algorithms: provider.signature_verification_algorithms.all, verified: &verified };
    let inspection = cert::inspect(&chain, &server_name, &trust, thresholds, now);
    if let Err(e) = &inspection.verdict {
        assert!(!e.to_string().is_empty());
    }
    if let Some(report) = &inspection.report {
        assert_eq!(report.chain.len(), chain.len(), "the report lists every served certificate");
        assert_eq!(report.trusted, inspection.verdict.is_ok());
    }
    Some(inspection.verdict.err().map(|e| e.code().as_str().to_owned()))
}

#[test]
fn every_cert_facts_seed_passes_the_fuzz_targets_checks() {
    let mut outcomes = Vec::new();
    for (name, data) in seeds("cert_facts") {
        let outcome = cert_facts(&data).unwrap_or_else(|| panic!("seed {name} is shorter than the header"));
        eprintln!("cert_facts seed {name}: {outcome:?}");
        outcomes.push((name, outcome));
    }
    // The seeds are the certificate stage's cases (examples/make_seeds.rs), so each one still
    // ends where its name says.
    let outcome = |name: &str| outcomes.iter().find(|(n, _)| n == name).map(|(_, o)| o.as_deref());
    assert_eq!(outcome("valid-chain"), Some(None));
    assert_eq!(outcome("expired-leaf"), Some(Some("cert_expired")));
    assert_eq!(outcome("not-yet-valid"), Some(Some("cert_not_yet_valid")));
    assert_eq!(outcome("hostname-mismatch"), Some(Some("cert_hostname_mismatch")));
    assert_eq!(outcome("self-signed"), Some(Some("cert_self_signed")));
}
