//! The alert planner for targets: which alerts a judgement raises (`down` and `recovered` with
//! the incident, as hold-down and flap damping let them through, `flapping` and its clearing,
//! `degraded` and its clearing, `unknown` and its clearing, certificate alerts),
//! the resolves a removed target owes, and how alerts become deliveries (routes, silences, the
//! channels that heard a trigger). Pure over [`AlertMemory`]: no clock, no store.

use std::time::Duration;

use super::damping::{self, Change, FlapMemory, FlapStep, Page, Paging};
use super::judge::{IncidentStep, Judgement};
use super::memory::{AlertMemory, CertMemory};
use super::targets::{Spec, Target};
use crate::alert::{Alert, AlertCause, AlertKind, AlertRecord, Alerting, Damping, Delivery, DeliveryState, Silence};
use crate::verdict::{Opinion, Verdict};

/// The dedup key of one spell of a target's problem (`kind`: `target`, `degraded`, `unknown`)
/// that began at `since`: the next outage, or the same target added again, is a fresh incident
/// on the pager. For `target` and `degraded`, `since` is taken from the probes' times
/// ([`Judgement::began`]), so the coordinators of a pair give one outage the same key. A spell
/// alerted under the older key (without its start) keeps it, so its resolve still matches.
pub fn spell_key(memory: &AlertMemory, kind: &str, url: &str, since: i64) -> String {
    let legacy = format!("vantage/{kind}/{url}");
    if memory.alerted(&legacy) { legacy } else { format!("{legacy}#{since}") }
}

fn labels(spec: &Spec) -> std::collections::BTreeMap<String, String> {
    spec.labels.clone()
}

/// An alert about a target, from its judgement.
fn target_alert(target: &Target, kind: AlertKind, judgement: &Judgement, now: i64, dedup: String) -> Alert {
    let decision = &judgement.decision;
    let mut alert = Alert::new(kind, &target.spec.url, now, dedup);
    alert.labels = labels(&target.spec);
    alert.of_regions = judgement.opinions.len();
    if matches!(kind, AlertKind::Down | AlertKind::Degraded) {
        alert.regions = decision.failing.clone();
        alert.cause = decision.cause.map(|c| AlertCause {
            code: c.as_str().into(),
            message: c.cause().into(),
            hint: c.hint().into(),
        });
        // The first failing region's own words and failing backend.
        if let Some(latest) = decision.failing.first().and_then(|r| target.latest_in(r)) {
            // An agent's words, bounded: receivers limit payload sizes.
            alert.detail = latest.detail().chars().take(1024).collect();
            alert.backend = latest.failure.as_ref().and_then(|f| f.backend.as_deref()).map(str::to_owned);
        }
    }
    alert
}

/// What `verdict` held since `since` means for the target's `unknown` alert.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Blindness {
    /// `UNKNOWN` for `unknown_after` and not alerted yet.
    Raise,
    /// Judged again after an `unknown` alert (raised for the spell that began then).
    Clear(i64),
    Nothing,
}

/// `alerted` is the start of the spell an `unknown` alert was raised for. `after` zero: never.
pub fn blindness(verdict: Verdict, since: i64, alerted: Option<i64>, now: i64, after: Duration) -> Blindness {
    match (verdict, alerted) {
        (Verdict::Unknown, None) if !after.is_zero() && now.saturating_sub(since) >= after.as_millis() as i64 => {
            Blindness::Raise
        }
        (Verdict::Unknown, _) => Blindness::Nothing,
        (_, Some(spell)) => Blindness::Clear(spell),
        (_, None) => Blindness::Nothing,
    }
}

