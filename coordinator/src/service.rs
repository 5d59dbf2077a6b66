//! The gRPC services, kept thin: `AgentService` (each agent's stream) and `Coordinator` (admin and
//! query API) translate between the wire and the hub. Errors become `tonic::Status` in one place.

use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};
use tracing::Instrument;
use vantage_proto::v1::agent_service_server::AgentService;
use vantage_proto::v1::coordinator_server::Coordinator;
use vantage_proto::v1::*;
use vantage_shared::identity::{self, Identity};

use crate::auth::{self, Access, AdminAuth};
use crate::hub::{AgentCert, Hub, HubError, MAX_BATCH};
use crate::store::BatchOutcome;

/// How long a new stream may take to say hello.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest target URL accepted anywhere.
pub const MAX_URL: usize = 2048;
/// Most URLs one `ListStatus` call may name.
pub const MAX_URLS_PER_REQUEST: usize = 1000;
/// Default of `--agent-rate`: results per second one agent may deliver before its stream is read
/// more slowly (a resent outbox drains at this pace instead of flooding the store).
pub const DEFAULT_AGENT_RATE: u32 = 2000;

impl From<HubError> for Status {
    fn from(e: HubError) -> Status {
        match e {
            HubError::Invalid(spec) => Status::invalid_argument(spec.to_string()),
            HubError::NoTarget(url) => Status::not_found(format!("no target {url}")),
            HubError::Refused(reason) => Status::invalid_argument(reason),
            HubError::Forbidden(reason) => Status::permission_denied(reason),
            HubError::Full(reason) => Status::resource_exhausted(reason),
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
    /// With mTLS, an agent's region and name come from its certificate; without, from its hello.
    pub mtls: bool,
    /// Results per second per agent.
    pub rate: u32,
}

impl AgentEndpoint {
    /// Checks who the agent is: with mTLS, its certificate must name an agent of the region and
    /// name its hello claims.
    fn admit(&self, peer: Option<auth::PeerInfo>, hello: &Hello) -> Result<Option<AgentCert>, Status> {
        if !self.mtls {
            return Ok(None);
        }
        let Some(peer) = peer else {
            tracing::warn!(claimed_region = hello.region, agent = hello.name, "agent refused: no client certificate");
            return Err(Status::unauthenticated("agents must present a client certificate (see `pki issue-agent`)"));
        };
        let cert = AgentCert { sha256: peer.cert.sha256_hex.clone(), not_after_ms: peer.cert.not_after_unix * 1000 };
        match &peer.cert.identity {
            Some(Identity::Agent { region, name }) if *region == hello.region && *name == hello.name => Ok(Some(cert)),
            Some(Identity::Agent { region, name }) => {
                tracing::warn!(
                    from = %peer.addr,
                    certificate_region = region,
                    certificate_name = name,
                    claimed_region = hello.region,
                    claimed_name = hello.name,
                    "agent refused: its hello claims another region or name than its certificate"
                );
                Err(Status::permission_denied(format!(
                    "this certificate belongs to agent {name} in region {region}, not {} in {}",
                    hello.name, hello.region
                )))
            }
            _ => {
                tracing::warn!(from = %peer.addr, "agent refused: the client certificate names no agent");
                Err(Status::permission_denied("the client certificate is not an agent certificate"))
            }
        }
    }
}

/// Whether a stream error is the connection going (HTTP/2, hyper or I/O underneath), not
/// something the agent sent.
fn broke_off(status: &Status) -> bool {
    let mut source = std::error::Error::source(status);
    while let Some(error) = source {
        if error.is::<h2::Error>() || error.is::<hyper::Error>() || error.is::<std::io::Error>() {
            return true;
        }
        source = error.source();
    }
    false
}

/// A request's `limit` of rows: 100 when unset, at most 1,000.
fn row_limit(limit: u32) -> Result<usize, Status> {
    match limit {
        0 => Ok(100),
        n if n > 1000 => Err(Status::invalid_argument("limit: at most 1000")),
        n => Ok(n as usize),
    }
}

/// The largest batch sequence accepted.
const MAX_SEQUENCE: u64 = 1 << 62;

/// Checks an incoming batch before anything of it is used; a malformed batch ends the stream.
pub fn check_batch(batch: &ResultBatch) -> Result<(), Status> {
    // Agents count from the clock in microseconds: 2^62 is 146,000 years away. A sequence near
    // the top would leave the agent no room above it.
    if batch.sequence > MAX_SEQUENCE {
        return Err(Status::invalid_argument(format!("sequence: at most {MAX_SEQUENCE}, got {}", batch.sequence)));
    }
    if batch.results.len() > MAX_BATCH {
        return Err(Status::invalid_argument(format!(
            "results: a batch holds at most {MAX_BATCH}, got {}",
            batch.results.len()
        )));
    }
    for (i, r) in batch.results.iter().enumerate() {
        let bad = |what: &str| Err(Status::invalid_argument(format!("results[{i}].{what}")));
        if r.target_url.is_empty() || r.target_url.len() > MAX_URL {
            return bad("target_url: must be 1 to 2048 bytes");
        }
        if r.result.is_none() {
            return bad("result: missing");
        }
        if r.run_now_id.len() > 64 || r.first_failure_code.len() > 64 {
            return bad("run_now_id / first_failure_code: at most 64 bytes");
        }
        if r.trace_context.len() > 2 || r.trace_context.iter().any(|(k, v)| k.len() > 32 || v.len() > 512) {
            return bad("trace_context: at most traceparent and tracestate, 512 bytes each");
        }
    }
    Ok(())
}

/// A batch's results as history rows of `region` and `agent`, keyed by target URL.
pub fn history_entries(results: Vec<TargetResult>, region: &str, agent: &str) -> Vec<(String, HistoryEntry)> {
    results
        .into_iter()
        .map(|r| {
            let entry = HistoryEntry {
                region: region.to_owned(),
                agent: agent.to_owned(),
                result: r.result,
                retried: r.retried,
                run_now_id: r.run_now_id,
                first_failure_code: r.first_failure_code,
            };
            (r.target_url, entry)
        })
        .collect()
}

fn alert_info(r: &crate::alert::AlertRecord) -> AlertInfo {
    let at = |ms: i64| (ms != 0).then(|| crate::store::timestamp(ms));
    AlertInfo {
        id: r.alert.id.clone(),
        kind: r.alert.kind.as_str().into(),
        subject: r.alert.subject.clone(),
        at: at(r.alert.at_ms),
        summary: r.alert.summary(),
        dedup_key: r.alert.dedup_key.clone(),
        deliveries: r
            .deliveries
            .iter()
            .map(|d| AlertDelivery {
                channel: d.channel.clone(),
                state: serde_json::to_value(d.state)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_default(),
                attempts: d.attempts,
                last_error: d.last_error.clone(),
                next_attempt: at(d.next_attempt_ms).filter(|_| d.state == crate::alert::DeliveryState::Pending),
                delivered_at: at(d.delivered_ms),
            })
            .collect(),
        silenced_by: r.silenced_by.clone().unwrap_or_default(),
        text: r.alert.text(),
    }
}

/// A token bucket: `rate` per second, bursts of `burst`. Taking more than is there is allowed
/// (a batch is never split); the caller then waits until the debt is paid.
struct Bucket {
    tokens: f64,
    rate: f64,
    burst: f64,
    last: Instant,
}

impl Bucket {
    fn new(rate: u32, now: Instant) -> Bucket {
        let rate = f64::from(rate.max(1));
        let burst = rate.max(2.0 * MAX_BATCH as f64);
        Bucket { tokens: burst, rate, burst, last: now }
    }

    /// Takes `n` tokens; returns how long to wait before going on.
    fn take(&mut self, n: usize, now: Instant) -> Duration {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst) - n as f64;
        if self.tokens >= 0.0 { Duration::ZERO } else { Duration::from_secs_f64(-self.tokens / self.rate) }
    }
}

#[tonic::async_trait]
impl AgentService for AgentEndpoint {
    type ConnectStream = ReceiverStream<Result<CoordinatorMessage, Status>>;

