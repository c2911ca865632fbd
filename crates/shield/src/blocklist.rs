//! Operator block and allow lists of addresses and networks, with optional expiry, changed
//! while the gateway runs. An allow entry wins over any block entry, so an operator can
//! block a /16 and still let their own office through.
//!
//! Lookups take `&self` and never mutate, so the gateway can hold the list behind an
//! `RwLock` (or swap in a rebuilt copy) and read it on every request: one trie walk per
//! list, at most 32 steps for IPv4 and 128 for IPv6. Expired entries are ignored by lookups
//! and reclaimed by [`BlockList::purge_expired`] (run it from a periodic task).

use std::net::IpAddr;
use std::time::Duration;

use crate::cidr::{Cidr, Family, aligned};
use crate::trie::PrefixTrie;

/// Longest operator note kept with an entry, in bytes.
pub const MAX_NOTE_BYTES: usize = 256;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BlockListError {
    #[error("the {list} list is full ({max} entries); remove entries or raise blocklist.max_entries")]
    Full { list: ListKind, max: usize },
    #[error("the note is {len} bytes; at most {MAX_NOTE_BYTES} are kept")]
    NoteTooLong { len: usize },
    #[error("the entry for {cidr} would already be expired")]
    AlreadyExpired { cidr: Cidr },
}

/// Which of the two lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ListKind {
    Allow,
    Block,
}

impl std::str::FromStr for ListKind {
    type Err = ();

    /// The [`Display`](std::fmt::Display) names: `allow`, `block`.
    fn from_str(s: &str) -> Result<ListKind, ()> {
        match s {
            "allow" => Ok(Self::Allow),
            "block" => Ok(Self::Block),
            _ => Err(()),
        }
    }
}

impl std::fmt::Display for ListKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Allow => "allow",
            Self::Block => "block",
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Rule {
    /// Since the Unix epoch; `None` never expires.
    expires_at: Option<Duration>,
    note: Box<str>,
}

impl Rule {
    fn live(&self, now: Duration) -> bool {
        self.expires_at.is_none_or(|at| now < at)
    }
}

/// One entry, as listed for the operator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub list: ListKind,
    pub cidr: Cidr,
    /// Since the Unix epoch, `None` for permanent entries.
    pub expires_at: Option<Duration>,
    pub note: String,
}

/// The answer for one client address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// An allow entry covers the address: skip the block list (the rate limits still apply).
    Allowed { rule: Cidr },
    /// The most specific live block entry covering the address. Answer 403.
    Blocked { rule: Cidr, expires_at: Option<Duration> },
    /// On neither list.
    Unlisted,
}

/// One list: a trie per address family.
#[derive(Debug, Clone)]
struct RuleSet {
    v4: PrefixTrie<Rule>,
    v6: PrefixTrie<Rule>,
}

impl RuleSet {
    fn new() -> Self {
        Self { v4: PrefixTrie::new(32), v6: PrefixTrie::new(128) }
    }

    fn trie(&self, family: Family) -> &PrefixTrie<Rule> {
        match family {
            Family::V4 => &self.v4,
            Family::V6 => &self.v6,
        }
    }

    fn trie_mut(&mut self, family: Family) -> &mut PrefixTrie<Rule> {
        match family {
            Family::V4 => &mut self.v4,
            Family::V6 => &mut self.v6,
        }
    }

    fn len(&self) -> usize {
        self.v4.len() + self.v6.len()
    }

    fn lookup(&self, ip: IpAddr, now: Duration) -> Option<(Cidr, &Rule)> {
        let (family, bits) = aligned(ip);
        let (net, len, rule) = self.trie(family).longest_match(bits, |r| r.live(now))?;
        Some((cidr_of(family, net, len), rule))
    }

    fn purge(&mut self, now: Duration) -> usize {
        self.v4.retain(|r| r.live(now)) + self.v6.retain(|r| r.live(now))
    }
}

