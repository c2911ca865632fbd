//! The edge's limits when several nodes share state (`shared_state`): the per-address,
//! per-subnet, per-key and per-account limits decided fleet-wide, in one Redis round trip
//! per group (address and subnet before identity, key and account after).
//!
//! While the fleet answers, these limits are exact across nodes. When it fails or is
//! slower than its timeout, the edge decides with its local tables, which were built
//! from the limits divided by the fleet's node count ([`share`]): a balancer spreading
//! clients evenly keeps the fleet near the configured limit, and nothing fails open.
//! Route limits and token budgets always use those local shares (their accuracy depends
//! on the balancer's spread; see `docs/multi-node.md`).

use std::sync::Arc;
use std::time::Duration;

use fleet::{Decided, Fleet, FleetError, Lease, LimitKey, SharedLimit};
use shield::{BlockEntry, Cidr, Client, Decision, Gcra, LimitsConfig, ListKind, RateConfig};

/// The fleet and the full (unshared) rates of the limits it decides.
pub struct SharedLimits {
    fleet: Arc<Fleet>,
    per_ip: Gcra,
    per_subnet: Gcra,
    per_account: Gcra,
    per_api_key: Gcra,
    /// Nodes in the fleet: a key's own `rpm_limit` is divided by it in the fallback.
    nodes: u32,
    /// Inference requests one account may have in flight across the fleet.
    concurrent: u32,
}

/// Which limit refused an identified request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// The address's or the subnet's (when checked together with the caller's).
    Source,
    ApiKey,
    Account,
    /// The account has as many requests in flight as its leases allow.
    Concurrency,
}

/// How long a lease lasts when its node never gives it back (it died): longer than any
/// reply should take, short enough that a dead node's slots come back by themselves.
pub const LEASE_TTL: Duration = Duration::from_secs(600);

impl SharedLimits {
    pub fn new(fleet: Arc<Fleet>, limits: &LimitsConfig, nodes: u32) -> Result<SharedLimits, shield::GcraError> {
        Ok(SharedLimits {
            fleet,
            per_ip: limits.per_ip.gcra()?,
            per_subnet: limits.per_subnet.gcra()?,
            per_account: limits.per_account.gcra()?,
            per_api_key: limits.per_api_key.gcra()?,
            nodes: nodes.max(1),
            concurrent: limits.concurrent_per_account,
        })
    }

    pub fn fleet(&self) -> &Arc<Fleet> {
        &self.fleet
    }

    pub fn nodes(&self) -> u32 {
        self.nodes
    }

    /// The address's limit and its subnet's, spent together or not at all. `cost` 2 is
    /// the double charge of attack mode and of suspected bots.
    pub async fn check_source(&self, client: &Client, cost: u32) -> Result<Decision, FleetError> {
        Ok(self.fleet.check(&self.source_limits(client), cost).await?.decision)
    }

    fn source_limits(&self, client: &Client) -> [SharedLimit; 2] {
        // The subnet is the caller: both keys share its hash tag (one Cluster slot).
        let caller = format!("s/{}", client.subnet());
        [
            SharedLimit { key: LimitKey::new(caller.clone(), format!("ip/{}", client.ip())), rate: self.per_ip },
            SharedLimit { key: LimitKey::new(caller, "net"), rate: self.per_subnet },
        ]
    }

    fn identified_limits(&self, key: Option<(&str, Option<u32>)>, account: u64) -> Vec<SharedLimit> {
        let caller = format!("a/{account}");
        let mut limits = Vec::with_capacity(2);
        if let Some((prefix, rpm)) = key {
            let rate = rpm.and_then(own_rate).unwrap_or(self.per_api_key);
            limits.push(SharedLimit { key: LimitKey::new(caller.clone(), format!("key/{prefix}")), rate });
        }
        limits.push(SharedLimit { key: LimitKey::new(caller, "acct"), rate: self.per_account });
        limits
    }

    /// The source's limits and then (when they allowed) the caller's, in one round trip;
    /// with `lease`, one of the account's concurrent-request leases in the same trip.
    pub async fn check_source_then_identified(
        &self,
        client: &Client,
        key: Option<(&str, Option<u32>)>,
        account: u64,
        lease: Option<&Lease>,
    ) -> Result<(Decision, Option<Refused>), FleetError> {
        let limits = self.identified_limits(key, account);
        let decided = self.fleet.check_then(&self.source_limits(client), &limits, lease, 1).await?;
        if !decided.first.decision.allowed {
            return Ok((decided.first.decision, Some(Refused::Source)));
        }
        Ok(caller_verdict(decided, key.is_some()))
    }

    /// A lease of `account`'s for one request, `id` unique to it.
    pub fn lease(&self, account: u64, id: String) -> Lease {
        Lease { caller: format!("a/{account}"), id, max: self.concurrent, ttl: LEASE_TTL }
    }

