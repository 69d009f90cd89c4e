//! The reader protocol: how the agent asks a biometric reader for a capture
//! (docs/BIOMETRICS.md, "Reader protocol").
//!
//! A reader (or the vendor's bridge in front of it) listens on a Unix
//! stream socket or on a loopback TCP port. The agent connects, sends one
//! request frame, reads one response frame, and closes. A frame is a
//! 4-byte big-endian length and that many bytes of payload; a request is at
//! most [`MAX_REQUEST_LEN`] bytes, a response at most [`MAX_RESPONSE_LEN`].
//!
//! Request, version 1:
//!
//! ```text
//! "CABQ" ‖ 0x01 ‖ want (u8: 1 sealed template, 2 match decision, 3 either)
//! ‖ nonce (32) ‖ matcher public key (32; zeros when the server has none)
//! ‖ u8 len ‖ user ID (1..=64 bytes) ‖ u8 len ‖ reader ID (0..=64 bytes; 0: any)
//! ‖ wait (u32 BE, ms: how long the reader may wait for a finger)
//! ```
//!
//! Response, version 1:
//!
//! ```text
//! "CABP" ‖ 0x01 ‖ status (u8)
//!   status 0: ‖ kind (u8: 1 sealed template, 2 match decision) ‖ u16 BE len ‖ evidence
//!   status 1..=5: ‖ u8 len ‖ message (UTF-8, at most 200 bytes)
//! ```
//!
//! The evidence is the reader's own signed wire form (`clinauth_biometric`:
//! a `SealedCapture` or a `SignedDecision`), which the agent relays as
//! opaque bytes: it parses it only to refuse malformed or misbound
//! evidence early, never to open it. Identifiers are UTF-8 without control
//! characters. Decoding is strict: wrong magic or version, unknown values,
//! lengths out of range and trailing bytes are refused.

/// The largest request payload.
pub const MAX_REQUEST_LEN: usize = 512;
/// The largest response payload (the largest evidence is a 1,070-byte
/// sealed capture).
pub const MAX_RESPONSE_LEN: usize = 4096;
/// The largest evidence in a response.
pub const MAX_EVIDENCE_LEN: usize = MAX_RESPONSE_LEN - 16;
/// The longest user or reader ID.
pub const MAX_ID_LEN: usize = 64;
/// The longest status message.
pub const MAX_MESSAGE_LEN: usize = 200;

const REQUEST_MAGIC: [u8; 4] = *b"CABQ";
const RESPONSE_MAGIC: [u8; 4] = *b"CABP";
const VERSION: u8 = 1;

/// What the agent asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Want {
    /// A sealed template (the server matches).
    Sealed,
    /// A signed match decision (the reader matches).
    Decision,
    /// Whichever the reader makes.
    Either,
}

/// What the reader sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A sealed template.
    Sealed,
    /// A signed match decision.
    Decision,
}

impl Want {
    fn code(self) -> u8 {
        match self {
            Want::Sealed => 1,
            Want::Decision => 2,
            Want::Either => 3,
        }
    }

    /// Whether `kind` answers this.
    pub fn accepts(self, kind: Kind) -> bool {
        matches!(
            (self, kind),
            (Want::Either, _) | (Want::Sealed, Kind::Sealed) | (Want::Decision, Kind::Decision)
        )
    }
}

/// A capture request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// What is wanted.
    pub want: Want,
    /// The server's nonce.
    pub nonce: [u8; 32],
    /// The server's matcher key (HPKE, X25519).
    pub matcher_public_key: [u8; 32],
    /// The claimed user.
    pub user_id: String,
    /// The reader expected; empty: any.
    pub reader_id: String,
    /// How long the reader may wait for a finger, in ms.
    pub wait_ms: u32,
}

/// Why a reader could not capture.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// No finger in time.
    NoFinger,
    /// Serving another request.
    Busy,
    /// Match on reader: nothing enrolled for the user on the reader.
    NotEnrolled,
    /// The reader does not make what was asked (or is not that reader).
    Unsupported,
    /// The reader failed.
    Failure,
}

impl Status {
    fn code(self) -> u8 {
        match self {
            Status::NoFinger => 1,
            Status::Busy => 2,
            Status::NotEnrolled => 3,
            Status::Unsupported => 4,
            Status::Failure => 5,
        }
    }

    fn from_code(c: u8) -> Option<Status> {
        Some(match c {
            1 => Status::NoFinger,
            2 => Status::Busy,
            3 => Status::NotEnrolled,
            4 => Status::Unsupported,
            5 => Status::Failure,
            _ => return None,
        })
    }
}

/// A reader's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Response {
    /// The evidence, opaque.
    Evidence {
        /// What it is.
        kind: Kind,
        /// The reader's signed bytes.
        bytes: Vec<u8>,
    },
    /// No evidence, and why.
    Refused {
        /// The reason.
        status: Status,
        /// The reader's words.
        message: String,
    },
}

