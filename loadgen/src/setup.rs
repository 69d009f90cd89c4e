//! Setting up what the load needs: a fresh in-process server (temporary
//! directory, local PKI, keys, SQLite or a fresh PostgreSQL database, users
//! with enrolled cards or badges and PINs, registered workstations), or the
//! same users and workstations provisioned into an existing server.

use crate::cards::CardCa;
use crate::fixture::{card_entry, Fixture, FixtureFile, UserEntry, WorkstationEntry};
use crate::{hex, Error, Factor};
use clinauth_factors::card::CardTrust;
use clinauth_factors::pin::SecretPin;
use clinauth_server::auth::card_trust;
use clinauth_server::config::{Config, SmartcardSection};
use clinauth_server::credentials::Enroller;
use clinauth_server::keys::Keys;
use clinauth_server::officer::Officer;
use clinauth_server::run::{self, Running};
use clinauth_server::store::Store;
use clinauth_server::{clock, pki};
use ring::rand::{SecureRandom, SystemRandom};
use sqlx::{Connection, Executor};
use std::path::{Path, PathBuf};

/// The hospital example policy: nurses log in at ward workstations with
/// card + card PIN or badge + server PIN (rule `ward-login`).
pub const POLICY: &str = include_str!("../../examples/policy/hospital.toml");

/// The workstation group the simulated workstations are registered in.
pub const GROUP: &str = "ward";

/// How many of what.
#[derive(Debug, Clone)]
pub struct SetupOptions {
    /// Users to create.
    pub users: usize,
    /// Workstations to create.
    pub workstations: usize,
    /// What the users present.
    pub factor: Factor,
    /// A PostgreSQL URL of a database the tool may `CREATE DATABASE` from
    /// (fresh server only); SQLite in the temporary directory otherwise.
    pub postgres: Option<String>,
    /// PostgreSQL pool size (`[database] max_connections`).
    pub db_pool: u32,
    /// `[auth] max_concurrent_hashes`.
    pub max_concurrent_hashes: usize,
    /// `[server] max_connections`.
    pub max_connections: usize,
}

impl Default for SetupOptions {
    fn default() -> Self {
        SetupOptions {
            users: 256,
            workstations: 32,
            factor: Factor::Card,
            postgres: None,
            db_pool: 16,
            max_concurrent_hashes: 4,
            max_connections: 1024,
        }
    }
}

/// A directory removed when dropped.
pub struct TempDir(pub PathBuf);

