//! Account farms: accounts registered close together that all run into their own limits
//! the same way, from the same networks or with the same prompt. One such account is a
//! busy user; many, made within the same window and saturating their limits together, are
//! a farm. The proxy flags them (which drops them to the newcomer tier, see `priority`)
//! and the operator lists them with `palisade admin flags`.
//!
//! A farm spread over many networks still sends one prompt; a farm varying its prompts
//! still comes from a few networks; a farm doing neither costs its owner far more. Only
//! accounts that have not earned a tier of their own are watched (the proxy decides).
//!
//! Bounded like the other activity maps (when full, emptied); pure bookkeeping with `now`
//! passed in.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Groups remembered; past it the map is emptied (a cohort may then be found later).
const MAX_GROUPS: usize = 50_000;
/// Accounts remembered per group: far past any threshold; the stalest go first.
const MAX_MEMBERS: usize = 512;

/// When a group of accounts is a cohort (`[abuse]` `cohort_*`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CohortPolicy {
    /// Distinct accounts that must saturate their limits (0: off)...
    pub min_accounts: u32,
    /// ...having been created within the same window of this length...
    pub created_window: Duration,
    /// ...each within this long of now.
    pub recent: Duration,
}

/// What the accounts of one group share.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Shared {
    /// The /16 (IPv4) or /48 (IPv6) they call from.
    Network(u64),
    /// The fingerprint of their prompt.
    Prompt(u64),
}

impl Shared {
    fn reason(self) -> &'static str {
        match self {
            Shared::Network(_) => "cohort_network",
            Shared::Prompt(_) => "cohort_prompt",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct GroupKey {
    /// The creation window the accounts fall in.
    born: i64,
    shared: Shared,
}

#[derive(Default)]
struct Group {
    /// Account, when it last saturated, whether it was reported.
    members: Vec<(i64, Instant, bool)>,
    found: bool,
}

/// Accounts to flag as one cohort, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Found {
    pub accounts: Vec<i64>,
    pub reason: &'static str,
}

pub struct CohortWatch {
    policy: CohortPolicy,
    groups: Mutex<HashMap<GroupKey, Group>>,
}

/// The network an address belongs to for cohorts: wider than the limits' subnets, since a
/// farm renting addresses gets them a /24 apart.
pub fn network(ip: IpAddr) -> u64 {
    match ip {
        IpAddr::V4(v4) => u64::from(u32::from(v4) >> 16),
        IpAddr::V6(v6) => (u128::from(v6) >> 80) as u64 | (1 << 63),
    }
}

impl CohortWatch {
    pub fn new(policy: CohortPolicy) -> CohortWatch {
        CohortWatch { policy, groups: Mutex::new(HashMap::new()) }
    }

    pub fn enabled(&self) -> bool {
        self.policy.min_accounts > 0
    }

