//! `vantage-coordinator status`, `targets`, `alerts`, `silences` and `regions`: the operator's
//! view over the gRPC API. One row per target: verdict, which regions fail, the cause,
//! certificate days left and latency.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::IsTerminal;

use anyhow::Context;
use clap::{Args, Subcommand};
use std::path::{Path, PathBuf};

use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use vantage_proto::v1::coordinator_client::CoordinatorClient;
use vantage_proto::v1::*;

fn ts(t: Option<&prost_types::Timestamp>) -> serde_json::Value {
    match t.and_then(|t| time::OffsetDateTime::from_unix_timestamp(t.seconds).ok()) {
        Some(t) => vantage_shared::report::rfc3339(t).into(),
        None => serde_json::Value::Null,
    }
}

pub fn verdict_name(v: i32) -> &'static str {
    match Verdict::try_from(v).unwrap_or(Verdict::Unspecified) {
        Verdict::Up => "UP",
        Verdict::Degraded => "DEGRADED",
        Verdict::Down => "DOWN",
        Verdict::Unknown | Verdict::Unspecified => "UNKNOWN",
    }
}

pub fn opinion_name(o: i32) -> &'static str {
    match Opinion::try_from(o).unwrap_or(Opinion::Unspecified) {
        Opinion::Up => "up",
        Opinion::Down => "down",
        Opinion::Partial => "partial",
        Opinion::Unknown | Opinion::Unspecified => "unknown",
    }
}

pub fn health_name(h: i32) -> &'static str {
    match CertHealth::try_from(h).unwrap_or(CertHealth::Unspecified) {
        CertHealth::Ok => "ok",
        CertHealth::Warning => "warning",
        CertHealth::Critical => "critical",
        CertHealth::Expired => "expired",
        CertHealth::Unspecified => "unknown",
    }
}

/// A target's status as JSON (the `--json` output and `/v1/status`).
pub fn to_json(s: &TargetStatus) -> serde_json::Value {
    serde_json::json!({
        "url": s.url,
        "verdict": verdict_name(s.verdict),
        "cause": s.cause.as_ref().map(|c| serde_json::json!({"code": c.code, "message": c.message, "hint": c.hint})),
        "since": ts(s.since.as_ref()),
        "cert": s.cert.as_ref().map(|c| serde_json::json!({
            "days_remaining": c.days_remaining, "health": health_name(c.health), "not_after": c.not_after,
        })),
        "silence": s.silence.as_ref().map(|x| serde_json::json!({
            "id": x.id, "comment": x.comment, "start": ts(x.start.as_ref()), "end": ts(x.end.as_ref()),
        })),
        "quorum": s.quorum,
        "failing_regions": s.failing_regions,
        "regions": s.regions.iter().map(|r| serde_json::json!({
            "region": r.region,
            "opinion": opinion_name(r.opinion),
            "last_result_time": ts(r.last_result_time.as_ref()),
            "failure_code": Some(&r.failure_code).filter(|c| !c.is_empty()),
            "latency_ms": r.latency_ms,
            "agent": r.agent,
            "detail": Some(&r.detail).filter(|d| !d.is_empty()),
        })).collect::<Vec<_>>(),
    })
}

