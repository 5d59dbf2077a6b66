//! `vantage-coordinator`: serves the agents and the API, and gives operators the consolidated
//! status; `demo` runs the whole system locally. The demo needs the `demo` cargo feature (on by
//! default, off in the builds deploy/ makes): without it, `demo` is still a command, and says how
//! this binary was built and where the demo is.

#[cfg(feature = "demo")]
mod demo;

/// jemalloc rather than the system allocator: it hands freed memory back to the system over time,
/// so a transient peak (a config of 100,000 targets parsed at start-up, a large answer) does not
/// stay in the coordinator's resident size for its lifetime (README: "Scale benchmark").
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's options, read before `main`. One arena: by default each thread picks one of eight,
/// so a large answer built on one worker thread (every target's status) left its freed pages in
/// that arena while the next one, built on the other thread, took fresh pages from another, and
/// the two peaks added up; the coordinator's few threads lose nothing by sharing one (each keeps
/// its own cache of small blocks). A background thread returns freed pages to the system as they
/// age (10 s), instead of only when their arena next allocates.
#[unsafe(export_name = "_rjem_malloc_conf")]
static MALLOC_CONF: &[u8; 33] = b"narenas:1,background_thread:true\0";

use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};
use vantage_coordinator::cli::{alerts, incidents, pki, regions, shard, silences, status, targets, uptime};
use vantage_coordinator::hub::{HubOptions, Retention};
use vantage_coordinator::serve::{self, ServeOptions, TlsFiles};
use vantage_coordinator::{grpc, http};

#[derive(Debug, Parser)]
#[command(
    name = "vantage-coordinator",
    version,
    about = "Vantage's coordinator: quorum verdicts from agents in many regions."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the coordinator: agents connect to it, operators query it.
    Serve(ServeArgs),
    /// Show the consolidated status of every target.
    Status(status::StatusArgs),
    /// Availability per target (and region) over 24 h, 7, 30 and 90 days, or the windows asked for.
    Uptime(uptime::UptimeArgs),
    /// Add, remove or list targets.
    Targets(targets::TargetsArgs),
    /// The newest alerts and how their deliveries went.
    Alerts(alerts::AlertsArgs),
    /// The newest incidents, an incident group's members under the group.
    Incidents(incidents::IncidentsArgs),
    /// Hold back notifications for a while (maintenance windows).
    Silences(silences::SilencesArgs),
    /// List the regions, or forget one that is gone for good.
    Regions(regions::RegionsArgs),
    /// Create Vantage's CA and issue coordinator, agent and admin certificates.
    #[command(subcommand)]
    Pki(pki::PkiCommand),
    /// Which targets of a config a shard of a split owns (or which shard owns a URL).
    Shard(shard::ShardArgs),
    /// Run a coordinator, three agents in three regions and the scenario lab's targets locally,
    /// and show the live status.
    #[cfg(feature = "demo")]
    Demo(demo::DemoArgs),
    /// Not in this build: it was built without the `demo` feature (as deployments are).
    #[cfg(not(feature = "demo"))]
    #[command(hide = true, disable_help_flag = true)]
    Demo(NoDemo),
}

/// Whatever `demo` was given, in a build without it: the answer is the same.
#[cfg(not(feature = "demo"))]
#[derive(Debug, clap::Args)]
struct NoDemo {
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, hide = true)]
    _args: Vec<String>,
}

/// What `demo` says in a build without it.
#[cfg(not(feature = "demo"))]
const NO_DEMO: &str = "this build has no demo: it was built without the cargo feature `demo` (production builds \
    leave it out, so they carry no scenario lab and no probe code); run the demo from a source checkout with \
    `cargo run -p vantage-coordinator -- demo`";

