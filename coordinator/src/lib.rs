#![forbid(unsafe_code)]
//! Vantage's coordinator: the store, quorum verdicts, assignment of targets to agents, the gRPC
//! services and the operator commands.

pub mod alert;
pub mod api;
pub mod assign;
pub mod auth;
pub mod badge;
pub mod cli;
pub mod clock;
pub mod config;
pub mod conn;
pub mod dispatch;
pub mod grpc;
pub mod http;
pub mod hub;
pub mod impairment;
pub mod latency;
pub mod metrics;
pub mod names;
pub mod page;
pub mod pki;
pub mod public;
pub mod refusal;
pub mod regions;
pub mod reload;
pub mod serve;
pub mod shard;
pub mod spec;
pub mod store;
pub mod uptime;
pub mod verdict;
pub mod view;
pub mod watchdog;
