//! Users, sessions, API keys, verification codes, recovery codes and invites.
//!
//! The store never sees plain personal data or secrets: callers pass AEAD
//! blobs (`*_enc`), blind indexes (`*_idx`) and hashes. Times are Unix
//! milliseconds.

use sqlx::FromRow;

use crate::audit::AuditEntry;
use crate::pool::{Store, StoreError, conflict, on_pool};

/// Where an account stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UserStatus {
    /// Registered; phone or e-mail ownership not yet proven.
    Unverified,
    Active,
    Suspended,
}

impl UserStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            UserStatus::Unverified => "unverified",
            UserStatus::Active => "active",
            UserStatus::Suspended => "suspended",
        }
    }

    pub fn parse(s: &str) -> Option<UserStatus> {
        match s {
            "unverified" => Some(UserStatus::Unverified),
            "active" => Some(UserStatus::Active),
            "suspended" => Some(UserStatus::Suspended),
            _ => None,
        }
    }
}

/// A user to create. An unverified user's `*_idx` are a claim, not a hold: they are
/// stored as pending and move to the unique index when the account is verified.
#[derive(Clone, Debug)]
pub struct NewUser {
    pub phone_enc: Option<Vec<u8>>,
    pub phone_idx: Option<Vec<u8>>,
    /// ISO 3166 region of the phone number (not personal on its own).
    pub phone_region: Option<String>,
    pub email_enc: Option<Vec<u8>>,
    pub email_idx: Option<Vec<u8>>,
    pub password_hash: String,
    pub status: UserStatus,
}

#[derive(Clone, Debug, FromRow)]
pub struct UserRow {
    pub id: i64,
    pub phone_enc: Option<Vec<u8>>,
    pub phone_region: Option<String>,
    pub email_enc: Option<Vec<u8>>,
    pub password_hash: String,
    status: String,
    pub mfa_required: bool,
    pub totp_secret_enc: Option<Vec<u8>>,
    pub totp_last_step: Option<i64>,
    pub created_at: i64,
    pub verified_at: Option<i64>,
    /// When the account was first used for inference, if ever.
    pub first_used_at: Option<i64>,
    /// Distinct days (UTC) with use.
    pub used_days: i64,
    /// The operator's pin of its trust tier, as the tier's name.
    pub tier_pin: Option<String>,
    /// When it was flagged as part of a cohort, if it was.
    pub flagged_at: Option<i64>,
    /// Why it was flagged (a short code, never personal data).
    pub flag_reason: Option<String>,
}

impl UserRow {
    pub fn status(&self) -> UserStatus {
        // An unknown value (a newer release wrote it) is treated as the safest.
        UserStatus::parse(&self.status).unwrap_or(UserStatus::Suspended)
    }
}

/// `SELECT <user columns> FROM users <tail>`, as a literal (sqlx wants audited SQL).
macro_rules! select_users {
    ($tail:literal) => {
        concat!(
            "SELECT id, phone_enc, phone_region, email_enc, password_hash, status, mfa_required, ",
            "totp_secret_enc, totp_last_step, created_at, verified_at, first_used_at, used_days, tier_pin, ",
            "flagged_at, flag_reason FROM users ",
            $tail
        )
    };
}

/// Where a new user's identifiers go: held (unique) when it is verified at once, a
/// pending claim otherwise.
type Pair<'a> = (Option<&'a Vec<u8>>, Option<&'a Vec<u8>>);

fn claims(user: &NewUser) -> (Pair<'_>, Pair<'_>) {
    let ids = (user.phone_idx.as_ref(), user.email_idx.as_ref());
    if user.status == UserStatus::Unverified { ((None, None), ids) } else { (ids, (None, None)) }
}

#[derive(Clone, Debug, FromRow)]
pub struct SessionRow {
    pub token_hash: Vec<u8>,
    pub user_id: i64,
    pub created_at: i64,
    pub expires_at: i64,
    pub last_seen_at: i64,
}

