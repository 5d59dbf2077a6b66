//! Delivers the outbox. Each channel gets its alerts in the order they happened (a later alert
//! waits while an earlier one to the same channel is retried, so a pager never sees a resolve
//! before its trigger); failures are retried with capped exponential backoff for a day; every
//! attempt's outcome is written back to the store, so a restart resumes where it left off.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;

use super::channel::{SendError, Sender};
use super::{AlertRecord, Alerting, DeliveryState};
use crate::hub::{Hub, now_ms};

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

/// Runs until the task is aborted; `wake` is notified when new alerts are queued.
pub async fn run(hub: Arc<Hub>, alerting: Arc<Alerting>, wake: Arc<Notify>) {
    let sender = Arc::new(Sender::new());
    loop {
        let mut records = match hub.pending_alerts().await {
            Ok(records) => records,
            Err(e) => {
                tracing::error!(error = %e, "reading the alert outbox failed");
                Vec::new()
            }
        };
        records.sort_by_key(|r| (r.alert.at_ms, r.alert.id.clone()));
        let now = now_ms();
        // Per channel, only its oldest pending delivery may go.
        let mut busy: HashSet<String> = HashSet::new();
        let mut due: Vec<(usize, usize)> = Vec::new();
        let mut next: Option<i64> = None;
        for (r, record) in records.iter().enumerate() {
            for (d, delivery) in record.deliveries.iter().enumerate() {
                if delivery.state != DeliveryState::Pending || !busy.insert(delivery.channel.clone()) {
                    continue;
                }
                if delivery.next_attempt_ms <= now {
                    due.push((r, d));
                } else {
                    next = Some(next.map_or(delivery.next_attempt_ms, |n: i64| n.min(delivery.next_attempt_ms)));
                }
            }
        }
        let mut sends = tokio::task::JoinSet::new();
        for (r, d) in due {
            let channel = alerting.channels.iter().find(|c| c.name == records[r].deliveries[d].channel).cloned();
            let (alert, sender) = (records[r].alert.clone(), sender.clone());
            sends.spawn(async move {
                let result = match channel {
                    Some(channel) => sender.send(&channel, &alert).await,
                    None => Err(SendError::Permanent("no such channel in the configuration".to_owned())),
                };
                (r, d, result)
            });
        }
        let mut changed: HashSet<usize> = HashSet::new();
        while let Some(Ok((r, d, result))) = sends.join_next().await {
            let record: &mut AlertRecord = &mut records[r];
            let alert = &record.alert;
            let delivery = &mut record.deliveries[d];
            delivery.attempts += 1;
            match result {
                Ok(()) => {
                    delivery.state = DeliveryState::Delivered;
                    delivery.delivered_ms = now_ms();
                    delivery.last_error.clear();
                    tracing::info!(
                        id = alert.id,
                        kind = alert.kind.as_str(),
                        subject = alert.subject,
                        channel = delivery.channel,
                        "alert delivered"
                    );
                }
                Err(error) => {
                    let permanent = matches!(error, SendError::Permanent(_));
                    let error = error.to_string();
                    let gave_up = permanent || now_ms() - alert.at_ms > GIVE_UP_AFTER.as_millis() as i64;
                    tracing::warn!(
                        id = alert.id,
                        channel = delivery.channel,
                        attempts = delivery.attempts,
                        error,
                        gave_up,
                        "alert delivery failed"
                    );
                    delivery.last_error = error;
                    if gave_up {
                        delivery.state = DeliveryState::Failed;
                    } else {
                        delivery.next_attempt_ms = now_ms() + backoff(delivery.attempts).as_millis() as i64;
                    }
                }
            }
            changed.insert(r);
        }
        let changed: Vec<AlertRecord> = changed.into_iter().map(|r| records[r].clone()).collect();
        let progressed = !changed.is_empty();
        if progressed {
            if let Err(e) = hub.update_alerts(changed).await {
                // Not in a hot loop: the outbox is read again after a pause (a delivery may be
                // repeated; receivers deduplicate by id).
                tracing::error!(error = %e, "recording alert deliveries failed");
                tokio::time::sleep(IDLE).await;
            }
            continue; // the next alert of each channel may go now
        }
        let wait =
            next.map_or(IDLE, |n| Duration::from_millis((n - now_ms()).clamp(0, IDLE.as_millis() as i64) as u64));
        tokio::select! {
            _ = wake.notified() => {}
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_five_minutes() {
        let waits: Vec<u64> = (1..=12).map(|n| backoff(n).as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300, 300]);
    }
}
