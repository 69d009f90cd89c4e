//! Schema migrations, the same for both engines: `{blob}` becomes `BLOB` on
//! SQLite and `BYTEA` on PostgreSQL; a statement that starts with
//! `{sqlite-only}` or `{postgres-only}` runs on that engine alone (storage
//! layouts differ); everything else is common SQL. Migrations only ever append: an applied
//! one is never edited.

use super::{Backend, Store, StoreError};
use sqlx::{AssertSqlSafe, Executor, Row};

/// (version, SQL). Statements are separated by `;` at line ends.
pub const MIGRATIONS: &[(i64, &str)] = &[
    (
        1,
        r#"
CREATE TABLE users (
    id            TEXT PRIMARY KEY,
    display_name  TEXT NOT NULL,
    roles         TEXT NOT NULL,
    state         TEXT NOT NULL,
    created_at    BIGINT NOT NULL,
    updated_at    BIGINT NOT NULL
);
CREATE TABLE workstations (
    id            TEXT PRIMARY KEY,
    cert_sha256   TEXT NOT NULL UNIQUE,
    group_name    TEXT NOT NULL,
    location      TEXT NOT NULL,
    state         TEXT NOT NULL,
    last_contact  BIGINT,
    created_at    BIGINT NOT NULL,
    updated_at    BIGINT NOT NULL
);
CREATE TABLE devices (
    id            TEXT PRIMARY KEY,
    kind          TEXT NOT NULL,
    owner         TEXT REFERENCES users(id),
    description   TEXT NOT NULL,
    public_key    {blob},
    attributes    TEXT NOT NULL,
    state         TEXT NOT NULL,
    last_contact  BIGINT,
    created_at    BIGINT NOT NULL,
    updated_at    BIGINT NOT NULL
);
CREATE TABLE audit_log (
    seq           BIGINT PRIMARY KEY,
    at_ms         BIGINT NOT NULL,
    actor         TEXT NOT NULL,
    workstation   TEXT,
    action        TEXT NOT NULL,
    target        TEXT,
    outcome       TEXT NOT NULL,
    detail        TEXT NOT NULL,
    prev_hash     {blob} NOT NULL,
    hash          {blob} NOT NULL,
    signature     {blob} NOT NULL
)
"#,
    ),
    (
        2,
        r#"
CREATE TABLE credentials (
    id            TEXT PRIMARY KEY,
    user_id       TEXT NOT NULL REFERENCES users(id),
    kind          TEXT NOT NULL,
    secret        {blob},
    public_data   {blob},
    meta          TEXT NOT NULL,
    counter       BIGINT NOT NULL,
    state         TEXT NOT NULL,
    created_at    BIGINT NOT NULL,
    last_used     BIGINT
);
CREATE INDEX credentials_by_user ON credentials (user_id, kind);
CREATE TABLE challenges (
    id            TEXT PRIMARY KEY,
    nonce         {blob} NOT NULL,
    user_id       TEXT NOT NULL,
    workstation   TEXT NOT NULL,
    purpose       TEXT NOT NULL,
    webauthn      TEXT,
    created_at    BIGINT NOT NULL,
    expires_at    BIGINT NOT NULL,
    used_at       BIGINT
);
CREATE INDEX challenges_by_expiry ON challenges (expires_at);
CREATE TABLE throttle (
    key                 TEXT PRIMARY KEY,
    failures            BIGINT NOT NULL,
    biometric_failures  BIGINT NOT NULL,
    last_failure        BIGINT NOT NULL,
    locked              BIGINT NOT NULL
);
CREATE TABLE policies (
    digest        TEXT PRIMARY KEY,
    version       BIGINT NOT NULL,
    body          TEXT NOT NULL,
    created_at    BIGINT NOT NULL,
    created_by    TEXT NOT NULL,
    active        BIGINT NOT NULL
)
"#,
    ),
    (
        3,
        r#"
CREATE TABLE enrollments (
    id            TEXT PRIMARY KEY,
    user_id       TEXT NOT NULL REFERENCES users(id),
    kind          TEXT NOT NULL,
    state         TEXT NOT NULL,
    created_at    BIGINT NOT NULL,
    expires_at    BIGINT NOT NULL,
    used_at       BIGINT
)
"#,
    ),
    (
        4,
        r#"
CREATE TABLE reviews (
    id            TEXT PRIMARY KEY,
    user_id       TEXT NOT NULL,
    workstation   TEXT NOT NULL,
    purpose       TEXT NOT NULL,
    rule          TEXT NOT NULL,
    factors       TEXT NOT NULL,
    audit_seq     BIGINT NOT NULL,
    created_at    BIGINT NOT NULL,
    state         TEXT NOT NULL,
    outcome       TEXT,
    note          TEXT,
    reviewed_by   TEXT,
    reviewed_at   BIGINT
);
CREATE INDEX reviews_by_state ON reviews (state, created_at)
"#,
    ),
    (
        5,
        r#"
CREATE TABLE agent_events (
    workstation   TEXT NOT NULL,
    stream        TEXT NOT NULL,
    seq           BIGINT NOT NULL,
    at_ms         BIGINT NOT NULL,
    received_at   BIGINT NOT NULL,
    audit_seq     BIGINT NOT NULL,
    PRIMARY KEY (workstation, stream, seq)
);
CREATE TABLE offline_bundles (
    ticket_jti    TEXT PRIMARY KEY,
    user_id       TEXT NOT NULL,
    workstation   TEXT NOT NULL,
    issued_at     BIGINT NOT NULL,
    expires_at    BIGINT NOT NULL
);
CREATE INDEX offline_bundles_by_user ON offline_bundles (user_id, workstation)
"#,
    ),
    (
        6,
        r#"
CREATE TABLE records (
    id              TEXT PRIMARY KEY,
    digest          TEXT NOT NULL,
    summary         TEXT NOT NULL,
    inputter        TEXT NOT NULL,
    inputter_auth   TEXT NOT NULL,
    confirmer       TEXT NOT NULL,
    workstation     TEXT NOT NULL,
    entered_at      BIGINT NOT NULL,
    state           TEXT NOT NULL,
    decided_at      BIGINT,
    confirmer_auth  TEXT,
    confirmation    TEXT
);
CREATE INDEX records_by_confirmer ON records (confirmer, state, entered_at);
CREATE TABLE challenge_operations (
    challenge_id    TEXT PRIMARY KEY,
    operation       TEXT NOT NULL,
    created_at      BIGINT NOT NULL
);
CREATE INDEX challenge_operations_by_age ON challenge_operations (created_at)
"#,
    ),
    (
        7,
        // The two tables every login writes. On SQLite `seq BIGINT PRIMARY
        // KEY` is not the row ID, so each audit entry also went into an index
        // of its own: rebuilt with the row ID as `seq` (same rows). Challenges
        // are now found for purging by their identifiers, which start with
        // the issue time, so they lose the expiry index, and on SQLite become
        // a WITHOUT ROWID table keyed by identifier. A begin's commit writes
        // three pages fewer (docs/BENCHMARKS.md). Challenges are short-lived
        // and not carried over: a login begun before the upgrade and finished
        // after it is refused as unknown, and the user tries again. On
        // PostgreSQL the audit lock and the read of the chain's head become
        // one call (a VOLATILE function reads after taking the lock): one
        // round trip fewer per commit.
        r#"
{sqlite-only} CREATE TABLE audit_log_v7 (
    seq           INTEGER PRIMARY KEY,
    at_ms         BIGINT NOT NULL,
    actor         TEXT NOT NULL,
    workstation   TEXT,
    action        TEXT NOT NULL,
    target        TEXT,
    outcome       TEXT NOT NULL,
    detail        TEXT NOT NULL,
    prev_hash     BLOB NOT NULL,
    hash          BLOB NOT NULL,
    signature     BLOB NOT NULL
);
{sqlite-only} INSERT INTO audit_log_v7 (seq, at_ms, actor, workstation, action, target, outcome, detail, prev_hash, hash, signature)
    SELECT seq, at_ms, actor, workstation, action, target, outcome, detail, prev_hash, hash, signature FROM audit_log ORDER BY seq;
{sqlite-only} DROP TABLE audit_log;
{sqlite-only} ALTER TABLE audit_log_v7 RENAME TO audit_log;
{sqlite-only} DROP TABLE challenges;
{sqlite-only} CREATE TABLE challenges (
    id            TEXT PRIMARY KEY,
    nonce         BLOB NOT NULL,
    user_id       TEXT NOT NULL,
    workstation   TEXT NOT NULL,
    purpose       TEXT NOT NULL,
    webauthn      TEXT,
    created_at    BIGINT NOT NULL,
    expires_at    BIGINT NOT NULL,
    used_at       BIGINT
) WITHOUT ROWID;
{postgres-only} DROP INDEX challenges_by_expiry;
{postgres-only} DELETE FROM challenges;
{postgres-only} CREATE FUNCTION clinauth_audit_head() RETURNS TABLE (seq BIGINT, hash BYTEA) LANGUAGE plpgsql VOLATILE AS $$ BEGIN PERFORM pg_advisory_xact_lock(727100002); RETURN QUERY SELECT a.seq, a.hash FROM audit_log a ORDER BY a.seq DESC LIMIT 1; END $$
"#,
    ),
];

