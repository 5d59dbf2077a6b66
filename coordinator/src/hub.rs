//! The coordinator's live state: connected agents and what each is assigned, the newest result
//! per target and region, and the verdicts decided from them. Durable state goes through the
//! store first (off the async threads); this module keeps the in-memory view in step, decides
//! verdicts with `verdict`, assigns targets with `assign`, and tells watchers about changes.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::{broadcast, mpsc};
use tracing::Instrument;
use vantage_proto::v1::{
    AgentInfo, Assignment, AssignmentChange, Cause, CertSummary, CoordinatorMessage, HistoryEntry, Incident,
    RegionStatus, RunNow, TargetSpec, TargetStatus, coordinator_message,
};
use vantage_shared::FailureCode;
use vantage_shared::limits::{MAX_BATCH_RESULTS, MAX_ID};

use crate::alert::{Alert, AlertCause, AlertKind, AlertRecord, Alerting, Silence};
use crate::clock::now_ms;
use crate::refusal::{Reason, Refusal};
use crate::regions::RegionSet;
use crate::store::{
    self, AgentRecord, BatchOutcome, IncidentChange, Pruned, Pruning, RegionRecord, Store, StoreError, StoredResult,
    VerdictRecord,
};
use crate::verdict::{self, Decision, Observation, Opinion, RegionOpinion, Verdict};
use crate::{assign, spec};

/// What the coordinator sends down an agent's stream.
pub type AgentTx = mpsc::Sender<Result<CoordinatorMessage, tonic::Status>>;

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
    /// Refused in the current state (a region with connected agents cannot be forgotten).
    #[error("{0}")]
    Conflict(String),
    #[error("the coordinator is shutting down")]
    Closed,
}

/// An agent clock further than this from the coordinator's is warned about at its hello.
const MAX_CLOCK_OFFSET_MS: u64 = 5_000;

struct Session {
    id: u64,
    tx: AgentTx,
    /// Dropped with the session: tells the stream's reader to stop.
    _close: tokio::sync::oneshot::Sender<()>,
    since_ms: i64,
    assigned: BTreeMap<String, TargetSpec>,
    sent_full: bool,
    /// The agent's newest committed batch when it connected, told in its first assignment.
    last_sequence: u64,
    /// Its clock minus the coordinator's at its hello.
    clock_offset_ms: i64,
    /// Empty without mTLS.
    cert_sha256: String,
    /// When one of its results was last stored (until the first, when it connected).
    last_accepted_ms: i64,
    /// Its results have been refused since the last one was stored.
    refusing: bool,
    /// How long it may go on with only refused results before it no longer counts as reporting
    /// (see `Session::reporting`).
    patience_ms: i64,
}

impl Session {
    /// Whether the agent's results are being stored. Connected is not enough: an agent whose
    /// every result is refused leaves its targets unjudged as surely as a disconnected one. A
    /// refusal counts only once the agent has gone longer without a stored result than its
    /// targets need, so an odd refused result (for a target deleted a moment ago) says nothing.
    fn reporting(&self, now: i64) -> bool {
        !self.refusing || now - self.last_accepted_ms <= self.patience_ms
    }
}

/// How long an agent assigned `assigned` may go without a stored result: two of its shortest
/// interval plus a probe and its retry (two timeouts and the retry's second) and a few seconds
/// of delivery. With nothing assigned there is nothing to report, and no limit.
fn patience_ms(assigned: &BTreeMap<String, TargetSpec>) -> i64 {
    assigned
        .values()
        .map(|spec| {
            let (interval, timeout) = spec::timing(spec);
            (2 * interval + 2 * timeout + Duration::from_secs(5)).as_millis() as i64
        })
        .min()
        .unwrap_or(i64::MAX)
}

/// How long after a target left an agent's assignment its results for it are still accepted: a
/// run under way when it moved (the probe, its retry a second later, the retry) and the batch's
/// way to the coordinator, with a minute to spare for a reconnection.
pub fn release_grace(spec: &TargetSpec) -> Duration {
    let (interval, timeout) = spec::timing(spec);
    interval + 2 * timeout + Duration::from_secs(60)
}

struct AgentState {
    record: AgentRecord,
    session: Option<Session>,
    /// Targets that left this agent's assignment lately: url → when (ms). Its results for them are
    /// still accepted for their `release_grace`.
    released: HashMap<String, i64>,
}

impl AgentState {
    /// Drops the session (its stream ends); what it was assigned counts as released now.
    fn end_session(&mut self, now: i64) {
        if let Some(session) = self.session.take() {
            for url in session.assigned.into_keys() {
                self.released.insert(url, now);
            }
        }
    }
}

#[derive(Default)]
struct State {
    targets: BTreeMap<String, TargetSpec>,
    /// (url, region) → newest result.
    latest: HashMap<(String, String), HistoryEntry>,
    verdicts: HashMap<String, VerdictRecord>,
    /// Open incidents: url → opened (ms).
    open_incidents: HashMap<String, i64>,
    silences: Vec<Silence>,
    /// Per target: the certificates seen and the health threshold each has crossed.
    certs: HashMap<String, CertMemory>,
    /// Regions without a connected agent: since when, and whether that was alerted.
    silent_regions: HashMap<String, RegionMemory>,
    /// Per heartbeat: the last one accepted, and whether it is overdue and alerted.
    heartbeats: HashMap<String, HeartbeatMemory>,
    /// Targets with a `degraded` alert not yet cleared: url → since (ms).
    degraded: HashMap<String, i64>,
    /// Per problem (dedup key): the channels that heard its trigger, so its resolve reaches them
    /// whatever the routes say.
    sent: HashMap<String, Vec<String>>,
    /// Per problem: its trigger, held back by a silence, to be sent if the problem outlasts it.
    held: HashMap<String, Alert>,
    agents: BTreeMap<String, AgentState>,
    epoch: u64,
    next_session: u64,
    run_now: HashMap<String, RunNowWait>,
    /// What watchers last heard about each target.
    announced: HashMap<String, String>,
    /// Fingerprints of revoked agent certificates.
    revoked: HashSet<String>,
    /// The default region set (regions agents connected from, less the forgotten ones).
    regions: RegionSet,
    /// Targets with an `unknown` alert not yet cleared: url → since (ms).
    unknown: HashMap<String, i64>,
}

/// A `CheckNow` waiting for its results: where they go, and which agents were asked (their
/// answers are accepted even if the target moved away from them meanwhile).
struct RunNowWait {
    tx: mpsc::UnboundedSender<HistoryEntry>,
    url: String,
    asked: Vec<String>,
}

impl State {
    /// Whether an agent of `region` is connected and its results are being stored.
    fn reporting_in(&self, region: &str, now: i64) -> bool {
        self.agents.values().any(|a| a.record.region == region && a.session.as_ref().is_some_and(|s| s.reporting(now)))
    }

    fn regions_known(&self) -> BTreeSet<String> {
        self.regions.current()
    }

    fn connected_regions(&self) -> BTreeSet<String> {
        self.agents.values().filter(|a| a.session.is_some()).map(|a| a.record.region.clone()).collect()
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
    /// Channels, routes, links.
    pub alerting: Arc<Alerting>,
    /// Silences from the config file (they replace the config's earlier ones).
    pub silences: Vec<Silence>,
    /// A region without a connected agent this long leaves the default region set (zero: never
    /// by itself).
    pub region_forget_after: Duration,
}

impl Default for HubOptions {
    fn default() -> Self {
        HubOptions {
            reconnect_grace: Duration::from_secs(15),
            max_targets: DEFAULT_MAX_TARGETS,
            alerting: Arc::new(Alerting::default()),
            silences: Vec::new(),
            region_forget_after: crate::config::REGION_FORGET_AFTER,
        }
    }
}

/// What alerting remembers about a target's certificates: the one served now, and the health
/// threshold each recent one has crossed (so a renewed certificate starts afresh, and a
/// load balancer alternating two certificates does not repeat alerts).
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
struct CertMemory {
    current: String,
    /// (fingerprint, highest level alerted: 1 warning, 2 critical), newest last.
    levels: Vec<(String, u8)>,
}

#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct HeartbeatMemory {
    /// When the last heartbeat was accepted (or, before the first, when the heartbeat was first
    /// configured: the period runs from there).
    pub last_ms: i64,
    /// Its timestamp (Unix seconds): a heartbeat must be newer, so none can be replayed.
    pub last_timestamp: i64,
    /// The signatures accepted with that timestamp.
    #[serde(default)]
    pub last_signatures: Vec<String>,
    pub alerted: bool,
    /// What the last heartbeat said (its body, up to 1 KiB of text).
    #[serde(default)]
    pub note: String,
}

/// Why a heartbeat was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeartbeatError {
    #[error("no heartbeat {0} is configured")]
    Unknown(String),
    #[error("{0}")]
    Unauthenticated(String),
    #[error("the timestamp is {0}s away from the coordinator's clock (at most 300s are accepted)")]
    Skewed(i64),
    #[error("the timestamp is older than the last accepted heartbeat's, or this one was accepted already: a replay")]
    Replay,
    #[error("{0}")]
    Store(String),
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct RegionMemory {
    since_ms: i64,
    alerted: bool,
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
    /// Random per coordinator process: run-now ids of a restarted coordinator are new ones.
    run_now_prefix: String,
    watchers: broadcast::Sender<TargetStatus>,
    started: Instant,
    options: HubOptions,
    /// Tells the alert dispatcher that alerts were queued.
    pub alerts_queued: Arc<tokio::sync::Notify>,
    pub counters: crate::metrics::Counters,
    /// Alert channels answering that they are misconfigured (kept by the dispatcher).
    pub channel_health: crate::alert::health::Board,
}

