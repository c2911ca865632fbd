//! Fresh, empty databases for tests: one PostgreSQL database per test, created
//! on whatever server can be found or started, and one SQLite file per test.
//!
//! A server is looked for once per test process, in this order:
//! 1. `PALISADE_TEST_POSTGRES_URL`, an admin URL of an existing server;
//! 2. the local default, `postgres://postgres@127.0.0.1:5432/postgres`;
//! 3. a private cluster started from the installed binaries on a free loopback
//!    port, in a temporary directory, stopped and removed when the test process
//!    exits (however it exits: it watches a pipe the kernel closes for us).
//!
//! When none can be had, [`fresh_postgres`] returns `None` after a loud
//! `SKIPPED` line, or panics under `CI=true`, where a silent skip would let the
//! PostgreSQL back-end go untested.

use std::hash::BuildHasher;
use std::hash::RandomState;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use sqlx::postgres::PgConnection;
use sqlx::{AssertSqlSafe, Connection};
use tempfile::TempDir;
use tokio::sync::OnceCell;

/// Environment variable naming an admin URL of a server to create databases in.
pub const ENV_URL: &str = "PALISADE_TEST_POSTGRES_URL";

const LOCAL_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// How long a server may take to accept a connection before we look elsewhere.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// How long dropping a [`TestDatabase`] may block the test before giving up on it.
const DROP_TIMEOUT: Duration = Duration::from_secs(10);

/// The free port we pick can be taken by another process before PostgreSQL
/// binds it; a few attempts make that race harmless.
const CLUSTER_START_ATTEMPTS: usize = 3;

/// A freshly created, empty PostgreSQL database with a unique name.
///
/// Dropping it drops the database (`WITH (FORCE)`, so PostgreSQL 13 or later),
/// best effort: a failure or a server that does not answer within 10 s is
/// reported on stderr and the database is left behind.
#[derive(Debug)]
pub struct TestDatabase {
    /// Connection URL of the new database, for `Store::open` or sqlx.
    pub url: String,
    admin_url: String,
    name: String,
}

impl TestDatabase {
    /// Takes the database away now, its open connections killed: to the code under test
    /// it is a PostgreSQL outage (every query fails; new connections are refused).
    pub async fn take_down(&self) {
        drop_database(&self.admin_url, &self.name).await.expect("the test database is dropped");
    }
}

/// An empty PostgreSQL database for one test, or `None` (after a loud
/// `SKIPPED` line on stderr) when no server can be found or started.
///
/// # Panics
///
/// Under `CI=true` when no server can be had; when `PALISADE_TEST_POSTGRES_URL`
/// is set but its server does not answer (a typo must not turn into skipped
/// tests); when a server was found but refuses to create a database.
pub async fn fresh_postgres() -> Option<TestDatabase> {
    static SERVER: OnceCell<Result<String, String>> = OnceCell::const_new();
    let server = SERVER.get_or_init(|| async { find_server(&Discovery::from_env()).await }).await;
    match server {
        Ok(admin_url) => match create_database(admin_url).await {
            Ok(db) => Some(db),
            Err(why) => {
                panic!("testkit: PostgreSQL answers but a test database cannot be created: {why}")
            }
        },
        Err(why) if std::env::var_os(ENV_URL).is_some() => panic!("testkit: {why}"),
        Err(why) => skip_or_fail(why),
    }
}

/// A fresh SQLite database file in its own temporary directory, removed on drop.
#[derive(Debug)]
pub struct TestSqlite {
    /// `sqlite://<tempdir>/test.db`; the file does not exist until opened.
    pub url: String,
    _dir: TempDir,
}

/// A SQLite URL no other test uses. Lives here beside [`fresh_postgres`] so a
/// contract suite gets both back-ends from one place.
///
/// # Panics
///
/// When no temporary directory can be created.
pub fn fresh_sqlite() -> TestSqlite {
    let dir = tempfile::Builder::new()
        .prefix("palisade-sqlite-")
        .tempdir()
        .unwrap_or_else(|e| panic!("testkit: cannot create a temporary directory: {e}"));
    let url = format!("sqlite://{}/test.db", dir.path().display());
    TestSqlite { url, _dir: dir }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        // Drop may run inside a runtime, where blocking on async work panics,
        // so the DROP runs on a thread with its own runtime. We wait for it
        // (boundedly) because a detached thread dies with the process after
        // the last test, leaving that test's database behind.
        let admin_url = self.admin_url.clone();
        let name = self.name.clone();
        let (done, outcome) = mpsc::channel();
        let spawned = std::thread::Builder::new().name("testkit-dropdb".into()).spawn(move || {
            let result = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| format!("cannot build a runtime: {e}"))
                .and_then(|rt| rt.block_on(drop_database(&admin_url, &name)));
            let _ = done.send(result);
        });
        if let Err(e) = spawned {
            loud(&format!("testkit: test database {} left behind: cannot spawn a thread: {e}", self.name));
            return;
        }
        match outcome.recv_timeout(DROP_TIMEOUT) {
            Ok(Ok(())) => {}
            Ok(Err(why)) => loud(&format!("testkit: test database {} left behind: {why}", self.name)),
            Err(_) => {
                loud(&format!("testkit: test database {} left behind: DROP took over {DROP_TIMEOUT:?}", self.name))
            }
        }
    }
}

