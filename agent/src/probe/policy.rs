//! Which addresses a target may make the agent reach. Link-local addresses (cloud metadata
//! endpoints, which hand out the instance's credentials) are denied by default, so a target URL
//! or a redirect cannot turn the agent into a way to read them; `--deny-network` adds ranges and
//! `--allow-network` lifts parts of them. The DNS stage checks every resolved address (and every
//! redirect hop's) against this before anything connects.

use std::net::IpAddr;

use ipnet::IpNet;

/// Denied unless allowed: IPv4 link-local (AWS, GCP, Azure, OpenStack metadata live at
/// 169.254.169.254), IPv6 link-local, AWS's IPv6 metadata endpoint, Azure's WireServer (which
/// serves VM extension settings and certificates) and Alibaba Cloud's metadata service.
pub const DEFAULT_DENY: &[&str] =
    &["169.254.0.0/16", "fe80::/10", "fd00:ec2::254/128", "168.63.129.16/32", "100.100.100.200/32"];

/// The well-known NAT64 prefix, `64:ff9b::/96` (RFC 6052): on an IPv6-only host with DNS64,
/// `64:ff9b::a9fe:a9fe` is translated to 169.254.169.254 by the gateway, so an address in it is
/// judged as the IPv4 address it carries (its last 32 bits).
const NAT64: [u16; 6] = [0x64, 0xff9b, 0, 0, 0, 0];

/// Deny and allow ranges: an address is allowed if an allow range holds it, else denied if a
/// deny range holds it, else allowed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkPolicy {
    deny: Vec<IpNet>,
    allow: Vec<IpNet>,
}

impl Default for NetworkPolicy {
    /// The default deny ranges, nothing allowed beyond.
    fn default() -> NetworkPolicy {
        NetworkPolicy::new(&[], &[])
    }
}

impl NetworkPolicy {
    /// The default deny ranges plus `deny`, lifted where `allow` says.
    pub fn new(deny: &[IpNet], allow: &[IpNet]) -> NetworkPolicy {
        let mut all: Vec<IpNet> = DEFAULT_DENY.iter().map(|n| n.parse().expect("a valid default range")).collect();
        all.extend(deny.iter().map(IpNet::trunc));
        NetworkPolicy { deny: all, allow: allow.iter().map(IpNet::trunc).collect() }
    }

    /// Whether the agent may connect to `ip`. An IPv4-mapped IPv6 address (`::ffff:169.254.169.254`)
    /// or a NAT64 one (`64:ff9b::169.254.169.254`) reaches the IPv4 address, so it is judged as
    /// that too.
    pub fn permits(&self, ip: IpAddr) -> bool {
        let mapped = match ip {
            IpAddr::V6(v6) if v6.segments()[..6] == NAT64 => {
                let [.., a, b, c, d] = v6.octets();
                Some(IpAddr::from([a, b, c, d]))
            }
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4),
            IpAddr::V4(_) => None,
        };
        let forms = || std::iter::once(ip).chain(mapped);
        let held = |nets: &[IpNet]| forms().any(|ip| nets.iter().any(|n| n.contains(&ip)));
        held(&self.allow) || !held(&self.deny)
    }

    /// The addresses of `ips` the agent must not reach.
    pub fn denied(&self, ips: &[IpAddr]) -> Vec<IpAddr> {
        ips.iter().copied().filter(|ip| !self.permits(*ip)).collect()
    }
}

/// A CIDR range as `--deny-network` and `--allow-network` take it; a bare address is one host.
pub fn parse_network(s: &str) -> Result<IpNet, String> {
    s.parse::<IpNet>().or_else(|_| s.parse::<IpAddr>().map(IpNet::from)).map_err(|_| {
        format!("{s:?} is not a network in CIDR notation (169.254.0.0/16, fd00:ec2::254/128) or an IP address")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter().map(|s| parse_network(s).unwrap()).collect()
    }

    #[test]
    fn metadata_endpoints_are_denied_by_default() {
        let policy = NetworkPolicy::default();
        for denied in [
            "169.254.169.254",
            "169.254.0.1",
            "fe80::1",
            "fd00:ec2::254",
            "::ffff:169.254.169.254",
            "64:ff9b::a9fe:a9fe",
            "168.63.129.16",
            "100.100.100.200",
            "64:ff9b::100.100.100.200",
        ] {
            assert!(!policy.permits(ip(denied)), "{denied}");
        }
        for allowed in [
            "127.0.0.1",
            "10.0.0.1",
            "192.0.2.1",
            "::1",
            "2001:db8::1",
            "fd00:ec2::253",
            "169.255.0.1",
            "64:ff9b::c000:201",
            "100.100.100.201",
        ] {
            assert!(policy.permits(ip(allowed)), "{allowed}");
        }
    }

    #[test]
    fn deny_adds_to_the_defaults_and_allow_lifts_parts() {
        let policy = NetworkPolicy::new(&nets(&["127.0.0.2/32", "10.0.0.0/8"]), &nets(&["10.1.0.0/16"]));
        assert!(!policy.permits(ip("127.0.0.2")));
        assert!(policy.permits(ip("127.0.0.3")));
        assert!(!policy.permits(ip("10.2.0.1")));
        assert!(policy.permits(ip("10.1.2.3")), "an allow range inside a deny range wins");
        assert!(!policy.permits(ip("169.254.169.254")), "the defaults stay");
        let lifted = NetworkPolicy::new(&[], &nets(&["169.254.169.254"]));
        assert!(lifted.permits(ip("169.254.169.254")));
        assert!(!lifted.permits(ip("169.254.169.253")));
        assert_eq!(lifted.denied(&[ip("169.254.169.254"), ip("169.254.1.1"), ip("1.1.1.1")]), vec![ip("169.254.1.1")]);
    }

    #[test]
    fn networks_parse_as_ranges_or_single_addresses() {
        assert_eq!(parse_network("169.254.0.0/16").unwrap().to_string(), "169.254.0.0/16");
        assert_eq!(parse_network("fd00:ec2::254").unwrap().to_string(), "fd00:ec2::254/128");
        assert_eq!(parse_network("10.0.0.1").unwrap().to_string(), "10.0.0.1/32");
        // Host bits are ignored, as `ip route` does.
        let policy = NetworkPolicy::new(&nets(&["10.9.8.7/8"]), &[]);
        assert!(!policy.permits(ip("10.0.0.1")));
        for bad in ["", "metadata", "10.0.0.0/33", "169.254.0.0/", "fe80::/129"] {
            let error = parse_network(bad).unwrap_err();
            assert!(error.contains("CIDR"), "{bad}: {error}");
        }
    }
}
