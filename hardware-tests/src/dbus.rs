//! A private "system" D-Bus bus for a test run, and python-dbusmock
//! services on it (used by [`crate::fprintd`] and [`crate::logind`]).
//!
//! [`PrivateBus::start`] runs `dbus-daemon --config-file=DIR/bus.conf
//! --nofork --print-address` in a fresh temporary directory, with a
//! permissive policy, listening on `DIR/bus.sock` (no service activation, no
//! system policy files), and waits for its address. Services are started
//! with `DBUS_SYSTEM_BUS_ADDRESS` pointing at it ([`PrivateBus::spawn`],
//! [`PrivateBus::spawn_mock`] for `python3 -m dbusmock --system …`), each
//! logging to `DIR/<name>.log`. The machine's own D-Bus is never touched.
//!
//! Teardown: dropping [`PrivateBus`] stops the services and the bus in
//! reverse order (SIGTERM by pid, SIGKILL after 3 s) and removes the
//! directory.

use std::fs;
use std::io::{self, BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use thiserror::Error;
use zbus::blocking::Connection;

/// Debian's Python, which has python3-dbusmock (a `python3` first on PATH
/// may be another build without Debian's modules).
pub const PYTHON_PROGRAM: &str = "/usr/bin/python3";
/// Where Debian's python3-dbusmock lives.
pub const DBUSMOCK_MODULE: &str = "/usr/lib/python3/dist-packages/dbusmock";
/// How long to wait for the bus or a service to come up.
pub const START_TIMEOUT: Duration = Duration::from_secs(15);

/// Errors of the harness.
#[derive(Debug, Error)]
pub enum BusError {
    /// A program or module is not installed.
    #[error("{what} not found: install {package}")]
    Missing {
        /// What is missing.
        what: String,
        /// The Debian package that has it.
        package: &'static str,
    },
    /// File or process trouble.
    #[error("D-Bus harness I/O: {0}")]
    Io(#[from] io::Error),
    /// A D-Bus call failed.
    #[error("D-Bus: {0}")]
    DBus(#[from] zbus::Error),
    /// A part of the harness did not start.
    #[error("{what} did not start ({reason}); logs:\n{log}")]
    NotStarted {
        /// Which part.
        what: String,
        /// What happened.
        reason: String,
        /// The harness' logs.
        log: String,
    },
}

/// A running private bus and the services started on it.
#[derive(Debug)]
pub struct PrivateBus {
    /// (name, process), in start order; stopped in reverse order.
    children: Vec<(String, Child)>,
    /// dbus-daemon's stdout, kept open while it runs.
    _bus_stdout: Option<ChildStdout>,
    dir: PathBuf,
    address: String,
}

impl PrivateBus {
    /// Starts dbus-daemon in a new temporary directory `clinauth-<tag>-…`.
    pub fn start(tag: &str) -> Result<Self, BusError> {
        let dbus_daemon =
            find_program("dbus-daemon", &["/usr/bin", "/bin"]).ok_or(BusError::Missing {
                what: "dbus-daemon".into(),
                package: "dbus",
            })?;
        let dir = crate::tempdir::unique_dir(tag)?;
        let mut me = Self {
            children: Vec::new(),
            _bus_stdout: None,
            dir,
            address: String::new(),
        };
        let conf = me.dir.join("bus.conf");
        fs::write(&conf, bus_config(&me.dir.join("bus.sock")))?;
        let mut bus = Command::new(dbus_daemon)
            .arg(format!("--config-file={}", conf.display()))
            .args(["--nofork", "--print-address"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(me.log_file("dbus-daemon")?)
            .spawn()?;
        let stdout = bus.stdout.take();
        me.children.push(("dbus-daemon".into(), bus));
        let Some(stdout) = stdout else {
            return Err(me.not_started("dbus-daemon", "no stdout".into()));
        };
        // dbus-daemon prints its address once it listens, or exits (EOF).
        let mut reader = BufReader::new(stdout);
        let mut line = String::new();
        reader.read_line(&mut line)?;
        me.address = line.trim().to_owned();
        me._bus_stdout = Some(reader.into_inner());
        if me.address.is_empty() {
            return Err(me.not_started("dbus-daemon", "printed no address".into()));
        }
        Ok(me)
    }

    /// The bus' address (for `DBUS_SYSTEM_BUS_ADDRESS`, or the agent's
    /// `[session] bus`).
    pub fn address(&self) -> &str {
        &self.address
    }

    /// The temporary directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// A new connection to the bus.
    pub fn connect(&self) -> Result<Connection, BusError> {
        Ok(zbus::blocking::connection::Builder::address(self.address.as_str())?.build()?)
    }

    /// Starts `cmd` as service `name` on the bus (its output goes to
    /// `name.log` and `name.err.log`).
    pub fn spawn(&mut self, name: &str, mut cmd: Command) -> Result<(), BusError> {
        let child = cmd
            .env("DBUS_SYSTEM_BUS_ADDRESS", &self.address)
            .stdin(Stdio::null())
            .stdout(self.log_file(name)?)
            .stderr(self.log_file(&format!("{name}.err"))?)
            .spawn()?;
        self.children.push((name.to_owned(), child));
        Ok(())
    }

    /// Starts `python3 -m dbusmock --system ARGS` (e.g. `--template logind`)
    /// as `name` and waits until it owns `bus_name`.
    pub fn spawn_mock(
        &mut self,
        name: &str,
        args: &[&str],
        bus_name: &str,
    ) -> Result<(), BusError> {
        if !Path::new(PYTHON_PROGRAM).is_file() || !Path::new(DBUSMOCK_MODULE).is_dir() {
            return Err(BusError::Missing {
                what: "python3 module dbusmock".into(),
                package: "python3-dbusmock",
            });
        }
        let mut cmd = Command::new(PYTHON_PROGRAM);
        cmd.args(["-m", "dbusmock", "--system"]).args(args);
        self.spawn(name, cmd)?;
        let conn = self.connect()?;
        self.wait_for_name(&conn, bus_name, name)
    }

    /// Waits until `bus_name` has an owner (or a service exited, or
    /// [`START_TIMEOUT`]).
    pub fn wait_for_name(
        &mut self,
        conn: &Connection,
        bus_name: &str,
        what: &str,
    ) -> Result<(), BusError> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            for (n, child) in &mut self.children {
                if let Some(status) = child.try_wait()? {
                    let reason = format!("{n} exited with {status}");
                    return Err(self.not_started(what, reason));
                }
            }
            let owned: bool = conn
                .call_method(
                    Some("org.freedesktop.DBus"),
                    "/org/freedesktop/DBus",
                    Some("org.freedesktop.DBus"),
                    "NameHasOwner",
                    &(bus_name,),
                )?
                .body()
                .deserialize()?;
            if owned {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(self.not_started(what, format!("{bus_name} not on the bus in time")));
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// The process id of the service `name` (or `dbus-daemon`).
    pub fn pid(&self, name: &str) -> Option<u32> {
        self.children
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, c)| c.id())
    }

    /// The logs of the bus and its services so far.
    pub fn log(&self) -> String {
        let mut out = String::new();
        let mut names: Vec<String> = vec!["dbus-daemon".into()];
        for (n, _) in &self.children {
            if n != "dbus-daemon" {
                names.push(n.clone());
                names.push(format!("{n}.err"));
            }
        }
        for name in names {
            let text = fs::read_to_string(self.dir.join(format!("{name}.log"))).unwrap_or_default();
            if !text.trim().is_empty() {
                out.push_str(&format!("--- {name}\n{text}"));
            }
        }
        out
    }

    /// Stops the services and the bus (SIGTERM, SIGKILL after 3 s each, by
    /// pid) and removes the directory. Called by `Drop`.
    pub fn stop(&mut self) {
        while let Some((_, mut child)) = self.children.pop() {
            stop_child(&mut child);
        }
        let _ = fs::remove_dir_all(&self.dir);
    }

    fn log_file(&self, name: &str) -> io::Result<fs::File> {
        fs::File::create(self.dir.join(format!("{name}.log")))
    }

    fn not_started(&self, what: &str, reason: String) -> BusError {
        BusError::NotStarted {
            what: what.to_owned(),
            reason,
            log: self.log(),
        }
    }
}

impl Drop for PrivateBus {
    fn drop(&mut self) {
        self.stop();
    }
}

/// SIGTERM to `child` by its pid, SIGKILL after 3 s.
pub fn stop_child(child: &mut Child) {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        match child.try_wait() {
            Ok(Some(_)) => return,
            Ok(None) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(10));
            }
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return;
            }
        }
    }
}

/// A bus that lets everyone own any name and send anything: the test bus
/// has only the harness' own processes on it.
pub fn bus_config(socket: &Path) -> String {
    format!(
        r#"<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path={}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <allow own="*"/>
    <allow send_destination="*" eavesdrop="true"/>
    <allow send_type="method_call"/>
    <allow receive_sender="*"/>
    <allow eavesdrop="true"/>
  </policy>
</busconfig>
"#,
        xml_escape(&socket.display().to_string())
    )
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// `name` on PATH or in one of `extra_dirs`.
pub fn find_program(name: &str, extra_dirs: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(extra_dirs.iter().map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bus_config_escapes_the_socket_path() {
        let conf = bus_config(Path::new("/tmp/a&b/bus.sock"));
        assert!(conf.contains("<listen>unix:path=/tmp/a&amp;b/bus.sock</listen>"));
        assert!(conf.contains("<allow own=\"*\"/>"));
    }
}
