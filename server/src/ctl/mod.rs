//! `clinauthctl`, the officer and operator CLI. Each command lives in a
//! module named after it; `main` only parses arguments and sets the exit code.

pub mod bio;
pub mod card;
pub mod host;
pub mod pki;
pub mod policy;

/// How a command ended, as the process exit status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The command did what was asked (a policy was accepted).
    Ok = 0,
    /// The command ran and the answer is "no" (a policy was refused).
    Refused = 1,
    /// The command could not run: unreadable file, syntax error, bad usage.
    Error = 2,
}

/// The current time. The CLI is the edge where the clock is read; everything
/// below takes time as a parameter.
pub fn now() -> Option<clinauth_policy::UnixTime> {
    let now = crate::clock::now();
    (now.0 > 0).then_some(now)
}
