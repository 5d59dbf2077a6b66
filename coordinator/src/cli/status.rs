//! `vantage-coordinator status`: one row per target (verdict, which regions fail, the cause,
//! certificate days left and latency), once, as JSON, or kept up to date with `--watch` (whole
//! tables, redrawn when something but a latency changes, their columns kept in place).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{IsTerminal, Write as _};

use clap::Args;
use vantage_proto::v1::{FailingChannel, ListStatusRequest, TargetStatus, WatchStatusRequest};
use vantage_shared::FailureCode;

use super::{ClientArgs, client, status_error};
use crate::clock::timestamp_json as ts;
use crate::names::{VERDICTS, cert_health, verdict};
use crate::view::{describe_flapping, describe_silence, to_json};

#[derive(Debug, Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    /// Keep the table up to date (until Ctrl-C): a whole table each time a verdict, failing
    /// regions, a cause or a certificate changes.
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
    if args.json {
        while let Some(status) = stream.message().await.map_err(status_error)? {
            let line =
                if status.removed { serde_json::json!({"url": status.url, "removed": true}) } else { to_json(&status) };
            println!("{}", serde_json::to_string(&line)?);
        }
        anyhow::bail!("the coordinator closed the stream")
    }
    // The stream opens with every target's status, one message each, and nothing marks where that
    // ends: the first frame comes from `ListStatus` (asked after subscribing, so no change falls
    // between), so no frame is ever a partial table.
    let listed = client.list_status(ListStatusRequest::default()).await.map_err(status_error)?.into_inner();
    let mut current: BTreeMap<String, TargetStatus> = listed.targets.into_iter().map(|s| (s.url.clone(), s)).collect();
    let terminal = std::io::stdout().is_terminal();
    let mut columns = Columns::default();
    let mut shown = None;
    loop {
        let statuses: Vec<TargetStatus> = current.values().cloned().collect();
        let key = frame_key(&statuses);
        if shown.as_ref() != Some(&key) {
            let table = columns.render(&statuses, color);
            if terminal {
                print!("{CLEAR}{table}");
            } else {
                println!("{table}");
            }
            std::io::stdout().flush()?;
            shown = Some(key);
        }
        let Some(status) = stream.message().await.map_err(status_error)? else {
            anyhow::bail!("the coordinator closed the stream")
        };
        // The stream's opening statuses may be older than the listing: a target's status only
        // replaces one built from results at least as old.
        if status.removed {
            current.remove(&status.url);
        } else if current.get(&status.url).is_none_or(|known| newest_result(&status) >= newest_result(known)) {
            current.insert(status.url.clone(), status);
        }
    }
}

/// Clears a terminal and puts the cursor at its top left, for a redraw.
pub const CLEAR: &str = "\x1b[H\x1b[2J";

/// When the newest result behind a status was taken (ms; `i64::MIN` for none).
fn newest_result(s: &TargetStatus) -> i64 {
    s.regions.iter().filter_map(|r| r.last_result_time.as_ref()).map(crate::clock::ms).max().unwrap_or(i64::MIN)
}

const HEADER: [&str; 6] = ["TARGET", "VERDICT", "FAILING REGIONS", "CAUSE", "CERTIFICATE", "LATENCY"];
const LATENCY: usize = 5;

/// A target's cells in the table, and the widest its failing-regions cell can get (every one of
/// its regions failing), so that column does not move as regions fail and recover.
fn row(s: &TargetStatus) -> ([String; 6], usize) {
    let mut failing = if s.failing_regions.is_empty() {
        format!("0/{}", s.regions.len())
    } else {
        format!("{}/{} {}", s.failing_regions.len(), s.regions.len(), s.failing_regions.join(","))
    };
    if !s.discounted_regions.is_empty() {
        // Shown, not counted (README: "Impaired regions").
        failing.push_str(&format!(" ({} impaired)", s.discounted_regions.join(",")));
    }
    let regions: Vec<&str> = s.regions.iter().map(|r| r.region.as_str()).collect();
    let widest_failing =
        format!("{0}/{0} {1}", regions.len(), regions.join(",")).chars().count().max(failing.chars().count());
    let cause = s.cause.as_ref().map_or("-".to_owned(), |c| c.code.clone());
    let cert = s.cert.as_ref().map_or("-".to_owned(), |c| format!("{}d {}", c.days_remaining, cert_health(c.health)));
    let latency = s
        .regions
        .iter()
        .filter(|r| r.last_result_time.is_some())
        .map(|r| r.latency_ms)
        .fold(None, |max: Option<f64>, l| Some(max.map_or(l, |m| m.max(l))))
        .map_or("-".to_owned(), |l| format!("{l:.0} ms"));
    ([s.url.clone(), verdict(s.verdict).to_owned(), failing, cause, cert, latency], widest_failing)
}

