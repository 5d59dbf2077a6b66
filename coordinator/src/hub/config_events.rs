//! The config applied while running (a reload, or a change in the target files): targets through
//! the same paths as the API's (upserted, assigned, judged; removed with their resolves), and the
//! alerting settings swapped whole. Only targets the config brought (`source` "config" or
//! "file:…") are ever removed here; targets added through the API are left alone, unless the
//! `[shard]` no longer owns them.

use std::collections::{BTreeSet, HashSet};
use std::sync::Arc;
use std::time::Duration;

use vantage_proto::v1::TargetSpec;

use super::planner::Removal;
use super::targets::{Name, Spec, Target};
use super::{Changes, Hub, HubError, HubOptions, State, blocking};
use crate::alert::{Alert, AlertCause, AlertKind, Alerting, Silence};
use crate::clock::now_ms;
use crate::shard::Shard;

/// What a reload may change besides targets, read per use.
#[derive(Debug, Clone)]
pub struct Live {
    pub alerting: Arc<Alerting>,
    /// `[quorum] region_forget_after`.
    pub region_forget_after: Duration,
    /// `[quorum] impaired_share`, `impaired_min_targets`.
    pub impaired: crate::impairment::Policy,
}

impl Live {
    pub(super) fn of(options: &HubOptions) -> Live {
        Live {
            alerting: options.alerting.clone(),
            region_forget_after: options.region_forget_after,
            impaired: options.impaired,
        }
    }
}

/// How many targets a config change added, changed, removed and left as they were.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Applied {
    pub added: usize,
    pub changed: usize,
    pub removed: usize,
    pub unchanged: usize,
}

/// Whether a target came from the config (its file or a target file), which a reload owns.
pub fn from_config(source: &str) -> bool {
    source == "config" || source.starts_with("file:")
}

impl Hub {
    /// Channels, routes, heartbeats and the `[alerts]` settings now.
    pub fn alerting(&self) -> Arc<Alerting> {
        self.live.read().unwrap_or_else(|p| p.into_inner()).alerting.clone()
    }

    /// The share of a split this coordinator holds (`[shard]`; the whole without one).
    pub fn shard(&self) -> Shard {
        *self.shard.read().unwrap_or_else(|p| p.into_inner())
    }

    pub(super) fn region_forget_after(&self) -> Duration {
        self.live.read().unwrap_or_else(|p| p.into_inner()).region_forget_after
    }

    /// `[quorum]`'s rule for impaired regions now.
    pub fn impaired_policy(&self) -> crate::impairment::Policy {
        self.live.read().unwrap_or_else(|p| p.into_inner()).impaired
    }

    /// Makes the config's targets the hub's: `targets` (normalized, each URL once) are upserted
    /// where new or changed (in one transaction) and assigned; targets from the config that are
    /// not in `targets` are removed as at start-up, resolving what they raised, unless `kept`
    /// says their source stays as it is (a target file that could not be read this time).
    /// `shard` becomes the coordinator's: only the targets it owns are kept, and every target it
    /// does not own is removed, whatever its source (a coordinator holds its share, no more).
    /// Refused, with nothing changed, when the result would hold more than `--max-targets`.
    pub async fn apply_config_targets(
        &self,
        mut targets: Vec<TargetSpec>,
        shard: Shard,
        kept: impl Fn(&str) -> bool,
    ) -> Result<Applied, HubError> {
        targets.retain(|t| shard.owns(&t.url));
        let (upserts, removals, mut applied) = {
            let state = self.lock();
            let wanted: HashSet<&str> = targets.iter().map(|t| t.url.as_str()).collect();
            let mut applied = Applied::default();
            let mut upserts = Vec::new();
            for spec in &targets {
                match state.targets.get(spec.url.as_str()) {
                    Some(t) if t.spec.describes(spec) => applied.unchanged += 1,
                    Some(_) => {
                        applied.changed += 1;
                        upserts.push(spec.clone());
                    }
                    None => {
                        applied.added += 1;
                        upserts.push(spec.clone());
                    }
                }
            }
            let removals: Vec<String> = state
                .targets
                .values()
                // The URL first: a target's source is decoded only for the few not wanted.
                .filter(|t| !wanted.contains(&*t.spec.url))
                .filter(|t| {
                    let source = t.spec.source();
                    let stale = from_config(&source) && !kept(&source);
                    let elsewhere = !shard.owns(&t.spec.url);
                    if elsewhere && !from_config(&source) {
                        // Nothing brings it back here: the operator has to add it to its owner.
                        tracing::warn!(
                            target = &*t.spec.url,
                            "target added through the API is removed: it belongs to {}",
                            shard.owner_of(&t.spec.url)
                        );
                    }
                    stale || elsewhere
                })
                .map(|t| t.spec.url.to_string())
                .collect();
            let after = state.targets.len() + applied.added - removals.len();
            if after > self.options.max_targets {
                return Err(HubError::Full(format!(
                    "the config would bring the coordinator to {after} targets, more than its limit of {} \
                     (--max-targets)",
                    self.options.max_targets
                )));
            }
            (upserts, removals, applied)
        };
        let before = std::mem::replace(&mut *self.shard.write().unwrap_or_else(|p| p.into_inner()), shard);
        if before != shard {
            let leaving = removals.iter().filter(|url| !shard.owns(url)).count();
            tracing::info!("this coordinator is now {shard} (was {before}): {leaving} targets outside it are removed");
        }
        if !upserts.is_empty() {
            let stored = upserts.clone();
            blocking(&self.store, move |s| s.upsert_targets(&stored)).await?;
            let urls: Vec<Name> = upserts.iter().map(|s| Name::from(s.url.as_str())).collect();
            {
                let mut state = self.lock();
                for (spec, url) in upserts.into_iter().zip(&urls) {
                    match state.targets.get_mut(url) {
                        Some(target) => target.spec = Spec::new(spec),
                        None => {
                            state.targets.insert(url.clone(), Target::new(spec));
                        }
                    }
                }
                let State { agents, targets, default_regions, .. } = &mut *state;
                agents.reassign_some(targets, default_regions, &urls, now_ms());
            }
            self.judge_now(Some(urls)).await;
        }
        for url in removals {
            let why = if shard.owns(&url) { Removal::Config } else { Removal::Shard };
            if self.remove_target(&url, why).await? {
                applied.removed += 1;
            }
        }
        Ok(applied)
    }

