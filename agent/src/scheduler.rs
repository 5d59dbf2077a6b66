//! Runs each assigned target at its interval. First runs are spread over the interval by a hash
//! of agent and target (10,000 targets do not fire in one burst), a failed probe is retried once
//! after a second before it is reported, and run-now requests go ahead of the queue.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::{Semaphore, mpsc};
use tracing::Instrument;
use vantage_proto::v1::{TargetResult, TargetSpec};
use vantage_shared::limits::RETRY_DELAY;

use crate::probe::{Prober, Target};
use crate::wire;

/// What the session asks of the scheduler.
#[derive(Debug)]
pub enum Command {
    /// Replace every target.
    Assign(Vec<TargetSpec>),
    Change {
        upserted: Vec<TargetSpec>,
        removed: Vec<String>,
    },
    RunNow {
        id: String,
        url: String,
        /// The coordinator's CheckNow span, which this run's spans join.
        trace_context: HashMap<String, String>,
    },
}

struct Scheduled {
    target: Target,
    interval: Duration,
    generation: u64,
    /// A run (probe, retry) is under way: the next is skipped rather than queued behind it, so a
    /// slow network cannot pile up probes.
    running: Arc<AtomicBool>,
}

/// Where in its interval a target first runs: stable per agent and target, spread evenly.
pub fn phase(agent: &str, url: &str, interval: Duration) -> Duration {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in agent.bytes().chain([0]).chain(url.bytes()) {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    h ^= h >> 33;
    let millis = interval.as_millis().max(1) as u64;
    Duration::from_millis(h.wrapping_mul(0xff51_afd7_ed55_8ccd) % millis)
}

pub struct Scheduler {
    agent: String,
    region: String,
    prober: Prober,
    results: mpsc::Sender<TargetResult>,
    limit: Arc<Semaphore>,
    targets: HashMap<String, Scheduled>,
    queue: BinaryHeap<Reverse<(Instant, String, u64)>>,
    generation: u64,
}

impl Scheduler {
    /// `concurrency` bounds how many probes run at once.
    pub fn new(agent: &str, prober: Prober, results: mpsc::Sender<TargetResult>, concurrency: usize) -> Scheduler {
        Scheduler {
            agent: agent.to_owned(),
            region: String::new(),
            prober,
            results,
            limit: Arc::new(Semaphore::new(concurrency.max(1))),
            targets: HashMap::new(),
            queue: BinaryHeap::new(),
            generation: 0,
        }
    }

    /// Names the region in the probes' trace spans.
    pub fn in_region(mut self, region: &str) -> Scheduler {
        self.region = region.to_owned();
        self
    }

    fn upsert(&mut self, spec: &TargetSpec, now: Instant) {
        let target = match wire::target(spec) {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!(url = spec.url, error = e, "ignoring a target the probe cannot take");
                return;
            }
        };
        let interval = interval_of(spec);
        self.generation += 1;
        let first = now + phase(&self.agent, &spec.url, interval);
        self.queue.push(Reverse((first, spec.url.clone(), self.generation)));
        let running = Arc::new(AtomicBool::new(false));
        self.targets.insert(spec.url.clone(), Scheduled { target, interval, generation: self.generation, running });
    }

    pub fn apply(&mut self, command: Command) {
        let now = Instant::now();
        match command {
            Command::Assign(specs) => {
                // Unchanged targets keep their phase; others are (re)scheduled.
                let mut keep: HashMap<String, Scheduled> = std::mem::take(&mut self.targets);
                self.queue.retain(|Reverse((_, url, _))| specs.iter().any(|s| &s.url == url));
                for spec in &specs {
                    match keep.remove(&spec.url) {
                        Some(old)
                            if wire::target(spec).is_ok_and(|t| t == old.target)
                                && interval_of(spec) == old.interval =>
                        {
                            self.targets.insert(spec.url.clone(), old);
                        }
                        _ => self.upsert(spec, now),
                    }
                }
                tracing::info!(targets = self.targets.len(), "assignment received");
            }
            Command::Change { upserted, removed } => {
                for url in removed {
                    self.targets.remove(&url);
                }
                for spec in &upserted {
                    self.upsert(spec, now);
                }
                tracing::info!(targets = self.targets.len(), "assignment changed");
            }
            Command::RunNow { id, url, trace_context } => match self.targets.get(&url) {
                Some(s) => self.spawn(s.target.clone(), Some((id, trace_context)), None),
                None => tracing::warn!(url, "run-now for a target this agent is not assigned"),
            },
        }
    }

    /// When the next probe is due.
    pub fn next_due(&self) -> Option<Instant> {
        self.queue.peek().map(|Reverse((at, _, _))| *at)
    }

    /// Starts every probe that is due and schedules its next run.
    pub fn run_due(&mut self) {
        let now = Instant::now();
        while let Some(Reverse((at, url, generation))) = self.queue.peek().cloned() {
            if at > now {
                break;
            }
            self.queue.pop();
            let Some(s) = self.targets.get(&url) else { continue };
            if s.generation != generation {
                continue; // rescheduled since
            }
            let (target, interval, running) = (s.target.clone(), s.interval, s.running.clone());
            // Keep the phase; if the agent fell behind, skip ahead instead of bursting.
            let mut next = at + interval;
            while next <= now {
                next += interval;
            }
            self.queue.push(Reverse((next, url.clone(), generation)));
            if running.swap(true, Ordering::AcqRel) {
                tracing::debug!(url, "previous run still going; this one is skipped");
                continue;
            }
            self.spawn(target, None, Some(running));
        }
    }

    /// Runs `target` (probe, and retry) in its own task and sends the result. A run-now carries
    /// its id and the trace it belongs to.
    fn spawn(
        &self,
        target: Target,
        run_now: Option<(String, HashMap<String, String>)>,
        running: Option<Arc<AtomicBool>>,
    ) {
        let (prober, results, limit) = (self.prober.clone(), self.results.clone(), self.limit.clone());
        let span = tracing::info_span!(
            "run",
            url = %target.url,
            agent = self.agent,
            region = self.region,
            run_now = run_now.is_some()
        );
        // A run-now joins the coordinator's CheckNow trace, and its result carries the trace back.
        let (run_now_id, trace_context) = match run_now {
            Some((id, trace_context)) => {
                vantage_shared::telemetry::adopt(&span, trace_context.iter().map(|(k, v)| (&**k, &**v)));
                (id, vantage_shared::telemetry::carrier(&span))
            }
            None => Default::default(),
        };
        tokio::spawn(
            async move {
                let result = probe_with_retry(&prober, &target, &limit).await;
                if let Some(running) = running {
                    running.store(false, Ordering::Release);
                }
                let _ = results.send(TargetResult { run_now_id, trace_context, ..result }).await;
            }
            .instrument(span),
        );
    }
}

