//! Agents' events: a session starting or ending, a certificate revoked, a batch of results
//! ingested (and which results an agent may report at all), a region forgotten.

use std::collections::{BTreeSet, HashMap};

use tracing::Instrument;
use vantage_proto::v1::{AgentInfo, HistoryEntry};
use vantage_shared::limits::MAX_BATCH_RESULTS;

use super::agents::{Agent, AgentTx, Session, release_grace};
use super::targets::Latest;
use super::{AgentCert, Changes, Hub, HubError, blocking, region_alerts};
use crate::clock::{self, now_ms};
use crate::refusal::{Reason, Refusal};
use crate::spec;
use crate::store::{self, AgentRecord, BatchOutcome, StoredResult};

/// An agent clock further than this from the coordinator's is warned about at its hello.
const MAX_CLOCK_OFFSET_MS: u64 = 5_000;

impl Hub {
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
        if let Some(taken) = self.lock().agents.name_taken(name, region) {
            return Err(HubError::Forbidden(taken));
        }
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
        let (session, closed, region_record, returned) = {
            let mut state = self.lock();
            // Revoked while its record was being written: still refused.
            if !cert.sha256.is_empty() && state.agents.revoked.contains(&cert.sha256) {
                return Err(HubError::Forbidden(format!("the certificate of agent {name} ({region}) is revoked")));
            }
            if let Some(taken) = state.agents.name_taken(name, region) {
                return Err(HubError::Forbidden(taken));
            }
            let now = now_ms();
            // Admitted: the region is (back) in the default set from now (a refused agent, a
            // revoked one say, brings no forgotten region back).
            let (region_record, returned) = state.regions.seen(region, now);
            state.agents.next_session += 1;
            let id = state.agents.next_session;
            let (close, closed) = tokio::sync::oneshot::channel();
            let session = Session {
                id,
                tx,
                _close: close,
                since_ms: now,
                assigned: Default::default(),
                sent_full: false,
                last_sequence,
                clock_offset_ms,
                cert_sha256: cert.sha256,
                last_accepted_ms: now,
                refusing: false,
                patience_ms: i64::MAX,
            };
            let mut agent = Agent { record, session: Some(session), released: HashMap::new() };
            if let Some(mut old) = state.agents.agents.remove(name) {
                if old.session.is_some() {
                    tracing::warn!(agent = name, "agent reconnected; its previous stream is closed");
                }
                // Its outbox may hold results for what the old session was assigned.
                old.end_session(now);
                agent.released = old.released;
            }
            state.agents.agents.insert(name.into(), agent);
            state.refresh_regions();
            state.reassign_all(now);
            state.full_pass = true;
            (id, closed, region_record, returned)
        };
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
        self.tick().await;
        Ok((session, closed))
    }

    pub fn is_revoked(&self, sha256: &str) -> bool {
        !sha256.is_empty() && self.lock().agents.revoked.contains(sha256)
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
            let seen = state.agents.agents.values().find(|a| a.record.cert_sha256 == sha256);
            seen.map(|a| format!("agent {} ({})", a.record.name, a.record.region)).unwrap_or_default()
        });
        let revocation = store::Revocation { identity: identity.clone(), revoked_at_ms: now_ms() };
        let key = sha256.clone();
        let created = blocking(&self.store, move |s| s.revoke(&key, &revocation)).await?;
        let closed = {
            let mut state = self.lock();
            state.agents.revoked.insert(sha256.clone());
            let mut closed = 0;
            let now = now_ms();
            for agent in state.agents.agents.values_mut() {
                if agent.session.as_ref().is_some_and(|s| s.cert_sha256 == sha256) {
                    // Dropping the session ends its stream (and nothing it sends later counts).
                    agent.session = None;
                    closed += 1;
                }
            }
            if closed > 0 {
                state.refresh_regions();
                state.reassign_all(now);
                state.full_pass = true;
            }
            closed
        };
        tracing::warn!(cert_sha256 = sha256, identity, closed_sessions = closed, "agent certificate revoked");
        if closed > 0 {
            self.tick().await;
        }
        Ok((!created, identity, closed))
    }

    /// Ends every agent stream (at shutdown).
    pub fn close_sessions(&self) {
        for agent in self.lock().agents.agents.values_mut() {
            agent.session = None;
        }
    }

    /// Forgets an agent's stream (if `session` is still the current one).
    pub async fn disconnect_agent(&self, name: &str, session: u64) {
        let gone = {
            let mut state = self.lock();
            let now = now_ms();
            let current =
                state.agents.agents.get_mut(name).filter(|a| a.session.as_ref().is_some_and(|s| s.id == session));
            match current {
                Some(agent) => {
                    agent.end_session(now);
                    agent.record.last_seen_ms = now;
                    let region = agent.record.region.clone();
                    state.refresh_regions();
                    state.reassign_all(now);
                    state.full_pass = true;
                    // The region's time without agents (towards `region_forget_after`) runs from
                    // its last agent's leaving.
                    Some(state.regions.seen(&region, now).0)
                }
                None => None,
            }
        };
        if let Some(region) = gone {
            tracing::info!(agent = name, "agent disconnected");
            if let Err(e) = blocking(&self.store, move |s| s.put_regions(&[region])).await {
                tracing::error!(error = %e, "recording the region's last agent failed");
            }
            self.tick().await;
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
        let arrived = now_ms();
        let rows: Vec<StoredResult> = {
            let state = self.lock();
            results
                .into_iter()
                .filter(|(url, _)| {
                    state
                        .targets
                        .get(url.as_str())
                        .is_some_and(|t| t.spec.regions.is_empty() || t.spec.regions.iter().any(|r| **r == *region))
                })
                .map(|(url, mut entry)| {
                    // The region is the session's, whatever the result claims.
                    entry.region = region.to_owned();
                    entry.agent = agent.to_owned();
                    // A probe cannot have run after it arrived: an agent clock running ahead must
                    // not make its results look newer than later ones.
                    if clock::entry_ms(&entry) > arrived {
                        if let Some(result) = entry.result.as_mut() {
                            result.checked_at = Some(clock::timestamp(arrived));
                        }
                    }
                    StoredResult { at_ms: clock::entry_ms(&entry), url, entry }
                })
                .collect()
        };
        let agent_name = agent.to_owned();
        let (outcome, rows) = blocking(&self.store, move |s| Ok((s.record_batch(&agent_name, sequence, &rows)?, rows)))
            .instrument(tracing::info_span!("commit"))
            .await?;
        if outcome == BatchOutcome::Duplicate {
            super::Counters::add(&self.counters.duplicate_batches, 1);
            return Ok(outcome);
        }
        super::Counters::add(&self.counters.batches, 1);
        super::Counters::add(&self.counters.results, rows.len() as u64);
        for row in &rows {
            if let Some(failure) = row.entry.result.as_ref().and_then(|r| r.failure.as_ref()) {
                self.counters.count_failure(&failure.code);
            }
        }
        let mut touched = BTreeSet::new();
        {
            let mut state = self.lock();
            if let Some(a) = state.agents.agents.get_mut(agent) {
                a.record.last_seen_ms = now_ms();
            }
            let (agent, region) = (state.intern(agent), state.intern(region));
            for row in rows {
                // Only an answer about the URL the CheckNow asked for: an agent cannot hand one
                // target's result to another's caller by borrowing its run-now id.
                if !row.entry.run_now_id.is_empty() {
                    if let Some(waiter) = state.run_now.get(&row.entry.run_now_id).filter(|w| w.url == row.url) {
                        let _ = waiter.tx.send(row.entry.clone());
                    }
                }
                let Some(url) = state.targets.get_key_value(row.url.as_str()).map(|(url, _)| url.clone()) else {
                    continue;
                };
                let latest = Latest::of(&row.entry, agent.clone());
                let Some(target) = state.targets.get_mut(&url) else { continue };
                if target.observe(region.clone(), latest) {
                    target.note_address(&row.entry);
                    touched.insert(url);
                }
            }
        }
        if !touched.is_empty() {
            self.judge_now(Some(touched.into_iter().collect())).await;
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
        let agent_state = state.agents.agents.get(agent);
        let session = agent_state.and_then(|a| a.session.as_ref());
        results
            .into_iter()
            .map(|(url, run_now_id)| {
                let Some(target) = state.targets.get(url) else {
                    return Some(Refusal::new(
                        Reason::UnknownTarget,
                        format!("target_url: no target {url} (never configured, or deleted)"),
                    ));
                };
                let assigned = session.is_some_and(|s| s.assigned.contains(url));
                let lately = agent_state
                    .and_then(|a| a.released.get(url))
                    .is_some_and(|at| now - at <= release_grace(&target.spec).as_millis() as i64);
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
        let Some(session) = state.agents.agents.get_mut(agent).and_then(|a| a.session.as_mut()) else { return };
        if accepted > 0 {
            (session.last_accepted_ms, session.refusing) = (now_ms(), false);
        } else if refused > 0 {
            session.refusing = true;
        }
    }

    pub fn agents(&self) -> Vec<AgentInfo> {
        let state = self.lock();
        state
            .agents
            .agents
            .values()
            .map(|a| AgentInfo {
                name: a.record.name.clone(),
                region: a.record.region.clone(),
                version: a.record.version.clone(),
                connected: a.session.is_some(),
                connected_since: a.session.as_ref().map(|s| clock::timestamp(s.since_ms)),
                last_seen: Some(clock::timestamp(a.record.last_seen_ms)),
                assigned_targets: a.session.as_ref().map_or(0, |s| s.assigned.len() as u32),
                cert_sha256: a.record.cert_sha256.clone(),
                cert_not_after: Some(a.record.cert_not_after_ms).filter(|ms| *ms != 0).map(clock::timestamp),
                clock_offset_ms: a.session.as_ref().map_or(0, |s| s.clock_offset_ms),
            })
            .collect()
    }

    /// Every region the coordinator knows, in the default set or forgotten.
    pub fn regions(&self) -> Vec<vantage_proto::v1::RegionInfo> {
        let state = self.lock();
        let now = now_ms();
        let policy = self.impaired_policy();
        state
            .regions
            .records()
            .map(|r| {
                let connected = state.agents.connected_in(&r.name).len();
                let impaired = state.memory.impaired.get(&r.name);
                let tally = state.tallies.get(r.name.as_str()).copied().unwrap_or_default();
                vantage_proto::v1::RegionInfo {
                    region: r.name.clone(),
                    connected_agents: connected as u32,
                    last_seen: Some(clock::timestamp(if connected > 0 { now } else { r.last_seen_ms })),
                    forget_at: state
                        .regions
                        .forget_at(&r.name, connected > 0, self.region_forget_after())
                        .map(clock::timestamp),
                    forgotten: r.forgotten_ms.is_some(),
                    forgotten_at: r.forgotten_ms.map(clock::timestamp),
                    agents: state.agents.agents.values().filter(|a| a.record.region == r.name).count() as u32,
                    impaired: impaired.is_some(),
                    impaired_since: impaired.map(|m| clock::timestamp(m.since_ms)),
                    impaired_reason: crate::impairment::reason(&policy, tally, impaired.is_some()),
                    targets_judged: tally.judged,
                    targets_failing_alone: tally.alone,
                }
            })
            .collect()
    }

    /// The regions in the default region set now.
    pub fn region_set(&self) -> BTreeSet<String> {
        self.lock().regions.current()
    }

    /// Takes `region` out of the default region set until an agent connects from it again
    /// (`ForgetRegion`); `by` names the caller. False when it was not in the set.
    pub async fn forget_region(&self, region: &str, by: &str) -> Result<bool, HubError> {
        spec::check_name("region", region)?;
        let deciding = self.deciding.lock().await;
        let now = now_ms();
        let mut changes = Changes::default();
        {
            let mut state = self.lock();
            let connected = state.agents.connected_in(region).len();
            let forgotten =
                state.regions.forget(region, connected, now).map_err(|e| HubError::Conflict(e.to_string()))?;
            let Some(record) = forgotten else { return Ok(false) };
            let quiet = now.saturating_sub(record.last_seen_ms);
            let state = &mut *state;
            let mut alert =
                region_alerts::forgotten(&mut state.memory, &state.regions, region, record.last_seen_ms, now);
            alert.detail =
                format!("forgotten by {by} (ForgetRegion) after {} without an agent", clock::human_duration(quiet));
            changes.alerts.push(alert);
            changes.regions.push(record);
            state.refresh_regions();
            state.full_pass = true;
            self.plan(state, &mut changes);
        }
        tracing::warn!(
            region,
            by,
            "region forgotten: it leaves the default region set until an agent connects from it"
        );
        self.commit(changes).await?;
        drop(deciding);
        // Quorums change now, not at the next tick.
        self.tick().await;
        Ok(true)
    }
}
