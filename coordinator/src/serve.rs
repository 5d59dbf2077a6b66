//! `vantage-coordinator serve`: the store, the hub, the gRPC services (with server reflection, so
//! grpcurl needs no proto files) behind the gRPC port's gate and limits (`grpc`), the HTTP side,
//! the config's reloads and target files (`reload`), the dead man's switch (`watchdog`), and the
//! periodic work (silent regions turning unknown, housekeeping).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use vantage_proto::v1::agent_service_server::AgentServiceServer;

use crate::api::{AdminEndpoint, AdminServer, AgentEndpoint};
use crate::auth::{AdminAuth, Token};
use crate::hub::{Hub, HubOptions, Retention};
use crate::store::Store;

/// Largest gRPC message accepted: agents split their batches to fit it.
const MAX_MESSAGE: usize = vantage_shared::limits::MAX_MESSAGE;
/// Largest message sent to an agent: a full assignment of `--max-targets` targets (about 100
/// bytes each) must fit. Agents accept as much.
const MAX_ASSIGNMENT: usize = vantage_shared::limits::MAX_ASSIGNMENT;
/// How often housekeeping runs (the first pass at start-up).
const PRUNE_EVERY: Duration = Duration::from_secs(600);

#[derive(Debug, Clone)]
pub struct ServeOptions {
    pub listen: SocketAddr,
    pub http_listen: Option<SocketAddr>,
    pub data_dir: PathBuf,
    pub config: Option<PathBuf>,
    /// How long results, events and agent records are kept.
    pub retention: Retention,
    pub hub: HubOptions,
    /// mTLS; `None` is plaintext, allowed on loopback only.
    pub tls: Option<TlsFiles>,
    pub admin_token_file: Option<PathBuf>,
    pub read_token_file: Option<PathBuf>,
    /// The HTTP port (but `/healthz` and heartbeats, which are signed) needs the read or admin token.
    pub http_auth: bool,
    /// Results per second per agent.
    pub agent_rate: u32,
    /// Bytes of result batches per second per agent.
    pub agent_bytes: u64,
    /// The store's page cache, bytes.
    pub cache_bytes: usize,
    /// The gRPC port's connection and HTTP/2 limits.
    pub grpc_limits: crate::grpc::Limits,
    /// The HTTP port's connection limit and timeouts.
    pub http_limits: crate::http::Limits,
}

impl ServeOptions {
    /// Plaintext on a loopback address, without tokens: development, the demo, benchmarks.
    pub fn local(listen: SocketAddr, data_dir: PathBuf) -> ServeOptions {
        ServeOptions {
            listen,
            http_listen: None,
            data_dir,
            config: None,
            retention: Retention::default(),
            hub: HubOptions::default(),
            tls: None,
            admin_token_file: None,
            read_token_file: None,
            http_auth: false,
            agent_rate: crate::api::DEFAULT_AGENT_RATE,
            agent_bytes: crate::api::DEFAULT_AGENT_BYTES,
            cache_bytes: crate::store::DEFAULT_CACHE_BYTES,
            grpc_limits: crate::grpc::Limits::default(),
            http_limits: crate::http::Limits::default(),
        }
    }
}

/// The coordinator's certificate and key, and the CA its agents' and admins' certificates come
/// from (as written by `pki init`).
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub client_ca: PathBuf,
}

impl TlsFiles {
    fn acceptor(&self) -> anyhow::Result<tokio_rustls::TlsAcceptor> {
        vantage_shared::identity::warn_if_loose(&self.key);
        crate::grpc::tls_acceptor(&self.cert, &self.key, &self.client_ca)
    }
}

/// Logs the expiry of the coordinator's own certificates and of its agents' (warning under 30
/// days, error under 7).
fn check_expiry(tls: Option<&TlsFiles>, hub: &Hub) {
    let mut certificates: Vec<(String, i64)> = Vec::new();
    if let Some(tls) = tls {
        for (what, path) in [("server certificate", &tls.cert), ("client CA", &tls.client_ca)] {
            if let Ok(not_after) = crate::pki::not_after(path) {
                certificates.push((format!("{what} {}", path.display()), not_after));
            }
        }
    }
    for agent in hub.agents() {
        if let Some(t) = agent.cert_not_after.filter(|_| agent.connected) {
            certificates.push((format!("certificate of agent {} ({})", agent.name, agent.region), t.seconds));
        }
    }
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    for (what, not_after) in certificates {
        let days = (not_after - now).div_euclid(86_400);
        if days < 7 {
            tracing::error!(days_left = days, "{what} expires in under 7 days; renew it (vantage-coordinator pki)");
        } else if days < 30 {
            tracing::warn!(days_left = days, "{what} expires in under 30 days; renew it (vantage-coordinator pki)");
        }
    }
}

