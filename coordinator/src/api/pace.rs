//! How fast one agent's stream is read: a result rate and a byte rate, each a token bucket with
//! bursts of two full batches. An agent over either is read more slowly, never cut off.

use std::time::{Duration, Instant};

use vantage_shared::limits::{MAX_BATCH_RESULTS, MAX_MESSAGE};

/// Default of `--agent-rate`: results per second one agent may deliver before its stream is read
/// more slowly (a resent outbox drains at this pace instead of flooding the store).
pub const DEFAULT_AGENT_RATE: u32 = 2000;
/// Default of `--agent-bytes`: bytes of result batches per second one agent may deliver before
/// its stream is read more slowly. 8 MiB/s is the full result rate at 4 KiB a result (a result
/// with a certificate chain is 1–3 KiB), while one agent cannot keep the store writing at disk
/// speed with results at the size limit.
pub const DEFAULT_AGENT_BYTES: u64 = 8 << 20;

/// A token bucket: `rate` per second, bursts of `burst`. Taking more than is there is allowed
/// (a batch is never split); the caller then waits until the debt is paid.
struct Bucket {
    tokens: f64,
    rate: f64,
    burst: f64,
    last: Instant,
}

impl Bucket {
    /// At least `floor` in a burst, so that a single batch never waits on a full bucket.
    fn new(rate: f64, floor: f64, now: Instant) -> Bucket {
        let rate = rate.max(1.0);
        let burst = rate.max(floor);
        Bucket { tokens: burst, rate, burst, last: now }
    }

    /// Takes `n` tokens; returns how long to wait before going on.
    fn take(&mut self, n: usize, now: Instant) -> Duration {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst) - n as f64;
        if self.tokens >= 0.0 { Duration::ZERO } else { Duration::from_secs_f64(-self.tokens / self.rate) }
    }
}

/// One agent's pace: results per second and bytes per second, each with bursts of two full
/// batches; a batch waits as long as the slower of the two needs.
pub(super) struct Pace {
    results: Bucket,
    bytes: Bucket,
}

impl Pace {
    pub(super) fn new(rate: u32, bytes: u64, now: Instant) -> Pace {
        Pace {
            results: Bucket::new(f64::from(rate), 2.0 * MAX_BATCH_RESULTS as f64, now),
            bytes: Bucket::new(bytes as f64, 2.0 * MAX_MESSAGE as f64, now),
        }
    }

    /// Takes a batch of `results` results and `bytes` bytes; returns how long to wait.
    pub(super) fn take(&mut self, results: usize, bytes: usize, now: Instant) -> Duration {
        self.results.take(results, now).max(self.bytes.take(bytes, now))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bucket_lets_bursts_through_and_paces_floods() {
        let start = Instant::now();
        let mut bucket = Bucket::new(1000.0, 2000.0, start);
        // A burst of two full batches passes at once.
        assert_eq!(bucket.take(1001, start), Duration::ZERO);
        assert_eq!(bucket.take(999, start), Duration::ZERO);
        // The next must wait for its tokens: 1,000 results at 1,000 a second.
        assert_eq!(bucket.take(1000, start), Duration::from_secs(1));
        // After a quiet minute the bucket is full again, not fuller.
        let later = start + Duration::from_secs(60);
        assert_eq!(bucket.take(2000, later), Duration::ZERO);
        assert!(bucket.take(1, later) > Duration::ZERO);
    }

    #[test]
    fn the_pace_waits_for_the_slower_budget() {
        let start = Instant::now();
        // 1 MiB a second: two full messages pass at once whatever the rate, then bytes set the pace.
        let mut pace = Pace::new(100_000, 1 << 20, start);
        assert_eq!(pace.take(10, 2 * MAX_MESSAGE, start), Duration::ZERO);
        assert_eq!(pace.take(10, 3 << 20, start), Duration::from_secs(3));
        // Few bytes, many results: the result rate sets it.
        let mut pace = Pace::new(1000, u64::MAX, start);
        assert_eq!(pace.take(2000, 100, start), Duration::ZERO);
        assert_eq!(pace.take(500, 100, start), Duration::from_millis(500));
    }
}
