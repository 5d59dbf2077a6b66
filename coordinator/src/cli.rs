//! The operator's commands, a client of the coordinator's gRPC API: `status`, `uptime`,
//! `targets`, `alerts`, `silences`, `regions` and `pki`, one file each (and `shard`, which reads a config
//! file instead). Nothing the server runs imports
//! from here; what both sides write the same way (enum names, a status as JSON) lives in
//! `names` and `view`. This file: how a command reaches the coordinator.

pub mod alerts;
pub mod incidents;
pub mod pki;
pub mod regions;
pub mod shard;
pub mod silences;
pub mod status;
pub mod targets;
pub mod uptime;

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Args;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use vantage_proto::v1::coordinator_client::CoordinatorClient;

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

/// A gRPC error as one sentence.
pub fn status_error(status: tonic::Status) -> anyhow::Error {
    anyhow::anyhow!("the coordinator refused: {} ({:?})", status.message(), status.code())
}

/// A `KEY=VALUE` flag.
pub(crate) fn label(s: &str) -> Result<(String, String), String> {
    s.split_once('=').map(|(k, v)| (k.to_owned(), v.to_owned())).ok_or_else(|| format!("{s:?} is not KEY=VALUE"))
}

/// A duration flag (`90s`, `2h`).
pub(crate) fn duration(s: &str) -> Result<std::time::Duration, String> {
    vantage_shared::duration::parse_duration(s).map_err(|e| e.to_string())
}
