//! What the API, the page and `/metrics` read (statuses, results, history, incidents, alerts),
//! and the operator's events that are not about agents: silences and heartbeats.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use vantage_proto::v1::{HistoryEntry, Incident, TargetStatus};

use super::judge::{self, Context};
use super::memory::AlertMemory;
use super::targets::{Name, Target};
use super::{Changes, Hub, HubError, blocking, heartbeats, projection};
use crate::alert::Damping;
use crate::alert::{AlertRecord, Silence};
use crate::clock::{self, now_ms};

/// A target's status, decided now (`damping`: the `[alerts]` defaults, for its flap rate).
fn status_now(
    target: &Target,
    ctx: &Context<'_>,
    silences: &[Silence],
    memory: &AlertMemory,
    damping: &Damping,
) -> TargetStatus {
    let (decision, opinions) = judge::decide(target, ctx);
    let silence = projection::silence_of(target, silences, ctx.now);
    let mut status = projection::build_status(target, &decision, &opinions, silence);
    let window = target.spec.damping(damping).flap_window;
    projection::set_flap(&mut status, target, memory.flaps.get(target.url().as_ref()), ctx.now, window);
    status
}

impl Hub {
    /// The consolidated status of every target (or those in `urls`).
    pub fn statuses(&self, urls: &[String]) -> Vec<TargetStatus> {
        let state = self.lock();
        let now = now_ms();
        let ctx = Context {
            default_regions: &state.default_regions,
            connected: &state.connected,
            in_grace: self.in_grace(),
            impaired: &state.impaired,
            hold_degraded: false,
            now,
        };
        let damping = self.alerting().damping;
        let status = |target: &Target| status_now(target, &ctx, &state.silences, &state.memory, &damping);
        if urls.is_empty() {
            state.targets.values().map(status).collect()
        } else {
            let wanted: HashSet<&str> = urls.iter().map(String::as_str).collect();
            let mut wanted: Vec<&str> = wanted.into_iter().collect();
            wanted.sort_unstable();
            wanted.into_iter().filter_map(|url| state.targets.get(url)).map(status).collect()
        }
    }

    /// The statuses of at most `limit` targets whose URL comes after `after` (from the first
    /// without it), in URL order: every target's status a slice at a time, each slice under the
    /// lock on its own.
    pub fn statuses_after(&self, after: Option<&str>, limit: usize) -> Vec<TargetStatus> {
        use std::ops::Bound;
        let state = self.lock();
        let ctx = Context {
            default_regions: &state.default_regions,
            connected: &state.connected,
            in_grace: self.in_grace(),
            impaired: &state.impaired,
            hold_degraded: false,
            now: now_ms(),
        };
        let from = after.map_or(Bound::Unbounded, Bound::Excluded);
        let damping = self.alerting().damping;
        state
            .targets
            .range::<str, _>((from, Bound::Unbounded))
            .take(limit)
            .map(|(_, target)| status_now(target, &ctx, &state.silences, &state.memory, &damping))
            .collect()
    }

    /// How many targets there are.
    pub fn target_count(&self) -> usize {
        self.lock().targets.len()
    }

    /// Every target's verdict as its status says it (decided now) and whether a silence holds
    /// it, in URL order: what `/metrics` shows of each target, without building 100,000 statuses
    /// (a tenth of a gigabyte) to read three fields.
    pub fn verdicts(&self) -> Vec<(Name, vantage_proto::v1::Verdict, bool)> {
        let state = self.lock();
        let now = now_ms();
        let ctx = Context {
            default_regions: &state.default_regions,
            connected: &state.connected,
            in_grace: self.in_grace(),
            impaired: &state.impaired,
            hold_degraded: false,
            now,
        };
        state
            .targets
            .iter()
            .map(|(url, target)| {
                let (decision, _) = judge::decide(target, &ctx);
                let silenced = projection::silence_of(target, &state.silences, now).is_some();
                (url.clone(), projection::proto_verdict(decision.verdict), silenced)
            })
            .collect()
    }

    /// The targets that flap now (flap damping holds their `down` and `recovered` back), in URL
    /// order: `/metrics`' `vantage_target_flapping`.
    pub fn flapping(&self) -> Vec<Name> {
        let state = self.lock();
        let mut urls: Vec<Name> = state
            .memory
            .flaps
            .iter()
            .filter(|(_, f)| f.flapping.is_some())
            .filter_map(|(url, _)| state.targets.get_key_value(url.as_str()).map(|(k, _)| k.clone()))
            .collect();
        urls.sort_unstable();
        urls
    }

