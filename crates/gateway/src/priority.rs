//! Which priority class and trust tier a `/v1` request belongs to, decided after
//! identity: verified accounts and their keys are `member`, ranked inside the class
//! by their trust tier (established, standard, recent: see `accounts::tier`), and a
//! verified account created during an attack (or just before it) or flagged with a
//! cohort drops to `newcomer`; accounts that have not proven their phone or e-mail
//! are `newcomer`; everyone else is `anonymous`. Configuration can pin a key's class
//! (a paying customer, an internal tool) and can cap a route's class (say, batch
//! embeddings never above `newcomer`).

use std::collections::BTreeMap;

use accounts::service::Principal;
use accounts::tier::{TierConfig, TierLimits, TierReason, TrustTier};
use admission::{PriorityClass, Tier};
use serde::{Deserialize, Serialize};
use shield::Client;
use store::UserStatus;

use crate::validation::InvalidField;

/// The `[priority]` section.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct PriorityConfig {
    /// API key prefix (`pal_xxxxxxxx`) → the class its requests get.
    pub keys: BTreeMap<String, PriorityClass>,
    /// Request path → the most important class a request on it can have.
    pub routes: BTreeMap<String, PriorityClass>,
    /// When an account counts as established or recent (`[priority.tiers]`).
    pub tiers: TierConfig,
    /// What each trust tier may do (`[priority.tier_limits]`).
    pub tier_limits: TierLimits,
}

/// Where a request goes in admission, and the trust decision behind it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Placement {
    pub class: PriorityClass,
    pub tier: Tier,
    /// The account's trust tier and why, when the class came from it.
    pub trust: Option<(TrustTier, TierReason)>,
}

impl Placement {
    /// Requests one account may have in flight and queued at its trust tier.
    pub fn max_in_flight(&self, limits: &TierLimits) -> Option<u32> {
        self.trust.map(|(tier, _)| limits.max_in_flight.get(tier))
    }

    /// How many units of the account's request rate and token budget one unit costs at its
    /// trust tier: the inverse of the tier's budget fraction (1 when no tier applies).
    pub fn budget_cost(&self, limits: &TierLimits) -> f64 {
        self.trust.map_or(1.0, |(tier, _)| 1.0 / limits.budget_fraction.get(tier))
    }
}

/// A trust tier's place in admission: the member tiers stay members, ranked; a demoted
/// account joins the newcomer class at its lowest tier, below genuine newcomers.
fn admission_place(tier: TrustTier) -> (PriorityClass, Tier) {
    match tier {
        TrustTier::Established => (PriorityClass::Member, Tier::Established),
        TrustTier::Standard => (PriorityClass::Member, Tier::Standard),
        TrustTier::Recent => (PriorityClass::Member, Tier::Recent),
        TrustTier::Newcomer => (PriorityClass::Newcomer, Tier::Recent),
    }
}

impl PriorityConfig {
    pub fn validate(&self, out: &mut Vec<InvalidField>) {
        for prefix in self.keys.keys() {
            if !prefix.starts_with("pal_") {
                out.push(InvalidField {
                    field: format!("priority.keys.{prefix}"),
                    reason: "a key is named by its prefix, e.g. `pal_ab12cd34`".to_owned(),
                });
            }
        }
        for path in self.routes.keys() {
            if !path.starts_with('/') {
                out.push(InvalidField {
                    field: format!("priority.routes.{path}"),
                    reason: "a route is a path starting with `/`".to_owned(),
                });
            }
        }
        for (field, reason) in self
            .tiers
            .validate("priority.tiers")
            .into_iter()
            .chain(self.tier_limits.validate("priority.tier_limits"))
            .map(|e| e.split_once(' ').map(|(f, r)| (f.to_owned(), r.to_owned())).unwrap_or((e, String::new())))
        {
            out.push(InvalidField { field, reason });
        }
    }

    /// The class and tier of a request on `path` from `who` at `now` (Unix ms), with
    /// `attack_since` the start of the current attack, if any.
    pub fn place(&self, who: Option<&Principal>, path: &str, now: i64, attack_since: Option<i64>) -> Placement {
        let mut placement = match who {
            None => Placement { class: PriorityClass::Anonymous, tier: Tier::Standard, trust: None },
            Some(p) => match p.key_prefix.as_deref().and_then(|prefix| self.keys.get(prefix)) {
                // The operator vouched for this key by name: trusted within its class.
                Some(class) => Placement { class: *class, tier: Tier::Established, trust: None },
                None if p.status == UserStatus::Active => {
                    let trust = self.tiers.decide(&p.tenure, now, attack_since);
                    let (class, tier) = admission_place(trust.0);
                    Placement { class, tier, trust: Some(trust) }
                }
                None => Placement { class: PriorityClass::Newcomer, tier: Tier::Standard, trust: None },
            },
        };
        if let Some(cap) = self.routes.get(path) {
            // Ord puts the most important class first: the cap is the larger value.
            placement.class = placement.class.max(*cap);
        }
        placement
    }
}

