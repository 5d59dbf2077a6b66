//! The gRPC services, kept thin: `AgentService` (each agent's stream) and `Coordinator` (admin and
//! query API) translate between the wire and the hub. Errors become `tonic::Status` in one place.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};
use vantage_proto::v1::agent_service_server::AgentService;
use vantage_proto::v1::coordinator_server::Coordinator;
use vantage_proto::v1::*;

use crate::hub::{Hub, HubError};
use crate::store::BatchOutcome;

/// How long a new stream may take to say hello.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);

impl From<HubError> for Status {
    fn from(e: HubError) -> Status {
        match e {
            HubError::Invalid(spec) => Status::invalid_argument(spec.to_string()),
            HubError::NoTarget(url) => Status::not_found(format!("no target {url}")),
            HubError::Refused(reason) => Status::invalid_argument(reason),
            HubError::Closed => Status::unavailable("the coordinator is shutting down"),
            HubError::Store(e) => {
                tracing::error!(error = %e, "store failure");
                Status::internal("storage failure; see the coordinator's log")
            }
        }
    }
}

pub struct AgentEndpoint {
    pub hub: Arc<Hub>,
}

#[tonic::async_trait]
impl AgentService for AgentEndpoint {
    type ConnectStream = ReceiverStream<Result<CoordinatorMessage, Status>>;

