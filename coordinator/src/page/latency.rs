//! The latency chart on a target's page: for each region, the median (p50) and 95th percentile
//! (p95) of its successful probes' total time per 15-minute bucket over the last 24 hours, from
//! the stored results, or (`latency=30d`, a link beside it) per hour over the last 30 days, from
//! the hourly roll-ups. Inline SVG drawn by the server, colours from the page's style sheet
//! (classes, so the hash-based policy holds), stretched to the page's width.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use vantage_proto::v1::{HistoryEntry, ProbeStatus};

use super::html::escape;
use crate::latency::quantile;

/// The span the chart covers, and its buckets.
pub const SPAN_MS: i64 = 24 * 3_600_000;
const BUCKETS: usize = 96;
/// Results read for the chart, newest first over every region: a target probed more often than
/// that allows in 24 hours shows only its most recent part (the page is drawn every 2 s).
pub const MAX_SAMPLES: usize = 6_000;
/// The chart's size in its own units (scaled to the page's width).
const W: f64 = 480.0;
const H: f64 = 90.0;

/// One bucket's p50 and p95 (ms), if it holds any result.
pub type Bucket = Option<(f64, f64)>;

/// Hours the 30-day chart covers (the newest is the hour under way, not rolled up yet).
pub const MONTH_HOURS: i64 = 30 * 24;

/// What the chart shows: the last 24 hours from the raw results, or the last 30 days from the
/// hourly roll-ups.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Span {
    #[default]
    Day,
    Month,
}

impl Span {
    /// From the page's `latency` parameter (`30d`; anything else is the 24-hour chart).
    pub fn from_query(value: Option<&str>) -> Span {
        if value == Some("30d") { Span::Month } else { Span::Day }
    }

    /// The query parameter that selects it (to keep it in the refresh's URL).
    pub fn param(self) -> &'static str {
        match self {
            Span::Day => "",
            Span::Month => "&latency=30d",
        }
    }
}

/// `samples` ((time ms, latency ms)) in `BUCKETS` equal buckets of `[to - SPAN_MS, to)`, each
/// with its p50 and p95.
pub fn buckets(samples: &[(i64, f64)], to: i64) -> Vec<Bucket> {
    let from = to - SPAN_MS;
    let width = SPAN_MS / BUCKETS as i64;
    let mut by: Vec<Vec<f64>> = vec![Vec::new(); BUCKETS];
    for &(at, ms) in samples {
        if at >= from && at < to && ms.is_finite() {
            by[((at - from) / width) as usize].push(ms);
        }
    }
    by.into_iter()
        .map(|mut v| {
            if v.is_empty() {
                return None;
            }
            v.sort_by(f64::total_cmp);
            Some((quantile(&v, 0.5), quantile(&v, 0.95)))
        })
        .collect()
}

/// Each region's buckets of the 30-day chart, one per hour of `MONTH_HOURS` ending with the hour
/// of `now`, from its rolled-up hours.
pub fn month_buckets(regions: &crate::store::LatencyHours, now: i64) -> BTreeMap<String, Vec<Bucket>> {
    let first = crate::latency::hour_of(now) - MONTH_HOURS + 1;
    regions
        .iter()
        .map(|(region, hours)| {
            let mut b: Vec<Bucket> = vec![None; MONTH_HOURS as usize];
            for (hour, s) in hours {
                if let Some(slot) = usize::try_from(hour - first).ok().and_then(|i| b.get_mut(i))
                    && s.ok > 0
                {
                    *slot = Some((f64::from(s.p50_us) / 1000.0, f64::from(s.p95_us) / 1000.0));
                }
            }
            (region.clone(), b)
        })
        .collect()
}

/// Each region's buckets for `span` ending `now` (every one of `regions`, empty where it has no
/// data): the last 24 hours from the newest results of every region in one read, or the last 30
/// days from the hourly roll-ups (one range read per region).
pub async fn read(
    hub: &crate::hub::Hub,
    url: &str,
    regions: &[String],
    span: Span,
    now: i64,
) -> BTreeMap<String, Vec<Bucket>> {
    match span {
        Span::Day => {
            let mut out: BTreeMap<String, Vec<Bucket>> =
                regions.iter().map(|r| (r.clone(), buckets(&[], now))).collect();
            let recent = hub.history(url, None, now - SPAN_MS, now, MAX_SAMPLES).await.unwrap_or_default();
            for (region, samples) in samples(&recent) {
                out.insert(region, buckets(&samples, now));
            }
            out
        }
        Span::Month => {
            let mut out: BTreeMap<String, Vec<Bucket>> =
                regions.iter().map(|r| (r.clone(), vec![None; MONTH_HOURS as usize])).collect();
            if let Ok(report) = hub.latency(url, "30d").await {
                out.extend(month_buckets(&report.regions, now));
            }
            out
        }
    }
}

