//! The lab's servers: real TLS (rustls) and plain HTTP listeners on loopback, and hostile peers
//! that stall, trickle, lie about TLS, or flood headers, bodies and bytes.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Condvar, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use rustls::ServerConfig;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;

use super::gzip::GzipBomb;
use super::pki::Identity;

/// How an HTTP server answers every request.
#[derive(Debug, Clone)]
pub enum Reply {
    /// This status and body for every path.
    Page { status: u16, body: &'static str },
    /// `302` to `/landing` for `/`, `200` for every other path.
    RedirectOnce,
    /// `302` to this absolute URL for `/`.
    RedirectTo(String),
    /// `302` to a new path for every path, forever.
    RedirectLoop,
    /// Never answers (the connection stays open).
    Stall,
    /// A status line followed by this many bytes of headers.
    HugeHeaders(usize),
    /// A status line followed by this many one-line headers (`a: b`).
    ManyHeaders(usize),
    /// A 200 whose body never ends: chunked, or under a 1 TiB `Content-Length`.
    EndlessBody { chunked: bool },
    /// A 200 with `Content-Encoding: gzip` whatever the request asked, whose body inflates to
    /// gigabytes; each connection's count of body bytes sent goes to the tally.
    GzipBomb(GzipBomb, Tally),
    /// Slowloris in reverse: the response head one byte at a time, this far apart, never ending.
    Trickle(Duration),
    /// Bytes that are not HTTP at all.
    Garbage,
    /// A half-broken backend: `500` to a share of the requests, chosen by a seeded generator, and
    /// `200` to the rest.
    Flaky(Dice),
}

/// The seeded die a [`Reply::Flaky`] server throws per request (shared by its connections).
#[derive(Debug, Clone)]
pub struct Dice {
    failing_percent: u64,
    state: Arc<Mutex<XorShift>>,
}

impl Dice {
    /// Fails about `failing_percent` of the requests; the same `seed` throws the same sequence.
    pub fn new(failing_percent: u8, seed: u64) -> Dice {
        Dice { failing_percent: u64::from(failing_percent.min(100)), state: Arc::new(Mutex::new(XorShift(seed | 1))) }
    }

    fn fails(&self) -> bool {
        let mut bytes = [0u8; 8];
        self.state.lock().expect("dice").fill(&mut bytes);
        u64::from_le_bytes(bytes) % 100 < self.failing_percent
    }
}

/// Misbehaviour before any TLS is spoken.
#[derive(Debug, Clone, Copy)]
pub enum Hostile {
    /// Accepts TCP, then says nothing.
    StallAfterAccept,
    /// Answers the ClientHello with a `protocol_version` alert, as a server whose oldest
    /// version is newer than the client's does.
    ProtocolVersionAlert,
    /// Answers the ClientHello with a TLS 1.0 ServerHello, as a TLS 1.0-only server does.
    Tls10ServerHello,
    /// Answers the ClientHello with a plain-text HTTP error, as a non-TLS port does.
    NotTls,
    /// Answers the ClientHello with pseudo-random bytes, without end.
    RandomBytes,
    /// Answers the ClientHello with a well-framed TLS 1.2 ServerHello record whose contents are
    /// pseudo-random.
    RandomServerHello,
}

/// A rustls server config serving `identity`, speaking HTTP/1.1.
pub fn server_config(identity: &Identity) -> Arc<ServerConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("ring supports the default TLS versions")
        .with_no_client_auth()
        .with_single_cert(identity.chain.clone(), identity.key.clone_key())
        .expect("lab certificates are well formed");
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(config)
}

/// A rustls server config serving `identity`'s chain as is, unchecked: the leaf need not even
/// parse (rustls checks the key against the leaf only in `with_single_cert`).
pub fn server_config_unchecked(identity: &Identity) -> Arc<ServerConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let key = provider.key_provider.load_private_key(identity.key.clone_key()).expect("lab keys are well formed");
    let certified = rustls::sign::CertifiedKey::new(identity.chain.clone(), key);
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("ring supports the default TLS versions")
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(rustls::sign::SingleCertAndKey::from(certified)));
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(config)
}

