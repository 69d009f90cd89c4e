//! Command APDU parsing (ISO/IEC 7816-4 short and extended cases) and
//! response APDUs.

use thiserror::Error;

/// The largest command data field accepted in one APDU.
pub const MAX_COMMAND_DATA: usize = 4096;

/// Status words the applet answers with.
pub mod sw {
    /// Success.
    pub const OK: u16 = 0x9000;
    /// Wrong length.
    pub const WRONG_LENGTH: u16 = 0x6700;
    /// Last command of a chain expected.
    pub const LAST_COMMAND_EXPECTED: u16 = 0x6883;
    /// Security status not satisfied.
    pub const SECURITY_STATUS: u16 = 0x6982;
    /// Authentication method blocked.
    pub const AUTH_BLOCKED: u16 = 0x6983;
    /// Conditions of use not satisfied.
    pub const CONDITIONS_NOT_SATISFIED: u16 = 0x6985;
    /// Incorrect parameters in the data field.
    pub const WRONG_DATA: u16 = 0x6A80;
    /// Function not supported.
    pub const FUNC_NOT_SUPPORTED: u16 = 0x6A81;
    /// File or application not found.
    pub const NOT_FOUND: u16 = 0x6A82;
    /// Incorrect P1 or P2.
    pub const WRONG_P1P2: u16 = 0x6A86;
    /// Referenced data not found.
    pub const REF_DATA_NOT_FOUND: u16 = 0x6A88;
    /// Instruction not supported.
    pub const INS_NOT_SUPPORTED: u16 = 0x6D00;
    /// Class not supported.
    pub const CLA_NOT_SUPPORTED: u16 = 0x6E00;
    /// No precise diagnosis.
    pub const UNKNOWN: u16 = 0x6F00;
    /// Verification failed, `n` tries left (`63 Cn`).
    pub const fn tries_left(n: u8) -> u16 {
        0x63C0 | (n as u16 & 0x0F)
    }
    /// More response bytes waiting (`61 xx`, 0 meaning 256 or more).
    pub const fn bytes_remaining(n: usize) -> u16 {
        if n >= 256 {
            0x6100
        } else {
            0x6100 | n as u16
        }
    }
}

/// Why bytes are not a command APDU.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum ApduError {
    /// Fewer than four header bytes.
    #[error("APDU shorter than its header")]
    TooShort,
    /// The length fields do not match the number of bytes.
    #[error("APDU length fields inconsistent")]
    BadLength,
    /// The data field is longer than [`MAX_COMMAND_DATA`].
    #[error("APDU data too long")]
    TooLong,
}

/// A parsed command APDU borrowing its data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Command<'a> {
    /// Class byte.
    pub cla: u8,
    /// Instruction byte.
    pub ins: u8,
    /// Parameter 1.
    pub p1: u8,
    /// Parameter 2.
    pub p2: u8,
    /// Command data (empty when there is no Lc).
    pub data: &'a [u8],
    /// Expected response length; `None` when absent, `Some(0)` never
    /// (an encoded 0 becomes 256, or 65536 in the extended form).
    pub le: Option<usize>,
}

impl<'a> Command<'a> {
    /// Parses the four ISO cases, short and extended.
    pub fn parse(raw: &'a [u8]) -> Result<Self, ApduError> {
        let (header, body) = match raw {
            [cla, ins, p1, p2, body @ ..] => ([*cla, *ins, *p1, *p2], body),
            _ => return Err(ApduError::TooShort),
        };
        let [cla, ins, p1, p2] = header;
        let (data, le) = match body {
            // Case 1.
            [] => (&body[..0], None),
            // Case 2S.
            [le] => (&body[..0], Some(short_le(*le))),
            // Extended cases start with a zero byte followed by two bytes.
            [0, hi, lo, rest @ ..] if body.len() >= 3 => {
                let n = usize::from(u16::from_be_bytes([*hi, *lo]));
                if rest.is_empty() {
                    // Case 2E.
                    (&body[..0], Some(extended_le(n)))
                } else {
                    if n == 0 {
                        return Err(ApduError::BadLength);
                    }
                    if n > MAX_COMMAND_DATA {
                        return Err(ApduError::TooLong);
                    }
                    match rest.len().checked_sub(n) {
                        // Case 3E.
                        Some(0) => (rest, None),
                        // Case 4E.
                        Some(2) => {
                            let (data, le) = rest.split_at(n);
                            let le = match le {
                                [a, b] => usize::from(u16::from_be_bytes([*a, *b])),
                                _ => return Err(ApduError::BadLength),
                            };
                            (data, Some(extended_le(le)))
                        }
                        _ => return Err(ApduError::BadLength),
                    }
                }
            }
            [lc, rest @ ..] => {
                let n = usize::from(*lc);
                if n == 0 {
                    return Err(ApduError::BadLength);
                }
                match rest.len().checked_sub(n) {
                    // Case 3S.
                    Some(0) => (rest, None),
                    // Case 4S.
                    Some(1) => {
                        let (data, le) = rest.split_at(n);
                        (data, le.first().map(|b| short_le(*b)))
                    }
                    _ => return Err(ApduError::BadLength),
                }
            }
        };
        Ok(Self {
            cla,
            ins,
            p1,
            p2,
            data,
            le,
        })
    }
}

