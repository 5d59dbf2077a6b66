//! The gRPC port: its own accept loop (TLS with tokio-rustls, a connection cap, HTTP/2 limits
//! from hyper) in front of the tonic services, and the gate that checks each call's credentials
//! against `auth::METHODS` from its headers alone. A call without them is answered
//! `UNAUTHENTICATED` (trailers only) before any of its body is read, so a peer without a
//! credential cannot make the coordinator buffer a message; a connection without a client
//! certificate that has made no authenticated call within the grace period is closed.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::task::Poll;
use std::time::Duration;

use anyhow::Context;
use hyper::body::{Bytes, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tonic::Status;
use tonic::codegen::Service;
use tonic::service::Routes;
use tonic::transport::server::Connected;
use vantage_shared::identity::{self, CertIdentity, Identity};

use crate::auth::{AdminAuth, Rule};
use crate::conn::{Cap, Closed, Port, Slot, Stats};

/// Default of `--max-connections`.
pub const DEFAULT_MAX_CONNECTIONS: usize = 1024;
/// Default of `--max-streams-per-connection`: an agent needs one, the CLI a few.
pub const DEFAULT_MAX_STREAMS: u32 = 100;
/// Default of `--unauthenticated-timeout`.
pub const DEFAULT_UNAUTHENTICATED_TIMEOUT: Duration = Duration::from_secs(10);
/// Default of `--max-header-list-size`: tokens, trace context and gRPC's own headers are far
/// smaller.
pub const DEFAULT_MAX_HEADER_LIST: u32 = 16 << 10;
/// How much a peer may send on one stream before the coordinator has read it: a stalled
/// message holds at most this much (a full 4 MiB batch still streams through, as it is read).
pub const STREAM_WINDOW: u32 = 256 << 10;
/// How much a peer may send on a whole connection before the coordinator has read it.
pub const CONNECTION_WINDOW: u32 = 512 << 10;
/// Largest server reflection request: a symbol or file name.
pub const MAX_REFLECTION_MESSAGE: usize = 4 << 10;
/// With mTLS, reflection calls open at once on a connection without a credential (grpcurl makes
/// one): what such a peer can make the coordinator hold stays a few KiB per connection.
pub const MAX_OPEN_CALLS: usize = 2;
/// How long a TLS handshake may take.
pub const TLS_HANDSHAKE: Duration = Duration::from_secs(10);
/// HTTP/2 pings on an idle connection, and how long an answer may take.
const KEEPALIVE: Duration = Duration::from_secs(20);

/// The gRPC port's limits (flags of `serve`).
#[derive(Debug, Clone)]
pub struct Limits {
    pub max_connections: usize,
    pub max_streams: u32,
    /// With mTLS, how long a connection without a client certificate may stay open without an
    /// authenticated call.
    pub unauthenticated_timeout: Duration,
    pub max_header_list: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_streams: DEFAULT_MAX_STREAMS,
            unauthenticated_timeout: DEFAULT_UNAUTHENTICATED_TIMEOUT,
            max_header_list: DEFAULT_MAX_HEADER_LIST,
        }
    }
}

/// The TLS side of the port: the coordinator's certificate, client certificates from `client_ca`
/// verified when presented (admins may come with a token instead), ALPN h2.
pub fn tls_acceptor(
    cert: &std::path::Path,
    key: &std::path::Path,
    client_ca: &std::path::Path,
) -> anyhow::Result<TlsAcceptor> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .and_then(Iterator::collect)
        .with_context(|| format!("reading the certificates in {}", cert.display()))?;
    anyhow::ensure!(!chain.is_empty(), "{} holds no certificate", cert.display());
    let key = PrivateKeyDer::from_pem_file(key).with_context(|| format!("reading the key in {}", key.display()))?;
    let mut roots = rustls::RootCertStore::empty();
    let cas: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(client_ca)
        .and_then(Iterator::collect)
        .with_context(|| format!("reading the certificates in {}", client_ca.display()))?;
    anyhow::ensure!(!cas.is_empty(), "{} holds no certificate", client_ca.display());
    for ca in cas {
        roots.add(ca).with_context(|| format!("a CA certificate in {}", client_ca.display()))?;
    }
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .allow_unauthenticated()
        .build()
        .context("the client certificate verifier")?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("the TLS versions")?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .with_context(|| format!("the certificate {} and its key", cert.display()))?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// Checks calls against the authorization table from their headers.
