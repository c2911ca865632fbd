//! Operator accounts: the people allowed into the admin API. An admin (or the
//! bootstrap secret) adds an operator with a role and gets a one-time setup code;
//! the operator enrolls with it, choosing a password and receiving a TOTP secret;
//! a login then needs the password and a current code, and yields a short-lived
//! token. Operators are kept apart from users: no user flow reads or writes them.

use std::net::IpAddr;
use std::time::Duration;

use serde::Serialize;

use super::{AccountError, Accounts, MAX_PASSWORD_BYTES, check_len, invalid, totp_secret};
use crate::operator::{OperatorRole, valid_name};
use crate::{tokens, totp, unix_millis};

/// What an admin hands a new (or reset) operator, once.
#[derive(Debug, Serialize)]
pub struct OperatorSetup {
    pub name: String,
    pub role: OperatorRole,
    pub setup_code: String,
    pub expires_in_s: u64,
}

/// The authenticator secret an enrolled operator adds to their app.
#[derive(Debug, Serialize)]
pub struct OperatorEnrollment {
    pub totp_secret: String,
    pub otpauth_uri: String,
}

/// A login's token, shown once.
#[derive(Debug, Serialize)]
pub struct OperatorToken {
    pub token: String,
    pub name: String,
    pub role: OperatorRole,
    pub expires_in_s: u64,
}

/// Who an operator token names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OperatorIdentity {
    pub name: String,
    pub role: OperatorRole,
}

/// One operator, as listed: no secrets.
#[derive(Debug, Serialize)]
pub struct OperatorListing {
    pub name: String,
    pub role: String,
    pub enrolled: bool,
    pub disabled: bool,
    pub created_at: i64,
}

/// Operator tokens start with this, so a token pasted in the wrong place is recognised.
pub const OPERATOR_TOKEN_TAG: &str = "pop_";

/// The name audit entries give the bootstrap secret; no operator may take it.
pub const BOOTSTRAP_ACTOR: &str = "bootstrap";

fn checked_name(name: &str) -> Result<&str, AccountError> {
    // `enroll` is a path under /admin/operators, not a name.
    if !valid_name(name) || name == BOOTSTRAP_ACTOR || name == "enroll" {
        return Err(invalid(
            "invalid_operator_name",
            "an operator name is 1-32 characters of a-z, 0-9, '.', '_' or '-', starting with a letter",
        ));
    }
    Ok(name)
}

impl Accounts {
    fn setup_hash(&self, code: &str) -> Vec<u8> {
        self.keys().blind_index("operator-setup", code.trim()).to_vec()
    }

    fn new_setup(&self, name: &str, role: OperatorRole) -> (OperatorSetup, Vec<u8>, i64) {
        let code = tokens::invite_code();
        let hash = self.setup_hash(&code);
        let ttl = self.config.operator_setup_ttl_s;
        let expires_at = unix_millis().saturating_add((ttl * 1000) as i64);
        (OperatorSetup { name: name.to_owned(), role, setup_code: code, expires_in_s: ttl }, hash, expires_at)
    }

    /// Adds an operator who can enroll with the returned setup code.
    pub async fn add_operator(
        &self,
        name: &str,
        role: OperatorRole,
        actor: &str,
    ) -> Result<OperatorSetup, AccountError> {
        let name = checked_name(name)?;
        let (setup, hash, expires_at) = self.new_setup(name, role);
        if self.store.create_operator(name, role.as_str(), &hash, expires_at, unix_millis()).await?.is_none() {
            return Err(invalid("operator_exists", format!("an operator named {name} already exists")));
        }
        let detail = serde_json::json!({"operator": name, "role": role});
        self.audit(actor, "operator.add", "ok", None, None, Some(detail)).await;
        Ok(setup)
    }

