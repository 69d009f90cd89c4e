//! PAM return codes, flags, item types and message styles, as in Linux-PAM's
//! `<security/_pam_types.h>` (the values are part of its ABI).
#![forbid(unsafe_code)]

use std::ffi::c_int;

/// A PAM return code.
pub type PamCode = c_int;

/// Success. Returned only when the agent allowed.
pub const PAM_SUCCESS: PamCode = 0;
/// An error in the module (its options, its configuration).
pub const PAM_SERVICE_ERR: PamCode = 3;
/// A system error (a panic, an unusable PAM handle).
pub const PAM_SYSTEM_ERR: PamCode = 4;
/// Memory buffer error.
pub const PAM_BUF_ERR: PamCode = 5;
/// Permission denied (account management refused).
pub const PAM_PERM_DENIED: PamCode = 6;
/// Authentication failure.
pub const PAM_AUTH_ERR: PamCode = 7;
/// The authentication service (the agent, or the server behind it) cannot
/// be reached.
pub const PAM_AUTHINFO_UNAVAIL: PamCode = 9;
/// The agent does not know the user.
pub const PAM_USER_UNKNOWN: PamCode = 10;
/// The session could not be opened or closed.
pub const PAM_SESSION_ERR: PamCode = 14;
/// Conversation error.
pub const PAM_CONV_ERR: PamCode = 19;
/// "Ignore this module": never returned by this module.
pub const PAM_IGNORE: PamCode = 25;

/// Flag: the module must not send informational messages.
pub const PAM_SILENT: c_int = 0x8000;
/// `pam_setcred` flag: establish credentials.
pub const PAM_ESTABLISH_CRED: c_int = 0x0002;
/// `pam_setcred` flag: delete credentials.
pub const PAM_DELETE_CRED: c_int = 0x0004;
/// `pam_setcred` flag: reinitialize credentials.
pub const PAM_REINITIALIZE_CRED: c_int = 0x0008;
/// `pam_setcred` flag: refresh credentials.
pub const PAM_REFRESH_CRED: c_int = 0x0010;

/// Item type: the service name.
pub const PAM_SERVICE: c_int = 1;
/// Item type: the tty.
pub const PAM_TTY: c_int = 3;
/// Item type: the remote host.
pub const PAM_RHOST: c_int = 4;
/// Item type: the conversation structure.
pub const PAM_CONV: c_int = 5;

/// Message style: a prompt whose answer is not echoed.
pub const PAM_PROMPT_ECHO_OFF: c_int = 1;
/// Message style: a prompt whose answer is echoed.
pub const PAM_PROMPT_ECHO_ON: c_int = 2;
/// Message style: an error message.
pub const PAM_ERROR_MSG: c_int = 3;
/// Message style: an informational message.
pub const PAM_TEXT_INFO: c_int = 4;

/// Longest message a conversation function is required to accept,
/// including the terminating NUL (`PAM_MAX_MSG_SIZE`).
pub const PAM_MAX_MSG_SIZE: usize = 512;

/// Whether `code` is one this module must never return on an error path.
pub fn lets_through(code: PamCode) -> bool {
    code == PAM_SUCCESS || code == PAM_IGNORE
}
