//! Impaired regions (README: "Impaired regions"): when one region fails a large share of its
//! targets while every other region sees those targets UP, the fault is the region's own network,
//! not the sites'. This is the rule and its hysteresis, pure: each region's counts come in (the
//! hub keeps them up to date as opinions change, see [`flags`]), the regions turning impaired or
//! recovering go out. The verdict rules leave an impaired region's opinions out
//! (`verdict::decide_discounting`).

use std::collections::BTreeSet;

use crate::verdict::{Opinion, RegionOpinion};

/// Default of `[quorum] impaired_share`: half of a region's targets.
pub const IMPAIRED_SHARE: f64 = 0.5;
/// Default of `[quorum] impaired_min_targets`: fewer failures than this never impair a region,
/// however large their share (a region judging three targets, two of them blocked there, is not
/// broken).
pub const IMPAIRED_MIN_TARGETS: u32 = 5;

/// When a region is impaired (`[quorum]`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Policy {
    /// The share of the region's judged targets it must fail alone (0 < share ≤ 1; 0: the rule is
    /// off, no region is ever impaired).
    pub share: f64,
    /// And at least this many targets.
    pub min_targets: u32,
}

impl Default for Policy {
    fn default() -> Self {
        Policy { share: IMPAIRED_SHARE, min_targets: IMPAIRED_MIN_TARGETS }
    }
}

impl Policy {
    pub fn enabled(&self) -> bool {
        self.share > 0.0
    }

    /// Checks a configured share: a fraction from 0 (off) to 1.
    pub fn check_share(share: f64) -> Result<f64, String> {
        if share.is_finite() && (0.0..=1.0).contains(&share) {
            Ok(share)
        } else {
            Err(format!("impaired_share: {share} is not a fraction from 0 (off) to 1, such as 0.5"))
        }
    }

    /// Whether `tally` makes a region impaired: it fails alone at least `min_targets` targets and
    /// at least `share` of those it judges.
    fn enters(&self, tally: Tally) -> bool {
        self.enabled()
            && tally.alone >= self.min_targets.max(1)
            && f64::from(tally.alone) >= self.share * f64::from(tally.judged)
    }

    /// Whether an impaired region with `tally` has recovered: its share of failures alone fell
    /// below half the threshold. A region without any current opinion (its agents gone quiet)
    /// stays as it is: there is nothing to judge it by. The gap between the two thresholds keeps
    /// a region near one of them from turning impaired and back at every result.
    fn leaves(&self, tally: Tally) -> bool {
        !self.enabled() || (tally.judged > 0 && f64::from(tally.alone) < self.share / 2.0 * f64::from(tally.judged))
    }
}

/// How one region's opinion of one target counts: it judges the target (its opinion is known).
pub const JUDGED: u8 = 1;
/// It fails the target (down or partial) while every other region of the target sees it UP.
pub const ALONE: u8 = 2;

/// The counting flags of `opinions[i]` among a target's regions' opinions.
pub fn flags(opinions: &[RegionOpinion], i: usize) -> u8 {
    let Some(own) = opinions.get(i) else { return 0 };
    if own.opinion == Opinion::Unknown {
        return 0;
    }
    let failing = matches!(own.opinion, Opinion::Down | Opinion::Partial);
    let others_up = opinions.len() > 1 && opinions.iter().enumerate().all(|(j, o)| j == i || o.opinion == Opinion::Up);
    JUDGED | if failing && others_up { ALONE } else { 0 }
}

/// A region's counts over every target it judges.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tally {
    /// Targets it holds a current opinion of.
    pub judged: u32,
    /// Of those, the ones it alone sees failing.
    pub alone: u32,
}

impl Tally {
    /// One target's flags for this region changed from `before` to `after`.
    pub fn apply(&mut self, before: u8, after: u8) {
        let bit = |flags: u8, bit: u8| u32::from(flags & bit != 0);
        self.judged = (self.judged + bit(after, JUDGED)).saturating_sub(bit(before, JUDGED));
        self.alone = (self.alone + bit(after, ALONE)).saturating_sub(bit(before, ALONE));
    }

    pub fn is_empty(&self) -> bool {
        self.judged == 0 && self.alone == 0
    }

    /// The share it fails alone, in percent.
    pub fn percent(&self) -> u32 {
        if self.judged == 0 { 0 } else { ((u64::from(self.alone) * 100) / u64::from(self.judged)) as u32 }
    }
}

/// What changes when the rule is applied.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Evaluation {
    /// Regions impaired from now on, with their counts.
    pub impaired: Vec<(String, Tally)>,
    /// Impaired regions that are not any more, with their counts.
    pub recovered: Vec<(String, Tally)>,
}

