//! A PIV applet (NIST SP 800-73-4, the subset the agent uses) as a pure state
//! machine: bytes of a command APDU in, bytes of a response APDU out.
//!
//! Persistent state (keys, certificates, PIN, PUK, retry counters) survives
//! power cycles; session state (selection, PIN verified, chaining buffers)
//! does not. Every input is untrusted: nothing here panics, every length is
//! bounded.

pub mod apdu;
pub mod keys;
pub mod tlv;

use std::fmt;

use thiserror::Error;
use zeroize::Zeroizing;

use apdu::{sw, Command, Response};
use keys::SlotCredential;

/// The PIV application identifier (RID A0 00 00 03 08, PIX 00 00 10 00 01 00).
pub const PIV_AID: [u8; 11] = [
    0xA0, 0x00, 0x00, 0x03, 0x08, 0x00, 0x00, 0x10, 0x00, 0x01, 0x00,
];
/// Shortest AID prefix that selects the applet (the RID plus the first PIX byte
/// is what real cards need; the RID alone is accepted too).
pub const MIN_SELECT_AID: usize = 5;
/// Largest command data accepted across a command chain.
pub const MAX_CHAINED_DATA: usize = 8192;
/// Longest response chunk.
pub const MAX_RESPONSE_CHUNK: usize = 256;

/// Data object: Card Holder Unique Identifier.
pub const OBJ_CHUID: u32 = 0x5FC102;
/// Data object: X.509 certificate for PIV authentication (slot 9A).
pub const OBJ_CERT_9A: u32 = 0x5FC105;
/// Data object: X.509 certificate for digital signature (slot 9C).
pub const OBJ_CERT_9C: u32 = 0x5FC10A;

const INS_SELECT: u8 = 0xA4;
const INS_GET_DATA: u8 = 0xCB;
const INS_VERIFY: u8 = 0x20;
const INS_CHANGE_REFERENCE: u8 = 0x24;
const INS_RESET_RETRY: u8 = 0x2C;
const INS_GENERAL_AUTHENTICATE: u8 = 0x87;
const INS_GET_RESPONSE: u8 = 0xC0;

const KEY_REF_PIN: u8 = 0x80;
const KEY_REF_PUK: u8 = 0x81;

/// The two key slots this card has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SlotId {
    /// 9A, PIV authentication: PIN once per session.
    Authentication,
    /// 9C, digital signature: PIN right before every signature.
    Signature,
}

impl SlotId {
    /// The key reference (P2 of GENERAL AUTHENTICATE).
    pub fn key_ref(self) -> u8 {
        match self {
            Self::Authentication => 0x9A,
            Self::Signature => 0x9C,
        }
    }

    /// The slot for a key reference.
    pub fn from_key_ref(r: u8) -> Option<Self> {
        match r {
            0x9A => Some(Self::Authentication),
            0x9C => Some(Self::Signature),
            _ => None,
        }
    }

    /// The data object holding the slot's certificate.
    pub fn cert_object(self) -> u32 {
        match self {
            Self::Authentication => OBJ_CERT_9A,
            Self::Signature => OBJ_CERT_9C,
        }
    }
}

/// Errors in a card configuration.
#[derive(Debug, Error)]
pub enum ConfigError {
    /// A PIN must be 6 to 8 ASCII digits.
    #[error("a PIN must be 6 to 8 digits")]
    BadPin,
    /// A PUK must be 6 to 8 bytes, none of them 0xFF.
    #[error("a PUK must be 6 to 8 characters")]
    BadPuk,
    /// Retry limits must be between 1 and 15.
    #[error("retry limits must be 1 to 15")]
    BadRetryLimit,
    /// A certificate too large for a PIV data object.
    #[error("certificate too large")]
    CertTooLarge,
}

/// A reference value (PIN or PUK) padded with 0xFF to 8 bytes.
#[derive(Clone)]
struct RefData(Zeroizing<[u8; 8]>);

impl RefData {
    fn from_padded(bytes: &[u8]) -> Option<Self> {
        let arr: [u8; 8] = bytes.try_into().ok()?;
        Some(Self(Zeroizing::new(arr)))
    }

