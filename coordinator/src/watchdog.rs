//! The dead man's switch (`[watchdog]`): every `period` the coordinator looks at its own health —
//! its store takes a write, its clock ticks, an agent is connected — and only while it is healthy
//! tells an outside service so (a healthchecks-style ping, or an always-firing `Watchdog` alert in
//! Alertmanager, as kube-prometheus does). A coordinator that is dead, stuck, cut off from every
//! agent or unable to record stops telling, and the outside service pages. Health and the last
//! successful ping are on `/metrics`. A reload swaps the table like the rest of the alerting
//! config (`Hub::alerting`); the next look follows the new one.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::alert::channel::{Http, SEND_TIMEOUT, SendError, VALID_FOR};
use crate::alert::watchdog::{Method, Target, Watchdog};
use crate::clock::{now_ms, rfc3339};
use crate::hub::Hub;
use crate::metrics::text::Text;
use crate::store::Store;

/// The clock counts as stuck when its last tick (every second) ended longer ago than this: far
/// more than the slowest full pass over 100,000 targets.
pub const TICK_LATE_AFTER: Duration = Duration::from_secs(30);
/// How long the store's probe write may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(10);
/// How often the loop looks at the config when nothing is due (a reload takes effect within it).
const POLL: Duration = Duration::from_secs(1);

/// When the hub's tick last ended, written by the tick loop in `serve`: milliseconds on a
/// monotonic clock (a step of the wall clock does not make the tick look stuck), 0 before the
/// first.
#[derive(Debug)]
pub struct Pulse {
    origin: Instant,
    last: AtomicI64,
}

impl Default for Pulse {
    fn default() -> Self {
        Pulse { origin: Instant::now(), last: AtomicI64::new(0) }
    }
}

impl Pulse {
    pub fn beat(&self) {
        self.last.store(self.now_ms(), Ordering::Relaxed);
    }

    /// Now on the pulse's clock (never 0).
    fn now_ms(&self) -> i64 {
        self.origin.elapsed().as_millis() as i64 + 1
    }

    fn last_ms(&self) -> i64 {
        self.last.load(Ordering::Relaxed)
    }
}

/// Why the coordinator is not healthy: no heartbeat goes out.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unhealthy {
    #[error("the store takes no write: {0}")]
    Store(String),
    /// The last tick ended this long ago (`None`: there was none yet).
    #[error("the clock is stuck: {}", match .0 {
        Some(ago) => format!("its last tick ended {ago:?} ago"),
        None => "it has not ticked yet".to_owned(),
    })]
    NotTicking(Option<Duration>),
    #[error("no agent is connected")]
    NoAgent,
}

/// What the coordinator found when it looked at itself.
#[derive(Debug, Clone)]
pub struct Observed {
    /// The store's probe write, or why it failed.
    pub store: Result<(), String>,
    /// When the last tick ended (0: none yet), and now, on one monotonic clock.
    pub last_tick_ms: i64,
    pub agents_connected: usize,
    pub now_ms: i64,
}

/// Whether `observed` is healthy, and if not, the first reason (the store, then the clock, then
/// the agents); healthy, a one-line summary.
pub fn judge(observed: &Observed) -> Result<String, Unhealthy> {
    observed.store.clone().map_err(Unhealthy::Store)?;
    let since_tick = Duration::from_millis(observed.now_ms.saturating_sub(observed.last_tick_ms).max(0) as u64);
    if observed.last_tick_ms == 0 {
        return Err(Unhealthy::NotTicking(None));
    }
    if since_tick > TICK_LATE_AFTER {
        return Err(Unhealthy::NotTicking(Some(since_tick)));
    }
    match observed.agents_connected {
        0 => Err(Unhealthy::NoAgent),
        n => Ok(format!(
            "vantage-coordinator healthy: store writable, ticking, {n} agent{} connected",
            if n == 1 { "" } else { "s" }
        )),
    }
}