    /// A new setup code for an operator who lost their password or authenticator:
    /// the old ones stop working, their tokens end, a disabled operator is enabled.
    pub async fn reset_operator(&self, name: &str, actor: &str) -> Result<OperatorSetup, AccountError> {
        let name = checked_name(name)?;
        let row = self.store.operator_by_name(name).await?.ok_or(AccountError::NotFound)?;
        let role = row.role.parse().unwrap_or(OperatorRole::Viewer);
        let (setup, hash, expires_at) = self.new_setup(name, role);
        if !self.store.reset_operator(name, &hash, expires_at).await? {
            return Err(AccountError::NotFound);
        }
        self.audit(actor, "operator.reset", "ok", None, None, Some(serde_json::json!({"operator": name}))).await;
        Ok(setup)
    }

    pub async fn set_operator_role(&self, name: &str, role: OperatorRole, actor: &str) -> Result<(), AccountError> {
        if !self.store.set_operator_role(checked_name(name)?, role.as_str()).await? {
            return Err(AccountError::NotFound);
        }
        let detail = serde_json::json!({"operator": name, "role": role});
        self.audit(actor, "operator.role", "ok", None, None, Some(detail)).await;
        Ok(())
    }

    /// Disables an operator; their tokens stop working at once.
    pub async fn disable_operator(&self, name: &str, actor: &str) -> Result<(), AccountError> {
        if !self.store.disable_operator(checked_name(name)?, unix_millis()).await? {
            return Err(AccountError::NotFound);
        }
        self.audit(actor, "operator.disable", "ok", None, None, Some(serde_json::json!({"operator": name}))).await;
        Ok(())
    }

    pub async fn list_operators(&self) -> Result<Vec<OperatorListing>, AccountError> {
        Ok(self
            .store
            .operators()
            .await?
            .into_iter()
            .map(|o| OperatorListing {
                enrolled: o.password_hash.is_some(),
                disabled: o.disabled_at.is_some(),
                name: o.name,
                role: o.role,
                created_at: o.created_at,
            })
            .collect())
    }

    /// Operators who can log in; while there are none, the bootstrap secret stands in.
    pub async fn active_operators(&self) -> Result<i64, AccountError> {
        Ok(self.store.active_operators().await?)
    }

    /// Spends a setup code: sets the password and returns a fresh TOTP secret. The
    /// first login with a code from it proves the authenticator holds it.
    pub async fn enroll_operator(
        &self,
        name: &str,
        setup_code: &str,
        password: &str,
        ip: Option<IpAddr>,
    ) -> Result<OperatorEnrollment, AccountError> {
        let name = checked_name(name)?;
        check_len("password", password, MAX_PASSWORD_BYTES)?;
        check_len("setup_code", setup_code, 64)?;
        let key = format!("operator:{name}");
        let now = unix_millis();
        if let Err(retry_after) = self.reauth.check(key.as_bytes(), now as u64) {
            return Err(AccountError::TooManyAttempts { retry_after });
        }
        self.passwords.check(password, &[name]).map_err(AccountError::WeakPassword)?;
        let phc = self.hasher.hash(password.to_owned()).await?;
        let secret = totp::TotpSecret::generate();
        let sealed = self.keys().encrypt("operator-totp", secret.as_bytes());
        let actor = format!("operator:{name}");
        if !self.store.enroll_operator(name, &self.setup_hash(setup_code), &phc, &sealed, now).await? {
            self.reauth.record_failure(key.as_bytes(), now as u64);
            self.audit(&actor, "operator.enroll", "failed", ip, Some("bad_setup_code"), None).await;
            return Err(AccountError::InvalidCode);
        }
        self.audit(&actor, "operator.enroll", "ok", ip, None, None).await;
        let uri = totp::provisioning_uri(&secret, &self.config.totp_issuer, &format!("operator {name}"));
        Ok(OperatorEnrollment { totp_secret: secret.to_base32(), otpauth_uri: uri })
    }

