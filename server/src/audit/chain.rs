//! The hash chain: each record's hash is SHA-256 over the previous record's
//! hash and this record's canonical form (sequence number included, every
//! field length-prefixed), so editing, deleting or reordering a row breaks
//! the chain at that row. Export the head (`pullpassd audit head`) to anchor
//! it elsewhere: then even a rewrite of the whole chain is detectable.
//!
//! Two canonical forms: `pullpass-audit-v1` for an event standing for one
//! call (every event written before aggregation existed has this form, so
//! old chains verify unchanged), and `pullpass-audit-v2` for an aggregated
//! lease event (`count` > 1), which is the v1 layout under its own tag with
//! the count appended. The tags keep the two from ever colliding.

use ring::digest;

use crate::domain::audit::{AuditEvent, AuditRecord};

/// The `prev_hash` of the very first event.
pub const GENESIS: [u8; 32] = [0; 32];

/// The canonical bytes of an event at position `seq`.
pub fn canonical(seq: i64, event: &AuditEvent) -> Vec<u8> {
    let mut out = Vec::with_capacity(256 + event.request_id.len());
    let aggregated = event.count > 1;
    out.extend_from_slice(if aggregated { b"pullpass-audit-v2" } else { b"pullpass-audit-v1" });
    out.extend_from_slice(&seq.to_be_bytes());
    out.extend_from_slice(&event.event_time.as_micros().to_be_bytes());
    out.extend_from_slice(&event.status_code.to_be_bytes());
    for field in [
        &event.workspace,
        &event.principal,
        &event.action,
        &event.resource,
        &event.client_address,
        &event.request_id,
        &event.image,
        &event.granted_scope,
    ] {
        out.extend_from_slice(&(field.len() as u32).to_be_bytes());
        out.extend_from_slice(field.as_bytes());
    }
    if aggregated {
        out.extend_from_slice(&event.count.to_be_bytes());
    }
    out
}

/// The hash of an event at `seq` following `prev_hash`.
pub fn link(prev_hash: &[u8; 32], seq: i64, event: &AuditEvent) -> [u8; 32] {
    let mut context = digest::Context::new(&digest::SHA256);
    context.update(prev_hash);
    context.update(&canonical(seq, event));
    let mut out = [0u8; 32];
    out.copy_from_slice(context.finish().as_ref());
    out
}

/// Why a record does not continue the chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Break {
    /// Sequence numbers skip: events were deleted.
    Missing {
        /// The first missing sequence number.
        expected: i64,
        /// The one found instead.
        found: i64,
    },
    /// The record does not point at its predecessor (moved, or its
    /// predecessor was removed or changed).
    WrongPredecessor(i64),
    /// The record's content does not match its hash (edited).
    Altered(i64),
}

impl std::fmt::Display for Break {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Missing { expected, found } => {
                write!(f, "event {expected} is missing (the next event present is {found}): events were deleted")
            }
            Self::WrongPredecessor(seq) => {
                write!(f, "event {seq} does not follow the event before it (deleted, reordered or altered rows)")
            }
            Self::Altered(seq) => write!(f, "event {seq} was altered (its content does not match its hash)"),
        }
    }
}

/// Checks `record` against the expected predecessor; returns its hash.
pub fn check(record: &AuditRecord, prev_seq: i64, prev_hash: &[u8; 32]) -> Result<[u8; 32], Break> {
    if record.seq != prev_seq + 1 {
        return Err(Break::Missing { expected: prev_seq + 1, found: record.seq });
    }
    if &record.prev_hash != prev_hash {
        return Err(Break::WrongPredecessor(record.seq));
    }
    if link(prev_hash, record.seq, &record.event) != record.hash {
        return Err(Break::Altered(record.seq));
    }
    Ok(record.hash)
}

/// Hex of a hash.
pub fn hex(hash: &[u8; 32]) -> String {
    hash.iter().map(|b| format!("{b:02x}")).collect()
}

/// A hash from hex.
pub fn from_hex(text: &str) -> Option<[u8; 32]> {
    if text.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, chunk) in text.as_bytes().chunks(2).enumerate() {
        out[i] = u8::from_str_radix(std::str::from_utf8(chunk).ok()?, 16).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Timestamp;

    fn chain(n: i64) -> Vec<AuditRecord> {
        let mut prev = GENESIS;
        (1..=n)
            .map(|seq| {
                let event = AuditEvent {
                    event_time: Timestamp::from_micros(seq * 1000),
                    action: format!("Action{seq}"),
                    resource: "workspaces/a".into(),
                    ..Default::default()
                };
                let hash = link(&prev, seq, &event);
                let record = AuditRecord { seq, event, prev_hash: prev, hash };
                prev = hash;
                record
            })
            .collect()
    }

    fn verify(records: &[AuditRecord]) -> Result<(), Break> {
        let (mut seq, mut hash) = (0, GENESIS);
        for record in records {
            hash = check(record, seq, &hash)?;
            seq = record.seq;
        }
        Ok(())
    }

    #[test]
    fn an_intact_chain_verifies_and_each_kind_of_tampering_is_named() {
        let records = chain(5);
        assert_eq!(verify(&records), Ok(()));
        let mut edited = records.clone();
        edited[2].event.action = "Forged".into();
        assert_eq!(verify(&edited), Err(Break::Altered(3)));
        let mut deleted = records.clone();
        deleted.remove(1);
        assert_eq!(verify(&deleted), Err(Break::Missing { expected: 2, found: 3 }));
        let mut swapped = records.clone();
        let (a, b) = (swapped[1].event.clone(), swapped[2].event.clone());
        swapped[1].event = b;
        swapped[2].event = a;
        assert_eq!(verify(&swapped), Err(Break::Altered(2)));
        assert_eq!(from_hex(&hex(&records[0].hash)), Some(records[0].hash));
    }

    #[test]
    fn a_single_call_keeps_the_v1_form_and_an_aggregated_count_is_covered_by_the_hash() {
        let single = AuditEvent { action: "IssueRegistryAuth".into(), request_id: "a".into(), ..Default::default() };
        assert!(canonical(1, &single).starts_with(b"pullpass-audit-v1"));
        // Byte for byte the form chains written before aggregation hold.
        let mut v1 = b"pullpass-audit-v1".to_vec();
        v1.extend_from_slice(&1i64.to_be_bytes());
        v1.extend_from_slice(&0i64.to_be_bytes());
        v1.extend_from_slice(&0i32.to_be_bytes());
        for field in ["", "", "IssueRegistryAuth", "", "", "a", "", ""] {
            v1.extend_from_slice(&(field.len() as u32).to_be_bytes());
            v1.extend_from_slice(field.as_bytes());
        }
        assert_eq!(canonical(1, &single), v1);
        let aggregated = AuditEvent { request_id: "a b c".into(), count: 3, ..single.clone() };
        assert!(canonical(1, &aggregated).starts_with(b"pullpass-audit-v2"));
        let mut altered = aggregated.clone();
        altered.count = 2;
        assert_ne!(link(&GENESIS, 1, &aggregated), link(&GENESIS, 1, &altered), "the count is in the hash");
        assert_ne!(link(&GENESIS, 1, &aggregated), link(&GENESIS, 1, &single));
    }
}
