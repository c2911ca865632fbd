//! Redis for tests, found or started like PostgreSQL (see [`crate::postgres`]).
//!
//! [`shared_redis`] gives a test a server and a key prefix no other test uses, so tests
//! share one server without seeing each other's keys. The server is looked for once per
//! test process: `PALISADE_TEST_REDIS_URL`, else `redis://127.0.0.1:6379`, else a private
//! `redis-server` on a free loopback port in a temporary directory, stopped when the test
//! process exits (a shell wrapper kills it when the pipe we hold closes).
//!
//! [`PrivateRedis`] is a server of the test's own, for tests that stop and restart it.
//!
//! When none can be had, a test is skipped with a loud `SKIPPED` line, or fails under
//! `CI=true`.

use std::hash::{BuildHasher, RandomState};
use std::io::Write;
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// Environment variable naming a Redis URL to use instead of the local default.
pub const ENV_URL: &str = "PALISADE_TEST_REDIS_URL";

const LOCAL_URL: &str = "redis://127.0.0.1:6379";

/// How long a server may take to answer before we look elsewhere, or to start.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// A server and a prefix of this test's own.
#[derive(Debug, Clone)]
pub struct TestRedis {
    pub url: String,
    /// Unique per call: put it before every key (no braces in it).
    pub prefix: String,
}

/// A server for this test and a fresh key prefix, or `None` after a loud `SKIPPED` line.
///
/// # Panics
///
/// Under `CI=true` when no server can be had, and when `PALISADE_TEST_REDIS_URL` is set
/// but its server does not answer.
pub fn shared_redis() -> Option<TestRedis> {
    static SERVER: OnceLock<Result<String, String>> = OnceLock::new();
    let server = SERVER.get_or_init(find_server);
    match server {
        Ok(url) => Some(TestRedis { url: url.clone(), prefix: unique_prefix() }),
        Err(why) if std::env::var_os(ENV_URL).is_some() => panic!("testkit: {why}"),
        Err(why) => skip_or_fail(why),
    }
}

/// A `redis-server` of the test's own on a free loopback port, which the test may stop
/// and start again (on the same port). Stopped on drop.
pub struct PrivateRedis {
    pub url: String,
    port: u16,
    dir: tempfile::TempDir,
    server: Option<Supervised>,
}

impl PrivateRedis {
    /// Starts one, or `None` after a loud `SKIPPED` line (a failure under `CI=true`).
    pub fn start() -> Option<PrivateRedis> {
        match start_private() {
            Ok(r) => Some(r),
            Err(why) => skip_or_fail(&why),
        }
    }

    /// Kills the server (as a crash would: no save, connections reset).
    pub fn stop(&mut self) {
        if let Some(server) = self.server.take() {
            server.stop();
        }
    }

