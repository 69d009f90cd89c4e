//! systemd-logind (`org.freedesktop.login1`) as the session code needs it:
//! which session a process is in, who a session belongs to, its idle and
//! lock hints and their changes, and the calls that lock a session or bring
//! another one to the front. The display manager's user switch
//! (`org.freedesktop.DisplayManager`, LightDM) is here too.
//!
//! [`Logind`] is the seam: the tap-out and binding logic talk to the trait,
//! [`LogindClient`] is the real thing over zbus (tested against
//! python-dbusmock's `logind` template on a private bus in
//! `hardware-tests/tests/agent_session.rs`), and the unit tests use a fake.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::{mpsc, Mutex};
use zbus::names::InterfaceName;
use zbus::zvariant::{OwnedObjectPath, OwnedValue};

/// A boxed future (the trait is used as `dyn Logind`).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

const LOGIN1: &str = "org.freedesktop.login1";
const SESSION_INTERFACE: &str = "org.freedesktop.login1.Session";
const DISPLAY_MANAGER: &str = "org.freedesktop.DisplayManager";
/// How long one call may take before it counts as failed.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a logind call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LogindError {
    /// The session (or the process' session) does not exist.
    #[error("logind has no session {0}")]
    NoSuchSession(String),
    /// The bus or logind failed (not running, refused, timed out).
    #[error("logind: {0}")]
    Bus(String),
    /// An answer of an unexpected shape.
    #[error("logind answered something unexpected: {0}")]
    Unexpected(String),
}

/// The hints of a session that change while it runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SessionProps {
    /// The session is in the foreground of its seat.
    pub active: bool,
    /// The screen locker says the session is locked (`LockedHint`).
    pub locked_hint: bool,
    /// The desktop says nobody is using it (`IdleHint`).
    pub idle_hint: bool,
    /// Since when (`IdleSinceHint`, µs since the epoch; 0: unknown).
    pub idle_since_us: u64,
}

/// A session, as logind describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionInfo {
    /// The session ID (`XDG_SESSION_ID`).
    pub id: String,
    /// Its D-Bus object path.
    pub path: String,
    /// The user's login name.
    pub user: String,
    /// The user's uid.
    pub uid: u32,
    /// The seat (empty for sessions without one, e.g. ssh).
    pub seat: String,
    /// `user`, `greeter`, `lock-screen`, `background`.
    pub class: String,
    /// The changing hints.
    pub props: SessionProps,
}

/// One line of `ListSessions`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionEntry {
    /// The session ID.
    pub id: String,
    /// The user's uid.
    pub uid: u32,
    /// The user's login name.
    pub user: String,
    /// The seat (may be empty).
    pub seat: String,
}

/// A change of a watched session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionChange {
    /// The session ID.
    pub id: String,
    /// Its hints now; `None`: the session is gone.
    pub props: Option<SessionProps>,
}

/// Keeps a session watched; dropping it ends the watch.
#[derive(Debug, Default)]
pub struct Watch(Option<tokio::task::AbortHandle>);

impl Watch {
    /// A watch with nothing to stop (fakes).
    pub fn none() -> Watch {
        Watch(None)
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        if let Some(h) = self.0.take() {
            h.abort();
        }
    }
}

/// What the session code asks of logind (and the display manager).
pub trait Logind: Send + Sync {
    /// The session of process `pid` (`GetSessionByPID`).
    fn session_by_pid(&self, pid: u32) -> BoxFuture<'_, Result<SessionInfo, LogindError>>;
    /// The session `id` (`GetSession`).
    fn session<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<SessionInfo, LogindError>>;
    /// Every session (`ListSessions`).
    fn list_sessions(&self) -> BoxFuture<'_, Result<Vec<SessionEntry>, LogindError>>;
    /// Locks the session (`LockSession`: logind tells its screen locker).
    fn lock_session<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<(), LogindError>>;
    /// Brings the session to the front of its seat (`ActivateSession`).
    fn activate_session<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<(), LogindError>>;
    /// Asks the display manager for its greeter (`SwitchToGreeter`), or
    /// for `user`'s session or a greeter for them (`SwitchToUser`).
    fn display_manager_switch<'a>(
        &'a self,
        user: Option<&'a str>,
    ) -> BoxFuture<'a, Result<(), LogindError>>;
    /// Reports every change of the session's hints to `changes` until the
    /// returned [`Watch`] is dropped.
    fn watch<'a>(
        &'a self,
        session: &'a SessionInfo,
        changes: mpsc::UnboundedSender<SessionChange>,
    ) -> BoxFuture<'a, Result<Watch, LogindError>>;
}

mod proxies {
    use zbus::zvariant::OwnedObjectPath;

