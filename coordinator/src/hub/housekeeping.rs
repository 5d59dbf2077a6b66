//! Housekeeping: closed hours' latency is rolled up, then what outlives its retention goes
//! (results, events, settled alerts, ended silences, roll-ups, agents not seen for long), a
//! bounded step at a time so ingest never waits long.

use std::time::{Duration, Instant};

use super::{Hub, HubError, blocking};
use crate::clock::now_ms;
use crate::store::{self, Pruned, Pruning};

impl Hub {
    pub async fn prune(&self, retention: &Retention) -> Result<Pruned, HubError> {
        let started = Instant::now();
        let now = now_ms();
        let cutoff = |kept: Duration| now.saturating_sub(i64::try_from(kept.as_millis()).unwrap_or(i64::MAX));
        let forgotten = self.forget_agents(cutoff(retention.agents), now).await?;
        let (results, events) = (cutoff(retention.results), cutoff(retention.events));
        let mut pruning = Pruning::new(results, events, results);
        // Closed hours are rolled up before their raw results can go; an hour the cutoff falls
        // in has lost some of them already.
        let first_hour = crate::latency::hour_of(results.saturating_add(crate::latency::HOUR_MS - 1));
        pruning.latency = Some(store::LatencyPass::new(crate::latency::closed_before(now), first_hour));
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
        // A large prune gives the space it freed back to the file system (the store logs the
        // pause).
        let removed = pruning.done.results;
        blocking(&self.store, move |s| s.compact_after(removed)).await?;
        // Silences that ended before the cutoff went from the store with them.
        self.lock().silences.retain(|s| s.end_ms >= results);
        let done = pruning.done;
        if done.latency_hours > 0 {
            tracing::info!(
                target_hours = done.latency_hours,
                took_ms = started.elapsed().as_millis() as u64,
                "housekeeping: closed hours' latency rolled up"
            );
        }
        let removed = Pruned { latency_hours: 0, steps: 0, ..done };
        if removed != Pruned::default() || forgotten > 0 {
            tracing::info!(
                results = done.results,
                transitions = done.transitions,
                incidents = done.incidents,
                alerts = done.alerts,
                silences = done.silences,
                rollups = done.rollups,
                agents = forgotten,
                sealed = done.sealed,
                steps = done.steps,
                took_ms = started.elapsed().as_millis() as u64,
                "housekeeping: removed what outlived its retention"
            );
        }
        Ok(done)
    }

    async fn forget_agents(&self, before_ms: i64, now: i64) -> Result<usize, HubError> {
        let (seen, gone) = {
            let mut state = self.lock();
            let (mut seen, mut gone) = (Vec::new(), Vec::new());
            for agent in state.agents.agents.values_mut() {
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
            if state.agents.agents.get(name).is_some_and(|a| a.session.is_none()) {
                state.agents.agents.remove(name);
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
