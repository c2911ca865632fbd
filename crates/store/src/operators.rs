//! Operators and their short-lived tokens. Roles are stored as the caller writes
//! them (`viewer`, `operator`, `admin`); times are Unix milliseconds; secrets arrive
//! already hashed or encrypted.

use sqlx::FromRow;

use crate::pool::{Store, StoreError, on_pool};

/// One operator.
#[derive(Clone, Debug, PartialEq, Eq, FromRow)]
pub struct OperatorRow {
    pub id: i64,
    pub name: String,
    pub role: String,
    /// `None` until the operator has enrolled.
    pub password_hash: Option<String>,
    pub totp_secret_enc: Option<Vec<u8>>,
    pub totp_last_step: Option<i64>,
    pub setup_hash: Option<Vec<u8>>,
    pub setup_expires_at: Option<i64>,
    pub created_at: i64,
    pub disabled_at: Option<i64>,
}

/// A token's operator, as an authenticated request needs it.
#[derive(Clone, Debug, PartialEq, Eq, FromRow)]
pub struct OperatorSessionRow {
    pub operator_id: i64,
    pub name: String,
    pub role: String,
    pub expires_at: i64,
}

macro_rules! select_operators {
    ($rest:literal) => {
        concat!(
            "SELECT id, name, role, password_hash, totp_secret_enc, totp_last_step, setup_hash, ",
            "setup_expires_at, created_at, disabled_at FROM operators ",
            $rest
        )
    };
}

/// Ends every token of the operator named `$1` (a reset, a disable).
const END_TOKENS: &str =
    "DELETE FROM operator_sessions WHERE operator_id IN (SELECT id FROM operators WHERE name = $1)";

impl Store {
    /// A new operator who has only a setup code; `Ok(None)` when the name is taken.
    pub async fn create_operator(
        &self,
        name: &str,
        role: &str,
        setup_hash: &[u8],
        setup_expires_at: i64,
        now: i64,
    ) -> Result<Option<i64>, StoreError> {
        const SQL: &str = "INSERT INTO operators (name, role, setup_hash, setup_expires_at, created_at) \
                           VALUES ($1, $2, $3, $4, $5) ON CONFLICT (name) DO NOTHING RETURNING id";
        Ok(on_pool!(self, pool => sqlx::query_scalar(SQL)
            .bind(name).bind(role).bind(setup_hash).bind(setup_expires_at).bind(now)
            .fetch_optional(pool).await?))
    }

    pub async fn operator_by_name(&self, name: &str) -> Result<Option<OperatorRow>, StoreError> {
        const SQL: &str = select_operators!("WHERE name = $1");
        Ok(on_pool!(self, pool => sqlx::query_as(SQL).bind(name).fetch_optional(pool).await?))
    }

    /// Every operator, by name.
    pub async fn operators(&self) -> Result<Vec<OperatorRow>, StoreError> {
        const SQL: &str = select_operators!("ORDER BY name");
        Ok(on_pool!(self, pool => sqlx::query_as(SQL).fetch_all(pool).await?))
    }

    /// Operators who can log in (enrolled, not disabled).
    pub async fn active_operators(&self) -> Result<i64, StoreError> {
        const SQL: &str = "SELECT COUNT(*) FROM operators WHERE disabled_at IS NULL AND password_hash IS NOT NULL";
        Ok(on_pool!(self, pool => sqlx::query_scalar(SQL).fetch_one(pool).await?))
    }

    /// Spends the setup code (`setup_hash`, still valid at `now`) and sets the password
    /// and TOTP secret, in one statement: `false` when the code was wrong, expired or used.
    pub async fn enroll_operator(
        &self,
        name: &str,
        setup_hash: &[u8],
        password_hash: &str,
        totp_secret_enc: &[u8],
        now: i64,
    ) -> Result<bool, StoreError> {
        const SQL: &str = "UPDATE operators SET password_hash = $1, totp_secret_enc = $2, totp_last_step = NULL, \
                           setup_hash = NULL, setup_expires_at = NULL \
                           WHERE name = $3 AND setup_hash = $4 AND setup_expires_at > $5 AND disabled_at IS NULL";
        let n = on_pool!(self, pool => sqlx::query(SQL)
            .bind(password_hash).bind(totp_secret_enc).bind(name).bind(setup_hash).bind(now)
            .execute(pool).await?.rows_affected());
        Ok(n == 1)
    }

