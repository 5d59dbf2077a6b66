//! Flap damping and hold-down, pure (README: "Flap damping and hold-down"): a target's flap rate
//! (the share of its last `flap_window` probe intervals in which its verdict changed) against a
//! high and a low threshold, and what the pager holds for a target (the `down` that is out, a
//! recovery waiting for `recover_after`), from which the planner learns which `down`,
//! `recovered`, `flapping` and `flapping_cleared` are due. No clock, no store.

use serde::{Deserialize, Serialize};

use super::judge::IncidentStep;
use crate::alert::Damping;

/// Most failure codes a `flapping` alert names.
const MAX_CAUSES: usize = 8;

/// What flap damping remembers of a target: kept while its window holds a change or it flaps
/// (a steady target has none).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlapMemory {
    /// When its verdict changed between known verdicts (UP, DEGRADED, DOWN), at most one per
    /// probe interval, oldest first; older than the window is dropped.
    pub changes: Vec<i64>,
    /// The failure codes it changed to since this memory began, each once.
    pub causes: Vec<String>,
    /// Since when it flaps, and its rate (percent) then.
    pub flapping: Option<(i64, u32)>,
}

/// The probe interval `at` falls in (intervals counted from the epoch).
fn slot(at: i64, interval_ms: i64) -> i64 {
    at.div_euclid(interval_ms.max(1))
}

/// The flap rate at `now`, in percent: of the `window` probe intervals ending with the one `now`
/// falls in, the share in which the verdict changed. A target younger than the window counts
/// its missing intervals as steady, so a new target's first outage is not flapping.
pub fn rate(changes: &[i64], now: i64, interval_ms: i64, window: u32) -> u32 {
    if window == 0 {
        return 0;
    }
    let current = slot(now, interval_ms);
    let first = current - i64::from(window) + 1;
    let mut slots: Vec<i64> =
        changes.iter().map(|&t| slot(t, interval_ms)).filter(|s| (first..=current).contains(s)).collect();
    slots.dedup();
    (slots.len() as u32).saturating_mul(100) / window
}

/// What a judgement does to flapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlapStep {
    /// The rate reached `flap_high`: it flaps from now.
    Started,
    /// The rate fell below `flap_low` (or damping was turned off): it flapped since `since`.
    Cleared {
        since: i64,
    },
    None,
}

/// A verdict change between two known verdicts, to the failure code it changed to (if failing).
pub struct Change<'a> {
    pub cause: Option<&'a str>,
}

/// One judgement of a target, with `change` if its verdict changed between known verdicts: the
/// flap memory it leaves (`None`: nothing to keep) and what it does to flapping.
pub fn observe(
    flap: Option<&FlapMemory>,
    change: Option<Change<'_>>,
    now: i64,
    interval_ms: i64,
    d: &Damping,
) -> (Option<FlapMemory>, FlapStep) {
    if d.flap_window == 0 {
        // Damping off (or turned off by a reload): a flapping target is no longer held.
        return match flap.and_then(|f| f.flapping) {
            Some((since, _)) => (None, FlapStep::Cleared { since }),
            None => (None, FlapStep::None),
        };
    }
    let mut f = flap.cloned().unwrap_or_default();
    let horizon = (slot(now, interval_ms) - i64::from(d.flap_window) + 1).saturating_mul(interval_ms.max(1));
    f.changes.retain(|&t| t >= horizon);
    if let Some(change) = change {
        if f.changes.last().is_none_or(|&t| slot(t, interval_ms) != slot(now, interval_ms)) {
            f.changes.push(now);
        }
        if let Some(code) = change.cause {
            if f.causes.len() < MAX_CAUSES && !f.causes.iter().any(|c| c == code) {
                f.causes.push(code.to_owned());
            }
        }
    }
    let rate = rate(&f.changes, now, interval_ms, d.flap_window);
    let step = match f.flapping {
        None if rate >= d.flap_high => {
            f.flapping = Some((now, rate));
            FlapStep::Started
        }
        Some((since, _)) if rate < d.flap_low => {
            f.flapping = None;
            FlapStep::Cleared { since }
        }
        _ => FlapStep::None,
    };
    let keep = !f.changes.is_empty() || f.flapping.is_some();
    (keep.then_some(f), step)
}

