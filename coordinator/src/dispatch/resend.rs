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
        // A channel no longer configured (or no longer re-sending) has nothing due.
        self.due.retain(|name, _| alerting.resends(name));
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

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::time::Duration;

    use super::*;
    use crate::alert::channel::{Channel, Sending, Slack};
    use crate::hub::HubOptions;
    use crate::store::Store;

    /// A channel that re-sends every minute and records what it was given.
    #[derive(Debug, Default)]
    struct Recorder(Mutex<Vec<Vec<String>>>);

    impl Channel for Recorder {
        fn send<'a>(&'a self, _: &'a Http, _: &'a Alert) -> Sending<'a> {
            Box::pin(async { Ok(()) })
        }
        fn resend_every(&self) -> Option<Duration> {
            Some(Duration::from_secs(60))
        }
        fn resend<'a>(&'a self, _: &'a Http, firing: &'a [Alert]) -> Sending<'a> {
            self.0.lock().unwrap().push(firing.iter().map(|a| a.subject.clone()).collect());
            Box::pin(async { Ok(()) })
        }
    }

    #[tokio::test]
    async fn what_is_firing_is_re_sent_at_start_and_every_delay_and_holds_the_channels_deliveries_meanwhile() {
        let dir = std::env::temp_dir().join(format!("vantage-resend-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        // A store from before a restart: a DOWN heard by `am` (and `chat`), still firing.
        let store = Store::open(&dir).unwrap();
        let down =
            Alert::new(AlertKind::Down, "https://a.example/", 1_000, "vantage/target/https://a.example/#1".into());
        let rows = [
            (format!("sent:{}", down.dedup_key), serde_json::to_vec(&["am", "chat"]).ok()),
            (format!("firing:{}", down.dedup_key), serde_json::to_vec(&down).ok()),
        ];
        store.record_changes(&[], &[], &rows).unwrap();
        let recorder = Arc::new(Recorder::default());
        let alerting = Arc::new(Alerting {
            channels: vec![
                Named { name: "am".into(), channel: recorder.clone() },
                Named { name: "chat".into(), channel: Arc::new(Slack { url: "http://x/".into() }) },
            ],
            ..Alerting::default()
        });
        let options = HubOptions { alerting: alerting.clone(), ..HubOptions::default() };
        let hub = Hub::open(Arc::new(store), Vec::new(), options).await.unwrap();
        let http = Arc::new(Http::new());

        let mut resends = Resends::default();
        resends.start_due(&hub, &alerting, &http, 5_000);
        assert!(resends.busy("am") && !resends.busy("chat"), "am's deliveries wait for its re-send");
        assert_eq!(resends.next_ms(), None);
        resends.finished().await;
        assert_eq!(*recorder.0.lock().unwrap(), [vec!["https://a.example/".to_owned()]], "re-sent at once");
        assert!(!resends.busy("am"));
        assert_eq!(resends.next_ms(), Some(65_000), "then every resend delay");
        resends.start_due(&hub, &alerting, &http, 64_999);
        assert!(!resends.is_running(), "not before its time");
        // The channel gone from the config: nothing is due for it any more.
        let without = Arc::new(Alerting { channels: alerting.channels[1..].to_vec(), ..Alerting::default() });
        resends.start_due(&hub, &without, &http, 70_000);
        assert_eq!((resends.is_running(), resends.next_ms()), (false, None));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
