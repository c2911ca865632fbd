//! How a node reaches the shared state: one Redis (or Valkey) endpoint, the master a set
//! of Sentinels names, or a Cluster.
//!
//! - `redis://…`, `rediss://…`, `valkey://…`: one endpoint, through a self-reconnecting
//!   `ConnectionManager`.
//! - `redis-sentinel://host:port,host:port/<master name>`: the Sentinels are asked for
//!   the master; when calls to it fail (it died, or was demoted and refuses writes) the
//!   probe asks them again and follows the new one.
//! - `redis-cluster://host:port,host:port`: the `redis` crate's cluster connection, which
//!   follows slot moves and failovers by itself.
//!
//! Sentinel and Cluster URLs name plain TCP endpoints without credentials.

use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::sentinel::{SentinelClient, SentinelServerType};
use redis::{Cmd, ErrorKind, Pipeline, RedisError, RedisFuture, Value};

use crate::error::FleetError;

/// Where the shared state is, as configured.
pub(crate) enum Topology {
    Single,
    Sentinel(tokio::sync::Mutex<SentinelClient>),
    Cluster(ClusterClient),
}

/// A connection to it, cheap to clone (each clone shares one multiplexed connection).
#[derive(Clone)]
pub(crate) enum Link {
    Manager(ConnectionManager),
    Cluster(ClusterConnection),
    /// Not connected yet (a Sentinel or Cluster topology before its first answer).
    Absent,
}

impl Topology {
    /// The topology `url` names and, for one endpoint, its connection (made lazily).
    pub(crate) fn open(url: &str, timeout: Duration) -> Result<(Topology, Link), FleetError> {
        if let Some(rest) = url.strip_prefix("redis-sentinel://") {
            let (hosts, master) =
                rest.split_once('/').ok_or_else(|| FleetError::Url("redis-sentinel://HOSTS/MASTER_NAME".into()))?;
            let master = master.split('?').next().unwrap_or_default();
            if master.is_empty() {
                return Err(FleetError::Url("a redis-sentinel:// URL ends with the master's name".into()));
            }
            let sentinel =
                SentinelClient::build(endpoints(hosts)?, master.to_owned(), None, SentinelServerType::Master)
                    .map_err(|e| FleetError::Url(e.to_string()))?;
            return Ok((Topology::Sentinel(tokio::sync::Mutex::new(sentinel)), Link::Absent));
        }
        if let Some(rest) = url.strip_prefix("redis-cluster://") {
            let hosts = rest.split(['/', '?']).next().unwrap_or_default();
            let client = ClusterClient::builder(endpoints(hosts)?)
                .connection_timeout(timeout.max(Duration::from_millis(250)))
                .response_timeout(timeout)
                .retries(1)
                .build()
                .map_err(|e| FleetError::Url(e.to_string()))?;
            return Ok((Topology::Cluster(client), Link::Absent));
        }
        let client = redis::Client::open(url).map_err(|e| FleetError::Url(e.to_string()))?;
        let manager = ConnectionManager::new_lazy_with_config(client, manager_config(timeout))?;
        Ok((Topology::Single, Link::Manager(manager)))
    }

    /// Connects afresh: the master the Sentinels name now, or the cluster. `None` for one
    /// endpoint, whose manager reconnects by itself.
    pub(crate) async fn connect(&self, timeout: Duration) -> Option<Result<Link, FleetError>> {
        Some(match self {
            Topology::Single => return None,
            Topology::Sentinel(sentinel) => {
                async {
                    let client = sentinel.lock().await.async_get_client().await?;
                    Ok(Link::Manager(ConnectionManager::new_lazy_with_config(client, manager_config(timeout))?))
                }
                .await
            }
            Topology::Cluster(client) => client.get_async_connection().await.map(Link::Cluster).map_err(Into::into),
        })
    }

    /// Whether keys of different hash tags must go in different calls.
    pub(crate) fn is_cluster(&self) -> bool {
        matches!(self, Topology::Cluster(_))
    }
}

/// Reconnection is the manager's job; the probe only watches. Few quick retries, so a
/// dead server fails calls fast instead of queueing them behind backoff.
fn manager_config(timeout: Duration) -> ConnectionManagerConfig {
    ConnectionManagerConfig::new()
        .set_response_timeout(Some(timeout))
        .set_connection_timeout(Some(timeout.max(Duration::from_millis(250))))
        .set_number_of_retries(1)
        .set_max_delay(Duration::from_millis(500))
}

/// `host:port,host:port` as `redis://` URLs.
fn endpoints(hosts: &str) -> Result<Vec<String>, FleetError> {
    let list: Vec<String> =
        hosts.split(',').map(str::trim).filter(|h| !h.is_empty()).map(|h| format!("redis://{h}")).collect();
    if list.is_empty() {
        return Err(FleetError::Url("name at least one host:port".into()));
    }
    Ok(list)
}

fn absent() -> RedisError {
    RedisError::from((ErrorKind::Io, "not connected to the shared state yet"))
}

impl ConnectionLike for Link {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Link::Manager(c) => c.req_packed_command(cmd),
            Link::Cluster(c) => c.req_packed_command(cmd),
            Link::Absent => Box::pin(async { Err(absent()) }),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Link::Manager(c) => c.req_packed_commands(pipeline, offset, count),
            Link::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
            Link::Absent => Box::pin(async { Err(absent()) }),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Link::Manager(c) => c.get_db(),
            Link::Cluster(c) => c.get_db(),
            Link::Absent => 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn urls_name_their_topology() {
        let t = Duration::from_millis(50);
        assert!(matches!(Topology::open("redis://127.0.0.1:6379", t), Ok((Topology::Single, Link::Manager(_)))));
        assert!(matches!(Topology::open("redis-sentinel://127.0.0.1:26379/main", t), Ok((Topology::Sentinel(_), _))));
        let cluster = Topology::open("redis-cluster://127.0.0.1:7000,127.0.0.1:7001", t);
        assert!(matches!(cluster, Ok((Topology::Cluster(_), _))));
        assert!(Topology::open("redis-sentinel://127.0.0.1:26379", t).is_err(), "no master name");
        assert!(Topology::open("redis-sentinel://127.0.0.1:26379/", t).is_err(), "empty master name");
        assert!(Topology::open("redis-cluster://", t).is_err(), "no hosts");
        assert_eq!(endpoints(" a:1, b:2 ,").unwrap(), ["redis://a:1", "redis://b:2"]);
    }
}
