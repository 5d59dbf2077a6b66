//! Certificates made at test time with rcgen: a root, an intermediate and leaves with whatever
//! fault a scenario needs. Nothing here is ever written to the repository.

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    SanType,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use time::{Duration, OffsetDateTime};

pub type LabResult<T> = Result<T, rcgen::Error>;

/// A certificate authority that can sign.
pub struct Ca {
    pub cert: CertificateDer<'static>,
    pub pem: String,
    issuer: Issuer<'static, KeyPair>,
}

/// A served identity: the chain to send (leaf first) and the leaf's private key.
pub struct Identity {
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
}

impl Identity {
    pub fn leaf(&self) -> &CertificateDer<'static> {
        &self.chain[0]
    }
}

fn ca_params(name: &str, not_before: OffsetDateTime, not_after: OffsetDateTime) -> LabResult<CertificateParams> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.distinguished_name.push(DnType::OrganizationName, "Vantage Lab");
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    params.not_before = not_before;
    params.not_after = not_after;
    Ok(params)
}

impl Ca {
    /// A self-signed root valid for ten years around now.
    pub fn root(name: &str) -> LabResult<Ca> {
        let now = OffsetDateTime::now_utc();
        let params = ca_params(name, now - Duration::days(365), now + Duration::days(3650))?;
        let key = KeyPair::generate()?;
        let cert = params.self_signed(&key)?;
        Ok(Ca { pem: cert.pem(), cert: cert.der().clone(), issuer: Issuer::new(params, key) })
    }

    /// An intermediate signed by this CA, valid between the given offsets from now.
    pub fn intermediate(&self, name: &str, valid_from_days: i64, valid_to_days: i64) -> LabResult<Ca> {
        let now = OffsetDateTime::now_utc();
        let params = ca_params(name, now + Duration::days(valid_from_days), now + Duration::days(valid_to_days))?;
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(Ca { pem: cert.pem(), cert: cert.der().clone(), issuer: Issuer::new(params, key) })
    }

    /// A CA with this CA's exact name but a different key: what it signs does not verify
    /// against the real one.
    pub fn impostor(&self, name: &str) -> LabResult<Ca> {
        let now = OffsetDateTime::now_utc();
        let params = ca_params(name, now - Duration::days(30), now + Duration::days(3650))?;
        let key = KeyPair::generate()?;
        let cert = params.self_signed(&key)?;
        Ok(Ca { pem: cert.pem(), cert: cert.der().clone(), issuer: Issuer::new(params, key) })
    }

    /// Issues a leaf (names are DNS names or IP addresses) and returns it with `extra`
    /// appended as the served chain.
    pub fn identity(&self, spec: &LeafSpec<'_>, extra: &[&Ca]) -> LabResult<Identity> {
        let (params, key) = leaf_params(spec)?;
        let cert = params.signed_by(&key, &self.issuer)?;
        let mut chain = vec![cert.der().clone()];
        chain.extend(extra.iter().map(|ca| ca.cert.clone()));
        Ok(Identity { chain, key: private_key(&key) })
    }
}

/// A leaf for `spec` at the end of `depth` intermediates under `root`, each signed by the one
/// before: the served chain is the leaf and every intermediate, `depth + 1` certificates.
pub fn deep_chain(root: &Ca, depth: usize, spec: &LeafSpec<'_>) -> LabResult<Identity> {
    let mut issuers: Vec<Ca> = Vec::with_capacity(depth);
    for i in 1..=depth {
        let ca = issuers.last().unwrap_or(root).intermediate(&format!("Vantage Lab Chain CA {i}"), -30, 3000)?;
        issuers.push(ca);
    }
    let last = issuers.last().unwrap_or(root);
    let mut identity = last.identity(spec, &[])?;
    identity.chain.extend(issuers.iter().rev().map(|ca| ca.cert.clone()));
    Ok(identity)
}