    fn pad(value: &[u8]) -> Option<Self> {
        if !(6..=8).contains(&value.len()) || value.contains(&0xFF) {
            return None;
        }
        let mut arr = Zeroizing::new([0xFFu8; 8]);
        arr.get_mut(..value.len())?.copy_from_slice(value);
        Some(Self(arr))
    }

    /// The unpadded value, if the padding is well-formed (6 to 8 bytes, then
    /// only 0xFF).
    fn unpadded_len(&self) -> Option<usize> {
        let len = self.0.iter().position(|b| *b == 0xFF).unwrap_or(8);
        let rest_ok = self
            .0
            .get(len..)
            .is_some_and(|r| r.iter().all(|b| *b == 0xFF));
        (rest_ok && (6..=8).contains(&len)).then_some(len)
    }

    fn is_valid_pin(&self) -> bool {
        self.unpadded_len()
            .and_then(|n| self.0.get(..n))
            .is_some_and(|v| v.iter().all(u8::is_ascii_digit))
    }

    fn is_valid_puk(&self) -> bool {
        self.unpadded_len().is_some()
    }

    /// Constant-time comparison.
    fn matches(&self, candidate: &[u8]) -> bool {
        if candidate.len() != 8 {
            return false;
        }
        let diff = self
            .0
            .iter()
            .zip(candidate)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b));
        diff == 0
    }
}

impl fmt::Debug for RefData {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<secret>")
    }
}

/// What a card is made of.
#[derive(Debug)]
pub struct CardConfig {
    pin: RefData,
    puk: RefData,
    max_pin_tries: u8,
    max_puk_tries: u8,
    slot_9a: Option<SlotCredential>,
    slot_9c: Option<SlotCredential>,
    chuid: Vec<u8>,
}

impl CardConfig {
    /// A card with `pin` (6-8 digits) and `puk` (6-8 characters), three tries
    /// each, no keys yet, and a CHUID with a random GUID.
    pub fn new(pin: &str, puk: &str) -> Result<Self, ConfigError> {
        let pin = RefData::pad(pin.as_bytes()).ok_or(ConfigError::BadPin)?;
        if !pin.is_valid_pin() {
            return Err(ConfigError::BadPin);
        }
        let puk = RefData::pad(puk.as_bytes()).ok_or(ConfigError::BadPuk)?;
        let mut guid = [0u8; 16];
        // A failing system RNG only makes the GUID less unique.
        let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut guid);
        Ok(Self {
            pin,
            puk,
            max_pin_tries: 3,
            max_puk_tries: 3,
            slot_9a: None,
            slot_9c: None,
            chuid: chuid(&guid),
        })
    }

    /// Sets the retry limits (1 to 15 each).
    pub fn with_retry_limits(mut self, pin: u8, puk: u8) -> Result<Self, ConfigError> {
        if !(1..=15).contains(&pin) || !(1..=15).contains(&puk) {
            return Err(ConfigError::BadRetryLimit);
        }
        self.max_pin_tries = pin;
        self.max_puk_tries = puk;
        Ok(self)
    }

    /// Puts a key and certificate into a slot.
    pub fn with_slot(mut self, slot: SlotId, cred: SlotCredential) -> Result<Self, ConfigError> {
        // 53 { 70 cert 71 00 FE 00 } must fit a three-byte length.
        if cred.cert_der.len() > tlv::MAX_VALUE_LEN - 16 {
            return Err(ConfigError::CertTooLarge);
        }
        match slot {
            SlotId::Authentication => self.slot_9a = Some(cred),
            SlotId::Signature => self.slot_9c = Some(cred),
        }
        Ok(self)
    }
}

/// A CHUID object value (the content of tag 53): FASC-N, GUID, expiry,
/// an empty issuer signature and an empty error detection code.
fn chuid(guid: &[u8; 16]) -> Vec<u8> {
    // A FASC-N of a test agency (all zeros but the start/stop sentinels).
    let mut fascn = [0u8; 25];
    fascn[0] = 0xD4;
    fascn[24] = 0x0F;
    let mut inner = Vec::with_capacity(64);
    let parts: [(u32, &[u8]); 5] = [
        (0x30, &fascn),
        (0x34, guid),
        (0x35, b"20441231"),
        (0x3E, &[]),
        (0xFE, &[]),
    ];
    for (tag, value) in parts {
        // Small fixed sizes; cannot exceed the TLV limits.
        let _ = tlv::write(&mut inner, tag, value);
    }
    inner
}

