//! The hub: the coordinator's live state and the one way it changes. Every input is an event (a
//! batch of results, an agent connecting or leaving, a target upserted or deleted, the clock
//! ticking, a heartbeat, a silence, a region forgotten); applying one changes the in-memory state
//! and yields one [`Changes`] value (verdict transitions and incidents, alert records, alerting's
//! memory, region records, status announcements) that is written in one store transaction and
//! only then published. Alerts are thus committed atomically with the verdicts that cause them.
//!
//! Work per event is proportional to what it touches: a batch re-judges only its targets, and the
//! tick re-judges only the targets whose deadline has come (a result growing stale, an `unknown`
//! alert falling due); a full pass runs only when every target is concerned (an agent came or
//! went, the default region set or a silence changed, the start-up grace ended).
//!
//! The parts, each pure and tested on its own: `targets` (per-target state, deadline queue),
//! `judge` (verdict rules applied, incident state machine), `planner` (target alerts and
//! deliveries), `damping` (flap rate and hold-down), `memory` (alerting's typed memory),
//! `region_alerts`, `heartbeats`, `agents` (registry and assigner), `projection` (the status as
//! shown), `uptime` (regions' opinion changes for availability, and the figures asked for).

mod agents;
mod check_now;
mod config_events;
mod counters;
mod damping;
mod firing;
mod groups;
mod heartbeats;
mod housekeeping;
mod judge;
mod latency;
mod memory;
mod planner;
mod projection;
mod queries;
mod region_alerts;
mod sessions;
mod target_events;
mod targets;
mod uptime;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::broadcast;
use tracing::Instrument;
use vantage_proto::v1::{TargetSpec, TargetStatus};

use crate::alert::{Alert, AlertRecord, Alerting, Silence};
use crate::clock::now_ms;
use crate::regions::RegionSet;
use crate::spec;
use crate::store::{IncidentChange, RegionRecord, Store, StoreError, VerdictRecord};

pub use agents::{AgentTx, release_grace};
pub use config_events::{Applied, Live};
pub use counters::Counters;
pub use heartbeats::HeartbeatError;
pub use housekeeping::{PRUNE_STEP_TARGET, Retention};
pub use latency::LatencyReport;
pub use memory::HeartbeatMemory;
pub use projection::silence_to_proto;

use agents::Registry;
use judge::{Context, IncidentStep};
use memory::{AlertMemory, Remembered};
use planner::Removal;
use targets::{Deadlines, Decided, Name, Target, Targets};

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

pub const DEFAULT_MAX_TARGETS: usize = 100_000;

/// Targets judged per transaction in a full pass.
const FULL_PASS_SLICE: usize = 5_000;

/// Options of the hub.
#[derive(Debug, Clone)]
pub struct HubOptions {
    /// After start-up, regions count as connected this long, so agents have time to come back
    /// before their regions turn unknown.
    pub reconnect_grace: Duration,
    /// Most targets the coordinator holds.
    pub max_targets: usize,
    /// Channels, routes, links (at start; a config reload swaps them, see `Hub::alerting`).
    pub alerting: Arc<Alerting>,
    /// Silences from the config file (they replace the config's earlier ones).
    pub silences: Vec<Silence>,
    /// A region without a connected agent this long leaves the default region set (zero: never
    /// by itself).
    pub region_forget_after: Duration,
    /// `[quorum]`'s rule for impaired regions at start (a reload changes it with the alerting).
    pub impaired: crate::impairment::Policy,
    /// `[shard]` at start (a reload changes it with the targets, see `Hub::apply_config_targets`).
    pub shard: crate::shard::Shard,
}

impl Default for HubOptions {
    fn default() -> Self {
        HubOptions {
            reconnect_grace: Duration::from_secs(15),
            max_targets: DEFAULT_MAX_TARGETS,
            alerting: Arc::new(Alerting::default()),
            silences: Vec::new(),
            region_forget_after: crate::config::REGION_FORGET_AFTER,
            impaired: crate::impairment::Policy::default(),
            shard: crate::shard::Shard::WHOLE,
        }
    }
}

/// The client certificate an agent connected with.
#[derive(Debug, Clone, Default)]
pub struct AgentCert {
    pub sha256: String,
    pub not_after_ms: i64,
}