/// A frame that breaks the protocol.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("reader protocol: {0}")]
pub struct ProtocolError(pub &'static str);

fn valid_id(id: &str, allow_empty: bool) -> bool {
    (allow_empty || !id.is_empty()) && id.len() <= MAX_ID_LEN && !id.chars().any(char::is_control)
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], ProtocolError> {
        let (head, tail) = self
            .0
            .split_at_checked(n)
            .ok_or(ProtocolError("truncated"))?;
        self.0 = tail;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], ProtocolError> {
        let (head, tail) = self
            .0
            .split_first_chunk::<N>()
            .ok_or(ProtocolError("truncated"))?;
        self.0 = tail;
        Ok(*head)
    }

    fn u8(&mut self) -> Result<u8, ProtocolError> {
        let [b] = self.array::<1>()?;
        Ok(b)
    }

    fn text(&mut self, max: usize, what: &'static str) -> Result<String, ProtocolError> {
        let len = usize::from(self.u8()?);
        if len > max {
            return Err(ProtocolError(what));
        }
        let s = std::str::from_utf8(self.take(len)?).map_err(|_| ProtocolError(what))?;
        if s.chars().any(char::is_control) {
            return Err(ProtocolError(what));
        }
        Ok(s.to_owned())
    }

    fn header(&mut self, magic: [u8; 4]) -> Result<(), ProtocolError> {
        if self.array::<4>()? != magic {
            return Err(ProtocolError("wrong magic"));
        }
        if self.u8()? != VERSION {
            return Err(ProtocolError("unsupported version"));
        }
        Ok(())
    }

    fn end(&self) -> Result<(), ProtocolError> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(ProtocolError("trailing bytes"))
        }
    }
}

fn put_text(out: &mut Vec<u8>, s: &str, max: usize) {
    let bytes = s.as_bytes();
    let bytes = bytes.get(..max.min(bytes.len())).unwrap_or(bytes);
    out.push(u8::try_from(bytes.len()).unwrap_or(0));
    out.extend_from_slice(bytes);
}

impl Request {
    /// The payload. Refuses identifiers out of range.
    pub fn encode(&self) -> Result<Vec<u8>, ProtocolError> {
        if !valid_id(&self.user_id, false) {
            return Err(ProtocolError("invalid user ID"));
        }
        if !valid_id(&self.reader_id, true) {
            return Err(ProtocolError("invalid reader ID"));
        }
        let mut out = Vec::with_capacity(MAX_REQUEST_LEN);
        out.extend_from_slice(&REQUEST_MAGIC);
        out.push(VERSION);
        out.push(self.want.code());
        out.extend_from_slice(&self.nonce);
        out.extend_from_slice(&self.matcher_public_key);
        put_text(&mut out, &self.user_id, MAX_ID_LEN);
        put_text(&mut out, &self.reader_id, MAX_ID_LEN);
        out.extend_from_slice(&self.wait_ms.to_be_bytes());
        Ok(out)
    }

    /// Parses a payload (the reader's side).
    pub fn decode(bytes: &[u8]) -> Result<Request, ProtocolError> {
        if bytes.len() > MAX_REQUEST_LEN {
            return Err(ProtocolError("request too large"));
        }
        let mut r = Reader(bytes);
        r.header(REQUEST_MAGIC)?;
        let want = match r.u8()? {
            1 => Want::Sealed,
            2 => Want::Decision,
            3 => Want::Either,
            _ => return Err(ProtocolError("unknown request kind")),
        };
        let nonce = r.array::<32>()?;
        let matcher_public_key = r.array::<32>()?;
        let user_id = r.text(MAX_ID_LEN, "invalid user ID")?;
        if user_id.is_empty() {
            return Err(ProtocolError("invalid user ID"));
        }
        let reader_id = r.text(MAX_ID_LEN, "invalid reader ID")?;
        let wait_ms = u32::from_be_bytes(r.array::<4>()?);
        r.end()?;
        Ok(Request {
            want,
            nonce,
            matcher_public_key,
            user_id,
            reader_id,
            wait_ms,
        })
    }
}

impl Response {
    /// The payload (the reader's side). Refuses evidence too large.
    pub fn encode(&self) -> Result<Vec<u8>, ProtocolError> {
        let mut out = Vec::with_capacity(64);
        out.extend_from_slice(&RESPONSE_MAGIC);
        out.push(VERSION);
        match self {
            Response::Evidence { kind, bytes } => {
                if bytes.is_empty() || bytes.len() > MAX_EVIDENCE_LEN {
                    return Err(ProtocolError("evidence length out of range"));
                }
                out.push(0);
                out.push(match kind {
                    Kind::Sealed => 1,
                    Kind::Decision => 2,
                });
                let len = u16::try_from(bytes.len())
                    .map_err(|_| ProtocolError("evidence length out of range"))?;
                out.extend_from_slice(&len.to_be_bytes());
                out.extend_from_slice(bytes);
            }
            Response::Refused { status, message } => {
                out.push(status.code());
                let mut end = message.len().min(MAX_MESSAGE_LEN);
                while !message.is_char_boundary(end) {
                    end -= 1;
                }
                let clean: String = message
                    .get(..end)
                    .unwrap_or_default()
                    .chars()
                    .map(|c| if c.is_control() { ' ' } else { c })
                    .collect();
                put_text(&mut out, &clean, MAX_MESSAGE_LEN);
            }
        }
        Ok(out)
    }