/// The alerts a judgement of `target` raises, with the memory they change. `previous`: the
/// verdict decided before this judgement.
pub fn judgement_alerts(
    memory: &mut AlertMemory,
    target: &Target,
    judgement: &Judgement,
    previous: Option<Verdict>,
    now: i64,
    unknown_after: Duration,
    damping: &Damping,
) -> Vec<Alert> {
    let url: &str = &target.spec.url;
    let verdict = judgement.decision.verdict;
    let mut alerts = paging_alerts(memory, target, judgement, previous, now, damping);
    {
        // A degraded alert is raised once the verdict has held until `degraded_alert_at` (a region
        // failing alone may be found impaired meanwhile: README, "Impaired regions"), and cleared
        // once, when the target is up or down again (unknown says nothing either way).
        match (verdict, memory.degraded.get(url).copied()) {
            (Verdict::Degraded, None) if target.open_incident.is_none() && now >= judgement.degraded_alert_at => {
                let key = spell_key(memory, "degraded", url, judgement.began);
                alerts.push(target_alert(target, AlertKind::Degraded, judgement, now, key));
                memory.set_degraded(url, Some(judgement.began));
            }
            (Verdict::Up | Verdict::Down, Some(since)) if judgement.changed => {
                // Cleared where it was heard (or held back); a degraded spell nobody was told
                // about (the usual first seconds of an outage) ends quietly.
                let key = spell_key(memory, "degraded", url, since);
                if memory.alerted(&key) {
                    let mut alert = target_alert(target, AlertKind::DegradedCleared, judgement, now, key);
                    (alert.since_ms, alert.duration_ms) = (since, Some(now - since));
                    alerts.push(alert);
                }
                memory.set_degraded(url, None);
            }
            _ => {}
        }
    }
    match blindness(verdict, judgement.record.since_ms, memory.unknown.get(url).copied(), now, unknown_after) {
        Blindness::Raise => {
            alerts.push(unknown_alert(memory, target, judgement, now));
            memory.set_unknown(url, Some(judgement.record.since_ms));
        }
        Blindness::Clear(since) => {
            let key = spell_key(memory, "unknown", url, since);
            let mut alert = target_alert(target, AlertKind::UnknownCleared, judgement, now, key);
            (alert.since_ms, alert.duration_ms) = (since, Some(now - since));
            alert.detail = format!("judged {} again", verdict.as_str());
            alerts.push(alert);
            memory.set_unknown(url, None);
        }
        Blindness::Nothing => {}
    }
    alerts.extend(cert_alerts(memory, target, judgement, now));
    alerts
}

