//! The connection to the shared state, its health, and the calls that are neither
//! limits nor switches: one-time claims and the shield-key check.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use crate::error::FleetError;
use crate::link::{Link, Topology};

/// How a node reaches the shared state.
#[derive(Debug, Clone)]
pub struct FleetConfig {
    /// `redis://` or `rediss://` (with `?protocol=resp3` and the like, as the `redis` crate
    /// reads it), `redis-sentinel://host:port,…/<master>` or `redis-cluster://host:port,…`
    /// (see [`crate::link`]).
    pub url: String,
    /// Put before every key, so several fleets (or tests) can share one server.
    pub prefix: String,
    /// The most one call may take before the node decides alone.
    pub timeout: Duration,
}

impl Default for FleetConfig {
    fn default() -> Self {
        FleetConfig {
            url: "redis://127.0.0.1:6379".into(),
            prefix: "palisade".into(),
            timeout: Duration::from_millis(75),
        }
    }
}

/// What a round trip to the shared state was for (see [`Fleet::trips`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trip {
    /// Awaited by a request, or by an operator's command.
    Awaited,
    /// A lease given back after a reply, off its path.
    Release,
    /// Budget updates decided on this node, beside requests or after their replies.
    Update,
    /// Made by the fleet's clocks whatever the traffic: the switch poll (its version read
    /// and what it then reads or publishes) and the attack detector's signal sums.
    Clock,
}

impl Trip {
    pub const ALL: [Trip; 4] = [Trip::Awaited, Trip::Release, Trip::Update, Trip::Clock];
}

/// The shared state and whether it is answering. All methods take `&self`.
pub struct Fleet {
    topology: Topology,
    /// Replaced when a Sentinel names another master, or a Cluster is first reached.
    link: std::sync::RwLock<Link>,
    prefix: String,
    timeout: Duration,
    up: AtomicBool,
    /// Decisions made locally because the shared state failed or was down.
    fallbacks: AtomicU64,
    /// Times the fleet went from up to down.
    outages: AtomicU64,
    /// Calls made (each one round trip), answered or not, by what they were for: one
    /// counter each, so any one count read at any moment is exact.
    trips: [AtomicU64; Trip::ALL.len()],
    /// Budget updates waiting for [`Fleet::run_updates`].
    pub(crate) queue: tokio::sync::mpsc::Sender<crate::queue::Update>,
    pub(crate) queued: std::sync::Mutex<Option<tokio::sync::mpsc::Receiver<crate::queue::Update>>>,
}

impl Fleet {
    /// Builds the client without connecting (no await: the gateway is built synchronously,
    /// and a node must start even while Redis is away). Must be called inside a Tokio
    /// runtime. Starts "up": the first call finds out.
    pub fn new(config: &FleetConfig) -> Result<Fleet, FleetError> {
        let prefix = &config.prefix;
        if prefix.is_empty() || prefix.len() > 64 || prefix.contains(['{', '}']) {
            return Err(FleetError::Prefix(prefix.clone()));
        }
        let (topology, link) = Topology::open(&config.url, config.timeout)?;
        let (queue, queued) = tokio::sync::mpsc::channel(crate::queue::MAX_QUEUED);
        Ok(Fleet {
            topology,
            link: std::sync::RwLock::new(link),
            prefix: prefix.clone(),
            timeout: config.timeout,
            up: AtomicBool::new(true),
            fallbacks: AtomicU64::new(0),
            outages: AtomicU64::new(0),
            trips: Default::default(),
            queue,
            queued: std::sync::Mutex::new(Some(queued)),
        })
    }

    /// True while the shared state answers; when false, decide locally without asking.
    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    /// Decisions taken locally since start because the shared state failed or was down.
    pub fn fallbacks(&self) -> u64 {
        self.fallbacks.load(Ordering::Relaxed)
    }

    /// Times the shared state went away since start.
    pub fn outages(&self) -> u64 {
        self.outages.load(Ordering::Relaxed)
    }

    /// Round trips to the shared state since start (every call is one).
    pub fn round_trips(&self) -> u64 {
        Trip::ALL.iter().map(|&kind| self.trips(kind)).sum()
    }

    /// Of [`Fleet::round_trips`], those made for `kind`.
    pub fn trips(&self, kind: Trip) -> u64 {
        self.trips[kind as usize].load(Ordering::Relaxed)
    }

    /// Of [`Fleet::round_trips`], those that gave a lease back: made after a reply, on
    /// no request's path.
    pub fn releases(&self) -> u64 {
        self.trips(Trip::Release)
    }

    /// Of [`Fleet::round_trips`], those that carried budget updates decided on this node
    /// ([`Fleet::adjust_later`]): made beside requests or after their replies, awaited by
    /// none.
    pub fn updates(&self) -> u64 {
        self.trips(Trip::Update)
    }

