//! gRPC metric labels as go-grpc-prometheus writes them: `grpc_type`
//! (`unary`, `server_stream`, `client_stream`, `bidi_stream`),
//! `grpc_service`, `grpc_method`, and `grpc_code` in Go's spelling (`OK`,
//! `NotFound`, `Canceled`…), so existing dashboards work unchanged.
//!
//! The methods come from the descriptors the server serves (pullpass.v1,
//! health, reflection), read once. A path outside them (a client calling
//! something that does not exist) is labelled `unknown`, so no caller can
//! grow the label set.

use std::collections::HashMap;
use std::sync::LazyLock;

use prost::Message;

use super::GrpcLabels;

/// A method's labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GrpcMethod {
    grpc_type: &'static str,
    service: &'static str,
    method: &'static str,
    /// Its position in [`METHODS`] order (for per-method metric handles);
    /// `usize::MAX` for unknown paths.
    pub(super) index: usize,
}

/// Labels of paths no descriptor names.
const UNKNOWN: GrpcMethod = GrpcMethod { grpc_type: "unary", service: "unknown", method: "unknown", index: usize::MAX };

static METHODS: LazyLock<HashMap<String, GrpcMethod>> = LazyLock::new(|| {
    let sets = [
        pullpass::FILE_DESCRIPTOR_SET,
        tonic_health::pb::FILE_DESCRIPTOR_SET,
        tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET,
        tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
    ];
    let mut methods = HashMap::new();
    for encoded in sets {
        let Ok(set) = prost_types::FileDescriptorSet::decode(encoded) else { continue };
        for file in set.file {
            let package = file.package.unwrap_or_default();
            for service in file.service {
                let full = format!("{package}.{}", service.name.unwrap_or_default());
                // Leaked once per service and method of the descriptors: a
                // few dozen strings for the life of the process.
                let service_name: &'static str = Box::leak(full.clone().into_boxed_str());
                for method in service.method {
                    let grpc_type = match (method.client_streaming(), method.server_streaming()) {
                        (false, false) => "unary",
                        (false, true) => "server_stream",
                        (true, false) => "client_stream",
                        (true, true) => "bidi_stream",
                    };
                    let name = method.name.unwrap_or_default();
                    let path = format!("/{full}/{name}");
                    let method: &'static str = Box::leak(name.into_boxed_str());
                    let index = methods.len();
                    methods.insert(path, GrpcMethod { grpc_type, service: service_name, method, index });
                }
            }
        }
    }
    methods
});

impl GrpcMethod {
    /// The method a request path (`/pkg.Service/Method`) names.
    pub fn of_path(path: &str) -> GrpcMethod {
        METHODS.get(path).copied().unwrap_or(UNKNOWN)
    }

    /// How many methods the descriptors name.
    pub(super) fn count() -> usize {
        METHODS.len()
    }

    /// `pullpass.v1.CredentialService`.
    pub fn service(&self) -> &'static str {
        self.service
    }

    /// `CreateCredential`.
    pub fn method(&self) -> &'static str {
        self.method
    }

    pub(super) fn labels(&self) -> GrpcLabels {
        GrpcLabels { grpc_type: self.grpc_type, grpc_service: self.service, grpc_method: self.method }
    }
}

/// A code as Go's `codes.Code.String()` spells it.
pub fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code;
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "Canceled",
        Code::Unknown => "Unknown",
        Code::InvalidArgument => "InvalidArgument",
        Code::DeadlineExceeded => "DeadlineExceeded",
        Code::NotFound => "NotFound",
        Code::AlreadyExists => "AlreadyExists",
        Code::PermissionDenied => "PermissionDenied",
        Code::ResourceExhausted => "ResourceExhausted",
        Code::FailedPrecondition => "FailedPrecondition",
        Code::Aborted => "Aborted",
        Code::OutOfRange => "OutOfRange",
        Code::Unimplemented => "Unimplemented",
        Code::Internal => "Internal",
        Code::Unavailable => "Unavailable",
        Code::DataLoss => "DataLoss",
        Code::Unauthenticated => "Unauthenticated",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn methods_come_from_the_descriptors_with_their_streaming_type() {
        let create = GrpcMethod::of_path("/pullpass.v1.CredentialService/CreateCredential");
        assert_eq!(
            (create.grpc_type, create.service, create.method),
            ("unary", "pullpass.v1.CredentialService", "CreateCredential")
        );
        assert_eq!(GrpcMethod::of_path("/grpc.health.v1.Health/Watch").grpc_type, "server_stream");
        assert_eq!(
            GrpcMethod::of_path("/grpc.reflection.v1.ServerReflection/ServerReflectionInfo").grpc_type,
            "bidi_stream"
        );
    }

    #[test]
    fn paths_no_descriptor_names_share_one_unknown_label() {
        assert_eq!(GrpcMethod::of_path("/pullpass.v1.CredentialService/Nope"), UNKNOWN);
        assert_eq!(GrpcMethod::of_path("/x/workspaces/acme"), UNKNOWN);
        assert_eq!(code_name(tonic::Code::Cancelled), "Canceled");
    }
}
