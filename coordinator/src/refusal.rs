//! Why the coordinator will not store one result of a batch: a fixed set of reasons (the label
//! values of `vantage_results_refused_total`), each told to the agent in its ack so it drops the
//! result instead of resending it, and a log that names an agent's refusals at most once per
//! reason per minute.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Why a result was refused. The names are metric labels: a fixed list, never what an agent sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Reason {
    /// Its target URL is empty or longer than `limits::MAX_URL`.
    TargetUrl,
    /// It carries no probe result.
    NoResult,
    /// Its run-now id or first failure code is longer than `limits::MAX_ID`.
    Id,
    /// Its trace context is more than `traceparent` and `tracestate` of bounded size.
    TraceContext,
    /// Encoded, it is larger than `limits::MAX_RESULT_BYTES`.
    TooLarge,
    /// The coordinator has no such target (never configured, or deleted).
    UnknownTarget,
    /// The target is not, and was not recently, assigned to this agent.
    NotAssigned,
}

impl Reason {
    pub const ALL: [Reason; 7] = [
        Reason::TargetUrl,
        Reason::NoResult,
        Reason::Id,
        Reason::TraceContext,
        Reason::TooLarge,
        Reason::UnknownTarget,
        Reason::NotAssigned,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Reason::TargetUrl => "target_url",
            Reason::NoResult => "no_result",
            Reason::Id => "id",
            Reason::TraceContext => "trace_context",
            Reason::TooLarge => "too_large",
            Reason::UnknownTarget => "unknown_target",
            Reason::NotAssigned => "not_assigned",
        }
    }

    /// Its position in [`Reason::ALL`] (for counters kept in an array).
    pub fn index(self) -> usize {
        Reason::ALL.iter().position(|r| *r == self).unwrap_or(0)
    }
}

/// One result refused: the reason, and what the agent is told (the field and the limit).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct Refusal {
    pub reason: Reason,
    pub message: String,
}

impl Refusal {
    pub fn new(reason: Reason, message: impl Into<String>) -> Refusal {
        Refusal { reason, message: message.into() }
    }
}

/// How often one agent's refusals of one reason are logged.
pub const LOG_EVERY: Duration = Duration::from_secs(60);
/// Agents remembered by the log before the quiet ones are forgotten (agent names are chosen by
/// clients when mTLS is off).
const MAX_REMEMBERED: usize = 10_000;

/// Remembers when each agent's refusals of each reason were last logged.
#[derive(Debug, Default)]
pub struct RefusalLog {
    /// (agent, reason) → (last logged, refusals since then that were not logged).
    last: Mutex<HashMap<(String, Reason), (Instant, u64)>>,
}

impl RefusalLog {
    /// Counts `count` refusals of `agent` for `reason`; returns `Some(unlogged)` when a line is due
    /// now (with how many refusals went unlogged since the last one), `None` to stay quiet.
    pub fn due(&self, agent: &str, reason: Reason, count: u64, now: Instant) -> Option<u64> {
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((at, unlogged)) = last.get_mut(&(agent.to_owned(), reason)) {
            if now.saturating_duration_since(*at) < LOG_EVERY {
                *unlogged += count;
                return None;
            }
            let since = *unlogged;
            (*at, *unlogged) = (now, 0);
            return Some(since);
        }
        if last.len() >= MAX_REMEMBERED {
            last.retain(|_, (at, _)| now.saturating_duration_since(*at) < LOG_EVERY);
            if last.len() >= MAX_REMEMBERED {
                // Every remembered line is recent: stay quiet (the metric still counts) rather
                // than grow past the bound.
                return None;
            }
        }
        last.insert((agent.to_owned(), reason), (now, 0));
        Some(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_are_distinct_labels() {
        let mut labels: Vec<&str> = Reason::ALL.iter().map(|r| r.as_str()).collect();
        labels.sort_unstable();
        labels.dedup();
        assert_eq!(labels.len(), Reason::ALL.len());
        for (i, r) in Reason::ALL.iter().enumerate() {
            assert_eq!(r.index(), i);
        }
    }

    #[test]
    fn each_agent_and_reason_is_logged_once_a_minute() {
        let log = RefusalLog::default();
        let start = Instant::now();
        assert_eq!(log.due("a1", Reason::NotAssigned, 3, start), Some(0));
        assert_eq!(log.due("a1", Reason::NotAssigned, 5, start + Duration::from_secs(10)), None);
        // Another reason, another agent: their own lines.
        assert_eq!(log.due("a1", Reason::TargetUrl, 1, start + Duration::from_secs(10)), Some(0));
        assert_eq!(log.due("a2", Reason::NotAssigned, 1, start + Duration::from_secs(10)), Some(0));
        assert_eq!(log.due("a1", Reason::NotAssigned, 2, start + Duration::from_secs(59)), None);
        // A minute on: logged again, saying how many went unlogged.
        assert_eq!(log.due("a1", Reason::NotAssigned, 1, start + Duration::from_secs(61)), Some(7));
        assert_eq!(log.due("a1", Reason::NotAssigned, 1, start + Duration::from_secs(62)), None);
    }
}