impl TempDir {
    /// A new empty directory under the system's temporary directory.
    pub fn new(tag: &str) -> Result<TempDir, Error> {
        let path = std::env::temp_dir().join(format!(
            "clinauth-loadgen-{tag}-{}-{}",
            std::process::id(),
            random_hex(6)?
        ));
        std::fs::create_dir_all(&path).map_err(Error::ctx("temporary directory"))?;
        Ok(TempDir(path))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn random_hex(n: usize) -> Result<String, Error> {
    let mut b = vec![0u8; n];
    SystemRandom::new()
        .fill(&mut b)
        .map_err(|_| Error("no randomness".into()))?;
    Ok(hex(&b))
}

/// A PostgreSQL database created for one run.
struct PgDatabase {
    admin: String,
    name: String,
}

impl PgDatabase {
    async fn create(admin: &str) -> Result<(PgDatabase, String), Error> {
        let name = format!("clinauth_lg_{}_{}", std::process::id(), random_hex(4)?);
        let mut conn = sqlx::PgConnection::connect(admin)
            .await
            .map_err(|e| Error(format!("PostgreSQL at {admin}: {e}")))?;
        conn.execute(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .await
            .map_err(Error::ctx("CREATE DATABASE"))?;
        let _ = conn.close().await;
        let base = admin.rsplit_once('/').map(|(b, _)| b).unwrap_or(admin);
        let url = format!("{base}/{name}");
        Ok((
            PgDatabase {
                admin: admin.to_owned(),
                name,
            },
            url,
        ))
    }

    async fn drop_database(self) -> Result<(), Error> {
        let mut conn = sqlx::PgConnection::connect(&self.admin)
            .await
            .map_err(Error::ctx("PostgreSQL"))?;
        conn.execute(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            self.name
        )))
        .await
        .map_err(Error::ctx("DROP DATABASE"))?;
        let _ = conn.close().await;
        Ok(())
    }
}

/// Creates the users and workstations: returns their fixture entries.
#[allow(clippy::too_many_arguments)]
async fn populate(
    store: &Store,
    keys: &Keys,
    pki_dir: &Path,
    ws_out: Option<&Path>,
    trust: &CardTrust,
    ca: &CardCa,
    opts: &SetupOptions,
    prefix: &str,
) -> Result<(Vec<WorkstationEntry>, Vec<UserEntry>), Error> {
    let now = clock::now_ms();
    let officer = Officer {
        store,
        key: &keys.audit,
        actor: "root@loadgen",
    };
    let data = keys
        .data
        .first()
        .ok_or_else(|| Error("the server has no data key".into()))?;
    let enroller = Enroller {
        store,
        audit: &keys.audit,
        data,
        actor: "root@loadgen",
    };
    let mut workstations = Vec::with_capacity(opts.workstations);
    for i in 0..opts.workstations {
        let name = format!("{prefix}ws{i:04}");
        let issued = pki::issue_workstation(pki_dir, &name, ws_out, false, now)
            .map_err(Error::ctx("issuing a workstation certificate"))?;
        officer
            .add_workstation(&name, &issued.sha256, GROUP, "loadgen", now)
            .await
            .map_err(Error::ctx("registering a workstation"))?;
        workstations.push(WorkstationEntry {
            name,
            cert: issued.cert,
            key: issued.key,
        });
    }
    let mut badge_prefix = [0u8; 3];
    SystemRandom::new()
        .fill(&mut badge_prefix)
        .map_err(|_| Error("no randomness".into()))?;
    let mut users = Vec::with_capacity(opts.users);
    for i in 0..opts.users {
        let id = format!("{prefix}nurse{i:05}");
        officer
            .add_user(&id, "Loadgen Nurse", &["nurse".into()], now)
            .await
            .map_err(Error::ctx("adding a user"))?;
        match opts.factor {
            Factor::Card => {
                let card = ca.issue(&id, i as u64 + 1)?;
                enroller
                    .card(&id, &card.cert, trust, true, now)
                    .await
                    .map_err(Error::ctx("enrolling a card"))?;
                users.push(card_entry(&id, &card));
            }
            Factor::Pin => {
                let n = u32::try_from(i).unwrap_or(u32::MAX).to_be_bytes();
                let uid = [
                    0x4c,
                    badge_prefix[0],
                    badge_prefix[1],
                    badge_prefix[2],
                    n[1],
                    n[2],
                    n[3],
                ];
                officer
                    .register_badge(&id, &uid, now)
                    .await
                    .map_err(Error::ctx("registering a badge"))?;
                let pin = format!("p{i:05}q");
                let secret = SecretPin::from_text(&pin).map_err(Error::ctx("PIN"))?;
                enroller
                    .pin(&id, &secret, now)
                    .await
                    .map_err(Error::ctx("enrolling a PIN"))?;
                users.push(UserEntry {
                    id,
                    badge: Some(hex(&uid)),
                    pin: Some(pin),
                    ..UserEntry::default()
                });
            }
        }
    }
    Ok((workstations, users))
}

/// Writes the card CA and its CRL into `dir`; returns the `[smartcard]`
/// section that trusts them (CRL required, as in production).
fn write_card_ca(ca: &CardCa, dir: &Path) -> Result<SmartcardSection, Error> {
    let ca_path = dir.join("card-ca.pem");
    let crl_path = dir.join("card-ca.crl");
    std::fs::write(&ca_path, ca.pem()).map_err(Error::ctx("card CA"))?;
    std::fs::write(&crl_path, ca.crl_der()?).map_err(Error::ctx("card CRL"))?;
    Ok(SmartcardSection {
        trust_anchors: vec![ca_path],
        crls: vec![crl_path],
        require_crl: true,
    })
}

/// A server started in this process for the run.
pub struct FreshServer {
    /// The running server.
    pub running: Running,
    /// `sqlite` or `postgres`.
    pub database: &'static str,
    pg: Option<PgDatabase>,
    _dir: TempDir,
}

impl FreshServer {
    /// Starts a server with a fresh database and populates it.
    pub async fn start(opts: &SetupOptions) -> Result<(FreshServer, Fixture), Error> {
        let dir = TempDir::new("server")?;
        let d = &dir.0;
        let pki_dir = d.join("pki");
        let now = clock::now_ms();
        pki::init(
            &pki_dir,
            &pki::InitOptions {
                site: "Loadgen Hospital".into(),
                server_names: vec![],
                force: false,
            },
            now,
        )
        .map_err(Error::ctx("local PKI"))?;
        Keys::create_missing(&d.join("keys")).map_err(Error::ctx("keys"))?;
        let policy = d.join("policy.toml");
        std::fs::write(&policy, POLICY).map_err(Error::ctx("policy"))?;
        let ca = CardCa::new("ClinAuth Loadgen Card CA")?;
        let smartcard = write_card_ca(&ca, d)?;
        let (pg, url, database) = match &opts.postgres {
            Some(admin) => {
                let (pg, url) = PgDatabase::create(admin).await?;
                (Some(pg), url, "postgres")
            }
            None => (
                None,
                format!("sqlite://{}", d.join("clinauth.db").display()),
                "sqlite",
            ),
        };
        let q = |p: &Path| format!("{:?}", p.display().to_string());
        let text = format!(
            r#"
[server]
name = "clinauth.loadgen"
workstation_listen = "127.0.0.1:0"
officer_listen = "127.0.0.1:0"
max_connections = {maxconn}
[database]
url = {url:?}
max_connections = {pool}
[keys]
dir = {keys}
[policy]
initial = {policy}
[auth]
max_concurrent_hashes = {hashes}
[smartcard]
trust_anchors = [{anchor}]
crls = [{crl}]
require_crl = true
[tls]
cert = {cert}
key = {key}
workstation_ca = {wca}
crl = {wcrl}
"#,
            maxconn = opts.max_connections,
            pool = opts.db_pool,
            keys = q(&d.join("keys")),
            policy = q(&policy),
            hashes = opts.max_concurrent_hashes,
            anchor = q(&smartcard.trust_anchors[0]),
            crl = q(&smartcard.crls[0]),
            cert = q(&pki_dir.join("server.pem")),
            key = q(&pki_dir.join("server-key.pem")),
            wca = q(&pki_dir.join("ca.pem")),
            wcrl = q(&pki_dir.join("crl.pem")),
        );
        let config = Config::from_toml(&text, &d.join("server.toml"))
            .map_err(Error::ctx("server configuration"))?;
        let started = run::start(config).await;
        let running = match started {
            Ok(r) => r,
            Err(e) => {
                if let Some(pg) = pg {
                    let _ = pg.drop_database().await;
                }
                return Err(Error(format!("starting the server: {e}")));
            }
        };
        let trust = card_trust::load(&smartcard).map_err(Error::ctx("card trust"))?;
        let populated = populate(
            &running.auth.store,
            &running.auth.keys,
            &pki_dir,
            None,
            &trust,
            &ca,
            opts,
            "",
        )
        .await;
        let (workstations, users) = match populated {
            Ok(p) => p,
            Err(e) => {
                running.stop().await;
                if let Some(pg) = pg {
                    let _ = pg.drop_database().await;
                }
                return Err(e);
            }
        };
        let file = FixtureFile {
            server_ca: pki_dir.join(pki::CA_CERT),
            server_name: "localhost".into(),
            factor: opts.factor,
            workstations,
            users,
        };
        let fixture = Fixture::load(&file)?;
        Ok((
            FreshServer {
                running,
                database,
                pg,
                _dir: dir,
            },
            fixture,
        ))
    }

