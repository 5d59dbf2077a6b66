//! The probe pipeline: DNS → connect → TLS → certificate → HTTP, in that order, the first
//! failing stage naming the failure. One file per stage beside this one; this file runs them,
//! follows redirects, probes every backend when asked and assembles the report.

pub mod cert;
pub mod connect;
pub mod dns;
pub mod http;
pub mod policy;
pub mod tls;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, RootCertStore};
use time::OffsetDateTime;
use tracing::Instrument;
use vantage_shared::failure::Failure;
use vantage_shared::report::{
    BackendReport, CertReport, HttpReport, ProbeReport, ProbeStatus, Redirect, Timings, TlsReport, rfc3339,
};
use vantage_shared::target::{TargetHost, TargetUrl};
use vantage_shared::telemetry::TRACE_ONLY;

/// At most this many redirects are followed.
pub const MAX_REDIRECTS: usize = 5;

/// What to probe and what to expect of it.
#[derive(Debug, Clone, PartialEq)]
pub struct Target {
    pub url: TargetUrl,
    /// The whole probe's time limit.
    pub timeout: Duration,
    pub expect_ips: Vec<IpAddr>,
    /// Accepted final statuses; empty means 2xx and 3xx.
    pub expect_status: Vec<u16>,
    pub expect_body: Option<String>,
    pub all_backends: bool,
    pub follow_redirects: bool,
    pub thresholds: cert::Thresholds,
    /// Accepted SHA-256 hashes of the leaf certificate or its public key, as `vantage_shared::pin::parse_pin`
    /// writes them; empty means no pinning. Checked for the target's host name only.
    pub pins: Vec<String>,
}

impl Target {
    pub fn new(url: TargetUrl) -> Target {
        Target {
            url,
            timeout: Duration::from_secs(10),
            expect_ips: Vec::new(),
            expect_status: Vec::new(),
            expect_body: None,
            all_backends: false,
            follow_redirects: true,
            thresholds: cert::Thresholds {
                warn_days: vantage_shared::limits::DEFAULT_WARN_DAYS,
                critical_days: vantage_shared::limits::DEFAULT_CRITICAL_DAYS,
            },
            pins: Vec::new(),
        }
    }
}

/// How the prober reaches the world, set once.
#[derive(Debug, Clone, Default)]
pub struct ProberConfig {
    /// DNS servers to ask; empty means the system's.
    pub nameservers: Vec<SocketAddr>,
    /// Names pinned to addresses, like curl's `--resolve`.
    pub pinned: HashMap<String, Vec<IpAddr>>,
    /// Extra trusted roots (PEM files), beside the webpki roots.
    pub ca_files: Vec<PathBuf>,
    /// Certificate files on this machine and the URLs that should serve them.
    pub watch_certs: Vec<cert::watch::WatchedCert>,
    /// How long a renewed watched file may wait for its reload (`cert::watch::DEFAULT_GRACE`
    /// from the command line).
    pub watch_grace: Duration,
    /// The addresses a target may reach (the default denies link-local and metadata endpoints).
    pub network: policy::NetworkPolicy,
}

#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("cannot read CA file {path}: {reason}")]
    CaFile { path: PathBuf, reason: String },
    #[error(transparent)]
    Resolver(#[from] dns::ResolverSetupError),
    #[error("cannot start a probe thread: {0}")]
    Runtime(std::io::Error),
}

/// Runs probes. Cheap to clone; build one and reuse it.
#[derive(Clone)]
pub struct Prober {
    inner: Arc<Inner>,
}

struct Inner {
    resolver: dns::Resolver,
    roots: RootCertStore,
    provider: Arc<CryptoProvider>,
    tls: Arc<ClientConfig>,
    watch_certs: Vec<cert::watch::WatchedCert>,
    watch_grace: Duration,
    verified: cert::VerifiedChains,
}

