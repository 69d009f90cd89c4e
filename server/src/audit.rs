//! The tamper-evident audit log (R-LOG-1): who, where, what, when and the
//! result of every attempt, decision, enrollment, device change, policy
//! change and admin action.
//!
//! Entries form a hash chain: each entry's hash covers its fields and the
//! previous entry's hash, so an edited, deleted or inserted entry breaks the
//! chain where it happened, and `verify` says which. Each entry is also
//! signed (Ed25519) with the server's audit key, which lives outside the
//! database: someone who can write the database but not read the key cannot
//! append, re-chain or forge entries unnoticed, and an auditor can check an
//! export with the public key alone. Truncation of the newest entries is only
//! detectable against a copy kept elsewhere (export, syslog): see
//! docs/ADMIN.md.
//!
//! An entry is appended in the same transaction as the change it records, so
//! no decision is ever stored without its entry.

use crate::store::{Backend, Store, StoreError, Tx};
use ring::digest::{Context, SHA256};
use ring::signature::{Ed25519KeyPair, KeyPair, UnparsedPublicKey, ED25519};
use serde::Serialize;
use sqlx::Row;
use std::fmt;

/// The hash before the first entry.
pub const GENESIS: [u8; 32] = [0; 32];

/// The largest `detail` accepted, so one entry cannot bloat the log.
pub const MAX_DETAIL_BYTES: usize = 16 * 1024;

/// What happened, before it is chained.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// When, in milliseconds since the epoch (from the server's synchronised clock).
    pub at_ms: i64,
    /// Who acted: a user ID, an officer, a workstation, or `system`.
    pub actor: String,
    /// The workstation it happened at, if any.
    pub workstation: Option<String>,
    /// What: a dotted name such as `auth.finish` or `policy.activate`.
    pub action: String,
    /// What it was done to, if anything (a user, a device, a policy version).
    pub target: Option<String>,
    /// The result: `allow`, `deny`, `ok`, `error`, …
    pub outcome: String,
    /// Details as a JSON object. Never a secret.
    pub detail: serde_json::Value,
}

/// An entry as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Entry {
    /// Position in the chain, from 1.
    pub seq: i64,
    /// When, in milliseconds since the epoch.
    pub at_ms: i64,
    /// Who.
    pub actor: String,
    /// Where.
    pub workstation: Option<String>,
    /// What.
    pub action: String,
    /// To what.
    pub target: Option<String>,
    /// The result.
    pub outcome: String,
    /// Details (JSON text, canonical).
    pub detail: String,
    /// The previous entry's hash, hex.
    #[serde(serialize_with = "hex_ser")]
    pub prev_hash: [u8; 32],
    /// This entry's hash, hex.
    #[serde(serialize_with = "hex_ser")]
    pub hash: [u8; 32],
    /// The audit key's Ed25519 signature over `seq` and `hash`, hex.
    #[serde(serialize_with = "hex_vec_ser")]
    pub signature: Vec<u8>,
}

fn hex_vec_ser<S: serde::Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&hex(bytes))
}

/// The server's audit signing key.
pub struct AuditKey {
    pair: Ed25519KeyPair,
}

impl fmt::Debug for AuditKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AuditKey(public {})", hex(self.public_key()))
    }
}

impl AuditKey {
    /// Loads a PKCS#8 Ed25519 key.
    pub fn from_pkcs8(der: &[u8]) -> Result<AuditKey, AuditError> {
        Ed25519KeyPair::from_pkcs8(der)
            .map(|pair| AuditKey { pair })
            .map_err(|_| AuditError::Invalid("audit key is not a PKCS#8 Ed25519 key"))
    }

    /// Generates a key, returning its PKCS#8 encoding to store (mode 0600).
    pub fn generate() -> Result<(AuditKey, zeroize::Zeroizing<Vec<u8>>), AuditError> {
        let rng = ring::rand::SystemRandom::new();
        let doc = Ed25519KeyPair::generate_pkcs8(&rng)
            .map_err(|_| AuditError::Invalid("could not generate an audit key"))?;
        let der = zeroize::Zeroizing::new(doc.as_ref().to_vec());
        Ok((AuditKey::from_pkcs8(&der)?, der))
    }

    /// The public key that verifies the log.
    pub fn public_key(&self) -> &[u8] {
        self.pair.public_key().as_ref()
    }

    fn sign(&self, seq: i64, hash: &[u8; 32]) -> Vec<u8> {
        self.pair.sign(&signed_bytes(seq, hash)).as_ref().to_vec()
    }
}

fn signed_bytes(seq: i64, hash: &[u8; 32]) -> [u8; 48] {
    let mut msg = [0u8; 48];
    msg[..8].copy_from_slice(b"ca-audit");
    msg[8..16].copy_from_slice(&seq.to_be_bytes());
    msg[16..].copy_from_slice(hash);
    msg
}

