//! Stable `google.rpc.ErrorInfo` reasons. Scripts and the SDK match on these
//! strings, so they never change meaning once released.

/// No credential of the workspace serves the image's registry (and project).
pub const CREDENTIAL_NOT_FOUND_FOR_REGISTRY: &str = "CREDENTIAL_NOT_FOUND_FOR_REGISTRY";
/// The registry offers no token exchange and the credential does not allow
/// handing out its stored secret.
pub const PASSTHROUGH_NOT_ALLOWED: &str = "PASSTHROUGH_NOT_ALLOWED";
/// The registry or its token realm refused the stored secret.
pub const UPSTREAM_REJECTED_CREDENTIAL: &str = "UPSTREAM_REJECTED_CREDENTIAL";
/// The registry or its token realm could not be reached or failed.
pub const UPSTREAM_UNAVAILABLE: &str = "UPSTREAM_UNAVAILABLE";
/// The registry asked pullpass to slow down.
pub const UPSTREAM_RATE_LIMITED: &str = "UPSTREAM_RATE_LIMITED";
/// The registry's token realm is not on an origin the credential may send
/// its secret to.
pub const REALM_NOT_ALLOWED: &str = "REALM_NOT_ALLOWED";
/// A stored secret could not be opened (moved ciphertext, missing key).
pub const SEALED_SECRET_UNREADABLE: &str = "SEALED_SECRET_UNREADABLE";
/// The workspace still holds resources and `force` was not set.
pub const WORKSPACE_NOT_EMPTY: &str = "WORKSPACE_NOT_EMPTY";
/// The caller's token lacks the role or project for the call.
pub const ROLE_DENIED: &str = "ROLE_DENIED";
/// The caller exceeded its request rate.
pub const RATE_LIMITED: &str = "RATE_LIMITED";
/// A replica could not confirm the other replicas' changes within its
/// staleness limit (`--max-staleness`), and the database did not answer in
/// time: retry, or call another replica.
pub const REPLICA_STALE: &str = "REPLICA_STALE";
/// Revoking this root token would leave no usable root token.
pub const LAST_ROOT_TOKEN: &str = "LAST_ROOT_TOKEN";
/// Identity bindings still name this identity provider (delete them, or
/// set `force`).
pub const IDENTITY_PROVIDER_IN_USE: &str = "IDENTITY_PROVIDER_IN_USE";
/// A verified workload identity has no binding in the workspace it named.
pub const IDENTITY_NOT_BOUND: &str = "IDENTITY_NOT_BOUND";
