//! Typed errors: what went wrong, with the server's stable reason, instead
//! of a bare `tonic::Status`.

use std::fmt;
use std::time::Duration;

use tonic::Code;
use tonic_types::StatusExt;

/// A failed pullpass call, or a failed image within a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// The client could not be built or could not connect.
    Connect(String),
    /// The client's configuration is wrong or incomplete (an access token
    /// and a workload-identity token both given, a token source that cannot
    /// be used); retrying does not help.
    Configuration(String),
    /// The image reference is not valid (checked locally or by the server).
    InvalidImage {
        /// The image as given.
        image: String,
        /// Why.
        reason: String,
    },
    /// A request field is wrong (`google.rpc.BadRequest`).
    InvalidArgument {
        /// The server's message.
        message: String,
        /// `(field, description)` pairs.
        violations: Vec<(String, String)>,
    },
    /// No, or no valid, access token.
    Unauthenticated(String),
    /// The token's role or project does not allow the call, or the registry
    /// refused the stored credential (`reason` tells which).
    PermissionDenied {
        /// Stable reason (`ROLE_DENIED`, `UPSTREAM_REJECTED_CREDENTIAL`, …).
        reason: Option<String>,
        /// The server's message.
        message: String,
    },
    /// No credential of the workspace serves the image's registry (and
    /// project): reason `CREDENTIAL_NOT_FOUND_FOR_REGISTRY`.
    NotFoundForRegistry(String),
    /// A resource does not exist (or is not visible to the caller).
    NotFound(String),
    /// The registry offers only Basic auth (or the caller accepts only
    /// Basic) and the credential does not allow passthrough.
    PassthroughNotAllowed(String),
    /// pullpass or the registry is unreachable.
    Unavailable {
        /// Stable reason (`UPSTREAM_UNAVAILABLE`, …), when known.
        reason: Option<String>,
        /// The message.
        message: String,
    },
    /// Too many requests (this token, or the registry): retry later.
    RateLimited {
        /// The message.
        message: String,
        /// When to retry, from `RetryInfo`.
        retry_after: Option<Duration>,
    },
    /// A precondition failed (realm not allowed, workspace not empty…).
    FailedPrecondition {
        /// Stable reason.
        reason: Option<String>,
        /// The message.
        message: String,
    },
    /// Anything else.
    Other {
        /// The gRPC code.
        code: Code,
        /// The message.
        message: String,
    },
}

impl Error {
    /// The stable `ErrorInfo` reason, when the server gave one.
    pub fn reason(&self) -> Option<&str> {
        match self {
            Error::PermissionDenied { reason, .. }
            | Error::Unavailable { reason, .. }
            | Error::FailedPrecondition { reason, .. } => reason.as_deref(),
            Error::NotFoundForRegistry(_) => Some(pullpass::reason::CREDENTIAL_NOT_FOUND_FOR_REGISTRY),
            Error::PassthroughNotAllowed(_) => Some(pullpass::reason::PASSTHROUGH_NOT_ALLOWED),
            _ => None,
        }
    }

    /// Is retrying (later) reasonable?
    pub fn is_retryable(&self) -> bool {
        matches!(self, Error::Unavailable { .. } | Error::RateLimited { .. } | Error::Connect(_))
    }

    /// The error a gRPC status stands for.
    pub fn from_status(status: &tonic::Status) -> Self {
        let details = status.get_error_details();
        let reason = details.error_info().map(|i| i.reason.clone());
        let message = status.message().to_owned();
        match status.code() {
            Code::InvalidArgument => Error::InvalidArgument {
                violations: details
                    .bad_request()
                    .map(|b| b.field_violations.iter().map(|v| (v.field.clone(), v.description.clone())).collect())
                    .unwrap_or_default(),
                message,
            },
            Code::Unauthenticated => Error::Unauthenticated(message),
            Code::PermissionDenied => Error::PermissionDenied { reason, message },
            Code::NotFound if reason.as_deref() == Some(pullpass::reason::CREDENTIAL_NOT_FOUND_FOR_REGISTRY) => {
                Error::NotFoundForRegistry(message)
            }
            Code::NotFound => Error::NotFound(message),
            Code::FailedPrecondition if reason.as_deref() == Some(pullpass::reason::PASSTHROUGH_NOT_ALLOWED) => {
                Error::PassthroughNotAllowed(message)
            }
            Code::FailedPrecondition => Error::FailedPrecondition { reason, message },
            Code::Unavailable | Code::DeadlineExceeded => Error::Unavailable { reason, message },
            Code::ResourceExhausted => {
                Error::RateLimited { message, retry_after: details.retry_info().and_then(|r| r.retry_delay) }
            }
            code => Error::Other { code, message },
        }
    }

    /// The error of one item of a batch response (`google.rpc.Status`).
    pub fn from_rpc_status(status: &tonic_types::Status) -> Self {
        let encoded = prost::Message::encode_to_vec(status);
        Self::from_status(&tonic::Status::with_details(Code::from(status.code), status.message.clone(), encoded.into()))
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Connect(m) => write!(f, "cannot reach pullpass: {m}"),
            Error::Configuration(m) => write!(f, "client configuration: {m}"),
            Error::InvalidImage { image, reason } => write!(f, "invalid image `{image}`: {reason}"),
            Error::InvalidArgument { message, .. } => write!(f, "invalid request: {message}"),
            Error::Unauthenticated(m) => write!(f, "not authenticated: {m}"),
            Error::PermissionDenied { message, .. } => write!(f, "permission denied: {message}"),
            Error::NotFoundForRegistry(m) => write!(f, "no credential for this registry: {m}"),
            Error::NotFound(m) => write!(f, "not found: {m}"),
            Error::PassthroughNotAllowed(m) => write!(f, "passthrough not allowed: {m}"),
            Error::Unavailable { message, .. } => write!(f, "unavailable: {message}"),
            Error::RateLimited { message, retry_after } => match retry_after {
                Some(after) => write!(f, "rate limited (retry in {:.1} s): {message}", after.as_secs_f64()),
                None => write!(f, "rate limited: {message}"),
            },
            Error::FailedPrecondition { message, .. } => write!(f, "failed precondition: {message}"),
            Error::Other { code, message } => write!(f, "{code:?}: {message}"),
        }
    }
}

impl std::error::Error for Error {}

impl From<tonic::Status> for Error {
    fn from(status: tonic::Status) -> Self {
        Error::from_status(&status)
    }
}