#[derive(Clone)]
pub struct Gate {
    pub auth: Arc<AdminAuth>,
    /// Whether a certificate (by fingerprint) has been revoked.
    pub revoked: Arc<dyn Fn(&str) -> bool + Send + Sync>,
}

/// What the gate knows of a connection.
struct Connection {
    /// The client certificate, read (`Err` when it cannot be); `None` without one.
    cert: Option<Result<CertIdentity, String>>,
    /// Whether a call with a credential has been let through.
    authenticated: AtomicBool,
    /// Calls open now that needed no credential.
    open_calls: AtomicUsize,
}

impl Connection {
    fn new(cert: Option<Result<CertIdentity, String>>) -> Connection {
        Connection { cert, authenticated: AtomicBool::new(false), open_calls: AtomicUsize::new(0) }
    }
}

/// A call let through.
struct Admitted {
    /// It carried a credential.
    credential: bool,
    /// For a call that needed none on a connection without one: its place among
    /// [`MAX_OPEN_CALLS`], given back when its answer is done.
    place: Option<OpenCall>,
}

struct OpenCall(Arc<Connection>);

impl Drop for OpenCall {
    fn drop(&mut self) {
        self.0.open_calls.fetch_sub(1, Ordering::Relaxed);
    }
}

/// An answer's body that holds its call's place until hyper is done with it.
struct Holding {
    body: tonic::body::Body,
    _place: OpenCall,
}

impl hyper::body::Body for Holding {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Bytes>, Status>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.body.size_hint()
    }
}

impl Gate {
    /// Lets a call through, or says why not.
    fn admit(&self, path: &str, headers: &hyper::HeaderMap, connection: &Arc<Connection>) -> Result<Admitted, Status> {
        let credential = self.credential(path, headers, connection)?;
        let unproven = self.auth.mtls
            && connection.cert.is_none()
            && !credential
            && !connection.authenticated.load(Ordering::Relaxed);
        if !unproven {
            return Ok(Admitted { credential, place: None });
        }
        if connection.open_calls.fetch_add(1, Ordering::Relaxed) >= MAX_OPEN_CALLS {
            connection.open_calls.fetch_sub(1, Ordering::Relaxed);
            return Err(Status::resource_exhausted(format!(
                "at most {MAX_OPEN_CALLS} calls at once on a connection without a credential"
            )));
        }
        Ok(Admitted { credential, place: Some(OpenCall(connection.clone())) })
    }

    /// Checks a call against the table: whether it carried a credential, or why it may not pass.
    fn credential(&self, path: &str, headers: &hyper::HeaderMap, connection: &Connection) -> Result<bool, Status> {
        let Some(rule) = crate::auth::rule(path) else {
            return Err(Status::unimplemented(format!("{path} is not a method of this coordinator")));
        };
        let cert = match &connection.cert {
            Some(Err(_)) if rule != Rule::Open => {
                return Err(Status::unauthenticated("the client certificate cannot be read"));
            }
            Some(Ok(cert)) => Some(cert),
            _ => None,
        };
        match rule {
            Rule::Open => Ok(false),
            // Without mTLS an agent is who its hello says (plaintext on loopback only).
            Rule::Agent if !self.auth.mtls => Ok(false),
            Rule::Agent => match cert.map(|c| (&c.identity, c)) {
                // A revoked certificate is no credential: refused here, before its hello is read.
                Some((Some(Identity::Agent { region, name }), c)) if (self.revoked)(&c.sha256_hex) => {
                    Err(Status::permission_denied(format!("the certificate of agent {name} ({region}) is revoked")))
                }
                Some((Some(Identity::Agent { .. }), _)) => Ok(true),
                Some(_) => Err(Status::permission_denied("the client certificate is not an agent certificate")),
                None => {
                    Err(Status::unauthenticated("agents must present a client certificate (see `pki issue-agent`)"))
                }
            },
            Rule::Admin(access) => {
                let authorization = headers.get(hyper::header::AUTHORIZATION).map(|v| v.as_bytes());
                self.auth.check_credentials(cert, authorization, access, |sha| (self.revoked)(sha))?;
                Ok(!self.auth.is_open())
            }
        }
    }
}

/// A trailers-only gRPC answer.
fn refusal(status: Status) -> hyper::Response<tonic::body::Body> {
    let (parts, ()) = status.into_http::<()>().into_parts();
    hyper::Response::from_parts(parts, tonic::body::Body::empty())
}

