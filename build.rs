//! Compiles the `pullpass.v1` contract in `proto/` into Rust (tonic + prost)
//! and writes the encoded file descriptor set that the server hands to gRPC
//! reflection. protoc comes from the `protoc-bin-vendored` crate, so no
//! system protoc is needed.

use std::path::PathBuf;

/// Messages that carry secrets: their `Debug` is written by hand in
/// `src/redact.rs` so that a stray `{:?}` can never print a secret.
const REDACTED_DEBUG: &[&str] = &[
    ".pullpass.v1.Credential",
    ".pullpass.v1.AccessToken",
    ".pullpass.v1.RegistryAuth",
    ".pullpass.v1.ImportDockerConfigRequest",
    ".pullpass.v1.CreateConsoleLinkResponse",
    ".pullpass.v1.TestIdentityTokenRequest",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    let protos = [
        "proto/pullpass/v1/access_service.proto",
        "proto/pullpass/v1/credential_service.proto",
        "proto/pullpass/v1/registry_auth_service.proto",
        "proto/pullpass/v1/audit_service.proto",
        // Not imported by the contract, but compiled so reflection can
        // describe the error details pullpass attaches to statuses.
        "proto/google/rpc/error_details.proto",
    ];
    let well_known = protoc_bin_vendored::include_path()?;
    let includes = [PathBuf::from("proto"), well_known];

    let mut config = prost_build::Config::new();
    config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);

    tonic_prost_build::configure()
        .file_descriptor_set_path(out_dir.join("pullpass_descriptor.bin"))
        .extern_path(".google.rpc", "::tonic_types::pb")
        .skip_debug(REDACTED_DEBUG.iter().copied())
        .build_client(true)
        .build_server(true)
        .compile_with_config(config, &protos.map(PathBuf::from), &includes)?;

    println!("cargo:rerun-if-changed=proto");
    Ok(())
}
