//! Switches every node must apply within a second: block and allow list entries, the
//! operator's attack-mode override, credential revocation, the registration policy and
//! the AI guard's strikes.
//!
//! Each switch has a version counter in one Redis hash. A change writes its value and
//! bumps the counter in one `MULTI` (so no node sees the new version without the new
//! value); every node reads the counters every 250 ms (one `HMGET`, a few dozen bytes)
//! and reloads only what changed. Polling rather than pub/sub: a node that was
//! disconnected, restarted or partitioned catches up on its next read without any
//! resubscription logic, and a missed message cannot leave a node on a stale switch.
//! The price is up to one poll interval of delay, well inside the one-second promise.
//!
//! All keys share the `{switches}` hash tag: one Cluster slot, so the `MULTI` is valid.

use crate::error::FleetError;
use crate::state::{Fleet, Trip};

/// What changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Switch {
    /// Block and allow list entries (values in [`Fleet::list_rules`]).
    Lists,
    /// The operator's attack-mode override (value in [`Fleet::attack_override`]).
    Attack,
    /// A key, session or account was revoked somewhere: forget cached credentials.
    Credentials,
    /// The registration policy changed in the store: reload it.
    Registration,
    /// A caller got a strike, or was forgiven (values in [`Fleet::strikes`]).
    Strikes,
}

impl Switch {
    pub const ALL: [Switch; 5] =
        [Switch::Lists, Switch::Attack, Switch::Credentials, Switch::Registration, Switch::Strikes];

    pub(crate) fn field(self) -> &'static str {
        match self {
            Switch::Lists => "lists",
            Switch::Attack => "attack",
            Switch::Credentials => "credentials",
            Switch::Registration => "registration",
            Switch::Strikes => "strikes",
        }
    }
}

/// The version of every switch, in [`Switch::ALL`] order.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SwitchVersions([u64; Switch::ALL.len()]);

impl SwitchVersions {
    /// The switches whose version differs from `before`.
    pub fn changed_since(&self, before: &SwitchVersions) -> impl Iterator<Item = Switch> + '_ {
        let before = before.0;
        Switch::ALL.into_iter().enumerate().filter(move |(i, _)| self.0[*i] != before[*i]).map(|(_, s)| s)
    }
}

/// Most list entries a node reads back; the local list is bounded anyway.
const MAX_RULES: usize = 100_000;

impl Fleet {
    pub(crate) fn switch_key(&self, what: &str) -> String {
        format!("{}:{{switches}}:{what}", self.prefix())
    }

    /// Every switch's version (one round trip).
    pub async fn versions(&self) -> Result<SwitchVersions, FleetError> {
        let key = self.switch_key("versions");
        let values: Vec<Option<u64>> = self
            .call_for(Trip::Clock, |mut c| async move {
                let mut cmd = redis::cmd("HMGET");
                cmd.arg(&key);
                for s in Switch::ALL {
                    cmd.arg(s.field());
                }
                cmd.query_async(&mut c).await
            })
            .await?;
        let mut v = SwitchVersions::default();
        for (slot, value) in v.0.iter_mut().zip(values) {
            *slot = value.unwrap_or(0);
        }
        Ok(v)
    }

    /// Tells every node that `switch` changed (its value lives elsewhere, e.g. the store).
    pub async fn bump(&self, switch: Switch) -> Result<(), FleetError> {
        let key = self.switch_key("versions");
        self.call_for(Trip::Clock, |mut c| async move {
            redis::cmd("HINCRBY").arg(&key).arg(switch.field()).arg(1).query_async(&mut c).await
        })
        .await
    }

    /// Sets (`Some`) or removes (`None`) one list entry, named by `field`, and bumps
    /// [`Switch::Lists`], atomically.
    pub async fn put_list_rule(&self, field: &str, value: Option<&str>) -> Result<(), FleetError> {
        let (rules, versions) = (self.switch_key("lists"), self.switch_key("versions"));
        self.call(|mut c| async move {
            let mut p = redis::pipe();
            p.atomic();
            match value {
                Some(v) => p.cmd("HSET").arg(&rules).arg(field).arg(v).ignore(),
                None => p.cmd("HDEL").arg(&rules).arg(field).ignore(),
            };
            p.cmd("HINCRBY").arg(&versions).arg(Switch::Lists.field()).arg(1).ignore();
            p.query_async::<()>(&mut c).await
        })
        .await
    }

    /// Every list entry as `(field, value)`, as [`Fleet::put_list_rule`] stored them.
    pub async fn list_rules(&self) -> Result<Vec<(String, String)>, FleetError> {
        let key = self.switch_key("lists");
        let mut rules: Vec<(String, String)> = self
            .call_for(Trip::Clock, |mut c| async move { redis::cmd("HGETALL").arg(&key).query_async(&mut c).await })
            .await?;
        rules.truncate(MAX_RULES);
        Ok(rules)
    }

    /// Sets the operator's attack-mode override (`auto`, `on`, `off`) and bumps
    /// [`Switch::Attack`], atomically.
    pub async fn set_attack_override(&self, value: &str) -> Result<(), FleetError> {
        let (attack, versions) = (self.switch_key("attack"), self.switch_key("versions"));
        self.call(|mut c| async move {
            redis::pipe()
                .atomic()
                .cmd("SET")
                .arg(&attack)
                .arg(value)
                .ignore()
                .cmd("HINCRBY")
                .arg(&versions)
                .arg(Switch::Attack.field())
                .arg(1)
                .ignore()
                .query_async::<()>(&mut c)
                .await
        })
        .await
    }

    /// The operator's attack-mode override, if one was ever set.
    pub async fn attack_override(&self) -> Result<Option<String>, FleetError> {
        let key = self.switch_key("attack");
        self.call_for(Trip::Clock, |mut c| async move { redis::cmd("GET").arg(&key).query_async(&mut c).await }).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_changed_switches_are_reported() {
        let before = SwitchVersions([1, 2, 3, 4, 0]);
        let now = SwitchVersions([1, 3, 3, 5, 0]);
        assert_eq!(now.changed_since(&before).collect::<Vec<_>>(), [Switch::Attack, Switch::Registration]);
        assert_eq!(before.changed_since(&before).count(), 0);
    }
}