impl Prober {
    pub fn new(config: ProberConfig) -> Result<Prober, SetupError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() };
        for path in &config.ca_files {
            let fail = |reason: String| SetupError::CaFile { path: path.clone(), reason };
            let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
                .map_err(|e| fail(e.to_string()))?
                .collect::<Result<_, _>>()
                .map_err(|e| fail(e.to_string()))?;
            if certs.is_empty() {
                return Err(fail("it holds no PEM certificate".into()));
            }
            for cert in certs {
                roots.add(cert).map_err(|e| fail(e.to_string()))?;
            }
        }
        let pinned = config.pinned.into_iter().map(|(k, v)| (k.to_ascii_lowercase(), v)).collect();
        Ok(Prober {
            inner: Arc::new(Inner {
                resolver: dns::Resolver::new(&config.nameservers, pinned, config.network)?,
                roots,
                tls: tls::client_config(provider.clone()),
                provider,
                watch_certs: config.watch_certs,
                watch_grace: config.watch_grace,
                verified: cert::VerifiedChains::default(),
            }),
        })
    }

    /// Probes `target` once. Never fails: every problem is a classified failure in the report.
    pub async fn probe(&self, target: &Target) -> ProbeReport {
        let span = tracing::info_span!(target: TRACE_ONLY, "probe",
            url = %target.url,
            status = tracing::field::Empty,
            failure = tracing::field::Empty,
            otel.status_code = tracing::field::Empty
        );
        let report = self.probe_inner(target).instrument(span.clone()).await;
        span.record("status", tracing::field::debug(report.status));
        if let Some(failure) = &report.failure {
            span.record("failure", failure.code.as_str());
            span.record("otel.status_code", "error");
        }
        report
    }

    async fn probe_inner(&self, target: &Target) -> ProbeReport {
        let started = Instant::now();
        let deadline = started + target.timeout;
        let checked_at = rfc3339(OffsetDateTime::now_utc());
        let mut report = ProbeReport {
            url: target.url.to_string(),
            status: ProbeStatus::Down,
            failure: None,
            addresses: Vec::new(),
            cert: None,
            tls: None,
            http: None,
            timings_ms: Timings::default(),
            backends: Vec::new(),
            checked_at,
        };

        let resolved = self
            .inner
            .resolver
            .resolve(target.url.host(), remaining(deadline))
            .instrument(tracing::info_span!(target: TRACE_ONLY, "dns"))
            .await;
        let dns_done = Instant::now();
        let addresses = match resolved.and_then(|(ips, source)| {
            dns::check_expected(&target.url.host_str(), &ips, &target.expect_ips)?;
            Ok((ips, source))
        }) {
            Ok((ips, source)) => {
                if source == dns::Source::Dns {
                    report.timings_ms.dns = Some(ms(dns_done - started));
                }
                ips
            }
            Err(e) => {
                report.timings_ms.dns = Some(ms(dns_done - started));
                report.failure = Some(Failure::new(e.code(), e.to_string()));
                report.timings_ms.total = ms(started.elapsed());
                return report;
            }
        };
        report.addresses = addresses.clone();
        let port = target.url.port();

        let outcomes: Vec<Outcome> = if target.all_backends {
            let mut tasks = tokio::task::JoinSet::new();
            for (i, ip) in addresses.iter().enumerate() {
                let (prober, target, addr) = (self.clone(), target.clone(), SocketAddr::new(*ip, port));
                let span = tracing::info_span!(target: TRACE_ONLY, "backend", address = %addr);
                tasks.spawn(async move { (i, prober.backend(&target, &[addr], deadline).await) }.instrument(span));
            }
            let mut outcomes: Vec<(usize, Outcome)> = Vec::new();
            while let Some(joined) = tasks.join_next().await {
                match joined {
                    Ok(pair) => outcomes.push(pair),
                    // A bug, not a finding about the target: let it surface as one.
                    Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
                    Err(e) => panic!("a backend probe was cancelled: {e}"),
                }
            }
            outcomes.sort_by_key(|(i, _)| *i);
            outcomes.into_iter().map(|(_, o)| o).collect()
        } else {
            let addrs: Vec<SocketAddr> = addresses.iter().map(|ip| SocketAddr::new(*ip, port)).collect();
            vec![self.backend(target, &addrs, deadline).await]
        };

        let failing = outcomes.iter().filter(|o| o.failure.is_some()).count();
        report.status = match failing {
            0 => ProbeStatus::Up,
            n if n == outcomes.len() => ProbeStatus::Down,
            _ => ProbeStatus::Degraded,
        };
        report.backends = outcomes
            .iter()
            .map(|o| BackendReport {
                address: o.address,
                status: if o.failure.is_some() { ProbeStatus::Down } else { ProbeStatus::Up },
                failure: o.failure.clone(),
                cert_sha256: o.cert.as_ref().map(|c| c.sha256.clone()),
                cert_health: o.cert.as_ref().map(|c| c.health),
                cert_days_remaining: o.cert.as_ref().map(|c| c.days_remaining),
            })
            .collect();
        // The report's stage facts are the first failing backend's; when all pass, those of the
        // backend whose certificate is closest to expiry (one bad backend is not averaged away).
        let rank = |o: &Outcome| {
            let days = o.cert.as_ref().map_or(i64::MAX, |c| c.days_remaining);
            (o.failure.is_none(), days)
        };
        let shown = outcomes.into_iter().enumerate().min_by_key(|(i, o)| (rank(o), *i)).map(|(_, o)| o);
        if let Some(o) = shown {
            report.failure = o.failure;
            report.cert = o.cert;
            report.tls = o.tls;
            report.http = o.http;
            report.timings_ms.connect = o.connect_ms;
            report.timings_ms.tls = o.tls_ms;
            report.timings_ms.ttfb = o.ttfb_ms;
        }
        report.timings_ms.total = ms(started.elapsed());
        report
    }

    /// One backend: connect (to the first address that answers), TLS, certificate, HTTP, then
    /// any redirects.
    async fn backend(&self, target: &Target, addrs: &[SocketAddr], deadline: Instant) -> Outcome {
        let mut outcome = self.exchange(target, &target.url, addrs, deadline).await;
        if outcome.failure.is_some() {
            return outcome;
        }
        let mut current = target.url.clone();
        let mut redirects = Vec::new();
        let mut last = outcome.response.take();
        while let Some(response) = last.take() {
            let location = match (&response.location, (300..400).contains(&response.status)) {
                (Some(location), true) if target.follow_redirects => location.clone(),
                _ => {
                    outcome.finish(target, response, current, redirects);
                    return outcome;
                }
            };
            if redirects.len() == MAX_REDIRECTS {
                let error = http::HttpError::TooManyRedirects { limit: MAX_REDIRECTS, location };
                outcome.fail(Failure::new(error.code(), error.to_string()));
                outcome.http = Some(http_report(&response, &current, redirects));
                return outcome;
            }
            let next = match current.url().join(&location).map_err(|e| e.to_string()).and_then(|u| {
                let text = u.to_string();
                TargetUrl::from_url(u, &text).map_err(|e| e.to_string())
            }) {
                Ok(next) => next,
                Err(reason) => {
                    let error = http::HttpError::BadRedirect { location, reason };
                    outcome.fail(Failure::new(error.code(), error.to_string()));
                    return outcome;
                }
            };
            redirects.push(Redirect { status: response.status, location: next.to_string() });
            // The same origin stays on the same backend; another origin is resolved afresh.
            let same_origin = next.host() == target.url.host() && next.port() == target.url.port();
            let hop_addrs = if same_origin {
                vec![outcome.address]
            } else {
                match self.inner.resolver.resolve(next.host(), remaining(deadline)).await {
                    Ok((ips, _)) => ips.into_iter().map(|ip| SocketAddr::new(ip, next.port())).collect(),
                    Err(e) => {
                        let detail = format!("following the redirect to {next}: {e}");
                        outcome.fail(Failure::new(e.code(), detail));
                        return outcome;
                    }
                }
            };
            let mut hop = self.exchange(target, &next, &hop_addrs, deadline).await;
            // The facts shown are the failing hop's, or the first TLS hop's (an http:// URL that
            // redirects to https:// is judged by the certificate it ends up at).
            if hop.failure.is_some() || outcome.cert.is_none() {
                outcome.cert = hop.cert.take().or(outcome.cert.take());
                outcome.tls = hop.tls.take().or(outcome.tls.take());
            }
            if let Some(failure) = hop.failure {
                let detail = format!("following the redirect to {next}: {}", failure.detail);
                outcome.fail(Failure { detail, ..failure });
                return outcome;
            }
            last = hop.response;
            current = next;
        }
        outcome
    }

    /// Connect, TLS, certificate and one request for `url`.
    async fn exchange(&self, target: &Target, url: &TargetUrl, addrs: &[SocketAddr], deadline: Instant) -> Outcome {
        let mut outcome = Outcome::new(addrs[0]);
        let mut stage_start = Instant::now();
        let mut tcp = None;
        let mut first_error = None;
        for (i, addr) in addrs.iter().enumerate() {
            outcome.address = *addr;
            let span = tracing::info_span!(target: TRACE_ONLY, "connect", %addr);
            // Each address gets its share of what remains, so one black-holed address does not
            // use up the time the others need.
            let share = remaining(deadline) / (addrs.len() - i) as u32;
            match connect::connect(*addr, share).instrument(span).await {
                Ok(stream) => {
                    tcp = Some(stream);
                    break;
                }
                Err(e) => {
                    first_error.get_or_insert((*addr, e));
                }
            }
        }
        let Some(tcp) = tcp else {
            let (addr, e) = first_error.expect("at least one address was tried");
            outcome.address = addr;
            outcome.connect_ms = Some(ms(stage_start.elapsed()));
            outcome.fail(Failure::new(e.code(), e.to_string()));
            return outcome;
        };
        outcome.connect_ms = Some(ms(stage_start.elapsed()));

        if !url.is_tls() {
            let result = http::get(tcp, false, url, target.expect_body.is_some(), remaining(deadline))
                .instrument(tracing::info_span!(target: TRACE_ONLY, "http"))
                .await;
            outcome.record_response(result);
            return outcome;
        }

        stage_start = Instant::now();
        let server_name = match url.host() {
            TargetHost::Ip(ip) => ServerName::IpAddress((*ip).into()),
            TargetHost::Name(name) => match ServerName::try_from(name.clone()) {
                Ok(name) => name,
                Err(_) => {
                    let error = tls::TlsError::InvalidServerName { name: name.clone() };
                    outcome.fail(Failure::new(error.code(), error.to_string()));
                    return outcome;
                }
            },
        };
        let handshake = tls::handshake(self.inner.tls.clone(), tcp, server_name.clone(), remaining(deadline))
            .instrument(tracing::info_span!(target: TRACE_ONLY, "tls"))
            .await;
        outcome.tls_ms = Some(ms(stage_start.elapsed()));
        let handshake = match handshake {
            Ok(h) => h,
            Err(e) => {
                outcome.fail(Failure::new(e.code(), e.to_string()));
                return outcome;
            }
        };
        outcome.tls = Some(TlsReport {
            version: handshake.version.clone(),
            cipher: handshake.cipher.clone(),
            alpn: handshake.alpn.clone(),
        });

        let inspection = {
            let _span = tracing::info_span!(target: TRACE_ONLY, "certificate").entered();
            let trust = cert::TrustContext {
                roots: &self.inner.roots,
                algorithms: self.inner.provider.signature_verification_algorithms.all,
                verified: &self.inner.verified,
            };
            cert::inspect(&handshake.chain, &server_name, &trust, target.thresholds, OffsetDateTime::now_utc())
        };
        outcome.cert = inspection.report;
        // A renewed certificate left unloaded explains whatever else is wrong with the served one
        // (most often: it expired), and reloading is the fix, so it is reported first. Pins are
        // judged only for a chain that holds up: a broken chain is reported as such.
        let verdict = match self.watch(url, &handshake.chain).await {
            Err(e) => Err(e),
            Ok(()) => {
                inspection.verdict.and_then(|()| match (url.host() == target.url.host(), handshake.chain.first()) {
                    (true, Some(leaf)) => cert::check_pins(leaf, &target.pins),
                    _ => Ok(()),
                })
            }
        };
        if let Err(e) = verdict {
            outcome.fail(Failure::new(e.code(), e.to_string()));
            return outcome;
        }

        let h2 = handshake.alpn.as_deref() == Some("h2");
        let result = http::get(handshake.stream, h2, url, target.expect_body.is_some(), remaining(deadline))
            .instrument(tracing::info_span!(target: TRACE_ONLY, "http"))
            .await;
        outcome.record_response(result);
        outcome
    }

    /// Compares the served leaf with each file watched for `url`. A file that cannot be read is
    /// logged and skipped: the site is not down because of it.
    async fn watch(&self, url: &TargetUrl, chain: &[CertificateDer<'static>]) -> Result<(), cert::CertError> {
        let Some(leaf) = chain.first() else { return Ok(()) };
        for watched in self.inner.watch_certs.iter().filter(|w| w.url == *url) {
            let (path, leaf, grace) = (watched.path.clone(), leaf.clone(), self.inner.watch_grace);
            let now = std::time::SystemTime::now();
            let compared = tokio::task::spawn_blocking(move || cert::watch::compare(leaf.as_ref(), &path, grace, now))
                .await
                .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()));
            match compared {
                Ok(finding) => finding?,
                Err(e) => tracing::warn!(url = %url, error = %e, "watched certificate not compared"),
            }
        }
        Ok(())
    }
}

