//! systemd-logind played by python-dbusmock's `logind` template on a
//! private bus ([`crate::dbus::PrivateBus`]), for the agent's session tests.
//!
//! The template has the Manager's methods (`GetSession`, `ListSessions`,
//! `LockSession`, `ActivateSession`, …) and `AddSession` to create session
//! objects with their properties; every call of a mocked method is logged
//! and announced with the mock's `MethodCalled` signal. The harness adds
//! `GetSessionByPID` (the template lacks it) answering from a table the
//! test fills ([`LogindMock::set_session_of_pid`]), and plays the desktop
//! by setting session properties (`IdleHint`, `IdleSinceHint`,
//! `LockedHint`, `Class`), which dbusmock announces with
//! `PropertiesChanged` as logind does.
//!
//! [`CallWatch`] receives `MethodCalled` in a thread and timestamps each
//! call as it arrives (for "locked within" assertions and the tap-out
//! latency benchmark).

use std::collections::BTreeMap;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use zbus::blocking::{Connection, MessageIterator};
use zbus::zvariant::{OwnedValue, Value};

use crate::dbus::{BusError, PrivateBus};

/// logind's bus name.
pub const LOGIN1: &str = "org.freedesktop.login1";
/// The Manager object.
pub const MANAGER_PATH: &str = "/org/freedesktop/login1";
const MANAGER: &str = "org.freedesktop.login1.Manager";
const SESSION: &str = "org.freedesktop.login1.Session";
const MOCK: &str = "org.freedesktop.DBus.Mock";

/// A logind mock on its own private bus; dropping it stops both.
#[derive(Debug)]
pub struct LogindMock {
    conn: Connection,
    pids: Mutex<BTreeMap<u32, String>>,
    bus: PrivateBus,
}

/// One call of a mocked method.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    /// When the `MethodCalled` signal arrived.
    pub at: Instant,
    /// The method (`LockSession`).
    pub method: String,
    /// Its arguments, strings as they are, others in GVariant text form.
    pub args: Vec<String>,
}

fn arg_text(v: &OwnedValue) -> String {
    match &**v {
        Value::Str(s) => s.as_str().to_owned(),
        Value::ObjectPath(p) => p.as_str().to_owned(),
        other => other.to_string(),
    }
}

impl LogindMock {
    /// Starts a private bus and `python3 -m dbusmock --system --template
    /// logind` on it.
    pub fn start() -> Result<Self, BusError> {
        let mut bus = PrivateBus::start("logind")?;
        bus.spawn_mock("logind", &["--template", "logind"], LOGIN1)?;
        let conn = bus.connect()?;
        let me = Self {
            conn,
            pids: Mutex::new(BTreeMap::new()),
            bus,
        };
        me.publish_pids()?;
        Ok(me)
    }

    /// The bus address (the agent's `[session] bus`).
    pub fn bus_address(&self) -> &str {
        self.bus.address()
    }

    /// The bus, its logs.
    pub fn bus(&self) -> &PrivateBus {
        &self.bus
    }

    fn mock_call<B>(&self, path: &str, method: &str, body: &B) -> Result<zbus::Message, BusError>
    where
        B: zbus::export::serde::Serialize + zbus::zvariant::DynamicType,
    {
        Ok(self
            .conn
            .call_method(Some(LOGIN1), path, Some(MOCK), method, body)?)
    }

    /// `AddSession(id, seat, uid, user, active)`: a session (and its seat
    /// and user if new). Returns its object path.
    pub fn add_session(
        &self,
        id: &str,
        seat: &str,
        uid: u32,
        user: &str,
        active: bool,
    ) -> Result<String, BusError> {
        let reply = self.mock_call(MANAGER_PATH, "AddSession", &(id, seat, uid, user, active))?;
        Ok(reply.body().deserialize::<String>()?)
    }

    fn session_path(id: &str) -> String {
        format!("{MANAGER_PATH}/session/{id}")
    }

    /// Sets a property of session `id` (as the desktop or the screen
    /// locker would make logind do); dbusmock emits `PropertiesChanged`.
    pub fn set_session_property(
        &self,
        id: &str,
        name: &str,
        value: Value<'_>,
    ) -> Result<(), BusError> {
        self.conn.call_method(
            Some(LOGIN1),
            Self::session_path(id).as_str(),
            Some("org.freedesktop.DBus.Properties"),
            "Set",
            &(SESSION, name, value),
        )?;
        Ok(())
    }

    /// The desktop says the session is idle since `since_us` (µs since the
    /// epoch), or busy again.
    pub fn set_idle(&self, id: &str, idle: bool, since_us: u64) -> Result<(), BusError> {
        // The time first: a watcher that reads the hints at the IdleHint
        // change sees both.
        self.set_session_property(id, "IdleSinceHint", Value::U64(since_us))?;
        self.set_session_property(id, "IdleHint", Value::Bool(idle))
    }

