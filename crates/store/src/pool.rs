//! The connection pool behind [`Store`]: one of two back-ends, known at compile time,
//! and the helpers every query module shares.

use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous};

/// What went wrong talking to the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("unsupported database URL `{0}`: expected sqlite://PATH or postgres://...")]
    UnsupportedUrl(String),
    #[error("cannot open the database: {0}")]
    Open(#[source] sqlx::Error),
    #[error("cannot apply migrations: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("database query failed: {0}")]
    Query(#[from] sqlx::Error),
    /// A uniqueness rule refused the write (e.g. the phone number is taken).
    #[error("already exists: {0}")]
    Conflict(&'static str),
    /// The row a change needed is not there (any more).
    #[error("not found: {0}")]
    NotFound(&'static str),
}

impl StoreError {
    /// The database could not be reached or is going away (as opposed to a query it
    /// refused): the caller should say "try again shortly", not "internal error".
    pub fn is_unavailable(&self) -> bool {
        match self {
            StoreError::Open(_) => true,
            StoreError::Query(e) => match e {
                sqlx::Error::Io(_)
                | sqlx::Error::Tls(_)
                | sqlx::Error::PoolTimedOut
                | sqlx::Error::PoolClosed
                | sqlx::Error::WorkerCrashed => true,
                // SQLSTATE class 08 (connection exception), 57P0x (the server is shutting
                // down or not accepting connections yet), 3D000 (the database is gone).
                sqlx::Error::Database(db) => {
                    db.code().is_some_and(|c| c.starts_with("08") || c.starts_with("57P") || c == "3D000")
                }
                _ => false,
            },
            _ => false,
        }
    }
}

/// Run `$body` with `$pool` bound to whichever pool the store holds. The body is
/// type-checked once per back-end, so one SQL text serves both; the SQL uses
/// `$1`-style parameters, which SQLite accepts too.
macro_rules! on_pool {
    ($store:expr, $pool:ident => $body:expr) => {
        match $store {
            $crate::pool::Store::Sqlite($pool) => $body,
            $crate::pool::Store::Postgres($pool) => $body,
        }
    };
}
pub(crate) use on_pool;

/// Map a unique-constraint violation to [`StoreError::Conflict`].
pub(crate) fn conflict(what: &'static str) -> impl FnOnce(sqlx::Error) -> StoreError {
    move |e| match &e {
        sqlx::Error::Database(db) if db.is_unique_violation() => StoreError::Conflict(what),
        _ => StoreError::Query(e),
    }
}

/// Which database a [`Store`] talks to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// The durable state. Cheap to clone: both variants are connection pools.
#[derive(Clone, Debug)]
pub enum Store {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// Create a missing SQLite database file empty (a valid empty database) and readable
/// by its owner only, before SQLite would create it world-readable; SQLite gives its
/// `-wal` and `-shm` files the same mode. An existing file is left as it is.
fn create_private(path: &std::path::Path) -> std::io::Result<()> {
    if path.as_os_str().is_empty() || path.exists() {
        return Ok(());
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    match options.open(path) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");
static POSTGRES_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// How long a query waits for a pooled connection before giving up.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);

impl Store {
    /// Connect to `url`: `sqlite://PATH` (created when missing) or `postgres://...`.
    pub async fn open(url: &str) -> Result<Store, StoreError> {
        if url.starts_with("sqlite:") {
            // FULL sync: an acknowledged write (a registration, an audit entry)
            // must survive a power cut, and WAL keeps that cheap.
            let options = SqliteConnectOptions::from_str(url).map_err(StoreError::Open)?;
            let no_file = url.contains(":memory:") || url.contains("mode=memory") || url.contains("mode=ro");
            if !no_file {
                create_private(options.get_filename()).map_err(|e| StoreError::Open(sqlx::Error::Io(e)))?;
            }
            let options = options
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Full)
                .busy_timeout(Duration::from_secs(5))
                .foreign_keys(true);
            let pool = SqlitePoolOptions::new()
                .max_connections(8)
                .acquire_timeout(ACQUIRE_TIMEOUT)
                .connect_with(options)
                .await
                .map_err(StoreError::Open)?;
            Ok(Store::Sqlite(pool))
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            let pool = PgPoolOptions::new()
                .max_connections(16)
                .acquire_timeout(ACQUIRE_TIMEOUT)
                .connect(url)
                .await
                .map_err(StoreError::Open)?;
            Ok(Store::Postgres(pool))
        } else {
            Err(StoreError::UnsupportedUrl(redact_url(url)))
        }
    }

    pub fn backend(&self) -> Backend {
        match self {
            Store::Sqlite(_) => Backend::Sqlite,
            Store::Postgres(_) => Backend::Postgres,
        }
    }

    /// Apply every migration not yet applied. Safe to run on each start and
    /// from several nodes at once (sqlx takes a lock on PostgreSQL).
    pub async fn migrate(&self) -> Result<(), StoreError> {
        match self {
            Store::Sqlite(pool) => SQLITE_MIGRATIONS.run(pool).await?,
            Store::Postgres(pool) => POSTGRES_MIGRATIONS.run(pool).await?,
        }
        self.chain_legacy_audit().await?;
        Ok(())
    }

    /// One round trip to the database, for readiness checks.
    pub async fn ping(&self) -> Result<(), StoreError> {
        match self {
            Store::Sqlite(pool) => {
                sqlx::query("SELECT 1").execute(pool).await?;
            }
            Store::Postgres(pool) => {
                sqlx::query("SELECT 1").execute(pool).await?;
            }
        }
        Ok(())
    }

    /// Read an installation fact written by [`Store::set_meta`].
    pub async fn meta(&self, key: &str) -> Result<Option<String>, StoreError> {
        const SQL: &str = "SELECT value FROM palisade_meta WHERE key = $1";
        let value = match self {
            Store::Sqlite(pool) => sqlx::query_scalar(SQL).bind(key).fetch_optional(pool).await?,
            Store::Postgres(pool) => sqlx::query_scalar(SQL).bind(key).fetch_optional(pool).await?,
        };
        Ok(value)
    }

    /// Record an installation fact, replacing an earlier value.
    pub async fn set_meta(&self, key: &str, value: &str) -> Result<(), StoreError> {
        const SQL: &str = "INSERT INTO palisade_meta (key, value, updated_at) VALUES ($1, $2, $3) \
                           ON CONFLICT (key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at";
        let now = unix_millis();
        match self {
            Store::Sqlite(pool) => {
                sqlx::query(SQL).bind(key).bind(value).bind(now).execute(pool).await?;
            }
            Store::Postgres(pool) => {
                sqlx::query(SQL).bind(key).bind(value).bind(now).execute(pool).await?;
            }
        }
        Ok(())
    }

    /// Close every pooled connection, waiting for queries in flight.
    pub async fn close(&self) {
        match self {
            Store::Sqlite(pool) => pool.close().await,
            Store::Postgres(pool) => pool.close().await,
        }
    }
}

pub(crate) fn unix_millis() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

/// A URL safe to print: any password is replaced.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let userinfo = &url[scheme_end + 3..at];
            match userinfo.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme_end + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::redact_url;

    #[test]
    fn redacts_passwords_only() {
        assert_eq!(redact_url("postgres://app:s3cret@db:5432/x"), "postgres://app:***@db:5432/x");
        assert_eq!(redact_url("postgres://app@db/x"), "postgres://app@db/x");
        assert_eq!(redact_url("sqlite://data/p.db"), "sqlite://data/p.db");
    }
}
