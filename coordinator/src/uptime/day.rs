//! One UTC day of one target (or of one region's opinion of it): milliseconds in each state,
//! when incidents opened, and the spans themselves, so a window that starts or ends inside the
//! day is cut exactly. Encoded compactly (one row per target, region and day, kept 400 days).

use super::State;

pub const DAY_MS: i64 = 86_400_000;

/// Spans one day keeps. A day with more (a target changing state more than once every five
/// minutes, all day) keeps its totals only: a window cut inside it counts its share pro rata.
pub const MAX_SPANS_PER_DAY: usize = 288;

/// The UTC day (days since 1970-01-01) holding `ms`.
pub fn day_of(ms: i64) -> i64 {
    ms.div_euclid(DAY_MS)
}

/// One day's record.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Day {
    /// Milliseconds per state, by `State::index`.
    pub ms: [i64; 4],
    /// When incidents opened, ms into the day.
    pub incidents: Vec<u32>,
    /// (from, to, state), ms into the day, in the order they were added; empty once `coarse`.
    pub spans: Vec<(u32, u32, State)>,
    /// More than `MAX_SPANS_PER_DAY` spans came: only the totals are kept.
    pub coarse: bool,
}

#[derive(Debug, thiserror::Error)]
#[error("a day's roll-up record is truncated or malformed")]
pub struct Malformed;

impl Day {
    /// Adds `[from, to)` (ms into the day) in `state`.
    pub fn add(&mut self, from: u32, to: u32, state: State) {
        if to <= from {
            return;
        }
        self.ms[state.index()] += i64::from(to - from);
        if self.coarse {
            return;
        }
        if let Some(last) = self.spans.last_mut().filter(|(_, end, s)| *end == from && *s == state) {
            last.1 = to;
        } else if self.spans.len() < MAX_SPANS_PER_DAY {
            self.spans.push((from, to, state));
        } else {
            self.coarse = true;
            self.spans = Vec::new();
        }
    }

    /// The worst state the day saw: see [`State::worst_of`].
    pub fn worst(&self) -> Option<State> {
        State::worst_of(&self.ms)
    }

    /// Milliseconds per state within `[from, to)` (ms into the day), and incidents opened in it.
    pub fn within(&self, from: i64, to: i64) -> ([i64; 4], u32) {
        let (from, to) = (from.clamp(0, DAY_MS), to.clamp(0, DAY_MS));
        let incidents = self.incidents.iter().filter(|&&at| from <= i64::from(at) && i64::from(at) < to).count();
        let incidents = u32::try_from(incidents).unwrap_or(u32::MAX);
        if from == 0 && to == DAY_MS {
            return (self.ms, incidents);
        }
        let mut ms = [0; 4];
        if self.coarse {
            // The day's totals, pro rata: exact spans are gone.
            for (share, total) in ms.iter_mut().zip(self.ms) {
                *share = total * (to - from).max(0) / DAY_MS;
            }
        } else {
            for &(a, b, state) in &self.spans {
                let (a, b) = (i64::from(a).max(from), i64::from(b).min(to));
                if b > a {
                    ms[state.index()] += b - a;
                }
            }
        }
        (ms, incidents)
    }

    /// The stored form: version, totals, coarse flag, incidents, spans (little-endian).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(1 + 32 + 1 + 4 + self.incidents.len() * 4 + 4 + self.spans.len() * 9);
        out.push(1);
        for ms in self.ms {
            out.extend_from_slice(&ms.to_le_bytes());
        }
        out.push(u8::from(self.coarse));
        out.extend_from_slice(&(self.incidents.len() as u32).to_le_bytes());
        for at in &self.incidents {
            out.extend_from_slice(&at.to_le_bytes());
        }
        out.extend_from_slice(&(self.spans.len() as u32).to_le_bytes());
        for (a, b, state) in &self.spans {
            out.extend_from_slice(&a.to_le_bytes());
            out.extend_from_slice(&b.to_le_bytes());
            out.push(state.index() as u8);
        }
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<Day, Malformed> {
        let mut r = Reader(bytes);
        if r.take(1)? != [1] {
            return Err(Malformed);
        }
        let mut day = Day::default();
        for ms in &mut day.ms {
            *ms = i64::from_le_bytes(r.array()?);
        }
        day.coarse = r.take(1)?[0] != 0;
        let n = u32::from_le_bytes(r.array()?) as usize;
        day.incidents = (0..n).map(|_| r.array().map(u32::from_le_bytes)).collect::<Result<_, _>>()?;
        let n = u32::from_le_bytes(r.array()?) as usize;
        day.spans = (0..n)
            .map(|_| {
                let (a, b) = (u32::from_le_bytes(r.array()?), u32::from_le_bytes(r.array()?));
                Ok((a, b, State::from_index(r.take(1)?[0]).ok_or(Malformed)?))
            })
            .collect::<Result<_, Malformed>>()?;
        Ok(day)
    }
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], Malformed> {
        if self.0.len() < n {
            return Err(Malformed);
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], Malformed> {
        self.take(N)?.try_into().map_err(|_| Malformed)
    }
}