/// `down` and `recovered` as hold-down and flap damping let them through, and `flapping` and
/// `flapping_cleared` (README: "Flap damping and hold-down"). With neither configured, `down`
/// goes with the incident's opening and `recovered` with its closing, and nothing is remembered.
fn paging_alerts(
    memory: &mut AlertMemory,
    target: &Target,
    judgement: &Judgement,
    previous: Option<Verdict>,
    now: i64,
    damping: &Damping,
) -> Vec<Alert> {
    let url: &str = &target.spec.url;
    let verdict = judgement.decision.verdict;
    // The target's own settings over the defaults.
    let settings = target.spec.damping(damping);
    let mut alerts = Vec::new();
    // Flap damping counts changes between known verdicts: an UNKNOWN spell is the agents', not
    // the target's.
    let known = |v: Verdict| v != Verdict::Unknown;
    let changed = judgement.changed && previous.is_some_and(known) && known(verdict);
    let change = changed.then(|| Change { cause: judgement.decision.cause.map(|c| c.as_str()) });
    let interval = target.spec.timing().0.as_millis() as i64;
    let before = memory.flaps.get(url);
    let (flap, step) = damping::observe(before, change, now, interval, &settings);
    match step {
        // A flapping target keeps its flap memory.
        FlapStep::Started => {
            if let Some(f) = flap.as_ref() {
                alerts.push(flapping_alert(memory, target, judgement, f, now, &settings));
            }
        }
        FlapStep::Cleared { since } => {
            let key = spell_key(memory, "flapping", url, since);
            let mut alert = target_alert(target, AlertKind::FlappingCleared, judgement, now, key);
            (alert.since_ms, alert.duration_ms) = (since, Some(now - since));
            alert.detail = format!("now {}", verdict.as_str());
            alerts.push(alert);
        }
        FlapStep::None => {}
    }
    let quiet = flap.as_ref().is_some_and(|f| f.flapping.is_some());
    if flap.as_ref() != before {
        let record = changed || step != FlapStep::None || flap.is_none();
        memory.set_flap(url, flap, record);
    }
    // The pager's state before this judgement: without a remembered one, the incident as it was.
    let was_open = match judgement.incident {
        IncidentStep::Opened => None,
        IncidentStep::Closed { opened } => Some(opened),
        IncidentStep::None => target.open_incident,
    };
    let before = memory.paging.get(url).copied().unwrap_or(Paging::plain(was_open));
    let hold = target.spec.hold(damping);
    let (after, page) = damping::page(before, target.open_incident, judgement.incident, quiet, now, hold);
    memory.set_paging(url, after, Paging::plain(target.open_incident));
    // The outbox delivers a subject's alerts by time: what settling releases goes a millisecond
    // after the `flapping_cleared` that explains it.
    let now = if matches!(step, FlapStep::Cleared { .. }) { now + 1 } else { now };
    match page {
        Page::Down { opened } => {
            let key = spell_key(memory, "target", url, opened);
            let mut alert = target_alert(target, AlertKind::Down, judgement, now, key);
            // Since the incident began (a `down` held back by hold-down says how long it has lasted).
            alert.since_ms = opened;
            alerts.push(alert);
        }
        Page::Recovered { start, up_since } => {
            let key = spell_key(memory, "target", url, start);
            let mut alert = target_alert(target, AlertKind::Recovered, judgement, now, key);
            (alert.since_ms, alert.duration_ms) = (start, Some(up_since - start));
            alerts.push(alert);
        }
        Page::None => {}
    }
    alerts
}

/// When a `down` or `recovered` held back by hold-down falls due for `target` if nothing else
/// happens (`i64::MAX`: none is).
pub fn page_due(memory: &AlertMemory, target: &Target, damping: &Damping) -> i64 {
    let url: &str = &target.spec.url;
    let paging = memory.paging.get(url).copied().unwrap_or(Paging::plain(target.open_incident));
    let quiet = memory.flaps.get(url).is_some_and(|f| f.flapping.is_some());
    damping::due(&paging, target.open_incident, quiet, target.spec.hold(damping))
}

/// `flapping`: the rate, the thresholds, the verdict now and the causes seen.
fn flapping_alert(
    memory: &AlertMemory,
    target: &Target,
    judgement: &Judgement,
    flap: &FlapMemory,
    now: i64,
    damping: &Damping,
) -> Alert {
    let url: &str = &target.spec.url;
    let (since, rate) = flap.flapping.unwrap_or((now, 0));
    let mut alert =
        target_alert(target, AlertKind::Flapping, judgement, now, spell_key(memory, "flapping", url, since));
    alert.since_ms = since;
    alert.regions = judgement.decision.failing.clone();
    let causes = if flap.causes.is_empty() { "none".to_owned() } else { flap.causes.join(", ") };
    alert.cause = Some(AlertCause {
        code: "flapping".into(),
        message: format!(
            "The verdict changed in {rate}% of the last {window} probe intervals (flapping from {high}%); it is {verdict} \
             now. Its down and recovered notifications are held back until fewer than {low}% of the intervals \
             change; its verdicts and incidents are still recorded.",
            window = damping.flap_window,
            high = damping.flap_high,
            low = damping.flap_low,
            verdict = judgement.decision.verdict.as_str(),
        ),
        hint: "Look at the causes seen: a backend failing part of the requests behind a load balancer, a timeout \
               too close to the response time, or a rate limit. The target's page on the status page and GetHistory \
               show each result."
            .into(),
    });
    alert.detail = format!("changed in {rate}% of the last {} intervals; causes seen: {causes}", damping.flap_window);
    alert
}

