//! Failure codes: the stable identifiers a probe reports, each with its stage, a plain-language
//! cause and a fix hint. Codes may be added; none is renamed or reused.

use serde::{Deserialize, Serialize};

/// A step of the probe pipeline, in the order the probe runs them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    Dns,
    Connect,
    Tls,
    Certificate,
    Http,
}

impl Stage {
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Dns => "dns",
            Stage::Connect => "connect",
            Stage::Tls => "tls",
            Stage::Certificate => "certificate",
            Stage::Http => "http",
        }
    }
}

macro_rules! failure_codes {
    ($( $variant:ident = $code:literal, $stage:ident, $cause:literal, $hint:literal; )*) => {
        /// Why a probe failed. The serialized form (`cert_expired`, …) is a stable contract.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        pub enum FailureCode {
            $( #[serde(rename = $code)] $variant, )*
        }

        impl FailureCode {
            /// Every code, in pipeline order.
            pub const ALL: &'static [FailureCode] = &[$( FailureCode::$variant, )*];

            /// The stable identifier, e.g. `"tcp_refused"`.
            pub fn as_str(self) -> &'static str {
                match self { $( FailureCode::$variant => $code, )* }
            }

            /// The pipeline stage that reports this code.
            pub fn stage(self) -> Stage {
                match self { $( FailureCode::$variant => Stage::$stage, )* }
            }

            /// One sentence saying what went wrong, for a person.
            pub fn cause(self) -> &'static str {
                match self { $( FailureCode::$variant => $cause, )* }
            }

            /// What usually fixes it.
            pub fn hint(self) -> &'static str {
                match self { $( FailureCode::$variant => $hint, )* }
            }

            /// Looks a code up by its stable identifier.
            pub fn from_code(code: &str) -> Option<FailureCode> {
                match code { $( $code => Some(FailureCode::$variant), )* _ => None }
            }
        }
    };
}

failure_codes! {
    DnsNxdomain = "dns_nxdomain", Dns,
        "The name does not exist in DNS (NXDOMAIN).",
        "Check the spelling of the host name and that its zone is delegated and published; a recently deleted or expired domain also answers NXDOMAIN.";
    DnsNoRecords = "dns_no_records", Dns,
        "The name exists in DNS but has no A or AAAA record.",
        "Add an A and/or AAAA record for the host, or fix the CNAME it points to.";
    DnsTimeout = "dns_timeout", Dns,
        "No DNS server answered in time.",
        "Check that the resolvers are reachable from this network and that the zone's authoritative servers respond.";
    DnsError = "dns_error", Dns,
        "The DNS server answered with an error (SERVFAIL, REFUSED or similar).",
        "Query the authoritative servers directly (dig +trace); SERVFAIL often means broken DNSSEC or a lame delegation, REFUSED a resolver that does not serve this client.";
    DnsUnexpectedAddress = "dns_unexpected_address", Dns,
        "The name resolves to an address that is not one of the expected addresses.",
        "Check the DNS record for a wrong or stale value (an old server, a hijacked record), or update the expected addresses if the move was intended.";
    TargetDenied = "target_denied", Dns,
        "The target (or a redirect it sent) resolves to an address this agent must not reach, such as a cloud metadata endpoint; no connection was made.",
        "Point the target at a public address; if this address really is meant to be probed from this agent, lift it with --allow-network CIDR (link-local and metadata addresses are denied by default because they hand out the instance's credentials).";
    TcpRefused = "tcp_refused", Connect,
        "The server refused the TCP connection: nothing is listening on that port.",
        "Start the web server or load balancer listener, or fix the port; a firewall that rejects (rather than drops) also looks like this.";
    TcpTimeout = "tcp_timeout", Connect,
        "The TCP connection was not answered in time.",
        "A firewall or security group is probably dropping traffic to this port, or the host is down or overloaded.";
    TcpUnreachable = "tcp_unreachable", Connect,
        "The address cannot be reached: there is no route to the host or network.",
        "Check routing and the address itself (a private or decommissioned IP in public DNS), and whether the host is up.";
    TlsHandshakeTimeout = "tls_handshake_timeout", Tls,
        "The TCP connection opened but the TLS handshake did not complete in time.",
        "The server accepted the connection but is not answering TLS: check that it is the TLS port and that the server is not overloaded or stuck.";
    TlsProtocolVersion = "tls_protocol_version", Tls,
        "The server and the probe have no TLS version in common (the probe speaks TLS 1.2 and 1.3).",
        "Enable TLS 1.2 and TLS 1.3 on the server; TLS 1.0 and 1.1 are obsolete and refused by current browsers.";
    TlsHandshakeFailed = "tls_handshake_failed", Tls,
        "The TLS handshake failed: the server sent an alert, offered no common cipher, or did not speak TLS.",
        "Check the server's TLS configuration (certificate and key loaded, modern cipher suites, SNI for this host name) and that the port serves TLS, not plain HTTP.";
    CertExpired = "cert_expired", Certificate,
        "A certificate in the served chain has expired.",
        "Renew the certificate (or the expired intermediate), install it and reload the web server; then check why automatic renewal did not happen.";
    CertNotYetValid = "cert_not_yet_valid", Certificate,
        "The served certificate is not valid yet.",
        "Check the server's clock and the certificate's start date; a certificate issued with a future start date must not be deployed early.";
    CertHostnameMismatch = "cert_hostname_mismatch", Certificate,
        "The certificate does not cover this host name.",
        "Serve a certificate whose subject alternative names include this host (a wildcard covers exactly one label), or fix the SNI/virtual-host configuration that picks the wrong certificate.";
    CertSelfSigned = "cert_self_signed", Certificate,
        "The server sent a self-signed certificate that nobody trusts.",
        "Install a certificate issued by a public CA (for example Let's Encrypt), or give the probe the private CA with --ca-file.";
    CertUntrustedRoot = "cert_untrusted_root", Certificate,
        "The certificate chains to a root CA that is not trusted.",
        "Use a certificate from a publicly trusted CA, or add the private root to the trust store with --ca-file if this is an internal service.";
    CertChainIncomplete = "cert_chain_incomplete", Certificate,
        "The certificate's issuer was neither served nor trusted: an intermediate certificate is probably missing.",
        "Serve the full chain (the leaf followed by its intermediates, e.g. fullchain.pem rather than cert.pem); if the CA is private, add its root with --ca-file.";
    CertInvalid = "cert_invalid", Certificate,
        "The certificate is invalid: a bad signature, a key usage that does not allow serving TLS, or malformed data.",
        "Reissue the certificate for TLS server authentication and check that the served chain belongs together.";
    CertNotReloaded = "cert_not_reloaded", Certificate,
        "The server still serves an older certificate than the one renewed on disk: it was not reloaded.",
        "Reload or restart the web server so it loads the renewed certificate, then check the renewal's deploy hook (certbot --deploy-hook, say) so the next renewal reloads it too.";
    CertPinMismatch = "cert_pin_mismatch", Certificate,
        "The served certificate matches none of the pinned SHA-256 hashes (of the certificate or of its public key).",
        "The certificate or its key changed: if the change was expected, update the pin (a public-key pin survives renewals that keep the key); if not, find out what is serving this name.";
    Http5xx = "http_5xx", Http,
        "The server answered with a 5xx server error.",
        "Look at the application and upstream logs: the web server is reachable but the application behind it is failing.";
    HttpUnexpectedStatus = "http_unexpected_status", Http,
        "The server answered with a status code that was not expected.",
        "Check the URL and the application's routing, or adjust the expected status codes if this answer is correct.";
    HttpTooManyRedirects = "http_too_many_redirects", Http,
        "The server kept redirecting past the redirect limit (a redirect loop, most likely).",
        "Follow the Location headers with curl -IL and fix the loop, often between HTTP/HTTPS or www/apex rules or a proxy that hides the original scheme.";
    HttpTimeout = "http_timeout", Http,
        "The server completed the TLS handshake but did not send an HTTP response in time.",
        "The application or an upstream it waits on is hanging; check its workers, database and upstream timeouts.";
    HttpProtocolError = "http_protocol_error", Http,
        "The server's HTTP response was malformed or exceeded the probe's limits.",
        "Check what sits in front of the application (proxies, WAF) for broken or oversized responses, such as huge headers or cookies.";
    HttpBodyMismatch = "http_body_mismatch", Http,
        "The response body does not contain the expected text.",
        "The server answers, but not with the expected page: check for error pages served with a success status, maintenance pages or a wrong backend.";
}

