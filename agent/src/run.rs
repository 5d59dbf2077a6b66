//! `vantage-agent run`: connect to the coordinator, probe what it assigns, report back.

use std::time::Duration;

use clap::Args;
use tokio::sync::mpsc;

use crate::check::NetworkArgs;
use crate::probe::{Prober, ProberConfig};
use crate::scheduler::Scheduler;
use crate::session::{self, Outbox, SessionConfig};

#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    /// The coordinator's gRPC URL.
    #[arg(long, env = "VANTAGE_COORDINATOR", value_name = "URL")]
    pub coordinator: String,
    /// The region this agent probes from.
    #[arg(long, env = "VANTAGE_REGION")]
    pub region: String,
    /// This agent's name (default: the host name).
    #[arg(long, env = "VANTAGE_AGENT_NAME")]
    pub name: Option<String>,
    #[command(flatten)]
    pub network: NetworkArgs,
    /// Most probes running at once.
    #[arg(long, default_value_t = 256, env = "VANTAGE_CONCURRENCY")]
    pub concurrency: usize,
    /// Most results kept while the coordinator cannot be reached (the oldest go first).
    #[arg(long, default_value_t = 100_000, env = "VANTAGE_OUTBOX_LIMIT")]
    pub outbox_limit: usize,
}

/// Everything an agent needs to run (the demo builds one directly).
pub struct AgentConfig {
    pub coordinator: String,
    pub region: String,
    pub name: String,
    pub prober: ProberConfig,
    pub concurrency: usize,
    pub outbox_limit: usize,
}

impl RunArgs {
    pub fn config(&self) -> AgentConfig {
        let name = self.name.clone().unwrap_or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|h| h.trim().to_owned())
                .unwrap_or_else(|_| "agent".into())
        });
        AgentConfig {
            coordinator: self.coordinator.clone(),
            region: self.region.clone(),
            name,
            prober: self.network.prober_config(),
            concurrency: self.concurrency,
            outbox_limit: self.outbox_limit,
        }
    }
}

/// Runs the agent until the process ends.
pub async fn run(config: AgentConfig) -> Result<(), crate::probe::SetupError> {
    let prober = Prober::new(config.prober)?;
    let (results_tx, results_rx) = mpsc::channel(4096);
    let (commands_tx, mut commands_rx) = mpsc::channel(64);
    let mut scheduler = Scheduler::new(&config.name, prober, results_tx, config.concurrency);
    let session = SessionConfig { coordinator: config.coordinator, name: config.name, region: config.region };
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

/// Ctrl-C or SIGTERM (what systemd and Kubernetes send).
pub async fn shutdown_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