/// What the pager holds for a target where it differs from the target's incidents. Without one,
/// exactly the open incident's `down` is out (as without hold-down or flap damping, and as a
/// store written before them holds).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Paging {
    /// The start of the outage whose `down` is out (its dedup key's start); `None`: none is.
    pub paged: Option<i64>,
    /// When the last incident closed while that `down` is still out: its `recovered` waits for
    /// `recover_after` from here, and a new incident before then continues the same page.
    pub up_since: Option<i64>,
}

impl Paging {
    /// The pager's state when nothing differs from the incidents: the open incident's `down`.
    pub fn plain(open: Option<i64>) -> Paging {
        Paging { paged: open, up_since: None }
    }
}

/// The hold-down in force for a target, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hold {
    pub alert_after: i64,
    pub recover_after: i64,
}

/// A notification due now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Page {
    /// `down` for the incident open since `opened`.
    Down {
        opened: i64,
    },
    /// `recovered` for the outage paged since `start`, up again since `up_since`.
    Recovered {
        start: i64,
        up_since: i64,
    },
    None,
}

/// Applies a judgement's incident `step` to the pager's state `before` (as it was before the
/// judgement) and says which notification is due now. `open`: the incident open after the
/// judgement (its start); `quiet`: the target flaps, so neither is sent (the state still
/// follows the incidents, to be acted on once it settles).
pub fn page(
    before: Paging,
    open: Option<i64>,
    step: IncidentStep,
    quiet: bool,
    now: i64,
    hold: Hold,
) -> (Paging, Page) {
    let mut p = before;
    match step {
        // Failing again before the recovery was sent: the page that is out goes on.
        IncidentStep::Opened => p.up_since = None,
        IncidentStep::Closed { .. } if p.paged.is_some() => p.up_since = Some(now),
        _ => {}
    }
    if quiet {
        return (p, Page::None);
    }
    match (p.paged, open) {
        (None, Some(opened)) if now >= opened.saturating_add(hold.alert_after) => {
            p.paged = Some(opened);
            (p, Page::Down { opened })
        }
        (Some(start), None) => {
            let up_since = *p.up_since.get_or_insert(now);
            if now >= up_since.saturating_add(hold.recover_after) {
                (Paging::default(), Page::Recovered { start, up_since })
            } else {
                (p, Page::None)
            }
        }
        _ => (p, Page::None),
    }
}