/// Chained command data being collected.
#[derive(Debug)]
struct Chain {
    ins: u8,
    p1: u8,
    p2: u8,
    data: Zeroizing<Vec<u8>>,
}

/// The applet.
pub struct PivApplet {
    config: CardConfig,
    pin_tries_left: u8,
    puk_tries_left: u8,
    selected: bool,
    pin_verified: bool,
    /// Set by a successful VERIFY, consumed by the next command: a 9C
    /// signature needs it ("PIN always").
    pin_just_verified: bool,
    chain: Option<Chain>,
    pending_response: Vec<u8>,
}

impl fmt::Debug for PivApplet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PivApplet")
            .field("pin_tries_left", &self.pin_tries_left)
            .field("puk_tries_left", &self.puk_tries_left)
            .field("selected", &self.selected)
            .field("pin_verified", &self.pin_verified)
            .finish_non_exhaustive()
    }
}

/// The ATR: T=1, historical bytes "ClinAuth" (proprietary), with TCK.
pub fn atr() -> Vec<u8> {
    let mut atr = vec![0x3B, 0x88, 0x80, 0x01];
    atr.extend_from_slice(b"ClinAuth");
    let tck = atr.iter().skip(1).fold(0u8, |acc, b| acc ^ b);
    atr.push(tck);
    atr
}

impl PivApplet {
    /// A card in its initial state, powered off.
    pub fn new(config: CardConfig) -> Self {
        Self {
            pin_tries_left: config.max_pin_tries,
            puk_tries_left: config.max_puk_tries,
            config,
            selected: false,
            pin_verified: false,
            pin_just_verified: false,
            chain: None,
            pending_response: Vec::new(),
        }
    }

    /// PIN tries left (0 = blocked).
    pub fn pin_tries_left(&self) -> u8 {
        self.pin_tries_left
    }

    /// PUK tries left (0 = blocked).
    pub fn puk_tries_left(&self) -> u8 {
        self.puk_tries_left
    }

    /// Whether the PIN is verified in this session.
    pub fn pin_verified(&self) -> bool {
        self.pin_verified
    }

    /// The ATR this card answers with.
    pub fn atr(&self) -> Vec<u8> {
        atr()
    }

    /// Power-off, power-on and reset all end the session.
    pub fn reset_session(&mut self) {
        self.selected = false;
        self.pin_verified = false;
        self.pin_just_verified = false;
        self.chain = None;
        self.pending_response.clear();
    }

    /// Processes one command APDU and returns the response APDU bytes.
    pub fn process(&mut self, raw: &[u8]) -> Vec<u8> {
        self.process_response(raw).to_bytes()
    }

    /// Processes one command APDU.
    pub fn process_response(&mut self, raw: &[u8]) -> Response {
        let cmd = match Command::parse(raw) {
            Ok(c) => c,
            Err(_) => {
                self.chain = None;
                self.pending_response.clear();
                self.pin_just_verified = false;
                return Response::status(sw::WRONG_LENGTH);
            }
        };
        // Only the basic logical channel, no secure messaging; bit 0x10 is
        // command chaining.
        if cmd.cla & !0x10 != 0 {
            return Response::status(sw::CLA_NOT_SUPPORTED);
        }
        if cmd.ins == INS_GET_RESPONSE {
            return self.get_response(&cmd);
        }
        self.pending_response.clear();

        let chained = cmd.cla & 0x10 != 0;
        if chained {
            return self.add_to_chain(&cmd);
        }
        // The last command of a chain carries the collected data.
        let collected = match self.chain.take() {
            Some(chain) if (chain.ins, chain.p1, chain.p2) == (cmd.ins, cmd.p1, cmd.p2) => {
                let mut data = chain.data;
                if data.len() + cmd.data.len() > MAX_CHAINED_DATA {
                    self.pin_just_verified = false;
                    return Response::status(sw::WRONG_LENGTH);
                }
                data.extend_from_slice(cmd.data);
                Some(data)
            }
            // Another command abandons an unfinished chain.
            _ => None,
        };
        let data: &[u8] = collected.as_deref().map_or(cmd.data, |d| d.as_slice());

        // "PIN always" lasts exactly until the next command.
        let pin_just_verified = std::mem::take(&mut self.pin_just_verified);

        if !self.selected && cmd.ins != INS_SELECT {
            return Response::status(sw::INS_NOT_SUPPORTED);
        }
        let response = match cmd.ins {
            INS_SELECT => self.select(&cmd, data),
            INS_GET_DATA => self.get_data(&cmd, data),
            INS_VERIFY => self.verify(&cmd, data),
            INS_CHANGE_REFERENCE => self.change_reference(&cmd, data),
            INS_RESET_RETRY => self.reset_retry_counter(&cmd, data),
            INS_GENERAL_AUTHENTICATE => self.general_authenticate(&cmd, data, pin_just_verified),
            _ => Response::status(sw::INS_NOT_SUPPORTED),
        };
        self.chunk(response, cmd.le)
    }

