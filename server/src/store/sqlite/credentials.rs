//! Queries on the `credentials` table. Secrets are stored only as the three
//! opaque columns of a [`SealedSecret`].

use pullpass::registry::{RegistryHost, RegistryServer};
use rusqlite::{Connection, Row, params};

use crate::domain::credential::{RealmOrigin, StoredCredential};
use crate::domain::{
    Credential, CredentialId, CredentialName, CredentialUid, ProjectName, Provider, SealedSecret, Timestamp,
    WorkspaceId,
};
use crate::store::{CredentialFilter, RowCursor, StoreError, decode_list, encode_list};

const META_COLUMNS: &str = "workspace_id, credential_id, uid, provider, registry_host, registry_namespace, \
     username, secret_version, allowed_projects, allow_passthrough, token_realm_allowlist, ca_bundle_pem, \
     description, create_time, update_time";
const SEALED_COLUMNS: &str = "secret_kek_id, secret_wrapped_dek, secret_ciphertext";

fn corrupt(what: impl Into<String>) -> StoreError {
    StoreError::Corrupt(what.into())
}

fn credential_from_row(row: &Row<'_>) -> Result<Credential, StoreError> {
    let workspace: String = row.get(0)?;
    let id: String = row.get(1)?;
    let uid: Vec<u8> = row.get(2)?;
    let provider: i32 = row.get(3)?;
    let host: String = row.get(4)?;
    let namespace: String = row.get(5)?;
    let secret_version: i64 = row.get(7)?;
    let projects: String = row.get(8)?;
    let realms: String = row.get(10)?;
    let host = RegistryHost::parse(&host).map_err(|e| corrupt(format!("registry host {e}")))?;
    let registry = RegistryServer::new(host, (!namespace.is_empty()).then_some(namespace))
        .map_err(|e| corrupt(format!("registry namespace {e}")))?;
    Ok(Credential {
        name: CredentialName {
            workspace: WorkspaceId::parse(&workspace).map_err(corrupt)?,
            credential: CredentialId::parse(&id).map_err(corrupt)?,
        },
        uid: CredentialUid(uid.try_into().map_err(|_| corrupt("credential uid length"))?),
        provider: Provider::from_code(provider).ok_or_else(|| corrupt(format!("provider {provider}")))?,
        registry,
        username: row.get(6)?,
        secret_version: u64::try_from(secret_version).map_err(|_| corrupt("secret version"))?,
        allowed_projects: decode_list(&projects)?
            .iter()
            .map(|p| ProjectName::parse(p).map_err(corrupt))
            .collect::<Result<_, _>>()?,
        allow_passthrough: row.get(9)?,
        token_realm_allowlist: decode_list(&realms)?
            .iter()
            .map(|r| RealmOrigin::parse(r).map_err(corrupt))
            .collect::<Result<_, _>>()?,
        ca_bundle_pem: row.get(11)?,
        description: row.get(12)?,
        create_time: Timestamp::from_micros(row.get(13)?),
        update_time: Timestamp::from_micros(row.get(14)?),
    })
}

fn sealed_from_row(row: &Row<'_>, first: usize) -> Result<SealedSecret, StoreError> {
    Ok(SealedSecret { kek_id: row.get(first)?, wrapped_dek: row.get(first + 1)?, ciphertext: row.get(first + 2)? })
}

fn stored_from_row(row: &Row<'_>) -> Result<StoredCredential, StoreError> {
    Ok(StoredCredential { credential: credential_from_row(row)?, sealed: sealed_from_row(row, 15)? })
}

