//! What a target costs the agent's memory while it waits for its next run: the heap a scheduler
//! holds per assigned target, counted by an allocator that tallies this thread's allocations.
//! An agent with 100,000 targets must stay under 64 MiB (README: "Agent benchmark"); this test
//! keeps the scheduler's share from creeping back up, the benchmark measures the whole process.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::Arc;

use tokio::sync::Semaphore;
use vantage_agent::assigned;
use vantage_agent::probe::{Prober, ProberConfig};
use vantage_agent::scheduler::{Command, Outlet, Scheduler};
use vantage_proto::v1::TargetSpec;

/// The system allocator, counting the bytes each thread holds (the scheduler under test is
/// built on the test's own thread, so other threads' allocations do not blur its figure).
struct Counting;

thread_local! {
    static HELD: Cell<isize> = const { Cell::new(0) };
}

fn held() -> isize {
    HELD.with(Cell::get)
}

fn count(delta: isize) {
    // `try_with`: a thread's own teardown frees memory after its locals are gone.
    let _ = HELD.try_with(|held| held.set(held.get() + delta));
}

// SAFETY: every call goes to the system allocator unchanged; only the counting is added.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count(layout.size() as isize);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        count(-(layout.size() as isize));
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count(layout.size() as isize);
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count(new_size as isize - layout.size() as isize);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// A target as the coordinator sends it (its URL, interval and timeout; nothing else set).
fn spec(n: usize) -> TargetSpec {
    TargetSpec {
        url: format!("https://shop-{n}.example.com/health"),
        interval: Some(prost_types::Duration { seconds: 300, nanos: 0 }),
        timeout: Some(prost_types::Duration { seconds: 10, nanos: 0 }),
        ..Default::default()
    }
}

#[test]
fn an_assigned_target_costs_the_scheduler_under_250_bytes() {
    const TARGETS: usize = 50_000;
    let prober = Prober::new(ProberConfig::default()).unwrap();
    let (results, _kept) = tokio::sync::mpsc::channel(1);
    let outlet = Outlet::new("http://coordinator", results);
    let mut scheduler = Scheduler::serving("agent-1", prober, vec![outlet], Arc::new(Semaphore::new(1)));
    let before = held();
    // In slices, as the coordinator sends a large assignment.
    let mut specs = (0..TARGETS).map(spec);
    let first: Vec<TargetSpec> = specs.by_ref().take(5_000).collect();
    scheduler.apply(Command::Assign(assigned::all(first)));
    loop {
        let slice: Vec<TargetSpec> = specs.by_ref().take(5_000).collect();
        if slice.is_empty() {
            break;
        }
        scheduler.apply(Command::Change { upserted: assigned::all(slice), removed: Vec::new() });
    }
    let per_target = (held() - before) as f64 / TARGETS as f64;
    println!("{TARGETS} targets: {per_target:.0} bytes each");
    assert!(per_target < 250.0, "{per_target:.0} bytes per target");
    drop(scheduler);
}