/// What a frame of the table says apart from latencies: a live view redraws only when this
/// changes (a verdict, the failing regions, a cause, a certificate, a silence, a target added),
/// not every time a probe comes back a millisecond faster.
pub fn frame_key(statuses: &[TargetStatus]) -> Vec<Vec<String>> {
    statuses
        .iter()
        .map(|s| {
            let (mut cells, _) = row(s);
            cells[LATENCY].clear();
            let silence = s.silence.as_ref().map(describe_silence).unwrap_or_default();
            let flapping = s.flapping.as_ref().map(describe_flapping).unwrap_or_default();
            cells.into_iter().chain([silence, flapping]).collect()
        })
        .collect()
}

/// The table's column widths, which only grow: a view redrawn frame after frame keeps its
/// columns where they were. They start wide enough for any verdict, any failure code, most
/// certificates and latencies, so a target going down does not push the columns right.
#[derive(Debug, Clone)]
pub struct Columns([usize; 6]);

impl Default for Columns {
    fn default() -> Columns {
        let longest_code = FailureCode::ALL.iter().map(|c| c.as_str().len()).max().unwrap_or(0);
        let longest_verdict = VERDICTS.iter().map(|v| verdict(*v as i32).len()).max().unwrap_or(0);
        let minimum = [0, longest_verdict, 0, longest_code, "999d critical".len(), "10000 ms".len()];
        Columns(std::array::from_fn(|i| minimum[i].max(HEADER[i].len())))
    }
}

