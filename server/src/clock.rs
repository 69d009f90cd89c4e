//! The server's one reading of the wall clock. Everything below the request
//! edge takes time as a parameter; this is where it is read. The host must be
//! synchronised (NTP/chrony) for audit times to mean anything (R-LOG-1).

use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the epoch; 0 if the clock is before 1970.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .ok()
        .and_then(|d| i64::try_from(d.as_millis()).ok())
        .unwrap_or(0)
}

/// Seconds since the epoch, as the policy engine takes them.
pub fn now() -> clinauth_policy::UnixTime {
    clinauth_policy::UnixTime(now_ms() / 1000)
}