    /// Stops the server and drops its database.
    pub async fn stop(self) -> Result<(), Error> {
        self.running.stop().await;
        if let Some(pg) = self.pg {
            pg.drop_database().await?;
        }
        Ok(())
    }
}

/// Provisions users (with cards from a new card CA, or badges and PINs) and
/// workstations (certificates from the server's local PKI) into the
/// database of an existing server, and writes `out/fixture.json` for
/// `run --target`. Returns the fixture's path.
pub async fn provision(
    config_path: &Path,
    pki_dir: Option<&Path>,
    out: &Path,
    server_name: &str,
    opts: &SetupOptions,
) -> Result<PathBuf, Error> {
    let config = Config::load(config_path).map_err(Error::ctx("server configuration"))?;
    let pki_dir = match pki_dir {
        Some(p) => p.to_owned(),
        None => config
            .tls
            .workstation_ca
            .first()
            .and_then(|p| p.parent())
            .map(Path::to_owned)
            .ok_or_else(|| Error("give --pki: the local PKI directory".into()))?,
    };
    std::fs::create_dir_all(out.join("workstations")).map_err(Error::ctx("output directory"))?;
    let store = Store::open(&config.database.url, 2)
        .await
        .map_err(Error::ctx("database"))?;
    let keys = Keys::load(&config.keys.dir).map_err(Error::ctx("keys"))?;
    let ca = CardCa::new("ClinAuth Loadgen Card CA")?;
    let smartcard = write_card_ca(&ca, out)?;
    let trust = card_trust::load(&smartcard).map_err(Error::ctx("card trust"))?;
    let prefix = format!("lg{}-", random_hex(2)?);
    let (workstations, users) = populate(
        &store,
        &keys,
        &pki_dir,
        Some(&out.join("workstations")),
        &trust,
        &ca,
        opts,
        &prefix,
    )
    .await?;
    store.close().await;
    FixtureFile {
        server_ca: pki_dir.join(pki::CA_CERT),
        server_name: server_name.to_owned(),
        factor: opts.factor,
        workstations,
        users,
    }
    .write(out)
}