    #[zbus::proxy(
        interface = "org.freedesktop.login1.Manager",
        default_service = "org.freedesktop.login1",
        default_path = "/org/freedesktop/login1",
        gen_blocking = false
    )]
    pub(super) trait Manager {
        #[zbus(name = "GetSessionByPID")]
        fn get_session_by_pid(&self, pid: u32) -> zbus::Result<OwnedObjectPath>;
        fn get_session(&self, id: &str) -> zbus::Result<OwnedObjectPath>;
        fn list_sessions(
            &self,
        ) -> zbus::Result<Vec<(String, u32, String, String, OwnedObjectPath)>>;
        fn lock_session(&self, id: &str) -> zbus::Result<()>;
        fn activate_session(&self, id: &str) -> zbus::Result<()>;
        #[zbus(signal)]
        fn session_removed(
            &self,
            id: &str,
            path: zbus::zvariant::ObjectPath<'_>,
        ) -> zbus::Result<()>;
    }

    #[zbus::proxy(
        interface = "org.freedesktop.DisplayManager",
        default_service = "org.freedesktop.DisplayManager",
        default_path = "/org/freedesktop/DisplayManager",
        gen_blocking = false
    )]
    pub(super) trait DisplayManager {
        #[zbus(property)]
        fn seats(&self) -> zbus::Result<Vec<OwnedObjectPath>>;
    }

    #[zbus::proxy(
        interface = "org.freedesktop.DisplayManager.Seat",
        default_service = "org.freedesktop.DisplayManager",
        gen_blocking = false
    )]
    pub(super) trait DmSeat {
        fn switch_to_greeter(&self) -> zbus::Result<()>;
        fn switch_to_user(&self, username: &str, session_name: &str) -> zbus::Result<()>;
    }
}

/// Which bus logind is on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BusAddress {
    /// The system bus.
    System,
    /// A D-Bus address (`unix:path=…`), for tests.
    Address(String),
}

/// logind over zbus. Connects at the first call and again after the
/// connection broke.
#[derive(Debug)]
pub struct LogindClient {
    bus: BusAddress,
    conn: Mutex<Option<zbus::Connection>>,
}

fn bus_error(e: zbus::Error) -> LogindError {
    match e {
        zbus::Error::MethodError(name, message, _)
            if matches!(
                name.as_str(),
                "org.freedesktop.login1.NoSuchSession"
                    | "org.freedesktop.login1.NoSessionForPID"
                    | "org.freedesktop.DBus.Error.UnknownObject"
            ) =>
        {
            LogindError::NoSuchSession(message.unwrap_or_default())
        }
        other => LogindError::Bus(other.to_string()),
    }
}

fn fdo_error(e: zbus::fdo::Error) -> LogindError {
    match e {
        zbus::fdo::Error::UnknownObject(m) => LogindError::NoSuchSession(m),
        other => LogindError::Bus(other.to_string()),
    }
}

fn prop<T>(all: &HashMap<String, OwnedValue>, name: &str) -> Result<T, LogindError>
where
    T: TryFrom<OwnedValue>,
{
    let value = all
        .get(name)
        .ok_or_else(|| LogindError::Unexpected(format!("no property {name}")))?;
    let value = value
        .try_clone()
        .map_err(|e| LogindError::Unexpected(format!("{name}: {e}")))?;
    T::try_from(value).map_err(|_| LogindError::Unexpected(format!("{name} has another type")))
}

/// A `(so)` or `(uo)` property: its first member.
fn first_of_pair<T>(all: &HashMap<String, OwnedValue>, name: &str) -> Result<T, LogindError>
where
    T: TryFrom<OwnedValue>,
{
    let value = all
        .get(name)
        .ok_or_else(|| LogindError::Unexpected(format!("no property {name}")))?;
    let zbus::zvariant::Value::Structure(s) = &**value else {
        return Err(LogindError::Unexpected(format!("{name} is not a pair")));
    };
    let first = s
        .fields()
        .first()
        .ok_or_else(|| LogindError::Unexpected(format!("{name} is empty")))?;
    let first =
        OwnedValue::try_from(first).map_err(|e| LogindError::Unexpected(format!("{name}: {e}")))?;
    T::try_from(first).map_err(|_| LogindError::Unexpected(format!("{name} has another type")))
}

fn props_of(all: &HashMap<String, OwnedValue>) -> Result<SessionProps, LogindError> {
    Ok(SessionProps {
        active: prop(all, "Active")?,
        locked_hint: prop(all, "LockedHint")?,
        idle_hint: prop(all, "IdleHint")?,
        idle_since_us: prop(all, "IdleSinceHint")?,
    })
}

