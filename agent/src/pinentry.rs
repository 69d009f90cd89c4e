//! The agent's pinentry client: a PIN (or a yes/no confirmation) asked by
//! the agent itself, through GnuPG's pinentry programs, for requests from
//! clinical applications (step-up, record confirmation, document signing).
//! The application never sees the PIN; it only learns the outcome.
//!
//! A pinentry program (`pinentry-gnome3`, `pinentry-qt`, …) speaks the
//! Assuan protocol on its stdin and stdout: it greets with `OK`, takes
//! `SETTITLE`, `SETDESC`, `SETPROMPT`, `SETERROR`, `SETOK`, `SETCANCEL`, and
//! answers `GETPIN` with the PIN in `D` lines then `OK`, `CONFIRM` with `OK`
//! or `ERR`, and a cancel with `ERR 83886179` (`GPG_ERR_CANCELED`).
//!
//! # The program's process
//!
//! When the agent runs as root, the program runs as the desktop user
//! ([`RunAs`]; `setgid`, then the supplementary groups dropped and `setuid`,
//! as `std` does for [`CommandExt::uid`](std::os::unix::process::CommandExt::uid)),
//! in `/`, with an empty environment but for `PATH=/usr/bin:/bin`,
//! `DISPLAY` and `WAYLAND_DISPLAY` from the settings, and the user's
//! `XDG_RUNTIME_DIR` and `DBUS_SESSION_BUS_ADDRESS` (`pinentry-gnome3`
//! reaches its prompter over the session bus). Its stderr goes nowhere. It
//! is killed when the exchange ends badly or takes longer than
//! `[pinentry] timeout`.
//!
//! # What pinentry sends
//!
//! Every line read is bounded ([`MAX_LINE`]); the PIN is percent-decoded
//! into a buffer that is wiped, bounded by [`MAX_SECRET_LEN`], and must be
//! UTF-8 without NUL. No error, log line or `Debug` output carries the PIN
//! or quotes a line pinentry sent.

use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use clinauth_policy::Seconds;
use clinauth_proto::secret::{SecretString, MAX_SECRET_LEN};
use serde::Deserialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};
use zeroize::{Zeroize, Zeroizing};

/// The longest line accepted from pinentry, newline excluded (Assuan lines
/// are at most 1000 bytes).
pub const MAX_LINE: usize = 4096;

/// The longest command line sent to pinentry, newline included (Assuan's
/// limit).
pub const MAX_COMMAND_LINE: usize = 1000;

/// The most arguments `[pinentry] args` may hold.
pub const MAX_ARGS: usize = 16;

/// The longest argument in `[pinentry] args`, in bytes.
pub const MAX_ARG_LEN: usize = 256;

/// `GPG_ERR_CANCELED`, in the low 16 bits of an `ERR` code.
const GPG_ERR_CANCELED: u32 = 99;
/// `GPG_ERR_NOT_CONFIRMED`: the "no" button of a `CONFIRM`.
const GPG_ERR_NOT_CONFIRMED: u32 = 114;

/// How long the program may take to leave after `BYE` before it is killed.
const EXIT_GRACE: Duration = Duration::from_millis(250);

/// `[pinentry]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PinentrySettings {
    /// The pinentry program, an absolute path (e.g.
    /// `/usr/bin/pinentry-gnome3`). Unset: requests from applications that
    /// need a PIN typed at this workstation are refused.
    #[serde(default)]
    pub program: Option<PathBuf>,
    /// Extra arguments for the program (at most [`MAX_ARGS`], each at most
    /// [`MAX_ARG_LEN`] bytes). Default: none.
    #[serde(default)]
    pub args: Vec<String>,
    /// How long the whole exchange may take, the person typing included
    /// (5s to 300s, default 60s); then the program is killed.
    #[serde(default = "default_timeout")]
    pub timeout: Seconds,
    /// The X11 display the program shows its window on (`DISPLAY`, e.g.
    /// `:0`). Unset: no `DISPLAY`.
    #[serde(default)]
    pub display: Option<String>,
    /// The Wayland display (`WAYLAND_DISPLAY`, e.g. `wayland-0`, in the
    /// user's runtime directory). Unset: no `WAYLAND_DISPLAY`.
    #[serde(default)]
    pub wayland_display: Option<String>,
}

fn default_timeout() -> Seconds {
    Seconds(60)
}

impl Default for PinentrySettings {
    fn default() -> Self {
        PinentrySettings {
            program: None,
            args: Vec::new(),
            timeout: default_timeout(),
            display: None,
            wayland_display: None,
        }
    }
}

/// A display name: printable ASCII without spaces, 1 to 256 bytes.
fn valid_display(value: &str) -> bool {
    !value.is_empty() && value.len() <= 256 && value.bytes().all(|b| b.is_ascii_graphic())
}

