//! `/metrics`: the Prometheus text exposition format, named in blackbox_exporter's style so
//! dashboards and habits carry over (`probe_success`, `probe_duration_seconds`, …, one series per
//! target and region, from each region's newest result), plus Vantage's own: verdicts, region
//! opinions, failures by code, agents, ingest and alert delivery. Label values are target URLs,
//! region names, failure codes and fixed enumerations, so series grow with targets × regions,
//! never with time or input.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use vantage_proto::v1::{ProbeStatus, TargetStatus};

use crate::hub::Hub;

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

/// A label value, escaped as the exposition format wants.
fn escape(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

struct Family<'a> {
    out: &'a mut String,
}

impl Family<'_> {
    fn header(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.out, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        let labels: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{}\"", escape(v))).collect();
        let labels = if labels.is_empty() { String::new() } else { format!("{{{}}}", labels.join(",")) };
        let _ = writeln!(self.out, "{name}{labels} {value}");
    }
}

pub const VERDICTS: [&str; 4] = ["UP", "DEGRADED", "DOWN", "UNKNOWN"];
const OPINIONS: [&str; 4] = ["up", "partial", "down", "unknown"];

/// The whole exposition.
pub async fn render(hub: &Hub) -> String {
    let statuses = hub.statuses(&[]);
    let latest = hub.latest_results();
    let pending = hub.pending_alerts().await.map(|p| p.len()).unwrap_or(0);
    let mut out = String::new();
    let mut f = Family { out: &mut out };

    type Extract = fn(&vantage_proto::v1::ProbeResult) -> Option<f64>;
    let per_result: [(&str, &str, &str, Extract); 4] = [
        ("probe_success", "gauge", "Whether the region's newest probe succeeded (1) or not (0).", |r| {
            Some(if r.status == ProbeStatus::Up as i32 { 1.0 } else { 0.0 })
        }),
        ("probe_duration_seconds", "gauge", "How long the region's newest probe took.", |r| {
            r.timings.as_ref().map(|t| t.total_ms / 1000.0)
        }),
        ("probe_http_status_code", "gauge", "The final HTTP status of the newest probe (0 when none).", |r| {
            Some(f64::from(r.http_status))
        }),
        (
            "probe_ssl_earliest_cert_expiry",
            "gauge",
            "When the first certificate of the served chain expires, in Unix seconds.",
            |r| {
                let cert = r.cert.as_ref()?;
                cert.earliest_expiry.or(cert.not_after).map(|t| t.seconds as f64)
            },
        ),
    ];
    for (name, kind, help, extract) in per_result {
        f.header(name, kind, help);
        for (url, region, result) in &latest {
            if let Some(value) = extract(result) {
                f.sample(name, &[("target", url), ("region", region)], value);
            }
        }
    }
    f.header("probe_http_duration_seconds", "gauge", "Duration of each phase of the newest probe.");
    for (url, region, result) in &latest {
        let Some(t) = &result.timings else { continue };
        for (phase, ms) in
            [("resolve", t.dns_ms), ("connect", t.connect_ms), ("tls", t.tls_ms), ("processing", t.ttfb_ms)]
        {
            if let Some(ms) = ms {
                f.sample(
                    "probe_http_duration_seconds",
                    &[("target", url), ("region", region), ("phase", phase)],
                    ms / 1000.0,
                );
            }
        }
    }
    f.header("probe_tls_version_info", "gauge", "The TLS version the newest probe negotiated.");
    for (url, region, result) in &latest {
        if !result.tls_version.is_empty() {
            let labels =
                [("target", url.as_str()), ("region", region.as_str()), ("version", result.tls_version.as_str())];
            f.sample("probe_tls_version_info", &labels, 1.0);
        }
    }

    f.header("vantage_target_verdict", "gauge", "The target's consolidated verdict (1 for the current one).");
    for s in &statuses {
        let current = crate::names::verdict(s.verdict);
        for verdict in VERDICTS {
            f.sample(
                "vantage_target_verdict",
                &[("target", &s.url), ("verdict", verdict)],
                f64::from(u8::from(verdict == current)),
            );
        }
    }
    f.header("vantage_region_opinion", "gauge", "Each region's opinion of the target (1 for the current one).");
    for s in &statuses {
        for r in &s.regions {
            let current = crate::names::opinion(r.opinion);
            for opinion in OPINIONS {
                let labels = [("target", s.url.as_str()), ("region", r.region.as_str()), ("opinion", opinion)];
                f.sample("vantage_region_opinion", &labels, f64::from(u8::from(opinion == current)));
            }
        }
    }
    f.header("vantage_target_silenced", "gauge", "Whether a silence holds back the target's notifications now.");
    for s in &statuses {
        f.sample("vantage_target_silenced", &[("target", &s.url)], f64::from(u8::from(s.silence.is_some())));
    }
    write_counters(&mut f, hub, &statuses, pending);
    out
}

fn write_counters(f: &mut Family<'_>, hub: &Hub, statuses: &[TargetStatus], pending: usize) {
    let counters = &hub.counters;
    f.header("vantage_failures_total", "counter", "Failing results received, by failure code.");
    let failures = counters.failures.lock().unwrap_or_else(|p| p.into_inner()).clone();
    for (code, n) in failures {
        f.sample("vantage_failures_total", &[("code", &code)], n as f64);
    }
    f.header("vantage_agents_connected", "gauge", "Agents connected now, by region.");
    // The default region set: a forgotten region is no region without agents to alert on.
    let mut regions: BTreeMap<String, u32> = hub.region_set().into_iter().map(|r| (r, 0)).collect();
    for agent in hub.agents() {
        if let Some(n) = regions.get_mut(&agent.region) {
            *n += u32::from(agent.connected);
        }
    }
    for (region, n) in regions {
        f.sample("vantage_agents_connected", &[("region", &region)], f64::from(n));
    }
    let load = |c: &AtomicU64| c.load(Ordering::Relaxed) as f64;
    for (name, help, value) in [
        ("vantage_ingested_results_total", "Results committed from agents' batches.", load(&counters.results)),
        ("vantage_ingested_batches_total", "Agents' batches committed.", load(&counters.batches)),
        ("vantage_duplicate_batches_total", "Batches received again and dropped.", load(&counters.duplicate_batches)),
    ] {
        f.header(name, "counter", help);
        f.sample(name, &[], value);
    }
    f.header(
        "vantage_results_refused_total",
        "counter",
        "Results from agents acknowledged but not stored, by reason (the coordinator's log names the agent).",
    );
    for reason in crate::refusal::Reason::ALL {
        let n = counters.refused[reason.index()].load(Ordering::Relaxed);
        f.sample("vantage_results_refused_total", &[("reason", reason.as_str())], n as f64);
    }
    f.header("vantage_targets", "gauge", "Targets configured.");
    f.sample("vantage_targets", &[], statuses.len() as f64);
    f.header("vantage_alert_deliveries_pending", "gauge", "Alerts with deliveries still to make.");
    f.sample("vantage_alert_deliveries_pending", &[], pending as f64);
    f.header(
        "vantage_alert_channel_failing",
        "gauge",
        "Whether the alert channel's receiver says it is misconfigured (401/403/404): its alerts are not delivered.",
    );
    let failing = hub.channel_health.failing();
    for channel in hub.alert_channels() {
        f.sample(
            "vantage_alert_channel_failing",
            &[("channel", &channel)],
            f64::from(u8::from(failing.contains_key(&channel))),
        );
    }
}