    /// Swaps in the config's alerting settings and `[quorum]` settings, and makes its silences
    /// the config's (those from the API stay). Failing channels no longer configured are
    /// forgotten; alerts still queued for such a channel fail at their next attempt ("no such
    /// channel in the configuration"), they are not retried. A heartbeat removed while overdue
    /// is resolved (`heartbeat_recovered`, cause `removed`), so no pager incident stays open.
    pub async fn apply_config_settings(
        &self,
        alerting: Alerting,
        silences: Vec<Silence>,
        region_forget_after: Duration,
        impaired: crate::impairment::Policy,
    ) -> Result<(), HubError> {
        let names: BTreeSet<String> = alerting.channels.iter().map(|c| c.name.clone()).collect();
        let stored = silences.clone();
        blocking(&self.store, move |s| s.replace_config_silences(&stored)).await?;
        let kept: BTreeSet<String> = alerting.heartbeats.iter().map(|h| h.name.clone()).collect();
        let before = std::mem::replace(
            &mut *self.live.write().unwrap_or_else(|p| p.into_inner()),
            Arc::new(Live { alerting: Arc::new(alerting), region_forget_after, impaired }),
        );
        let removed: Vec<_> = before.alerting.heartbeats.iter().filter(|h| !kept.contains(&h.name)).cloned().collect();
        if !removed.is_empty() {
            let _deciding = self.deciding.lock().await;
            let now = now_ms();
            let mut changes = Changes::default();
            {
                let mut state = self.lock();
                for heartbeat in removed {
                    let Some(mut memory) = state.memory.heartbeats.get(&heartbeat.name).cloned() else { continue };
                    if !memory.alerted {
                        continue;
                    }
                    let mut alert = Alert::new(
                        AlertKind::HeartbeatRecovered,
                        &heartbeat.name,
                        now,
                        format!("vantage/heartbeat/{}", heartbeat.name),
                    );
                    alert.labels = heartbeat.labels.clone();
                    let due = memory.last_ms + heartbeat.period.as_millis() as i64;
                    (alert.since_ms, alert.duration_ms) = (due, Some(now - due));
                    alert.cause = Some(AlertCause {
                        code: "removed".into(),
                        message: format!(
                            "Heartbeat {} is no longer in the config file: its overdue alert ends here.",
                            heartbeat.name
                        ),
                        hint: "Nothing to do, unless it was removed by mistake: add it again.".into(),
                    });
                    alert.detail = "removed".into();
                    memory.alerted = false;
                    state.memory.set_heartbeat(&heartbeat.name, memory);
                    changes.alerts.push(alert);
                }
                self.plan(&mut state, &mut changes);
            }
            self.commit(changes).await?;
        }
        let gone: Vec<String> = self.channel_health.with(|m| {
            let gone = m.keys().filter(|k| !names.contains(*k)).cloned().collect();
            m.retain(|k, _| names.contains(k));
            gone
        });
        if !gone.is_empty() {
            let memory = gone.iter().map(|c| (format!("channel:{c}"), None)).collect();
            self.queue_alerts(Vec::new(), memory).await?;
        }
        {
            let mut state = self.lock();
            state.silences.retain(|s| s.source != "config");
            state.silences.extend(silences);
            // Silences, routes and `unknown_after` may have changed for every target.
            state.full_pass = true;
        }
        // The dispatcher picks up the new channels at once.
        self.alerts_queued.notify_one();
        self.tick().await;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;

    fn spec(url: &str, source: &str) -> TargetSpec {
        crate::spec::normalize(TargetSpec { url: url.into(), source: source.into(), ..Default::default() }).unwrap()
    }

    fn urls(hub: &Hub) -> Vec<(String, String)> {
        let mut all: Vec<(String, String)> = hub.targets().into_iter().map(|t| (t.url, t.source)).collect();
        all.sort();
        all
    }

    #[tokio::test]
    async fn a_reload_adds_changes_and_removes_the_config_s_targets_and_leaves_the_api_s_alone() {
        let dir = std::env::temp_dir().join(format!("vantage-config-events-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let store = Arc::new(Store::open(&dir).unwrap());
        let options = HubOptions { max_targets: 4, ..HubOptions::default() };
        let hub = Hub::open(store, vec![spec("https://a.test/", "config")], options).await.unwrap();
        hub.upsert_target(spec("https://api.test/", "api")).await.unwrap();
        let file = "file:/t/web.json";
        let wanted = vec![spec("https://a.test/", "config"), spec("https://b.test/", file)];
        let applied = hub.apply_config_targets(wanted.clone(), Shard::WHOLE, |_| false).await.unwrap();
        assert_eq!(applied, Applied { added: 1, changed: 0, removed: 0, unchanged: 1 });
        let again = hub.apply_config_targets(wanted, Shard::WHOLE, |_| false).await.unwrap();
        assert_eq!(again, Applied { unchanged: 2, ..Applied::default() }, "nothing is written again");

        let mut slower = spec("https://b.test/", file);
        slower.interval = Some(crate::spec::from_duration(Duration::from_secs(120)));
        let applied = hub.apply_config_targets(vec![slower], Shard::WHOLE, |_| false).await.unwrap();
        assert_eq!(applied, Applied { changed: 1, removed: 1, ..Applied::default() });
        assert_eq!(
            urls(&hub),
            [("https://api.test/".into(), "api".into()), ("https://b.test/".into(), file.into())],
            "the config's target left with the file, the API's stays"
        );
        assert_eq!(
            crate::spec::timing(&hub.targets().into_iter().find(|t| t.source == file).unwrap()).0.as_secs(),
            120
        );

        // A file that cannot be read now keeps its targets.
        let applied = hub.apply_config_targets(Vec::new(), Shard::WHOLE, |s| s == file).await.unwrap();
        assert_eq!(applied, Applied::default());
        assert_eq!(urls(&hub).len(), 2);

        let many: Vec<TargetSpec> = (0..4).map(|i| spec(&format!("https://m{i}.test/"), "config")).collect();
        let e = hub.apply_config_targets(many, Shard::WHOLE, |_| false).await.unwrap_err().to_string();
        assert!(e.contains("more than its limit of 4"), "{e}");
        assert_eq!(urls(&hub).len(), 2, "nothing changed");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn a_shard_keeps_its_share_and_refuses_the_others() {
        let dir = std::env::temp_dir().join(format!("vantage-config-events-shard-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let hub = Hub::open(Arc::new(Store::open(&dir).unwrap()), Vec::new(), HubOptions::default()).await.unwrap();
        let all: Vec<TargetSpec> = (0..20).map(|i| spec(&format!("https://s{i}.test/"), "config")).collect();
        hub.apply_config_targets(all.clone(), Shard::WHOLE, |_| false).await.unwrap();
        let (zero, one) = (Shard::new(2, 0).unwrap(), Shard::new(2, 1).unwrap());
        let theirs = all.iter().find(|t| one.owns(&t.url)).unwrap().url.clone();
        let mut api = spec("https://api.test/", "api");
        if zero.owns(&api.url) {
            api = spec("https://api2.test/", "api");
        }
        assert!(one.owns(&api.url), "the test wants an API target the reshard moves away");
        hub.upsert_target(api.clone()).await.unwrap();

        let applied = hub.apply_config_targets(all.clone(), zero, |_| false).await.unwrap();
        let ours = all.iter().filter(|t| zero.owns(&t.url)).count();
        assert!(ours > 0 && ours < 20);
        assert_eq!(applied, Applied { removed: 20 - ours + 1, unchanged: ours, ..Applied::default() });
        assert_eq!(hub.shard(), zero);
        assert!(hub.targets().iter().all(|t| zero.owns(&t.url)), "only shard 0's targets stay, the API's one too");

        let e = hub.upsert_target(spec(&theirs, "api")).await.unwrap_err();
        assert!(matches!(e, HubError::Conflict(_)), "{e:?}");
        assert_eq!(e.to_string(), zero.refusal(&theirs));
        assert!(e.to_string().contains("belongs to shard 1 of 2"), "{e}");
        let mine = all.iter().find(|t| zero.owns(&t.url)).unwrap().url.clone();
        hub.upsert_target(spec(&mine, "api")).await.unwrap();

        // Back to one coordinator: the whole config again.
        let applied = hub.apply_config_targets(all, Shard::WHOLE, |_| false).await.unwrap();
        assert_eq!(applied.added, 20 - ours);
        assert_eq!(hub.targets().len(), 20);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn a_heartbeat_removed_while_overdue_is_resolved() {
        let dir = std::env::temp_dir().join(format!("vantage-config-events-hb-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let store = Arc::new(Store::open(&dir).unwrap());
        let heartbeat = crate::alert::Heartbeat {
            name: "certbot".into(),
            period: Duration::from_secs(60),
            secret: crate::alert::channel::Secret("s".repeat(16)),
            labels: Default::default(),
        };
        let alerting = Alerting { heartbeats: vec![heartbeat], ..Alerting::default() };
        let options = HubOptions { alerting: Arc::new(alerting), ..HubOptions::default() };
        let hub = Hub::open(store, Vec::new(), options).await.unwrap();
        let overdue = crate::hub::HeartbeatMemory { last_ms: 1_000, alerted: true, ..Default::default() };
        hub.lock().memory.set_heartbeat("certbot", overdue);
        hub.apply_config_settings(Alerting::default(), Vec::new(), Duration::ZERO, Default::default()).await.unwrap();
        assert!(hub.alerting().heartbeats.is_empty());
        let alerts = hub.alerts("certbot", 10).await.unwrap();
        let resolved = alerts.iter().find(|r| r.alert.kind == AlertKind::HeartbeatRecovered).expect("resolved");
        assert_eq!(resolved.alert.cause.as_ref().map(|c| c.code.as_str()), Some("removed"));
        assert_eq!(resolved.alert.dedup_key, "vantage/heartbeat/certbot", "the overdue alert's key");
        assert!(!hub.lock().memory.heartbeats["certbot"].alerted);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn a_reload_replaces_the_config_s_silences_and_keeps_the_api_s() {
        let dir = std::env::temp_dir().join(format!("vantage-config-events-silences-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let silence = |id: &str, source: &str| Silence {
            id: id.into(),
            target: "https://shop.test/".into(),
            labels: Default::default(),
            start_ms: 0,
            end_ms: now_ms() + 3_600_000,
            comment: String::new(),
            source: source.into(),
        };
        let options = HubOptions { silences: vec![silence("config-1", "config")], ..HubOptions::default() };
        let hub = Hub::open(Arc::new(Store::open(&dir).unwrap()), Vec::new(), options).await.unwrap();
        hub.create_silence(silence("s_api", "api")).await.unwrap();
        let new = vec![silence("config-1", "config"), silence("config-2", "config")];
        hub.apply_config_settings(Alerting::default(), new, Duration::ZERO, Default::default()).await.unwrap();
        let mut ids: Vec<String> = hub.silences().into_iter().map(|s| s.id).collect();
        ids.sort();
        assert_eq!(ids, ["config-1", "config-2", "s_api"]);
        hub.apply_config_settings(Alerting::default(), Vec::new(), Duration::ZERO, Default::default()).await.unwrap();
        let ids: Vec<String> = hub.silences().into_iter().map(|s| s.id).collect();
        assert_eq!(ids, ["s_api"], "the API's silence stays");
        drop(hub);
        let store = Store::open(&dir).unwrap();
        let stored: Vec<String> = store.silences().unwrap().into_iter().map(|s| s.id).collect();
        assert_eq!(stored, ["s_api"], "and so in the store");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn only_targets_from_the_config_or_its_files_belong_to_a_reload() {
        assert!(from_config("config"));
        assert!(from_config("file:/etc/vantage/targets/web.json"));
        for other in ["api", "", "configured", "files"] {
            assert!(!from_config(other), "{other}");
        }
    }
}
