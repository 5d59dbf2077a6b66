//! The bare loop the benchmarks hold Vantage's probes against: tokio-rustls connect, full TLS
//! handshake (no resumption) and one HTTP/1.1 GET, with the same crypto provider as the agent and
//! nothing else (no DNS, no certificate facts, no classification, no scheduling).

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A client configuration trusting the PEM roots in `ca_file`, as the agent's probe sets up its own.
pub fn client_config(ca_file: &Path) -> Result<Arc<rustls::ClientConfig>, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    let certs = CertificateDer::pem_file_iter(ca_file).map_err(|e| format!("{}: {e}", ca_file.display()))?;
    for cert in certs {
        roots.add(cert.map_err(|e| e.to_string())?).map_err(|e| e.to_string())?;
    }
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    config.resumption = rustls::client::Resumption::disabled();
    Ok(Arc::new(config))
}

/// One bare probe of `https://{host}:{port}/` at `addr`: the response's status code.
pub async fn probe(config: Arc<rustls::ClientConfig>, addr: SocketAddr, host: &str) -> std::io::Result<u16> {
    let broken = |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_owned());
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    tcp.set_nodelay(true)?;
    let name = ServerName::try_from(host.to_owned()).map_err(|_| broken("not a server name"))?;
    let mut tls = tokio_rustls::TlsConnector::from(config).connect(name, tcp).await?;
    let request = format!("GET / HTTP/1.1\r\nhost: {host}:{}\r\nuser-agent: bare\r\naccept: */*\r\n\r\n", addr.port());
    tls.write_all(request.as_bytes()).await?;
    // Read the head, then the body its content-length announces (the lab keeps connections alive).
    let mut response = Vec::with_capacity(1024);
    let mut buf = [0u8; 4096];
    let body_len = loop {
        let n = tls.read(&mut buf).await?;
        if n == 0 {
            return Err(broken("the server closed early"));
        }
        response.extend_from_slice(&buf[..n]);
        if let Some(end) = response.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = std::str::from_utf8(&response[..end]).map_err(|_| broken("a head that is not text"))?;
            let length = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length: "))
                .and_then(|v| v.trim().parse::<usize>().ok())
                .ok_or_else(|| broken("no content-length"))?;
            break end + 4 + length;
        }
    };
    while response.len() < body_len {
        let n = tls.read(&mut buf).await?;
        if n == 0 {
            return Err(broken("the server closed early"));
        }
        response.extend_from_slice(&buf[..n]);
    }
    let status = response.get(9..12).and_then(|s| std::str::from_utf8(s).ok()).and_then(|s| s.parse().ok());
    status.ok_or_else(|| broken("no status line"))
}
