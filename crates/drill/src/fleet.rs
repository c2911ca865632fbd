//! The drill against several Palisade nodes: the Redis and PostgreSQL they share (a key
//! prefix and a database of the run's own, removed at its end), how clients are spread
//! over the nodes, how the nodes' metrics add up to the fleet's, and the probe that
//! measures how exactly a per-key limit holds across the nodes.

use std::hash::{BuildHasher, RandomState};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde::Serialize;
use serde_json::json;
use sqlx::postgres::PgConnection;
use sqlx::{AssertSqlSafe, Connection};

use crate::load::Metrics;
use crate::traffic::{Browser, Identifier, Outbox, Solver};

/// Where the nodes' shared state is, when nobody says.
pub const DEFAULT_SHARED_STATE: &str = "redis://127.0.0.1:6379";
/// The role is named: without one, the client would log in as the local user, whom a
/// stock PostgreSQL does not know (and sqlx as `anonymous` when it cannot tell who that
/// is); `postgres` is the superuser a packaged server starts with.
pub const DEFAULT_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

pub use crate::scenario::MAX_NODES;

/// How long a service may take to answer before the drill says it is not there, and
/// how long cleaning up may hold the drill's exit.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
const CLEANUP_TIMEOUT: Duration = Duration::from_secs(10);

/// How many nodes, and where their shared state is (`None`: the local default).
#[derive(Clone, Debug, Default)]
pub struct FleetOptions {
    pub nodes: usize,
    pub shared_state: Option<String>,
    pub database_url: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    #[error(
        "{nodes} nodes share their limits through Redis, but {url} does not answer ({why}); start one \
         (apt-get install -y redis-server) or pass --shared-state redis://HOST:PORT (or set PALISADE_SHARED_STATE)"
    )]
    NoRedis { nodes: usize, url: String, why: String },
    #[error(
        "{nodes} nodes share one PostgreSQL database, but {url} cannot be used ({why}); start one \
         (apt-get install -y postgresql) or pass --database-url postgres://USER@HOST:PORT/DB (or set \
         PALISADE_DATABASE_URL) naming a role that may create databases"
    )]
    NoPostgres { nodes: usize, url: String, why: String },
}

/// A Redis key prefix and a PostgreSQL database of this run's own, so runs (and other
/// users of the same servers) never see each other's accounts, limits or switches.
/// Dropping it drops the database and deletes the prefix's keys, best effort: what
/// cannot be removed within 10 s is named on stderr and left behind.
#[derive(Debug)]
pub struct SharedBacking {
    pub redis_url: String,
    pub prefix: String,
    /// The run's own database, for the nodes.
    pub database_url: String,
    admin_url: String,
    database: String,
}

impl SharedBacking {
    /// Checks that Redis answers and creates the run's database.
    pub async fn prepare(opts: &FleetOptions) -> Result<SharedBacking, FleetError> {
        let nodes = opts.nodes;
        let redis_url = opts.shared_state.clone().unwrap_or_else(|| DEFAULT_SHARED_STATE.to_owned());
        let admin_url = opts.database_url.clone().unwrap_or_else(|| DEFAULT_DATABASE_URL.to_owned());
        ping_redis(&redis_url).await.map_err(|why| FleetError::NoRedis { nodes, url: redis_url.clone(), why })?;
        let no_postgres = |why: String| FleetError::NoPostgres { nodes, url: admin_url.clone(), why };
        if !admin_url.starts_with("postgres://") && !admin_url.starts_with("postgresql://") {
            return Err(no_postgres("not a postgres:// URL".into()));
        }
        let name = unique_name("palisade_drill", '_');
        let mut conn = connect(&admin_url).await.map_err(no_postgres)?;
        // The name is ours (letters, digits, underscores), so quoting it is enough.
        sqlx::query(AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
            .execute(&mut conn)
            .await
            .map_err(|e| no_postgres(format!("CREATE DATABASE {name}: {e}")))?;
        let _ = conn.close().await;
        Ok(SharedBacking {
            database_url: with_database(&admin_url, &name),
            prefix: unique_name("palisade-drill", '-'),
            redis_url,
            admin_url,
            database: name,
        })
    }
}

impl Drop for SharedBacking {
    fn drop(&mut self) {
        // Drop runs inside the drill's runtime, where blocking on async work panics: the
        // clean-up gets a thread and a runtime of its own, and we wait for it (boundedly)
        // so a drill that exits right after leaves nothing behind.
        let (admin_url, database) = (self.admin_url.clone(), self.database.clone());
        let (redis_url, prefix) = (self.redis_url.clone(), self.prefix.clone());
        let (done, outcome) = std::sync::mpsc::channel();
        let spawned = std::thread::Builder::new().name("drill-cleanup".into()).spawn(move || {
            let db = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())
                .and_then(|rt| rt.block_on(drop_database(&admin_url, &database)));
            let keys = delete_keys(&redis_url, &prefix);
            let _ = done.send((db, keys));
        });
        let left = match spawned.map_err(|e| e.to_string()).map(|_| outcome.recv_timeout(CLEANUP_TIMEOUT)) {
            Ok(Ok((db, keys))) => [db.err().map(|e| format!("database {}: {e}", self.database)), keys.err()],
            Ok(Err(_)) => {
                [Some(format!("database {} and keys {}:*: no answer within 10 s", self.database, self.prefix)), None]
            }
            Err(e) => [Some(format!("database {} and keys {}:*: {e}", self.database, self.prefix)), None],
        };
        for what in left.into_iter().flatten() {
            eprintln!("drill: left behind {what}");
        }
    }
}

