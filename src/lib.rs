//! The pullpass wire contract and the vocabulary every pullpass crate shares.
//!
//! * [`v1`]: the generated `pullpass.v1` gRPC API (messages, clients, servers).
//! * [`FILE_DESCRIPTOR_SET`]: the encoded descriptors served by reflection.
//! * [`registry`]: the registry-server grammar (`host[:port][/path]`).
//! * [`reference`]: image references (`ubuntu` → `docker.io/library/ubuntu:latest`).
//! * [`scope`]: registry token scopes (`repository:team/app:pull`).
//! * [`time`]: RFC 3339 timestamps.
//! * [`reason`]: the stable `google.rpc.ErrorInfo` reasons pullpass emits.
//!
//! This crate does no I/O: it is pure parsing and generated code, so the
//! server, the SDK and the CLI agree on one grammar.

#[cfg(test)]
mod parser_properties;
pub mod reason;
mod redact;
pub mod reference;
pub mod registry;
pub mod scope;
pub mod time;

/// The generated `pullpass.v1` API. Messages that carry secrets
/// (`Credential`, `AccessToken`, `RegistryAuth`, `ImportDockerConfigRequest`)
/// have a hand-written `Debug` that redacts them.
#[allow(missing_docs, clippy::all, missing_debug_implementations)]
pub mod v1 {
    tonic::include_proto!("pullpass.v1");
}

/// Google API annotations used by the contract (AIP-203 field behaviour).
#[allow(missing_docs, clippy::all)]
pub mod google {
    /// `google.api`: field behaviour annotations.
    pub mod api {
        tonic::include_proto!("google.api");
    }
}

/// Encoded `FileDescriptorSet` of `pullpass.v1` and every file it imports,
/// with source comments, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("pullpass_descriptor");

/// The `ErrorInfo.domain` pullpass puts on its errors.
pub const ERROR_DOMAIN: &str = "pullpass.dev";
