//! The module's arguments in a `pam.d` line:
//!
//! ```text
//! auth required pam_clinauth.so socket=/run/clinauth/agent.sock timeout=90 purpose=login debug
//! ```
//!
//! Anything unknown, malformed, repeated or out of bounds is refused: the
//! module then fails every call (fail closed) and says why in syslog.
#![forbid(unsafe_code)]

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use clinauth_policy::Purpose;

/// The agent socket when `socket=` is not given.
pub const DEFAULT_SOCKET: &str = "/run/clinauth/agent.sock";
/// How long the agent may stay silent, when `timeout=` is not given.
pub const DEFAULT_TIMEOUT_SECS: u64 = 90;
/// The smallest `timeout=`.
pub const MIN_TIMEOUT_SECS: u64 = 1;
/// The largest `timeout=`.
pub const MAX_TIMEOUT_SECS: u64 = 600;
/// The longest `socket=` path, in bytes (`sun_path` holds 108 with the NUL).
pub const MAX_SOCKET_PATH_LEN: usize = 107;

/// The purposes a PAM service may ask for. `confirm` and `sign` need a
/// record or a document, which only a clinical application (on the agent
/// socket directly) can give.
pub const PAM_PURPOSES: [Purpose; 4] = [
    Purpose::Login,
    Purpose::Unlock,
    Purpose::StepUp,
    Purpose::BreakGlass,
];

/// The parsed options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// The agent socket (`socket=`).
    pub socket: PathBuf,
    /// How long the agent may stay silent before the module gives up
    /// (`timeout=`, seconds).
    pub timeout: Duration,
    /// What the authentication is for (`purpose=`).
    pub purpose: Purpose,
    /// Log each step (`debug`). Never logs a secret.
    pub debug: bool,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            socket: PathBuf::from(DEFAULT_SOCKET),
            timeout: Duration::from_secs(DEFAULT_TIMEOUT_SECS),
            purpose: Purpose::Login,
            debug: false,
        }
    }
}

/// Why the options were refused. The messages quote the argument, cut and
/// with control characters replaced (arguments come from `pam.d`, not from
/// users, and hold no secret).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OptionError {
    /// An argument that is not UTF-8.
    NotUtf8,
    /// An argument the module does not know.
    Unknown(String),
    /// An option given twice.
    Repeated(&'static str),
    /// A known option with a value it cannot take.
    BadValue {
        /// The option.
        name: &'static str,
        /// The value given (sanitized).
        value: String,
        /// What it must be.
        expected: &'static str,
    },
}

impl fmt::Display for OptionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OptionError::NotUtf8 => f.write_str("an argument is not valid UTF-8"),
            OptionError::Unknown(arg) => write!(f, "unknown argument {arg:?}"),
            OptionError::Repeated(name) => write!(f, "option {name} given more than once"),
            OptionError::BadValue {
                name,
                value,
                expected,
            } => write!(f, "bad value {value:?} for {name}: expected {expected}"),
        }
    }
}

impl std::error::Error for OptionError {}

/// An argument as it may be quoted in a log line: at most 64 characters, no
/// control characters.
fn shown(arg: &str) -> String {
    arg.chars()
        .take(64)
        .map(|c| if c.is_control() { '\u{fffd}' } else { c })
        .collect()
}

impl Options {
    /// Parses the arguments of the `pam.d` line.
    pub fn parse<A: AsRef<[u8]>>(args: &[A]) -> Result<Self, OptionError> {
        let mut opts = Options::default();
        let mut seen_socket = false;
        let mut seen_timeout = false;
        let mut seen_purpose = false;
        for arg in args {
            let arg = std::str::from_utf8(arg.as_ref()).map_err(|_| OptionError::NotUtf8)?;
            if arg == "debug" {
                if opts.debug {
                    return Err(OptionError::Repeated("debug"));
                }
                opts.debug = true;
            } else if let Some(value) = arg.strip_prefix("socket=") {
                once(&mut seen_socket, "socket")?;
                opts.socket = parse_socket(value)?;
            } else if let Some(value) = arg.strip_prefix("timeout=") {
                once(&mut seen_timeout, "timeout")?;
                opts.timeout = parse_timeout(value)?;
            } else if let Some(value) = arg.strip_prefix("purpose=") {
                once(&mut seen_purpose, "purpose")?;
                opts.purpose = parse_purpose(value)?;
            } else {
                return Err(OptionError::Unknown(shown(arg)));
            }
        }
        Ok(opts)
    }
}

fn once(seen: &mut bool, name: &'static str) -> Result<(), OptionError> {
    if std::mem::replace(seen, true) {
        Err(OptionError::Repeated(name))
    } else {
        Ok(())
    }
}

fn parse_socket(value: &str) -> Result<PathBuf, OptionError> {
    let bad = || OptionError::BadValue {
        name: "socket",
        value: shown(value),
        expected: "an absolute path of at most 107 bytes",
    };
    if !value.starts_with('/')
        || value.len() > MAX_SOCKET_PATH_LEN
        || value.chars().any(char::is_control)
        || value.ends_with('/')
    {
        return Err(bad());
    }
    Ok(PathBuf::from(value))
}