fn cidr_of(family: Family, bits: u128, len: u8) -> Cidr {
    let ip = match family {
        Family::V4 => IpAddr::V4(std::net::Ipv4Addr::from((bits >> 96) as u32)),
        Family::V6 => IpAddr::V6(std::net::Ipv6Addr::from(bits)),
    };
    // The trie only holds prefixes that came from a valid `Cidr`, so this cannot fail; the
    // host fallback keeps the function total without an unwrap.
    Cidr::new(ip, len).unwrap_or_else(|_| Cidr::host(ip))
}

/// The allow and block lists, each holding at most `max_entries` entries.
///
/// Memory bound: each entry costs at most `prefix length` trie nodes of 12 bytes (so
/// ≤ 1.5 KiB for a /128) plus the note (≤ [`MAX_NOTE_BYTES`]).
#[derive(Debug, Clone)]
pub struct BlockList {
    allow: RuleSet,
    block: RuleSet,
    max_entries: usize,
}

impl BlockList {
    pub fn new(max_entries: usize) -> Self {
        Self { allow: RuleSet::new(), block: RuleSet::new(), max_entries }
    }

    fn set(&self, list: ListKind) -> &RuleSet {
        match list {
            ListKind::Allow => &self.allow,
            ListKind::Block => &self.block,
        }
    }

    fn set_mut(&mut self, list: ListKind) -> &mut RuleSet {
        match list {
            ListKind::Allow => &mut self.allow,
            ListKind::Block => &mut self.block,
        }
    }

    /// Adds or replaces (same network: new expiry and note) an entry. When the list is full,
    /// expired entries are purged first; if it is still full the insert is refused, because
    /// silently dropping an operator's rule is worse than telling them.
    pub fn insert(
        &mut self,
        list: ListKind,
        cidr: Cidr,
        expires_at: Option<Duration>,
        note: &str,
        now: Duration,
    ) -> Result<(), BlockListError> {
        if note.len() > MAX_NOTE_BYTES {
            return Err(BlockListError::NoteTooLong { len: note.len() });
        }
        if expires_at.is_some_and(|at| at <= now) {
            return Err(BlockListError::AlreadyExpired { cidr });
        }
        let max = self.max_entries;
        let set = self.set_mut(list);
        let exists = set.trie(cidr.family()).get(cidr.aligned_bits(), cidr.prefix_len()).is_some();
        if !exists && set.len() >= max {
            set.purge(now);
            if set.len() >= max {
                return Err(BlockListError::Full { list, max });
            }
        }
        let rule = Rule { expires_at, note: note.into() };
        set.trie_mut(cidr.family()).insert(cidr.aligned_bits(), cidr.prefix_len(), rule);
        Ok(())
    }

    /// Removes exactly this network from `list`; true when it was there.
    pub fn remove(&mut self, list: ListKind, cidr: Cidr) -> bool {
        self.set_mut(list).trie_mut(cidr.family()).remove(cidr.aligned_bits(), cidr.prefix_len()).is_some()
    }

    /// Allow wins; otherwise the most specific live block entry; otherwise unlisted.
    pub fn lookup(&self, ip: IpAddr, now: Duration) -> Verdict {
        if let Some((rule, _)) = self.allow.lookup(ip, now) {
            return Verdict::Allowed { rule };
        }
        match self.block.lookup(ip, now) {
            Some((rule, r)) => Verdict::Blocked { rule, expires_at: r.expires_at },
            None => Verdict::Unlisted,
        }
    }

    /// Live entries of `list`, sorted by network.
    pub fn list(&self, list: ListKind, now: Duration) -> Vec<Entry> {
        let set = self.set(list);
        let mut out: Vec<Entry> = [Family::V4, Family::V6]
            .into_iter()
            .flat_map(|family| {
                set.trie(family).iter().filter(|(_, _, r)| r.live(now)).map(move |(bits, len, r)| Entry {
                    list,
                    cidr: cidr_of(family, bits, len),
                    expires_at: r.expires_at,
                    note: r.note.to_string(),
                })
            })
            .collect();
        out.sort_by_key(|e| e.cidr);
        out
    }