/// `unknown`: too few regions can judge the target, for long enough to say so.
fn unknown_alert(memory: &AlertMemory, target: &Target, judgement: &Judgement, now: i64) -> Alert {
    let (spec, since, opinions) = (&target.spec, judgement.record.since_ms, &judgement.opinions);
    let mut alert = Alert::new(AlertKind::Unknown, &spec.url, now, spell_key(memory, "unknown", &spec.url, since));
    alert.labels = labels(spec);
    alert.since_ms = since;
    alert.of_regions = opinions.len();
    alert.regions = opinions.iter().filter(|o| o.opinion == Opinion::Unknown).map(|o| o.region.clone()).collect();
    let known = opinions.len() - alert.regions.len();
    let message = if opinions.is_empty() {
        "Vantage cannot judge this target: no region judges it (no agent has connected from any of the \
         default region set yet)."
            .to_owned()
    } else {
        format!(
            "Vantage cannot judge this target: {known} of its {} regions hold an opinion, and {} are needed. The \
             others ({}) have no connected agent or only stale results.",
            opinions.len(),
            judgement.decision.quorum,
            alert.regions.join(", ")
        )
    };
    alert.cause = Some(AlertCause {
        code: "no_quorum".into(),
        message,
        hint: "Check the agents of those regions (vantage-coordinator regions ls; ListAgents): service running, \
               network to the coordinator, certificate valid. A region gone for good can be forgotten \
               (vantage-coordinator regions forget REGION)."
            .into(),
    });
    alert
}

/// Certificate alerts for a target: its certificate changed, or crossed into warning or critical
/// for the first time (once per certificate).
fn cert_alerts(memory: &mut AlertMemory, target: &Target, judgement: &Judgement, now: i64) -> Vec<Alert> {
    let spec = &target.spec;
    // The certificate closest to expiry that any judging region sees.
    let closest = target
        .latest
        .iter()
        .filter(|(region, _)| judgement.opinions.iter().any(|o| o.region == **region))
        .filter_map(|(_, l)| l.cert.as_deref())
        .filter(|c| !c.sha256.is_empty())
        .min_by(|a, b| (a.days_remaining, &a.sha256).cmp(&(b.days_remaining, &b.sha256)));
    let Some(cert) = closest else { return Vec::new() };
    let level = cert.level();
    let known = memory.certs.get(&*spec.url);
    let known_level = known.and_then(|m| m.levels.iter().find(|(fp, _)| *fp == cert.sha256)).map(|(_, l)| *l);
    if known.is_some_and(|m| m.current == cert.sha256) && known_level.unwrap_or(0) >= level {
        return Vec::new();
    }
    let mut remembered = known.cloned().unwrap_or_default();
    let not_after = cert.not_after.as_ref().map(crate::clock::timestamp_rfc3339);
    let make = |kind: AlertKind, dedup: String| {
        let mut alert = Alert::new(kind, &spec.url, now, dedup);
        alert.labels = labels(spec);
        alert.fingerprint = Some(cert.sha256.clone());
        alert.not_after = not_after.clone();
        alert
    };
    let mut alerts = Vec::new();
    if !remembered.current.is_empty() && remembered.current != cert.sha256 && known_level.is_none() {
        let mut changed = make(AlertKind::CertChanged, format!("vantage/cert/{}/{}", spec.url, remembered.current));
        changed.previous_fingerprint = Some(remembered.current.clone());
        changed.detail = format!("now served: {} (expires {})", cert.subject, not_after.clone().unwrap_or_default());
        alerts.push(changed);
    }
    if level > known_level.unwrap_or(0) {
        let kind = if level == 2 { AlertKind::CertCritical } else { AlertKind::CertWarning };
        let mut alert = make(kind, format!("vantage/cert/{}/{}", spec.url, cert.sha256));
        let code = if level == 2 { "cert_critical" } else { "cert_warning" };
        alert.cause = Some(AlertCause {
            code: code.into(),
            message: format!("The certificate expires in {} days.", cert.days_remaining),
            hint: "Renew the certificate and reload the server; check that automated renewal still runs.".into(),
        });
        alert.detail = format!("{} (issuer {})", cert.subject, cert.issuer);
        alerts.push(alert);
    }
    remembered.current = cert.sha256.clone();
    match remembered.levels.iter_mut().find(|(fp, _)| *fp == cert.sha256) {
        Some(entry) => entry.1 = entry.1.max(level),
        None => remembered.levels.push((cert.sha256.clone(), level)),
    }
    // A few recent certificates are enough to ride out a rotation.
    if remembered.levels.len() > 8 {
        remembered.levels.remove(0);
    }
    memory.set_cert(&spec.url, CertMemory { ..remembered });
    alerts
}