#[derive(Debug, clap::Args)]
struct ServeArgs {
    /// gRPC address for agents and the API.
    #[arg(long, default_value = "127.0.0.1:7700", env = "VANTAGE_LISTEN")]
    listen: SocketAddr,
    /// HTTP address (`/healthz`, `/v1/status`).
    #[arg(long, default_value = "127.0.0.1:7701", env = "VANTAGE_HTTP_LISTEN")]
    http_listen: SocketAddr,
    /// Where the database lives.
    #[arg(long, env = "VANTAGE_DATA_DIR")]
    data_dir: PathBuf,
    /// Targets file (TOML).
    #[arg(long, env = "VANTAGE_CONFIG")]
    config: Option<PathBuf>,
    /// How long results are kept (settled alerts and ended silences as long).
    #[arg(long, default_value = "7d", value_parser = positive_duration, env = "VANTAGE_RETENTION")]
    retention: Duration,
    /// How long verdict transitions and closed incidents are kept.
    #[arg(long, default_value = "365d", value_parser = positive_duration, env = "VANTAGE_EVENT_RETENTION")]
    event_retention: Duration,
    /// Agents not connected for this long are forgotten (ListAgents, their batch sequence).
    #[arg(long, default_value = "30d", value_parser = positive_duration, env = "VANTAGE_AGENT_RETENTION")]
    agent_retention: Duration,
    /// The coordinator's certificate (`coordinator.pem` from `pki init`).
    #[arg(long, env = "VANTAGE_TLS_CERT", value_name = "PEM", requires_all = ["tls_key", "client_ca"])]
    tls_cert: Option<PathBuf>,
    #[arg(long, env = "VANTAGE_TLS_KEY", value_name = "PEM", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// The CA whose agent and admin certificates are accepted (`ca.pem`).
    #[arg(long, env = "VANTAGE_CLIENT_CA", value_name = "PEM", requires = "tls_cert")]
    client_ca: Option<PathBuf>,
    /// Plaintext without client certificates; refused on anything but loopback.
    #[arg(long, conflicts_with = "tls_cert")]
    insecure: bool,
    /// A file holding the admin API's bearer token (at least 16 characters).
    #[arg(long, env = "VANTAGE_ADMIN_TOKEN_FILE", value_name = "FILE")]
    admin_token_file: Option<PathBuf>,
    /// A file holding a bearer token for the read-only calls.
    #[arg(long, env = "VANTAGE_READ_TOKEN_FILE", value_name = "FILE")]
    read_token_file: Option<PathBuf>,
    /// The HTTP port's pages, status and metrics need the read or admin token (Bearer, or HTTP
    /// Basic with the token as password); `/healthz` and the signed heartbeats stay open.
    #[arg(long, env = "VANTAGE_HTTP_AUTH")]
    http_auth: bool,
    /// Most targets the coordinator holds.
    #[arg(long, default_value_t = vantage_coordinator::hub::DEFAULT_MAX_TARGETS, env = "VANTAGE_MAX_TARGETS")]
    max_targets: usize,
    /// Results per second one agent may deliver; beyond it, its stream is read more slowly.
    #[arg(long, default_value_t = vantage_coordinator::api::DEFAULT_AGENT_RATE, env = "VANTAGE_AGENT_RATE")]
    agent_rate: u32,
    /// Bytes of result batches per second one agent may deliver (8 MiB; at least 4 MiB, one full
    /// message a second, so no setting can stall an agent); beyond it, its stream is read more slowly.
    #[arg(
        long,
        default_value_t = vantage_coordinator::api::DEFAULT_AGENT_BYTES,
        env = "VANTAGE_AGENT_BYTES",
        value_parser = clap::value_parser!(u64).range(vantage_shared::limits::MAX_MESSAGE as u64..)
    )]
    agent_bytes: u64,
    /// The store's page cache (`64MiB`, `512MiB`, `1GiB`; at least 1MiB): the coordinator's memory
    /// grows by this much once the store is busy, and reads and writes that fit it skip the disk.
    #[arg(long, default_value = "64MiB", value_parser = byte_size, env = "VANTAGE_CACHE_SIZE")]
    cache_size: usize,
    /// Most connections the gRPC port holds at once; beyond it a new connection is closed at once
    /// (connections already open, agents' among them, are not affected).
    #[arg(long, default_value_t = nonzero(grpc::DEFAULT_MAX_CONNECTIONS), env = "VANTAGE_MAX_CONNECTIONS")]
    max_connections: NonZeroUsize,
    /// Most calls (HTTP/2 streams) open at once on one gRPC connection.
    #[arg(long, default_value_t = nonzero(grpc::DEFAULT_MAX_STREAMS as usize) , env = "VANTAGE_MAX_STREAMS_PER_CONNECTION")]
    max_streams_per_connection: NonZeroUsize,
    /// With mTLS: a gRPC connection without a client certificate is closed unless it makes a call
    /// with a valid token within this time.
    #[arg(long, default_value = "10s", value_parser = positive_duration, env = "VANTAGE_UNAUTHENTICATED_TIMEOUT")]
    unauthenticated_timeout: Duration,
    /// Largest header list (bytes, as HTTP/2 counts them) of one gRPC call.
    #[arg(
        long,
        default_value_t = grpc::DEFAULT_MAX_HEADER_LIST,
        value_parser = clap::value_parser!(u32).range(1024..),
        env = "VANTAGE_MAX_HEADER_LIST_SIZE"
    )]
    max_header_list_size: u32,
    /// Most connections the HTTP port holds at once; beyond it a new connection is closed at once.
    #[arg(long, default_value_t = nonzero(http::DEFAULT_MAX_CONNECTIONS), env = "VANTAGE_HTTP_MAX_CONNECTIONS")]
    http_max_connections: NonZeroUsize,
    /// How long an HTTP client may take to send a request's headers before its connection is
    /// closed (slow clients cannot hold connections).
    #[arg(long, default_value = "10s", value_parser = positive_duration, env = "VANTAGE_HTTP_HEADER_TIMEOUT")]
    http_header_timeout: Duration,
}

fn duration(s: &str) -> Result<Duration, String> {
    vantage_shared::duration::parse_duration(s).map_err(|e| e.to_string())
}

fn positive_duration(s: &str) -> Result<Duration, String> {
    duration(s).and_then(|d| if d.is_zero() { Err("must be more than 0s".into()) } else { Ok(d) })
}