/// Applies the rule to the regions of the default region set `set`: `impaired` holds the regions
/// impaired now, `tally` gives each region's counts. A region outside the set is impaired no
/// longer. Impaired regions stay a strict minority of the set (with three regions, one at most;
/// with two, none: each is the other's only witness), the worst first.
pub fn evaluate(
    policy: &Policy,
    set: &BTreeSet<String>,
    impaired: &BTreeSet<String>,
    tally: impl Fn(&str) -> Tally,
) -> Evaluation {
    let mut out = Evaluation::default();
    let mut still = 0;
    for region in impaired {
        let t = tally(region);
        if !set.contains(region) || policy.leaves(t) {
            out.recovered.push((region.clone(), t));
        } else {
            still += 1;
        }
    }
    let mut candidates: Vec<(String, Tally)> = set
        .iter()
        .filter(|r| !impaired.contains(*r))
        .map(|r| (r.clone(), tally(r)))
        .filter(|(_, t)| policy.enters(*t))
        .collect();
    // The worst first: the largest share failing alone (compared exactly), then the name.
    candidates.sort_by(|(a, ta), (b, tb)| {
        let (x, y) = (u64::from(tb.alone) * u64::from(ta.judged), u64::from(ta.alone) * u64::from(tb.judged));
        x.cmp(&y).then_with(|| a.cmp(b))
    });
    for (region, t) in candidates {
        if (still + 1) * 2 >= set.len() {
            break;
        }
        still += 1;
        out.impaired.push((region, t));
    }
    out
}