async fn get_all(
    conn: &zbus::Connection,
    path: &OwnedObjectPath,
) -> Result<HashMap<String, OwnedValue>, LogindError> {
    let props = zbus::fdo::PropertiesProxy::builder(conn)
        .destination(LOGIN1)
        .map_err(bus_error)?
        .path(path.clone())
        .map_err(bus_error)?
        .cache_properties(zbus::proxy::CacheProperties::No)
        .build()
        .await
        .map_err(bus_error)?;
    let interface = InterfaceName::from_static_str_unchecked(SESSION_INTERFACE);
    props.get_all(interface).await.map_err(fdo_error)
}

async fn session_at(
    conn: &zbus::Connection,
    path: OwnedObjectPath,
) -> Result<SessionInfo, LogindError> {
    let all = get_all(conn, &path).await?;
    Ok(SessionInfo {
        id: prop(&all, "Id")?,
        path: path.as_str().to_owned(),
        user: prop(&all, "Name")?,
        uid: first_of_pair(&all, "User")?,
        seat: first_of_pair(&all, "Seat")?,
        class: prop(&all, "Class").unwrap_or_default(),
        props: props_of(&all)?,
    })
}

impl LogindClient {
    /// A client of logind on `bus` (no connection yet).
    pub fn new(bus: BusAddress) -> LogindClient {
        LogindClient {
            bus,
            conn: Mutex::new(None),
        }
    }

    async fn conn(&self) -> Result<zbus::Connection, LogindError> {
        let mut slot = self.conn.lock().await;
        if let Some(c) = slot.as_ref() {
            return Ok(c.clone());
        }
        let builder = match &self.bus {
            BusAddress::System => zbus::connection::Builder::system(),
            BusAddress::Address(a) => zbus::connection::Builder::address(a.as_str()),
        }
        .map_err(bus_error)?;
        let conn = builder
            .method_timeout(CALL_TIMEOUT)
            .build()
            .await
            .map_err(bus_error)?;
        *slot = Some(conn.clone());
        Ok(conn)
    }

    /// Forgets a connection that failed, so that the next call reconnects.
    async fn failed(&self, e: &LogindError) {
        if matches!(e, LogindError::Bus(_)) {
            *self.conn.lock().await = None;
        }
    }

    async fn manager(&self) -> Result<proxies::ManagerProxy<'static>, LogindError> {
        let conn = self.conn().await?;
        proxies::ManagerProxy::new(&conn).await.map_err(bus_error)
    }

    async fn try_session_by_pid(&self, pid: u32) -> Result<SessionInfo, LogindError> {
        let path = self
            .manager()
            .await?
            .get_session_by_pid(pid)
            .await
            .map_err(bus_error)?;
        session_at(&self.conn().await?, path).await
    }

    async fn try_session(&self, id: &str) -> Result<SessionInfo, LogindError> {
        let path = self
            .manager()
            .await?
            .get_session(id)
            .await
            .map_err(bus_error)?;
        session_at(&self.conn().await?, path).await
    }

    async fn try_list(&self) -> Result<Vec<SessionEntry>, LogindError> {
        let list = self
            .manager()
            .await?
            .list_sessions()
            .await
            .map_err(bus_error)?;
        Ok(list
            .into_iter()
            .map(|(id, uid, user, seat, _)| SessionEntry {
                id,
                uid,
                user,
                seat,
            })
            .collect())
    }

    async fn try_dm_switch(&self, user: Option<&str>) -> Result<(), LogindError> {
        let conn = self.conn().await?;
        let dm = proxies::DisplayManagerProxy::new(&conn)
            .await
            .map_err(bus_error)?;
        // A ward workstation has one seat; the display manager's first.
        let seat = dm
            .seats()
            .await
            .map_err(bus_error)?
            .into_iter()
            .next()
            .ok_or_else(|| LogindError::Unexpected("the display manager has no seat".into()))?;
        let seat = proxies::DmSeatProxy::builder(&conn)
            .destination(DISPLAY_MANAGER)
            .map_err(bus_error)?
            .path(seat)
            .map_err(bus_error)?
            .build()
            .await
            .map_err(bus_error)?;
        match user {
            Some(user) => seat.switch_to_user(user, "").await,
            None => seat.switch_to_greeter().await,
        }
        .map_err(bus_error)
    }

    async fn try_watch(
        &self,
        session: &SessionInfo,
        changes: mpsc::UnboundedSender<SessionChange>,
    ) -> Result<Watch, LogindError> {
        let conn = self.conn().await?;
        let path = OwnedObjectPath::try_from(session.path.clone())
            .map_err(|e| LogindError::Unexpected(format!("session path: {e}")))?;
        let props = zbus::fdo::PropertiesProxy::builder(&conn)
            .destination(LOGIN1)
            .map_err(bus_error)?
            .path(path.clone())
            .map_err(bus_error)?
            .cache_properties(zbus::proxy::CacheProperties::No)
            .build()
            .await
            .map_err(bus_error)?;
        // Subscribed before the first read below: no change is missed.
        let mut changed = props
            .receive_properties_changed()
            .await
            .map_err(bus_error)?;
        let mut removed = proxies::ManagerProxy::new(&conn)
            .await
            .map_err(bus_error)?
            .receive_session_removed()
            .await
            .map_err(bus_error)?;
        let id = session.id.clone();
        let first = props_of(&get_all(&conn, &path).await?)?;
        let _ = changes.send(SessionChange {
            id: id.clone(),
            props: Some(first),
        });
        let task = tokio::spawn(async move {
            loop {
                tokio::select! {
                    signal = changed.next() => {
                        let Some(signal) = signal else { break };
                        let ours = signal
                            .args()
                            .is_ok_and(|a| a.interface_name.as_str() == SESSION_INTERFACE);
                        if !ours {
                            continue;
                        }
                        let now = match get_all(&conn, &path).await.and_then(|a| props_of(&a)) {
                            Ok(p) => Some(p),
                            Err(LogindError::NoSuchSession(_)) => None,
                            Err(e) => {
                                tracing::warn!(session = %id, error = %e, "cannot read the session's hints");
                                continue;
                            }
                        };
                        let gone = now.is_none();
                        if changes.send(SessionChange { id: id.clone(), props: now }).is_err() || gone {
                            break;
                        }
                    }
                    signal = removed.next() => {
                        let Some(signal) = signal else { break };
                        if signal.args().is_ok_and(|a| a.id == id) {
                            let _ = changes.send(SessionChange { id: id.clone(), props: None });
                            break;
                        }
                    }
                }
            }
        });
        Ok(Watch(Some(task.abort_handle())))
    }
}