    async fn connect(
        &self,
        request: Request<Streaming<AgentMessage>>,
    ) -> Result<Response<Self::ConnectStream>, Status> {
        let mut inbound = request.into_inner();
        let first = tokio::time::timeout(HELLO_TIMEOUT, inbound.message())
            .await
            .map_err(|_| Status::deadline_exceeded("no hello within 10s"))??;
        let hello = match first.and_then(|m| m.kind) {
            Some(agent_message::Kind::Hello(hello)) => hello,
            _ => return Err(Status::invalid_argument("the first message must be a hello")),
        };
        let (tx, rx) = tokio::sync::mpsc::channel(4096);
        let hub = self.hub.clone();
        let (session, closed) = hub.connect_agent(&hello.name, &hello.region, &hello.version, tx.clone()).await?;
        tokio::spawn(async move {
            let result = tokio::select! {
                result = serve_agent(&hub, &hello, &mut inbound, &tx) => result,
                // The hub dropped this session: end the stream so the agent reconnects.
                _ = closed => Ok(()),
            };
            if let Err(status) = result {
                tracing::warn!(agent = hello.name, error = %status.message(), "agent stream ended with an error");
                let _ = tx.send(Err(status)).await;
            }
            hub.disconnect_agent(&hello.name, session).await;
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

/// Reads an agent's batches until its stream ends; each is acked once committed.
async fn serve_agent(
    hub: &Arc<Hub>,
    hello: &Hello,
    inbound: &mut Streaming<AgentMessage>,
    tx: &crate::hub::AgentTx,
) -> Result<(), Status> {
    while let Some(message) = inbound.message().await? {
        match message.kind {
            Some(agent_message::Kind::Batch(batch)) => {
                let results = batch
                    .results
                    .into_iter()
                    .map(|r| {
                        let entry = HistoryEntry {
                            region: hello.region.clone(),
                            agent: hello.name.clone(),
                            result: r.result,
                            retried: r.retried,
                            run_now_id: r.run_now_id,
                            first_failure_code: r.first_failure_code,
                        };
                        (r.target_url, entry)
                    })
                    .collect();
                // Its own task: if this stream is dropped mid-batch (the session was replaced), the
                // commit and the live view still finish together.
                let (ingesting, name, region) = (hub.clone(), hello.name.clone(), hello.region.clone());
                let outcome =
                    tokio::spawn(async move { ingesting.ingest(&name, &region, batch.sequence, results).await })
                        .await
                        .map_err(|_| Status::internal("ingest task failed"))??;
                if outcome == BatchOutcome::Duplicate {
                    tracing::debug!(agent = hello.name, sequence = batch.sequence, "duplicate batch dropped");
                }
                let ack =
                    CoordinatorMessage { kind: Some(coordinator_message::Kind::Ack(Ack { sequence: batch.sequence })) };
                if tx.send(Ok(ack)).await.is_err() {
                    break;
                }
            }
            Some(agent_message::Kind::Hello(_)) => return Err(Status::invalid_argument("hello sent twice")),
            None => return Err(Status::invalid_argument("empty message")),
        }
    }
    Ok(())
}

pub struct AdminEndpoint {
    pub hub: Arc<Hub>,
}

fn ms(t: Option<&prost_types::Timestamp>) -> Option<i64> {
    t.map(|t| t.seconds.saturating_mul(1000).saturating_add(i64::from(t.nanos) / 1_000_000))
}

type StatusStream = Pin<Box<dyn Stream<Item = Result<TargetStatus, Status>> + Send>>;

#[tonic::async_trait]
impl Coordinator for AdminEndpoint {
    async fn upsert_target(
        &self,
        request: Request<UpsertTargetRequest>,
    ) -> Result<Response<UpsertTargetResponse>, Status> {
        let mut spec = request.into_inner().target.ok_or_else(|| Status::invalid_argument("target: missing"))?;
        spec.source = "api".into();
        let (target, created) = self.hub.upsert_target(spec).await?;
        Ok(Response::new(UpsertTargetResponse { target: Some(target), created }))
    }

    async fn delete_target(
        &self,
        request: Request<DeleteTargetRequest>,
    ) -> Result<Response<DeleteTargetResponse>, Status> {
        let deleted = self.hub.delete_target(&request.into_inner().url).await?;
        Ok(Response::new(DeleteTargetResponse { deleted }))
    }

    async fn list_targets(&self, _: Request<ListTargetsRequest>) -> Result<Response<ListTargetsResponse>, Status> {
        Ok(Response::new(ListTargetsResponse { targets: self.hub.targets() }))
    }

    async fn list_status(&self, request: Request<ListStatusRequest>) -> Result<Response<ListStatusResponse>, Status> {
        let urls: Vec<String> = request
            .into_inner()
            .urls
            .into_iter()
            .map(|u| vantage_shared::TargetUrl::parse(&u).map(|t| t.to_string()).unwrap_or(u))
            .collect();
        Ok(Response::new(ListStatusResponse { targets: self.hub.statuses(&urls) }))
    }

    type WatchStatusStream = StatusStream;

    async fn watch_status(&self, _: Request<WatchStatusRequest>) -> Result<Response<StatusStream>, Status> {
        // Subscribe before the snapshot, so no change falls between the two.
        let mut changes = self.hub.subscribe();
        let (tx, rx) = tokio::sync::mpsc::channel(256);
        let hub = self.hub.clone();
        tokio::spawn(async move {
            let mut pending: Vec<TargetStatus> = hub.statuses(&[]);
            loop {
                for status in pending.drain(..) {
                    if tx.send(Ok(status)).await.is_err() {
                        return; // the watcher left
                    }
                }
                match changes.recv().await {
                    Ok(status) => pending.push(status),
                    // A watcher that fell behind gets the whole picture again, not a gap.
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => pending = hub.statuses(&[]),
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn get_history(&self, request: Request<GetHistoryRequest>) -> Result<Response<GetHistoryResponse>, Status> {
        let r = request.into_inner();
        if r.url.is_empty() {
            return Err(Status::invalid_argument("url: missing"));
        }
        let limit = match r.limit {
            0 => 100,
            n if n > 1000 => return Err(Status::invalid_argument("limit: at most 1000")),
            n => n as usize,
        };
        let region = Some(r.region).filter(|r| !r.is_empty());
        let since = ms(r.since.as_ref()).unwrap_or(i64::MIN);
        let until = ms(r.until.as_ref()).unwrap_or(i64::MAX);
        let results = self.hub.history(&r.url, region, since, until, limit).await?;
        Ok(Response::new(GetHistoryResponse { results }))
    }

    async fn check_now(&self, request: Request<CheckNowRequest>) -> Result<Response<CheckNowResponse>, Status> {
        let (status, results, missing_regions) = self.hub.check_now(&request.into_inner().url).await?;
        Ok(Response::new(CheckNowResponse { status: Some(status), results, missing_regions }))
    }

    async fn list_agents(&self, _: Request<ListAgentsRequest>) -> Result<Response<ListAgentsResponse>, Status> {
        Ok(Response::new(ListAgentsResponse { agents: self.hub.agents() }))
    }

    async fn list_incidents(
        &self,
        request: Request<ListIncidentsRequest>,
    ) -> Result<Response<ListIncidentsResponse>, Status> {
        let r = request.into_inner();
        Ok(Response::new(ListIncidentsResponse { incidents: self.hub.incidents(&r.url, r.open_only).await? }))
    }
}
