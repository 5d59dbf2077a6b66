//! `/metrics`: the coordinator's own series in the Prometheus text exposition format — each
//! target's verdict and silence, failures by code, agents by region, ingest, refusals and alert
//! delivery. Per-region probe detail (blackbox_exporter's `probe_*` names) is on
//! `GET /probe?target=URL` ([`probe`]), scraped per target as blackbox_exporter is, so this page
//! grows by one line per target, never by targets × regions × families. Label values are target
//! URLs, region names, failure codes and fixed enumerations, never time or input.

pub mod probe;
pub mod text;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

use vantage_proto::v1::Verdict;

use crate::hub::Hub;
use text::Text;

/// One target as this page shows it: its URL, its verdict now, whether a silence holds it.
pub type TargetLine<U> = (U, Verdict, bool);

/// The whole exposition.
pub async fn render(hub: &Hub) -> String {
    // Only what the page shows of each target (`Hub::verdicts`), not each one's whole status.
    let targets = hub.verdicts();
    let pending = hub.pending_alerts().await.map(|p| p.len()).unwrap_or(0);
    let mut text = Text::new();
    write_targets(&mut text, &targets);
    write_flapping(&mut text, &hub.flapping());
    write_counters(&mut text, hub, targets.len(), pending);
    text.finish()
}

/// The series per target: its verdict, one line with the current one (1), and whether a silence
/// holds it, only while one does. Every other state is absent rather than 0, which keeps
/// 100,000 targets near 8 MB (the README's "Metrics" has the measured figure); rules select
/// `vantage_target_verdict{verdict="DOWN"} == 1` as before.
pub fn write_targets<U: AsRef<str>>(text: &mut Text, targets: &[TargetLine<U>]) {
    text.family(
        "vantage_target_verdict",
        "gauge",
        "The target's consolidated verdict: one series per target, labelled with the current verdict, value 1.",
    );
    for (url, verdict, _) in targets {
        let verdict = crate::names::verdict(*verdict as i32);
        text.sample("vantage_target_verdict", &[("target", url.as_ref()), ("verdict", verdict)], 1.0);
    }
    text.family(
        "vantage_target_silenced",
        "gauge",
        "1 while a silence holds back the target's notifications; absent otherwise.",
    );
    for (url, _, _) in targets.iter().filter(|(_, _, silenced)| *silenced) {
        text.sample("vantage_target_silenced", &[("target", url.as_ref())], 1.0);
    }
}

/// `vantage_target_flapping`: 1 while flap damping holds the target's `down` and `recovered`
/// back; absent otherwise (as `vantage_target_silenced`).
fn write_flapping<U: AsRef<str>>(text: &mut Text, flapping: &[U]) {
    text.family(
        "vantage_target_flapping",
        "gauge",
        "1 while the target flaps (its down and recovered notifications are held back); absent otherwise.",
    );
    for url in flapping {
        text.sample("vantage_target_flapping", &[("target", url.as_ref())], 1.0);
    }
}

fn write_counters(f: &mut Text, hub: &Hub, targets: usize, pending: usize) {
    let counters = &hub.counters;
    f.family("vantage_failures_total", "counter", "Failing results received, by failure code.");
    let failures = counters.failures.lock().unwrap_or_else(|p| p.into_inner()).clone();
    for (code, n) in failures {
        f.sample("vantage_failures_total", &[("code", &code)], n as f64);
    }
    f.family("vantage_agents_connected", "gauge", "Agents connected now, by region.");
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
    // README: "Impaired regions".
    let known: Vec<_> = hub.regions().into_iter().filter(|r| !r.forgotten).collect();
    f.family(
        "vantage_region_impaired",
        "gauge",
        "1 while the region is impaired (it fails most of its targets while every other region sees them UP; its \
         opinions are not counted), else 0.",
    );
    for r in &known {
        f.sample("vantage_region_impaired", &[("region", &r.region)], f64::from(u8::from(r.impaired)));
    }
    f.family(
        "vantage_region_targets_failing_alone",
        "gauge",
        "Targets the region alone sees failing (down or partial while every other region sees them UP).",
    );
    for r in &known {
        f.sample("vantage_region_targets_failing_alone", &[("region", &r.region)], f64::from(r.targets_failing_alone));
    }
    f.family("vantage_region_targets_judged", "gauge", "Targets the region holds a current opinion of.");
    for r in &known {
        f.sample("vantage_region_targets_judged", &[("region", &r.region)], f64::from(r.targets_judged));
    }
    let load = |c: &AtomicU64| c.load(Ordering::Relaxed) as f64;
    for (name, help, value) in [
        ("vantage_ingested_results_total", "Results committed from agents' batches.", load(&counters.results)),
        ("vantage_ingested_batches_total", "Agents' batches committed.", load(&counters.batches)),
        ("vantage_duplicate_batches_total", "Batches received again and dropped.", load(&counters.duplicate_batches)),
    ] {
        f.family(name, "counter", help);
        f.sample(name, &[], value);
    }
    f.family(
        "vantage_results_refused_total",
        "counter",
        "Results from agents acknowledged but not stored, by reason (the coordinator's log names the agent).",
    );
    for reason in crate::refusal::Reason::ALL {
        let n = counters.refused[reason.index()].load(Ordering::Relaxed);
        f.sample("vantage_results_refused_total", &[("reason", reason.as_str())], n as f64);
    }
    f.family("vantage_targets", "gauge", "Targets configured.");
    f.sample("vantage_targets", &[], targets as f64);
    f.family("vantage_alert_deliveries_pending", "gauge", "Alerts with deliveries still to make.");
    f.sample("vantage_alert_deliveries_pending", &[], pending as f64);
    f.family(
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

#[cfg(test)]
mod tests {
    use super::*;

    /// What `/metrics` says per target at 100,000 targets of three regions each (the regions no
    /// longer add series), printed for the README: `cargo test -p vantage-coordinator --lib
    /// metrics_stay_small -- --nocapture`.
    #[test]
    fn metrics_stay_small_at_100000_targets() {
        const TARGETS: usize = 100_000;
        let verdicts = [Verdict::Up, Verdict::Degraded, Verdict::Down, Verdict::Unknown];
        let targets: Vec<TargetLine<String>> = (0..TARGETS)
            .map(|i| {
                // 41 characters, a typical health-check URL; one target in a hundred silenced.
                (format!("https://service-{i:06}.example.com/healthz"), verdicts[i % 4], i % 100 == 0)
            })
            .collect();
        let mut text = Text::new();
        write_targets(&mut text, &targets);
        let bytes = text.len();
        println!(
            "/metrics per-target series for {TARGETS} targets × 3 regions: {bytes} bytes ({:.1} MB, {:.1} bytes a target)",
            bytes as f64 / 1e6,
            bytes as f64 / TARGETS as f64
        );
        assert!(bytes <= 25_000_000, "{bytes} bytes");
        let text = text.finish();
        // One verdict line per target, with the current verdict; silence only where it holds.
        assert_eq!(text.lines().filter(|l| l.starts_with("vantage_target_verdict{")).count(), TARGETS);
        assert_eq!(text.lines().filter(|l| l.starts_with("vantage_target_silenced{")).count(), TARGETS / 100);
        assert!(text.contains(
            "vantage_target_verdict{target=\"https://service-000002.example.com/healthz\",verdict=\"DOWN\"} 1\n"
        ));
        assert!(!text.contains("region="), "no per-region series on /metrics");
    }
}
