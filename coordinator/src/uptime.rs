//! Availability from verdicts (README: "Availability"): how long a target (or one region's
//! opinion of it) spent in each state, rolled up per UTC day, and the figures of a window read
//! from those days plus the span still open. Pure: the store keeps the days
//! (`store::uptime`), the hub says when a state changed.
//!
//! `day` holds one day's record (seconds per state, incident starts, the spans themselves) and
//! how a span is added to it; `figures` sums days into a window's figures; `window` parses the
//! windows the API asks for.

mod day;
mod figures;
mod window;

pub use day::{DAY_MS, Day, MAX_SPANS_PER_DAY, add_span, day_of};
pub use figures::{Figures, figures, per_day};
pub use window::{DEFAULT_WINDOWS, MAX_WINDOWS, Window, WindowError, parse_windows};

/// Days of roll-ups kept, independent of the raw results' retention: a 90-day figure and a year
/// of monthly SLA reports survive the 7-day history.
pub const ROLLUP_DAYS: i64 = 400;

/// What a span of time counts as. A target's verdict maps one to one; a region's opinion maps
/// `up` → `Up`, `partial` → `Degraded`, `down` → `Down`, `unknown` → `Unknown`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum State {
    Up,
    Degraded,
    Down,
    Unknown,
}

impl State {
    /// Index into a day's per-state totals.
    pub fn index(self) -> usize {
        match self {
            State::Up => 0,
            State::Degraded => 1,
            State::Down => 2,
            State::Unknown => 3,
        }
    }

    pub fn from_index(i: u8) -> Option<State> {
        [State::Up, State::Degraded, State::Down, State::Unknown].get(usize::from(i)).copied()
    }

    /// The worst judged state with time in `ms` (by `State::index`): DOWN, else DEGRADED, else
    /// UP; UNKNOWN only when nothing was judged (a few unknown seconds at start-up do not make a
    /// day of UP look worse); `None` when there is no time at all.
    pub fn worst_of(ms: &[i64; 4]) -> Option<State> {
        [State::Down, State::Degraded, State::Up, State::Unknown].into_iter().find(|s| ms[s.index()] > 0)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            State::Up => "UP",
            State::Degraded => "DEGRADED",
            State::Down => "DOWN",
            State::Unknown => "UNKNOWN",
        }
    }

    /// A verdict as the store records it (`UP`, …).
    pub fn of_verdict(verdict: &str) -> Option<State> {
        match verdict {
            "UP" => Some(State::Up),
            "DEGRADED" => Some(State::Degraded),
            "DOWN" => Some(State::Down),
            "UNKNOWN" => Some(State::Unknown),
            _ => None,
        }
    }

    pub fn of_opinion(opinion: crate::verdict::Opinion) -> State {
        use crate::verdict::Opinion;
        match opinion {
            Opinion::Up => State::Up,
            Opinion::Partial => State::Degraded,
            Opinion::Down => State::Down,
            Opinion::Unknown => State::Unknown,
        }
    }
}
