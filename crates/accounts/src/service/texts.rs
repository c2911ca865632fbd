//! What the SMS breaker's state means for the rest of the service, reviewed about once a
//! second by the gateway: every hold and release of a range, country or subnet is audited;
//! the status page reads what is held; and, where the operator allows it
//! (`sms_auto_narrow`), an open registration policy narrows itself to phone numbers of the
//! home regions while texts to another whole country are paused, and opens again once
//! conversion has recovered: the move an operator makes by hand under SMS pumping.
//!
//! The policy to go back to is kept in the store beside the policy itself, so another node,
//! or this one after a restart, can open registration again.

use std::time::Duration;

use serde_json::json;

use super::{AccountError, Accounts};
use crate::policy::{Region, RegistrationPolicy};
use crate::send_budget::SendGate;
use crate::sms::{Review, Scope, TextsHeld};
use crate::unix_millis;

/// Where the policy before an automatic narrowing is kept ("" when not narrowed).
const RESTORE_KEY: &str = "registration_policy_before_narrowing";
/// What sign-up and the status page say while narrowed.
pub const NARROWED_MESSAGE: &str =
    "Sign-ups by text to other countries are paused while fraudulent sign-ups are being stopped.";
/// Longest hold of a narrowing however often it trips again.
const MAX_HOLD: Duration = Duration::from_secs(24 * 3600);
const DAY_MS: i64 = 24 * 3600 * 1000;

fn gate_word(gate: SendGate) -> &'static str {
    match gate {
        SendGate::Open => "open",
        SendGate::ProofOfWork => "proof_required",
        SendGate::Paused => "paused",
    }
}

impl Accounts {
    /// What the breaker holds now (as of the last review).
    pub fn texts_held(&self) -> TextsHeld {
        self.texts.lock().unwrap_or_else(|e| e.into_inner()).held
    }

    /// Re-read the breaker: audit what changed, and narrow or reopen registration.
    pub async fn review_texts(&self) -> Result<TextsHeld, AccountError> {
        let now = unix_millis();
        let review = self.sms.review(now as u64);
        for change in &review.changes {
            let detail = json!({
                "scope": change.scope,
                "key": change.key,
                "from": gate_word(change.from),
                "sent": change.sent.round(),
                "entered": change.verified.round(),
            });
            self.audit("sms-breaker", "sms.breaker", gate_word(change.to), None, None, Some(detail)).await;
        }
        self.adopt_stored_narrowing(now).await?;
        if self.config.sms_auto_narrow {
            self.narrow_or_reopen(&review, now).await?;
        }
        let held = TextsHeld {
            proof: review.held.iter().filter(|h| h.2 == SendGate::ProofOfWork).count(),
            paused: review.held.iter().filter(|h| h.2 == SendGate::Paused).count(),
            narrowed: self.texts.lock().unwrap_or_else(|e| e.into_inner()).narrowed.is_some(),
        };
        self.texts.lock().unwrap_or_else(|e| e.into_inner()).held = held;
        Ok(held)
    }

    fn home_regions(&self) -> Vec<Region> {
        self.config.sms_home_regions.iter().filter_map(|r| Region::new(r).ok()).collect()
    }

    /// Pumping that narrowing answers: a whole country outside the home regions paused,
    /// or codes not being entered anywhere.
    fn pumping_abroad(&self, review: &Review) -> bool {
        let home = self.home_regions();
        let abroad = review.held.iter().any(|(scope, key, gate)| {
            *scope == Scope::Country && *gate == SendGate::Paused && !home.iter().any(|r| r.as_str() == key)
        });
        abroad || review.conversion.is_some_and(|c| c < self.config.sms_pause_below)
    }

    async fn narrow_or_reopen(&self, review: &Review, now: i64) -> Result<(), AccountError> {
        let home = self.home_regions();
        if home.is_empty() {
            return Ok(());
        }
        let pumping = self.pumping_abroad(review);
        let current = self.policy();
        let (narrowed, hold_until) = {
            let state = self.texts.lock().unwrap_or_else(|e| e.into_inner());
            (state.narrowed.clone(), state.hold_until_ms)
        };
        match narrowed {
            None if pumping && current == RegistrationPolicy::Open => {
                let narrow = RegistrationPolicy::Regions { allow: home, message: Some(NARROWED_MESSAGE.to_owned()) };
                let restore = serde_json::to_string(&current).map_err(|e| AccountError::Internal(e.to_string()))?;
                self.store.set_meta(RESTORE_KEY, &restore).await?;
                self.set_policy(narrow.clone(), "sms-breaker").await?;
                let mut state = self.texts.lock().unwrap_or_else(|e| e.into_inner());
                state.trips = if now - state.last_trip_ms < DAY_MS { state.trips + 1 } else { 1 };
                state.last_trip_ms = now;
                state.hold_until_ms = now + self.hold(state.trips);
                state.narrowed = Some((narrow.clone(), current));
                state.looked_for = Some(narrow);
                tracing::warn!(
                    trips = state.trips,
                    "texts abroad are not being entered: registration narrowed to the home regions"
                );
            }
            Some((narrow, restore)) if !pumping && now >= hold_until => {
                // An operator who changed the policy meanwhile has the last word.
                if current == narrow {
                    self.set_policy(restore.clone(), "sms-breaker").await?;
                    tracing::warn!("conversion has recovered: registration opened again");
                }
                self.store.set_meta(RESTORE_KEY, "").await?;
                let mut state = self.texts.lock().unwrap_or_else(|e| e.into_inner());
                state.narrowed = None;
                state.looked_for = Some(self.policy());
            }
            _ => {}
        }
        Ok(())
    }

    /// One breaker window, doubled for each trip within a day.
    fn hold(&self, trips: u32) -> i64 {
        let window = Duration::from_secs(self.config.sms_breaker_window_s.max(1));
        let hold = window.saturating_mul(1 << trips.saturating_sub(1).min(16)).min(MAX_HOLD);
        i64::try_from(hold.as_millis()).unwrap_or(i64::MAX)
    }

    /// A narrowing another node (or this one before a restart) made: learnt from the store
    /// once per policy seen, so this node can open registration again too.
    async fn adopt_stored_narrowing(&self, now: i64) -> Result<(), AccountError> {
        let current = self.policy();
        {
            let state = self.texts.lock().unwrap_or_else(|e| e.into_inner());
            if state.looked_for.as_ref() == Some(&current) || state.narrowed.is_some() {
                return Ok(());
            }
        }
        let stored = match &current {
            RegistrationPolicy::Open => None,
            _ => self.store.meta(RESTORE_KEY).await?.filter(|s| !s.is_empty()),
        };
        let restore = stored.and_then(|json| serde_json::from_str::<RegistrationPolicy>(&json).ok());
        let mut state = self.texts.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(restore) = restore {
            state.hold_until_ms = now + self.hold(1);
            state.narrowed = Some((current.clone(), restore));
        }
        state.looked_for = Some(current);
        Ok(())
    }
}