/// Marks a statement that only SQLite runs.
const SQLITE_ONLY: &str = "{sqlite-only}";
/// Marks a statement that only PostgreSQL runs.
const POSTGRES_ONLY: &str = "{postgres-only}";

/// The statements of a migration for `backend`, without their markers.
fn statements(sql: &str, backend: Backend) -> Vec<String> {
    render(sql, backend)
        .split(";\n")
        .filter_map(|statement| {
            let statement = statement.trim();
            let (only, rest) = if let Some(rest) = statement.strip_prefix(SQLITE_ONLY) {
                (Some(Backend::Sqlite), rest)
            } else if let Some(rest) = statement.strip_prefix(POSTGRES_ONLY) {
                (Some(Backend::Postgres), rest)
            } else {
                (None, statement)
            };
            let rest = rest.trim();
            (only.is_none_or(|b| b == backend) && !rest.is_empty()).then(|| rest.to_owned())
        })
        .collect()
}

fn render(sql: &str, backend: Backend) -> String {
    let blob = match backend {
        Backend::Sqlite => "BLOB",
        Backend::Postgres => "BYTEA",
    };
    sql.replace("{blob}", blob)
}

/// Applies what is missing up to `upto` (`i64::MAX`: all), in one
/// transaction: a failed upgrade leaves the database as it was. Several
/// replicas starting at once on PostgreSQL are serialised by an advisory lock.
pub(super) async fn run(store: &Store, upto: i64) -> Result<(), StoreError> {
    let mut tx = store.begin().await?;
    if store.backend() == Backend::Postgres {
        tx.execute("SELECT pg_advisory_xact_lock(727100001)")
            .await?;
    }
    tx.execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations (version BIGINT PRIMARY KEY, applied_at BIGINT NOT NULL)",
    )
    .await?;
    let current: i64 = sqlx::query("SELECT COALESCE(MAX(version), 0) AS v FROM schema_migrations")
        .fetch_one(&mut *tx)
        .await?
        .try_get("v")?;
    let newest = MIGRATIONS.last().map(|(v, _)| *v).unwrap_or(0);
    if current > newest {
        return Err(StoreError::SchemaTooNew {
            found: current,
            supported: newest,
        });
    }
    for (version, sql) in MIGRATIONS
        .iter()
        .filter(|(v, _)| *v > current && *v <= upto)
    {
        for statement in statements(sql, store.backend()) {
            tx.execute(AssertSqlSafe(statement)).await?;
        }
        sqlx::query("INSERT INTO schema_migrations (version, applied_at) VALUES ($1, $2)")
            .bind(*version)
            .bind(crate::clock::now_ms())
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markers_select_the_engine_and_never_reach_the_database() {
        for backend in [Backend::Sqlite, Backend::Postgres] {
            for (version, sql) in MIGRATIONS {
                for statement in statements(sql, backend) {
                    assert!(!statement.contains('{'), "{version}: {statement}");
                }
            }
        }
        let (_, v7) = MIGRATIONS[6];
        let sqlite = statements(v7, Backend::Sqlite);
        let postgres = statements(v7, Backend::Postgres);
        assert!(sqlite.iter().any(|s| s.ends_with("WITHOUT ROWID")));
        assert!(sqlite.iter().all(|s| !s.starts_with("DROP INDEX")));
        assert_eq!(postgres.len(), 3);
        assert!(postgres[2].starts_with("CREATE FUNCTION clinauth_audit_head()"));
        assert_eq!(
            statements("{sqlite-only} SELECT 1;\nSELECT 2", Backend::Postgres),
            ["SELECT 2"]
        );
    }
}