pub async fn serve_tls(listener: TcpListener, config: Arc<ServerConfig>, reply: Reply) {
    let acceptor = TlsAcceptor::from(config);
    loop {
        let Ok((tcp, _)) = accept(&listener).await else { continue };
        // As web servers do on keep-alive connections: small responses go out at once.
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let reply = reply.clone();
        tokio::spawn(async move {
            if let Ok(Ok(tls)) = tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await {
                respond(tls, &reply).await;
            }
        });
    }
}

pub async fn serve_plain(listener: TcpListener, reply: Reply) {
    loop {
        let Ok((tcp, _)) = accept(&listener).await else { continue };
        let _ = tcp.set_nodelay(true);
        let reply = reply.clone();
        tokio::spawn(async move { respond(tcp, &reply).await });
    }
}

pub async fn serve_hostile(listener: TcpListener, hostile: Hostile) {
    loop {
        let Ok((mut tcp, _)) = accept(&listener).await else { continue };
        tokio::spawn(async move {
            let mut hello = [0u8; 4096];
            match hostile {
                Hostile::StallAfterAccept => {
                    // Say nothing; notice when the client gives up, so nothing leaks.
                    while matches!(tcp.read(&mut hello).await, Ok(n) if n > 0) {}
                }
                Hostile::ProtocolVersionAlert => {
                    let _ = tcp.read(&mut hello).await;
                    // TLS record: alert, version 3.1, length 2, fatal(2) protocol_version(70).
                    let _ = tcp.write_all(&[0x15, 0x03, 0x01, 0x00, 0x02, 0x02, 0x46]).await;
                }
                Hostile::Tls10ServerHello => {
                    let _ = tcp.read(&mut hello).await;
                    // Handshake record (TLS 1.0): ServerHello, version 3.1, a fixed random, no
                    // session id, TLS_RSA_WITH_AES_128_CBC_SHA, no compression, no extensions.
                    let mut record = vec![0x16, 0x03, 0x01, 0x00, 0x2a, 0x02, 0x00, 0x00, 0x26, 0x03, 0x01];
                    record.extend_from_slice(&[0x42; 32]);
                    record.extend_from_slice(&[0x00, 0x00, 0x2f, 0x00]);
                    let _ = tcp.write_all(&record).await;
                    while matches!(tcp.read(&mut hello).await, Ok(n) if n > 0) {}
                }
                Hostile::NotTls => {
                    let _ = tcp.read(&mut hello).await;
                    let _ = tcp.write_all(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n").await;
                }
                Hostile::RandomBytes => {
                    let _ = tcp.read(&mut hello).await;
                    let mut random = XorShift(0x9e37_79b9_7f4a_7c15);
                    let mut chunk = [0u8; 16 * 1024];
                    loop {
                        random.fill(&mut chunk);
                        if tcp.write_all(&chunk).await.is_err() {
                            break;
                        }
                    }
                }
                Hostile::RandomServerHello => {
                    let _ = tcp.read(&mut hello).await;
                    // Handshake record (TLS 1.2), 74 bytes: ServerHello, 70 bytes, version 3.3,
                    // then 68 pseudo-random bytes where the random, session id, cipher suite,
                    // compression and extensions belong.
                    let mut record = vec![0x16, 0x03, 0x03, 0x00, 0x4a, 0x02, 0x00, 0x00, 0x46, 0x03, 0x03];
                    let mut body = [0u8; 68];
                    XorShift(0x2545_f491_4f6c_dd1d).fill(&mut body);
                    record.extend_from_slice(&body);
                    let _ = tcp.write_all(&record).await;
                    while matches!(tcp.read(&mut hello).await, Ok(n) if n > 0) {}
                }
            }
            let _ = tcp.shutdown().await;
        });
    }
}

/// Answers requests as `reply` says, keeping the connection open between requests as HTTP/1.1
/// servers do, until the client closes it or stays idle.
async fn respond<S: AsyncRead + AsyncWrite + Unpin>(mut stream: S, reply: &Reply) {
    if let Reply::Stall = reply {
        // Never answer; notice when the client gives up, so nothing leaks.
        let mut buf = [0u8; 1024];
        while matches!(stream.read(&mut buf).await, Ok(n) if n > 0) {}
        return;
    }
    while let Some(path) = read_request_path(&mut stream).await {
        let response = match reply {
            Reply::Page { status, body } => page(*status, body, None),
            Reply::Flaky(dice) if dice.fails() => page(500, "internal error", None),
            Reply::Flaky(_) => page(200, "ok", None),
            Reply::RedirectOnce if path == "/" => page(302, "", Some("/landing")),
            Reply::RedirectOnce => page(200, "landed", None),
            Reply::RedirectTo(url) => page(302, "", Some(url)),
            Reply::RedirectLoop => {
                let next = path.trim_start_matches("/loop/").parse::<u32>().unwrap_or(0) + 1;
                page(302, "", Some(&format!("/loop/{next}")))
            }
            Reply::HugeHeaders(bytes) => {
                let _ = stream.write_all(b"HTTP/1.1 200 OK\r\n").await;
                let line = format!("x-filler: {}\r\n", "a".repeat(1000));
                let mut sent = 0;
                while sent < *bytes {
                    if stream.write_all(line.as_bytes()).await.is_err() {
                        return;
                    }
                    sent += line.len();
                }
                let _ = stream.write_all(b"\r\n").await;
                break;
            }
            Reply::ManyHeaders(count) => {
                let mut head = b"HTTP/1.1 200 OK\r\n".to_vec();
                for _ in 0..*count {
                    head.extend_from_slice(b"a: b\r\n");
                }
                head.extend_from_slice(b"content-length: 0\r\n\r\n");
                let _ = stream.write_all(&head).await;
                break;
            }
            Reply::EndlessBody { chunked } => {
                let filler = [b'z'; 16 * 1024];
                let (head, chunk) = if *chunked {
                    let mut chunk = b"4000\r\n".to_vec();
                    chunk.extend_from_slice(&filler);
                    chunk.extend_from_slice(b"\r\n");
                    ("transfer-encoding: chunked", chunk)
                } else {
                    ("content-length: 1099511627776", filler.to_vec())
                };
                let head = format!("HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n{head}\r\n\r\n");
                if stream.write_all(head.as_bytes()).await.is_err() {
                    return;
                }
                while stream.write_all(&chunk).await.is_ok() {}
                return;
            }
            Reply::GzipBomb(bomb, tally) => {
                let head = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: text/html\r\ncontent-encoding: gzip\r\ncontent-length: {}\r\n\r\n",
                    bomb.compressed_len()
                );
                if stream.write_all(head.as_bytes()).await.is_err() {
                    tally.record(0);
                    return;
                }
                let mut counted = Counting { inner: &mut stream, sent: 0 };
                let written = bomb.write_to(&mut counted).await;
                // Until the client goes away, or the whole bomb is out.
                let _ = counted.flush().await;
                tally.record(counted.sent);
                if written.is_err() {
                    return;
                }
                break;
            }
            Reply::Trickle(every) => {
                let head = b"HTTP/1.1 200 OK\r\n".iter();
                let endless = b"x-slow: 0123456789\r\n".iter().cycle();
                // Ten minutes at most, should a client never go away.
                let deadline = tokio::time::Instant::now() + Duration::from_secs(600);
                for byte in head.chain(endless) {
                    tokio::time::sleep(*every).await;
                    let sent = async {
                        stream.write_all(&[*byte]).await?;
                        stream.flush().await
                    };
                    if sent.await.is_err() || tokio::time::Instant::now() > deadline {
                        return;
                    }
                }
                return;
            }
            Reply::Garbage => {
                let _ = stream.write_all(b"SSH-2.0-definitely-not-http\r\n\r\n").await;
                break;
            }
            Reply::Stall => unreachable!("handled above"),
        };
        if stream.write_all(&response).await.is_err() {
            return;
        }
    }
    let _ = stream.shutdown().await;
}