/// Inserts a credential; `Conflict` if the name is taken in the workspace.
pub fn insert(conn: &Connection, stored: &StoredCredential) -> Result<(), StoreError> {
    let c = &stored.credential;
    conn.prepare_cached(&format!(
        "INSERT INTO credentials ({META_COLUMNS}, {SEALED_COLUMNS}) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18)"
    ))?
    .execute(params![
        c.name.workspace.as_str(),
        c.name.credential.as_str(),
        c.uid.0.as_slice(),
        c.provider.code(),
        c.registry.host().as_str(),
        c.registry.namespace().unwrap_or(""),
        c.username,
        c.secret_version as i64,
        encode_list(&c.allowed_projects.iter().map(ProjectName::as_str).collect::<Vec<_>>()),
        c.allow_passthrough,
        encode_list(&c.token_realm_allowlist.iter().map(ToString::to_string).collect::<Vec<_>>()),
        c.ca_bundle_pem,
        c.description,
        c.create_time.as_micros(),
        c.update_time.as_micros(),
        stored.sealed.kek_id,
        stored.sealed.wrapped_dek,
        stored.sealed.ciphertext,
    ])?;
    Ok(())
}

/// Replaces every column of an existing credential (matched by name and uid).
/// False if it no longer exists.
pub fn replace(conn: &Connection, stored: &StoredCredential) -> Result<bool, StoreError> {
    let c = &stored.credential;
    let changed = conn
        .prepare_cached(
            "UPDATE credentials SET registry_host = ?3, registry_namespace = ?4, username = ?5, \
             secret_version = ?6, allowed_projects = ?7, allow_passthrough = ?8, token_realm_allowlist = ?9, \
             ca_bundle_pem = ?10, description = ?11, update_time = ?12, secret_kek_id = ?13, \
             secret_wrapped_dek = ?14, secret_ciphertext = ?15 \
             WHERE workspace_id = ?1 AND credential_id = ?2 AND uid = ?16",
        )?
        .execute(params![
            c.name.workspace.as_str(),
            c.name.credential.as_str(),
            c.registry.host().as_str(),
            c.registry.namespace().unwrap_or(""),
            c.username,
            c.secret_version as i64,
            encode_list(&c.allowed_projects.iter().map(ProjectName::as_str).collect::<Vec<_>>()),
            c.allow_passthrough,
            encode_list(&c.token_realm_allowlist.iter().map(ToString::to_string).collect::<Vec<_>>()),
            c.ca_bundle_pem,
            c.description,
            c.update_time.as_micros(),
            stored.sealed.kek_id,
            stored.sealed.wrapped_dek,
            stored.sealed.ciphertext,
            c.uid.0.as_slice(),
        ])?;
    Ok(changed > 0)
}

/// One credential with its sealed secret.
pub fn get(conn: &Connection, name: &CredentialName) -> Result<Option<StoredCredential>, StoreError> {
    let mut statement = conn.prepare_cached(&format!(
        "SELECT {META_COLUMNS}, {SEALED_COLUMNS} FROM credentials WHERE workspace_id = ?1 AND credential_id = ?2"
    ))?;
    let mut rows = statement.query(params![name.workspace.as_str(), name.credential.as_str()])?;
    match rows.next()? {
        Some(row) => Ok(Some(stored_from_row(row)?)),
        None => Ok(None),
    }
}

/// Up to `limit` credentials of a workspace with ids after `after`, ordered
/// by id, matching `filter`. Metadata only.
pub fn list(
    conn: &Connection,
    workspace: &WorkspaceId,
    filter: &CredentialFilter,
    after: Option<&str>,
    limit: usize,
) -> Result<Vec<Credential>, StoreError> {
    let mut statement = conn.prepare_cached(&format!(
        "SELECT {META_COLUMNS} FROM credentials \
         WHERE workspace_id = ?1 AND credential_id > ?2 \
           AND (?3 IS NULL OR registry_host = ?3) AND (?4 IS NULL OR registry_namespace = ?4) \
           AND (?5 IS NULL OR provider = ?5) \
         ORDER BY credential_id LIMIT ?6"
    ))?;
    let registry = filter.registry.as_ref();
    let mut rows = statement.query(params![
        workspace.as_str(),
        after.unwrap_or(""),
        registry.map(|r| r.host().as_str()),
        registry.and_then(|r| r.namespace()),
        filter.provider.map(Provider::code),
        limit as i64,
    ])?;
    let mut out = Vec::new();
    while let Some(row) = rows.next()? {
        out.push(credential_from_row(row)?);
    }
    Ok(out)
}

