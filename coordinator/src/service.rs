//! The gRPC services, kept thin: `AgentService` (each agent's stream) and `Coordinator` (admin and
//! query API) translate between the wire and the hub. Errors become `tonic::Status` in one place.

use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use prost::Message as _;
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};
use tracing::Instrument;
use vantage_proto::v1::agent_service_server::AgentService;
use vantage_proto::v1::coordinator_server::Coordinator;
use vantage_proto::v1::*;
use vantage_shared::identity::{self, Identity};
use vantage_shared::limits::{MAX_BATCH_RESULTS, MAX_ID, MAX_MESSAGE, MAX_RESULT_BYTES, MAX_URL};

use crate::auth::{self, Access, AdminAuth};
use crate::hub::{AgentCert, Hub, HubError};
use crate::refusal::{Reason, Refusal, RefusalLog};
use crate::store::BatchOutcome;

/// How long a new stream may take to say hello.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
/// Most URLs one `ListStatus` call may name.
pub const MAX_URLS_PER_REQUEST: usize = 1000;
/// Default of `--agent-rate`: results per second one agent may deliver before its stream is read
/// more slowly (a resent outbox drains at this pace instead of flooding the store).
pub const DEFAULT_AGENT_RATE: u32 = 2000;
/// Default of `--agent-bytes`: bytes of result batches per second one agent may deliver before
/// its stream is read more slowly. 8 MiB/s is the full result rate at 4 KiB a result (a result
/// with a certificate chain is 1–3 KiB), while one agent cannot keep the store writing at disk
/// speed with results at the size limit.
pub const DEFAULT_AGENT_BYTES: u64 = 8 << 20;
/// Trace context a result may carry: `traceparent` and `tracestate`, each bounded.
const MAX_TRACE_FIELDS: usize = 2;
const MAX_TRACE_KEY: usize = 32;
const MAX_TRACE_VALUE: usize = 512;

