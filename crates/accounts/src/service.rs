//! The account flows: registration, verification, login with MFA, sessions,
//! API keys and the registration policy, over the [`Store`].
//!
//! Order inside each flow follows "cheap before expensive": input is parsed and
//! bounded, the policy and throttles are consulted, and only then is a password
//! hashed or a row written. Every outcome is audited without secrets or plain
//! personal data.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use serde::Serialize;
use shield::Client;
use store::{
    AuditEntry, CodePurpose, Identifier, NewApiKey, NewCode, NewRegistration, NewUser, Store, StoreError, UserRow,
    UserStatus,
};

use crate::crypto::PiiKeys;
use crate::email::parse_email;
use crate::hasher::{HashError, HashPool, HashPoolConfig};
use crate::notify::{Channel, Message, Notifier};
use crate::password::PasswordPolicy;
use crate::phone::parse_phone;
use crate::policy::RegistrationPolicy;
pub use crate::principal::Principal;
use crate::principal_cache::{Credential, PrincipalCache};
use crate::send_budget::{BreakerConfig, SendBudget};
use crate::sms::{Held, SmsGuard, SmsRules, TextProof};
use crate::throttle::{
    Attempt, FailureThrottle, LocalLogins, LoginKeys, LoginRules, Outcome, SharedLogins, ThrottleConfig,
};
use crate::tier::{Tenure, TrustTier};
use crate::{recovery, tokens, totp, unix_millis};

pub mod factors;
pub mod operators;
pub mod texts;

/// Account settings (the `[accounts]` section of the configuration).
#[derive(Clone, Debug, PartialEq, serde::Deserialize, serde::Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct AccountsConfig {
    /// Region assumed for phone numbers written without a country code, e.g. "CN".
    pub default_phone_region: Option<String>,
    pub session_ttl_s: u64,
    pub code_ttl_s: u64,
    /// Wrong guesses allowed per one-time code.
    pub code_max_attempts: i64,
    /// Threads hashing passwords (0: one per core), and logins allowed to wait for one.
    pub hash_threads: usize,
    pub hash_queue: usize,
    /// Consecutive login failures per account or address before back-off starts.
    pub login_free_failures: u32,
    /// Issuer shown in authenticator apps.
    pub totp_issuer: String,
    pub invite_ttl_s: u64,
    /// How long an operator's token from `palisade admin login` lasts, and how long a
    /// new operator's setup code stays usable.
    pub operator_token_ttl_s: u64,
    pub operator_setup_ttl_s: u64,
    /// Seconds a node may keep answering from memory who an API key or session
    /// belongs to (0: ask the store every request). A key revoked on another
    /// node or from the CLI stops working here within this time.
    pub credential_cache_s: u64,
    /// While the store cannot be reached, a credential this node knew keeps working for
    /// this long after its cache entry lapsed (0: refuse at once). Revocations made
    /// meanwhile cannot be seen anyway; one made on this node still applies.
    pub credential_grace_s: u64,
    /// An unverified account's claim on its phone or e-mail lapses after this long:
    /// it can no longer verify or log in, and the claim is purged.
    pub unverified_claim_ttl_s: u64,
    /// One-time codes (sign-up and password reset): the guess budget
    /// (`code_max_attempts`) lasts this window across resends; one account may ask
    /// for at most `max_code_resends` more codes in it (any id, known or not, gets the
    /// same budget, so the answers do not tell which exist)...
    pub code_window_s: u64,
    pub max_code_resends: u32,
    /// ...and at most this many codes or notices go to one phone number or address,
    /// whatever the account.
    pub max_code_sends_per_destination: u32,
    /// Texts (codes by SMS) per country and per number range (`+` and six digits) an
    /// hour, and the conversion breaker: over `sms_breaker_window_s`, once a range,
    /// country or sender subnet has had `sms_breaker_min_sends` texts, fewer than
    /// `sms_proof_below` of their codes entered makes each further text need a proof of
    /// work of `sms_proof_difficulty` bits, and fewer than `sms_pause_below` pauses texts
    /// there until conversion recovers.
    pub sms_per_country_per_hour: u32,
    pub sms_per_prefix_per_hour: u32,
    pub sms_breaker_window_s: u64,
    pub sms_breaker_min_sends: u32,
    pub sms_proof_below: f64,
    pub sms_proof_difficulty: u8,
    pub sms_pause_below: f64,
    /// With `sms_auto_narrow`, when texts to a whole country outside `sms_home_regions`
    /// pause (or codes stop being entered anywhere), an open registration policy narrows
    /// itself to phone numbers of the home regions, and opens again once conversion has
    /// recovered (after one breaker window, doubling each time it trips again within a day).
    pub sms_home_regions: Vec<String>,
    pub sms_auto_narrow: bool,
    /// Price of one text by country (ISO region, e.g. "GB"), for the estimated-cost
    /// metric; `sms_default_price` for the others.
    pub sms_prices: std::collections::BTreeMap<String, f64>,
    pub sms_default_price: f64,
    /// Whether unverified accounts may use `/v1` while registration is open. Off
    /// whenever registration is restricted (regions, invite-only, closed), whatever
    /// this says.
    pub unverified_inference: bool,
}

impl Default for AccountsConfig {
    fn default() -> Self {
        AccountsConfig {
            default_phone_region: None,
            session_ttl_s: 30 * 24 * 3600,
            code_ttl_s: 600,
            code_max_attempts: 5,
            hash_threads: 0,
            hash_queue: 64,
            login_free_failures: 5,
            totp_issuer: "Palisade".to_owned(),
            invite_ttl_s: 7 * 24 * 3600,
            operator_token_ttl_s: 3600,
            operator_setup_ttl_s: 24 * 3600,
            credential_cache_s: 5,
            credential_grace_s: 900,
            unverified_claim_ttl_s: 24 * 3600,
            code_window_s: 3600,
            max_code_resends: 2,
            max_code_sends_per_destination: 5,
            unverified_inference: true,
            sms_per_country_per_hour: 5_000,
            sms_per_prefix_per_hour: 200,
            sms_breaker_window_s: 900,
            sms_breaker_min_sends: 20,
            sms_proof_below: 0.3,
            sms_proof_difficulty: 20,
            sms_pause_below: 0.1,
            sms_home_regions: Vec::new(),
            sms_auto_narrow: false,
            sms_prices: std::collections::BTreeMap::new(),
            sms_default_price: 0.05,
        }
    }
}

