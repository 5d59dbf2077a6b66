//! Writes the fuzz targets' seed inputs into `seeds/<target>/` and the root the certificate seeds
//! chain to into `fixtures/trust-root.der` (its key is thrown away). Run from `fuzz/`:
//! `cargo run --example make_seeds`. Keys and serial numbers are fresh each run.

use std::fs;
use std::path::Path;

use prost::Message;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose, PKCS_ECDSA_P256_SHA256, PKCS_ECDSA_P384_SHA384, PKCS_ED25519, SignatureAlgorithm, date_time_ymd,
};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use vantage_proto::v1::{
    AgentMessage, Backend, Certificate, Failure, Hello, ProbeResult, ResultBatch, TargetResult, Timings, agent_message,
};

type Issuer = CertifiedIssuer<'static, KeyPair>;

fn ca(name: &str, years: (i32, i32), parent: Option<&Issuer>) -> Issuer {
    let mut params = CertificateParams::default();
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params.not_before = date_time_ymd(years.0, 1, 1);
    params.not_after = date_time_ymd(years.1, 1, 1);
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
    match parent {
        None => CertifiedIssuer::self_signed(params, key).unwrap(),
        Some(parent) => CertifiedIssuer::signed_by(params, key, parent).unwrap(),
    }
}

/// A server certificate for `names`, valid from `from` to `until` (year, month, day).
fn leaf(
    names: &[&str],
    from: (i32, u8, u8),
    until: (i32, u8, u8),
    alg: &'static SignatureAlgorithm,
    issuer: Option<&Issuer>,
) -> CertificateDer<'static> {
    let mut params = CertificateParams::new(names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>()).unwrap();
    params.distinguished_name.push(DnType::CommonName, names[0]);
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.not_before = date_time_ymd(from.0, from.1, from.2);
    params.not_after = date_time_ymd(until.0, until.1, until.2);
    let key = KeyPair::generate_for(alg).unwrap();
    let cert = match issuer {
        Some(issuer) => params.signed_by(&key, issuer).unwrap(),
        None => params.self_signed(&key).unwrap(),
    };
    cert.der().clone()
}

