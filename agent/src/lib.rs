#![forbid(unsafe_code)]
//! Vantage's agent: the probe pipeline and the `check` command that runs it once.

pub mod assigned;
pub mod check;
pub mod probe;
pub mod probe_threads;
pub mod run;
pub mod scheduler;
pub mod session;
pub mod wire;
