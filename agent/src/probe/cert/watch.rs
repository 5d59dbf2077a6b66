//! Served versus on disk: an agent running on the web server itself is told which certificate
//! files a URL serves from. A server still serving an older certificate than a renewed file, for
//! longer than a grace period (a deploy in progress gets time to reload), is `cert_not_reloaded`.
//! The judgement is stateless, from the file's mtime, so a one-shot `check` makes it too.

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use time::OffsetDateTime;
use vantage_shared::report::rfc3339;
use vantage_shared::target::TargetUrl;
use x509_parser::prelude::{FromDer, X509Certificate};

use super::CertError;

/// How long a renewed file may wait for its reload before it is reported.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(600);
/// The most of a watched file that is read: certificate files are a few KiB.
pub const MAX_FILE_BYTES: u64 = 1 << 20;

/// A certificate file on this machine that `url` should be serving.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchedCert {
    pub path: PathBuf,
    pub url: TargetUrl,
}

impl WatchedCert {
    /// Reads `PATH=URL`, as `--watch-cert` takes it. The URL starts at the first `=https://` or
    /// `=http://`, so a path may hold `=` and a URL's query may too.
    pub fn parse(text: &str) -> Result<WatchedCert, String> {
        let split = ["=https://", "=http://"].iter().filter_map(|sep| text.find(sep)).min();
        let Some(at) = split else {
            return Err(format!("{text:?} is not PATH=URL (e.g. /etc/ssl/site.pem=https://site.example/)"));
        };
        let (path, url) = (&text[..at], &text[at + 1..]);
        if path.is_empty() {
            return Err(format!("{text:?} names no file before the '='"));
        }
        let url = TargetUrl::parse(url).map_err(|e| e.to_string())?;
        Ok(WatchedCert { path: PathBuf::from(path), url })
    }
}

/// What the comparison needs of one certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    /// SHA-256 of the DER, lowercase hex.
    pub sha256: String,
    /// Unix seconds.
    pub not_before: i64,
    pub not_after: i64,
}

impl Summary {
    pub fn of(der: &[u8]) -> Result<Summary, String> {
        let (_, cert) = X509Certificate::from_der(der).map_err(|e| e.to_string())?;
        Ok(Summary {
            sha256: vantage_shared::identity::sha256_hex(der),
            not_before: cert.validity().not_before.timestamp(),
            not_after: cert.validity().not_after.timestamp(),
        })
    }
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let expires = OffsetDateTime::from_unix_timestamp(self.not_after)
            .map(rfc3339)
            .unwrap_or_else(|_| self.not_after.to_string());
        write!(f, "sha256 {} (expires {expires})", self.sha256)
    }
}

/// The finding: a newer certificate on disk than the one served, past the grace period.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stale {
    pub served: Summary,
    pub disk: Summary,
    pub path: String,
    /// The file's mtime, RFC 3339 UTC.
    pub written: String,
}

impl std::fmt::Display for Stale {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let Stale { served, disk, path, written } = self;
        write!(f, "the server serves {served}, but {path} holds a newer certificate, {disk}, written {written}")
    }
}

/// Why a watched file could not be compared. Not a finding about the site: it is logged, and
/// the probe goes on.
#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path} is larger than 1 MiB, which no certificate file is")]
    TooLarge { path: PathBuf },
    #[error("{path} holds no PEM certificate")]
    NoCertificate { path: PathBuf },
    #[error("the first certificate in {path} does not parse: {reason}")]
    Malformed { path: PathBuf, reason: String },
}

/// The first certificate of the PEM file at `path` (the leaf, in a fullchain.pem) and when the
/// file was last written. A symlink (certbot's `live/`) is followed to the file it names.
pub fn read_disk(path: &Path) -> Result<(Summary, SystemTime), WatchError> {
    let read_error = |source| WatchError::Read { path: path.to_owned(), source };
    let file = std::fs::File::open(path).map_err(read_error)?;
    let written = file.metadata().and_then(|m| m.modified()).map_err(read_error)?;
    let mut bytes = Vec::new();
    file.take(MAX_FILE_BYTES + 1).read_to_end(&mut bytes).map_err(read_error)?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(WatchError::TooLarge { path: path.to_owned() });
    }
    let first = CertificateDer::pem_slice_iter(&bytes).next();
    let der = match first {
        None => return Err(WatchError::NoCertificate { path: path.to_owned() }),
        Some(Err(e)) => return Err(WatchError::Malformed { path: path.to_owned(), reason: e.to_string() }),
        Some(Ok(der)) => der,
    };
    let summary =
        Summary::of(der.as_ref()).map_err(|reason| WatchError::Malformed { path: path.to_owned(), reason })?;
    Ok((summary, written))
}

