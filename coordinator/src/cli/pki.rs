//! `vantage-coordinator pki`: a private CA for Vantage (ECDSA P-256), the coordinator's server
//! certificate, and client certificates for agents and admins. An agent's identity (region and
//! name) is a SAN URI, `spiffe://vantage/region/<region>/agent/<name>`. Private keys are written
//! with mode 0600 and nothing is ever overwritten.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::{Args, Subcommand};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    SanType,
};
use time::{Duration, OffsetDateTime};
use vantage_proto::v1::RevokeAgentRequest;
use vantage_shared::identity::Identity;

#[derive(Debug, Subcommand)]
pub enum PkiCommand {
    /// Create the CA and the coordinator's server certificate in DIR.
    Init(InitArgs),
    /// Issue an agent's client certificate, bound to its region and name.
    IssueAgent(AgentArgs),
    /// Issue an admin client certificate for the API.
    IssueAdmin(AdminArgs),
    /// Revoke an agent certificate on a running coordinator: the agent is refused from its next
    /// connection on and its open stream is closed (needs admin credentials).
    RevokeAgent(RevokeArgs),
}

#[derive(Debug, Args)]
pub struct RevokeArgs {
    /// The agent certificate to revoke (PEM).
    #[arg(long, value_name = "PEM", required_unless_present = "sha256", conflicts_with = "sha256")]
    agent_cert: Option<PathBuf>,
    /// Its SHA-256 fingerprint instead (hex, as `ListAgents` shows it).
    #[arg(long)]
    sha256: Option<String>,
    #[command(flatten)]
    client: super::ClientArgs,
}

/// `pki revoke-agent`: through the API, so the running coordinator acts on it at once.
pub async fn revoke(args: RevokeArgs) -> anyhow::Result<()> {
    let request = match (&args.agent_cert, &args.sha256) {
        (Some(path), _) => RevokeAgentRequest {
            cert_pem: std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?,
            ..Default::default()
        },
        (None, Some(sha256)) => RevokeAgentRequest { cert_sha256: sha256.clone(), ..Default::default() },
        (None, None) => anyhow::bail!("give --cert or --sha256"),
    };
    let mut client = super::client(&args.client).await?;
    let r = client.revoke_agent(request).await.map_err(super::status_error)?.into_inner();
    let who = if r.identity.is_empty() { "an agent not seen yet".to_owned() } else { r.identity };
    let state = if r.already_revoked { "was already revoked" } else { "revoked" };
    println!("{} ({who}) {state}; {} open stream(s) closed", r.cert_sha256, r.closed_sessions);
    Ok(())
}

#[derive(Debug, Args)]
pub struct InitArgs {
    #[arg(long)]
    dir: PathBuf,
    /// A DNS name or IP address the coordinator is reached at (repeatable).
    #[arg(long = "name", default_values_t = ["localhost".to_owned(), "127.0.0.1".to_owned()])]
    names: Vec<String>,
    /// Validity of the CA, in days.
    #[arg(long, default_value_t = 3650)]
    ca_days: i64,
    /// Validity of the server certificate, in days.
    #[arg(long, default_value_t = 397)]
    days: i64,
}

#[derive(Debug, Args)]
pub struct AgentArgs {
    #[arg(long)]
    dir: PathBuf,
    #[arg(long)]
    region: String,
    #[arg(long)]
    name: String,
    #[arg(long, default_value_t = 397)]
    days: i64,
}

#[derive(Debug, Args)]
pub struct AdminArgs {
    #[arg(long)]
    dir: PathBuf,
    #[arg(long, default_value = "admin")]
    name: String,
    #[arg(long, default_value_t = 90)]
    days: i64,
}

/// Writes `contents` to a new file (never replacing one), with `mode`.
fn write_new(path: &Path, contents: &str, mode: u32) -> anyhow::Result<()> {
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .with_context(|| format!("cannot create {} (it must not exist yet)", path.display()))?;
    file.write_all(contents.as_bytes()).with_context(|| format!("writing {}", path.display()))
}

fn expiry(days: i64) -> anyhow::Result<(OffsetDateTime, OffsetDateTime)> {
    anyhow::ensure!((1..=36_500).contains(&days), "validity must be 1 to 36500 days, not {days}");
    let now = OffsetDateTime::now_utc();
    Ok((now - Duration::hours(1), now + Duration::days(days)))
}