impl PinentrySettings {
    /// Checks the values (the config loader calls this).
    pub fn check(&self) -> Result<(), String> {
        if !(5..=300).contains(&self.timeout.0) {
            return Err("pinentry.timeout must be between 5s and 300s".into());
        }
        match &self.program {
            Some(program) => {
                let bytes = program.as_os_str().as_bytes();
                if !program.is_absolute() {
                    return Err(format!(
                        "pinentry.program {:?} must be an absolute path",
                        program.display()
                    ));
                }
                if bytes.contains(&0) || bytes.len() > 4096 {
                    return Err("pinentry.program: at most 4096 bytes, no NUL".into());
                }
            }
            None if !self.args.is_empty() => {
                return Err("pinentry.args is only used with pinentry.program".into());
            }
            None => {}
        }
        if self.args.len() > MAX_ARGS {
            return Err(format!("pinentry.args: at most {MAX_ARGS} arguments"));
        }
        if self
            .args
            .iter()
            .any(|a| a.len() > MAX_ARG_LEN || a.contains('\0'))
        {
            return Err(format!(
                "pinentry.args: each argument at most {MAX_ARG_LEN} bytes, no NUL"
            ));
        }
        for (what, value) in [
            ("pinentry.display", &self.display),
            ("pinentry.wayland_display", &self.wayland_display),
        ] {
            if let Some(value) = value {
                if !valid_display(value) {
                    return Err(format!(
                        "{what} {value:?}: 1 to 256 printable characters, no spaces"
                    ));
                }
            }
        }
        Ok(())
    }
}

/// Whose desktop the program runs on: the user the request is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunAs {
    /// User ID.
    pub uid: u32,
    /// The user's primary group ID (the caller's, from its socket
    /// credentials).
    pub gid: u32,
}

/// What pinentry shows. The caller passes text already in the user's
/// language; the text is percent-escaped on its way (`%`, CR, LF and other
/// control characters). Empty or unset texts leave pinentry's defaults.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PinRequest<'a> {
    /// The window title (`SETTITLE`).
    pub title: &'a str,
    /// What the PIN is for, e.g. "Sign the discharge letter for bed 12"
    /// (`SETDESC`).
    pub description: &'a str,
    /// The label in front of the entry field, e.g. "PIN:" (`SETPROMPT`;
    /// not sent for a confirmation).
    pub prompt: &'a str,
    /// Why the PIN is asked again, e.g. "Wrong PIN, 2 tries left"
    /// (`SETERROR`).
    pub error: Option<&'a str>,
    /// The OK button's label (`SETOK`).
    pub ok: Option<&'a str>,
    /// The cancel button's label (`SETCANCEL`).
    pub cancel: Option<&'a str>,
}

/// Why no PIN (or no answer) came back. Never carries the PIN, nor a line
/// pinentry sent.
#[derive(Debug, thiserror::Error)]
pub enum PinentryError {
    /// `[pinentry] program` is unset.
    #[error(
        "no pinentry program is configured ([pinentry] program): \
         a PIN cannot be asked at this workstation"
    )]
    NotConfigured,
    /// The settings are invalid (the config loader refuses them already).
    #[error("invalid [pinentry] settings: {0}")]
    InvalidSettings(String),
    /// A text of the request cannot be sent (NUL, too long).
    #[error("invalid pinentry request: {0}")]
    InvalidRequest(String),
    /// The program could not be started.
    #[error("cannot start pinentry {program:?}: {source}")]
    Spawn {
        /// The program.
        program: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Reading from or writing to the program failed.
    #[error("pinentry I/O: {0}")]
    Io(std::io::Error),
    /// The exchange took longer than `[pinentry] timeout`.
    #[error("pinentry did not answer in time")]
    Timeout,
    /// The program broke the protocol (the message never quotes it).
    #[error("pinentry protocol error: {0}")]
    Protocol(String),
    /// The program sent a line longer than [`MAX_LINE`].
    #[error("pinentry sent a line longer than {MAX_LINE} bytes")]
    LineTooLong,
    /// The person cancelled.
    #[error("cancelled at the pinentry")]
    Cancelled,
    /// The PIN is longer than [`MAX_SECRET_LEN`] bytes.
    #[error("the PIN is longer than {MAX_SECRET_LEN} bytes")]
    TooLong,
    /// The PIN is not UTF-8 or contains NUL.
    #[error("the PIN is not UTF-8 text without NUL")]
    BadPin,
    /// Pinentry answered with an error other than a cancel.
    #[error("pinentry failed with error code {code}")]
    Failed {
        /// The `ERR` code (gpg-error: source in the top bits, code in the
        /// low 16).
        code: u32,
    },
}

/// Asks for a PIN through the configured pinentry.
pub async fn get_pin(
    settings: &PinentrySettings,
    run_as: RunAs,
    request: &PinRequest<'_>,
) -> Result<SecretString, PinentryError> {
    match run(settings, run_as, request, Op::GetPin, timeout_of(settings)).await? {
        Outcome::Pin(pin) => Ok(pin),
        Outcome::Confirmed(_) => Err(PinentryError::Protocol("no PIN".into())),
    }
}

/// Asks for a confirmation (`CONFIRM`): `Ok(true)` for OK, `Ok(false)` for
/// "no" or cancel.
pub async fn confirm(
    settings: &PinentrySettings,
    run_as: RunAs,
    request: &PinRequest<'_>,
) -> Result<bool, PinentryError> {
    match run(settings, run_as, request, Op::Confirm, timeout_of(settings)).await {
        Ok(Outcome::Confirmed(yes)) => Ok(yes),
        Ok(Outcome::Pin(_)) => Err(PinentryError::Protocol("a PIN for a confirmation".into())),
        Err(PinentryError::Cancelled) => Ok(false),
        Err(e) => Err(e),
    }
}