impl Columns {
    /// The consolidated table, its columns at least as wide as in every table rendered before.
    pub fn render(&mut self, statuses: &[TargetStatus], color: bool) -> String {
        let paint = |code: &str, text: String| if color { format!("\x1b[{code}m{text}\x1b[0m") } else { text };
        let rows: Vec<[String; 6]> = statuses
            .iter()
            .map(|s| {
                let (cells, widest_failing) = row(s);
                self.0[2] = self.0[2].max(widest_failing);
                cells
            })
            .collect();
        let header = HEADER.map(str::to_owned);
        for r in &rows {
            for (i, cell) in r.iter().enumerate() {
                self.0[i] = self.0[i].max(cell.chars().count());
            }
        }
        let widths = self.0;
        let mut out = String::new();
        for (n, row) in [header].iter().chain(&rows).enumerate() {
            let mut line = String::new();
            for (i, cell) in row.iter().enumerate() {
                let padded = if i == LATENCY {
                    format!("{cell:>w$}", w = widths[i])
                } else {
                    format!("{cell:<w$}", w = widths[i])
                };
                let padded = match (n, i, cell.as_str()) {
                    (0, _, _) | (_, 0, _) | (_, 2 | 3 | 5, _) => padded,
                    // The certificate in the colours of the alerts it raises.
                    (_, 4, c) if c.ends_with(" expired") || c.ends_with(" critical") => paint("31", padded),
                    (_, 4, c) if c.ends_with(" warning") => paint("33", padded),
                    (_, 4, _) => padded,
                    (_, 1, "UP") => paint("32", padded),
                    (_, 1, "DEGRADED") => paint("33", padded),
                    (_, 1, "DOWN") => paint("31", padded),
                    _ => paint("2", padded),
                };
                line.push_str(&padded);
                if i < LATENCY {
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
        for status in statuses {
            if let Some(flapping) = &status.flapping {
                let _ = writeln!(out, "flapping: {} {}", status.url, describe_flapping(flapping));
            }
        }
        out
    }
}

/// The consolidated table, once.
pub fn render_table(statuses: &[TargetStatus], color: bool) -> String {
    Columns::default().render(statuses, color)
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

#[cfg(test)]
mod tests {
    use vantage_proto::v1::{Cause, CertSummary, Opinion, RegionStatus, Verdict};

    use super::*;

    fn status(url: &str, v: Verdict, failing: &[&str], cause: Option<&str>, latency: f64) -> TargetStatus {
        let regions = ["ap-south", "eu-west", "us-east"]
            .map(|r| RegionStatus {
                region: r.into(),
                opinion: if failing.contains(&r) { Opinion::Down } else { Opinion::Up } as i32,
                latency_ms: latency,
                last_result_time: Some(crate::clock::timestamp(1_000)),
                ..Default::default()
            })
            .to_vec();
        TargetStatus {
            url: url.into(),
            verdict: v as i32,
            cause: cause.map(|c| Cause { code: c.into(), ..Default::default() }),
            cert: Some(CertSummary { days_remaining: 90, health: 1, not_after: String::new() }),
            regions,
            failing_regions: failing.iter().map(|f| f.to_string()).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn columns_stay_put_as_verdicts_causes_and_failing_regions_change() {
        let calm = [
            status("https://a.test/", Verdict::Unknown, &[], None, 5.0),
            status("https://b.test/", Verdict::Up, &[], None, 5.0),
        ];
        let stormy = [
            status("https://a.test/", Verdict::Degraded, &["ap-south"], Some("tls_handshake_timeout"), 2000.0),
            status("https://b.test/", Verdict::Down, &["ap-south", "eu-west", "us-east"], Some("cert_expired"), 4.0),
        ];
        let header = |table: &str| table.lines().next().unwrap().to_owned();
        let (before, after) = (render_table(&calm, false), render_table(&stormy, false));
        assert_eq!(header(&before), header(&after), "{before}\n{after}");
        // Every cell of every row starts where its heading does.
        for table in [&before, &after] {
            let starts: Vec<usize> = HEADER.iter().map(|h| header(table).find(h).unwrap()).collect();
            for line in table.lines().skip(1) {
                for (i, start) in starts.iter().enumerate().skip(1).take(4) {
                    assert_eq!(&line[start - 2..*start], "  ", "column {i} of {line:?}");
                    assert_ne!(&line[*start..start + 1], " ", "column {i} of {line:?}");
                }
            }
        }
        // A wider cell widens its column, and the column stays that wide afterwards.
        let mut columns = Columns::default();
        let mut odd = stormy.clone();
        odd[0].cause = Some(Cause { code: "a_failure_code_from_a_newer_agent".into(), ..Default::default() });
        let wide = header(&columns.render(&odd, false));
        assert_ne!(wide, header(&after));
        assert_eq!(header(&columns.render(&calm, false)), wide);
    }

    #[test]
    fn an_impaired_region_is_named_beside_the_failing_ones() {
        let mut up = status("https://a.test/", Verdict::Up, &[], None, 5.0);
        up.discounted_regions = vec!["eu-west".into()];
        let table = render_table(std::slice::from_ref(&up), false);
        assert!(table.lines().nth(1).unwrap().contains("  UP        0/3 (eu-west impaired)  "), "{table}");
        let plain = status("https://a.test/", Verdict::Up, &[], None, 5.0);
        assert_ne!(frame_key(&[up]), frame_key(&[plain]), "a region discounted or counted again redraws");
    }

    #[test]
    fn a_frame_changes_with_verdicts_causes_and_regions_but_not_latencies() {
        let one = [status("https://a.test/", Verdict::Up, &[], None, 5.0)];
        let faster = [status("https://a.test/", Verdict::Up, &[], None, 3.0)];
        assert_eq!(frame_key(&one), frame_key(&faster));
        assert_ne!(render_table(&one, false), render_table(&faster, false), "the table itself shows the latency");
        for other in [
            status("https://a.test/", Verdict::Down, &["eu-west", "us-east"], Some("tcp_refused"), 5.0),
            status("https://a.test/", Verdict::Degraded, &["eu-west"], Some("tcp_refused"), 5.0),
            status("https://a.test/", Verdict::Degraded, &["us-east"], Some("tcp_refused"), 5.0),
            status("https://a.test/", Verdict::Degraded, &["us-east"], Some("tcp_timeout"), 5.0),
        ] {
            assert_ne!(frame_key(&one), frame_key(std::slice::from_ref(&other)), "{other:?}");
        }
    }
}