/// "s_1a2b (db migration) until 2026-…".
pub fn describe_silence(s: &Silence) -> String {
    let comment = if s.comment.is_empty() { String::new() } else { format!(" ({})", s.comment) };
    let end = ts(s.end.as_ref());
    format!("{}{comment} until {}", s.id, end.as_str().unwrap_or("?"))
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
                s.cert.as_ref().map_or("-".to_owned(), |c| format!("{}d {}", c.days_remaining, health_name(c.health)));
            let latency = s
                .regions
                .iter()
                .filter(|r| r.last_result_time.is_some())
                .map(|r| r.latency_ms)
                .fold(None, |max: Option<f64>, l| Some(max.map_or(l, |m| m.max(l))))
                .map_or("-".to_owned(), |l| format!("{l:.0} ms"));
            [s.url.clone(), verdict_name(s.verdict).to_owned(), failing, cause, cert, latency]
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

/// How the operator commands reach the coordinator's API.
#[derive(Debug, Clone, Args)]
pub struct ClientArgs {
    /// The coordinator's gRPC URL (https://… when it uses mTLS).
    #[arg(
        long,
        alias = "coordinator",
        default_value = "http://127.0.0.1:7700",
        env = "VANTAGE_COORDINATOR",
        global = true
    )]
    pub addr: String,
    /// The CA that signed the coordinator's certificate (`ca.pem` from `pki init`).
    #[arg(long, env = "VANTAGE_CA", value_name = "PEM", global = true)]
    pub ca: Option<PathBuf>,
    /// An admin client certificate (from `pki issue-admin`), with --key.
    #[arg(long, env = "VANTAGE_CERT", value_name = "PEM", requires = "key", global = true)]
    pub cert: Option<PathBuf>,
    #[arg(long, env = "VANTAGE_KEY", value_name = "PEM", requires = "cert", global = true)]
    pub key: Option<PathBuf>,
    /// A file holding a bearer token (the admin or the read-only one).
    #[arg(long, env = "VANTAGE_TOKEN_FILE", value_name = "FILE", global = true)]
    pub token_file: Option<PathBuf>,
}

/// Adds the bearer token, if any, to every call.
#[derive(Clone)]
pub struct Bearer(Option<MetadataValue<Ascii>>);

impl Interceptor for Bearer {
    fn call(&mut self, mut request: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(token) = &self.0 {
            request.metadata_mut().insert("authorization", token.clone());
        }
        Ok(request)
    }
}

pub type Client = CoordinatorClient<InterceptedService<Channel, Bearer>>;

pub async fn client(args: &ClientArgs) -> anyhow::Result<Client> {
    let addr = &args.addr;
    let mut endpoint =
        Endpoint::from_shared(addr.to_owned()).with_context(|| format!("{addr:?} is not a coordinator URL"))?;
    if addr.starts_with("https://") {
        let mut tls = ClientTlsConfig::new();
        if let Some(ca) = &args.ca {
            tls = tls.ca_certificate(Certificate::from_pem(read(ca)?));
        }
        if let (Some(cert), Some(key)) = (&args.cert, &args.key) {
            vantage_shared::identity::warn_if_loose(key);
            tls = tls.identity(Identity::from_pem(read(cert)?, read(key)?));
        }
        endpoint = endpoint.tls_config(tls).context("the TLS configuration")?;
    } else if args.ca.is_some() || args.cert.is_some() {
        anyhow::bail!("--ca and --cert need an https:// coordinator URL, not {addr}");
    }
    let token = match &args.token_file {
        Some(path) => {
            vantage_shared::identity::warn_if_loose(path);
            let token = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
            let value =
                format!("Bearer {}", token.trim()).parse().context("the token holds characters a header cannot")?;
            Some(value)
        }
        None => None,
    };
    let channel = endpoint
        .connect_timeout(std::time::Duration::from_secs(5))
        .connect()
        .await
        .with_context(|| format!("cannot reach the coordinator at {addr}"))?;
    Ok(CoordinatorClient::with_interceptor(channel, Bearer(token))
        .max_decoding_message_size(vantage_shared::limits::MAX_ASSIGNMENT))
}

fn read(path: &Path) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("reading {}", path.display()))
}

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

/// A gRPC error as one sentence.
pub fn status_error(status: tonic::Status) -> anyhow::Error {
    anyhow::anyhow!("the coordinator refused: {} ({:?})", status.message(), status.code())
}

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
}

fn label(s: &str) -> Result<(String, String), String> {
    s.split_once('=').map(|(k, v)| (k.to_owned(), v.to_owned())).ok_or_else(|| format!("{s:?} is not KEY=VALUE"))
}

fn duration(s: &str) -> Result<std::time::Duration, String> {
    vantage_shared::duration::parse_duration(s).map_err(|e| e.to_string())
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

#[derive(Debug, Args)]
pub struct AlertsArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    /// Only the alerts about this target URL, region or heartbeat.
    #[arg(long)]
    pub subject: Option<String>,
    #[arg(long, default_value_t = 20)]
    pub limit: u32,
}

