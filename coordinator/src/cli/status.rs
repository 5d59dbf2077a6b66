//! `vantage-coordinator status`: one row per target (verdict, which regions fail, the cause,
//! certificate days left and latency), once, as JSON, or kept up to date with `--watch`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::IsTerminal;

use clap::Args;
use vantage_proto::v1::{FailingChannel, ListStatusRequest, TargetStatus, WatchStatusRequest};

use super::{ClientArgs, client, status_error};
use crate::clock::timestamp_json as ts;
use crate::names::{cert_health, verdict};
use crate::view::{describe_silence, to_json};

#[derive(Debug, Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    /// Keep the table up to date as verdicts change (until Ctrl-C).
    #[arg(long)]
    pub watch: bool,
    /// Print JSON instead of the table.
    #[arg(long)]
    pub json: bool,
}

pub async fn run_status(args: StatusArgs) -> anyhow::Result<()> {
    let mut client = client(&args.client).await?;
    let color = std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    if !args.watch {
        let response = client.list_status(ListStatusRequest::default()).await.map_err(status_error)?.into_inner();
        let statuses = response.targets;
        if args.json {
            let json: Vec<_> = statuses.iter().map(to_json).collect();
            let failing: Vec<_> = response
                .failing_channels
                .iter()
                .map(|c| {
                    serde_json::json!({
                        "channel": c.channel, "since": ts(c.since.as_ref()), "error": c.error, "alerted": c.alerted,
                    })
                })
                .collect();
            let json = serde_json::json!({ "targets": json, "failing_channels": failing });
            println!("{}", serde_json::to_string_pretty(&json)?);
        } else {
            print!("{}", render_failing_channels(&response.failing_channels, color));
            print!("{}", render_table(&statuses, color));
        }
        return Ok(());
    }
    let mut stream = client.watch_status(WatchStatusRequest::default()).await.map_err(status_error)?.into_inner();
    let mut current: BTreeMap<String, TargetStatus> = BTreeMap::new();
    while let Some(status) = stream.message().await.map_err(status_error)? {
        if args.json {
            println!("{}", serde_json::to_string(&to_json(&status))?);
            continue;
        }
        current.insert(status.url.clone(), status);
        let statuses: Vec<TargetStatus> = current.values().cloned().collect();
        if color {
            print!("\x1b[2J\x1b[H");
        }
        println!("{}", render_table(&statuses, color));
    }
    anyhow::bail!("the coordinator closed the stream")
}

/// The consolidated table.
pub fn render_table(statuses: &[TargetStatus], color: bool) -> String {
    let paint = |code: &str, text: String| if color { format!("\x1b[{code}m{text}\x1b[0m") } else { text };
    let rows: Vec<[String; 6]> = statuses
        .iter()
        .map(|s| {
            let failing = if s.failing_regions.is_empty() {
                format!("0/{}", s.regions.len())
            } else {
                format!("{}/{} {}", s.failing_regions.len(), s.regions.len(), s.failing_regions.join(","))
            };
            let cause = s.cause.as_ref().map_or("-".to_owned(), |c| c.code.clone());
            let cert =
                s.cert.as_ref().map_or("-".to_owned(), |c| format!("{}d {}", c.days_remaining, cert_health(c.health)));
            let latency = s
                .regions
                .iter()
                .filter(|r| r.last_result_time.is_some())
                .map(|r| r.latency_ms)
                .fold(None, |max: Option<f64>, l| Some(max.map_or(l, |m| m.max(l))))
                .map_or("-".to_owned(), |l| format!("{l:.0} ms"));
            [s.url.clone(), verdict(s.verdict).to_owned(), failing, cause, cert, latency]
        })
        .collect();
    let header = ["TARGET", "VERDICT", "FAILING REGIONS", "CAUSE", "CERTIFICATE", "LATENCY"].map(str::to_owned);
    let width = |i: usize| rows.iter().chain([&header]).map(|r| r[i].chars().count()).max().unwrap_or(0);
    let widths: Vec<usize> = (0..6).map(width).collect();
    let mut out = String::new();
    for (n, row) in [header].iter().chain(&rows).enumerate() {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            let padded =
                if i == 5 { format!("{cell:>w$}", w = widths[i]) } else { format!("{cell:<w$}", w = widths[i]) };
            let padded = match (n, i, cell.as_str()) {
                (0, _, _) | (_, 0, _) | (_, 2.., _) => padded,
                (_, 1, "UP") => paint("32", padded),
                (_, 1, "DEGRADED") => paint("33", padded),
                (_, 1, "DOWN") => paint("31", padded),
                _ => paint("2", padded),
            };
            line.push_str(&padded);
            if i < 5 {
                line.push_str("  ");
            }
        }
        let _ = writeln!(out, "{}", line.trim_end());
    }
    for status in statuses {
        if let Some(silence) = &status.silence {
            let _ = writeln!(out, "silenced: {} by {}", status.url, describe_silence(silence));
        }
    }
    out
}

/// One line per alert channel whose receiver says it is misconfigured: shown above the table,
/// since alerts to it are not being delivered.
pub fn render_failing_channels(channels: &[FailingChannel], color: bool) -> String {
    let mut out = String::new();
    for c in channels {
        let since = ts(c.since.as_ref());
        let told = if c.alerted { "; the other channels were told" } else { "" };
        let line = format!(
            "ALERT CHANNEL FAILING: {} since {}: {}: its alerts are not being delivered (retried); fix its URL or \
             credentials{told}",
            c.channel,
            since.as_str().unwrap_or("?"),
            c.error
        );
        let _ = writeln!(out, "{}", if color { format!("\x1b[1;31m{line}\x1b[0m") } else { line });
    }
    out
}