    /// Counts one decision taken locally (the caller's fallback).
    pub fn count_fallback(&self) {
        self.fallbacks.fetch_add(1, Ordering::Relaxed);
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Whether the shared state is a Redis Cluster (keys of two hash tags need two calls).
    pub fn is_cluster(&self) -> bool {
        self.topology.is_cluster()
    }

    fn link(&self) -> Link {
        self.link.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Reaches a Sentinel's master or a Cluster now rather than on the probe's next tick
    /// (a node joining the fleet); a single endpoint connects on first use.
    pub async fn connect(&self) -> Result<(), FleetError> {
        let Some(connected) = tokio::time::timeout(self.timeout * 20, self.topology.connect(self.timeout))
            .await
            .map_err(|_| FleetError::Timeout(self.timeout * 20))?
        else {
            return Ok(());
        };
        *self.link.write().unwrap_or_else(|e| e.into_inner()) = connected?;
        Ok(())
    }

    /// Runs `op` on a clone of the connection within the timeout, counted as a trip
    /// awaited by a request or an operator; any failure marks the fleet down (logged once
    /// per outage, not per request).
    pub(crate) async fn call<T, F, Fut>(&self, op: F) -> Result<T, FleetError>
    where
        F: FnOnce(Link) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        self.call_for(Trip::Awaited, op).await
    }

    /// [`Fleet::call`], counted as a trip for `kind`.
    pub(crate) async fn call_for<T, F, Fut>(&self, kind: Trip, op: F) -> Result<T, FleetError>
    where
        F: FnOnce(Link) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        self.trips[kind as usize].fetch_add(1, Ordering::Relaxed);
        let result = match tokio::time::timeout(self.timeout, op(self.link())).await {
            Ok(Ok(value)) => return Ok(value),
            Ok(Err(e)) => FleetError::Redis(e),
            Err(_) => FleetError::Timeout(self.timeout),
        };
        self.mark_down(&result);
        Err(result)
    }

    fn mark_down(&self, why: &FleetError) {
        if self.up.swap(false, Ordering::Relaxed) {
            self.outages.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(error = %why, "shared state unreachable: limits are local, scaled to this node's share");
        }
    }

    /// Until `stop` resolves: while the fleet is down, pings every `every` and marks it up
    /// again at the first answer. Cheap while up (one atomic load per tick).
    pub async fn run_probe(&self, every: Duration) {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            tick.tick().await;
            if self.is_up() {
                continue;
            }
            // A Sentinel may name another master by now; a Cluster may not be reached yet.
            if let Err(error) = self.connect().await {
                tracing::debug!(%error, "shared state: reconnecting failed");
                continue;
            }
            let ping = tokio::time::timeout(self.timeout, async {
                let mut conn = self.link();
                redis::cmd("PING").query_async::<String>(&mut conn).await
            })
            .await;
            if matches!(ping, Ok(Ok(_))) && !self.up.swap(true, Ordering::Relaxed) {
                tracing::info!("shared state answers again: limits are fleet-wide");
            }
        }
    }

    /// Marks the fleet down as if a call had failed: for tests and for an operator who
    /// wants a node to stop using the shared state now.
    pub fn force_down(&self) {
        self.mark_down(&FleetError::Protocol("forced down"));
    }

    /// Claims `id` once across the fleet for `ttl` (a redeemed proof-of-work challenge, a
    /// used admission pass): `Ok(true)` the first time, `Ok(false)` on every node after.
    pub async fn claim_once(&self, kind: &str, id: &[u8], ttl: Duration) -> Result<bool, FleetError> {
        let key = format!("{}:once:{kind}:{{{}}}", self.prefix, hex(id));
        let ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
        self.call(|mut c| async move {
            let set: Option<String> =
                redis::cmd("SET").arg(&key).arg(1).arg("NX").arg("PX").arg(ms).query_async(&mut c).await?;
            Ok(set.is_some())
        })
        .await
    }

    /// Spends one use of `id`'s budget across the fleet (a proof-of-work clearance good
    /// for `budget` requests until it expires in `ttl`): `Ok(Some(left))`, or `Ok(None)`
    /// once the fleet has spent it all.
    pub async fn spend_once(
        &self,
        kind: &str,
        id: &[u8],
        budget: u32,
        ttl: Duration,
    ) -> Result<Option<u32>, FleetError> {
        const SCRIPT: &str = r"
local used = redis.call('INCR', KEYS[1])
if used == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
local left = tonumber(ARGV[1]) - used
if left < 0 then return -1 end
return left
";
        static SPEND: std::sync::LazyLock<redis::Script> = std::sync::LazyLock::new(|| redis::Script::new(SCRIPT));
        let key = format!("{}:spent:{kind}:{{{}}}", self.prefix, hex(id));
        let ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
        let mut invocation = SPEND.prepare_invoke();
        invocation.key(key).arg(budget).arg(ms);
        let left: i64 = self.call(|mut c| async move { invocation.invoke_async(&mut c).await }).await?;
        Ok(u32::try_from(left).ok())
    }

    /// Registers this node's shield-key fingerprint with the fleet (the first node sets it)
    /// and refuses a node whose key differs: its challenges and clearances would be
    /// refused everywhere else.
    pub async fn check_shield_key(&self, fingerprint: &str) -> Result<(), FleetError> {
        let key = format!("{}:{{switches}}:shield_key", self.prefix);
        let mine = fingerprint.to_owned();
        let stored: String = self
            .call(|mut c| async move {
                let _: Option<String> = redis::cmd("SET").arg(&key).arg(&mine).arg("NX").query_async(&mut c).await?;
                redis::cmd("GET").arg(&key).query_async(&mut c).await
            })
            .await?;
        if stored == fingerprint { Ok(()) } else { Err(FleetError::ShieldKeyMismatch) }
    }
}

/// Lower-case hex, for ids in keys.
pub(crate) fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}