fn timeout_of(settings: &PinentrySettings) -> Duration {
    Duration::from_secs(u64::from(settings.timeout.0))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    GetPin,
    Confirm,
}

#[derive(Debug)]
enum Outcome {
    Pin(SecretString),
    Confirmed(bool),
}

/// The agent's effective user ID.
#[allow(unsafe_code)] // geteuid, with a SAFETY comment
fn effective_uid() -> u32 {
    // SAFETY: geteuid takes no arguments, touches no memory of ours and
    // cannot fail.
    unsafe { libc::geteuid() }
}

/// Percent-escapes `text` for an Assuan command line: `%`, CR, LF and the
/// other ASCII control characters; NUL is refused.
fn escape(what: &str, text: &str, out: &mut String) -> Result<(), PinentryError> {
    for c in text.chars() {
        if c == '\0' {
            return Err(PinentryError::InvalidRequest(format!(
                "{what} contains NUL"
            )));
        }
        if c == '%' || c.is_ascii_control() {
            out.push_str(&format!("%{:02X}", u32::from(c)));
        } else {
            out.push(c);
        }
    }
    Ok(())
}

/// The command lines for `request`, each ending in LF, checked before the
/// program starts.
fn commands(request: &PinRequest<'_>, op: Op) -> Result<Vec<String>, PinentryError> {
    let mut texts = vec![
        ("SETTITLE", "title", Some(request.title)),
        ("SETDESC", "description", Some(request.description)),
    ];
    if op == Op::GetPin {
        texts.push(("SETPROMPT", "prompt", Some(request.prompt)));
    }
    texts.extend([
        ("SETERROR", "error", request.error),
        ("SETOK", "ok", request.ok),
        ("SETCANCEL", "cancel", request.cancel),
    ]);
    let mut lines = Vec::new();
    for (command, what, text) in texts {
        let Some(text) = text.filter(|t| !t.is_empty()) else {
            continue;
        };
        let mut line = format!("{command} ");
        escape(what, text, &mut line)?;
        line.push('\n');
        if line.len() > MAX_COMMAND_LINE {
            return Err(PinentryError::InvalidRequest(format!(
                "{what} is too long for pinentry ({MAX_COMMAND_LINE} bytes a line, escaped)"
            )));
        }
        lines.push(line);
    }
    lines.push(match op {
        Op::GetPin => "GETPIN\n".into(),
        Op::Confirm => "CONFIRM\n".into(),
    });
    Ok(lines)
}

/// The program's command: identity, environment, pipes.
fn command(settings: &PinentrySettings, program: &Path, run_as: RunAs) -> Command {
    let euid = effective_uid();
    let uid = if euid == 0 && run_as.uid != 0 {
        run_as.uid
    } else {
        if euid != 0 && run_as.uid != euid {
            tracing::warn!(
                uid = run_as.uid,
                agent_uid = euid,
                "the agent is not root: pinentry runs as the agent's user"
            );
        }
        euid
    };
    let mut cmd = Command::new(program);
    cmd.args(&settings.args)
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("XDG_RUNTIME_DIR", format!("/run/user/{uid}"))
        .env(
            "DBUS_SESSION_BUS_ADDRESS",
            format!("unix:path=/run/user/{uid}/bus"),
        )
        .current_dir("/")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true);
    if let Some(display) = &settings.display {
        cmd.env("DISPLAY", display);
    }
    if let Some(display) = &settings.wayland_display {
        cmd.env("WAYLAND_DISPLAY", display);
    }
    if uid != euid {
        // std sets the group, drops the supplementary groups (as root) and
        // then sets the user, in the child before exec.
        cmd.uid(run_as.uid).gid(run_as.gid);
    }
    cmd
}

/// Runs one exchange with a fresh pinentry, within `limit`.
async fn run(
    settings: &PinentrySettings,
    run_as: RunAs,
    request: &PinRequest<'_>,
    op: Op,
    limit: Duration,
) -> Result<Outcome, PinentryError> {
    settings.check().map_err(PinentryError::InvalidSettings)?;
    let program = settings
        .program
        .as_ref()
        .ok_or(PinentryError::NotConfigured)?;
    let lines = commands(request, op)?;
    let mut child = command(settings, program, run_as)
        .spawn()
        .map_err(|source| PinentryError::Spawn {
            program: program.clone(),
            source,
        })?;
    let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
        return Err(PinentryError::Protocol("no pipes to pinentry".into()));
    };
    let mut conn = Conn {
        stdin,
        lines: Lines::new(stdout),
    };
    let outcome = match tokio::time::timeout(limit, conn.exchange(&lines, op)).await {
        Ok(outcome) => outcome,
        Err(_) => Err(PinentryError::Timeout),
    };
    let orderly = matches!(
        outcome,
        Ok(_) | Err(PinentryError::Cancelled | PinentryError::Failed { .. })
    );
    match &outcome {
        Ok(Outcome::Pin(_)) => tracing::debug!("pinentry: PIN entered"),
        Ok(Outcome::Confirmed(yes)) => tracing::debug!(confirmed = yes, "pinentry: answered"),
        Err(e) => tracing::debug!(error = %e, "pinentry: no answer"),
    }
    finish(child, conn, orderly).await;
    outcome
}

