//! The audit log: an append-only record of security events (registrations,
//! logins, MFA, keys, policy changes). Entries never hold secrets or plain
//! personal data; the actor is a user id, a key prefix or `operator`.

use serde_json::Value;
use sqlx::FromRow;

use crate::pool::{Store, StoreError, on_pool};

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
    /// Append an event; returns once it is durable.
    pub async fn append_audit(&self, entry: &AuditEntry, at: i64) -> Result<i64, StoreError> {
        const SQL: &str = "INSERT INTO audit_log (at, actor, action, outcome, ip, reason, detail) \
                           VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id";
        let detail = entry.detail.as_ref().map(Value::to_string);
        Ok(on_pool!(self, pool => sqlx::query_scalar(SQL)
            .bind(at).bind(&entry.actor).bind(&entry.action).bind(&entry.outcome)
            .bind(&entry.ip).bind(&entry.reason).bind(&detail)
            .fetch_one(pool).await?))
    }

    /// The most recent events, newest first, optionally only one action prefix.
    pub async fn recent_audit(&self, limit: i64, action_prefix: Option<&str>) -> Result<Vec<AuditRecord>, StoreError> {
        const SQL: &str = "SELECT id, at, actor, action, outcome, ip, reason, detail FROM audit_log \
                           WHERE ($1 IS NULL OR action LIKE $1 || '%') ORDER BY id DESC LIMIT $2";
        Ok(on_pool!(self, pool => sqlx::query_as(SQL).bind(action_prefix).bind(limit).fetch_all(pool).await?))
    }
}