/// What `/metrics` shows of the watchdog.
#[derive(Debug, Default)]
pub struct Status {
    inner: Mutex<StatusInner>,
}

#[derive(Debug, Default, Clone, Copy)]
struct StatusInner {
    configured: bool,
    /// The last look's verdict (`None`: no look yet).
    healthy: Option<bool>,
    /// Unix seconds of the last ping the receiver accepted.
    last_success: Option<f64>,
}

impl Status {
    fn set(&self, f: impl FnOnce(&mut StatusInner)) {
        f(&mut self.inner.lock().unwrap_or_else(|p| p.into_inner()));
    }

    /// The watchdog's series, only while `[watchdog]` is configured.
    pub fn render_metrics(&self) -> String {
        let status = *self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let mut text = Text::new();
        if !status.configured {
            return String::new();
        }
        if let Some(healthy) = status.healthy {
            text.family(
                "vantage_watchdog_healthy",
                "gauge",
                "Whether the coordinator found itself healthy at the watchdog's last look (store writable, ticking, \
                 an agent connected): only then does it send its heartbeat.",
            );
            text.sample("vantage_watchdog_healthy", &[], f64::from(u8::from(healthy)));
        }
        text.family(
            "vantage_watchdog_last_ping_success_timestamp_seconds",
            "gauge",
            "When the watchdog's receiver last accepted a heartbeat, in Unix seconds (0: not yet).",
        );
        text.sample("vantage_watchdog_last_ping_success_timestamp_seconds", &[], status.last_success.unwrap_or(0.0));
        text.finish()
    }
}

/// The store's health: no failure noted, and a probe write (an empty, synced commit) done in time.
/// A failed probe is noted like any storage failure (the coordinator then stops, see
/// `serve::Running::wait`).
async fn probe_store(store: &Arc<Store>) -> Result<(), String> {
    if let Some(failure) = store.failure() {
        return Err(failure.to_owned());
    }
    let probing = store.clone();
    let write = tokio::task::spawn_blocking(move || {
        let result = probing.sync();
        if let Err(e) = &result {
            probing.note(e);
        }
        result.map_err(|e| e.to_string())
    });
    match tokio::time::timeout(PROBE_TIMEOUT, write).await {
        Ok(Ok(result)) => result,
        Ok(Err(_)) => Err("the probe write was cancelled".into()),
        Err(_) => Err(format!("a probe write took longer than {PROBE_TIMEOUT:?}")),
    }
}

async fn look(hub: &Hub, store: &Arc<Store>, pulse: &Pulse) -> Result<String, Unhealthy> {
    let store = probe_store(store).await;
    let agents_connected = hub.agents().iter().filter(|a| a.connected).count();
    judge(&Observed { store, last_tick_ms: pulse.last_ms(), agents_connected, now_ms: pulse.now_ms() })
}

/// The always-firing `Watchdog` alert, healthy since `since_ms`, valid for `VALID_FOR` periods.
pub fn watchdog_alert(
    labels: &std::collections::BTreeMap<String, String>,
    summary: &str,
    since_ms: i64,
    now: i64,
    period: Duration,
    link: &str,
) -> Value {
    let mut all = labels.clone();
    all.insert("alertname".into(), "Watchdog".into());
    all.insert("severity".into(), "none".into());
    let mut alert = json!({
        "labels": all,
        "annotations": {
            "summary": "The Vantage coordinator is healthy: this alert fires for as long as it is.",
            "description": format!(
                "{summary}. This alert is meant to fire always; route it to a dead man's switch, which pages \
                 when it stops (the coordinator is down, stuck, cut off from its agents or cannot record)."
            ),
        },
        "startsAt": rfc3339(since_ms.min(now)),
        "endsAt": rfc3339(now + (period * VALID_FOR).as_millis() as i64),
    });
    if !link.is_empty() {
        alert["generatorURL"] = link.into();
    }
    alert
}

