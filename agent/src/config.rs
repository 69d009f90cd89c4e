//! The agent's configuration file (TOML). `examples/agent.toml` documents
//! every option with its default; unknown keys are refused so that a typo
//! never silently drops a setting.

use std::path::{Path, PathBuf};
use std::time::Duration;

use clinauth_policy::Seconds;
use serde::Deserialize;

/// The largest configuration file accepted.
pub const MAX_CONFIG_BYTES: u64 = 256 * 1024;

/// The default socket path.
pub const DEFAULT_SOCKET: &str = "/run/clinauth/agent.sock";

/// The whole file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The daemon and its socket.
    pub agent: AgentSection,
    /// The auth server.
    pub server: ServerSection,
    /// Smartcards and badges.
    #[serde(default)]
    pub card: CardSection,
    /// Sessions: tap-out, idle lock, user switch.
    #[serde(default)]
    pub session: crate::session::SessionSettings,
    /// Offline login and the event spool.
    #[serde(default)]
    pub offline: crate::offline::OfflineSettings,
    /// FIDO2 security keys.
    #[serde(default)]
    pub fido2: crate::login::fido2::Fido2Settings,
    /// Biometric readers.
    #[serde(default)]
    pub biometric: crate::login::biometric::BiometricSettings,
    /// The pinentry program for PINs asked on behalf of clinical apps.
    #[serde(default)]
    pub pinentry: crate::pinentry::PinentrySettings,
}

/// `[agent]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentSection {
    /// This workstation's name as registered on the server
    /// (`clinauthctl workstation add <name>`); the card signs it.
    pub workstation: String,
    /// The socket the PAM module and clinical apps connect to.
    #[serde(default = "default_socket")]
    pub socket: PathBuf,
    /// Where the agent keeps its state (offline bundles, the event spool).
    #[serde(default = "default_state_dir")]
    pub state_dir: PathBuf,
    /// How long a conversation may wait for the user (a PIN, a card).
    #[serde(default = "default_conversation_timeout")]
    pub conversation_timeout: Seconds,
    /// How many connections may be open at once.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Log format: `json` (for journald and SIEMs) or `text`.
    #[serde(default)]
    pub log_format: LogFormat,
}

/// The log format.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// One JSON object a line.
    #[default]
    Json,
    /// Plain text.
    Text,
}

/// `[server]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSection {
    /// `host:port` of the server's workstation API.
    pub address: String,
    /// The name on the server's certificate (default: the host of `address`).
    pub server_name: Option<String>,
    /// The CA that issued the server's certificate (PEM).
    pub ca: PathBuf,
    /// This workstation's certificate (PEM), issued by the workstation CA.
    pub certificate: PathBuf,
    /// Its private key (PEM, PKCS#8). Readable by root only.
    pub key: PathBuf,
    /// Allow TLS 1.2 (TLS 1.3 otherwise).
    #[serde(default)]
    pub allow_tls12: bool,
    /// Connecting, including the TLS handshake.
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout: Seconds,
    /// One request and its answer.
    #[serde(default = "default_request_timeout")]
    pub request_timeout: Seconds,
    /// Extra attempts after a connection failure (never after the server
    /// answered: an answer is final).
    #[serde(default = "default_retries")]
    pub retries: u32,
}

/// `[card]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CardSection {
    /// Use smartcards and badges at all.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// The readers to use, by name; empty: every reader.
    #[serde(default)]
    pub readers: Vec<String>,
    /// One APDU exchange.
    #[serde(default = "default_apdu_timeout")]
    pub apdu_timeout: Seconds,
    /// How long to wait for a card or badge when none is present.
    #[serde(default = "default_insert_timeout")]
    pub insert_timeout: Seconds,
}

impl Default for CardSection {
    fn default() -> Self {
        CardSection {
            enabled: true,
            readers: Vec::new(),
            apdu_timeout: default_apdu_timeout(),
            insert_timeout: default_insert_timeout(),
        }
    }
}

fn default_true() -> bool {
    true
}
fn default_socket() -> PathBuf {
    PathBuf::from(DEFAULT_SOCKET)
}
fn default_state_dir() -> PathBuf {
    PathBuf::from("/var/lib/clinauth")
}
fn default_conversation_timeout() -> Seconds {
    Seconds(120)
}
fn default_max_connections() -> usize {
    64
}
fn default_connect_timeout() -> Seconds {
    Seconds(3)
}
fn default_request_timeout() -> Seconds {
    Seconds(10)
}
fn default_retries() -> u32 {
    2
}
fn default_apdu_timeout() -> Seconds {
    Seconds(5)
}
fn default_insert_timeout() -> Seconds {
    Seconds(30)
}

/// A duration from the file.
pub fn duration(s: Seconds) -> Duration {
    Duration::from_secs(u64::from(s.0))
}

/// Why the configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Too large.
    #[error("{path}: larger than {MAX_CONFIG_BYTES} bytes")]
    TooLarge {
        /// The file.
        path: PathBuf,
    },
    /// Not valid TOML or not the expected shape.
    #[error("{path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What is wrong, with the line.
        message: String,
    },
    /// A value out of range.
    #[error("{path}: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

