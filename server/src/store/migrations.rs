//! Schema migrations, the same for both engines: `{blob}` becomes `BLOB` on
//! SQLite and `BYTEA` on PostgreSQL; everything else is common SQL.
//! Migrations only ever append: an applied one is never edited.

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
];

fn render(sql: &str, backend: Backend) -> String {
    let blob = match backend {
        Backend::Sqlite => "BLOB",
        Backend::Postgres => "BYTEA",
    };
    sql.replace("{blob}", blob)
}

/// Applies what is missing, each migration in its own transaction. Several
/// replicas starting at once on PostgreSQL are serialised by an advisory lock.
pub(super) async fn run(store: &Store) -> Result<(), StoreError> {
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
    for (version, sql) in MIGRATIONS.iter().filter(|(v, _)| *v > current) {
        for statement in render(sql, store.backend()).split(";\n") {
            if !statement.trim().is_empty() {
                tx.execute(AssertSqlSafe(statement.to_owned())).await?;
            }
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