/// Whose share a request counts against for fairness inside its class: the account,
/// or for anonymous traffic the client's subnet, so one network cannot take the whole
/// anonymous allowance.
pub fn fairness_key(who: Option<&Principal>, client: &Client) -> u64 {
    match who {
        Some(p) => p.user_id as u64,
        None => client.subnet_digest(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn principal(status: UserStatus, key: Option<&str>) -> Principal {
        Principal {
            user_id: 7,
            status,
            key_prefix: key.map(str::to_owned),
            scopes: vec!["inference".into()],
            rpm_limit: None,
            tenure: Default::default(),
        }
    }

    const DAY: i64 = 86_400_000;

    impl PriorityConfig {
        fn classify(&self, who: Option<&Principal>, path: &str) -> PriorityClass {
            self.place(who, path, DAY, None).class
        }
    }

    #[test]
    fn tenure_ranks_members_and_an_attack_demotes_fresh_accounts() {
        let cfg = PriorityConfig::default();
        let now = 1_000 * DAY;
        let mut old = principal(UserStatus::Active, None);
        old.tenure = accounts::tier::Tenure {
            created_at: now - 90 * DAY,
            first_used_at: Some(now - 80 * DAY),
            used_days: 20,
            ..Default::default()
        };
        let mut fresh = principal(UserStatus::Active, None);
        fresh.tenure.created_at = now - 600_000;
        let path = "/v1/chat/completions";
        let placed = cfg.place(Some(&old), path, now, None);
        assert_eq!((placed.class, placed.tier), (PriorityClass::Member, Tier::Established));
        assert_eq!(placed.max_in_flight(&cfg.tier_limits), Some(16));
        let placed = cfg.place(Some(&fresh), path, now, None);
        assert_eq!((placed.class, placed.tier), (PriorityClass::Member, Tier::Recent));
        assert_eq!(placed.budget_cost(&cfg.tier_limits), 2.0);
        let attack = Some(now - 60_000);
        let placed = cfg.place(Some(&fresh), path, now, attack);
        assert_eq!((placed.class, placed.tier), (PriorityClass::Newcomer, Tier::Recent));
        assert_eq!(placed.trust, Some((TrustTier::Newcomer, TierReason::CreatedNearAttack)));
        assert_eq!(cfg.place(Some(&old), path, now, attack).tier, Tier::Established);
        assert_eq!(cfg.place(None, path, now, attack).trust, None);
    }

    #[test]
    fn bad_tier_settings_name_their_field() {
        let mut cfg = PriorityConfig::default();
        cfg.tier_limits.budget_fraction.recent = 0.0;
        let mut out = Vec::new();
        cfg.validate(&mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].field, "priority.tier_limits.budget_fraction.recent");
    }

    #[test]
    fn identity_decides_and_config_pins_keys_and_caps_routes() {
        let mut cfg = PriorityConfig::default();
        assert_eq!(cfg.classify(None, "/v1/chat/completions"), PriorityClass::Anonymous);
        let member = principal(UserStatus::Active, Some("pal_aaaa"));
        let newcomer = principal(UserStatus::Unverified, None);
        assert_eq!(cfg.classify(Some(&member), "/v1/chat/completions"), PriorityClass::Member);
        assert_eq!(cfg.classify(Some(&newcomer), "/v1/chat/completions"), PriorityClass::Newcomer);
        cfg.keys.insert("pal_aaaa".into(), PriorityClass::Operator);
        cfg.routes.insert("/v1/embeddings".into(), PriorityClass::Newcomer);
        assert_eq!(cfg.classify(Some(&member), "/v1/chat/completions"), PriorityClass::Operator);
        assert_eq!(cfg.classify(Some(&member), "/v1/embeddings"), PriorityClass::Newcomer);
        assert_eq!(cfg.classify(None, "/v1/embeddings"), PriorityClass::Anonymous);
    }

    #[test]
    fn anonymous_fairness_is_per_subnet_and_never_an_account_id() {
        let client = |ip: &str| Client::new(ip.parse().unwrap(), shield::SubnetPrefixes::default());
        let (a, b, c) = (client("10.1.2.3"), client("10.1.2.200"), client("10.1.3.3"));
        assert_eq!(fairness_key(None, &a), fairness_key(None, &b));
        assert_ne!(fairness_key(None, &a), fairness_key(None, &c));
        assert!(fairness_key(None, &a) >= 1 << 63);
        assert_eq!(fairness_key(None, &client("2001:db8::1")), fairness_key(None, &client("2001:db8::ffff:1")));
        let member = principal(UserStatus::Active, None);
        assert_eq!(fairness_key(Some(&member), &a), 7);
    }
}