/// Runs `call`; after a broken connection, once more on a new one.
macro_rules! retried {
    ($self:ident, $call:expr) => {{
        match $call.await {
            Err(e @ LogindError::Bus(_)) => {
                $self.failed(&e).await;
                $call.await
            }
            other => other,
        }
    }};
}

impl Logind for LogindClient {
    fn session_by_pid(&self, pid: u32) -> BoxFuture<'_, Result<SessionInfo, LogindError>> {
        Box::pin(async move { retried!(self, self.try_session_by_pid(pid)) })
    }

    fn session<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<SessionInfo, LogindError>> {
        Box::pin(async move { retried!(self, self.try_session(id)) })
    }

    fn list_sessions(&self) -> BoxFuture<'_, Result<Vec<SessionEntry>, LogindError>> {
        Box::pin(async move { retried!(self, self.try_list()) })
    }

    fn lock_session<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<(), LogindError>> {
        Box::pin(async move {
            retried!(self, async {
                self.manager()
                    .await?
                    .lock_session(id)
                    .await
                    .map_err(bus_error)
            })
        })
    }

    fn activate_session<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<(), LogindError>> {
        Box::pin(async move {
            retried!(self, async {
                self.manager()
                    .await?
                    .activate_session(id)
                    .await
                    .map_err(bus_error)
            })
        })
    }

    fn display_manager_switch<'a>(
        &'a self,
        user: Option<&'a str>,
    ) -> BoxFuture<'a, Result<(), LogindError>> {
        Box::pin(async move { retried!(self, self.try_dm_switch(user)) })
    }

    fn watch<'a>(
        &'a self,
        session: &'a SessionInfo,
        changes: mpsc::UnboundedSender<SessionChange>,
    ) -> BoxFuture<'a, Result<Watch, LogindError>> {
        Box::pin(async move { retried!(self, self.try_watch(session, changes.clone())) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_say_what_failed() {
        let e = bus_error(zbus::Error::Failure("no bus".into()));
        assert!(matches!(e, LogindError::Bus(_)));
        assert_eq!(
            LogindError::NoSuchSession("c9".into()).to_string(),
            "logind has no session c9"
        );
    }

    #[test]
    fn pairs_and_properties_are_read() {
        let mut all = HashMap::new();
        let user = zbus::zvariant::Value::from((
            1000u32,
            zbus::zvariant::ObjectPath::from_static_str_unchecked(
                "/org/freedesktop/login1/user/_31000",
            ),
        ));
        all.insert("User".to_owned(), OwnedValue::try_from(user).unwrap());
        all.insert(
            "IdleHint".to_owned(),
            OwnedValue::try_from(zbus::zvariant::Value::from(true)).unwrap(),
        );
        assert_eq!(first_of_pair::<u32>(&all, "User").unwrap(), 1000);
        assert!(prop::<bool>(&all, "IdleHint").unwrap());
        assert!(prop::<bool>(&all, "LockedHint").is_err());
        assert!(prop::<u32>(&all, "IdleHint").is_err());
    }
}
