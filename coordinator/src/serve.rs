//! `vantage-coordinator serve`: the store, the hub, the gRPC services (with server reflection, so
//! grpcurl needs no proto files), the HTTP side, and the periodic work (silent regions turning
//! unknown, history retention).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use vantage_proto::v1::agent_service_server::AgentServiceServer;
use vantage_proto::v1::coordinator_server::CoordinatorServer;

use crate::hub::{Hub, HubOptions};
use crate::service::{AdminEndpoint, AgentEndpoint};
use crate::store::Store;

/// Largest gRPC message accepted (a full batch is far smaller).
const MAX_MESSAGE: usize = 4 << 20;

#[derive(Debug, Clone)]
pub struct ServeOptions {
    pub listen: SocketAddr,
    pub http_listen: Option<SocketAddr>,
    pub data_dir: PathBuf,
    pub config: Option<PathBuf>,
    pub retention: Duration,
    pub hub: HubOptions,
}

/// A running coordinator. Dropping it does not stop it; call `shutdown`.
pub struct Running {
    pub hub: Arc<Hub>,
    pub addr: SocketAddr,
    pub http_addr: Option<SocketAddr>,
    stop: Option<oneshot::Sender<()>>,
    grpc: JoinHandle<Result<(), tonic::transport::Error>>,
    background: Vec<JoinHandle<()>>,
}

impl Running {
    /// Waits until the gRPC server ends (it does not, unless it fails or is shut down).
    pub async fn wait(&mut self) -> anyhow::Result<()> {
        (&mut self.grpc).await.context("the gRPC server task failed")?.context("the gRPC server failed")
    }

    /// Stops accepting, ends every agent stream (agents reconnect elsewhere or later), and
    /// gives calls in flight a few seconds to finish.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
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
    let targets = match &options.config {
        Some(path) => crate::config::load(path)?,
        None => Vec::new(),
    };
    let dir = options.data_dir.clone();
    let store = tokio::task::spawn_blocking(move || Store::open(&dir))
        .await?
        .with_context(|| format!("opening the store in {}", options.data_dir.display()))?;
    let hub = Hub::open(Arc::new(store), targets, options.hub.clone()).await.context("loading the store")?;

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
    let agents = AgentServiceServer::new(AgentEndpoint { hub: hub.clone() })
        .max_decoding_message_size(MAX_MESSAGE)
        .max_encoding_message_size(MAX_MESSAGE);
    let admin = CoordinatorServer::new(AdminEndpoint { hub: hub.clone() })
        .max_decoding_message_size(MAX_MESSAGE)
        .max_encoding_message_size(MAX_MESSAGE);
    let (stop, stopped) = oneshot::channel::<()>();
    let grpc = tokio::spawn(
        tonic::transport::Server::builder()
            .http2_keepalive_interval(Some(Duration::from_secs(20)))
            .http2_keepalive_timeout(Some(Duration::from_secs(20)))
            .add_service(reflection)
            .add_service(reflection_alpha)
            .add_service(agents)
            .add_service(admin)
            .serve_with_incoming_shutdown(tokio_stream::wrappers::TcpListenerStream::new(listener), async {
                let _ = stopped.await;
            }),
    );

    let mut background = Vec::new();
    let http_addr = match options.http_listen {
        Some(http) => {
            let listener = TcpListener::bind(http).await.with_context(|| format!("listening on {http}"))?;
            let http_addr = listener.local_addr()?;
            background.push(tokio::spawn(crate::http::serve(listener, hub.clone())));
            Some(http_addr)
        }
        None => None,
    };
    let ticking = hub.clone();
    background.push(tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tick.tick().await;
            ticking.evaluate(None).await;
        }
    }));
    let pruning = hub.clone();
    let retention = options.retention;
    background.push(tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(600));
        loop {
            tick.tick().await;
            match pruning.prune(retention).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(removed = n, "results past retention removed"),
                Err(e) => tracing::error!(error = %e, "pruning history failed"),
            }
        }
    }));
    tracing::info!(%addr, http = ?http_addr, "coordinator listening");
    Ok(Running { hub, addr, http_addr, stop: Some(stop), grpc, background })
}