fn load_ca(dir: &Path) -> anyhow::Result<Issuer<'static, KeyPair>> {
    let cert = std::fs::read_to_string(dir.join("ca.pem"))
        .with_context(|| format!("reading {}/ca.pem (run `pki init` first)", dir.display()))?;
    let key =
        std::fs::read_to_string(dir.join("ca.key")).with_context(|| format!("reading {}/ca.key", dir.display()))?;
    let key = KeyPair::from_pem(&key).context("ca.key is not a private key")?;
    Issuer::from_ca_cert_pem(&cert, key).context("ca.pem is not a CA certificate")
}

/// Issues a leaf signed by the CA in `dir` and writes `<stem>.pem` and `<stem>.key`.
fn issue(
    dir: &Path,
    stem: &str,
    common_name: &str,
    sans: Vec<SanType>,
    purpose: ExtendedKeyUsagePurpose,
    days: i64,
) -> anyhow::Result<OffsetDateTime> {
    let issuer = load_ca(dir)?;
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.distinguished_name.push(DnType::OrganizationName, "Vantage");
    params.distinguished_name.push(DnType::CommonName, common_name);
    params.subject_alt_names = sans;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![purpose];
    (params.not_before, params.not_after) = expiry(days)?;
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, &issuer)?;
    write_new(&dir.join(format!("{stem}.key")), &key.serialize_pem(), 0o600)?;
    write_new(&dir.join(format!("{stem}.pem")), &cert.pem(), 0o644)?;
    Ok(params.not_after)
}

fn check_label(what: &str, value: &str) -> anyhow::Result<()> {
    crate::spec::check_name("", value).map_err(|e| anyhow::anyhow!("{what}: {}", e.reason))
}

/// The offline commands (`revoke-agent` is `revoke`).
pub fn run(command: PkiCommand) -> anyhow::Result<()> {
    match command {
        PkiCommand::RevokeAgent(_) => anyhow::bail!("revoke-agent talks to a running coordinator"),
        PkiCommand::Init(a) => {
            std::fs::create_dir_all(&a.dir).with_context(|| format!("creating {}", a.dir.display()))?;
            let mut ca = CertificateParams::new(Vec::<String>::new())?;
            ca.distinguished_name.push(DnType::OrganizationName, "Vantage");
            ca.distinguished_name.push(DnType::CommonName, "Vantage CA");
            ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
            ca.key_usages =
                vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
            (ca.not_before, ca.not_after) = expiry(a.ca_days)?;
            let key = KeyPair::generate()?;
            let cert = ca.self_signed(&key)?;
            write_new(&a.dir.join("ca.key"), &key.serialize_pem(), 0o600)?;
            write_new(&a.dir.join("ca.pem"), &cert.pem(), 0o644)?;
            println!("CA          {}/ca.pem (key ca.key, mode 0600), expires {}", a.dir.display(), date(ca.not_after));
            let sans = a
                .names
                .iter()
                .map(|n| match n.parse() {
                    Ok(ip) => Ok(SanType::IpAddress(ip)),
                    Err(_) => {
                        Ok(SanType::DnsName(n.clone().try_into().with_context(|| format!("{n:?} is not a DNS name"))?))
                    }
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            let first = a.names.first().cloned().unwrap_or_else(|| "coordinator".into());
            let until = issue(&a.dir, "coordinator", &first, sans, ExtendedKeyUsagePurpose::ServerAuth, a.days)?;
            println!(
                "coordinator {}/coordinator.pem for {}, expires {}",
                a.dir.display(),
                a.names.join(", "),
                date(until)
            );
        }
        PkiCommand::IssueAgent(a) => {
            check_label("--region", &a.region)?;
            check_label("--name", &a.name)?;
            let uri = Identity::Agent { region: a.region.clone(), name: a.name.clone() }.uri();
            let sans = vec![SanType::URI(uri.clone().try_into().context("identity URI")?)];
            let stem = format!("agent-{}", a.name);
            let until = issue(&a.dir, &stem, &a.name, sans, ExtendedKeyUsagePurpose::ClientAuth, a.days)?;
            println!("agent       {}/{stem}.pem as {uri}, expires {}", a.dir.display(), date(until));
        }
        PkiCommand::IssueAdmin(a) => {
            check_label("--name", &a.name)?;
            let uri = Identity::Admin { name: a.name.clone() }.uri();
            let sans = vec![SanType::URI(uri.clone().try_into().context("identity URI")?)];
            let stem = format!("admin-{}", a.name);
            let until = issue(&a.dir, &stem, &a.name, sans, ExtendedKeyUsagePurpose::ClientAuth, a.days)?;
            println!("admin       {}/{stem}.pem as {uri}, expires {}", a.dir.display(), date(until));
        }
    }
    Ok(())
}

fn date(t: OffsetDateTime) -> String {
    vantage_shared::report::rfc3339(t)
}
