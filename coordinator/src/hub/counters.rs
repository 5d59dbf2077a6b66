//! What the hub counts as it ingests, for `/metrics`: results and batches committed, duplicate
//! batches, results refused by reason, failing results by failure code.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// Counters the hub keeps for `/metrics`.
#[derive(Debug, Default)]
pub struct Counters {
    pub results: AtomicU64,
    pub batches: AtomicU64,
    pub duplicate_batches: AtomicU64,
    /// Results refused, by reason (in `refusal::Reason::ALL` order).
    pub refused: [AtomicU64; crate::refusal::Reason::ALL.len()],
    /// Failing results by failure code (codes are a fixed list).
    pub failures: Mutex<BTreeMap<String, u64>>,
}

impl Counters {
    pub fn count_failure(&self, code: &str) {
        if vantage_shared::FailureCode::from_code(code).is_none() {
            return; // only known codes: an agent cannot mint label values
        }
        let mut failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        *failures.entry(code.to_owned()).or_default() += 1;
    }

    pub fn count_refused(&self, reason: crate::refusal::Reason, n: u64) {
        self.refused[reason.index()].fetch_add(n, Ordering::Relaxed);
    }

    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }
}
