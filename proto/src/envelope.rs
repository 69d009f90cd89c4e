//! The versioned envelope around every message:
//! `{"v":1,"id":<u64>,"body":{"type":"…",…}}`.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::frame::{encode_frame, Frame, FrameError};

/// The protocol version this crate speaks. A peer sending another version
/// gets `unsupported_version` and the connection closes.
pub const PROTOCOL_VERSION: u64 = 1;

/// The id the agent puts on an error reply to a frame it could not read,
/// since it has no request id to echo. Clients never send id 0.
pub const UNCORRELATED_ID: u64 = 0;

/// One message with its protocol version and correlation id.
///
/// Requests carry a fresh id chosen by the client; each reply carries the
/// id of the request it answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Envelope<B> {
    /// Protocol version, [`PROTOCOL_VERSION`].
    pub v: u64,
    /// Correlation id.
    pub id: u64,
    /// The message.
    pub body: B,
}

/// Only the version, to tell an unsupported version from a malformed
/// frame when the full decode fails. Other fields are skipped unread.
#[derive(Deserialize)]
struct VersionProbe {
    v: u64,
}

impl<B> Envelope<B> {
    /// An envelope of the current version.
    pub fn new(id: u64, body: B) -> Self {
        Self {
            v: PROTOCOL_VERSION,
            id,
            body,
        }
    }
}

impl<B: Serialize> Envelope<B> {
    /// Encodes this envelope as one frame (wiped when dropped).
    pub fn encode(&self) -> Result<Zeroizing<Vec<u8>>, FrameError> {
        encode_frame(self)
    }
}

impl<B: DeserializeOwned> Envelope<B> {
    /// Decodes one frame.
    ///
    /// A frame whose `v` is a number other than [`PROTOCOL_VERSION`] is
    /// [`FrameError::UnsupportedVersion`], whatever its body; anything else
    /// that does not decode is [`FrameError::Malformed`].
    pub fn decode(frame: &Frame) -> Result<Self, FrameError> {
        Self::decode_str(frame.as_str())
    }

    /// Decodes one frame's JSON text (without the newline).
    pub fn decode_str(json: &str) -> Result<Self, FrameError> {
        match serde_json::from_str::<Self>(json) {
            Ok(envelope) if envelope.v == PROTOCOL_VERSION => Ok(envelope),
            Ok(envelope) => Err(FrameError::UnsupportedVersion(envelope.v)),
            Err(err) => match serde_json::from_str::<VersionProbe>(json) {
                Ok(probe) if probe.v != PROTOCOL_VERSION => {
                    Err(FrameError::UnsupportedVersion(probe.v))
                }
                _ => Err(FrameError::Malformed(err.to_string())),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    #[test]
    fn shape_on_the_wire() {
        let env = Envelope::new(7, serde_json::json!({"type": "status"}));
        let bytes = env.encode().unwrap();
        assert_eq!(
            std::str::from_utf8(&bytes).unwrap(),
            "{\"v\":1,\"id\":7,\"body\":{\"type\":\"status\"}}\n"
        );
    }

    #[test]
    fn version_checks() {
        let ok = Envelope::<Value>::decode_str(r#"{"v":1,"id":1,"body":null}"#).unwrap();
        assert_eq!(ok.id, 1);
        assert_eq!(
            Envelope::<Value>::decode_str(r#"{"v":2,"id":1,"body":null}"#),
            Err(FrameError::UnsupportedVersion(2))
        );
        // A future version may reshape everything else: still the version error.
        assert_eq!(
            Envelope::<Value>::decode_str(r#"{"v":9,"ident":"x","payload":[]}"#),
            Err(FrameError::UnsupportedVersion(9))
        );
        assert_eq!(
            Envelope::<Value>::decode_str(r#"{"v":0,"id":1,"body":null}"#),
            Err(FrameError::UnsupportedVersion(0))
        );
        for bad in [
            r#"{"v":"1","id":1,"body":null}"#,
            r#"{"v":-1,"id":1,"body":null}"#,
            r#"{"v":1.5,"id":1,"body":null}"#,
            r#"{"id":1,"body":null}"#,
        ] {
            assert!(
                matches!(
                    Envelope::<Value>::decode_str(bad),
                    Err(FrameError::Malformed(_))
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn unknown_and_missing_fields() {
        let unknown = Envelope::<Value>::decode_str(r#"{"v":1,"id":1,"body":null,"x":0}"#);
        match unknown {
            Err(FrameError::Malformed(m)) => assert!(m.contains("unknown field"), "{m}"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            Envelope::<Value>::decode_str(r#"{"v":1,"body":null}"#),
            Err(FrameError::Malformed(_))
        ));
        assert!(matches!(
            Envelope::<Value>::decode_str(r#"{"v":1,"id":-3,"body":null}"#),
            Err(FrameError::Malformed(_))
        ));
    }

    #[test]
    fn deep_nesting_is_malformed_not_a_crash() {
        let depth = 60_000;
        let json = format!(
            "{{\"v\":1,\"id\":1,\"body\":{}{}}}",
            "[".repeat(depth),
            "]".repeat(depth)
        );
        match Envelope::<Value>::decode_str(&json) {
            Err(FrameError::Malformed(m)) => assert!(m.contains("recursion limit"), "{m}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn not_json_at_all() {
        for bad in [
            "hello",
            "{",
            "null",
            "[1,2]",
            "{\"v\":1,\"id\":1,\"body\":null} trailing",
        ] {
            assert!(
                matches!(
                    Envelope::<Value>::decode_str(bad),
                    Err(FrameError::Malformed(_))
                ),
                "{bad}"
            );
        }
    }
}