fn hex_ser<S: serde::Serializer>(bytes: &[u8; 32], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&hex(bytes))
}

pub use crate::hex::encode as hex;

/// Why an event could not be logged.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// Storage failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The event is malformed (oversized detail, empty action).
    #[error("audit event refused: {0}")]
    Invalid(&'static str),
}

impl From<sqlx::Error> for AuditError {
    fn from(e: sqlx::Error) -> AuditError {
        AuditError::Store(StoreError::Db(e))
    }
}

/// The hash of an entry: SHA-256 over a domain label, the previous hash and
/// each field length-prefixed, so no two different entries hash alike.
pub fn entry_hash(prev: &[u8; 32], seq: i64, e: &EntryFields<'_>) -> [u8; 32] {
    let mut ctx = Context::new(&SHA256);
    ctx.update(b"clinauth-audit-v1\0");
    ctx.update(prev);
    ctx.update(&seq.to_be_bytes());
    ctx.update(&e.at_ms.to_be_bytes());
    for field in [
        Some(e.actor),
        e.workstation,
        Some(e.action),
        e.target,
        Some(e.outcome),
        Some(e.detail),
    ] {
        match field {
            None => ctx.update(&[0]),
            Some(text) => {
                ctx.update(&[1]);
                ctx.update(&(text.len() as u64).to_be_bytes());
                ctx.update(text.as_bytes());
            }
        }
    }
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

/// The hashed fields of an entry, borrowed.
#[derive(Debug, Clone, Copy)]
pub struct EntryFields<'a> {
    /// When.
    pub at_ms: i64,
    /// Who.
    pub actor: &'a str,
    /// Where.
    pub workstation: Option<&'a str>,
    /// What.
    pub action: &'a str,
    /// To what.
    pub target: Option<&'a str>,
    /// Result.
    pub outcome: &'a str,
    /// Details, JSON text.
    pub detail: &'a str,
}

impl Entry {
    fn fields(&self) -> EntryFields<'_> {
        EntryFields {
            at_ms: self.at_ms,
            actor: &self.actor,
            workstation: self.workstation.as_deref(),
            action: &self.action,
            target: self.target.as_deref(),
            outcome: &self.outcome,
            detail: &self.detail,
        }
    }
}

/// Appends an event inside the caller's transaction and returns the entry.
///
/// On PostgreSQL an advisory lock held until commit serialises appends from
/// every replica; on SQLite the single connection does.
pub async fn append(
    tx: &mut Tx,
    backend: Backend,
    key: &AuditKey,
    event: &Event,
) -> Result<Entry, AuditError> {
    append_batch(tx, backend, key, std::slice::from_ref(event))
        .await?
        .pop()
        .ok_or(AuditError::Invalid("no entry was written"))
}

/// The most entries one INSERT statement carries (11 parameters each, well
/// under SQLite's and PostgreSQL's parameter limits).
const ROWS_PER_INSERT: usize = 256;

/// Appends several events, in order, inside the caller's transaction: the
/// chain head is read once and the entries are written with multi-row
/// INSERTs, so a batch of decisions costs a few statements, not a few per
/// entry (group commit, see `auth::commit`).
///
/// On PostgreSQL one advisory lock per call (not per entry) serialises
/// appends from every replica until commit; take it after the row updates
/// of the transaction, as [`append`] does. On SQLite the transaction's write
/// lock does.
pub async fn append_batch(
    tx: &mut Tx,
    backend: Backend,
    key: &AuditKey,
    events: &[Event],
) -> Result<Vec<Entry>, AuditError> {
    if events.is_empty() {
        return Ok(Vec::new());
    }
    let details = checked_details(events)?;
    // On PostgreSQL the advisory lock, then the head read after it: one call
    // (migration 7: in a VOLATILE function each statement sees what
    // committed before it ran, so the head is read after the lock is held).
    let head_sql = match backend {
        Backend::Postgres => "SELECT seq, hash FROM clinauth_audit_head()",
        Backend::Sqlite => "SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1",
    };
    let last = sqlx::query(head_sql).fetch_optional(&mut **tx).await?;
    let head = match last {
        Some(row) => (row.try_get::<i64, _>("seq")?, hash32(row.try_get("hash")?)?),
        None => (0, GENESIS),
    };
    let entries = chain(key, head, events, details);
    for chunk in entries.chunks(ROWS_PER_INSERT) {
        let mut sql = String::from(
            "INSERT INTO audit_log (seq, at_ms, actor, workstation, action, target, outcome, detail, prev_hash, hash, signature) VALUES ",
        );
        for i in 0..chunk.len() {
            let b = i * 11;
            if i > 0 {
                sql.push_str(", ");
            }
            sql.push('(');
            for c in 1..=11 {
                if c > 1 {
                    sql.push_str(", ");
                }
                sql.push('$');
                sql.push_str(&(b + c).to_string());
            }
            sql.push(')');
        }
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for e in chunk {
            query = query
                .bind(e.seq)
                .bind(e.at_ms)
                .bind(e.actor.clone())
                .bind(e.workstation.clone())
                .bind(e.action.clone())
                .bind(e.target.clone())
                .bind(e.outcome.clone())
                .bind(e.detail.clone())
                .bind(e.prev_hash.to_vec())
                .bind(e.hash.to_vec())
                .bind(e.signature.clone());
        }
        query.execute(&mut **tx).await?;
    }
    Ok(entries)
}

