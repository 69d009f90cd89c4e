//! Storage: SQLite as the embedded default (one file, WAL, durable commits)
//! or PostgreSQL for several replicas, behind one pool and one set of
//! queries (`sqlx::Any`). Queries use `$1` placeholders, which both engines
//! accept; the few type differences live in the migrations only.

mod migrations;

use sqlx::any::{install_default_drivers, AnyPoolOptions};
use sqlx::{AnyPool, Executor};
use std::time::Duration;

pub use migrations::MIGRATIONS;

/// Read-only SQLite connections beside the single writer.
const SQLITE_READERS: u32 = 4;

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
}

impl Store {
    /// Opens (creating an SQLite file if needed) and migrates the database.
    ///
    /// SQLite gets one connection: SQLite serialises writers anyway, and a
    /// single connection avoids "database is locked" on a read-then-write
    /// transaction. Commits are durable (`synchronous=FULL`) in WAL mode.
    pub async fn open(url: &str, max_connections: u32) -> Result<Store, StoreError> {
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
        };
        migrations::run(&store).await?;
        if backend == Backend::Sqlite && !url.contains(":memory:") && !url.contains("mode=memory") {
            // Opened after the migrations, so the file exists and is in WAL mode.
            store.reader = AnyPoolOptions::new()
                .acquire_timeout(Duration::from_secs(10))
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
        }
        Ok(store)
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
