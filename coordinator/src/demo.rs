//! `vantage-coordinator demo`: starts the scenario lab (rcgen certificates, real TLS listeners,
//! a real DNS server, hostile peers, all on loopback), probes every scenario with the agent's
//! pipeline exactly as `vantage-agent check` would, and prints what each one was diagnosed as.

use std::io::IsTerminal;

use anyhow::Context;
use clap::{Args, Parser};
use vantage_agent::check::{self, CheckArgs};
use vantage_shared::lab::Lab;

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Show the full `check` report of these scenarios (repeatable; `all` for every one).
    #[arg(long = "show", value_name = "SCENARIO")]
    show: Vec<String>,
    /// Keep serving the scenarios after the table (until Ctrl-C), to run `vantage-agent check`
    /// against them by hand.
    #[arg(long)]
    serve: bool,
}

/// `check` arguments parsed exactly as the agent's command line parses them.
#[derive(Debug, Parser)]
struct CheckLine {
    #[command(flatten)]
    args: CheckArgs,
}

pub fn run(demo: DemoArgs) -> anyhow::Result<()> {
    let lab = Lab::start().context("starting the scenario lab")?;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let color = std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    for name in &demo.show {
        if name != "all" && !lab.scenarios.iter().any(|s| s.name == name) {
            let names: Vec<&str> = lab.scenarios.iter().map(|s| s.name).collect();
            anyhow::bail!("no scenario {name:?}; the scenarios are: {}", names.join(", "));
        }
    }

    println!(
        "Vantage demo: {} scenarios served on loopback, each probed like `vantage-agent check`.\n",
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
