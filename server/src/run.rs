//! Starting the server: storage, keys, policy, verifiers, the two listeners
//! and the background work, until shutdown.

use crate::api::{officer, workstation};
use crate::auth::evidence::Verifiers;
use crate::auth::{card_trust, challenge, AuthService, AuthSettings};
use crate::config::Config;
use crate::keys::Keys;
use crate::metrics::Metrics;
use crate::policy_store::ActivePolicy;
use crate::store::Store;
use crate::{clock, tls};
use rustls::server::NoServerSessionStorage;
use rustls::ServerConfig;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct StartError(pub String);

fn fail(what: &str) -> impl FnOnce(String) -> StartError + '_ {
    move |e| StartError(format!("{what}: {e}"))
}

/// The officer API's TLS: the same versions and suites, server certificate
/// only (officers authenticate with a ClinAuth ticket).
pub fn officer_server_config(
    settings: &tls::TlsSettings,
) -> Result<Arc<ServerConfig>, tls::TlsError> {
    let chain = tls::load_certs(&settings.cert)?;
    let key = tls::load_private_key(&settings.key)?;
    let provider = Arc::new(tls::provider(settings.allow_tls12));
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(tls::protocol_versions(settings.allow_tls12))
        .map_err(|e| tls::TlsError::Rustls(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| tls::TlsError::Rustls(e.to_string()))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    config.session_storage = Arc::new(NoServerSessionStorage {});
    config.send_tls13_tickets = 0;
    Ok(Arc::new(config))
}

/// A started server: where it listens, and how to stop it.
pub struct Running {
    /// The workstation API's address (the real port when the config said 0).
    pub workstation_addr: SocketAddr,
    /// The officer API's address.
    pub officer_addr: SocketAddr,
    /// The shared state, for tests and tools.
    pub auth: AuthService,
    stop: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Running {
    /// Stops accepting, lets requests in flight finish, and waits.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        for t in self.tasks {
            let _ = t.await;
        }
        self.auth.store.close().await;
    }
}

async fn stopped(mut rx: watch::Receiver<bool>) {
    while !*rx.borrow() {
        if rx.changed().await.is_err() {
            return;
        }
    }
}

/// Starts everything the configuration describes and returns once both
/// listeners are bound.
pub async fn start(config: Config) -> Result<Running, StartError> {
    let store = Store::open(&config.database.url, config.database.max_connections)
        .await
        .map_err(|e| fail("database")(e.to_string()))?;
    let keys = Arc::new(Keys::load(&config.keys.dir).map_err(|e| fail("keys")(e.to_string()))?);
    let policy = ActivePolicy::default();
    if policy
        .reload(&store)
        .await
        .map_err(|e| fail("policy")(e.to_string()))?
        .is_none()
    {
        if let Some(path) = &config.policy.initial {
            let text = crate::ctl::policy::read_policy_text(path)
                .map_err(|e| fail("policy")(e.to_string()))?;
            policy
                .activate(&store, &keys.audit, &text, "system", clock::now_ms())
                .await
                .map_err(|e| fail("initial policy")(e.to_string()))?;
        } else {
            tracing::warn!(
                "no policy is active: every authentication is refused until one is activated"
            );
        }
    }
    let card_trust = card_trust::load(&config.smartcard).map_err(fail("smartcard trust"))?;
    let fido2 = fido2_verifier(&config).map_err(fail("fido2"))?;
    let metrics = Arc::new(Metrics::default());
    let commits = crate::auth::commit::Committer::new(store.clone(), keys.clone())
        .with_metrics(metrics.clone());
    let auth = AuthService {
        store: store.clone(),
        policy: policy.clone(),
        keys,
        settings: Arc::new(AuthSettings {
            issuer: config.server.name.clone(),
            challenge_ttl_ms: config.auth.challenge_ttl.as_i64() * 1000,
            ticket_ttl_s: config.auth.ticket_ttl.as_i64(),
        }),
        hashing: Arc::new(crate::auth::hashing::Hashing::new(
            config.auth.max_concurrent_hashes,
        )),
        verifiers: Arc::new(Verifiers {
            card_trust,
            fido2,
            ..Verifiers::default()
        }),
        commits,
        clock: Default::default(),
    };

    let ws_tls =
        tls::workstation_server_config(&config.tls).map_err(|e| fail("TLS")(e.to_string()))?;
    let officer_tls = officer_server_config(&config.tls).map_err(|e| fail("TLS")(e.to_string()))?;
    let ws_listener = tls::bind(config.server.workstation_listen)
        .await
        .map_err(|e| fail("workstation listener")(e.to_string()))?;
    let officer_listener = tls::bind(config.server.officer_listen)
        .await
        .map_err(|e| fail("officer listener")(e.to_string()))?;
    let workstation_addr = ws_listener
        .local_addr()
        .map_err(|e| fail("listener")(e.to_string()))?;
    let officer_addr = officer_listener
        .local_addr()
        .map_err(|e| fail("listener")(e.to_string()))?;
    let limits = tls::ServeLimits::new(&config.tls, config.server.max_connections);

    let (stop, stop_rx) = watch::channel(false);
    let mut tasks = Vec::new();
    let ws_handle = tls::ServerConfigHandle::new(ws_tls);
    // A revoked workstation (pki revoke, a new CRL) is refused without a restart.
    let reload = tokio::spawn(tls::reload_on_change(
        ws_handle.clone(),
        config.tls.clone(),
        Duration::from_secs(5),
    ));
    let ws_router = workstation::router(workstation::WorkstationApi {
        auth: auth.clone(),
        metrics: metrics.clone(),
    });
    tasks.push(tokio::spawn(tls::serve(
        ws_listener,
        ws_handle,
        ws_router,
        limits,
        stopped(stop_rx.clone()),
    )));
    let officer_router = officer::router(officer::OfficerApi {
        auth: auth.clone(),
        officer_roles: Arc::new(config.officer.roles.clone()),
        fido2_require_uv: config.fido2.require_user_verification,
        metrics,
    });
    tasks.push(tokio::spawn(tls::serve(
        officer_listener,
        tls::ServerConfigHandle::new(officer_tls),
        officer_router,
        limits,
        stopped(stop_rx.clone()),
    )));
    tasks.push(tokio::spawn(housekeeping(auth.clone(), stop_rx.clone())));
    tasks.push(tokio::spawn(async move {
        stopped(stop_rx).await;
        reload.abort();
    }));
    tracing::info!(%workstation_addr, %officer_addr, backend = ?store.backend(), "clinauth-server started");
    Ok(Running {
        workstation_addr,
        officer_addr,
        auth,
        stop,
        tasks,
    })
}