    /// Starts the server again on the same port, with no data.
    ///
    /// # Panics
    ///
    /// When it cannot start again (the port was taken meanwhile, say).
    pub fn restart(&mut self) {
        self.stop();
        let server = spawn(self.port, self.dir.path()).unwrap_or_else(|e| panic!("testkit: redis restart: {e}"));
        self.server = Some(server);
        wait_until_answering(&self.url).unwrap_or_else(|e| panic!("testkit: redis restart: {e}"));
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A `redis-server` under a shell that kills it when our end of its stdin closes, so it
/// dies with the test process however that ends.
pub(crate) struct Supervised {
    child: Child,
    lifeline: ChildStdin,
}

impl Supervised {
    pub(crate) fn stop(mut self) {
        drop(self.lifeline);
        let _ = self.child.wait();
    }
}

/// Runs `$2 $3…` with its output in `$1`, killed when our end of its stdin closes.
const SUPERVISOR: &str = r#"
log=$1; shift
"$@" >"$log" 2>&1 &
pid=$!
cat >/dev/null
kill -9 "$pid" 2>/dev/null
wait "$pid" 2>/dev/null
"#;

/// The `redis-server` binary.
pub(crate) fn binary() -> Result<&'static str, String> {
    ["/usr/bin/redis-server", "/usr/local/bin/redis-server"]
        .into_iter()
        .find(|p| std::path::Path::new(p).is_file())
        .ok_or_else(|| "no redis-server installed (apt-get install -y redis-server)".to_owned())
}

/// A plain server on `port`, nothing kept on disk, with `extra` arguments.
pub(crate) fn spawn_server(port: u16, dir: &std::path::Path, extra: &[&str]) -> Result<Supervised, String> {
    let port_s = port.to_string();
    let dir_s = dir.to_string_lossy();
    let mut args = vec!["--port", &port_s, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", &dir_s];
    args.extend_from_slice(&["--daemonize", "no"]);
    args.extend_from_slice(extra);
    supervise(&dir.join(format!("server-{port}.log")), binary()?, &args)
}

fn spawn(port: u16, dir: &std::path::Path) -> Result<Supervised, String> {
    spawn_server(port, dir, &[])
}

/// `program args…` under [`SUPERVISOR`], its output in `log`.
pub(crate) fn supervise(log: &std::path::Path, program: &str, args: &[&str]) -> Result<Supervised, String> {
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(SUPERVISOR)
        .arg("palisade-redis")
        .arg(log)
        .arg(program)
        .args(args)
        .process_group(0)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot run sh: {e}"))?;
    let lifeline = child.stdin.take().ok_or("stdin is piped")?;
    Ok(Supervised { child, lifeline })
}

fn start_private() -> Result<PrivateRedis, String> {
    let dir = tempfile::Builder::new()
        .prefix("palisade-redis-")
        .tempdir()
        .map_err(|e| format!("cannot create a temporary directory: {e}"))?;
    let mut why = String::new();
    // The free port we pick can be taken before redis-server binds it: retry a few times.
    for _ in 0..3 {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| format!("no free loopback port: {e}"))?
            .port();
        let url = format!("redis://127.0.0.1:{port}");
        let server = spawn(port, dir.path())?;
        match wait_until_answering(&url) {
            Ok(()) => return Ok(PrivateRedis { url, port, dir, server: Some(server) }),
            Err(e) => {
                server.stop();
                let log = std::fs::read_to_string(dir.path().join(format!("server-{port}.log"))).unwrap_or_default();
                why = format!("{e}; server log: {}", log.trim());
            }
        }
    }
    Err(why)
}

fn find_server() -> Result<String, String> {
    if let Some(url) = std::env::var(ENV_URL).ok().filter(|u| !u.is_empty()) {
        return ping(&url).map(|()| url.clone()).map_err(|e| format!("{ENV_URL} is set but does not answer: {e}"));
    }
    let local = match ping(LOCAL_URL) {
        Ok(()) => return Ok(LOCAL_URL.to_owned()),
        Err(e) => e,
    };
    // The private server lives as long as the test process: leak it on purpose.
    let server = start_private().map_err(|e| format!("no server at {LOCAL_URL} ({local}); no private one ({e})"))?;
    let url = server.url.clone();
    std::mem::forget(server);
    Ok(url)
}

pub(crate) fn ping(url: &str) -> Result<(), String> {
    let client = redis::Client::open(url).map_err(|e| e.to_string())?;
    let mut conn = client.get_connection_with_timeout(CONNECT_TIMEOUT).map_err(|e| e.to_string())?;
    redis::cmd("PING").query::<String>(&mut conn).map(drop).map_err(|e| e.to_string())
}

pub(crate) fn wait_until_answering(url: &str) -> Result<(), String> {
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        match ping(url) {
            Ok(()) => return Ok(()),
            Err(e) if Instant::now() > deadline => {
                return Err(format!("{url} did not answer within {START_TIMEOUT:?}: {e}"));
            }
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

fn unique_prefix() -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let random = RandomState::new().hash_one(n) as u32;
    format!("palisade-t-{}-{n}-{random:08x}", std::process::id())
}

pub(crate) fn skip_or_fail<T>(why: &str) -> Option<T> {
    const HOW: &str = "install Redis (`apt-get install -y redis-server`) or set PALISADE_TEST_REDIS_URL";
    if crate::in_ci() {
        panic!("testkit: Redis is required under CI but none is available: {why}; {HOW}");
    }
    let test = std::thread::current().name().unwrap_or("a test").to_owned();
    let _ = writeln!(std::io::stderr(), "SKIPPED (no Redis): {test}: {why}; {HOW}");
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_private_server_stops_and_starts_again_on_its_port() {
        let Some(mut r) = PrivateRedis::start() else { return };
        assert!(ping(&r.url).is_ok());
        r.stop();
        assert!(ping(&r.url).is_err(), "stopped");
        r.restart();
        assert!(ping(&r.url).is_ok(), "answering again");
    }

    #[test]
    fn every_test_gets_its_own_prefix() {
        let (Some(a), Some(b)) = (shared_redis(), shared_redis()) else { return };
        assert_ne!(a.prefix, b.prefix);
        assert!(!a.prefix.contains(['{', '}']));
    }
}
