//! `vantage-agent check`: one probe of one URL, told like a person would tell it, with
//! Nagios/Icinga exit codes (0 ok, 1 warning, 2 critical, 3 unknown) and a stable JSON form.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use ipnet::IpNet;
use vantage_shared::failure::Stage;
use vantage_shared::report::{CertHealth, ProbeReport, ProbeStatus};
use vantage_shared::target::TargetUrl;

use crate::probe::cert::{self, Thresholds, watch::WatchedCert};
use crate::probe::policy::{self, NetworkPolicy};
use crate::probe::{Prober, ProberConfig, Target};

/// Nagios/Icinga plugin exit codes.
pub mod exit {
    pub const OK: i32 = 0;
    pub const WARNING: i32 = 1;
    pub const CRITICAL: i32 = 2;
    pub const UNKNOWN: i32 = 3;
}

/// How probes reach the world: shared by `check` and `run`.
#[derive(Debug, Clone, Default, Args)]
pub struct NetworkArgs {
    /// DNS server to ask instead of the system's (repeatable; the environment variable holds one).
    #[arg(long = "nameserver", value_name = "IP:PORT", value_parser = parse_nameserver, env = "VANTAGE_NAMESERVER")]
    pub nameservers: Vec<SocketAddr>,
    /// Use this address for this host instead of DNS, like curl (repeatable; several for one
    /// host make several backends; the environment variable holds one).
    #[arg(long = "resolve", value_name = "HOST:IP", value_parser = parse_resolve, env = "VANTAGE_RESOLVE")]
    pub resolve: Vec<(String, IpAddr)>,
    /// Also trust the CA certificates in this PEM file (repeatable; the environment variable
    /// holds one).
    #[arg(long = "ca-file", value_name = "PEM", env = "VANTAGE_CA_FILE")]
    pub ca_files: Vec<PathBuf>,
    /// Never connect to addresses in this network (CIDR; repeatable; the environment variable
    /// holds one). Added to the defaults, which deny link-local addresses and cloud metadata
    /// endpoints: 169.254.0.0/16, fe80::/10, fd00:ec2::254/128, 168.63.129.16/32, 100.100.100.200/32
    /// (also through NAT64's 64:ff9b::/96). A target or redirect resolving
    /// there fails with target_denied before any connection.
    #[arg(long = "deny-network", value_name = "CIDR", value_parser = policy::parse_network, env = "VANTAGE_DENY_NETWORK")]
    pub deny_networks: Vec<IpNet>,
    /// Lift part of the denied networks: an address in this network is reached even if denied
    /// (CIDR; repeatable; the environment variable holds one).
    #[arg(long = "allow-network", value_name = "CIDR", value_parser = policy::parse_network, env = "VANTAGE_ALLOW_NETWORK")]
    pub allow_networks: Vec<IpNet>,
}

impl NetworkArgs {
    pub fn prober_config(&self) -> ProberConfig {
        let mut pinned: HashMap<String, Vec<IpAddr>> = HashMap::new();
        for (host, ip) in &self.resolve {
            // IDN names pinned by their Unicode spelling match the punycode the URL holds.
            let host = url::Host::parse(host).map(|h| h.to_string()).unwrap_or_else(|_| host.clone());
            pinned.entry(host).or_default().push(*ip);
        }
        ProberConfig {
            nameservers: self.nameservers.clone(),
            pinned,
            ca_files: self.ca_files.clone(),
            watch_certs: Vec::new(),
            watch_grace: cert::watch::DEFAULT_GRACE,
            network: NetworkPolicy::new(&self.deny_networks, &self.allow_networks),
        }
    }
}

/// Certificate files on this machine to compare with what is served: shared by `check` and `run`.
#[derive(Debug, Clone, Default, Args)]
pub struct WatchArgs {
    /// On the web server itself: the certificate file (PEM; its first certificate is the leaf)
    /// that URL should serve; a newer one on disk than the served one is cert_not_reloaded
    /// (repeatable; the environment variable holds one).
    #[arg(long = "watch-cert", value_name = "PATH=URL", value_parser = WatchedCert::parse, env = "VANTAGE_WATCH_CERT")]
    pub watch_certs: Vec<WatchedCert>,
    /// How long a renewed --watch-cert file may wait for the server's reload before it is reported.
    #[arg(long, value_name = "DURATION", default_value = "10m", value_parser = parse_grace, env = "VANTAGE_WATCH_CERT_GRACE")]
    pub watch_cert_grace: Duration,
}