    fn add_to_chain(&mut self, cmd: &Command<'_>) -> Response {
        // The parts of a chained GENERAL AUTHENTICATE are one command: a PIN
        // verified just before it still counts.
        if cmd.ins != INS_GENERAL_AUTHENTICATE {
            self.pin_just_verified = false;
        }
        let chain = match self.chain.take() {
            Some(c) if (c.ins, c.p1, c.p2) == (cmd.ins, cmd.p1, cmd.p2) => c,
            Some(_) => return Response::status(sw::LAST_COMMAND_EXPECTED),
            None => Chain {
                ins: cmd.ins,
                p1: cmd.p1,
                p2: cmd.p2,
                data: Zeroizing::new(Vec::new()),
            },
        };
        if chain.data.len() + cmd.data.len() > MAX_CHAINED_DATA {
            return Response::status(sw::WRONG_LENGTH);
        }
        let mut chain = chain;
        chain.data.extend_from_slice(cmd.data);
        self.chain = Some(chain);
        Response::status(sw::OK)
    }

    /// Splits long response data into chunks fetched by GET RESPONSE.
    fn chunk(&mut self, mut response: Response, le: Option<usize>) -> Response {
        let max = le.unwrap_or(MAX_RESPONSE_CHUNK).min(MAX_RESPONSE_CHUNK);
        if response.sw != sw::OK || response.data.len() <= max {
            return response;
        }
        self.pending_response = response.data.split_off(max);
        response.sw = sw::bytes_remaining(self.pending_response.len());
        response
    }

    fn get_response(&mut self, cmd: &Command<'_>) -> Response {
        self.pin_just_verified = false;
        if cmd.p1 != 0 || cmd.p2 != 0 {
            return Response::status(sw::WRONG_P1P2);
        }
        if self.pending_response.is_empty() {
            return Response::status(sw::CONDITIONS_NOT_SATISFIED);
        }
        let max = cmd.le.unwrap_or(MAX_RESPONSE_CHUNK).min(MAX_RESPONSE_CHUNK);
        let n = max.min(self.pending_response.len());
        let rest = self.pending_response.split_off(n);
        let data = std::mem::replace(&mut self.pending_response, rest);
        if self.pending_response.is_empty() {
            Response::ok(data)
        } else {
            Response {
                data,
                sw: sw::bytes_remaining(self.pending_response.len()),
            }
        }
    }

    fn select(&mut self, cmd: &Command<'_>, data: &[u8]) -> Response {
        if cmd.p1 != 0x04 || (cmd.p2 != 0x00 && cmd.p2 != 0x0C) {
            return Response::status(sw::WRONG_P1P2);
        }
        let prefix_ok =
            data.len() >= MIN_SELECT_AID && PIV_AID.get(..data.len()).is_some_and(|p| p == data);
        if !prefix_ok {
            return Response::status(sw::NOT_FOUND);
        }
        self.selected = true;
        if cmd.p2 == 0x0C {
            return Response::status(sw::OK);
        }
        // Application property template: 4F PIX, 79 { 4F RID+PIX prefix }.
        let mut inner = Vec::new();
        let mut alloc = Vec::new();
        let ok = tlv::write(&mut inner, 0x4F, PIV_AID.get(5..).unwrap_or(&[])).is_ok()
            && tlv::write(&mut alloc, 0x4F, PIV_AID.get(..5).unwrap_or(&[])).is_ok()
            && tlv::write(&mut inner, 0x79, &alloc).is_ok();
        match (ok, tlv::encode(0x61, &inner)) {
            (true, Ok(apt)) => Response::ok(apt),
            _ => Response::status(sw::UNKNOWN),
        }
    }

