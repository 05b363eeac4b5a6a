//! Rendering results: human tables, or JSON with stable snake_case field
//! names (the proto field names) and RFC 3339 times.

use pullpass::v1::{AccessToken, AuditEvent, Credential, Provider, Role, Workspace, WorkspaceKind};
use serde_json::{Value, json};

use crate::cli::OutputFormat;

/// RFC 3339 of a protobuf time, or null.
pub fn time(t: &Option<prost_types::Timestamp>) -> Value {
    t.as_ref().map_or(Value::Null, |t| Value::String(pullpass::time::format_rfc3339(t.seconds)))
}

fn provider(code: i32) -> String {
    Provider::try_from(code).map(|p| p.as_str_name().to_owned()).unwrap_or_else(|_| code.to_string())
}

/// A workspace as JSON.
pub fn workspace(w: &Workspace) -> Value {
    json!({
        "name": w.name,
        "kind": WorkspaceKind::try_from(w.kind).map(|k| k.as_str_name()).unwrap_or("UNKNOWN"),
        "display_name": w.display_name,
        "create_time": time(&w.create_time),
    })
}

/// A credential as JSON (it never has a secret).
pub fn credential(c: &Credential) -> Value {
    json!({
        "name": c.name,
        "provider": provider(c.provider),
        "registry_server": c.registry_server,
        "username": c.username,
        "secret_set": c.secret_set,
        "secret_version": c.secret_version,
        "allowed_projects": c.allowed_projects,
        "allow_passthrough": c.allow_passthrough,
        "description": c.description,
        "token_realm_allowlist": c.token_realm_allowlist,
        "ca_bundle_set": !c.ca_bundle_pem.is_empty(),
        "create_time": time(&c.create_time),
        "update_time": time(&c.update_time),
        "normalizations": c.normalizations,
    })
}

/// An access token as JSON (`token` only when just minted).
pub fn access_token(t: &AccessToken) -> Value {
    let mut value = json!({
        "name": t.name,
        "role": Role::try_from(t.role).map(|r| r.as_str_name()).unwrap_or("UNKNOWN"),
        "projects": t.projects,
        "description": t.description,
        "create_time": time(&t.create_time),
        "expire_time": time(&t.expire_time),
        "last_used_time": time(&t.last_used_time),
        "revoke_time": time(&t.revoke_time),
    });
    if !t.token.is_empty() {
        value["token"] = Value::String(t.token.clone());
    }
    value
}

/// An audit event as JSON.
pub fn audit_event(e: &AuditEvent) -> Value {
    json!({
        "name": e.name,
        "event_time": time(&e.event_time),
        "principal": e.principal,
        "action": e.action,
        "resource": e.resource,
        "status_code": e.status_code,
        "client_address": e.client_address,
        "request_id": e.request_id,
        "call_count": e.call_count.max(1),
        "request_ids": e.request_ids,
        "image": e.image,
        "granted_scope": e.granted_scope,
        "chain_hash": e.chain_hash,
    })
}

/// A status as JSON (`null` for OK).
pub fn status(s: &Option<tonic_types::Status>) -> Value {
    match s {
        Some(status) if status.code != 0 => {
            let error = pullpass_client::Error::from_rpc_status(status);
            json!({ "code": format!("{:?}", tonic::Code::from(status.code)), "reason": error.reason(), "message": status.message })
        }
        _ => Value::Null,
    }
}

/// Prints `rows` as a table (first row: headers), or `json` as JSON.
pub fn print(format: OutputFormat, json: &Value, headers: &[&str], rows: Vec<Vec<String>>) {
    match format {
        OutputFormat::Json => println!("{}", serde_json::to_string_pretty(json).unwrap_or_default()),
        OutputFormat::Table => print_table(headers, &rows),
    }
}

fn print_table(headers: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if i < widths.len() {
                widths[i] = widths[i].max(cell.chars().count());
            }
        }
    }
    let line = |cells: Vec<String>| {
        cells
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<width$}", width = widths[i]))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_owned()
    };
    println!("{}", line(headers.iter().map(|h| h.to_string()).collect()));
    for row in rows {
        println!("{}", line(row.clone()));
    }
}

/// The last path segment of a resource name.
pub fn id(name: &str) -> String {
    name.rsplit('/').next().unwrap_or(name).to_owned()
}

/// A time as short text for tables.
pub fn short_time(t: &Option<prost_types::Timestamp>) -> String {
    t.as_ref().map(|t| pullpass::time::format_rfc3339(t.seconds)).unwrap_or_else(|| "-".into())
}

/// The provider name of a credential.
pub fn provider_name(code: i32) -> String {
    provider(code)
}