    /// A fresh setup code for `name` (a lost authenticator or password): the old
    /// credentials and every token end. `false` when there is no such operator.
    pub async fn reset_operator(
        &self,
        name: &str,
        setup_hash: &[u8],
        setup_expires_at: i64,
    ) -> Result<bool, StoreError> {
        const SQL: &str = "UPDATE operators SET password_hash = NULL, totp_secret_enc = NULL, totp_last_step = NULL, \
                           setup_hash = $1, setup_expires_at = $2, disabled_at = NULL WHERE name = $3";
        on_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            let n = sqlx::query(SQL).bind(setup_hash).bind(setup_expires_at).bind(name).execute(&mut *tx).await?.rows_affected();
            sqlx::query(END_TOKENS).bind(name).execute(&mut *tx).await?;
            tx.commit().await?;
            Ok(n == 1)
        })
    }

    /// Changes a role; `false` when there is no such operator.
    pub async fn set_operator_role(&self, name: &str, role: &str) -> Result<bool, StoreError> {
        const SQL: &str = "UPDATE operators SET role = $1 WHERE name = $2";
        let n = on_pool!(self, pool => sqlx::query(SQL).bind(role).bind(name).execute(pool).await?.rows_affected());
        Ok(n == 1)
    }

    /// Disables an operator and ends their tokens; `false` when there is no such operator.
    pub async fn disable_operator(&self, name: &str, now: i64) -> Result<bool, StoreError> {
        const SQL: &str = "UPDATE operators SET disabled_at = $1 WHERE name = $2 AND disabled_at IS NULL";
        on_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            let n = sqlx::query(SQL).bind(now).bind(name).execute(&mut *tx).await?.rows_affected();
            sqlx::query(END_TOKENS).bind(name).execute(&mut *tx).await?;
            tx.commit().await?;
            Ok(n == 1)
        })
    }

    /// Records that TOTP step `step` was used, only if it is newer than the last one:
    /// `false` is a replay.
    pub async fn advance_operator_totp_step(&self, id: i64, step: i64) -> Result<bool, StoreError> {
        const SQL: &str = "UPDATE operators SET totp_last_step = $1 \
                           WHERE id = $2 AND (totp_last_step IS NULL OR totp_last_step < $1)";
        let n = on_pool!(self, pool => sqlx::query(SQL).bind(step).bind(id).execute(pool).await?.rows_affected());
        Ok(n == 1)
    }

    pub async fn set_operator_totp_secret(&self, id: i64, totp_secret_enc: &[u8]) -> Result<(), StoreError> {
        const SQL: &str = "UPDATE operators SET totp_secret_enc = $1 WHERE id = $2";
        on_pool!(self, pool => sqlx::query(SQL).bind(totp_secret_enc).bind(id).execute(pool).await.map(|_| ())?);
        Ok(())
    }

    pub async fn create_operator_session(
        &self,
        token_hash: &[u8],
        operator_id: i64,
        now: i64,
        expires_at: i64,
    ) -> Result<(), StoreError> {
        const PURGE: &str = "DELETE FROM operator_sessions WHERE expires_at <= $1";
        const SQL: &str =
            "INSERT INTO operator_sessions (token_hash, operator_id, created_at, expires_at) VALUES ($1, $2, $3, $4)";
        on_pool!(self, pool => {
            sqlx::query(PURGE).bind(now).execute(pool).await?;
            sqlx::query(SQL).bind(token_hash).bind(operator_id).bind(now).bind(expires_at).execute(pool).await?;
        });
        Ok(())
    }

    /// The operator a token names, if it is unexpired at `now` and the operator is
    /// not disabled.
    pub async fn operator_session(
        &self,
        token_hash: &[u8],
        now: i64,
    ) -> Result<Option<OperatorSessionRow>, StoreError> {
        const SQL: &str = "SELECT o.id AS operator_id, o.name, o.role, s.expires_at \
                           FROM operator_sessions s JOIN operators o ON o.id = s.operator_id \
                           WHERE s.token_hash = $1 AND s.expires_at > $2 AND o.disabled_at IS NULL";
        Ok(on_pool!(self, pool => sqlx::query_as(SQL).bind(token_hash).bind(now).fetch_optional(pool).await?))
    }

    /// Ends one token; `false` when it was not there.
    pub async fn delete_operator_session(&self, token_hash: &[u8]) -> Result<bool, StoreError> {
        const SQL: &str = "DELETE FROM operator_sessions WHERE token_hash = $1";
        let n = on_pool!(self, pool => sqlx::query(SQL).bind(token_hash).execute(pool).await?.rows_affected());
        Ok(n == 1)
    }
}
