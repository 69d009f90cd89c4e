//! Storage: SQLite as the embedded default (one file, WAL, durable commits)
//! or PostgreSQL for several replicas, behind one pool and one set of
//! queries (`sqlx::Any`). Queries use `$1` placeholders, which both engines
//! accept; the few type differences live in the migrations only.
//!
//! One exception, for speed on the path of every login: on a SQLite file
//! the two reads of begin and finish (`auth::lookup`) and the group-commit
//! writer's batches (`auth::commit`) run through `rusqlite` connections to
//! the same file ([`FastReader`]), with the same SQL text and conditions as
//! their sqlx versions, which PostgreSQL (and an in-memory SQLite) uses.

mod migrations;

use sqlx::any::{install_default_drivers, AnyPoolOptions};
use sqlx::{AnyPool, Executor};
use std::time::Duration;

pub use migrations::MIGRATIONS;

/// Read-only SQLite connections beside the single writer.
const SQLITE_READERS: u32 = 4;

/// A pooled connection idle longer than this is checked before use, so that
/// one the database dropped while the server was quiet (a restart) is
/// replaced unseen. sqlx checks every connection at every acquire by
/// default: on a busy server a round trip to PostgreSQL before each
/// statement's own.
pub const PING_AFTER_IDLE: Duration = Duration::from_secs(1);

/// Checks a connection that sat idle (the database may have restarted).
fn ping_if_idle(
    conn: &mut sqlx::AnyConnection,
    meta: sqlx::pool::PoolConnectionMetadata,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<bool, sqlx::Error>> + Send + '_>> {
    Box::pin(async move {
        if meta.idle_for >= PING_AFTER_IDLE {
            sqlx::Connection::ping(conn).await?;
        }
        Ok(true)
    })
}

/// A database transaction; every write and its audit entry share one.
pub type Tx = sqlx::Transaction<'static, sqlx::Any>;

/// Which engine the URL chose.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// One file on the server host.
    Sqlite,
    /// A PostgreSQL server, possibly shared by several replicas.
    Postgres,
}

impl Backend {
    /// The engine named by a database URL.
    pub fn from_url(url: &str) -> Result<Backend, StoreError> {
        if url.starts_with("sqlite:") {
            Ok(Backend::Sqlite)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(Backend::Postgres)
        } else {
            Err(StoreError::Url)
        }
    }
}

/// Why storage failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The URL names no supported engine.
    #[error("database URL must start with sqlite: or postgres://")]
    Url,
    /// The engine reported an error.
    #[error("database error: {0}")]
    Db(#[from] sqlx::Error),
    /// A row held something this version cannot read (a newer schema, a manual edit).
    #[error("unexpected stored data: {0}")]
    Corrupt(String),
    /// The database was migrated by a newer ClinAuth.
    #[error("database schema version {found} is newer than this server ({supported})")]
    SchemaTooNew {
        /// The version in the database.
        found: i64,
        /// The newest this server knows.
        supported: i64,
    },
    /// A unique key already exists.
    #[error("{0} already exists")]
    Exists(String),
    /// A row that must exist does not.
    #[error("{0} not found")]
    NotFound(String),
    /// The in-place SQLite reader ([`FastReader`]) failed.
    #[error("database error: {0}")]
    Local(String),
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        StoreError::Local(e.to_string())
    }
}

/// Read-only connections to the SQLite file used *in place*, on the calling
/// thread, for the reads on the path of every login (`auth::lookup`).
///
/// sqlx runs each SQLite statement on a worker thread of its connection
/// and wakes the caller through a channel: two thread switches per
/// statement, which cost more CPU than the indexed lookup itself. These
/// reads are one indexed SELECT each, answered from SQLite's page cache in
/// microseconds, and in WAL mode a reader never waits for the writer, so
/// running them where they are asked is cheaper and does not hold up the
/// runtime. Connections are opened read-only (`query_only`), kept for
/// reuse, and see every committed transaction.
pub struct FastReader {
    path: String,
    idle: std::sync::Mutex<Vec<rusqlite::Connection>>,
}