/// Warns when the process may open fewer files than its connection caps allow connections: the
/// accept loops would then fail (and retry) below the caps. Raise it with `ulimit -n` or
/// systemd's `LimitNOFILE=`.
fn check_open_files(options: &ServeOptions) {
    let Ok(limits) = std::fs::read_to_string("/proc/self/limits") else { return };
    let soft = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3))
        .and_then(|n| n.parse::<usize>().ok());
    let http = options.http_listen.map_or(0, |_| options.http_limits.max_connections);
    // The store, listeners, outgoing alert deliveries and the runtime take a few more.
    let needed = options.grpc_limits.max_connections + http + 64;
    if let Some(soft) = soft.filter(|soft| *soft < needed) {
        tracing::warn!(
            open_files = soft,
            needed,
            "the open-file limit is below --max-connections + --http-max-connections; raise it (ulimit -n, \
             LimitNOFILE=) or lower the caps"
        );
    }
}

/// A running coordinator. Dropping it does not stop it; call `shutdown`.
pub struct Running {
    pub hub: Arc<Hub>,
    store: Arc<Store>,
    pub addr: SocketAddr,
    pub http_addr: Option<SocketAddr>,
    stop: watch::Sender<bool>,
    grpc: JoinHandle<()>,
    background: Vec<JoinHandle<()>>,
}

impl Running {
    /// Waits until the gRPC server ends (it does not, unless it fails or is shut down) or the
    /// store fails. After a storage failure redb refuses every write until it is reopened, and
    /// a coordinator that cannot record would keep judging without remembering: it stops with the
    /// error instead, so its service manager restarts it. Nothing is lost by that: results are
    /// acked only once committed (agents resend the rest), and verdicts and alerts whose record
    /// failed are decided again from the committed results.
    pub async fn wait(&mut self) -> anyhow::Result<()> {
        tokio::select! {
            ended = &mut self.grpc => ended.context("the gRPC server task failed"),
            error = self.store.failed() => {
                self.hub.close_sessions();
                anyhow::bail!(
                    "the store failed ({error}); stopping, to be restarted on a fresh open of the database \
                     (nothing acknowledged is lost)"
                )
            }
        }
    }

    /// Stops accepting, ends every agent stream (agents reconnect elsewhere or later), and
    /// gives calls in flight a few seconds to finish.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        for task in &self.background {
            task.abort();
        }
        self.hub.close_sessions();
        if tokio::time::timeout(Duration::from_secs(5), &mut self.grpc).await.is_err() {
            self.grpc.abort();
        }
    }
}

