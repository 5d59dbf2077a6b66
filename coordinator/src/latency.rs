//! Hourly latency roll-ups (README: "Latency roll-ups"), pure: per target, region and UTC hour,
//! how many probes passed and failed and the passing ones' total time (minimum, p50, p95, p99,
//! maximum, mean), and how a UTC day of those hours is encoded. Housekeeping computes a closed
//! hour once from the raw results (`store::latency`); the API and the target page read them.

use std::fmt;

pub const HOUR_MS: i64 = 3_600_000;
const HOURS_PER_DAY: i64 = 24;

/// An hour is rolled up once it ended this long ago: a result that reaches the coordinator
/// later (an agent cut off for longer, resending its outbox) is kept as a raw result but not
/// counted in its hour's roll-up.
pub const GRACE_MS: i64 = 10 * 60_000;

/// Days of latency roll-ups kept: as long as the availability roll-ups, pruned with them.
pub const KEPT_DAYS: i64 = crate::uptime::ROLLUP_DAYS;

/// The UTC hour (hours since the Unix epoch) that `ms` falls in.
pub fn hour_of(ms: i64) -> i64 {
    ms.div_euclid(HOUR_MS)
}

/// The UTC day (`uptime::day_of`) an hour belongs to.
pub fn day_of_hour(hour: i64) -> i64 {
    hour.div_euclid(HOURS_PER_DAY)
}

/// Hours before this one are closed at `now_ms` (ended at least [`GRACE_MS`] ago).
pub fn closed_before(now_ms: i64) -> i64 {
    hour_of(now_ms.saturating_sub(GRACE_MS))
}

/// The value at quantile `q` (0..=1) of `sorted` by nearest rank: the smallest value with at
/// least `q` of the values at or below it (p50 of 1..=100 is 50, p95 is 95). `sorted` is not
/// empty.
pub fn quantile<T: Copy>(sorted: &[T], q: f64) -> T {
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// A latency in whole microseconds, as roll-ups hold it (saturating; a probe's total time is
/// bounded by its timeout, far below the 71 minutes a `u32` holds).
pub fn micros(ms: f64) -> u32 {
    if ms.is_finite() { (ms * 1000.0).round().clamp(0.0, f64::from(u32::MAX)) as u32 } else { 0 }
}

/// One (target, region, hour): its probes and the passing ones' total time in µs (the figures
/// are zero when none passed).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Summary {
    /// Probes that passed (status `UP`): the ones the figures are from.
    pub ok: u32,
    /// Probes that did not pass (their time is a timeout or a failure's, not a latency).
    pub failed: u32,
    pub min_us: u32,
    pub p50_us: u32,
    pub p95_us: u32,
    pub p99_us: u32,
    pub max_us: u32,
    pub mean_us: u32,
}

impl Summary {
    /// The summary of the passing probes' times `us` (any order) and `failed` other probes.
    pub fn of(us: &mut [u32], failed: u32) -> Summary {
        if us.is_empty() {
            return Summary { failed, ..Summary::default() };
        }
        us.sort_unstable();
        let sum: u64 = us.iter().map(|&v| u64::from(v)).sum();
        let n = us.len() as u64;
        Summary {
            ok: u32::try_from(us.len()).unwrap_or(u32::MAX),
            failed,
            min_us: us[0],
            p50_us: quantile(us, 0.50),
            p95_us: quantile(us, 0.95),
            p99_us: quantile(us, 0.99),
            max_us: us[us.len() - 1],
            mean_us: ((sum + n / 2) / n) as u32,
        }
    }
}

/// A stored day row could not be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("latency roll-up: unknown encoding {0}")]
    Version(u8),
    #[error("latency roll-up: cut short")]
    Truncated,
    #[error("latency roll-up: figures out of order")]
    Order,
}

/// The hours of one (target, region, UTC day) that have a roll-up, by hour of the day (0..24).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DayHours {
    pub hours: [Option<Summary>; 24],
}

const VERSION: u8 = 1;

fn put(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn take(bytes: &mut &[u8]) -> Result<u32, DecodeError> {
    let mut v: u64 = 0;
    for shift in (0..35).step_by(7) {
        let (&b, rest) = bytes.split_first().ok_or(DecodeError::Truncated)?;
        *bytes = rest;
        v |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return u32::try_from(v).map_err(|_| DecodeError::Order);
        }
    }
    Err(DecodeError::Truncated)
}

impl DayHours {
    /// Sets hour `hour` (any hour of the epoch: its hour of the day is taken).
    pub fn set(&mut self, hour: i64, summary: Summary) {
        self.hours[hour.rem_euclid(HOURS_PER_DAY) as usize] = Some(summary);
    }