/// Each region's successful results' (time, total ms) from `history` (any order).
pub fn samples(history: &[HistoryEntry]) -> BTreeMap<String, Vec<(i64, f64)>> {
    let mut out: BTreeMap<String, Vec<(i64, f64)>> = BTreeMap::new();
    for e in history {
        let Some(r) = &e.result else { continue };
        if r.status != ProbeStatus::Up as i32 {
            continue;
        }
        let Some(t) = &r.timings else { continue };
        out.entry(e.region.clone()).or_default().push((crate::clock::entry_ms(e), t.total_ms));
    }
    out
}

/// A round top for the y axis at or above `max` ms: 1, 2 or 5 times a power of ten.
fn scale_top(max: f64) -> f64 {
    let mut top = 1.0;
    while top < max {
        for step in [2.0, 2.5, 2.0] {
            top *= step;
            if top >= max {
                break;
            }
        }
    }
    top
}

/// A step line through the buckets' values (each level across its bucket's width, so a single
/// bucket shows too), broken where a bucket is empty.
fn path(buckets: &[Bucket], pick: impl Fn((f64, f64)) -> f64, top: f64) -> String {
    let step = W / buckets.len() as f64;
    let mut d = String::new();
    let mut drawing = false;
    for (i, b) in buckets.iter().enumerate() {
        match b {
            Some(v) => {
                let (x, y) = (step * i as f64, H - pick(*v).min(top) / top * H);
                // Horizontal and vertical moves: 720 hourly steps stay a few kB per line.
                if drawing {
                    let _ = write!(d, "V{y:.1} H{:.1} ", x + step);
                } else {
                    let _ = write!(d, "M{x:.1},{y:.1} H{:.1} ", x + step);
                }
                drawing = true;
            }
            None => drawing = false,
        }
    }
    d.trim_end().to_owned()
}