/// The live state, behind the hub's one mutex (held briefly: never across I/O).
#[derive(Default)]
struct State {
    targets: Targets,
    agents: Registry,
    /// The default region set, with its names in `default_regions` (shared, for judging).
    regions: RegionSet,
    default_regions: Vec<Name>,
    /// Regions with a connected agent.
    connected: HashSet<Name>,
    /// Impaired regions (README: "Impaired regions"), as `memory.impaired` holds them.
    impaired: HashSet<Name>,
    /// Each region's counts for the rule of impaired regions, kept as targets are judged.
    tallies: HashMap<Name, crate::impairment::Tally>,
    silences: Vec<Silence>,
    memory: AlertMemory,
    run_now: HashMap<String, check_now::Waiter>,
    deadlines: Deadlines,
    /// Every target must be judged at the next tick (the judging context changed for all).
    full_pass: bool,
    /// The start-up grace was over at the last tick.
    grace_over: bool,
    last_tick_ms: i64,
    /// Interned names (regions, agents): one allocation however many results carry them.
    names: HashSet<Name>,
}

impl State {
    fn intern(&mut self, name: &str) -> Name {
        if let Some(name) = self.names.get(name) {
            return name.clone();
        }
        let name = Name::from(name);
        self.names.insert(name.clone());
        name
    }

    /// After the region set or the agents changed: the names judging uses.
    fn refresh_regions(&mut self) {
        let current = self.regions.current();
        self.default_regions = current.iter().map(|r| self.intern(r)).collect();
        let connected = self.agents.connected_regions();
        self.connected = connected.iter().map(|r| self.intern(r)).collect();
    }

    fn reassign_all(&mut self, now: i64) {
        self.agents.reassign_all(&self.targets, &self.default_regions, now);
    }
}

/// What applying one event changed, to be committed in one transaction and then published.
#[derive(Default)]
struct Changes {
    verdicts: Vec<(String, VerdictRecord, IncidentChange)>,
    /// Alerts raised, to plan into deliveries.
    alerts: Vec<Alert>,
    /// Alerts grouping has released (a window ended), to plan as they are: they have been
    /// through grouping once already.
    released: Vec<Alert>,
    records: Vec<AlertRecord>,
    memory: Vec<Remembered>,
    regions: Vec<RegionRecord>,
    /// Incidents that joined an incident group.
    groups: Vec<crate::store::IncidentGroup>,
    announcements: Vec<TargetStatus>,
    /// Regions' opinions that changed state, for availability.
    opinions: Vec<crate::store::OpinionChange>,
}

impl Changes {
    fn is_empty(&self) -> bool {
        self.verdicts.is_empty()
            && self.records.is_empty()
            && self.memory.is_empty()
            && self.regions.is_empty()
            && self.groups.is_empty()
            && self.opinions.is_empty()
    }
}

