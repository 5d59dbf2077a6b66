//! Probes at a fixed rate from the calling thread, for the contenders the benchmark drives
//! itself (the bare loop, the exporter's `/probe`).

use std::cell::Cell;
use std::future::Future;
use std::rc::Rc;
use std::time::{Duration, Instant};

/// What a paced window counted.
pub struct Paced {
    /// CPU time over the window, as `cpu` reads it.
    pub cpu: Duration,
    pub passed: u64,
    pub failed: u64,
}

/// Starts `probe()` every 1/`rate` seconds on a single-threaded runtime of this thread: for
/// `warmup`, then for `window`, over which it counts probes that passed and failed and reads
/// `cpu` at both ends.
pub fn paced<Fut>(
    rate: u32,
    warmup: Duration,
    window: Duration,
    cpu: impl Fn() -> Duration,
    mut probe: impl FnMut() -> Fut,
) -> Paced
where
    Fut: Future<Output = bool> + 'static,
{
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime");
    let (passed, failed) = (Rc::new(Cell::new(0u64)), Rc::new(Cell::new(0u64)));
    tokio::task::LocalSet::new().block_on(&runtime, async {
        let mut tick = tokio::time::interval(Duration::from_secs(1) / rate);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let start = Instant::now();
        let mut measuring: Option<(Duration, u64, u64, Instant)> = None;
        loop {
            tick.tick().await;
            if measuring.is_none() && start.elapsed() >= warmup {
                measuring = Some((cpu(), passed.get(), failed.get(), Instant::now()));
            }
            if let Some((at, ok, bad, since)) = measuring {
                if since.elapsed() >= window {
                    return Paced { cpu: cpu() - at, passed: passed.get() - ok, failed: failed.get() - bad };
                }
            }
            let (running, passed, failed) = (probe(), passed.clone(), failed.clone());
            tokio::task::spawn_local(async move {
                let counter = if running.await { &passed } else { &failed };
                counter.set(counter.get() + 1);
            });
        }
    })
}
