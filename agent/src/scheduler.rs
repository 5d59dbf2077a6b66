//! Runs each assigned target at its interval. First runs are spread over the interval by a hash
//! of agent and target (10,000 targets do not fire in one burst), a failed probe is retried once
//! after a second before it is reported, and run-now requests go ahead of the queue.
//!
//! An agent may serve several coordinators (a pair): each assigns its own targets, and the
//! scheduler probes their union once per interval. A target is one probe schedule per distinct
//! probe (its URL, what the probe does with it and its interval): coordinators with the same
//! config share one, and each result goes to every coordinator that assigned that probe; one
//! that assigned the same URL differently gets a schedule of its own. Results are handed to each
//! coordinator's session without waiting: a session that cannot take them (its coordinator slow
//! or down, its queue full) loses them, counted, and never holds up the others.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::{Semaphore, mpsc};
use tracing::Instrument;
use vantage_proto::v1::TargetResult;
use vantage_shared::limits::RETRY_DELAY;
use vantage_shared::telemetry::TRACE_ONLY;

use crate::assigned::{Assigned, Way};
use crate::probe::{Prober, Target};
use crate::wire;

/// What the session asks of the scheduler.
#[derive(Debug)]
pub enum Command {
    /// Replace every target.
    Assign(Vec<Assigned>),
    Change {
        upserted: Vec<Assigned>,
        removed: Vec<String>,
    },
    RunNow {
        id: String,
        url: String,
        /// The coordinator's CheckNow span, which this run's spans join.
        trace_context: HashMap<String, String>,
    },
}

/// Which coordinator (its index in the agent's `--coordinator` list) a command came from or a
/// result goes to.
pub type Coordinator = usize;

/// One probe schedule: a URL probed one way at one interval, for the coordinators that assigned
/// it so. An agent holds one per assigned target: it is kept small (56 bytes; the URL is the
/// map's key, the target is built for each run).
struct Scheduled {
    way: Way,
    /// Tells this schedule's queue entries and runs from those of one it replaced.
    generation: u32,
    /// A run (probe, retry) is under way: the next is skipped rather than queued behind it, so a
    /// slow network cannot pile up probes. The run says when it ends (`Scheduler::finished`).
    running: bool,
    /// The coordinators whose assignment this is; its results go to each of them.
    to: Coordinators,
}

/// At most this many coordinators per agent (a set of them is one machine word).
pub const MAX_COORDINATORS: usize = 64;

/// A set of coordinators, by index.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Coordinators(u64);

impl Coordinators {
    fn one(c: Coordinator) -> Coordinators {
        Coordinators(1 << c)
    }
    fn contains(self, c: Coordinator) -> bool {
        self.0 & (1 << c) != 0
    }
    fn insert(&mut self, c: Coordinator) {
        self.0 |= 1 << c;
    }
    fn remove(&mut self, c: Coordinator) {
        self.0 &= !(1 << c);
    }
    fn is_empty(self) -> bool {
        self.0 == 0
    }
    fn iter(self) -> impl Iterator<Item = Coordinator> {
        (0..MAX_COORDINATORS).filter(move |&c| self.contains(c))
    }
}

/// Where results for one coordinator go: its session's queue, never waited on.
#[derive(Clone)]
pub struct Outlet {
    /// The coordinator's URL, for logs.
    pub coordinator: Arc<str>,
    pub results: mpsc::Sender<TargetResult>,
    /// Results lost because the session's queue was full.
    pub dropped: Arc<AtomicU64>,
}

impl Outlet {
    pub fn new(coordinator: &str, results: mpsc::Sender<TargetResult>) -> Outlet {
        Outlet { coordinator: coordinator.into(), results, dropped: Arc::new(AtomicU64::new(0)) }
    }

    /// Hands `result` over without waiting; a full queue loses it (counted, and logged on the
    /// first loss and every thousandth after).
    fn give(&self, result: TargetResult) {
        match self.results.try_send(result) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                let lost = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
                if lost == 1 || lost % 1000 == 0 {
                    tracing::warn!(
                        coordinator = %self.coordinator,
                        lost,
                        "this coordinator's session is not taking results (slow or unreachable); results for it are dropped"
                    );
                }
            }
            // The session is gone: the agent is stopping.
            Err(mpsc::error::TrySendError::Closed(_)) => {}
        }
    }
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