/// Why an account operation did not happen. `code()` is stable for clients.
#[derive(Debug, thiserror::Error)]
pub enum AccountError {
    #[error("{message}")]
    Invalid { code: &'static str, message: String },
    #[error("{0}")]
    WeakPassword(crate::password::PasswordRejected),
    #[error("{0}")]
    Refused(crate::policy::RegistrationRefused),
    #[error("an account with this phone number or e-mail address already exists")]
    AlreadyRegistered,
    #[error("wrong phone number, e-mail address or password")]
    InvalidCredentials,
    #[error("this account needs a one-time code from its authenticator app (field `totp`) or a recovery code")]
    MfaRequired,
    #[error("the code is wrong or has expired")]
    InvalidCode,
    #[error("too many attempts; try again in {} seconds", .retry_after.as_secs().max(1))]
    TooManyAttempts { retry_after: Duration },
    #[error("this account is suspended")]
    Suspended,
    #[error("the server is busy checking other passwords; try again shortly")]
    Busy,
    #[error("not signed in")]
    Unauthenticated,
    #[error("not found")]
    NotFound,
    #[error("the code could not be sent: {0}")]
    Notify(#[from] crate::notify::NotifyError),
    #[error("storage failed: {0}")]
    Store(#[from] StoreError),
    #[error("encryption failed: {0}")]
    Crypto(#[from] crate::crypto::CryptoError),
    #[error("{0}")]
    Internal(String),
}

impl AccountError {
    pub fn code(&self) -> &'static str {
        match self {
            AccountError::Invalid { code, .. } => code,
            AccountError::WeakPassword(rejected) => rejected.code(),
            AccountError::Refused(refused) => refused.code(),
            AccountError::AlreadyRegistered => "already_registered",
            AccountError::InvalidCredentials => "invalid_credentials",
            AccountError::MfaRequired => "mfa_required",
            AccountError::InvalidCode => "invalid_code",
            AccountError::TooManyAttempts { .. } => "too_many_attempts",
            AccountError::Suspended => "account_suspended",
            AccountError::Busy => "busy",
            AccountError::Unauthenticated => "unauthenticated",
            AccountError::NotFound => "not_found",
            AccountError::Notify(_) => "notification_failed",
            AccountError::Store(_) | AccountError::Crypto(_) | AccountError::Internal(_) => "internal_error",
        }
    }
}

impl From<HashError> for AccountError {
    fn from(e: HashError) -> Self {
        match e {
            HashError::Busy => AccountError::Busy,
            other => AccountError::Internal(other.to_string()),
        }
    }
}

/// The registration policy the store holds; an unreadable one closes registration.
async fn stored_policy(store: &Store) -> Result<RegistrationPolicy, AccountError> {
    Ok(match store.meta(POLICY_KEY).await? {
        Some(json) => serde_json::from_str(&json).unwrap_or_else(|e| {
            tracing::error!(error = %e, "stored registration policy unreadable; registration closed until set again");
            RegistrationPolicy::Closed { message: Some("Registration is temporarily unavailable.".into()) }
        }),
        None => RegistrationPolicy::Open,
    })
}

fn invalid(code: &'static str, message: impl Into<String>) -> AccountError {
    AccountError::Invalid { code, message: message.into() }
}

/// A sign-up request, as received.
#[derive(Clone, Debug, Default, serde::Deserialize)]
pub struct Registration {
    pub phone: Option<String>,
    pub email: Option<String>,
    pub password: String,
    pub invite: Option<String>,
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Registered {
    pub user_id: i64,
    pub status: &'static str,
    pub verification_channel: Channel,
    pub code_expires_in_s: u64,
}

/// A login request, as received.
#[derive(Clone, Debug, Default, serde::Deserialize)]
pub struct Login {
    pub phone: Option<String>,
    pub email: Option<String>,
    pub password: String,
    pub totp: Option<String>,
    pub recovery_code: Option<String>,
}

/// A new session; the token is shown once (as a cookie) and stored hashed.
#[derive(Debug)]
pub struct NewSession {
    pub user_id: i64,
    pub token: String,
    pub expires_in: Duration,
    /// The account must enrol in MFA before it can do anything else useful.
    pub mfa_enrollment_required: bool,
}

/// A started TOTP enrolment: show `otpauth_uri` as a QR code, then confirm
/// with a code and the opaque `enrollment` token.
#[derive(Debug, Serialize)]
pub struct TotpEnrollment {
    pub secret: String,
    pub otpauth_uri: String,
    pub enrollment: String,
}

#[derive(Debug, Serialize)]
pub struct SessionListing {
    pub id: String,
    pub created_at: i64,
    pub expires_at: i64,
    pub current: bool,
}

#[derive(Debug, Serialize)]
pub struct KeyListing {
    pub prefix: String,
    pub name: String,
    pub scopes: String,
    pub created_at: i64,
    pub last_used_at: Option<i64>,
    pub revoked_at: Option<i64>,
}

/// The stored hash of an account that has no password (the service user's): no PHC
/// string, so no password matches it.
pub(crate) const NO_PASSWORD: &str = "!";

/// Longest input accepted before any parsing (bounds CPU spent on garbage).
const MAX_IDENTIFIER: usize = 320;
const MAX_PASSWORD_BYTES: usize = 1024;
const POLICY_KEY: &str = "registration_policy";

/// Who asks for a code to be sent: where from, and whether they solved the proof of work
/// a text may need.
struct Sender {
    ip: Option<IpAddr>,
    subnet: Option<String>,
    proof: TextProof,
}

/// The account service; one per process, shared.
pub struct Accounts {
    store: Store,
    keys: RwLock<Arc<PiiKeys>>,
    hasher: HashPool,
    passwords: PasswordPolicy,
    policy: RwLock<RegistrationPolicy>,
    notifier: Arc<Notifier>,
    key_file: std::sync::OnceLock<std::path::PathBuf>,
    /// The login back-off in this process: alone, or while the shared one is away.
    logins: LocalLogins,
    /// A fleet's login back-off, which every node counts into (see [`Accounts::share_logins`]).
    shared_logins: std::sync::OnceLock<Arc<dyn SharedLogins>>,
    /// Failed re-authentications (password confirmations of a signed-in user), per user.
    reauth: FailureThrottle,
    /// Codes sent per account (known or not: the answer must not tell) and per
    /// phone number or address.
    sends_per_account: SendBudget,
    sends_per_destination: SendBudget,
    /// Texts per country and number range, and the pumping breaker...
    sms: SmsGuard,
    /// ...and what it holds, as of the last review (see `texts`).
    texts: std::sync::Mutex<crate::sms::TextsState>,
    principals: PrincipalCache,
    /// Bumped on every local change other nodes must hear of (see [`Accounts::changes`]).
    credential_changes: std::sync::atomic::AtomicU64,
    policy_changes: std::sync::atomic::AtomicU64,
    /// Accounts whose use was recorded, by the day it was (see `first_use_today`).
    used_today: std::sync::Mutex<HashMap<i64, i64>>,
    config: AccountsConfig,
}

/// A credential's holder from the store, or from memory while the store is away.
enum Lookup {
    Fresh(Option<Principal>),
    Stale(Arc<Principal>),
}

/// Accounts remembered as already counted today.
const USED_TODAY_MEMORY: usize = 65_536;

/// A flagged account, as the operator sees it: no personal data.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct FlagListing {
    pub user_id: i64,
    pub created_at: i64,
    pub flagged_at: i64,
    pub reason: String,
    pub tier_pin: Option<String>,
}

/// What the store says about an account's history, for its trust tier. A pin this release
/// does not know (a newer one wrote it) counts as no pin.
fn tenure_of(user: &UserRow) -> Tenure {
    Tenure {
        created_at: user.created_at,
        first_used_at: user.first_used_at,
        used_days: user.used_days,
        pin: user.tier_pin.as_deref().and_then(|p| p.parse().ok()),
        flagged: user.flagged_at.is_some(),
    }
}

/// How many times this node revoked credentials and changed the registration policy.
/// A fleet compares them with what it last published to tell the other nodes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LocalChanges {
    pub credentials: u64,
    pub policy: u64,
}

impl Accounts {
    /// Build the service, loading the persisted registration policy.
    pub async fn new(
        store: Store,
        keys: PiiKeys,
        notifier: Notifier,
        config: AccountsConfig,
    ) -> Result<Accounts, AccountError> {
        let policy = stored_policy(&store).await?;
        Ok(Accounts {
            hasher: HashPool::new(HashPoolConfig {
                threads: match config.hash_threads {
                    0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
                    n => n,
                },
                queue: config.hash_queue,
            })?,
            logins: LocalLogins::new(LoginRules::new(config.login_free_failures, KNOWN_NETWORK_MEMORY), 100_000),
            shared_logins: std::sync::OnceLock::new(),
            reauth: FailureThrottle::new(ThrottleConfig {
                free_failures: config.login_free_failures,
                ..ThrottleConfig::default()
            }),
            sends_per_account: SendBudget::new(
                config.max_code_resends,
                Duration::from_secs(config.code_window_s),
                200_000,
            ),
            sends_per_destination: SendBudget::new(
                config.max_code_sends_per_destination,
                Duration::from_secs(config.code_window_s),
                200_000,
            ),
            sms: SmsGuard::new(SmsRules {
                per_country_per_hour: config.sms_per_country_per_hour,
                per_prefix_per_hour: config.sms_per_prefix_per_hour,
                breaker: BreakerConfig {
                    window: Duration::from_secs(config.sms_breaker_window_s.max(1)),
                    min_sends: config.sms_breaker_min_sends,
                    pow_below: config.sms_proof_below.max(config.sms_pause_below),
                    pause_below: config.sms_pause_below,
                },
                prices: config.sms_prices.clone(),
                default_price: config.sms_default_price,
            }),
            texts: std::sync::Mutex::new(crate::sms::TextsState::default()),
            store,
            keys: RwLock::new(Arc::new(keys)),
            passwords: PasswordPolicy::default(),
            policy: RwLock::new(policy),
            notifier: Arc::new(notifier),
            key_file: std::sync::OnceLock::new(),
            principals: PrincipalCache::new(Duration::from_secs(config.credential_cache_s), 65_536),
            credential_changes: std::sync::atomic::AtomicU64::new(0),
            policy_changes: std::sync::atomic::AtomicU64::new(0),
            used_today: std::sync::Mutex::new(HashMap::new()),
            config,
        })
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn config(&self) -> &AccountsConfig {
        &self.config
    }

    /// Reload keys from `path` when a blob names a key not loaded yet (another
    /// process ran `palisade keys rotate`), so rotation needs no restart.
    pub fn watch_key_file(&self, path: std::path::PathBuf) {
        let _ = self.key_file.set(path);
    }

    fn decrypt(&self, field: &str, blob: &[u8]) -> Result<Vec<u8>, AccountError> {
        match self.keys().decrypt(field, blob) {
            Err(crate::crypto::CryptoError::UnknownKey(_)) if self.key_file.get().is_some() => {
                let path = self.key_file.get().expect("checked");
                let (keys, _) = PiiKeys::load_or_generate(path)?;
                tracing::info!("personal-data keys reloaded after a rotation");
                self.replace_keys(keys);
                Ok(self.keys().decrypt(field, blob)?)
            }
            other => Ok(other?),
        }
    }

    /// The operator's service account, which owns keys made with `palisade keys
    /// create`. It has no phone, e-mail or usable password, so nobody logs in as it.
    pub async fn service_user(&self) -> Result<i64, AccountError> {
        const KEY: &str = "service_user_id";
        if let Some(id) = self.store.meta(KEY).await?.and_then(|v| v.parse().ok()) {
            return Ok(id);
        }
        let user = NewUser {
            phone_enc: None,
            phone_idx: None,
            phone_region: None,
            email_enc: None,
            email_idx: None,
            password_hash: NO_PASSWORD.to_owned(),
            status: UserStatus::Active,
        };
        let id = self.store.create_user(&user, unix_millis()).await?;
        // The keys it holds are the operator's own, issued by hand: trusted from the start,
        // not ramped up like a fresh sign-up.
        self.store.set_tier_pin(id, Some(TrustTier::Established.as_str())).await?;
        self.store.set_meta(KEY, &id.to_string()).await?;
        Ok(id)
    }

    pub fn hasher(&self) -> &HashPool {
        &self.hasher
    }

    fn keys(&self) -> Arc<PiiKeys> {
        self.keys.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Swap in a newer key set (after `palisade keys rotate` wrote one).
    pub fn replace_keys(&self, keys: PiiKeys) {
        *self.keys.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(keys);
    }

    /// Reads the registration policy again from the store: another node changed it.
    pub async fn reload_policy(&self) -> Result<(), AccountError> {
        let policy = stored_policy(&self.store).await?;
        *self.policy.write().unwrap_or_else(|p| p.into_inner()) = policy;
        self.principals.clear();
        Ok(())
    }

    /// Counts of this node's own revocations and policy changes.
    pub fn changes(&self) -> LocalChanges {
        use std::sync::atomic::Ordering::Relaxed;
        LocalChanges { credentials: self.credential_changes.load(Relaxed), policy: self.policy_changes.load(Relaxed) }
    }

    /// Forgets every cached credential because another node revoked one: the next request
    /// of each caller is looked up in the store again.
    pub fn forget_cached_credentials(&self) {
        self.principals.clear();
    }

    /// A credential was revoked or an account changed here: forget the cache and count it
    /// so other nodes can be told.
    fn forget_principals(&self) {
        self.principals.clear();
        self.credential_changes.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    pub fn policy(&self) -> RegistrationPolicy {
        self.policy.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Change the registration policy: persisted first, then live, then audited.
    pub async fn set_policy(&self, policy: RegistrationPolicy, actor: &str) -> Result<(), AccountError> {
        let json = serde_json::to_string(&policy).map_err(|e| invalid("invalid_policy", e.to_string()))?;
        self.store.set_meta(POLICY_KEY, &json).await?;
        *self.policy.write().unwrap_or_else(|p| p.into_inner()) = policy;
        self.policy_changes.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        // Unverified accounts lose (or regain) the API with the policy.
        self.forget_principals();
        self.audit(
            actor,
            "registration.policy",
            "ok",
            None,
            None,
            Some(serde_json::from_str(&json).unwrap_or_default()),
        )
        .await;
        Ok(())
    }

    /// Append an audit entry; outside the account flows too (the AI guard, the
    /// edge). `detail` must hold no secrets and no personal data.
    pub async fn audit(
        &self,
        actor: &str,
        action: &str,
        outcome: &str,
        ip: Option<IpAddr>,
        reason: Option<&str>,
        detail: Option<serde_json::Value>,
    ) {
        let entry = AuditEntry {
            actor: actor.to_owned(),
            action: action.to_owned(),
            outcome: outcome.to_owned(),
            ip: ip.map(|ip| ip.to_string()),
            reason: reason.map(str::to_owned),
            detail,
        };
        if let Err(e) = self.store.append_audit(&entry, unix_millis()).await {
            // The request already happened; losing its record is bad but must
            // not turn a success into a failure for the user.
            tracing::error!(error = %e, action, "audit entry could not be written");
        }
    }

    /// Register a new account and send its verification code.
    /// `proof`: whether the sender solved the proof of work a text to a range with few
    /// codes entered needs ([`RegistrationRefused::TextsNeedProof`] asks for it).
    ///
    /// [`RegistrationRefused::TextsNeedProof`]: crate::policy::RegistrationRefused::TextsNeedProof
    pub async fn register(
        &self,
        reg: Registration,
        client: Option<&Client>,
        proof: TextProof,
    ) -> Result<Registered, AccountError> {
        let ip = client.map(Client::ip);
        let sender = Sender { ip, subnet: client.map(|c| c.subnet().to_string()), proof };
        let result = self.register_inner(reg, &sender).await;
        if let Err(e) = &result {
            self.audit("anonymous", "auth.register", "refused", ip, Some(e.code()), None).await;
        }
        result
    }

    async fn register_inner(&self, reg: Registration, sender: &Sender) -> Result<Registered, AccountError> {
        check_len("password", &reg.password, MAX_PASSWORD_BYTES)?;
        let phone = match reg.phone.as_deref().map(str::trim).filter(|p| !p.is_empty()) {
            Some(raw) => {
                check_len("phone", raw, MAX_IDENTIFIER)?;
                Some(
                    parse_phone(raw, self.config.default_phone_region.as_deref())
                        .map_err(|e| invalid(e.code(), e.to_string()))?,
                )
            }
            None => None,
        };
        let email = match reg.email.as_deref().map(str::trim).filter(|e| !e.is_empty()) {
            Some(raw) => {
                check_len("email", raw, MAX_IDENTIFIER)?;
                Some(parse_email(raw).map_err(|e| invalid(e.code(), e.to_string()))?)
            }
            None => None,
        };
        if phone.is_none() && email.is_none() {
            return Err(invalid("identifier_required", "give a phone number or an e-mail address"));
        }
        let invite = reg.invite.as_deref().map(str::trim).filter(|i| !i.is_empty());
        self.policy()
            .check(phone.as_ref().map(|p| p.region.as_str()), invite.is_some())
            .map_err(AccountError::Refused)?;
        let identifiers: Vec<&str> =
            phone.iter().map(|p| p.e164.as_str()).chain(email.iter().map(|e| e.normalized.as_str())).collect();
        self.passwords.check(&reg.password, &identifiers).map_err(AccountError::WeakPassword)?;

        let keys = self.keys();
        let invite_hash = invite.map(|code| keys.blind_index("invite", code).to_vec());
        let now = unix_millis();
        if let Some(hash) = &invite_hash
            && !self.store.use_invite(hash, now).await?
        {
            return Err(invalid("invalid_invite", "the invite code is unknown, used or expired"));
        }
        let created =
            self.create_account(&keys, phone.as_ref(), email.as_ref(), invite.is_some(), reg.password, sender).await;
        let (user_id, delivery) = match created {
            Ok(created) => created,
            Err(e) => {
                if let Some(hash) = &invite_hash {
                    self.store.release_invite(hash).await?;
                }
                return Err(e);
            }
        };
        if let Some(hash) = &invite_hash {
            self.store.attach_invite(hash, user_id).await?;
        }
        let channel = delivery.message.channel;
        self.notifier.send(&delivery.message).await.inspect_err(code_not_sent)?;
        Ok(Registered {
            user_id,
            status: "unverified",
            verification_channel: channel,
            code_expires_in_s: self.config.code_ttl_s,
        })
    }

    /// Records the account, its code and its audit entry in one transaction, and
    /// says what to send. An address a verified account already holds is answered as
    /// a new one, after the same work (the hash, the rows, one message), so neither
    /// the answer nor its time tells a stranger the account exists: the code is
    /// never sent, and the owner gets a notice instead.
    async fn create_account(
        &self,
        keys: &PiiKeys,
        phone: Option<&crate::phone::Phone>,
        email: Option<&crate::email::Email>,
        invite: bool,
        password: String,
        sender: &Sender,
    ) -> Result<(i64, Delivery), AccountError> {
        let (channel, to, field, normalized) = match (phone, email) {
            (Some(p), _) => (Channel::Sms, p.e164.clone(), "phone", p.e164.as_str()),
            (None, Some(e)) => (Channel::Email, e.address.clone(), "email", e.normalized.as_str()),
            (None, None) => return Err(invalid("identifier_required", "give a phone number or an e-mail address")),
        };
        let now = unix_millis();
        // Before the destination's budget: a text held for a proof of work is asked again.
        if let Some(p) = phone {
            self.texts_allowed(&p.region, &p.e164, sender, now)?;
        }
        let destination = keys.blind_index(field, normalized);
        self.sends_per_destination
            .spend(&destination[..], now as u64)
            .map_err(|retry_after| AccountError::TooManyAttempts { retry_after })?;
        let identifier =
            if field == "phone" { Identifier::Phone(&destination) } else { Identifier::Email(&destination) };
        let taken = self.store.holder_of(identifier).await?.is_some();
        let password_hash = self.hasher.hash(password).await?;
        let user = NewUser {
            phone_enc: phone.map(|p| keys.encrypt("phone", p.e164.as_bytes())),
            phone_idx: phone.map(|p| keys.blind_index("phone", &p.e164).to_vec()),
            phone_region: phone.map(|p| p.region.clone()),
            email_enc: email.map(|e| keys.encrypt("email", e.address.as_bytes())),
            email_idx: email.map(|e| keys.blind_index("email", &e.normalized).to_vec()),
            password_hash,
            status: UserStatus::Unverified,
        };
        let code = tokens::VerificationCode::generate();
        let code_hash = |user_id: i64| keys.blind_index(&format!("code:{user_id}"), code.as_str()).to_vec();
        let audit = AuditEntry {
            actor: String::new(),
            action: "auth.register".into(),
            outcome: "ok".into(),
            ip: sender.ip.map(|ip| ip.to_string()),
            reason: None,
            detail: Some(
                serde_json::json!({"channel": channel, "region": phone.map(|p| p.region.clone()), "invite": invite}),
            ),
        };
        let expires = now + (self.config.code_ttl_s * 1000) as i64;
        let registration =
            NewRegistration { user: &user, code_hash: &code_hash, code_expires_at: expires, audit: &audit };
        let user_id = self.store.register(&registration, now).await?;
        if let Some(p) = phone {
            // The notice to a taken number costs a text as much as a code does.
            self.sms.sent(&p.region, &p.e164, sender.subnet.as_deref(), now as u64);
        }
        let text = if taken {
            let what = if channel == Channel::Sms { "phone number" } else { "address" };
            format!(
                "Someone tried to create a new account with this {what}, which already has one. If it was you, \
                 sign in instead (or reset your password). If not, you need do nothing."
            )
        } else {
            code_text(code.as_str(), self.config.code_ttl_s)
        };
        Ok((user_id, Delivery { message: Message { channel, to, text, user_id } }))
    }

    /// Send a fresh code to an account that is not verified yet. The answer is the
    /// same whether the account exists, is verified already, or is someone else's:
    /// only the budget of sends to the id asked about shows.
    pub async fn resend_code(
        &self,
        user_id: i64,
        client: Option<&Client>,
        proof: TextProof,
    ) -> Result<(), AccountError> {
        let sender = Sender { ip: client.map(Client::ip), subnet: client.map(|c| c.subnet().to_string()), proof };
        let now = unix_millis();
        self.sends_per_account
            .spend(&user_id, now as u64)
            .map_err(|retry_after| AccountError::TooManyAttempts { retry_after })?;
        let Some(user) = self.store.user(user_id).await? else { return Ok(()) };
        if user.status() != UserStatus::Unverified || self.claim_lapsed(&user, now) {
            return Ok(());
        }
        let (channel, to, field) = match (&user.phone_enc, &user.email_enc) {
            (Some(blob), _) => (Channel::Sms, self.decrypt("phone", blob)?, "phone"),
            (None, Some(blob)) => (Channel::Email, self.decrypt("email", blob)?, "email"),
            (None, None) => return Ok(()),
        };
        let to = String::from_utf8(to).map_err(|_| invalid("corrupt", "stored destination unreadable"))?;
        let normalized = match channel {
            Channel::Sms => to.clone(),
            Channel::Email => parse_email(&to).map(|e| e.normalized).unwrap_or_else(|_| to.clone()),
        };
        let destination = self.keys().blind_index(field, &normalized);
        if self.sends_per_destination.spend(&destination[..], now as u64).is_err() {
            return Ok(());
        }
        let region = user.phone_region.clone().unwrap_or_default();
        if channel == Channel::Sms {
            self.texts_allowed(&region, &to, &sender, now)?;
            self.sms.sent(&region, &to, sender.subnet.as_deref(), now as u64);
        }
        let code = self.put_code(user_id, CodePurpose::Verify, now).await?;
        let text = code_text(&code, self.config.code_ttl_s);
        self.notifier.send(&Message { channel, to, text, user_id }).await.inspect_err(code_not_sent)?;
        Ok(())
    }

    /// A fresh code of `purpose` for `user_id`, stored hashed; spent guesses carry over
    /// within the window.
    async fn put_code(&self, user_id: i64, purpose: CodePurpose, now: i64) -> Result<String, AccountError> {
        let code = tokens::VerificationCode::generate();
        // Keyed (HMAC) rather than a plain hash: six digits are too few to
        // survive a leaked database otherwise.
        let context = match purpose {
            CodePurpose::Verify => format!("code:{user_id}"),
            CodePurpose::Reset => format!("reset:{user_id}"),
        };
        let hash = self.keys().blind_index(&context, code.as_str());
        let new = NewCode {
            purpose,
            hash: &hash,
            expires_at: now + (self.config.code_ttl_s * 1000) as i64,
            window_ms: (self.config.code_window_s * 1000) as i64,
        };
        self.store.put_verification_code(user_id, new, now).await?;
        Ok(code.as_str().to_owned())
    }

    /// Spend one guess at `user_id`'s code of `purpose`. Over the window's budget the
    /// code stays spent until the window ends; a resend does not reset it.
    async fn check_code(&self, user_id: i64, purpose: CodePurpose, code: &str) -> Result<(), AccountError> {
        let code = code.trim();
        if code.len() > 16 {
            return Err(AccountError::InvalidCode);
        }
        let now = unix_millis();
        let Some((hash, attempts)) = self.store.attempt_verification_code(user_id, purpose, now).await? else {
            return Err(AccountError::InvalidCode);
        };
        if attempts > self.config.code_max_attempts {
            return Err(AccountError::TooManyAttempts { retry_after: Duration::from_secs(self.config.code_window_s) });
        }
        let context = match purpose {
            CodePurpose::Verify => format!("code:{user_id}"),
            CodePurpose::Reset => format!("reset:{user_id}"),
        };
        let expected = self.keys().blind_index(&context, code);
        if !tokens::constant_time_eq(&hash, &expected) {
            return Err(AccountError::InvalidCode);
        }
        Ok(())
    }

    /// Whether a text may go to `e164` now (see [`crate::sms`]).
    fn texts_allowed(&self, region: &str, e164: &str, sender: &Sender, now: i64) -> Result<(), AccountError> {
        match self.sms.check(region, e164, sender.subnet.as_deref(), sender.proof, now as u64) {
            Ok(()) => Ok(()),
            Err(Held::Paused) => Err(AccountError::Refused(crate::policy::RegistrationRefused::TextsPaused)),
            Err(Held::Proof) => Err(AccountError::Refused(crate::policy::RegistrationRefused::TextsNeedProof)),
            Err(Held::Budget(retry_after)) => Err(AccountError::TooManyAttempts { retry_after }),
        }
    }

    /// Texts sent and codes entered by country, for the metrics.
    pub fn sms_counts(&self) -> std::collections::BTreeMap<String, crate::sms::CountryCounts> {
        self.sms.counts()
    }

    /// True when an unverified account's claim is too old to verify or log in with.
    fn claim_lapsed(&self, user: &UserRow, now: i64) -> bool {
        user.status() == UserStatus::Unverified && user.created_at <= now - self.claims_ttl_ms()
    }

    fn claims_ttl_ms(&self) -> i64 {
        i64::try_from(self.config.unverified_claim_ttl_s.saturating_mul(1000)).unwrap_or(i64::MAX)
    }

    /// Prove ownership of the phone or address with the code that was sent. The
    /// first account to verify a number or address gets it; other unverified claims
    /// on it are dropped.
    pub async fn verify(&self, user_id: i64, code: &str, client: Option<&Client>) -> Result<(), AccountError> {
        let ip = client.map(Client::ip);
        let actor = format!("user:{user_id}");
        match self.check_code(user_id, CodePurpose::Verify, code).await {
            Ok(()) => {}
            Err(e) => {
                self.audit(&actor, "auth.verify", "failed", ip, Some(e.code()), None).await;
                return Err(e);
            }
        }
        let now = unix_millis();
        let user = self.store.user(user_id).await?.ok_or(AccountError::InvalidCode)?;
        if self.claim_lapsed(&user, now) {
            self.audit(&actor, "auth.verify", "refused", ip, Some("claim_lapsed"), None).await;
            return Err(AccountError::InvalidCode);
        }
        match self.store.verify_user(user_id, now).await {
            Ok(()) => {}
            Err(StoreError::Conflict(_)) => {
                self.audit(&actor, "auth.verify", "refused", ip, Some("already_registered"), None).await;
                return Err(AccountError::AlreadyRegistered);
            }
            Err(StoreError::NotFound(_)) => return Err(AccountError::InvalidCode),
            Err(e) => return Err(e.into()),
        }
        self.forget_principals();
        if let (Some(region), Some(blob)) = (&user.phone_region, &user.phone_enc)
            && let Ok(e164) = self.decrypt("phone", blob).map(|b| String::from_utf8_lossy(&b).into_owned())
        {
            self.sms.verified(region, &e164, client.map(|c| c.subnet().to_string()).as_deref(), now as u64);
        }
        self.audit(&actor, "auth.verify", "ok", ip, None, None).await;
        Ok(())
    }

    /// Check credentials (and MFA) and open a session. Failures back off per account
    /// and per address; a network the account has signed in from lately has its own
    /// count, so stuffing from elsewhere cannot lock the owner out.
    pub async fn login(&self, login: Login, client: Option<&Client>) -> Result<NewSession, AccountError> {
        let ip = client.map(Client::ip);
        let network = client.map(Client::subnet);
        check_len("password", &login.password, MAX_PASSWORD_BYTES)?;
        let keys = self.keys();
        let (field, normalized) = match (login.phone.as_deref().map(str::trim), login.email.as_deref().map(str::trim)) {
            (Some(p), _) if !p.is_empty() => {
                check_len("phone", p, MAX_IDENTIFIER)?;
                // An unparseable number cannot belong to an account: answer as for
                // a wrong password, after the same work.
                let e164 =
                    parse_phone(p, self.config.default_phone_region.as_deref()).map(|p| p.e164).unwrap_or_default();
                ("phone", e164)
            }
            (_, Some(e)) if !e.is_empty() => {
                check_len("email", e, MAX_IDENTIFIER)?;
                ("email", parse_email(e).map(|e| e.normalized).unwrap_or_default())
            }
            _ => return Err(invalid("identifier_required", "give the phone number or e-mail address of the account")),
        };
        let index = keys.blind_index(field, &normalized);
        let keys = LoginKeys { account: &index, network, address: ip };
        let known = match self.login_attempt(keys).await {
            Attempt::Go { known } => known,
            Attempt::Wait(retry_after) => {
                self.audit("anonymous", "auth.login", "refused", ip, Some("throttled"), None).await;
                return Err(AccountError::TooManyAttempts { retry_after });
            }
        };
        // The attempt is counted as a failure already; only what ends it decides otherwise.
        let account = (!normalized.is_empty()).then_some(&index[..]);
        let checked = self.check_login(login, field, account, ip).await;
        let outcome = match &checked {
            Ok(_) => Some(Outcome::Success { known }),
            Err(AccountError::InvalidCredentials | AccountError::InvalidCode) => None,
            Err(_) => Some(Outcome::Refund),
        };
        if let Some(outcome) = outcome {
            self.login_settle(keys, outcome).await;
        }
        let (user_id, mfa_enrollment_required) = checked?;
        let token = tokens::SessionToken::generate().as_str().to_owned();
        let expires_in = Duration::from_secs(self.config.session_ttl_s);
        let now = unix_millis();
        self.store.create_session(&tokens::hash(&token), user_id, now, now + expires_in.as_millis() as i64).await?;
        self.audit(&format!("user:{user_id}"), "auth.login", "ok", ip, None, None).await;
        Ok(NewSession { user_id, token, expires_in, mfa_enrollment_required })
    }

    /// Password, account state and second factor; `Ok((user, mfa_enrollment_required))`.
    /// `index` is `None` for an identifier no account can have.
    async fn check_login(
        &self,
        login: Login,
        field: &str,
        index: Option<&[u8]>,
        ip: Option<IpAddr>,
    ) -> Result<(i64, bool), AccountError> {
        let user = match index {
            None => None,
            Some(index) => {
                let id = if field == "phone" { Identifier::Phone(index) } else { Identifier::Email(index) };
                self.store.user_by_identifier(id, unix_millis() - self.claims_ttl_ms()).await?
            }
        };
        let Some(user) = user else {
            // Same cost as a real check, so timing does not reveal who has an account.
            self.hasher.verify_dummy(login.password).await?;
            self.audit("anonymous", "auth.login", "failed", ip, Some("unknown_account"), None).await;
            return Err(AccountError::InvalidCredentials);
        };
        if !self.hasher.verify(login.password, user.password_hash.clone()).await? {
            self.audit(&format!("user:{}", user.id), "auth.login", "failed", ip, Some("bad_password"), None).await;
            return Err(AccountError::InvalidCredentials);
        }
        if user.status() == UserStatus::Suspended {
            self.audit(&format!("user:{}", user.id), "auth.login", "refused", ip, Some("suspended"), None).await;
            return Err(AccountError::Suspended);
        }
        match &user.totp_secret_enc {
            Some(secret) => {
                self.check_second_factor(&user, secret, login.totp.as_deref(), login.recovery_code.as_deref(), ip)
                    .await?;
                Ok((user.id, false))
            }
            None => Ok((user.id, user.mfa_required)),
        }
    }

    /// Lets a fleet count login attempts across nodes. Set once, at start.
    pub fn share_logins(&self, shared: Arc<dyn SharedLogins>) {
        let _ = self.shared_logins.set(shared);
    }

    async fn login_attempt(&self, keys: LoginKeys<'_>) -> Attempt {
        if let Some(shared) = self.shared_logins.get()
            && let Ok(attempt) = shared.attempt(keys, self.logins.rules()).await
        {
            return attempt;
        }
        self.logins.attempt(keys, unix_millis() as u64)
    }

    async fn login_settle(&self, keys: LoginKeys<'_>, outcome: Outcome) {
        if let Some(shared) = self.shared_logins.get()
            && shared.settle(keys, self.logins.rules(), outcome).await.is_ok()
        {
            return;
        }
        self.logins.settle(keys, outcome, unix_millis() as u64);
    }

    async fn check_second_factor(
        &self,
        user: &UserRow,
        secret_blob: &[u8],
        totp_code: Option<&str>,
        recovery_code: Option<&str>,
        ip: Option<IpAddr>,
    ) -> Result<(), AccountError> {
        let actor = format!("user:{}", user.id);
        if let Some(code) = totp_code.map(str::trim).filter(|c| !c.is_empty()) {
            let secret = totp_secret(&self.decrypt("totp", secret_blob)?)?;
            let last = user.totp_last_step.and_then(|s| u64::try_from(s).ok());
            let unix = (unix_millis() / 1000) as u64;
            if let Some(step) = totp::verify(&secret, code, unix, last)
                && self.store.advance_totp_step(user.id, step as i64).await?
            {
                self.audit(&actor, "auth.mfa", "ok", ip, Some("totp"), None).await;
                return Ok(());
            }
            self.audit(&actor, "auth.mfa", "failed", ip, Some("bad_totp"), None).await;
            return Err(AccountError::InvalidCode);
        }
        if let Some(code) = recovery_code.filter(|c| !c.trim().is_empty()) {
            let hash = recovery::hash_input(code).ok_or(AccountError::InvalidCode)?;
            if self.store.use_recovery_code(user.id, &hash, unix_millis()).await? {
                self.audit(&actor, "auth.mfa", "ok", ip, Some("recovery_code"), None).await;
                return Ok(());
            }
            self.audit(&actor, "auth.mfa", "failed", ip, Some("bad_recovery_code"), None).await;
            return Err(AccountError::InvalidCode);
        }
        Err(AccountError::MfaRequired)
    }

    /// Whether this account may use `/v1`: verified ones may; unverified ones only
    /// while registration is open and the operator lets them.
    fn may_infer(&self, user: &UserRow) -> bool {
        user.status() != UserStatus::Unverified
            || (self.config.unverified_inference && matches!(self.policy(), RegistrationPolicy::Open))
    }

    /// The holder of a session token, if the session is live.
    pub async fn session_principal(&self, token: &str) -> Result<Option<Arc<Principal>>, AccountError> {
        if token.len() > 128 {
            return Ok(None);
        }
        if let Some(known) = self.principals.get(Credential::Session, token, Instant::now()) {
            return Ok(known);
        }
        let looked_up = self.session_principal_from_store(token).await;
        let principal = match self.or_stale(looked_up, Credential::Session, token)? {
            Lookup::Stale(p) => return Ok(Some(p)),
            Lookup::Fresh(p) => p.map(Arc::new),
        };
        self.principals.put(Credential::Session, token, principal.clone(), Instant::now());
        Ok(principal)
    }

    async fn session_principal_from_store(&self, token: &str) -> Result<Option<Principal>, AccountError> {
        let Some(session) = self.store.session(&tokens::hash(token), unix_millis()).await? else { return Ok(None) };
        let Some(user) = self.store.user(session.user_id).await? else { return Ok(None) };
        if user.status() == UserStatus::Suspended {
            return Ok(None);
        }
        let mut scopes = vec!["account".to_owned()];
        if !needs_mfa_enrolment(&user) && self.may_infer(&user) {
            scopes.push("inference".to_owned());
        }
        let tenure = tenure_of(&user);
        Ok(Some(Principal {
            user_id: user.id,
            status: user.status(),
            key_prefix: None,
            scopes,
            rpm_limit: None,
            tenure,
        }))
    }

    /// The holder of an API key, if the key is valid and live.
    /// A store lookup's answer or, when the store cannot be reached, the holder this node
    /// remembered for `presented` within the grace.
    fn or_stale(
        &self,
        looked_up: Result<Option<Principal>, AccountError>,
        kind: Credential,
        presented: &str,
    ) -> Result<Lookup, AccountError> {
        match looked_up {
            Ok(p) => Ok(Lookup::Fresh(p)),
            Err(AccountError::Store(e)) if e.is_unavailable() => {
                let grace = Duration::from_secs(self.config.credential_grace_s);
                let Some(p) = self.principals.stale(kind, presented, Instant::now(), grace) else {
                    return Err(AccountError::Store(e));
                };
                // The binary's log layer limits a repeated warning to a few lines a second.
                tracing::warn!(error = %e, "the store is unreachable: known credentials are served from memory");
                Ok(Lookup::Stale(p))
            }
            Err(e) => Err(e),
        }
    }

    /// The holder of an API key or session token as far as this node's credential cache
    /// knows it, without any lookup: `None` when the cache cannot say.
    pub fn cached_principal(&self, api_key: bool, presented: &str) -> Option<Option<Arc<Principal>>> {
        let (kind, fits) = if api_key {
            (Credential::ApiKey, presented.len() == tokens::API_KEY_LEN)
        } else {
            (Credential::Session, presented.len() <= 128)
        };
        if !fits {
            return Some(None);
        }
        self.principals.get(kind, presented, Instant::now())
    }

    pub async fn key_principal(&self, presented: &str) -> Result<Option<Arc<Principal>>, AccountError> {
        // The cache first: it only holds keys that parsed, and a hit is every
        // request of a busy key, so parsing (and copying) it again is waste.
        // The length check keeps oversized junk from being hashed for the lookup.
        if presented.len() != tokens::API_KEY_LEN {
            return Ok(None);
        }
        if let Some(known) = self.principals.get(Credential::ApiKey, presented, Instant::now()) {
            return Ok(known);
        }
        let Ok(parsed) = tokens::ApiKey::parse(presented) else { return Ok(None) };
        let looked_up = self.key_principal_from_store(&parsed).await;
        let principal = match self.or_stale(looked_up, Credential::ApiKey, presented)? {
            Lookup::Stale(p) => return Ok(Some(p)),
            Lookup::Fresh(p) => p.map(Arc::new),
        };
        self.principals.put(Credential::ApiKey, presented, principal.clone(), Instant::now());
        Ok(principal)
    }

    async fn key_principal_from_store(&self, parsed: &tokens::ParsedKey) -> Result<Option<Principal>, AccountError> {
        let prefix = format!("pal_{}", parsed.prefix);
        let Some(row) = self.store.api_key_by_prefix(&prefix).await? else { return Ok(None) };
        let Ok(stored) = <[u8; 32]>::try_from(row.secret_hash.as_slice()) else { return Ok(None) };
        if row.revoked_at.is_some() || !parsed.verify(&stored) {
            return Ok(None);
        }
        let Some(user) = self.store.user(row.user_id).await? else { return Ok(None) };
        if user.status() == UserStatus::Suspended {
            return Ok(None);
        }
        let mut scopes: Vec<String> = row.scopes.split_whitespace().map(str::to_owned).collect();
        if needs_mfa_enrolment(&user) || !self.may_infer(&user) {
            scopes.retain(|s| s != "inference");
        }
        let rpm_limit = row.rpm_limit.and_then(|n| u32::try_from(n).ok()).filter(|n| *n > 0);
        let tenure = tenure_of(&user);
        Ok(Some(Principal {
            user_id: user.id,
            status: user.status(),
            key_prefix: Some(row.prefix),
            scopes,
            rpm_limit,
            tenure,
        }))
    }

    pub async fn logout(&self, token: &str, user_id: i64, client: Option<&Client>) -> Result<(), AccountError> {
        let ip = client.map(Client::ip);
        self.store.delete_session(user_id, &tokens::hash(token)).await?;
        self.forget_principals();
        self.audit(&format!("user:{user_id}"), "auth.logout", "ok", ip, None, None).await;
        Ok(())
    }

    pub async fn sessions(
        &self,
        user_id: i64,
        current_token: Option<&str>,
    ) -> Result<Vec<SessionListing>, AccountError> {
        let current = current_token.map(tokens::hash);
        let rows = self.store.sessions_of(user_id, unix_millis()).await?;
        Ok(rows
            .into_iter()
            .map(|s| SessionListing {
                id: session_id(&s.token_hash),
                created_at: s.created_at,
                expires_at: s.expires_at,
                current: current.as_ref().is_some_and(|c| c[..] == s.token_hash[..]),
            })
            .collect())
    }

    /// Revoke one of the user's sessions by its listed id.
    pub async fn revoke_session(&self, user_id: i64, id: &str, client: Option<&Client>) -> Result<(), AccountError> {
        let ip = client.map(Client::ip);
        let rows = self.store.sessions_of(user_id, unix_millis()).await?;
        let Some(row) = rows.into_iter().find(|s| session_id(&s.token_hash) == id) else {
            return Err(AccountError::NotFound);
        };
        self.store.delete_session(user_id, &row.token_hash).await?;
        self.forget_principals();
        self.audit(&format!("user:{user_id}"), "auth.session.revoke", "ok", ip, None, None).await;
        Ok(())
    }

    /// Create an API key; the plain key is returned once and never stored.
    /// `rpm_limit` is the key's own requests-per-minute budget (`None`: the default).
    pub async fn create_key(
        &self,
        user_id: i64,
        name: &str,
        scopes: &str,
        rpm_limit: Option<u32>,
        actor: &str,
    ) -> Result<(String, String), AccountError> {
        let name = name.trim();
        if name.is_empty() || name.chars().count() > 64 || name.chars().any(char::is_control) {
            return Err(invalid("invalid_name", "a key name is 1 to 64 printable characters"));
        }
        for scope in scopes.split_whitespace() {
            if !["inference", "account"].contains(&scope) {
                return Err(invalid("invalid_scope", format!("unknown scope `{scope}`; known: inference, account")));
            }
        }
        let key = tokens::ApiKey::generate();
        let prefix = format!("pal_{}", key.prefix());
        let row = NewApiKey {
            user_id,
            prefix: prefix.clone(),
            secret_hash: key.secret_hash().to_vec(),
            name: name.to_owned(),
            scopes: if scopes.trim().is_empty() { "inference".to_owned() } else { scopes.trim().to_owned() },
            rpm_limit: rpm_limit.map(i64::from),
        };
        self.store.create_api_key(&row, unix_millis()).await?;
        self.audit(actor, "key.create", "ok", None, None, Some(serde_json::json!({"prefix": prefix, "user": user_id})))
            .await;
        Ok((prefix, key.as_str().to_owned()))
    }

    pub async fn keys_of(&self, user_id: i64) -> Result<Vec<KeyListing>, AccountError> {
        Ok(self.store.api_keys_of(user_id).await?.into_iter().map(listing).collect())
    }

    pub async fn revoke_key(&self, prefix: &str, owner: Option<i64>, actor: &str) -> Result<(), AccountError> {
        if !self.store.revoke_api_key(prefix, owner, unix_millis()).await? {
            return Err(AccountError::NotFound);
        }
        self.forget_principals();
        self.audit(actor, "key.revoke", "ok", None, None, Some(serde_json::json!({"prefix": prefix}))).await;
        Ok(())
    }

    /// Whether `user_id`'s use today still needs recording, remembering that it will be. The
    /// memory is bounded: when full it is forgotten, which costs only a repeated, idempotent
    /// store write per account.
    pub fn first_use_today(&self, user_id: i64, now: i64) -> bool {
        let day = now.div_euclid(86_400_000);
        let mut seen = self.used_today.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if seen.get(&user_id) == Some(&day) {
            return false;
        }
        if seen.len() >= USED_TODAY_MEMORY {
            seen.clear();
        }
        seen.insert(user_id, day);
        true
    }

    /// Counts today as a day of use of `user_id` (see [`Self::first_use_today`]).
    pub async fn record_use(&self, user_id: i64, now: i64) -> Result<(), AccountError> {
        self.store.record_use(user_id, now).await?;
        Ok(())
    }

    /// Pins `user_id` to `tier`, or lifts its pin with `None`; audited.
    pub async fn pin_tier(&self, user_id: i64, tier: Option<TrustTier>, actor: &str) -> Result<(), AccountError> {
        if !self.store.set_tier_pin(user_id, tier.map(TrustTier::as_str)).await? {
            return Err(AccountError::NotFound);
        }
        self.principals.clear();
        let action = if tier.is_some() { "account.tier.pin" } else { "account.tier.lift" };
        let detail = serde_json::json!({"user": user_id, "tier": tier.map(TrustTier::as_str)});
        self.audit(actor, action, "ok", None, None, Some(detail)).await;
        Ok(())
    }

    /// Flags `ids` as one cohort (`reason` a short code); audited. Returns how many were new.
    pub async fn flag_cohort(&self, ids: &[i64], reason: &str, actor: &str) -> Result<u64, AccountError> {
        let flagged = self.store.flag_users(ids, reason, unix_millis()).await?;
        if flagged > 0 {
            // Only these accounts' cached credentials: clearing them all, as often as a
            // farm's accounts are found, would send every member back to the store.
            self.principals.forget_users(ids);
            let detail = serde_json::json!({"users": ids, "newly_flagged": flagged});
            self.audit(actor, "account.cohort.flag", "ok", None, Some(reason), Some(detail)).await;
        }
        Ok(flagged)
    }

    /// Clears `user_id`'s cohort flag; audited.
    pub async fn clear_flag(&self, user_id: i64, actor: &str) -> Result<(), AccountError> {
        if !self.store.clear_flag(user_id).await? {
            return Err(AccountError::NotFound);
        }
        self.principals.clear();
        self.audit(actor, "account.cohort.clear", "ok", None, None, Some(serde_json::json!({"user": user_id}))).await;
        Ok(())
    }

    /// Flagged accounts, newest flag first.
    pub async fn flagged(&self, limit: i64) -> Result<Vec<FlagListing>, AccountError> {
        let rows = self.store.flagged_users(limit.clamp(1, 1000)).await?;
        Ok(rows
            .into_iter()
            .map(|u| FlagListing {
                user_id: u.id,
                created_at: u.created_at,
                flagged_at: u.flagged_at.unwrap_or_default(),
                reason: u.flag_reason.unwrap_or_default(),
                tier_pin: u.tier_pin,
            })
            .collect())
    }

    pub async fn require_mfa(&self, user_id: i64, required: bool, actor: &str) -> Result<(), AccountError> {
        self.store.user(user_id).await?.ok_or(AccountError::NotFound)?;
        self.store.set_mfa_required(user_id, required).await?;
        self.forget_principals();
        self.audit(
            actor,
            "auth.mfa.require",
            "ok",
            None,
            None,
            Some(serde_json::json!({"user": user_id, "required": required})),
        )
        .await;
        Ok(())
    }

    /// Operator action: an invite code for invite-only registration.
    pub async fn create_invite(&self, actor: &str) -> Result<String, AccountError> {
        let code = tokens::invite_code();
        let now = unix_millis();
        let hash = self.keys().blind_index("invite", &code);
        self.store.create_invite(&hash, now, now + (self.config.invite_ttl_s * 1000) as i64).await?;
        self.audit(actor, "registration.invite", "ok", None, None, None).await;
        Ok(code)
    }

    /// Re-encrypt every stored personal field under the current key. Safe to run
    /// while serving: rows are rewritten one by one, and old keys stay readable.
    pub async fn reencrypt_all(&self) -> Result<u64, AccountError> {
        let keys = self.keys();
        let mut after = 0;
        let mut rewritten = 0;
        loop {
            let batch = self.store.users_after(after, 200).await?;
            let Some(last) = batch.last() else { break };
            after = last.id;
            for user in batch {
                let stale = [&user.phone_enc, &user.email_enc, &user.totp_secret_enc]
                    .iter()
                    .any(|b| b.as_deref().is_some_and(|b| keys.needs_rotation(b)));
                if !stale {
                    continue;
                }
                let again = |field: &str, blob: &Option<Vec<u8>>| -> Result<Option<Vec<u8>>, AccountError> {
                    blob.as_deref().map(|b| Ok(keys.encrypt(field, &keys.decrypt(field, b)?))).transpose()
                };
                self.store
                    .reencrypt_user(
                        user.id,
                        again("phone", &user.phone_enc)?.as_deref(),
                        again("email", &user.email_enc)?.as_deref(),
                        again("totp", &user.totp_secret_enc)?.as_deref(),
                    )
                    .await?;
                rewritten += 1;
            }
        }
        // Operators' authenticator secrets are under the same key.
        for operator in self.store.operators().await? {
            if let Some(sealed) = operator.totp_secret_enc.as_deref().filter(|b| keys.needs_rotation(b)) {
                let again = keys.encrypt("operator-totp", &keys.decrypt("operator-totp", sealed)?);
                self.store.set_operator_totp_secret(operator.id, &again).await?;
                rewritten += 1;
            }
        }
        self.audit("operator", "keys.rotate", "ok", None, None, Some(serde_json::json!({"rewritten": rewritten})))
            .await;
        Ok(rewritten)
    }
}

fn listing(row: store::ApiKeyRow) -> KeyListing {
    KeyListing {
        prefix: row.prefix,
        name: row.name,
        scopes: row.scopes,
        created_at: row.created_at,
        last_used_at: row.last_used_at,
        revoked_at: row.revoked_at,
    }
}

/// A session's public id: a short hash of its token hash, safe to show.
fn session_id(token_hash: &[u8]) -> String {
    crate::notify::hex(&token_hash[..8.min(token_hash.len())])
}

/// An account the operator requires MFA of, without a second factor yet: it
/// may manage itself (to enrol) but not use the API.
/// What a registration sends: a code, or the owner's notice.
struct Delivery {
    message: Message,
}

/// The caller is answered `notification_failed`; the operator reads why here (a
/// `NotifyError` holds neither the destination nor the SMTP URL).
fn code_not_sent(e: &crate::notify::NotifyError) {
    tracing::warn!(error = %e, "a verification code could not be sent");
}

fn code_text(code: &str, ttl_s: u64) -> String {
    format!("Your Palisade code is {code}. It expires in {} minutes.", ttl_s / 60)
}

fn needs_mfa_enrolment(user: &UserRow) -> bool {
    user.mfa_required && user.totp_secret_enc.is_none()
}

fn totp_secret(raw: &[u8]) -> Result<totp::TotpSecret, AccountError> {
    let bytes = <[u8; totp::SECRET_LEN]>::try_from(raw)
        .map_err(|_| AccountError::Internal("stored TOTP secret has the wrong length".into()))?;
    Ok(totp::TotpSecret::from_bytes(bytes))
}

fn check_len(field: &'static str, value: &str, max: usize) -> Result<(), AccountError> {
    if value.len() > max {
        return Err(invalid("too_long", format!("`{field}` is too long")));
    }
    Ok(())
}
/// How long a network stays known for an account after a successful login there.
const KNOWN_NETWORK_MEMORY: Duration = Duration::from_secs(30 * 24 * 3600);