/// Where [`find_server`] may look; tests force a path by switching others off.
struct Discovery {
    explicit_url: Option<String>,
    local_url: Option<&'static str>,
    private_cluster: bool,
}

impl Discovery {
    fn from_env() -> Discovery {
        Discovery {
            explicit_url: std::env::var(ENV_URL).ok().filter(|url| !url.is_empty()),
            local_url: Some(LOCAL_URL),
            private_cluster: true,
        }
    }
}

/// The admin URL of a server that answers, or why there is none.
async fn find_server(discovery: &Discovery) -> Result<String, String> {
    if let Some(url) = &discovery.explicit_url {
        // No fallback: whoever set the variable wants that server tested.
        return match connect(url).await {
            Ok(conn) => {
                let _ = conn.close().await;
                Ok(url.clone())
            }
            Err(why) => Err(format!("{ENV_URL} is set but its server cannot be used: {why}")),
        };
    }
    let mut reasons = Vec::new();
    if let Some(url) = discovery.local_url {
        match connect(url).await {
            Ok(conn) => {
                let _ = conn.close().await;
                return Ok(url.to_owned());
            }
            Err(why) => reasons.push(format!("no server at {url} ({why})")),
        }
    }
    if discovery.private_cluster {
        match private_cluster().await {
            Ok(url) => return Ok(url),
            Err(why) => reasons.push(format!("no private cluster ({why})")),
        }
    }
    Err(reasons.join("; "))
}

fn skip_or_fail<T>(why: &str) -> Option<T> {
    const HOW: &str =
        "install PostgreSQL (`apt-get install -y postgresql`) or set PALISADE_TEST_POSTGRES_URL to an admin URL";
    if crate::in_ci() {
        panic!("testkit: PostgreSQL is required under CI but none is available: {why}; {HOW}");
    }
    let test = std::thread::current().name().unwrap_or("a test").to_owned();
    loud(&format!("SKIPPED (no PostgreSQL): {test}: {why}; {HOW}"));
    None
}

/// Writes straight to the process's stderr: the test harness captures
/// `eprintln!` of passing tests, and a skip must not go unseen.
fn loud(line: &str) {
    let _ = writeln!(std::io::stderr(), "{line}");
}

async fn connect(url: &str) -> Result<PgConnection, String> {
    match tokio::time::timeout(CONNECT_TIMEOUT, PgConnection::connect(url)).await {
        Ok(Ok(conn)) => Ok(conn),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("no answer within {CONNECT_TIMEOUT:?}")),
    }
}

