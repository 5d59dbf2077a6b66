//! Correlated incidents: targets that turn DOWN for one shared cause (the same failing backend
//! address, the same served certificate, or the same DNS failure in one zone) within the
//! correlation window become one incident group, paged once with every member, updated (the same
//! dedup key, the grown member list) as members join, and resolved once when the last member
//! recovers. A target that shares its cause with no other target is paged as before, at once and
//! under its own key. Pure over [`AlertMemory`]: the clock, the targets and the silences come in.
//!
//! The hold: the first `down` of a cause that other targets share (they serve from the same
//! address, the same certificate, the same zone) waits until every one of them is DOWN too, or
//! until the window ends, whichever comes first; then one alert goes out for all that joined (a
//! plain `down` if only one did). A member whose incident closes while held is never paged.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

mod cause;

use super::memory::{AlertMemory, GroupMember, GroupMemory};
use super::targets::{Target, Targets};
use crate::alert::{Alert, AlertGroup, AlertKind, Silence};
use crate::store::IncidentGroup;
use crate::verdict::Verdict;
use cause::{shared_cause, shares};

/// The groups in alerting's memory while one batch of alerts is routed: changed in place, and
/// recorded once per group at the end (a mass outage joins many members to one group at once;
/// recording the group after each would write it over and over).
struct Book<'m> {
    groups: &'m mut HashMap<String, GroupMemory>,
    touched: BTreeSet<String>,
}

impl Book<'_> {
    fn set_group(&mut self, key: &str, group: Option<GroupMemory>) {
        match group {
            Some(g) => self.groups.insert(key.to_owned(), g),
            None => self.groups.remove(key),
        };
        self.touched.insert(key.to_owned());
    }
}

/// Routes `work` over the memory's groups, then records each group it changed.
fn booked<T>(memory: &mut AlertMemory, work: impl FnOnce(&mut Book<'_>) -> T) -> T {
    let mut book = Book { groups: &mut memory.groups, touched: BTreeSet::new() };
    let out = work(&mut book);
    for key in book.touched {
        let group = memory.groups.get(&key).cloned();
        memory.set_group(&key, group);
    }
    out
}

/// What grouping reads besides its memory.
pub struct Grouping<'a> {
    pub targets: &'a Targets,
    pub silences: &'a [Silence],
    /// `[alerts] correlation_window` (`None`: two intervals of the first member; zero: off).
    pub window: Option<Duration>,
    pub now: i64,
}

fn silenced(silences: &[Silence], target: &Target, now: i64) -> bool {
    silences.iter().any(|s| s.active(now) && s.matches(&target.spec.url, &target.spec.labels))
}

/// Routes a judgement's alerts through grouping: a groupable `down` joins (or starts) its cause's
/// group, a member's `recovered` is taken by its group; the rest pass unchanged. Returns the
/// alerts to plan; the incidents to annotate go to `notes`.
pub fn route(
    memory: &mut AlertMemory,
    g: &Grouping<'_>,
    alerts: Vec<Alert>,
    notes: &mut Vec<IncidentGroup>,
) -> Vec<Alert> {
    let mut out = Vec::with_capacity(alerts.len());
    // Targets turning DOWN in this judgement are already DOWN in `targets`, yet still to join.
    let joining: Vec<String> =
        alerts.iter().filter(|a| a.kind == AlertKind::Down && a.group.is_none()).map(|a| a.subject.clone()).collect();
    booked(memory, |book| {
        for alert in alerts {
            match alert.kind {
                AlertKind::Down if alert.group.is_none() => out.extend(on_down(book, g, &joining, alert, notes)),
                AlertKind::Recovered if alert.group.is_none() => out.extend(on_recovered(book, alert, g.now)),
                _ => out.push(alert),
            }
        }
    });
    out
}