    /// One page of the consolidated status (the status page's table): the statuses of targets
    /// `offset..offset + limit` with problems first (down, degraded, unknown, then up, as last
    /// decided; by URL within each), how many targets there are, and how many hold each verdict.
    pub fn status_page(
        &self,
        offset: usize,
        limit: usize,
    ) -> (Vec<TargetStatus>, usize, BTreeMap<&'static str, usize>) {
        let mut counts = BTreeMap::new();
        // Ranked under the lock (cheap), sorted outside it: ingest needs it.
        let mut order: Vec<(u8, Name)> = {
            let state = self.lock();
            let mut order = Vec::with_capacity(state.targets.len());
            for (url, target) in &state.targets {
                let (rank, verdict) = match target.verdict.as_ref().map(|v| v.verdict.as_str()) {
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
        let urls: Vec<String> = order.iter().skip(offset).take(limit).map(|(_, url)| url.to_string()).collect();
        // `statuses` answers in URL order; the page keeps the ranking.
        let mut statuses: BTreeMap<String, TargetStatus> =
            self.statuses(&urls).into_iter().map(|s| (s.url.clone(), s)).collect();
        let page = urls.iter().filter_map(|url| statuses.remove(url)).collect();
        (page, total, counts)
    }

    /// The newest result of `url` from each of its judging regions that has one (from the store:
    /// the hub keeps only what verdicts need).
    pub fn latest_of(&self, url: &str) -> Vec<HistoryEntry> {
        let regions: Vec<Name> = {
            let state = self.lock();
            let Some(target) = state.targets.get(url) else { return Vec::new() };
            let mut regions = Vec::new();
            super::agents::for_each_region(&target.spec, &state.default_regions, |r| regions.push(Name::from(r)));
            regions
        };
        let rows = match self.store.latest_of(url) {
            Ok(rows) => rows,
            Err(e) => {
                tracing::error!(error = %e, "reading a target's newest results failed");
                return Vec::new();
            }
        };
        let mut entries: Vec<HistoryEntry> =
            rows.into_iter().map(|r| r.entry).filter(|e| regions.iter().any(|r| **r == *e.region)).collect();
        entries.sort_by_key(|e| regions.iter().position(|r| **r == *e.region));
        entries
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

    // ---- alerts ----

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
                since: Some(clock::timestamp(f.since_ms)),
                error: f.error,
                alerted: f.alerted,
            })
            .collect()
    }

    /// The configured alert channels' names.
    pub fn alert_channels(&self) -> Vec<String> {
        self.alerting().channels.iter().map(|c| c.name.clone()).collect()
    }

    /// Writes back delivery attempts: (alert id, the delivery as it is now).
    pub async fn record_deliveries(&self, deliveries: Vec<(String, crate::alert::Delivery)>) -> Result<(), HubError> {
        blocking(&self.store, move |s| s.record_deliveries(&deliveries)).await
    }

    /// Queues alerts planned outside the hub (the dispatcher's `channel_failing`) with their
    /// memory changes, in one transaction, and wakes the dispatcher.
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

    // ---- silences ----

    pub fn silences(&self) -> Vec<Silence> {
        self.lock().silences.clone()
    }

    /// Adds a silence (checked by `spec::silence`).
    pub async fn create_silence(&self, silence: Silence) -> Result<Silence, HubError> {
        let stored = silence.clone();
        blocking(&self.store, move |s| s.put_silence(&stored)).await?;
        {
            let mut state = self.lock();
            state.silences.push(silence.clone());
            state.full_pass = true;
        }
        tracing::info!(id = silence.id, target = silence.target, labels = ?silence.labels, until = silence.end_ms, "silence created");
        self.tick().await;
        Ok(silence)
    }

    pub async fn delete_silence(&self, id: &str) -> Result<bool, HubError> {
        let key = id.to_owned();
        let deleted = blocking(&self.store, move |s| s.delete_silence(&key)).await?;
        {
            let mut state = self.lock();
            state.silences.retain(|s| s.id != id);
            state.full_pass |= deleted;
        }
        if deleted {
            self.tick().await;
        }
        Ok(deleted)
    }

    // ---- heartbeats ----

    /// Accepts a heartbeat (see `heartbeats::verify`: signed, within 5 minutes of now, newer than
    /// the last accepted one). Returns when the next one is due (ms).
    pub async fn heartbeat(
        &self,
        name: &str,
        timestamp: &str,
        signature: &str,
        body: &[u8],
    ) -> Result<i64, heartbeats::HeartbeatError> {
        let alerting = self.alerting();
        let config = alerting.heartbeats.iter().find(|h| h.name == name);
        let config = config.ok_or_else(|| heartbeats::HeartbeatError::Unknown(name.to_owned()))?;
        let signed = heartbeats::verify(config, timestamp, signature, body)?;
        let _deciding = self.deciding.lock().await;
        let now = now_ms();
        let mut changes = Changes::default();
        {
            let mut state = self.lock();
            changes.alerts = heartbeats::accept(&mut state.memory, config, signed, body, now)?;
            self.plan(&mut state, &mut changes);
        }
        self.commit(changes).await.map_err(|e| heartbeats::HeartbeatError::Store(e.to_string()))?;
        let next_due = now + config.period.as_millis() as i64;
        tracing::info!(heartbeat = name, next_due = clock::rfc3339(next_due), "heartbeat accepted");
        Ok(next_due)
    }

    /// Every configured heartbeat: (name, period, last accepted ms or 0, overdue).
    pub fn heartbeats(&self) -> Vec<(String, Duration, i64, bool)> {
        let alerting = self.alerting();
        let state = self.lock();
        alerting
            .heartbeats
            .iter()
            .map(|h| {
                let memory = state.memory.heartbeats.get(&h.name);
                let last = memory.filter(|m| m.last_timestamp != 0).map_or(0, |m| m.last_ms);
                (h.name.clone(), h.period, last, memory.is_some_and(|m| m.alerted))
            })
            .collect()
    }
}