/// Runs blocking store work off the async threads.
async fn blocking<T: Send + 'static>(
    store: &Arc<Store>,
    work: impl FnOnce(&Store) -> Result<T, StoreError> + Send + 'static,
) -> Result<T, HubError> {
    let store = store.clone();
    tokio::task::spawn_blocking(move || {
        let result = work(&store);
        if let Err(e) = &result {
            store.note(e);
        }
        result
    })
    .await
    .map_err(|_| HubError::Closed)?
    .map_err(HubError::from)
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
        let config_silences = options.silences.clone();
        let (stale, targets, latest, verdicts, agents, open, revoked, silences, memory, regions) =
            blocking(&store, move |s| {
                // Targets an earlier config brought and this one dropped: removed below, once the
                // hub can resolve what they raised.
                let stale: Vec<String> = s
                    .targets()?
                    .into_iter()
                    .filter(|t| t.source == "config" && !config_targets.iter().any(|c| c.url == t.url))
                    .map(|t| t.url)
                    .collect();
                s.upsert_targets(&config_targets)?;
                s.replace_config_silences(&config_silences)?;
                Ok((
                    stale,
                    s.targets()?,
                    s.latest()?,
                    s.verdicts()?,
                    s.agents()?,
                    s.incidents("", true, usize::MAX)?,
                    s.revoked()?,
                    s.silences()?,
                    s.alert_state()?,
                    s.regions()?,
                ))
            })
            .await?;
        // One line, however many targets; each target's own at DEBUG.
        let mut by_source: BTreeMap<&str, usize> = BTreeMap::new();
        for target in targets.iter().filter(|t| !stale.contains(&t.url)) {
            *by_source.entry(if target.source.is_empty() { "unset" } else { target.source.as_str() }).or_default() += 1;
            tracing::debug!(target = target.url, source = target.source, "target loaded");
        }
        let loaded: usize = by_source.values().sum();
        let by_source: Vec<String> = by_source.iter().map(|(source, n)| format!("{source}={n}")).collect();
        tracing::info!(
            targets = loaded,
            by_source = by_source.join(" "),
            agents = agents.len(),
            open_incidents = open.len(),
            "targets loaded"
        );
        let mut state = State {
            targets: targets.into_iter().map(|t| (t.url.clone(), t)).collect(),
            latest: latest.into_iter().map(|r| ((r.url, r.entry.region.clone()), r.entry)).collect(),
            verdicts: verdicts.into_iter().collect(),
            open_incidents: open.into_iter().map(|i| (i.url, i.opened.as_ref().map_or(0, crate::clock::ms))).collect(),
            silences,
            certs: recall(&memory, "cert:"),
            silent_regions: recall(&memory, "region:"),
            heartbeats: recall(&memory, "heartbeat:"),
            degraded: recall(&memory, "degraded:"),
            sent: recall(&memory, "sent:"),
            held: recall(&memory, "held:"),
            unknown: recall(&memory, "unknown:"),
            revoked: revoked.into_iter().collect(),
            regions: RegionSet::new(regions),
            ..State::default()
        };
        for record in agents {
            state.agents.insert(record.name.clone(), AgentState { record, session: None, released: HashMap::new() });
        }
        let channels: Vec<String> = options.alerting.channels.iter().map(|c| c.name.clone()).collect();
        let channel_health =
            crate::alert::health::Board::new(recall::<crate::alert::health::Failing>(&memory, "channel:"), &channels);
        let (watchers, _) = broadcast::channel(1024);
        let hub = Arc::new(Hub {
            store,
            state: Mutex::new(state),
            deciding: tokio::sync::Mutex::new(()),
            next_check: std::sync::atomic::AtomicU64::new(0),
            run_now_prefix: run_now_prefix(),
            watchers,
            started: Instant::now(),
            options,
            alerts_queued: Arc::new(tokio::sync::Notify::new()),
            counters: crate::metrics::Counters::default(),
            channel_health,
        });
        if !stale.is_empty() {
            tracing::info!(targets = stale.len(), "targets no longer in the config are removed");
        }
        for url in stale {
            hub.remove_target(&url, Removal::Config).await?;
        }
        Ok(hub)
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
        clock_offset_ms: i64,
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
        self.check_name_free(name, region)?;
        if clock_offset_ms.unsigned_abs() >= MAX_CLOCK_OFFSET_MS {
            let seconds = clock_offset_ms.unsigned_abs() / 1000;
            let side = if clock_offset_ms < 0 { "behind" } else { "ahead of" };
            tracing::warn!(
                agent = name,
                region,
                clock_offset_ms,
                "the agent's clock is {seconds} s {side} the coordinator's: its results' times are off by as much \
                 (run NTP, e.g. chrony, on it)"
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
        let agent_name = name.to_owned();
        let last_sequence = blocking(&self.store, move |s| {
            s.record_agent(&stored)?;
            s.last_sequence(&agent_name)
        })
        .await?;
        let session = {
            let mut state = self.lock();
            // Revoked while its record was being written: still refused.
            if !cert.sha256.is_empty() && state.revoked.contains(&cert.sha256) {
                return Err(HubError::Forbidden(format!("the certificate of agent {name} ({region}) is revoked")));
            }
            name_taken(&state, name, region)?;
            // Admitted: the region is (back) in the default set from now (a refused agent, a
            // revoked one say, brings no forgotten region back).
            let (region_record, returned) = state.regions.seen(region, now_ms());
            state.next_session += 1;
            let id = state.next_session;
            let (close, closed) = tokio::sync::oneshot::channel();
            let now = now_ms();
            let session = Session {
                id,
                tx,
                _close: close,
                since_ms: now,
                assigned: BTreeMap::new(),
                sent_full: false,
                last_sequence,
                clock_offset_ms,
                cert_sha256: cert.sha256,
                last_accepted_ms: now,
                refusing: false,
                patience_ms: i64::MAX,
            };
            let mut agent = AgentState { record, session: Some(session), released: HashMap::new() };
            if let Some(mut old) = state.agents.remove(name) {
                if old.session.is_some() {
                    tracing::warn!(agent = name, "agent reconnected; its previous stream is closed");
                }
                // Its outbox may hold results for what the old session was assigned.
                old.end_session(now);
                agent.released = old.released;
            }
            state.agents.insert(name.into(), agent);
            reassign(&mut state, &[]);
            (id, closed, region_record, returned)
        };
        let (session, closed, region_record, returned) = session;
        tracing::info!(agent = name, region, version, "agent connected");
        if let Err(e) = blocking(&self.store, move |s| s.put_regions(&[region_record])).await {
            tracing::error!(error = %e, "recording the agent's region failed");
        }
        if returned {
            tracing::info!(
                region,
                agent = name,
                "region is back in the default region set: an agent connected from it"
            );
        }
        self.evaluate(None).await;
        Ok((session, closed))
    }

    /// Refuses a second live agent with `name` in another region: agents are known by name, so
    /// the two would take each other's session (and results) in turn. Once the other is gone,
    /// the name may move (a host moved to another region).
    fn check_name_free(&self, name: &str, region: &str) -> Result<(), HubError> {
        name_taken(&self.lock(), name, region)
    }

    pub fn is_revoked(&self, sha256: &str) -> bool {
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
                    agent.end_session(now_ms());
                    agent.record.last_seen_ms = now_ms();
                    let region = agent.record.region.clone();
                    reassign(&mut state, &[]);
                    // The region's time without agents (towards `region_forget_after`) runs from
                    // its last agent's leaving.
                    Some(state.regions.seen(&region, now_ms()).0)
                }
                None => None,
            }
        };
        if let Some(region) = gone {
            tracing::info!(agent = name, "agent disconnected");
            if let Err(e) = blocking(&self.store, move |s| s.put_regions(&[region])).await {
                tracing::error!(error = %e, "recording the region's last agent failed");
            }
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
        if results.len() > MAX_BATCH_RESULTS {
            return Err(HubError::Refused(format!(
                "a batch holds at most {MAX_BATCH_RESULTS} results, got {}",
                results.len()
            )));
        }
        // Only results for targets this region probes are kept: an agent cannot fill the history
        // with targets nobody configured. (The agent service refuses them earlier, in the ack:
        // this holds if a target is deleted meanwhile.)
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
                if crate::clock::entry_ms(&entry) > arrived {
                    if let Some(result) = entry.result.as_mut() {
                        result.checked_at = Some(crate::clock::timestamp(arrived));
                    }
                }
                StoredResult { at_ms: crate::clock::entry_ms(&entry), url, entry }
            })
            .collect();
        let agent_name = agent.to_owned();
        let (outcome, rows) = blocking(&self.store, move |s| Ok((s.record_batch(&agent_name, sequence, &rows)?, rows)))
            .instrument(tracing::info_span!("commit"))
            .await?;
        if outcome == BatchOutcome::Duplicate {
            crate::metrics::Counters::add(&self.counters.duplicate_batches, 1);
            return Ok(outcome);
        }
        crate::metrics::Counters::add(&self.counters.batches, 1);
        crate::metrics::Counters::add(&self.counters.results, rows.len() as u64);
        for row in &rows {
            if let Some(failure) = row.entry.result.as_ref().and_then(|r| r.failure.as_ref()) {
                self.counters.count_failure(&failure.code);
            }
        }
        let mut touched = BTreeSet::new();
        {
            let mut state = self.lock();
            if let Some(a) = state.agents.get_mut(agent) {
                a.record.last_seen_ms = now_ms();
            }
            for row in rows {
                let key = (row.url.clone(), region.to_owned());
                let newer = state.latest.get(&key).is_none_or(|cur| crate::clock::entry_ms(cur) <= row.at_ms);
                // Only an answer about the URL the CheckNow asked for: an agent cannot hand one
                // target's result to another's caller by borrowing its run-now id.
                let waiter = run_now_id(&row.entry).and_then(|id| state.run_now.get(&id)).filter(|w| w.url == row.url);
                if let Some(waiter) = waiter {
                    let _ = waiter.tx.send(row.entry.clone());
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

    /// Which of an agent's results (target URL, run-now id) it may report: `None` for each one
    /// to store, or why not. A result is accepted for a target assigned to the agent now, one
    /// that left its assignment within the target's `release_grace` (a run under way when the
    /// target moved, an outbox resent after a reconnection), or one that answers a `CheckNow`
    /// that asked this agent. Anything else (a target never assigned to it, long gone from it, or
    /// not configured at all) is refused: an agent cannot report for another agent's or another
    /// region's targets.
    pub fn check_assigned<'a>(
        &self,
        agent: &str,
        results: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Vec<Option<Refusal>> {
        let state = self.lock();
        let now = now_ms();
        let agent_state = state.agents.get(agent);
        let session = agent_state.and_then(|a| a.session.as_ref());
        results
            .into_iter()
            .map(|(url, run_now_id)| {
                let Some(spec) = state.targets.get(url) else {
                    return Some(Refusal::new(
                        Reason::UnknownTarget,
                        format!("target_url: no target {url} (never configured, or deleted)"),
                    ));
                };
                let assigned = session.is_some_and(|s| s.assigned.contains_key(url));
                let lately = agent_state
                    .and_then(|a| a.released.get(url))
                    .is_some_and(|at| now - at <= release_grace(spec).as_millis() as i64);
                let asked = !run_now_id.is_empty()
                    && state
                        .run_now
                        .get(run_now_id)
                        .is_some_and(|w| w.url == url && w.asked.iter().any(|a| a == agent));
                (!(assigned || lately || asked)).then(|| {
                    Refusal::new(Reason::NotAssigned, format!("target_url: {url} is not assigned to this agent"))
                })
            })
            .collect()
    }

    /// Notes how an agent's batch went: `accepted` results stored, `refused` refused. An agent
    /// whose results are all refused stops counting as reporting for its region (see
    /// `Session::reporting`).
    pub fn reported(&self, agent: &str, accepted: usize, refused: usize) {
        let mut state = self.lock();
        let Some(session) = state.agents.get_mut(agent).and_then(|a| a.session.as_mut()) else { return };
        if accepted > 0 {
            (session.last_accepted_ms, session.refusing) = (now_ms(), false);
        } else if refused > 0 {
            session.refusing = true;
        }
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
        self.remove_target(&url, Removal::Api).await
    }

    /// Removes a target and resolves what it raised (its open incident, degraded and unknown
    /// alerts) on every channel that heard the trigger, in the same transaction; its incident is
    /// closed as removed. A target added again later starts afresh (new incident, new dedup keys).
    async fn remove_target(&self, url: &str, why: Removal) -> Result<bool, HubError> {
        // Not while verdicts are being decided: none may be recorded for it after this.
        let _deciding = self.deciding.lock().await;
        let now = now_ms();
        let (records, memory) = {
            let mut state = self.lock();
            let mut memory = Vec::new();
            let alerts = removal_alerts(&mut state, url, why, now, &mut memory);
            (plan_alerts(&mut state, &self.options.alerting, alerts, &mut memory), memory)
        };
        for record in &records {
            tracing::info!(
                id = record.alert.id,
                channels = record.deliveries.len(),
                "alert: {}",
                record.alert.summary()
            );
        }
        let queued = records.iter().any(AlertRecord::pending);
        let key = url.to_owned();
        let existed = blocking(&self.store, move |s| s.remove_target(&key, &records, &memory)).await?;
        if queued {
            self.alerts_queued.notify_one();
        }
        let url = url.to_owned();
        let mut state = self.lock();
        state.open_incidents.remove(&url);
        state.certs.remove(&url);
        state.degraded.remove(&url);
        state.unknown.remove(&url);
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
        // Traced when results or a CheckNow ask for it; the periodic sweep would only add noise.
        let span = match &urls {
            Some(urls) => tracing::info_span!("verdict", targets = urls.len()),
            None => tracing::Span::none(),
        };
        self.decide(urls).instrument(span).await
    }

    async fn decide(&self, urls: Option<Vec<String>>) {
        let _deciding = self.deciding.lock().await;
        let now = now_ms();
        let in_grace = self.started.elapsed() < self.options.reconnect_grace;
        let periodic = urls.is_none();
        let mut changes = Vec::new();
        let mut alerts: Vec<Alert> = Vec::new();
        let mut memory: Vec<Remembered> = Vec::new();
        let mut announcements = Vec::new();
        let mut region_saves: Vec<RegionRecord> = Vec::new();
        let records = {
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
                        Verdict::Down if !state.open_incidents.contains_key(&url) => {
                            state.open_incidents.insert(url.clone(), now);
                            let mut alert = target_alert(&state, &spec, AlertKind::Down, &decision, regions.len(), now);
                            alert.dedup_key = spell_key(&state, "target", &url, now);
                            alerts.push(alert);
                            IncidentChange::Open(Incident {
                                url: url.clone(),
                                opened: Some(crate::clock::timestamp(now)),
                                closed: None,
                                cause: decision.cause.map(cause),
                                regions: decision.failing.clone(),
                                closed_reason: String::new(),
                            })
                        }
                        Verdict::Up if state.open_incidents.contains_key(&url) => {
                            let opened = state.open_incidents.remove(&url).unwrap_or(now);
                            let mut alert =
                                target_alert(&state, &spec, AlertKind::Recovered, &decision, regions.len(), now);
                            alert.dedup_key = spell_key(&state, "target", &url, opened);
                            (alert.since_ms, alert.duration_ms) = (opened, Some(now - opened));
                            alerts.push(alert);
                            IncidentChange::Close { at_ms: now }
                        }
                        _ => IncidentChange::None,
                    };
                    // A degraded alert is cleared once, when the target is up or down again
                    // (unknown says nothing either way).
                    let degraded_since = state.degraded.get(&url).copied();
                    let key = format!("degraded:{url}");
                    match (decision.verdict, degraded_since) {
                        (Verdict::Degraded, None) if !state.open_incidents.contains_key(&url) => {
                            let mut alert =
                                target_alert(&state, &spec, AlertKind::Degraded, &decision, regions.len(), now);
                            alert.dedup_key = spell_key(&state, "degraded", &url, now);
                            alerts.push(alert);
                            state.degraded.insert(url.clone(), now);
                            memory.push((key, serde_json::to_vec(&now).ok()));
                        }
                        (Verdict::Up | Verdict::Down, Some(since)) => {
                            // Cleared where it was heard (or held back); a degraded spell nobody
                            // was told about (the usual first seconds of an outage) ends quietly.
                            let dedup = spell_key(&state, "degraded", &url, since);
                            if state.sent.contains_key(&dedup) || state.held.contains_key(&dedup) {
                                let mut alert = target_alert(
                                    &state,
                                    &spec,
                                    AlertKind::DegradedCleared,
                                    &decision,
                                    regions.len(),
                                    now,
                                );
                                alert.dedup_key = dedup;
                                (alert.since_ms, alert.duration_ms) = (since, Some(now - since));
                                alerts.push(alert);
                            }
                            state.degraded.remove(&url);
                            memory.push((key, None));
                        }
                        _ => {}
                    }
                    if previous.is_some() {
                        tracing::info!(target = %url, verdict = record.verdict, cause = ?record.cause, "verdict changed");
                    } else {
                        // A new target's first verdict (every target's, at first start): not news.
                        tracing::debug!(target = %url, verdict = record.verdict, "first verdict");
                    }
                    changes.push((url.clone(), record.clone(), incident));
                }
                let alerted_unknown = state.unknown.get(&url).copied();
                match blindness(
                    decision.verdict,
                    record.since_ms,
                    alerted_unknown,
                    now,
                    self.options.alerting.unknown_after,
                ) {
                    Blindness::Raise => {
                        alerts.push(unknown_alert(&state, &spec, &decision, &regions, record.since_ms, now));
                        state.unknown.insert(url.clone(), record.since_ms);
                        memory.push((format!("unknown:{url}"), serde_json::to_vec(&record.since_ms).ok()));
                    }
                    Blindness::Clear(since) => {
                        let mut alert =
                            target_alert(&state, &spec, AlertKind::UnknownCleared, &decision, regions.len(), now);
                        alert.dedup_key = spell_key(&state, "unknown", &url, since);
                        (alert.since_ms, alert.duration_ms) = (since, Some(now - since));
                        alert.detail = format!("judged {} again", decision.verdict.as_str());
                        alerts.push(alert);
                        state.unknown.remove(&url);
                        memory.push((format!("unknown:{url}"), None));
                    }
                    Blindness::Nothing => {}
                }
                state.verdicts.insert(url.clone(), record);
                if let Some((alert, remembered)) = cert_alerts(&mut state, &spec, now) {
                    alerts.extend(alert);
                    memory.push(remembered);
                }
                let status = build_status(&state, &spec, &decision, &regions);
                let signature = format!(
                    "{:?}{:?}{:?}{:?}",
                    status.verdict,
                    status.cause,
                    status.regions.iter().map(|r| (r.opinion, &r.failure_code)).collect::<Vec<_>>(),
                    status.silence.as_ref().map(|s| &s.id),
                );
                if state.announced.get(&url) != Some(&signature) {
                    state.announced.insert(url, signature);
                    announcements.push(status);
                }
            }
            if periodic && !in_grace {
                region_saves =
                    forget_quiet_regions(&mut state, now, self.options.region_forget_after, &mut alerts, &mut memory);
                region_alerts(&mut state, now, self.options.alerting.region_silent_after, &mut alerts, &mut memory);
            }
            if periodic {
                heartbeat_alerts(&mut state, &self.options.alerting, now, &mut alerts, &mut memory);
            }
            if periodic {
                alerts.extend(released_alerts(&mut state, now, &mut memory));
            }
            plan_alerts(&mut state, &self.options.alerting, alerts, &mut memory)
        };
        if !region_saves.is_empty() {
            if let Err(e) = blocking(&self.store, move |s| s.put_regions(&region_saves)).await {
                tracing::error!(error = %e, "recording the region set failed");
            }
        }
        if !changes.is_empty() || !records.is_empty() || !memory.is_empty() {
            for record in &records {
                let held = record.silenced_by.as_deref().map(|s| format!(" (held back by silence {s})"));
                tracing::info!(
                    id = record.alert.id,
                    channels = record.deliveries.len(),
                    "alert: {}{}",
                    record.alert.summary(),
                    held.unwrap_or_default()
                );
            }
            let queued = records.iter().any(AlertRecord::pending);
            let result = blocking(&self.store, move |s| s.record_changes(&changes, &records, &memory)).await;
            match result {
                Err(e) => tracing::error!(error = %e, "recording verdict changes and alerts failed"),
                Ok(()) if queued => self.alerts_queued.notify_one(),
                Ok(()) => {}
            }
        }
        for status in announcements {
            let _ = self.watchers.send(status);
        }
    }

    // ---- heartbeats ----

    /// Accepts a heartbeat: `signature` (`v2=<hex>`) must be the HMAC-SHA256 of
    /// `timestamp.name.body` under the heartbeat's secret (the name is signed, so a request for
    /// one heartbeat cannot be replayed to another with the same secret), the timestamp within 5
    /// minutes of now and newer than the last accepted one. Returns when the next one is due (ms).
    pub async fn heartbeat(
        &self,
        name: &str,
        timestamp: &str,
        signature: &str,
        body: &[u8],
    ) -> Result<i64, HeartbeatError> {
        let config = self.options.alerting.heartbeats.iter().find(|h| h.name == name);
        let config = config.ok_or_else(|| HeartbeatError::Unknown(name.to_owned()))?;
        let unauthenticated = |why: &str| HeartbeatError::Unauthenticated(why.to_owned());
        let ts: i64 =
            timestamp.trim().parse().map_err(|_| unauthenticated("X-Vantage-Timestamp must be Unix seconds"))?;
        let tag = match signature.trim().split_once('=') {
            Some(("v2", hex)) => hex_bytes(hex),
            Some(("v1", _)) => {
                return Err(unauthenticated(
                    "v1 signatures do not cover the heartbeat's name and are no longer accepted: send v2=<hex \
                     HMAC-SHA256 of timestamp.name.body> (the deploy hook of this version does)",
                ));
            }
            _ => None,
        };
        let tag = tag.ok_or_else(|| {
            unauthenticated("X-Vantage-Signature must be v2=<hex HMAC-SHA256 of timestamp.name.body>")
        })?;
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, config.secret.0.as_bytes());
        let signed = [timestamp.trim().as_bytes(), b".", name.as_bytes(), b".", body].concat();
        // Constant time.
        ring::hmac::verify(&key, &signed, &tag).map_err(|_| unauthenticated("the signature does not match"))?;
        let _deciding = self.deciding.lock().await;
        let now = now_ms();
        let skew = ts.saturating_sub(now / 1000);
        if skew.abs() > 300 {
            return Err(HeartbeatError::Skewed(skew));
        }
        let (records, remembered, next_due) = {
            let mut state = self.lock();
            let memory = state.heartbeats.entry(name.to_owned()).or_default();
            // Newer than the last, or of the same second with another signature (certbot runs
            // the hook once per renewed certificate, maybe within one second).
            let tag_hex: String = tag.iter().map(|b| format!("{b:02x}")).collect();
            if ts < memory.last_timestamp || (ts == memory.last_timestamp && memory.last_signatures.contains(&tag_hex))
            {
                return Err(HeartbeatError::Replay);
            }
            let mut signatures =
                if ts == memory.last_timestamp { std::mem::take(&mut memory.last_signatures) } else { Vec::new() };
            signatures.push(tag_hex);
            let mut alerts = Vec::new();
            if memory.alerted {
                let mut alert = heartbeat_alert(config, AlertKind::HeartbeatRecovered, now);
                let due = memory.last_ms + config.period.as_millis() as i64;
                (alert.since_ms, alert.duration_ms) = (due, Some(now - due));
                alerts.push(alert);
            }
            let note: String = String::from_utf8_lossy(body).chars().take(1024).collect();
            *memory =
                HeartbeatMemory { last_ms: now, last_timestamp: ts, last_signatures: signatures, alerted: false, note };
            let remembered = (format!("heartbeat:{name}"), serde_json::to_vec(&*memory).ok());
            let mut remembered = vec![remembered];
            let records = plan_alerts(&mut state, &self.options.alerting, alerts, &mut remembered);
            (records, remembered, now + config.period.as_millis() as i64)
        };
        let queued = records.iter().any(AlertRecord::pending);
        blocking(&self.store, move |s| s.record_changes(&[], &records, &remembered))
            .await
            .map_err(|e| HeartbeatError::Store(e.to_string()))?;
        if queued {
            self.alerts_queued.notify_one();
        }
        tracing::info!(heartbeat = name, next_due = crate::clock::rfc3339(next_due), "heartbeat accepted");
        Ok(next_due)
    }

    /// Every configured heartbeat: (name, period, last accepted ms or 0, overdue).
    pub fn heartbeats(&self) -> Vec<(String, Duration, i64, bool)> {
        let state = self.lock();
        self.options
            .alerting
            .heartbeats
            .iter()
            .map(|h| {
                let memory = state.heartbeats.get(&h.name);
                let last = memory.filter(|m| m.last_timestamp != 0).map_or(0, |m| m.last_ms);
                (h.name.clone(), h.period, last, memory.is_some_and(|m| m.alerted))
            })
            .collect()
    }

    // ---- alerts and silences ----

    pub async fn pending_alerts(&self) -> Result<Vec<AlertRecord>, HubError> {
        blocking(&self.store, |s| s.pending_alerts()).await
    }

    /// Alert channels failing now, as the API tells them.
    pub fn failing_channels(&self) -> Vec<vantage_proto::v1::FailingChannel> {
        self.channel_health
            .failing()
            .into_iter()
            .map(|(channel, f)| vantage_proto::v1::FailingChannel {
                channel,
                since: Some(crate::clock::timestamp(f.since_ms)),
                error: f.error,
                alerted: f.alerted,
            })
            .collect()
    }

    /// The configured alert channels' names.
    pub fn alert_channels(&self) -> Vec<String> {
        self.options.alerting.channels.iter().map(|c| c.name.clone()).collect()
    }

    /// Writes back delivery attempts: (alert id, the delivery as it is now).
    pub async fn record_deliveries(&self, deliveries: Vec<(String, crate::alert::Delivery)>) -> Result<(), HubError> {
        blocking(&self.store, move |s| s.record_deliveries(&deliveries)).await
    }

    /// Queues alerts planned outside the verdict loop (the dispatcher's `channel_failing`) with
    /// alerting's memory changes, in one transaction, and wakes the dispatcher.
    pub async fn queue_alerts(
        &self,
        records: Vec<AlertRecord>,
        memory: Vec<(String, Option<Vec<u8>>)>,
    ) -> Result<(), HubError> {
        let queued = records.iter().any(AlertRecord::pending);
        blocking(&self.store, move |s| s.record_changes(&[], &records, &memory)).await?;
        if queued {
            self.alerts_queued.notify_one();
        }
        Ok(())
    }

    pub async fn alerts(&self, subject: &str, limit: usize) -> Result<Vec<AlertRecord>, HubError> {
        let subject = if subject.is_empty() {
            String::new()
        } else {
            vantage_shared::TargetUrl::parse(subject).map(|u| u.to_string()).unwrap_or_else(|_| subject.to_owned())
        };
        blocking(&self.store, move |s| s.alerts(&subject, limit)).await
    }

    pub fn silences(&self) -> Vec<Silence> {
        self.lock().silences.clone()
    }

    /// Adds a silence (checked by `spec::silence`).
    pub async fn create_silence(&self, silence: Silence) -> Result<Silence, HubError> {
        let stored = silence.clone();
        blocking(&self.store, move |s| s.put_silence(&stored)).await?;
        self.lock().silences.push(silence.clone());
        tracing::info!(id = silence.id, target = silence.target, labels = ?silence.labels, until = silence.end_ms, "silence created");
        self.evaluate(None).await;
        Ok(silence)
    }

    pub async fn delete_silence(&self, id: &str) -> Result<bool, HubError> {
        let key = id.to_owned();
        let deleted = blocking(&self.store, move |s| s.delete_silence(&key)).await?;
        self.lock().silences.retain(|s| s.id != id);
        if deleted {
            self.evaluate(None).await;
        }
        Ok(deleted)
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

    /// One page of the consolidated status in URL order (the status page's table): the statuses
    /// of targets `offset..offset + limit`, how many targets there are, and how many hold each
    /// verdict as last decided.
    pub fn status_page(
        &self,
        offset: usize,
        limit: usize,
    ) -> (Vec<TargetStatus>, usize, BTreeMap<&'static str, usize>) {
        // Problems first: down, degraded, unknown, then up (as last decided); by URL within each.
        // The ranking is sorted outside the lock, which ingest needs.
        let mut counts = BTreeMap::new();
        let mut order: Vec<(u8, String)> = {
            let state = self.lock();
            let mut order = Vec::with_capacity(state.targets.len());
            for url in state.targets.keys() {
                let (rank, verdict) = match state.verdicts.get(url).map(|v| v.verdict.as_str()) {
                    Some("DOWN") => (0, "DOWN"),
                    Some("DEGRADED") => (1, "DEGRADED"),
                    Some("UP") => (3, "UP"),
                    _ => (2, "UNKNOWN"),
                };
                *counts.entry(verdict).or_default() += 1;
                order.push((rank, url.clone()));
            }
            order
        };
        let total = order.len();
        order.sort_unstable();
        let state = self.lock();
        let (now, in_grace) = (now_ms(), self.started.elapsed() < self.options.reconnect_grace);
        let page = order
            .iter()
            .skip(offset)
            .take(limit)
            .filter_map(|(_, url)| state.targets.get(url))
            .map(|spec| {
                let (decision, regions) = decide_target(&state, spec, now, in_grace);
                build_status(&state, spec, &decision, &regions)
            })
            .collect();
        (page, total, counts)
    }

    /// The newest result of `url` from each of its regions that has one.
    pub fn latest_of(&self, url: &str) -> Vec<HistoryEntry> {
        let state = self.lock();
        let Some(spec) = state.targets.get(url) else { return Vec::new() };
        let regions = state.target_regions(spec);
        regions.into_iter().filter_map(|region| state.latest.get(&(url.to_owned(), region)).cloned()).collect()
    }

    // ---- check now ----

    /// Whether a `CheckNow` is waiting for results with this run-now id.
    pub fn awaits_run_now(&self, id: &str, url: &str) -> bool {
        self.lock().run_now.get(id).is_some_and(|w| w.url == url)
    }

    /// Asks every region's agent to probe `url` now and waits for their results.
    pub async fn check_now(&self, url: &str) -> Result<(TargetStatus, Vec<HistoryEntry>, Vec<String>), HubError> {
        let url =
            vantage_shared::TargetUrl::parse(url).map(|u| u.to_string()).map_err(|_| HubError::NoTarget(url.into()))?;
        let id =
            run_now_id_for(&self.run_now_prefix, self.next_check.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
        let (tx, mut rx) = mpsc::unbounded_channel();
        let (regions, asked, deadline) = {
            let mut state = self.lock();
            let spec = state.targets.get(&url).cloned().ok_or_else(|| HubError::NoTarget(url.clone()))?;
            let regions = state.target_regions(&spec);
            let (_, timeout) = spec::timing(&spec);
            let (mut asked, mut agents_asked) = (Vec::new(), Vec::new());
            for region in &regions {
                let agents = state.connected_in(region);
                let Some(owner) = assign::owner(&url, &agents).map(str::to_owned) else { continue };
                let session = state.agents.get(&owner).and_then(|a| a.session.as_ref());
                let message = CoordinatorMessage {
                    kind: Some(coordinator_message::Kind::RunNow(RunNow {
                        id: id.clone(),
                        target_url: url.clone(),
                        trace_context: vantage_shared::telemetry::carrier(&tracing::Span::current()),
                    })),
                };
                if session.is_some_and(|s| s.tx.try_send(Ok(message)).is_ok()) {
                    asked.push(region.clone());
                    agents_asked.push(owner);
                }
            }
            state.run_now.insert(id.clone(), RunNowWait { tx, url: url.clone(), asked: agents_asked });
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

    /// Each target's newest result per region: (url, region, result).
    pub fn latest_results(&self) -> Vec<(String, String, vantage_proto::v1::ProbeResult)> {
        let state = self.lock();
        let current = state.regions_known();
        // Only the regions that judge the target now (a forgotten region's last words are not).
        let judges = |url: &String, region: &String| {
            state.targets.get(url).is_some_and(|spec| {
                if spec.regions.is_empty() { current.contains(region) } else { spec.regions.contains(region) }
            })
        };
        let mut out: Vec<_> = state
            .latest
            .iter()
            .filter(|((url, region), _)| judges(url, region))
            .filter_map(|((url, region), e)| Some((url.clone(), region.clone(), e.result.clone()?)))
            .collect();
        out.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
        out
    }

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
                connected_since: a.session.as_ref().map(|s| crate::clock::timestamp(s.since_ms)),
                last_seen: Some(crate::clock::timestamp(a.record.last_seen_ms)),
                assigned_targets: a.session.as_ref().map_or(0, |s| s.assigned.len() as u32),
                cert_sha256: a.record.cert_sha256.clone(),
                cert_not_after: Some(a.record.cert_not_after_ms).filter(|ms| *ms != 0).map(crate::clock::timestamp),
                clock_offset_ms: a.session.as_ref().map_or(0, |s| s.clock_offset_ms),
            })
            .collect()
    }

    /// Every region the coordinator knows, in the default set or forgotten.
    pub fn regions(&self) -> Vec<vantage_proto::v1::RegionInfo> {
        let state = self.lock();
        let now = now_ms();
        state
            .regions
            .records()
            .map(|r| {
                let connected = state.connected_in(&r.name).len();
                vantage_proto::v1::RegionInfo {
                    region: r.name.clone(),
                    connected_agents: connected as u32,
                    last_seen: Some(crate::clock::timestamp(if connected > 0 { now } else { r.last_seen_ms })),
                    forget_at: state
                        .regions
                        .forget_at(&r.name, connected > 0, self.options.region_forget_after)
                        .map(crate::clock::timestamp),
                    forgotten: r.forgotten_ms.is_some(),
                    forgotten_at: r.forgotten_ms.map(crate::clock::timestamp),
                    agents: state.agents.values().filter(|a| a.record.region == r.name).count() as u32,
                }
            })
            .collect()
    }

    /// The regions in the default region set now.
    pub fn region_set(&self) -> BTreeSet<String> {
        self.lock().regions_known()
    }

    /// Takes `region` out of the default region set until an agent connects from it again
    /// (`ForgetRegion`); `by` names the caller. False when it was not in the set.
    pub async fn forget_region(&self, region: &str, by: &str) -> Result<bool, HubError> {
        spec::check_name("region", region)?;
        let deciding = self.deciding.lock().await;
        let now = now_ms();
        let (record, records, memory) = {
            let mut state = self.lock();
            let connected = state.connected_in(region).len();
            let forgotten =
                state.regions.forget(region, connected, now).map_err(|e| HubError::Conflict(e.to_string()))?;
            let Some(record) = forgotten else { return Ok(false) };
            let mut memory = Vec::new();
            let quiet = now.saturating_sub(record.last_seen_ms);
            let mut alert = region_forgotten(&mut state, region, record.last_seen_ms, now, &mut memory);
            alert.detail = format!(
                "forgotten by {by} (ForgetRegion) after {} without an agent",
                crate::clock::human_duration(quiet)
            );
            let records = plan_alerts(&mut state, &self.options.alerting, vec![alert], &mut memory);
            (record, records, memory)
        };
        tracing::warn!(
            region,
            by,
            "region forgotten: it leaves the default region set until an agent connects from it"
        );
        let queued = records.iter().any(AlertRecord::pending);
        blocking(&self.store, move |s| {
            s.put_regions(&[record])?;
            s.record_changes(&[], &records, &memory)
        })
        .await?;
        if queued {
            self.alerts_queued.notify_one();
        }
        drop(deciding);
        // Quorums change now, not at the next sweep.
        self.evaluate(None).await;
        Ok(true)
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

    pub async fn incidents(&self, url: &str, open_only: bool, limit: usize) -> Result<Vec<Incident>, HubError> {
        let url = if url.is_empty() {
            String::new()
        } else {
            vantage_shared::TargetUrl::parse(url).map(|u| u.to_string()).unwrap_or_else(|_| url.to_owned())
        };
        blocking(&self.store, move |s| s.incidents(&url, open_only, limit)).await
    }

    /// One pass of housekeeping (what goes and when: [`Retention`]): agents gone too long are
    /// forgotten, then the store prunes step by step, each step one short write transaction,
    /// pausing between steps so that ingest commits never wait behind more than one.
    pub async fn prune(&self, retention: &Retention) -> Result<Pruned, HubError> {
        let started = Instant::now();
        let now = now_ms();
        let cutoff = |kept: Duration| now.saturating_sub(i64::try_from(kept.as_millis()).unwrap_or(i64::MAX));
        let forgotten = self.forget_agents(cutoff(retention.agents), now).await?;
        let (results, events) = (cutoff(retention.results), cutoff(retention.events));
        let mut pruning = Pruning::new(results, events, results);
        let mut rows = PRUNE_STEP_FIRST_ROWS;
        loop {
            let step = blocking(&self.store, move |s| {
                let over = s.prune_step(&mut pruning, rows, store::PRUNE_STEP_TIME)?;
                Ok((pruning, over))
            })
            .await;
            let over;
            (pruning, over) = match step {
                Ok(step) => step,
                Err(e) => {
                    // The steps before this one stay removed, synced even if no ingest follows.
                    let _ = blocking(&self.store, |s| s.sync()).await;
                    return Err(e);
                }
            };
            if over {
                break;
            }
            // Steps as large as keep within the target: halved when one took longer, grown
            // slowly while they take less than half of it.
            if pruning.last_step > PRUNE_STEP_TARGET {
                rows = (rows / 2).max(PRUNE_STEP_MIN_ROWS);
            } else if pruning.last_step < PRUNE_STEP_TARGET / 2 {
                rows = (rows + rows / 4).min(store::PRUNE_STEP_ROWS);
            }
            tokio::time::sleep(PRUNE_PAUSE).await;
        }
        blocking(&self.store, |s| s.sync()).await?;
        // Silences that ended before the cutoff went from the store with them.
        self.lock().silences.retain(|s| s.end_ms >= results);
        let done = pruning.done;
        if done != Pruned::default() || forgotten > 0 {
            tracing::info!(
                results = done.results,
                transitions = done.transitions,
                incidents = done.incidents,
                alerts = done.alerts,
                silences = done.silences,
                agents = forgotten,
                indexed = done.indexed,
                steps = done.steps,
                took_ms = started.elapsed().as_millis() as u64,
                "housekeeping: removed what outlived its retention"
            );
        }
        Ok(done)
    }

    /// Forgets agents not connected since `before_ms` (store and memory), and refreshes the
    /// stored last-seen time of the connected ones; returns how many were forgotten.
    async fn forget_agents(&self, before_ms: i64, now: i64) -> Result<usize, HubError> {
        let (seen, gone) = {
            let mut state = self.lock();
            let (mut seen, mut gone) = (Vec::new(), Vec::new());
            for agent in state.agents.values_mut() {
                if agent.session.is_some() {
                    agent.record.last_seen_ms = now;
                    seen.push(agent.record.clone());
                } else if agent.record.last_seen_ms < before_ms {
                    gone.push(agent.record.name.clone());
                }
            }
            (seen, gone)
        };
        if seen.is_empty() && gone.is_empty() {
            return Ok(0);
        }
        let forgotten = blocking(&self.store, move |s| s.sweep_agents(&seen, &gone, before_ms)).await?;
        let mut state = self.lock();
        for name in &forgotten {
            // One that connected again meanwhile stays.
            if state.agents.get(name).is_some_and(|a| a.session.is_none()) {
                state.agents.remove(name);
                tracing::info!(agent = name, "agent not seen for longer than the agent retention: forgotten");
            }
        }
        Ok(forgotten.len())
    }
}

/// How long the coordinator keeps what it records (README: "Storage and retention").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// Results history; settled alerts and ended silences are kept as long.
    pub results: Duration,
    /// Verdict transitions and closed incidents (open incidents stay).
    pub events: Duration,
    /// Agents not connected for this long are forgotten: their record (`ListAgents`) and batch
    /// sequence.
    pub agents: Duration,
}

