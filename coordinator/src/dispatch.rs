//! Delivers the outbox. Order is kept per subject on each channel: a later alert about the same
//! target, region, heartbeat or channel waits while an earlier one to that channel is retried (a
//! pager never sees a resolve before its trigger), while alerts about other subjects go on. Each
//! send runs on its own, so a receiver that hangs holds up only the alerts behind it. Failures are
//! classified (`SendError`): an alert the receiver refuses (400/413/422) fails at once; a
//! misconfigured channel (401/403/404) and transient errors are retried with capped exponential
//! backoff for a day, the former loudly (`health`: an error log, a gauge, the status page, and
//! `channel_failing` to the other channels after `channel_failing_after`). Every attempt's
//! outcome is written back to the store, so a restart resumes where it left off. Channels that
//! forget what nobody re-sends (Alertmanager) also get what is still firing for them again and
//! again (`resend`).

mod resend;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;

use crate::alert::channel::{Http, SendError};
use crate::alert::health::{self, Change, Failing, Observed};
use crate::alert::{Alert, AlertKind, AlertRecord, Alerting, Delivery, DeliveryState};
use crate::clock::now_ms;
use crate::hub::Hub;

const BACKOFF_FIRST: Duration = Duration::from_secs(1);
const BACKOFF_CAP: Duration = Duration::from_secs(300);
/// After this long an undelivered alert is marked failed.
pub const GIVE_UP_AFTER: Duration = Duration::from_secs(86_400);
/// Longest sleep between looks at the outbox.
const IDLE: Duration = Duration::from_secs(30);

/// The wait before attempt `attempts + 1`.
pub fn backoff(attempts: u32) -> Duration {
    BACKOFF_FIRST.saturating_mul(1 << attempts.saturating_sub(1).min(16)).min(BACKOFF_CAP)
}

/// What may be sent now.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// (record, delivery) indexes into the records, in the order given.
    pub due: Vec<(usize, usize)>,
    /// The earliest later attempt of a delivery that heads its line.
    pub next_ms: Option<i64>,
}

/// Picks the deliveries to send now from `records` (oldest first): on each channel, only the
/// oldest pending delivery of each subject may go, and not while it is being sent already
/// (`in_flight`: alert id, channel).
pub fn plan(records: &[AlertRecord], in_flight: &HashSet<(String, String)>, now: i64) -> Plan {
    let mut heads: HashSet<(&str, &str)> = HashSet::new();
    let mut plan = Plan::default();
    for (r, record) in records.iter().enumerate() {
        for (d, delivery) in record.deliveries.iter().enumerate() {
            if delivery.state != DeliveryState::Pending
                || !heads.insert((delivery.channel.as_str(), record.alert.subject.as_str()))
                || in_flight.contains(&(record.alert.id.clone(), delivery.channel.clone()))
            {
                continue;
            }
            if delivery.next_attempt_ms <= now {
                plan.due.push((r, d));
            } else {
                plan.next_ms = Some(plan.next_ms.map_or(delivery.next_attempt_ms, |n| n.min(delivery.next_attempt_ms)));
            }
        }
    }
    plan
}

/// Records one attempt's `result` in `delivery`: delivered; failed for good (the receiver refused
/// this alert, or it has been retried for `GIVE_UP_AFTER`); or due again after the backoff.
pub fn settle(delivery: &mut Delivery, alert_at_ms: i64, result: &Result<(), SendError>, now: i64) {
    delivery.attempts += 1;
    match result {
        Ok(()) => {
            delivery.state = DeliveryState::Delivered;
            delivery.delivered_ms = now;
            delivery.last_error.clear();
        }
        Err(error) => {
            delivery.last_error = error.to_string();
            let expired = now - alert_at_ms > GIVE_UP_AFTER.as_millis() as i64;
            if matches!(error, SendError::Rejected(_)) || expired {
                delivery.state = DeliveryState::Failed;
            } else {
                delivery.next_attempt_ms = now + backoff(delivery.attempts).as_millis() as i64;
            }
        }
    }
}

/// `channel_failing` (or `channel_recovered`) about `channel`, to every other channel, whatever
/// the routes say: a broken channel concerns whoever hears any alert.
pub fn channel_alert(alerting: &Alerting, kind: AlertKind, channel: &str, failing: &Failing, now: i64) -> AlertRecord {
    let mut alert = Alert::new(kind, channel, now, format!("vantage/channel/{channel}"));
    alert.since_ms = failing.since_ms;
    alert.link = alerting.status_url.clone();
    if kind == AlertKind::ChannelFailing {
        alert.detail = format!(
            "Alerts to channel {channel} are not being delivered: {} (check its URL and credentials)",
            failing.error
        );
    } else {
        alert.duration_ms = Some(now - failing.since_ms);
        alert.detail = format!("Alerts to channel {channel} are delivered again.");
    }
    let deliveries = alerting
        .channels
        .iter()
        .filter(|c| c.name != channel)
        .map(|c| Delivery {
            channel: c.name.clone(),
            state: DeliveryState::Pending,
            attempts: 0,
            last_error: String::new(),
            next_attempt_ms: now,
            delivered_ms: 0,
        })
        .collect();
    AlertRecord { alert, deliveries, silenced_by: None }
}