/// A scheduled run that ended: its URL and its schedule's generation.
type Ended = (Arc<str>, u32);

pub struct Scheduler {
    agent: String,
    region: String,
    prober: Prober,
    outlets: Vec<Outlet>,
    limit: Arc<Semaphore>,
    /// How many URLs each coordinator assigns.
    assigned: Vec<usize>,
    /// The probe schedules of each URL (one unless coordinators assigned it differently). The
    /// URL is shared with its queue entries.
    targets: HashMap<Arc<str>, Vec<Scheduled>>,
    /// Each schedule's next run: when (nanoseconds after `epoch`), its URL and generation.
    queue: BinaryHeap<Reverse<(u64, Arc<str>, u32)>>,
    epoch: Instant,
    generation: u32,
    /// Runs that ended, by URL and generation; read before the next runs start.
    finished: (std::sync::mpsc::Sender<Ended>, std::sync::mpsc::Receiver<Ended>),
}

impl Scheduler {
    /// Serving one coordinator per outlet (at most [`MAX_COORDINATORS`]), in the order of their
    /// [`Coordinator`] indexes. Each probe holds one of `limit`'s permits (shared by the agent's
    /// probe threads).
    pub fn serving(agent: &str, prober: Prober, outlets: Vec<Outlet>, limit: Arc<Semaphore>) -> Scheduler {
        assert!(outlets.len() <= MAX_COORDINATORS, "at most {MAX_COORDINATORS} coordinators");
        Scheduler {
            agent: agent.to_owned(),
            region: String::new(),
            prober,
            assigned: vec![0; outlets.len()],
            outlets,
            limit,
            targets: HashMap::new(),
            queue: BinaryHeap::new(),
            epoch: Instant::now(),
            generation: 0,
            finished: std::sync::mpsc::channel(),
        }
    }

    /// Names the region in the probes' trace spans.
    pub fn in_region(mut self, region: &str) -> Scheduler {
        self.region = region.to_owned();
        self
    }

    /// Puts `url` where coordinator `from` assigns it now: on the schedule probing it the way
    /// `wanted` says (shared with any coordinator that assigned it alike; a probe assigned the
    /// same way as before keeps its schedule and phase), or nowhere (`None`: no longer
    /// assigned, or assigned in a way the probe cannot take). A schedule nobody assigns any more
    /// goes. `key` is `url` to keep, when the URL is new here.
    fn place(&mut self, from: Coordinator, url: &str, key: Option<&Arc<str>>, wanted: Option<Way>, now: Instant) {
        let (key, mut schedules) = match self.targets.remove_entry(url) {
            Some(entry) => entry,
            None if wanted.is_none() => return,
            None => (key.cloned().unwrap_or_else(|| Arc::from(url)), Vec::new()),
        };
        let had = schedules.iter().any(|s| s.to.contains(from));
        for s in &mut schedules {
            s.to.remove(from);
        }
        if let Some(way) = wanted {
            match schedules.iter_mut().find(|s| s.way == way) {
                Some(same) => same.to.insert(from),
                None => {
                    self.generation = self.generation.wrapping_add(1);
                    let first = self.nanos(now + phase(&self.agent, url, way.interval()));
                    self.queue.push(Reverse((first, key.clone(), self.generation)));
                    let to = Coordinators::one(from);
                    schedules.push(Scheduled { way, generation: self.generation, running: false, to });
                }
            }
            self.assigned[from] += usize::from(!had);
        } else {
            self.assigned[from] -= usize::from(had);
        }
        schedules.retain(|s| !s.to.is_empty());
        // A URL nearly always has one schedule: no room for four (a `Vec`'s first growth) per
        // URL, which at 100,000 targets was most of the agent's memory.
        schedules.shrink_to_fit();
        if !schedules.is_empty() {
            self.targets.insert(key, schedules);
        }
    }

    /// Places an assigned target; one the probe cannot take is logged and counts as not assigned.
    fn assign(&mut self, from: Coordinator, assigned: Assigned, now: Instant) {
        match assigned.way {
            Ok(way) => self.place(from, &assigned.url, Some(&assigned.url), Some(way), now),
            Err(e) => {
                tracing::warn!(url = &*assigned.url, error = e, "ignoring a target the probe cannot take");
                self.place(from, &assigned.url, None, None, now);
            }
        }
    }

