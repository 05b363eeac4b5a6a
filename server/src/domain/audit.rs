//! Audit events: who did what to which resource, with which outcome. Never a
//! secret, never an issued token.

/// What happened.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AuditEvent {
    /// When.
    pub event_time: super::Timestamp,
    /// The workspace it concerns (empty for server-wide events).
    pub workspace: String,
    /// The access token's resource name (never the token).
    pub principal: String,
    /// The RPC or operation.
    pub action: String,
    /// The resource acted on.
    pub resource: String,
    /// The gRPC status code of the outcome.
    pub status_code: i32,
    /// The caller's address.
    pub client_address: String,
    /// The request id.
    pub request_id: String,
    /// For leases: the normalized image.
    pub image: String,
    /// For leases: the granted scope.
    pub granted_scope: String,
}

/// An event as chained in the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRecord {
    /// Position in the chain.
    pub seq: i64,
    /// The event.
    pub event: AuditEvent,
    /// The previous record's hash (zeros for the first).
    pub prev_hash: [u8; 32],
    /// SHA-256 over `prev_hash` and this record's canonical form.
    pub hash: [u8; 32],
}