/// Counts of bytes sent, one per finished connection, that a test can wait for.
#[derive(Debug, Clone, Default)]
pub struct Tally(Arc<(Mutex<Vec<u64>>, Condvar)>);

impl Tally {
    fn record(&self, sent: u64) {
        let (counts, changed) = &*self.0;
        counts.lock().expect("tally").push(sent);
        changed.notify_all();
    }

    /// How many connections have finished so far.
    pub fn finished(&self) -> usize {
        self.0.0.lock().expect("tally").len()
    }

    /// The count of the `n`th finished connection (from 0), waiting up to `within` for it.
    pub fn nth(&self, n: usize, within: Duration) -> Option<u64> {
        let (counts, changed) = &*self.0;
        let guard = counts.lock().expect("tally");
        let (guard, _) = changed.wait_timeout_while(guard, within, |c| c.len() <= n).expect("tally");
        guard.get(n).copied()
    }
}

/// A writer that counts the bytes its inner writer accepted.
struct Counting<'a, W> {
    inner: &'a mut W,
    sent: u64,
}

impl<W: AsyncWrite + Unpin> AsyncWrite for Counting<'_, W> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut *self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = polled {
            self.sent += n as u64;
        }
        polled
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut *self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut *self.inner).poll_shutdown(cx)
    }
}