/// The chart: one small chart per region on one y scale, p50 solid and p95 dashed, the scale's
/// top written at its top, under links to the other span (`href`: the target's page). Without
/// a successful result in the span, a note instead of the charts.
pub fn chart(regions: &BTreeMap<String, Vec<Bucket>>, span: Span, href: &str) -> String {
    let max = regions.values().flatten().flatten().map(|(_, p95)| *p95).fold(0.0, f64::max);
    let (title, per, last, ago) = match span {
        Span::Day => ("24 hours", "per 15 minutes", "last 15 minutes", "24 h ago"),
        Span::Month => ("30 days", "per hour (hourly roll-ups)", "last hour rolled up", "30 d ago"),
    };
    let switch = match span {
        Span::Day => format!("<b>24 hours</b> · <a href=\"{}&amp;latency=30d\">30 days</a>", escape(href)),
        Span::Month => format!("<a href=\"{}\">24 hours</a> · <b>30 days</b>", escape(href)),
    };
    let mut out = format!("<h2>Latency, last {title}</h2><p class=\"meta latency-span\">{switch}</p>");
    if max <= 0.0 {
        let _ = write!(
            out,
            "<p class=\"note\">No successful probe in the last {title}{}.</p>",
            if span == Span::Month { " rolled up yet (an hour is rolled up after it ends)" } else { "" }
        );
        return out;
    }
    let top = scale_top(max);
    let _ = write!(
        out,
        "<p class=\"meta\">Successful probes' total time {per}: \
         <span class=\"k50\">p50</span> solid, <span class=\"k95\">p95</span> dashed; hover a region for \
         its figures.</p><div class=\"latency\" data-span=\"{}\">",
        if span == Span::Month { "30d" } else { "24h" }
    );
    for (region, buckets) in regions {
        let newest = buckets.iter().rev().flatten().next();
        let title = newest.map_or(format!("{region}: no successful result"), |(p50, p95)| {
            format!("{region}: {last} p50 {p50:.0} ms, p95 {p95:.0} ms")
        });
        let _ = write!(
            out,
            "<figure data-region=\"{r}\"><figcaption>{r}</figcaption>\
             <svg viewBox=\"0 0 {W} {H}\" preserveAspectRatio=\"none\" role=\"img\" aria-label=\"{t}\" \
             xmlns=\"http://www.w3.org/2000/svg\"><title>{t}</title>\
             <line class=\"grid\" x1=\"0\" y1=\"0.5\" x2=\"{W}\" y2=\"0.5\"/>\
             <line class=\"grid\" x1=\"0\" y1=\"{mid}\" x2=\"{W}\" y2=\"{mid}\"/>\
             <path class=\"p95\" d=\"{p95}\"/><path class=\"p50\" d=\"{p50}\"/></svg>\
             <p class=\"meta axis\"><span>{top:.0} ms at the top · {ago}</span><span>now</span></p></figure>",
            r = escape(region),
            t = escape(&title),
            mid = H / 2.0,
            p95 = path(buckets, |(_, p95)| p95, top),
            p50 = path(buckets, |(p50, _)| p50, top),
        );
    }
    out.push_str("</div>");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_bucket_has_its_median_and_95th_percentile() {
        let to = 1_000 * SPAN_MS;
        let width = SPAN_MS / BUCKETS as i64;
        // The newest bucket: 1..=100 ms; the one before it empty; one older result outside.
        let mut samples: Vec<(i64, f64)> = (1..=100).map(|i| (to - width + i, i as f64)).collect();
        samples.push((to - SPAN_MS - 1, 5_000.0));
        samples.push((to - 3 * width, 40.0));
        let b = buckets(&samples, to);
        assert_eq!(b.len(), BUCKETS);
        assert_eq!(b[BUCKETS - 1], Some((50.0, 95.0)));
        assert_eq!(b[BUCKETS - 2], None);
        assert_eq!(b[BUCKETS - 3], Some((40.0, 40.0)));
        assert_eq!(b.iter().flatten().count(), 2, "the result older than 24 h is left out");
    }

    #[test]
    fn the_chart_is_one_small_chart_per_region_with_gaps_where_there_is_no_data() {
        let mut regions = BTreeMap::new();
        let mut b: Vec<Bucket> = vec![None; BUCKETS];
        b[0] = Some((10.0, 20.0));
        b[1] = Some((12.0, 30.0));
        b[3] = Some((11.0, 90.0));
        regions.insert("eu-west".to_owned(), b);
        regions.insert("<b>".to_owned(), vec![None; BUCKETS]);
        let svg = chart(&regions, Span::Day, "/target?url=x");
        crate::badge::tests::well_formed(&format!("<div>{svg}</div>")).unwrap_or_else(|e| panic!("{e}: {svg}"));
        assert_eq!(svg.matches("<figure").count(), 2);
        assert!(svg.contains("100 ms at the top"), "{svg}");
        // p95 of 90 ms on a 100 ms scale sits at a tenth of the height; the gap starts a new line.
        assert!(svg.contains("d=\"M0.0,72.0 H5.0 V63.0 H10.0 M15.0,9.0 H20.0\""), "{svg}");
        assert!(svg.contains("<b>24 hours</b> · <a href=\"/target?url=x&amp;latency=30d\">30 days</a>"), "{svg}");
        assert!(svg.contains("&lt;b&gt;: no successful result"), "{svg}");
        assert!(!svg.contains("style="));
        let empty = chart(&BTreeMap::new(), Span::Month, "/target?url=x");
        assert!(empty.contains("No successful probe in the last 30 days rolled up yet"), "{empty}");
        assert!(!empty.contains("<figure"), "nothing to draw, no chart: {empty}");
    }

    #[test]
    fn the_month_is_one_bucket_per_hour_from_the_rollups() {
        use crate::latency::{HOUR_MS, Summary};
        let now = 500_000 * HOUR_MS + 5;
        let mut regions = crate::store::LatencyHours::new();
        let s = Summary::of(&mut [10_000, 20_000, 30_000], 0);
        let failed = Summary { failed: 3, ..Summary::default() };
        // The hour before the current one, one 29 days back, one too old, and one all failures.
        regions
            .insert("eu".into(), vec![(500_000 - 800, s), (500_000 - 29 * 24, s), (500_000 - 2, failed), (499_999, s)]);
        let b = &month_buckets(&regions, now)["eu"];
        assert_eq!(b.len(), MONTH_HOURS as usize);
        assert_eq!(b[MONTH_HOURS as usize - 1], None, "the hour under way");
        assert_eq!(b[MONTH_HOURS as usize - 2], Some((20.0, 30.0)));
        assert_eq!(b[MONTH_HOURS as usize - 3], None, "no successful probe, no latency");
        assert_eq!(b[MONTH_HOURS as usize - 1 - 29 * 24], Some((20.0, 30.0)));
        assert_eq!(b.iter().flatten().count(), 2);
        let svg = chart(&month_buckets(&regions, now), Span::Month, "/target?url=x");
        crate::badge::tests::well_formed(&format!("<div>{svg}</div>")).unwrap_or_else(|e| panic!("{e}: {svg}"));
        assert!(svg.contains("<h2>Latency, last 30 days</h2>") && svg.contains("data-span=\"30d\""), "{svg}");
        assert!(svg.contains("<a href=\"/target?url=x\">24 hours</a> · <b>30 days</b>"), "{svg}");
        assert!(svg.contains("eu: last hour rolled up p50 20 ms, p95 30 ms"), "{svg}");
    }

    #[test]
    fn the_scale_tops_are_round() {
        assert_eq!([scale_top(0.5), scale_top(3.0), scale_top(90.0), scale_top(1001.0)], [1.0, 5.0, 100.0, 2000.0]);
    }
}
