//! The coordinator's live state: connected agents and what each is assigned, the newest result
//! per target and region, and the verdicts decided from them. Durable state goes through the
//! store first (off the async threads); this module keeps the in-memory view in step, decides
//! verdicts with `verdict`, assigns targets with `assign`, and tells watchers about changes.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::{broadcast, mpsc};
use vantage_proto::v1::{
    AgentInfo, Assignment, AssignmentChange, Cause, CertSummary, CoordinatorMessage, HistoryEntry, Incident,
    RegionStatus, RunNow, TargetSpec, TargetStatus, coordinator_message,
};
use vantage_shared::FailureCode;

use crate::store::{self, AgentRecord, BatchOutcome, IncidentChange, Store, StoreError, StoredResult, VerdictRecord};
use crate::verdict::{self, Decision, Observation, Opinion, RegionOpinion, Verdict};
use crate::{assign, spec};

/// What the coordinator sends down an agent's stream.
pub type AgentTx = mpsc::Sender<Result<CoordinatorMessage, tonic::Status>>;

/// Most results one batch may carry.
pub const MAX_BATCH: usize = 1000;

#[derive(Debug, thiserror::Error)]
pub enum HubError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("invalid {0}")]
    Invalid(#[from] spec::SpecError),
    #[error("no target {0}")]
    NoTarget(String),
    #[error("{0}")]
    Refused(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    Full(String),
    #[error("the coordinator is shutting down")]
    Closed,
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

struct Session {
    id: u64,
    tx: AgentTx,
    /// Dropped with the session: tells the stream's reader to stop.
    _close: tokio::sync::oneshot::Sender<()>,
    since_ms: i64,
    assigned: BTreeMap<String, TargetSpec>,
    sent_full: bool,
    /// Empty without mTLS.
    cert_sha256: String,
}

struct AgentState {
    record: AgentRecord,
    session: Option<Session>,
}

#[derive(Default)]
struct State {
    targets: BTreeMap<String, TargetSpec>,
    /// (url, region) → newest result.
    latest: HashMap<(String, String), HistoryEntry>,
    verdicts: HashMap<String, VerdictRecord>,
    open_incidents: HashSet<String>,
    agents: BTreeMap<String, AgentState>,
    epoch: u64,
    next_session: u64,
    run_now: HashMap<String, mpsc::UnboundedSender<HistoryEntry>>,
    /// What watchers last heard about each target.
    announced: HashMap<String, String>,
    /// Fingerprints of revoked agent certificates.
    revoked: HashSet<String>,
}

impl State {
    fn regions_known(&self) -> BTreeSet<String> {
        self.agents.values().map(|a| a.record.region.clone()).collect()
    }

    fn target_regions(&self, spec: &TargetSpec) -> Vec<String> {
        if spec.regions.is_empty() { self.regions_known().into_iter().collect() } else { spec.regions.clone() }
    }

    fn connected_in(&self, region: &str) -> Vec<&str> {
        self.agents
            .values()
            .filter(|a| a.session.is_some() && a.record.region == region)
            .map(|a| a.record.name.as_str())
            .collect()
    }
}

/// Options of the hub.
#[derive(Debug, Clone)]
pub struct HubOptions {
    /// After start-up, regions count as connected this long, so agents have time to come back
    /// before their regions turn unknown.
    pub reconnect_grace: Duration,
    /// Most targets the coordinator holds.
    pub max_targets: usize,
}

impl Default for HubOptions {
    fn default() -> Self {
        HubOptions { reconnect_grace: Duration::from_secs(15), max_targets: DEFAULT_MAX_TARGETS }
    }
}

pub const DEFAULT_MAX_TARGETS: usize = 100_000;

/// The client certificate an agent connected with.
#[derive(Debug, Clone, Default)]
pub struct AgentCert {
    pub sha256: String,
    pub not_after_ms: i64,
}

pub struct Hub {
    store: Arc<Store>,
    state: Mutex<State>,
    /// Held from deciding verdicts to committing them, so changes reach the store in order.
    deciding: tokio::sync::Mutex<()>,
    /// Tells `CheckNow` calls apart.
    next_check: std::sync::atomic::AtomicU64,
    watchers: broadcast::Sender<TargetStatus>,
    started: Instant,
    options: HubOptions,
}

/// Runs blocking store work off the async threads.
async fn blocking<T: Send + 'static>(
    store: &Arc<Store>,
    work: impl FnOnce(&Store) -> Result<T, StoreError> + Send + 'static,
) -> Result<T, HubError> {
    let store = store.clone();
    tokio::task::spawn_blocking(move || work(&store)).await.map_err(|_| HubError::Closed)?.map_err(HubError::from)
}

impl Hub {
    /// Loads the durable state, then applies the config file's targets (targets that came from
    /// an earlier config and are no longer in it are removed).
    pub async fn open(
        store: Arc<Store>,
        config_targets: Vec<TargetSpec>,
        options: HubOptions,
    ) -> Result<Arc<Hub>, HubError> {
        if config_targets.len() > options.max_targets {
            return Err(HubError::Full(format!(
                "the config holds {} targets, more than the limit of {}",
                config_targets.len(),
                options.max_targets
            )));
        }
        let (targets, latest, verdicts, agents, open, revoked) = blocking(&store, move |s| {
            let existing = s.targets()?;
            for stale in existing.iter().filter(|t| t.source == "config") {
                if !config_targets.iter().any(|c| c.url == stale.url) {
                    s.delete_target(&stale.url)?;
                }
            }
            s.upsert_targets(&config_targets)?;
            Ok((s.targets()?, s.latest()?, s.verdicts()?, s.agents()?, s.incidents("", true)?, s.revoked()?))
        })
        .await?;
        let mut state = State {
            targets: targets.into_iter().map(|t| (t.url.clone(), t)).collect(),
            latest: latest.into_iter().map(|r| ((r.url, r.entry.region.clone()), r.entry)).collect(),
            verdicts: verdicts.into_iter().collect(),
            open_incidents: open.into_iter().map(|i| i.url).collect(),
            revoked: revoked.into_iter().collect(),
            ..State::default()
        };
        for record in agents {
            state.agents.insert(record.name.clone(), AgentState { record, session: None });
        }
        let (watchers, _) = broadcast::channel(1024);
        Ok(Arc::new(Hub {
            store,
            state: Mutex::new(state),
            deciding: tokio::sync::Mutex::new(()),
            next_check: std::sync::atomic::AtomicU64::new(0),
            watchers,
            started: Instant::now(),
            options,
        }))
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn subscribe(&self) -> broadcast::Receiver<TargetStatus> {
        self.watchers.subscribe()
    }

    // ---- agents ----

    /// Registers an agent's stream; a second connection under the same name replaces the first.
    /// The receiver fires when the hub drops the session (replaced, stuck, revoked, or shutting
    /// down). A revoked certificate is refused.
    pub async fn connect_agent(
        &self,
        name: &str,
        region: &str,
        version: &str,
        cert: Option<AgentCert>,
        tx: AgentTx,
    ) -> Result<(u64, tokio::sync::oneshot::Receiver<()>), HubError> {
        spec::check_name("agent name", name)?;
        spec::check_name("region", region)?;
        if version.len() > 64 {
            return Err(HubError::Refused("version: at most 64 characters".into()));
        }
        let cert = cert.unwrap_or_default();
        if self.is_revoked(&cert.sha256) {
            return Err(HubError::Forbidden(format!("the certificate of agent {name} ({region}) is revoked")));
        }
        let days_left = (cert.not_after_ms - now_ms()).div_euclid(86_400_000);
        if cert.not_after_ms != 0 && days_left < 30 {
            tracing::warn!(
                agent = name,
                region,
                days_left,
                "agent certificate expires soon; issue a new one (pki issue-agent)"
            );
        }
        let record = AgentRecord {
            name: name.into(),
            region: region.into(),
            version: version.into(),
            last_seen_ms: now_ms(),
            cert_sha256: cert.sha256.clone(),
            cert_not_after_ms: cert.not_after_ms,
        };
        let stored = record.clone();
        blocking(&self.store, move |s| s.record_agent(&stored)).await?;
        let session = {
            let mut state = self.lock();
            state.next_session += 1;
            let id = state.next_session;
            let (close, closed) = tokio::sync::oneshot::channel();
            let session = Session {
                id,
                tx,
                _close: close,
                since_ms: now_ms(),
                assigned: BTreeMap::new(),
                sent_full: false,
                cert_sha256: cert.sha256,
            };
            if let Some(old) = state.agents.insert(name.into(), AgentState { record, session: Some(session) }) {
                if old.session.is_some() {
                    tracing::warn!(agent = name, "agent reconnected; its previous stream is closed");
                }
            }
            reassign(&mut state, &[]);
            (id, closed)
        };
        tracing::info!(agent = name, region, version, "agent connected");
        self.evaluate(None).await;
        Ok(session)
    }

    fn is_revoked(&self, sha256: &str) -> bool {
        !sha256.is_empty() && self.lock().revoked.contains(sha256)
    }

    /// Revokes an agent certificate (durably first) and closes the streams that use it. Returns
    /// whether it was new, the identity last seen with it, and how many streams were closed.
    pub async fn revoke(&self, sha256: &str, identity: Option<String>) -> Result<(bool, String, u32), HubError> {
        let sha256 = sha256.to_ascii_lowercase();
        if sha256.len() != 64 || !sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(HubError::Refused("cert_sha256: must be 64 hex digits".into()));
        }
        let identity = identity.unwrap_or_else(|| {
            let state = self.lock();
            let seen = state.agents.values().find(|a| a.record.cert_sha256 == sha256);
            seen.map(|a| format!("agent {} ({})", a.record.name, a.record.region)).unwrap_or_default()
        });
        let revocation = store::Revocation { identity: identity.clone(), revoked_at_ms: now_ms() };
        let key = sha256.clone();
        let created = blocking(&self.store, move |s| s.revoke(&key, &revocation)).await?;
        let closed = {
            let mut state = self.lock();
            state.revoked.insert(sha256.clone());
            let mut closed = 0;
            for agent in state.agents.values_mut() {
                if agent.session.as_ref().is_some_and(|s| s.cert_sha256 == sha256) {
                    // Dropping the session ends its stream.
                    agent.session = None;
                    closed += 1;
                }
            }
            if closed > 0 {
                reassign(&mut state, &[]);
            }
            closed
        };
        tracing::warn!(cert_sha256 = sha256, identity, closed_sessions = closed, "agent certificate revoked");
        if closed > 0 {
            self.evaluate(None).await;
        }
        Ok((!created, identity, closed))
    }

    /// Ends every agent stream (at shutdown).
    pub fn close_sessions(&self) {
        for agent in self.lock().agents.values_mut() {
            agent.session = None;
        }
    }

    /// Forgets an agent's stream (if `session` is still the current one).
    pub async fn disconnect_agent(&self, name: &str, session: u64) {
        let gone = {
            let mut state = self.lock();
            let current = state.agents.get_mut(name).filter(|a| a.session.as_ref().is_some_and(|s| s.id == session));
            match current {
                Some(agent) => {
                    agent.session = None;
                    agent.record.last_seen_ms = now_ms();
                    reassign(&mut state, &[]);
                    true
                }
                None => false,
            }
        };
        if gone {
            tracing::info!(agent = name, "agent disconnected");
            self.evaluate(None).await;
        }
    }

    /// Commits an agent's batch (acked by the caller once this returns), then updates opinions,
    /// verdicts and waiting `CheckNow` calls.
    pub async fn ingest(
        &self,
        agent: &str,
        region: &str,
        sequence: u64,
        results: Vec<(String, HistoryEntry)>,
    ) -> Result<BatchOutcome, HubError> {
        if results.len() > MAX_BATCH {
            return Err(HubError::Refused(format!("a batch holds at most {MAX_BATCH} results, got {}", results.len())));
        }
        // Only results for targets this region probes are kept: an agent cannot fill the history
        // with targets nobody configured.
        let results: Vec<(String, HistoryEntry)> = {
            let state = self.lock();
            results
                .into_iter()
                .filter(|(url, _)| {
                    state
                        .targets
                        .get(url)
                        .is_some_and(|t| t.regions.is_empty() || t.regions.iter().any(|r| r == region))
                })
                .collect()
        };
        let rows: Vec<StoredResult> = results
            .into_iter()
            .map(|(url, mut entry)| {
                // The region is the session's, whatever the result claims.
                entry.region = region.to_owned();
                entry.agent = agent.to_owned();
                // A probe cannot have run after it arrived: an agent clock running ahead must not
                // make its results look newer than later ones.
                let arrived = now_ms();
                if store::entry_ms(&entry) > arrived {
                    if let Some(result) = entry.result.as_mut() {
                        result.checked_at = Some(store::timestamp(arrived));
                    }
                }
                StoredResult { at_ms: store::entry_ms(&entry), url, entry }
            })
            .collect();
        let agent_name = agent.to_owned();
        let (outcome, rows) =
            blocking(&self.store, move |s| Ok((s.record_batch(&agent_name, sequence, &rows)?, rows))).await?;
        if outcome == BatchOutcome::Duplicate {
            return Ok(outcome);
        }
        let mut touched = BTreeSet::new();
        {
            let mut state = self.lock();
            if let Some(a) = state.agents.get_mut(agent) {
                a.record.last_seen_ms = now_ms();
            }
            for row in rows {
                let key = (row.url.clone(), region.to_owned());
                let newer = state.latest.get(&key).is_none_or(|cur| store::entry_ms(cur) <= row.at_ms);
                if let Some(waiter) = run_now_id(&row.entry).and_then(|id| state.run_now.get(&id)) {
                    let _ = waiter.send(row.entry.clone());
                }
                if newer && state.targets.contains_key(&row.url) {
                    state.latest.insert(key, row.entry);
                    touched.insert(row.url);
                }
            }
        }
        if !touched.is_empty() {
            self.evaluate(Some(touched.into_iter().collect())).await;
        }
        Ok(outcome)
    }

    // ---- targets ----

    pub async fn upsert_target(&self, spec: TargetSpec) -> Result<(TargetSpec, bool), HubError> {
        let spec = spec::normalize(spec)?;
        {
            let state = self.lock();
            if !state.targets.contains_key(&spec.url) && state.targets.len() >= self.options.max_targets {
                return Err(HubError::Full(format!(
                    "the coordinator holds {} targets, its limit (--max-targets)",
                    state.targets.len()
                )));
            }
        }
        let stored = spec.clone();
        let created = blocking(&self.store, move |s| s.upsert_target(&stored)).await?;
        {
            let mut state = self.lock();
            state.targets.insert(spec.url.clone(), spec.clone());
            reassign(&mut state, std::slice::from_ref(&spec.url));
        }
        self.evaluate(Some(vec![spec.url.clone()])).await;
        Ok((spec, created))
    }

    pub async fn delete_target(&self, url: &str) -> Result<bool, HubError> {
        let url = vantage_shared::TargetUrl::parse(url).map(|u| u.to_string()).unwrap_or_else(|_| url.to_owned());
        let key = url.clone();
        let existed = blocking(&self.store, move |s| s.delete_target(&key)).await?;
        let mut state = self.lock();
        state.open_incidents.remove(&url);
        state.targets.remove(&url);
        state.verdicts.remove(&url);
        state.latest.retain(|(u, _), _| *u != url);
        state.announced.remove(&url);
        reassign(&mut state, &[]);
        Ok(existed)
    }

    pub fn targets(&self) -> Vec<TargetSpec> {
        self.lock().targets.values().cloned().collect()
    }

    // ---- verdicts ----

    /// Re-decides the verdict of `urls` (all targets when `None`), records changes and tells
    /// watchers.
    pub async fn evaluate(&self, urls: Option<Vec<String>>) {
        let _deciding = self.deciding.lock().await;
        let now = now_ms();
        let in_grace = self.started.elapsed() < self.options.reconnect_grace;
        let mut changes = Vec::new();
        let mut announcements = Vec::new();
        {
            let mut state = self.lock();
            let urls = urls.unwrap_or_else(|| state.targets.keys().cloned().collect());
            for url in urls {
                let Some(spec) = state.targets.get(&url).cloned() else { continue };
                let (decision, regions) = decide_target(&state, &spec, now, in_grace);
                let previous = state.verdicts.get(&url).cloned();
                let verdict_changed = previous.as_ref().is_none_or(|p| p.verdict != decision.verdict.as_str());
                let record = VerdictRecord {
                    verdict: decision.verdict.as_str().to_owned(),
                    cause: decision.cause.map(|c| c.as_str().to_owned()),
                    since_ms: if verdict_changed { now } else { previous.as_ref().map_or(now, |p| p.since_ms) },
                    failing_regions: decision.failing.clone(),
                };
                if verdict_changed {
                    let incident = match decision.verdict {
                        Verdict::Down if !state.open_incidents.contains(&url) => {
                            state.open_incidents.insert(url.clone());
                            IncidentChange::Open(Incident {
                                url: url.clone(),
                                opened: Some(store::timestamp(now)),
                                closed: None,
                                cause: decision.cause.map(cause),
                                regions: decision.failing.clone(),
                            })
                        }
                        Verdict::Up if state.open_incidents.remove(&url) => IncidentChange::Close { at_ms: now },
                        _ => IncidentChange::None,
                    };
                    tracing::info!(target = %url, verdict = record.verdict, cause = ?record.cause, "verdict changed");
                    changes.push((url.clone(), record.clone(), incident));
                }
                state.verdicts.insert(url.clone(), record);
                let status = build_status(&state, &spec, &decision, &regions);
                let signature = format!(
                    "{:?}{:?}{:?}",
                    status.verdict,
                    status.cause,
                    status.regions.iter().map(|r| (r.opinion, &r.failure_code)).collect::<Vec<_>>()
                );
                if state.announced.get(&url) != Some(&signature) {
                    state.announced.insert(url, signature);
                    announcements.push(status);
                }
            }
        }
        if !changes.is_empty() {
            let result = blocking(&self.store, move |s| {
                for (url, record, incident) in &changes {
                    s.record_verdict(url, record, incident)?;
                }
                Ok(())
            })
            .await;
            if let Err(e) = result {
                tracing::error!(error = %e, "recording verdict changes failed");
            }
        }
        for status in announcements {
            let _ = self.watchers.send(status);
        }
    }

    /// The consolidated status of every target (or those in `urls`).
    pub fn statuses(&self, urls: &[String]) -> Vec<TargetStatus> {
        let state = self.lock();
        let in_grace = self.started.elapsed() < self.options.reconnect_grace;
        state
            .targets
            .values()
            .filter(|t| urls.is_empty() || urls.contains(&t.url))
            .map(|spec| {
                let (decision, regions) = decide_target(&state, spec, now_ms(), in_grace);
                build_status(&state, spec, &decision, &regions)
            })
            .collect()
    }

    // ---- check now ----

    /// Asks every region's agent to probe `url` now and waits for their results.
    pub async fn check_now(&self, url: &str) -> Result<(TargetStatus, Vec<HistoryEntry>, Vec<String>), HubError> {
        let url =
            vantage_shared::TargetUrl::parse(url).map(|u| u.to_string()).map_err(|_| HubError::NoTarget(url.into()))?;
        let id = format!("{url}#{}", self.next_check.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
        let (tx, mut rx) = mpsc::unbounded_channel();
        let (regions, asked, deadline) = {
            let mut state = self.lock();
            let spec = state.targets.get(&url).cloned().ok_or_else(|| HubError::NoTarget(url.clone()))?;
            let regions = state.target_regions(&spec);
            let (_, timeout) = spec::timing(&spec);
            let mut asked = Vec::new();
            for region in &regions {
                let agents = state.connected_in(region);
                let Some(owner) = assign::owner(&url, &agents).map(str::to_owned) else { continue };
                let session = state.agents.get(&owner).and_then(|a| a.session.as_ref());
                let message = CoordinatorMessage {
                    kind: Some(coordinator_message::Kind::RunNow(RunNow { id: id.clone(), target_url: url.clone() })),
                };
                if session.is_some_and(|s| s.tx.try_send(Ok(message)).is_ok()) {
                    asked.push(region.clone());
                }
            }
            state.run_now.insert(id.clone(), tx);
            // A probe, the agent's retry after 1 s, a second probe, and time to deliver.
            (regions, asked, timeout * 2 + Duration::from_secs(3))
        };
        let mut results: Vec<HistoryEntry> = Vec::new();
        let collect = async {
            while results.len() < asked.len() {
                match rx.recv().await {
                    Some(entry) => {
                        if !results.iter().any(|r| r.region == entry.region) {
                            results.push(entry);
                        }
                    }
                    None => break,
                }
            }
        };
        let _ = tokio::time::timeout(deadline, collect).await;
        self.lock().run_now.remove(&id);
        let missing: Vec<String> =
            regions.iter().filter(|r| !results.iter().any(|e| &e.region == *r)).cloned().collect();
        self.evaluate(Some(vec![url.clone()])).await;
        let status = self.statuses(std::slice::from_ref(&url)).pop().ok_or(HubError::NoTarget(url))?;
        Ok((status, results, missing))
    }

    // ---- queries ----

    pub fn agents(&self) -> Vec<AgentInfo> {
        let state = self.lock();
        state
            .agents
            .values()
            .map(|a| AgentInfo {
                name: a.record.name.clone(),
                region: a.record.region.clone(),
                version: a.record.version.clone(),
                connected: a.session.is_some(),
                connected_since: a.session.as_ref().map(|s| store::timestamp(s.since_ms)),
                last_seen: Some(store::timestamp(a.record.last_seen_ms)),
                assigned_targets: a.session.as_ref().map_or(0, |s| s.assigned.len() as u32),
                cert_sha256: a.record.cert_sha256.clone(),
                cert_not_after: Some(a.record.cert_not_after_ms).filter(|ms| *ms != 0).map(store::timestamp),
            })
            .collect()
    }

    pub async fn history(
        &self,
        url: &str,
        region: Option<String>,
        since_ms: i64,
        until_ms: i64,
        limit: usize,
    ) -> Result<Vec<HistoryEntry>, HubError> {
        let url = vantage_shared::TargetUrl::parse(url).map(|u| u.to_string()).unwrap_or_else(|_| url.to_owned());
        let rows =
            blocking(&self.store, move |s| s.history(&url, region.as_deref(), since_ms, until_ms, limit)).await?;
        Ok(rows.into_iter().map(|r| r.entry).collect())
    }

    pub async fn incidents(&self, url: &str, open_only: bool) -> Result<Vec<Incident>, HubError> {
        let url = if url.is_empty() {
            String::new()
        } else {
            vantage_shared::TargetUrl::parse(url).map(|u| u.to_string()).unwrap_or_else(|_| url.to_owned())
        };
        blocking(&self.store, move |s| s.incidents(&url, open_only)).await
    }

    /// Deletes results older than `retention`.
    pub async fn prune(&self, retention: Duration) -> Result<u64, HubError> {
        let before = now_ms() - retention.as_millis() as i64;
        blocking(&self.store, move |s| s.prune_results(before)).await
    }
}

fn run_now_id(entry: &HistoryEntry) -> Option<String> {
    Some(entry.run_now_id.clone()).filter(|id| !id.is_empty())
}

fn cause(code: FailureCode) -> Cause {
    Cause { code: code.as_str().into(), message: code.cause().into(), hint: code.hint().into() }
}

fn observation(entry: &HistoryEntry) -> Option<Observation> {
    let result = entry.result.as_ref()?;
    let status = match vantage_proto::v1::ProbeStatus::try_from(result.status).ok()? {
        vantage_proto::v1::ProbeStatus::Up => vantage_shared::ProbeStatus::Up,
        vantage_proto::v1::ProbeStatus::Degraded => vantage_shared::ProbeStatus::Degraded,
        vantage_proto::v1::ProbeStatus::Down => vantage_shared::ProbeStatus::Down,
        vantage_proto::v1::ProbeStatus::Unspecified => return None,
    };
    let code = result.failure.as_ref().and_then(|f| FailureCode::from_code(&f.code));
    Some(Observation { at_ms: store::entry_ms(entry), status, code })
}

fn decide_target(state: &State, spec: &TargetSpec, now: i64, in_grace: bool) -> (Decision, Vec<RegionOpinion>) {
    let (interval, timeout) = spec::timing(spec);
    let regions = state.target_regions(spec);
    let opinions: Vec<RegionOpinion> = regions
        .into_iter()
        .map(|region| {
            let connected = in_grace || !state.connected_in(&region).is_empty();
            let newest = state.latest.get(&(spec.url.clone(), region.clone())).and_then(observation);
            let (opinion, code) = verdict::opinion(
                newest.as_ref(),
                connected,
                now,
                interval.as_millis() as i64,
                timeout.as_millis() as i64,
            );
            RegionOpinion { region, opinion, code }
        })
        .collect();
    let quorum = verdict::effective_quorum(spec.quorum, opinions.len());
    (verdict::decide(&opinions, quorum), opinions)
}

fn build_status(state: &State, spec: &TargetSpec, decision: &Decision, opinions: &[RegionOpinion]) -> TargetStatus {
    use vantage_proto::v1::{Opinion as POpinion, Verdict as PVerdict};
    let verdict = match decision.verdict {
        Verdict::Up => PVerdict::Up,
        Verdict::Degraded => PVerdict::Degraded,
        Verdict::Down => PVerdict::Down,
        Verdict::Unknown => PVerdict::Unknown,
    };
    let mut cert: Option<CertSummary> = None;
    let regions = opinions
        .iter()
        .map(|o| {
            let latest = state.latest.get(&(spec.url.clone(), o.region.clone()));
            let result = latest.and_then(|e| e.result.as_ref());
            if let Some(c) = result.and_then(|r| r.cert.as_ref()) {
                // The certificate closest to expiry that any region saw.
                if cert.as_ref().is_none_or(|cur| c.days_remaining < cur.days_remaining) {
                    cert = Some(CertSummary {
                        days_remaining: c.days_remaining,
                        health: c.health,
                        not_after: c.not_after.map(|t| store_rfc3339(&t)).unwrap_or_default(),
                    });
                }
            }
            RegionStatus {
                region: o.region.clone(),
                opinion: match o.opinion {
                    Opinion::Up => POpinion::Up,
                    Opinion::Down => POpinion::Down,
                    Opinion::Partial => POpinion::Partial,
                    Opinion::Unknown => POpinion::Unknown,
                } as i32,
                last_result_time: result.and_then(|r| r.checked_at),
                failure_code: result.and_then(|r| r.failure.as_ref()).map(|f| f.code.clone()).unwrap_or_default(),
                latency_ms: result.and_then(|r| r.timings.as_ref()).map_or(0.0, |t| t.total_ms),
                agent: latest.map(|e| e.agent.clone()).unwrap_or_default(),
                detail: result.and_then(|r| r.failure.as_ref()).map(|f| f.detail.clone()).unwrap_or_default(),
            }
        })
        .collect();
    let since = state.verdicts.get(&spec.url).map(|v| store::timestamp(v.since_ms));
    TargetStatus {
        url: spec.url.clone(),
        verdict: verdict as i32,
        cause: decision.cause.map(cause),
        since,
        cert,
        regions,
        quorum: decision.quorum as u32,
        failing_regions: decision.failing.clone(),
    }
}

fn store_rfc3339(t: &prost_types::Timestamp) -> String {
    time::OffsetDateTime::from_unix_timestamp(t.seconds).map(vantage_shared::report::rfc3339).unwrap_or_default()
}

/// Recomputes who probes what and tells each connected agent what changed (`changed` targets
/// are re-sent to their owners even if ownership did not move).
fn reassign(state: &mut State, changed: &[String]) {
    let mut desired: HashMap<String, BTreeMap<String, TargetSpec>> = HashMap::new();
    for spec in state.targets.values() {
        for region in state.target_regions(spec) {
            let agents = state.connected_in(&region);
            if let Some(owner) = assign::owner(&spec.url, &agents) {
                desired.entry(owner.to_owned()).or_default().insert(spec.url.clone(), spec.clone());
            }
        }
    }
    state.epoch += 1;
    let epoch = state.epoch;
    let mut dead = Vec::new();
    for agent in state.agents.values_mut() {
        let Some(session) = agent.session.as_mut() else { continue };
        let want = desired.remove(&agent.record.name).unwrap_or_default();
        let message = if !session.sent_full {
            session.sent_full = true;
            coordinator_message::Kind::Assignment(Assignment { epoch, targets: want.values().cloned().collect() })
        } else {
            let upserted: Vec<TargetSpec> = want
                .iter()
                .filter(|(url, _)| !session.assigned.contains_key(*url) || changed.contains(url))
                .map(|(_, s)| s.clone())
                .collect();
            let removed_urls: Vec<String> =
                session.assigned.keys().filter(|u| !want.contains_key(*u)).cloned().collect();
            if upserted.is_empty() && removed_urls.is_empty() {
                session.assigned = want;
                continue;
            }
            coordinator_message::Kind::Change(AssignmentChange { epoch, upserted, removed_urls })
        };
        session.assigned = want;
        if session.tx.try_send(Ok(CoordinatorMessage { kind: Some(message) })).is_err() {
            // The agent is not reading its stream; dropping the session closes it.
            dead.push(agent.record.name.clone());
        }
    }
    if !dead.is_empty() {
        for name in dead {
            tracing::warn!(agent = name, "agent stream is full; disconnecting it");
            if let Some(a) = state.agents.get_mut(&name) {
                a.session = None;
            }
        }
        // Their targets go to the region's other agents.
        reassign(state, changed);
    }
}
