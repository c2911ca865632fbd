//! The configured set of rate limits, built once from [`LimitsConfig`]: per address and per
//! subnet at the edge, per account and per API key after identification, per route, and the
//! inference budgets (tokens per minute and concurrent requests per account). Each dimension
//! has its own fixed-size table; [`EdgeLimits::memory_bytes`] is the total, fixed at
//! construction (16 MiB with the defaults: six 16-byte-entry tables of 2^18 or 2^16 entries
//! and the in-flight table).

use std::sync::Arc;
use std::time::Duration;

use crate::client::{Client, SubnetPrefixes};
use crate::concurrency::{ConcurrencyPermit, ConcurrencyTable, InFlight, acquire};
use crate::config::{ConfigError, LimitsConfig, Subject};
use crate::gcra::{Decision, Gcra};
use crate::table::{BoundedTable, Key, LimiterTable, Tat};

/// Index of a configured route limit, looked up once with [`EdgeLimits::route_id`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RouteId(u16);

/// Occupancy of one table, for metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TableStats {
    pub name: &'static str,
    pub entries: usize,
    pub capacity: usize,
    pub evictions: u64,
    pub bytes: usize,
}

#[derive(Debug)]
struct Route {
    name: String,
    per: Subject,
    limit: Gcra,
}

/// All rate limits. Every method takes `&self` (tables lock per shard), so share one in an
/// `Arc` across the server.
#[derive(Debug)]
pub struct EdgeLimits {
    prefixes: SubnetPrefixes,
    per_ip: Gcra,
    per_subnet: Gcra,
    per_account: Gcra,
    per_api_key: Gcra,
    account_tokens: Gcra,
    concurrent_per_account: u32,
    routes: Vec<Route>,
    ips: LimiterTable,
    subnets: LimiterTable,
    accounts: LimiterTable,
    api_keys: LimiterTable,
    tokens: LimiterTable,
    route_table: LimiterTable,
    in_flight: Arc<ConcurrencyTable>,
}

impl EdgeLimits {
    /// Builds every table (all memory is allocated here). Validate the config first with
    /// [`crate::ShieldConfig::validate`]; errors here name the same fields.
    pub fn new(config: &LimitsConfig) -> Result<Self, ConfigError> {
        let g = |field: &str, rate: &crate::config::RateConfig| {
            rate.gcra().map_err(|e| ConfigError { field: format!("limits.{field}"), problem: e.to_string() })
        };
        let routes = config
            .routes
            .iter()
            .enumerate()
            .map(|(i, r)| {
                Ok(Route { name: r.route.clone(), per: r.per, limit: g(&format!("routes[{i}].rate"), &r.rate)? })
            })
            .collect::<Result<Vec<_>, ConfigError>>()?;
        Ok(Self {
            prefixes: config.prefixes(),
            per_ip: g("per_ip", &config.per_ip)?,
            per_subnet: g("per_subnet", &config.per_subnet)?,
            per_account: g("per_account", &config.per_account)?,
            per_api_key: g("per_api_key", &config.per_api_key)?,
            account_tokens: g("account_tokens", &config.account_tokens)?,
            concurrent_per_account: config.concurrent_per_account,
            routes,
            ips: LimiterTable::new(config.ip_entries),
            subnets: LimiterTable::new(config.subnet_entries),
            accounts: LimiterTable::new(config.account_entries),
            api_keys: LimiterTable::new(config.api_key_entries),
            tokens: LimiterTable::new(config.account_entries),
            route_table: LimiterTable::new(config.route_entries),
            in_flight: Arc::new(ConcurrencyTable::new(config.in_flight_entries)),
        })
    }

    /// The prefixes clients are grouped by.
    pub fn prefixes(&self) -> SubnetPrefixes {
        self.prefixes
    }

    /// The edge check for every request: the address's limit and its subnet's. A request the
    /// subnet refuses is given back to the address, so one busy neighbour does not drain a
    /// client's own budget.
    pub fn check_source(&self, client: &Client, now: Duration) -> Decision {
        let key = Key::ip(client.ip());
        let by_ip = self.ips.check(key, &self.per_ip, now, 1);
        if !by_ip.allowed {
            return by_ip;
        }
        let by_subnet = self.subnets.check(Key::subnet(client.subnet()), &self.per_subnet, now, 1);
        if !by_subnet.allowed {
            self.ips.refund(key, &self.per_ip, now, 1);
        }
        by_ip.tightest(by_subnet)
    }

    /// Per-account request limit (after the session is known).
    pub fn check_account(&self, account: u64, now: Duration) -> Decision {
        self.accounts.check(Key::account(account), &self.per_account, now, 1)
    }

    /// Charges `cost` more requests to the account's rate: how an account trusted less gets
    /// a smaller share of the same limit without a table per tier.
    pub fn charge_account(&self, account: u64, cost: u32, now: Duration) -> Decision {
        self.accounts.check(Key::account(account), &self.per_account, now, cost)
    }

    /// Per-API-key request limit; build the key with [`Key::api_key`] or
    /// [`Key::api_key_prefix`].
    pub fn check_api_key(&self, key: Key, now: Duration) -> Decision {
        self.api_keys.check(key, &self.per_api_key, now, 1)
    }

    /// The id of a configured route limit (look up at start-up, not per request).
    pub fn route_id(&self, name: &str) -> Option<RouteId> {
        self.routes.iter().position(|r| r.name == name).map(|i| RouteId(i as u16))
    }

    /// Every configured limit for route `name` (a route may be limited per IP and per subnet).
    pub fn route_ids(&self, name: &str) -> Vec<RouteId> {
        (0..self.routes.len()).filter(|&i| self.routes[i].name == name).map(|i| RouteId(i as u16)).collect()
    }