pub async fn start(options: ServeOptions) -> anyhow::Result<Running> {
    if options.tls.is_none() && !options.listen.ip().is_loopback() {
        anyhow::bail!(
            "--insecure serves plaintext on loopback only, and {} is not loopback; give --tls-cert, --tls-key and \
             --client-ca (see `vantage-coordinator pki init`)",
            options.listen
        );
    }
    let tls = options.tls.as_ref().map(TlsFiles::acceptor).transpose()?;
    check_open_files(&options);
    let auth = Arc::new(AdminAuth {
        mtls: tls.is_some(),
        admin_token: options.admin_token_file.as_deref().map(Token::load).transpose()?,
        read_token: options.read_token_file.as_deref().map(Token::load).transpose()?,
    });
    if options.http_auth && auth.admin_token.is_none() && auth.read_token.is_none() {
        anyhow::bail!("--http-auth needs a token to check: give --read-token-file (or --admin-token-file)");
    }
    let mut hub_options = options.hub.clone();
    let initial = options.config.as_deref().map(crate::reload::Initial::load).transpose()?;
    let targets = match &initial {
        Some(initial) => {
            let config = &initial.config;
            hub_options.alerting = Arc::new(config.alerting.clone());
            hub_options.silences = config.silences.clone();
            hub_options.region_forget_after = config.region_forget_after;
            hub_options.impaired = config.impaired;
            hub_options.shard = config.shard;
            let mut targets = initial.targets();
            if config.shard.is_split() {
                let all = targets.len();
                targets.retain(|t| config.shard.owns(&t.url));
                tracing::info!(
                    "this coordinator is {}: it keeps {} of the config's {all} targets",
                    config.shard,
                    targets.len()
                );
            }
            targets
        }
        None => Vec::new(),
    };
    let (dir, cache_bytes) = (options.data_dir.clone(), options.cache_bytes);
    let store = tokio::task::spawn_blocking(move || Store::open_with_cache(&dir, cache_bytes))
        .await?
        .with_context(|| format!("opening the store in {}", options.data_dir.display()))?;
    let store = Arc::new(store);
    let hub = Hub::open(store.clone(), targets, hub_options).await.context("loading the store")?;
    let reloader = crate::reload::Reloader::start(hub.clone(), options.config.clone(), initial)
        .await
        .context("applying the target files")?;

    let listener =
        TcpListener::bind(options.listen).await.with_context(|| format!("listening on {}", options.listen))?;
    let addr = listener.local_addr()?;
    // Both reflection versions: grpcurl and older tools still ask v1alpha.
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(vantage_proto::FILE_DESCRIPTOR_SET)
        .build_v1()
        .context("building gRPC reflection")?;
    let reflection_alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(vantage_proto::FILE_DESCRIPTOR_SET)
        .build_v1alpha()
        .context("building gRPC reflection")?;
    let agents = AgentServiceServer::new(AgentEndpoint {
        hub: hub.clone(),
        mtls: tls.is_some(),
        rate: options.agent_rate,
        bytes: options.agent_bytes,
        refusals: Default::default(),
    })
    .max_decoding_message_size(MAX_MESSAGE)
    .max_encoding_message_size(MAX_ASSIGNMENT);
    // Answers as large as an assignment (every target's status): grpcurl needs -max-msg-sz for
    // those beyond 4 MiB.
    let admin = AdminServer::new(AdminEndpoint { hub: hub.clone(), auth: auth.clone() }, MAX_MESSAGE, MAX_ASSIGNMENT);
    // Reflection is open to anyone: its requests name a symbol or a file, so they stay tiny.
    let routes = tonic::service::Routes::new(reflection.max_decoding_message_size(crate::grpc::MAX_REFLECTION_MESSAGE))
        .add_service(reflection_alpha.max_decoding_message_size(crate::grpc::MAX_REFLECTION_MESSAGE))
        .add_service(agents)
        .add_service(admin);
    let revoking = hub.clone();
    let gate = crate::grpc::Gate { auth: auth.clone(), revoked: Arc::new(move |sha256| revoking.is_revoked(sha256)) };
    let stats = Arc::new(crate::conn::Stats::default());
    let (stop, stopped) = watch::channel(false);
    let grpc = tokio::spawn(crate::grpc::serve(
        listener,
        tls,
        routes,
        gate,
        options.grpc_limits.clone(),
        stats.clone(),
        stopped,
    ));

    // From here SIGHUP reloads the config rather than ending the process.
    let mut background = vec![reloader.spawn()];
    let (pulse, watchdog) = (Arc::new(crate::watchdog::Pulse::default()), Arc::new(crate::watchdog::Status::default()));
    let http_addr = match options.http_listen {
        Some(http) => {
            let listener = TcpListener::bind(http).await.with_context(|| format!("listening on {http}"))?;
            let http_addr = listener.local_addr()?;
            let gate = options.http_auth.then(|| auth.clone());
            let cap =
                crate::conn::Cap::new(crate::conn::Port::Http, options.http_limits.max_connections, stats.clone());
            let http = crate::http::Http {
                hub: hub.clone(),
                gate,
                limits: options.http_limits.clone(),
                stats,
                cap,
                reloader: reloader.clone(),
                watchdog: watchdog.clone(),
            };
            background.push(tokio::spawn(crate::http::serve(listener, Arc::new(http))));
            Some(http_addr)
        }
        None => None,
    };
    let (ticking, beating) = (hub.clone(), pulse.clone());
    background.push(tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tick.tick().await;
            ticking.tick().await;
            beating.beat();
        }
    }));
    background.push(tokio::spawn(crate::watchdog::run(hub.clone(), store.clone(), pulse, watchdog)));
    let (expiring, tls_files) = (hub.clone(), options.tls.clone());
    background.push(tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(12 * 3600));
        loop {
            tick.tick().await;
            check_expiry(tls_files.as_ref(), &expiring);
        }
    }));
    background.push(tokio::spawn(crate::dispatch::run(hub.clone(), hub.alerts_queued.clone())));
    let pruning = hub.clone();
    let retention = options.retention;
    background.push(tokio::spawn(async move {
        // A pass takes as long as it takes (it pauses between steps); the next starts a period
        // after, not in a burst of missed ticks.
        let mut tick = tokio::time::interval(PRUNE_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if let Err(e) = pruning.prune(&retention).await {
                tracing::error!(error = %e, "housekeeping failed");
            }
        }
    }));
    tracing::info!(%addr, http = ?http_addr, mtls = options.tls.is_some(), "coordinator listening");
    Ok(Running { hub, store, addr, http_addr, stop, grpc, background })
}
