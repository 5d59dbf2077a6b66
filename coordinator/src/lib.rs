#![forbid(unsafe_code)]
//! Vantage's coordinator: the store, quorum verdicts, assignment of targets to agents, the gRPC
//! services and the operator commands.

pub mod store;
pub mod verdict;