    /// Applies a command from the only coordinator.
    pub fn apply(&mut self, command: Command) {
        self.apply_from(0, command);
    }

    /// Applies a command from coordinator `from`; returns how many URLs it assigns now and how
    /// many this scheduler probes in all.
    pub fn apply_from(&mut self, from: Coordinator, command: Command) -> (usize, usize) {
        let now = Instant::now();
        if from >= self.outlets.len() {
            return (0, self.targets.len());
        }
        match command {
            Command::Assign(all) => {
                // What it assigned before and does not now goes.
                let mut gone: HashSet<Arc<str>> = self
                    .targets
                    .iter()
                    .filter(|(_, all)| all.iter().any(|s| s.to.contains(from)))
                    .map(|(url, _)| url.clone())
                    .collect();
                for assigned in all {
                    gone.remove(&assigned.url);
                    self.assign(from, assigned, now);
                }
                for url in gone {
                    self.place(from, &url, None, None, now);
                }
                // Schedules nobody assigns any more leave the queue too.
                self.queue.retain(|Reverse((_, url, _))| self.targets.contains_key(url));
            }
            Command::Change { upserted, removed } => {
                for url in removed {
                    self.place(from, &url, None, None, now);
                }
                for assigned in upserted {
                    self.assign(from, assigned, now);
                }
            }
            // Its answer goes to the coordinator that asked, only.
            Command::RunNow { id, url, trace_context } => {
                let schedule = self.targets.get(url.as_str()).and_then(|all| all.iter().find(|s| s.to.contains(from)));
                match schedule.map(|s| s.way.target(&url)) {
                    Some(Ok(target)) => self.spawn(target, Some((id, trace_context)), None, Coordinators::one(from)),
                    Some(Err(e)) => tracing::warn!(url, error = e, "run-now for a target the probe cannot take"),
                    None => tracing::warn!(url, "run-now for a target this agent is not assigned"),
                }
            }
        }
        (self.assigned[from], self.targets.len())
    }

    /// `at` as the queue keeps it: nanoseconds since the scheduler started.
    fn nanos(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.epoch).as_nanos()).unwrap_or(u64::MAX)
    }

    /// When the next probe is due.
    pub fn next_due(&self) -> Option<Instant> {
        self.queue.peek().map(|Reverse((at, _, _))| self.epoch + Duration::from_nanos(*at))
    }

    /// Starts every probe that is due and schedules its next run.
    pub fn run_due(&mut self) {
        while let Ok((url, generation)) = self.finished.1.try_recv() {
            if let Some(s) =
                self.targets.get_mut(&url).and_then(|all| all.iter_mut().find(|s| s.generation == generation))
            {
                s.running = false;
            }
        }
        let now = self.nanos(Instant::now());
        while let Some(Reverse((at, url, generation))) = self.queue.peek().cloned() {
            if at > now {
                break;
            }
            self.queue.pop();
            let Some(s) =
                self.targets.get_mut(&url).and_then(|all| all.iter_mut().find(|s| s.generation == generation))
            else {
                continue; // rescheduled or removed since
            };
            // Keep the phase; if the agent fell behind, skip ahead instead of bursting.
            let interval = nanos_of(s.way.interval()).max(1);
            let mut next = at.saturating_add(interval);
            if next <= now {
                next = at.saturating_add((now - at) / interval * interval + interval);
            }
            self.queue.push(Reverse((next, url.clone(), generation)));
            if s.running {
                tracing::debug!(url = &*url, "previous run still going; this one is skipped");
                continue;
            }
            let target = match s.way.target(&url) {
                Ok(target) => target,
                Err(e) => {
                    // It parsed when it was assigned: not expected, but never a panic.
                    tracing::warn!(url = &*url, error = e, "a scheduled target the probe cannot take");
                    continue;
                }
            };
            s.running = true;
            let to = s.to;
            let finished = (self.finished.0.clone(), (url, generation));
            self.spawn(target, None, Some(finished), to);
        }
    }

    /// Runs `target` (probe, and retry) in its own task and sends the result to the coordinators
    /// `to`. A run-now carries its id and the trace it belongs to; a scheduled run says when it
    /// ends (its URL and generation) through `finished`.
    fn spawn(
        &self,
        target: Target,
        run_now: Option<(String, HashMap<String, String>)>,
        finished: Option<(std::sync::mpsc::Sender<Ended>, Ended)>,
        to: Coordinators,
    ) {
        let outlets: Vec<Outlet> = to.iter().filter_map(|i| self.outlets.get(i).cloned()).collect();
        let (prober, limit) = (self.prober.clone(), self.limit.clone());
        let span = tracing::info_span!(target: TRACE_ONLY, "run",
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
                if let Some((finished, ended)) = finished {
                    // The scheduler is gone only when the agent stops.
                    let _ = finished.send(ended);
                }
                let result = TargetResult { run_now_id, trace_context, ..result };
                if let Some((last, others)) = outlets.split_last() {
                    for outlet in others {
                        outlet.give(result.clone());
                    }
                    last.give(result);
                }
            }
            .instrument(span),
        );
    }
}