fn on_down(
    memory: &mut Book<'_>,
    g: &Grouping<'_>,
    joining: &[String],
    alert: Alert,
    notes: &mut Vec<IncidentGroup>,
) -> Vec<Alert> {
    let Some(target) = g.targets.get(alert.subject.as_str()) else { return vec![alert] };
    if silenced(g.silences, target, g.now) {
        return vec![alert];
    }
    let Some(cause) = shared_cause(target, &alert) else { return vec![alert] };
    let key = cause.key();
    let url = alert.subject.clone();
    let opened = target.open_incident.unwrap_or(alert.since_ms);
    if let Some(group) = memory.groups.get_mut(&key) {
        memory.touched.insert(key.clone());
        match group.members.binary_search_by(|m| m.url.cmp(&url)) {
            Ok(i) => (group.members[i].opened, group.members[i].open) = (opened, true),
            Err(i) => group.members.insert(i, GroupMember { url: url.clone(), opened, open: true }),
        }
        group.waiting.retain(|w| *w != url);
        if let Some(dedup) = group.dedup.clone() {
            // Paged already: the same page again, with the grown list (an update, not a new page).
            notes.extend(annotations(group, &dedup));
            return vec![group_alert(&key, group, &alert, AlertKind::Down, &dedup, g.now)];
        }
        group.held.push(alert);
        return if group.waiting.is_empty() { release(memory, &key, g.now, notes) } else { Vec::new() };
    }
    let window = g.window.unwrap_or_else(|| 2 * target.spec.timing().0);
    if window.is_zero() {
        return vec![alert];
    }
    let waiting: Vec<String> = g
        .targets
        .values()
        .filter(|t| *t.spec.url != *url)
        .filter(|t| {
            let down = t.open_incident.is_some() || t.verdict.is_some_and(|v| v.verdict == Verdict::Down);
            !down || joining.iter().any(|j| *j == *t.spec.url)
        })
        .filter(|t| !silenced(g.silences, t, g.now) && shares(t, &cause.identity))
        .map(|t| t.spec.url.to_string())
        .collect();
    if waiting.is_empty() {
        // Alone on its cause: paged at once, as without grouping.
        return vec![alert];
    }
    let group = GroupMemory {
        words: cause.words(),
        window_ends: g.now.saturating_add(window.as_millis() as i64),
        waiting,
        labels: alert.labels.clone(),
        members: vec![GroupMember { url, opened, open: true }],
        held: vec![alert],
        dedup: None,
    };
    memory.set_group(&key, Some(group));
    Vec::new()
}

fn on_recovered(memory: &mut Book<'_>, alert: Alert, now: i64) -> Vec<Alert> {
    let url = alert.subject.as_str();
    let found = memory.groups.iter().find(|(_, g)| g.members.iter().any(|m| m.url == url && m.open));
    let Some(key) = found.map(|(key, _)| key.clone()) else { return vec![alert] };
    let Some(group) = memory.groups.get_mut(&key) else { return vec![alert] };
    let Some(dedup) = group.dedup.clone() else {
        // Over before its page went out: never told, so nothing to resolve.
        group.held.retain(|a| a.subject != url);
        group.members.retain(|m| m.url != url);
        let empty = group.held.is_empty();
        memory.touched.insert(key.clone());
        if empty {
            memory.groups.remove(&key);
        }
        return Vec::new();
    };
    if let Some(member) = group.members.iter_mut().find(|m| m.url == url) {
        member.open = false;
    }
    memory.touched.insert(key.clone());
    if group.members.iter().any(|m| m.open) {
        return Vec::new();
    }
    // The last member is back: the group's one resolve.
    let since = group.members.iter().map(|m| m.opened).min().unwrap_or(now);
    let mut resolve = group_alert(&key, group, &alert, AlertKind::Recovered, &dedup, now);
    (resolve.since_ms, resolve.duration_ms) = (since, Some(now - since));
    memory.groups.remove(&key);
    vec![resolve]
}

