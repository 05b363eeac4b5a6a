//! Audit events: who did what to which resource, with which outcome. Never a
//! secret, never an issued token.

/// What happened.
#[derive(Debug, Clone, PartialEq, Eq)]
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
    /// The request id; for an event standing for several calls
    /// (`count` > 1), every call's request id in order, separated by spaces
    /// (request ids never hold one).
    pub request_id: String,
    /// For leases: the normalized image.
    pub image: String,
    /// For leases: the granted scope.
    pub granted_scope: String,
    /// How many identical calls this event stands for: 1, except for lease
    /// events, where identical calls of one second are recorded once (see
    /// `audit::aggregate`).
    pub count: u32,
}

impl Default for AuditEvent {
    fn default() -> Self {
        Self {
            event_time: super::Timestamp::default(),
            workspace: String::new(),
            principal: String::new(),
            action: String::new(),
            resource: String::new(),
            status_code: 0,
            client_address: String::new(),
            request_id: String::new(),
            image: String::new(),
            granted_scope: String::new(),
            count: 1,
        }
    }
}

impl AuditEvent {
    /// The request ids of the calls this event stands for.
    pub fn request_ids(&self) -> impl Iterator<Item = &str> {
        self.request_id.split(' ').filter(|id| !id.is_empty())
    }
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