/// What comparing the served certificate with the file found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reload {
    /// The server serves the file's certificate.
    Current,
    /// The file's certificate is not newer than the served one (a stale file, a rollback).
    DiskNotNewer,
    /// Newer on disk, written within the grace period: the reload may still be coming.
    Pending,
    /// Newer on disk, written longer ago than the grace period.
    NotReloaded,
}

/// "Newer" is a later notBefore: a renewal is issued after the certificate it replaces. A file
/// dated in the future (a skewed clock) counts as just written.
pub fn judge(served: &Summary, disk: &Summary, written: SystemTime, now: SystemTime, grace: Duration) -> Reload {
    if served.sha256 == disk.sha256 {
        return Reload::Current;
    }
    if disk.not_before <= served.not_before {
        return Reload::DiskNotNewer;
    }
    match now.duration_since(written) {
        Ok(age) if age > grace => Reload::NotReloaded,
        _ => Reload::Pending,
    }
}

/// Compares the served leaf with the file at `path` (blocking: it reads the file). `Ok(Err(_))`
/// is the finding `cert_not_reloaded`; a served leaf that does not parse is the certificate
/// stage's to report, not this check's.
pub fn compare(
    served_leaf: &[u8],
    path: &Path,
    grace: Duration,
    now: SystemTime,
) -> Result<Result<(), CertError>, WatchError> {
    let Ok(served) = Summary::of(served_leaf) else { return Ok(Ok(())) };
    let (disk, written) = read_disk(path)?;
    Ok(match judge(&served, &disk, written, now, grace) {
        Reload::NotReloaded => Err(CertError::NotReloaded(Box::new(Stale {
            served,
            disk,
            path: path.display().to_string(),
            written: rfc3339(OffsetDateTime::from(written)),
        }))),
        Reload::Current | Reload::DiskNotNewer | Reload::Pending => Ok(()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: i64 = 86_400;

    fn cert(sha: &str, not_before: i64) -> Summary {
        Summary { sha256: sha.repeat(64), not_before, not_after: not_before + 90 * DAY }
    }

    #[test]
    fn a_newer_file_is_reported_only_after_the_grace_period() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let grace = Duration::from_secs(600);
        let served = cert("a", 1_700_000_000);
        let renewed = cert("b", 1_700_000_000 + 60 * DAY);
        let ago = |secs: u64| now - Duration::from_secs(secs);
        let cases = [
            (&served, ago(3600), Reload::Current),
            (&renewed, ago(3600), Reload::NotReloaded),
            (&renewed, ago(601), Reload::NotReloaded),
            (&renewed, ago(600), Reload::Pending),
            (&renewed, ago(5), Reload::Pending),
            (&renewed, now + Duration::from_secs(60), Reload::Pending),
            (&cert("c", 1_700_000_000), ago(3600), Reload::DiskNotNewer),
            (&cert("d", 1_700_000_000 - DAY), ago(3600), Reload::DiskNotNewer),
        ];
        for (disk, written, expected) in cases {
            assert_eq!(judge(&served, disk, written, now, grace), expected, "{disk:?} written {written:?}");
        }
    }

    #[test]
    fn watch_arguments_split_at_the_url() {
        let w = WatchedCert::parse("/etc/ssl/a=b.pem=https://Shop.example/x?y=https://z/").unwrap();
        assert_eq!(w.path, PathBuf::from("/etc/ssl/a=b.pem"));
        assert_eq!(w.url.to_string(), "https://shop.example/x?y=https://z/");
        assert_eq!(WatchedCert::parse("c.pem=http://h:8080").unwrap().url.to_string(), "http://h:8080/");
        assert!(WatchedCert::parse("/etc/ssl/site.pem").is_err());
        assert!(WatchedCert::parse("=https://h/").is_err());
        assert!(WatchedCert::parse("c.pem=https://").is_err());
    }

    #[test]
    fn unreadable_and_oversized_files_are_errors_not_findings() {
        let dir = std::env::temp_dir().join(format!("vantage-watch-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let missing = dir.join("missing.pem");
        assert!(matches!(read_disk(&missing), Err(WatchError::Read { .. })));
        let text = dir.join("text.pem");
        std::fs::write(&text, "not a certificate\n").unwrap();
        assert!(matches!(read_disk(&text), Err(WatchError::NoCertificate { .. })));
        let big = dir.join("big.pem");
        std::fs::write(&big, vec![b'A'; MAX_FILE_BYTES as usize + 1]).unwrap();
        assert!(matches!(read_disk(&big), Err(WatchError::TooLarge { .. })));
        let garbage = dir.join("garbage.pem");
        std::fs::write(&garbage, "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n").unwrap();
        assert!(matches!(read_disk(&garbage), Err(WatchError::Malformed { .. })));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