    /// `account` (created at `created_at_ms`) ran into one of its own limits calling from
    /// `network` with `prompt`: the accounts to flag now, if any group of it makes a cohort
    /// (all of that group the first time, then each newcomer to it).
    pub fn saturated(
        &self,
        account: i64,
        created_at_ms: i64,
        network: u64,
        prompt: Option<u64>,
        now: Instant,
    ) -> Vec<Found> {
        if !self.enabled() {
            return Vec::new();
        }
        let window = i64::try_from(self.policy.created_window.as_millis()).unwrap_or(i64::MAX).max(1);
        let born = created_at_ms.div_euclid(window);
        let mut groups = self.groups.lock().unwrap_or_else(|e| e.into_inner());
        let mut found = Vec::new();
        for shared in std::iter::once(Shared::Network(network)).chain(prompt.map(Shared::Prompt)) {
            let key = GroupKey { born, shared };
            if groups.len() >= MAX_GROUPS && !groups.contains_key(&key) {
                groups.clear();
            }
            let group = groups.entry(key).or_default();
            match group.members.iter_mut().find(|m| m.0 == account) {
                Some(member) => member.1 = now,
                None => {
                    if group.members.len() >= MAX_MEMBERS
                        && let Some(stalest) = group.members.iter().enumerate().min_by_key(|(_, m)| m.1).map(|(i, _)| i)
                    {
                        group.members.swap_remove(stalest);
                    }
                    group.members.push((account, now, false));
                }
            }
            if !group.found {
                let recent = group.members.iter().filter(|m| now.duration_since(m.1) <= self.policy.recent).count();
                if recent < self.policy.min_accounts as usize {
                    continue;
                }
                group.found = true;
            }
            let accounts: Vec<i64> = group
                .members
                .iter_mut()
                .filter(|m| !m.2)
                .map(|m| {
                    m.2 = true;
                    m.0
                })
                .collect();
            if !accounts.is_empty() {
                found.push(Found { accounts, reason: shared.reason() });
            }
        }
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR_MS: i64 = 3_600_000;

    fn watch(min_accounts: u32) -> CohortWatch {
        CohortWatch::new(CohortPolicy {
            min_accounts,
            created_window: Duration::from_secs(3600),
            recent: Duration::from_secs(600),
        })
    }

    fn net(a: u8, b: u8, c: u8) -> u64 {
        network(IpAddr::from([198, a, b, c]))
    }

    #[test]
    fn accounts_made_together_saturating_with_one_prompt_are_a_cohort_whatever_their_networks() {
        let w = watch(5);
        let t = Instant::now();
        for id in 0..4 {
            assert!(w.saturated(id, 10 * HOUR_MS + id, net(id as u8, 0, 1), Some(42), t).is_empty());
        }
        let found = w.saturated(4, 10 * HOUR_MS + 4, net(4, 0, 1), Some(42), t);
        assert_eq!(found, [Found { accounts: vec![0, 1, 2, 3, 4], reason: "cohort_prompt" }]);
        // A later member of the same cohort is reported alone; one already reported is not again.
        assert_eq!(w.saturated(5, 10 * HOUR_MS + 5, net(5, 0, 1), Some(42), t)[0].accounts, [5]);
        assert!(w.saturated(2, 10 * HOUR_MS + 2, net(2, 0, 1), Some(42), t).is_empty());
    }

    #[test]
    fn one_network_saturating_with_varied_prompts_is_a_cohort_too() {
        let w = watch(3);
        let t = Instant::now();
        for id in 0..2 {
            assert!(w.saturated(id, HOUR_MS, net(7, id as u8, 9), Some(id as u64), t).is_empty());
        }
        let found = w.saturated(2, HOUR_MS, net(7, 200, 9), Some(99), t);
        assert_eq!(found, [Found { accounts: vec![0, 1, 2], reason: "cohort_network" }]);
    }

    #[test]
    fn accounts_from_other_windows_or_saturating_long_apart_are_not() {
        let w = watch(3);
        let t = Instant::now();
        // Same prompt, same network, but made on different days.
        for id in 0..5 {
            assert!(w.saturated(id, id * 24 * HOUR_MS, net(1, 1, 1), Some(1), t).is_empty());
        }
        // Made together, but each saturating twenty minutes after the one before.
        for id in 10..15 {
            let at = t + Duration::from_secs(1200 * (id as u64 - 10));
            assert!(w.saturated(id, 100 * HOUR_MS, net(2, id as u8, 1), Some(2), at).is_empty());
        }
    }

    #[test]
    fn off_means_off_and_memory_stays_bounded() {
        assert!(watch(0).saturated(1, 0, 1, Some(1), Instant::now()).is_empty());
        let w = watch(1_000);
        let t = Instant::now();
        for id in 0..2_000 {
            w.saturated(id, 0, 3, None, t);
        }
        assert!(w.groups.lock().unwrap().values().all(|g| g.members.len() <= MAX_MEMBERS));
    }

    #[test]
    fn networks_are_a_slash_16_or_a_slash_48() {
        assert_eq!(network("198.51.1.1".parse().unwrap()), network("198.51.200.7".parse().unwrap()));
        assert_ne!(network("198.51.1.1".parse().unwrap()), network("198.52.1.1".parse().unwrap()));
        assert_eq!(network("2001:db8:1:2::1".parse().unwrap()), network("2001:db8:1:ffff::9".parse().unwrap()));
        assert_ne!(network("2001:db8:1::1".parse().unwrap()), network("2001:db8:2::1".parse().unwrap()));
    }
}
