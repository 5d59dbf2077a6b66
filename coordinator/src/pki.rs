//! Certificates the coordinator is given, read: the DER in a PEM text (a certificate to revoke)
//! and when a certificate file expires (its own, logged at start). Issuing them is the
//! `pki` command (`cli::pki`).

use std::path::Path;

use anyhow::Context;

/// The DER of the first certificate in a PEM text.
pub fn pem_certificate(pem: &str) -> anyhow::Result<Vec<u8>> {
    let (_, block) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).map_err(|_| anyhow::anyhow!("not PEM"))?;
    anyhow::ensure!(block.label == "CERTIFICATE", "the PEM block is a {}, not a CERTIFICATE", block.label);
    Ok(block.contents)
}

/// When the first certificate in a PEM file expires (Unix seconds).
pub fn not_after(path: &Path) -> anyhow::Result<i64> {
    let pem = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let der = pem_certificate(&pem)?;
    Ok(vantage_shared::identity::of_certificate(&der).map_err(anyhow::Error::msg)?.not_after_unix)
}