/// Groups whose window has ended are paged now (with whoever joined). What this returns has been
/// through grouping: it is planned as it is, never routed again (a lone member's `down` would
/// start a new hold).
pub fn due(memory: &mut AlertMemory, now: i64, notes: &mut Vec<IncidentGroup>) -> Vec<Alert> {
    let keys: Vec<String> = memory
        .groups
        .iter()
        .filter(|(_, g)| g.dedup.is_none() && g.window_ends <= now)
        .map(|(key, _)| key.clone())
        .collect();
    booked(memory, |book| keys.iter().flat_map(|key| release(book, key, now, notes)).collect())
}

/// The collecting group `key` is paged: one member's `down` goes out as it was; two or more
/// make the group's `down`, under a key from the shared cause and the earliest member's start
/// (by the probes' times, so a pair of coordinators agrees).
fn release(memory: &mut Book<'_>, key: &str, now: i64, notes: &mut Vec<IncidentGroup>) -> Vec<Alert> {
    let Some(mut group) = memory.groups.get(key).cloned() else { return Vec::new() };
    let mut held = std::mem::take(&mut group.held);
    if held.len() < 2 {
        memory.set_group(key, None);
        return held;
    }
    let since = group.members.iter().map(|m| m.opened).min().unwrap_or(now);
    let dedup = format!("vantage/group/{key}#{since}");
    // Routes and Alertmanager's labels see what every member has in common, fixed from now on.
    for alert in &held[1..] {
        group.labels.retain(|k, v| alert.labels.get(k) == Some(v));
    }
    held.sort_by(|a, b| a.subject.cmp(&b.subject));
    let mut page = group_alert(key, &group, &held[0], AlertKind::Down, &dedup, now);
    let mut regions: Vec<String> = held.iter().flat_map(|a| a.regions.iter().cloned()).collect();
    regions.sort();
    regions.dedup();
    page.of_regions = held.iter().map(|a| a.of_regions).max().unwrap_or(0);
    page.regions = regions;
    group.dedup = Some(dedup.clone());
    group.waiting.clear();
    notes.extend(annotations(&group, &dedup));
    memory.set_group(key, Some(group));
    vec![page]
}

/// The group's alert of `kind`, from a member's alert (`template`: its cause, regions, backend).
fn group_alert(key: &str, group: &GroupMemory, template: &Alert, kind: AlertKind, dedup: &str, now: i64) -> Alert {
    let mut alert = Alert::new(kind, key, now, dedup.to_owned());
    alert.labels = group.labels.clone();
    alert.since_ms = group.members.iter().map(|m| m.opened).min().unwrap_or(now);
    if kind == AlertKind::Down {
        alert.regions = template.regions.clone();
        alert.of_regions = template.of_regions;
        alert.backend = template.backend.clone();
        alert.cause = template.cause.clone();
        alert.detail = template.detail.clone();
    } else {
        // The last member's own (`removed` when it was removed).
        alert.cause = template.cause.clone();
    }
    alert.group = Some(AlertGroup {
        key: key.to_owned(),
        shared_cause: group.words.clone(),
        members: group.members.iter().map(|m| m.url.clone()).collect::<Vec<_>>(),
    });
    alert
}