pub struct Hub {
    store: Arc<Store>,
    state: Mutex<State>,
    /// Held from applying an event to committing its changes, so changes reach the store in order.
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
    pub counters: Counters,
    /// Alert channels answering that they are misconfigured (kept by the dispatcher).
    pub channel_health: crate::alert::health::Board,
    /// What a config reload may change (alerting, `[quorum]`): swapped whole, read per use.
    live: std::sync::RwLock<Arc<Live>>,
    /// The share of a split this coordinator holds: set with the config's targets, checked on
    /// every upsert.
    shard: std::sync::RwLock<crate::shard::Shard>,
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
                let configured: HashSet<&str> = config_targets.iter().map(|c| c.url.as_str()).collect();
                let stale: Vec<String> = s
                    .targets()?
                    .into_iter()
                    .filter(|t| t.source == "config" && !configured.contains(t.url.as_str()))
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
        let mut state = State {
            silences,
            memory: AlertMemory::load(&memory).map_err(|e| HubError::Refused(e.to_string()))?,
            regions: RegionSet::new(regions),
            ..State::default()
        };
        state.agents.revoked = revoked.into_iter().collect();
        // One line, however many targets; each target's own at DEBUG.
        let stale_set: HashSet<&str> = stale.iter().map(String::as_str).collect();
        let mut by_source: BTreeMap<String, usize> = BTreeMap::new();
        // Built in one go from the URL order the store lists them in: the map's nodes come out
        // full, where inserting one by one in order leaves each about half empty.
        state.targets = targets
            .into_iter()
            .map(|spec| {
                if !stale_set.contains(spec.url.as_str()) {
                    let source = if spec.source.is_empty() { "unset" } else { spec.source.as_str() };
                    *by_source.entry(source.to_owned()).or_default() += 1;
                    tracing::debug!(target = spec.url, source = spec.source, "target loaded");
                }
                let target = Target::new(spec);
                (target.url().clone(), target)
            })
            .collect();
        for row in latest {
            let agent = state.intern(&row.entry.agent);
            let region = state.intern(&row.entry.region);
            if let Some(target) = state.targets.get_mut(row.url.as_str()) {
                if target.observe(region, targets::Latest::of(&row.entry, agent)) {
                    target.note_address(&row.entry);
                }
            }
        }
        for (url, record) in verdicts {
            if let Some(target) = state.targets.get_mut(url.as_str()) {
                target.verdict = Decided::of(&record);
            }
        }
        for incident in &open {
            if let Some(target) = state.targets.get_mut(incident.url.as_str()) {
                target.open_incident = Some(incident.opened.as_ref().map_or(0, crate::clock::ms));
            }
        }
        let agent_count = agents.len();
        for record in agents {
            let agent = agents::Agent { record, session: None, released: HashMap::new() };
            state.agents.agents.insert(agent.record.name.clone(), agent);
        }
        state.refresh_regions();
        state.refresh_impaired();
        state.full_pass = true;
        let loaded: usize = by_source.values().sum();
        let by_source: Vec<String> = by_source.iter().map(|(source, n)| format!("{source}={n}")).collect();
        tracing::info!(
            targets = loaded,
            by_source = by_source.join(" "),
            agents = agent_count,
            open_incidents = open.len(),
            "targets loaded"
        );
        let channels: Vec<String> = options.alerting.channels.iter().map(|c| c.name.clone()).collect();
        let channel_health = crate::alert::health::Board::new(
            memory
                .iter()
                .filter_map(|(k, v)| {
                    let failing: crate::alert::health::Failing = serde_json::from_slice(v).ok()?;
                    Some((k.strip_prefix("channel:")?.to_owned(), failing))
                })
                .collect::<HashMap<_, _>>(),
            &channels,
        );
        let (watchers, _) = broadcast::channel(1024);
        let live = std::sync::RwLock::new(Arc::new(Live::of(&options)));
        let options_shard = options.shard;
        let hub = Arc::new(Hub {
            store,
            state: Mutex::new(state),
            deciding: tokio::sync::Mutex::new(()),
            next_check: std::sync::atomic::AtomicU64::new(0),
            run_now_prefix: check_now::prefix(),
            watchers,
            started: Instant::now(),
            options,
            alerts_queued: Arc::new(tokio::sync::Notify::new()),
            counters: Counters::default(),
            channel_health,
            live,
            shard: std::sync::RwLock::new(options_shard),
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

    fn in_grace(&self) -> bool {
        self.started.elapsed() < self.options.reconnect_grace
    }

    pub fn subscribe(&self) -> broadcast::Receiver<TargetStatus> {
        self.watchers.subscribe()
    }

    /// Judges `urls` (every target when `None`): records verdict changes and incidents, raises the
    /// alerts they cause, queues their next deadlines, and notes what watchers must hear.
    fn judge(&self, state: &mut State, urls: Option<Vec<Name>>, now: i64, changes: &mut Changes) {
        let in_grace = self.in_grace();
        let alerting = self.alerting();
        let (unknown_after, damping) = (alerting.unknown_after, alerting.damping);
        let watched = self.watchers.receiver_count() > 0;
        let hold_degraded = self.impaired_policy().enabled();
        let State { targets, memory, deadlines, silences, default_regions, connected, impaired, tallies, .. } = state;
        let ctx = Context { default_regions, connected, in_grace, impaired, hold_degraded, now };
        let urls = urls.unwrap_or_else(|| targets.keys().cloned().collect());
        for url in urls {
            let Some(target) = targets.get_mut(&url) else { continue };
            let judgement = judge::judge(target, &ctx);
            judge::recount(tallies, target, &judgement.opinions);
            match judgement.incident {
                // Opened when its regions began failing, by the probes' times (the same on a pair).
                IncidentStep::Opened => target.open_incident = Some(judgement.began),
                IncidentStep::Closed { .. } => target.open_incident = None,
                IncidentStep::None => {}
            }
            if judgement.changed {
                let incident = match judgement.incident {
                    IncidentStep::Opened => {
                        IncidentChange::Open(judge::opened_incident(&url, &judgement, judgement.began))
                    }
                    IncidentStep::Closed { .. } => IncidentChange::Close { at_ms: now },
                    IncidentStep::None => IncidentChange::None,
                };
                let record = &judgement.record;
                if judgement.first {
                    // A new target's first verdict (every target's, at first start): not news.
                    tracing::debug!(target = %url, verdict = record.verdict, "first verdict");
                } else {
                    tracing::info!(target = %url, verdict = record.verdict, cause = ?record.cause, "verdict changed");
                }
                changes.verdicts.push((url.to_string(), record.clone(), incident));
            }
            let previous = target.verdict.map(|d| d.verdict);
            target.verdict = Some(judgement.decided());
            uptime::opinion_changes(target, &judgement.opinions, now, &mut changes.opinions);
            changes.alerts.extend(planner::judgement_alerts(
                memory,
                target,
                &judgement,
                previous,
                now,
                unknown_after,
                &damping,
            ));
            let silence = projection::silence_of(target, silences, now);
            let flap = memory.flaps.get(url.as_ref());
            let flapping = flap.is_some_and(|f| f.flapping.is_some());
            let digest = projection::digest(&judgement.decision, &judgement.opinions, target, silence, flapping);
            if target.announced != digest {
                target.announced = digest;
                // Built only for someone to hear it (a watcher that comes later starts from
                // `statuses`).
                if watched {
                    let mut status =
                        projection::build_status(target, &judgement.decision, &judgement.opinions, silence);
                    projection::set_flap(&mut status, target, flap, now, target.spec.damping(&damping).flap_window);
                    changes.announcements.push(status);
                }
            }
            let unknown_alerted = memory.unknown.contains_key(url.as_ref());
            let degraded_spell = memory.degraded.contains_key(url.as_ref());
            let due = judge::next_deadline(target, &judgement, now, unknown_after, unknown_alerted, degraded_spell)
                .min(planner::page_due(memory, target, &damping));
            deadlines.schedule(target, &url, due, now);
        }
        deadlines.compact(targets);
    }

    /// Plans the alerts raised into deliveries (targets DOWN for one shared cause grouped first),
    /// and takes alerting's memory changes.
    fn plan(&self, state: &mut State, changes: &mut Changes) {
        let alerting = self.alerting();
        let alerts = std::mem::take(&mut changes.alerts);
        let State { memory, targets, silences, .. } = state;
        let grouping = groups::Grouping { targets, silences, window: alerting.correlation_window, now: now_ms() };
        let mut alerts = groups::route(memory, &grouping, alerts, &mut changes.groups);
        alerts.append(&mut changes.released);
        let records = planner::plan(&mut state.memory, &alerting, &state.silences, alerts);
        changes.records.extend(records);
        changes.memory.extend(state.memory.take_changes());
    }

    /// Writes `changes` in one transaction, then wakes the dispatcher and tells watchers.
    async fn commit(&self, changes: Changes) -> Result<(), HubError> {
        let written = !changes.is_empty();
        let Changes { verdicts, records, memory, regions, groups, announcements, opinions, .. } = changes;
        if written {
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
            blocking(&self.store, move |s| {
                s.record_event_with_opinions(&regions, &verdicts, &groups, &records, &memory, &opinions)
            })
            .await?;
            if queued {
                self.alerts_queued.notify_one();
            }
        }
        for status in announcements {
            let _ = self.watchers.send(status);
        }
        Ok(())
    }

    /// Judges `urls` now and commits what changed (after results or a `CheckNow`).
    async fn judge_now(&self, urls: Option<Vec<Name>>) {
        let span = match &urls {
            Some(urls) => tracing::info_span!("verdict", targets = urls.len()),
            None => tracing::Span::none(),
        };
        async {
            let _deciding = self.deciding.lock().await;
            let mut changes = Changes::default();
            {
                let mut state = self.lock();
                self.judge(&mut state, urls, now_ms(), &mut changes);
                self.plan(&mut state, &mut changes);
            }
            if let Err(e) = self.commit(changes).await {
                tracing::error!(error = %e, "recording verdict changes and alerts failed");
            }
        }
        .instrument(span)
        .await
    }

    /// The clock's event (every second): targets whose deadline has come are judged (every target
    /// when the judging context changed for all), regions are watched and forgotten, heartbeats
    /// checked, and triggers held back by an ended silence released.
    pub async fn tick(&self) {
        let _deciding = self.deciding.lock().await;
        let now = now_ms();
        let in_grace = self.in_grace();
        let alerting = self.alerting();
        let everyone = {
            let mut state = self.lock();
            let silence_edge = state.silences.iter().any(|s| {
                let crossed = |t: i64| state.last_tick_ms < t && t <= now;
                crossed(s.start_ms) || crossed(s.end_ms)
            });
            let grace_ended = !in_grace && !state.grace_over;
            state.grace_over = !in_grace;
            state.last_tick_ms = now;
            let full = std::mem::take(&mut state.full_pass) || silence_edge || grace_ended;
            full.then(|| state.targets.keys().cloned().collect::<Vec<_>>())
        };
        // A full pass goes in slices, each committed on its own: what it holds in memory at once
        // (verdict records, alerts, announcements) stays bounded however many targets there are.
        for slice in everyone.as_deref().unwrap_or_default().chunks(FULL_PASS_SLICE) {
            let mut changes = Changes::default();
            {
                let mut state = self.lock();
                self.judge(&mut state, Some(slice.to_vec()), now, &mut changes);
                self.plan(&mut state, &mut changes);
            }
            if let Err(e) = self.commit(changes).await {
                tracing::error!(error = %e, "recording verdict changes and alerts failed");
            }
        }
        let mut changes = Changes::default();
        {
            let mut state = self.lock();
            if everyone.is_none() {
                let State { deadlines, targets, .. } = &mut *state;
                let due = deadlines.due(targets, now);
                self.judge(&mut state, Some(due), now, &mut changes);
            }
            if !in_grace {
                let State { memory, regions, agents, .. } = &mut *state;
                let (alerts, save, changed) =
                    region_alerts::forget_quiet(memory, regions, agents, now, self.region_forget_after());
                changes.alerts.extend(alerts);
                changes.regions.extend(save);
                if changed {
                    // Quorums change: every target is judged again at the next tick.
                    state.refresh_regions();
                    state.full_pass = true;
                }
                let State { memory, regions, agents, .. } = &mut *state;
                changes.alerts.extend(region_alerts::silence_alerts(
                    memory,
                    regions,
                    agents,
                    now,
                    alerting.region_silent_after,
                ));
            }
            // Also in the start-up grace: the counts are made of real results.
            changes.alerts.extend(state.apply_impairment(&self.impaired_policy(), now));
            let State { memory, silences, targets, .. } = &mut *state;
            changes.released.extend(groups::due(memory, now, &mut changes.groups));
            changes.alerts.extend(heartbeats::overdue_alerts(memory, &alerting.heartbeats, now));
            let still = |memory: &AlertMemory, alert: &Alert| still_raised(targets, memory, alert);
            changes.alerts.extend(planner::released_alerts(memory, silences, still, now));
            self.plan(&mut state, &mut changes);
        }
        if let Err(e) = self.commit(changes).await {
            tracing::error!(error = %e, "recording verdict changes and alerts failed");
        }
    }
}

/// Whether the problem a held-back trigger is about is still there.
fn still_raised(targets: &Targets, memory: &AlertMemory, alert: &Alert) -> bool {
    use crate::alert::AlertKind;
    match alert.kind {
        AlertKind::Down if alert.group.is_some() => {
            memory.groups.get(&alert.subject).is_some_and(|g| g.dedup.as_deref() == Some(alert.dedup_key.as_str()))
        }
        AlertKind::Down => targets.get(alert.subject.as_str()).is_some_and(|t| t.open_incident.is_some()),
        AlertKind::Degraded => memory.degraded.contains_key(&alert.subject),
        AlertKind::Unknown => memory.unknown.contains_key(&alert.subject),
        AlertKind::Flapping => memory.flaps.get(&alert.subject).is_some_and(|f| f.flapping.is_some()),
        AlertKind::CertWarning | AlertKind::CertCritical => {
            memory.certs.get(&alert.subject).is_some_and(|c| Some(&c.current) == alert.fingerprint.as_ref())
        }
        AlertKind::RegionSilent => memory.silent_regions.get(&alert.subject).is_some_and(|r| r.alerted),
        AlertKind::RegionImpaired => memory.impaired.contains_key(&alert.subject),
        AlertKind::HeartbeatOverdue => memory.heartbeats.get(&alert.subject).is_some_and(|h| h.alerted),
        _ => false,
    }
}
