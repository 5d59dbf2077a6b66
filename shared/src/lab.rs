//! The scenario lab: every way an HTTPS endpoint can fail, served for real on loopback.
//!
//! `Lab::start()` makes a CA hierarchy with rcgen, starts one real listener per scenario (rustls
//! servers, plain HTTP, hostile peers, a closed port, a black hole) and a real DNS server, all on
//! a runtime of its own, and describes each scenario as the `vantage-agent check` arguments that
//! reproduce it and the outcome they must produce. Tests, the benchmark and `demo` share it.
//!
//! Some servers are built to hurt probes (endless headers and bodies, a 1,000-certificate chain,
//! malformed DER, random bytes for a ServerHello, a trickled response, a gzip bomb): each must
//! end in its classified outcome within the timeout, with the probe's memory bounded.

pub mod bare;
pub mod dns;
pub mod gzip;
mod http;
pub mod pki;
pub mod server;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use hickory_proto::op::ResponseCode;
use rcgen::ExtendedKeyUsagePurpose;
use tokio::net::UdpSocket;

use crate::failure::FailureCode;
use crate::report::{CertHealth, ProbeStatus};
use dns::Answer;
use pki::{Ca, LeafSpec};
use server::{Hostile, Reply, Tally};

/// The domain every lab host name lives under.
pub const DOMAIN: &str = "vantage.test";

/// One reproducible situation and what a correct probe says about it.
#[derive(Debug, Clone)]
pub struct Scenario {
    pub name: &'static str,
    /// What an operator would be looking at.
    pub summary: &'static str,
    pub url: String,
    /// `check` arguments besides the URL (`--resolve`, `--ca-file`, `--nameserver`, …).
    pub args: Vec<String>,
    pub status: ProbeStatus,
    pub code: Option<FailureCode>,
    pub health: Option<CertHealth>,
    /// The Nagios-style exit code `check` must end with.
    pub exit: i32,
}

impl Scenario {
    /// The URL followed by the arguments, as `check` takes them.
    pub fn check_args(&self) -> Vec<String> {
        let mut args = vec![self.url.clone()];
        args.extend(self.args.iter().cloned());
        args
    }
}

/// The running lab. Dropping it stops every server and removes its files.
pub struct Lab {
    pub scenarios: Vec<Scenario>,
    /// PEM file of the lab's root CA (what `--ca-file` takes).
    pub ca_file: PathBuf,
    /// The lab's DNS server.
    pub dns: SocketAddr,
    /// Bytes of the gzip bomb (`http_gzip_bomb`) handed to each finished connection: what its
    /// client took off the wire, plus what the socket buffers held.
    pub gzip_bomb_sent: Tally,
    dir: PathBuf,
    runtime: Option<tokio::runtime::Runtime>,
}

