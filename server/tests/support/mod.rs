//! Test databases: a fresh SQLite file, or a fresh PostgreSQL database on
//! the local server (127.0.0.1:5432), created per test and dropped after.
#![allow(dead_code)]

pub mod ctl;
pub mod fixture;
pub mod server;

use clinauth_server::store::Store;
use sqlx::{Connection, Executor};
use std::sync::atomic::{AtomicU32, Ordering};

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// The administrative URL used to create and drop test databases.
pub fn pg_admin_url() -> String {
    std::env::var("CLINAUTH_TEST_PG")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

pub enum Engine {
    Sqlite,
    Postgres,
}

pub struct TestDb {
    pub url: String,
    pg_name: Option<String>,
    _dir: Option<TempDir>,
}

pub struct TempDir(pub std::path::PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let path = std::env::temp_dir().join(format!(
            "clinauth-{tag}-{}-{n}-{}",
            std::process::id(),
            rand_suffix()
        ));
        std::fs::create_dir_all(&path).unwrap();
        TempDir(path)
    }
}

impl std::ops::Deref for TempDir {
    type Target = std::path::PathBuf;
    fn deref(&self) -> &std::path::PathBuf {
        &self.0
    }
}

impl AsRef<std::path::Path> for TempDir {
    fn as_ref(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn rand_suffix() -> String {
    let mut b = [0u8; 6];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b).unwrap();
    b.iter().map(|x| format!("{x:02x}")).collect()
}

impl TestDb {
    pub async fn new(engine: Engine) -> TestDb {
        match engine {
            Engine::Sqlite => {
                let dir = TempDir::new("db");
                let url = format!("sqlite://{}/clinauth.db", dir.0.display());
                TestDb {
                    url,
                    pg_name: None,
                    _dir: Some(dir),
                }
            }
            Engine::Postgres => {
                let n = COUNTER.fetch_add(1, Ordering::SeqCst);
                let name = format!("clinauth_t_{}_{n}_{}", std::process::id(), rand_suffix());
                let admin = pg_admin_url();
                let mut conn = sqlx::PgConnection::connect(&admin).await.unwrap_or_else(|e| {
                    panic!("PostgreSQL at {admin} is needed for this test (scripts/test.sh starts it): {e}")
                });
                conn.execute(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
                    .await
                    .unwrap();
                let base = admin.rsplit_once('/').map(|(b, _)| b).unwrap_or(&admin);
                TestDb {
                    url: format!("{base}/{name}"),
                    pg_name: Some(name),
                    _dir: None,
                }
            }
        }
    }

    pub async fn open(&self) -> Store {
        Store::open(&self.url, 8).await.unwrap()
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Some(name) = self.pg_name.take() {
            // Drop runs outside any runtime guarantee: use a thread with its own.
            let admin = pg_admin_url();
            let _ = std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                rt.block_on(async move {
                    if let Ok(mut conn) = sqlx::PgConnection::connect(&admin).await {
                        let _ = conn
                            .execute(sqlx::AssertSqlSafe(format!(
                                "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                            )))
                            .await;
                    }
                });
            })
            .join();
        }
    }
}

/// Defines `<name>_sqlite` and `<name>_postgres` tests running the same body.
#[macro_export]
macro_rules! on_both_engines {
    ($name:ident, $body:path) => {
        mod $name {
            use super::*;
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                let db = support::TestDb::new(support::Engine::Sqlite).await;
                $body(&db).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                let db = support::TestDb::new(support::Engine::Postgres).await;
                $body(&db).await;
            }
        }
    };
}
