//! A private pcscd for a test run, with vsmartcard vpcd readers on ports the
//! test chose, isolated from the machine's own pcscd and readers.
//!
//! pcscd 1.9.9 has no option for its socket or pid file: both live in
//! `/run/pcscd`, so a second pcscd cannot run beside the system's. The
//! harness therefore starts pcscd in its own mount namespace
//! (`unshare -m --propagation private`) in which a fresh directory of the
//! test's is bind-mounted over `/run/pcscd`, and gives it a private
//! `reader.conf.d` (`-c`) that lists only vpcd readers. pcscd creates its
//! socket `pcscd.comm` in that directory, which the test process sees at the
//! directory's own path, outside the namespace. The client library
//! (libpcsclite) honours `PCSCLITE_CSOCK_NAME`, so the test process talks to
//! the private pcscd by setting that variable before its first PC/SC call;
//! it needs no namespace of its own and is not re-executed. The vpcd
//! readers listen on TCP ports in the shared network namespace, where the
//! virtual cards connect to them.
//!
//! Without root, `unshare -r` (a user namespace mapping the caller to root)
//! is added so that the bind mount is allowed.
//!
//! Teardown: dropping [`Pcscd`] sends SIGTERM (then SIGKILL after a grace
//! period) to pcscd and removes the directory; the mount namespace vanishes
//! with its last process. If the test process itself is killed, pcscd is
//! left running until killed by hand; it holds no system resource except its
//! TCP ports and its (then deleted) directory.

use std::fs;
use std::io;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use thiserror::Error;

/// The environment variable libpcsclite reads for its socket path.
pub const SOCKET_ENV: &str = "PCSCLITE_CSOCK_NAME";
/// Where Debian's vsmartcard-vpcd puts its driver.
pub const VPCD_DRIVER: &str = "/usr/lib/pcsc/drivers/serial/libifdvpcd.so";
/// How long to wait for pcscd to come up.
pub const START_TIMEOUT: Duration = Duration::from_secs(15);

/// Errors starting pcscd.
#[derive(Debug, Error)]
pub enum PcscdError {
    /// A program or driver is not installed.
    #[error("{what} not found: install {package}")]
    Missing {
        /// What is missing.
        what: String,
        /// The Debian package that has it.
        package: &'static str,
    },
    /// File or process trouble.
    #[error("pcscd harness I/O: {0}")]
    Io(#[from] io::Error),
    /// No two free adjacent TCP ports.
    #[error("no free port pair for a vpcd reader")]
    NoPorts,
    /// pcscd exited or did not create its socket in time.
    #[error("pcscd did not start ({reason}); its log:\n{log}")]
    NotStarted {
        /// What happened.
        reason: String,
        /// pcscd's output.
        log: String,
    },
}

/// Options for [`Pcscd::start`].
#[derive(Debug, Clone)]
pub struct PcscdOptions {
    /// Run pcscd with `-d -a` (debug and APDU log; the log has PINs in it).
    pub debug: bool,
    /// Run pcscd with `--auto-exit`: it quits after 60 s without clients.
    /// A safety net for a test process that is killed before it can stop
    /// pcscd; the test process should then hold a PC/SC context open for
    /// the whole run.
    pub auto_exit: bool,
}

impl Default for PcscdOptions {
    fn default() -> Self {
        Self {
            debug: false,
            auto_exit: true,
        }
    }
}

/// One vpcd reader of the private pcscd.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VpcdReader {
    /// The PC/SC reader name.
    pub name: String,
    /// The TCP port a virtual card connects to.
    pub port: u16,
}

/// A running private pcscd; dropping it stops pcscd and cleans up.
#[derive(Debug)]
pub struct Pcscd {
    child: Option<Child>,
    dir: PathBuf,
    socket: PathBuf,
    log: PathBuf,
    readers: Vec<VpcdReader>,
}

