//! Latency roll-ups in the hub: one target's hourly figures per region over a window
//! (`GET /v1/latency`, the target page's 30-day chart), read from the store's roll-ups
//! (README: "Latency roll-ups"). Housekeeping computes them (`hub/housekeeping.rs`).

use super::{Hub, HubError, blocking};
use crate::clock::now_ms;
use crate::latency::{HOUR_MS, hour_of};
use crate::store::LatencyHours;
use crate::uptime::{Window, parse_windows};

/// One target's rolled-up hours over a window.
#[derive(Debug, Clone)]
pub struct LatencyReport {
    pub url: String,
    pub window: Window,
    /// The window, Unix ms: `[from_ms, to_ms)`; its hours are those that start within it.
    pub from_ms: i64,
    pub to_ms: i64,
    /// Each region's hours, oldest first (an hour without results, or not rolled up yet, is not
    /// there).
    pub regions: LatencyHours,
}

impl Hub {
    /// The rolled-up hours of `url` (a watched target) over `window` (a duration such as `30d`,
    /// at most the days roll-ups are kept), per region. One range read per region.
    pub async fn latency(&self, url: &str, window: &str) -> Result<LatencyReport, HubError> {
        let window = parse_windows(&[window.to_owned()])
            .map_err(|e| HubError::Refused(e.to_string()))?
            .pop()
            .ok_or_else(|| HubError::Refused("no window".into()))?;
        let url = vantage_shared::TargetUrl::parse(url).map(|u| u.to_string()).unwrap_or_else(|_| url.to_owned());
        if !self.lock().targets.contains_key(url.as_str()) {
            return Err(HubError::NoTarget(url));
        }
        let to_ms = now_ms();
        let from_ms = to_ms - window.ms;
        let (first, last) = (hour_of(from_ms + HOUR_MS - 1), hour_of(to_ms));
        let read = url.clone();
        let regions = blocking(&self.store, move |s| s.latency_hours(&read, first, last)).await?;
        Ok(LatencyReport { url, window, from_ms, to_ms, regions })
    }
}
