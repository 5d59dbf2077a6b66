//! Re-sending what is still firing to the channels that forget an alert nobody re-sends
//! (Alertmanager lets it expire at its `endsAt`, as it does for a Prometheus that has stopped).
//! Every `resend_every` of such a channel, and at once after a start, it gets the triggers it
//! heard whose resolve has not been planned (`Hub::firing`, kept in alerting's memory: a restart
//! re-sends the same) and `channel_failing` of every other channel failing now. While a channel's
//! re-send is in flight none of its deliveries starts, and the re-send reads what is firing only
//! then: a resolve planned before is not in it, and one planned after waits for it, so a re-sent
//! trigger never arrives after its resolve.

use std::collections::HashMap;
use std::sync::Arc;

use tokio::task::{Id, JoinSet};

use crate::alert::channel::{Http, Named, SEND_TIMEOUT, SendError};
use crate::alert::{Alert, AlertKind, Alerting};
use crate::clock::now_ms;
use crate::hub::Hub;

/// The re-sends: when each channel's next one is due, and those in flight.
#[derive(Default)]
pub struct Resends {
    due: HashMap<String, i64>,
    running: JoinSet<(String, Result<usize, SendError>)>,
    tasks: HashMap<Id, String>,
}

impl Resends {
    /// Whether `channel`'s deliveries must wait: its re-send is in flight.
    pub fn busy(&self, channel: &str) -> bool {
        self.tasks.values().any(|c| c == channel)
    }

    pub fn is_running(&self) -> bool {
        !self.running.is_empty()
    }

    /// When the next re-send not in flight is due.
    pub fn next_ms(&self) -> Option<i64> {
        self.due.iter().filter(|(channel, _)| !self.busy(channel)).map(|(_, due)| *due).min()
    }

    /// Starts the re-sends that are due (each channel's first one at once).
    pub fn start_due(&mut self, hub: &Arc<Hub>, alerting: &Arc<Alerting>, http: &Arc<Http>, now: i64) {
        for named in &alerting.channels {
            let Some(every) = named.channel.resend_every() else { continue };
            if self.busy(&named.name) || *self.due.entry(named.name.clone()).or_insert(now) > now {
                continue;
            }
            self.due.insert(named.name.clone(), now + every.as_millis() as i64);
            let name = named.name.clone();
            let (hub, alerting, http, named) = (hub.clone(), alerting.clone(), http.clone(), named.clone());
            let task = self.running.spawn(async move {
                let firing = firing(&hub, &alerting, &named, now_ms());
                let result = if firing.is_empty() {
                    Ok(())
                } else {
                    tokio::time::timeout(SEND_TIMEOUT, named.channel.resend(&http, &firing))
                        .await
                        .unwrap_or_else(|_| Err(SendError::Transient(format!("no answer within {SEND_TIMEOUT:?}"))))
                };
                (named.name, result.map(|()| firing.len()))
            });
            self.tasks.insert(task.id(), name);
        }
    }

    /// Waits for a re-send in flight to end, and says how it went.
    pub async fn finished(&mut self) {
        let Some(outcome) = self.running.join_next_with_id().await else { return };
        match outcome {
            Ok((id, (channel, result))) => {
                self.tasks.remove(&id);
                match result {
                    Ok(0) => {}
                    Ok(alerts) => tracing::debug!(channel, alerts, "firing alerts re-sent"),
                    Err(error) => tracing::warn!(
                        channel,
                        error = %error,
                        "re-sending the firing alerts failed (tried again at the next resend delay)"
                    ),
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "a re-send of firing alerts failed unexpectedly");
                self.tasks.remove(&e.id());
            }
        }
    }
}

/// What is firing for `channel` now: the triggers it heard, not resolved yet, and
/// `channel_failing` of the other channels whose failure was alerted.
fn firing(hub: &Hub, alerting: &Alerting, channel: &Named, now: i64) -> Vec<Alert> {
    let mut firing = hub.firing(&channel.name);
    for (other, failing) in hub.channel_health.failing() {
        if other != channel.name && failing.alerted && alerting.channels.iter().any(|c| c.name == other) {
            firing.push(super::channel_alert(alerting, AlertKind::ChannelFailing, &other, &failing, now).alert);
        }
    }
    firing
}
