//! Queries on the `identity_providers` and `identity_bindings` tables.

use rusqlite::{Connection, Row, params};

use crate::domain::{
    IdentityBinding, IdentityBindingName, IdentityProvider, IdentityProviderId, Timestamp, WorkspaceId,
};
use crate::store::StoreError;
use crate::store::rows::{IdentityBindingRow, IdentityProviderRow};

const PROVIDER_COLUMNS: &str = "id, issuer, jwks_uri, jwks, ca_certificates, audiences, allowed_algorithms, \
     max_token_lifetime_s, clock_skew_s, description, create_time, update_time";
const BINDING_COLUMNS: &str =
    "workspace_id, id, provider_id, bound_claims, role, allowed_projects, description, create_time, update_time";

fn provider_row(row: &Row<'_>) -> Result<IdentityProvider, StoreError> {
    IdentityProviderRow {
        id: row.get(0)?,
        issuer: row.get(1)?,
        jwks_uri: row.get(2)?,
        jwks: row.get(3)?,
        ca_certificates: row.get(4)?,
        audiences: row.get(5)?,
        allowed_algorithms: row.get(6)?,
        max_token_lifetime_s: row.get(7)?,
        clock_skew_s: row.get(8)?,
        description: row.get(9)?,
        create_time: row.get(10)?,
        update_time: row.get(11)?,
    }
    .provider()
}

fn binding_row(row: &Row<'_>) -> Result<IdentityBinding, StoreError> {
    IdentityBindingRow {
        workspace_id: row.get(0)?,
        id: row.get(1)?,
        provider_id: row.get(2)?,
        bound_claims: row.get(3)?,
        role: row.get(4)?,
        allowed_projects: row.get(5)?,
        description: row.get(6)?,
        create_time: row.get(7)?,
        update_time: row.get(8)?,
    }
    .binding()
}

/// Inserts a provider (a taken id or issuer is a conflict).
pub fn insert_provider(conn: &Connection, provider: &IdentityProvider) -> Result<(), StoreError> {
    let r = IdentityProviderRow::of(provider);
    conn.prepare_cached(&format!(
        "INSERT INTO identity_providers ({PROVIDER_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)"
    ))?
    .execute(params![
        r.id,
        r.issuer,
        r.jwks_uri,
        r.jwks,
        r.ca_certificates,
        r.audiences,
        r.allowed_algorithms,
        r.max_token_lifetime_s,
        r.clock_skew_s,
        r.description,
        r.create_time,
        r.update_time,
    ])?;
    Ok(())
}

/// Replaces a provider whose update time is still `read`; false when it
/// changed or went.
pub fn replace_provider(conn: &Connection, read: Timestamp, provider: &IdentityProvider) -> Result<bool, StoreError> {
    let r = IdentityProviderRow::of(provider);
    Ok(conn.execute(
        "UPDATE identity_providers SET issuer = ?2, jwks_uri = ?3, jwks = ?4, ca_certificates = ?5, audiences = ?6, \
         allowed_algorithms = ?7, max_token_lifetime_s = ?8, clock_skew_s = ?9, description = ?10, update_time = ?11 \
         WHERE id = ?1 AND update_time = ?12",
        params![
            r.id,
            r.issuer,
            r.jwks_uri,
            r.jwks,
            r.ca_certificates,
            r.audiences,
            r.allowed_algorithms,
            r.max_token_lifetime_s,
            r.clock_skew_s,
            r.description,
            r.update_time,
            read.as_micros(),
        ],
    )? > 0)
}

/// Does provider `id` exist?
pub fn provider_exists(conn: &Connection, id: &IdentityProviderId) -> Result<bool, StoreError> {
    let mut statement = conn.prepare_cached("SELECT 1 FROM identity_providers WHERE id = ?1")?;
    Ok(statement.exists([id.as_str()])?)
}

