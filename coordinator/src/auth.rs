//! Who may call what. Agents prove who they are with a client certificate from Vantage's CA; its
//! SAN URI carries their region and name (`vantage_shared::identity`). The admin API takes an
//! admin certificate or a bearer token (an admin token for everything, an optional read token for
//! the read-only calls). Tokens are kept as SHA-256 digests and compared in constant time; they
//! never reach a log or a reply. [`METHODS`] is the one table of who may call what; the gRPC port
//! (`grpc`) enforces it from a call's headers, before any message body is read.

use std::path::Path;

use anyhow::Context;
use tonic::{Request, Status};
use vantage_shared::identity::{self, CertIdentity, Identity};

/// Shortest token accepted: anything shorter could be guessed.
const MIN_TOKEN: usize = 16;

/// What a call needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Read,
    Write,
}

/// Who may call a gRPC method.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    /// Anyone: server reflection, whose messages are tiny and reveal only the public protocol.
    Open,
    /// An agent: with mTLS, a client certificate naming an agent (its hello is checked against
    /// it later); without, anyone (plaintext on loopback).
    Agent,
    /// An admin certificate or a bearer token; the read token only for [`Access::Read`].
    Admin(Access),
}

/// The authorization table: every gRPC method the coordinator serves, by path. A method missing
/// here is refused before it is read, whatever the services behind would do with it.
pub const METHODS: &[(&str, Rule)] = &[
    ("/grpc.reflection.v1.ServerReflection/ServerReflectionInfo", Rule::Open),
    ("/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo", Rule::Open),
    ("/vantage.v1.AgentService/Connect", Rule::Agent),
    ("/vantage.v1.Coordinator/UpsertTarget", Rule::Admin(Access::Write)),
    ("/vantage.v1.Coordinator/DeleteTarget", Rule::Admin(Access::Write)),
    ("/vantage.v1.Coordinator/ListTargets", Rule::Admin(Access::Read)),
    ("/vantage.v1.Coordinator/ListStatus", Rule::Admin(Access::Read)),
    ("/vantage.v1.Coordinator/WatchStatus", Rule::Admin(Access::Read)),
    ("/vantage.v1.Coordinator/GetHistory", Rule::Admin(Access::Read)),
    ("/vantage.v1.Coordinator/CheckNow", Rule::Admin(Access::Write)),
    ("/vantage.v1.Coordinator/ListAgents", Rule::Admin(Access::Read)),
    ("/vantage.v1.Coordinator/ListIncidents", Rule::Admin(Access::Read)),
    ("/vantage.v1.Coordinator/RevokeAgent", Rule::Admin(Access::Write)),
    ("/vantage.v1.Coordinator/ListAlerts", Rule::Admin(Access::Read)),
    ("/vantage.v1.Coordinator/CreateSilence", Rule::Admin(Access::Write)),
    ("/vantage.v1.Coordinator/ListSilences", Rule::Admin(Access::Read)),
    ("/vantage.v1.Coordinator/DeleteSilence", Rule::Admin(Access::Write)),
    ("/vantage.v1.Coordinator/ListRegions", Rule::Admin(Access::Read)),
    ("/vantage.v1.Coordinator/ForgetRegion", Rule::Admin(Access::Write)),
    ("/vantage.v1.Coordinator/GetUptime", Rule::Admin(Access::Read)),
];

/// The rule for a request path (`/package.Service/Method`); `None` means refused.
pub fn rule(path: &str) -> Option<Rule> {
    METHODS.iter().find(|(p, _)| *p == path).map(|(_, rule)| *rule)
}

/// A bearer token, as its digest.
pub struct Token([u8; 32]);

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(…)")
    }
}

fn digest(bytes: &[u8]) -> [u8; 32] {
    let mut out = [0; 32];
    out.copy_from_slice(ring::digest::digest(&ring::digest::SHA256, bytes).as_ref());
    out
}

impl Token {
    pub fn new(secret: &str) -> anyhow::Result<Token> {
        anyhow::ensure!(secret.len() >= MIN_TOKEN, "a token must be at least {MIN_TOKEN} characters");
        anyhow::ensure!(
            secret.bytes().all(|b| b.is_ascii_graphic()),
            "a token may hold only printable ASCII without spaces"
        );
        Ok(Token(digest(secret.as_bytes())))
    }

    /// Reads a token file (surrounding whitespace ignored), warning when others may read it.
    pub fn load(path: &Path) -> anyhow::Result<Token> {
        identity::warn_if_loose(path);
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        Token::new(text.trim()).with_context(|| format!("the token in {}", path.display()))
    }

    /// Constant time: the digests are compared whole, whatever differs first.
    fn matches(&self, presented: &str) -> bool {
        let other = digest(presented.as_bytes());
        self.0.iter().zip(other.iter()).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
    }
}

/// A caller with a client certificate.
pub struct PeerInfo {
    pub addr: String,
    pub cert: CertIdentity,
}

