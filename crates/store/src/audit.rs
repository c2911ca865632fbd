//! The audit log: an append-only record of security events (registrations,
//! logins, MFA, keys, policy changes). Entries never hold secrets or plain
//! personal data; the actor is a user id, a key prefix or `operator`.
//!
//! It is a hash chain: each entry's hash covers its fields, its place (`seq`) and the
//! hash of the entry before it, so an edited, removed, inserted or reordered entry
//! breaks the chain where it happened ([`Store::verify_audit`]). Someone who can
//! write the database can recompute a whole chain, so the gateway also signs the
//! chain's end now and then with a key the database does not hold
//! ([`Store::checkpoint_audit`]): past a checkpoint, a rewrite shows.

use hmac::{KeyInit, Mac};
use serde::Serialize;
use serde_json::Value;
use sha2::{Digest, Sha256};
use sqlx::FromRow;

use crate::pool::{Store, StoreError, on_pool};

/// The hash before the first entry.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Appends one entry to the chain inside the open transaction `$tx` (whose first
/// statement takes the chain head's row lock, so concurrent appends queue) and
/// evaluates to its id. One text for both back-ends, like `on_pool!`.
macro_rules! append_chained {
    ($tx:expr, $at:expr, $actor:expr, $action:expr, $outcome:expr, $ip:expr, $reason:expr, $detail:expr) => {{
        const HEAD: &str = "UPDATE audit_head SET seq = seq + 1 WHERE id = 1 RETURNING seq, hash";
        const INSERT: &str = "INSERT INTO audit_log (at, actor, action, outcome, ip, reason, detail, seq, prev_hash, hash) \
                              VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) RETURNING id";
        const SET_HEAD: &str = "UPDATE audit_head SET hash = $1 WHERE id = 1";
        let (seq, prev): (i64, String) = sqlx::query_as(HEAD).fetch_one(&mut *$tx).await?;
        let fields = $crate::audit::Fields {
            seq,
            at: $at,
            actor: $actor,
            action: $action,
            outcome: $outcome,
            ip: $ip,
            reason: $reason,
            detail: $detail,
        };
        let hash = fields.hash(&prev);
        let id: i64 = sqlx::query_scalar(INSERT)
            .bind($at).bind($actor).bind($action).bind($outcome).bind($ip).bind($reason).bind($detail)
            .bind(seq).bind(&prev).bind(&hash)
            .fetch_one(&mut *$tx).await?;
        sqlx::query(SET_HEAD).bind(&hash).execute(&mut *$tx).await?;
        id
    }};
}
pub(crate) use append_chained;

/// What an entry's hash covers, in a fixed order.
#[derive(Serialize)]
pub(crate) struct Fields<'a> {
    pub seq: i64,
    pub at: i64,
    pub actor: &'a str,
    pub action: &'a str,
    pub outcome: &'a str,
    pub ip: Option<&'a str>,
    pub reason: Option<&'a str>,
    pub detail: Option<&'a str>,
}

impl Fields<'_> {
    /// SHA-256 of the previous hash and this entry as a JSON array, in hex.
    pub fn hash(&self, prev: &str) -> String {
        let body = serde_json::to_string(&(
            self.seq,
            self.at,
            self.actor,
            self.action,
            self.outcome,
            self.ip,
            self.reason,
            self.detail,
        ))
        .unwrap_or_default();
        let mut h = Sha256::new();
        h.update(prev.as_bytes());
        h.update(b"\n");
        h.update(body.as_bytes());
        hex(&h.finalize())
    }
}

fn hex(bytes: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(HEX[usize::from(b >> 4)] as char);
        out.push(HEX[usize::from(b & 0xf)] as char);
    }
    out
}

/// The signature of a checkpoint: HMAC-SHA-256 of its place and hash.
fn sign(key: &[u8; 32], seq: i64, hash: &str) -> String {
    let mut mac = <hmac::Hmac<Sha256> as KeyInit>::new_from_slice(key).expect("any key length");
    mac.update(format!("palisade-audit-checkpoint\n{seq}\n{hash}").as_bytes());
    hex(&mac.finalize().into_bytes())
}