/// The cert_facts input layout: server name index, now, warn and critical days, then the chain.
fn cert_input(name: u8, now: (i32, u8, u8), chain: &[&CertificateDer<'_>]) -> Vec<u8> {
    let mut out = vec![name];
    out.extend(date_time_ymd(now.0, now.1, now.2).unix_timestamp().to_be_bytes());
    out.extend([30, 7]);
    for der in chain {
        out.extend(u16::try_from(der.len()).unwrap().to_be_bytes());
        out.extend(der.as_ref());
    }
    out
}

fn write(dir: &Path, name: &str, bytes: &[u8]) {
    fs::write(dir.join(name), bytes).unwrap();
}

fn cert_seeds(dir: &Path) {
    let root = ca("Vantage Fuzz Root", (2025, 2035), None);
    fs::write("fixtures/trust-root.der", root.der()).unwrap();
    let inter = ca("Vantage Fuzz Intermediate", (2025, 2030), Some(&root));
    let other_root = ca("Untrusted Root", (2025, 2035), None);
    let other_inter = ca("Untrusted Intermediate", (2025, 2030), Some(&other_root));
    let old_inter = ca("Expired Intermediate", (2020, 2022), Some(&root));

    let names = ["www.example.com", "example.com", "127.0.0.1"];
    let good = leaf(&names, (2025, 6, 1), (2026, 6, 1), &PKCS_ECDSA_P256_SHA256, Some(&inter));
    let p384 = leaf(&names, (2025, 6, 1), (2026, 6, 1), &PKCS_ECDSA_P384_SHA384, Some(&inter));
    let ed = leaf(&names, (2025, 6, 1), (2026, 6, 1), &PKCS_ED25519, Some(&inter));
    let selfsigned = leaf(&names, (2025, 6, 1), (2026, 6, 1), &PKCS_ECDSA_P256_SHA256, None);
    let untrusted = leaf(&names, (2025, 6, 1), (2026, 6, 1), &PKCS_ECDSA_P256_SHA256, Some(&other_inter));
    let (i, r, oi, or, old) = (inter.der(), root.der(), other_inter.der(), other_root.der(), old_inter.der());

    // Server names: 0 www.example.com, 3 fuzz.example (not covered), 4 127.0.0.1.
    write(dir, "valid-chain", &cert_input(0, (2026, 1, 1), &[&good, i]));
    write(dir, "valid-chain-with-root", &cert_input(0, (2026, 1, 1), &[&good, i, r]));
    write(dir, "valid-ip-name", &cert_input(4, (2026, 1, 1), &[&good, i]));
    write(dir, "expired-leaf", &cert_input(0, (2026, 12, 1), &[&good, i]));
    write(dir, "not-yet-valid", &cert_input(0, (2025, 2, 1), &[&good, i]));
    write(dir, "hostname-mismatch", &cert_input(3, (2026, 1, 1), &[&good, i]));
    write(dir, "chain-incomplete", &cert_input(0, (2026, 1, 1), &[&good]));
    write(dir, "self-signed", &cert_input(0, (2026, 1, 1), &[&selfsigned]));
    write(dir, "untrusted-root", &cert_input(0, (2026, 1, 1), &[&untrusted, oi, or]));
    write(dir, "expired-extra-cert", &cert_input(0, (2026, 1, 1), &[&good, i, old]));
    write(dir, "p384-leaf", &cert_input(0, (2026, 1, 1), &[&p384, i]));
    write(dir, "ed25519-leaf", &cert_input(1, (2026, 1, 1), &[&ed, i]));
    write(dir, "no-certificate", &cert_input(0, (2026, 1, 1), &[]));

    // Real RSA and ECDSA certificates issued by others: a few roots from the system bundle.
    let bundle = "/etc/ssl/certs/ca-certificates.crt";
    if let Ok(iter) = CertificateDer::pem_file_iter(bundle) {
        let system: Vec<CertificateDer<'static>> = iter.filter_map(Result::ok).collect();
        for (n, der) in system.iter().step_by(40).take(4).enumerate() {
            write(dir, &format!("system-root-{n}"), &cert_input(2, (2026, 1, 1), &[der]));
        }
    }
}

fn config_seeds(dir: &Path) {
    // The README's documented example, as config.rs's test loads it.
    write(
        dir,
        "documented-example.toml",
        br#"[[target]]
url = "https://shop.example.com/"
interval = "30s"          # default 60s
timeout = "10s"           # default 10s (or half the interval, if shorter); must be below the interval
regions = ["eu-west", "us-east", "ap-south"]   # default: every region that has had agents
quorum = 2                # default: strict majority of the regions
all_backends = true
expect_status = [200]
expect_ips = ["203.0.113.7"]
warn_days = 30
critical_days = 7
"#,
    );
    write(
        dir,
        "several-targets.toml",
        br#"[[target]]
url = "https://a.example/"

[[target]]
url = "https://B.Example:8443/health?full=1"
interval = "5m"
timeout = "1500ms"
regions = ["eu", "us"]
expect_status = [200, 204, 301]
expect_ips = ["2001:db8::1", "192.0.2.10"]
warn_days = 14
"#,
    );
    write(
        dir,
        "bad-quorum.toml",
        concat!(
            "[[target]]\nurl = \"https://a.example/\"\n\n",
            "[[target]]\nurl = \"https://b.example/\"\nquorum = 4\nregions = [\"eu\"]\n"
        )
        .as_bytes(),
    );
    write(dir, "bad-duration.toml", b"[[target]]\nurl = \"https://a.example/\"\ninterval = \"soon\"\n");
    write(dir, "unknown-field.toml", b"[[target]]\nurl = \"https://a.example/\"\nintervl = \"5s\"\n");
    write(
        dir,
        "duplicate.toml",
        b"[[target]]\nurl = \"https://a.example/\"\n[[target]]\nurl = \"https://A.example\"\n",
    );
    write(dir, "empty.toml", b"");
}

fn timestamp(secs: i64) -> prost_types::Timestamp {
    prost_types::Timestamp { seconds: secs, nanos: 0 }
}

fn batch_seeds(dir: &Path) {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    let up = |url: &str, at: Option<i64>| ProbeResult {
        url: url.into(),
        status: vantage_proto::v1::ProbeStatus::Up as i32,
        failure: None,
        cert: Some(Certificate {
            subject: "CN=shop.example.com".into(),
            issuer: "CN=Example CA".into(),
            sans: vec!["shop.example.com".into()],
            not_before: Some(timestamp(now - 30 * 86_400)),
            not_after: Some(timestamp(now + 60 * 86_400)),
            days_remaining: 60,
            health: 1,
            sha256: "ab".repeat(32),
            earliest_expiry: Some(timestamp(now + 60 * 86_400)),
            key: "ECDSA P-256".into(),
            signature_algorithm: "ecdsa-with-SHA256".into(),
            chain: vec![],
        }),
        tls_version: "TLSv1.3".into(),
        tls_cipher: "TLS13_AES_128_GCM_SHA256".into(),
        alpn: "h2".into(),
        http_status: 200,
        timings: Some(Timings {
            dns_ms: Some(1.5),
            connect_ms: Some(10.0),
            tls_ms: Some(20.0),
            ttfb_ms: Some(40.0),
            total_ms: 72.5,
        }),
        backends: vec![],
        checked_at: at.map(timestamp),
    };
    let down = |url: &str, code: &str, stage: i32| ProbeResult {
        url: url.into(),
        status: vantage_proto::v1::ProbeStatus::Down as i32,
        failure: Some(Failure {
            stage,
            code: code.into(),
            message: "the connection was refused".into(),
            hint: "is the server running?".into(),
            detail: "Connection refused (os error 111)".into(),
        }),
        timings: Some(Timings { total_ms: 3.0, ..Default::default() }),
        backends: vec![Backend {
            address: "203.0.113.7:443".into(),
            status: vantage_proto::v1::ProbeStatus::Down as i32,
            failure: None,
            cert_sha256: String::new(),
        }],
        checked_at: Some(timestamp(now)),
        ..Default::default()
    };
    let batch = |sequence: u64, results: Vec<TargetResult>| {
        AgentMessage { kind: Some(agent_message::Kind::Batch(ResultBatch { sequence, results })) }.encode_to_vec()
    };
    let result =
        |url: &str, r: ProbeResult| TargetResult { target_url: url.into(), result: Some(r), ..Default::default() };
    let shop = "https://shop.example.com/";
    write(dir, "one-up", &batch(1, vec![result(shop, up(shop, Some(now)))]));
    write(dir, "down-in-region-2", &batch(2, vec![result(shop, down(shop, "tcp_refused", 2))]));
    write(
        dir,
        "mixed-targets",
        &batch(
            3,
            vec![
                result(shop, up(shop, Some(now))),
                result("https://api.example.com/", down("https://api.example.com/", "cert_expired", 4)),
                result("https://eu.example.com/", up("https://eu.example.com/", Some(now - 86_400))),
                result("https://unknown.example/", up("https://unknown.example/", Some(now))),
            ],
        ),
    );
    write(dir, "clock-ahead", &batch(4, vec![result(shop, up(shop, Some(now + 365 * 86_400)))]));
    write(dir, "no-checked-at", &batch(5, vec![result(shop, up(shop, None))]));
    let mut flap = result(shop, up(shop, Some(now)));
    flap.retried = true;
    flap.first_failure_code = "http_timeout".into();
    write(dir, "retried-flap", &batch(6, vec![flap]));
    let mut run_now = result(shop, up(shop, Some(now)));
    run_now.run_now_id = "https://shop.example.com/#0".into();
    write(dir, "run-now-answer", &batch(7, vec![run_now]));
    write(dir, "empty-batch", &batch(8, vec![]));
    // A probe time of i64::MIN seconds: it overflowed the verdict's age check (verdict.rs).
    let ancient = ProbeResult {
        status: vantage_proto::v1::ProbeStatus::Up as i32,
        checked_at: Some(timestamp(i64::MIN)),
        ..Default::default()
    };
    write(dir, "ancient-result", &batch(3, vec![result(shop, ancient)]));
    let hello = AgentMessage {
        kind: Some(agent_message::Kind::Hello(Hello {
            name: "agent-eu-1".into(),
            region: "eu-west".into(),
            version: "0.1.0".into(),
        })),
    };
    write(dir, "hello", &hello.encode_to_vec());
}

fn main() {
    for (target, make) in
        [("cert_facts", cert_seeds as fn(&Path)), ("target_config", config_seeds), ("result_batch", batch_seeds)]
    {
        let dir = Path::new("seeds").join(target);
        fs::create_dir_all(&dir).unwrap();
        make(&dir);
        println!("wrote {}", dir.display());
    }
}