    /// Password and a current authenticator code for a short-lived token. Failures
    /// count per operator name, whether or not the name exists, and all look alike.
    pub async fn operator_login(
        &self,
        name: &str,
        password: &str,
        code: Option<&str>,
        ip: Option<IpAddr>,
    ) -> Result<OperatorToken, AccountError> {
        check_len("name", name, 64)?;
        check_len("password", password, MAX_PASSWORD_BYTES)?;
        let key = format!("operator:{name}");
        let now = unix_millis();
        if let Err(retry_after) = self.reauth.check(key.as_bytes(), now as u64) {
            return Err(AccountError::TooManyAttempts { retry_after });
        }
        let actor = format!("operator:{}", if valid_name(name) { name } else { "?" });
        let row = match self.store.operator_by_name(name).await? {
            Some(row) if row.disabled_at.is_none() && row.password_hash.is_some() => row,
            _ => {
                // The same work as a real check, so timing does not tell which names exist.
                self.hasher.verify_dummy(password.to_owned()).await?;
                self.login_failed(&key, &actor, ip, "unknown_operator").await;
                return Err(AccountError::InvalidCredentials);
            }
        };
        let phc = row.password_hash.clone().unwrap_or_default();
        if !self.hasher.verify(password.to_owned(), phc).await? {
            self.login_failed(&key, &actor, ip, "bad_password").await;
            return Err(AccountError::InvalidCredentials);
        }
        let Some(code) = code.map(str::trim).filter(|c| !c.is_empty()) else {
            return Err(AccountError::MfaRequired);
        };
        let sealed =
            row.totp_secret_enc.as_deref().ok_or_else(|| AccountError::Internal("enrolled without TOTP".into()))?;
        let secret = totp_secret(&self.decrypt("operator-totp", sealed)?)?;
        let last = row.totp_last_step.and_then(|s| u64::try_from(s).ok());
        let fresh = match totp::verify(&secret, code, (now / 1000) as u64, last) {
            Some(step) => self.store.advance_operator_totp_step(row.id, step as i64).await?,
            None => false,
        };
        if !fresh {
            self.login_failed(&key, &actor, ip, "bad_totp").await;
            return Err(AccountError::InvalidCode);
        }
        self.reauth.record_success(key.as_bytes());
        let token = format!("{OPERATOR_TOKEN_TAG}{}", tokens::SessionToken::generate().as_str());
        let ttl = Duration::from_secs(self.config.operator_token_ttl_s);
        let expires_at = now.saturating_add(ttl.as_millis() as i64);
        self.store.create_operator_session(&tokens::hash(&token), row.id, now, expires_at).await?;
        self.audit(&format!("operator:{}", row.name), "operator.login", "ok", ip, None, None).await;
        let role = row.role.parse().unwrap_or(OperatorRole::Viewer);
        Ok(OperatorToken { token, name: row.name, role, expires_in_s: ttl.as_secs() })
    }

    async fn login_failed(&self, key: &str, actor: &str, ip: Option<IpAddr>, reason: &str) {
        self.reauth.record_failure(key.as_bytes(), unix_millis() as u64);
        self.audit(actor, "operator.login", "failed", ip, Some(reason), None).await;
    }

    /// The operator a token names, while it is live and they are not disabled.
    pub async fn operator_by_token(&self, token: &str) -> Result<Option<OperatorIdentity>, AccountError> {
        if !token.starts_with(OPERATOR_TOKEN_TAG) || token.len() > 64 {
            return Ok(None);
        }
        let Some(row) = self.store.operator_session(&tokens::hash(token), unix_millis()).await? else {
            return Ok(None);
        };
        // A role this build does not know grants nothing.
        Ok(row.role.parse().ok().map(|role| OperatorIdentity { name: row.name, role }))
    }

    /// Ends a token (`palisade admin logout`).
    pub async fn operator_logout(&self, token: &str, actor: &str) -> Result<(), AccountError> {
        if self.store.delete_operator_session(&tokens::hash(token)).await? {
            self.audit(actor, "operator.logout", "ok", None, None, None).await;
        }
        Ok(())
    }
}