impl std::fmt::Display for FailureCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A classified failure: the stable code plus what exactly was seen.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    pub stage: Stage,
    pub code: FailureCode,
    /// The plain-language cause.
    pub message: String,
    /// How to fix it.
    pub hint: String,
    /// The specifics: which address, which certificate, which status.
    pub detail: String,
}

impl Failure {
    pub fn new(code: FailureCode, detail: impl Into<String>) -> Failure {
        Failure {
            stage: code.stage(),
            code,
            message: code.cause().to_owned(),
            hint: code.hint().to_owned(),
            detail: detail.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_and_read_as_sentences() {
        for &code in FailureCode::ALL {
            assert_eq!(FailureCode::from_code(code.as_str()), Some(code));
            let json = serde_json::to_string(&code).unwrap();
            assert_eq!(json, format!("\"{}\"", code.as_str()));
            // target_denied is found while resolving but names what was denied, not a DNS fault.
            assert!(
                code == FailureCode::TargetDenied
                    || code.as_str().starts_with(match code.stage() {
                        Stage::Dns => "dns_",
                        Stage::Connect => "tcp_",
                        Stage::Tls => "tls_",
                        Stage::Certificate => "cert_",
                        Stage::Http => "http_",
                    })
            );
            assert!(code.cause().ends_with('.') && code.hint().ends_with('.'), "{code}");
        }
    }

    #[test]
    fn readme_documents_every_code() {
        let readme = include_str!("../../README.md");
        for code in FailureCode::ALL {
            let row = format!("| `{code}` | {} | {} | {} |", code.stage().as_str(), code.cause(), code.hint());
            assert!(readme.contains(&row), "README.md lacks the row {row}");
        }
    }

    #[test]
    fn codes_are_unique() {
        let mut seen = std::collections::HashSet::new();
        for code in FailureCode::ALL {
            assert!(seen.insert(code.as_str()), "{code} twice");
        }
    }
}