impl Default for Retention {
    fn default() -> Self {
        const DAY: u64 = 86_400;
        Retention {
            results: Duration::from_secs(7 * DAY),
            events: Duration::from_secs(365 * DAY),
            agents: Duration::from_secs(30 * DAY),
        }
    }
}

impl Retention {
    /// The same retention for everything.
    pub fn all(kept: Duration) -> Retention {
        Retention { results: kept, events: kept, agents: kept }
    }
}

/// A housekeeping step should hold the write lock no longer than this (an ingest commit arriving
/// during one waits for its end, then takes its own time): the rows per step follow the time steps
/// take, from `PRUNE_STEP_FIRST_ROWS`, between `PRUNE_STEP_MIN_ROWS` and `store::PRUNE_STEP_ROWS`.
pub const PRUNE_STEP_TARGET: Duration = Duration::from_millis(10);
const PRUNE_STEP_FIRST_ROWS: usize = 1_000;
const PRUNE_STEP_MIN_ROWS: usize = 50;

/// Pause between two housekeeping steps. redb's writer lock is not fair: a pruner that began its
/// next step at once could take it again before a waiting ingest commit wakes up.
const PRUNE_PAUSE: Duration = Duration::from_millis(10);

fn name_taken(state: &State, name: &str, region: &str) -> Result<(), HubError> {
    match state.agents.get(name) {
        Some(other) if other.session.is_some() && other.record.region != region => Err(HubError::Forbidden(format!(
            "agent name {name} is already connected from region {}; give each agent its own name \
             (pki issue-agent --name)",
            other.record.region
        ))),
        _ => Ok(()),
    }
}