/// Why a target is removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Removal {
    /// `DeleteTarget`.
    Api,
    /// No longer in the config file or its target file (at start-up or on a reload).
    Config,
    /// Owned by another shard after a `[shard]` change.
    Shard,
}

/// The resolves a removed target owes: `recovered` for the outage whose `down` is out,
/// `flapping_cleared`, `degraded_cleared` and `unknown_cleared` for alerts it raised, each with the `removed` cause; its alert memory goes.
pub fn removal_alerts(memory: &mut AlertMemory, target: &Target, why: Removal, now: i64) -> Vec<Alert> {
    let url: &str = &target.spec.url;
    let said = match why {
        Removal::Api => "The target was deleted (DeleteTarget)".to_owned(),
        Removal::Config => match target.spec.source().strip_prefix("file:") {
            Some(path) => format!("The target is no longer in its target file {path}"),
            None => "The target is no longer in the config file".to_owned(),
        },
        Removal::Shard => "The target belongs to another shard since the config's [shard] changed".to_owned(),
    };
    let make = |memory: &AlertMemory, kind: AlertKind, prefix: &str, since: i64| {
        let mut alert = Alert::new(kind, url, now, spell_key(memory, prefix, url, since));
        alert.labels = labels(&target.spec);
        (alert.since_ms, alert.duration_ms) = (since, Some(now - since));
        alert.cause = Some(AlertCause {
            code: "removed".into(),
            message: format!("{said}: what it raised ends here, and its open incident is closed as removed."),
            hint: "Nothing to do, unless it was removed by mistake: add it again (it starts afresh).".into(),
        });
        alert.detail = "removed".into();
        alert
    };
    let mut alerts = Vec::new();
    // The outage whose `down` is out (a `down` still held back by hold-down or flapping owes no
    // resolve).
    let paged = memory.paging.get(url).map_or(target.open_incident, |p| p.paged);
    if let Some(opened) = paged {
        alerts.push(make(memory, AlertKind::Recovered, "target", opened));
    }
    memory.set_paging(url, Paging::default(), Paging::default());
    if let Some((since, _)) = memory.flaps.get(url).and_then(|f| f.flapping) {
        alerts.push(make(memory, AlertKind::FlappingCleared, "flapping", since));
    }
    if memory.flaps.contains_key(url) {
        memory.set_flap(url, None, true);
    }
    if let Some(since) = memory.degraded.get(url).copied() {
        let alert = make(memory, AlertKind::DegradedCleared, "degraded", since);
        if memory.alerted(&alert.dedup_key) {
            alerts.push(alert);
        }
        memory.set_degraded(url, None);
    }
    if let Some(since) = memory.unknown.get(url).copied() {
        alerts.push(make(memory, AlertKind::UnknownCleared, "unknown", since));
        memory.set_unknown(url, None);
    }
    // Certificate alerts have no resolve of their own; what is remembered of them goes.
    memory.forget_cert(url);
    let cert_prefix = format!("vantage/cert/{url}/");
    let stale: Vec<String> =
        memory.sent.keys().chain(memory.held.keys()).filter(|k| k.starts_with(&cert_prefix)).cloned().collect();
    for key in stale {
        memory.take_heard(&key);
        memory.take_held(&key);
    }
    alerts
}