/// Serves the port until `shutdown` turns true; then stops accepting, asks every connection to
/// finish (HTTP/2 GOAWAY) and waits for them. Dropping the future closes every connection.
#[allow(clippy::too_many_arguments)]
pub async fn serve(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    routes: Routes,
    gate: Gate,
    limits: Limits,
    stats: Arc<Stats>,
    mut shutdown: watch::Receiver<bool>,
) {
    let cap = Cap::new(Port::Grpc, limits.max_connections, stats.clone());
    let mut http2 = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
    http2
        .timer(TokioTimer::new())
        .max_concurrent_streams(limits.max_streams)
        .max_header_list_size(limits.max_header_list)
        .initial_stream_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .keep_alive_interval(KEEPALIVE)
        .keep_alive_timeout(KEEPALIVE);
    let server = Arc::new(Server { tls, routes: routes.prepare(), gate, limits, stats, http2 });
    let mut connections = JoinSet::new();
    let mut last_error = None;
    loop {
        while connections.try_join_next().is_some() {}
        let tcp = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((tcp, _)) => tcp,
                Err(e) => {
                    crate::conn::accept_failed(Port::Grpc, e, &mut last_error).await;
                    continue;
                }
            },
            _ = stopping(&mut shutdown) => break,
        };
        // Beyond the cap the connection is dropped, which closes it.
        let Some(slot) = cap.admit() else { continue };
        connections.spawn(server.clone().connection(tcp, slot, shutdown.clone()));
    }
    drop(listener);
    while connections.join_next().await.is_some() {}
}

/// Until the coordinator shuts down (forever if it cannot any more).
async fn stopping(shutdown: &mut watch::Receiver<bool>) {
    if shutdown.wait_for(|stop| *stop).await.is_err() {
        std::future::pending::<()>().await;
    }
}

struct Server {
    tls: Option<TlsAcceptor>,
    routes: Routes,
    gate: Gate,
    limits: Limits,
    stats: Arc<Stats>,
    http2: hyper::server::conn::http2::Builder<TokioExecutor>,
}