fn interval_of(spec: &TargetSpec) -> Duration {
    crate::probe::duration_of(spec.interval.as_ref()).unwrap_or(Duration::from_secs(60)).max(Duration::from_secs(1))
}

/// Probes once; a failure is retried after `RETRY_DELAY`, and the retry's result is the one
/// reported (a passing retry notes the failure before it).
/// Each probe holds one of `limit`'s permits; the pause before the retry holds none.
pub async fn probe_with_retry(prober: &Prober, target: &Target, limit: &Semaphore) -> TargetResult {
    let started = std::time::SystemTime::now();
    let first = {
        let _permit = limit.acquire().await;
        prober.probe(target).await
    };
    if first.failure.is_none() {
        return TargetResult {
            target_url: target.url.to_string(),
            result: Some(wire::result(&first, started)),
            ..Default::default()
        };
    }
    tokio::time::sleep(RETRY_DELAY).await;
    let started = std::time::SystemTime::now();
    let second = {
        let _permit = limit.acquire().await;
        prober.probe(target).await
    };
    let first_failure_code = match (&first.failure, &second.failure) {
        (Some(f), None) => f.code.as_str().to_owned(),
        _ => String::new(),
    };
    TargetResult {
        target_url: target.url.to_string(),
        result: Some(wire::result(&second, started)),
        retried: true,
        first_failure_code,
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(url: &str, interval_secs: i64) -> TargetSpec {
        TargetSpec {
            url: url.into(),
            interval: Some(prost_types::Duration { seconds: interval_secs, nanos: 0 }),
            ..Default::default()
        }
    }

    #[test]
    fn a_new_assignment_keeps_unchanged_targets_and_reschedules_changed_ones() {
        let prober = Prober::new(crate::probe::ProberConfig::default()).unwrap();
        let (tx, _rx) = mpsc::channel(1);
        let mut scheduler = Scheduler::new("agent-1", prober, tx, 1);
        let (a, b) = ("https://a.example/", "https://b.example/");
        scheduler.apply(Command::Assign(vec![spec(a, 60), spec(b, 60)]));
        let generation = |s: &Scheduler, url: &str| s.targets[url].generation;
        let (ga, gb) = (generation(&scheduler, a), generation(&scheduler, b));
        scheduler.apply(Command::Assign(vec![spec(a, 60), spec(b, 30)]));
        assert_eq!(generation(&scheduler, a), ga, "unchanged: same schedule");
        assert_ne!(generation(&scheduler, b), gb, "a new interval is a new schedule");
        assert_eq!(scheduler.targets[b].interval, Duration::from_secs(30));
        scheduler.apply(Command::Assign(vec![spec(b, 30)]));
        assert!(!scheduler.targets.contains_key(a));
    }

    #[test]
    fn first_runs_are_spread_over_the_interval() {
        let interval = Duration::from_secs(60);
        let mut buckets = [0usize; 60];
        for i in 0..10_000 {
            let p = phase("agent-1", &format!("https://t{i}.example/"), interval);
            assert!(p < interval);
            buckets[p.as_secs() as usize] += 1;
        }
        // 10,000 targets over 60 one-second buckets: about 167 each, never a burst.
        assert!(buckets.iter().all(|&n| (100..250).contains(&n)), "{buckets:?}");
    }
}