impl WatchArgs {
    /// Adds the watched files to a prober's configuration.
    pub fn apply(&self, config: &mut ProberConfig) {
        config.watch_certs = self.watch_certs.clone();
        config.watch_grace = self.watch_cert_grace;
    }
}

#[derive(Debug, Clone, Args)]
pub struct CheckArgs {
    /// The URL to probe (https:// or http://).
    pub url: String,
    #[command(flatten)]
    pub network: NetworkArgs,
    /// Accept only these final HTTP statuses (repeatable; default: any 2xx or 3xx).
    #[arg(long = "expect-status", value_name = "CODE", value_parser = clap::value_parser!(u16).range(100..=599))]
    pub expect_status: Vec<u16>,
    /// Every resolved address must be one of these (repeatable).
    #[arg(long = "expect-ip", value_name = "IP")]
    pub expect_ips: Vec<IpAddr>,
    /// The response body must contain this text (the first 1 MiB is searched).
    #[arg(long = "expect-body", value_name = "TEXT", value_parser = parse_body_text)]
    pub expect_body: Option<String>,
    /// Probe every resolved address with the target's name, not just the first that answers.
    #[arg(long)]
    pub all_backends: bool,
    /// Time limit for the whole probe.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_timeout)]
    pub timeout: Duration,
    /// Certificate health turns to warning with fewer days left.
    #[arg(long, value_name = "DAYS", default_value_t = vantage_shared::limits::DEFAULT_WARN_DAYS)]
    pub warn_days: u32,
    /// Certificate health turns to critical with fewer days left.
    #[arg(long, value_name = "DAYS", default_value_t = vantage_shared::limits::DEFAULT_CRITICAL_DAYS)]
    pub critical_days: u32,
    /// The served leaf certificate's SHA-256, or its public key's (SubjectPublicKeyInfo), must be
    /// this, in hex (repeatable; one must match).
    #[arg(long = "pin-sha256", value_name = "HEX", value_parser = vantage_shared::pin::parse_pin)]
    pub pins: Vec<String>,
    #[command(flatten)]
    pub watch: WatchArgs,
    /// Report a redirect as it is instead of following it.
    #[arg(long)]
    pub no_follow: bool,
    /// Print one JSON object instead of the human report.
    #[arg(long)]
    pub json: bool,
}

fn parse_nameserver(s: &str) -> Result<SocketAddr, String> {
    s.parse::<SocketAddr>()
        .or_else(|_| s.parse::<IpAddr>().map(|ip| SocketAddr::new(ip, 53)))
        .map_err(|_| format!("{s:?} is not an IP address with an optional port (192.0.2.53:53 or [2001:db8::53]:53)"))
}

fn parse_resolve(s: &str) -> Result<(String, IpAddr), String> {
    let (host, ip) = s.split_once(':').ok_or_else(|| format!("{s:?} is not HOST:IP"))?;
    let ip = ip.trim_start_matches('[').trim_end_matches(']');
    let ip: IpAddr = ip.parse().map_err(|_| format!("{ip:?} in {s:?} is not an IP address"))?;
    // URLs' hosts are compared without their trailing dot.
    let host = host.trim_end_matches('.');
    if host.is_empty() {
        return Err(format!("{s:?} has no host name"));
    }
    Ok((host.to_ascii_lowercase(), ip))
}

fn parse_body_text(s: &str) -> Result<String, String> {
    if s.is_empty() { Err("the expected text must not be empty".into()) } else { Ok(s.to_owned()) }
}

fn parse_grace(s: &str) -> Result<Duration, String> {
    vantage_shared::duration::parse_duration(s).map_err(|e| e.to_string())
}

fn parse_timeout(s: &str) -> Result<Duration, String> {
    let d = vantage_shared::duration::parse_duration(s).map_err(|e| e.to_string())?;
    if d < Duration::from_millis(100) || d > Duration::from_secs(300) {
        return Err(format!("{s} is outside the accepted range of 100ms to 5m"));
    }
    Ok(d)
}