/// Random hex for this process's run-now ids.
fn run_now_prefix() -> String {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 8];
    // The system RNG does not fail on Linux; a zero prefix still tells this process's calls apart.
    let _ = ring::rand::SystemRandom::new().fill(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The run-now id of this process's `n`th `CheckNow`: short whatever the URL (at most 38 bytes,
/// under `limits::MAX_ID`), so an agent can always report it.
fn run_now_id_for(prefix: &str, n: u64) -> String {
    let id = format!("r-{prefix}-{n}");
    debug_assert!(id.len() <= MAX_ID);
    id
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
    Some(Observation { at_ms: crate::clock::entry_ms(entry), status, code })
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
                        not_after: c.not_after.map(|t| crate::clock::timestamp_rfc3339(&t)).unwrap_or_default(),
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
    let since = state.verdicts.get(&spec.url).map(|v| crate::clock::timestamp(v.since_ms));
    let labels: BTreeMap<String, String> = spec.labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    let silence =
        state.silences.iter().find(|s| s.active(now_ms()) && s.matches(&spec.url, &labels)).map(silence_to_proto);
    TargetStatus {
        url: spec.url.clone(),
        verdict: verdict as i32,
        cause: decision.cause.map(cause),
        since,
        cert,
        regions,
        quorum: decision.quorum as u32,
        failing_regions: decision.failing.clone(),
        silence,
    }
}

pub fn silence_to_proto(s: &Silence) -> vantage_proto::v1::Silence {
    vantage_proto::v1::Silence {
        id: s.id.clone(),
        target: s.target.clone(),
        labels: s.labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        start: Some(crate::clock::timestamp(s.start_ms)),
        end: Some(crate::clock::timestamp(s.end_ms)),
        comment: s.comment.clone(),
        source: s.source.clone(),
    }
}

/// A change to alerting's stored memory: key, and the new value (JSON; `None` deletes it).
type Remembered = (String, Option<Vec<u8>>);

/// Alerting's stored memory under `prefix` ("cert:", "held:", …): the rest of the key → value.
fn recall<T: serde::de::DeserializeOwned>(memory: &[(String, Vec<u8>)], prefix: &str) -> HashMap<String, T> {
    memory
        .iter()
        .filter_map(|(key, value)| Some((key.strip_prefix(prefix)?.to_owned(), serde_json::from_slice(value).ok()?)))
        .collect()
}

/// An alert about a target, from its decision.
fn target_alert(
    state: &State,
    spec: &TargetSpec,
    kind: AlertKind,
    decision: &Decision,
    of_regions: usize,
    now: i64,
) -> Alert {
    let mut alert = Alert::new(kind, &spec.url, now, format!("vantage/target/{}", spec.url));
    if matches!(kind, AlertKind::Degraded | AlertKind::DegradedCleared) {
        alert.dedup_key = format!("vantage/degraded/{}", spec.url);
    }
    alert.labels = spec.labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    alert.of_regions = of_regions;
    if matches!(kind, AlertKind::Down | AlertKind::Degraded) {
        alert.regions = decision.failing.clone();
        alert.cause = decision.cause.map(|c| AlertCause {
            code: c.as_str().into(),
            message: c.cause().into(),
            hint: c.hint().into(),
        });
        // The first failing region's own words and failing backend.
        let failing = decision.failing.first().and_then(|r| state.latest.get(&(spec.url.clone(), r.clone())));
        if let Some(result) = failing.and_then(|e| e.result.as_ref()) {
            // An agent's words, bounded: receivers limit payload sizes.
            let detail = result.failure.as_ref().map(|f| f.detail.as_str()).unwrap_or_default();
            alert.detail = detail.chars().take(1024).collect();
            alert.backend = result
                .backends
                .iter()
                .find(|b| b.failure.is_some())
                .or(result.backends.first())
                .map(|b| b.address.clone())
                .filter(|a| !a.is_empty());
        }
    }
    alert
}

/// Certificate alerts for a target: its certificate changed, or crossed into warning or critical
/// for the first time (once per certificate). Returns them with the memory to store.
fn cert_alerts(state: &mut State, spec: &TargetSpec, now: i64) -> Option<(Vec<Alert>, Remembered)> {
    use vantage_proto::v1::CertHealth;
    // The certificate closest to expiry that any region sees (borrowed: this runs for every
    // target every second, and a certificate carries its whole chain).
    let mut key = (spec.url.clone(), String::new());
    let mut closest: Option<&vantage_proto::v1::Certificate> = None;
    for region in state.target_regions(spec) {
        key.1 = region;
        let Some(cert) = state.latest.get(&key).and_then(|e| e.result.as_ref()?.cert.as_ref()) else { continue };
        if !cert.sha256.is_empty()
            && closest.is_none_or(|c| (cert.days_remaining, &cert.sha256) < (c.days_remaining, &c.sha256))
        {
            closest = Some(cert);
        }
    }
    let closest = closest?;
    let level = match CertHealth::try_from(closest.health).unwrap_or(CertHealth::Unspecified) {
        CertHealth::Warning => 1,
        CertHealth::Critical => 2,
        _ => 0,
    };
    if let Some(memory) = state.certs.get(&spec.url) {
        let known = memory.levels.iter().find(|(fp, _)| *fp == closest.sha256).map(|(_, l)| *l);
        if memory.current == closest.sha256 && known.unwrap_or(0) >= level {
            return None;
        }
    }
    // Something to remember or say: only now the facts are copied out.
    let cert = vantage_proto::v1::Certificate { chain: Vec::new(), ..closest.clone() };
    let memory = state.certs.entry(spec.url.clone()).or_default();
    let known_level = memory.levels.iter().find(|(fp, _)| *fp == cert.sha256).map(|(_, l)| *l);
    let labels: BTreeMap<String, String> = spec.labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    let not_after = cert.not_after.map(|t| crate::clock::timestamp_rfc3339(&t));
    let make = |kind: AlertKind, dedup: String| {
        let mut alert = Alert::new(kind, &spec.url, now, dedup);
        alert.labels = labels.clone();
        alert.fingerprint = Some(cert.sha256.clone());
        alert.not_after = not_after.clone();
        alert
    };
    let mut alerts = Vec::new();
    if !memory.current.is_empty() && memory.current != cert.sha256 && known_level.is_none() {
        let mut changed = make(AlertKind::CertChanged, format!("vantage/cert/{}/{}", spec.url, memory.current));
        changed.previous_fingerprint = Some(memory.current.clone());
        changed.detail = format!("now served: {} (expires {})", cert.subject, not_after.clone().unwrap_or_default());
        alerts.push(changed);
    }
    if level > known_level.unwrap_or(0) {
        let kind = if level == 2 { AlertKind::CertCritical } else { AlertKind::CertWarning };
        let mut alert = make(kind, format!("vantage/cert/{}/{}", spec.url, cert.sha256));
        let code = if level == 2 { "cert_critical" } else { "cert_warning" };
        alert.cause = Some(AlertCause {
            code: code.into(),
            message: format!("The certificate expires in {} days.", cert.days_remaining),
            hint: "Renew the certificate and reload the server; check that automated renewal still runs.".into(),
        });
        alert.detail = format!("{} (issuer {})", cert.subject, cert.issuer);
        alerts.push(alert);
    }
    memory.current = cert.sha256.clone();
    match memory.levels.iter_mut().find(|(fp, _)| *fp == cert.sha256) {
        Some(entry) => entry.1 = entry.1.max(level),
        None => memory.levels.push((cert.sha256.clone(), level)),
    }
    // A few recent certificates are enough to ride out a rotation.
    if memory.levels.len() > 8 {
        memory.levels.remove(0);
    }
    let bytes = serde_json::to_vec(&*memory).ok();
    Some((alerts, (format!("cert:{}", spec.url), bytes)))
}

/// Plans alerts into deliveries. A trigger goes where the routes say, unless a silence holds it
/// back (it is then kept, to be sent if its problem outlasts the silence). A resolve goes to every
/// channel that heard its trigger as well as where the routes say, and is held back exactly when
/// its trigger was.
fn plan_alerts(
    state: &mut State,
    alerting: &Alerting,
    alerts: Vec<Alert>,
    memory: &mut Vec<Remembered>,
) -> Vec<AlertRecord> {
    let mut records = Vec::new();
    for alert in alerts {
        let dedup = alert.dedup_key.clone();
        if alert.kind.resolves() {
            let held = state.held.remove(&dedup).is_some();
            if held {
                memory.push((format!("held:{dedup}"), None));
            }
            let heard = state.sent.remove(&dedup).unwrap_or_default();
            if !heard.is_empty() {
                memory.push((format!("sent:{dedup}"), None));
            }
            let mut record = alerting.plan(alert, &[]);
            if held {
                for delivery in &mut record.deliveries {
                    delivery.state = crate::alert::DeliveryState::Silenced;
                }
                record.silenced_by = Some("its trigger was held back by a silence".into());
            } else {
                for channel in heard {
                    if !record.deliveries.iter().any(|d| d.channel == channel) {
                        record.deliveries.push(crate::alert::Delivery {
                            channel,
                            state: crate::alert::DeliveryState::Pending,
                            attempts: 0,
                            last_error: String::new(),
                            next_attempt_ms: record.alert.at_ms,
                            delivered_ms: 0,
                        });
                    }
                }
            }
            records.push(record);
        } else {
            let record = alerting.plan(alert, &state.silences);
            if record.silenced_by.is_some() {
                memory.push((format!("held:{dedup}"), serde_json::to_vec(&record.alert).ok()));
                state.held.insert(dedup, record.alert.clone());
            } else if !record.deliveries.is_empty() {
                let channels = state.sent.entry(dedup.clone()).or_default();
                for d in &record.deliveries {
                    if !channels.contains(&d.channel) {
                        channels.push(d.channel.clone());
                    }
                }
                memory.push((format!("sent:{dedup}"), serde_json::to_vec(&*channels).ok()));
            }
            records.push(record);
        }
    }
    records
}

/// Triggers held back by a silence that no longer covers them: sent now if their problem is still
/// there, forgotten otherwise.
fn released_alerts(state: &mut State, now: i64, memory: &mut Vec<Remembered>) -> Vec<Alert> {
    let mut released = Vec::new();
    let held: Vec<(String, Alert)> = state.held.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    for (dedup, alert) in held {
        if state.silences.iter().any(|s| s.active(now) && s.matches(&alert.subject, &alert.labels)) {
            continue;
        }
        state.held.remove(&dedup);
        memory.push((format!("held:{dedup}"), None));
        let still = match alert.kind {
            AlertKind::Down => state.open_incidents.contains_key(&alert.subject),
            AlertKind::Degraded => state.degraded.contains_key(&alert.subject),
            AlertKind::Unknown => state.unknown.contains_key(&alert.subject),
            AlertKind::CertWarning | AlertKind::CertCritical => {
                state.certs.get(&alert.subject).is_some_and(|c| Some(&c.current) == alert.fingerprint.as_ref())
            }
            AlertKind::RegionSilent => state.silent_regions.get(&alert.subject).is_some_and(|r| r.alerted),
            AlertKind::HeartbeatOverdue => state.heartbeats.get(&alert.subject).is_some_and(|h| h.alerted),
            _ => false,
        };
        if still {
            let mut again = alert;
            again.id = crate::alert::new_id();
            again.at_ms = now;
            again.detail = format!("{} (held back by a silence that has ended)", again.detail).trim().to_owned();
            released.push(again);
        }
    }
    released
}

fn hex_bytes(hex: &str) -> Option<Vec<u8>> {
    if hex.len() % 2 != 0 || hex.len() > 128 {
        return None;
    }
    (0..hex.len()).step_by(2).map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok()).collect()
}