impl Server {
    async fn connection(self: Arc<Self>, tcp: TcpStream, slot: Slot, shutdown: watch::Receiver<bool>) {
        let _slot = slot;
        let _ = tcp.set_nodelay(true);
        let Some(tls) = &self.tls else {
            let info = tcp.connect_info();
            let connection = Connection::new(None);
            return self.http2(tcp, info, connection, None, shutdown).await;
        };
        let stream = match tokio::time::timeout(TLS_HANDSHAKE, tls.accept(tcp)).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(e)) => {
                let detail = format!("connection closed: the TLS handshake failed: {e}");
                return self.stats.count_closed(Port::Grpc, Closed::TlsHandshake, &detail);
            }
            Err(_) => {
                let detail = format!("connection closed: no TLS handshake within {}s", TLS_HANDSHAKE.as_secs());
                return self.stats.count_closed(Port::Grpc, Closed::TlsHandshake, &detail);
            }
        };
        let info = stream.connect_info();
        let cert = info.peer_certs().and_then(|certs| certs.first().map(|leaf| identity::of_certificate(leaf)));
        // Only a connection without a certificate has to earn its place with a credential.
        let grace = cert.is_none().then_some(self.limits.unauthenticated_timeout);
        let connection = Connection::new(cert);
        self.http2(stream, info, connection, grace, shutdown).await;
    }

    /// Serves HTTP/2 on an established connection; `info` (tonic's connect info) goes into every
    /// request, where `Request::peer_certs` and `remote_addr` find it.
    async fn http2<IO, I>(
        self: &Arc<Self>,
        io: IO,
        info: I,
        connection: Connection,
        grace: Option<Duration>,
        mut shutdown: watch::Receiver<bool>,
    ) where
        IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
        I: Clone + Send + Sync + 'static,
    {
        let connection = Arc::new(connection);
        let server = self.clone();
        let state = connection.clone();
        let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
            let (server, state, info) = (server.clone(), state.clone(), info.clone());
            async move {
                match server.gate.admit(request.uri().path(), request.headers(), &state) {
                    Err(status) => {
                        // The request, and with it its body, is dropped unread: hyper resets
                        // the stream, and whatever the peer still sends is discarded.
                        server.stats.count_refused_call(status.code());
                        Ok::<_, Infallible>(refusal(status))
                    }
                    Ok(admitted) => {
                        if admitted.credential {
                            state.authenticated.store(true, Ordering::Relaxed);
                        }
                        request.extensions_mut().insert(info);
                        let mut routes = server.routes.clone();
                        std::future::poll_fn(|cx| {
                            Service::<hyper::Request<tonic::body::Body>>::poll_ready(&mut routes, cx)
                        })
                        .await?;
                        let response = routes.call(request.map(tonic::body::Body::new)).await?;
                        Ok(match admitted.place {
                            Some(place) => response.map(|body| tonic::body::Body::new(Holding { body, _place: place })),
                            None => response,
                        })
                    }
                }
            }
        });
        let serving = self.http2.serve_connection(TokioIo::new(io), service);
        tokio::pin!(serving);
        let mut deadline = grace.map(|grace| Box::pin(tokio::time::sleep(grace)));
        let mut closing = false;
        loop {
            tokio::select! {
                ended = serving.as_mut() => {
                    if let Err(e) = ended {
                        tracing::debug!(error = %e, "gRPC connection ended");
                    }
                    return;
                }
                _ = async {
                    match deadline.as_mut() {
                        Some(deadline) => deadline.await,
                        None => std::future::pending().await,
                    }
                }, if deadline.is_some() => {
                    if connection.authenticated.load(Ordering::Relaxed) {
                        deadline = None;
                        continue;
                    }
                    let detail = format!(
                        "connection closed: no client certificate and no authenticated call within {}s",
                        self.limits.unauthenticated_timeout.as_secs()
                    );
                    // Dropping the connection closes it: the peer had its chance.
                    return self.stats.count_closed(Port::Grpc, Closed::Unauthenticated, &detail);
                }
                _ = stopping(&mut shutdown), if !closing => {
                    closing = true;
                    serving.as_mut().graceful_shutdown();
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::{Access, Token};

    fn connection(cert: Option<Identity>) -> Connection {
        let cert = cert
            .map(|identity| Ok(CertIdentity { identity: Some(identity), not_after_unix: 0, sha256_hex: "ab".into() }));
        Connection::new(cert)
    }

    fn gate(mtls: bool) -> Gate {
        let auth = AdminAuth {
            mtls,
            admin_token: Some(Token::new("admin-token-0123456789").unwrap()),
            read_token: Some(Token::new("read-token-0123456789").unwrap()),
        };
        Gate { auth: Arc::new(auth), revoked: Arc::new(|_| false) }
    }

    fn headers(authorization: Option<&str>) -> hyper::HeaderMap {
        let mut map = hyper::HeaderMap::new();
        if let Some(value) = authorization {
            map.insert(hyper::header::AUTHORIZATION, value.parse().unwrap());
        }
        map
    }

    #[test]
    fn the_gate_follows_the_table_from_headers_alone() {
        let gate = gate(true);
        let agent = Identity::Agent { region: "eu".into(), name: "a".into() };
        let admin = Identity::Admin { name: "ops".into() };
        let code = |path: &str, cert: Option<Identity>, auth: Option<&str>| {
            gate.admit(path, &headers(auth), &Arc::new(connection(cert))).map(|a| a.credential).map_err(|s| s.code())
        };
        let connect = "/vantage.v1.AgentService/Connect";
        assert_eq!(code(connect, Some(agent.clone()), None), Ok(true));
        assert_eq!(code(connect, None, None), Err(tonic::Code::Unauthenticated));
        assert_eq!(code(connect, None, Some("Bearer admin-token-0123456789")), Err(tonic::Code::Unauthenticated));
        assert_eq!(code(connect, Some(admin.clone()), None), Err(tonic::Code::PermissionDenied));

        let upsert = "/vantage.v1.Coordinator/UpsertTarget";
        assert_eq!(code(upsert, None, None), Err(tonic::Code::Unauthenticated));
        assert_eq!(code(upsert, Some(agent.clone()), None), Err(tonic::Code::Unauthenticated));
        assert_eq!(code(upsert, None, Some("Bearer wrong-token-0123456789")), Err(tonic::Code::Unauthenticated));
        assert_eq!(code(upsert, None, Some("Bearer read-token-0123456789")), Err(tonic::Code::PermissionDenied));
        assert_eq!(code(upsert, None, Some("Bearer admin-token-0123456789")), Ok(true));
        assert_eq!(code(upsert, Some(admin), None), Ok(true));
        assert_eq!(code("/vantage.v1.Coordinator/ListStatus", None, Some("Bearer read-token-0123456789")), Ok(true));

        let reflection = "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo";
        assert_eq!(code(reflection, None, None), Ok(false), "reflection is open but earns no credential");
        assert_eq!(code("/vantage.v1.Coordinator/Nope", None, None), Err(tonic::Code::Unimplemented));
        assert_eq!(code("/", Some(agent), None), Err(tonic::Code::Unimplemented));
        let unreadable = Arc::new(Connection::new(Some(Err("bad".into()))));
        let refused = gate.admit(upsert, &headers(Some("Bearer admin-token-0123456789")), &unreadable);
        assert_eq!(refused.map(|a| a.credential).map_err(|s| s.code()), Err(tonic::Code::Unauthenticated));
    }

    #[test]
    fn a_revoked_agent_certificate_is_refused_before_its_hello_is_read() {
        let gate = Gate { revoked: Arc::new(|sha: &str| sha == "ab"), ..gate(true) };
        let agent = Identity::Agent { region: "eu".into(), name: "a".into() };
        let refused =
            gate.admit("/vantage.v1.AgentService/Connect", &headers(None), &Arc::new(connection(Some(agent))));
        let status = refused.err().expect("a revoked certificate is no credential");
        assert_eq!(status.code(), tonic::Code::PermissionDenied);
        assert_eq!(status.message(), "the certificate of agent a (eu) is revoked");
    }

    #[test]
    fn without_mtls_agents_pass_and_the_admin_api_wants_its_token_if_one_is_set() {
        let gate = gate(false);
        let code = |path: &str, auth: Option<&str>| {
            gate.admit(path, &headers(auth), &Arc::new(connection(None))).map(|a| a.credential).map_err(|s| s.code())
        };
        assert_eq!(code("/vantage.v1.AgentService/Connect", None), Ok(false));
        assert_eq!(code("/vantage.v1.Coordinator/ListTargets", None), Err(tonic::Code::Unauthenticated));
        assert_eq!(code("/vantage.v1.Coordinator/ListTargets", Some("Bearer read-token-0123456789")), Ok(true));
        let open = Gate { auth: Arc::new(AdminAuth::default()), revoked: Arc::new(|_| false) };
        let admitted = open.admit("/vantage.v1.Coordinator/DeleteTarget", &headers(None), &Arc::new(connection(None)));
        assert_eq!(admitted.map(|a| a.credential).map_err(|s| s.code()), Ok(false));
    }

    #[test]
    fn a_connection_without_a_credential_holds_few_open_calls_until_it_shows_one() {
        let gate = gate(true);
        let reflection = "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo";
        let bare = Arc::new(connection(None));
        let held: Vec<Admitted> =
            (0..MAX_OPEN_CALLS).map(|_| gate.admit(reflection, &headers(None), &bare).unwrap()).collect();
        let refused = gate.admit(reflection, &headers(None), &bare).map(|_| ()).map_err(|s| s.code());
        assert_eq!(refused, Err(tonic::Code::ResourceExhausted));
        drop(held);
        let again = gate.admit(reflection, &headers(None), &bare).expect("places are given back");
        // A certificate, or a token call on the connection, lifts the limit.
        let agent = Arc::new(connection(Some(Identity::Agent { region: "eu".into(), name: "a".into() })));
        let many: Vec<Admitted> = (0..10).map(|_| gate.admit(reflection, &headers(None), &agent).unwrap()).collect();
        assert!(many.iter().all(|a| a.place.is_none()));
        let token =
            gate.admit("/vantage.v1.Coordinator/ListAgents", &headers(Some("Bearer read-token-0123456789")), &bare);
        assert!(token.unwrap().credential);
        bare.authenticated.store(true, Ordering::Relaxed);
        assert!(gate.admit(reflection, &headers(None), &bare).unwrap().place.is_none());
        drop(again);
        assert_eq!(bare.open_calls.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn every_served_method_is_in_the_table() {
        use prost::Message;
        let set = prost_types::FileDescriptorSet::decode(vantage_proto::FILE_DESCRIPTOR_SET).unwrap();
        let mut served = 0;
        for file in &set.file {
            for service in &file.service {
                for method in &service.method {
                    let path = format!("/{}.{}/{}", file.package(), service.name(), method.name());
                    assert!(crate::auth::rule(&path).is_some(), "{path} is missing from auth::METHODS");
                    served += 1;
                }
            }
        }
        assert!(served > 10, "{served} methods");
        assert_eq!(crate::auth::rule("/vantage.v1.Coordinator/DeleteTarget"), Some(Rule::Admin(Access::Write)));
    }
}
