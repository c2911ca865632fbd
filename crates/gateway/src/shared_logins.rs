//! The account service's login back-off on the fleet's Redis: every node counts every
//! node's attempts. While the fleet is down (or a call fails) the account service counts
//! in its own process, and the fleet's fallback counter says so.

use std::sync::Arc;

use accounts::throttle::{Attempt, LoginFuture, LoginKeys, LoginRules, Outcome, SharedLogins, SharedLoginsDown};
use fleet::{Fleet, LoginEnd, LoginKey, LoginLimits, LoginVerdict};

pub struct FleetLogins(pub Arc<Fleet>);

fn limits(rules: &LoginRules) -> LoginLimits {
    LoginLimits {
        free_per_account: rules.free_per_account,
        free_per_address: rules.free_per_address,
        base_delay: rules.base_delay,
        max_delay: rules.max_delay,
        forget_after: rules.forget_after,
        remember_network: rules.remember_network,
    }
}

/// Text for the keys; an absent client (never on the gateway's path) is one shared key.
fn texts(keys: &LoginKeys<'_>) -> (String, String) {
    let network = keys.network.map_or_else(|| "-".to_owned(), |n| n.to_string());
    let address = keys.address.map_or_else(|| "-".to_owned(), |a| a.to_string());
    (network, address)
}

impl FleetLogins {
    fn usable(&self) -> Result<(), SharedLoginsDown> {
        if self.0.is_up() {
            Ok(())
        } else {
            self.0.count_fallback();
            Err(SharedLoginsDown)
        }
    }

    fn failed<T>(&self, result: Result<T, fleet::FleetError>) -> Result<T, SharedLoginsDown> {
        result.map_err(|_| {
            self.0.count_fallback();
            SharedLoginsDown
        })
    }
}

impl SharedLogins for FleetLogins {
    fn attempt<'a>(&'a self, keys: LoginKeys<'a>, rules: &'a LoginRules) -> LoginFuture<'a, Attempt> {
        Box::pin(async move {
            self.usable()?;
            let (network, address) = texts(&keys);
            let key = LoginKey { account: keys.account, network: &network, address: &address };
            let verdict = self.failed(self.0.login_attempt(key, &limits(rules)).await)?;
            Ok(match verdict {
                LoginVerdict::Go { known } => Attempt::Go { known },
                LoginVerdict::Wait(wait) => Attempt::Wait(wait),
            })
        })
    }

    fn settle<'a>(&'a self, keys: LoginKeys<'a>, rules: &'a LoginRules, outcome: Outcome) -> LoginFuture<'a, ()> {
        Box::pin(async move {
            self.usable()?;
            let (network, address) = texts(&keys);
            let key = LoginKey { account: keys.account, network: &network, address: &address };
            let end = match outcome {
                Outcome::Success { known } => LoginEnd::Success { known },
                Outcome::Refund => LoginEnd::Refund,
            };
            self.failed(self.0.login_settle(key, &limits(rules), end).await)
        })
    }
}