async fn ping_redis(url: &str) -> Result<(), String> {
    let client = redis::Client::open(url).map_err(|e| e.to_string())?;
    let ping = async {
        let mut conn = client.get_multiplexed_async_connection().await?;
        redis::cmd("PING").query_async::<String>(&mut conn).await
    };
    match tokio::time::timeout(CONNECT_TIMEOUT, ping).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("no answer within {} s", CONNECT_TIMEOUT.as_secs())),
    }
}

/// Deletes every key under `prefix` (the nodes put `prefix:` before each of theirs).
fn delete_keys(url: &str, prefix: &str) -> Result<(), String> {
    let fail = |e: redis::RedisError| format!("Redis keys {prefix}:*: {e}");
    let client = redis::Client::open(url).map_err(fail)?;
    let mut conn = client.get_connection_with_timeout(CONNECT_TIMEOUT).map_err(fail)?;
    let pattern = format!("{prefix}:*");
    // SCAN returns every key present from its first call to its last, so deleting as we
    // go misses none.
    let mut cursor = 0u64;
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(&pattern)
            .arg("COUNT")
            .arg(500)
            .query(&mut conn)
            .map_err(fail)?;
        if !keys.is_empty() {
            redis::cmd("DEL").arg(&keys).query::<()>(&mut conn).map_err(fail)?;
        }
        if next == 0 {
            return Ok(());
        }
        cursor = next;
    }
}

async fn connect(url: &str) -> Result<PgConnection, String> {
    match tokio::time::timeout(CONNECT_TIMEOUT, PgConnection::connect(url)).await {
        Ok(Ok(conn)) => Ok(conn),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("no answer within {} s", CONNECT_TIMEOUT.as_secs())),
    }
}

async fn drop_database(admin_url: &str, name: &str) -> Result<(), String> {
    let mut conn = connect(admin_url).await?;
    // FORCE: a node's pool may still hold connections, closed lazily.
    sqlx::query(AssertSqlSafe(format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)")))
        .execute(&mut conn)
        .await
        .map_err(|e| e.to_string())?;
    let _ = conn.close().await;
    Ok(())
}

/// `base_<pid>_<n>_<random>`: the pid and counter tell live runs apart; the random part
/// keeps a reused pid from meeting what a killed run left behind.
fn unique_name(base: &str, sep: char) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let random = RandomState::new().hash_one(n) as u32;
    format!("{base}{sep}{}{sep}{n}{sep}{random:08x}", std::process::id())
}

/// `url` with its database (the path) replaced by `name`, query kept.
pub fn with_database(url: &str, name: &str) -> String {
    let (base, query) = url.split_at(url.find('?').unwrap_or(url.len()));
    let authority = base.find("://").map_or(0, |i| i + 3);
    let path = base[authority..].find('/').map_or(base.len(), |i| authority + i);
    format!("{}/{name}{query}", &base[..path])
}

/// The node a balancer sends client `i` of `group` to, out of `nodes`.
///
/// Clients are dealt round-robin, one node each for all their requests (their
/// connections stay alive). The drill numbers a botnet's sources subnet by subnet
/// (source `i` is in subnet `i % group`), so plain `i % nodes` would put a whole /24 on
/// one node whenever `group` is a multiple of `nodes`, and a per-subnet limit would
/// never be tested across nodes; shifting each round by one spreads every subnet over
/// all nodes, as a balancer that knows nothing of subnets does.
pub fn node_of(i: usize, group: usize, nodes: usize) -> usize {
    let group = group.max(1);
    (i % group + i / group) % nodes.max(1)
}

