//! The bare loop at the benchmark's rate: a probe started every 1/rate seconds on one
//! current-thread runtime, whose thread's CPU time is the figure.

use std::time::{Duration, Instant};

use vantage_shared::lab::bare;

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
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime");
        runtime.block_on(async move {
            let ok = std::rc::Rc::new(std::cell::Cell::new(0u64));
            let local = tokio::task::LocalSet::new();
            local
                .run_until(async {
                    let mut tick = tokio::time::interval(Duration::from_secs(1) / rate);
                    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                    let start = Instant::now();
                    let mut measuring: Option<(Duration, u64, Instant)> = None;
                    loop {
                        tick.tick().await;
                        if measuring.is_none() && start.elapsed() >= warmup {
                            measuring = Some((thread_cpu(), ok.get(), Instant::now()));
                        }
                        if let Some((cpu, done, since)) = measuring {
                            if since.elapsed() >= window {
                                return Figures {
                                    cpu: thread_cpu() - cpu,
                                    probes: ok.get() - done,
                                    peak_rss_kib: None,
                                };
                            }
                        }
                        let (config, host, ok) = (config.clone(), host.clone(), ok.clone());
                        tokio::task::spawn_local(async move {
                            if let Ok(200) = bare::probe(config, addr, &host).await {
                                ok.set(ok.get() + 1);
                            }
                        });
                    }
                })
                .await
        })
    })
    .join()
    .expect("the bare loop ran")
}
