//! Targets' events: a target upserted (from the API or a config) or removed (deleted, or gone
//! from the config), with the assignment changes and resolves they cause. A target another
//! shard owns (`[shard]`) is refused, naming that shard.

use vantage_proto::v1::{TargetSpec, TargetStatus};

use super::planner::{self, Removal};
use super::targets::{Name, Spec, Target};
use super::{Changes, Hub, HubError, State, blocking};
use crate::alert::AlertRecord;
use crate::clock::now_ms;
use crate::spec;

impl Hub {
    pub async fn upsert_target(&self, spec: TargetSpec) -> Result<(TargetSpec, bool), HubError> {
        let spec = spec::normalize(spec)?;
        let shard = self.shard();
        if !shard.owns(&spec.url) {
            return Err(HubError::Conflict(shard.refusal(&spec.url)));
        }
        {
            let state = self.lock();
            if !state.targets.contains_key(spec.url.as_str()) && state.targets.len() >= self.options.max_targets {
                return Err(HubError::Full(format!(
                    "the coordinator holds {} targets, its limit (--max-targets)",
                    state.targets.len()
                )));
            }
        }
        let stored = spec.clone();
        let created = blocking(&self.store, move |s| s.upsert_target(&stored)).await?;
        let url = Name::from(spec.url.as_str());
        {
            let mut state = self.lock();
            match state.targets.get_mut(&url) {
                Some(target) => target.spec = Spec::new(spec.clone()),
                None => {
                    state.targets.insert(url.clone(), Target::new(spec.clone()));
                }
            }
            let State { agents, targets, default_regions, .. } = &mut *state;
            agents.reassign_some(targets, default_regions, std::slice::from_ref(&url), now_ms());
        }
        self.judge_now(Some(vec![url])).await;
        Ok((spec, created))
    }

    pub async fn delete_target(&self, url: &str) -> Result<bool, HubError> {
        let url = vantage_shared::TargetUrl::parse(url).map(|u| u.to_string()).unwrap_or_else(|_| url.to_owned());
        self.remove_target(&url, Removal::Api).await
    }

    /// Removes a target and resolves what it raised (its open incident, degraded and unknown
    /// alerts) on every channel that heard the trigger, in the same transaction; its incident is
    /// closed as removed. A target added again later starts afresh (new incident, new dedup keys).
    pub(super) async fn remove_target(&self, url: &str, why: Removal) -> Result<bool, HubError> {
        // Not while verdicts are being decided: none may be recorded for it after this.
        let _deciding = self.deciding.lock().await;
        let now = now_ms();
        let (records, memory) = {
            let mut state = self.lock();
            let mut changes = Changes::default();
            if let Some(target) = state.targets.get(url).cloned() {
                changes.alerts = planner::removal_alerts(&mut state.memory, &target, why, now);
            }
            self.plan(&mut state, &mut changes);
            (changes.records, changes.memory)
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
        {
            let mut state = self.lock();
            let name = Name::from(url);
            if let Some(target) = state.targets.remove(url) {
                super::judge::uncount(&mut state.tallies, &target);
            }
            let State { agents, targets, default_regions, .. } = &mut *state;
            agents.reassign_some(targets, default_regions, std::slice::from_ref(&name), now);
        }
        // Watchers drop it (none listening is no error).
        let _ = self.watchers.send(TargetStatus { url: url.to_owned(), removed: true, ..TargetStatus::default() });
        Ok(existed)
    }

    pub fn targets(&self) -> Vec<TargetSpec> {
        self.lock().targets.values().map(|t| t.spec.to_proto()).collect()
    }
}