/// The fleet's metrics from one sample of each node: counters (`_total`, and a
/// histogram's `_sum`, `_count`, `_bucket`) add up; a gauge is its highest node's, so the
/// fleet counts as under attack while any node is.
pub fn fleet_metrics(nodes: &[Metrics]) -> Metrics {
    let mut out = Metrics::new();
    for m in nodes {
        for (key, value) in m {
            let family = key.split('{').next().unwrap_or(key);
            let counter = ["_total", "_sum", "_count", "_bucket"].iter().any(|s| family.ends_with(s));
            out.entry(key.clone())
                .and_modify(|v| *v = if counter { *v + value } else { v.max(*value) })
                .or_insert(*value);
        }
    }
    out
}

/// The per-key limit the probe's key gets, per minute (its burst as large).
pub const PROBE_LIMIT_PER_MINUTE: u32 = 30;

/// What the limit probe saw: a key limited to `limit_per_minute` (burst as large) sent
/// `sent` requests, round-robin over the nodes, as fast as a few at a time go.
#[derive(Clone, Debug, Serialize)]
pub struct LimitProbe {
    pub limit_per_minute: u32,
    pub sent: usize,
    /// 200s, per node.
    pub admitted: Vec<usize>,
    /// 429s, all nodes.
    pub refused: usize,
    /// Anything else (no answer, a challenge): the probe did not test the limit cleanly.
    pub other: usize,
    /// From the first request sent to the last answer.
    pub elapsed_s: f64,
}

impl LimitProbe {
    pub fn admitted_total(&self) -> usize {
        self.admitted.iter().sum()
    }

    /// What the limit lets through in `elapsed_s`: its burst, plus its rate for that long.
    pub fn allowed(&self) -> f64 {
        let limit = f64::from(self.limit_per_minute);
        limit + limit * self.elapsed_s / 60.0
    }

    /// Admitted over allowed: 1.0 when the fleet enforces the limit exactly.
    pub fn ratio(&self) -> f64 {
        self.admitted_total() as f64 / self.allowed()
    }

    /// What as many independent nodes, each with the whole limit, would have let through.
    pub fn independent_allowed(&self) -> f64 {
        (self.admitted.len() as f64 * self.allowed()).min(self.sent as f64)
    }
}

