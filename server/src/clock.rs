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

/// The clock the server's flows read: the wall clock plus an offset that
/// only tests and drills move, to show what happens days later (nothing
/// happens to a pending record by itself, R-REC-1). Clones share the offset.
#[derive(Debug, Clone, Default)]
pub struct Clock(std::sync::Arc<std::sync::atomic::AtomicI64>);

impl Clock {
    /// Milliseconds since the epoch, offset.
    pub fn now_ms(&self) -> i64 {
        now_ms().saturating_add(self.0.load(std::sync::atomic::Ordering::Relaxed))
    }

    /// Seconds since the epoch, offset.
    pub fn now(&self) -> clinauth_policy::UnixTime {
        clinauth_policy::UnixTime(self.now_ms() / 1000)
    }

    /// Moves this clock (and its clones) `by_ms` ahead of the wall clock.
    pub fn advance(&self, by_ms: i64) {
        self.0
            .fetch_add(by_ms, std::sync::atomic::Ordering::Relaxed);
    }
}