fn remember(channel: &str, failing: Option<&Failing>) -> (String, Option<Vec<u8>>) {
    (format!("channel:{channel}"), failing.and_then(|f| serde_json::to_vec(f).ok()))
}

/// A send that finished.
struct Finished {
    alert: Alert,
    /// As it was before the attempt.
    delivery: Delivery,
    result: Result<(), SendError>,
}

/// Runs until the task is aborted; `wake` is notified when new alerts are queued (and when a
/// config reload swapped the channels: they are read afresh on every pass).
pub async fn run(hub: Arc<Hub>, wake: Arc<Notify>) {
    let http = Arc::new(Http::new());
    let mut in_flight: HashSet<(String, String)> = HashSet::new();
    let mut sends: tokio::task::JoinSet<Finished> = tokio::task::JoinSet::new();
    let mut tasks: HashMap<tokio::task::Id, (String, String)> = HashMap::new();
    let mut resends = resend::Resends::default();
    for (channel, failing) in hub.channel_health.failing() {
        tracing::error!(
            channel,
            since = crate::clock::rfc3339(failing.since_ms),
            error = failing.error,
            "alert channel failing since before this start: its alerts are retried"
        );
    }
    loop {
        let alerting = hub.alerting();
        let failing_after = alerting.channel_failing_after.unwrap_or(health::CHANNEL_FAILING_AFTER);
        raise_overdue(&hub, &alerting, failing_after).await;
        let mut records = match hub.pending_alerts().await {
            Ok(records) => records,
            Err(e) => {
                tracing::error!(error = %e, "reading the alert outbox failed");
                Vec::new()
            }
        };
        records.sort_by(|a, b| (a.alert.at_ms, &a.alert.id).cmp(&(b.alert.at_ms, &b.alert.id)));
        resends.start_due(&hub, &alerting, &http, now_ms());
        let plan = plan(&records, &in_flight, now_ms());
        for (r, d) in plan.due {
            let (alert, delivery) = (records[r].alert.clone(), records[r].deliveries[d].clone());
            if resends.busy(&delivery.channel) {
                // After the re-send: it must not overtake this (a resolve, say).
                continue;
            }
            let channel = alerting.channels.iter().find(|c| c.name == delivery.channel).cloned();
            let key = (alert.id.clone(), delivery.channel.clone());
            let http = http.clone();
            let task = sends.spawn(async move {
                let result = match channel {
                    Some(channel) => channel.send(&http, &alert).await,
                    None => Err(SendError::Rejected("no such channel in the configuration".to_owned())),
                };
                Finished { alert, delivery, result }
            });
            in_flight.insert(key.clone());
            tasks.insert(task.id(), key);
        }
        // Wake for the next retry, or when a failing channel crosses the threshold.
        let overdue_at = hub
            .channel_health
            .with(|m| m.values().filter(|f| !f.alerted).map(|f| f.since_ms + failing_after.as_millis() as i64).min());
        let next = [plan.next_ms, overdue_at, resends.next_ms()].into_iter().flatten().min();
        let wait =
            next.map_or(IDLE, |n| Duration::from_millis((n - now_ms()).clamp(0, IDLE.as_millis() as i64) as u64));
        tokio::select! {
            Some(first) = sends.join_next_with_id(), if !sends.is_empty() => {
                let mut finished = Vec::new();
                let mut done = vec![first];
                while let Some(more) = sends.try_join_next_with_id() {
                    done.push(more);
                }
                let mut keys = Vec::new();
                for outcome in done {
                    match outcome {
                        Ok((id, result)) => {
                            keys.extend(tasks.remove(&id));
                            finished.push(result);
                        }
                        Err(e) => {
                            // A send that panicked: its delivery is tried again.
                            tracing::error!(error = %e, "an alert send failed unexpectedly");
                            keys.extend(tasks.remove(&e.id()));
                        }
                    }
                }
                finish(&hub, &alerting, finished).await;
                for key in keys {
                    in_flight.remove(&key);
                }
            }
            _ = resends.finished(), if resends.is_running() => {}
            _ = wake.notified() => {}
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

/// Writes finished attempts back, and what they say about their channels.
async fn finish(hub: &Hub, alerting: &Alerting, finished: Vec<Finished>) {
    let now = now_ms();
    let mut deliveries = Vec::new();
    let mut alerts = Vec::new();
    let mut memory = Vec::new();
    for Finished { alert, mut delivery, result } in finished {
        settle(&mut delivery, alert.at_ms, &result, now);
        let (id, channel) = (alert.id, delivery.channel.clone());
        match &result {
            Ok(()) => {
                tracing::info!(id, kind = alert.kind.as_str(), subject = alert.subject, channel, "alert delivered")
            }
            Err(error) => tracing::warn!(
                id,
                kind = alert.kind.as_str(),
                subject = alert.subject,
                channel,
                attempts = delivery.attempts,
                error = %error,
                gave_up = delivery.state == DeliveryState::Failed,
                "alert delivery failed"
            ),
        }
        deliveries.push((id, delivery));
        if !alerting.channels.iter().any(|c| c.name == channel) {
            continue;
        }
        let change = hub.channel_health.with(|m| {
            let change = health::observe(m, &channel, Observed::of(&result), now);
            (change, m.get(&channel).cloned())
        });
        match change {
            (Some(Change::Failing), Some(failing)) => {
                tracing::error!(
                    channel,
                    error = failing.error,
                    "alert channel failing: the receiver says the channel is misconfigured (check its URL and \
                     credentials); its alerts are retried, and the other channels hear channel_failing if this lasts"
                );
                memory.push(remember(&channel, Some(&failing)));
            }
            (Some(Change::Recovered { was }), _) => {
                tracing::info!(channel, since = crate::clock::rfc3339(was.since_ms), "alert channel works again");
                memory.push(remember(&channel, None));
                if was.alerted {
                    alerts.push(channel_alert(alerting, AlertKind::ChannelRecovered, &channel, &was, now));
                }
            }
            _ => {}
        }
    }
    if let Err(e) = hub.record_deliveries(deliveries).await {
        // Not in a hot loop: the outbox is read again after a pause (a delivery may be
        // repeated; receivers deduplicate by id).
        tracing::error!(error = %e, "recording alert deliveries failed");
        tokio::time::sleep(IDLE).await;
    }
    if !alerts.is_empty() || !memory.is_empty() {
        if let Err(e) = hub.queue_alerts(alerts, memory).await {
            tracing::error!(error = %e, "recording alert channel health failed");
        }
    }
}

/// Sends `channel_failing` about channels failing for longer than `after`.
async fn raise_overdue(hub: &Hub, alerting: &Alerting, after: Duration) {
    let now = now_ms();
    let raised: Vec<(String, Failing)> = hub.channel_health.with(|m| {
        health::overdue(m, now, after).into_iter().filter_map(|c| Some((c.clone(), m.get(&c)?.clone()))).collect()
    });
    if raised.is_empty() {
        return;
    }
    let mut alerts = Vec::new();
    let mut memory = Vec::new();
    for (channel, failing) in &raised {
        tracing::error!(
            channel,
            since = crate::clock::rfc3339(failing.since_ms),
            error = failing.error,
            "alert channel failing for longer than {after:?}: channel_failing goes to the other channels"
        );
        alerts.push(channel_alert(alerting, AlertKind::ChannelFailing, channel, failing, now));
        memory.push(remember(channel, Some(failing)));
    }
    if let Err(e) = hub.queue_alerts(alerts, memory).await {
        tracing::error!(error = %e, "queueing channel_failing failed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(kind: AlertKind, subject: &str, at: i64, channels: &[&str]) -> AlertRecord {
        let alert = Alert::new(kind, subject, at, format!("k/{subject}"));
        let deliveries = channels
            .iter()
            .map(|c| Delivery {
                channel: (*c).to_owned(),
                state: DeliveryState::Pending,
                attempts: 0,
                last_error: String::new(),
                next_attempt_ms: at,
                delivered_ms: 0,
            })
            .collect();
        AlertRecord { alert, deliveries, silenced_by: None }
    }

    fn due(records: &[AlertRecord], in_flight: &HashSet<(String, String)>, now: i64) -> Vec<(String, String)> {
        let plan = plan(records, in_flight, now);
        plan.due
            .into_iter()
            .map(|(r, d)| {
                (
                    records[r].alert.kind.as_str().to_owned() + " " + &records[r].alert.subject,
                    records[r].deliveries[d].channel.clone(),
                )
            })
            .collect()
    }

    #[test]
    fn a_resolve_waits_for_its_trigger_but_other_subjects_do_not() {
        let mut records = vec![
            record(AlertKind::Down, "a", 1, &["pager", "slack"]),
            record(AlertKind::Recovered, "a", 2, &["pager", "slack"]),
            record(AlertKind::Down, "b", 3, &["pager"]),
            record(AlertKind::Recovered, "b", 4, &["pager"]),
        ];
        // The trigger of `a` is stuck on the pager (retried later): its resolve waits there,
        // `b` goes on, and slack, where `a`'s trigger went through, gets the resolve.
        records[0].deliveries[0].next_attempt_ms = 1_000;
        records[0].deliveries[1].state = DeliveryState::Delivered;
        let none = HashSet::new();
        let s = |a: &str, c: &str| (a.to_owned(), c.to_owned());
        assert_eq!(due(&records, &none, 10), [s("recovered a", "slack"), s("down b", "pager")]);
        assert_eq!(plan(&records, &none, 10).next_ms, Some(1_000));
        // While `b`'s trigger is being sent, its resolve does not overtake it.
        let sending: HashSet<_> = [(records[2].alert.id.clone(), "pager".to_owned())].into();
        assert_eq!(due(&records, &sending, 10), [s("recovered a", "slack")]);
        // Once the trigger failed for good, the resolve may go.
        records[2].deliveries[0].state = DeliveryState::Failed;
        assert_eq!(due(&records, &none, 10), [s("recovered a", "slack"), s("recovered b", "pager")]);
        assert_eq!(due(&records, &none, 1_000)[0], s("down a", "pager"));
    }

    #[test]
    fn a_refused_alert_fails_at_once_a_misconfigured_channel_is_retried_for_the_usual_period() {
        let fresh = || record(AlertKind::Down, "a", 0, &["hook"]).deliveries.remove(0);
        let mut d = fresh();
        settle(&mut d, 0, &Err(SendError::from_status(422, "HTTP 422 Unprocessable Entity: bad".into())), 5_000);
        assert_eq!((d.state, d.attempts), (DeliveryState::Failed, 1));
        assert!(
            d.last_error.starts_with("HTTP 422 Unprocessable Entity: bad (this alert is refused"),
            "{}",
            d.last_error
        );
        for status in [401, 403, 404, 503] {
            let mut d = fresh();
            settle(&mut d, 0, &Err(SendError::from_status(status, format!("HTTP {status}"))), 5_000);
            settle(&mut d, 0, &Err(SendError::from_status(status, format!("HTTP {status}"))), 6_000);
            assert_eq!((d.state, d.next_attempt_ms), (DeliveryState::Pending, 8_000), "{status}: retried after 2 s");
        }
        let mut d = fresh();
        let day = GIVE_UP_AFTER.as_millis() as i64;
        settle(&mut d, 0, &Err(SendError::from_status(401, "HTTP 401".into())), day + 1);
        assert_eq!(d.state, DeliveryState::Failed, "given up after a day");
        assert!(d.last_error.contains("misconfigured"), "{}", d.last_error);
        let mut d = fresh();
        settle(&mut d, 0, &Ok(()), 7_000);
        assert_eq!((d.state, d.delivered_ms, d.last_error.as_str()), (DeliveryState::Delivered, 7_000, ""));
    }

    #[test]
    fn channel_failing_goes_to_every_other_channel() {
        use crate::alert::channel::{Named, Slack};
        let channel = |name: &str| Named { name: name.into(), channel: Arc::new(Slack { url: "http://x/".into() }) };
        let alerting =
            Alerting { channels: vec![channel("hook"), channel("slack"), channel("pager")], ..Alerting::default() };
        let failing = Failing { since_ms: 1_000, error: "HTTP 401 Unauthorized".into(), alerted: true };
        let raised = channel_alert(&alerting, AlertKind::ChannelFailing, "hook", &failing, 5_000);
        let to: Vec<&str> = raised.deliveries.iter().map(|d| d.channel.as_str()).collect();
        assert_eq!(to, ["slack", "pager"]);
        assert_eq!((raised.alert.subject.as_str(), raised.alert.since_ms), ("hook", 1_000));
        assert!(raised.alert.text().contains("HTTP 401 Unauthorized"), "{}", raised.alert.text());
        let cleared = channel_alert(&alerting, AlertKind::ChannelRecovered, "hook", &failing, 9_000);
        assert_eq!((cleared.alert.dedup_key, cleared.alert.duration_ms), (raised.alert.dedup_key, Some(8_000)));
    }

    #[test]
    fn backoff_doubles_up_to_five_minutes() {
        let waits: Vec<u64> = (1..=12).map(|n| backoff(n).as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300, 300]);
    }
}