    /// A per-route limit for this client (anonymous clients fall back to their address for
    /// `per = "account"`). Unknown ids allow.
    pub fn check_route(&self, route: RouteId, client: &Client, account: Option<u64>, now: Duration) -> Decision {
        let Some(r) = self.routes.get(usize::from(route.0)) else {
            return Decision::unlimited();
        };
        let subject = match (r.per, account) {
            (Subject::Ip, _) | (Subject::Account, None) => Key::ip(client.ip()),
            (Subject::Subnet, _) => Key::subnet(client.subnet()),
            (Subject::Account, Some(id)) => Key::account(id),
        };
        self.route_table.check(Key::route(route.0, subject), &r.limit, now, 1)
    }

    /// Reserves `estimate` inference tokens (prompt plus `max_tokens`, say) for `account`.
    /// A request whose estimate exceeds the whole per-minute budget is refused without a
    /// retry time: tell the client to ask for fewer tokens.
    pub fn check_tokens(&self, account: u64, estimate: u32, now: Duration) -> Decision {
        self.tokens.check(Key::account(account), &self.account_tokens, now, estimate)
    }

    /// Settles a reservation once the reply's real usage is known: charges the excess or
    /// gives back the unused part.
    pub fn settle_tokens(&self, account: u64, estimate: u32, actual: u32, now: Duration) {
        let key = Key::account(account);
        if actual > estimate {
            self.tokens.charge(key, &self.account_tokens, now, actual - estimate);
        } else if actual < estimate {
            self.tokens.refund(key, &self.account_tokens, now, estimate - actual);
        }
    }

    /// Holds one of the account's concurrent-request slots until the permit is dropped
    /// (keep it alive for the whole streamed reply). `None`: answer 429.
    pub fn acquire_stream(&self, account: u64) -> Option<ConcurrencyPermit> {
        acquire(&self.in_flight, Key::account(account), self.concurrent_per_account)
    }

    /// Total bytes of all tables: fixed at construction.
    pub fn memory_bytes(&self) -> usize {
        self.stats().iter().map(|s| s.bytes).sum()
    }

    /// Per-table occupancy for the metrics endpoint.
    pub fn stats(&self) -> Vec<TableStats> {
        fn one<V: crate::table::Slot>(name: &'static str, t: &BoundedTable<V>) -> TableStats {
            TableStats {
                name,
                entries: t.len(),
                capacity: t.capacity(),
                evictions: t.evictions(),
                bytes: t.memory_bytes(),
            }
        }
        vec![
            one::<Tat>("ip", &self.ips),
            one::<Tat>("subnet", &self.subnets),
            one::<Tat>("account", &self.accounts),
            one::<Tat>("api_key", &self.api_keys),
            one::<Tat>("account_tokens", &self.tokens),
            one::<Tat>("route", &self.route_table),
            one::<InFlight>("in_flight", &self.in_flight),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RateConfig;

    const NOW: Duration = Duration::from_secs(1_000);

    fn ip(text: &str) -> Client {
        Client::new(text.parse().expect("ip"), SubnetPrefixes::default())
    }

    fn small() -> LimitsConfig {
        LimitsConfig {
            per_ip: RateConfig::new(1, 1_000, 3),
            per_subnet: RateConfig::new(1, 1_000, 5),
            ip_entries: 1,
            subnet_entries: 1,
            account_entries: 1,
            api_key_entries: 1,
            route_entries: 1,
            in_flight_entries: 1,
            ..LimitsConfig::default()
        }
    }

    #[test]
    fn a_botnet_in_one_subnet_is_stopped_by_the_subnet_limit() {
        let l = EdgeLimits::new(&small()).expect("valid");
        let allowed = (1..=50).filter(|i| l.check_source(&ip(&format!("203.0.113.{i}")), NOW).allowed).count();
        assert_eq!(allowed, 5, "each address is under its own limit; the /24 is not");
        assert!(l.check_source(&ip("198.51.100.1"), NOW).allowed, "other subnets unaffected");
        // Refused by the subnet, so the address got its token back.
        let d = l.check_source(&ip("203.0.113.1"), NOW);
        assert!(!d.allowed);
        assert!(d.retry_after.is_some());
    }

    #[test]
    fn routes_tokens_and_streams() {
        let l = EdgeLimits::new(&LimitsConfig::default()).expect("valid");
        let register = l.route_id("register").expect("default route");
        let client = ip("2001:db8::1");
        let allowed = (0..20).filter(|_| l.check_route(register, &client, None, NOW).allowed).count();
        assert_eq!(allowed, 10);
        assert!(!l.check_route(register, &ip("2001:db8::2"), None, NOW).allowed, "same /64");
        assert!(l.check_route(RouteId(999), &client, None, NOW).allowed);
        assert_eq!(l.route_ids("login").len(), 1);

        assert!(l.check_tokens(7, 50_000, NOW).allowed);
        assert!(!l.check_tokens(7, 50_000, NOW).allowed);
        l.settle_tokens(7, 50_000, 1_000, NOW);
        assert!(l.check_tokens(7, 50_000, NOW).allowed, "unused reservation returned");
        assert_eq!(l.check_tokens(8, 100_000, NOW).retry_after, None, "never fits");

        let permits: Vec<_> = (0..8).filter_map(|_| l.acquire_stream(1)).collect();
        assert_eq!(permits.len(), 8);
        assert!(l.acquire_stream(1).is_none());
        drop(permits);
        assert!(l.acquire_stream(1).is_some());
        assert_eq!(l.stats().len(), 7);
        assert!(l.memory_bytes() < 17 << 20, "{}", l.memory_bytes());
    }
}