/// Every provider, ordered by id.
pub fn providers(conn: &Connection) -> Result<Vec<IdentityProvider>, StoreError> {
    let mut statement =
        conn.prepare_cached(&format!("SELECT {PROVIDER_COLUMNS} FROM identity_providers ORDER BY id"))?;
    let mut rows = statement.query([])?;
    let mut out = Vec::new();
    while let Some(row) = rows.next()? {
        out.push(provider_row(row)?);
    }
    Ok(out)
}

/// How many bindings name provider `id`.
pub fn bindings_of_provider(conn: &Connection, id: &IdentityProviderId) -> Result<u64, StoreError> {
    let count: i64 =
        conn.query_row("SELECT count(*) FROM identity_bindings WHERE provider_id = ?1", [id.as_str()], |r| r.get(0))?;
    Ok(count as u64)
}

/// Deletes provider `id` and the bindings that name it; how many bindings.
pub fn delete_provider(conn: &Connection, id: &IdentityProviderId) -> Result<u64, StoreError> {
    let bindings = conn.execute("DELETE FROM identity_bindings WHERE provider_id = ?1", [id.as_str()])?;
    conn.execute("DELETE FROM identity_providers WHERE id = ?1", [id.as_str()])?;
    Ok(bindings as u64)
}

/// Inserts a binding (a taken name is a conflict).
pub fn insert_binding(conn: &Connection, binding: &IdentityBinding) -> Result<(), StoreError> {
    let r = IdentityBindingRow::of(binding);
    conn.prepare_cached(&format!(
        "INSERT INTO identity_bindings ({BINDING_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)"
    ))?
    .execute(params![
        r.workspace_id,
        r.id,
        r.provider_id,
        r.bound_claims,
        r.role,
        r.allowed_projects,
        r.description,
        r.create_time,
        r.update_time,
    ])?;
    Ok(())
}

/// Replaces a binding whose update time is still `read`; false when it
/// changed or went.
pub fn replace_binding(conn: &Connection, read: Timestamp, binding: &IdentityBinding) -> Result<bool, StoreError> {
    let r = IdentityBindingRow::of(binding);
    Ok(conn.execute(
        "UPDATE identity_bindings SET bound_claims = ?3, role = ?4, allowed_projects = ?5, description = ?6, \
         update_time = ?7 WHERE workspace_id = ?1 AND id = ?2 AND update_time = ?8",
        params![
            r.workspace_id,
            r.id,
            r.bound_claims,
            r.role,
            r.allowed_projects,
            r.description,
            r.update_time,
            read.as_micros(),
        ],
    )? > 0)
}

/// Does binding `name` exist?
pub fn binding_exists(conn: &Connection, name: &IdentityBindingName) -> Result<bool, StoreError> {
    let mut statement = conn.prepare_cached("SELECT 1 FROM identity_bindings WHERE workspace_id = ?1 AND id = ?2")?;
    Ok(statement.exists(params![name.workspace.as_str(), name.binding.as_str()])?)
}

/// The bindings of `workspace` (of all when `None`), by workspace and id.
pub fn bindings(conn: &Connection, workspace: Option<&WorkspaceId>) -> Result<Vec<IdentityBinding>, StoreError> {
    let (sql, filter) = match workspace {
        Some(w) => (
            format!(
                "SELECT {BINDING_COLUMNS} FROM identity_bindings WHERE workspace_id = ?1 ORDER BY workspace_id, id"
            ),
            Some(w.as_str()),
        ),
        None => (format!("SELECT {BINDING_COLUMNS} FROM identity_bindings ORDER BY workspace_id, id"), None),
    };
    let mut statement = conn.prepare_cached(&sql)?;
    let mut rows = match filter {
        Some(w) => statement.query([w])?,
        None => statement.query([])?,
    };
    let mut out = Vec::new();
    while let Some(row) = rows.next()? {
        out.push(binding_row(row)?);
    }
    Ok(out)
}

/// Deletes binding `name`; false when there was none.
pub fn delete_binding(conn: &Connection, name: &IdentityBindingName) -> Result<bool, StoreError> {
    Ok(conn.execute(
        "DELETE FROM identity_bindings WHERE workspace_id = ?1 AND id = ?2",
        params![name.workspace.as_str(), name.binding.as_str()],
    )? > 0)
}
