//! Stage 1, DNS: every A and AAAA record of the target's name, through hickory-resolver (the
//! system's resolvers, or `--nameserver`), unless `--resolve` pins the name; then the optional
//! check against expected addresses.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use hickory_resolver::TokioResolver;
use hickory_resolver::config::{
    ConnectionConfig, LookupIpStrategy, NameServerConfig, ResolveHosts, ResolverConfig, ResolverOpts,
};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::{DnsError as WireError, NetError};
use vantage_shared::failure::FailureCode;
use vantage_shared::target::TargetHost;

use super::policy::NetworkPolicy;

#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    #[error("{name} does not exist (NXDOMAIN)")]
    NxDomain { name: String },
    #[error("{name} has no A or AAAA records")]
    NoRecords { name: String },
    #[error("no answer for {name} after {:.1}s", after.as_secs_f64())]
    Timeout { name: String, after: Duration },
    #[error("resolving {name} failed: {detail}")]
    Server { name: String, detail: String },
    #[error("{name} resolves to {unexpected:?}, which is not among the expected {expected:?}")]
    UnexpectedAddress { name: String, unexpected: Vec<IpAddr>, expected: Vec<IpAddr> },
    /// `what` names the host and, for a name, the denied addresses it resolved to.
    #[error("{what} is in a network this agent must not reach (--deny-network; lift with --allow-network)")]
    Denied { what: String, denied: Vec<IpAddr> },
}

/// The local resolver configuration is unusable: a problem here, not at the target.
#[derive(Debug, thiserror::Error)]
#[error("cannot set up DNS resolution: {0}")]
pub struct ResolverSetupError(String);

impl DnsError {
    pub fn code(&self) -> FailureCode {
        match self {
            DnsError::NxDomain { .. } => FailureCode::DnsNxdomain,
            DnsError::NoRecords { .. } => FailureCode::DnsNoRecords,
            DnsError::Timeout { .. } => FailureCode::DnsTimeout,
            DnsError::Server { .. } => FailureCode::DnsError,
            DnsError::UnexpectedAddress { .. } => FailureCode::DnsUnexpectedAddress,
            DnsError::Denied { .. } => FailureCode::TargetDenied,
        }
    }
}

/// Where the addresses came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Dns,
    /// `--resolve` pinned the name.
    Pinned,
    /// The URL holds an IP literal.
    Literal,
}

/// Resolves names the way the probe needs: all addresses, fresh each time (no cache), each
/// checked against the network policy, so nothing the agent connects to escapes it.
pub struct Resolver {
    resolver: TokioResolver,
    pinned: HashMap<String, Vec<IpAddr>>,
    policy: NetworkPolicy,
}

impl Resolver {
    /// `nameservers` empty means the system's (`/etc/resolv.conf`). `pinned` maps lower-case
    /// names to the addresses `--resolve` gave.
    pub fn new(
        nameservers: &[SocketAddr],
        pinned: HashMap<String, Vec<IpAddr>>,
        policy: NetworkPolicy,
    ) -> Result<Resolver, ResolverSetupError> {
        let built = if nameservers.is_empty() {
            hickory_resolver::system_conf::read_system_conf()
                .map_err(|e| format!("cannot read the system resolver configuration: {e}"))
        } else {
            let servers = nameservers
                .iter()
                .map(|addr| {
                    let mut udp = ConnectionConfig::udp();
                    udp.port = addr.port();
                    let mut tcp = ConnectionConfig::tcp();
                    tcp.port = addr.port();
                    NameServerConfig::new(addr.ip(), true, vec![udp, tcp])
                })
                .collect();
            Ok((ResolverConfig::from_name_servers(servers), ResolverOpts::default()))
        };
        let resolver = built.and_then(|(config, mut opts)| {
            opts.ip_strategy = LookupIpStrategy::Ipv4AndIpv6;
            opts.cache_size = 0;
            opts.use_hosts_file = ResolveHosts::Never;
            opts.attempts = 2;
            opts.timeout = Duration::from_secs(2);
            TokioResolver::builder_with_config(config, TokioRuntimeProvider::default())
                .with_options(opts)
                .build()
                .map_err(|e| format!("cannot build the resolver: {e}"))
        });
        Ok(Resolver { resolver: resolver.map_err(ResolverSetupError)?, pinned, policy })
    }