/// What one backend showed.
struct Outcome {
    address: SocketAddr,
    failure: Option<Failure>,
    cert: Option<CertReport>,
    tls: Option<TlsReport>,
    http: Option<HttpReport>,
    response: Option<http::Response>,
    connect_ms: Option<f64>,
    tls_ms: Option<f64>,
    ttfb_ms: Option<f64>,
}

impl Outcome {
    fn new(address: SocketAddr) -> Outcome {
        Outcome {
            address,
            failure: None,
            cert: None,
            tls: None,
            http: None,
            response: None,
            connect_ms: None,
            tls_ms: None,
            ttfb_ms: None,
        }
    }

    fn fail(&mut self, failure: Failure) {
        tracing::debug!(code = %failure.code, detail = %failure.detail, "probe failed");
        self.failure = Some(failure);
    }

    fn record_response(&mut self, result: Result<http::Response, http::HttpError>) {
        match result {
            Ok(response) => {
                self.ttfb_ms = Some(ms(response.ttfb));
                self.response = Some(response);
            }
            Err(e) => {
                // No first byte arrived: ttfb stays unset; the time spent shows in the total.
                self.fail(Failure::new(e.code(), e.to_string()));
            }
        }
    }

    /// Judges the final response.
    fn finish(&mut self, target: &Target, response: http::Response, url: TargetUrl, redirects: Vec<Redirect>) {
        let judged = http::judge_status(response.status, &target.expect_status).and_then(|()| {
            match (&target.expect_body, &response.body) {
                (Some(expected), Some(body)) => http::judge_body(body, expected),
                _ => Ok(()),
            }
        });
        self.http = Some(http_report(&response, &url, redirects));
        if let Err(e) = judged {
            self.fail(Failure::new(e.code(), e.to_string()));
        }
    }
}

fn http_report(response: &http::Response, url: &TargetUrl, redirects: Vec<Redirect>) -> HttpReport {
    HttpReport { status: response.status, version: response.version.to_owned(), redirects, final_url: url.to_string() }
}

/// A protobuf duration as a std one (`None` when absent or negative).
pub fn duration_of(d: Option<&prost_types::Duration>) -> Option<Duration> {
    let d = d?;
    Some(Duration::new(u64::try_from(d.seconds).ok()?, u32::try_from(d.nanos).ok()?))
}

fn remaining(deadline: Instant) -> Duration {
    deadline.saturating_duration_since(Instant::now())
}

/// Milliseconds, to the microsecond.
fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1_000_000.0).round() / 1000.0
}