/// Where and how the chain is broken.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ChainBreak {
    /// The entry's fields no longer match its hash.
    Edited { seq: i64, id: i64 },
    /// Entries are missing before this one (its place is not the next).
    Removed { after_seq: i64, next_seq: i64 },
    /// An entry that does not follow the one before it: inserted, or a copy.
    Inserted { seq: i64, id: i64 },
    /// Entries whose places are not in the order they were written.
    Reordered { seq: i64, id: i64 },
    /// The chain ends before its recorded end: entries were cut off.
    Truncated { last_seq: i64, head_seq: i64 },
    /// An entry outside the chain (no place, no hash).
    Unchained { id: i64 },
    /// A checkpoint whose signature is wrong or whose entry no longer matches.
    Checkpoint { seq: i64 },
}

impl std::fmt::Display for ChainBreak {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ChainBreak::Edited { seq, id } => write!(f, "entry {seq} (id {id}) was edited: its hash does not match"),
            ChainBreak::Removed { after_seq, next_seq } => {
                write!(f, "entries {}..={} were removed", after_seq + 1, next_seq - 1)
            }
            ChainBreak::Inserted { seq, id } => {
                write!(f, "entry {seq} (id {id}) does not follow the entry before it: inserted or replaced")
            }
            ChainBreak::Reordered { seq, id } => write!(f, "entry {seq} (id {id}) is out of order"),
            ChainBreak::Truncated { last_seq, head_seq } => {
                write!(f, "the log ends at entry {last_seq} but the chain's end is {head_seq}: entries were cut off")
            }
            ChainBreak::Unchained { id } => write!(f, "entry id {id} is outside the chain: inserted"),
            ChainBreak::Checkpoint { seq } => write!(f, "the signed checkpoint at entry {seq} does not match"),
        }
    }
}

/// What [`Store::verify_audit`] found.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ChainReport {
    pub entries: u64,
    /// Checkpoints whose signature was checked.
    pub checkpoints: u64,
    /// The last entry a checkpoint vouches for, if any.
    pub signed_through: Option<i64>,
    /// The first breaks, in chain order (at most [`MAX_BREAKS`]).
    pub breaks: Vec<ChainBreak>,
}

impl ChainReport {
    pub fn intact(&self) -> bool {
        self.breaks.is_empty()
    }
}

/// Breaks reported at most; the first is the one that matters.
pub const MAX_BREAKS: usize = 100;

/// Entries read per query while verifying or exporting.
const PAGE: i64 = 1000;

/// A chained entry as stored.
#[derive(Clone, Debug, PartialEq, FromRow, Serialize)]
pub struct ChainedRecord {
    pub id: i64,
    pub seq: Option<i64>,
    pub at: i64,
    pub actor: String,
    pub action: String,
    pub outcome: String,
    pub ip: Option<String>,
    pub reason: Option<String>,
    pub detail: Option<String>,
    pub prev_hash: Option<String>,
    pub hash: Option<String>,
}

/// An event to record.
#[derive(Clone, Debug, PartialEq)]
pub struct AuditEntry {
    /// Who acted: `user:42`, `key:pal_ab12cd34`, `operator`, `anonymous`.
    pub actor: String,
    /// What happened, dotted: `auth.login`, `auth.register`, `key.create`.
    pub action: String,
    /// `ok`, `refused` or `failed`.
    pub outcome: String,
    /// The client address, when there was a client.
    pub ip: Option<String>,
    /// A stable reason code for refusals, e.g. `bad_password`.
    pub reason: Option<String>,
    /// Extra facts (no secrets, no personal data).
    pub detail: Option<Value>,
}

/// A recorded event.
#[derive(Clone, Debug, PartialEq, FromRow)]
pub struct AuditRecord {
    pub id: i64,
    pub at: i64,
    pub actor: String,
    pub action: String,
    pub outcome: String,
    pub ip: Option<String>,
    pub reason: Option<String>,
    pub detail: Option<String>,
}