    /// The key's limit (its own `rpm_limit`, else `per_api_key`) and the account's,
    /// spent together or not at all; on refusal, which one refused.
    pub async fn check_identified(
        &self,
        key: Option<(&str, Option<u32>)>,
        account: u64,
        lease: Option<&Lease>,
    ) -> Result<(Decision, Option<Refused>), FleetError> {
        let decided = self.fleet.check_then(&[], &self.identified_limits(key, account), lease, 1).await?;
        Ok(caller_verdict(decided, key.is_some()))
    }
}

/// The caller's group of a decision, and the lease's verdict when one was asked.
fn caller_verdict(decided: Decided, has_key: bool) -> (Decision, Option<Refused>) {
    let Some(checked) = decided.then else { return (decided.first.decision, None) };
    let refused = refused_by(has_key, checked.refused_by);
    if refused.is_none() && decided.leased == Some(false) {
        return (checked.decision, Some(Refused::Concurrency));
    }
    (checked.decision, refused)
}

/// Which of the caller's limits refused: the key's comes first when there is a key.
fn refused_by(has_key: bool, index: Option<usize>) -> Option<Refused> {
    index.map(|i| if has_key && i == 0 { Refused::ApiKey } else { Refused::Account })
}

/// A list entry as the fleet stores it: the field names the entry (`block 10.0.0.0/8`),
/// the value holds its expiry in milliseconds (`-` for none) and its note.
pub fn encode_rule(list: ListKind, cidr: Cidr, expires_at: Option<Duration>, note: &str) -> (String, String) {
    let expires = expires_at.map_or_else(|| "-".to_owned(), |t| t.as_millis().to_string());
    (format!("{list} {cidr}"), format!("{expires} {note}"))
}

/// The entry [`encode_rule`] stored, or `None` for anything else.
pub fn decode_rule(field: &str, value: &str) -> Option<BlockEntry> {
    let (list, cidr) = field.split_once(' ')?;
    let list: ListKind = list.parse().ok()?;
    let (expires, note) = value.split_once(' ').unwrap_or((value, ""));
    let expires_at = match expires {
        "-" => None,
        ms => Some(Duration::from_millis(ms.parse().ok()?)),
    };
    Some(BlockEntry { list, cidr: cidr.parse().ok()?, expires_at, note: note.to_owned() })
}

/// A key's own `rpm_limit` as a rate: that many a minute, all at once if it likes.
pub fn own_rate(rpm: u32) -> Option<Gcra> {
    Gcra::per_period(rpm, Duration::from_secs(60), rpm).ok()
}

/// This node's share of `limits` in a fleet of `nodes`: every rate and burst divided,
/// rounded up and at least 1, so the fleet's sum never falls below the limit by more
/// than one request a node.
pub fn share(limits: &LimitsConfig, nodes: u32) -> LimitsConfig {
    let nodes = nodes.max(1);
    let part =
        |r: &RateConfig| RateConfig::new(r.count.div_ceil(nodes).max(1), r.period_ms, r.burst.div_ceil(nodes).max(1));
    let mut out = limits.clone();
    for r in [&mut out.per_ip, &mut out.per_subnet, &mut out.per_account, &mut out.per_api_key, &mut out.account_tokens]
    {
        *r = part(r);
    }
    for route in &mut out.routes {
        route.rate = part(&route.rate);
    }
    out.concurrent_per_account = out.concurrent_per_account.div_ceil(nodes).max(1);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_node_gets_its_share_rounded_up() {
        let l = LimitsConfig { per_ip: RateConfig::new(20, 1_000, 60), ..LimitsConfig::default() };
        let s = share(&l, 3);
        assert_eq!((s.per_ip.count, s.per_ip.burst, s.per_ip.period_ms), (7, 20, 1_000));
        assert_eq!(share(&l, 1).per_ip, l.per_ip);
        let tiny = LimitsConfig { per_ip: RateConfig::new(1, 1_000, 1), ..LimitsConfig::default() };
        assert_eq!(share(&tiny, 5).per_ip.count, 1, "never zero");
    }

    #[test]
    fn list_entries_survive_the_round_trip_through_the_fleet() {
        let cidr: Cidr = "203.0.113.0/24".parse().unwrap();
        for expires_at in [None, Some(Duration::from_millis(1_700_000_000_123))] {
            let (f, v) = encode_rule(ListKind::Block, cidr, expires_at, "a note with spaces");
            let e = decode_rule(&f, &v).expect("decodes");
            assert_eq!(
                (e.list, e.cidr, e.expires_at, e.note.as_str()),
                (ListKind::Block, cidr, expires_at, "a note with spaces")
            );
        }
        assert!(decode_rule("nonsense", "-").is_none());
    }
}