fn nanos_of(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
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

    fn spec(url: &str, interval_secs: i64) -> Assigned {
        Assigned::from_spec(vantage_proto::v1::TargetSpec {
            url: url.into(),
            interval: Some(prost_types::Duration { seconds: interval_secs, nanos: 0 }),
            ..Default::default()
        })
    }

    fn scheduler(coordinators: usize) -> (Scheduler, Vec<mpsc::Receiver<TargetResult>>) {
        let prober = Prober::new(crate::probe::ProberConfig::default()).unwrap();
        let (outlets, receivers): (Vec<_>, Vec<_>) = (0..coordinators)
            .map(|i| {
                let (tx, rx) = mpsc::channel(1);
                (Outlet::new(&format!("http://c{i}"), tx), rx)
            })
            .unzip();
        (Scheduler::serving("agent-1", prober, outlets, Arc::new(Semaphore::new(1))), receivers)
    }

    /// Each of `url`'s schedules: its generation, interval and who it serves.
    fn schedules(s: &Scheduler, url: &str) -> Vec<(u64, Duration, Vec<Coordinator>)> {
        s.targets.get(url).map_or(Vec::new(), |all| {
            all.iter().map(|t| (t.generation.into(), t.way.interval(), t.to.iter().collect())).collect()
        })
    }

    #[test]
    fn a_new_assignment_keeps_unchanged_targets_and_reschedules_changed_ones() {
        let (mut scheduler, _rx) = scheduler(1);
        let (a, b) = ("https://a.example/", "https://b.example/");
        scheduler.apply(Command::Assign(vec![spec(a, 60), spec(b, 60)]));
        let generation = |s: &Scheduler, url: &str| schedules(s, url)[0].0;
        let (ga, gb) = (generation(&scheduler, a), generation(&scheduler, b));
        scheduler.apply(Command::Assign(vec![spec(a, 60), spec(b, 30)]));
        assert_eq!(generation(&scheduler, a), ga, "unchanged: same schedule");
        assert_ne!(generation(&scheduler, b), gb, "a new interval is a new schedule");
        assert_eq!(schedules(&scheduler, b)[0].1, Duration::from_secs(30));
        scheduler.apply(Command::Assign(vec![spec(b, 30)]));
        assert!(!scheduler.targets.contains_key(a));
        assert!(scheduler.queue.iter().all(|Reverse((_, url, _))| &**url != a), "nothing of it stays queued");
    }

    #[test]
    fn two_coordinators_assigning_a_target_alike_share_one_probe_schedule() {
        let (mut scheduler, _rx) = scheduler(2);
        let (a, b, c) = ("https://a.example/", "https://b.example/", "https://c.example/");
        scheduler.apply_from(0, Command::Assign(vec![spec(a, 60), spec(b, 60)]));
        scheduler.apply_from(1, Command::Assign(vec![spec(a, 60), spec(c, 60)]));
        let ga = schedules(&scheduler, a)[0].0;
        assert_eq!(
            schedules(&scheduler, a),
            vec![(ga, Duration::from_secs(60), vec![0, 1])],
            "one probe, two coordinators"
        );
        assert_eq!(schedules(&scheduler, b)[0].2, vec![0]);
        assert_eq!(schedules(&scheduler, c)[0].2, vec![1]);
        // The union, once per interval: three schedules queued, not four.
        assert_eq!(scheduler.queue.len(), 3);
        // The second coordinator's reconnection (the same assignment again) changes nothing.
        scheduler.apply_from(1, Command::Assign(vec![spec(a, 60), spec(c, 60)]));
        assert_eq!(schedules(&scheduler, a)[0].0, ga);
        // One drops it: the other keeps the same schedule.
        scheduler.apply_from(0, Command::Change { upserted: Vec::new(), removed: vec![a.into()] });
        assert_eq!(schedules(&scheduler, a), vec![(ga, Duration::from_secs(60), vec![1])]);
    }

    #[test]
    fn a_target_assigned_differently_by_two_coordinators_is_probed_each_way() {
        let (mut scheduler, _rx) = scheduler(2);
        let a = "https://a.example/";
        scheduler.apply_from(0, Command::Assign(vec![spec(a, 60)]));
        scheduler.apply_from(1, Command::Assign(vec![spec(a, 30)]));
        let mut each: Vec<(Duration, Vec<Coordinator>)> =
            schedules(&scheduler, a).into_iter().map(|(_, i, to)| (i, to)).collect();
        each.sort();
        assert_eq!(each, vec![(Duration::from_secs(30), vec![1]), (Duration::from_secs(60), vec![0])]);
        // Alike again: one schedule for both.
        scheduler.apply_from(1, Command::Change { upserted: vec![spec(a, 60)], removed: Vec::new() });
        assert_eq!(schedules(&scheduler, a).into_iter().map(|(_, _, to)| to).collect::<Vec<_>>(), vec![vec![0, 1]]);
    }

    /// Makes every queued run of the scheduler due now.
    fn all_due(s: &mut Scheduler) {
        let entries: Vec<_> =
            s.queue.drain().map(|Reverse((_, url, generation))| Reverse((0, url, generation))).collect();
        s.queue.extend(entries);
    }

    #[tokio::test]
    async fn a_run_under_way_skips_the_next_until_it_ends() {
        let (mut scheduler, mut rx) = scheduler(1);
        // Refused at once, retried after a second: a run that lasts.
        let url = "http://127.0.0.1:1/";
        scheduler.apply(Command::Assign(vec![spec(url, 1)]));
        let running = |s: &Scheduler| s.targets[url][0].running;
        all_due(&mut scheduler);
        scheduler.run_due();
        assert!(running(&scheduler), "its first run started");
        all_due(&mut scheduler);
        scheduler.run_due();
        let first = tokio::time::timeout(Duration::from_secs(30), rx[0].recv()).await.unwrap().unwrap();
        assert!(first.retried, "the run that ended is the first, with its retry");
        all_due(&mut scheduler);
        scheduler.run_due();
        assert!(running(&scheduler), "once the first ended, the next one runs");
        let next = tokio::time::timeout(Duration::from_secs(30), rx[0].recv()).await.unwrap().unwrap();
        // A second run started beside the first would have retried within milliseconds of it;
        // the next result is the third run's, started after the first had ended.
        let retried_at = |r: &TargetResult| {
            r.result.as_ref().and_then(|r| r.checked_at).map(|t| t.seconds as f64 + t.nanos as f64 / 1e9)
        };
        let gap = retried_at(&next).unwrap() - retried_at(&first).unwrap();
        assert!(gap > 0.9, "the second run was skipped, not run beside the first ({gap:.3} s apart)");
    }

    #[tokio::test]
    async fn a_full_session_queue_loses_results_without_holding_up_the_others() {
        let (slow_tx, mut slow_rx) = mpsc::channel(1);
        let (fast_tx, mut fast_rx) = mpsc::channel(16);
        let (slow, fast) = (Outlet::new("http://slow", slow_tx), Outlet::new("http://fast", fast_tx));
        for n in 0..5 {
            let result = TargetResult { target_url: format!("https://t{n}.example/"), ..Default::default() };
            slow.give(result.clone());
            fast.give(result);
        }
        assert_eq!(slow.dropped.load(Ordering::Relaxed), 4, "the slow one kept what fitted");
        assert_eq!(slow_rx.recv().await.unwrap().target_url, "https://t0.example/");
        for n in 0..5 {
            assert_eq!(fast_rx.recv().await.unwrap().target_url, format!("https://t{n}.example/"));
        }
        assert_eq!(fast.dropped.load(Ordering::Relaxed), 0);
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