impl Store {
    /// Append an event to the chain; returns once it is durable.
    pub async fn append_audit(&self, entry: &AuditEntry, at: i64) -> Result<i64, StoreError> {
        let detail = entry.detail.as_ref().map(Value::to_string);
        on_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            let id = append_chained!(
                tx, at, entry.actor.as_str(), entry.action.as_str(), entry.outcome.as_str(),
                entry.ip.as_deref(), entry.reason.as_deref(), detail.as_deref()
            );
            tx.commit().await?;
            Ok(id)
        })
    }

    /// Chain the entries written before the chain existed, in id order, once: only
    /// while the chain is empty, so an entry slipped in later stays outside it.
    pub(crate) async fn chain_legacy_audit(&self) -> Result<u64, StoreError> {
        const UNCHAINED: &str = "SELECT id, seq, at, actor, action, outcome, ip, reason, detail, prev_hash, hash \
                                 FROM audit_log WHERE seq IS NULL ORDER BY id LIMIT $1";
        const HEAD: &str = "SELECT seq FROM audit_head WHERE id = 1";
        const SEAL: &str = "UPDATE audit_log SET seq = $1, prev_hash = $2, hash = $3 WHERE id = $4";
        const SET_HEAD: &str = "UPDATE audit_head SET seq = $1, hash = $2 WHERE id = 1";
        on_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            let head: i64 = sqlx::query_scalar(HEAD).fetch_one(&mut *tx).await?;
            if head != 0 {
                return Ok(0);
            }
            let rows: Vec<ChainedRecord> = sqlx::query_as(UNCHAINED).bind(i64::MAX).fetch_all(&mut *tx).await?;
            let (mut seq, mut prev) = (0i64, GENESIS.to_owned());
            for r in &rows {
                seq += 1;
                let hash = r.fields(seq).hash(&prev);
                sqlx::query(SEAL).bind(seq).bind(&prev).bind(&hash).bind(r.id).execute(&mut *tx).await?;
                prev = hash;
            }
            if seq > 0 {
                sqlx::query(SET_HEAD).bind(seq).bind(&prev).execute(&mut *tx).await?;
            }
            tx.commit().await?;
            Ok(seq as u64)
        })
    }

    /// Sign the chain's end with `key` (which the database must not hold), unless
    /// nothing was appended since the last checkpoint. Returns the place signed.
    pub async fn checkpoint_audit(&self, key: &[u8; 32], at: i64) -> Result<Option<i64>, StoreError> {
        const HEAD: &str = "SELECT seq, hash FROM audit_head WHERE id = 1";
        const LAST: &str = "SELECT MAX(seq) FROM audit_checkpoints";
        const INSERT: &str = "INSERT INTO audit_checkpoints (seq, hash, at, signature) VALUES ($1, $2, $3, $4) \
                              ON CONFLICT (seq) DO NOTHING";
        on_pool!(self, pool => {
            let (seq, hash): (i64, String) = sqlx::query_as(HEAD).fetch_one(pool).await?;
            let last: Option<i64> = sqlx::query_scalar(LAST).fetch_one(pool).await?;
            if seq == 0 || last.is_some_and(|l| l >= seq) {
                return Ok(None);
            }
            sqlx::query(INSERT).bind(seq).bind(&hash).bind(at).bind(sign(key, seq, &hash)).execute(pool).await?;
            Ok(Some(seq))
        })
    }

    /// Walk the whole chain and report where it breaks. With `key`, check the
    /// signed checkpoints too.
    pub async fn verify_audit(&self, key: Option<&[u8; 32]>) -> Result<ChainReport, StoreError> {
        const UNCHAINED: &str = "SELECT id FROM audit_log WHERE seq IS NULL OR hash IS NULL ORDER BY id LIMIT 100";
        const HEAD: &str = "SELECT seq, hash FROM audit_head WHERE id = 1";
        const CHECKPOINTS: &str = "SELECT seq, hash, signature FROM audit_checkpoints ORDER BY seq";
        let mut report = ChainReport::default();
        let push = |report: &mut ChainReport, b: ChainBreak| {
            if report.breaks.len() < MAX_BREAKS {
                report.breaks.push(b);
            }
        };
        let (unchained, (head_seq, head_hash), checkpoints): (Vec<i64>, (i64, String), Vec<(i64, String, String)>) = on_pool!(self, pool => (
            sqlx::query_scalar(UNCHAINED).fetch_all(pool).await?,
            sqlx::query_as(HEAD).fetch_one(pool).await?,
            sqlx::query_as(CHECKPOINTS).fetch_all(pool).await?,
        ));
        for id in unchained {
            push(&mut report, ChainBreak::Unchained { id });
        }
        let mut signed = std::collections::HashMap::new();
        for (seq, hash, signature) in &checkpoints {
            match key {
                Some(key) if sign(key, *seq, hash) != *signature => {
                    push(&mut report, ChainBreak::Checkpoint { seq: *seq })
                }
                _ => {
                    signed.insert(*seq, hash.clone());
                }
            }
        }
        let (mut last_seq, mut last_id, mut prev) = (0i64, 0i64, GENESIS.to_owned());
        let mut cursor = (0i64, 0i64);
        loop {
            let page = self.chain_page(cursor, PAGE).await?;
            let Some(last) = page.last() else { break };
            cursor = (last.seq.unwrap_or_default(), last.id);
            for r in &page {
                let seq = r.seq.unwrap_or_default();
                report.entries += 1;
                if seq == last_seq {
                    push(&mut report, ChainBreak::Inserted { seq, id: r.id });
                    continue;
                }
                if seq > last_seq + 1 {
                    push(&mut report, ChainBreak::Removed { after_seq: last_seq, next_seq: seq });
                } else if r.id < last_id {
                    push(&mut report, ChainBreak::Reordered { seq, id: r.id });
                }
                let stored = r.hash.as_deref().unwrap_or("");
                if r.fields(seq).hash(r.prev_hash.as_deref().unwrap_or("")) != stored {
                    push(&mut report, ChainBreak::Edited { seq, id: r.id });
                } else if r.prev_hash.as_deref() != Some(prev.as_str()) && seq == last_seq + 1 {
                    push(&mut report, ChainBreak::Inserted { seq, id: r.id });
                }
                if let Some(hash) = signed.get(&seq) {
                    if hash != stored {
                        push(&mut report, ChainBreak::Checkpoint { seq });
                    } else if key.is_some() {
                        report.checkpoints += 1;
                        report.signed_through = Some(seq);
                    }
                }
                (last_seq, last_id, prev) = (seq, r.id, stored.to_owned());
            }
            if page.len() < PAGE as usize {
                break;
            }
        }
        if last_seq < head_seq || (last_seq == head_seq && head_seq > 0 && prev != head_hash) {
            push(&mut report, ChainBreak::Truncated { last_seq, head_seq });
        }
        if let Some(&top) = signed.keys().max() {
            if top > last_seq {
                push(&mut report, ChainBreak::Truncated { last_seq, head_seq: top });
            }
        }
        Ok(report)
    }

    /// The most recent events, newest first, optionally only one action prefix.
    pub async fn recent_audit(&self, limit: i64, action_prefix: Option<&str>) -> Result<Vec<AuditRecord>, StoreError> {
        const SQL: &str = "SELECT id, at, actor, action, outcome, ip, reason, detail FROM audit_log \
                           WHERE ($1 IS NULL OR action LIKE $1 || '%') ORDER BY id DESC LIMIT $2";
        Ok(on_pool!(self, pool => sqlx::query_as(SQL).bind(action_prefix).bind(limit).fetch_all(pool).await?))
    }

    /// Chained entries after `after` (a place and an id), in chain order, ties by id.
    pub async fn chain_page(&self, after: (i64, i64), limit: i64) -> Result<Vec<ChainedRecord>, StoreError> {
        const SQL: &str = "SELECT id, seq, at, actor, action, outcome, ip, reason, detail, prev_hash, hash \
                           FROM audit_log WHERE seq > $1 OR (seq = $1 AND id > $2) ORDER BY seq, id LIMIT $3";
        Ok(on_pool!(self, pool => sqlx::query_as(SQL).bind(after.0).bind(after.1).bind(limit).fetch_all(pool).await?))
    }
}

impl ChainedRecord {
    fn fields(&self, seq: i64) -> Fields<'_> {
        Fields {
            seq,
            at: self.at,
            actor: &self.actor,
            action: &self.action,
            outcome: &self.outcome,
            ip: self.ip.as_deref(),
            reason: self.reason.as_deref(),
            detail: self.detail.as_deref(),
        }
    }
}