/// Checks events for [`append_batch`]: the detail of each, serialised.
pub(crate) fn checked_details(events: &[Event]) -> Result<Vec<String>, AuditError> {
    let mut details = Vec::with_capacity(events.len());
    for event in events {
        if event.action.is_empty() || event.actor.is_empty() || event.outcome.is_empty() {
            return Err(AuditError::Invalid(
                "actor, action and outcome are required",
            ));
        }
        let detail = serde_json::to_string(&event.detail)
            .map_err(|_| AuditError::Invalid("detail is not serialisable"))?;
        if detail.len() > MAX_DETAIL_BYTES {
            return Err(AuditError::Invalid("detail is larger than 16 KiB"));
        }
        details.push(detail);
    }
    Ok(details)
}

/// The entries that chain `events` after `head` (the last entry's seq and
/// hash), each hashed; the last one signed. The signature covers the whole
/// batch through the hash chain (each entry's hash covers its predecessor's),
/// so one Ed25519 signature per commit proves every entry of the commit;
/// the others carry an empty signature. [`verify`] requires every unsigned
/// entry to be followed by a signed one.
pub(crate) fn chain(
    key: &AuditKey,
    head: (i64, [u8; 32]),
    events: &[Event],
    details: Vec<String>,
) -> Vec<Entry> {
    let (mut seq, mut prev_hash) = head;
    let mut entries = Vec::with_capacity(events.len());
    let last = events.len();
    for (n, (event, detail)) in events.iter().zip(details).enumerate() {
        seq += 1;
        let fields = EntryFields {
            at_ms: event.at_ms,
            actor: &event.actor,
            workstation: event.workstation.as_deref(),
            action: &event.action,
            target: event.target.as_deref(),
            outcome: &event.outcome,
            detail: &detail,
        };
        let hash = entry_hash(&prev_hash, seq, &fields);
        let signature = if n + 1 == last {
            key.sign(seq, &hash)
        } else {
            Vec::new()
        };
        entries.push(Entry {
            seq,
            at_ms: event.at_ms,
            actor: event.actor.clone(),
            workstation: event.workstation.clone(),
            action: event.action.clone(),
            target: event.target.clone(),
            outcome: event.outcome.clone(),
            detail,
            prev_hash,
            hash,
            signature,
        });
        prev_hash = hash;
    }
    entries
}

pub(crate) fn hash32_of(bytes: Vec<u8>) -> Result<[u8; 32], StoreError> {
    hash32(bytes)
}

/// Appends one event in a transaction of its own.
pub async fn record(store: &Store, key: &AuditKey, event: &Event) -> Result<Entry, AuditError> {
    let mut tx = store.begin().await?;
    let entry = append(&mut tx, store.backend(), key, event).await?;
    tx.commit().await.map_err(StoreError::Db)?;
    Ok(entry)
}

fn hash32(bytes: Vec<u8>) -> Result<[u8; 32], StoreError> {
    <[u8; 32]>::try_from(bytes.as_slice())
        .map_err(|_| StoreError::Corrupt("audit hash is not 32 bytes".into()))
}

fn entry_from_row(row: &sqlx::any::AnyRow) -> Result<Entry, StoreError> {
    Ok(Entry {
        seq: row.try_get("seq")?,
        at_ms: row.try_get("at_ms")?,
        actor: row.try_get("actor")?,
        workstation: row.try_get("workstation")?,
        action: row.try_get("action")?,
        target: row.try_get("target")?,
        outcome: row.try_get("outcome")?,
        detail: row.try_get("detail")?,
        prev_hash: hash32(row.try_get("prev_hash")?)?,
        hash: hash32(row.try_get("hash")?)?,
        signature: row.try_get("signature")?,
    })
}

/// Reads entries with `seq > after`, at most `limit`, in order.
pub async fn page(store: &Store, after: i64, limit: i64) -> Result<Vec<Entry>, StoreError> {
    let rows = sqlx::query(
        "SELECT seq, at_ms, actor, workstation, action, target, outcome, detail, prev_hash, hash, signature \
         FROM audit_log WHERE seq > $1 ORDER BY seq LIMIT $2",
    )
    .bind(after)
    .bind(limit)
    .fetch_all(store.pool())
    .await?;
    rows.iter().map(entry_from_row).collect()
}

