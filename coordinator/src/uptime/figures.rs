//! A window's figures: the time in each state within `[from, to)`, summed from the days rolled up
//! and the span still open, and the incidents opened within it.
//!
//! availability = (judged − down) / judged, where judged = up + degraded + down; unknown time is
//! not judged and reported beside it. Time before a target's first verdict is in no state at all.

use super::State;
use super::day::{DAY_MS, Day};

/// What a window holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Figures {
    /// Milliseconds per state, by `State::index`.
    pub ms: [i64; 4],
    pub incidents: u32,
}

impl Figures {
    pub fn of(&self, state: State) -> i64 {
        self.ms[state.index()]
    }

    /// Time judged: up, degraded or down (not unknown).
    pub fn judged_ms(&self) -> i64 {
        self.of(State::Up) + self.of(State::Degraded) + self.of(State::Down)
    }

    /// The share of judged time that was not DOWN, 0..=1; `None` when nothing was judged.
    pub fn availability(&self) -> Option<f64> {
        let judged = self.judged_ms();
        (judged > 0).then(|| (judged - self.of(State::Down)) as f64 / judged as f64)
    }
}

/// The figures of `[from, to)` (Unix ms) from `days` (day number and record, any order, each at
/// most once) and the span open since `open.1` in `open.0` (up to `to`: it is still going).
pub fn figures<'a>(
    days: impl IntoIterator<Item = (i64, &'a Day)>,
    open: Option<(State, i64)>,
    from: i64,
    to: i64,
) -> Figures {
    let mut out = Figures::default();
    for (day, record) in days {
        let start = day * DAY_MS;
        if start >= to || start + DAY_MS <= from {
            continue;
        }
        let (ms, incidents) = record.within(from - start, to - start);
        for (sum, ms) in out.ms.iter_mut().zip(ms) {
            *sum += ms;
        }
        out.incidents += incidents;
    }
    if let Some((state, since)) = open {
        out.ms[state.index()] += (to - since.max(from)).max(0);
    }
    out
}