fn short_le(b: u8) -> usize {
    if b == 0 {
        256
    } else {
        usize::from(b)
    }
}

fn extended_le(n: usize) -> usize {
    if n == 0 {
        65536
    } else {
        n
    }
}

/// A response APDU: data and status word.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// Response data.
    pub data: Vec<u8>,
    /// Status word.
    pub sw: u16,
}

impl Response {
    /// A status word without data.
    pub fn status(sw: u16) -> Self {
        Self {
            data: Vec::new(),
            sw,
        }
    }

    /// `90 00` with data.
    pub fn ok(data: Vec<u8>) -> Self {
        Self { data, sw: sw::OK }
    }

    /// The bytes on the wire: data, SW1, SW2.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.data.len() + 2);
        out.extend_from_slice(&self.data);
        out.extend_from_slice(&self.sw.to_be_bytes());
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cases() {
        let c = Command::parse(&[0, 0xA4, 4, 0]).unwrap();
        assert_eq!((c.data, c.le), (&[][..], None));
        let c = Command::parse(&[0, 0xC0, 0, 0, 0]).unwrap();
        assert_eq!(c.le, Some(256));
        let c = Command::parse(&[0, 0xA4, 4, 0, 2, 0xA0, 0]).unwrap();
        assert_eq!((c.data, c.le), (&[0xA0, 0][..], None));
        let c = Command::parse(&[0, 0xA4, 4, 0, 2, 0xA0, 0, 0x10]).unwrap();
        assert_eq!((c.data, c.le), (&[0xA0, 0][..], Some(16)));
        let c = Command::parse(&[0, 0xCB, 0x3F, 0xFF, 0, 0, 0]).unwrap();
        assert_eq!((c.data, c.le), (&[][..], Some(65536)));
        let c = Command::parse(&[0, 0x87, 7, 0x9A, 0, 0, 2, 1, 2, 0, 0]).unwrap();
        assert_eq!((c.data, c.le), (&[1, 2][..], Some(65536)));
        let c = Command::parse(&[0, 0x87, 7, 0x9A, 0, 0, 2, 1, 2]).unwrap();
        assert_eq!((c.data, c.le), (&[1, 2][..], None));
    }

    #[test]
    fn malformed() {
        let cases: &[(&[u8], ApduError)] = &[
            (&[], ApduError::TooShort),
            (&[0, 0xA4, 4], ApduError::TooShort),
            (&[0, 0xA4, 4, 0, 5, 1, 2], ApduError::BadLength),
            (&[0, 0xA4, 4, 0, 1, 1, 2, 3], ApduError::BadLength),
            (&[0, 0xA4, 4, 0, 0, 1], ApduError::BadLength),
            (&[0, 0xA4, 4, 0, 0, 0, 0, 1], ApduError::BadLength),
            (&[0, 0xA4, 4, 0, 0, 0xFF, 0xFF, 1], ApduError::TooLong),
            (&[0, 0xA4, 4, 0, 0, 0, 2, 1, 2, 3], ApduError::BadLength),
        ];
        for (raw, err) in cases {
            assert_eq!(Command::parse(raw).err(), Some(*err), "{raw:02X?}");
        }
    }
}