/// Plans alerts into deliveries. A trigger goes where the routes say, unless a silence holds it
/// back (it is then kept, to be sent if its problem outlasts the silence). A resolve goes to every
/// channel that heard its trigger as well as where the routes say, and is held back exactly when
/// its trigger was.
pub fn plan(
    memory: &mut AlertMemory,
    alerting: &Alerting,
    silences: &[Silence],
    alerts: Vec<Alert>,
) -> Vec<AlertRecord> {
    let mut records = Vec::new();
    for alert in alerts {
        let dedup = alert.dedup_key.clone();
        if alert.kind.resolves() {
            let held = memory.take_held(&dedup).is_some();
            let heard = memory.take_heard(&dedup);
            let mut record = alerting.plan(alert, &[]);
            if held {
                for delivery in &mut record.deliveries {
                    delivery.state = DeliveryState::Silenced;
                }
                record.silenced_by = Some("its trigger was held back by a silence".into());
            } else {
                for channel in heard {
                    if !record.deliveries.iter().any(|d| d.channel == channel) {
                        record.deliveries.push(Delivery {
                            channel,
                            state: DeliveryState::Pending,
                            attempts: 0,
                            last_error: String::new(),
                            next_attempt_ms: record.alert.at_ms,
                            delivered_ms: 0,
                        });
                    }
                }
            }
            records.push(record);
        } else {
            let record = alerting.plan(alert, silences);
            if record.silenced_by.is_some() {
                memory.hold(&dedup, record.alert.clone());
            } else if !record.deliveries.is_empty() {
                memory.heard(&dedup, record.deliveries.iter().map(|d| d.channel.clone()));
                if record.deliveries.iter().any(|d| alerting.resends(&d.channel)) {
                    memory.keep_firing(&record.alert);
                }
            }
            records.push(record);
        }
    }
    records
}