impl From<HubError> for Status {
    fn from(e: HubError) -> Status {
        match e {
            HubError::Invalid(spec) => Status::invalid_argument(spec.to_string()),
            HubError::NoTarget(url) => Status::not_found(format!("no target {url}")),
            HubError::Refused(reason) => Status::invalid_argument(reason),
            HubError::Forbidden(reason) => Status::permission_denied(reason),
            HubError::Full(reason) => Status::resource_exhausted(reason),
            HubError::Conflict(reason) => Status::failed_precondition(reason),
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
    /// Bytes of batches per second per agent.
    pub bytes: u64,
    /// When each agent's refusals were last logged.
    pub refusals: Arc<RefusalLog>,
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

/// Checks a batch as a whole: what breaks the protocol (an absurd sequence, too many results)
/// ends the stream. Its results are checked one by one by [`check_result`].
pub fn check_batch(batch: &ResultBatch) -> Result<(), Status> {
    // Agents count from the clock in microseconds: 2^62 is 146,000 years away. A sequence near
    // the top would leave the agent no room above it.
    if batch.sequence > MAX_SEQUENCE {
        return Err(Status::invalid_argument(format!("sequence: at most {MAX_SEQUENCE}, got {}", batch.sequence)));
    }
    if batch.results.len() > MAX_BATCH_RESULTS {
        return Err(Status::invalid_argument(format!(
            "results: a batch holds at most {MAX_BATCH_RESULTS}, got {}",
            batch.results.len()
        )));
    }
    Ok(())
}

/// Checks one result on its own. One the coordinator will not store is refused in the ack (the
/// agent drops it), never a reason to end the stream: a stream ended for a result the agent
/// resends after reconnecting would wedge that agent for good.
pub fn check_result(r: &TargetResult) -> Result<(), Refusal> {
    if r.target_url.is_empty() || r.target_url.len() > MAX_URL {
        return Err(Refusal::new(
            Reason::TargetUrl,
            format!("target_url: must be 1 to {MAX_URL} bytes, got {}", r.target_url.len()),
        ));
    }
    if r.result.is_none() {
        return Err(Refusal::new(Reason::NoResult, "result: missing"));
    }
    for (field, id) in [("run_now_id", &r.run_now_id), ("first_failure_code", &r.first_failure_code)] {
        if id.len() > MAX_ID {
            return Err(Refusal::new(Reason::Id, format!("{field}: at most {MAX_ID} bytes, got {}", id.len())));
        }
    }
    if r.trace_context.len() > MAX_TRACE_FIELDS
        || r.trace_context.iter().any(|(k, v)| k.len() > MAX_TRACE_KEY || v.len() > MAX_TRACE_VALUE)
    {
        return Err(Refusal::new(
            Reason::TraceContext,
            format!("trace_context: at most traceparent and tracestate, {MAX_TRACE_VALUE} bytes each"),
        ));
    }
    let size = r.encoded_len();
    if size > MAX_RESULT_BYTES {
        return Err(Refusal::new(
            Reason::TooLarge,
            format!("the result is {size} bytes encoded, at most {MAX_RESULT_BYTES}"),
        ));
    }
    Ok(())
}

/// Splits a batch's results into those to store and those refused (by position in the batch):
/// each must be well-formed ([`check_result`]) and for a target assigned to this agent
/// ([`Hub::check_assigned`]).
pub fn screen(hub: &Hub, agent: &str, results: Vec<TargetResult>) -> (Vec<TargetResult>, Vec<(u32, Refusal)>) {
    let mut refused = Vec::new();
    let mut valid = Vec::with_capacity(results.len());
    for (i, r) in results.into_iter().enumerate() {
        match check_result(&r) {
            Ok(()) => valid.push((i as u32, r)),
            Err(refusal) => refused.push((i as u32, refusal)),
        }
    }
    let assigned = hub.check_assigned(agent, valid.iter().map(|(_, r)| (r.target_url.as_str(), r.run_now_id.as_str())));
    let mut kept = Vec::with_capacity(valid.len());
    for ((i, r), refusal) in valid.into_iter().zip(assigned) {
        match refusal {
            None => kept.push(r),
            Some(refusal) => refused.push((i, refusal)),
        }
    }
    refused.sort_by_key(|(i, _)| *i);
    (kept, refused)
}

/// Counts a batch's refusals and logs them, at most once per agent and reason a minute.
fn note_refusals(hub: &Hub, log: &RefusalLog, hello: &Hello, refused: &[(u32, Refusal)]) {
    let mut by_reason: BTreeMap<Reason, (u64, &Refusal)> = BTreeMap::new();
    for (_, refusal) in refused {
        by_reason.entry(refusal.reason).or_insert((0, refusal)).0 += 1;
    }
    let now = Instant::now();
    for (reason, (count, example)) in by_reason {
        hub.counters.count_refused(reason, count);
        if let Some(unlogged) = log.due(&hello.name, reason, count, now) {
            tracing::warn!(
                agent = hello.name,
                region = hello.region,
                reason = reason.as_str(),
                count,
                unlogged_since_last = unlogged,
                example = %example,
                "results refused: acknowledged to the agent, not stored"
            );
        }
    }
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
    let at = |ms: i64| (ms != 0).then(|| crate::clock::timestamp(ms));
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
    /// At least `floor` in a burst, so that a single batch never waits on a full bucket.
    fn new(rate: f64, floor: f64, now: Instant) -> Bucket {
        let rate = rate.max(1.0);
        let burst = rate.max(floor);
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
            .map(|t| crate::clock::ms(t).saturating_sub(crate::clock::now_ms()))
            .filter(|ms| ms.unsigned_abs() >= 1_000)
            .unwrap_or(0);
        let (session, closed) = hub
            .connect_agent(&hello.name, &hello.region, &hello.version, cert, clock_offset_ms, tx.clone())
            .await
            .inspect_err(|e| {
                tracing::warn!(agent = hello.name, region = hello.region, error = %e, "agent refused");
            })?;
        let (pace, refusals) = (Pace::new(self.rate, self.bytes, Instant::now()), self.refusals.clone());
        tokio::spawn(async move {
            let result = tokio::select! {
                result = serve_agent(&hub, &hello, &mut inbound, &tx, pace, &refusals) => result,
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

/// One agent's pace: results per second and bytes per second, each with bursts of two full
/// batches; a batch waits as long as the slower of the two needs.
struct Pace {
    results: Bucket,
    bytes: Bucket,
}

impl Pace {
    fn new(rate: u32, bytes: u64, now: Instant) -> Pace {
        Pace {
            results: Bucket::new(f64::from(rate), 2.0 * MAX_BATCH_RESULTS as f64, now),
            bytes: Bucket::new(bytes as f64, 2.0 * MAX_MESSAGE as f64, now),
        }
    }

    /// Takes a batch of `results` results and `bytes` bytes; returns how long to wait.
    fn take(&mut self, results: usize, bytes: usize, now: Instant) -> Duration {
        self.results.take(results, now).max(self.bytes.take(bytes, now))
    }
}

/// Reads an agent's batches until its stream ends; each is acked once committed, with the
/// results that were refused.
async fn serve_agent(
    hub: &Arc<Hub>,
    hello: &Hello,
    inbound: &mut Streaming<AgentMessage>,
    tx: &crate::hub::AgentTx,
    mut pace: Pace,
    refusals: &RefusalLog,
) -> Result<(), Status> {
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
                let wait = pace.take(1 + batch.results.len(), batch.encoded_len(), Instant::now());
                if !wait.is_zero() {
                    tracing::debug!(agent = hello.name, ?wait, "agent over its result or byte rate; reading slower");
                    tokio::time::sleep(wait).await;
                }
                let (results, refused) = screen(hub, &hello.name, batch.results);
                note_refusals(hub, refusals, hello, &refused);
                // A run-now result carries its probe's trace: the ingest joins it (one CheckNow,
                // one trace).
                let span = tracing::info_span!(
                    "ingest",
                    agent = hello.name,
                    region = hello.region,
                    sequence = batch.sequence,
                    results = results.len(),
                    refused = refused.len()
                );
                // Only a run-now the coordinator is waiting for: an agent cannot force its batches
                // into the sampled traces.
                let traced = results.iter().find(|r| {
                    !r.trace_context.is_empty()
                        && !r.run_now_id.is_empty()
                        && hub.awaits_run_now(&r.run_now_id, &r.target_url)
                });
                if let Some(r) = traced {
                    vantage_shared::telemetry::adopt(&span, r.trace_context.iter().map(|(k, v)| (&**k, &**v)));
                }
                let accepted = results.len();
                let results = history_entries(results, &hello.region, &hello.name);
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
                hub.reported(&hello.name, accepted, refused.len());
                let refused = refused
                    .into_iter()
                    .map(|(index, refusal)| RefusedResult { index, reason: refusal.message })
                    .collect();
                let ack = CoordinatorMessage {
                    kind: Some(coordinator_message::Kind::Ack(Ack { sequence: batch.sequence, refused })),
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
    t.map(crate::clock::ms)
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
            crate::clock::now_ms(),
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

    async fn list_regions(
        &self,
        request: Request<ListRegionsRequest>,
    ) -> Result<Response<ListRegionsResponse>, Status> {
        self.authorize(&request, Access::Read)?;
        Ok(Response::new(ListRegionsResponse { regions: self.hub.regions() }))
    }

    async fn forget_region(
        &self,
        request: Request<ForgetRegionRequest>,
    ) -> Result<Response<ForgetRegionResponse>, Status> {
        // It changes every default quorum: an admin's call.
        let by = self.authorize(&request, Access::Write)?;
        let region = request.into_inner().region;
        // The hub logs it, with `by`.
        let forgotten = self.hub.forget_region(&region, &by).await?;
        Ok(Response::new(ForgetRegionResponse { forgotten }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bucket_lets_bursts_through_and_paces_floods() {
        let start = Instant::now();
        let mut bucket = Bucket::new(1000.0, 2000.0, start);
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
    fn the_pace_waits_for_the_slower_budget() {
        let start = Instant::now();
        // 1 MiB a second: two full messages pass at once whatever the rate, then bytes set the pace.
        let mut pace = Pace::new(100_000, 1 << 20, start);
        assert_eq!(pace.take(10, 2 * MAX_MESSAGE, start), Duration::ZERO);
        assert_eq!(pace.take(10, 3 << 20, start), Duration::from_secs(3));
        // Few bytes, many results: the result rate sets it.
        let mut pace = Pace::new(1000, u64::MAX, start);
        assert_eq!(pace.take(2000, 100, start), Duration::ZERO);
        assert_eq!(pace.take(500, 100, start), Duration::from_millis(500));
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
    fn a_batch_ends_the_stream_only_for_its_sequence_or_size() {
        let ok = TargetResult {
            target_url: "https://a.example/".into(),
            result: Some(ProbeResult::default()),
            ..Default::default()
        };
        assert!(check_batch(&ResultBatch { sequence: 1, results: vec![ok.clone()] }).is_ok());
        // A bad result is the result's problem, not the batch's.
        assert!(check_batch(&ResultBatch { sequence: 1, results: vec![TargetResult::default()] }).is_ok());
        let far = check_batch(&ResultBatch { sequence: u64::MAX, results: vec![ok.clone()] }).unwrap_err();
        assert!(far.message().starts_with("sequence:"), "{}", far.message());
        let huge = ResultBatch { sequence: 1, results: vec![ok; MAX_BATCH_RESULTS + 1] };
        assert!(check_batch(&huge).unwrap_err().message().starts_with("results:"));
    }

    #[test]
    fn each_bad_result_is_refused_with_its_reason() {
        let ok = TargetResult {
            target_url: "https://a.example/".into(),
            result: Some(ProbeResult::default()),
            ..Default::default()
        };
        assert_eq!(check_result(&ok), Ok(()));
        let traced = [("traceparent".to_owned(), "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".to_owned())];
        assert_eq!(check_result(&TargetResult { trace_context: traced.into(), ..ok.clone() }), Ok(()));
        let longest = format!("https://a.example/{}", "x".repeat(MAX_URL - 18));
        assert_eq!(check_result(&TargetResult { target_url: longest.clone(), ..ok.clone() }), Ok(()));
        let mut large = ok.clone();
        large.result.as_mut().unwrap().tls_cipher = "x".repeat(MAX_RESULT_BYTES);
        let cases = [
            (TargetResult { target_url: String::new(), ..ok.clone() }, Reason::TargetUrl, "target_url:"),
            (TargetResult { target_url: format!("{longest}x"), ..ok.clone() }, Reason::TargetUrl, "target_url:"),
            (TargetResult { result: None, ..ok.clone() }, Reason::NoResult, "result: missing"),
            (TargetResult { run_now_id: "x".repeat(MAX_ID + 1), ..ok.clone() }, Reason::Id, "run_now_id:"),
            (
                TargetResult { first_failure_code: "x".repeat(MAX_ID + 1), ..ok.clone() },
                Reason::Id,
                "first_failure_code:",
            ),
            (
                TargetResult { trace_context: [("traceparent".into(), "0".repeat(513))].into(), ..ok.clone() },
                Reason::TraceContext,
                "trace_context:",
            ),
            (
                TargetResult {
                    trace_context: (0..3).map(|i| (format!("k{i}"), String::new())).collect(),
                    ..ok.clone()
                },
                Reason::TraceContext,
                "trace_context:",
            ),
            (large, Reason::TooLarge, "the result is"),
        ];
        for (bad, reason, message) in cases {
            let refusal = check_result(&bad).unwrap_err();
            assert_eq!(refusal.reason, reason, "{refusal}");
            assert!(refusal.message.starts_with(message), "{refusal}");
        }
    }
}
