//! The operator API (`Coordinator`): targets, status, history, CheckNow, agents, incidents,
//! revocation, alerts, silences and regions, each a thin translation between the wire and the
//! hub. Every call is let through only as `auth::METHODS` declares for it.

use std::pin::Pin;
use std::sync::Arc;

use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};
use tracing::Instrument;
use vantage_proto::v1::coordinator_server::{Coordinator, SERVICE_NAME};
use vantage_proto::v1::*;
use vantage_shared::identity;

use super::list_status::{Answer, SLICE};
use crate::auth::AdminAuth;
use crate::hub::Hub;

/// Most URLs one `ListStatus` call may name.
pub const MAX_URLS_PER_REQUEST: usize = 1000;

pub struct AdminEndpoint {
    pub hub: Arc<Hub>,
    pub auth: Arc<AdminAuth>,
}

impl AdminEndpoint {
    /// Lets a call of `method` through with the access `auth::METHODS` declares for it (naming
    /// the caller, for the log), or says why not: a method missing from the table is refused.
    fn authorize<T>(&self, request: &Request<T>, method: &str) -> Result<String, Status> {
        let path = format!("/{SERVICE_NAME}/{method}");
        self.auth.check_method(request, &path, |sha256| self.hub.is_revoked(sha256))
    }

    /// `ListStatus`: authorized and checked here, answered by `list_status::Answer`.
    pub(super) fn list_status_answer(&self, request: Request<ListStatusRequest>) -> Result<Answer, Status> {
        self.authorize(&request, "ListStatus")?;
        let urls = request.into_inner().urls;
        if urls.len() > MAX_URLS_PER_REQUEST {
            return Err(Status::invalid_argument(format!("urls: at most {MAX_URLS_PER_REQUEST} per call")));
        }
        let urls: Vec<String> = urls
            .into_iter()
            .map(|u| vantage_shared::TargetUrl::parse(&u).map(|t| t.to_string()).unwrap_or(u))
            .collect();
        Ok(Answer { hub: self.hub.clone(), urls, failing_channels: self.hub.failing_channels() })
    }
}

/// Sends a watcher every target's status, a slice at a time as `ListStatus` builds them (every
/// status at once is a tenth of a gigabyte at 100,000 targets); `false` once the watcher left.
async fn send_all(hub: &Hub, tx: &tokio::sync::mpsc::Sender<Result<TargetStatus, Status>>) -> bool {
    let mut after: Option<String> = None;
    loop {
        let slice = hub.statuses_after(after.as_deref(), SLICE);
        let (Some(last), full) = (slice.last(), slice.len() == SLICE) else { return true };
        after = Some(last.url.clone());
        for status in slice {
            if tx.send(Ok(status)).await.is_err() {
                return false;
            }
        }
        if !full {
            return true;
        }
    }
}

fn ms(t: Option<&prost_types::Timestamp>) -> Option<i64> {
    t.map(crate::clock::ms)
}

/// A request's `limit` of rows: 100 when unset, at most 1,000.
fn row_limit(limit: u32) -> Result<usize, Status> {
    match limit {
        0 => Ok(100),
        n if n > 1000 => Err(Status::invalid_argument("limit: at most 1000")),
        n => Ok(n as usize),
    }
}

type StatusStream = Pin<Box<dyn Stream<Item = Result<TargetStatus, Status>> + Send>>;

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

#[tonic::async_trait]
impl Coordinator for AdminEndpoint {
    async fn upsert_target(
        &self,
        request: Request<UpsertTargetRequest>,
    ) -> Result<Response<UpsertTargetResponse>, Status> {
        let by = self.authorize(&request, "UpsertTarget")?;
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
        let by = self.authorize(&request, "DeleteTarget")?;
        let url = request.into_inner().url;
        let deleted = self.hub.delete_target(&url).await?;
        tracing::info!(url, deleted, by, "target deleted");
        Ok(Response::new(DeleteTargetResponse { deleted }))
    }

    async fn list_targets(
        &self,
        request: Request<ListTargetsRequest>,
    ) -> Result<Response<ListTargetsResponse>, Status> {
        self.authorize(&request, "ListTargets")?;
        Ok(Response::new(ListTargetsResponse { targets: self.hub.targets() }))
    }

