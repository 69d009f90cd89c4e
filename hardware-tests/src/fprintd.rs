//! A private fprintd with one of libfprint's virtual fingerprint sensors,
//! and a small blocking D-Bus client for fprintd (`net.reactivated.Fprint`).
//!
//! [`Fprintd::start`] builds, in a fresh temporary directory:
//!
//! 1. a private "system" bus ([`crate::dbus::PrivateBus`]);
//! 2. python3-dbusmock's `polkitd` template on it, told `AllowUnknown(true)`
//!    so that every fprintd action (claim for another user, enroll, verify)
//!    is authorised;
//! 3. `/usr/libexec/fprintd -t` with `STATE_DIRECTORY=DIR/state` (where
//!    fprintd keeps the users' prints) and the virtual sensor's socket,
//!    `FP_VIRTUAL_DEVICE=DIR/vfp.sock` ([`VirtualSensor::Image`]) or
//!    `FP_VIRTUAL_DEVICE_STORAGE=DIR/vfp.sock` ([`VirtualSensor::Storage`]);
//!
//! and waits until `net.reactivated.Fprint` is owned on the private bus. The
//! machine's own D-Bus, polkit and fprintd are never touched.
//!
//! A finger is "placed" by connecting to the sensor's socket and writing
//! `SCAN <finger-id>` ([`Fprintd::scan`]); equal ids match, different ids do
//! not. libfprint's virtual driver only listens on that socket while the
//! device is open, i.e. while a client has claimed it; the command is queued
//! by the driver until the running action needs a scan.
//!
//! With [`VirtualSensor::Storage`] (libfprint's "virtual device with storage
//! and identification") the prints live on the sensor and the sensor itself
//! decides match or no match: the match-on-sensor kind. fprintd then checks
//! every new enrollment for a duplicate by identifying the finger on the
//! sensor first, so enrolling takes one scan more than the enroll stages
//! ([`Fprintd::scans_before_enroll`]).
//!
//! Teardown: dropping [`Fprintd`] stops fprintd, the polkit mock and the bus
//! (SIGTERM by pid, SIGKILL after a grace period) and removes the directory.

use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use thiserror::Error;
use zbus::blocking::{Connection, MessageIterator};
use zbus::zvariant::OwnedObjectPath;

use crate::dbus::{BusError, PrivateBus};
pub use crate::dbus::{PYTHON_PROGRAM, START_TIMEOUT};

/// fprintd's well-known bus name.
pub const FPRINT_SERVICE: &str = "net.reactivated.Fprint";
/// Where Debian's fprintd package puts the daemon.
pub const FPRINTD_PROGRAM: &str = "/usr/libexec/fprintd";
const POLKIT_SERVICE: &str = "org.freedesktop.PolicyKit1";
const POLKIT_PATH: &str = "/org/freedesktop/PolicyKit1/Authority";
const DEVICE_INTERFACE: &str = "net.reactivated.Fprint.Device";

