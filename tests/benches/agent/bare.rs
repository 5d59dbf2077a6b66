//! The bare loop at the benchmark's rate, on the calling thread, whose CPU time is the figure.

use std::time::Duration;

use vantage_shared::lab::bare;

use crate::pace::paced;
use crate::{Figures, Site};

fn thread_cpu() -> Duration {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime fills the timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// Probes at `rate` for `warmup`, then measures `window`.
pub fn window(site: &Site, rate: u32, warmup: Duration, window: Duration) -> Figures {
    let config = bare::client_config(&site.ca_file).expect("the bare loop's client config");
    let (addr, host) = (site.addr, site.host.clone());
    let measured = paced(rate, warmup, window, thread_cpu, || {
        let (config, host) = (config.clone(), host.clone());
        async move { matches!(bare::probe(config, addr, &host).await, Ok(200)) }
    });
    assert_eq!(measured.failed, 0, "bare probes failed");
    Figures { cpu: measured.cpu, probes: measured.passed, peak_rss_kib: None }
}