fn heartbeat_alert(config: &crate::alert::Heartbeat, kind: AlertKind, now: i64) -> Alert {
    let mut alert = Alert::new(kind, &config.name, now, format!("vantage/heartbeat/{}", config.name));
    alert.labels = config.labels.clone();
    alert
}

/// `heartbeat_overdue` for a heartbeat whose period has passed without one.
fn heartbeat_alerts(
    state: &mut State,
    alerting: &Alerting,
    now: i64,
    alerts: &mut Vec<Alert>,
    memory: &mut Vec<Remembered>,
) {
    for config in &alerting.heartbeats {
        let key = format!("heartbeat:{}", config.name);
        let entry = state.heartbeats.entry(config.name.clone()).or_insert_with(|| {
            // Never heard from: the period runs from now.
            let fresh = HeartbeatMemory { last_ms: now, ..HeartbeatMemory::default() };
            memory.push((key.clone(), serde_json::to_vec(&fresh).ok()));
            fresh
        });
        let due = entry.last_ms + config.period.as_millis() as i64;
        if entry.alerted || now <= due {
            continue;
        }
        entry.alerted = true;
        memory.push((key, serde_json::to_vec(&*entry).ok()));
        let mut alert = heartbeat_alert(config, AlertKind::HeartbeatOverdue, now);
        alert.since_ms = due;
        let last = if entry.last_timestamp == 0 {
            "none has arrived since it was configured".to_owned()
        } else {
            format!("the last arrived {}", crate::clock::rfc3339(entry.last_ms))
        };
        alert.cause = Some(AlertCause {
            code: "heartbeat_overdue".into(),
            message: format!(
                "Heartbeat {} is overdue: one is expected every {}, and {last}.",
                config.name,
                crate::clock::human_duration(config.period.as_millis() as i64)
            ),
            hint: "The job that sends it (a certificate renewal, say) has not run or failed: check its timer or cron \
                   entry and its log (certbot renew --dry-run), and that it can reach the coordinator."
                .into(),
        });
        alert.detail = entry.note.clone();
        alerts.push(alert);
    }
}

