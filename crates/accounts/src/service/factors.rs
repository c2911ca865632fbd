//! Changing how an account proves itself: enrolling, replacing or removing the
//! second factor, changing the password, and resetting a forgotten one by a code
//! sent to the verified phone or address. A session alone never suffices: each change
//! asks again for the password, and for the current code where a second factor is
//! enrolled, and ends the account's other sessions.

use std::net::IpAddr;

use serde::Deserialize;
use shield::Client;
use store::{CodePurpose, Identifier, UserRow, UserStatus};

use super::{
    AccountError, Accounts, MAX_IDENTIFIER, MAX_PASSWORD_BYTES, TotpEnrollment, check_len, invalid, totp_secret,
};
use crate::email::parse_email;
use crate::notify::{Channel, Message};
use crate::phone::parse_phone;
use crate::{recovery, tokens, totp, unix_millis};

/// Fresh proof of who is asking: the password, and the current authenticator code
/// when the account has one.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct Reauth {
    pub password: String,
    pub totp: Option<String>,
}

/// `POST /auth/password`.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct PasswordChange {
    pub current_password: String,
    pub new_password: String,
    pub totp: Option<String>,
}

/// `POST /auth/password/reset`: the phone or address of the account.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct ResetRequest {
    pub phone: Option<String>,
    pub email: Option<String>,
}

/// `POST /auth/password/reset/confirm`.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct ResetConfirmation {
    pub phone: Option<String>,
    pub email: Option<String>,
    pub code: String,
    pub new_password: String,
}

impl Accounts {
    /// Checks `reauth` for `user`. Failures count against the account like failed
    /// logins, so a stolen session cannot be used to guess the password.
    async fn reauthenticate(&self, user: &UserRow, reauth: &Reauth, ip: Option<IpAddr>) -> Result<(), AccountError> {
        check_len("password", &reauth.password, MAX_PASSWORD_BYTES)?;
        let key = format!("reauth:{}", user.id);
        let now = unix_millis() as u64;
        if let Err(retry_after) = self.reauth.check(key.as_bytes(), now) {
            return Err(AccountError::TooManyAttempts { retry_after });
        }
        let actor = format!("user:{}", user.id);
        // The service user has no password to re-authenticate with; its hash is no PHC
        // string, which the hasher would report as a fault of the store.
        let usable = user.password_hash != super::NO_PASSWORD;
        if !usable || !self.hasher.verify(reauth.password.clone(), user.password_hash.clone()).await? {
            self.reauth.record_failure(key.as_bytes(), now);
            self.audit(&actor, "auth.reauth", "failed", ip, Some("bad_password"), None).await;
            return Err(AccountError::InvalidCredentials);
        }
        if let Some(secret) = &user.totp_secret_enc {
            // The current factor itself, not a recovery code: whoever holds only the
            // password and a recovery code must not be able to replace the factor.
            let code = reauth.totp.as_deref().map(str::trim).filter(|c| !c.is_empty());
            let Some(code) = code else { return Err(AccountError::MfaRequired) };
            let secret = totp_secret(&self.decrypt("totp", secret)?)?;
            let last = user.totp_last_step.and_then(|s| u64::try_from(s).ok());
            let unix = (unix_millis() / 1000) as u64;
            let fresh = match totp::verify(&secret, code, unix, last) {
                Some(step) => self.store.advance_totp_step(user.id, step as i64).await?,
                None => false,
            };
            if !fresh {
                self.reauth.record_failure(key.as_bytes(), now);
                self.audit(&actor, "auth.reauth", "failed", ip, Some("bad_totp"), None).await;
                return Err(AccountError::InvalidCode);
            }
        }
        self.reauth.record_success(key.as_bytes());
        Ok(())
    }

    async fn account(&self, user_id: i64) -> Result<UserRow, AccountError> {
        let user = self.store.user(user_id).await?.ok_or(AccountError::Unauthenticated)?;
        if user.status() == UserStatus::Suspended {
            return Err(AccountError::Suspended);
        }
        Ok(user)
    }

    /// Ends every session of `user_id` but the one making the change (by its token).
    async fn end_other_sessions(&self, user_id: i64, current_session: Option<&str>) -> Result<u64, AccountError> {
        let keep = current_session.map(tokens::hash);
        let ended = self.store.delete_sessions_except(user_id, keep.as_ref().map(|h| &h[..])).await?;
        self.forget_principals();
        Ok(ended)
    }

