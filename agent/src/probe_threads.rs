//! The probe threads: each a single-threaded runtime with a scheduler of its own for a share of
//! the URLs (by a hash of the URL), and the routing of the coordinators' commands to them. A
//! probe's many small wake-ups (the connect, each TLS flight, the response) stay on its thread,
//! where a work-stealing runtime would wake idle threads for each and spend more CPU on that than
//! on the probe's own work (README: "Agent benchmark").

use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use crate::assigned::Assigned;
use crate::probe::SetupError;
use crate::scheduler::{Command, Coordinator, Scheduler};

/// Coordinators' commands waiting at each hop (session, router, probe thread). Few: a large
/// assignment arrives in slices of thousands of targets, and a slice waiting here is converted
/// (`assigned::Assigned`, about 120 bytes a target with its URL: 0.6 MB for 5,000); the next
/// ones wait encoded in the connection's flow-control window instead.
pub const COMMANDS_QUEUED: usize = 2;

/// What a probe thread is asked: a coordinator's command, and where to say how many URLs that
/// coordinator assigns and the thread probes now.
type Order = (Coordinator, Command, Option<oneshot::Sender<(usize, usize)>>);

/// A thread running a single-threaded runtime and one scheduler; it stops when its handle goes.
pub struct ProbeThread {
    orders: mpsc::Sender<Order>,
}

impl ProbeThread {
    pub fn start(index: usize, mut scheduler: Scheduler) -> Result<ProbeThread, crate::probe::SetupError> {
        let (orders, mut incoming) = mpsc::channel::<Order>(COMMANDS_QUEUED);
        let runtime =
            tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(SetupError::Runtime)?;
        let work = move || {
            runtime.block_on(async move {
                loop {
                    let due = scheduler.next_due().map(tokio::time::Instant::from_std);
                    let far = tokio::time::Instant::now() + Duration::from_secs(3600);
                    tokio::select! {
                        order = incoming.recv() => match order {
                            Some((from, command, reply)) => {
                                let counts = scheduler.apply_from(from, command);
                                if let Some(reply) = reply {
                                    let _ = reply.send(counts);
                                }
                            }
                            // The agent stopped: probes still running end with the runtime.
                            None => return,
                        },
                        _ = tokio::time::sleep_until(due.unwrap_or(far)) => scheduler.run_due(),
                    }
                }
            })
        };
        std::thread::Builder::new().name(format!("probe-{index}")).spawn(work).map_err(SetupError::Runtime)?;
        Ok(ProbeThread { orders })
    }
}

/// Which probe thread probes `url`: stable, and even over many URLs.
fn share(url: &str, threads: usize) -> usize {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::hash::DefaultHasher::new();
    url.hash(&mut hasher);
    (hasher.finish() % threads as u64) as usize
}

/// Hands a coordinator's command to the probe threads, each its share, and logs what the
/// coordinator assigns now.
pub async fn route(threads: &[ProbeThread], from: Coordinator, command: Command, coordinator: &str) {
    let n = threads.len();
    let (commands, what) = match command {
        Command::Assign(all) => {
            let mut parts: Vec<Vec<Assigned>> = (0..n).map(|_| Vec::new()).collect();
            for assigned in all {
                parts[share(&assigned.url, n)].push(assigned);
            }
            (parts.into_iter().map(Command::Assign).collect::<Vec<_>>(), "assignment received")
        }
        Command::Change { upserted, removed } => {
            let mut parts: Vec<(Vec<Assigned>, Vec<String>)> = (0..n).map(|_| Default::default()).collect();
            for assigned in upserted {
                parts[share(&assigned.url, n)].0.push(assigned);
            }
            for url in removed {
                parts[share(&url, n)].1.push(url);
            }
            let commands = parts.into_iter().map(|(upserted, removed)| Command::Change { upserted, removed });
            (commands.collect(), "assignment changed")
        }
        // A run-now goes only to the thread that probes its URL.
        Command::RunNow { id, url, trace_context } => {
            let thread = &threads[share(&url, n)];
            let _ = thread.orders.send((from, Command::RunNow { id, url, trace_context }, None)).await;
            return;
        }
    };
    let mut replies = Vec::new();
    for (thread, command) in threads.iter().zip(commands) {
        let (reply, counts) = oneshot::channel();
        if thread.orders.send((from, command, Some(reply))).await.is_ok() {
            replies.push(counts);
        }
    }
    let (mut assigned, mut targets) = (0, 0);
    for counts in replies {
        if let Ok((a, t)) = counts.await {
            assigned += a;
            targets += t;
        }
    }
    tracing::info!(coordinator = %coordinator, assigned, targets, "{what}");
}
