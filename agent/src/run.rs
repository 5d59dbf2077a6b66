//! `vantage-agent run`: connect to the coordinator (or to each of several: a pair, or shards),
//! probe what they assign, report back. Each coordinator has its own session, outbox and batch
//! numbering. The probes run on probe threads (`probe_threads`).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use clap::Args;
use tokio::sync::{Semaphore, mpsc};
use tracing::Instrument;
use vantage_shared::identity::{self, Identity};

use crate::check::{NetworkArgs, WatchArgs};
use crate::probe::{Prober, ProberConfig};
use crate::probe_threads::{COMMANDS_QUEUED, ProbeThread, route};
use crate::scheduler::{Command, Coordinator, MAX_COORDINATORS, Outlet, Scheduler};
use crate::session::{self, Outbox, SessionConfig};

#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    /// The coordinator's gRPC URL (https://… with mTLS). Repeat it (or give a comma-separated
    /// list in VANTAGE_COORDINATOR) to serve several coordinators: each gets its own session and
    /// outbox, and the results of the targets it assigned.
    #[arg(long, env = "VANTAGE_COORDINATOR", value_name = "URL", value_delimiter = ',', required = true)]
    pub coordinator: Vec<String>,
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
    /// Threads that probe (default: one per CPU this process may use). Each runs the probes of
    /// its share of the targets.
    #[arg(long, value_parser = at_least_one, env = "VANTAGE_PROBE_THREADS")]
    pub probe_threads: Option<usize>,
    /// Most results kept while a coordinator cannot be reached (the oldest go first), per
    /// coordinator.
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
    /// Each coordinator's gRPC URL (at least one).
    pub coordinators: Vec<String>,
    pub region: String,
    pub name: String,
    /// `None`: plaintext.
    pub tls: Option<ClientTls>,
    pub prober: ProberConfig,
    pub concurrency: usize,
    pub outbox_limit: usize,
    pub probe_threads: usize,
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
                for url in &self.coordinator {
                    anyhow::ensure!(
                        url.starts_with("https://"),
                        "with --cert the coordinator URL must be https://, not {url}"
                    );
                }
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
        let mut coordinators: Vec<String> = Vec::new();
        for url in &self.coordinator {
            let url = url.trim();
            anyhow::ensure!(!url.is_empty(), "--coordinator: an empty URL (a stray comma in VANTAGE_COORDINATOR?)");
            anyhow::ensure!(!coordinators.iter().any(|c| c == url), "--coordinator {url} is given twice");
            coordinators.push(url.to_owned());
        }
        anyhow::ensure!(
            coordinators.len() <= MAX_COORDINATORS,
            "--coordinator: at most {MAX_COORDINATORS} coordinators"
        );
        Ok(AgentConfig {
            coordinators,
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
            probe_threads: self
                .probe_threads
                .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)),
        })
    }
}

/// Runs the agent until the process ends.
pub async fn run(config: AgentConfig) -> Result<(), crate::probe::SetupError> {
    let prober = Prober::new(config.prober)?;
    // Every session's commands come here, marked with the coordinator they came from.
    let (commands_tx, mut commands_rx) = mpsc::channel::<(Coordinator, Command)>(COMMANDS_QUEUED);
    let mut outlets = Vec::new();
    // The sessions end with this function (the demo runs agents as tasks and stops them).
    let mut _stop_sessions = Vec::new();
    for (from, coordinator) in config.coordinators.iter().enumerate() {
        // Results wait here while the session is busy (connecting, sending), as many as its
        // outbox holds: only beyond that does a slow coordinator lose any.
        let (results_tx, results_rx) = mpsc::channel(config.outbox_limit.max(session::BATCH_SIZE));
        let (session_commands, mut session_commands_rx) = mpsc::channel(COMMANDS_QUEUED);
        let session = SessionConfig {
            coordinator: coordinator.clone(),
            name: config.name.clone(),
            region: config.region.clone(),
            tls: config.tls.clone(),
        };
        // Every log line of a session names its coordinator.
        let span = tracing::info_span!("session", coordinator = %coordinator);
        let running = session::run(session, Outbox::new(config.outbox_limit), results_rx, session_commands);
        _stop_sessions.push(AbortOnDrop(tokio::spawn(running.instrument(span))));
        let commands = commands_tx.clone();
        _stop_sessions.push(AbortOnDrop(tokio::spawn(async move {
            while let Some(command) = session_commands_rx.recv().await {
                if commands.send((from, command)).await.is_err() {
                    return;
                }
            }
        })));
        outlets.push(Outlet::new(coordinator, results_tx));
    }
    drop(commands_tx);
    let limit = Arc::new(Semaphore::new(config.concurrency));
    let mut threads = Vec::new();
    for index in 0..config.probe_threads.max(1) {
        let scheduler =
            Scheduler::serving(&config.name, prober.clone(), outlets.clone(), limit.clone()).in_region(&config.region);
        threads.push(ProbeThread::start(index, scheduler)?);
    }
    while let Some((from, command)) = commands_rx.recv().await {
        route(&threads, from, command, &config.coordinators[from]).await;
    }
    Ok(())
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

    #[test]
    fn coordinator_is_repeatable_and_the_environment_takes_a_list() {
        let parse = |args: &[&str]| <Line as clap::Parser>::try_parse_from(args).map(|l| l.run.config());
        let two = parse(&[
            "run",
            "--coordinator",
            "http://a:7700",
            "--coordinator",
            "http://b:7700",
            "--insecure",
            "--region",
            "r1",
        ]);
        assert_eq!(two.unwrap().unwrap().coordinators, ["http://a:7700", "http://b:7700"]);
        let listed = parse(&["run", "--coordinator", "http://a:7700,http://b:7700", "--insecure", "--region", "r1"]);
        assert_eq!(
            listed.unwrap().unwrap().coordinators,
            ["http://a:7700", "http://b:7700"],
            "as VANTAGE_COORDINATOR gives it"
        );
        let twice = parse(&["run", "--coordinator", "http://a:7700,http://a:7700", "--insecure", "--region", "r1"]);
        assert!(twice.unwrap().err().unwrap().to_string().contains("given twice"));
        let stray = parse(&["run", "--coordinator", "http://a:7700,", "--insecure", "--region", "r1"]);
        assert!(stray.unwrap().err().unwrap().to_string().contains("empty URL"));
        assert!(parse(&["run", "--insecure", "--region", "r1"]).is_err(), "one coordinator at least");
    }
}
