//! The edge's limits when several nodes share state (`shared_state`): the per-address,
//! per-subnet, per-key and per-account limits decided fleet-wide, in one Redis round trip
//! per group (address and subnet before identity, key and account after).
//!
//! While the fleet answers, these limits are exact across nodes. When it fails or is
//! slower than its timeout, the edge decides with its local tables, which were built
//! from the limits divided by the fleet's node count ([`share`]): a balancer spreading
//! clients evenly keeps the fleet near the configured limit, and nothing fails open.
//!
//! Route limits (login, registration) are decided fleet-wide too, in a trip of their own:
//! those requests are not proxied, and a balancer's spread is no limit for a credential
//! stuffer.
//!
//! Token budgets, and the extra requests a recent account's tier pays, are the local fast
//! path: they are decided on this node against the fleet's bucket as the request's own
//! trip read it (`peek`), and the charge is sent to the fleet beside the request, not
//! awaited. Requests of one account started on several nodes within one round trip of
//! each other can each see the bucket before the other's charge: the budget is exceeded
//! by at most those requests' estimates, and the account's fleet-wide concurrency leases
//! bound how many there can be. Settlement (the reply's real usage) goes the same way.

use std::sync::Arc;
use std::time::Duration;

use fleet::{Decided, Fleet, FleetError, Lease, LimitKey, SharedLimit};
use shield::{
    BlockEntry, Cidr, Client, Decision, Gcra, Key, LimiterTable, LimitsConfig, ListKind, RateConfig, Subject, Tat,
};

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
    account_tokens: Gcra,
    /// Per-route limits: the route's name, what it is keyed on, its rate.
    routes: Vec<(String, Subject, Gcra)>,
    /// Each account's fleet-wide token bucket as its last request's trip read it, then
    /// spent here: what this node decides token budgets on.
    tokens_seen: LimiterTable,
    /// The same for the account's request bucket (a recent tier's extra requests).
    requests_seen: LimiterTable,
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

