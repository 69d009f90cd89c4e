//! `clinauth-loadgen`: sets up (or targets) a clinauth-server and drives
//! begin + finish logins over mutual TLS from many simulated workstations,
//! then reports throughput, latency percentiles, errors by kind, the
//! server's CPU time per login and its peak memory.
//!
//! The binary's `--help` documents every option; docs/BENCHMARKS.md has
//! the recorded figures and the commands that reproduce them.
#![forbid(unsafe_code)]
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

pub mod cards;
pub mod client;
pub mod driver;
pub mod fixture;
pub mod procstat;
pub mod report;
pub mod setup;

/// Anything that went wrong, as a sentence.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Error(pub String);

impl Error {
    /// An error with context: `what: cause`.
    pub fn ctx<E: std::fmt::Display>(what: &str) -> impl FnOnce(E) -> Error + '_ {
        move |e| Error(format!("{what}: {e}"))
    }
}

/// Which factors the simulated users present.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Factor {
    /// A smartcard signature over the challenge (ECDSA P-256), PIN-protected
    /// key: the `ward-login` rule's `["smartcard", "card_pin"]`.
    Card,
    /// A badge UID plus a server-checked PIN (Argon2id): `["badge", "server_pin"]`.
    Pin,
}

impl std::fmt::Display for Factor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Factor::Card => "card",
            Factor::Pin => "pin",
        })
    }
}

/// Parses a duration: `500ms`, `10s`, `2m`, or a plain number of seconds.
pub fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    let t = text.trim();
    let (number, scale_ms) = if let Some(n) = t.strip_suffix("ms") {
        (n, 1.0)
    } else if let Some(n) = t.strip_suffix('s') {
        (n, 1000.0)
    } else if let Some(n) = t.strip_suffix('m') {
        (n, 60_000.0)
    } else {
        (t, 1000.0)
    };
    let value: f64 = number
        .trim()
        .parse()
        .map_err(|_| format!("not a duration: {text:?} (try 500ms, 10s, 2m)"))?;
    if !value.is_finite() || value < 0.0 || value * scale_ms > 86_400_000.0 {
        return Err(format!("duration out of range: {text:?}"));
    }
    Ok(std::time::Duration::from_micros(
        (value * scale_ms * 1000.0) as u64,
    ))
}

/// Lowercase hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Decodes lowercase or uppercase hex.
pub fn unhex(text: &str) -> Result<Vec<u8>, Error> {
    if !text.len().is_multiple_of(2) {
        return Err(Error("odd-length hex".into()));
    }
    (0..text.len())
        .step_by(2)
        .map(|i| {
            text.get(i..i + 2)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| Error("invalid hex".into()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_hex() {
        assert_eq!(parse_duration("500ms").unwrap().as_millis(), 500);
        assert_eq!(parse_duration("1.5s").unwrap().as_millis(), 1500);
        assert_eq!(parse_duration("2m").unwrap().as_secs(), 120);
        assert_eq!(parse_duration("3").unwrap().as_secs(), 3);
        assert!(parse_duration("x").is_err());
        assert_eq!(unhex(&hex(&[0, 255, 16])).unwrap(), vec![0, 255, 16]);
    }
}