/// Errors of the harness and of the fprintd client.
#[derive(Debug, Error)]
pub enum FprintdError {
    /// The private bus or the polkit mock: a program or module missing,
    /// or a part that did not start (with the harness' logs).
    #[error(transparent)]
    Bus(BusError),
    /// File or process trouble.
    #[error("fprintd harness I/O: {0}")]
    Io(#[from] io::Error),
    /// A D-Bus call failed (fprintd's errors are `net.reactivated.Fprint.Error.*`).
    #[error("D-Bus: {0}")]
    DBus(#[from] zbus::Error),
    /// fprintd sent no status in time.
    #[error("timed out waiting for {0}")]
    Timeout(&'static str),
    /// Enrollment ended without `enroll-completed`.
    #[error("enrollment failed: {0}")]
    Enroll(String),
    /// The signal listener stopped (the bus went away).
    #[error("D-Bus signal stream ended")]
    StreamEnded,
}

impl From<BusError> for FprintdError {
    fn from(e: BusError) -> Self {
        match e {
            BusError::Io(e) => Self::Io(e),
            BusError::DBus(e) => Self::DBus(e),
            other => Self::Bus(other),
        }
    }
}

/// Which libfprint virtual sensor fprintd drives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VirtualSensor {
    /// `FP_VIRTUAL_DEVICE`: an image-style sensor; fprintd stores the prints
    /// on the host and libfprint matches them (match on host).
    Image,
    /// `FP_VIRTUAL_DEVICE_STORAGE`: prints stored on the sensor, which
    /// decides match / no match itself (match on sensor).
    Storage,
}

impl VirtualSensor {
    fn env_var(self) -> &'static str {
        match self {
            Self::Image => "FP_VIRTUAL_DEVICE",
            Self::Storage => "FP_VIRTUAL_DEVICE_STORAGE",
        }
    }
}

/// Options for [`Fprintd::start`].
#[derive(Debug, Clone)]
pub struct FprintdOptions {
    /// The virtual sensor.
    pub sensor: VirtualSensor,
    /// Run fprintd with `G_MESSAGES_DEBUG=all` (its log then shows every
    /// scan and decision).
    pub debug: bool,
}

impl Default for FprintdOptions {
    fn default() -> Self {
        Self {
            sensor: VirtualSensor::Image,
            debug: false,
        }
    }
}

/// A running private bus + polkit mock + fprintd; dropping it stops them and
/// removes the directory.
#[derive(Debug)]
pub struct Fprintd {
    /// The bus, the polkit mock and fprintd (stopped in reverse order).
    bus: PrivateBus,
    sensor_socket: PathBuf,
    sensor: VirtualSensor,
}

impl Fprintd {
    /// Starts the private bus, the polkit mock and fprintd with a virtual
    /// sensor, and waits until fprintd is on the bus.
    pub fn start(opts: &FprintdOptions) -> Result<Self, FprintdError> {
        if !Path::new(FPRINTD_PROGRAM).is_file() {
            return Err(FprintdError::Bus(BusError::Missing {
                what: FPRINTD_PROGRAM.into(),
                package: "fprintd",
            }));
        }

        // 1. The private bus.
        let mut bus = PrivateBus::start("fprintd")?;
        let sensor_socket = bus.dir().join("vfp.sock");
        let state = bus.dir().join("state");
        fs::create_dir(&state)?;

        // 2. polkit that says yes.
        bus.spawn_mock("polkit", &["--template", "polkitd"], POLKIT_SERVICE)?;
        let conn = bus.connect()?;
        conn.call_method(
            Some(POLKIT_SERVICE),
            POLKIT_PATH,
            Some("org.freedesktop.DBus.Mock"),
            "AllowUnknown",
            &(true,),
        )?;

        // 3. fprintd with the virtual sensor.
        let mut cmd = Command::new(FPRINTD_PROGRAM);
        cmd.arg("-t")
            .env("STATE_DIRECTORY", &state)
            .env_remove("FP_VIRTUAL_DEVICE")
            .env_remove("FP_VIRTUAL_DEVICE_STORAGE")
            .env_remove("FP_VIRTUAL_IMAGE")
            .env_remove("FP_DEVICE_EMULATION")
            .env(opts.sensor.env_var(), &sensor_socket);
        if opts.debug {
            cmd.env("G_MESSAGES_DEBUG", "all");
        }
        bus.spawn("fprintd", cmd)?;

        // 4. fprintd on the bus.
        bus.wait_for_name(&conn, FPRINT_SERVICE, "fprintd")?;
        Ok(Self {
            bus,
            sensor_socket,
            sensor: opts.sensor,
        })
    }

    /// The private bus' address (for `DBUS_SYSTEM_BUS_ADDRESS` of a child
    /// such as `fprintd-verify` or pamtester with pam_fprintd).
    pub fn bus_address(&self) -> &str {
        self.bus.address()
    }

    /// A new connection to the private bus.
    pub fn connect(&self) -> Result<Connection, FprintdError> {
        Ok(self.bus.connect()?)
    }

    /// The virtual sensor.
    pub fn sensor(&self) -> VirtualSensor {
        self.sensor
    }

    /// The virtual sensor's socket.
    pub fn sensor_socket(&self) -> &Path {
        &self.sensor_socket
    }

    /// Scans fprintd makes before the first enroll stage: 1 on the storage
    /// sensor (fprintd identifies the finger on the sensor to refuse a
    /// duplicate), 0 otherwise.
    pub fn scans_before_enroll(&self) -> u32 {
        match self.sensor {
            VirtualSensor::Image => 0,
            VirtualSensor::Storage => 1,
        }
    }

    /// Places the finger `finger_id` on the virtual sensor (`SCAN id`). The
    /// device must be claimed (its driver listens only while it is open);
    /// waits up to 5 s for the socket.
    pub fn scan(&self, finger_id: &str) -> Result<(), FprintdError> {
        self.command(&format!("SCAN {finger_id}"))
    }