impl Config {
    /// Reads and checks the file at `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let read = |source| ConfigError::Read {
            path: path.to_owned(),
            source,
        };
        let meta = std::fs::metadata(path).map_err(read)?;
        if meta.len() > MAX_CONFIG_BYTES {
            return Err(ConfigError::TooLarge {
                path: path.to_owned(),
            });
        }
        let text = std::fs::read_to_string(path).map_err(read)?;
        Config::from_toml(&text, path)
    }

    /// Parses and checks `text` (`path` names it in errors).
    pub fn from_toml(text: &str, path: &Path) -> Result<Config, ConfigError> {
        if text.len() as u64 > MAX_CONFIG_BYTES {
            return Err(ConfigError::TooLarge {
                path: path.to_owned(),
            });
        }
        let config: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
        config.check().map_err(|message| ConfigError::Invalid {
            path: path.to_owned(),
            message,
        })?;
        Ok(config)
    }

    fn check(&self) -> Result<(), String> {
        let name = &self.agent.workstation;
        if name.is_empty()
            || name.len() > 128
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        {
            return Err(format!(
                "agent.workstation {name:?}: 1 to 128 letters, digits, '-', '_' or '.'"
            ));
        }
        if !self.agent.socket.is_absolute() || !self.agent.state_dir.is_absolute() {
            return Err("agent.socket and agent.state_dir must be absolute paths".into());
        }
        if !(1..=4096).contains(&self.agent.max_connections) {
            return Err("agent.max_connections must be between 1 and 4096".into());
        }
        let bounded = [
            (
                "agent.conversation_timeout",
                self.agent.conversation_timeout,
                5,
                3600,
            ),
            ("server.connect_timeout", self.server.connect_timeout, 1, 60),
            (
                "server.request_timeout",
                self.server.request_timeout,
                1,
                300,
            ),
            ("card.apdu_timeout", self.card.apdu_timeout, 1, 60),
            ("card.insert_timeout", self.card.insert_timeout, 1, 600),
        ];
        for (what, value, min, max) in bounded {
            if !(min..=max).contains(&value.0) {
                return Err(format!("{what} must be between {min}s and {max}s"));
            }
        }
        self.fido2.check()?;
        self.biometric.check()?;
        self.pinentry.check()?;
        if self.server.retries > 5 {
            return Err("server.retries must be at most 5".into());
        }
        if self.server.address.parse::<std::net::SocketAddr>().is_err()
            && !self
                .server
                .address
                .rsplit_once(':')
                .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok())
        {
            return Err(format!(
                "server.address {:?}: write host:port",
                self.server.address
            ));
        }
        Ok(())
    }

    /// The name expected on the server's certificate.
    pub fn server_name(&self) -> &str {
        match &self.server.server_name {
            Some(name) => name,
            None => self
                .server
                .address
                .rsplit_once(':')
                .map(|(host, _)| host.trim_start_matches('[').trim_end_matches(']'))
                .unwrap_or(&self.server.address),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
[agent]
workstation = "ward3-ws07"
[server]
address = "auth.hospital.example:8443"
ca = "/etc/clinauth/ca.pem"
certificate = "/etc/clinauth/workstation.pem"
key = "/etc/clinauth/workstation-key.pem"
"#;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::from_toml(text, Path::new("agent.toml"))
    }

    #[test]
    fn minimal_file_gets_documented_defaults() {
        let c = parse(MINIMAL).unwrap();
        assert_eq!(c.agent.socket, Path::new(DEFAULT_SOCKET));
        assert_eq!(c.agent.conversation_timeout, Seconds(120));
        assert_eq!(c.server.retries, 2);
        assert!(!c.server.allow_tls12);
        assert_eq!(c.server_name(), "auth.hospital.example");
        assert!(c.card.enabled);
    }

    #[test]
    fn example_file_parses() {
        let text = include_str!("../../examples/agent.toml");
        parse(text).unwrap();
    }

    #[test]
    fn unknown_keys_and_bad_values_refused() {
        let typo = MINIMAL.replace("[agent]", "[agent]\nsockett = \"/x\"");
        assert!(matches!(parse(&typo), Err(ConfigError::Parse { .. })));
        let bad_name = MINIMAL.replace("ward3-ws07", "ward 3/ws07");
        assert!(matches!(parse(&bad_name), Err(ConfigError::Invalid { .. })));
        let relative = MINIMAL.replace("[agent]", "[agent]\nsocket = \"agent.sock\"");
        assert!(matches!(parse(&relative), Err(ConfigError::Invalid { .. })));
        let slow = MINIMAL.replace("[agent]", "[agent]\nconversation_timeout = \"2d\"");
        assert!(matches!(parse(&slow), Err(ConfigError::Invalid { .. })));
        let no_port = MINIMAL.replace("auth.hospital.example:8443", "auth.hospital.example");
        assert!(matches!(parse(&no_port), Err(ConfigError::Invalid { .. })));
        let huge = format!("{MINIMAL}\n#{}", "x".repeat(MAX_CONFIG_BYTES as usize));
        assert!(matches!(parse(&huge), Err(ConfigError::TooLarge { .. })));
    }
}