fn parse_timeout(value: &str) -> Result<Duration, OptionError> {
    // Digits only: no sign, no blank, no unit.
    let secs = if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        value.parse::<u64>().ok()
    } else {
        None
    };
    match secs {
        Some(s) if (MIN_TIMEOUT_SECS..=MAX_TIMEOUT_SECS).contains(&s) => Ok(Duration::from_secs(s)),
        _ => Err(OptionError::BadValue {
            name: "timeout",
            value: shown(value),
            expected: "whole seconds from 1 to 600",
        }),
    }
}

fn parse_purpose(value: &str) -> Result<Purpose, OptionError> {
    match Purpose::from_str(value) {
        Ok(p) if PAM_PURPOSES.contains(&p) => Ok(p),
        _ => Err(OptionError::BadValue {
            name: "purpose",
            value: shown(value),
            expected: "login, unlock, step_up or break_glass",
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Options, OptionError> {
        Options::parse(args)
    }

    #[test]
    fn defaults() {
        let opts = parse(&[]).unwrap();
        assert_eq!(opts, Options::default());
        assert_eq!(opts.socket, PathBuf::from("/run/clinauth/agent.sock"));
        assert_eq!(opts.timeout, Duration::from_secs(90));
        assert_eq!(opts.purpose, Purpose::Login);
        assert!(!opts.debug);
    }

    #[test]
    fn every_option() {
        let opts = parse(&[
            "socket=/run/x/a.sock",
            "timeout=5",
            "purpose=unlock",
            "debug",
        ])
        .unwrap();
        assert_eq!(
            opts,
            Options {
                socket: PathBuf::from("/run/x/a.sock"),
                timeout: Duration::from_secs(5),
                purpose: Purpose::Unlock,
                debug: true,
            }
        );
        for (arg, purpose) in [
            ("purpose=login", Purpose::Login),
            ("purpose=step_up", Purpose::StepUp),
            ("purpose=break_glass", Purpose::BreakGlass),
        ] {
            assert_eq!(parse(&[arg]).unwrap().purpose, purpose);
        }
        assert_eq!(parse(&["timeout=1"]).unwrap().timeout.as_secs(), 1);
        assert_eq!(parse(&["timeout=600"]).unwrap().timeout.as_secs(), 600);
    }

    #[test]
    fn unknown_option_refused() {
        for arg in [
            "nouserok", "alwaysok", "Debug", "debug=1", "socket", "", " debug",
        ] {
            assert!(
                matches!(parse(&[arg]), Err(OptionError::Unknown(_))),
                "{arg:?}"
            );
        }
    }

    #[test]
    fn malformed_timeout_refused() {
        for value in [
            "",
            "0",
            "601",
            "-1",
            "+5",
            " 5",
            "5s",
            "1.5",
            "abc",
            "99999999999999999999",
        ] {
            let arg = format!("timeout={value}");
            assert!(
                matches!(
                    parse(&[arg.as_str()]),
                    Err(OptionError::BadValue {
                        name: "timeout",
                        ..
                    })
                ),
                "{arg:?}"
            );
        }
    }

    #[test]
    fn malformed_socket_refused() {
        let long = format!("socket=/{}", "s".repeat(MAX_SOCKET_PATH_LEN));
        for arg in [
            "socket=",
            "socket=agent.sock",
            "socket=run/agent.sock",
            "socket=/run/clinauth/",
            "socket=/run/\u{1b}x",
            long.as_str(),
        ] {
            assert!(
                matches!(
                    parse(&[arg]),
                    Err(OptionError::BadValue { name: "socket", .. })
                ),
                "{arg:?}"
            );
        }
    }

    #[test]
    fn purposes_outside_pam_refused() {
        for value in ["confirm", "sign", "", "LOGIN", "root", "login "] {
            let arg = format!("purpose={value}");
            assert!(
                matches!(
                    parse(&[arg.as_str()]),
                    Err(OptionError::BadValue {
                        name: "purpose",
                        ..
                    })
                ),
                "{arg:?}"
            );
        }
    }

    #[test]
    fn repeated_option_refused() {
        for args in [
            &["debug", "debug"][..],
            &["timeout=5", "timeout=6"],
            &["socket=/a", "socket=/a"],
            &["purpose=login", "purpose=unlock"],
        ] {
            assert!(
                matches!(parse(args), Err(OptionError::Repeated(_))),
                "{args:?}"
            );
        }
    }

    #[test]
    fn non_utf8_argument_refused() {
        assert_eq!(
            Options::parse(&[b"socket=/run/\xff".as_slice()]),
            Err(OptionError::NotUtf8)
        );
    }

    #[test]
    fn messages_quote_arguments_safely() {
        let err = parse(&["\u{1b}[2Jevil"]).unwrap_err().to_string();
        assert!(!err.contains('\u{1b}'), "{err}");
        let long = "x".repeat(1000);
        let err = parse(&[long.as_str()]).unwrap_err().to_string();
        assert!(err.len() < 120, "{err}");
    }
}