/// Every credential of a workspace, with sealed secrets: what the broker
/// indexes in memory to choose a credential for an image.
pub fn in_workspace(conn: &Connection, workspace: &WorkspaceId) -> Result<Vec<StoredCredential>, StoreError> {
    let mut statement = conn.prepare_cached(&format!(
        "SELECT {META_COLUMNS}, {SEALED_COLUMNS} FROM credentials WHERE workspace_id = ?1 ORDER BY credential_id"
    ))?;
    let mut rows = statement.query(params![workspace.as_str()])?;
    let mut out = Vec::new();
    while let Some(row) = rows.next()? {
        out.push(stored_from_row(row)?);
    }
    Ok(out)
}

/// Deletes a credential. False if absent.
pub fn delete(conn: &Connection, name: &CredentialName) -> Result<bool, StoreError> {
    Ok(conn.execute(
        "DELETE FROM credentials WHERE workspace_id = ?1 AND credential_id = ?2",
        params![name.workspace.as_str(), name.credential.as_str()],
    )? > 0)
}

/// Master key ids that wrap at least one stored data key.
pub fn key_ids_in_use(conn: &Connection) -> Result<Vec<String>, StoreError> {
    let mut statement = conn.prepare("SELECT DISTINCT secret_kek_id FROM credentials ORDER BY 1")?;
    let rows = statement.query_map([], |r| r.get(0))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// How many data keys each master-key id wraps.
pub fn key_usage(conn: &Connection) -> Result<Vec<(String, u64)>, StoreError> {
    let mut statement = conn.prepare("SELECT secret_kek_id, count(*) FROM credentials GROUP BY 1 ORDER BY 1")?;
    let rows = statement.query_map([], |r| Ok((r.get(0)?, r.get::<_, i64>(1)? as u64)))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// How many stored data keys are wrapped under another key than `kek_id`.
pub fn count_not_under_key(conn: &Connection, kek_id: &str) -> Result<u64, StoreError> {
    let n: i64 =
        conn.query_row("SELECT count(*) FROM credentials WHERE secret_kek_id <> ?1", [kek_id], |r| r.get(0))?;
    Ok(n as u64)
}

/// Up to `limit` credentials after `cursor` (in workspace, id order), with
/// sealed secrets; only those wrapped under another key than `kek_id` when
/// one is given. For key rotation and verification.
pub fn walk(
    conn: &Connection,
    not_under_key: Option<&str>,
    cursor: &RowCursor,
    limit: usize,
) -> Result<Vec<StoredCredential>, StoreError> {
    let mut statement = conn.prepare_cached(&format!(
        "SELECT {META_COLUMNS}, {SEALED_COLUMNS} FROM credentials \
         WHERE (?1 IS NULL OR secret_kek_id <> ?1) AND (workspace_id, credential_id) > (?2, ?3) \
         ORDER BY workspace_id, credential_id LIMIT ?4"
    ))?;
    let (workspace, credential) = cursor.clone().unwrap_or_default();
    let mut rows = statement.query(params![not_under_key, workspace, credential, limit as i64])?;
    let mut out = Vec::new();
    while let Some(row) = rows.next()? {
        out.push(stored_from_row(row)?);
    }
    Ok(out)
}

/// Stores a rewrapped data key, if the row still holds the same secret
/// version. False if the row changed meanwhile (it is then re-read).
pub fn set_wrapped_key(conn: &Connection, credential: &Credential, sealed: &SealedSecret) -> Result<bool, StoreError> {
    Ok(conn.execute(
        "UPDATE credentials SET secret_kek_id = ?4, secret_wrapped_dek = ?5 \
         WHERE workspace_id = ?1 AND credential_id = ?2 AND secret_version = ?3 AND uid = ?6",
        params![
            credential.name.workspace.as_str(),
            credential.name.credential.as_str(),
            credential.secret_version as i64,
            sealed.kek_id,
            sealed.wrapped_dek,
            credential.uid.0.as_slice(),
        ],
    )? > 0)
}
