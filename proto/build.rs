//! Compiles `vantage/v1/*.proto` with protox (pure Rust, no system protoc) and keeps the file
//! descriptor set so the coordinator can serve gRPC reflection.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos =
        ["vantage/v1/probe.proto", "vantage/v1/target.proto", "vantage/v1/agent.proto", "vantage/v1/coordinator.proto"];
    for proto in protos {
        println!("cargo:rerun-if-changed={proto}");
    }
    let descriptors = protox::compile(protos, ["."])?;
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out.join("vantage_descriptor.bin"), prost::Message::encode_to_vec(&descriptors))?;
    // No `Client::connect` constructors: AgentService's own `Connect` RPC would clash with them,
    // and clients are built from a configured `Channel` anyway.
    tonic_prost_build::configure().build_transport(false).compile_fds(descriptors)?;
    Ok(())
}