/// The client certificate of a call, read (`None` without TLS or without a certificate). rustls
/// has already verified it against the client CA.
pub fn peer_info<T>(request: &Request<T>) -> Result<Option<PeerInfo>, Status> {
    let Some(certs) = request.peer_certs() else { return Ok(None) };
    let Some(leaf) = certs.first() else { return Ok(None) };
    let cert =
        identity::of_certificate(leaf).map_err(|_| Status::unauthenticated("the client certificate cannot be read"))?;
    let addr = request.remote_addr().map(|a| a.to_string()).unwrap_or_else(|| "?".into());
    Ok(Some(PeerInfo { addr, cert }))
}

/// The admin API's gate.
#[derive(Debug, Default)]
pub struct AdminAuth {
    /// Whether connections are mTLS (admin certificates are then accepted).
    pub mtls: bool,
    pub admin_token: Option<Token>,
    pub read_token: Option<Token>,
}

impl AdminAuth {
    /// Plaintext on loopback without tokens: development and the demo, no credentials needed.
    pub fn is_open(&self) -> bool {
        !self.mtls && self.admin_token.is_none() && self.read_token.is_none()
    }

    /// Lets the call through, or says why not; returns who is calling, for the log.
    /// `revoked` tells whether a certificate (by fingerprint) has been revoked.
    pub fn check<T>(
        &self,
        request: &Request<T>,
        access: Access,
        revoked: impl Fn(&str) -> bool,
    ) -> Result<String, Status> {
        if self.is_open() {
            return Ok("anyone (no credentials configured)".into());
        }
        let peer = peer_info(request)?;
        let authorization = request.metadata().get("authorization").map(|v| v.as_encoded_bytes());
        self.check_credentials(peer.as_ref().map(|p| &p.cert), authorization, access, revoked)
    }

    /// [`check`](Self::check) for the admin API method at `path` (`/package.Service/Method`), with
    /// the access [`METHODS`] declares for it. A method missing from the table, or not declared
    /// an admin method, is refused whatever the call presents (also with no credentials set).
    pub fn check_method<T>(
        &self,
        request: &Request<T>,
        path: &str,
        revoked: impl Fn(&str) -> bool,
    ) -> Result<String, Status> {
        match rule(path) {
            Some(Rule::Admin(access)) => self.check(request, access, revoked),
            _ => Err(Status::permission_denied(format!("{path} is not an admin method in the authorization table"))),
        }
    }

    /// [`check`](Self::check) from what a call presents: its client certificate (read) and its
    /// `authorization` header.
    pub fn check_credentials(
        &self,
        cert: Option<&CertIdentity>,
        authorization: Option<&[u8]>,
        access: Access,
        revoked: impl Fn(&str) -> bool,
    ) -> Result<String, Status> {
        if self.is_open() {
            return Ok("anyone (no credentials configured)".into());
        }
        if let Some(cert) = cert {
            if let Some(Identity::Admin { name }) = &cert.identity {
                if revoked(&cert.sha256_hex) {
                    return Err(Status::permission_denied(format!("the admin certificate of {name} is revoked")));
                }
                return Ok(format!("admin certificate {name}"));
            }
        }
        let Some(token) = bearer(authorization)? else {
            return Err(Status::unauthenticated(
                "this call needs an admin client certificate or an `authorization: Bearer <token>` header",
            ));
        };
        if self.admin_token.as_ref().is_some_and(|t| t.matches(token)) {
            return Ok("admin token".into());
        }
        if self.read_token.as_ref().is_some_and(|t| t.matches(token)) {
            return match access {
                Access::Read => Ok("read token".into()),
                Access::Write => Err(Status::permission_denied("the read-only token cannot change anything")),
            };
        }
        Err(Status::unauthenticated("the bearer token is not valid"))
    }
}

impl AdminAuth {
    /// For the HTTP port under `--http-auth`: the read or admin token, as `Bearer <token>` (what
    /// Prometheus sends with `authorization: credentials_file`) or as the password of HTTP Basic
    /// (what a browser asks for; the user name is not looked at). Says who, or why not.
    pub fn check_http(&self, authorization: Option<&str>) -> Result<&'static str, &'static str> {
        use base64::Engine;
        let Some(value) = authorization else { return Err("credentials needed") };
        let token = match value.trim().split_once(' ') {
            Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => token.trim().to_owned(),
            Some((scheme, encoded)) if scheme.eq_ignore_ascii_case("basic") => {
                let decoded = base64::engine::general_purpose::STANDARD
                    .decode(encoded.trim())
                    .map_err(|_| "the Basic credentials are not base64")?;
                let pair = String::from_utf8(decoded).map_err(|_| "the Basic credentials are not text")?;
                pair.split_once(':')
                    .map(|(_, password)| password.to_owned())
                    .ok_or("the Basic credentials lack a password")?
            }
            _ => return Err("use `Bearer <token>` or HTTP Basic with the token as password"),
        };
        if self.admin_token.as_ref().is_some_and(|t| t.matches(&token)) {
            return Ok("admin token");
        }
        if self.read_token.as_ref().is_some_and(|t| t.matches(&token)) {
            return Ok("read token");
        }
        Err("the token is not valid")
    }
}