impl Drop for Lab {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LabError {
    #[error("lab certificate: {0}")]
    Pki(#[from] rcgen::Error),
    #[error("lab I/O: {0}")]
    Io(#[from] std::io::Error),
}

impl Lab {
    /// Starts every scenario, keeping its files in the system's temporary directory. Blocks
    /// briefly while listeners bind.
    pub fn start() -> Result<Lab, LabError> {
        Lab::start_in(&std::env::temp_dir())
    }

    /// Starts every scenario, keeping its files in a new directory under `base`.
    pub fn start_in(base: &Path) -> Result<Lab, LabError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("vantage-lab")
            .enable_all()
            .build()?;
        let dir = base.join(format!(
            "vantage-lab-{}-{}",
            std::process::id(),
            LAB_COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir)?;
        let gzip_bomb_sent = Tally::default();
        let built = runtime.block_on(build(&dir, gzip_bomb_sent.clone()));
        let mut lab = Lab {
            scenarios: Vec::new(),
            ca_file: dir.join("lab-ca.pem"),
            dns: "0.0.0.0:0".parse().expect("literal"),
            gzip_bomb_sent,
            dir,
            runtime: Some(runtime),
        };
        let (scenarios, dns) = built?;
        lab.scenarios = scenarios;
        lab.dns = dns;
        Ok(lab)
    }

    /// The scenario called `name`.
    pub fn scenario(&self, name: &str) -> &Scenario {
        self.scenarios.iter().find(|s| s.name == name).unwrap_or_else(|| panic!("no lab scenario {name:?}"))
    }

    /// Where the lab keeps its files.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

static LAB_COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Builds a scenario list while the servers start.
struct Builder {
    ca_file: String,
    scenarios: Vec<Scenario>,
}

impl Builder {
    fn add(&mut self, name: &'static str, summary: &'static str, url: String, args: Vec<String>, outcome: Outcome) {
        self.scenarios.push(Scenario {
            name,
            summary,
            url,
            args,
            status: outcome.status,
            code: outcome.code,
            health: outcome.health,
            exit: outcome.exit,
        });
    }

    /// A TLS scenario on `addr` reached as `host`, trusting the lab CA.
    fn tls(
        &mut self,
        name: &'static str,
        summary: &'static str,
        host: &str,
        addr: SocketAddr,
        extra: &[&str],
        outcome: Outcome,
    ) {
        let mut args =
            vec!["--resolve".to_owned(), format!("{host}:{}", addr.ip()), "--ca-file".to_owned(), self.ca_file.clone()];
        args.extend(extra.iter().map(|s| (*s).to_owned()));
        self.add(name, summary, format!("https://{host}:{}/", addr.port()), args, outcome);
    }
}

struct Outcome {
    status: ProbeStatus,
    code: Option<FailureCode>,
    health: Option<CertHealth>,
    exit: i32,
}

fn up(health: CertHealth, exit: i32) -> Outcome {
    Outcome { status: ProbeStatus::Up, code: None, health: Some(health), exit }
}

fn down(code: FailureCode) -> Outcome {
    Outcome { status: ProbeStatus::Down, code: Some(code), health: None, exit: 2 }
}

fn host(name: &str) -> String {
    format!("{name}.{DOMAIN}")
}

async fn tls_server(identity: &pki::Identity, reply: Reply) -> Result<SocketAddr, LabError> {
    let listener = match reply {
        // A small send buffer (inherited by every accepted socket) keeps what the kernel holds
        // for a client small, so the bomb's byte count tells what the client read.
        Reply::GzipBomb(..) => server::bind_with_send_buffer("127.0.0.1", 32 * 1024)?,
        _ => server::bind("127.0.0.1", 0).await?,
    };
    let addr = listener.local_addr()?;
    tokio::spawn(server::serve_tls(listener, server::server_config(identity), reply));
    Ok(addr)
}

async fn hostile_server(hostile: Hostile) -> Result<SocketAddr, LabError> {
    let listener = server::bind("127.0.0.1", 0).await?;
    let addr = listener.local_addr()?;
    tokio::spawn(server::serve_hostile(listener, hostile));
    Ok(addr)
}

async fn build(dir: &Path, gzip_bomb_sent: Tally) -> Result<(Vec<Scenario>, SocketAddr), LabError> {
    use CertHealth::*;
    use FailureCode::*;

    let root = Ca::root("Vantage Lab Root CA")?;
    let inter = root.intermediate("Vantage Lab Intermediate CA", -30, 3000)?;
    let ca_file = dir.join("lab-ca.pem");
    std::fs::write(&ca_file, &root.pem)?;
    let mut b = Builder { ca_file: ca_file.display().to_string(), scenarios: Vec::new() };
    let ok_page = || Reply::Page { status: 200, body: "Welcome to the Vantage lab" };

    // Healthy and certificate-health cases.
    for (name, days, summary, health, exit) in [
        ("healthy", 90, "a healthy site with a 90-day certificate", Ok, 0),
        ("regional", 90, "a healthy site (the demo hides it from one region)", Ok, 0),
        ("cert_warning", 20, "a certificate with 20 days left (warning under 30)", Warning, 1),
        ("cert_critical", 3, "a certificate with 3 days left (critical under 7)", Critical, 2),
    ] {
        let h = host(&name.replace('_', "-"));
        let id = inter.identity(&LeafSpec::new(&[&h]).valid(-60, days), &[&inter])?;
        let addr = tls_server(&id, ok_page()).await?;
        b.tls(name, summary, &h, addr, &[], up(health, exit));
    }

    // Certificate faults.
    let self_signed_host = host("self-signed");
    let untrusted_root = Ca::root("Untrusted Root CA")?;
    let untrusted_inter = untrusted_root.intermediate("Untrusted Intermediate CA", -30, 3000)?;
    let impostor = inter.impostor("Vantage Lab Intermediate CA")?;
    let wildcard = format!("*.{DOMAIN}");
    let expired_inter = root.intermediate("Vantage Lab Expired Intermediate CA", -400, -2)?;
    let cert_cases: Vec<(&'static str, &'static str, String, pki::Identity, FailureCode)> = vec![
        (
            "cert_expired",
            "the leaf certificate expired two days ago",
            host("expired"),
            inter.identity(&LeafSpec::new(&[&host("expired")]).valid(-92, -2), &[&inter])?,
            CertExpired,
        ),
        (
            "cert_expired_intermediate",
            "a valid leaf served with an intermediate that expired",
            host("expired-chain"),
            expired_inter.identity(&LeafSpec::new(&[&host("expired-chain")]).valid(-30, 60), &[&expired_inter])?,
            CertExpired,
        ),
        (
            "cert_not_yet_valid",
            "a certificate whose validity starts in three days",
            host("future"),
            inter.identity(&LeafSpec::new(&[&host("future")]).valid(3, 93), &[&inter])?,
            CertNotYetValid,
        ),
        (
            "cert_hostname_mismatch",
            "the server presents a certificate for another name",
            host("mismatch"),
            inter.identity(&LeafSpec::new(&[&host("other")]), &[&inter])?,
            CertHostnameMismatch,
        ),
        (
            "cert_wildcard_two_labels",
            "a wildcard certificate asked to cover two labels",
            format!("a.deep.{DOMAIN}"),
            inter.identity(&LeafSpec::new(&[&wildcard]), &[&inter])?,
            CertHostnameMismatch,
        ),
        (
            "cert_self_signed",
            "a self-signed certificate",
            self_signed_host.clone(),
            pki::self_signed(&LeafSpec::new(&[&self_signed_host]))?,
            CertSelfSigned,
        ),
        (
            "cert_untrusted_root",
            "a full chain up to a root nobody trusts",
            host("private-ca"),
            untrusted_inter.identity(&LeafSpec::new(&[&host("private-ca")]), &[&untrusted_inter, &untrusted_root])?,
            CertUntrustedRoot,
        ),
        (
            "cert_chain_incomplete",
            "the leaf is served without its intermediate",
            host("no-intermediate"),
            inter.identity(&LeafSpec::new(&[&host("no-intermediate")]), &[])?,
            CertChainIncomplete,
        ),
        (
            "cert_bad_signature",
            "a leaf whose signature does not verify against its issuer",
            host("forged"),
            impostor.identity(&LeafSpec::new(&[&host("forged")]), &[&inter])?,
            CertInvalid,
        ),
        (
            "cert_wrong_purpose",
            "a client-authentication certificate served as a server certificate",
            host("client-cert"),
            inter.identity(
                &LeafSpec::new(&[&host("client-cert")]).purpose(ExtendedKeyUsagePurpose::ClientAuth),
                &[&inter],
            )?,
            CertInvalid,
        ),
    ];
    for (name, summary, h, id, code) in cert_cases {
        let addr = tls_server(&id, ok_page()).await?;
        b.tls(name, summary, &h, addr, &[], down(code));
    }
    let id = inter.identity(&LeafSpec::new(&[&wildcard]), &[&inter])?;
    let addr = tls_server(&id, ok_page()).await?;
    b.tls(
        "cert_wildcard_one_label",
        "a wildcard certificate covering exactly one label",
        &host("wild"),
        addr,
        &[],
        up(Ok, 0),
    );
    // An extra, expired certificate served after a valid chain (an old cross-sign) is not on the
    // path: the site works.
    let h = host("stale-extra");
    let id = inter.identity(&LeafSpec::new(&[&h]), &[&inter, &expired_inter])?;
    let addr = tls_server(&id, ok_page()).await?;
    b.tls(
        "cert_stale_extra_in_chain",
        "a valid chain followed by an unrelated expired certificate",
        &h,
        addr,
        &[],
        up(Ok, 0),
    );
    // HTTP/2, as most sites negotiate it.
    for (name, summary, stall, extra, outcome) in [
        ("http2", "a site that speaks HTTP/2", false, &[][..], up(Ok, 0)),
        (
            "http2_timeout",
            "an HTTP/2 site that never answers the request",
            true,
            &["--timeout", "2s"][..],
            down(HttpTimeout),
        ),
    ] {
        let h = host(&name.replace('_', "-"));
        let id = inter.identity(&LeafSpec::new(&[&h]), &[&inter])?;
        let listener = server::bind("127.0.0.1", 0).await?;
        let addr = listener.local_addr()?;
        tokio::spawn(async move { server::serve_h2(listener, &id, stall).await });
        b.tls(name, summary, &h, addr, extra, outcome);
    }
    {
        // Several faults at once: the trust fault is reported before dates and names.
        let h = host("everything-wrong");
        let leaf = pki::self_signed(&LeafSpec::new(&[&host("someone-else")]).valid(-400, -10))?;
        let addr = tls_server(&leaf, ok_page()).await?;
        b.tls(
            "cert_faults_ordered",
            "self-signed, expired and for another name: trust is reported first",
            &h,
            addr,
            &[],
            down(CertSelfSigned),
        );
        let leaf = inter.identity(&LeafSpec::new(&[&host("someone-else")]).valid(-400, -10), &[&inter])?;
        let h = host("expired-and-mismatched");
        let addr = tls_server(&leaf, ok_page()).await?;
        b.tls(
            "cert_dates_before_name",
            "expired and for another name: dates are reported before the name",
            &h,
            addr,
            &[],
            down(CertExpired),
        );
    }

    // Pinning: one server, pinned by its own key's hash and by another key's.
    {
        let h = host("pinned");
        let id = inter.identity(&LeafSpec::new(&[&h]), &[&inter])?;
        let other = inter.identity(&LeafSpec::new(&[&h]), &[&inter])?; // same name, another key
        let addr = tls_server(&id, ok_page()).await?;
        let (served_pin, other_pin) = (pki::spki_sha256(id.leaf()), pki::spki_sha256(other.leaf()));
        b.tls(
            "cert_pin_match",
            "a site pinned by the hash of its certificate's public key",
            &h,
            addr,
            &["--pin-sha256", &served_pin],
            up(Ok, 0),
        );
        b.tls(
            "cert_pin_mismatch",
            "a valid certificate whose key is not the pinned one",
            &h,
            addr,
            &["--pin-sha256", &other_pin],
            down(CertPinMismatch),
        );
    }
    // The agent on the web server: the server keeps serving the certificate it loaded, while a
    // renewal wrote a newer one (a fullchain.pem) into the lab's directory.
    for (name, summary, written_ago, extra, outcome) in [
        (
            "cert_not_reloaded",
            "a certificate renewed on disk an hour ago that the server never reloaded",
            Duration::from_secs(3600),
            &[][..],
            down(CertNotReloaded),
        ),
        (
            "cert_reloaded_recently",
            "a certificate renewed on disk moments ago: within the grace period, the reload may still come",
            Duration::ZERO,
            &["--watch-cert-grace", "1d"][..],
            up(Warning, 1),
        ),
    ] {
        let h = host(&name.replace('_', "-"));
        let served = inter.identity(&LeafSpec::new(&[&h]).valid(-65, 25), &[&inter])?;
        let renewed = inter.identity(&LeafSpec::new(&[&h]).valid(-1, 89), &[&inter])?;
        let addr = tls_server(&served, ok_page()).await?;
        let file = dir.join(format!("{h}-fullchain.pem"));
        std::fs::write(&file, pki::pem(renewed.leaf()) + &inter.pem)?;
        std::fs::File::options().write(true).open(&file)?.set_modified(SystemTime::now() - written_ago)?;
        let watch = format!("{}=https://{h}:{}/", file.display(), addr.port());
        let mut args = vec!["--watch-cert", &watch];
        args.extend(extra);
        b.tls(name, summary, &h, addr, &args, outcome);
    }

    http::add(&mut b, &inter, gzip_bomb_sent).await?;

    // TLS failures.
    for (name, summary, hostile, extra, code) in [
        (
            "tls_handshake_timeout",
            "the server accepts TCP, then says nothing",
            Hostile::StallAfterAccept,
            &["--timeout", "2s"][..],
            TlsHandshakeTimeout,
        ),
        (
            "tls_protocol_version",
            "a server that only speaks TLS 1.0",
            Hostile::Tls10ServerHello,
            &[][..],
            TlsProtocolVersion,
        ),
        (
            "tls_protocol_version_alert",
            "a server that refuses TLS 1.2 and 1.3 with an alert",
            Hostile::ProtocolVersionAlert,
            &[][..],
            TlsProtocolVersion,
        ),
        ("tls_handshake_failed", "a plain-HTTP port reached over https", Hostile::NotTls, &[][..], TlsHandshakeFailed),
        (
            "tls_random_bytes",
            "pseudo-random bytes without end instead of a ServerHello",
            Hostile::RandomBytes,
            &[][..],
            TlsHandshakeFailed,
        ),
        (
            "tls_random_server_hello",
            "a well-framed ServerHello record full of random bytes",
            Hostile::RandomServerHello,
            &[][..],
            TlsHandshakeFailed,
        ),
    ] {
        let addr = hostile_server(hostile).await?;
        b.tls(name, summary, &host(&name.replace('_', "-")), addr, extra, down(code));
    }

    // A chain of 1,000 certificates, each intermediate signed by the one before (about 400 KB:
    // well inside TLS's 16 MiB message limit, far past the 64 KiB rustls takes for one handshake
    // message, so the probe stops reading at the message's header).
    let h = host("thousand-chain");
    let id = pki::deep_chain(&root, 999, &LeafSpec::new(&[&h]))?;
    let addr = tls_server(&id, ok_page()).await?;
    b.tls(
        "tls_thousand_cert_chain",
        "a certificate chain 1,000 certificates long",
        &h,
        addr,
        &[],
        down(TlsHandshakeFailed),
    );

    // Malformed DER whose outer SEQUENCE claims 4 GiB. In the intermediate, the handshake
    // completes and the certificate stage finds it; in the leaf, the handshake's signature cannot
    // be checked against a key that does not parse.
    let h = host("malformed-intermediate");
    let mut id = inter.identity(&LeafSpec::new(&[&h]), &[&inter])?;
    id.chain[1] = pki::malformed(&id.chain[1]);
    let addr = tls_server(&id, ok_page()).await?;
    b.tls(
        "cert_malformed_intermediate",
        "a valid leaf followed by an intermediate of malformed DER",
        &h,
        addr,
        &[],
        down(CertInvalid),
    );
    let h = host("malformed-leaf");
    let mut id = inter.identity(&LeafSpec::new(&[&h]), &[&inter])?;
    id.chain[0] = pki::malformed(&id.chain[0]);
    let listener = server::bind("127.0.0.1", 0).await?;
    let addr = listener.local_addr()?;
    tokio::spawn(server::serve_tls(listener, server::server_config_unchecked(&id), ok_page()));
    b.tls("cert_malformed_leaf", "a leaf certificate of malformed DER", &h, addr, &[], down(CertInvalid));

    // TCP failures.
    // Bound but never listening, and held for the lab's life: connections are refused, and no
    // other server (a test running beside, a later bind) can be given the port meanwhile.
    let closed_socket = tokio::net::TcpSocket::new_v4()?;
    closed_socket.bind((std::net::Ipv4Addr::LOCALHOST, 0).into())?;
    let closed = closed_socket.local_addr()?;
    tokio::spawn(async move {
        let _held = closed_socket;
        std::future::pending::<()>().await
    });
    b.tls("tcp_refused", "nothing listens on the port", &host("closed"), closed, &[], down(TcpRefused));
    let (hole, fillers) = server::black_hole().await?;
    let hole_addr = hole.local_addr()?;
    tokio::spawn(async move {
        let _keep = (hole, fillers);
        std::future::pending::<()>().await
    });
    b.tls(
        "tcp_timeout",
        "connection attempts go unanswered",
        &host("black-hole"),
        hole_addr,
        &["--timeout", "2s"],
        down(TcpTimeout),
    );

    // All backends: one of two addresses serves an expired certificate.
    let h = host("backends");
    let good = inter.identity(&LeafSpec::new(&[&h]), &[&inter])?;
    let bad = inter.identity(&LeafSpec::new(&[&h]).valid(-92, -2), &[&inter])?;
    let (first, second) = bind_pair("127.0.0.2", "127.0.0.3").await?;
    let port = first.local_addr()?.port();
    tokio::spawn(server::serve_tls(first, server::server_config(&good), ok_page()));
    tokio::spawn(server::serve_tls(second, server::server_config(&bad), ok_page()));
    let backend_args = |all: bool| {
        let mut args = vec![
            "--resolve".to_owned(),
            format!("{h}:127.0.0.2"),
            "--resolve".to_owned(),
            format!("{h}:127.0.0.3"),
            "--ca-file".to_owned(),
            b.ca_file.clone(),
        ];
        if all {
            args.push("--all-backends".into());
        }
        args
    };
    let (all, first_only) = (backend_args(true), backend_args(false));
    b.add(
        "all_backends_one_bad",
        "two backends behind one name, one serving an expired certificate",
        format!("https://{h}:{port}/"),
        all,
        Outcome { status: ProbeStatus::Degraded, code: Some(CertExpired), health: Some(Expired), exit: 1 },
    );
    // Two backends that both work, one with a certificate 3 days from expiry: all pass, and the
    // report shows (and the exit code follows) the one closest to expiry.
    let h2 = host("expiring-backend");
    let fresh = inter.identity(&LeafSpec::new(&[&h2]), &[&inter])?;
    let expiring = inter.identity(&LeafSpec::new(&[&h2]).valid(-60, 3), &[&inter])?;
    let (first, second) = bind_pair("127.0.0.4", "127.0.0.5").await?;
    let port2 = first.local_addr()?.port();
    tokio::spawn(server::serve_tls(first, server::server_config(&fresh), ok_page()));
    tokio::spawn(server::serve_tls(second, server::server_config(&expiring), ok_page()));
    b.add(
        "all_backends_one_expiring",
        "two working backends, one with a certificate 3 days from expiry",
        format!("https://{h2}:{port2}/"),
        vec![
            "--resolve".into(),
            format!("{h2}:127.0.0.4"),
            "--resolve".into(),
            format!("{h2}:127.0.0.5"),
            "--ca-file".into(),
            b.ca_file.clone(),
            "--all-backends".into(),
        ],
        up(Critical, 2),
    );
    b.add(
        "first_backend_only",
        "the same two backends without --all-backends: only the first is probed",
        format!("https://{h}:{port}/"),
        first_only,
        up(Ok, 0),
    );

    // DNS, through the lab's own DNS server.
    let www = host("www");
    let www_id = inter.identity(&LeafSpec::new(&[&www]), &[&inter])?;
    let www_addr = tls_server(&www_id, ok_page()).await?;
    let mut names = HashMap::new();
    names.insert(format!("{www}."), Answer::Addresses(vec![www_addr.ip()]));
    names.insert(format!("{}.", host("txt-only")), Answer::NoAddresses);
    names.insert(format!("{}.", host("servfail")), Answer::Rcode(ResponseCode::ServFail));
    names.insert(format!("{}.", host("refused")), Answer::Rcode(ResponseCode::Refused));
    let dns_socket = UdpSocket::bind("127.0.0.1:0").await?;
    let dns_addr = dns_socket.local_addr()?;
    tokio::spawn(dns::serve(dns_socket, Arc::new(names)));
    let silent = UdpSocket::bind("127.0.0.1:0").await?;
    let silent_addr = silent.local_addr()?;
    tokio::spawn(dns::serve_silence(silent));
    let ns = |addr: SocketAddr, extra: &[&str]| {
        let mut args = vec!["--nameserver".to_owned(), addr.to_string(), "--ca-file".to_owned(), b.ca_file.clone()];
        args.extend(extra.iter().map(|s| (*s).to_owned()));
        args
    };
    let port = www_addr.port();
    let dns_cases: Vec<(&'static str, &'static str, String, Vec<String>, Outcome)> = vec![
        ("dns_resolves", "a name the lab's DNS server resolves", www.clone(), ns(dns_addr, &[]), up(Ok, 0)),
        (
            "dns_expected_address",
            "the name resolves to the expected address",
            www.clone(),
            ns(dns_addr, &["--expect-ip", &www_addr.ip().to_string()]),
            up(Ok, 0),
        ),
        (
            "dns_unexpected_address",
            "the name resolves somewhere unexpected",
            www.clone(),
            ns(dns_addr, &["--expect-ip", "127.0.0.9"]),
            down(DnsUnexpectedAddress),
        ),
        ("dns_nxdomain", "a name that does not exist", host("nowhere"), ns(dns_addr, &[]), down(DnsNxdomain)),
        (
            "dns_no_records",
            "a name with a TXT record and no address",
            host("txt-only"),
            ns(dns_addr, &[]),
            down(DnsNoRecords),
        ),
        ("dns_servfail", "the DNS server fails (SERVFAIL)", host("servfail"), ns(dns_addr, &[]), down(DnsError)),
        (
            "dns_refused",
            "the DNS server refuses to answer (REFUSED)",
            host("refused"),
            ns(dns_addr, &[]),
            down(DnsError),
        ),
        (
            "dns_timeout",
            "the DNS server never answers",
            www.clone(),
            ns(silent_addr, &["--timeout", "2s"]),
            down(DnsTimeout),
        ),
    ];
    for (name, summary, h, args, outcome) in dns_cases {
        b.add(name, summary, format!("https://{h}:{port}/"), args, outcome);
    }

    Result::Ok((b.scenarios, dns_addr))
}

/// Two listeners on the same port at two loopback addresses (as behind round-robin DNS).
async fn bind_pair(a: &str, b: &str) -> Result<(tokio::net::TcpListener, tokio::net::TcpListener), LabError> {
    let mut last = None;
    for _ in 0..20 {
        let first = server::bind(a, 0).await?;
        match server::bind(b, first.local_addr()?.port()).await {
            Ok(second) => return Ok((first, second)),
            Err(e) => last = Some(e),
        }
    }
    Err(last.expect("loop ran").into())
}
