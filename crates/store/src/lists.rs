//! The operator's block and allow list entries, durable: a restarted node (or a fleet
//! whose Redis came back empty) reloads them. Kinds and CIDRs are stored as the caller
//! writes them (`block` / `allow`, canonical CIDR text); times are Unix milliseconds.
//! And leases: work one node of a fleet does for all.

use sqlx::FromRow;

use crate::pool::{Store, StoreError, on_pool};

/// Most entries read back: a list is for networks an operator names, not for every
/// address an attack used (the limits bound those).
pub const MAX_LIST_RULES: i64 = 100_000;

/// One entry.
#[derive(Clone, Debug, PartialEq, Eq, FromRow)]
pub struct ListRuleRow {
    pub kind: String,
    pub cidr: String,
    /// `None`: permanent.
    pub expires_at: Option<i64>,
    pub note: String,
}

impl Store {
    /// Adds or replaces the entry for (`kind`, `cidr`).
    pub async fn put_list_rule(&self, rule: &ListRuleRow, at: i64) -> Result<(), StoreError> {
        const SQL: &str = "INSERT INTO list_rules (kind, cidr, expires_at, note, set_at) VALUES ($1, $2, $3, $4, $5) \
                           ON CONFLICT (kind, cidr) DO UPDATE SET expires_at = excluded.expires_at, \
                           note = excluded.note, set_at = excluded.set_at";
        on_pool!(self, pool => {
            sqlx::query(SQL)
                .bind(&rule.kind)
                .bind(&rule.cidr)
                .bind(rule.expires_at)
                .bind(&rule.note)
                .bind(at)
                .execute(pool)
                .await?;
        });
        Ok(())
    }

    /// Removes the entry; `false` when there was none.
    pub async fn delete_list_rule(&self, kind: &str, cidr: &str) -> Result<bool, StoreError> {
        const SQL: &str = "DELETE FROM list_rules WHERE kind = $1 AND cidr = $2";
        let done = on_pool!(self, pool => sqlx::query(SQL).bind(kind).bind(cidr).execute(pool).await?.rows_affected());
        Ok(done > 0)
    }

    /// Every entry still in force at `now`, oldest first; expired ones are deleted.
    pub async fn list_rules(&self, now: i64) -> Result<Vec<ListRuleRow>, StoreError> {
        const PURGE: &str = "DELETE FROM list_rules WHERE expires_at IS NOT NULL AND expires_at <= $1";
        const SQL: &str = "SELECT kind, cidr, expires_at, note FROM list_rules ORDER BY set_at, kind, cidr LIMIT $1";
        on_pool!(self, pool => {
            sqlx::query(PURGE).bind(now).execute(pool).await?;
            Ok(sqlx::query_as(SQL).bind(MAX_LIST_RULES).fetch_all(pool).await?)
        })
    }
}

impl Store {
    /// Takes or renews the lease `name` for `holder` until `now + ttl_ms`: `true` when
    /// `holder` has it now (it held it, or the last holder let it lapse). One statement,
    /// so two nodes claiming at once cannot both win.
    pub async fn claim_lease(&self, name: &str, holder: &str, now: i64, ttl_ms: i64) -> Result<bool, StoreError> {
        const SQL: &str = "INSERT INTO leases (name, holder, expires_at) VALUES ($1, $2, $3) \
                           ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at \
                           WHERE leases.holder = excluded.holder OR leases.expires_at <= $4";
        let until = now.saturating_add(ttl_ms);
        let done = on_pool!(self, pool => {
            sqlx::query(SQL).bind(name).bind(holder).bind(until).bind(now).execute(pool).await?.rows_affected()
        });
        Ok(done > 0)
    }
}