/// `[from, to)` (Unix ms) cut at UTC midnights: (day, from, to) with ms into that day.
pub fn add_span(from: i64, to: i64) -> Vec<(i64, u32, u32)> {
    let mut out = Vec::new();
    let mut at = from;
    while at < to {
        let day = day_of(at);
        let end = to.min((day + 1) * DAY_MS);
        out.push((day, (at - day * DAY_MS) as u32, (end - day * DAY_MS) as u32));
        at = end;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: i64 = 3_600_000;

    #[test]
    fn a_span_across_midnight_is_cut_into_its_days() {
        let day = 20_000;
        let from = day * DAY_MS + 22 * H;
        let to = (day + 2) * DAY_MS + 2 * H;
        let parts = add_span(from, to);
        assert_eq!(
            parts,
            vec![(day, (22 * H) as u32, DAY_MS as u32), (day + 1, 0, DAY_MS as u32), (day + 2, 0, (2 * H) as u32)]
        );
        let total: i64 = parts.iter().map(|(_, a, b)| i64::from(b - a)).sum();
        assert_eq!(total, to - from, "no time lost or counted twice at the cuts");
        assert!(add_span(to, to).is_empty() && add_span(to, from).is_empty());
        assert_eq!(day_of(-1), -1, "before 1970 still floors");
    }

    #[test]
    fn a_day_sums_spans_cuts_windows_and_names_its_worst() {
        let mut day = Day::default();
        day.add(0, (10 * H) as u32, State::Up);
        day.add((10 * H) as u32, (11 * H) as u32, State::Down);
        day.incidents.push((10 * H) as u32);
        day.add((11 * H) as u32, (24 * H) as u32, State::Up);
        assert_eq!(day.ms, [23 * H, 0, H, 0]);
        assert_eq!(day.worst(), Some(State::Down));
        // The afternoon only: no down time, no incident.
        assert_eq!(day.within(12 * H, 24 * H), ([12 * H, 0, 0, 0], 0));
        // Half the outage.
        assert_eq!(day.within(10 * H + H / 2, 12 * H), ([H, 0, H / 2, 0], 0));
        assert_eq!(day.within(9 * H, 12 * H).1, 1);
        assert_eq!(Day::decode(&day.encode()).unwrap(), day);
        assert!(Day::decode(&day.encode()[..20]).is_err());
        assert!(Day::default().worst().is_none());
        // Unknown seconds do not make a day of UP look worse; a day of nothing judged is UNKNOWN.
        let mut quiet = Day::default();
        quiet.add(0, 4_000, State::Unknown);
        assert_eq!(quiet.worst(), Some(State::Unknown));
        quiet.add(4_000, DAY_MS as u32, State::Up);
        assert_eq!(quiet.worst(), Some(State::Up));
    }

    #[test]
    fn a_day_with_too_many_spans_keeps_totals_and_cuts_pro_rata() {
        let mut day = Day::default();
        let step = (DAY_MS / 1_000) as u32;
        for i in 0..1_000u32 {
            let state = if i % 2 == 0 { State::Up } else { State::Down };
            day.add(i * step, (i + 1) * step, state);
        }
        assert!(day.coarse && day.spans.is_empty());
        assert_eq!(day.ms[State::Up.index()] + day.ms[State::Down.index()], DAY_MS);
        let (half, _) = day.within(0, DAY_MS / 2);
        assert_eq!(half[State::Down.index()], DAY_MS / 4);
        assert!(Day::decode(&day.encode()).unwrap().coarse);
    }
}