/// A refund of at least this fraction of the budget (1/64) holds the end of its reply until
/// the fleet has it.
const NOTICEABLE: u32 = 64;

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
            account_tokens: limits.account_tokens.gcra()?,
            routes: limits
                .routes
                .iter()
                .map(|r| Ok((r.route.clone(), r.per, r.rate.gcra()?)))
                .collect::<Result<_, _>>()?,
            tokens_seen: LimiterTable::new(limits.account_entries),
            requests_seen: LimiterTable::new(limits.account_entries),
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

    /// The account's buckets this node decides on itself, read in the caller's trip.
    fn peeks(account: u64) -> [LimitKey; 2] {
        [account_bucket(account, "tok"), account_bucket(account, "acct")]
    }

    /// The source's limits and then (when they allowed) the caller's, in one round trip;
    /// with `lease`, one of the account's concurrent-request leases in the same trip.
    pub async fn check_source_then_identified(
        &self,
        client: &Client,
        key: Option<(&str, Option<u32>)>,
        account: u64,
        lease: Option<&Lease>,
        now: Duration,
    ) -> Result<(Decision, Option<Refused>), FleetError> {
        let limits = self.identified_limits(key, account);
        let peeks = Self::peeks(account);
        let decided = self.fleet.check_then(&self.source_limits(client), &limits, &peeks, lease, 1).await?;
        if !decided.first.decision.allowed {
            return Ok((decided.first.decision, Some(Refused::Source)));
        }
        self.seen(account, &decided, now);
        Ok(caller_verdict(decided, key.is_some()))
    }

    /// Remembers the account's buckets as the trip read them, once its limits allowed.
    fn seen(&self, account: u64, decided: &Decided, now: Duration) {
        if !decided.then.is_some_and(|t| t.decision.allowed) {
            return;
        }
        let at = |ahead: Duration| u64::try_from((now + ahead).as_nanos()).unwrap_or(u64::MAX);
        let key = Key::account(account);
        if let Some(&tokens) = decided.peeked.first() {
            self.tokens_seen.update(key, now, |t: &mut Tat| t.0 = at(tokens));
        }
        if let Some(&requests) = decided.peeked.get(1) {
            // Read before this request spent its one.
            let spent = requests + self.per_account.emission_interval();
            self.requests_seen.update(key, now, |t: &mut Tat| t.0 = at(spent));
        }
    }

    /// Reserves `tokens` of the account's fleet-wide budget, decided here on what its
    /// request's trip read; the charge reaches the fleet in the background.
    pub fn spend_tokens(&self, account: u64, tokens: u32, now: Duration) -> Decision {
        let d = self.tokens_seen.check(Key::account(account), &self.account_tokens, now, tokens);
        if d.allowed {
            self.send(account_bucket(account, "tok"), self.account_tokens, i64::from(tokens));
        }
        d
    }

    /// Settles a reservation made with [`SharedLimits::spend_tokens`]: the difference
    /// between what was charged and what the reply used, here and in the fleet. When the
    /// refund is a noticeable part of the budget (at least [`NOTICEABLE`] of it) the
    /// receiver hears when the fleet has it (see [`Fleet::adjust_confirmed`]): the reply's
    /// end waits for that, so the client's next request, on any node, finds the tokens
    /// back. A smaller refund is sent without making anyone wait.
    pub fn settle_tokens(
        &self,
        account: u64,
        charged: u32,
        used: u32,
        now: Duration,
    ) -> Option<tokio::sync::oneshot::Receiver<()>> {
        let key = Key::account(account);
        if used > charged {
            self.tokens_seen.charge(key, &self.account_tokens, now, used - charged);
        } else {
            self.tokens_seen.refund(key, &self.account_tokens, now, charged - used);
        }
        let delta = i64::from(used) - i64::from(charged);
        if -delta >= i64::from(self.account_tokens.burst() / NOTICEABLE) {
            let limit = SharedLimit { key: account_bucket(account, "tok"), rate: self.account_tokens };
            return Some(self.fleet.adjust_confirmed(&limit, delta));
        }
        self.send(account_bucket(account, "tok"), self.account_tokens, delta);
        None
    }

    /// Charges `cost` more requests to the account's fleet-wide rate (a recent tier pays
    /// more per request), decided like [`SharedLimits::spend_tokens`].
    pub fn charge_account(&self, account: u64, cost: u32, now: Duration) -> Decision {
        let d = self.requests_seen.check(Key::account(account), &self.per_account, now, cost);
        if d.allowed {
            self.send(account_bucket(account, "acct"), self.per_account, i64::from(cost));
        }
        d
    }

    /// Queues a charge (or, negative, a refund) for the fleet, not waited for.
    fn send(&self, key: LimitKey, rate: Gcra, tokens: i64) {
        // Dropped when the queue is full: the local reading still had it, and a later
        // trip reads the fleet's bucket afresh.
        if !self.fleet.adjust_later(&SharedLimit { key, rate }, tokens) {
            self.fleet.count_fallback();
        }
    }

    /// Every limit configured for route `name`, fleet-wide and all or nothing (one round
    /// trip); `None` when the route has none.
    pub async fn check_route(
        &self,
        name: &str,
        client: &Client,
        account: Option<u64>,
    ) -> Option<Result<Decision, FleetError>> {
        // Keyed on the subnet (the source's hash tag) unless an account is the subject.
        let (mut by_source, mut by_account) = (Vec::new(), Vec::new());
        for (route, per, rate) in self.routes.iter().filter(|(route, ..)| route == name) {
            let (group, key) = match (per, account) {
                (Subject::Account, Some(id)) => {
                    (&mut by_account, LimitKey::new(format!("a/{id}"), format!("route/{route}")))
                }
                (Subject::Subnet, _) => {
                    (&mut by_source, LimitKey::new(format!("s/{}", client.subnet()), format!("route/{route}/net")))
                }
                (Subject::Ip | Subject::Account, _) => (
                    &mut by_source,
                    LimitKey::new(format!("s/{}", client.subnet()), format!("route/{route}/ip/{}", client.ip())),
                ),
            };
            group.push(SharedLimit { key, rate: *rate });
        }
        if by_source.is_empty() && by_account.is_empty() {
            return None;
        }
        // One trip per caller (all of one is spent or none), as the local check goes
        // limit by limit.
        let mut decision = Decision::unlimited();
        for group in [by_source, by_account].iter().filter(|g| !g.is_empty()) {
            match self.fleet.check(group, 1).await {
                Ok(checked) => decision = decision.tightest(checked.decision),
                Err(e) => return Some(Err(e)),
            }
            if !decision.allowed {
                break;
            }
        }
        Some(Ok(decision))
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
        now: Duration,
    ) -> Result<(Decision, Option<Refused>), FleetError> {
        let peeks = Self::peeks(account);
        let decided = self.fleet.check_then(&[], &self.identified_limits(key, account), &peeks, lease, 1).await?;
        self.seen(account, &decided, now);
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

/// One of an account's buckets (`dimension`), under the account's hash tag.
fn account_bucket(account: u64, dimension: &str) -> LimitKey {
    LimitKey::new(format!("a/{account}"), dimension)
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
