//! [`PamOps`]: what the module's logic needs from libpam, as a trait, so the
//! logic is tested with a scripted fake and runs on a real PAM handle
//! through [`crate::ffi`].
#![forbid(unsafe_code)]

use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use clinauth_proto::{AgentClient, ClientError};
use zeroize::Zeroizing;

use crate::codes::PamCode;

/// A PAM item the module reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Item {
    /// `PAM_SERVICE`: the service name (`login`, `gdm-password`, `sudo`).
    Service,
    /// `PAM_TTY`: the terminal, or the X display for graphical logins.
    Tty,
    /// `PAM_RHOST`: the remote host, for remote logins.
    Rhost,
}

impl Item {
    /// The item's name, for messages.
    pub fn name(self) -> &'static str {
        match self {
            Item::Service => "PAM_SERVICE",
            Item::Tty => "PAM_TTY",
            Item::Rhost => "PAM_RHOST",
        }
    }
}

/// The style of a conversation message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    /// `PAM_PROMPT_ECHO_OFF`: a prompt for a secret.
    EchoOff,
    /// `PAM_PROMPT_ECHO_ON`: a prompt whose answer is shown.
    EchoOn,
    /// `PAM_ERROR_MSG`: an error to show.
    ErrorMsg,
    /// `PAM_TEXT_INFO`: information to show.
    TextInfo,
}

impl Style {
    /// Whether the message asks for an answer.
    pub fn is_prompt(self) -> bool {
        matches!(self, Style::EchoOff | Style::EchoOn)
    }
}

/// What the conversation function gave back for one message.
pub enum Answer {
    /// The conversation returned `PAM_SUCCESS` but no response array.
    NoResponse,
    /// The response array was there but its string was NULL.
    NullString,
    /// The answer's bytes (without the NUL), wiped when dropped. The C
    /// buffer has already been wiped and freed.
    Text(Zeroizing<Vec<u8>>),
}

impl std::fmt::Debug for Answer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Answer::NoResponse => f.write_str("NoResponse"),
            Answer::NullString => f.write_str("NullString"),
            Answer::Text(bytes) => write!(f, "Text([{} bytes])", bytes.len()),
        }
    }
}

/// A syslog priority.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// `LOG_ERR`: the module or the agent is broken or misconfigured.
    Err,
    /// `LOG_WARNING`: a refusal worth a look (a protocol violation).
    Warning,
    /// `LOG_NOTICE`: an authentication refused.
    Notice,
    /// `LOG_INFO`: an authentication allowed, a session opened.
    Info,
    /// `LOG_DEBUG`: each step, with the `debug` option only.
    Debug,
}

/// What the module needs from its PAM handle.
///
/// Strings come back as bytes, exactly as libpam holds them; the logic
/// checks them (NUL-free by construction, UTF-8, length, control
/// characters). Errors are the PAM codes libpam returned.
pub trait PamOps {
    /// `pam_get_user`: the user to authenticate, asking the application for
    /// it if it is not set yet. `Ok(None)`: libpam said success but gave a
    /// NULL pointer.
    fn user(&mut self) -> Result<Option<Vec<u8>>, PamCode>;

    /// `pam_get_item` for a string item. `Ok(None)`: the item is not set.
    fn item(&self, item: Item) -> Result<Option<Vec<u8>>, PamCode>;

    /// `pam_getenv`: a variable of the PAM environment.
    fn pam_env(&self, name: &str) -> Option<Vec<u8>>;

    /// A variable of the process environment (only used to pick the
    /// language of messages: the caller of `su` or `sudo` controls it).
    fn process_env(&self, name: &str) -> Option<Vec<u8>>;

    /// Sends one message through the application's conversation function.
    /// For [`Style::ErrorMsg`] and [`Style::TextInfo`] the answer is
    /// discarded (and wiped) by the caller.
    fn converse(&mut self, style: Style, text: &str) -> Result<Answer, PamCode>;

    /// Writes one line to syslog. `message` never contains a secret.
    fn log(&self, level: Level, message: &str);
}

/// Opens a connection to the agent.
pub trait Connect {
    /// Connects to the agent socket at `socket`; `timeout` bounds every read
    /// and write on the connection.
    fn connect(&self, socket: &Path, timeout: Duration) -> Result<AgentClient, ClientError>;
}

/// The production [`Connect`]: a Unix socket.
///
/// Before connecting it checks that the socket's directory is writable by
/// its owner only: in a directory others can write to, anyone could put a
/// fake agent that says "allow" (the default, `/run/clinauth`, is created by
/// the agent's service, `0755`).
#[derive(Debug, Clone, Copy, Default)]
pub struct SocketConnect;

impl Connect for SocketConnect {
    fn connect(&self, socket: &Path, timeout: Duration) -> Result<AgentClient, ClientError> {
        check_socket_dir(socket).map_err(ClientError::Io)?;
        AgentClient::connect(socket, timeout)
    }
}

/// Refuses a socket whose directory group or others may write to.
pub fn check_socket_dir(socket: &Path) -> io::Result<()> {
    let dir = socket
        .parent()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "socket has no directory"))?;
    let mode = std::fs::metadata(dir)?.permissions().mode();
    if mode & 0o022 != 0 {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!(
                "the socket's directory {} is writable by group or others (mode {:o})",
                dir.display(),
                mode & 0o7777
            ),
        ));
    }
    Ok(())
}