    /// Sends one command to the virtual sensor (`SCAN id`, `ERROR n`,
    /// `RETRY n`, ...; see libfprint's `virtual-device.c`).
    pub fn command(&self, command: &str) -> Result<(), FprintdError> {
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut stream = loop {
            match UnixStream::connect(&self.sensor_socket) {
                Ok(s) => break s,
                Err(e) if Instant::now() >= deadline => return Err(e.into()),
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        };
        stream.write_all(command.as_bytes())?;
        stream.shutdown(std::net::Shutdown::Write)?;
        // The driver serves one connection at a time and drops an unread
        // one when the next arrives ("Error on old connection"): wait until
        // it has read the command and closed (EOF), so that commands sent
        // back to back all arrive.
        stream.set_read_timeout(Some(Duration::from_secs(2)))?;
        let mut reply = Vec::new();
        match stream.read_to_end(&mut reply) {
            Ok(_) => Ok(()),
            Err(e) if matches!(e.kind(), io::ErrorKind::ConnectionReset) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// The logs of the bus, the polkit mock and fprintd so far.
    pub fn log(&self) -> String {
        self.bus.log()
    }

    /// fprintd's process id.
    pub fn pid(&self) -> Option<u32> {
        self.bus.pid("fprintd")
    }

    /// Stops fprintd, the polkit mock and the bus (SIGTERM, SIGKILL after
    /// 3 s each, by pid) and removes the directory. Also done on drop.
    pub fn stop(&mut self) {
        self.bus.stop();
    }
}

// ------------------------------------------------------------- D-Bus client

mod proxies {
    use zbus::zvariant::OwnedObjectPath;

    #[zbus::proxy(
        interface = "net.reactivated.Fprint.Manager",
        default_service = "net.reactivated.Fprint",
        default_path = "/net/reactivated/Fprint/Manager",
        gen_async = false,
        blocking_name = "ManagerProxy"
    )]
    pub(crate) trait Manager {
        fn get_devices(&self) -> zbus::Result<Vec<OwnedObjectPath>>;
    }

    #[zbus::proxy(
        interface = "net.reactivated.Fprint.Device",
        default_service = "net.reactivated.Fprint",
        gen_async = false,
        blocking_name = "DeviceProxy"
    )]
    pub(crate) trait Device {
        fn claim(&self, username: &str) -> zbus::Result<()>;
        fn release(&self) -> zbus::Result<()>;
        fn enroll_start(&self, finger_name: &str) -> zbus::Result<()>;
        fn enroll_stop(&self) -> zbus::Result<()>;
        fn verify_start(&self, finger_name: &str) -> zbus::Result<()>;
        fn verify_stop(&self) -> zbus::Result<()>;
        fn list_enrolled_fingers(&self, username: &str) -> zbus::Result<Vec<String>>;
        fn delete_enrolled_fingers2(&self) -> zbus::Result<()>;
        #[zbus(property, name = "name")]
        fn name(&self) -> zbus::Result<String>;
        #[zbus(property, name = "num-enroll-stages")]
        fn num_enroll_stages(&self) -> zbus::Result<i32>;
        #[zbus(property, name = "scan-type")]
        fn scan_type(&self) -> zbus::Result<String>;
    }
}

/// The fingerprint devices fprintd offers on `conn` (object paths).
pub fn devices(conn: &Connection) -> Result<Vec<String>, FprintdError> {
    let manager = proxies::ManagerProxy::new(conn)?;
    Ok(manager
        .get_devices()?
        .into_iter()
        .map(|p| p.as_str().to_owned())
        .collect())
}

/// The devices of the machine's own fprintd (system bus), for the
/// `CLINAUTH_HW=1` inventory.
pub fn system_devices() -> Result<Vec<String>, FprintdError> {
    devices(&Connection::system()?)
}

/// A status signal of a device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeviceEvent {
    /// `EnrollStatus(result, done)`.
    Enroll {
        /// `enroll-stage-passed`, `enroll-completed`, `enroll-retry-scan`, ...
        result: String,
        /// The enrollment is over.
        done: bool,
    },
    /// `VerifyStatus(result, done)`.
    Verify {
        /// `verify-match`, `verify-no-match`, `verify-retry-scan`, ...
        result: String,
        /// The verification is over.
        done: bool,
    },
}

/// The outcome of [`FprintDevice::verify`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// `verify-match`.
    Match,
    /// `verify-no-match`.
    NoMatch,
    /// Any other final status (`verify-disconnected`, `verify-unknown-error`).
    Other(String),
}