fn nonzero(n: usize) -> NonZeroUsize {
    NonZeroUsize::new(n).unwrap_or(NonZeroUsize::MIN)
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let default_filter = match cli.command {
        Command::Serve(_) => "info",
        _ => "warn",
    };
    let telemetry = vantage_shared::telemetry::init("vantage-coordinator", default_filter);
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("vantage-coordinator: cannot start the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = match cli.command {
        Command::Serve(args) => runtime.block_on(run_serve(args)),
        Command::Status(args) => runtime.block_on(status::run_status(args)),
        Command::Uptime(args) => runtime.block_on(uptime::run_uptime(args)),
        Command::Targets(args) => runtime.block_on(targets::run_targets(args)),
        Command::Alerts(args) => runtime.block_on(alerts::run_alerts(args)),
        Command::Incidents(args) => runtime.block_on(incidents::run_incidents(args)),
        Command::Silences(args) => runtime.block_on(silences::run_silences(args)),
        Command::Regions(args) => runtime.block_on(regions::run_regions(args)),
        Command::Pki(pki::PkiCommand::RevokeAgent(args)) => runtime.block_on(pki::revoke(args)),
        Command::Pki(command) => pki::run(command),
        Command::Shard(args) => shard::run(args),
        #[cfg(feature = "demo")]
        Command::Demo(args) => {
            drop(runtime);
            demo::run(args)
        }
        #[cfg(not(feature = "demo"))]
        Command::Demo(_) => Err(anyhow::anyhow!(NO_DEMO)),
    };
    telemetry.shutdown();
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vantage-coordinator: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run_serve(args: ServeArgs) -> anyhow::Result<()> {
    let tls = match (args.tls_cert, args.tls_key, args.client_ca) {
        (Some(cert), Some(key), Some(client_ca)) => Some(TlsFiles { cert, key, client_ca }),
        _ if args.insecure => None,
        _ => anyhow::bail!(
            "give --tls-cert, --tls-key and --client-ca (see `vantage-coordinator pki init`), or --insecure to serve \
             plaintext on loopback"
        ),
    };
    if tls.is_none() && args.admin_token_file.is_none() && args.read_token_file.is_none() {
        tracing::warn!("plaintext without tokens: anyone on this host can use the admin API");
    }
    let mut running = serve::start(ServeOptions {
        listen: args.listen,
        http_listen: Some(args.http_listen),
        data_dir: args.data_dir,
        config: args.config,
        retention: Retention { results: args.retention, events: args.event_retention, agents: args.agent_retention },
        hub: HubOptions { max_targets: args.max_targets, ..HubOptions::default() },
        tls,
        admin_token_file: args.admin_token_file,
        read_token_file: args.read_token_file,
        http_auth: args.http_auth,
        agent_rate: args.agent_rate,
        agent_bytes: args.agent_bytes,
        cache_bytes: args.cache_size,
        grpc_limits: grpc::Limits {
            max_connections: args.max_connections.get(),
            max_streams: u32::try_from(args.max_streams_per_connection.get()).unwrap_or(u32::MAX),
            unauthenticated_timeout: args.unauthenticated_timeout,
            max_header_list: args.max_header_list_size,
        },
        http_limits: http::Limits {
            max_connections: args.http_max_connections.get(),
            header_timeout: args.http_header_timeout,
        },
    })
    .await?;
    tokio::select! {
        result = running.wait() => result,
        _ = vantage_shared::signal::shutdown() => {
            tracing::info!("shutting down");
            running.shutdown().await;
            Ok(())
        }
    }
}

/// A size in bytes with a binary unit: `64MiB`, `1GiB`, `512KiB` (at least 1 MiB).
fn byte_size(text: &str) -> Result<usize, String> {
    let text = text.trim();
    let digits = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (number, unit) = text.split_at(digits);
    let shift = match unit.trim() {
        "KiB" => 10,
        "MiB" => 20,
        "GiB" => 30,
        _ => return Err("a size such as 64MiB or 1GiB (units KiB, MiB, GiB)".into()),
    };
    let bytes = number.parse::<usize>().ok().and_then(|n| n.checked_mul(1 << shift));
    match bytes {
        Some(bytes) if bytes >= 1 << 20 => Ok(bytes),
        Some(_) => Err("at least 1MiB".into()),
        None => Err("a size such as 64MiB or 1GiB (units KiB, MiB, GiB)".into()),
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn cli_is_well_formed() {
        super::Cli::command().debug_assert();
    }

    #[test]
    fn sizes_take_binary_units_and_at_least_a_mebibyte() {
        assert_eq!(super::byte_size("64MiB"), Ok(64 << 20));
        assert_eq!(super::byte_size("1GiB"), Ok(1 << 30));
        assert_eq!(super::byte_size("2048KiB"), Ok(2 << 20));
        for bad in ["64", "64MB", "MiB", "512KiB", "-1MiB", "99999999999999999999GiB"] {
            assert!(super::byte_size(bad).is_err(), "{bad}");
        }
    }
}