/// An API key to create; only the hash of its secret is stored.
#[derive(Clone, Debug)]
pub struct NewApiKey {
    pub user_id: i64,
    pub prefix: String,
    pub secret_hash: Vec<u8>,
    pub name: String,
    /// Space-separated scopes, e.g. `inference`.
    pub scopes: String,
    /// Requests per minute allowed to this key; `None` uses the default.
    pub rpm_limit: Option<i64>,
}

#[derive(Clone, Debug, FromRow)]
pub struct ApiKeyRow {
    pub id: i64,
    pub user_id: i64,
    pub prefix: String,
    pub secret_hash: Vec<u8>,
    pub name: String,
    pub scopes: String,
    pub rpm_limit: Option<i64>,
    pub created_at: i64,
    pub revoked_at: Option<i64>,
    pub last_used_at: Option<i64>,
}

/// `SELECT <key columns> FROM api_keys <tail>`, as a literal.
macro_rules! select_keys {
    ($tail:literal) => {
        concat!(
            "SELECT id, user_id, prefix, secret_hash, name, scopes, rpm_limit, created_at, revoked_at, last_used_at ",
            "FROM api_keys ",
            $tail
        )
    };
}

/// What a one-time code is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CodePurpose {
    /// Proving the phone or e-mail address of a new account.
    Verify,
    /// Resetting a verified account's password.
    Reset,
}

impl CodePurpose {
    fn as_str(self) -> &'static str {
        match self {
            CodePurpose::Verify => "verify",
            CodePurpose::Reset => "reset",
        }
    }
}

/// A one-time code to store: its keyed hash, its expiry, and the window its guess
/// budget lasts (a resend inside the window keeps the guesses already spent).
#[derive(Clone, Copy, Debug)]
pub struct NewCode<'a> {
    pub purpose: CodePurpose,
    pub hash: &'a [u8],
    pub expires_at: i64,
    pub window_ms: i64,
}

/// A sign-up, recorded all or nothing: the account, its first code and its audit
/// entry (whose actor becomes `user:<id>`).
pub struct NewRegistration<'a> {
    pub user: &'a NewUser,
    /// The code's keyed hash, which may depend on the new account's id.
    pub code_hash: &'a (dyn Fn(i64) -> Vec<u8> + Send + Sync),
    pub code_expires_at: i64,
    pub audit: &'a AuditEntry,
}

