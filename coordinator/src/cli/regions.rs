//! `vantage-coordinator regions`: list the regions, or forget one that is gone for good.

use std::fmt::Write as _;

use clap::{Args, Subcommand};
use vantage_proto::v1::{ForgetRegionRequest, ListRegionsRequest, RegionInfo};

use super::{ClientArgs, client, status_error};
use crate::clock::timestamp_json as ts;

#[derive(Debug, Subcommand)]
pub enum RegionsCommand {
    /// List the regions: agents connected, last seen, and whether (or when) they leave the
    /// default region set.
    Ls,
    /// Take a region without connected agents out of the default region set (of targets without
    /// their own regions) until an agent connects from it again.
    Forget { region: String },
}

#[derive(Debug, Args)]
pub struct RegionsArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    #[command(subcommand)]
    pub command: RegionsCommand,
}

/// The `regions ls` table.
pub fn render_regions(regions: &[RegionInfo]) -> String {
    let when = |t: Option<&prost_types::Timestamp>| ts(t).as_str().unwrap_or("-").to_owned();
    let rows: Vec<[String; 4]> = regions
        .iter()
        .map(|r| {
            let mut state = if r.forgotten {
                format!("forgotten since {} (back when an agent connects)", when(r.forgotten_at.as_ref()))
            } else if r.connected_agents > 0 {
                "in the region set".to_owned()
            } else if r.forget_at.is_some() {
                format!("in the region set, without agents; forgotten at {}", when(r.forget_at.as_ref()))
            } else {
                "in the region set, without agents".to_owned()
            };
            if r.impaired {
                // README: "Impaired regions".
                state = format!(
                    "{state}; IMPAIRED since {}: fails {} of its {} targets alone, not counted",
                    when(r.impaired_since.as_ref()),
                    r.targets_failing_alone,
                    r.targets_judged
                );
            }
            let seen = if r.connected_agents > 0 { "now".to_owned() } else { when(r.last_seen.as_ref()) };
            [r.region.clone(), format!("{}/{}", r.connected_agents, r.agents), seen, state]
        })
        .collect();
    let header = ["REGION", "AGENTS", "LAST SEEN", "STATE"].map(str::to_owned);
    let width = |i: usize| rows.iter().chain([&header]).map(|r| r[i].chars().count()).max().unwrap_or(0);
    let widths: Vec<usize> = (0..4).map(width).collect();
    let mut out = String::new();
    for row in [header].iter().chain(&rows) {
        let line: Vec<String> = row.iter().enumerate().map(|(i, c)| format!("{c:<w$}", w = widths[i])).collect();
        let _ = writeln!(out, "{}", line.join("  ").trim_end());
    }
    out
}

pub async fn run_regions(args: RegionsArgs) -> anyhow::Result<()> {
    let mut client = client(&args.client).await?;
    match args.command {
        RegionsCommand::Ls => {
            let regions = client.list_regions(ListRegionsRequest {}).await.map_err(status_error)?.into_inner().regions;
            print!("{}", render_regions(&regions));
        }
        RegionsCommand::Forget { region } => {
            let r = client
                .forget_region(ForgetRegionRequest { region: region.clone() })
                .await
                .map_err(status_error)?
                .into_inner();
            if !r.forgotten {
                anyhow::bail!("region {region} is not in the default region set (unknown, or forgotten already)");
            }
            println!("forgot region {region}: it is out of the default region set until an agent connects from it");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_impaired_region_says_since_when_and_how_many_targets_it_fails_alone() {
        let region = |name: &str, impaired: bool| RegionInfo {
            region: name.into(),
            connected_agents: 1,
            agents: 1,
            impaired,
            impaired_since: impaired.then(|| crate::clock::timestamp(1_764_000_000_000)),
            targets_judged: 6,
            targets_failing_alone: if impaired { 6 } else { 0 },
            ..Default::default()
        };
        let table = render_regions(&[region("eu-west", true), region("us-east", false)]);
        let lines: Vec<&str> = table.lines().collect();
        assert!(
            lines[1].ends_with(
                "in the region set; IMPAIRED since 2025-11-24T16:00:00Z: fails 6 of its 6 targets alone, not counted"
            ),
            "{table}"
        );
        assert!(lines[2].ends_with("  in the region set"), "{table}");
    }
}
