//! What is still firing for a channel that re-sends it (Alertmanager): the triggers it heard
//! whose resolve has not been planned, from alerting's memory (so a restarted coordinator re-sends
//! the same). Read-only; the dispatcher's `resend` asks.

use super::Hub;
use crate::alert::Alert;

impl Hub {
    /// The triggers heard by `channel` and not resolved yet, oldest first.
    pub fn firing(&self, channel: &str) -> Vec<Alert> {
        let state = self.lock();
        let memory = &state.memory;
        let mut firing: Vec<Alert> = memory
            .firing
            .iter()
            .filter(|(dedup, _)| memory.sent.get(*dedup).is_some_and(|heard| heard.iter().any(|c| c == channel)))
            .map(|(_, trigger)| trigger.clone())
            .collect();
        firing.sort_by(|a, b| (a.at_ms, &a.id).cmp(&(b.at_ms, &b.id)));
        firing
    }
}
