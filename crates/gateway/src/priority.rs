//! Which priority class a `/v1` request belongs to, decided after identity:
//! the people the service exists for (verified accounts and their keys) are
//! `member`; accounts that have not proven their phone or e-mail are
//! `newcomer`; everyone else is `anonymous`. Configuration can pin a key's
//! class (a paying customer, an internal tool) and can cap a route's class
//! (say, batch embeddings never above `newcomer`).

use std::collections::BTreeMap;

use accounts::service::Principal;
use admission::PriorityClass;
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
    }

    /// The class of a request on `path` from `who`.
    pub fn classify(&self, who: Option<&Principal>, path: &str) -> PriorityClass {
        let by_identity = match who {
            None => PriorityClass::Anonymous,
            Some(p) => match p.key_prefix.as_deref().and_then(|prefix| self.keys.get(prefix)) {
                Some(class) => *class,
                None if p.status == UserStatus::Active => PriorityClass::Member,
                None => PriorityClass::Newcomer,
            },
        };
        match self.routes.get(path) {
            // Ord puts the most important class first: the cap is the larger value.
            Some(cap) => by_identity.max(*cap),
            None => by_identity,
        }
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
        }
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