impl Pcscd {
    /// Starts pcscd in a private mount namespace with one vpcd entry (two
    /// readers), and waits until its socket exists.
    pub fn start(opts: &PcscdOptions) -> Result<Self, PcscdError> {
        let pcscd = find_program("pcscd", &["/usr/sbin", "/sbin"]).ok_or(PcscdError::Missing {
            what: "pcscd".into(),
            package: "pcscd",
        })?;
        let unshare =
            find_program("unshare", &["/usr/bin", "/bin"]).ok_or(PcscdError::Missing {
                what: "unshare".into(),
                package: "util-linux",
            })?;
        if !Path::new(VPCD_DRIVER).exists() {
            return Err(PcscdError::Missing {
                what: VPCD_DRIVER.into(),
                package: "vsmartcard-vpcd",
            });
        }

        let dir = crate::tempdir::unique_dir("pcscd")?;
        let mut me = Self {
            child: None,
            socket: dir.join("run").join("pcscd.comm"),
            log: dir.join("pcscd.log"),
            dir,
            readers: Vec::new(),
        };
        let run = me.dir.join("run");
        let conf = me.dir.join("reader.conf.d");
        fs::create_dir(&run)?;
        fs::create_dir(&conf)?;

        // One vpcd entry only: the driver keeps its connections in a global
        // array indexed by slot (`Lun & 0xFFFF`), so a second entry loaded
        // from the same library would share them and mix up the readers'
        // traffic. One entry gives two readers (slots 0 and 1, ports p and
        // p + 1).
        let port = free_port_pair()?;
        let friendly = "ClinAuth vpcd";
        let conf_text = format!(
            "FRIENDLYNAME \"{friendly}\"\nDEVICENAME /dev/null:0x{port:04X}\nLIBPATH {VPCD_DRIVER}\nCHANNELID 0x{port:04X}\n"
        );
        me.readers = vec![
            VpcdReader {
                name: format!("{friendly} 00 00"),
                port,
            },
            VpcdReader {
                name: format!("{friendly} 00 01"),
                port: port.saturating_add(1),
            },
        ];
        fs::write(conf.join("vpcd"), conf_text)?;

        let log = fs::File::create(&me.log)?;
        let mut cmd = Command::new(unshare);
        if !is_root() {
            cmd.arg("--map-root-user");
        }
        cmd.args(["--mount", "--propagation", "private", "sh", "-c"])
            .arg(
                "mkdir -p /run/pcscd && mount --bind \"$1\" /run/pcscd && \
                 shift && exec \"$@\"",
            )
            .arg("sh")
            .arg(&run)
            .arg(pcscd)
            .arg("--foreground")
            .arg("--config")
            .arg(&conf);
        if opts.debug {
            cmd.args(["--debug", "--apdu"]);
        }
        if opts.auto_exit {
            cmd.arg("--auto-exit");
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()?;
        me.child = Some(child);
        me.wait_ready()?;
        Ok(me)
    }

    fn wait_ready(&mut self) -> Result<(), PcscdError> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Some(status) = child.try_wait()? {
                    return Err(PcscdError::NotStarted {
                        reason: format!("exited with {status}"),
                        log: self.log(),
                    });
                }
            }
            if self.socket.exists() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(PcscdError::NotStarted {
                    reason: "no socket after the timeout".into(),
                    log: self.log(),
                });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The socket to put in [`SOCKET_ENV`].
    pub fn socket_path(&self) -> &Path {
        &self.socket
    }

    /// The two vpcd readers.
    pub fn readers(&self) -> &[VpcdReader] {
        &self.readers
    }

    /// pcscd's output so far.
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// pcscd's process id.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Stops pcscd (SIGTERM, then SIGKILL after 3 s) and removes its
    /// directory. Called by `Drop`.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
            let deadline = Instant::now() + Duration::from_secs(3);
            loop {
                match child.try_wait() {
                    Ok(Some(_)) => break,
                    Ok(None) if Instant::now() < deadline => {
                        std::thread::sleep(Duration::from_millis(20));
                    }
                    _ => {
                        let _ = child.kill();
                        let _ = child.wait();
                        break;
                    }
                }
            }
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}

impl Drop for Pcscd {
    fn drop(&mut self) {
        self.stop();
    }
}

fn find_program(name: &str, extra_dirs: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(extra_dirs.iter().map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

fn is_root() -> bool {
    // The effective uid is the second field of "Uid:" in /proc/self/status.
    fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|rest| rest.split_whitespace().nth(1).map(|u| u == "0"))
        })
        .unwrap_or(false)
}

/// A port `p` such that `p` and `p + 1` are both free now (vpcd binds all
/// interfaces). Another process could take one before pcscd binds it; pcscd's
/// log then says so and the cards cannot connect.
fn free_port_pair() -> Result<u16, PcscdError> {
    for _ in 0..100 {
        let first = TcpListener::bind(("0.0.0.0", 0))?;
        let port = first.local_addr()?.port();
        let Some(next) = port.checked_add(1) else {
            continue;
        };
        if TcpListener::bind(("0.0.0.0", next)).is_ok() {
            return Ok(port);
        }
    }
    Err(PcscdError::NoPorts)
}