    fn get_data(&mut self, cmd: &Command<'_>, data: &[u8]) -> Response {
        if (cmd.p1, cmd.p2) != (0x3F, 0xFF) {
            return Response::status(sw::WRONG_P1P2);
        }
        let Ok(elements) = tlv::parse_all(data) else {
            return Response::status(sw::WRONG_DATA);
        };
        let id = match elements.as_slice() {
            [tlv::Tlv { tag: 0x5C, value }] if (1..=3).contains(&value.len()) => {
                value.iter().fold(0u32, |acc, b| (acc << 8) | u32::from(*b))
            }
            _ => return Response::status(sw::WRONG_DATA),
        };
        let value = match id {
            OBJ_CHUID => Some(self.config.chuid.clone()),
            OBJ_CERT_9A => self.config.slot_9a.as_ref().and_then(cert_object),
            OBJ_CERT_9C => self.config.slot_9c.as_ref().and_then(cert_object),
            _ => None,
        };
        match value.map(|v| tlv::encode(0x53, &v)) {
            Some(Ok(obj)) => Response::ok(obj),
            Some(Err(_)) => Response::status(sw::UNKNOWN),
            None => Response::status(sw::NOT_FOUND),
        }
    }

    fn verify(&mut self, cmd: &Command<'_>, data: &[u8]) -> Response {
        if cmd.p2 != KEY_REF_PIN {
            return Response::status(sw::REF_DATA_NOT_FOUND);
        }
        match cmd.p1 {
            0x00 => {}
            // P1 = FF: reset the security status (SP 800-73-4 3.2.1).
            0xFF if data.is_empty() => {
                self.pin_verified = false;
                return Response::status(sw::OK);
            }
            _ => return Response::status(sw::WRONG_P1P2),
        }
        if data.is_empty() {
            return if self.pin_tries_left == 0 {
                Response::status(sw::AUTH_BLOCKED)
            } else if self.pin_verified {
                Response::status(sw::OK)
            } else {
                Response::status(sw::tries_left(self.pin_tries_left))
            };
        }
        if data.len() != 8 {
            return Response::status(sw::WRONG_DATA);
        }
        let sw = self.check_pin(data);
        if sw == sw::OK {
            self.pin_verified = true;
            self.pin_just_verified = true;
        }
        Response::status(sw)
    }

    /// Checks the PIN against the retry counter; a wrong PIN also ends the
    /// verified state.
    fn check_pin(&mut self, candidate: &[u8]) -> u16 {
        if self.pin_tries_left == 0 {
            return sw::AUTH_BLOCKED;
        }
        if self.config.pin.matches(candidate) {
            self.pin_tries_left = self.config.max_pin_tries;
            sw::OK
        } else {
            self.pin_tries_left = self.pin_tries_left.saturating_sub(1);
            self.pin_verified = false;
            sw::tries_left(self.pin_tries_left)
        }
    }

    fn check_puk(&mut self, candidate: &[u8]) -> u16 {
        if self.puk_tries_left == 0 {
            return sw::AUTH_BLOCKED;
        }
        if self.config.puk.matches(candidate) {
            self.puk_tries_left = self.config.max_puk_tries;
            sw::OK
        } else {
            self.puk_tries_left = self.puk_tries_left.saturating_sub(1);
            sw::tries_left(self.puk_tries_left)
        }
    }