    /// The stored form: a version byte, a bit per hour present, then per hour present the two
    /// counts and the figures as varints, each figure as its distance from the one below it
    /// (about 16 bytes an hour, 400 a day at most).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![VERSION];
        let present = self.hours.iter().enumerate().fold(0u64, |m, (i, h)| m | (u64::from(h.is_some()) << i));
        put(&mut out, present);
        for s in self.hours.iter().flatten() {
            put(&mut out, u64::from(s.ok));
            put(&mut out, u64::from(s.failed));
            if s.ok > 0 {
                for (v, below) in [
                    (s.min_us, 0),
                    (s.p50_us, s.min_us),
                    (s.p95_us, s.p50_us),
                    (s.p99_us, s.p95_us),
                    (s.max_us, s.p99_us),
                    (s.mean_us, s.min_us),
                ] {
                    put(&mut out, u64::from(v.saturating_sub(below)));
                }
            }
        }
        out
    }

    pub fn decode(mut bytes: &[u8]) -> Result<DayHours, DecodeError> {
        let (&version, rest) = bytes.split_first().ok_or(DecodeError::Truncated)?;
        if version != VERSION {
            return Err(DecodeError::Version(version));
        }
        bytes = rest;
        let present = take(&mut bytes)?;
        let mut day = DayHours::default();
        for (i, slot) in day.hours.iter_mut().enumerate() {
            if present & (1 << i) == 0 {
                continue;
            }
            let (ok, failed) = (take(&mut bytes)?, take(&mut bytes)?);
            let mut s = Summary { ok, failed, ..Summary::default() };
            if ok > 0 {
                let mut next = |below: u32| -> Result<u32, DecodeError> {
                    below.checked_add(take(&mut bytes)?).ok_or(DecodeError::Order)
                };
                s.min_us = next(0)?;
                s.p50_us = next(s.min_us)?;
                s.p95_us = next(s.p50_us)?;
                s.p99_us = next(s.p95_us)?;
                s.max_us = next(s.p99_us)?;
                s.mean_us = next(s.min_us)?;
            }
            *slot = Some(s);
        }
        Ok(day)
    }

    /// (hour of the epoch, summary) of the hours present, oldest first, for day `day`.
    pub fn of_day(&self, day: i64) -> impl Iterator<Item = (i64, Summary)> + '_ {
        self.hours.iter().enumerate().filter_map(move |(i, h)| h.map(|s| (day * HOURS_PER_DAY + i as i64, s)))
    }
}

/// Microseconds as milliseconds with three decimals (`12.345`).
pub struct Ms(pub u32);

impl fmt::Display for Ms {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{:03}", self.0 / 1000, self.0 % 1000)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank_over_the_passing_probes() {
        let mut us: Vec<u32> = (1..=100).rev().map(|ms| ms * 1000).collect();
        let s = Summary::of(&mut us, 7);
        assert_eq!(
            (s.ok, s.failed, s.min_us, s.p50_us, s.p95_us, s.p99_us, s.max_us, s.mean_us),
            (100, 7, 1_000, 50_000, 95_000, 99_000, 100_000, 50_500)
        );
        // One sample is every percentile; a few take the nearest rank above.
        let one = Summary::of(&mut [12_345], 0);
        assert_eq!(
            (one.min_us, one.p50_us, one.p99_us, one.max_us, one.mean_us),
            (12_345, 12_345, 12_345, 12_345, 12_345)
        );
        let mut three = [30, 10, 20];
        let s = Summary::of(&mut three, 0);
        assert_eq!((s.p50_us, s.p95_us, s.mean_us), (20, 30, 20));
        // Only failures: counted, no figures.
        assert_eq!(Summary::of(&mut [], 4), Summary { failed: 4, ..Summary::default() });
        assert_eq!((micros(12.3456), micros(-1.0), micros(f64::NAN), micros(1e12)), (12_346, 0, 0, u32::MAX));
        assert_eq!(Ms(12_045).to_string(), "12.045");
    }

    #[test]
    fn hours_close_a_grace_period_after_they_end() {
        let hour = 500_000;
        let start = hour * HOUR_MS;
        assert_eq!(hour_of(start), hour);
        assert_eq!(hour_of(start - 1), hour - 1);
        assert_eq!(hour_of(-1), -1, "before 1970 too");
        // During the hour and its grace period, the hour before it is the newest closed.
        assert_eq!(closed_before(start + HOUR_MS - 1), hour);
        assert_eq!(closed_before(start + HOUR_MS + GRACE_MS - 1), hour);
        assert_eq!(closed_before(start + HOUR_MS + GRACE_MS), hour + 1);
        assert_eq!(day_of_hour(hour), crate::uptime::day_of(start));
        assert_eq!(day_of_hour(-1), -1);
    }

    #[test]
    fn a_day_of_hours_round_trips_and_bad_rows_are_errors() {
        let mut day = DayHours::default();
        let a = Summary::of(&mut [5_000, 7_000, 900_000, 6_000], 2);
        day.set(480_000, a); // hour 0 of its day
        day.set(480_023, Summary { failed: 60, ..Summary::default() });
        day.set(480_007, Summary::of(&mut [u32::MAX, 0], 0));
        let bytes = day.encode();
        assert!(bytes.len() < 40, "{} bytes", bytes.len());
        assert_eq!(DayHours::decode(&bytes), Ok(day.clone()));
        let hours: Vec<i64> = day.of_day(20_000).map(|(h, _)| h).collect();
        assert_eq!(hours, [480_000, 480_007, 480_023]);
        assert_eq!(DayHours::decode(&[]), Err(DecodeError::Truncated));
        assert_eq!(DayHours::decode(&[9, 0]), Err(DecodeError::Version(9)));
        assert_eq!(DayHours::decode(&bytes[..bytes.len() - 1]), Err(DecodeError::Truncated));
        // A full day stays small.
        let mut full = DayHours::default();
        for h in 0..24 {
            full.set(h, Summary::of(&mut (0..60).map(|i| 40_000 + i * 700).collect::<Vec<_>>(), 1));
        }
        assert!(full.encode().len() < 24 * 20, "{} bytes", full.encode().len());
        assert_eq!(DayHours::decode(&full.encode()), Ok(full));
    }
}
