//! `vantage-agent run`: connect to the coordinator, probe what it assigns, report back.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use tokio::sync::mpsc;
use vantage_shared::identity::{self, Identity};

use crate::check::{NetworkArgs, WatchArgs};
use crate::probe::{Prober, ProberConfig};
use crate::scheduler::Scheduler;
use crate::session::{self, Outbox, SessionConfig};

#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    /// The coordinator's gRPC URL (https://… with mTLS).
    #[arg(long, env = "VANTAGE_COORDINATOR", value_name = "URL")]
    pub coordinator: String,
    /// This agent's client certificate (from `vantage-coordinator pki issue-agent`); its region
    /// and name come from it.
    #[arg(long, env = "VANTAGE_CERT", value_name = "PEM", requires_all = ["key", "coordinator_ca"])]
    pub cert: Option<PathBuf>,
    /// The private key of --cert.
    #[arg(long, env = "VANTAGE_KEY", value_name = "PEM", requires = "cert")]
    pub key: Option<PathBuf>,
    /// The CA that signed the coordinator's certificate (`ca.pem` from `pki init`).
    #[arg(long, env = "VANTAGE_COORDINATOR_CA", value_name = "PEM", requires = "cert")]
    pub coordinator_ca: Option<PathBuf>,
    /// Plaintext, without a certificate: only for a coordinator on loopback (development, the demo).
    #[arg(long, conflicts_with = "cert")]
    pub insecure: bool,
    /// The region this agent probes from (default: the region in --cert).
    #[arg(long, env = "VANTAGE_REGION")]
    pub region: Option<String>,
    /// This agent's name (default: the name in --cert, else the host name).
    #[arg(long, env = "VANTAGE_AGENT_NAME")]
    pub name: Option<String>,
    #[command(flatten)]
    pub network: NetworkArgs,
    #[command(flatten)]
    pub watch: WatchArgs,
    /// Most probes running at once.
    #[arg(long, default_value_t = 256, value_parser = at_least_one, env = "VANTAGE_CONCURRENCY")]
    pub concurrency: usize,
    /// Most results kept while the coordinator cannot be reached (the oldest go first).
    #[arg(long, default_value_t = 100_000, value_parser = at_least_one, env = "VANTAGE_OUTBOX_LIMIT")]
    pub outbox_limit: usize,
}

/// A count that must not be zero: no probe slot, or no room for a result, would leave an agent
/// connected and silent.
fn at_least_one(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(e) => Err(e.to_string()),
    }
}

/// Everything an agent needs to run (the demo builds one directly).
pub struct AgentConfig {
    pub coordinator: String,
    pub region: String,
    pub name: String,
    /// `None`: plaintext.
    pub tls: Option<ClientTls>,
    pub prober: ProberConfig,
    pub concurrency: usize,
    pub outbox_limit: usize,
}

/// The agent's side of mTLS, read at start-up.
#[derive(Clone)]
pub struct ClientTls {
    pub cert_pem: Vec<u8>,
    pub key_pem: Vec<u8>,
    pub ca_pem: Vec<u8>,
}

fn read(path: &Path) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("reading {}", path.display()))
}

/// The identity in a PEM certificate.
fn identity_of(pem: &[u8], path: &Path) -> anyhow::Result<Option<Identity>> {
    let (_, block) = x509_parser::pem::parse_x509_pem(pem)
        .map_err(|_| anyhow::anyhow!("{} is not a PEM certificate", path.display()))?;
    let cert = identity::of_certificate(&block.contents).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    Ok(cert.identity)
}

impl RunArgs {
    /// Reads the certificate files and settles the region and name.
    pub fn config(&self) -> anyhow::Result<AgentConfig> {
        let (tls, from_cert) = match (&self.cert, &self.key, &self.coordinator_ca) {
            (Some(cert), Some(key), Some(ca)) => {
                anyhow::ensure!(
                    self.coordinator.starts_with("https://"),
                    "with --cert the coordinator URL must be https://, not {}",
                    self.coordinator
                );
                identity::warn_if_loose(key);
                let tls = ClientTls { cert_pem: read(cert)?, key_pem: read(key)?, ca_pem: read(ca)? };
                let from_cert = match identity_of(&tls.cert_pem, cert)? {
                    Some(Identity::Agent { region, name }) => Some((region, name)),
                    _ => anyhow::bail!("{} is not an agent certificate (see `pki issue-agent`)", cert.display()),
                };
                (Some(tls), from_cert)
            }
            _ if self.insecure => (None, None),
            _ => anyhow::bail!(
                "give --cert, --key and --coordinator-ca (mTLS), or --insecure for a coordinator on loopback"
            ),
        };
        if let (Some(region), Some((cert_region, _))) = (&self.region, &from_cert) {
            if region != cert_region {
                tracing::warn!(
                    region,
                    cert_region,
                    "--region differs from the certificate's: the coordinator will refuse it"
                );
            }
        }
        let region = match (&self.region, &from_cert) {
            (Some(region), _) => region.clone(),
            (None, Some((region, _))) => region.clone(),
            (None, None) => anyhow::bail!("--region is needed without a certificate"),
        };
        let name = self.name.clone().or_else(|| from_cert.map(|(_, name)| name)).unwrap_or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|h| h.trim().to_owned())
                .unwrap_or_else(|_| "agent".into())
        });
        Ok(AgentConfig {
            coordinator: self.coordinator.clone(),
            region,
            name,
            tls,
            prober: {
                let mut prober = self.network.prober_config();
                self.watch.apply(&mut prober);
                prober
            },
            concurrency: self.concurrency,
            outbox_limit: self.outbox_limit,
        })
    }
}

/// Runs the agent until the process ends.
pub async fn run(config: AgentConfig) -> Result<(), crate::probe::SetupError> {
    let prober = Prober::new(config.prober)?;
    let (results_tx, results_rx) = mpsc::channel(4096);
    let (commands_tx, mut commands_rx) = mpsc::channel(64);
    let mut scheduler = Scheduler::new(&config.name, prober, results_tx, config.concurrency).in_region(&config.region);
    let session =
        SessionConfig { coordinator: config.coordinator, name: config.name, region: config.region, tls: config.tls };
    // The session ends with this function (the demo runs agents as tasks and stops them).
    let session = tokio::spawn(session::run(session, Outbox::new(config.outbox_limit), results_rx, commands_tx));
    let _stop_session = AbortOnDrop(session);
    loop {
        let due = scheduler.next_due().map(tokio::time::Instant::from_std);
        let far = tokio::time::Instant::now() + Duration::from_secs(3600);
        tokio::select! {
            command = commands_rx.recv() => match command {
                Some(command) => scheduler.apply(command),
                None => return Ok(()),
            },
            _ = tokio::time::sleep_until(due.unwrap_or(far)) => scheduler.run_due(),
        }
    }
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, clap::Parser)]
    struct Line {
        #[command(flatten)]
        run: RunArgs,
    }

    #[test]
    fn run_takes_the_network_policy_like_check() {
        let line = <Line as clap::Parser>::try_parse_from([
            "run",
            "--coordinator",
            "http://127.0.0.1:7700",
            "--insecure",
            "--region",
            "r1",
            "--deny-network",
            "10.0.0.0/8",
            "--allow-network",
            "10.1.0.0/16",
        ])
        .unwrap();
        let policy = line.run.config().unwrap().prober.network;
        assert!(!policy.permits("10.2.0.1".parse().unwrap()));
        assert!(policy.permits("10.1.0.1".parse().unwrap()));
        assert!(!policy.permits("169.254.169.254".parse().unwrap()), "the defaults hold for `run` too");
    }
}