/// Says `BYE` when the conversation is in order, then gives the program a
/// moment to leave before killing it.
async fn finish(mut child: Child, mut conn: Conn, orderly: bool) {
    if orderly {
        let bye = async {
            conn.send("BYE\n").await?;
            conn.lines.next().await.map(|_| ())
        };
        let _ = tokio::time::timeout(EXIT_GRACE, bye).await;
    }
    drop(conn);
    if !orderly {
        let _ = child.start_kill();
    }
    if tokio::time::timeout(EXIT_GRACE, child.wait())
        .await
        .is_err()
    {
        // Still there after BYE: killed now, reaped by tokio later.
        let _ = child.start_kill();
    }
}

/// One line from pinentry, classified.
enum Reply<'a> {
    Ok,
    Err(u32),
    Data(&'a [u8]),
    Skip,
    Inquire,
}

fn classify(line: &[u8]) -> Result<Reply<'_>, PinentryError> {
    let (verb, rest) = match line.iter().position(|&b| b == b' ') {
        Some(i) => (&line[..i], &line[i + 1..]),
        None => (line, &[][..]),
    };
    if line.first() == Some(&b'#') {
        return Ok(Reply::Skip);
    }
    match verb {
        b"OK" => Ok(Reply::Ok),
        b"D" => Ok(Reply::Data(rest)),
        b"S" => Ok(Reply::Skip),
        b"INQUIRE" => Ok(Reply::Inquire),
        b"ERR" => {
            let digits = rest.split(|&b| b == b' ').next().unwrap_or_default();
            std::str::from_utf8(digits)
                .ok()
                .filter(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|d| d.parse::<u32>().ok())
                .map(Reply::Err)
                .ok_or_else(|| PinentryError::Protocol("ERR without an error code".into()))
        }
        _ => Err(PinentryError::Protocol(format!(
            "unexpected line from pinentry ({} bytes)",
            line.len()
        ))),
    }
}

fn is_cancel(code: u32) -> bool {
    code & 0xFFFF == GPG_ERR_CANCELED
}

/// Percent-decodes an Assuan data line onto `out`, at most
/// [`MAX_SECRET_LEN`] bytes in all (`out` has that capacity and never
/// grows, so no copy of the PIN is left behind).
fn decode_into(data: &[u8], out: &mut Zeroizing<Vec<u8>>) -> Result<(), PinentryError> {
    let hex = |b: u8| char::from(b).to_digit(16);
    let mut i = 0;
    while i < data.len() {
        let byte = match data[i] {
            b'%' => {
                let pair = data
                    .get(i + 1)
                    .copied()
                    .and_then(hex)
                    .zip(data.get(i + 2).copied().and_then(hex));
                let Some((hi, lo)) = pair else {
                    return Err(PinentryError::Protocol(
                        "bad percent escape in a data line".into(),
                    ));
                };
                i += 3;
                // Both are hex digits: at most 0xFF.
                u8::try_from(hi * 16 + lo).unwrap_or(0)
            }
            b => {
                i += 1;
                b
            }
        };
        if out.len() >= MAX_SECRET_LEN {
            return Err(PinentryError::TooLong);
        }
        out.push(byte);
    }
    Ok(())
}

/// The wiped bytes as a [`SecretString`].
fn into_secret(mut bytes: Zeroizing<Vec<u8>>) -> Result<SecretString, PinentryError> {
    let bytes = std::mem::take(&mut *bytes);
    match String::from_utf8(bytes) {
        Ok(text) => SecretString::new(text).map_err(|_| PinentryError::BadPin),
        Err(e) => {
            e.into_bytes().zeroize();
            Err(PinentryError::BadPin)
        }
    }
}

struct Conn {
    stdin: ChildStdin,
    lines: Lines,
}

impl Conn {
    async fn send(&mut self, line: &str) -> Result<(), PinentryError> {
        // A program that left (or closed its input) is one that broke the
        // protocol, as one that closes its output.
        let failed = |e: std::io::Error| match e.kind() {
            std::io::ErrorKind::BrokenPipe => {
                PinentryError::Protocol("pinentry closed its input".into())
            }
            _ => PinentryError::Io(e),
        };
        self.stdin
            .write_all(line.as_bytes())
            .await
            .map_err(failed)?;
        self.stdin.flush().await.map_err(failed)
    }

    async fn exchange(&mut self, lines: &[String], op: Op) -> Result<Outcome, PinentryError> {
        // The greeting.
        loop {
            match classify(self.lines.next().await?) {
                Ok(Reply::Ok) => break,
                Ok(Reply::Skip) => {}
                _ => return Err(PinentryError::Protocol("no greeting".into())),
            }
        }
        let Some((last, settings)) = lines.split_last() else {
            return Err(PinentryError::Protocol("no command".into()));
        };
        for line in settings {
            self.send(line).await?;
            self.expect_ok().await?;
        }
        self.send(last).await?;
        match op {
            Op::GetPin => self.read_pin().await.map(Outcome::Pin),
            Op::Confirm => match self.expect_ok().await {
                Ok(()) => Ok(Outcome::Confirmed(true)),
                Err(PinentryError::Failed { code })
                    if is_cancel(code) || code & 0xFFFF == GPG_ERR_NOT_CONFIRMED =>
                {
                    Ok(Outcome::Confirmed(false))
                }
                Err(e) => Err(e),
            },
        }
    }

