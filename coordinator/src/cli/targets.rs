//! `vantage-coordinator targets`: add (or replace), remove and list targets.

use clap::{Args, Subcommand};
use vantage_proto::v1::{DeleteTargetRequest, ListTargetsRequest, TargetSpec, UpsertTargetRequest};

use super::{ClientArgs, client, duration, label, status_error};

#[derive(Debug, Subcommand)]
pub enum TargetsCommand {
    /// Add or replace a target.
    Add(AddTarget),
    /// Remove a target.
    Rm { url: String },
    /// List targets.
    Ls,
}

#[derive(Debug, Args)]
pub struct TargetsArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    #[command(subcommand)]
    pub command: TargetsCommand,
}

#[derive(Debug, Args)]
pub struct AddTarget {
    pub url: String,
    /// How often each region probes it (default 60s).
    #[arg(long, value_parser = duration)]
    pub interval: Option<std::time::Duration>,
    /// Time limit for one probe (default 10s).
    #[arg(long, value_parser = duration)]
    pub timeout: Option<std::time::Duration>,
    /// A region that probes it (repeatable; default every region with agents).
    #[arg(long = "region")]
    pub regions: Vec<String>,
    /// Regions that must agree before it is DOWN (default a strict majority).
    #[arg(long, default_value_t = 0)]
    pub quorum: u32,
    #[arg(long)]
    pub all_backends: bool,
    #[arg(long = "expect-status")]
    pub expect_status: Vec<u32>,
    #[arg(long = "expect-ip")]
    pub expect_ips: Vec<String>,
    #[arg(long, default_value_t = 0)]
    pub warn_days: u32,
    #[arg(long, default_value_t = 0)]
    pub critical_days: u32,
    /// A label, KEY=VALUE (repeatable).
    #[arg(long = "label", value_name = "KEY=VALUE", value_parser = label)]
    pub labels: Vec<(String, String)>,
    /// Expected SHA-256 of the served leaf certificate or of its public key (SPKI), 64 hex
    /// digits (repeatable; one must match).
    #[arg(long = "pin-sha256", value_name = "HEX")]
    pub pin_sha256: Vec<String>,
    /// Hold-down: an incident must last this long before `down` is sent (default `[alerts]`).
    #[arg(long, value_parser = duration)]
    pub alert_after: Option<std::time::Duration>,
    /// Hold-down: it must be up this long before `recovered` is sent (default `[alerts]`).
    #[arg(long, value_parser = duration)]
    pub recover_after: Option<std::time::Duration>,
    /// Flap damping over this many probe intervals (0: off for it; default `[alerts]`).
    #[arg(long)]
    pub flap_window: Option<u32>,
    /// Flapping from this share of changed intervals, in percent (with --flap-low).
    #[arg(long, requires = "flap_low")]
    pub flap_high: Option<u32>,
    /// ... until fewer than this share change (with --flap-high).
    #[arg(long, requires = "flap_high")]
    pub flap_low: Option<u32>,
}

pub async fn run_targets(args: TargetsArgs) -> anyhow::Result<()> {
    let mut client = client(&args.client).await?;
    match args.command {
        TargetsCommand::Add(a) => {
            let spec = TargetSpec {
                url: a.url,
                interval: a.interval.map(crate::spec::from_duration),
                timeout: a.timeout.map(crate::spec::from_duration),
                regions: a.regions,
                quorum: a.quorum,
                all_backends: a.all_backends,
                expect_status: a.expect_status,
                expect_ips: a.expect_ips,
                warn_days: a.warn_days,
                critical_days: a.critical_days,
                source: String::new(),
                labels: a.labels.into_iter().collect(),
                pin_sha256: a.pin_sha256,
                alert_after: a.alert_after.map(crate::spec::from_duration),
                recover_after: a.recover_after.map(crate::spec::from_duration),
                flap_window: a.flap_window,
                flap_high: a.flap_high,
                flap_low: a.flap_low,
            };
            let r = client
                .upsert_target(UpsertTargetRequest { target: Some(spec) })
                .await
                .map_err(status_error)?
                .into_inner();
            let t = r.target.unwrap_or_default();
            println!("{} {}", if r.created { "added" } else { "updated" }, t.url);
        }
        TargetsCommand::Rm { url } => {
            let r = client
                .delete_target(DeleteTargetRequest { url: url.clone() })
                .await
                .map_err(status_error)?
                .into_inner();
            if !r.deleted {
                anyhow::bail!("no target {url}");
            }
            println!("removed {url}");
        }
        TargetsCommand::Ls => {
            let targets = client.list_targets(ListTargetsRequest {}).await.map_err(status_error)?.into_inner().targets;
            for t in targets {
                let (interval, timeout) = crate::spec::timing(&t);
                let regions = if t.regions.is_empty() { "all regions".to_owned() } else { t.regions.join(",") };
                println!("{}  every {:?}, timeout {:?}, {regions}, from {}", t.url, interval, timeout, t.source);
            }
        }
    }
    Ok(())
}
