//! Bounded, validated strings for message fields.
//!
//! Every string that arrives on the agent socket ends up somewhere with its
//! own limits: a user name is passed to `getpwnam`, a prompt is shown on a
//! text console by the PAM module. These types check length and characters
//! when they are built and when they are deserialized, so a message that
//! decodes is already safe to hand on.
//!
//! Control characters are refused everywhere (ESC could drive a terminal,
//! NUL truncates a C string); display texts may contain `\n` and `\t`.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use thiserror::Error;

/// Longest user name, in bytes.
pub const MAX_USER_NAME_LEN: usize = 256;
/// Longest [`Label`], in bytes.
pub const MAX_LABEL_LEN: usize = 256;
/// Longest display [`Text`], in bytes.
pub const MAX_TEXT_LEN: usize = 4 * 1024;
/// Longest [`Ticket`], in bytes.
pub const MAX_TICKET_LEN: usize = 16 * 1024;

/// A string was refused by one of the bounded string types.
///
/// The message names the field kind but never repeats the value.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum TextError {
    /// The string is empty where a value is required.
    #[error("{what} is empty")]
    Empty {
        /// Which kind of field.
        what: &'static str,
    },
    /// The string is longer than the limit.
    #[error("{what} is longer than {max} bytes")]
    TooLong {
        /// Which kind of field.
        what: &'static str,
        /// The limit, in bytes.
        max: usize,
    },
    /// The string contains a control character it may not contain.
    #[error("{what} contains a control character")]
    ControlChar {
        /// Which kind of field.
        what: &'static str,
    },
}

/// The rules one bounded string type applies.
struct Rules {
    what: &'static str,
    max: usize,
    allow_empty: bool,
    multiline: bool,
}

impl Rules {
    fn check(&self, s: &str) -> Result<(), TextError> {
        let what = self.what;
        if s.is_empty() && !self.allow_empty {
            return Err(TextError::Empty { what });
        }
        if s.len() > self.max {
            return Err(TextError::TooLong {
                what,
                max: self.max,
            });
        }
        let allowed = |c: char| self.multiline && (c == '\n' || c == '\t');
        if s.chars().any(|c| c.is_control() && !allowed(c)) {
            return Err(TextError::ControlChar { what });
        }
        Ok(())
    }
}