/// `alerts`: the newest alerts and how each delivery went.
pub async fn run_alerts(args: AlertsArgs) -> anyhow::Result<()> {
    let mut client = client(&args.client).await?;
    let request = ListAlertsRequest { subject: args.subject.unwrap_or_default(), limit: args.limit };
    let alerts = client.list_alerts(request).await.map_err(status_error)?.into_inner().alerts;
    for a in alerts {
        let at = ts(a.at.as_ref());
        println!("{}  {}  {}", at.as_str().unwrap_or("?"), a.id, a.summary);
        if !a.silenced_by.is_empty() {
            println!("    held back by silence {}", a.silenced_by);
        }
        for d in &a.deliveries {
            let error = if d.last_error.is_empty() { String::new() } else { format!(": {}", d.last_error) };
            println!("    {:<16} {} after {} attempt(s){error}", d.channel, d.state, d.attempts);
        }
    }
    Ok(())
}

#[derive(Debug, Subcommand)]
pub enum SilenceCommand {
    /// Hold back the notifications of a target (or of every target with some labels) for a while.
    Add(AddSilence),
    /// List silences.
    Ls,
    /// End a silence now.
    Rm { id: String },
}

#[derive(Debug, Args)]
pub struct SilencesArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    #[command(subcommand)]
    pub command: SilenceCommand,
}

#[derive(Debug, Args)]
pub struct AddSilence {
    /// A target URL (or a region's or heartbeat's name).
    #[arg(long)]
    pub target: Option<String>,
    /// Silence every target with this label, KEY=VALUE (repeatable; all must match).
    #[arg(long = "label", value_name = "KEY=VALUE", value_parser = label)]
    pub labels: Vec<(String, String)>,
    /// How long, from now.
    #[arg(long = "for", value_parser = duration, value_name = "DURATION")]
    pub duration: std::time::Duration,
    #[arg(long, default_value = "")]
    pub comment: String,
}

pub async fn run_silences(args: SilencesArgs) -> anyhow::Result<()> {
    let mut client = client(&args.client).await?;
    match args.command {
        SilenceCommand::Add(a) => {
            let end = crate::clock::now_ms() + a.duration.as_millis() as i64;
            let silence = Silence {
                target: a.target.unwrap_or_default(),
                labels: a.labels.into_iter().collect(),
                end: Some(crate::clock::timestamp(end)),
                comment: a.comment,
                ..Default::default()
            };
            let r =
                client.create_silence(CreateSilenceRequest { silence: Some(silence) }).await.map_err(status_error)?;
            let s = r.into_inner().silence.unwrap_or_default();
            println!("silence {}", describe_silence(&s));
        }
        SilenceCommand::Ls => {
            for s in client.list_silences(ListSilencesRequest {}).await.map_err(status_error)?.into_inner().silences {
                let labels: Vec<String> = s.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
                let what =
                    [s.target.clone(), labels.join(",")].into_iter().filter(|x| !x.is_empty()).collect::<Vec<_>>();
                println!("{}  {}  from {}", describe_silence(&s), what.join(" "), s.source);
            }
        }
        SilenceCommand::Rm { id } => {
            let r = client.delete_silence(DeleteSilenceRequest { id: id.clone() }).await.map_err(status_error)?;
            if !r.into_inner().deleted {
                anyhow::bail!("no silence {id}");
            }
            println!("silence {id} ended");
        }
    }
    Ok(())
}

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
            let state = if r.forgotten {
                format!("forgotten since {} (back when an agent connects)", when(r.forgotten_at.as_ref()))
            } else if r.connected_agents > 0 {
                "in the region set".to_owned()
            } else if r.forget_at.is_some() {
                format!("in the region set, without agents; forgotten at {}", when(r.forget_at.as_ref()))
            } else {
                "in the region set, without agents".to_owned()
            };
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