/// Sends what the health calls for to `watchdog`'s receiver: `Ok(true)` a heartbeat accepted,
/// `Ok(false)` nothing (or a fail ping) sent.
async fn send(
    http: &Http,
    watchdog: &Watchdog,
    health: &Result<String, Unhealthy>,
    since_ms: i64,
    link: &str,
) -> Result<bool, SendError> {
    let limit = SEND_TIMEOUT.min(watchdog.period);
    let sending = async {
        match (&watchdog.target, health) {
            (Target::Http { url, method, http: own, .. }, Ok(summary)) => {
                ping(own.as_ref().unwrap_or(http), &url.0, *method, summary).await.map(|_| true)
            }
            (Target::Http { fail_url: Some(url), method, http: own, .. }, Err(why)) => {
                let text = format!("vantage-coordinator unhealthy: {why}");
                ping(own.as_ref().unwrap_or(http), &url.0, *method, &text).await.map(|_| false)
            }
            (Target::Alertmanager { endpoint, labels }, Ok(summary)) => {
                let alert = watchdog_alert(labels, summary, since_ms, now_ms(), watchdog.period, link);
                endpoint.post(http, vec![alert]).await.map(|_| true)
            }
            _ => Ok(false),
        }
    };
    tokio::time::timeout(limit, sending)
        .await
        .map_err(|_| SendError::Transient(format!("no answer within {limit:?}")))?
}

async fn ping(http: &Http, url: &str, method: Method, summary: &str) -> Result<(), SendError> {
    match method {
        Method::Get => http.get(url, &[]).await,
        Method::Post => {
            http.post(url, "text/plain; charset=utf-8", summary.as_bytes().to_vec(), &[], false).await.map(drop)
        }
    }
}