/// Which blind index a lookup uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Identifier<'a> {
    Phone(&'a [u8]),
    Email(&'a [u8]),
}

impl Store {
    /// Create a user (for accounts made by the operator; sign-ups go through
    /// [`Store::register`]). A verified user holds its identifiers: a second one with
    /// the same phone or e-mail gets [`StoreError::Conflict`].
    pub async fn create_user(&self, user: &NewUser, now: i64) -> Result<i64, StoreError> {
        const SQL: &str = "INSERT INTO users (phone_enc, phone_idx, pending_phone_idx, phone_region, email_enc, \
                           email_idx, pending_email_idx, password_hash, status, created_at) \
                           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) RETURNING id";
        let (held, pending) = claims(user);
        on_pool!(self, pool => sqlx::query_scalar(SQL)
            .bind(&user.phone_enc)
            .bind(held.0)
            .bind(pending.0)
            .bind(&user.phone_region)
            .bind(&user.email_enc)
            .bind(held.1)
            .bind(pending.1)
            .bind(&user.password_hash)
            .bind(user.status.as_str())
            .bind(now)
            .fetch_one(pool)
            .await
            .map_err(conflict("account")))
    }

    /// Record a sign-up in one transaction: the account, its first code and its audit
    /// entry exist together or not at all, whatever happens to the process.
    pub async fn register(&self, r: &NewRegistration<'_>, now: i64) -> Result<i64, StoreError> {
        const USER: &str = "INSERT INTO users (phone_enc, phone_idx, pending_phone_idx, phone_region, email_enc, \
                            email_idx, pending_email_idx, password_hash, status, created_at) \
                            VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) RETURNING id";
        const CODE: &str = "INSERT INTO verification_codes (user_id, code_hash, expires_at, attempts, purpose, \
                            window_started_at) VALUES ($1, $2, $3, 0, $4, $5)";
        let user = r.user;
        let (held, pending) = claims(user);
        let detail = r.audit.detail.as_ref().map(serde_json::Value::to_string);
        on_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            let id: i64 = sqlx::query_scalar(USER)
                .bind(&user.phone_enc).bind(held.0).bind(pending.0).bind(&user.phone_region)
                .bind(&user.email_enc).bind(held.1).bind(pending.1).bind(&user.password_hash)
                .bind(user.status.as_str()).bind(now)
                .fetch_one(&mut *tx).await.map_err(conflict("account"))?;
            sqlx::query(CODE).bind(id).bind((r.code_hash)(id)).bind(r.code_expires_at)
                .bind(CodePurpose::Verify.as_str()).bind(now)
                .execute(&mut *tx).await?;
            let actor = format!("user:{id}");
            crate::audit::append_chained!(
                tx, now, actor.as_str(), r.audit.action.as_str(), r.audit.outcome.as_str(),
                r.audit.ip.as_deref(), r.audit.reason.as_deref(), detail.as_deref()
            );
            tx.commit().await?;
            Ok(id)
        })
    }

    /// The verified account holding `id`, else the newest unverified claim on it made
    /// after `claims_since`.
    pub async fn user_by_identifier(
        &self,
        id: Identifier<'_>,
        claims_since: i64,
    ) -> Result<Option<UserRow>, StoreError> {
        if let Some(user) = self.holder_of(id).await? {
            return Ok(Some(user));
        }
        const BY_PHONE: &str = select_users!(
            "WHERE pending_phone_idx = $1 AND status = 'unverified' AND created_at > $2 ORDER BY created_at DESC, id DESC LIMIT 1"
        );
        const BY_EMAIL: &str = select_users!(
            "WHERE pending_email_idx = $1 AND status = 'unverified' AND created_at > $2 ORDER BY created_at DESC, id DESC LIMIT 1"
        );
        let (sql, idx) = match id {
            Identifier::Phone(idx) => (BY_PHONE, idx),
            Identifier::Email(idx) => (BY_EMAIL, idx),
        };
        Ok(on_pool!(self, pool => sqlx::query_as(sql).bind(idx).bind(claims_since).fetch_optional(pool).await?))
    }

    /// The verified account holding `id`, if any.
    pub async fn holder_of(&self, id: Identifier<'_>) -> Result<Option<UserRow>, StoreError> {
        match id {
            Identifier::Phone(idx) => self.user_by_phone_idx(idx).await,
            Identifier::Email(idx) => self.user_by_email_idx(idx).await,
        }
    }

    /// Mark an unverified account verified: its claims become holds, and every other
    /// unverified claim on the same phone or e-mail is dropped (the first to verify
    /// gets it). [`StoreError::Conflict`] when a verified account already holds one.
    pub async fn verify_user(&self, id: i64, now: i64) -> Result<(), StoreError> {
        const HOLD: &str = "UPDATE users SET phone_idx = pending_phone_idx, email_idx = pending_email_idx, \
                            pending_phone_idx = NULL, pending_email_idx = NULL, status = 'active', verified_at = $1 \
                            WHERE id = $2 AND status = 'unverified' RETURNING phone_idx, email_idx";
        const DROP_PHONE: &str =
            "DELETE FROM users WHERE pending_phone_idx = $1 AND status = 'unverified' AND id <> $2";
        const DROP_EMAIL: &str =
            "DELETE FROM users WHERE pending_email_idx = $1 AND status = 'unverified' AND id <> $2";
        on_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            let held: Option<(Option<Vec<u8>>, Option<Vec<u8>>)> = sqlx::query_as(HOLD).bind(now).bind(id)
                .fetch_optional(&mut *tx).await.map_err(conflict("account"))?;
            let Some((phone, email)) = held else { return Err(StoreError::NotFound("unverified account")) };
            if let Some(phone) = phone {
                sqlx::query(DROP_PHONE).bind(phone).bind(id).execute(&mut *tx).await?;
            }
            if let Some(email) = email {
                sqlx::query(DROP_EMAIL).bind(email).bind(id).execute(&mut *tx).await?;
            }
            sqlx::query("DELETE FROM verification_codes WHERE user_id = $1").bind(id).execute(&mut *tx).await?;
            tx.commit().await?;
            Ok(())
        })
    }

    pub async fn user(&self, id: i64) -> Result<Option<UserRow>, StoreError> {
        const SQL: &str = select_users!("WHERE id = $1");
        Ok(on_pool!(self, pool => sqlx::query_as(SQL).bind(id).fetch_optional(pool).await?))
    }

    pub async fn user_by_phone_idx(&self, idx: &[u8]) -> Result<Option<UserRow>, StoreError> {
        const SQL: &str = select_users!("WHERE phone_idx = $1");
        Ok(on_pool!(self, pool => sqlx::query_as(SQL).bind(idx).fetch_optional(pool).await?))
    }

    pub async fn user_by_email_idx(&self, idx: &[u8]) -> Result<Option<UserRow>, StoreError> {
        const SQL: &str = select_users!("WHERE email_idx = $1");
        Ok(on_pool!(self, pool => sqlx::query_as(SQL).bind(idx).fetch_optional(pool).await?))
    }

    pub async fn set_user_status(&self, id: i64, status: UserStatus, now: i64) -> Result<bool, StoreError> {
        const SQL: &str = "UPDATE users SET status = $1, \
                           verified_at = CASE WHEN $1 = 'active' AND verified_at IS NULL THEN $2 ELSE verified_at END \
                           WHERE id = $3";
        let done = on_pool!(self, pool => sqlx::query(SQL).bind(status.as_str()).bind(now).bind(id).execute(pool).await?.rows_affected());
        Ok(done == 1)
    }

    pub async fn set_password_hash(&self, id: i64, hash: &str) -> Result<(), StoreError> {
        on_pool!(self, pool => sqlx::query("UPDATE users SET password_hash = $1 WHERE id = $2").bind(hash).bind(id).execute(pool).await.map(|_| ())?);
        Ok(())
    }

    /// Set or clear the (encrypted) TOTP secret; clearing also resets replay state.
    pub async fn set_totp(&self, id: i64, secret_enc: Option<&[u8]>) -> Result<(), StoreError> {
        const SQL: &str = "UPDATE users SET totp_secret_enc = $1, totp_last_step = NULL WHERE id = $2";
        on_pool!(self, pool => sqlx::query(SQL).bind(secret_enc).bind(id).execute(pool).await.map(|_| ())?);
        Ok(())
    }

    pub async fn set_mfa_required(&self, id: i64, required: bool) -> Result<(), StoreError> {
        on_pool!(self, pool => sqlx::query("UPDATE users SET mfa_required = $1 WHERE id = $2").bind(required).bind(id).execute(pool).await.map(|_| ())?);
        Ok(())
    }

    /// Record that TOTP step `step` was used, only if it is newer than the last
    /// one. False means a replay (or a race with a concurrent login).
    pub async fn advance_totp_step(&self, id: i64, step: i64) -> Result<bool, StoreError> {
        const SQL: &str =
            "UPDATE users SET totp_last_step = $1 WHERE id = $2 AND (totp_last_step IS NULL OR totp_last_step < $1)";
        let n = on_pool!(self, pool => sqlx::query(SQL).bind(step).bind(id).execute(pool).await?.rows_affected());
        Ok(n == 1)
    }

    /// Replace the user's encrypted personal fields (key rotation).
    pub async fn reencrypt_user(
        &self,
        id: i64,
        phone_enc: Option<&[u8]>,
        email_enc: Option<&[u8]>,
        totp_secret_enc: Option<&[u8]>,
    ) -> Result<(), StoreError> {
        const SQL: &str = "UPDATE users SET phone_enc = $1, email_enc = $2, totp_secret_enc = $3 WHERE id = $4";
        on_pool!(self, pool => sqlx::query(SQL).bind(phone_enc).bind(email_enc).bind(totp_secret_enc).bind(id).execute(pool).await.map(|_| ())?);
        Ok(())
    }

    /// Users with id greater than `after`, in id order, for batch jobs.
    /// Counts a day of use of account `id` at `now`, once per UTC day: `true` when this call
    /// counted it. The first use is remembered as well.
    pub async fn record_use(&self, id: i64, now: i64) -> Result<bool, StoreError> {
        const SQL: &str = "UPDATE users SET used_days = used_days + 1, last_used_day = $1, \
                           first_used_at = COALESCE(first_used_at, $2) \
                           WHERE id = $3 AND (last_used_day IS NULL OR last_used_day < $1)";
        let day = now.div_euclid(86_400_000);
        let n =
            on_pool!(self, pool => sqlx::query(SQL).bind(day).bind(now).bind(id).execute(pool).await?.rows_affected());
        Ok(n == 1)
    }

    /// Pins account `id` to a trust tier (by name), or lifts the pin with `None`; `false`
    /// when there is no such account.
    pub async fn set_tier_pin(&self, id: i64, tier: Option<&str>) -> Result<bool, StoreError> {
        const SQL: &str = "UPDATE users SET tier_pin = $1 WHERE id = $2";
        let n = on_pool!(self, pool => sqlx::query(SQL).bind(tier).bind(id).execute(pool).await?.rows_affected());
        Ok(n == 1)
    }

    /// Flags the accounts `ids` as one cohort with `reason`; accounts already flagged keep
    /// their first flag. Returns how many were newly flagged.
    pub async fn flag_users(&self, ids: &[i64], reason: &str, now: i64) -> Result<u64, StoreError> {
        const SQL: &str = "UPDATE users SET flagged_at = $1, flag_reason = $2 WHERE id = $3 AND flagged_at IS NULL";
        let mut flagged = 0;
        on_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            for id in ids {
                flagged += sqlx::query(SQL).bind(now).bind(reason).bind(id).execute(&mut *tx).await?.rows_affected();
            }
            tx.commit().await?;
        });
        Ok(flagged)
    }

    /// Clears account `id`'s cohort flag; `false` when it had none.
    pub async fn clear_flag(&self, id: i64) -> Result<bool, StoreError> {
        const SQL: &str =
            "UPDATE users SET flagged_at = NULL, flag_reason = NULL WHERE id = $1 AND flagged_at IS NOT NULL";
        let n = on_pool!(self, pool => sqlx::query(SQL).bind(id).execute(pool).await?.rows_affected());
        Ok(n == 1)
    }

    /// Flagged accounts, newest flag first, at most `limit`.
    pub async fn flagged_users(&self, limit: i64) -> Result<Vec<UserRow>, StoreError> {
        const SQL: &str = select_users!("WHERE flagged_at IS NOT NULL ORDER BY flagged_at DESC, id DESC LIMIT $1");
        Ok(on_pool!(self, pool => sqlx::query_as(SQL).bind(limit).fetch_all(pool).await?))
    }

    pub async fn users_after(&self, after: i64, limit: i64) -> Result<Vec<UserRow>, StoreError> {
        const SQL: &str = select_users!("WHERE id > $1 ORDER BY id LIMIT $2");
        Ok(on_pool!(self, pool => sqlx::query_as(SQL).bind(after).bind(limit).fetch_all(pool).await?))
    }

    /// Replace all of a user's recovery codes with new hashes.
    pub async fn replace_recovery_codes(&self, user_id: i64, hashes: &[Vec<u8>]) -> Result<(), StoreError> {
        on_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            sqlx::query("DELETE FROM recovery_codes WHERE user_id = $1").bind(user_id).execute(&mut *tx).await?;
            for hash in hashes {
                sqlx::query("INSERT INTO recovery_codes (user_id, code_hash) VALUES ($1, $2)")
                    .bind(user_id).bind(hash).execute(&mut *tx).await?;
            }
            tx.commit().await?;
        });
        Ok(())
    }

    /// Spend a recovery code: true exactly once per code.
    pub async fn use_recovery_code(&self, user_id: i64, hash: &[u8], now: i64) -> Result<bool, StoreError> {
        const SQL: &str =
            "UPDATE recovery_codes SET used_at = $1 WHERE user_id = $2 AND code_hash = $3 AND used_at IS NULL";
        let n = on_pool!(self, pool => sqlx::query(SQL).bind(now).bind(user_id).bind(hash).execute(pool).await?.rows_affected());
        Ok(n == 1)
    }

    pub async fn unused_recovery_codes(&self, user_id: i64) -> Result<i64, StoreError> {
        const SQL: &str = "SELECT COUNT(*) FROM recovery_codes WHERE user_id = $1 AND used_at IS NULL";
        Ok(on_pool!(self, pool => sqlx::query_scalar(SQL).bind(user_id).fetch_one(pool).await?))
    }

    pub async fn create_session(
        &self,
        token_hash: &[u8],
        user_id: i64,
        now: i64,
        expires_at: i64,
    ) -> Result<(), StoreError> {
        const SQL: &str = "INSERT INTO sessions (token_hash, user_id, created_at, expires_at, last_seen_at) VALUES ($1, $2, $3, $4, $3)";
        on_pool!(self, pool => sqlx::query(SQL).bind(token_hash).bind(user_id).bind(now).bind(expires_at).execute(pool).await.map(|_| ())?);
        Ok(())
    }

    /// A session that has not expired at `now`.
    pub async fn session(&self, token_hash: &[u8], now: i64) -> Result<Option<SessionRow>, StoreError> {
        const SQL: &str = "SELECT token_hash, user_id, created_at, expires_at, last_seen_at FROM sessions \
                           WHERE token_hash = $1 AND expires_at > $2";
        Ok(on_pool!(self, pool => sqlx::query_as(SQL).bind(token_hash).bind(now).fetch_optional(pool).await?))
    }

    pub async fn sessions_of(&self, user_id: i64, now: i64) -> Result<Vec<SessionRow>, StoreError> {
        const SQL: &str = "SELECT token_hash, user_id, created_at, expires_at, last_seen_at FROM sessions \
                           WHERE user_id = $1 AND expires_at > $2 ORDER BY created_at";
        Ok(on_pool!(self, pool => sqlx::query_as(SQL).bind(user_id).bind(now).fetch_all(pool).await?))
    }

    /// Delete one session of `user_id`; false when there was none.
    pub async fn delete_session(&self, user_id: i64, token_hash: &[u8]) -> Result<bool, StoreError> {
        const SQL: &str = "DELETE FROM sessions WHERE user_id = $1 AND token_hash = $2";
        let n = on_pool!(self, pool => sqlx::query(SQL).bind(user_id).bind(token_hash).execute(pool).await?.rows_affected());
        Ok(n == 1)
    }

    pub async fn delete_sessions_of(&self, user_id: i64) -> Result<u64, StoreError> {
        Ok(
            on_pool!(self, pool => sqlx::query("DELETE FROM sessions WHERE user_id = $1").bind(user_id).execute(pool).await?.rows_affected()),
        )
    }

    pub async fn create_api_key(&self, key: &NewApiKey, now: i64) -> Result<i64, StoreError> {
        const SQL: &str = "INSERT INTO api_keys (user_id, prefix, secret_hash, name, scopes, rpm_limit, created_at) \
                           VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id";
        on_pool!(self, pool => sqlx::query_scalar(SQL)
            .bind(key.user_id).bind(&key.prefix).bind(&key.secret_hash).bind(&key.name)
            .bind(&key.scopes).bind(key.rpm_limit).bind(now)
            .fetch_one(pool).await.map_err(conflict("api key prefix")))
    }

    pub async fn api_key_by_prefix(&self, prefix: &str) -> Result<Option<ApiKeyRow>, StoreError> {
        const SQL: &str = select_keys!("WHERE prefix = $1");
        Ok(on_pool!(self, pool => sqlx::query_as(SQL).bind(prefix).fetch_optional(pool).await?))
    }

    pub async fn api_keys_of(&self, user_id: i64) -> Result<Vec<ApiKeyRow>, StoreError> {
        const SQL: &str = select_keys!("WHERE user_id = $1 ORDER BY id");
        Ok(on_pool!(self, pool => sqlx::query_as(SQL).bind(user_id).fetch_all(pool).await?))
    }

    /// Every key, for the operator's CLI.
    pub async fn all_api_keys(&self) -> Result<Vec<ApiKeyRow>, StoreError> {
        const SQL: &str = select_keys!("ORDER BY id");
        Ok(on_pool!(self, pool => sqlx::query_as(SQL).fetch_all(pool).await?))
    }

    /// Revoke a key by prefix (of `user_id`, or of anyone when `None`); false if
    /// there was no such live key.
    pub async fn revoke_api_key(&self, prefix: &str, user_id: Option<i64>, now: i64) -> Result<bool, StoreError> {
        const SQL: &str = "UPDATE api_keys SET revoked_at = $1 WHERE prefix = $2 AND revoked_at IS NULL \
                           AND ($3 IS NULL OR user_id = $3)";
        let n = on_pool!(self, pool => sqlx::query(SQL).bind(now).bind(prefix).bind(user_id).execute(pool).await?.rows_affected());
        Ok(n == 1)
    }

    pub async fn touch_api_key(&self, id: i64, now: i64) -> Result<(), StoreError> {
        on_pool!(self, pool => sqlx::query("UPDATE api_keys SET last_used_at = $1 WHERE id = $2").bind(now).bind(id).execute(pool).await.map(|_| ())?);
        Ok(())
    }

    /// Store a fresh code for `user_id`, replacing any earlier one. Within the guess
    /// window of the earlier code (of the same purpose) its spent guesses carry over,
    /// so sending again never buys more guesses.
    pub async fn put_verification_code(&self, user_id: i64, code: NewCode<'_>, now: i64) -> Result<(), StoreError> {
        const SQL: &str = "INSERT INTO verification_codes (user_id, code_hash, expires_at, attempts, purpose, window_started_at) \
                           VALUES ($1, $2, $3, 0, $4, $5) \
                           ON CONFLICT (user_id) DO UPDATE SET code_hash = excluded.code_hash, \
                           expires_at = excluded.expires_at, \
                           attempts = CASE WHEN verification_codes.purpose = excluded.purpose \
                               AND verification_codes.window_started_at > $5 - $6 THEN verification_codes.attempts ELSE 0 END, \
                           window_started_at = CASE WHEN verification_codes.purpose = excluded.purpose \
                               AND verification_codes.window_started_at > $5 - $6 THEN verification_codes.window_started_at ELSE $5 END, \
                           purpose = excluded.purpose";
        on_pool!(self, pool => sqlx::query(SQL).bind(user_id).bind(code.hash).bind(code.expires_at)
            .bind(code.purpose.as_str()).bind(now).bind(code.window_ms).execute(pool).await.map(|_| ())?);
        Ok(())
    }

    /// Count one attempt against the user's live code of `purpose` and return its hash
    /// and the attempts so far (this one included); `None` when there is no live code.
    pub async fn attempt_verification_code(
        &self,
        user_id: i64,
        purpose: CodePurpose,
        now: i64,
    ) -> Result<Option<(Vec<u8>, i64)>, StoreError> {
        const SQL: &str = "UPDATE verification_codes SET attempts = attempts + 1 \
                           WHERE user_id = $1 AND purpose = $2 AND expires_at > $3 RETURNING code_hash, attempts";
        Ok(
            on_pool!(self, pool => sqlx::query_as(SQL).bind(user_id).bind(purpose.as_str()).bind(now).fetch_optional(pool).await?),
        )
    }

    /// End every session of `user_id` but `keep` (the one making the change, if any).
    pub async fn delete_sessions_except(&self, user_id: i64, keep: Option<&[u8]>) -> Result<u64, StoreError> {
        const SQL: &str = "DELETE FROM sessions WHERE user_id = $1 AND ($2 IS NULL OR token_hash <> $2)";
        Ok(on_pool!(self, pool => sqlx::query(SQL).bind(user_id).bind(keep).execute(pool).await?.rows_affected()))
    }

    pub async fn delete_verification_code(&self, user_id: i64) -> Result<(), StoreError> {
        on_pool!(self, pool => sqlx::query("DELETE FROM verification_codes WHERE user_id = $1").bind(user_id).execute(pool).await.map(|_| ())?);
        Ok(())
    }

    pub async fn create_invite(&self, code_hash: &[u8], now: i64, expires_at: i64) -> Result<(), StoreError> {
        const SQL: &str = "INSERT INTO invites (code_hash, created_at, expires_at) VALUES ($1, $2, $3)";
        on_pool!(self, pool => sqlx::query(SQL).bind(code_hash).bind(now).bind(expires_at).execute(pool).await.map(|_| ()).map_err(conflict("invite"))?);
        Ok(())
    }

    /// Spend a live invite: true exactly once per invite. Done before the
    /// account is created, so two sign-ups cannot share one invite.
    pub async fn use_invite(&self, code_hash: &[u8], now: i64) -> Result<bool, StoreError> {
        const SQL: &str =
            "UPDATE invites SET used_at = $1 WHERE code_hash = $2 AND used_at IS NULL AND expires_at > $1";
        let n = on_pool!(self, pool => sqlx::query(SQL).bind(now).bind(code_hash).execute(pool).await?.rows_affected());
        Ok(n == 1)
    }

    /// Record which account a spent invite created.
    pub async fn attach_invite(&self, code_hash: &[u8], user_id: i64) -> Result<(), StoreError> {
        const SQL: &str = "UPDATE invites SET used_by = $1 WHERE code_hash = $2";
        on_pool!(self, pool => sqlx::query(SQL).bind(user_id).bind(code_hash).execute(pool).await.map(|_| ())?);
        Ok(())
    }

    /// Give back an invite spent by a sign-up that then failed.
    pub async fn release_invite(&self, code_hash: &[u8]) -> Result<(), StoreError> {
        const SQL: &str = "UPDATE invites SET used_at = NULL WHERE code_hash = $1 AND used_by IS NULL";
        on_pool!(self, pool => sqlx::query(SQL).bind(code_hash).execute(pool).await.map(|_| ())?);
        Ok(())
    }

    /// Whether a live, unused invite exists (checked before the account is made).
    pub async fn invite_is_live(&self, code_hash: &[u8], now: i64) -> Result<bool, StoreError> {
        const SQL: &str = "SELECT COUNT(*) FROM invites WHERE code_hash = $1 AND used_at IS NULL AND expires_at > $2";
        let n: i64 = on_pool!(self, pool => sqlx::query_scalar(SQL).bind(code_hash).bind(now).fetch_one(pool).await?);
        Ok(n == 1)
    }
}