/// Each UTC day `first..=last` (day numbers) with its figures up to `now`: a 90-day bar's cells.
/// A day with no time in any state (before the first verdict) has empty figures.
pub fn per_day(
    days: &[(i64, Day)],
    open: Option<(State, i64)>,
    first: i64,
    last: i64,
    now: i64,
) -> Vec<(i64, Figures)> {
    (first..=last)
        .map(|day| {
            let (from, to) = (day * DAY_MS, ((day + 1) * DAY_MS).min(now));
            let record = days.iter().find(|(d, _)| *d == day).map(|(d, r)| (*d, r));
            (day, figures(record, open, from, to.max(from)))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::uptime::day::add_span;

    const H: i64 = 3_600_000;

    /// Rolls `spans` ((from, to, state), Unix ms) up into days as the store does.
    fn roll(spans: &[(i64, i64, State)], incidents: &[i64]) -> Vec<(i64, Day)> {
        let mut days: std::collections::BTreeMap<i64, Day> = Default::default();
        for &(from, to, state) in spans {
            for (day, a, b) in add_span(from, to) {
                days.entry(day).or_default().add(a, b, state);
            }
        }
        for &at in incidents {
            let day = crate::uptime::day_of(at);
            days.entry(day).or_default().incidents.push((at - day * DAY_MS) as u32);
        }
        days.into_iter().collect()
    }

    fn of(days: &[(i64, Day)], open: Option<(State, i64)>, from: i64, to: i64) -> Figures {
        figures(days.iter().map(|(d, r)| (*d, r)), open, from, to)
    }

    #[test]
    fn down_for_half_an_hour_in_a_day_is_down_a_forty_eighth() {
        let d0 = 20_000 * DAY_MS;
        let days =
            roll(&[(d0, d0 + 12 * H, State::Up), (d0 + 12 * H, d0 + 12 * H + H / 2, State::Down)], &[d0 + 12 * H]);
        // Up again since 12:30 and still up at midnight.
        let f = of(&days, Some((State::Up, d0 + 12 * H + H / 2)), d0, d0 + DAY_MS);
        assert_eq!(f.judged_ms(), DAY_MS);
        assert_eq!(f.of(State::Down), H / 2);
        assert_eq!(f.incidents, 1);
        assert!((f.availability().unwrap() - (1.0 - 1.0 / 48.0)).abs() < 1e-12);
    }

    #[test]
    fn unknown_time_is_not_judged_and_degraded_time_counts_as_available() {
        let d0 = 20_000 * DAY_MS;
        let days = roll(
            &[
                (d0, d0 + 6 * H, State::Up),
                (d0 + 6 * H, d0 + 12 * H, State::Unknown),
                (d0 + 12 * H, d0 + 18 * H, State::Degraded),
            ],
            &[],
        );
        let f = of(&days, Some((State::Down, d0 + 18 * H)), d0, d0 + DAY_MS);
        assert_eq!(f.ms, [6 * H, 6 * H, 6 * H, 6 * H]);
        assert_eq!(f.judged_ms(), 18 * H);
        assert!((f.availability().unwrap() - 2.0 / 3.0).abs() < 1e-12);
        // Nothing judged: no figure rather than 0 % or 100 %.
        let unknown = of(&days, None, d0 + 6 * H, d0 + 12 * H);
        assert_eq!((unknown.of(State::Unknown), unknown.availability()), (6 * H, None));
    }

    #[test]
    fn a_rolling_window_cuts_the_days_at_both_ends_across_midnight() {
        let d0 = 20_000 * DAY_MS;
        // Down from 23:00 to 01:00 the next day, up around it.
        let days = roll(
            &[
                (d0, d0 + 23 * H, State::Up),
                (d0 + 23 * H, d0 + DAY_MS + H, State::Down),
                (d0 + DAY_MS + H, d0 + DAY_MS + 5 * H, State::Up),
            ],
            &[d0 + 23 * H],
        );
        let open = Some((State::Up, d0 + DAY_MS + 5 * H));
        // The 24 hours up to 12:00 on the second day.
        let now = d0 + DAY_MS + 12 * H;
        let f = of(&days, open, now - DAY_MS, now);
        assert_eq!((f.judged_ms(), f.of(State::Down), f.incidents), (DAY_MS, 2 * H, 1));
        // From 00:00: only the second hour of the outage; its incident opened the day before.
        let f = of(&days, open, d0 + DAY_MS, now);
        assert_eq!((f.judged_ms(), f.of(State::Down), f.incidents), (12 * H, H, 0));
    }

    #[test]
    fn each_day_gets_its_own_figures_and_today_ends_now() {
        let d0 = 20_000 * DAY_MS;
        // Up from noon on day 0, down for an hour on day 1 and still down since 18:00 on day 2.
        let days = roll(
            &[
                (d0 + 12 * H, d0 + DAY_MS + 3 * H, State::Up),
                (d0 + DAY_MS + 3 * H, d0 + DAY_MS + 4 * H, State::Down),
                (d0 + DAY_MS + 4 * H, d0 + 2 * DAY_MS + 18 * H, State::Up),
            ],
            &[d0 + DAY_MS + 3 * H],
        );
        let now = d0 + 2 * DAY_MS + 20 * H;
        let cells = per_day(&days, Some((State::Down, d0 + 2 * DAY_MS + 18 * H)), 19_999, 20_002, now);
        assert_eq!(cells.iter().map(|(d, _)| *d).collect::<Vec<_>>(), [19_999, 20_000, 20_001, 20_002]);
        assert_eq!(cells[0].1, Figures::default(), "before the first verdict: nothing");
        assert_eq!((cells[1].1.of(State::Up), cells[1].1.incidents), (12 * H, 0));
        assert_eq!((cells[2].1.of(State::Down), cells[2].1.incidents), (H, 1));
        assert_eq!(cells[2].1.judged_ms(), DAY_MS);
        // Today: up to 18:00, then the open span's two hours up to now.
        assert_eq!(cells[3].1.ms, [18 * H, 0, 2 * H, 0]);
    }

    #[test]
    fn time_before_the_first_verdict_is_in_no_state() {
        let d0 = 20_000 * DAY_MS;
        // First verdict at 18:00; the 30-day window only holds the six hours since.
        let f = of(&[], Some((State::Up, d0 + 18 * H)), d0 + DAY_MS - 30 * DAY_MS, d0 + DAY_MS);
        assert_eq!(f.ms, [6 * H, 0, 0, 0]);
        assert_eq!(f.availability(), Some(1.0));
        // A window that ended before the span opened holds nothing of it.
        assert_eq!(of(&[], Some((State::Up, d0 + 18 * H)), d0, d0 + H), Figures::default());
    }
}