    /// Drops expired entries from both lists; returns how many.
    pub fn purge_expired(&mut self, now: Duration) -> usize {
        self.allow.purge(now) + self.block.purge(now)
    }

    /// Entries in `list`, expired ones included until purged.
    pub fn len(&self, list: ListKind) -> usize {
        self.set(list).len()
    }

    pub fn is_empty(&self) -> bool {
        self.allow.len() + self.block.len() == 0
    }

    pub fn max_entries(&self) -> usize {
        self.max_entries
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const T0: Duration = Duration::from_secs(1_000);

    fn cidr(text: &str) -> Cidr {
        text.parse().expect("test cidr")
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("test ip")
    }

    #[test]
    fn allow_wins_and_block_reports_the_most_specific_rule() {
        let mut l = BlockList::new(10);
        l.insert(ListKind::Block, cidr("10.0.0.0/8"), None, "botnet", T0).expect("insert");
        l.insert(ListKind::Block, cidr("10.1.0.0/16"), Some(T0 * 2), "", T0).expect("insert");
        l.insert(ListKind::Allow, cidr("10.1.2.3"), None, "office", T0).expect("insert");
        assert_eq!(l.lookup(ip("10.1.2.3"), T0), Verdict::Allowed { rule: cidr("10.1.2.3/32") });
        assert_eq!(
            l.lookup(ip("10.1.9.9"), T0),
            Verdict::Blocked { rule: cidr("10.1.0.0/16"), expires_at: Some(T0 * 2) }
        );
        assert_eq!(l.lookup(ip("10.1.9.9"), T0 * 2), Verdict::Blocked { rule: cidr("10.0.0.0/8"), expires_at: None });
        assert_eq!(
            l.lookup(ip("::ffff:10.9.9.9"), T0),
            Verdict::Blocked { rule: cidr("10.0.0.0/8"), expires_at: None }
        );
        assert_eq!(l.lookup(ip("11.0.0.1"), T0), Verdict::Unlisted);
        assert_eq!(l.lookup(ip("2001:db8::1"), T0), Verdict::Unlisted);
        assert!(l.remove(ListKind::Allow, cidr("10.1.2.3")));
        assert!(matches!(l.lookup(ip("10.1.2.3"), T0), Verdict::Blocked { .. }));
    }

    #[test]
    fn ipv6_rules_match() {
        let mut l = BlockList::new(10);
        l.insert(ListKind::Block, cidr("2001:db8::/32"), None, "", T0).expect("insert");
        assert!(matches!(l.lookup(ip("2001:db8:1::5"), T0), Verdict::Blocked { .. }));
        assert_eq!(l.lookup(ip("2001:db9::5"), T0), Verdict::Unlisted);
    }

    #[test]
    fn full_list_refuses_after_purging_expired() {
        let mut l = BlockList::new(2);
        l.insert(ListKind::Block, cidr("1.0.0.0/8"), Some(T0 + Duration::from_secs(1)), "", T0).expect("a");
        l.insert(ListKind::Block, cidr("2.0.0.0/8"), None, "", T0).expect("b");
        let full = l.insert(ListKind::Block, cidr("3.0.0.0/8"), None, "", T0);
        assert_eq!(full, Err(BlockListError::Full { list: ListKind::Block, max: 2 }));
        l.insert(ListKind::Block, cidr("2.0.0.0/8"), None, "replacing is not growing", T0).expect("replace");
        l.insert(ListKind::Allow, cidr("3.0.0.0/8"), None, "", T0).expect("the other list has room");
        // Once the first entry expires its room is reclaimed.
        l.insert(ListKind::Block, cidr("3.0.0.0/8"), None, "", T0 * 2).expect("after expiry");
        assert_eq!(l.list(ListKind::Block, T0 * 2).len(), 2);
        assert_eq!(
            l.insert(ListKind::Block, cidr("4.0.0.0/8"), None, &"x".repeat(300), T0),
            Err(BlockListError::NoteTooLong { len: 300 })
        );
        assert!(matches!(
            l.insert(ListKind::Block, cidr("4.0.0.0/8"), Some(T0), "", T0),
            Err(BlockListError::AlreadyExpired { .. })
        ));
    }

    #[test]
    fn list_and_purge() {
        let mut l = BlockList::new(10);
        l.insert(ListKind::Block, cidr("2001:db8::/32"), None, "v6", T0).expect("insert");
        l.insert(ListKind::Block, cidr("9.9.9.9"), Some(T0 + Duration::from_secs(5)), "temp", T0).expect("insert");
        let listed = l.list(ListKind::Block, T0);
        assert_eq!(listed.iter().map(|e| e.cidr.to_string()).collect::<Vec<_>>(), ["9.9.9.9/32", "2001:db8::/32"]);
        assert_eq!(listed[0].note, "temp");
        assert_eq!(l.purge_expired(T0 + Duration::from_secs(5)), 1);
        assert_eq!(l.len(ListKind::Block), 1);
    }

    /// Naive model: scan every rule.
    fn naive(rules: &[(ListKind, Cidr, Option<Duration>)], ip: IpAddr, now: Duration) -> Verdict {
        let live = |list: ListKind| {
            rules
                .iter()
                .filter(move |(l, c, e)| *l == list && c.contains(ip) && e.is_none_or(|at| now < at))
                .max_by_key(|(_, c, _)| c.prefix_len())
        };
        if let Some((_, c, _)) = live(ListKind::Allow) {
            return Verdict::Allowed { rule: *c };
        }
        match live(ListKind::Block) {
            Some((_, c, e)) => Verdict::Blocked { rule: *c, expires_at: *e },
            None => Verdict::Unlisted,
        }
    }

    /// Addresses concentrated in 10.0.0.0/16 and 2001:db8::/112-ish so rules overlap often.
    fn arb_ip() -> impl Strategy<Value = IpAddr> {
        prop_oneof![
            any::<u16>().prop_map(|x| IpAddr::from([10, 0, (x >> 8) as u8, x as u8])),
            any::<u16>().prop_map(|x| IpAddr::from([0x2001, 0xdb8, 0, 0, 0, 0, x >> 8, x & 0xff])),
        ]
    }

    fn arb_rule() -> impl Strategy<Value = (ListKind, Cidr, Option<Duration>)> {
        (any::<bool>(), arb_ip(), 0u8..=16, proptest::option::of(0u64..20)).prop_map(|(allow, ip, extra, exp)| {
            let len = match ip {
                IpAddr::V4(_) => 16 + extra,
                IpAddr::V6(_) => 112 + extra,
            };
            let list = if allow && extra > 12 { ListKind::Allow } else { ListKind::Block };
            let cidr = Cidr::new(ip, len).expect("valid length");
            (list, cidr, exp.map(|s| T0 + Duration::from_secs(s)))
        })
    }

    proptest! {
        #[test]
        fn trie_lookup_matches_a_linear_scan(
            rules in proptest::collection::vec(arb_rule(), 0..40),
            removals in proptest::collection::vec(any::<proptest::sample::Index>(), 0..8),
            queries in proptest::collection::vec((arb_ip(), 0u64..25), 1..40),
        ) {
            let mut list = BlockList::new(1_000);
            let mut model: Vec<(ListKind, Cidr, Option<Duration>)> = Vec::new();
            for (kind, c, exp) in rules {
                list.insert(kind, c, exp, "", Duration::ZERO).map_err(|e| TestCaseError::fail(e.to_string()))?;
                model.retain(|(k, m, _)| !(*k == kind && *m == c));
                model.push((kind, c, exp));
            }
            for idx in removals {
                if model.is_empty() { break; }
                let (kind, c, _) = model.remove(idx.index(model.len()));
                prop_assert!(list.remove(kind, c));
            }
            for (ip, s) in queries {
                let now = T0 + Duration::from_secs(s);
                prop_assert_eq!(list.lookup(ip, now), naive(&model, ip, now), "ip {} at +{}s", ip, s);
            }
        }
    }
}
