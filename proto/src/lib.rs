#![forbid(unsafe_code)]
//! Vantage's public contract, `package vantage.v1`, generated at build time from `proto/`.

/// Messages of `vantage.v1`.
pub mod v1 {
    include!(concat!(env!("OUT_DIR"), "/vantage.v1.rs"));
}

/// The encoded `FileDescriptorSet` of every Vantage proto, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/vantage_descriptor.bin"));