    /// The answer to a command that returns no data.
    async fn expect_ok(&mut self) -> Result<(), PinentryError> {
        loop {
            match classify(self.lines.next().await?)? {
                Reply::Ok => return Ok(()),
                Reply::Err(code) => return Err(PinentryError::Failed { code }),
                Reply::Skip => {}
                Reply::Data(_) => {
                    return Err(PinentryError::Protocol("unexpected data line".into()))
                }
                Reply::Inquire => return Err(PinentryError::Protocol("unexpected INQUIRE".into())),
            }
        }
    }

    /// The answer to `GETPIN`.
    async fn read_pin(&mut self) -> Result<SecretString, PinentryError> {
        let mut pin = Zeroizing::new(Vec::with_capacity(MAX_SECRET_LEN));
        loop {
            match classify(self.lines.next().await?)? {
                Reply::Ok => return into_secret(pin),
                Reply::Err(code) if is_cancel(code) => return Err(PinentryError::Cancelled),
                Reply::Err(code) => return Err(PinentryError::Failed { code }),
                Reply::Data(data) => decode_into(data, &mut pin)?,
                Reply::Skip => {}
                Reply::Inquire => return Err(PinentryError::Protocol("unexpected INQUIRE".into())),
            }
        }
    }
}

/// Lines from pinentry, read into one fixed buffer that is wiped when
/// dropped (it holds the PIN's `D` lines).
struct Lines {
    out: ChildStdout,
    buf: Zeroizing<Vec<u8>>,
    start: usize,
    end: usize,
}

impl Lines {
    fn new(out: ChildStdout) -> Lines {
        Lines {
            out,
            buf: Zeroizing::new(vec![0; 2 * (MAX_LINE + 1)]),
            start: 0,
            end: 0,
        }
    }

    /// The next line, without its LF.
    async fn next(&mut self) -> Result<&[u8], PinentryError> {
        loop {
            let pending = &self.buf[self.start..self.end];
            if let Some(len) = pending.iter().position(|&b| b == b'\n') {
                if len > MAX_LINE {
                    return Err(PinentryError::LineTooLong);
                }
                let start = self.start;
                self.start += len + 1;
                return Ok(&self.buf[start..start + len]);
            }
            if pending.len() > MAX_LINE {
                return Err(PinentryError::LineTooLong);
            }
            if self.start > 0 {
                self.buf.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
            }
            let n = self
                .out
                .read(&mut self.buf[self.end..])
                .await
                .map_err(PinentryError::Io)?;
            if n == 0 {
                return Err(PinentryError::Protocol("pinentry closed its output".into()));
            }
            self.end += n;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    /// A scripted pinentry: `fake.py MODE LOG [ARG]`. It logs every line it
    /// is sent to LOG and answers as MODE says.
    const FAKE: &str = r##"
import json, os, sys, time

mode, log = sys.argv[1], sys.argv[2]
arg = sys.argv[3] if len(sys.argv) > 3 else ""
with open(log + ".pid", "w") as f:
    f.write(str(os.getpid()))

def say(line):
    sys.stdout.write(line + "\n")
    sys.stdout.flush()

def esc(text):
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")

if mode == "silent":
    time.sleep(600)
if mode == "no-greeting":
    say("HELLO there")
    time.sleep(600)
if mode == "long-line":
    say("OK " + "x" * 10000)
    time.sleep(600)
if mode == "long-no-newline":
    sys.stdout.write("x" * 10000)
    sys.stdout.flush()
    time.sleep(600)
say("# a comment before the greeting")
say("OK Pleased to meet you")
if mode == "exit-early":
    sys.exit(0)
for line in sys.stdin:
    line = line.rstrip("\n")
    with open(log, "a") as f:
        f.write(line + "\n")
    cmd = line.split(" ", 1)[0]
    if cmd == "GETPIN":
        if mode == "pin":
            say("S PASSPHRASE_STATUS whatever")
            for chunk in arg.split(","):
                say("D " + chunk)
                say("# between data lines")
            say("OK")
        elif mode == "huge":
            for _ in range(3):
                say("D " + "7" * 500)
            say("OK")
        elif mode == "env":
            env = {"uid": os.getuid(), "gid": os.getgid(), "groups": os.getgroups(),
                   "cwd": os.getcwd(), "env": dict(os.environ)}
            say("D " + esc(json.dumps(env)))
            say("OK")
        elif mode == "cancel":
            say("ERR 83886179 Operation cancelled <Pinentry>")
        elif mode == "err":
            say("ERR 83886141 Something else <Pinentry>")
        elif mode == "garbage":
            say("hello world 123456")
        elif mode == "inquire":
            say("INQUIRE QUALITY 123456")
        elif mode == "hang":
            time.sleep(600)
        else:
            say("ERR 1 unexpected GETPIN")
    elif cmd == "CONFIRM":
        if mode == "yes":
            say("OK")
        elif mode == "no":
            say("ERR 83886194 Not confirmed <Pinentry>")
        elif mode == "cancel":
            say("ERR 83886179 Operation cancelled <Pinentry>")
        elif mode == "err":
            say("ERR 83886141 Something else <Pinentry>")
        else:
            say("ERR 1 unexpected CONFIRM")
    elif cmd == "BYE":
        say("OK closing connection")
        break
    elif mode == "garbage-on-set":
        say("D 123456")
    else:
        say("OK")
"##;

    struct Fake {
        dir: PathBuf,
    }

    impl Drop for Fake {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    impl Fake {
        fn new() -> Fake {
            static COUNTER: AtomicU32 = AtomicU32::new(0);
            let dir = std::env::temp_dir().join(format!(
                "clinauth-pinentry-{}-{}",
                std::process::id(),
                COUNTER.fetch_add(1, Ordering::Relaxed)
            ));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir(&dir).unwrap();
            // Open to every user: the program may run as nobody, and
            // writes its log here.
            std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o777))
                .unwrap();
            std::fs::write(dir.join("fake.py"), FAKE).unwrap();
            Fake { dir }
        }

        fn log(&self) -> PathBuf {
            self.dir.join("log")
        }

        fn settings(&self, mode: &str, arg: &str) -> PinentrySettings {
            let mut args = vec![
                self.dir.join("fake.py").display().to_string(),
                mode.to_owned(),
                self.log().display().to_string(),
            ];
            if !arg.is_empty() {
                args.push(arg.to_owned());
            }
            PinentrySettings {
                program: Some(python3()),
                args,
                timeout: Seconds(5),
                display: Some(":7".into()),
                wayland_display: None,
            }
        }

        /// The lines the program was sent.
        fn sent(&self) -> Vec<String> {
            std::fs::read_to_string(self.log())
                .unwrap_or_default()
                .lines()
                .map(str::to_owned)
                .collect()
        }

        fn pid(&self) -> u32 {
            std::fs::read_to_string(self.dir.join("log.pid"))
                .unwrap()
                .trim()
                .parse()
                .unwrap()
        }
    }

    fn python3() -> PathBuf {
        ["/usr/bin/python3", "/bin/python3", "/usr/local/bin/python3"]
            .into_iter()
            .map(PathBuf::from)
            .find(|p| p.exists())
            .expect("python3 in /usr/bin, /bin or /usr/local/bin")
    }

    fn me() -> RunAs {
        RunAs {
            uid: effective_uid(),
            gid: 0,
        }
    }

    const REQUEST: PinRequest<'static> = PinRequest {
        title: "ClinAuth",
        description: "Sign the discharge letter\nDose 50% of 10mg\r",
        prompt: "PIN:",
        error: None,
        ok: None,
        cancel: None,
    };

