//! Quorum verdicts, as the README's "Verdicts and incidents" defines them: pure functions from
//! each region's opinion and the target's quorum to one verdict and its cause. No clocks, no I/O:
//! every rule is table-tested.

use vantage_shared::failure::FailureCode;

/// What one region currently thinks of a target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Opinion {
    /// The newest result passed.
    Up,
    /// A probe failed and the agent's immediate retry failed too.
    Down,
    /// Some backends fail, others pass.
    Partial,
    /// No connected agent in the region, or the newest result is too old.
    Unknown,
}

/// The consolidated state of a target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Verdict {
    Up,
    Degraded,
    Down,
    Unknown,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Up => "UP",
            Verdict::Degraded => "DEGRADED",
            Verdict::Down => "DOWN",
            Verdict::Unknown => "UNKNOWN",
        }
    }
}

/// One region's opinion and, when it is down or partial, the failure code it saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegionOpinion {
    pub region: String,
    pub opinion: Opinion,
    pub code: Option<FailureCode>,
}

/// The verdict with what explains it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub verdict: Verdict,
    /// The failure code most failing regions agree on.
    pub cause: Option<FailureCode>,
    /// Regions whose opinion is down or partial, in input order.
    pub failing: Vec<String>,
    /// The quorum that was applied.
    pub quorum: usize,
    /// Impaired regions whose opinions were not counted (README: "Impaired regions"), in input
    /// order.
    pub discounted: Vec<String>,
}

/// The default quorum: a strict majority of `regions`.
pub fn majority(regions: usize) -> usize {
    regions / 2 + 1
}

/// The quorum in force: the target's own (capped at its region count), or a strict majority.
pub fn effective_quorum(configured: u32, regions: usize) -> usize {
    match configured {
        0 => majority(regions),
        q => (q as usize).min(regions.max(1)),
    }
}

/// Decides a target's verdict from its regions' opinions and quorum `q`:
/// 1. DOWN if at least q regions are down;
/// 2. else UNKNOWN if fewer than q regions hold a known opinion;
/// 3. else DEGRADED if any region is down or partial;
/// 4. else UP.
pub fn decide(opinions: &[RegionOpinion], quorum: usize) -> Decision {
    let quorum = quorum.max(1);
    let count = |o: Opinion| opinions.iter().filter(|r| r.opinion == o).count();
    let down = count(Opinion::Down);
    let known = opinions.len() - count(Opinion::Unknown);
    let failing: Vec<&RegionOpinion> =
        opinions.iter().filter(|r| matches!(r.opinion, Opinion::Down | Opinion::Partial)).collect();
    let verdict = if down >= quorum {
        Verdict::Down
    } else if known < quorum {
        Verdict::Unknown
    } else if !failing.is_empty() {
        Verdict::Degraded
    } else {
        Verdict::Up
    };
    Decision {
        verdict,
        cause: agreed_cause(&failing),
        failing: failing.iter().map(|r| r.region.clone()).collect(),
        quorum,
        discounted: Vec::new(),
    }
}

/// Decides a target's verdict with the opinions of impaired regions left out: the rules of
/// [`decide`] over the other regions, with the quorum taken over them (`configured` as the
/// target's own quorum, 0 for a strict majority, capped at their number). A target DOWN in every
/// region that counts is still DOWN. When every region of the target is impaired, nobody else can
/// say otherwise: all are counted, as without impairment.
pub fn decide_discounting(opinions: &[RegionOpinion], configured: u32, impaired: impl Fn(&str) -> bool) -> Decision {
    let discounted: Vec<String> = opinions.iter().filter(|o| impaired(&o.region)).map(|o| o.region.clone()).collect();
    if discounted.is_empty() || discounted.len() == opinions.len() {
        return decide(opinions, effective_quorum(configured, opinions.len()));
    }
    let counted: Vec<RegionOpinion> = opinions.iter().filter(|o| !impaired(&o.region)).cloned().collect();
    let mut decision = decide(&counted, effective_quorum(configured, counted.len()));
    decision.discounted = discounted;
    decision
}

/// The code most failing regions report; down regions outweigh partial ones, and a tie goes to
/// the code of the earlier pipeline stage (the root cause more often than not).
fn agreed_cause(failing: &[&RegionOpinion]) -> Option<FailureCode> {
    let mut tally: Vec<(FailureCode, usize, usize)> = Vec::new(); // (code, down votes, all votes)
    for r in failing {
        let Some(code) = r.code else { continue };
        let down = usize::from(r.opinion == Opinion::Down);
        match tally.iter_mut().find(|(c, _, _)| *c == code) {
            Some(entry) => {
                entry.1 += down;
                entry.2 += 1;
            }
            None => tally.push((code, down, 1)),
        }
    }
    let order = |code: FailureCode| FailureCode::ALL.iter().position(|c| *c == code).unwrap_or(usize::MAX);
    tally
        .into_iter()
        .max_by(|a, b| (a.1, a.2).cmp(&(b.1, b.2)).then_with(|| order(b.0).cmp(&order(a.0))))
        .map(|(code, _, _)| code)
}

