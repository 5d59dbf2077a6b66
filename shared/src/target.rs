//! Target URLs: parsed and checked once, so every later stage can trust host, port and scheme.
//! IDN host names become punycode; IPv6 literals are accepted.

use std::net::IpAddr;

use url::Url;

/// Why a target URL was refused. Each message is one sentence for the operator.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    #[error("{input:?} is not a valid URL: {reason}")]
    Invalid { input: String, reason: String },
    #[error("unsupported scheme {scheme:?} in {input:?}: only http and https can be probed")]
    Scheme { input: String, scheme: String },
    #[error("{input:?} has no host name")]
    EmptyHost { input: String },
    #[error("{input:?} uses port 0, which cannot be connected to")]
    PortZero { input: String },
    #[error("the host name in {input:?} is too long: {len} characters, DNS allows 253")]
    HostTooLong { input: String, len: usize },
    #[error("the host name in {input:?} has a label longer than DNS's 63 characters")]
    LabelTooLong { input: String },
}

/// Where a target lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetHost {
    /// An ASCII (punycode) DNS name, without a trailing dot.
    Name(String),
    Ip(IpAddr),
}

/// A checked `http://` or `https://` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetUrl {
    url: Url,
    host: TargetHost,
    port: u16,
}

impl TargetUrl {
    pub fn parse(input: &str) -> Result<TargetUrl, TargetError> {
        let url = Url::parse(input.trim()).map_err(|e| match e {
            url::ParseError::EmptyHost => TargetError::EmptyHost { input: input.to_owned() },
            other => TargetError::Invalid { input: input.to_owned(), reason: other.to_string() },
        })?;
        TargetUrl::from_url(url, input)
    }

    /// Checks an already-parsed URL (a redirect's `Location`, say).
    pub fn from_url(url: Url, input: &str) -> Result<TargetUrl, TargetError> {
        let input = input.to_owned();
        if !matches!(url.scheme(), "http" | "https") {
            return Err(TargetError::Scheme { input, scheme: url.scheme().to_owned() });
        }
        let host = match url.host() {
            None => return Err(TargetError::EmptyHost { input }),
            Some(url::Host::Domain("")) => return Err(TargetError::EmptyHost { input }),
            Some(url::Host::Domain(name)) => {
                let name = name.trim_end_matches('.');
                if name.is_empty() {
                    return Err(TargetError::EmptyHost { input });
                }
                if name.len() > 253 {
                    return Err(TargetError::HostTooLong { input, len: name.len() });
                }
                if name.split('.').any(|label| label.len() > 63) {
                    return Err(TargetError::LabelTooLong { input });
                }
                TargetHost::Name(name.to_owned())
            }
            Some(url::Host::Ipv4(ip)) => TargetHost::Ip(ip.into()),
            Some(url::Host::Ipv6(ip)) => TargetHost::Ip(ip.into()),
        };
        let port = url.port_or_known_default().unwrap_or(0);
        if port == 0 {
            return Err(TargetError::PortZero { input });
        }
        Ok(TargetUrl { url, host, port })
    }

    pub fn url(&self) -> &Url {
        &self.url
    }

    pub fn host(&self) -> &TargetHost {
        &self.host
    }

    /// The host as it goes into SNI and the `Host` header (punycode, IPv6 without brackets).
    pub fn host_str(&self) -> String {
        match &self.host {
            TargetHost::Name(name) => name.clone(),
            TargetHost::Ip(ip) => ip.to_string(),
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn is_tls(&self) -> bool {
        self.url.scheme() == "https"
    }

    /// `Host` header value: the host, plus the port when it is not the scheme's default.
    pub fn authority(&self) -> String {
        let host = match &self.host {
            TargetHost::Ip(IpAddr::V6(ip)) => format!("[{ip}]"),
            _ => self.host_str(),
        };
        match self.url.port() {
            Some(port) => format!("{host}:{port}"),
            None => host,
        }
    }

    /// Path and query for the request line.
    pub fn path_and_query(&self) -> String {
        match self.url.query() {
            Some(q) => format!("{}?{q}", self.url.path()),
            None => self.url.path().to_owned(),
        }
    }
}

impl std::fmt::Display for TargetUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.url.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_https_http_idn_and_ipv6() {
        let t = TargetUrl::parse("https://shop.example.com/cart?x=1").unwrap();
        assert_eq!(t.host(), &TargetHost::Name("shop.example.com".into()));
        assert_eq!((t.port(), t.is_tls()), (443, true));
        assert_eq!(t.path_and_query(), "/cart?x=1");
        assert_eq!(t.authority(), "shop.example.com");

        let t = TargetUrl::parse("http://example.com:8080").unwrap();
        assert_eq!((t.port(), t.is_tls(), t.authority()), (8080, false, "example.com:8080".into()));

        let t = TargetUrl::parse("https://bücher.example/").unwrap();
        assert_eq!(t.host_str(), "xn--bcher-kva.example");

        let t = TargetUrl::parse("https://[::1]:8443/").unwrap();
        assert_eq!(t.host(), &TargetHost::Ip("::1".parse().unwrap()));
        assert_eq!(t.authority(), "[::1]:8443");
    }

    #[test]
    fn refuses_what_cannot_be_probed() {
        let long = format!("https://{}.com/", "a.".repeat(130));
        let label = format!("https://{}.com/", "a".repeat(64));
        type Expect = fn(&TargetError) -> bool;
        let cases: &[(&str, Expect)] = &[
            ("not a url", |e| matches!(e, TargetError::Invalid { .. })),
            ("ftp://example.com/", |e| matches!(e, TargetError::Scheme { .. })),
            ("https://example.com:0/", |e| matches!(e, TargetError::PortZero { .. })),
            ("https://", |e| matches!(e, TargetError::EmptyHost { .. })),
            ("https:///", |e| matches!(e, TargetError::EmptyHost { .. })),
            ("https://:443/", |e| matches!(e, TargetError::EmptyHost { .. } | TargetError::Invalid { .. })),
            (&long, |e| matches!(e, TargetError::HostTooLong { .. })),
            (&label, |e| matches!(e, TargetError::LabelTooLong { .. })),
        ];
        for (input, expected) in cases {
            let err = TargetUrl::parse(input).unwrap_err();
            assert!(expected(&err), "{input}: {err:?}");
        }
    }
}