/// `region_silent` for a region without a connected agent for longer than `after`, and
/// `region_recovered` when one is back.
fn region_alerts(state: &mut State, now: i64, after: Duration, alerts: &mut Vec<Alert>, memory: &mut Vec<Remembered>) {
    if after.is_zero() {
        return;
    }
    for region in state.regions_known() {
        // Connected is not enough: an agent whose every result is refused judges nothing.
        let connected = state.reporting_in(&region, now);
        let dedup = format!("vantage/region/{region}");
        match (connected, state.silent_regions.get(&region).cloned()) {
            (true, Some(gone)) => {
                state.silent_regions.remove(&region);
                if gone.alerted {
                    let mut alert = Alert::new(AlertKind::RegionRecovered, &region, now, dedup);
                    (alert.since_ms, alert.duration_ms) = (gone.since_ms, Some(now - gone.since_ms));
                    alert.regions = vec![region.clone()];
                    alerts.push(alert);
                    memory.push((format!("region:{region}"), None));
                }
            }
            (false, None) => {
                state.silent_regions.insert(region, RegionMemory { since_ms: now, alerted: false });
            }
            (false, Some(gone)) if !gone.alerted && now - gone.since_ms >= after.as_millis() as i64 => {
                let mut alert = Alert::new(AlertKind::RegionSilent, &region, now, dedup);
                alert.since_ms = gone.since_ms;
                alert.regions = vec![region.clone()];
                alert.cause = Some(AlertCause {
                    code: "region_silent".into(),
                    message: if state.connected_in(&region).is_empty() {
                        format!("No agent of region {region} has been connected for {}.", crate::clock::human_duration(now - gone.since_ms))
                    } else {
                        format!("The agents of region {region} are connected, but none of their results has been stored for {}: they are refused (vantage_results_refused_total and the coordinator's log say why).", crate::clock::human_duration(now - gone.since_ms))
                    },
                    hint: "Check the agent hosts of this region (service running, network to the coordinator, certificate not expired or revoked); its targets are UNKNOWN from there meanwhile.".into(),
                });
                alerts.push(alert);
                let remembered = RegionMemory { since_ms: gone.since_ms, alerted: true };
                memory.push((format!("region:{region}"), serde_json::to_vec(&remembered).ok()));
                state.silent_regions.insert(region, remembered);
            }
            _ => {}
        }
    }
}