fn bearer(value: Option<&[u8]>) -> Result<Option<&str>, Status> {
    let Some(value) = value else { return Ok(None) };
    let value = std::str::from_utf8(value)
        .ok()
        .filter(|v| v.bytes().all(|b| b == b'\t' || (b' '..=b'~').contains(&b)))
        .ok_or_else(|| Status::unauthenticated("the authorization header is not text"))?;
    match value.split_once(' ') {
        Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => Ok(Some(token.trim())),
        _ => Err(Status::unauthenticated("the authorization header must be `Bearer <token>`")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(header: Option<&str>) -> Request<()> {
        let mut request = Request::new(());
        if let Some(h) = header {
            request.metadata_mut().insert("authorization", h.parse().unwrap());
        }
        request
    }

    #[test]
    fn tokens_open_what_they_should_and_nothing_else() {
        let auth = AdminAuth {
            mtls: true,
            admin_token: Some(Token::new("admin-token-0123456789").unwrap()),
            read_token: Some(Token::new("read-token-0123456789").unwrap()),
        };
        let code = |h: Option<&str>, access| auth.check(&call(h), access, |_| false).map_err(|s| s.code());
        assert_eq!(code(None, Access::Read), Err(tonic::Code::Unauthenticated));
        assert!(code(Some("Bearer admin-token-0123456789"), Access::Write).is_ok());
        assert!(code(Some("bearer read-token-0123456789"), Access::Read).is_ok());
        assert_eq!(code(Some("Bearer read-token-0123456789"), Access::Write), Err(tonic::Code::PermissionDenied));
        assert_eq!(code(Some("Bearer admin-token-012345678"), Access::Read), Err(tonic::Code::Unauthenticated));
        assert_eq!(code(Some("Basic YWRtaW4="), Access::Read), Err(tonic::Code::Unauthenticated));
        assert!(Token::new("short").is_err());
        assert_eq!(format!("{:?}", auth.admin_token), "Some(Token(…))");
    }

    #[test]
    fn an_admin_call_gets_the_access_its_row_declares_and_a_method_not_in_the_table_is_refused() {
        let auth = AdminAuth {
            mtls: true,
            admin_token: Some(Token::new("admin-token-0123456789").unwrap()),
            read_token: Some(Token::new("read-token-0123456789").unwrap()),
        };
        let code = |auth: &AdminAuth, path: &str, h: Option<&str>| {
            auth.check_method(&call(h), path, |_| false).map_err(|s| s.code())
        };
        let (read, admin) = (Some("Bearer read-token-0123456789"), Some("Bearer admin-token-0123456789"));
        assert!(code(&auth, "/vantage.v1.Coordinator/ListStatus", read).is_ok());
        assert_eq!(code(&auth, "/vantage.v1.Coordinator/DeleteTarget", read), Err(tonic::Code::PermissionDenied));
        assert!(code(&auth, "/vantage.v1.Coordinator/DeleteTarget", admin).is_ok());
        // Not in the table: refused, even to the admin token and with no credentials configured.
        for path in ["/vantage.v1.Coordinator/Nope", "/vantage.v1.AgentService/Connect", "ListStatus"] {
            assert_eq!(code(&auth, path, admin), Err(tonic::Code::PermissionDenied), "{path}");
            assert_eq!(code(&AdminAuth::default(), path, None), Err(tonic::Code::PermissionDenied), "{path}");
        }
        assert!(code(&AdminAuth::default(), "/vantage.v1.Coordinator/DeleteTarget", None).is_ok());
    }

    #[test]
    fn the_http_port_takes_a_token_as_bearer_or_as_a_basic_password() {
        let auth = AdminAuth { read_token: Some(Token::new("read-token-0123456789").unwrap()), ..Default::default() };
        assert_eq!(auth.check_http(Some("Bearer read-token-0123456789")), Ok("read token"));
        // curl -u ops:read-token-0123456789
        assert_eq!(auth.check_http(Some("Basic b3BzOnJlYWQtdG9rZW4tMDEyMzQ1Njc4OQ==")), Ok("read token"));
        assert!(auth.check_http(None).is_err());
        assert!(auth.check_http(Some("Bearer read-token-012345678")).is_err());
        assert!(auth.check_http(Some("Basic b3BzOndyb25n")).is_err(), "ops:wrong");
        assert!(auth.check_http(Some("Basic %%%")).is_err());
        assert!(auth.check_http(Some("Digest x")).is_err());
    }

    #[test]
    fn plaintext_without_tokens_is_open_and_tokens_close_it() {
        assert!(AdminAuth::default().check(&call(None), Access::Write, |_| false).is_ok());
        let closed =
            AdminAuth { admin_token: Some(Token::new("admin-token-0123456789").unwrap()), ..Default::default() };
        assert!(closed.check(&call(None), Access::Read, |_| false).is_err());
    }
}