/// The FIDO2 verifier of `[fido2]`, if enabled.
pub fn fido2_verifier(
    config: &Config,
) -> Result<Option<clinauth_factors::fido2::Fido2Verifier>, String> {
    use clinauth_factors::fido2::{AttestationTrust, Fido2Config, Fido2Verifier};
    let section = &config.fido2;
    if !section.enabled {
        return Ok(None);
    }
    let rp_id = section
        .rp_id
        .clone()
        .unwrap_or_else(|| config.server.name.clone());
    let origin = section
        .origin
        .clone()
        .unwrap_or_else(|| format!("https://{rp_id}"));
    let mut fido2 = Fido2Config::new(&rp_id, &origin);
    fido2.rp_name = Some("ClinAuth".into());
    if !section.attestation_cas.is_empty() {
        let mut trust = AttestationTrust::new();
        for ca in &section.attestation_cas {
            let pem = std::fs::read(&ca.pem).map_err(|e| format!("{}: {e}", ca.pem.display()))?;
            let models = ca
                .models
                .iter()
                .map(|m| {
                    clinauth_policy::Aaguid::parse(m).ok_or_else(|| format!("{m}: not an AAGUID"))
                })
                .collect::<Result<Vec<_>, _>>()?;
            trust
                .allow_ca_pem(&pem, &models)
                .map_err(|e| format!("{}: {e}", ca.pem.display()))?;
        }
        fido2.attestation = Some(trust);
    }
    Fido2Verifier::new(fido2)
        .map(Some)
        .map_err(|e| e.to_string())
}

/// Every few seconds: forget expired challenges, and pick up a policy that
/// another replica activated.
async fn housekeeping(auth: AuthService, stop: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(Duration::from_secs(10));
    let mut done = std::pin::pin!(stopped(stop));
    loop {
        tokio::select! {
            () = &mut done => return,
            _ = tick.tick() => {}
        }
        housekeep_once(&auth).await;
    }
}

/// One pass of housekeeping at the service's clock: expired challenges and
/// their operations are forgotten, the active policy is reloaded. Records
/// are not touched: a pending record stays pending (R-REC-1).
pub async fn housekeep_once(auth: &AuthService) {
    let now = auth.clock.now_ms();
    match auth.store.begin().await {
        Ok(mut tx) => {
            // Keep used challenges a while for the audit trail's sake.
            if challenge::purge(&mut tx, now - 3_600_000).await.is_ok() {
                let _ = tx.commit().await;
            }
            // Never a record: nothing here touches them (R-REC-1).
            let _ = crate::auth::operation::purge(&auth.store, now - 3_600_000).await;
        }
        Err(e) => tracing::warn!(error = %e, "housekeeping: database unavailable"),
    }
    if let Err(e) = auth.policy.reload(&auth.store).await {
        tracing::error!(error = %e, "housekeeping: could not reload the active policy");
    }
}

/// Runs until `shutdown` completes.
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> Result<(), StartError> {
    let running = start(config).await?;
    shutdown.await;
    tracing::info!("clinauth-server stopping");
    running.stop().await;
    Ok(())
}