/// Signs a probe account up through the first node, gives it a key limited to
/// [`PROBE_LIMIT_PER_MINUTE`], and sends `(nodes + 1) ×` that many `GET /v1/models`
/// with it, dealt round-robin over `nodes` from a dozen addresses (so no per-address
/// limit is reached first). Runs before the scenario's traffic, on quiet gateways, so
/// nothing else touches the key's limit. An error says which step failed.
pub async fn limit_probe(
    nodes: &[String],
    solver: &Solver,
    outbox: &Outbox,
    timeout: Duration,
) -> Result<LimitProbe, String> {
    let first = nodes.first().ok_or("no node")?;
    let deadline = Instant::now() + Duration::from_secs(60);
    let owner = Browser::new(IpAddr::V4(Ipv4Addr::new(127, 253, 0, 1)), first, timeout);
    let password = crate::traffic::member_password(usize::MAX);
    let who = Identifier::Email("limit-probe@drill.example".into());
    owner.sign_up(solver, outbox, &who, &password, deadline, None).await.map_err(|e| e.to_string())?;
    let body = json!({"name": "drill limit probe", "scopes": "inference", "rpm_limit": PROBE_LIMIT_PER_MINUTE});
    let answer = owner.call(solver, "POST", "/auth/keys", Some(&body), deadline).await;
    let key = answer.body["key"]
        .as_str()
        .ok_or_else(|| format!("creating the probe's key answered {}: {}", answer.status, answer.body))?
        .to_owned();

    let clients: Vec<reqwest::Client> = (1..=12u8)
        .map(|i| crate::load::client_from(Some(IpAddr::V4(Ipv4Addr::new(127, 253, i, 1))), timeout))
        .collect();
    let sent = (nodes.len() + 1) * PROBE_LIMIT_PER_MINUTE as usize;
    let started = Instant::now();
    let statuses: Vec<(usize, u16)> = futures_util::stream::iter(0..sent)
        .map(|i| {
            let node = i % nodes.len();
            let request = clients[i % clients.len()].get(format!("{}/v1/models", nodes[node])).bearer_auth(&key);
            async move { (node, crate::load::send(request).await) }
        })
        .buffer_unordered(4 * nodes.len())
        .collect()
        .await;
    let elapsed_s = started.elapsed().as_secs_f64();
    let mut admitted = vec![0; nodes.len()];
    let (mut refused, mut other) = (0, 0);
    for (node, status) in statuses {
        match status {
            200 => admitted[node] += 1,
            429 => refused += 1,
            _ => other += 1,
        }
    }
    Ok(LimitProbe { limit_per_minute: PROBE_LIMIT_PER_MINUTE, sent, admitted, refused, other, elapsed_s })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_node_gets_its_share_and_every_subnet_reaches_every_node() {
        for (sources, subnets, nodes) in [(300, 30, 3), (300, 10, 3), (50, 5, 3), (20, 20, 3), (7, 2, 2), (64, 64, 4)] {
            let mut per_node = vec![0usize; nodes];
            let mut seen = vec![std::collections::BTreeSet::new(); subnets];
            for i in 0..sources {
                let node = node_of(i, subnets, nodes);
                per_node[node] += 1;
                seen[i % subnets].insert(node);
            }
            let (least, most) = (per_node.iter().min().copied(), per_node.iter().max().copied());
            assert!(most.unwrap_or(0) - least.unwrap_or(0) <= 1, "{sources}/{subnets}/{nodes}: {per_node:?}");
            for (s, nodes_of_subnet) in seen.iter().enumerate() {
                let hosts = (sources - s).div_ceil(subnets);
                assert_eq!(nodes_of_subnet.len(), hosts.min(nodes), "subnet {s} of {sources}/{subnets}/{nodes}");
            }
        }
        assert_eq!(node_of(5, 0, 0), 0, "no division by zero");
    }

    #[test]
    fn counters_add_up_and_gauges_take_the_highest_node() {
        let node = |decisions: f64, attack: f64| -> Metrics {
            [
                ("palisade_edge_decisions_total{action=\"limit\"}".to_owned(), decisions),
                ("palisade_edge_under_attack".to_owned(), attack),
                ("palisade_request_duration_seconds_count".to_owned(), 2.0),
            ]
            .into_iter()
            .collect()
        };
        let fleet = fleet_metrics(&[node(3.0, 0.0), node(4.0, 1.0), node(5.0, 0.0)]);
        assert_eq!(fleet["palisade_edge_decisions_total{action=\"limit\"}"], 12.0);
        assert_eq!(fleet["palisade_edge_under_attack"], 1.0);
        assert_eq!(fleet["palisade_request_duration_seconds_count"], 6.0);
    }

    #[test]
    fn the_probe_compares_what_passed_with_what_the_limit_allows_in_that_time() {
        let probe = LimitProbe {
            limit_per_minute: 30,
            sent: 120,
            admitted: vec![10, 11, 10],
            refused: 89,
            other: 0,
            elapsed_s: 6.0,
        };
        // 30 at once, plus 30 a minute for 6 s.
        assert!((probe.allowed() - 33.0).abs() < 1e-9);
        assert!((probe.ratio() - 31.0 / 33.0).abs() < 1e-9);
        assert!((probe.independent_allowed() - 99.0).abs() < 1e-9);
        let slow = LimitProbe { elapsed_s: 600.0, ..probe };
        assert_eq!(slow.independent_allowed(), 120.0, "never more than was sent");
    }

    #[test]
    fn the_database_is_swapped_in_the_url() {
        assert_eq!(with_database("postgres://127.0.0.1:5432/test", "x"), "postgres://127.0.0.1:5432/x");
        assert_eq!(with_database("postgres://u@h/db?sslmode=disable", "x"), "postgres://u@h/x?sslmode=disable");
        assert_eq!(with_database("postgres://u@h:5432", "x"), "postgres://u@h:5432/x");
    }

    #[test]
    fn names_are_unique_and_safe_to_quote() {
        let (a, b) = (unique_name("palisade_drill", '_'), unique_name("palisade_drill", '_'));
        assert_ne!(a, b);
        assert!(a.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'), "{a}");
        assert!(!unique_name("palisade-drill", '-').contains(['{', '}', ':', '*']));
    }
}