/// The dedup key of one spell of a target's problem (`kind`: `target`, `degraded`, `unknown`)
/// that began at `since`: the next outage, or the same target added again, is a fresh incident
/// on the pager. A spell alerted under the older key (without its start) keeps it, so its resolve
/// still matches.
fn spell_key(state: &State, kind: &str, url: &str, since: i64) -> String {
    let legacy = format!("vantage/{kind}/{url}");
    if state.sent.contains_key(&legacy) || state.held.contains_key(&legacy) {
        legacy
    } else {
        format!("{legacy}#{since}")
    }
}

/// What a target's verdict means for its `unknown` alert.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Blindness {
    /// `UNKNOWN` for `unknown_after` and not alerted yet.
    Raise,
    /// Judged again after an `unknown` alert (raised for the spell that began then).
    Clear(i64),
    Nothing,
}

/// `verdict` has held since `since`; `alerted` is the start of the spell an `unknown` alert was
/// raised for. `after` zero: never.
fn blindness(verdict: Verdict, since: i64, alerted: Option<i64>, now: i64, after: Duration) -> Blindness {
    match (verdict, alerted) {
        (Verdict::Unknown, None) if !after.is_zero() && now.saturating_sub(since) >= after.as_millis() as i64 => {
            Blindness::Raise
        }
        (Verdict::Unknown, _) => Blindness::Nothing,
        (_, Some(spell)) => Blindness::Clear(spell),
        (_, None) => Blindness::Nothing,
    }
}