    /// Parses a payload (the agent's side).
    pub fn decode(bytes: &[u8]) -> Result<Response, ProtocolError> {
        if bytes.len() > MAX_RESPONSE_LEN {
            return Err(ProtocolError("response too large"));
        }
        let mut r = Reader(bytes);
        r.header(RESPONSE_MAGIC)?;
        let response = match r.u8()? {
            0 => {
                let kind = match r.u8()? {
                    1 => Kind::Sealed,
                    2 => Kind::Decision,
                    _ => return Err(ProtocolError("unknown evidence kind")),
                };
                let len = usize::from(u16::from_be_bytes(r.array::<2>()?));
                if len == 0 || len > MAX_EVIDENCE_LEN {
                    return Err(ProtocolError("evidence length out of range"));
                }
                let bytes = r.take(len)?.to_vec();
                Response::Evidence { kind, bytes }
            }
            code => {
                let status = Status::from_code(code).ok_or(ProtocolError("unknown status"))?;
                let message = r.text(MAX_MESSAGE_LEN, "invalid message")?;
                Response::Refused { status, message }
            }
        };
        r.end()?;
        Ok(response)
    }
}

/// A frame: the 4-byte big-endian length and the payload.
pub fn frame(payload: &[u8]) -> Vec<u8> {
    let len = u32::try_from(payload.len()).unwrap_or(u32::MAX);
    let mut out = Vec::with_capacity(4 + payload.len());
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn request() -> Request {
        Request {
            want: Want::Sealed,
            nonce: [7; 32],
            matcher_public_key: [9; 32],
            user_id: "nurse.tanaka".into(),
            reader_id: "ward3-bio-1".into(),
            wait_ms: 30_000,
        }
    }

    #[test]
    fn request_round_trips_strictly() {
        let r = request();
        let bytes = r.encode().unwrap();
        assert!(bytes.len() <= MAX_REQUEST_LEN);
        assert_eq!(Request::decode(&bytes).unwrap(), r);
        let any = Request {
            reader_id: String::new(),
            want: Want::Either,
            ..request()
        };
        assert_eq!(Request::decode(&any.encode().unwrap()).unwrap(), any);
        for n in 0..bytes.len() {
            assert!(Request::decode(&bytes[..n]).is_err(), "prefix {n}");
        }
        let mut long = bytes.clone();
        long.push(0);
        assert_eq!(Request::decode(&long), Err(ProtocolError("trailing bytes")));
        let mut bad = bytes.clone();
        bad[5] = 9;
        assert!(Request::decode(&bad).is_err());
        for user in ["", "a\nb", &"x".repeat(65)] {
            let r = Request {
                user_id: user.into(),
                ..request()
            };
            assert!(r.encode().is_err(), "{user:?}");
        }
    }

    #[test]
    fn response_round_trips_strictly() {
        let ok = Response::Evidence {
            kind: Kind::Decision,
            bytes: vec![1, 2, 3],
        };
        let bytes = ok.encode().unwrap();
        assert_eq!(Response::decode(&bytes).unwrap(), ok);
        for n in 0..bytes.len() {
            assert!(Response::decode(&bytes[..n]).is_err(), "prefix {n}");
        }
        let refused = Response::Refused {
            status: Status::NoFinger,
            message: "no finger\nin time".into(),
        };
        let back = Response::decode(&refused.encode().unwrap()).unwrap();
        assert_eq!(
            back,
            Response::Refused {
                status: Status::NoFinger,
                message: "no finger in time".into()
            }
        );
        let huge = Response::Evidence {
            kind: Kind::Sealed,
            bytes: vec![0; MAX_EVIDENCE_LEN + 1],
        };
        assert!(huge.encode().is_err());
        let empty = Response::Evidence {
            kind: Kind::Sealed,
            bytes: vec![],
        };
        assert!(empty.encode().is_err());
        // A length field larger than what follows, unknown kinds and statuses.
        let mut lying = bytes.clone();
        lying[7] = 0x10;
        assert!(Response::decode(&lying).is_err());
        let mut kind = bytes.clone();
        kind[6] = 3;
        assert!(Response::decode(&kind).is_err());
        let mut status = bytes.clone();
        status[5] = 6;
        assert!(Response::decode(&status).is_err());
        assert!(Response::decode(&vec![0; MAX_RESPONSE_LEN + 1]).is_err());
        assert!(Want::Either.accepts(Kind::Sealed));
        assert!(!Want::Sealed.accepts(Kind::Decision));
        assert_eq!(frame(&[1, 2]), vec![0, 0, 0, 2, 1, 2]);
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            let _ = Response::decode(&bytes);
            let _ = Request::decode(&bytes);
        }
    }
}
