//! `vantage-agent`: probes HTTPS endpoints from where it runs.

use std::io::IsTerminal;

/// jemalloc rather than the system allocator: cheaper per probe (a probe allocates and frees
/// many small buffers), and it hands freed memory back to the system, so a transient peak (a
/// large assignment decoded) does not stay in the agent's resident size (README: "Agent
/// benchmark").
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's options, read before `main`: a background thread returns freed pages to the
/// system as they age, instead of only when their arena next allocates; and allocations of
/// 256 KiB or more go to jemalloc's arena for large ones, which returns their pages as soon as
/// they are freed. Those are the scheduler's tables as they double and an assignment's slices,
/// freed by the megabyte within a second while a large assignment arrives: aging out over
/// jemalloc's 10 s they made the agent's peak resident size (README: "Agent benchmark"). A
/// probe's buffers are far smaller, so probing pays nothing for it.
#[unsafe(export_name = "_rjem_malloc_conf")]
static MALLOC_CONF: &[u8; 49] = b"background_thread:true,oversize_threshold:262144\0";

use clap::{Parser, Subcommand};
use vantage_agent::check::{self, CheckArgs};

#[derive(Debug, Parser)]
#[command(
    name = "vantage-agent",
    version,
    about = "Probes HTTPS endpoints from the outside: DNS, TCP, TLS, certificate, HTTP."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Probe one URL now and explain what a visitor would hit (exit 0 ok, 1 warning, 2 critical, 3 unknown).
    Check(CheckArgs),
    /// Connect to a coordinator (or several) and probe the targets it assigns, reporting results back.
    Run(vantage_agent::run::RunArgs),
}

fn main() {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            // Usage errors are "unknown" in the plugin convention; help and version are fine.
            std::process::exit(if e.use_stderr() { check::exit::UNKNOWN } else { check::exit::OK });
        }
    };
    // A bug must still end like any plugin failure: one sentence and exit 3 ("unknown").
    std::panic::set_hook(Box::new(|info| {
        eprintln!("vantage-agent: internal error: {info}");
        std::process::exit(check::exit::UNKNOWN);
    }));
    let default_filter = match cli.command {
        Command::Run(_) => "info",
        Command::Check(_) => "warn",
    };
    let telemetry = vantage_shared::telemetry::init("vantage-agent", default_filter);
    let code = match cli.command {
        Command::Check(args) => run_check(args),
        Command::Run(args) => run_agent(args),
    };
    telemetry.shutdown();
    std::process::exit(code);
}

fn run_agent(args: vantage_agent::run::RunArgs) -> i32 {
    // The sessions with the coordinators run here; the probes run on probe threads of their own.
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("vantage-agent: cannot start the runtime: {e}");
            return 1;
        }
    };
    let config = match args.config() {
        Ok(config) => config,
        Err(e) => {
            eprintln!("vantage-agent: {e:#}");
            return 1;
        }
    };
    tracing::info!(
        agent = config.name,
        region = config.region,
        coordinators = config.coordinators.join(","),
        mtls = config.tls.is_some(),
        "starting"
    );
    let result = runtime.block_on(async {
        tokio::select! {
            result = vantage_agent::run::run(config) => result.map_err(|e| e.to_string()),
            _ = vantage_shared::signal::shutdown() => Ok(()),
        }
    });
    match result {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("vantage-agent: {e}");
            1
        }
    }
}

fn run_check(args: CheckArgs) -> i32 {
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("vantage-agent: cannot start the runtime: {e}");
            return check::exit::UNKNOWN;
        }
    };
    match runtime.block_on(args.run()) {
        Ok(report) => {
            let text = if args.json {
                match serde_json::to_string_pretty(&report) {
                    Ok(json) => json + "\n",
                    Err(e) => {
                        eprintln!("vantage-agent: cannot encode the report: {e}");
                        return check::exit::UNKNOWN;
                    }
                }
            } else {
                let color = std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none();
                check::render_human(&report, color)
            };
            // A closed pipe (`check … | head`) is the reader's choice, not an error.
            let _ = std::io::Write::write_all(&mut std::io::stdout().lock(), text.as_bytes());
            check::exit_code(&report)
        }
        Err(e) => {
            eprintln!("vantage-agent: {e}");
            check::exit::UNKNOWN
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn cli_is_well_formed() {
        super::Cli::command().debug_assert();
    }
}