async fn create_database(admin_url: &str) -> Result<TestDatabase, String> {
    let name = unique_name();
    let mut conn = connect(admin_url).await?;
    // The name is ours (letters, digits, underscores), so quoting it is enough.
    sqlx::query(AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
        .execute(&mut conn)
        .await
        .map_err(|e| format!("CREATE DATABASE {name}: {e}"))?;
    let _ = conn.close().await;
    Ok(TestDatabase { url: with_database(admin_url, &name), admin_url: admin_url.to_owned(), name })
}

async fn drop_database(admin_url: &str, name: &str) -> Result<(), String> {
    let mut conn = connect(admin_url).await?;
    // FORCE: the test's pool may still hold connections, closed lazily.
    sqlx::query(AssertSqlSafe(format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)")))
        .execute(&mut conn)
        .await
        .map_err(|e| e.to_string())?;
    let _ = conn.close().await;
    Ok(())
}

fn unique_name() -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    // Pid and counter tell live test processes apart; the random part keeps a
    // reused pid from meeting a database a crashed run left behind.
    let random = RandomState::new().hash_one(n) as u32;
    format!("palisade_t_{}_{n}_{random:08x}", std::process::id())
}

/// `url` with its database (the path) replaced by `name`, query kept.
fn with_database(url: &str, name: &str) -> String {
    let (base, query) = url.split_at(url.find('?').unwrap_or(url.len()));
    let authority = base.find("://").map_or(0, |i| i + 3);
    let path = base[authority..].find('/').map_or(base.len(), |i| authority + i);
    format!("{}/{name}{query}", &base[..path])
}

/// A cluster this process started. Its lifeline is the write end of a pipe
/// whose read end the cluster's supervising shell waits on: statics are never
/// dropped, so the pipe closes only when the process exits, and then the
/// shell stops the server and removes its directory.
struct PrivateCluster {
    admin_url: String,
    _lifeline: ChildStdin,
}

/// Supervises one cluster, run as a user PostgreSQL accepts (not root).
/// Arguments: bindir, port, parent directory. Prints `ready` once the server
/// accepts connections, or the tail of the logs and exits.
const CLUSTER_SCRIPT: &str = r#"
bindir=$1 port=$2 parent=$3
dir=$(mktemp -d "$parent/palisade-pg-XXXXXX") || exit 1
log="$dir/server.log"
if "$bindir/initdb" -D "$dir/data" -U postgres -A trust -E UTF8 --locale=C --no-sync >"$log" 2>&1 &&
   "$bindir/pg_ctl" start -w -t 30 -D "$dir/data" -l "$log" \
       -o "-p $port -c listen_addresses=127.0.0.1 -k $dir -c fsync=off -c synchronous_commit=off -c full_page_writes=off" \
       >>"$log" 2>&1
then
    echo ready
    exec >/dev/null 2>&1
    cat
else
    tail -n 20 "$log"
fi
"$bindir/pg_ctl" stop -D "$dir/data" -m immediate >/dev/null 2>&1
rm -rf "$dir"
"#;

/// The admin URL of this process's private cluster, started on first use.
async fn private_cluster() -> Result<String, String> {
    static CLUSTER: OnceCell<Result<PrivateCluster, String>> = OnceCell::const_new();
    let cluster = CLUSTER
        .get_or_init(|| async {
            tokio::task::spawn_blocking(start_private_cluster)
                .await
                .unwrap_or_else(|e| Err(format!("start-up task failed: {e}")))
        })
        .await;
    cluster.as_ref().map(|c| c.admin_url.clone()).map_err(Clone::clone)
}

fn start_private_cluster() -> Result<PrivateCluster, String> {
    let bindir = find_bindir().ok_or("no initdb found via `pg_config --bindir` or in /usr/lib/postgresql/*/bin")?;
    let mut why = String::new();
    for _ in 0..CLUSTER_START_ATTEMPTS {
        match start_cluster_once(&bindir) {
            Ok(cluster) => return Ok(cluster),
            Err(e) => why = e,
        }
    }
    Err(why)
}

fn start_cluster_once(bindir: &std::path::Path) -> Result<PrivateCluster, String> {
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| format!("no free loopback port: {e}"))?
        .port();
    let as_root = std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0);
    // initdb and postgres refuse to run as root; run them as `postgres`, in
    // a directory that user can write ($TMPDIR may be root's own).
    let (mut command, parent) = if as_root {
        let mut command = Command::new("runuser");
        command.args(["-u", "postgres", "--", "sh"]);
        (command, PathBuf::from("/tmp"))
    } else {
        (Command::new("sh"), std::env::temp_dir())
    };
    command
        .arg("-c")
        .arg(CLUSTER_SCRIPT)
        .arg("palisade-pg")
        .arg(bindir)
        .arg(port.to_string())
        .arg(&parent)
        .current_dir("/")
        // Its own process group: a Ctrl-C aimed at the tests must not kill
        // the supervisor before it has cleaned up.
        .process_group(0)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command.spawn().map_err(|e| format!("cannot run {:?}: {e}", command.get_program()))?;
    let stdout = child.stdout.take().expect("stdout is piped");
    let mut transcript = String::new();
    for line in BufReader::new(stdout).lines() {
        match line {
            Ok(line) if line == "ready" => {
                let lifeline = child.stdin.take().expect("stdin is piped");
                let admin_url = format!("postgres://postgres@127.0.0.1:{port}/postgres");
                return Ok(PrivateCluster { admin_url, _lifeline: lifeline });
            }
            Ok(line) => {
                transcript.push_str(&line);
                transcript.push('\n');
            }
            Err(_) => break,
        }
    }
    let output = child.wait_with_output().map_err(|e| format!("supervisor lost: {e}"))?;
    transcript.push_str(&String::from_utf8_lossy(&output.stderr));
    Err(format!(
        "initdb/pg_ctl in {} on port {port} failed ({}): {}",
        bindir.display(),
        output.status,
        transcript.trim()
    ))
}

/// The directory holding initdb and pg_ctl: pg_config's answer first, else
/// the newest Debian-style /usr/lib/postgresql/<major>/bin.
fn find_bindir() -> Option<PathBuf> {
    let from_pg_config = Command::new("pg_config")
        .arg("--bindir")
        .stderr(Stdio::null())
        .output()
        .ok()
        .filter(|out| out.status.success())
        .map(|out| PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()));
    let mut debian: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let major = entry.file_name().to_str()?.split('.').next()?.parse().ok()?;
            Some((major, entry.path().join("bin")))
        })
        .collect();
    debian.sort_by_key(|(major, _)| std::cmp::Reverse(*major));
    from_pg_config
        .into_iter()
        .chain(debian.into_iter().map(|(_, dir)| dir))
        .find(|dir| dir.join("initdb").is_file() && dir.join("pg_ctl").is_file())
}

