//! The 90-day bar on a target's page, as Atlassian Statuspage draws it: one cell per UTC day,
//! coloured by the day's worst verdict, with the day's availability, down time and incidents in
//! the cell's `<title>` (hover) and, for the days not all up, in a list below it. Inline SVG drawn by the server: no script, colours from the
//! page's CSS variables (classes, not `style` attributes, so the hash-based policy holds), and
//! stretched to the page's width (a phone gets narrower cells, not a scrollbar). A public status
//! page draws the same bar in public words (`Wording::Public`).

use std::fmt::Write as _;

use super::html::escape;
use crate::uptime::{DAY_MS, Figures, State};

/// Days the bar shows, today included.
pub const BAR_DAYS: i64 = 90;
/// A cell's width and the gap after it, in the bar's own units (the SVG is scaled to fit).
const CELL: i64 = 8;
const GAP: i64 = 2;
const HEIGHT: i64 = 30;

/// Whose words the bar speaks: the operator's verdicts, or a public page's states.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wording {
    Operator,
    Public,
}

impl Wording {
    /// A state as the list under the bar names it.
    fn state(self, state: State) -> &'static str {
        match self {
            Wording::Operator => state.as_str(),
            Wording::Public => public_state(state),
        }
    }
}

/// A state in the words of a public status page.
pub fn public_state(state: State) -> &'static str {
    match state {
        State::Up => "Operational",
        State::Degraded => "Degraded performance",
        State::Down => "Outage",
        State::Unknown => "Unknown",
    }
}

/// `2026-11-26` for a day number.
fn date(day: i64) -> String {
    crate::clock::rfc3339(day * DAY_MS).chars().take(10).collect()
}

/// What a cell's title says of one day.
fn describe(day: i64, f: &Figures, wording: Wording) -> String {
    let Some(share) = f.availability() else {
        return if f.of(State::Unknown) > 0 && wording == Wording::Operator {
            format!("{}: not judged (fewer than a quorum of regions reported)", date(day))
        } else {
            format!("{}: no data", date(day))
        };
    };
    let percent = share * 100.0;
    let percent =
        if percent >= 100.0 { "100%".to_owned() } else { format!("{:.3}%", (percent * 1000.0).floor() / 1000.0) };
    let mut text = format!("{}: {percent} available", date(day));
    if f.of(State::Down) > 0 {
        let _ = write!(text, ", {} down", crate::clock::human_duration(f.of(State::Down)));
    }
    if f.of(State::Degraded) > 0 {
        let _ = write!(text, ", {} degraded", crate::clock::human_duration(f.of(State::Degraded)));
    }
    let _ = write!(text, ", {} incident{}", f.incidents, if f.incidents == 1 { "" } else { "s" });
    text
}

/// The bar for `days` (day number and figures, oldest first, as `Hub::daily` gives them).
pub fn bar(days: &[(i64, Figures)], wording: Wording) -> String {
    let width = days.len() as i64 * (CELL + GAP) - GAP;
    let mut out = String::with_capacity(days.len() * 160 + 400);
    let _ = write!(
        out,
        "<div class=\"bar\"><svg data-days=\"{}\" viewBox=\"0 0 {width} {HEIGHT}\" preserveAspectRatio=\"none\" \
         role=\"img\" aria-label=\"availability per day, the last {} days\" xmlns=\"http://www.w3.org/2000/svg\">",
        days.len(),
        days.len()
    );
    for (i, (day, f)) in days.iter().enumerate() {
        let class = State::worst_of(&f.ms).map_or("none", State::as_str);
        let _ = write!(
            out,
            "<rect class=\"d d-{class}\" data-day=\"{}\" x=\"{}\" width=\"{CELL}\" height=\"{HEIGHT}\" rx=\"1.5\">\
             <title>{}</title></rect>",
            date(*day),
            i as i64 * (CELL + GAP),
            escape(&describe(*day, f, wording)),
        );
    }
    let first = days.first().map_or(String::new(), |(d, _)| date(*d));
    let what = if wording == Wording::Public { "state" } else { "verdict" };
    let _ = write!(
        out,
        "</svg><p class=\"meta bar-ends\"><span>{first}</span><span>one cell a day (UTC), the worst {what} \
         of the day; hover for its availability</span><span>today</span></p>"
    );
    // Hover needs a mouse: the days that were not all up are also listed in words, newest first,
    // for a phone and a screen reader.
    let marked: Vec<&(i64, Figures)> =
        days.iter().rev().filter(|(_, f)| State::worst_of(&f.ms).is_some_and(|w| w != State::Up)).collect();
    if !marked.is_empty() {
        out.push_str("<ul class=\"meta days\">");
        for (day, f) in marked {
            let worst = State::worst_of(&f.ms).map_or("", |s| wording.state(s));
            let _ =
                write!(out, "<li data-day=\"{}\">{worst}: {}</li>", date(*day), escape(&describe(*day, f, wording)));
        }
        out.push_str("</ul>");
    }
    out.push_str("</div>");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: i64 = 3_600_000;

    #[test]
    fn one_cell_a_day_coloured_by_its_worst_verdict_with_the_figures_in_its_title() {
        let mut days: Vec<(i64, Figures)> = (20_000..20_090).map(|d| (d, Figures::default())).collect();
        days[88].1 = Figures { ms: [23 * H, 0, H, 0], incidents: 1 };
        days[89].1 = Figures { ms: [5 * H, 0, 0, 0], incidents: 0 };
        days[87].1 = Figures { ms: [0, 0, 0, H], incidents: 0 };
        let svg = bar(&days, Wording::Operator);
        crate::badge::tests::well_formed(&svg).unwrap_or_else(|e| panic!("{e}: {svg}"));
        assert_eq!(svg.matches("<rect ").count(), 90);
        assert_eq!(svg.matches("d-none").count(), 87, "days before the first verdict have no colour");
        assert!(
            svg.contains(
                "<rect class=\"d d-DOWN\" data-day=\"2024-12-31\" x=\"880\" width=\"8\" height=\"30\" rx=\"1.5\">\
             <title>2024-12-31: 95.833% available, 1h 0m down, 1 incident</title>"
            ),
            "{svg}"
        );
        assert!(svg.contains("<title>2025-01-01: 100% available, 0 incidents</title>"), "{svg}");
        assert!(svg.contains("2024-12-30: not judged"), "{svg}");
        assert!(!svg.contains("style="), "styles come from the page's hashed style sheet");
        // The days not all up, in words for a phone, newest first; the all-up day is not listed.
        let listed: Vec<&str> = svg.split("<li data-day=\"").skip(1).filter_map(|l| l.get(..10)).collect();
        assert_eq!(listed, ["2024-12-31", "2024-12-30"], "{svg}");
        assert!(svg.contains(">DOWN: 2024-12-31: 95.833% available, 1h 0m down, 1 incident</li>"), "{svg}");

        // The same days on a public page: its words, and nothing about quorums.
        let public = bar(&days, Wording::Public);
        assert!(public.contains(">Outage: 2024-12-31: 95.833% available, 1h 0m down, 1 incident</li>"), "{public}");
        assert!(public.contains(">Unknown: 2024-12-30: no data</li>"), "{public}");
        assert!(!public.contains("quorum") && !public.contains("verdict"), "{public}");
    }
}
