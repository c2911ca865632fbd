//! Redis topologies of the test's own, for the fleet's Sentinel and Cluster URLs:
//! [`PrivateCluster`] (three masters, the slots split between them) and
//! [`PrivateSentinel`] (a master, a replica and one Sentinel watching them, which the
//! test can ask to fail over). Started from `redis-server` and `redis-cli` on free
//! loopback ports in a temporary directory; stopped on drop. When they cannot be had,
//! a test is skipped loudly, or fails under `CI=true`.

use std::net::TcpListener;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::redis::{Supervised, ping, skip_or_fail, spawn_server, supervise, wait_until_answering};

const READY_TIMEOUT: Duration = Duration::from_secs(20);

fn free_port() -> Result<u16, String> {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).map_err(|e| e.to_string())
}

fn temp_dir(what: &str) -> Result<tempfile::TempDir, String> {
    tempfile::Builder::new().prefix(&format!("palisade-{what}-")).tempdir().map_err(|e| e.to_string())
}

fn cli(port: u16, args: &[&str]) -> Result<String, String> {
    let out = Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .output()
        .map_err(|e| format!("cannot run redis-cli (apt-get install -y redis-tools): {e}"))?;
    if !out.status.success() {
        return Err(format!("redis-cli {args:?}: {}", String::from_utf8_lossy(&out.stderr)));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Polls `check` until it holds or [`READY_TIMEOUT`] passes.
fn until(what: &str, mut check: impl FnMut() -> bool) -> Result<(), String> {
    let deadline = Instant::now() + READY_TIMEOUT;
    while !check() {
        if Instant::now() > deadline {
            return Err(format!("{what} not within {READY_TIMEOUT:?}"));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

/// Three cluster masters.
pub struct PrivateCluster {
    /// `redis-cluster://127.0.0.1:p1,127.0.0.1:p2,127.0.0.1:p3`
    pub url: String,
    servers: Vec<Supervised>,
    _dir: tempfile::TempDir,
}

impl PrivateCluster {
    pub fn start() -> Option<PrivateCluster> {
        start_cluster().map_or_else(|why| skip_or_fail(&why), Some)
    }
}

fn start_cluster() -> Result<PrivateCluster, String> {
    let dir = temp_dir("cluster")?;
    let mut servers = Vec::new();
    let mut ports = Vec::new();
    for _ in 0..3 {
        let port = free_port()?;
        let conf = dir.path().join(format!("nodes-{port}.conf"));
        let conf = conf.to_string_lossy().into_owned();
        let server = spawn_server(port, dir.path(), &["--cluster-enabled", "yes", "--cluster-config-file", &conf])?;
        servers.push(server);
        wait_until_answering(&format!("redis://127.0.0.1:{port}"))?;
        ports.push(port);
    }
    let nodes: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
    let mut create = vec!["--cluster", "create"];
    create.extend(nodes.iter().map(String::as_str));
    create.extend(["--cluster-replicas", "0", "--cluster-yes"]);
    cli(ports[0], &create)?;
    for &port in &ports {
        until("the cluster's slots assigned", || {
            cli(port, &["cluster", "info"]).is_ok_and(|info| info.contains("cluster_state:ok"))
        })?;
    }
    Ok(PrivateCluster { url: format!("redis-cluster://{}", nodes.join(",")), servers, _dir: dir })
}

impl Drop for PrivateCluster {
    fn drop(&mut self) {
        for server in self.servers.drain(..) {
            server.stop();
        }
    }
}

/// A master, its replica and a Sentinel watching them under the name `palisade`.
pub struct PrivateSentinel {
    /// `redis-sentinel://127.0.0.1:<sentinel port>/palisade`
    pub url: String,
    sentinel_port: u16,
    /// The ports of the servers; which one is master changes with [`PrivateSentinel::fail_over`].
    ports: [u16; 2],
    servers: Vec<Supervised>,
    _dir: tempfile::TempDir,
}

impl PrivateSentinel {
    pub fn start() -> Option<PrivateSentinel> {
        start_sentinel().map_or_else(|why| skip_or_fail(&why), Some)
    }

    /// The port of the server the Sentinel names master now.
    pub fn master_port(&self) -> Option<u16> {
        let out = cli(self.sentinel_port, &["sentinel", "get-master-addr-by-name", "palisade"]).ok()?;
        out.lines().nth(1)?.trim().parse().ok()
    }

    /// Kills the master (as a crash would), and waits until the Sentinel has promoted the
    /// replica and it takes writes; returns the new master's port.
    ///
    /// # Panics
    ///
    /// When the failover does not complete within 20 s, or the master was failed over before.
    pub fn kill_master(&mut self) -> u16 {
        let old = self.master_port().expect("a master");
        assert_eq!(old, self.ports[0], "the first master is the one killed");
        self.servers.remove(0).stop();
        let new = self.ports[1];
        until("the Sentinel names the replica master", || self.master_port() == Some(new)).expect("failover");
        until("the new master takes writes", || {
            cli(new, &["set", "palisade-failover-probe", "1"]).is_ok_and(|out| out.trim() == "OK")
        })
        .expect("new master writable");
        new
    }

    /// Promotes the replica and waits until the Sentinel names it and it takes writes;
    /// returns the new master's port.
    ///
    /// # Panics
    ///
    /// When the failover does not complete within 20 s.
    pub fn fail_over(&self) -> u16 {
        let old = self.master_port().expect("a master");
        let new = if old == self.ports[0] { self.ports[1] } else { self.ports[0] };
        // The Sentinel learns of the replica from the master's INFO (every 10 s at first),
        // and refuses to fail over before (NOGOODSLAVE): ask until it agrees.
        until("the Sentinel agrees to fail over", || {
            cli(self.sentinel_port, &["sentinel", "failover", "palisade"]).is_ok_and(|out| out.trim() == "OK")
        })
        .expect("sentinel failover");
        until("the Sentinel names the replica master", || self.master_port() == Some(new)).expect("failover");
        until("the new master takes writes", || {
            cli(new, &["set", "palisade-failover-probe", "1"]).is_ok_and(|out| out.trim() == "OK")
        })
        .expect("new master writable");
        new
    }
}

fn start_sentinel() -> Result<PrivateSentinel, String> {
    let dir = temp_dir("sentinel")?;
    let (master, replica, sentinel_port) = (free_port()?, free_port()?, free_port()?);
    let mut servers = vec![spawn_server(master, dir.path(), &[])?];
    wait_until_answering(&format!("redis://127.0.0.1:{master}"))?;
    let master_s = master.to_string();
    servers.push(spawn_server(replica, dir.path(), &["--replicaof", "127.0.0.1", &master_s])?);
    wait_until_answering(&format!("redis://127.0.0.1:{replica}"))?;
    until("the replica in sync", || {
        cli(replica, &["info", "replication"]).is_ok_and(|i| i.contains("master_link_status:up"))
    })?;
    // A Sentinel rewrites its configuration file: it must be a file of its own.
    let conf = dir.path().join("sentinel.conf");
    let text = format!(
        "port {sentinel_port}\nbind 127.0.0.1\ndir {}\nsentinel monitor palisade 127.0.0.1 {master} 1\n\
         sentinel down-after-milliseconds palisade 1000\nsentinel failover-timeout palisade 5000\n",
        dir.path().display()
    );
    std::fs::write(&conf, text).map_err(|e| e.to_string())?;
    let conf_s = conf.to_string_lossy().into_owned();
    servers.push(supervise(&dir.path().join("sentinel.log"), crate::redis::binary()?, &[&conf_s, "--sentinel"])?);
    let url = format!("redis-sentinel://127.0.0.1:{sentinel_port}/palisade");
    let handle = PrivateSentinel { url, sentinel_port, ports: [master, replica], servers, _dir: dir };
    until("the Sentinel watching its master", || {
        ping(&format!("redis://127.0.0.1:{sentinel_port}")).is_ok() && handle.master_port() == Some(master)
    })?;
    Ok(handle)
}

impl Drop for PrivateSentinel {
    fn drop(&mut self) {
        for server in self.servers.drain(..) {
            server.stop();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cluster_answers_on_every_node() {
        let Some(c) = PrivateCluster::start() else { return };
        assert!(c.url.starts_with("redis-cluster://127.0.0.1:"));
        assert_eq!(c.url.matches(',').count(), 2);
    }

    #[test]
    fn a_sentinel_fails_over_to_the_replica() {
        let Some(s) = PrivateSentinel::start() else { return };
        let before = s.master_port().unwrap();
        let after = s.fail_over();
        assert_ne!(before, after);
    }

    #[test]
    fn a_sentinel_promotes_the_replica_when_the_master_dies() {
        let Some(mut s) = PrivateSentinel::start() else { return };
        let before = s.master_port().unwrap();
        let after = s.kill_master();
        assert_ne!(before, after);
    }
}
