//! The one error type of the domain modules. Each variant says which gRPC
//! status it becomes, but only `api::status` knows gRPC: this module is plain
//! data so domain code and its tests stay transport-free.
//!
//! Messages are written for the caller and must never include a secret.

use std::time::Duration;

/// One invalid request field (becomes a `google.rpc.BadRequest` violation).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldViolation {
    /// The request field path, such as `credential.registry_server`.
    pub field: String,
    /// What is wrong with it.
    pub description: String,
}

/// Why a call failed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// `INVALID_ARGUMENT`: one or more request fields are wrong.
    InvalidArgument(Vec<FieldViolation>),
    /// `NOT_FOUND`: the named resource does not exist (or is not visible).
    NotFound {
        /// The resource name that was looked up.
        resource: String,
    },
    /// `NOT_FOUND` with an `ErrorInfo` reason (nothing matched a query).
    NoMatch {
        /// Stable reason.
        reason: &'static str,
        /// What was looked for, and where.
        message: String,
    },
    /// `ALREADY_EXISTS`.
    AlreadyExists {
        /// The resource name that is taken.
        resource: String,
    },
    /// `FAILED_PRECONDITION` with an `ErrorInfo` reason.
    FailedPrecondition {
        /// Stable reason (see `pullpass::reason`).
        reason: &'static str,
        /// What to do about it.
        message: String,
    },
    /// `PERMISSION_DENIED` with an `ErrorInfo` reason.
    PermissionDenied {
        /// Stable reason.
        reason: &'static str,
        /// What was denied and why.
        message: String,
    },
    /// `UNAUTHENTICATED`: no, or no valid, bearer token.
    Unauthenticated(String),
    /// `UNAVAILABLE` with an `ErrorInfo` reason.
    Unavailable {
        /// Stable reason.
        reason: &'static str,
        /// What could not be reached.
        message: String,
        /// When to try again (`RetryInfo`), if the server can tell.
        retry_after: Option<Duration>,
    },
    /// `RESOURCE_EXHAUSTED` with `RetryInfo`.
    ResourceExhausted {
        /// Stable reason.
        reason: &'static str,
        /// Who is limiting.
        message: String,
        /// When to try again.
        retry_after: Duration,
    },
    /// `INTERNAL`: a bug or a broken installation. The message is safe to
    /// show (no secrets) but says little; details go to the log.
    Internal(String),
}

impl Error {
    /// One invalid field.
    pub fn invalid(field: impl Into<String>, description: impl Into<String>) -> Self {
        Self::InvalidArgument(vec![FieldViolation { field: field.into(), description: description.into() }])
    }

    /// `resource` does not exist.
    pub fn not_found(resource: impl Into<String>) -> Self {
        Self::NotFound { resource: resource.into() }
    }

    /// `resource` exists already.
    pub fn already_exists(resource: impl Into<String>) -> Self {
        Self::AlreadyExists { resource: resource.into() }
    }

    /// An internal error; `context` must not contain secrets.
    pub fn internal(context: impl Into<String>) -> Self {
        Self::Internal(context.into())
    }

    /// The gRPC status code number this error becomes (for audit events).
    pub fn grpc_code(&self) -> i32 {
        match self {
            Self::InvalidArgument(_) => 3,
            Self::NotFound { .. } | Self::NoMatch { .. } => 5,
            Self::AlreadyExists { .. } => 6,
            Self::PermissionDenied { .. } => 7,
            Self::ResourceExhausted { .. } => 8,
            Self::FailedPrecondition { .. } => 9,
            Self::Internal(_) => 13,
            Self::Unavailable { .. } => 14,
            Self::Unauthenticated(_) => 16,
        }
    }

    /// A short description for logs and messages.
    pub fn message(&self) -> String {
        match self {
            Self::InvalidArgument(violations) => {
                violations.iter().map(|v| format!("{}: {}", v.field, v.description)).collect::<Vec<_>>().join("; ")
            }
            Self::NotFound { resource } => format!("{resource} not found"),
            Self::AlreadyExists { resource } => format!("{resource} already exists"),
            Self::FailedPrecondition { message, .. }
            | Self::NoMatch { message, .. }
            | Self::PermissionDenied { message, .. }
            | Self::Unavailable { message, .. }
            | Self::ResourceExhausted { message, .. } => message.clone(),
            Self::Unauthenticated(m) | Self::Internal(m) => m.clone(),
        }
    }
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message())
    }
}

impl std::error::Error for Error {}

/// Collects field violations so a request reports all of them at once.
#[derive(Debug, Default)]
pub struct Violations(Vec<FieldViolation>);

impl Violations {
    /// Records a violation of `field`.
    pub fn add(&mut self, field: impl Into<String>, description: impl Into<String>) {
        self.0.push(FieldViolation { field: field.into(), description: description.into() });
    }

    /// Runs a parse, keeping its value or recording its error under `field`.
    pub fn check<T>(&mut self, field: &str, parsed: Result<T, String>) -> Option<T> {
        match parsed {
            Ok(value) => Some(value),
            Err(description) => {
                self.add(field, description);
                None
            }
        }
    }

    /// Records the field violations of a check that reports them as an
    /// `INVALID_ARGUMENT` error (any other error too, under `field`).
    pub fn absorb(&mut self, field: &str, checked: Result<(), Error>) {
        match checked {
            Ok(()) => {}
            Err(Error::InvalidArgument(violations)) => self.0.extend(violations),
            Err(other) => self.add(field, other.message()),
        }
    }

    /// How many violations were recorded so far.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Was nothing recorded?
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Ok when nothing was recorded, else `INVALID_ARGUMENT` with all of it.
    pub fn finish(self) -> Result<(), Error> {
        if self.0.is_empty() { Ok(()) } else { Err(Error::InvalidArgument(self.0)) }
    }
}
