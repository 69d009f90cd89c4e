//! [`SecretString`]: a PIN, password or one-time code on its way through
//! the agent socket.

use std::fmt;

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};
use thiserror::Error;
use zeroize::Zeroizing;

/// Longest secret, in bytes.
pub const MAX_SECRET_LEN: usize = 1024;

/// A secret was refused. The message never contains the secret.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum SecretError {
    /// Longer than [`MAX_SECRET_LEN`].
    #[error("secret is longer than {MAX_SECRET_LEN} bytes")]
    TooLong,
    /// Contains NUL, which would cut the secret short in a C string (PAM).
    #[error("secret contains a NUL character")]
    Nul,
}

/// A secret string, wiped from memory when dropped.
///
/// `Debug` and `Display` print `[redacted]`; the value is reached only
/// through [`expose`](Self::expose). It serializes as a JSON string. Equality
/// is not constant-time: compare secrets for authentication elsewhere.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretString(Zeroizing<String>);

impl SecretString {
    /// Wraps `value`, refusing it (and wiping it) if it breaks the limits.
    pub fn new(value: impl Into<String>) -> Result<Self, SecretError> {
        let value = Zeroizing::new(value.into());
        if value.len() > MAX_SECRET_LEN {
            return Err(SecretError::TooLong);
        }
        if value.contains('\0') {
            return Err(SecretError::Nul);
        }
        Ok(Self(value))
    }

    /// The secret itself. Do not log it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the secret is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for SecretString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl fmt::Display for SecretString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl Serialize for SecretString {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.expose())
    }
}

impl<'de> Deserialize<'de> for SecretString {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        // `deserialize_any` rather than `deserialize_str`: for a non-string
        // value serde_json's `deserialize_str` builds its own "invalid type"
        // error quoting the value (`integer 1234`), which would put a PIN
        // sent as a number into an error message. Through `deserialize_any`
        // every value reaches `SecretVisitor`, whose errors never quote it.
        deserializer.deserialize_any(SecretVisitor)
    }
}

struct SecretVisitor;

impl SecretVisitor {
    fn wrong_type<E: de::Error>() -> E {
        E::custom("secret must be a JSON string")
    }
}

impl<'de> Visitor<'de> for SecretVisitor {
    type Value = SecretString;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "a string of at most {MAX_SECRET_LEN} bytes")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<SecretString, E> {
        // Check before copying, so an oversized secret is never copied.
        if v.len() > MAX_SECRET_LEN {
            return Err(E::custom(SecretError::TooLong));
        }
        SecretString::new(v).map_err(E::custom)
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<SecretString, E> {
        SecretString::new(v).map_err(E::custom)
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<SecretString, E> {
        Err(Self::wrong_type())
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<SecretString, E> {
        Err(Self::wrong_type())
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<SecretString, E> {
        Err(Self::wrong_type())
    }

    fn visit_i128<E: de::Error>(self, _: i128) -> Result<SecretString, E> {
        Err(Self::wrong_type())
    }

    fn visit_u128<E: de::Error>(self, _: u128) -> Result<SecretString, E> {
        Err(Self::wrong_type())
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<SecretString, E> {
        Err(Self::wrong_type())
    }

    fn visit_bytes<E: de::Error>(self, _: &[u8]) -> Result<SecretString, E> {
        Err(Self::wrong_type())
    }

    fn visit_unit<E: de::Error>(self) -> Result<SecretString, E> {
        Err(Self::wrong_type())
    }

    fn visit_none<E: de::Error>(self) -> Result<SecretString, E> {
        Err(Self::wrong_type())
    }

    fn visit_seq<A: de::SeqAccess<'de>>(self, _: A) -> Result<SecretString, A::Error> {
        Err(Self::wrong_type())
    }

    fn visit_map<A: de::MapAccess<'de>>(self, _: A) -> Result<SecretString, A::Error> {
        Err(Self::wrong_type())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_display_redact() {
        let s = SecretString::new("493817").unwrap();
        assert_eq!(format!("{s:?}"), "[redacted]");
        assert_eq!(format!("{s}"), "[redacted]");
        assert_eq!(format!("{s:#?}"), "[redacted]");
        assert_eq!(s.expose(), "493817");
    }

    #[test]
    fn round_trip_as_json_string() {
        let s = SecretString::new("pa\"ss\\wörd").unwrap();
        let json = serde_json::to_string(&s).unwrap();
        assert_eq!(json, r#""pa\"ss\\wörd""#);
        let back: SecretString = serde_json::from_str(&json).unwrap();
        assert_eq!(back, s);
    }

    #[test]
    fn length_limit_both_ways() {
        let max = "7".repeat(MAX_SECRET_LEN);
        assert!(SecretString::new(max.clone()).is_ok());
        assert!(serde_json::from_str::<SecretString>(&format!("\"{max}\"")).is_ok());
        let over = "7".repeat(MAX_SECRET_LEN + 1);
        assert_eq!(SecretString::new(over.clone()), Err(SecretError::TooLong));
        let err = serde_json::from_str::<SecretString>(&format!("\"{over}\"")).unwrap_err();
        assert!(err.to_string().contains("longer than"), "{err}");
        // Escapes take the owned-string path in serde_json.
        let escaped = format!("\"\\n{}\"", "7".repeat(MAX_SECRET_LEN));
        assert!(serde_json::from_str::<SecretString>(&escaped).is_err());
    }

    #[test]
    fn nul_refused() {
        assert_eq!(SecretString::new("12\u{0}34"), Err(SecretError::Nul));
        assert!(serde_json::from_str::<SecretString>(r#""12\u000034""#).is_err());
    }

    #[test]
    fn wrong_type_errors_do_not_quote_the_value() {
        for json in [
            "493817",
            "-493817",
            "4938.17",
            "true",
            "null",
            "[\"493817\"]",
        ] {
            let err = serde_json::from_str::<SecretString>(json).unwrap_err();
            let msg = err.to_string();
            assert!(
                !msg.contains("493817") && !msg.contains("4938"),
                "{json}: {msg}"
            );
            assert!(
                msg.contains("secret must be a JSON string"),
                "{json}: {msg}"
            );
        }
    }
}