/// Why a region is impaired, or how far from it it is, in words.
pub fn reason(policy: &Policy, tally: Tally, impaired: bool) -> String {
    let counts = format!(
        "fails {} of the {} targets it judges ({}%) while every other region sees them UP",
        tally.alone,
        tally.judged,
        tally.percent()
    );
    let threshold =
        format!("{}% and at least {} targets", (policy.share * 100.0).round() as u32, policy.min_targets.max(1));
    if !policy.enabled() {
        format!("it {counts}; the rule is off (impaired_share = 0)")
    } else if impaired {
        format!(
            "it {counts} (impaired at {threshold}; it recovers below {}%): its network is at fault, not the sites; \
             its opinions are shown but not counted",
            (policy.share * 50.0).round() as u32
        )
    } else {
        format!("it {counts} (impaired at {threshold})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Opinion::*;

    fn opinions(spec: &[Opinion]) -> Vec<RegionOpinion> {
        spec.iter()
            .enumerate()
            .map(|(i, o)| RegionOpinion { region: format!("r{i}"), opinion: *o, code: None })
            .collect()
    }

    #[test]
    fn a_region_fails_a_target_alone_when_every_other_region_sees_it_up() {
        #[rustfmt::skip]
        let cases: &[(&str, &[Opinion], [u8; 3])] = &[
            ("all up", &[Up, Up, Up], [JUDGED, JUDGED, JUDGED]),
            ("r0 down alone", &[Down, Up, Up], [JUDGED | ALONE, JUDGED, JUDGED]),
            ("r0 partial alone", &[Partial, Up, Up], [JUDGED | ALONE, JUDGED, JUDGED]),
            ("two down: a shared problem", &[Down, Down, Up], [JUDGED, JUDGED, JUDGED]),
            ("down everywhere", &[Down, Down, Down], [JUDGED, JUDGED, JUDGED]),
            // A silent region is no witness: nobody can say the others see it UP.
            ("r0 down, r2 silent", &[Down, Up, Unknown], [JUDGED, JUDGED, 0]),
            ("r0 silent", &[Unknown, Up, Up], [0, JUDGED, JUDGED]),
        ];
        for (name, spec, expected) in cases {
            let o = opinions(spec);
            let got: Vec<u8> = (0..3).map(|i| flags(&o, i)).collect();
            assert_eq!(got, expected, "{name}");
        }
        // A target judged by one region only has no other witness.
        assert_eq!(flags(&opinions(&[Down]), 0), JUDGED);
        assert_eq!(flags(&opinions(&[Down]), 5), 0, "out of range");
    }

    #[test]
    fn tallies_follow_each_targets_flags_as_they_change() {
        let mut t = Tally::default();
        t.apply(0, JUDGED);
        t.apply(0, JUDGED | ALONE);
        assert_eq!(t, Tally { judged: 2, alone: 1 });
        t.apply(JUDGED | ALONE, JUDGED);
        assert_eq!(t, Tally { judged: 2, alone: 0 });
        t.apply(JUDGED, 0);
        t.apply(JUDGED, 0);
        assert!(t.is_empty());
        t.apply(JUDGED, 0);
        assert!(t.is_empty(), "never below zero");
    }

    fn set(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|n| (*n).to_owned()).collect()
    }

    /// Evaluates with `tallies` (region, judged, alone) and returns the regions impaired after.
    fn run(policy: &Policy, regions: &[&str], impaired: &[&str], tallies: &[(&str, u32, u32)]) -> Vec<String> {
        let now = set(impaired);
        let tally = |r: &str| {
            tallies
                .iter()
                .find(|(n, _, _)| *n == r)
                .map_or(Tally::default(), |(_, j, a)| Tally { judged: *j, alone: *a })
        };
        let e = evaluate(policy, &set(regions), &now, tally);
        let mut after: BTreeSet<String> = now;
        for (r, _) in &e.recovered {
            after.remove(r);
        }
        after.extend(e.impaired.into_iter().map(|(r, _)| r));
        after.into_iter().collect()
    }

    #[test]
    fn the_rule_with_its_thresholds_hysteresis_and_minority() {
        let p = Policy::default();
        let three = ["eu", "us", "ap"];
        #[rustfmt::skip]
        let cases: &[(&str, &[&str], &[(&str, u32, u32)], &[&str])] = &[
            // Entering: at least half of what it judges, and at least five.
            ("6 of 6 alone", &[], &[("eu", 6, 6)], &["eu"]),
            ("5 of 10: exactly at both thresholds", &[], &[("eu", 10, 5)], &["eu"]),
            ("4 of 10: under the share", &[], &[("eu", 10, 4)], &[]),
            ("4 of 4: under the minimum", &[], &[("eu", 4, 4)], &[]),
            ("nothing judged", &[], &[], &[]),
            // Leaving: below half the threshold (25%), not before.
            ("impaired, 3 of 10 still", &["eu"], &[("eu", 10, 3)], &["eu"]),
            ("impaired, 25% exactly", &["eu"], &[("eu", 8, 2)], &["eu"]),
            ("impaired, 2 of 10", &["eu"], &[("eu", 10, 2)], &[]),
            ("impaired, 0 of 6", &["eu"], &[("eu", 6, 0)], &[]),
            // A region whose agents went quiet judges nothing: it stays as it was.
            ("impaired, judging nothing", &["eu"], &[], &["eu"]),
            // A strict minority: with three regions, one at most, the worst.
            ("two would be", &[], &[("eu", 10, 6), ("us", 10, 9)], &["us"]),
            ("one is already", &["eu"], &[("eu", 10, 6), ("us", 10, 9)], &["eu"]),
            ("the other one leaves", &["eu"], &[("eu", 10, 0), ("us", 10, 9)], &["us"]),
        ];
        for (name, impaired, tallies, expected) in cases {
            assert_eq!(run(&p, &three, impaired, tallies), *expected, "{name}");
        }
        // Two regions: each is the other's only witness, neither is impaired.
        assert!(run(&p, &["eu", "us"], &[], &[("eu", 10, 10)]).is_empty());
        // Five: two at most.
        let five = ["a", "b", "c", "d", "e"];
        let all: Vec<(&str, u32, u32)> = five.iter().map(|r| (*r, 10, 8)).collect();
        assert_eq!(run(&p, &five, &[], &all), ["a", "b"]);
        // A region that left the set is impaired no longer.
        assert!(run(&p, &["us", "ap", "sa"], &["eu"], &[("eu", 10, 10)]).is_empty());
        // Off: nothing enters, and what was impaired recovers.
        let off = Policy { share: 0.0, ..p };
        assert!(run(&off, &three, &[], &[("eu", 10, 10)]).is_empty());
        assert!(run(&off, &three, &["eu"], &[("eu", 10, 10)]).is_empty());
        // A smaller minimum.
        let small = Policy { share: 0.5, min_targets: 2 };
        assert_eq!(run(&small, &three, &[], &[("eu", 3, 2)]), ["eu"]);
    }

    #[test]
    fn the_readmes_example_loads_and_holds_the_defaults() {
        let readme = include_str!("../../README.md");
        let section = readme.split("### Impaired regions").nth(1).expect("the README's section");
        let block = section.split("```toml\n").nth(1).and_then(|b| b.split("```").next()).expect("its example");
        let config = crate::config::parse_config(block, "README.md", std::path::Path::new(".")).unwrap();
        assert_eq!(config.impaired, Policy::default());
    }

    #[test]
    fn the_share_is_a_fraction() {
        assert_eq!(Policy::check_share(0.5), Ok(0.5));
        assert_eq!(Policy::check_share(0.0), Ok(0.0));
        assert_eq!(Policy::check_share(1.0), Ok(1.0));
        for bad in [1.5, -0.1, f64::NAN, 50.0] {
            assert!(Policy::check_share(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_reason_says_how_many_of_how_many() {
        let p = Policy::default();
        let t = Tally { judged: 6, alone: 6 };
        assert_eq!(
            reason(&p, t, true),
            "it fails 6 of the 6 targets it judges (100%) while every other region sees them UP (impaired at 50% \
             and at least 5 targets; it recovers below 25%): its network is at fault, not the sites; its opinions \
             are shown but not counted"
        );
        assert_eq!(
            reason(&p, Tally { judged: 6, alone: 0 }, false),
            "it fails 0 of the 6 targets it judges (0%) while every other region sees them UP (impaired at 50% and \
             at least 5 targets)"
        );
    }
}
