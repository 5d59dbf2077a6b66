#![forbid(unsafe_code)]
//! What Vantage's agent and coordinator both speak: failure codes with their causes and hints,
//! the probe report, target URLs and durations, certificate pins, mTLS identities, the limits and
//! defaults both sides enforce. The `signal` feature adds the shutdown signal the binaries stop on,
//! `telemetry` their logging and traces, and `lab` (tests and the demo only) local scenario servers.

pub mod duration;
pub mod failure;
pub mod identity;
#[cfg(feature = "lab")]
pub mod lab;
pub mod limits;
pub mod pin;
pub mod report;
#[cfg(feature = "signal")]
pub mod signal;
pub mod target;
#[cfg(feature = "telemetry")]
pub mod telemetry;

pub use failure::{Failure, FailureCode, Stage};
pub use report::{CertHealth, ProbeReport, ProbeStatus};
pub use target::{TargetError, TargetUrl};