/// The whole database at `url` as `pg_dump` prints it (schema and data), for
/// tests that search what is really stored.
pub async fn pg_dump(url: &str) -> Vec<u8> {
    let program =
        find_bindir().map(|dir| dir.join("pg_dump")).filter(|p| p.exists()).unwrap_or_else(|| "pg_dump".into());
    let output = tokio::process::Command::new(&program)
        .arg("--no-owner")
        .arg(url)
        .output()
        .await
        .unwrap_or_else(|e| panic!("cannot run {}: {e} (apt-get install -y postgresql-client)", program.display()));
    assert!(output.status.success(), "pg_dump failed: {}", String::from_utf8_lossy(&output.stderr));
    output.stdout
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn database_exists(admin_url: &str, name: &str) -> bool {
        let mut conn = connect(admin_url).await.expect("admin connection");
        let count: i64 = sqlx::query_scalar("SELECT count(*) FROM pg_database WHERE datname = $1")
            .bind(name)
            .fetch_one(&mut conn)
            .await
            .expect("query pg_database");
        count == 1
    }

    #[tokio::test]
    async fn private_cluster_serves_fresh_databases_and_drops_them() {
        let forced = Discovery { explicit_url: None, local_url: None, private_cluster: true };
        let admin_url = match find_server(&forced).await {
            Ok(url) => url,
            Err(why) => {
                skip_or_fail::<()>(&why);
                return;
            }
        };
        assert_ne!(admin_url, LOCAL_URL, "path (3) must not reuse the local server");
        // A second lookup reuses the same cluster rather than starting another.
        assert_eq!(find_server(&forced).await.as_deref(), Ok(admin_url.as_str()));

        let first = create_database(&admin_url).await.expect("first database");
        let second = create_database(&admin_url).await.expect("second database");
        assert_ne!(first.url, second.url);

        let mut conn = PgConnection::connect(&first.url).await.expect("connect to the test database");
        let current: String = sqlx::query_scalar("SELECT current_database()").fetch_one(&mut conn).await.unwrap();
        assert_eq!(current, first.name);
        let tables: i64 = sqlx::query_scalar("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'")
            .fetch_one(&mut conn)
            .await
            .unwrap();
        assert_eq!(tables, 0, "a fresh database is empty");

        // The connection is still open: dropping must not wait for it.
        let name = first.name.clone();
        drop(first);
        assert!(!database_exists(&admin_url, &name).await);
        assert!(database_exists(&admin_url, &second.name).await);
    }

    #[tokio::test]
    async fn explicit_url_that_does_not_answer_is_an_error_not_a_fallback() {
        let discovery = Discovery {
            explicit_url: Some("postgres://postgres@127.0.0.1:1/postgres".to_owned()),
            local_url: Some(LOCAL_URL),
            private_cluster: true,
        };
        let why = find_server(&discovery).await.expect_err("port 1 has no PostgreSQL");
        assert!(why.contains(ENV_URL), "{why}");
    }

    #[tokio::test]
    async fn nothing_to_try_is_an_error() {
        let discovery = Discovery { explicit_url: None, local_url: None, private_cluster: false };
        assert_eq!(find_server(&discovery).await, Err(String::new()));
    }

    #[test]
    fn with_database_replaces_only_the_path() {
        assert_eq!(with_database("postgres://u:p@h:5/postgres", "t"), "postgres://u:p@h:5/t");
        assert_eq!(with_database("postgres://h/postgres?sslmode=disable", "t"), "postgres://h/t?sslmode=disable");
        assert_eq!(with_database("postgres://h:5", "t"), "postgres://h:5/t");
        assert_eq!(with_database("postgres://h?sslmode=disable", "t"), "postgres://h/t?sslmode=disable");
    }

    #[test]
    fn database_names_are_unique_and_valid_identifiers() {
        let (a, b) = (unique_name(), unique_name());
        assert_ne!(a, b);
        for name in [a, b] {
            assert!(name.len() <= 63, "{name} is longer than PostgreSQL's identifier limit");
            assert!(name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'), "{name}");
        }
    }

    #[test]
    fn sqlite_urls_point_into_a_private_directory() {
        let (a, b) = (fresh_sqlite(), fresh_sqlite());
        assert_ne!(a.url, b.url);
        assert!(a.url.starts_with("sqlite:///") && a.url.ends_with("/test.db"), "{}", a.url);
        let dir = a._dir.path().to_owned();
        drop(a);
        assert!(!dir.exists());
    }
}
