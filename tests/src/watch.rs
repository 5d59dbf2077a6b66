//! A `vantage-coordinator status --watch --json` stream that remembers every status it has shown,
//! so a test can wait for a state and then ask what came before it.

use std::cell::RefCell;
use std::time::Duration;

use crate::Process;
use crate::cluster::Cluster;

pub struct Watch {
    process: Process,
    seen: RefCell<Vec<serde_json::Value>>,
}

impl Watch {
    pub fn new(c: &Cluster) -> Watch {
        Watch { process: c.watch(), seen: RefCell::new(Vec::new()) }
    }

    /// Waits for the target's status to satisfy `pred` (its latest status already seen counts).
    pub fn wait_for(&self, url: &str, pred: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
        let latest = self.seen(url).pop();
        if let Some(status) = latest.filter(|s| pred(s)) {
            return status;
        }
        let line = self.process.wait_for_line(|l| {
            let Ok(status) = serde_json::from_str::<serde_json::Value>(l) else { return false };
            self.seen.borrow_mut().push(status.clone());
            status["url"] == url && pred(&status)
        });
        serde_json::from_str(&line).expect("json")
    }

    /// Every status of the target seen so far, oldest first.
    pub fn seen(&self, url: &str) -> Vec<serde_json::Value> {
        self.seen.borrow().iter().filter(|s| s["url"] == url).cloned().collect()
    }

    /// Every status shown during `span` (a real wait, for "never" assertions).
    pub fn during(&self, span: Duration) -> Vec<serde_json::Value> {
        let shown: Vec<serde_json::Value> =
            self.process.lines_for(span).iter().filter_map(|l| serde_json::from_str(l).ok()).collect();
        self.seen.borrow_mut().extend(shown.iter().cloned());
        shown
    }

    /// Every status shown so far, and during `span`.
    pub fn all_during(&self, span: Duration) -> Vec<serde_json::Value> {
        self.during(span);
        self.seen.borrow().clone()
    }
}
