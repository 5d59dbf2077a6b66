#![forbid(unsafe_code)]
//! What Vantage's agent and coordinator both speak: failure codes with their causes and hints,
//! the probe report, target URLs and durations, mTLS identities, the size limits both sides enforce. The `lab` feature adds local scenario servers.

pub mod duration;
pub mod failure;
pub mod identity;
#[cfg(feature = "lab")]
pub mod lab;
pub mod limits;
pub mod report;
pub mod target;
#[cfg(feature = "telemetry")]
pub mod telemetry;

pub use failure::{Failure, FailureCode, Stage};
pub use report::{CertHealth, ProbeReport, ProbeStatus};
pub use target::{TargetError, TargetUrl};