    /// Start TOTP enrolment (or replace the factor) after re-authentication. Nothing
    /// is stored until [`Accounts::confirm_totp`]: the secret travels in
    /// `enrollment`, encrypted and bound to the user.
    pub async fn start_totp(
        &self,
        user_id: i64,
        reauth: &Reauth,
        client: Option<&Client>,
    ) -> Result<TotpEnrollment, AccountError> {
        let user = self.account(user_id).await?;
        self.reauthenticate(&user, reauth, client.map(Client::ip)).await?;
        let secret = totp::TotpSecret::generate();
        let encoded = secret.to_base32();
        let uri = totp::provisioning_uri(&secret, &self.config.totp_issuer, &format!("user {user_id}"));
        let sealed = self.keys().encrypt(&format!("totp-enrollment:{user_id}"), secret.as_bytes());
        Ok(TotpEnrollment { secret: encoded, otpauth_uri: uri, enrollment: tokens::b64(&sealed) })
    }

    /// Finish enrolment with a code from the app; returns ten recovery codes and
    /// ends the account's other sessions.
    pub async fn confirm_totp(
        &self,
        user_id: i64,
        enrollment: &str,
        code: &str,
        current_session: Option<&str>,
        client: Option<&Client>,
    ) -> Result<Vec<String>, AccountError> {
        let ip = client.map(Client::ip);
        let keys = self.keys();
        let sealed = tokens::unb64(enrollment).ok_or(AccountError::InvalidCode)?;
        let raw =
            keys.decrypt(&format!("totp-enrollment:{user_id}"), &sealed).map_err(|_| AccountError::InvalidCode)?;
        let secret = totp_secret(&raw)?;
        let unix = (unix_millis() / 1000) as u64;
        let step = totp::verify(&secret, code.trim(), unix, None).ok_or(AccountError::InvalidCode)?;
        self.store.set_totp(user_id, Some(&keys.encrypt("totp", secret.as_bytes()))).await?;
        self.store.advance_totp_step(user_id, step as i64).await?;
        let issued = recovery::generate();
        let hashes: Vec<Vec<u8>> = issued.hashes.iter().map(|h| h.to_vec()).collect();
        self.store.replace_recovery_codes(user_id, &hashes).await?;
        let ended = self.end_other_sessions(user_id, current_session).await?;
        let detail = serde_json::json!({"sessions_ended": ended});
        self.audit(&format!("user:{user_id}"), "auth.mfa.enroll", "ok", ip, None, Some(detail)).await;
        Ok(issued.codes)
    }

    /// Remove the second factor after re-authentication (with the current code).
    pub async fn remove_totp(
        &self,
        user_id: i64,
        reauth: &Reauth,
        current_session: Option<&str>,
        client: Option<&Client>,
    ) -> Result<(), AccountError> {
        let ip = client.map(Client::ip);
        let user = self.account(user_id).await?;
        if user.totp_secret_enc.is_none() {
            return Err(AccountError::NotFound);
        }
        self.reauthenticate(&user, reauth, ip).await?;
        self.store.set_totp(user_id, None).await?;
        self.store.replace_recovery_codes(user_id, &[]).await?;
        let ended = self.end_other_sessions(user_id, current_session).await?;
        let detail = serde_json::json!({"sessions_ended": ended});
        self.audit(&format!("user:{user_id}"), "auth.mfa.remove", "ok", ip, None, Some(detail)).await;
        Ok(())
    }

    /// Operator action: remove a user's second factor (lost phone). Every session of
    /// the account ends.
    pub async fn reset_mfa(&self, user_id: i64, actor: &str) -> Result<(), AccountError> {
        self.store.user(user_id).await?.ok_or(AccountError::NotFound)?;
        self.store.set_totp(user_id, None).await?;
        self.store.replace_recovery_codes(user_id, &[]).await?;
        let ended = self.end_other_sessions(user_id, None).await?;
        let detail = serde_json::json!({"user": user_id, "sessions_ended": ended});
        self.audit(actor, "auth.mfa.reset", "ok", None, None, Some(detail)).await;
        Ok(())
    }

    /// Change the password after re-authentication; ends the other sessions.
    pub async fn change_password(
        &self,
        user_id: i64,
        change: PasswordChange,
        current_session: Option<&str>,
        client: Option<&Client>,
    ) -> Result<(), AccountError> {
        let ip = client.map(Client::ip);
        let user = self.account(user_id).await?;
        let reauth = Reauth { password: change.current_password, totp: change.totp };
        self.reauthenticate(&user, &reauth, ip).await?;
        self.set_password(&user, change.new_password).await?;
        let ended = self.end_other_sessions(user_id, current_session).await?;
        let detail = serde_json::json!({"sessions_ended": ended});
        self.audit(&format!("user:{user_id}"), "auth.password.change", "ok", ip, None, Some(detail)).await;
        Ok(())
    }

    async fn set_password(&self, user: &UserRow, password: String) -> Result<(), AccountError> {
        check_len("new_password", &password, MAX_PASSWORD_BYTES)?;
        let identifiers = self.identifiers_of(user)?;
        let refs: Vec<&str> = identifiers.iter().map(String::as_str).collect();
        self.passwords.check(&password, &refs).map_err(AccountError::WeakPassword)?;
        let hash = self.hasher.hash(password).await?;
        self.store.set_password_hash(user.id, &hash).await?;
        Ok(())
    }