/// One fprintd device, with its status signals.
pub struct FprintDevice {
    proxy: proxies::DeviceProxy<'static>,
    events: Receiver<DeviceEvent>,
    path: String,
}

impl std::fmt::Debug for FprintDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FprintDevice")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl FprintDevice {
    /// The device at `path`; subscribes to its status signals now, so that
    /// none is missed.
    pub fn open(conn: &Connection, path: &str) -> Result<Self, FprintdError> {
        let object = OwnedObjectPath::try_from(path.to_owned()).map_err(zbus::Error::from)?;
        let proxy = proxies::DeviceProxy::builder(conn)
            .path(object)?
            .cache_properties(zbus::proxy::CacheProperties::No)
            .build()?;
        let rule = zbus::MatchRule::builder()
            .msg_type(zbus::message::Type::Signal)
            .sender(FPRINT_SERVICE)?
            .interface(DEVICE_INTERFACE)?
            .path(path.to_owned())?
            .build();
        let signals = MessageIterator::for_match_rule(rule, conn, Some(64))?;
        let (tx, events) = mpsc::channel();
        // Ends when the connection closes or the device is dropped (the
        // next signal then finds no receiver).
        std::thread::spawn(move || {
            for msg in signals {
                let Ok(msg) = msg else { break };
                let header = msg.header();
                let member = header.member().map(|m| m.as_str().to_owned());
                let parsed = msg.body().deserialize::<(String, bool)>();
                let event = match (member.as_deref(), parsed) {
                    (Some("EnrollStatus"), Ok((result, done))) => {
                        DeviceEvent::Enroll { result, done }
                    }
                    (Some("VerifyStatus"), Ok((result, done))) => {
                        DeviceEvent::Verify { result, done }
                    }
                    _ => continue,
                };
                if tx.send(event).is_err() {
                    break;
                }
            }
        });
        Ok(Self {
            proxy,
            events,
            path: path.to_owned(),
        })
    }

    /// The first device of fprintd on `conn`.
    pub fn first(conn: &Connection) -> Result<Self, FprintdError> {
        let path = devices(conn)?
            .into_iter()
            .next()
            .ok_or(FprintdError::Enroll("fprintd has no device".into()))?;
        Self::open(conn, &path)
    }

    /// The D-Bus object path.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The device's name.
    pub fn name(&self) -> Result<String, FprintdError> {
        Ok(self.proxy.name()?)
    }

    /// Scans needed to enroll a finger.
    pub fn num_enroll_stages(&self) -> Result<i32, FprintdError> {
        Ok(self.proxy.num_enroll_stages()?)
    }

    /// `press` or `swipe`.
    pub fn scan_type(&self) -> Result<String, FprintdError> {
        Ok(self.proxy.scan_type()?)
    }

    /// Claims the device for `user` (fprintd: "" is the caller).
    pub fn claim(&self, user: &str) -> Result<(), FprintdError> {
        Ok(self.proxy.claim(user)?)
    }

    /// Releases the device.
    pub fn release(&self) -> Result<(), FprintdError> {
        Ok(self.proxy.release()?)
    }

    /// The fingers `user` has enrolled on this device (none: empty).
    pub fn enrolled_fingers(&self, user: &str) -> Result<Vec<String>, FprintdError> {
        match self.proxy.list_enrolled_fingers(user) {
            Ok(f) => Ok(f),
            Err(zbus::Error::MethodError(name, _, _))
                if name.as_str() == "net.reactivated.Fprint.Error.NoEnrolledPrints" =>
            {
                Ok(Vec::new())
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Deletes the claimed user's prints on this device.
    pub fn delete_enrolled_fingers(&self) -> Result<(), FprintdError> {
        Ok(self.proxy.delete_enrolled_fingers2()?)
    }

    /// Enrolls `finger` (e.g. `right-index-finger`) for the claimed user:
    /// `EnrollStart`, then `touch` once per scan until `enroll-completed`,
    /// then `EnrollStop`. Returns the number of scans.
    ///
    /// `extra_first` scans are made before the first enroll stage without
    /// a status of their own (fprintd's duplicate check on a sensor with
    /// storage, see [`Fprintd::scans_before_enroll`]); fprintd then counts
    /// them in `num-enroll-stages` and reports the last stage and the
    /// completion for the same scan. With `extra_first` 0, a first touch
    /// that brings no status within `per_scan` is repeated once (a real
    /// match-on-sensor reader's duplicate check). `per_scan` bounds the
    /// wait for each status.
    pub fn enroll(
        &self,
        finger: &str,
        extra_first: u32,
        touch: &mut dyn FnMut() -> Result<(), FprintdError>,
        per_scan: Duration,
    ) -> Result<u32, FprintdError> {
        self.drain();
        self.proxy.enroll_start(finger)?;
        let outcome = self.enroll_scans(extra_first, touch, per_scan);
        let stop = self.proxy.enroll_stop();
        let scans = outcome?;
        stop?;
        Ok(scans)
    }

    fn enroll_scans(
        &self,
        extra_first: u32,
        touch: &mut dyn FnMut() -> Result<(), FprintdError>,
        per_scan: Duration,
    ) -> Result<u32, FprintdError> {
        let stages = u32::try_from(self.proxy.num_enroll_stages()?).unwrap_or(0);
        let mut scans = 0u32;
        let mut passed = 0u32;
        let mut any_status = false;
        for _ in 0..extra_first {
            touch()?;
            scans += 1;
        }
        let mut need_touch = true;
        loop {
            if need_touch {
                if scans > stages.saturating_mul(4).max(20) {
                    return Err(FprintdError::Enroll(format!(
                        "not complete after {scans} scans"
                    )));
                }
                touch()?;
                scans += 1;
            }
            let event = match self.next_event(per_scan, "an enroll status") {
                Err(FprintdError::Timeout(_)) if !any_status && extra_first == 0 && scans == 1 => {
                    need_touch = true;
                    continue;
                }
                other => other?,
            };
            let DeviceEvent::Enroll { result, done } = event else {
                need_touch = false;
                continue;
            };
            any_status = true;
            match result.as_str() {
                "enroll-completed" => return Ok(scans),
                _ if done => return Err(FprintdError::Enroll(result)),
                "enroll-stage-passed" => {
                    passed += 1;
                    // The last stage's status and the completion may come
                    // from the same scan (see above).
                    need_touch = passed + extra_first < stages;
                }
                // retry / too short / not centred / remove and retry.
                _ => need_touch = true,
            }
        }
    }

    /// Verifies the claimed user's `finger` (or `any`): `VerifyStart`,
    /// `touch` (again after a retry status) until a final status,
    /// `VerifyStop`.
    pub fn verify(
        &self,
        finger: &str,
        touch: &mut dyn FnMut() -> Result<(), FprintdError>,
        timeout: Duration,
    ) -> Result<Verdict, FprintdError> {
        self.drain();
        self.proxy.verify_start(finger)?;
        let outcome = self.verify_scans(touch, timeout);
        let stop = self.proxy.verify_stop();
        let verdict = outcome?;
        stop?;
        Ok(verdict)
    }

    fn verify_scans(
        &self,
        touch: &mut dyn FnMut() -> Result<(), FprintdError>,
        timeout: Duration,
    ) -> Result<Verdict, FprintdError> {
        for _ in 0..10 {
            touch()?;
            loop {
                match self.next_event(timeout, "a verify status")? {
                    DeviceEvent::Verify { result, done: true } => {
                        return Ok(match result.as_str() {
                            "verify-match" => Verdict::Match,
                            "verify-no-match" => Verdict::NoMatch,
                            _ => Verdict::Other(result),
                        })
                    }
                    DeviceEvent::Verify { done: false, .. } => break,
                    DeviceEvent::Enroll { .. } => continue,
                }
            }
        }
        Err(FprintdError::Timeout(
            "a final verify status after 10 scans",
        ))
    }

    fn next_event(
        &self,
        timeout: Duration,
        what: &'static str,
    ) -> Result<DeviceEvent, FprintdError> {
        match self.events.recv_timeout(timeout) {
            Ok(e) => Ok(e),
            Err(RecvTimeoutError::Timeout) => Err(FprintdError::Timeout(what)),
            Err(RecvTimeoutError::Disconnected) => Err(FprintdError::StreamEnded),
        }
    }

    /// Forgets statuses of an earlier operation.
    fn drain(&self) {
        while self.events.try_recv().is_ok() {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sensor_env_vars() {
        assert_eq!(VirtualSensor::Image.env_var(), "FP_VIRTUAL_DEVICE");
        assert_eq!(
            VirtualSensor::Storage.env_var(),
            "FP_VIRTUAL_DEVICE_STORAGE"
        );
    }
}
