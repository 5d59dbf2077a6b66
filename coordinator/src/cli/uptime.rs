//! `vantage-coordinator uptime [URL] [--window 30d]… [--json]`: availability per target (and,
//! for one URL, per region) over the windows asked for (24 h, 7, 30 and 90 days when none), from
//! `GetUptime`.

use std::fmt::Write as _;

use clap::Args;
use vantage_proto::v1::{Availability, GetUptimeRequest, TargetUptime};

use super::{ClientArgs, client, status_error};
use crate::clock::human_duration;
use crate::view::{percent, uptime_json};

#[derive(Debug, Args)]
pub struct UptimeArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    /// One target (every target when left out); its regions' figures are shown too.
    pub url: Option<String>,
    /// A window back from now (`24h`, `30d`, at most 400d); repeat for more. Default: 24h, 7d,
    /// 30d and 90d.
    #[arg(long = "window", value_name = "DURATION")]
    pub windows: Vec<String>,
    /// Print JSON instead of the table.
    #[arg(long)]
    pub json: bool,
}

pub async fn run_uptime(args: UptimeArgs) -> anyhow::Result<()> {
    let mut client = client(&args.client).await?;
    let request = GetUptimeRequest { url: args.url.clone().unwrap_or_default(), windows: args.windows.clone() };
    let targets = client.get_uptime(request).await.map_err(status_error)?.into_inner().targets;
    if args.json {
        let json: Vec<_> = targets.iter().map(uptime_json).collect();
        println!("{}", serde_json::to_string_pretty(&serde_json::json!({ "targets": json }))?);
    } else {
        print!("{}", render(&targets, args.url.is_some()));
    }
    Ok(())
}

/// One line per target (or region) and window.
pub fn render(targets: &[TargetUptime], regions: bool) -> String {
    let mut rows: Vec<[String; 7]> = Vec::new();
    let row = |name: &str, a: &Availability| {
        let seconds = |s: f64| if s > 0.0 { human_duration((s * 1000.0) as i64) } else { "-".to_owned() };
        [
            name.to_owned(),
            a.window.clone(),
            percent(a),
            seconds(a.down_seconds),
            seconds(a.degraded_seconds),
            seconds(a.unknown_seconds),
            a.incidents.to_string(),
        ]
    };
    for t in targets {
        rows.extend(t.windows.iter().map(|a| row(&t.url, a)));
        if regions {
            for r in &t.regions {
                rows.extend(r.windows.iter().map(|a| row(&format!("  region {}", r.region), a)));
            }
        }
    }
    let header = ["TARGET", "WINDOW", "AVAILABILITY", "DOWN", "DEGRADED", "UNKNOWN", "INCIDENTS"].map(str::to_owned);
    let mut widths = header.clone().map(|h| h.len());
    for r in &rows {
        for (w, cell) in widths.iter_mut().zip(r) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for r in std::iter::once(&header).chain(&rows) {
        let mut line = String::new();
        for (i, (cell, w)) in r.iter().zip(widths).enumerate() {
            // Figures right-aligned, names left.
            let _ = if i < 2 { write!(line, "{cell:<w$}  ") } else { write!(line, "{cell:>w$}  ") };
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    if targets.is_empty() {
        out.push_str("no targets\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_shows_availability_down_time_and_incidents() {
        let a = Availability {
            window: "30d".into(),
            percent: Some(99.95),
            up_seconds: 2_590_704.0,
            down_seconds: 1_296.0,
            incidents: 2,
            ..Default::default()
        };
        let none = Availability { window: "24h".into(), unknown_seconds: 60.0, ..Default::default() };
        let t = TargetUptime { url: "https://a.example/".into(), windows: vec![none, a], regions: vec![] };
        let table = render(&[t], false);
        let lines: Vec<&str> = table.lines().collect();
        assert!(lines[0].starts_with("TARGET") && lines[0].ends_with("INCIDENTS"), "{table}");
        assert!(lines[1].contains("24h") && lines[1].contains(" -  "), "nothing judged shows as -: {table}");
        assert!(lines[2].contains("99.950%") && lines[2].contains("21m 36s") && lines[2].ends_with('2'), "{table}");
    }
}