    /// The account's phone and address in clear, for the password rules.
    fn identifiers_of(&self, user: &UserRow) -> Result<Vec<String>, AccountError> {
        let mut out = Vec::new();
        for (field, blob) in [("phone", &user.phone_enc), ("email", &user.email_enc)] {
            if let Some(blob) = blob {
                out.push(String::from_utf8_lossy(&self.decrypt(field, blob)?).into_owned());
            }
        }
        Ok(out)
    }

    /// The verified account named by a phone number or address, if any.
    async fn holder(&self, phone: Option<&str>, email: Option<&str>) -> Result<Option<UserRow>, AccountError> {
        let keys = self.keys();
        let (field, normalized) = match (phone.map(str::trim), email.map(str::trim)) {
            (Some(p), _) if !p.is_empty() => {
                check_len("phone", p, MAX_IDENTIFIER)?;
                let parsed = parse_phone(p, self.config.default_phone_region.as_deref());
                ("phone", parsed.map(|p| p.e164).unwrap_or_default())
            }
            (_, Some(e)) if !e.is_empty() => {
                check_len("email", e, MAX_IDENTIFIER)?;
                ("email", parse_email(e).map(|e| e.normalized).unwrap_or_default())
            }
            _ => return Err(invalid("identifier_required", "give the phone number or e-mail address of the account")),
        };
        if normalized.is_empty() {
            return Ok(None);
        }
        let index = keys.blind_index(field, &normalized);
        let id = if field == "phone" { Identifier::Phone(&index) } else { Identifier::Email(&index) };
        Ok(self.store.holder_of(id).await?)
    }

    /// Send a password-reset code to the verified phone or address, when there is
    /// such an account. The answer is the same either way, and comes before the
    /// message is sent, so neither it nor its time tells whether the account exists.
    pub async fn request_password_reset(
        &self,
        request: ResetRequest,
        client: Option<&Client>,
    ) -> Result<(), AccountError> {
        let ip = client.map(Client::ip);
        let now = unix_millis();
        let Some(user) = self.holder(request.phone.as_deref(), request.email.as_deref()).await? else {
            self.audit("anonymous", "auth.password.reset", "refused", ip, Some("unknown_account"), None).await;
            return Ok(());
        };
        let (channel, field, blob) = match (&user.phone_enc, &user.email_enc) {
            (Some(blob), _) if request.phone.is_some() => (Channel::Sms, "phone", blob),
            (_, Some(blob)) => (Channel::Email, "email", blob),
            (Some(blob), None) => (Channel::Sms, "phone", blob),
            (None, None) => return Ok(()),
        };
        let to = String::from_utf8(self.decrypt(field, blob)?)
            .map_err(|_| invalid("corrupt", "stored destination unreadable"))?;
        let spent = self.sends_per_account.spend(&user.id, now as u64);
        let actor = format!("user:{}", user.id);
        if spent.is_err() {
            self.audit(&actor, "auth.password.reset", "refused", ip, Some("too_many_codes"), None).await;
            return Ok(());
        }
        let code = self.put_code(user.id, CodePurpose::Reset, now).await?;
        self.audit(&actor, "auth.password.reset", "ok", ip, Some("code_sent"), None).await;
        let text = format!(
            "Your Palisade password reset code is {code}. It expires in {} minutes. If you did not ask for it, \
             ignore this message.",
            self.config.code_ttl_s / 60
        );
        let message = Message { channel, to, text, user_id: user.id };
        let notifier = self.notifier.clone();
        tokio::spawn(async move {
            if let Err(e) = notifier.send(&message).await {
                tracing::warn!(error = %e, "password reset code could not be sent");
            }
        });
        Ok(())
    }

    /// Set a new password with the reset code; every session of the account ends.
    pub async fn reset_password(
        &self,
        confirm: ResetConfirmation,
        client: Option<&Client>,
    ) -> Result<(), AccountError> {
        let ip = client.map(Client::ip);
        let Some(user) = self.holder(confirm.phone.as_deref(), confirm.email.as_deref()).await? else {
            // As slow as a real check would be, and the same answer as a wrong code.
            self.hasher.verify_dummy(confirm.new_password).await?;
            return Err(AccountError::InvalidCode);
        };
        let actor = format!("user:{}", user.id);
        if let Err(e) = self.check_code(user.id, CodePurpose::Reset, &confirm.code).await {
            self.audit(&actor, "auth.password.reset", "failed", ip, Some(e.code()), None).await;
            return Err(e);
        }
        self.set_password(&user, confirm.new_password).await?;
        self.store.delete_verification_code(user.id).await?;
        let ended = self.end_other_sessions(user.id, None).await?;
        let detail = serde_json::json!({"sessions_ended": ended});
        self.audit(&actor, "auth.password.reset", "ok", ip, Some("password_set"), Some(detail)).await;
        Ok(())
    }
}
