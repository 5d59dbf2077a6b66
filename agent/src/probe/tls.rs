//! Stage 3, TLS: a tokio-rustls handshake offering h2 and http/1.1, with session resumption off
//! (every probe is a full handshake that shows the certificate) and a verifier that lets the
//! handshake finish whatever the certificate, so the served chain is always captured. Judging
//! the chain is the certificate stage's job; the handshake's own signatures are still checked.

use std::sync::Arc;
use std::time::Duration;

use rustls::client::Resumption;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    AlertDescription, CertificateError, ClientConfig, DigitallySignedStruct, PeerIncompatible, SignatureScheme,
};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use vantage_shared::failure::FailureCode;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("the TLS handshake did not finish within {:.1}s", after.as_secs_f64())]
    Timeout { after: Duration },
    #[error("no TLS version in common: {detail}")]
    ProtocolVersion { detail: String },
    #[error("the TLS handshake failed: {detail}")]
    Failed { detail: String },
    #[error("{name:?} cannot be sent as a TLS server name")]
    InvalidServerName { name: String },
    /// The served leaf does not parse, so the handshake's signature cannot be checked against
    /// it: the certificate, not the TLS setup, is what needs fixing.
    #[error("the server's certificate is malformed: {detail}")]
    MalformedCertificate { detail: String },
}

impl TlsError {
    pub fn code(&self) -> FailureCode {
        match self {
            TlsError::Timeout { .. } => FailureCode::TlsHandshakeTimeout,
            TlsError::ProtocolVersion { .. } => FailureCode::TlsProtocolVersion,
            TlsError::Failed { .. } | TlsError::InvalidServerName { .. } => FailureCode::TlsHandshakeFailed,
            TlsError::MalformedCertificate { .. } => FailureCode::CertInvalid,
        }
    }

    fn from_io(error: std::io::Error) -> TlsError {
        let Some(tls) = error.get_ref().and_then(|e| e.downcast_ref::<rustls::Error>()) else {
            let detail = match error.kind() {
                std::io::ErrorKind::UnexpectedEof => "the server closed the connection mid-handshake".to_owned(),
                _ => error.to_string(),
            };
            return TlsError::Failed { detail };
        };
        let detail = tls.to_string();
        match tls {
            rustls::Error::AlertReceived(AlertDescription::ProtocolVersion)
            | rustls::Error::PeerIncompatible(
                PeerIncompatible::ServerDoesNotSupportTls12Or13
                | PeerIncompatible::ServerTlsVersionIsDisabledByOurConfig
                | PeerIncompatible::SupportedVersionsExtensionRequired,
            ) => TlsError::ProtocolVersion { detail },
            rustls::Error::InvalidCertificate(CertificateError::BadEncoding) => {
                TlsError::MalformedCertificate { detail }
            }
            _ => TlsError::Failed { detail },
        }
    }
}

/// What the handshake established.
pub struct Handshake {
    pub stream: TlsStream<TcpStream>,
    pub version: String,
    pub cipher: String,
    pub alpn: Option<String>,
    /// The chain as served, leaf first.
    pub chain: Vec<CertificateDer<'static>>,
}

/// The client configuration every probe shares.
pub fn client_config(provider: Arc<CryptoProvider>) -> Arc<ClientConfig> {
    let verifier = Arc::new(CaptureVerifier { algorithms: provider.signature_verification_algorithms });
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .expect("the ring provider supports TLS 1.2 and 1.3")
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    config.resumption = Resumption::disabled();
    Arc::new(config)
}

pub async fn handshake(
    config: Arc<ClientConfig>,
    tcp: TcpStream,
    server_name: ServerName<'static>,
    budget: Duration,
) -> Result<Handshake, TlsError> {
    let connector = tokio_rustls::TlsConnector::from(config);
    let stream = tokio::time::timeout(budget, connector.connect(server_name, tcp))
        .await
        .map_err(|_| TlsError::Timeout { after: budget })?
        .map_err(TlsError::from_io)?;
    let (_, conn) = stream.get_ref();
    let version = match conn.protocol_version() {
        Some(rustls::ProtocolVersion::TLSv1_3) => "TLSv1.3".to_owned(),
        Some(rustls::ProtocolVersion::TLSv1_2) => "TLSv1.2".to_owned(),
        Some(other) => format!("{other:?}"),
        None => "unknown".to_owned(),
    };
    let cipher =
        conn.negotiated_cipher_suite().map(|s| s.suite().as_str().unwrap_or("unknown").to_owned()).unwrap_or_default();
    let alpn = conn.alpn_protocol().map(|p| String::from_utf8_lossy(p).into_owned());
    let chain = conn
        .peer_certificates()
        .map(|certs| certs.iter().map(|c| c.clone().into_owned()).collect())
        .unwrap_or_default();
    Ok(Handshake { stream, version, cipher, alpn, chain })
}

/// Accepts any certificate so the handshake completes and the chain can be judged afterwards;
/// verifies the handshake signatures as usual.
#[derive(Debug)]
struct CaptureVerifier {
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for CaptureVerifier {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn classify(error: rustls::Error) -> FailureCode {
        TlsError::from_io(std::io::Error::new(std::io::ErrorKind::InvalidData, error)).code()
    }

    #[test]
    fn a_leaf_that_does_not_parse_is_an_invalid_certificate() {
        assert_eq!(
            classify(rustls::Error::InvalidCertificate(CertificateError::BadEncoding)),
            FailureCode::CertInvalid
        );
        // A handshake signature that does not verify is a server whose key and certificate
        // disagree: its TLS setup, not the certificate, is wrong.
        assert_eq!(
            classify(rustls::Error::InvalidCertificate(CertificateError::BadSignature)),
            FailureCode::TlsHandshakeFailed
        );
        assert_eq!(
            classify(rustls::Error::InvalidMessage(rustls::InvalidMessage::HandshakePayloadTooLarge)),
            FailureCode::TlsHandshakeFailed
        );
        assert_eq!(
            classify(rustls::Error::AlertReceived(AlertDescription::ProtocolVersion)),
            FailureCode::TlsProtocolVersion
        );
    }
}
