//! `vantage-coordinator`: for now, the `demo` command, which serves every failure scenario on
//! loopback and diagnoses each with the agent's probe pipeline.

mod demo;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "vantage-coordinator", version, about = "Vantage's coordinator.")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve every failure scenario locally (real TLS servers, a real DNS server) and show how
    /// Vantage diagnoses each one.
    Demo(demo::DemoArgs),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Demo(args) => demo::run(args),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vantage-coordinator: {e:#}");
            std::process::ExitCode::FAILURE
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