fn page(status: u16, body: &str, location: Option<&str>) -> Vec<u8> {
    let location = location.map(|l| format!("location: {l}\r\n")).unwrap_or_default();
    format!(
        "HTTP/1.1 {status} Lab\r\ncontent-type: text/plain\r\ncontent-length: {}\r\n{location}\r\n{body}",
        body.len()
    )
    .into_bytes()
}

async fn read_request_path<S: AsyncRead + Unpin>(stream: &mut S) -> Option<String> {
    let mut head = Vec::with_capacity(1024);
    let mut buf = [0u8; 1024];
    let read = async {
        while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 16 * 1024 {
            let n = stream.read(&mut buf).await.ok()?;
            if n == 0 {
                return None;
            }
            head.extend_from_slice(&buf[..n]);
        }
        Some(())
    };
    tokio::time::timeout(Duration::from_secs(5), read).await.ok()??;
    let line = head.split(|&b| b == b'\r').next()?;
    let line = std::str::from_utf8(line).ok()?;
    line.split(' ').nth(1).map(str::to_owned)
}

/// A small deterministic pseudo-random generator (xorshift64): hostile bytes that are the same
/// on every run.
#[derive(Debug)]
struct XorShift(u64);

impl XorShift {
    fn fill(&mut self, out: &mut [u8]) {
        for chunk in out.chunks_mut(8) {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            chunk.copy_from_slice(&self.0.to_le_bytes()[..chunk.len()]);
        }
    }
}

/// Accepts a connection; after an error (out of file descriptors, say) waits a little rather than
/// spinning.
async fn accept(listener: &TcpListener) -> std::io::Result<(TcpStream, SocketAddr)> {
    let accepted = listener.accept().await;
    if accepted.is_err() {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    accepted
}

/// Serves HTTP/2 over TLS (ALPN `h2`): a page, or no answer at all when `stall` is set.
pub async fn serve_h2(listener: TcpListener, identity: &Identity, stall: bool) {
    let mut config = (*server_config(identity)).clone();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let acceptor = TlsAcceptor::from(Arc::new(config));
    loop {
        let Ok((tcp, _)) = accept(&listener).await else { continue };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            let Ok(Ok(tls)) = tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await else { return };
            let service = hyper::service::service_fn(move |_request| async move {
                if stall {
                    std::future::pending::<()>().await;
                }
                let body = http_body_util::Full::new(hyper::body::Bytes::from_static(b"Welcome over HTTP/2"));
                Ok::<_, std::convert::Infallible>(hyper::Response::new(body))
            });
            let _ = hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
                .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                .await;
        });
    }
}