    async fn connect(
        &self,
        request: Request<Streaming<AgentMessage>>,
    ) -> Result<Response<Self::ConnectStream>, Status> {
        let peer = auth::peer_info(&request)?;
        let mut inbound = request.into_inner();
        let first = tokio::time::timeout(HELLO_TIMEOUT, inbound.message())
            .await
            .map_err(|_| Status::deadline_exceeded("no hello within 10s"))??;
        let hello = match first.and_then(|m| m.kind) {
            Some(agent_message::Kind::Hello(hello)) => hello,
            _ => return Err(Status::invalid_argument("the first message must be a hello")),
        };
        let cert = self.admit(peer, &hello)?;
        let (tx, rx) = tokio::sync::mpsc::channel(4096);
        let hub = self.hub.clone();
        // Measured at the hello, sent just after connecting: the network's delay is in it too, so
        // under a second it says nothing and counts as none.
        let clock_offset_ms = hello
            .sent_at
            .as_ref()
            .map(|t| crate::store::ms(t).saturating_sub(crate::hub::now_ms()))
            .filter(|ms| ms.unsigned_abs() >= 1_000)
            .unwrap_or(0);
        let (session, closed) = hub
            .connect_agent(&hello.name, &hello.region, &hello.version, cert, clock_offset_ms, tx.clone())
            .await
            .inspect_err(|e| {
                tracing::warn!(agent = hello.name, region = hello.region, error = %e, "agent refused");
            })?;
        let rate = self.rate;
        tokio::spawn(async move {
            let result = tokio::select! {
                result = serve_agent(&hub, &hello, &mut inbound, &tx, rate) => result,
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
    rate: u32,
) -> Result<(), Status> {
    let mut bucket = Bucket::new(rate, Instant::now());
    loop {
        let message = match inbound.message().await {
            Ok(Some(message)) => message,
            Ok(None) => break,
            // The connection itself went (the agent stopped, its host or the network failed):
            // nothing to answer, and the region's silence is alerted on its own. A message that
            // cannot be decoded (too large, malformed) is the agent's error, told to it below.
            Err(status) if broke_off(&status) => {
                tracing::info!(agent = hello.name, region = hello.region, reason = %status.message(), "agent stream broke off");
                break;
            }
            Err(status) => return Err(status),
        };
        match message.kind {
            Some(agent_message::Kind::Batch(batch)) => {
                check_batch(&batch)?;
                let wait = bucket.take(1 + batch.results.len(), Instant::now());
                if !wait.is_zero() {
                    tracing::debug!(agent = hello.name, ?wait, "agent over its result rate; reading slower");
                    tokio::time::sleep(wait).await;
                }
                // A run-now result carries its probe's trace: the ingest joins it (one CheckNow,
                // one trace).
                let span = tracing::info_span!(
                    "ingest",
                    agent = hello.name,
                    region = hello.region,
                    sequence = batch.sequence,
                    results = batch.results.len()
                );
                // Only a run-now the coordinator is waiting for: an agent cannot force its batches
                // into the sampled traces.
                let traced = batch.results.iter().find(|r| {
                    !r.trace_context.is_empty() && !r.run_now_id.is_empty() && hub.awaits_run_now(&r.run_now_id)
                });
                if let Some(r) = traced {
                    vantage_shared::telemetry::adopt(&span, r.trace_context.iter().map(|(k, v)| (&**k, &**v)));
                }
                let results = history_entries(batch.results, &hello.region, &hello.name);
                // Its own task: if this stream is dropped mid-batch (the session was replaced), the
                // commit and the live view still finish together.
                let (ingesting, name, region) = (hub.clone(), hello.name.clone(), hello.region.clone());
                let outcome = tokio::spawn(
                    async move { ingesting.ingest(&name, &region, batch.sequence, results).await }.instrument(span),
                )
                .await
                .map_err(|_| Status::internal("ingest task failed"))??;
                if outcome == BatchOutcome::Duplicate {
                    tracing::debug!(agent = hello.name, sequence = batch.sequence, "duplicate batch dropped");
                }
                let ack = CoordinatorMessage {
                    kind: Some(coordinator_message::Kind::Ack(Ack { sequence: batch.sequence, refused: Vec::new() })),
                };
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
    pub auth: Arc<AdminAuth>,
}

impl AdminEndpoint {
    /// Lets a call through (naming the caller, for the log) or says why not.
    fn authorize<T>(&self, request: &Request<T>, access: Access) -> Result<String, Status> {
        self.auth.check(request, access, |sha256| self.hub.is_revoked(sha256))
    }
}

fn ms(t: Option<&prost_types::Timestamp>) -> Option<i64> {
    t.map(crate::store::ms)
}

type StatusStream = Pin<Box<dyn Stream<Item = Result<TargetStatus, Status>> + Send>>;

#[tonic::async_trait]
impl Coordinator for AdminEndpoint {
    async fn upsert_target(
        &self,
        request: Request<UpsertTargetRequest>,
    ) -> Result<Response<UpsertTargetResponse>, Status> {
        let by = self.authorize(&request, Access::Write)?;
        let mut spec = request.into_inner().target.ok_or_else(|| Status::invalid_argument("target: missing"))?;
        spec.source = "api".into();
        let (target, created) = self.hub.upsert_target(spec).await?;
        tracing::info!(url = target.url, created, by, "target upserted");
        Ok(Response::new(UpsertTargetResponse { target: Some(target), created }))
    }

    async fn delete_target(
        &self,
        request: Request<DeleteTargetRequest>,
    ) -> Result<Response<DeleteTargetResponse>, Status> {
        let by = self.authorize(&request, Access::Write)?;
        let url = request.into_inner().url;
        let deleted = self.hub.delete_target(&url).await?;
        tracing::info!(url, deleted, by, "target deleted");
        Ok(Response::new(DeleteTargetResponse { deleted }))
    }

    async fn list_targets(
        &self,
        request: Request<ListTargetsRequest>,
    ) -> Result<Response<ListTargetsResponse>, Status> {
        self.authorize(&request, Access::Read)?;
        Ok(Response::new(ListTargetsResponse { targets: self.hub.targets() }))
    }

    async fn list_status(&self, request: Request<ListStatusRequest>) -> Result<Response<ListStatusResponse>, Status> {
        self.authorize(&request, Access::Read)?;
        let urls = request.into_inner().urls;
        if urls.len() > MAX_URLS_PER_REQUEST {
            return Err(Status::invalid_argument(format!("urls: at most {MAX_URLS_PER_REQUEST} per call")));
        }
        let urls: Vec<String> = urls
            .into_iter()
            .map(|u| vantage_shared::TargetUrl::parse(&u).map(|t| t.to_string()).unwrap_or(u))
            .collect();
        Ok(Response::new(ListStatusResponse {
            targets: self.hub.statuses(&urls),
            failing_channels: self.hub.failing_channels(),
        }))
    }

    type WatchStatusStream = StatusStream;

    async fn watch_status(&self, request: Request<WatchStatusRequest>) -> Result<Response<StatusStream>, Status> {
        self.authorize(&request, Access::Read)?;
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
        self.authorize(&request, Access::Read)?;
        let r = request.into_inner();
        if r.url.is_empty() {
            return Err(Status::invalid_argument("url: missing"));
        }
        let limit = row_limit(r.limit)?;
        let region = Some(r.region).filter(|r| !r.is_empty());
        let since = ms(r.since.as_ref()).unwrap_or(i64::MIN);
        let until = ms(r.until.as_ref()).unwrap_or(i64::MAX);
        let results = self.hub.history(&r.url, region, since, until, limit).await?;
        Ok(Response::new(GetHistoryResponse { results }))
    }

    async fn check_now(&self, request: Request<CheckNowRequest>) -> Result<Response<CheckNowResponse>, Status> {
        // It makes every region probe now: a write, not a read.
        let by = self.authorize(&request, Access::Write)?;
        // The whole check is one trace: continued from the caller's `traceparent`, if it sent one.
        let span = tracing::info_span!("CheckNow", url = request.get_ref().url, by, otel.kind = "server");
        let metadata = request.metadata().clone();
        vantage_shared::telemetry::adopt(
            &span,
            ["traceparent", "tracestate"].into_iter().filter_map(|k| Some((k, metadata.get(k)?.to_str().ok()?))),
        );
        let url = request.into_inner().url;
        let (status, results, missing_regions) = self.hub.check_now(&url).instrument(span).await?;
        Ok(Response::new(CheckNowResponse { status: Some(status), results, missing_regions }))
    }

    async fn list_agents(&self, request: Request<ListAgentsRequest>) -> Result<Response<ListAgentsResponse>, Status> {
        self.authorize(&request, Access::Read)?;
        Ok(Response::new(ListAgentsResponse { agents: self.hub.agents() }))
    }

    async fn list_incidents(
        &self,
        request: Request<ListIncidentsRequest>,
    ) -> Result<Response<ListIncidentsResponse>, Status> {
        self.authorize(&request, Access::Read)?;
        let r = request.into_inner();
        let limit = row_limit(r.limit)?;
        Ok(Response::new(ListIncidentsResponse { incidents: self.hub.incidents(&r.url, r.open_only, limit).await? }))
    }

    async fn revoke_agent(
        &self,
        request: Request<RevokeAgentRequest>,
    ) -> Result<Response<RevokeAgentResponse>, Status> {
        let by = self.authorize(&request, Access::Write)?;
        let r = request.into_inner();
        let (sha256, identity) = match (r.cert_pem.is_empty(), r.cert_sha256.is_empty()) {
            (false, true) => {
                let der = crate::pki::pem_certificate(&r.cert_pem)
                    .map_err(|e| Status::invalid_argument(format!("cert_pem: {e}")))?;
                let cert =
                    identity::of_certificate(&der).map_err(|e| Status::invalid_argument(format!("cert_pem: {e}")))?;
                (cert.sha256_hex, cert.identity.map(|i| i.to_string()))
            }
            (true, false) => (r.cert_sha256, None),
            _ => return Err(Status::invalid_argument("cert_pem or cert_sha256: give exactly one")),
        };
        let (already_revoked, identity, closed_sessions) = self.hub.revoke(&sha256, identity).await?;
        tracing::info!(cert_sha256 = sha256, identity, by, "revocation requested");
        Ok(Response::new(RevokeAgentResponse {
            cert_sha256: sha256.to_ascii_lowercase(),
            identity,
            already_revoked,
            closed_sessions,
        }))
    }

    async fn list_alerts(&self, request: Request<ListAlertsRequest>) -> Result<Response<ListAlertsResponse>, Status> {
        self.authorize(&request, Access::Read)?;
        let r = request.into_inner();
        let limit = row_limit(r.limit)?;
        let alerts = self.hub.alerts(&r.subject, limit).await?;
        Ok(Response::new(ListAlertsResponse { alerts: alerts.iter().map(alert_info).collect() }))
    }

    async fn create_silence(
        &self,
        request: Request<CreateSilenceRequest>,
    ) -> Result<Response<CreateSilenceResponse>, Status> {
        let by = self.authorize(&request, Access::Write)?;
        let s = request.into_inner().silence.ok_or_else(|| Status::invalid_argument("silence: missing"))?;
        let silence = crate::alert::check_silence(
            &s.target,
            s.labels.into_iter().collect(),
            ms(s.start.as_ref()),
            ms(s.end.as_ref()),
            &s.comment,
            "api",
            crate::hub::now_ms(),
        )
        .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let silence = self.hub.create_silence(silence).await?;
        tracing::info!(id = silence.id, by, "silence created through the API");
        Ok(Response::new(CreateSilenceResponse { silence: Some(crate::hub::silence_to_proto(&silence)) }))
    }

    async fn list_silences(
        &self,
        request: Request<ListSilencesRequest>,
    ) -> Result<Response<ListSilencesResponse>, Status> {
        self.authorize(&request, Access::Read)?;
        let silences = self.hub.silences().iter().map(crate::hub::silence_to_proto).collect();
        Ok(Response::new(ListSilencesResponse { silences }))
    }

    async fn delete_silence(
        &self,
        request: Request<DeleteSilenceRequest>,
    ) -> Result<Response<DeleteSilenceResponse>, Status> {
        let by = self.authorize(&request, Access::Write)?;
        let id = request.into_inner().id;
        let deleted = self.hub.delete_silence(&id).await?;
        tracing::info!(id, deleted, by, "silence deleted");
        Ok(Response::new(DeleteSilenceResponse { deleted }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bucket_lets_bursts_through_and_paces_floods() {
        let start = Instant::now();
        let mut bucket = Bucket::new(1000, start);
        // A burst of two full batches passes at once.
        assert_eq!(bucket.take(1001, start), Duration::ZERO);
        assert_eq!(bucket.take(999, start), Duration::ZERO);
        // The next must wait for its tokens: 1,000 results at 1,000 a second.
        assert_eq!(bucket.take(1000, start), Duration::from_secs(1));
        // After a quiet minute the bucket is full again, not fuller.
        let later = start + Duration::from_secs(60);
        assert_eq!(bucket.take(2000, later), Duration::ZERO);
        assert!(bucket.take(1, later) > Duration::ZERO);
    }

    #[test]
    fn a_dropped_connection_is_told_apart_from_a_bad_message() {
        let dropped = Status::from_error(Box::new(h2::Error::from(h2::Reason::INTERNAL_ERROR)));
        assert_eq!(dropped.code(), tonic::Code::Internal, "the same code as a decode error");
        assert!(broke_off(&dropped));
        let reset = Status::from_error(Box::new(std::io::Error::from(std::io::ErrorKind::ConnectionReset)));
        assert!(broke_off(&reset));
        assert!(!broke_off(&Status::internal("failed to decode Protobuf message: invalid wire type")));
        assert!(!broke_off(&Status::out_of_range("message too large")));
    }

    #[test]
    fn malformed_batches_are_named() {
        let ok = TargetResult {
            target_url: "https://a.example/".into(),
            result: Some(ProbeResult::default()),
            ..Default::default()
        };
        assert!(check_batch(&ResultBatch { sequence: 1, results: vec![ok.clone()] }).is_ok());
        let cases = [
            (TargetResult { target_url: String::new(), ..ok.clone() }, "target_url"),
            (TargetResult { target_url: "x".repeat(3000), ..ok.clone() }, "target_url"),
            (TargetResult { result: None, ..ok.clone() }, "result"),
            (TargetResult { run_now_id: "x".repeat(65), ..ok.clone() }, "run_now_id"),
            (
                TargetResult { trace_context: [("traceparent".into(), "0".repeat(513))].into(), ..ok.clone() },
                "trace_context",
            ),
            (
                TargetResult {
                    trace_context: (0..3).map(|i| (format!("k{i}"), String::new())).collect(),
                    ..ok.clone()
                },
                "trace_context",
            ),
        ];
        let traced = [("traceparent".to_owned(), "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".to_owned())];
        let traced = TargetResult { trace_context: traced.into(), ..ok.clone() };
        assert!(check_batch(&ResultBatch { sequence: 1, results: vec![traced] }).is_ok());
        for (bad, field) in cases {
            let status = check_batch(&ResultBatch { sequence: 1, results: vec![ok.clone(), bad] }).unwrap_err();
            assert_eq!(status.code(), tonic::Code::InvalidArgument);
            assert!(status.message().starts_with(&format!("results[1].{field}")), "{}", status.message());
        }
        let far = check_batch(&ResultBatch { sequence: u64::MAX, results: vec![ok.clone()] }).unwrap_err();
        assert!(far.message().starts_with("sequence:"), "{}", far.message());
        let huge = ResultBatch { sequence: 1, results: vec![ok; MAX_BATCH + 1] };
        assert!(check_batch(&huge).unwrap_err().message().starts_with("results:"));
    }
}
