//! The one place that turns domain errors into gRPC statuses, with rich
//! details: `BadRequest` field violations, `ErrorInfo` reasons, `RetryInfo`,
//! `ResourceInfo`.

use std::collections::HashMap;

use prost::Message;
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, FieldViolation, StatusExt};

use crate::error::Error;

/// The gRPC status for a domain error.
pub fn to_status(error: &Error) -> Status {
    let message = error.message();
    let info = |reason: &str| ErrorDetails::with_error_info(reason, pullpass::ERROR_DOMAIN, HashMap::new());
    match error {
        Error::InvalidArgument(violations) => Status::with_error_details(
            Code::InvalidArgument,
            message,
            ErrorDetails::with_bad_request(
                violations.iter().map(|v| FieldViolation::new(&v.field, &v.description)).collect::<Vec<_>>(),
            ),
        ),
        Error::NotFound { resource } => Status::with_error_details(
            Code::NotFound,
            message,
            ErrorDetails::with_resource_info(resource_type(resource), resource, "", "not found"),
        ),
        Error::AlreadyExists { resource } => Status::with_error_details(
            Code::AlreadyExists,
            message,
            ErrorDetails::with_resource_info(resource_type(resource), resource, "", "already exists"),
        ),
        Error::NoMatch { reason, .. } => Status::with_error_details(Code::NotFound, message, info(reason)),
        Error::FailedPrecondition { reason, .. } => {
            Status::with_error_details(Code::FailedPrecondition, message, info(reason))
        }
        Error::PermissionDenied { reason, .. } => {
            Status::with_error_details(Code::PermissionDenied, message, info(reason))
        }
        Error::Unavailable { reason, retry_after, .. } => {
            let mut details = info(reason);
            details.set_retry_info(*retry_after);
            Status::with_error_details(Code::Unavailable, message, details)
        }
        Error::ResourceExhausted { reason, retry_after, .. } => {
            let mut details = info(reason);
            details.set_retry_info(Some(*retry_after));
            Status::with_error_details(Code::ResourceExhausted, message, details)
        }
        Error::Unauthenticated(_) => Status::unauthenticated(message),
        Error::Internal(_) => Status::internal(message),
    }
}

/// The `google.rpc.Status` for a domain error, for per-item results in batch
/// responses.
pub fn to_rpc_status(error: &Error) -> tonic_types::Status {
    let status = to_status(error);
    if status.details().is_empty() {
        return tonic_types::Status {
            code: status.code() as i32,
            message: status.message().to_owned(),
            details: vec![],
        };
    }
    tonic_types::Status::decode(status.details()).unwrap_or_else(|_| tonic_types::Status {
        code: status.code() as i32,
        message: status.message().to_owned(),
        details: vec![],
    })
}

/// An OK `google.rpc.Status`.
pub fn ok_rpc_status() -> tonic_types::Status {
    tonic_types::Status { code: 0, message: String::new(), details: vec![] }
}

/// The collection of a resource name (`credentials` for
/// `workspaces/a/credentials/b`), as the `ResourceInfo.resource_type`.
fn resource_type(resource: &str) -> &str {
    let mut segments = resource.split('/').rev();
    let _id = segments.next();
    segments.next().unwrap_or("")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_argument_carries_one_violation_per_field() {
        let mut violations = crate::error::Violations::default();
        violations.add("credential.registry_server", "has a query");
        violations.add("credential.username", "is required");
        let status = to_status(&violations.finish().unwrap_err());
        assert_eq!(status.code(), Code::InvalidArgument);
        let details = status.get_error_details();
        let fields: Vec<_> = details.bad_request().unwrap().field_violations.iter().map(|v| v.field.clone()).collect();
        assert_eq!(fields, vec!["credential.registry_server", "credential.username"]);
    }

    #[test]
    fn resource_exhausted_carries_reason_and_retry_delay() {
        let error = Error::ResourceExhausted {
            reason: "RATE_LIMITED",
            message: "slow down".into(),
            retry_after: std::time::Duration::from_secs(7),
        };
        let status = to_status(&error);
        let details = status.get_error_details();
        assert_eq!(details.error_info().unwrap().reason, "RATE_LIMITED");
        assert_eq!(details.retry_info().unwrap().retry_delay, Some(std::time::Duration::from_secs(7)));
        let rpc = to_rpc_status(&error);
        assert_eq!(rpc.code, Code::ResourceExhausted as i32);
        assert_eq!(rpc.details.len(), 2);
    }

    #[test]
    fn the_audit_code_of_every_error_is_its_grpc_status_code() {
        let errors = [
            Error::invalid("f", "d"),
            Error::not_found("workspaces/a"),
            Error::NoMatch { reason: "R", message: "m".into() },
            Error::already_exists("workspaces/a"),
            Error::FailedPrecondition { reason: "R", message: "m".into() },
            Error::PermissionDenied { reason: "R", message: "m".into() },
            Error::Unauthenticated("m".into()),
            Error::Unavailable { reason: "R", message: "m".into(), retry_after: None },
            Error::ResourceExhausted {
                reason: "R",
                message: "m".into(),
                retry_after: std::time::Duration::from_secs(1),
            },
            Error::internal("m"),
        ];
        for error in errors {
            assert_eq!(error.grpc_code(), to_status(&error).code() as i32, "{error:?}");
        }
    }

    #[test]
    fn resource_types_come_from_the_collection_segment() {
        assert_eq!(resource_type("workspaces/a/credentials/b"), "credentials");
        assert_eq!(resource_type("workspaces/a"), "workspaces");
    }
}