    /// Served by `list_status::AdminServer`, which encodes the answer a slice at a time; the
    /// same answer whole.
    async fn list_status(&self, request: Request<ListStatusRequest>) -> Result<Response<ListStatusResponse>, Status> {
        Ok(Response::new(self.list_status_answer(request)?.into_response()))
    }

    type WatchStatusStream = StatusStream;

    async fn watch_status(&self, request: Request<WatchStatusRequest>) -> Result<Response<StatusStream>, Status> {
        self.authorize(&request, "WatchStatus")?;
        // Subscribe before the snapshot, so no change falls between the two.
        let mut changes = self.hub.subscribe();
        let (tx, rx) = tokio::sync::mpsc::channel(256);
        let hub = self.hub.clone();
        tokio::spawn(async move {
            if !send_all(&hub, &tx).await {
                return;
            }
            loop {
                let sent = match changes.recv().await {
                    Ok(status) => tx.send(Ok(status)).await.is_ok(),
                    // A watcher that fell behind gets the whole picture again, not a gap.
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => send_all(&hub, &tx).await,
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                };
                if !sent {
                    return; // the watcher left
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn get_history(&self, request: Request<GetHistoryRequest>) -> Result<Response<GetHistoryResponse>, Status> {
        self.authorize(&request, "GetHistory")?;
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
        let by = self.authorize(&request, "CheckNow")?;
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
        self.authorize(&request, "ListAgents")?;
        Ok(Response::new(ListAgentsResponse { agents: self.hub.agents() }))
    }

    async fn list_incidents(
        &self,
        request: Request<ListIncidentsRequest>,
    ) -> Result<Response<ListIncidentsResponse>, Status> {
        self.authorize(&request, "ListIncidents")?;
        let r = request.into_inner();
        let limit = row_limit(r.limit)?;
        Ok(Response::new(ListIncidentsResponse { incidents: self.hub.incidents(&r.url, r.open_only, limit).await? }))
    }

    async fn revoke_agent(
        &self,
        request: Request<RevokeAgentRequest>,
    ) -> Result<Response<RevokeAgentResponse>, Status> {
        let by = self.authorize(&request, "RevokeAgent")?;
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
        self.authorize(&request, "ListAlerts")?;
        let r = request.into_inner();
        let limit = row_limit(r.limit)?;
        let alerts = self.hub.alerts(&r.subject, limit).await?;
        Ok(Response::new(ListAlertsResponse { alerts: alerts.iter().map(alert_info).collect() }))
    }

    async fn create_silence(
        &self,
        request: Request<CreateSilenceRequest>,
    ) -> Result<Response<CreateSilenceResponse>, Status> {
        let by = self.authorize(&request, "CreateSilence")?;
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
        self.authorize(&request, "ListSilences")?;
        let silences = self.hub.silences().iter().map(crate::hub::silence_to_proto).collect();
        Ok(Response::new(ListSilencesResponse { silences }))
    }

    async fn delete_silence(
        &self,
        request: Request<DeleteSilenceRequest>,
    ) -> Result<Response<DeleteSilenceResponse>, Status> {
        let by = self.authorize(&request, "DeleteSilence")?;
        let id = request.into_inner().id;
        let deleted = self.hub.delete_silence(&id).await?;
        tracing::info!(id, deleted, by, "silence deleted");
        Ok(Response::new(DeleteSilenceResponse { deleted }))
    }

    async fn list_regions(
        &self,
        request: Request<ListRegionsRequest>,
    ) -> Result<Response<ListRegionsResponse>, Status> {
        self.authorize(&request, "ListRegions")?;
        Ok(Response::new(ListRegionsResponse { regions: self.hub.regions() }))
    }

    async fn forget_region(
        &self,
        request: Request<ForgetRegionRequest>,
    ) -> Result<Response<ForgetRegionResponse>, Status> {
        // It changes every default quorum: an admin's call.
        let by = self.authorize(&request, "ForgetRegion")?;
        let region = request.into_inner().region;
        // The hub logs it, with `by`.
        let forgotten = self.hub.forget_region(&region, &by).await?;
        Ok(Response::new(ForgetRegionResponse { forgotten }))
    }

    async fn get_uptime(&self, request: Request<GetUptimeRequest>) -> Result<Response<GetUptimeResponse>, Status> {
        self.authorize(&request, "GetUptime")?;
        let r = request.into_inner();
        Ok(Response::new(GetUptimeResponse { targets: self.hub.uptime(&r.url, &r.windows).await? }))
    }
}