/// Defines a validated string newtype: constructor, accessors, serde.
macro_rules! bounded_string {
    ($(#[$doc:meta])* $name:ident, $rules:expr) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(String);

        impl $name {
            const RULES: Rules = $rules;

            /// Checks `value` against this type's rules.
            pub fn new(value: impl Into<String>) -> Result<Self, TextError> {
                let value = value.into();
                Self::RULES.check(&value)?;
                Ok(Self(value))
            }

            /// The string.
            pub fn as_str(&self) -> &str {
                &self.0
            }

            /// The owned string.
            pub fn into_string(self) -> String {
                self.0
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = TextError;

            fn try_from(value: String) -> Result<Self, TextError> {
                Self::new(value)
            }
        }

        impl TryFrom<&str> for $name {
            type Error = TextError;

            fn try_from(value: &str) -> Result<Self, TextError> {
                Self::new(value)
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(&self.0)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let value = String::deserialize(deserializer)?;
                Self::new(value).map_err(serde::de::Error::custom)
            }
        }
    };
}

bounded_string!(
    /// A login name: 1 to 256 bytes, no control characters.
    UserName,
    Rules {
        what: "user name",
        max: MAX_USER_NAME_LEN,
        allow_empty: false,
        multiline: false,
    }
);

bounded_string!(
    /// A short identifier (PAM service, tty, remote host, rule name, factor
    /// name, version): 1 to 256 bytes, no control characters.
    Label,
    Rules {
        what: "label",
        max: MAX_LABEL_LEN,
        allow_empty: false,
        multiline: false,
    }
);

bounded_string!(
    /// A text shown to a person: at most 4 KiB; may be empty; `\n` and `\t`
    /// are the only control characters allowed.
    Text,
    Rules {
        what: "text",
        max: MAX_TEXT_LEN,
        allow_empty: true,
        multiline: true,
    }
);

bounded_string!(
    /// A signed ticket from the server, opaque here: 1 byte to 16 KiB, no
    /// control characters. It proves an authentication, so `Debug` shows
    /// only its length.
    Ticket,
    Rules {
        what: "ticket",
        max: MAX_TICKET_LEN,
        allow_empty: false,
        multiline: false,
    }
);

macro_rules! plain_fmt {
    ($($name:ident),*) => {$(
        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(&self.0, f)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    )*};
}

plain_fmt!(UserName, Label, Text);

impl Text {
    /// A `Text` from any string, for messages that quote untrusted input:
    /// control characters other than `\n` and `\t` become U+FFFD and the
    /// result is cut, at a character boundary, to [`MAX_TEXT_LEN`].
    pub fn lossy(s: &str) -> Text {
        let mut out = String::with_capacity(s.len().min(MAX_TEXT_LEN));
        for c in s.chars() {
            let c = if c.is_control() && c != '\n' && c != '\t' {
                char::REPLACEMENT_CHARACTER
            } else {
                c
            };
            if out.len() + c.len_utf8() > MAX_TEXT_LEN {
                break;
            }
            out.push(c);
        }
        Text(out)
    }
}

impl fmt::Debug for Ticket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Ticket([{} bytes])", self.0.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_name_limits() {
        assert!(UserName::new("alice").is_ok());
        assert!(UserName::new("山田太郎").is_ok());
        assert_eq!(
            UserName::new(""),
            Err(TextError::Empty { what: "user name" })
        );
        assert!(UserName::new("a".repeat(MAX_USER_NAME_LEN)).is_ok());
        assert_eq!(
            UserName::new("a".repeat(MAX_USER_NAME_LEN + 1)),
            Err(TextError::TooLong {
                what: "user name",
                max: MAX_USER_NAME_LEN
            })
        );
        for bad in ["al\0ice", "alice\n", "\x1b[2Jalice", "a\u{7f}", "a\u{85}"] {
            assert_eq!(
                UserName::new(bad),
                Err(TextError::ControlChar { what: "user name" }),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn text_allows_newline_and_tab_only() {
        assert!(Text::new("PIN を入力してください\n\t(6 桁)").is_ok());
        assert!(Text::new("").is_ok());
        assert!(Text::new("x".repeat(MAX_TEXT_LEN)).is_ok());
        assert!(Text::new("x".repeat(MAX_TEXT_LEN + 1)).is_err());
        assert!(Text::new("\x1b]0;owned\x07").is_err());
        assert!(Text::new("a\rb").is_err());
    }

    #[test]
    fn lossy_text_is_always_valid() {
        assert_eq!(Text::lossy("a\x1b[31mb\nc").as_str(), "a\u{fffd}[31mb\nc");
        let long = "語".repeat(MAX_TEXT_LEN);
        let cut = Text::lossy(&long);
        assert!(cut.as_str().len() <= MAX_TEXT_LEN);
        assert!(cut.as_str().len() > MAX_TEXT_LEN - 3);
        assert!(Text::new(cut.into_string()).is_ok());
    }

    #[test]
    fn deserialize_validates() {
        let ok: UserName = serde_json::from_str(r#""bob""#).unwrap();
        assert_eq!(ok.as_str(), "bob");
        let err = serde_json::from_str::<UserName>(r#""bo\u0000b""#).unwrap_err();
        assert!(err.to_string().contains("control character"), "{err}");
        assert!(serde_json::from_str::<UserName>(r#""""#).is_err());
        assert!(serde_json::from_str::<UserName>("42").is_err());
        let long = format!("\"{}\"", "a".repeat(MAX_LABEL_LEN + 1));
        assert!(serde_json::from_str::<Label>(&long).is_err());
    }

    #[test]
    fn serialize_is_a_plain_string() {
        let name = UserName::new("carol").unwrap();
        assert_eq!(serde_json::to_string(&name).unwrap(), r#""carol""#);
    }

    #[test]
    fn ticket_debug_hides_value() {
        let t = Ticket::new("eyJhbGciOiJFUzI1NiJ9.secret-part").unwrap();
        let shown = format!("{t:?}");
        assert!(!shown.contains("secret-part"), "{shown}");
        assert!(shown.contains("32 bytes"), "{shown}");
    }
}