    /// Every address of `host`, within `budget`; denied when any of them is outside the network
    /// policy (a name that also resolves to a metadata address is not probed at all).
    pub async fn resolve(&self, host: &TargetHost, budget: Duration) -> Result<(Vec<IpAddr>, Source), DnsError> {
        let (ips, source) = self.lookup(host, budget).await?;
        let denied = self.policy.denied(&ips);
        if !denied.is_empty() {
            let what = match host {
                TargetHost::Name(name) => {
                    let list: Vec<String> = denied.iter().map(IpAddr::to_string).collect();
                    format!("{name} resolves to {}, which", list.join(", "))
                }
                TargetHost::Ip(ip) => ip.to_string(),
            };
            return Err(DnsError::Denied { what, denied });
        }
        Ok((ips, source))
    }

    async fn lookup(&self, host: &TargetHost, budget: Duration) -> Result<(Vec<IpAddr>, Source), DnsError> {
        let name = match host {
            TargetHost::Ip(ip) => return Ok((vec![*ip], Source::Literal)),
            TargetHost::Name(name) => name,
        };
        if let Some(ips) = self.pinned.get(&name.to_ascii_lowercase()) {
            return Ok((ips.clone(), Source::Pinned));
        }
        // A trailing dot: the name is absolute, no search domains are tried.
        let started = std::time::Instant::now();
        let lookup = tokio::time::timeout(budget, self.resolver.lookup_ip(format!("{name}.")));
        let result = lookup.await.map_err(|_| DnsError::Timeout { name: name.clone(), after: budget })?;
        let found = result.map_err(|e| classify(name, e, started.elapsed()))?;
        let mut ips: Vec<IpAddr> = found.iter().collect();
        ips.dedup();
        if ips.is_empty() {
            return Err(DnsError::NoRecords { name: name.clone() });
        }
        Ok((ips, Source::Dns))
    }
}

fn classify(name: &str, error: NetError, waited: Duration) -> DnsError {
    let name = name.to_owned();
    if error.is_nx_domain() {
        DnsError::NxDomain { name }
    } else if error.is_no_records_found() {
        DnsError::NoRecords { name }
    } else {
        match error {
            NetError::Timeout => DnsError::Timeout { name, after: waited },
            NetError::Dns(WireError::ResponseCode(code)) => {
                DnsError::Server { name, detail: format!("the server answered {code}") }
            }
            other => DnsError::Server { name, detail: other.to_string() },
        }
    }
}

/// Every resolved address must be one of `expected` (when any are given): an extra address is
/// as suspicious as a wrong one.
pub fn check_expected(name: &str, resolved: &[IpAddr], expected: &[IpAddr]) -> Result<(), DnsError> {
    if expected.is_empty() {
        return Ok(());
    }
    let unexpected: Vec<IpAddr> = resolved.iter().filter(|ip| !expected.contains(ip)).copied().collect();
    if unexpected.is_empty() {
        Ok(())
    } else {
        Err(DnsError::UnexpectedAddress { name: name.to_owned(), unexpected, expected: expected.to_vec() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_address_must_be_expected() {
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        assert!(check_expected("x", &[a], &[]).is_ok());
        assert!(check_expected("x", &[a], &[a, b]).is_ok());
        let err = check_expected("x", &[a, b], &[a]).unwrap_err();
        assert_eq!(err.code(), FailureCode::DnsUnexpectedAddress);
        assert!(err.to_string().contains("192.0.2.2"), "{err}");
    }
}