/// Binds `ip:port`; port 0 is a free port below the kernel's ephemeral range (see
/// [`free_listener`]), so a test can stop the server and bind the same port again.
pub async fn bind(ip: &str, port: u16) -> std::io::Result<TcpListener> {
    if port == 0 {
        let listener = free_listener(ip)?;
        listener.set_nonblocking(true)?;
        return TcpListener::from_std(listener);
    }
    TcpListener::bind(SocketAddr::new(ip.parse().expect("lab addresses are literals"), port)).await
}

/// Lowest port [`free_listener`] picks.
const LOWEST_FREE_PORT: u16 = 10_000;

/// A listener on `ip` at a free port chosen at random below the kernel's ephemeral port range
/// (`net.ipv4.ip_local_port_range`). Outgoing connections take their local ports from that range,
/// so a port below it stays free after its server stops (a restart on the same address, a site
/// stopped and started again), where a port the kernel picked (port 0) may meanwhile be taken
/// by any connection on the machine. Falls back to port 0 when the range leaves no room.
pub fn free_listener(ip: &str) -> std::io::Result<std::net::TcpListener> {
    use std::hash::{BuildHasher, RandomState};
    let ip: std::net::IpAddr = ip.parse().expect("lab addresses are literals");
    let ephemeral = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32_768);
    if ephemeral > LOWEST_FREE_PORT + 1_000 {
        let random = RandomState::new();
        for attempt in 0u32..100 {
            let port = LOWEST_FREE_PORT + (random.hash_one(attempt) % u64::from(ephemeral - LOWEST_FREE_PORT)) as u16;
            match std::net::TcpListener::bind(SocketAddr::new(ip, port)) {
                Ok(listener) => return Ok(listener),
                Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => continue,
                Err(e) => return Err(e),
            }
        }
    }
    std::net::TcpListener::bind(SocketAddr::new(ip, 0))
}

/// A free port on `ip` (see [`free_listener`]) for a process to listen on.
pub fn free_port(ip: &str) -> std::io::Result<u16> {
    Ok(free_listener(ip)?.local_addr()?.port())
}

/// A listener on `ip` (any port) whose accepted sockets send through a kernel buffer of about
/// `bytes` (Linux doubles it for its bookkeeping), without the usual autotuning to megabytes.
pub fn bind_with_send_buffer(ip: &str, bytes: u32) -> std::io::Result<TcpListener> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.set_send_buffer_size(bytes)?;
    socket.bind(SocketAddr::new(ip.parse().expect("lab addresses are literals"), 0))?;
    socket.listen(1024)
}

/// A listener whose accept queue is full, so new connection attempts go unanswered (SYNs are
/// dropped) and the connecting side times out. Returns the listener and the connections that fill
/// the queue; keep both alive.
pub async fn black_hole() -> std::io::Result<(tokio::net::TcpListener, Vec<TcpStream>)> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.bind("127.0.0.1:0".parse().expect("literal"))?;
    let listener = socket.listen(0)?;
    let addr = listener.local_addr()?;
    let mut fillers = Vec::new();
    for _ in 0..8 {
        match tokio::time::timeout(Duration::from_millis(300), TcpStream::connect(addr)).await {
            Ok(Ok(stream)) => fillers.push(stream),
            _ => break,
        }
    }
    Ok((listener, fillers))
}