impl std::fmt::Debug for FastReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "FastReader({})", self.path)
    }
}

/// Idle in-place connections kept for reuse.
const FAST_IDLE: usize = 8;

impl FastReader {
    fn open(path: &str) -> FastReader {
        FastReader {
            path: path.to_owned(),
            idle: std::sync::Mutex::new(Vec::new()),
        }
    }

    fn connect(&self) -> Result<rusqlite::Connection, StoreError> {
        use rusqlite::OpenFlags;
        let conn = rusqlite::Connection::open_with_flags(
            &self.path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        conn.busy_timeout(Duration::from_secs(10))?;
        conn.execute_batch("PRAGMA query_only=ON")?;
        Ok(conn)
    }

    /// A read-write connection to the file for the group-commit writer
    /// (`auth::commit`), with the pool's settings: durable commits
    /// (`synchronous=FULL`), foreign keys, a busy timeout (it takes turns
    /// with the sqlx connection that officer operations use).
    pub fn open_writer(&self) -> Result<rusqlite::Connection, StoreError> {
        use rusqlite::OpenFlags;
        let conn = rusqlite::Connection::open_with_flags(
            &self.path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        conn.busy_timeout(Duration::from_secs(10))?;
        conn.execute_batch("PRAGMA synchronous=FULL; PRAGMA foreign_keys=ON")?;
        conn.set_prepared_statement_cache_capacity(64);
        Ok(conn)
    }

    /// Runs `f` on an idle connection (or a new one) and keeps it for reuse.
    pub fn with<T>(
        &self,
        f: impl FnOnce(&rusqlite::Connection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let conn = match self.idle.lock().ok().and_then(|mut idle| idle.pop()) {
            Some(conn) => conn,
            None => self.connect()?,
        };
        let result = f(&conn);
        if let Ok(mut idle) = self.idle.lock() {
            if idle.len() < FAST_IDLE {
                idle.push(conn);
            }
        }
        result
    }
}

/// The database.
#[derive(Clone, Debug)]
pub struct Store {
    pool: AnyPool,
    /// Reads that need no transaction. On SQLite a pool of its own
    /// (`query_only` connections: WAL lets them read while the writer
    /// writes); on PostgreSQL the same pool.
    reader: AnyPool,
    backend: Backend,
    /// On a SQLite file: the in-place reader of the login path.
    fast: Option<std::sync::Arc<FastReader>>,
}

impl Store {
    /// Opens (creating an SQLite file if needed) and migrates the database.
    ///
    /// SQLite gets one connection: SQLite serialises writers anyway, and a
    /// single connection avoids "database is locked" on a read-then-write
    /// transaction. Commits are durable (`synchronous=FULL`) in WAL mode.
    pub async fn open(url: &str, max_connections: u32) -> Result<Store, StoreError> {
        Store::open_to_version(url, max_connections, i64::MAX).await
    }

    /// [`Store::open`] with the migrations applied up to `version` only: for
    /// the tests that upgrade a database made by an earlier release.
    #[doc(hidden)]
    pub async fn open_to_version(
        url: &str,
        max_connections: u32,
        version: i64,
    ) -> Result<Store, StoreError> {
        install_default_drivers();
        let backend = Backend::from_url(url)?;
        let url = match backend {
            Backend::Sqlite if !url.contains("mode=") => {
                let sep = if url.contains('?') { '&' } else { '?' };
                format!("{url}{sep}mode=rwc")
            }
            _ => url.to_owned(),
        };
        let options = AnyPoolOptions::new()
            .acquire_timeout(Duration::from_secs(10))
            .test_before_acquire(false)
            .before_acquire(ping_if_idle)
            .max_connections(match backend {
                Backend::Sqlite => 1,
                Backend::Postgres => max_connections.max(1),
            })
            .after_connect(move |conn, _meta| {
                Box::pin(async move {
                    if backend == Backend::Sqlite {
                        conn.execute("PRAGMA journal_mode=WAL").await?;
                        conn.execute("PRAGMA synchronous=FULL").await?;
                        conn.execute("PRAGMA foreign_keys=ON").await?;
                        conn.execute("PRAGMA busy_timeout=10000").await?;
                    }
                    Ok(())
                })
            });
        let pool = options.connect(&url).await?;
        let mut store = Store {
            reader: pool.clone(),
            pool,
            backend,
            fast: None,
        };
        migrations::run(&store, version).await?;
        if backend == Backend::Sqlite && !url.contains(":memory:") && !url.contains("mode=memory") {
            // Opened after the migrations, so the file exists and is in WAL mode.
            store.reader = AnyPoolOptions::new()
                .acquire_timeout(Duration::from_secs(10))
                .test_before_acquire(false)
                .before_acquire(ping_if_idle)
                .max_connections(SQLITE_READERS)
                .after_connect(|conn, _meta| {
                    Box::pin(async move {
                        conn.execute("PRAGMA query_only=ON").await?;
                        conn.execute("PRAGMA busy_timeout=10000").await?;
                        Ok(())
                    })
                })
                .connect(&url)
                .await?;
            let path = url
                .strip_prefix("sqlite://")
                .or_else(|| url.strip_prefix("sqlite:"))
                .unwrap_or(&url);
            let path = path.split('?').next().unwrap_or(path);
            store.fast = Some(std::sync::Arc::new(FastReader::open(path)));
        }
        Ok(store)
    }

    /// The in-place reader, on a SQLite file (see [`FastReader`]).
    pub fn fast(&self) -> Option<&FastReader> {
        self.fast.as_deref()
    }

    /// The engine in use.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The connection pool, for reads outside a transaction.
    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// The pool for reads outside a transaction that may run beside the
    /// writer: they see every committed transaction, and nothing of one in
    /// progress. Never write through it (on SQLite its connections are
    /// `query_only`).
    pub fn reader(&self) -> &AnyPool {
        &self.reader
    }

    /// Begins a transaction.
    ///
    /// After any error inside it, drop the transaction: PostgreSQL aborts a
    /// transaction at its first failed statement and turns a later COMMIT
    /// into a silent ROLLBACK. On SQLite the transaction takes the write lock
    /// at once (`BEGIN IMMEDIATE`), so two writers wait for each other instead
    /// of failing with "database is locked" on the upgrade from read to write.
    pub async fn begin(&self) -> Result<Tx, StoreError> {
        Ok(match self.backend {
            Backend::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await?,
            Backend::Postgres => self.pool.begin().await?,
        })
    }

    /// A transaction whose commit is not waited for on disk: on PostgreSQL
    /// `synchronous_commit = off` for it alone, sent with its `BEGIN`, and
    /// the next synchronous commit flushes it (see
    /// `auth::commit::Durability`). On SQLite the same as [`Store::begin`].
    pub async fn begin_deferred(&self) -> Result<Tx, StoreError> {
        Ok(match self.backend {
            Backend::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await?,
            Backend::Postgres => {
                self.pool
                    .begin_with("BEGIN; SET LOCAL synchronous_commit = off")
                    .await?
            }
        })
    }

    /// Closes every connection.
    pub async fn close(&self) {
        self.reader.close().await;
        self.pool.close().await;
    }
}

/// Maps a unique-constraint failure to [`StoreError::Exists`].
pub(crate) fn unique(what: impl Into<String>) -> impl FnOnce(sqlx::Error) -> StoreError {
    let what = what.into();
    move |e| match &e {
        sqlx::Error::Database(db) if db.is_unique_violation() => StoreError::Exists(what),
        _ => StoreError::Db(e),
    }
}