fn annotations(group: &GroupMemory, dedup: &str) -> Vec<IncidentGroup> {
    let members: Vec<String> = group.members.iter().map(|m| m.url.clone()).collect();
    group
        .members
        .iter()
        .filter(|m| m.open)
        .map(|m| IncidentGroup {
            url: m.url.clone(),
            opened: m.opened,
            group: dedup.to_owned(),
            members: members.clone(),
            shared_cause: group.words.clone(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alert::AlertCause;
    use crate::hub::targets::{FailureFacts, Latest, Name};
    use vantage_proto::v1::TargetSpec;
    use vantage_shared::FailureCode;
    use vantage_shared::ProbeStatus;

    const BACKEND: &str = "203.0.113.7:443";

    /// A target served from `address`, up in r1..r3 (interval 10 s).
    fn target(url: &str, address: &str) -> Target {
        let mut t = Target::new(TargetSpec {
            url: url.into(),
            interval: Some(prost_types::Duration { seconds: 10, nanos: 0 }),
            ..Default::default()
        });
        t.address = Some(address.into());
        for region in ["r1", "r2", "r3"] {
            let up = Latest {
                counted: 0,
                tracked: None,
                at_ms: 1_000,
                timed: true,
                status: Some(ProbeStatus::Up),
                code: None,
                latency_ms: 1.0,
                agent: "a".into(),
                failure: None,
                cert: None,
            };
            t.observe(Name::from(region), up);
        }
        t
    }

    fn targets(n: usize, address: &str) -> Targets {
        (0..n)
            .map(|i| {
                let t = target(&format!("https://site{i}.shop.test/"), address);
                (t.url().clone(), t)
            })
            .collect()
    }

    /// The judge's part: `url` turns DOWN with `code` at `began`, failing against its address.
    fn fail(targets: &mut Targets, url: &str, code: &str, began: i64) -> Alert {
        let t = targets.get_mut(url).unwrap();
        let address = t.address.clone();
        for region in ["r1", "r2", "r3"] {
            let down = Latest {
                counted: 0,
                tracked: None,
                at_ms: began,
                timed: true,
                status: Some(ProbeStatus::Down),
                code: FailureCode::from_code(code),
                latency_ms: 1.0,
                agent: "a".into(),
                failure: Some(Box::new(FailureFacts {
                    code: code.into(),
                    detail: "refused".into(),
                    backend: address.clone(),
                    failing_since: Some(began),
                })),
                cert: None,
            };
            t.observe(Name::from(region), down);
        }
        t.open_incident = Some(began);
        t.verdict = Some(crate::hub::targets::Decided { verdict: Verdict::Down, since_ms: began });
        let mut alert = Alert::new(AlertKind::Down, url, began + 500, format!("vantage/target/{url}#{began}"));
        alert.regions = vec!["r1".into(), "r2".into(), "r3".into()];
        alert.of_regions = 3;
        alert.backend = address.map(String::from);
        alert.labels = [("team".to_owned(), "shop".to_owned())].into();
        alert.cause = Some(AlertCause { code: code.into(), message: "m".into(), hint: "h".into() });
        alert
    }

    fn recover(targets: &mut Targets, url: &str, opened: i64, now: i64) -> Alert {
        targets.get_mut(url).unwrap().open_incident = None;
        let mut alert = Alert::new(AlertKind::Recovered, url, now, format!("vantage/target/{url}#{opened}"));
        (alert.since_ms, alert.duration_ms) = (opened, Some(now - opened));
        alert
    }

    fn run(
        memory: &mut AlertMemory,
        targets: &Targets,
        window: Option<Duration>,
        now: i64,
        alerts: Vec<Alert>,
    ) -> (Vec<Alert>, Vec<IncidentGroup>) {
        let g = Grouping { targets, silences: &[], window, now };
        let mut notes = Vec::new();
        let out = route(memory, &g, alerts, &mut notes);
        (out, notes)
    }

    #[test]
    fn a_target_alone_on_its_cause_is_paged_at_once_under_its_own_key() {
        let mut all = targets(1, BACKEND);
        all.extend(targets_at("https://other.example/", "198.51.100.1:443"));
        let mut memory = AlertMemory::default();
        let down = fail(&mut all, "https://site0.shop.test/", "tcp_refused", 1_000);
        let (out, notes) = run(&mut memory, &all, None, 1_500, vec![down.clone()]);
        assert_eq!(out, vec![down], "unchanged, at once");
        assert!(notes.is_empty() && memory.groups.is_empty());
        let back = recover(&mut all, "https://site0.shop.test/", 1_000, 9_000);
        assert_eq!(run(&mut memory, &all, None, 9_000, vec![back.clone()]).0, vec![back]);
    }

    fn targets_at(url: &str, address: &str) -> Targets {
        let t = target(url, address);
        [(t.url().clone(), t)].into_iter().collect()
    }

    #[test]
    fn ten_targets_behind_one_address_are_one_page_with_every_member_and_one_resolve() {
        let mut all = targets(10, BACKEND);
        let urls: Vec<String> = all.keys().map(|u| u.to_string()).collect();
        let mut memory = AlertMemory::default();
        // They turn DOWN one after the other: nothing goes out until the last is in.
        for (i, url) in urls.iter().enumerate() {
            let began = 1_000 + i as i64 * 100;
            let down = fail(&mut all, url, "tcp_refused", began);
            let (out, notes) = run(&mut memory, &all, None, 2_000 + i as i64 * 100, vec![down]);
            if i < 9 {
                assert!(out.is_empty(), "member {i} is held for the others");
                continue;
            }
            assert_eq!(out.len(), 1, "one page for all ten");
            let page = &out[0];
            assert_eq!(page.kind, AlertKind::Down);
            assert_eq!(page.dedup_key, format!("vantage/group/backend:{BACKEND}:tcp_refused#1000"));
            let group = page.group.as_ref().unwrap();
            assert_eq!(group.members, urls);
            assert_eq!(group.shared_cause, format!("behind {BACKEND}"));
            assert!(
                page.summary().starts_with(&format!("DOWN 10 targets behind {BACKEND}: tcp_refused in r1, r2, r3")),
                "{}",
                page.summary()
            );
            assert_eq!(page.labels.get("team").map(String::as_str), Some("shop"), "labels they share");
            assert_eq!(notes.len(), 10, "every member's incident names the group");
            assert!(notes.iter().all(|n| n.members == urls && n.group == page.dedup_key));
        }
        // Back one by one: only the last one's return resolves, under the group's key.
        for (i, url) in urls.iter().enumerate() {
            let back = recover(&mut all, url, 1_000 + i as i64 * 100, 60_000);
            let (out, _) = run(&mut memory, &all, None, 60_000, vec![back]);
            if i < 9 {
                assert!(out.is_empty(), "{i} recovered while others are down: no page");
            } else {
                assert_eq!(out.len(), 1);
                assert_eq!(out[0].kind, AlertKind::Recovered);
                assert_eq!(out[0].dedup_key, format!("vantage/group/backend:{BACKEND}:tcp_refused#1000"));
                assert_eq!(out[0].duration_ms, Some(59_000));
                assert_eq!(out[0].group.as_ref().unwrap().members.len(), 10);
            }
        }
        assert!(memory.groups.is_empty(), "the group is over");
    }

    #[test]
    fn ten_targets_turning_down_in_one_judgement_are_one_page() {
        let mut all = targets(10, BACKEND);
        let urls: Vec<String> = all.keys().map(|u| u.to_string()).collect();
        let downs: Vec<Alert> = urls.iter().map(|u| fail(&mut all, u, "tcp_refused", 1_000)).collect();
        let mut memory = AlertMemory::default();
        let (out, notes) = run(&mut memory, &all, None, 1_500, downs);
        assert_eq!(out.len(), 1, "{out:?}");
        assert_eq!(out[0].group.as_ref().unwrap().members, urls);
        assert_eq!(notes.len(), 10);
        let recorded: Vec<String> =
            memory.take_changes().into_iter().map(|(k, _)| k).filter(|k| k.starts_with("group:")).collect();
        assert_eq!(recorded, [format!("group:backend:{BACKEND}:tcp_refused")], "the group recorded once");
    }

    #[test]
    fn a_pair_judging_members_in_another_order_pages_the_group_under_the_same_key() {
        let page = |order: &[usize]| {
            let mut all = targets(3, BACKEND);
            let urls: Vec<String> = all.keys().map(|u| u.to_string()).collect();
            let mut memory = AlertMemory::default();
            let mut out = Vec::new();
            // Each member's start is its probes' (the same on both); the clock differs.
            for (n, &i) in order.iter().enumerate() {
                let down = fail(&mut all, &urls[i], "tcp_refused", 1_000 + i as i64);
                out.extend(run(&mut memory, &all, None, 5_000 + n as i64 * 777, vec![down]).0);
            }
            assert_eq!(out.len(), 1);
            out.remove(0)
        };
        let (a, b) = (page(&[0, 1, 2]), page(&[2, 0, 1]));
        assert_eq!(a.dedup_key, b.dedup_key);
        assert_eq!(a.dedup_key, format!("vantage/group/backend:{BACKEND}:tcp_refused#1000"), "the earliest start");
        assert_eq!(a.group, b.group);
    }

    #[test]
    fn the_window_ends_the_hold_and_a_later_member_updates_the_same_page() {
        let mut all = targets(3, BACKEND);
        let urls: Vec<String> = all.keys().map(|u| u.to_string()).collect();
        let mut memory = AlertMemory::default();
        let window = Some(Duration::from_secs(5));
        for url in &urls[..2] {
            let down = fail(&mut all, url, "tcp_refused", 1_000);
            assert!(run(&mut memory, &all, window, 1_500, vec![down]).0.is_empty());
        }
        let mut notes = Vec::new();
        assert!(due(&mut memory, 6_499, &mut notes).is_empty(), "not before the window ends");
        let paged = due(&mut memory, 6_500, &mut notes);
        assert_eq!(paged.len(), 1);
        assert_eq!(paged[0].group.as_ref().unwrap().members, urls[..2]);
        // The third turns DOWN later: the same key, the grown list.
        let down = fail(&mut all, &urls[2], "tcp_refused", 20_000);
        let (update, notes) = run(&mut memory, &all, window, 20_500, vec![down]);
        assert_eq!(update.len(), 1);
        assert_eq!(update[0].dedup_key, paged[0].dedup_key, "an update of the open group, not a new page");
        assert_eq!(update[0].group.as_ref().unwrap().members, urls);
        assert_eq!(notes.len(), 3);
        // A different cause on the same address is another group.
        let (mut memory2, mut all) = (AlertMemory::default(), targets(3, BACKEND));
        let a = fail(&mut all, &urls[0], "tcp_refused", 1_000);
        let b = fail(&mut all, &urls[1], "http_5xx", 1_000);
        assert!(run(&mut memory2, &all, window, 1_500, vec![a, b]).0.is_empty(), "each held for the third");
        assert_eq!(memory2.groups.len(), 2);
    }

    #[test]
    fn a_lone_member_at_the_window_end_is_paged_as_itself_and_one_back_before_it_never() {
        let mut all = targets(2, BACKEND);
        let urls: Vec<String> = all.keys().map(|u| u.to_string()).collect();
        let mut memory = AlertMemory::default();
        let down = fail(&mut all, &urls[0], "tcp_refused", 1_000);
        assert!(run(&mut memory, &all, None, 1_500, vec![down.clone()]).0.is_empty(), "held: a sibling shares it");
        // Default window: two intervals (10 s).
        assert!(due(&mut memory, 21_499, &mut Vec::new()).is_empty());
        assert_eq!(due(&mut memory, 21_500, &mut Vec::new()), vec![down], "its own down, its own key");
        assert!(memory.groups.is_empty());
        // Down and back within the hold: never paged, nor resolved.
        let down = fail(&mut all, &urls[0], "tcp_refused", 30_000);
        assert!(run(&mut memory, &all, None, 30_500, vec![down]).0.is_empty());
        let back = recover(&mut all, &urls[0], 30_000, 32_000);
        assert!(run(&mut memory, &all, None, 32_000, vec![back]).0.is_empty());
        assert!(memory.groups.is_empty() && due(&mut memory, 99_000, &mut Vec::new()).is_empty());
        // A window of zero turns grouping off.
        let down = fail(&mut all, &urls[0], "tcp_refused", 40_000);
        assert_eq!(run(&mut memory, &all, Some(Duration::ZERO), 40_500, vec![down.clone()]).0, vec![down]);
    }
}