/// `der` with its outer SEQUENCE claiming about 4 GiB of content that is not there: malformed
/// DER that a parser trusting the length would try to allocate or read past.
pub fn malformed(der: &CertificateDer<'_>) -> CertificateDer<'static> {
    let bytes = der.as_ref();
    // Skip the real tag and length (short form, or long form with 0x8N then N octets).
    let header = match bytes.get(1) {
        Some(&len) if len & 0x80 != 0 => 2 + usize::from(len & 0x7f),
        _ => 2,
    };
    let mut out = vec![0x30, 0x84, 0xff, 0xff, 0xff, 0xf0];
    out.extend_from_slice(&bytes[header.min(bytes.len())..]);
    CertificateDer::from(out)
}

/// What a leaf certificate looks like.
pub struct LeafSpec<'a> {
    pub names: &'a [&'a str],
    /// Validity relative to now, in days (negative is in the past).
    pub valid_from_days: i64,
    pub valid_to_days: i64,
    /// Extended key usage; server authentication unless changed.
    pub purpose: ExtendedKeyUsagePurpose,
}

impl<'a> LeafSpec<'a> {
    pub fn new(names: &'a [&'a str]) -> LeafSpec<'a> {
        LeafSpec { names, valid_from_days: -1, valid_to_days: 90, purpose: ExtendedKeyUsagePurpose::ServerAuth }
    }

    pub fn valid(mut self, from_days: i64, to_days: i64) -> LeafSpec<'a> {
        self.valid_from_days = from_days;
        self.valid_to_days = to_days;
        self
    }

    pub fn purpose(mut self, purpose: ExtendedKeyUsagePurpose) -> LeafSpec<'a> {
        self.purpose = purpose;
        self
    }
}

fn leaf_params(spec: &LeafSpec<'_>) -> LabResult<(CertificateParams, KeyPair)> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.subject_alt_names = spec
        .names
        .iter()
        .map(|name| match name.parse() {
            Ok(ip) => Ok(SanType::IpAddress(ip)),
            Err(_) => Ok(SanType::DnsName((*name).try_into()?)),
        })
        .collect::<LabResult<_>>()?;
    params.distinguished_name.push(DnType::CommonName, spec.names.first().copied().unwrap_or("lab"));
    let now = OffsetDateTime::now_utc();
    // Whole-day offsets plus an hour, so "20 days left" reads as 20 whatever the second.
    params.not_before = now + Duration::days(spec.valid_from_days) - Duration::hours(1);
    params.not_after = now + Duration::days(spec.valid_to_days) + Duration::hours(1);
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![spec.purpose.clone()];
    Ok((params, KeyPair::generate()?))
}

/// A self-signed leaf.
pub fn self_signed(spec: &LeafSpec<'_>) -> LabResult<Identity> {
    let (params, key) = leaf_params(spec)?;
    let cert = params.self_signed(&key)?;
    Ok(Identity { chain: vec![cert.der().clone()], key: private_key(&key) })
}

/// SHA-256 of a certificate's SubjectPublicKeyInfo, lowercase hex: what a public-key pin holds.
pub fn spki_sha256(der: &CertificateDer<'_>) -> String {
    let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref()).expect("the lab's certificates parse");
    crate::identity::sha256_hex(cert.public_key().raw)
}

/// A certificate as a PEM block, as a web server's certificate file holds it.
pub fn pem(der: &CertificateDer<'_>) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut base64 = String::new();
    for chunk in der.as_ref().chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..4 {
            let c = if i <= chunk.len() { ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char } else { '=' };
            base64.push(c);
        }
    }
    let mut out = String::from("-----BEGIN CERTIFICATE-----\n");
    for line in base64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).expect("base64 is ASCII"));
        out.push('\n');
    }
    out.push_str("-----END CERTIFICATE-----\n");
    out
}

fn private_key(key: &KeyPair) -> PrivateKeyDer<'static> {
    PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pem_matches_rcgen() {
        let key = KeyPair::generate().unwrap();
        let cert = leaf_params(&LeafSpec::new(&["pem.vantage.test"])).unwrap().0.self_signed(&key).unwrap();
        assert_eq!(pem(cert.der()), cert.pem().replace("\r\n", "\n"));
    }
}