    async fn pin(fake: &Fake, mode: &str, arg: &str) -> Result<SecretString, PinentryError> {
        get_pin(&fake.settings(mode, arg), me(), &REQUEST).await
    }

    #[tokio::test]
    async fn good_pin_and_the_commands_sent() {
        let fake = Fake::new();
        let request = PinRequest {
            error: Some("Wrong PIN, 2 tries left"),
            ok: Some("Sign"),
            cancel: Some("Abbrechen"),
            ..REQUEST
        };
        let pin = get_pin(&fake.settings("pin", "493817"), me(), &request)
            .await
            .unwrap();
        assert_eq!(pin.expose(), "493817");
        assert_eq!(
            fake.sent(),
            [
                "SETTITLE ClinAuth",
                "SETDESC Sign the discharge letter%0ADose 50%25 of 10mg%0D",
                "SETPROMPT PIN:",
                "SETERROR Wrong PIN, 2 tries left",
                "SETOK Sign",
                "SETCANCEL Abbrechen",
                "GETPIN",
                "BYE",
            ]
        );
    }

    #[tokio::test]
    async fn escaped_pin_over_several_data_lines() {
        let fake = Fake::new();
        let pin = pin(&fake, "pin", "12%2534,%0a9+9,%C3%A9").await.unwrap();
        assert_eq!(pin.expose(), "12%34\n9+9é");
        // Unset texts are not sent.
        assert_eq!(fake.sent().len(), 5, "{:?}", fake.sent());
    }

    #[tokio::test]
    async fn empty_pin_is_a_pin() {
        let fake = Fake::new();
        let pin = pin(&fake, "pin", "").await.unwrap();
        assert!(pin.is_empty());
    }

    #[tokio::test]
    async fn bad_pins_refused_without_quoting_them() {
        let fake = Fake::new();
        for arg in ["12%0034", "%FF%FE12", "12%4"] {
            let err = pin(&fake, "pin", arg).await.unwrap_err();
            let text = format!("{err} {err:?}");
            assert!(
                matches!(err, PinentryError::BadPin | PinentryError::Protocol(_)),
                "{arg}: {text}"
            );
            assert!(
                !text.contains("34") && !text.contains("12"),
                "{arg}: {text}"
            );
        }
        let err = pin(&fake, "huge", "").await.unwrap_err();
        assert!(matches!(err, PinentryError::TooLong), "{err:?}");
    }

    #[tokio::test]
    async fn cancel() {
        let fake = Fake::new();
        let err = pin(&fake, "cancel", "").await.unwrap_err();
        assert!(matches!(err, PinentryError::Cancelled), "{err:?}");
        assert_eq!(fake.sent().last().map(String::as_str), Some("BYE"));
    }

    #[tokio::test]
    async fn other_errors_keep_their_code() {
        let fake = Fake::new();
        let err = pin(&fake, "err", "").await.unwrap_err();
        assert!(
            matches!(err, PinentryError::Failed { code: 83886141 }),
            "{err:?}"
        );
        let settings = fake.settings("err", "");
        let err = confirm(&settings, me(), &REQUEST).await.unwrap_err();
        assert!(
            matches!(err, PinentryError::Failed { code: 83886141 }),
            "{err:?}"
        );
    }