/// Triggers held back by a silence that no longer covers them: sent now if their problem is
/// still there (`still`), forgotten otherwise.
pub fn released_alerts(
    memory: &mut AlertMemory,
    silences: &[Silence],
    still: impl Fn(&AlertMemory, &Alert) -> bool,
    now: i64,
) -> Vec<Alert> {
    let ended: Vec<String> = memory
        .held
        .iter()
        .filter(|(_, alert)| !silences.iter().any(|s| s.active(now) && s.matches(&alert.subject, &alert.labels)))
        .map(|(dedup, _)| dedup.clone())
        .collect();
    let mut released = Vec::new();
    for dedup in ended {
        let Some(alert) = memory.take_held(&dedup) else { continue };
        if still(memory, &alert) {
            let mut again = alert;
            again.id = crate::alert::new_id();
            again.at_ms = now;
            again.detail = format!("{} (held back by a silence that has ended)", again.detail).trim().to_owned();
            released.push(again);
        }
    }
    released
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_is_raised_after_its_delay_once_and_cleared_by_any_known_verdict() {
        let after = Duration::from_secs(300);
        let at = |s: i64| s * 1000;
        // Not before the delay, then once.
        assert_eq!(blindness(Verdict::Unknown, at(0), None, at(299), after), Blindness::Nothing);
        assert_eq!(blindness(Verdict::Unknown, at(0), None, at(300), after), Blindness::Raise);
        assert_eq!(blindness(Verdict::Unknown, at(0), Some(at(0)), at(900), after), Blindness::Nothing);
        // Judged again, whatever the verdict: cleared, naming the spell it was raised for.
        for verdict in [Verdict::Up, Verdict::Degraded, Verdict::Down] {
            assert_eq!(blindness(verdict, at(950), Some(at(0)), at(950), after), Blindness::Clear(at(0)));
            assert_eq!(blindness(verdict, at(0), None, at(9_999), after), Blindness::Nothing);
        }
        // Zero turns it off.
        assert_eq!(blindness(Verdict::Unknown, at(0), None, at(1_000_000), Duration::ZERO), Blindness::Nothing);
    }

    #[test]
    fn a_trigger_heard_by_a_channel_that_re_sends_is_kept_firing_until_its_resolve() {
        use crate::alert::channel::{Alertmanager, Endpoint, Named, Slack};
        use crate::alert::{Alert, Route};
        use std::sync::Arc;
        let endpoint = Endpoint { url: "http://127.0.0.1:9093/api/v2/alerts".into(), auth: None, http: None };
        let am = Alertmanager { endpoint, resend_delay: Duration::from_secs(60) };
        let route = |channel: &str| Route {
            channels: vec![channel.into()],
            labels: [("team".to_owned(), channel.to_owned())].into(),
            events: None,
        };
        let alerting = Alerting {
            channels: vec![
                Named { name: "am".into(), channel: Arc::new(am) },
                Named { name: "chat".into(), channel: Arc::new(Slack { url: "http://x/".into() }) },
            ],
            routes: vec![route("am"), route("chat")],
            status_url: "https://vantage.example/".into(),
            ..Alerting::default()
        };
        let mut memory = AlertMemory::default();
        let alert = |kind: AlertKind, url: &str, team: &str| {
            let mut a = Alert::new(kind, url, 1_000, format!("vantage/target/{url}#1"));
            a.labels = [("team".to_owned(), team.to_owned())].into();
            a
        };
        let (a, b) = ("https://a.example/", "https://b.example/");
        plan(&mut memory, &alerting, &[], vec![alert(AlertKind::Down, a, "am"), alert(AlertKind::Down, b, "chat")]);
        let firing: Vec<&str> = memory.firing.values().map(|t| t.subject.as_str()).collect();
        assert_eq!(firing, [a], "only what the re-sending channel heard is kept");
        assert_eq!(memory.firing.values().next().unwrap().link, "https://vantage.example/", "kept as planned");
        plan(&mut memory, &alerting, &[], vec![alert(AlertKind::Recovered, a, "am")]);
        assert!(memory.firing.is_empty(), "its resolve ends it");
    }

    #[test]
    fn each_spell_of_a_problem_has_its_own_dedup_key_and_older_keys_are_kept() {
        let mut memory = AlertMemory::default();
        let url = "https://shop.example/";
        let first = spell_key(&memory, "target", url, 1_000);
        let second = spell_key(&memory, "target", url, 2_000);
        assert_ne!(first, second, "a new outage (or the target added again) is a new incident");
        assert!(first.starts_with("vantage/target/https://shop.example/"), "{first}");
        // An outage alerted by an older coordinator, under the key without its start.
        memory.heard(&format!("vantage/target/{url}"), ["pager".to_owned()]);
        assert_eq!(spell_key(&memory, "target", url, 3_000), format!("vantage/target/{url}"));
        assert_ne!(spell_key(&memory, "degraded", url, 3_000), format!("vantage/degraded/{url}"));
    }

    #[test]
    fn a_removed_targets_resolve_says_where_it_came_from_and_why_it_went() {
        let removed = |source: &str, why: Removal| {
            let spec = vantage_proto::v1::TargetSpec {
                url: "https://shop.example/".into(),
                source: source.into(),
                ..Default::default()
            };
            let mut target = Target::new(spec);
            target.open_incident = Some(1_000);
            let alerts = removal_alerts(&mut AlertMemory::default(), &target, why, 5_000);
            assert_eq!(alerts.len(), 1, "the open incident's resolve");
            assert_eq!(alerts[0].kind, AlertKind::Recovered);
            alerts[0].cause.as_ref().unwrap().message.clone()
        };
        assert!(removed("api", Removal::Api).starts_with("The target was deleted (DeleteTarget):"));
        assert!(removed("config", Removal::Config).starts_with("The target is no longer in the config file:"));
        assert!(
            removed("file:/etc/vantage/sd/web.json", Removal::Config)
                .starts_with("The target is no longer in its target file /etc/vantage/sd/web.json:")
        );
        assert!(removed("config", Removal::Shard).starts_with("The target belongs to another shard"));
    }
}