/// Runs until aborted: every `period` of the current `[watchdog]`, a look at the coordinator's
/// health and the heartbeat if healthy. A change of health is logged once; a failed ping is
/// logged and the next comes a period later, as usual.
pub async fn run(hub: Arc<Hub>, store: Arc<Store>, pulse: Arc<Pulse>, status: Arc<Status>) {
    let http = Http::new();
    let mut last_look: Option<Instant> = None;
    let mut was: Option<Result<(), Unhealthy>> = None;
    // When the current healthy spell began: the Watchdog alert's `startsAt`.
    let mut healthy_since = now_ms();
    let started = Instant::now();
    loop {
        // The first look waits for the first tick (the hub is still starting), unless that is late.
        if pulse.last_ms() == 0 && started.elapsed() < TICK_LATE_AFTER {
            tokio::time::sleep(POLL).await;
            continue;
        }
        let alerting = hub.alerting();
        let Some(watchdog) = alerting.watchdog.clone() else {
            status.set(|s| *s = StatusInner::default());
            (last_look, was) = (None, None);
            tokio::time::sleep(POLL).await;
            continue;
        };
        let due = last_look.map_or_else(Instant::now, |t| t + watchdog.period);
        if Instant::now() < due {
            tokio::time::sleep_until(due.min(Instant::now() + POLL).into()).await;
            continue;
        }
        last_look = Some(Instant::now());
        let health = look(&hub, &store, &pulse).await;
        let state = health.as_ref().map(drop).map_err(Clone::clone);
        let changed = match (&was, &state) {
            (Some(Err(a)), Err(b)) => std::mem::discriminant(a) != std::mem::discriminant(b),
            (Some(a), b) => a.is_ok() != b.is_ok(),
            (None, _) => true,
        };
        if changed {
            match &state {
                Ok(()) => {
                    healthy_since = now_ms();
                    tracing::info!(kind = watchdog.target.kind(), period = ?watchdog.period, "watchdog: healthy, sending heartbeats");
                }
                Err(why) => tracing::warn!(
                    kind = watchdog.target.kind(),
                    "watchdog: unhealthy, no heartbeat until it is healthy again: {why}"
                ),
            }
        }
        status.set(|s| (s.configured, s.healthy) = (true, Some(state.is_ok())));
        was = Some(state);
        match send(&http, &watchdog, &health, healthy_since, &alerting.status_url).await {
            Ok(true) => {
                status.set(|s| s.last_success = Some(now_ms() as f64 / 1000.0));
                tracing::debug!("watchdog: heartbeat sent");
            }
            Ok(false) => {}
            Err(e) => tracing::warn!(
                kind = watchdog.target.kind(),
                "watchdog: the heartbeat failed, next in {:?}: {e}",
                watchdog.period
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn observed(store: Result<(), &str>, tick_ago_ms: i64, agents: usize) -> Observed {
        let now_ms = 1_700_000_000_000;
        Observed {
            store: store.map_err(str::to_owned),
            last_tick_ms: now_ms - tick_ago_ms,
            agents_connected: agents,
            now_ms,
        }
    }

    #[test]
    fn healthy_is_a_writable_store_a_ticking_clock_and_a_connected_agent() {
        assert_eq!(
            judge(&observed(Ok(()), 800, 3)),
            Ok("vantage-coordinator healthy: store writable, ticking, 3 agents connected".to_owned())
        );
        assert!(judge(&observed(Ok(()), 800, 1)).unwrap().ends_with("1 agent connected"));
        for (case, expected) in [
            (observed(Err("No space left on device"), 800, 3), Unhealthy::Store("No space left on device".into())),
            (observed(Ok(()), 31_000, 3), Unhealthy::NotTicking(Some(Duration::from_secs(31)))),
            (observed(Ok(()), 800, 0), Unhealthy::NoAgent),
            // The store is named first, then the clock.
            (observed(Err("io"), 60_000, 0), Unhealthy::Store("io".into())),
            (observed(Ok(()), 60_000, 0), Unhealthy::NotTicking(Some(Duration::from_secs(60)))),
        ] {
            assert_eq!(judge(&case), Err(expected), "{case:?}");
        }
        let never = Observed { last_tick_ms: 0, ..observed(Ok(()), 0, 3) };
        assert_eq!(judge(&never), Err(Unhealthy::NotTicking(None)), "no tick yet is not ticking");
        assert_eq!(Unhealthy::NotTicking(None).to_string(), "the clock is stuck: it has not ticked yet");
    }

    #[test]
    fn the_watchdog_alert_always_fires_with_its_labels_for_four_periods() {
        let labels = [("coordinator".to_owned(), "vantage-1".to_owned())].into();
        let now = 1_700_000_030_000;
        let alert =
            watchdog_alert(&labels, "healthy", now - 30_000, now, Duration::from_secs(60), "https://v.example/");
        assert_eq!(alert["labels"], json!({ "alertname": "Watchdog", "severity": "none", "coordinator": "vantage-1" }));
        assert_eq!(alert["startsAt"], rfc3339(now - 30_000));
        assert_eq!(alert["endsAt"], rfc3339(now + 240_000));
        assert_eq!(alert["generatorURL"], "https://v.example/");
        assert!(alert["annotations"]["description"].as_str().unwrap().starts_with("healthy. "));
    }

    #[test]
    fn metrics_appear_with_the_watchdog_and_say_its_last_look_and_ping() {
        let status = Status::default();
        assert_eq!(status.render_metrics(), "", "nothing without [watchdog]");
        status.set(|s| s.configured = true);
        let text = status.render_metrics();
        assert!(!text.contains("vantage_watchdog_healthy "), "no look yet: {text}");
        assert!(text.contains("\nvantage_watchdog_last_ping_success_timestamp_seconds 0\n"), "{text}");
        status.set(|s| (s.healthy, s.last_success) = (Some(false), Some(1_700_000_000.5)));
        let text = status.render_metrics();
        assert!(text.contains("\nvantage_watchdog_healthy 0\n"), "{text}");
        assert!(text.contains("\nvantage_watchdog_last_ping_success_timestamp_seconds 1700000000.5\n"), "{text}");
    }
}