/// The newest result a region reported for a target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Observation {
    /// When the probe ran (the agent's clock), Unix milliseconds.
    pub at_ms: i64,
    pub status: vantage_shared::ProbeStatus,
    pub code: Option<FailureCode>,
}

/// How old a region's newest result may be before the region counts as silent: two run periods
/// plus a timeout. The run period is the interval, unless a failing run (the probe, the agent's
/// pause, the retry) outlasts it: the agent skips runs while one is going, so its results then
/// come a whole number of intervals apart. With the usual timeout (well under half the interval)
/// this is 2 × interval + timeout; without the longer period, a region whose probes time out
/// would turn silent between its own results, and the verdict would flap.
pub fn max_age_ms(interval_ms: i64, timeout_ms: i64) -> i64 {
    run_period_ms(interval_ms, timeout_ms).saturating_mul(2).saturating_add(timeout_ms)
}

/// How far apart one region's results for a failing target come: the interval, or a whole number
/// of intervals when a failing run (probe, the agent's pause, retry) outlasts it.
pub fn run_period_ms(interval_ms: i64, timeout_ms: i64) -> i64 {
    let retry_pause = vantage_shared::limits::RETRY_DELAY.as_millis() as i64;
    let interval = interval_ms.max(1);
    let longest_run = timeout_ms.saturating_mul(2).saturating_add(retry_pause);
    // The tick at which a run ends exactly is skipped too (the run is still finishing): a run of
    // exactly one interval makes the period two.
    interval.saturating_mul((longest_run / interval).max(0).saturating_add(1))
}

