//! `CheckNow`: each judging region's agent is asked to probe a target at once, and the call
//! waits for their answers (matched by a run-now id that is short whatever the URL).

use std::time::Duration;

use tokio::sync::mpsc;
use vantage_proto::v1::{CoordinatorMessage, HistoryEntry, RunNow, TargetStatus, coordinator_message};
use vantage_shared::limits::MAX_ID;

use super::targets::Name;
use super::{Hub, HubError};
use crate::assign;

/// A `CheckNow` waiting for its results: where they go, and which agents were asked (their
/// answers are accepted even if the target moved away from them meanwhile).
pub struct Waiter {
    pub tx: mpsc::UnboundedSender<HistoryEntry>,
    pub url: String,
    pub asked: Vec<String>,
}

/// Random hex for this process's run-now ids.
pub fn prefix() -> String {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 8];
    // The system RNG does not fail on Linux; a zero prefix still tells this process's calls apart.
    let _ = ring::rand::SystemRandom::new().fill(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The run-now id of this process's `n`th `CheckNow`: short whatever the URL (at most 38 bytes,
/// under `limits::MAX_ID`), so an agent can always report it.
fn id_for(prefix: &str, n: u64) -> String {
    let id = format!("r-{prefix}-{n}");
    debug_assert!(id.len() <= MAX_ID);
    id
}

impl Hub {
    /// Whether a `CheckNow` is waiting for results with this run-now id.
    pub fn awaits_run_now(&self, id: &str, url: &str) -> bool {
        self.lock().run_now.get(id).is_some_and(|w| w.url == url)
    }

    /// Asks every region's agent to probe `url` now and waits for their results.
    pub async fn check_now(&self, url: &str) -> Result<(TargetStatus, Vec<HistoryEntry>, Vec<String>), HubError> {
        let url =
            vantage_shared::TargetUrl::parse(url).map(|u| u.to_string()).map_err(|_| HubError::NoTarget(url.into()))?;
        let id = id_for(&self.run_now_prefix, self.next_check.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
        let (tx, mut rx) = mpsc::unbounded_channel();
        let (regions, asked, deadline) = {
            let mut state = self.lock();
            let target = state.targets.get(url.as_str()).ok_or_else(|| HubError::NoTarget(url.clone()))?;
            let mut regions = Vec::new();
            super::agents::for_each_region(&target.spec, &state.default_regions, |r| regions.push(r.to_owned()));
            let (_, timeout) = target.spec.timing();
            let (mut asked, mut agents_asked) = (Vec::new(), Vec::new());
            for region in &regions {
                let agents = state.agents.connected_in(region);
                let Some(owner) = assign::owner(&url, &agents).map(str::to_owned) else { continue };
                let session = state.agents.agents.get(&owner).and_then(|a| a.session.as_ref());
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
            state.run_now.insert(id.clone(), Waiter { tx, url: url.clone(), asked: agents_asked });
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
        self.judge_now(Some(vec![Name::from(url.as_str())])).await;
        let status = self.statuses(std::slice::from_ref(&url)).pop().ok_or(HubError::NoTarget(url))?;
        Ok((status, results, missing))
    }
}