/// When a notification waiting on the pager's state `p` falls due if nothing else happens
/// (`i64::MAX`: none waits, or the target flaps and waits to settle).
pub fn due(p: &Paging, open: Option<i64>, quiet: bool, hold: Hold) -> i64 {
    if quiet {
        return i64::MAX;
    }
    match (p.paged, open, p.up_since) {
        (None, Some(opened), _) => opened.saturating_add(hold.alert_after),
        (Some(_), None, Some(up)) => up.saturating_add(hold.recover_after),
        _ => i64::MAX,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: i64 = 1_000;

    fn damping() -> Damping {
        Damping { flap_window: 20, flap_high: 50, flap_low: 25, ..Damping::default() }
    }

    #[test]
    fn the_rate_is_the_share_of_changed_intervals_in_the_window() {
        // Interval 1 s, window 20: changes in 5 distinct intervals are 25 %.
        let changes = [1_100, 1_900, 3_000, 7_500, 8_000, 15_200];
        assert_eq!(rate(&changes, 15_900, S, 20), 25, "two changes in one interval count once");
        // Twenty intervals later the oldest have left the window.
        assert_eq!(rate(&changes, 21_000, S, 20), 20);
        assert_eq!(rate(&changes, 60_000, S, 20), 0);
        assert_eq!(rate(&[], 60_000, S, 20), 0);
        assert_eq!(rate(&changes, 15_900, S, 0), 0, "window 0: off");
        // Every interval changed: 100 %, never more.
        let every: Vec<i64> = (0..40).map(|i| i * S + 10).collect();
        assert_eq!(rate(&every, 39_500, S, 20), 100);
    }

    /// Feeds one judgement per interval; `changes[i]`: whether interval i's verdict changed.
    fn run(flap: &mut Option<FlapMemory>, from: i64, changes: &[bool], d: &Damping) -> Vec<(i64, FlapStep)> {
        let mut steps = Vec::new();
        for (i, changed) in changes.iter().enumerate() {
            let now = from + i as i64 * S + 500;
            let change = changed.then_some(Change { cause: Some("http_5xx") });
            let (next, step) = observe(flap.as_ref(), change, now, S, d);
            *flap = next;
            if step != FlapStep::None {
                steps.push((i as i64, step));
            }
        }
        steps
    }

    #[test]
    fn flapping_starts_at_the_high_threshold_once_and_clears_below_the_low_one() {
        let d = damping();
        let mut flap = None;
        // Changing every other interval: 10 of 20 (50 %) after the 19th interval.
        let alternating: Vec<bool> = (0..30).map(|i| i % 2 == 0).collect();
        let steps = run(&mut flap, 0, &alternating, &d);
        assert_eq!(steps.len(), 1, "one start however long it goes on: {steps:?}");
        assert_eq!(steps[0].1, FlapStep::Started);
        assert_eq!(steps[0].0, 18, "the tenth changed interval");
        let f = flap.clone().unwrap();
        assert_eq!(f.flapping.map(|(_, r)| r), Some(50));
        assert_eq!(f.causes, ["http_5xx"], "each cause once");
        // Steady from interval 30: below 25 % once fewer than 5 of the last 20 changed.
        let steady = vec![false; 30];
        let steps = run(&mut flap, 30 * S, &steady, &d);
        assert_eq!(steps.len(), 1, "{steps:?}");
        assert!(matches!(steps[0].1, FlapStep::Cleared { .. }));
        // Changes at 20, 22, ..., 28 (5 of them) leave the window as the steady intervals come:
        // at interval 30 + k the window holds intervals 11 + k ..= 30 + k.
        assert_eq!(steps[0].0, 10, "rate 20 % after the change of interval 20 leaves the window");
        // Once the window is empty nothing is kept.
        assert_eq!(flap, None);
    }

    #[test]
    fn between_the_thresholds_nothing_changes_and_an_ordinary_outage_never_flaps() {
        let d = damping();
        // A steady target that goes down and comes back: UP→DEGRADED→DOWN in one interval,
        // DOWN→DEGRADED→UP a few later: two changed intervals, 10 %.
        let mut flap = None;
        let mut outage = vec![false; 25];
        outage[3] = true;
        outage[9] = true;
        assert!(run(&mut flap, 0, &outage, &d).is_empty());
        // A new target's first outage (its first interval): the same.
        let mut flap = None;
        assert!(run(&mut flap, 0, &[false, true, false, true, false], &d).is_empty());
        // 8 changes in 20 (40 %): neither starts (< 50 %) ...
        let mut flap = None;
        let some: Vec<bool> = (0..20).map(|i| i % 5 < 2).collect();
        assert!(run(&mut flap, 0, &some, &d).is_empty());
        // ... nor, once flapping, clears (>= 25 %).
        flap.as_mut().unwrap().flapping = Some((0, 50));
        assert!(run(&mut flap, 20 * S, &some, &d).is_empty());
    }

    #[test]
    fn damping_turned_off_clears_a_flapping_target() {
        let mut flap = Some(FlapMemory { changes: vec![1], causes: vec![], flapping: Some((7, 60)) });
        let off = Damping::default();
        let (next, step) = observe(flap.as_ref(), None, 2_000, S, &off);
        assert_eq!((next, step), (None, FlapStep::Cleared { since: 7 }));
        flap = None;
        assert_eq!(observe(flap.as_ref(), Some(Change { cause: None }), 2_000, S, &off), (None, FlapStep::None));
    }

    const NO_HOLD: Hold = Hold { alert_after: 0, recover_after: 0 };

    #[test]
    fn without_hold_down_a_down_and_its_recovery_are_paged_at_once_and_leave_nothing_to_remember() {
        let opened = Paging::plain(None);
        let (p, page_) = page(opened, Some(1_000), IncidentStep::Opened, false, 1_500, NO_HOLD);
        assert_eq!(page_, Page::Down { opened: 1_000 });
        assert_eq!(p, Paging::plain(Some(1_000)), "as an incident without hold-down: no row");
        let (p, page_) = page(p, None, IncidentStep::Closed { opened: 1_000 }, false, 9_000, NO_HOLD);
        assert_eq!(page_, Page::Recovered { start: 1_000, up_since: 9_000 });
        assert_eq!(p, Paging::plain(None));
        assert_eq!(due(&p, None, false, NO_HOLD), i64::MAX);
    }

    #[test]
    fn a_down_shorter_than_alert_after_sends_nothing_and_a_longer_one_sends_one() {
        let hold = Hold { alert_after: 10_000, recover_after: 0 };
        let (p, page_) = page(Paging::plain(None), Some(1_000), IncidentStep::Opened, false, 2_000, hold);
        assert_eq!(page_, Page::None);
        assert_eq!(due(&p, Some(1_000), false, hold), 11_000, "the tick comes back when it falls due");
        // Up again at 8 s: nothing was sent, nothing is.
        let (p, page_) = page(p, None, IncidentStep::Closed { opened: 1_000 }, false, 8_000, hold);
        assert_eq!((p, page_), (Paging::plain(None), Page::None));
        // A longer one: due at 11 s, sent once.
        let (p, _) = page(p, Some(20_000), IncidentStep::Opened, false, 20_000, hold);
        let (p, page_) = page(p, Some(20_000), IncidentStep::None, false, 30_000, hold);
        assert_eq!(page_, Page::Down { opened: 20_000 });
        let (_, page_) = page(p, Some(20_000), IncidentStep::None, false, 31_000, hold);
        assert_eq!(page_, Page::None);
    }

    #[test]
    fn a_recovery_shorter_than_recover_after_keeps_the_page_open() {
        let hold = Hold { alert_after: 0, recover_after: 10_000 };
        let (p, _) = page(Paging::plain(None), Some(1_000), IncidentStep::Opened, false, 1_000, hold);
        let (p, page_) = page(p, None, IncidentStep::Closed { opened: 1_000 }, false, 5_000, hold);
        assert_eq!(page_, Page::None);
        assert_eq!(p, Paging { paged: Some(1_000), up_since: Some(5_000) }, "remembered: it differs");
        assert_eq!(due(&p, None, false, hold), 15_000);
        // Failing again at 9 s: a new incident, the same page; no second `down`.
        let (p, page_) = page(p, Some(9_000), IncidentStep::Opened, false, 9_000, hold);
        assert_eq!(page_, Page::None);
        assert_eq!(p, Paging { paged: Some(1_000), up_since: None });
        // Up at 12 s, for good: `recovered` of the first outage at 22 s.
        let (p, _) = page(p, None, IncidentStep::Closed { opened: 9_000 }, false, 12_000, hold);
        let (p, page_) = page(p, None, IncidentStep::None, false, 22_000, hold);
        assert_eq!(page_, Page::Recovered { start: 1_000, up_since: 12_000 });
        assert_eq!(p, Paging::default());
    }

    #[test]
    fn a_flapping_target_pages_nothing_and_settles_into_what_is_true_then() {
        let hold = NO_HOLD;
        // Down is out; it flaps; incidents open and close meanwhile.
        let (mut p, _) = page(Paging::plain(None), Some(1_000), IncidentStep::Opened, false, 1_000, hold);
        for (i, step) in [IncidentStep::Closed { opened: 1_000 }, IncidentStep::Opened].into_iter().enumerate() {
            let open = matches!(step, IncidentStep::Opened).then_some(3_000);
            let (next, page_) = page(p, open, step, true, 2_000 + i as i64 * 1_000, hold);
            assert_eq!(page_, Page::None, "quiet while it flaps");
            assert_eq!(due(&next, open, true, hold), i64::MAX);
            p = next;
        }
        // Settled while DOWN: the page that is out goes on.
        assert_eq!(page(p, Some(3_000), IncidentStep::None, false, 9_000, hold).1, Page::None);
        // Settled while UP: its recovery.
        let (p, _) = page(p, None, IncidentStep::Closed { opened: 3_000 }, true, 5_000, hold);
        assert_eq!(
            page(p, None, IncidentStep::None, false, 9_000, hold).1,
            Page::Recovered { start: 1_000, up_since: 5_000 }
        );
        // Nothing was out and it settles DOWN: a `down` now.
        let (p, _) = page(Paging::plain(None), Some(4_000), IncidentStep::Opened, true, 4_000, hold);
        assert_eq!(page(p, Some(4_000), IncidentStep::None, false, 9_000, hold).1, Page::Down { opened: 4_000 });
    }
}