/// Why `check` could not run at all (exit 3).
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    #[error(transparent)]
    Url(#[from] vantage_shared::TargetError),
    #[error(transparent)]
    Setup(#[from] crate::probe::SetupError),
    #[error("--critical-days ({critical}) must not be more than --warn-days ({warn})")]
    Thresholds { warn: u32, critical: u32 },
    #[error("--watch-cert {path}={watched}: check probes {checked}; watch a file for the URL being checked")]
    WatchUrl { path: String, watched: String, checked: String },
}

impl CheckArgs {
    /// The prober and target these arguments describe.
    pub fn build(&self) -> Result<(Prober, Target), CheckError> {
        let url = TargetUrl::parse(&self.url)?;
        if self.critical_days > self.warn_days {
            return Err(CheckError::Thresholds { warn: self.warn_days, critical: self.critical_days });
        }
        if let Some(w) = self.watch.watch_certs.iter().find(|w| w.url != url) {
            let (path, watched) = (w.path.display().to_string(), w.url.to_string());
            return Err(CheckError::WatchUrl { path, watched, checked: url.to_string() });
        }
        let mut config = self.network.prober_config();
        self.watch.apply(&mut config);
        let prober = Prober::new(config)?;
        let mut target = Target::new(url);
        target.timeout = self.timeout;
        target.expect_ips = self.expect_ips.clone();
        target.expect_status = self.expect_status.clone();
        target.expect_body = self.expect_body.clone();
        target.all_backends = self.all_backends;
        target.follow_redirects = !self.no_follow;
        target.thresholds = Thresholds { warn_days: self.warn_days, critical_days: self.critical_days };
        target.pins = self.pins.clone();
        Ok((prober, target))
    }

    /// Probes once.
    pub async fn run(&self) -> Result<ProbeReport, CheckError> {
        let (prober, target) = self.build()?;
        Ok(prober.probe(&target).await)
    }
}

/// The plugin exit code for a report: down is 2 and degraded is 1 (some backends fail, and the
/// report shows a failing one); an up site is 2 with a critical certificate, 1 in the warning
/// window, else 0.
pub fn exit_code(report: &ProbeReport) -> i32 {
    match report.status {
        ProbeStatus::Down => exit::CRITICAL,
        ProbeStatus::Degraded => exit::WARNING,
        ProbeStatus::Up => match report.cert.as_ref().map(|c| c.health) {
            Some(CertHealth::Critical | CertHealth::Expired) => exit::CRITICAL,
            Some(CertHealth::Warning) => exit::WARNING,
            Some(CertHealth::Ok) | None => exit::OK,
        },
    }
}

struct Paint {
    on: bool,
}

impl Paint {
    fn wrap(&self, code: &str, text: &str) -> String {
        if self.on { format!("\x1b[{code}m{text}\x1b[0m") } else { text.to_owned() }
    }
    fn ok(&self, t: &str) -> String {
        self.wrap("32", t)
    }
    fn bad(&self, t: &str) -> String {
        self.wrap("31", t)
    }
    fn warn(&self, t: &str) -> String {
        self.wrap("33", t)
    }
    fn dim(&self, t: &str) -> String {
        self.wrap("2", t)
    }
    fn bold(&self, t: &str) -> String {
        self.wrap("1", t)
    }
}

fn fmt_ms(ms: Option<f64>) -> String {
    match ms {
        Some(ms) if ms >= 100.0 => format!("{ms:>6.0} ms"),
        Some(ms) => format!("{ms:>6.1} ms"),
        None => " ".repeat(9),
    }
}

/// The report as a person reads it: one line per stage, then the cause and the fix.
pub fn render_human(report: &ProbeReport, color: bool) -> String {
    let p = Paint { on: color };
    let mut out = String::new();
    let _ = writeln!(out, "{}", p.bold(&report.url));
    let failed = report.failure.as_ref().map(|f| f.stage);
    let tls = report.url.starts_with("https:");
    let order = [Stage::Dns, Stage::Connect, Stage::Tls, Stage::Certificate, Stage::Http];
    let failed_at = failed.and_then(|s| order.iter().position(|o| *o == s));
    for (i, stage) in order.iter().enumerate() {
        let (ms, fact) = stage_line(report, *stage);
        let mark = if !tls && matches!(stage, Stage::Tls | Stage::Certificate) {
            let _ = writeln!(out, "  {} {:<12} {} {}", p.dim("-"), stage.as_str(), fmt_ms(None), p.dim("plain http"));
            continue;
        } else if Some(i) == failed_at {
            p.bad("✗")
        } else if failed_at.is_some_and(|f| i > f) {
            let _ = writeln!(out, "  {} {:<12} {} {}", p.dim("·"), stage.as_str(), fmt_ms(None), p.dim("not reached"));
            continue;
        } else if *stage == Stage::Certificate && report.cert.as_ref().is_some_and(|c| c.health != CertHealth::Ok) {
            p.warn("!")
        } else {
            p.ok("✓")
        };
        let _ = writeln!(out, "  {mark} {:<12} {} {fact}", stage.as_str(), fmt_ms(ms));
    }
    if report.backends.len() > 1 {
        let _ = writeln!(out, "  backends:");
        for b in &report.backends {
            let (mark, what) = match &b.failure {
                None => (p.ok("✓"), "up".to_owned()),
                Some(f) => (p.bad("✗"), format!("{}: {}", f.code, f.detail)),
            };
            let _ = writeln!(out, "    {mark} {:<24} {what}", b.address.to_string());
        }
    }
    let _ = writeln!(out);
    let verdict = match report.status {
        ProbeStatus::Up => p.ok("UP"),
        ProbeStatus::Degraded => p.warn("DEGRADED"),
        ProbeStatus::Down => p.bad("DOWN"),
    };
    match &report.failure {
        Some(f) => {
            let _ = writeln!(out, "{verdict}  {}  {}", p.bold(f.code.as_str()), f.message);
            let _ = writeln!(out, "  what:  {}", f.detail);
            let _ = writeln!(out, "  fix:   {}", f.hint);
        }
        None => {
            let _ = writeln!(out, "{verdict}  in {:.0} ms", report.timings_ms.total);
        }
    }
    if let Some(cert) = &report.cert {
        match cert.health {
            CertHealth::Warning | CertHealth::Critical => {
                let text = format!(
                    "certificate {}: {} days left (the chain's first expiry is {})",
                    cert.health.as_str(),
                    cert.days_remaining,
                    cert.earliest_expiry
                );
                let _ = writeln!(
                    out,
                    "  {}",
                    if cert.health == CertHealth::Critical { p.bad(&text) } else { p.warn(&text) }
                );
            }
            _ => {}
        }
    }
    out
}

/// The backend whose facts the report shows: the one whose certificate the report carries.
fn shown_backend(report: &ProbeReport) -> Option<&vantage_shared::report::BackendReport> {
    let sha = report.cert.as_ref().map(|c| &c.sha256);
    report
        .backends
        .iter()
        .find(|b| b.failure.is_some())
        .or_else(|| report.backends.iter().find(|b| sha.is_some() && b.cert_sha256.as_ref() == sha))
        .or(report.backends.first())
}

fn stage_line(report: &ProbeReport, stage: Stage) -> (Option<f64>, String) {
    let failure_here = report.failure.as_ref().filter(|f| f.stage == stage);
    let t = &report.timings_ms;
    match stage {
        Stage::Dns => {
            let addrs: Vec<String> = report.addresses.iter().map(IpAddr::to_string).collect();
            let fact = match failure_here {
                Some(f) => f.detail.clone(),
                None if t.dns.is_none() => format!("{} (no lookup: pinned or literal)", addrs.join(", ")),
                None => addrs.join(", "),
            };
            (t.dns, fact)
        }
        Stage::Connect => {
            let fact = match failure_here {
                Some(f) => f.detail.clone(),
                None => shown_backend(report).map(|b| b.address.to_string()).unwrap_or_default(),
            };
            (t.connect, fact)
        }
        Stage::Tls => {
            let fact = match (failure_here, &report.tls) {
                (Some(f), _) => f.detail.clone(),
                (None, Some(tls)) => format!(
                    "{} {}{}",
                    tls.version,
                    tls.cipher,
                    tls.alpn.as_deref().map(|a| format!(", ALPN {a}")).unwrap_or_default()
                ),
                (None, None) => String::new(),
            };
            (t.tls, fact)
        }
        Stage::Certificate => {
            let facts = report.cert.as_ref().map(|c| {
                let expiry = if c.earliest_expiry == c.not_after {
                    format!("expires {}", c.not_after)
                } else {
                    format!("expires {}, the chain first at {}", c.not_after, c.earliest_expiry)
                };
                format!(
                    "{} (issuer {}); SANs {}; {expiry} ({} days, {})",
                    c.subject,
                    c.issuer,
                    c.sans.join(", "),
                    c.days_remaining,
                    c.health.as_str()
                )
            });
            let fact = match (failure_here, facts) {
                (Some(f), Some(facts)) => format!("{}\n{:>27}{facts}", f.detail, ""),
                (Some(f), None) => f.detail.clone(),
                (None, Some(facts)) => facts,
                (None, None) => String::new(),
            };
            (None, fact)
        }
        Stage::Http => {
            let fact = match (failure_here, &report.http) {
                (Some(f), _) => f.detail.clone(),
                (None, Some(h)) => {
                    let hops = if h.redirects.is_empty() {
                        String::new()
                    } else {
                        format!(" after {} redirect(s), at {}", h.redirects.len(), h.final_url)
                    };
                    format!("{} {}{hops}", h.status, h.version)
                }
                (None, None) => String::new(),
            };
            (t.ttfb, fact)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolve_and_nameserver_flags_parse() {
        assert_eq!(
            parse_resolve("Shop.example:192.0.2.7").unwrap(),
            ("shop.example".into(), "192.0.2.7".parse().unwrap())
        );
        assert_eq!(parse_resolve("h:::1").unwrap().1, "::1".parse::<IpAddr>().unwrap());
        assert_eq!(parse_resolve("h:[2001:db8::1]").unwrap().1, "2001:db8::1".parse::<IpAddr>().unwrap());
        assert!(parse_resolve("nocolon").is_err());
        assert!(parse_resolve(":192.0.2.1").is_err());
        assert_eq!(parse_resolve("shop.example.:192.0.2.7").unwrap().0, "shop.example");
        assert!(parse_body_text("").is_err());
        assert_eq!(parse_nameserver("192.0.2.53").unwrap(), "192.0.2.53:53".parse().unwrap());
        assert_eq!(parse_nameserver("127.0.0.1:5353").unwrap(), "127.0.0.1:5353".parse().unwrap());
        assert!(parse_nameserver("dns.example").is_err());
        assert!(parse_timeout("0s").is_err());
        assert!(parse_timeout("1h").is_err());
    }

    #[derive(Debug, clap::Parser)]
    struct Line {
        #[command(flatten)]
        network: NetworkArgs,
    }

    #[test]
    fn network_flags_say_the_default_denied_ranges_and_add_to_them() {
        use clap::CommandFactory;
        let help = Line::command().render_long_help().to_string();
        for range in policy::DEFAULT_DENY {
            assert!(help.contains(range), "--deny-network's help lacks {range}:\n{help}");
        }
        let line = <Line as clap::Parser>::try_parse_from([
            "check",
            "--deny-network",
            "127.0.0.2/32",
            "--deny-network",
            "10.0.0.0/8",
            "--allow-network",
            "169.254.169.254",
        ])
        .unwrap();
        let policy = line.network.prober_config().network;
        assert!(!policy.permits("127.0.0.2".parse().unwrap()));
        assert!(!policy.permits("10.1.1.1".parse().unwrap()));
        assert!(!policy.permits("169.254.170.2".parse().unwrap()), "a given deny keeps the defaults");
        assert!(policy.permits("169.254.169.254".parse().unwrap()));
        let bad = <Line as clap::Parser>::try_parse_from(["check", "--deny-network", "10.0.0.0/40"]).unwrap_err();
        assert!(bad.to_string().contains("CIDR"), "{bad}");
    }
}