/// `unknown`: too few regions can judge the target, for long enough to say so.
fn unknown_alert(
    state: &State,
    spec: &TargetSpec,
    decision: &Decision,
    opinions: &[RegionOpinion],
    since: i64,
    now: i64,
) -> Alert {
    let mut alert = Alert::new(AlertKind::Unknown, &spec.url, now, spell_key(state, "unknown", &spec.url, since));
    alert.labels = spec.labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    alert.since_ms = since;
    alert.of_regions = opinions.len();
    alert.regions = opinions.iter().filter(|o| o.opinion == Opinion::Unknown).map(|o| o.region.clone()).collect();
    let known = opinions.len() - alert.regions.len();
    let message = if opinions.is_empty() {
        "Vantage cannot judge this target: no region judges it (no agent has connected from any of the \
         default region set yet)."
            .to_owned()
    } else {
        format!(
            "Vantage cannot judge this target: {known} of its {} regions hold an opinion, and {} are needed. The \
             others ({}) have no connected agent or only stale results.",
            opinions.len(),
            decision.quorum,
            alert.regions.join(", ")
        )
    };
    alert.cause = Some(AlertCause {
        code: "no_quorum".into(),
        message,
        hint: "Check the agents of those regions (vantage-coordinator regions ls; ListAgents): service running, \
               network to the coordinator, certificate valid. A region gone for good can be forgotten \
               (vantage-coordinator regions forget REGION)."
            .into(),
    });
    alert
}

/// `region_forgotten` for a region that left the default set now (it resolves the region's
/// `region_silent`, which has the same dedup key), and the end of its silence watch.
fn region_forgotten(state: &mut State, region: &str, last_seen: i64, now: i64, memory: &mut Vec<Remembered>) -> Alert {
    if state.silent_regions.remove(region).is_some() {
        memory.push((format!("region:{region}"), None));
    }
    let mut alert = Alert::new(AlertKind::RegionForgotten, region, now, format!("vantage/region/{region}"));
    alert.since_ms = last_seen;
    alert.regions = vec![region.to_owned()];
    alert.cause = Some(AlertCause {
        code: "region_forgotten".into(),
        message: format!(
            "Region {region} has left the default region set: targets without their own regions are judged by \
             the others ({}).",
            state.regions_known().into_iter().collect::<Vec<_>>().join(", ")
        ),
        hint: "Nothing to do if the region is gone for good. If not, start an agent in it: the region comes back \
               as soon as one connects. Targets that name it in their own regions still count it."
            .into(),
    });
    alert
}

/// Regions without a connected agent for `after` leave the default set (`region_forgotten`);
/// returns the region records to store.
fn forget_quiet_regions(
    state: &mut State,
    now: i64,
    after: Duration,
    alerts: &mut Vec<Alert>,
    memory: &mut Vec<Remembered>,
) -> Vec<RegionRecord> {
    let connected = state.connected_regions();
    let (forgotten, save) = state.regions.tick(&connected, now, after);
    for (region, quiet) in forgotten {
        let quiet_for = crate::clock::human_duration(quiet);
        tracing::warn!(
            region,
            without_agents = quiet_for,
            "region forgotten: no agent for longer than region_forget_after; it leaves the default region set \
             until an agent connects from it"
        );
        let mut alert = region_forgotten(state, &region, now - quiet, now, memory);
        alert.detail = format!("no agent for {quiet_for} (region_forget_after)");
        alerts.push(alert);
    }
    save
}

/// Why a target is removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Removal {
    /// `DeleteTarget`.
    Api,
    /// No longer in the config file at start-up.
    Config,
}

/// The resolves a removed target owes: `recovered` for its open incident, `degraded_cleared` and
/// `unknown_cleared` for alerts it raised, each with the `removed` cause; its alert memory goes.
fn removal_alerts(state: &mut State, url: &str, why: Removal, now: i64, memory: &mut Vec<Remembered>) -> Vec<Alert> {
    let mut alerts = Vec::new();
    let Some(spec) = state.targets.get(url).cloned() else { return alerts };
    let said = match why {
        Removal::Api => "The target was deleted (DeleteTarget)",
        Removal::Config => "The target is no longer in the config file",
    };
    let make = |state: &State, kind: AlertKind, prefix: &str, since: i64| {
        let mut alert = Alert::new(kind, url, now, spell_key(state, prefix, url, since));
        alert.labels = spec.labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        (alert.since_ms, alert.duration_ms) = (since, Some(now - since));
        alert.cause = Some(AlertCause {
            code: "removed".into(),
            message: format!("{said}: what it raised ends here, and its open incident is closed as removed."),
            hint: "Nothing to do, unless it was removed by mistake: add it again (it starts afresh).".into(),
        });
        alert.detail = "removed".into();
        alert
    };
    if let Some(&opened) = state.open_incidents.get(url) {
        alerts.push(make(state, AlertKind::Recovered, "target", opened));
    }
    if let Some(&since) = state.degraded.get(url) {
        let alert = make(state, AlertKind::DegradedCleared, "degraded", since);
        if state.sent.contains_key(&alert.dedup_key) || state.held.contains_key(&alert.dedup_key) {
            alerts.push(alert);
        }
        memory.push((format!("degraded:{url}"), None));
    }
    if let Some(&since) = state.unknown.get(url) {
        alerts.push(make(state, AlertKind::UnknownCleared, "unknown", since));
        memory.push((format!("unknown:{url}"), None));
    }
    // Certificate alerts have no resolve of their own; what is remembered of them goes.
    memory.push((format!("cert:{url}"), None));
    let cert_prefix = format!("vantage/cert/{url}/");
    let stale: Vec<String> =
        state.sent.keys().chain(state.held.keys()).filter(|k| k.starts_with(&cert_prefix)).cloned().collect();
    for key in stale {
        if state.sent.remove(&key).is_some() {
            memory.push((format!("sent:{key}"), None));
        }
        if state.held.remove(&key).is_some() {
            memory.push((format!("held:{key}"), None));
        }
    }
    alerts
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
    let now = now_ms();
    for agent in state.agents.values_mut() {
        // Released targets are forgotten once their grace is over (or they are gone).
        agent.released.retain(|url, at| {
            state.targets.get(url).is_some_and(|spec| now - *at <= release_grace(spec).as_millis() as i64)
        });
        let Some(session) = agent.session.as_mut() else { continue };
        let want = desired.remove(&agent.record.name).unwrap_or_default();
        for url in session.assigned.keys().filter(|u| !want.contains_key(*u)) {
            agent.released.insert(url.clone(), now);
        }
        session.patience_ms = patience_ms(&want);
        if session.assigned.is_empty() && !want.is_empty() {
            // Nothing to report until now: its time starts with its first targets.
            session.last_accepted_ms = session.last_accepted_ms.max(now);
        }
        let message = if !session.sent_full {
            session.sent_full = true;
            coordinator_message::Kind::Assignment(Assignment {
                epoch,
                targets: want.values().cloned().collect(),
                last_sequence: session.last_sequence,
            })
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
                a.end_session(now);
            }
        }
        // Their targets go to the region's other agents.
        reassign(state, changed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_is_raised_after_its_delay_once_and_cleared_by_any_known_verdict() {
        let after = Duration::from_secs(300);
        let at = |s: i64| s * 1000;
        // Not before the delay, then once.
        assert_eq!(blindness(Verdict::Unknown, at(0), None, at(299), after), Blindness::Nothing);
        assert_eq!(blindness(Verdict::Unknown, at(0), None, at(300), after), Blindness::Raise);
        assert_eq!(blindness(Verdict::Unknown, at(0), Some(at(0)), at(900), after), Blindness::Nothing);
        // Judged again, whatever the verdict: cleared, naming the spell it was raised for.
        for verdict in [Verdict::Up, Verdict::Degraded, Verdict::Down] {
            assert_eq!(blindness(verdict, at(950), Some(at(0)), at(950), after), Blindness::Clear(at(0)));
            assert_eq!(blindness(verdict, at(0), None, at(9_999), after), Blindness::Nothing);
        }
        // Zero turns it off.
        assert_eq!(blindness(Verdict::Unknown, at(0), None, at(1_000_000), Duration::ZERO), Blindness::Nothing);
    }

    #[test]
    fn each_spell_of_a_problem_has_its_own_dedup_key_and_older_keys_are_kept() {
        let mut state = State::default();
        let url = "https://shop.example/";
        let first = spell_key(&state, "target", url, 1_000);
        let second = spell_key(&state, "target", url, 2_000);
        assert_ne!(first, second, "a new outage (or the target added again) is a new incident");
        assert!(first.starts_with("vantage/target/https://shop.example/"), "{first}");
        // An outage alerted by an older coordinator, under the key without its start.
        state.sent.insert(format!("vantage/target/{url}"), vec!["pager".into()]);
        assert_eq!(spell_key(&state, "target", url, 3_000), format!("vantage/target/{url}"));
        assert_ne!(spell_key(&state, "degraded", url, 3_000), format!("vantage/degraded/{url}"));
    }
}