    #[tokio::test]
    async fn confirm_yes_no_cancel() {
        for (mode, want) in [("yes", true), ("no", false), ("cancel", false)] {
            let fake = Fake::new();
            let answer = confirm(&fake.settings(mode, ""), me(), &REQUEST)
                .await
                .unwrap();
            assert_eq!(answer, want, "{mode}");
            let sent = fake.sent();
            assert!(!sent.iter().any(|l| l.starts_with("SETPROMPT")), "{sent:?}");
            assert_eq!(sent[sent.len() - 2], "CONFIRM");
        }
    }

    #[tokio::test]
    async fn protocol_violations() {
        for mode in [
            "garbage",
            "inquire",
            "no-greeting",
            "exit-early",
            "garbage-on-set",
        ] {
            let fake = Fake::new();
            let err = pin(&fake, mode, "").await.unwrap_err();
            assert!(matches!(err, PinentryError::Protocol(_)), "{mode}: {err:?}");
            assert!(!err.to_string().contains("123456"), "{mode}: {err}");
        }
        let fake = Fake::new();
        let err = confirm(&fake.settings("garbage-on-set", ""), me(), &REQUEST)
            .await
            .unwrap_err();
        assert!(matches!(err, PinentryError::Protocol(_)), "{err:?}");
    }

    #[tokio::test]
    async fn over_long_lines() {
        for mode in ["long-line", "long-no-newline"] {
            let fake = Fake::new();
            let err = pin(&fake, mode, "").await.unwrap_err();
            assert!(matches!(err, PinentryError::LineTooLong), "{mode}: {err:?}");
        }
    }