    /// The screen locker says the session is locked (or not).
    pub fn set_locked_hint(&self, id: &str, locked: bool) -> Result<(), BusError> {
        self.set_session_property(id, "LockedHint", Value::Bool(locked))
    }

    /// Makes session `id` a `greeter` (or `user`) session.
    pub fn set_class(&self, id: &str, class: &str) -> Result<(), BusError> {
        self.set_session_property(id, "Class", Value::from(class))
    }

    /// `GetSessionByPID(pid)` answers session `id` from now on.
    pub fn set_session_of_pid(&self, pid: u32, id: &str) -> Result<(), BusError> {
        if let Ok(mut pids) = self.pids.lock() {
            pids.insert(pid, id.to_owned());
        }
        self.publish_pids()
    }

    /// (Re)defines `GetSessionByPID` with the current table (dbusmock looks
    /// a method's code up at each call, so a new definition replaces the
    /// old one).
    fn publish_pids(&self) -> Result<(), BusError> {
        let table: Vec<String> = self
            .pids
            .lock()
            .map(|p| p.iter().map(|(pid, id)| format!("{pid}: {id:?}")).collect())
            .unwrap_or_default();
        let code = format!(
            "table = {{{}}}\n\
             if int(args[0]) not in table:\n    \
             raise dbus.exceptions.DBusException('PID %d does not belong to any known session' % args[0], name='org.freedesktop.login1.NoSessionForPID')\n\
             ret = dbus.ObjectPath('{MANAGER_PATH}/session/' + table[int(args[0])])",
            table.join(", ")
        );
        self.mock_call(
            MANAGER_PATH,
            "AddMethod",
            &(MANAGER, "GetSessionByPID", "u", "o", code.as_str()),
        )?;
        Ok(())
    }

    /// The calls of `method` logged so far (arguments as text).
    pub fn calls(&self, method: &str) -> Result<Vec<Vec<String>>, BusError> {
        let reply = self.mock_call(MANAGER_PATH, "GetMethodCalls", &(method,))?;
        let calls: Vec<(u64, Vec<OwnedValue>)> = reply.body().deserialize()?;
        Ok(calls
            .into_iter()
            .map(|(_, args)| args.iter().map(arg_text).collect())
            .collect())
    }

    /// Forgets the logged calls.
    pub fn clear_calls(&self) -> Result<(), BusError> {
        self.mock_call(MANAGER_PATH, "ClearCalls", &())?;
        Ok(())
    }

    /// Starts receiving the mock's `MethodCalled` signals from now on.
    pub fn watch_calls(&self) -> Result<CallWatch, BusError> {
        let conn = self.bus.connect()?;
        let rule = zbus::MatchRule::builder()
            .msg_type(zbus::message::Type::Signal)
            .interface(MOCK)?
            .member("MethodCalled")?
            .path(MANAGER_PATH)?
            .build();
        let signals = MessageIterator::for_match_rule(rule, &conn, Some(256))?;
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for msg in signals {
                let Ok(msg) = msg else { break };
                let at = Instant::now();
                let Ok((method, args)) = msg.body().deserialize::<(String, Vec<OwnedValue>)>()
                else {
                    continue;
                };
                let call = Call {
                    at,
                    method,
                    args: args.iter().map(arg_text).collect(),
                };
                if tx.send(call).is_err() {
                    break;
                }
            }
        });
        Ok(CallWatch {
            rx,
            _conn: conn,
            seen: Vec::new(),
        })
    }
}

/// The mock's method calls as they happen.
#[derive(Debug)]
pub struct CallWatch {
    rx: Receiver<Call>,
    _conn: Connection,
    seen: Vec<Call>,
}

impl CallWatch {
    /// Waits up to `timeout` for a call of `method` with first argument
    /// `arg0` that was not returned before, and returns it.
    pub fn wait_for(&mut self, method: &str, arg0: &str, timeout: Duration) -> Option<Call> {
        let matches =
            |c: &Call| c.method == method && c.args.first().map(String::as_str) == Some(arg0);
        if let Some(at) = self.seen.iter().position(matches) {
            return Some(self.seen.remove(at));
        }
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(c) if matches(&c) => return Some(c),
                Ok(c) => self.seen.push(c),
                Err(RecvTimeoutError::Timeout) | Err(RecvTimeoutError::Disconnected) => {
                    return None
                }
            }
        }
    }

    /// Every call received within `wait` from now (and not returned
    /// before).
    pub fn drain(&mut self, wait: Duration) -> Vec<Call> {
        let deadline = Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(c) => self.seen.push(c),
                Err(_) => return std::mem::take(&mut self.seen),
            }
        }
    }
}
