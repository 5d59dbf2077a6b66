//! Who is on the other end of an mTLS connection. Vantage's certificates name their holder in a
//! SAN URI: `spiffe://vantage/region/<region>/agent/<name>` for an agent (the region is part of
//! the identity, so an agent cannot report for another region), `spiffe://vantage/admin/<name>`
//! for an operator. Also: the start-up check of a secret file's permissions.

use std::path::Path;

const PREFIX: &str = "spiffe://vantage/";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Identity {
    Agent { region: String, name: String },
    Admin { name: String },
}

impl Identity {
    pub fn uri(&self) -> String {
        match self {
            Identity::Agent { region, name } => format!("{PREFIX}region/{region}/agent/{name}"),
            Identity::Admin { name } => format!("{PREFIX}admin/{name}"),
        }
    }

    /// Reads an identity URI; anything else (another scheme, a bad label) is `None`.
    pub fn parse(uri: &str) -> Option<Identity> {
        let rest = uri.strip_prefix(PREFIX)?;
        let parts: Vec<&str> = rest.split('/').collect();
        let identity = match parts[..] {
            ["region", region, "agent", name] => Identity::Agent { region: region.into(), name: name.into() },
            ["admin", name] => Identity::Admin { name: name.into() },
            _ => return None,
        };
        let labels_ok = match &identity {
            Identity::Agent { region, name } => is_label(region) && is_label(name),
            Identity::Admin { name } => is_label(name),
        };
        labels_ok.then_some(identity)
    }
}

impl std::fmt::Display for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.uri())
    }
}

/// Region and agent names: 1 to 64 letters, digits, '-', '_' or '.'.
pub fn is_label(s: &str) -> bool {
    (1..=64).contains(&s.len()) && s.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// What a client certificate says about its holder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertIdentity {
    /// `None` when the certificate names no Vantage identity.
    pub identity: Option<Identity>,
    pub not_after_unix: i64,
    pub sha256_hex: String,
}

/// Reads the Vantage identity, expiry and fingerprint of a DER certificate.
pub fn of_certificate(der: &[u8]) -> Result<CertIdentity, String> {
    use x509_parser::prelude::*;
    let (_, cert) = X509Certificate::from_der(der).map_err(|e| format!("not a certificate: {e}"))?;
    let mut identities = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            if let GeneralName::URI(uri) = name {
                identities.extend(Identity::parse(uri));
            }
        }
    }
    // Two identities in one certificate would be ambiguous: it names nobody.
    let identity = if identities.len() == 1 { identities.pop() } else { None };
    Ok(CertIdentity { identity, not_after_unix: cert.validity().not_after.timestamp(), sha256_hex: sha256_hex(der) })
}

/// Lowercase hex SHA-256, the fingerprint form Vantage prints and accepts.
pub fn sha256_hex(data: &[u8]) -> String {
    use std::fmt::Write;
    ring::digest::digest(&ring::digest::SHA256, data).as_ref().iter().fold(String::with_capacity(64), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// Logs a warning when a secret file (a private key, a token) can be read or written by group or
/// others.
pub fn warn_if_loose(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let Ok(meta) = std::fs::metadata(path) else { return };
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        tracing::warn!(
            file = %path.display(),
            mode = format!("{mode:o}"),
            "secret file is accessible to other users; run chmod 600 on it"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identities_round_trip_and_strangers_are_refused() {
        let agent = Identity::Agent { region: "eu-west".into(), name: "agent-1".into() };
        assert_eq!(agent.uri(), "spiffe://vantage/region/eu-west/agent/agent-1");
        assert_eq!(Identity::parse(&agent.uri()), Some(agent));
        let admin = Identity::Admin { name: "ops".into() };
        assert_eq!(Identity::parse(&admin.uri()), Some(admin));
        for stranger in [
            "spiffe://other/region/eu/agent/a",
            "spiffe://vantage/region/eu/agent/a/extra",
            "spiffe://vantage/region//agent/a",
            "spiffe://vantage/region/eu west/agent/a",
            "spiffe://vantage/admin/",
            "https://vantage/admin/x",
        ] {
            assert_eq!(Identity::parse(stranger), None, "{stranger}");
        }
    }
}