    async fn gone(pid: u32) -> bool {
        for _ in 0..100 {
            if !Path::new(&format!("/proc/{pid}")).exists() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        false
    }

    #[tokio::test]
    async fn a_silent_program_times_out_and_is_killed() {
        for mode in ["silent", "hang"] {
            let fake = Fake::new();
            let started = std::time::Instant::now();
            let err = run(
                &fake.settings(mode, ""),
                me(),
                &REQUEST,
                Op::GetPin,
                Duration::from_secs(2),
            )
            .await
            .unwrap_err();
            assert!(matches!(err, PinentryError::Timeout), "{mode}: {err:?}");
            assert!(started.elapsed() < Duration::from_secs(10), "{mode}");
            assert!(gone(fake.pid()).await, "{mode}: pinentry still running");
        }
    }

    #[tokio::test]
    async fn missing_or_unset_program() {
        let settings = PinentrySettings {
            program: Some("/nonexistent/pinentry".into()),
            ..PinentrySettings::default()
        };
        let err = get_pin(&settings, me(), &REQUEST).await.unwrap_err();
        assert!(
            matches!(&err, PinentryError::Spawn { source, .. }
                if source.kind() == std::io::ErrorKind::NotFound),
            "{err:?}"
        );
        let err = get_pin(&PinentrySettings::default(), me(), &REQUEST)
            .await
            .unwrap_err();
        assert!(matches!(err, PinentryError::NotConfigured), "{err:?}");
        let err = confirm(&PinentrySettings::default(), me(), &REQUEST)
            .await
            .unwrap_err();
        assert!(matches!(err, PinentryError::NotConfigured), "{err:?}");
    }

    #[tokio::test]
    async fn bad_requests_refused_before_the_program_starts() {
        let fake = Fake::new();
        let nul = PinRequest {
            description: "a\0b",
            ..REQUEST
        };
        let err = pin_with(&fake, &nul).await.unwrap_err();
        assert!(matches!(err, PinentryError::InvalidRequest(_)), "{err:?}");
        let long = "%".repeat(400);
        let long = PinRequest {
            description: &long,
            ..REQUEST
        };
        let err = pin_with(&fake, &long).await.unwrap_err();
        assert!(matches!(err, PinentryError::InvalidRequest(_)), "{err:?}");
        assert!(fake.sent().is_empty());
    }

    async fn pin_with(
        fake: &Fake,
        request: &PinRequest<'_>,
    ) -> Result<SecretString, PinentryError> {
        get_pin(&fake.settings("pin", "1"), me(), request).await
    }

    #[tokio::test]
    async fn environment_and_identity() {
        let fake = Fake::new();
        let mut settings = fake.settings("env", "");
        settings.wayland_display = Some("wayland-1".into());
        // As root, the program runs as the user asked for (nobody here).
        let (run_as, want_uid) = if effective_uid() == 0 {
            (
                RunAs {
                    uid: 65534,
                    gid: 65534,
                },
                65534,
            )
        } else {
            (me(), effective_uid())
        };
        let pin = get_pin(&settings, run_as, &REQUEST).await.unwrap();
        let seen: serde_json::Value = serde_json::from_str(pin.expose()).unwrap();
        assert_eq!(seen["uid"], want_uid);
        assert_eq!(seen["cwd"], "/");
        if effective_uid() == 0 {
            assert_eq!(seen["gid"], 65534);
            assert_eq!(seen["groups"], serde_json::json!([]));
        }
        let env = seen["env"].as_object().unwrap();
        let runtime = format!("/run/user/{want_uid}");
        let want = [
            ("PATH", "/usr/bin:/bin".to_owned()),
            ("DISPLAY", ":7".to_owned()),
            ("WAYLAND_DISPLAY", "wayland-1".to_owned()),
            (
                "DBUS_SESSION_BUS_ADDRESS",
                format!("unix:path={runtime}/bus"),
            ),
            ("XDG_RUNTIME_DIR", runtime),
        ];
        for (key, value) in &want {
            assert_eq!(env.get(*key).and_then(|v| v.as_str()), Some(value.as_str()));
        }
        // Nothing else, but what Python adds itself (PEP 538).
        for key in env.keys() {
            assert!(
                want.iter().any(|(k, _)| k == key) || key == "LC_CTYPE",
                "{key} passed to pinentry"
            );
        }
    }

    #[test]
    fn settings_defaults_and_checks() {
        let d = PinentrySettings::default();
        assert_eq!(d.timeout, Seconds(60));
        assert!(d.program.is_none() && d.args.is_empty());
        d.check().unwrap();
        let good = PinentrySettings {
            program: Some("/usr/bin/pinentry-gnome3".into()),
            args: vec!["--debug".into()],
            display: Some(":0".into()),
            wayland_display: Some("wayland-0".into()),
            ..d.clone()
        };
        good.check().unwrap();
        let bad = [
            PinentrySettings {
                program: Some("pinentry".into()),
                ..good.clone()
            },
            PinentrySettings {
                program: Some("/usr/bin/pin\0entry".into()),
                ..good.clone()
            },
            PinentrySettings {
                timeout: Seconds(4),
                ..good.clone()
            },
            PinentrySettings {
                timeout: Seconds(301),
                ..good.clone()
            },
            PinentrySettings {
                args: vec!["a".into(); MAX_ARGS + 1],
                ..good.clone()
            },
            PinentrySettings {
                args: vec!["a".repeat(MAX_ARG_LEN + 1)],
                ..good.clone()
            },
            PinentrySettings {
                args: vec!["a\0b".into()],
                ..good.clone()
            },
            PinentrySettings {
                program: None,
                ..good.clone()
            },
            PinentrySettings {
                display: Some(":0 -x".into()),
                ..good.clone()
            },
            PinentrySettings {
                wayland_display: Some(String::new()),
                ..good.clone()
            },
        ];
        for settings in bad {
            assert!(settings.check().is_err(), "{settings:?}");
        }
        assert!(PinentrySettings {
            timeout: Seconds(5),
            ..good.clone()
        }
        .check()
        .is_ok());
        assert!(PinentrySettings {
            timeout: Seconds(300),
            args: vec!["a".repeat(MAX_ARG_LEN); MAX_ARGS],
            ..good
        }
        .check()
        .is_ok());
    }

    #[test]
    fn settings_from_toml() {
        let s: PinentrySettings = toml::from_str(
            "program = \"/usr/bin/pinentry-qt\"\ntimeout = \"90s\"\ndisplay = \":0\"",
        )
        .unwrap();
        assert_eq!(
            s.program.as_deref(),
            Some(Path::new("/usr/bin/pinentry-qt"))
        );
        assert_eq!(s.timeout, Seconds(90));
        assert!(toml::from_str::<PinentrySettings>("programm = \"/x\"").is_err());
    }

    #[test]
    fn escaping_and_decoding() {
        let mut out = String::new();
        escape("t", "50% a\r\nb\tc\u{7f}é", &mut out).unwrap();
        assert_eq!(out, "50%25 a%0D%0Ab%09c%7Fé");
        assert!(escape("t", "a\0", &mut String::new()).is_err());
        let mut pin = Zeroizing::new(Vec::with_capacity(MAX_SECRET_LEN));
        decode_into(b"a%25b%0a%0D+", &mut pin).unwrap();
        assert_eq!(&pin[..], b"a%b\n\r+");
        for bad in [&b"%"[..], b"%2", b"%zz", b"%+1"] {
            assert!(decode_into(bad, &mut pin).is_err());
        }
        let mut pin = Zeroizing::new(Vec::with_capacity(MAX_SECRET_LEN));
        decode_into(&[b'1'; MAX_SECRET_LEN], &mut pin).unwrap();
        assert_eq!(pin.capacity(), MAX_SECRET_LEN);
        assert!(matches!(
            decode_into(b"1", &mut pin),
            Err(PinentryError::TooLong)
        ));
    }

    #[test]
    fn replies() {
        assert!(matches!(classify(b"OK"), Ok(Reply::Ok)));
        assert!(matches!(classify(b"OK Pleased"), Ok(Reply::Ok)));
        assert!(classify(b"OKAY").is_err());
        assert!(matches!(
            classify(b"ERR 83886179 x"),
            Ok(Reply::Err(83886179))
        ));
        assert!(classify(b"ERR").is_err());
        assert!(classify(b"ERR x1").is_err());
        assert!(matches!(classify(b"D 12"), Ok(Reply::Data(b"12"))));
        assert!(matches!(classify(b"D"), Ok(Reply::Data(b""))));
        assert!(matches!(classify(b"S X"), Ok(Reply::Skip)));
        assert!(matches!(classify(b"# c"), Ok(Reply::Skip)));
        assert!(matches!(classify(b"INQUIRE Q"), Ok(Reply::Inquire)));
        assert!(classify(b"").is_err());
        assert!(is_cancel(83886179) && is_cancel(99) && !is_cancel(83886194));
    }
}
