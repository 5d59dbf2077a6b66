//! The agent stream (`AgentService/Connect`): the hello and who the agent is, then its batches,
//! each screened ([`check_result`], assignment), paced, committed through the hub and acked with
//! the results that were refused.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use prost::Message as _;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};
use tracing::Instrument;
use vantage_proto::v1::agent_service_server::AgentService;
use vantage_proto::v1::{
    Ack, AgentMessage, CoordinatorMessage, Hello, HistoryEntry, RefusedResult, TargetResult, agent_message,
    coordinator_message,
};
use vantage_shared::identity::Identity;

use super::checks::{check_batch, check_result};
use super::pace::Pace;
use crate::auth;
use crate::hub::{AgentCert, Hub};
use crate::refusal::{Reason, Refusal, RefusalLog};
use crate::store::BatchOutcome;

/// How long a new stream may take to say hello.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);

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

#[cfg(test)]
mod tests {
    use super::*;

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
}
