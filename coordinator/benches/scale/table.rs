//! The figures of one size, and the table of all sizes beside the goals at 100,000 targets (README: "Scale benchmark").

use std::fmt::Write as _;
use std::time::Duration;

/// A read of every target's state: how long it took and how large the answer was (bytes,
/// lines or targets), or why it failed (shown in the table instead of ending the run).
pub type Read = std::result::Result<(Duration, usize), String>;

/// Every figure measured at one size.
#[derive(Default)]
pub struct Figures {
    pub targets: usize,
    pub startup: Duration,
    pub offered: f64,
    pub acked_rate: f64,
    pub cpu_per_result_us: f64,
    pub cores: f64,
    pub rss_mib: f64,
    pub hwm_mib: f64,
    /// Max of `hwm_mib` and `read_peaks_mib`.
    pub hwm_after_mib: f64,
    /// VmHWM during each read: `/metrics`, the page, `status`, `ListStatus`.
    pub read_peaks_mib: [f64; 4],
    pub metrics: Option<Read>,
    pub page: Option<Read>,
    pub status: Option<Read>,
    pub list_status: Option<Read>,
    pub stop: Duration,
    pub restart: Duration,
    pub refused: u64,
    pub changes: u64,
}

/// The figures as a table, one column per size, and the goals (README: "Scale benchmark") judged
/// at the largest size measured.
pub fn table(all: &[Figures]) -> String {
    let largest = all.iter().max_by_key(|f| f.targets).expect("at least one size");
    let mb = |b: usize| b as f64 / 1e6;
    type Row<'a> = (&'a str, Box<dyn Fn(&Figures) -> String>, Option<(&'a str, Box<dyn Fn(&Figures) -> bool>)>);
    let rows: Vec<Row> = vec![
        (
            "start-up (spawn to `/healthz` 200)",
            Box::new(|f| format!("{:.2} s", f.startup.as_secs_f64())),
            Some(("≤ 10 s", Box::new(|f| f.startup <= Duration::from_secs(10)))),
        ),
        (
            "restart (SIGTERM to `/healthz` 200 on the same data)",
            Box::new(|f| format!("{:.2} s (stop {:.2} s)", f.restart.as_secs_f64(), f.stop.as_secs_f64())),
            Some(("≤ 10 s", Box::new(|f| f.restart <= Duration::from_secs(10)))),
        ),
        (
            "results offered / acked in the window",
            Box::new(|f| format!("{:.0}/s / {:.0}/s", f.offered, f.acked_rate)),
            None,
        ),
        (
            "coordinator CPU per acked result",
            Box::new(|f| format!("{:.1} µs ({:.2} cores)", f.cpu_per_result_us, f.cores)),
            Some(("≤ 50 µs", Box::new(|f| f.cpu_per_result_us <= 50.0))),
        ),
        (
            "RSS after the feed (VmRSS)",
            Box::new(|f| format!("{:.0} MiB", f.rss_mib)),
            Some(("≤ 256 MiB", Box::new(|f| f.rss_mib <= 256.0))),
        ),
        (
            "peak RSS (VmHWM) after the feed / after the reads below",
            Box::new(|f| format!("{:.0} / {:.0} MiB", f.hwm_mib, f.hwm_after_mib)),
            Some(("≤ 256 MiB", Box::new(|f| f.hwm_after_mib <= 256.0))),
        ),
        (
            "peak RSS during `/metrics` / `GET /` / `status` / `ListStatus`",
            Box::new(|f| {
                let [m, p, s, l] = f.read_peaks_mib;
                format!("{m:.0} / {p:.0} / {s:.0} / {l:.0} MiB")
            }),
            None,
        ),
        (
            "`GET /metrics` size, time",
            Box::new(move |f| shown(&f.metrics, |t, b| format!("{:.2} MB, {:.2} s", mb(b), t))),
            Some(("≤ 25 MB, ≤ 1 s", Box::new(move |f| within(&f.metrics, |t, b| mb(b) <= 25.0 && t <= 1.0)))),
        ),
        (
            "status page `GET /` size, time",
            Box::new(move |f| shown(&f.page, |t, b| format!("{:.2} MB, {:.2} s", mb(b), t))),
            Some(("≤ 2 s", Box::new(|f| within(&f.page, |t, _| t <= 2.0)))),
        ),
        (
            "`vantage-coordinator status` (every target)",
            Box::new(|f| shown(&f.status, |t, n| format!("{t:.2} s ({n} lines)"))),
            Some(("≤ 2 s", Box::new(|f| within(&f.status, |t, _| t <= 2.0)))),
        ),
        (
            "`ListStatus` over gRPC (every target)",
            Box::new(|f| shown(&f.list_status, |t, n| format!("{t:.2} s ({n} targets)"))),
            Some(("≤ 2 s", Box::new(|f| within(&f.list_status, |t, _| t <= 2.0)))),
        ),
    ];
    let mut out = String::from("|");
    for f in all {
        let _ = write!(out, " | {} targets", thousands(f.targets));
    }
    let _ = writeln!(out, " | goal at 100,000 (✓/✗ at {}) |", thousands(largest.targets));
    let _ = writeln!(out, "|---{}|---|", "|---".repeat(all.len()));
    for (name, value, goal) in &rows {
        let _ = write!(out, "| {name}");
        for f in all {
            let _ = write!(out, " | {}", value(f));
        }
        match goal {
            Some((text, met)) => {
                let _ = writeln!(out, " | {text} {} |", if met(largest) { "✓" } else { "✗" });
            }
            None => out.push_str(" | |\n"),
        }
    }
    out
}

/// A read as the table shows it: its figures, or why it failed.
fn shown(read: &Option<Read>, show: impl Fn(f64, usize) -> String) -> String {
    match read {
        Some(Ok((took, size))) => show(took.as_secs_f64(), *size),
        Some(Err(e)) => format!("failed: {}", e.replace('|', "/").lines().next().unwrap_or_default()),
        None => "not measured".into(),
    }
}

/// Whether a read succeeded within its goal (seconds, size).
fn within(read: &Option<Read>, goal: impl Fn(f64, usize) -> bool) -> bool {
    matches!(read, Some(Ok((took, size))) if goal(took.as_secs_f64(), *size))
}

fn thousands(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}