/// A break in the chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Break {
    /// The entry's fields no longer match its hash: it was edited.
    Edited {
        /// The entry.
        seq: i64,
    },
    /// Entries are missing before `seq`: deleted.
    Deleted {
        /// The first missing sequence number.
        from: i64,
        /// The last missing one.
        to: i64,
    },
    /// The entry does not chain to the one before it: one of them was
    /// replaced, or an entry was inserted.
    Unchained {
        /// The entry.
        seq: i64,
    },
    /// The signature does not verify with the audit key: the entry was not
    /// written by this server (forged, or re-chained after an edit).
    Forged {
        /// The entry.
        seq: i64,
    },
    /// Entries without a signature that no signed entry after them covers
    /// (a signature was removed from the end of a commit, or entries were
    /// appended without the audit key).
    Unsigned {
        /// The first unsigned entry.
        from: i64,
        /// The last one.
        to: i64,
    },
}

impl fmt::Display for Break {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Break::Edited { seq } => write!(f, "entry {seq} was edited (its hash no longer matches)"),
            Break::Deleted { from, to } if from == to => write!(f, "entry {from} was deleted"),
            Break::Deleted { from, to } => write!(f, "entries {from} to {to} were deleted"),
            Break::Unchained { seq } => write!(
                f,
                "entry {seq} does not chain to the entry before it: one of them was replaced, or an entry was inserted"
            ),
            Break::Forged { seq } => write!(
                f,
                "entry {seq} is not signed by the audit key: forged or rewritten"
            ),
            Break::Unsigned { from, to } => write!(
                f,
                "entries {from} to {to} carry no signature and no signed entry follows them: forged or stripped"
            ),
        }
    }
}

/// The result of walking the chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verification {
    /// Entries read.
    pub entries: u64,
    /// The last entry's sequence number and hash.
    pub head: Option<(i64, [u8; 32])>,
    /// Every break found, in order.
    pub breaks: Vec<Break>,
}

impl Verification {
    /// Whether the chain is intact.
    pub fn is_intact(&self) -> bool {
        self.breaks.is_empty()
    }
}

/// Walks the whole chain, a page at a time, and reports every break.
/// `public_key` is the audit key's Ed25519 public key.
pub async fn verify(store: &Store, public_key: &[u8]) -> Result<Verification, StoreError> {
    let key = UnparsedPublicKey::new(&ED25519, public_key);
    let mut report = Verification {
        entries: 0,
        head: None,
        breaks: Vec::new(),
    };
    let mut expected_seq = 1i64;
    let mut expected_prev = GENESIS;
    let mut after = 0i64;
    // Unsigned entries since the last signed one: a commit's entries are
    // proven by its last entry's signature through the chain.
    let mut unsigned: Option<(i64, i64)> = None;
    loop {
        let entries = page(store, after, 1000).await?;
        let Some(last) = entries.last() else {
            break;
        };
        after = last.seq;
        for e in &entries {
            report.entries += 1;
            let gap = e.seq > expected_seq;
            if gap {
                report.breaks.push(Break::Deleted {
                    from: expected_seq,
                    to: e.seq - 1,
                });
            }
            if gap {
                // A deletion ends the run a later signature could cover.
                if let Some((from, to)) = unsigned.take() {
                    report.breaks.push(Break::Unsigned { from, to });
                }
            }
            // After a gap the link is broken by the deletion already reported.
            let unchained = !gap && e.prev_hash != expected_prev;
            if entry_hash(&e.prev_hash, e.seq, &e.fields()) != e.hash {
                report.breaks.push(Break::Edited { seq: e.seq });
            } else if e.signature.is_empty() {
                unsigned = Some(match unsigned {
                    Some((from, _)) => (from, e.seq),
                    None => (e.seq, e.seq),
                });
                if unchained {
                    report.breaks.push(Break::Unchained { seq: e.seq });
                }
            } else {
                // A signature ends the run: a good one proves it through
                // the chain, a bad one is reported here.
                unsigned = None;
                if key
                    .verify(&signed_bytes(e.seq, &e.hash), &e.signature)
                    .is_err()
                {
                    report.breaks.push(Break::Forged { seq: e.seq });
                } else if unchained {
                    report.breaks.push(Break::Unchained { seq: e.seq });
                }
            }
            expected_seq = e.seq + 1;
            expected_prev = e.hash;
            report.head = Some((e.seq, e.hash));
        }
    }
    if let Some((from, to)) = unsigned {
        report.breaks.push(Break::Unsigned { from, to });
    }
    Ok(report)
}