    fn change_reference(&mut self, cmd: &Command<'_>, data: &[u8]) -> Response {
        if cmd.p1 != 0x00 {
            return Response::status(sw::WRONG_P1P2);
        }
        if cmd.p2 != KEY_REF_PIN && cmd.p2 != KEY_REF_PUK {
            return Response::status(sw::REF_DATA_NOT_FOUND);
        }
        let (Some(old), Some(new)) = (data.get(..8), data.get(8..).and_then(RefData::from_padded))
        else {
            return Response::status(sw::WRONG_DATA);
        };
        let is_pin = cmd.p2 == KEY_REF_PIN;
        let new_ok = if is_pin {
            new.is_valid_pin()
        } else {
            new.is_valid_puk()
        };
        if !new_ok {
            return Response::status(sw::WRONG_DATA);
        }
        let status = if is_pin {
            self.check_pin(old)
        } else {
            self.check_puk(old)
        };
        if status != sw::OK {
            return Response::status(status);
        }
        if is_pin {
            self.config.pin = new;
            self.pin_verified = true;
        } else {
            self.config.puk = new;
        }
        Response::status(sw::OK)
    }

    fn reset_retry_counter(&mut self, cmd: &Command<'_>, data: &[u8]) -> Response {
        if cmd.p1 != 0x00 {
            return Response::status(sw::WRONG_P1P2);
        }
        if cmd.p2 != KEY_REF_PIN {
            return Response::status(sw::REF_DATA_NOT_FOUND);
        }
        let (Some(puk), Some(new_pin)) =
            (data.get(..8), data.get(8..).and_then(RefData::from_padded))
        else {
            return Response::status(sw::WRONG_DATA);
        };
        if !new_pin.is_valid_pin() {
            return Response::status(sw::WRONG_DATA);
        }
        let status = self.check_puk(puk);
        if status != sw::OK {
            return Response::status(status);
        }
        self.config.pin = new_pin;
        self.pin_tries_left = self.config.max_pin_tries;
        self.pin_verified = false;
        Response::status(sw::OK)
    }

    fn general_authenticate(
        &mut self,
        cmd: &Command<'_>,
        data: &[u8],
        pin_just_verified: bool,
    ) -> Response {
        let Some(slot) = SlotId::from_key_ref(cmd.p2) else {
            return Response::status(sw::WRONG_P1P2);
        };
        let cred = match slot {
            SlotId::Authentication => self.config.slot_9a.as_ref(),
            SlotId::Signature => self.config.slot_9c.as_ref(),
        };
        let Some(cred) = cred else {
            return Response::status(sw::REF_DATA_NOT_FOUND);
        };
        if cmd.p1 != cred.key.algorithm().id() {
            return Response::status(sw::WRONG_P1P2);
        }
        // Dynamic authentication template: 7C { 82 00, 81 challenge }.
        let challenge = match tlv::parse_all(data).as_deref() {
            Ok([tlv::Tlv { tag: 0x7C, value }]) => match tlv::parse_all(value).as_deref() {
                Ok(inner) => {
                    let response_requested = tlv::find(inner, 0x82).is_some_and(|v| v.is_empty());
                    let only_known = inner.iter().all(|t| t.tag == 0x81 || t.tag == 0x82);
                    match tlv::find(inner, 0x81) {
                        Some(c) if response_requested && only_known && inner.len() == 2 => c,
                        _ => return Response::status(sw::WRONG_DATA),
                    }
                }
                Err(_) => return Response::status(sw::WRONG_DATA),
            },
            _ => return Response::status(sw::WRONG_DATA),
        };
        let allowed = match slot {
            SlotId::Authentication => self.pin_verified,
            SlotId::Signature => self.pin_verified && pin_just_verified,
        };
        if !allowed {
            return Response::status(sw::SECURITY_STATUS);
        }
        let Ok(signature) = cred.key.sign_raw(challenge) else {
            return Response::status(sw::WRONG_DATA);
        };
        let mut inner = Vec::with_capacity(signature.len() + 4);
        let encoded =
            tlv::write(&mut inner, 0x82, &signature).and_then(|()| tlv::encode(0x7C, &inner));
        match encoded {
            Ok(out) => Response::ok(out),
            Err(_) => Response::status(sw::UNKNOWN),
        }
    }
}

/// The value of a certificate object: 70 cert, 71 00 (uncompressed), FE 00.
fn cert_object(cred: &SlotCredential) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(cred.cert_der.len() + 12);
    tlv::write(&mut out, 0x70, &cred.cert_der).ok()?;
    tlv::write(&mut out, 0x71, &[0x00]).ok()?;
    tlv::write(&mut out, 0xFE, &[]).ok()?;
    Some(out)
}

#[cfg(test)]
mod tests;