/// A region's opinion from its newest result: `unknown` when no agent of the region is connected
/// or the result is older than [`max_age_ms`] (a silent region is never up or down).
/// Failed results are already retry-confirmed by the agent, so a failure is `down`.
pub fn opinion(
    newest: Option<&Observation>,
    region_connected: bool,
    now_ms: i64,
    interval_ms: i64,
    timeout_ms: i64,
) -> (Opinion, Option<FailureCode>) {
    let Some(obs) = newest else { return (Opinion::Unknown, None) };
    // Saturating: an agent can report any probe time, and one from the distant past is old,
    // not an overflow (or, wrapped, a fresh result).
    if !region_connected || now_ms.saturating_sub(obs.at_ms) > max_age_ms(interval_ms, timeout_ms) {
        return (Opinion::Unknown, None);
    }
    match obs.status {
        vantage_shared::ProbeStatus::Up => (Opinion::Up, None),
        vantage_shared::ProbeStatus::Degraded => (Opinion::Partial, obs.code),
        vantage_shared::ProbeStatus::Down => (Opinion::Down, obs.code),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use FailureCode::*;
    use Opinion::*;

    fn regions(spec: &[(Opinion, Option<FailureCode>)]) -> Vec<RegionOpinion> {
        spec.iter()
            .enumerate()
            .map(|(i, (opinion, code))| RegionOpinion { region: format!("r{i}"), opinion: *opinion, code: *code })
            .collect()
    }

    #[test]
    fn quorum_defaults_to_a_strict_majority() {
        for (n, q) in [(1, 1), (2, 2), (3, 2), (4, 3), (5, 3), (6, 4)] {
            assert_eq!(majority(n), q, "{n} regions");
            assert_eq!(effective_quorum(0, n), q);
        }
        assert_eq!(effective_quorum(1, 3), 1);
        assert_eq!(effective_quorum(5, 3), 3, "a quorum above the region count is capped");
    }

    #[test]
    fn every_rule_of_the_design() {
        let e = Some(CertExpired);
        let r = Some(TcpRefused);
        #[rustfmt::skip]
        type Case<'a> = (&'a str, &'a [(Opinion, Option<FailureCode>)], usize, Verdict, Option<FailureCode>);
        let cases: &[Case] = &[
            // Rule 1: DOWN once q regions are down, whatever the others say.
            ("all down", &[(Down, e), (Down, e), (Down, e)], 2, Verdict::Down, e),
            ("exactly q down", &[(Down, e), (Down, e), (Up, None)], 2, Verdict::Down, e),
            ("q down, rest unknown", &[(Down, e), (Down, e), (Unknown, None)], 2, Verdict::Down, e),
            ("quorum 1: one region is enough", &[(Down, r), (Up, None), (Up, None)], 1, Verdict::Down, r),
            // One region's bad network never makes a target DOWN.
            ("one of three down", &[(Down, r), (Up, None), (Up, None)], 2, Verdict::Degraded, r),
            // Rule 2: UNKNOWN when fewer than q regions know.
            ("all silent", &[(Unknown, None), (Unknown, None), (Unknown, None)], 2, Verdict::Unknown, None),
            ("one known of three", &[(Up, None), (Unknown, None), (Unknown, None)], 2, Verdict::Unknown, None),
            ("one down, two silent", &[(Down, e), (Unknown, None), (Unknown, None)], 2, Verdict::Unknown, e),
            ("no regions at all", &[], 1, Verdict::Unknown, None),
            // Rule 3: DEGRADED when any known region fails but no quorum is down.
            ("one partial", &[(Partial, e), (Up, None), (Up, None)], 2, Verdict::Degraded, e),
            ("all partial", &[(Partial, e), (Partial, e), (Partial, e)], 2, Verdict::Degraded, e),
            ("down and partial below quorum", &[(Down, r), (Partial, e), (Up, None)], 2, Verdict::Degraded, r),
            ("silent region ignored when q know", &[(Down, r), (Up, None), (Unknown, None)], 2, Verdict::Degraded, r),
            // Rule 4: UP.
            ("all up", &[(Up, None), (Up, None), (Up, None)], 2, Verdict::Up, None),
            ("q up, one silent", &[(Up, None), (Up, None), (Unknown, None)], 2, Verdict::Up, None),
            ("single region up", &[(Up, None)], 1, Verdict::Up, None),
            // Ties: two regions each way with quorum 2 is DOWN (rule 1 comes first).
            ("2 down 2 up, q=2", &[(Down, e), (Down, e), (Up, None), (Up, None)], 2, Verdict::Down, e),
            ("2 down 2 up, q=3", &[(Down, e), (Down, e), (Up, None), (Up, None)], 3, Verdict::Degraded, e),
        ];
        for (name, spec, quorum, verdict, cause) in cases {
            let decision = decide(&regions(spec), *quorum);
            assert_eq!(decision.verdict, *verdict, "{name}");
            assert_eq!(decision.cause, *cause, "{name}: cause");
        }
    }

    #[test]
    fn impaired_regions_are_shown_but_not_counted_and_a_real_outage_stays_down() {
        let e = Some(TcpTimeout);
        let r = Some(TcpRefused);
        // r0 is impaired in every case.
        #[rustfmt::skip]
        type Case<'a> = (&'a str, &'a [(Opinion, Option<FailureCode>)], u32, Verdict, usize, Option<FailureCode>);
        let cases: &[Case] = &[
            // Its failures turn nothing DEGRADED: the others see the target UP.
            ("only the impaired region fails", &[(Down, e), (Up, None), (Up, None)], 0, Verdict::Up, 2, None),
            ("partial there only", &[(Partial, e), (Up, None), (Up, None)], 0, Verdict::Up, 2, None),
            // Down in every region that counts: DOWN, with their cause (not the impaired region's).
            ("down everywhere", &[(Down, e), (Down, r), (Down, r)], 0, Verdict::Down, 2, r),
            ("down in the others, up in it", &[(Up, None), (Down, r), (Down, r)], 0, Verdict::Down, 2, r),
            // It cannot make a quorum with one other region: the quorum is over the others.
            ("it and one other down", &[(Down, e), (Down, r), (Up, None)], 0, Verdict::Degraded, 2, r),
            // Its UP does not make up for a silent region either.
            ("one other silent", &[(Up, None), (Up, None), (Unknown, None)], 0, Verdict::Unknown, 2, None),
            // A quorum set on the target is capped at the regions that count.
            ("quorum 3 of the 2 that count", &[(Down, e), (Down, r), (Down, r)], 3, Verdict::Down, 2, r),
            ("quorum 1", &[(Down, e), (Down, r), (Up, None)], 1, Verdict::Down, 1, r),
            // Five regions: majority of the four that count.
            ("five regions", &[(Down, e), (Down, r), (Down, r), (Down, r), (Up, None)], 0, Verdict::Down, 3, r),
            ("five, two down", &[(Down, e), (Down, r), (Down, r), (Up, None), (Up, None)], 0, Verdict::Degraded, 3, r),
        ];
        for (name, spec, configured, verdict, quorum, cause) in cases {
            let decision = decide_discounting(&regions(spec), *configured, |region| region == "r0");
            assert_eq!(decision.verdict, *verdict, "{name}");
            assert_eq!(decision.quorum, *quorum, "{name}: quorum");
            assert_eq!(decision.cause, *cause, "{name}: cause");
            assert_eq!(decision.discounted, ["r0"], "{name}");
            assert!(!decision.failing.contains(&"r0".to_owned()), "{name}: not named failing");
        }
        // Nothing impaired: exactly `decide`.
        let spec = regions(&[(Down, e), (Down, e), (Up, None)]);
        assert_eq!(decide_discounting(&spec, 0, |_| false), decide(&spec, 2));
        // Every region of the target impaired (its only region, say): counted, as nobody else can say.
        let alone = regions(&[(Down, e)]);
        let d = decide_discounting(&alone, 0, |_| true);
        assert_eq!((d.verdict, d.discounted.len()), (Verdict::Down, 0));
    }

    #[test]
    fn failing_regions_are_named() {
        let decision = decide(&regions(&[(Up, None), (Down, Some(TcpTimeout)), (Partial, Some(CertExpired))]), 2);
        assert_eq!(decision.failing, vec!["r1", "r2"]);
    }

    #[test]
    fn cause_is_what_most_failing_regions_agree_on() {
        let d = decide(&regions(&[(Down, Some(TcpTimeout)), (Down, Some(CertExpired)), (Down, Some(CertExpired))]), 2);
        assert_eq!(d.cause, Some(CertExpired));
        // Down regions outweigh partial ones.
        let d = decide(
            &regions(&[(Down, Some(TcpTimeout)), (Partial, Some(CertExpired)), (Partial, Some(CertExpired))]),
            2,
        );
        assert_eq!(d.cause, Some(TcpTimeout));
        // A tie goes to the earlier stage.
        let d = decide(&regions(&[(Down, Some(Http5xx)), (Down, Some(DnsTimeout)), (Up, None)]), 2);
        assert_eq!(d.cause, Some(DnsTimeout));
    }

    #[test]
    fn opinions_from_the_newest_result() {
        use vantage_shared::ProbeStatus as S;
        let obs = |status, code| Observation { at_ms: 100_000, status, code };
        let (interval, timeout) = (10_000, 4_000);
        let at = |now, o: &Observation, connected| opinion(Some(o), connected, now, interval, timeout);
        assert_eq!(at(101_000, &obs(S::Up, None), true), (Up, None));
        assert_eq!(at(101_000, &obs(S::Down, Some(TcpRefused)), true), (Down, Some(TcpRefused)));
        assert_eq!(at(101_000, &obs(S::Degraded, Some(CertExpired)), true), (Partial, Some(CertExpired)));
        // Silent regions: no agent connected, or nothing new for 2 × interval + timeout.
        assert_eq!(at(101_000, &obs(S::Down, Some(TcpRefused)), false), (Unknown, None));
        assert_eq!(at(124_000, &obs(S::Up, None), true), (Up, None), "exactly at the limit still counts");
        assert_eq!(at(124_001, &obs(S::Up, None), true), (Unknown, None));
        assert_eq!(opinion(None, true, 0, interval, timeout), (Unknown, None));
    }

    #[test]
    fn a_region_is_silent_after_two_run_periods_and_a_timeout() {
        // The usual case: a failing run (10 s, 1 s pause, 10 s) fits in the interval.
        assert_eq!(max_age_ms(60_000, 10_000), 130_000);
        assert_eq!(max_age_ms(30_000, 10_000), 70_000);
        // Interval 2 s, timeout 1 s: a failing run takes 3 s, the next one starts 4 s after the
        // last, and its retry reports 1 s later; 2 × 2 s + 1 s would call that region silent.
        assert_eq!(max_age_ms(2_000, 1_000), 9_000);
        // Interval 3 s, timeout 1 s: a failing run lasts a little over 3 s, so the next tick is
        // skipped as well and results come 6 s apart.
        assert_eq!(max_age_ms(3_000, 1_000), 13_000);
        assert_eq!(max_age_ms(i64::MAX, i64::MAX), i64::MAX, "saturates");
    }

    #[test]
    fn a_result_from_the_distant_past_is_silence() {
        // An agent's checked_at of i64::MIN seconds overflowed here (fuzz/seeds/result_batch/ancient-result).
        let ancient = Observation { at_ms: i64::MIN, status: vantage_shared::ProbeStatus::Up, code: None };
        assert_eq!(opinion(Some(&ancient), true, 1_764_000_000_000, 60_000, 10_000), (Unknown, None));
    }
}
