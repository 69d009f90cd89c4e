//! Contactless badges: the UID through the PC/SC pseudo-APDU GET DATA
//! (`FF CA 00 00 00`, PC/SC part 3), which the reader answers itself.

use std::fmt;

use super::apdu::{exchange, sw};
use super::{CardError, ConnectOptions, PcscTransport, Transport};

/// A badge UID: 4, 7 or 10 bytes (ISO 14443 single, double, triple size) or
/// 8 bytes (FeliCa IDm, ISO 15693).
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct BadgeUid(Vec<u8>);

impl BadgeUid {
    /// A UID from its bytes; refuses other lengths.
    pub fn new(bytes: &[u8]) -> Result<Self, CardError> {
        if matches!(bytes.len(), 4 | 7 | 8 | 10) {
            Ok(Self(bytes.to_vec()))
        } else {
            Err(CardError::Malformed("badge UID of an unusual length"))
        }
    }

    /// The UID bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The UID in upper-case hex (as badge systems print it).
    pub fn to_hex(&self) -> String {
        super::piv::hex(&self.0).to_uppercase()
    }
}

impl fmt::Debug for BadgeUid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BadgeUid({})", self.to_hex())
    }
}

impl fmt::Display for BadgeUid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

/// Reads the UID of the card behind `t` (`FF CA 00 00 00`).
pub fn read_uid(t: &mut dyn Transport) -> Result<BadgeUid, CardError> {
    let r = exchange(t, "GET DATA (UID)", [0xFF, 0xCA, 0x00, 0x00], &[], Some(0))?;
    match r.sw {
        sw::OK => BadgeUid::new(&r.data),
        sw => Err(CardError::Status {
            command: "GET DATA (UID)",
            sw,
        }),
    }
}

/// Connects to the badge in `reader` (shared, never reset) and reads its UID.
pub fn read_badge_uid(reader: &str, timeout: std::time::Duration) -> Result<BadgeUid, CardError> {
    let mut t = PcscTransport::connect(
        reader,
        ConnectOptions {
            timeout,
            exclusive: false,
            reset_on_close: false,
        },
    )?;
    read_uid(&mut t)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::card::mock::Scripted;

    #[test]
    fn uid_lengths() {
        let mut t = Scripted::new([vec![1, 2, 3, 4, 0x90, 0x00]]);
        assert_eq!(read_uid(&mut t).unwrap().to_hex(), "01020304");
        assert_eq!(t.sent[0], vec![0xFF, 0xCA, 0, 0, 0]);
        let mut t = Scripted::new([vec![1, 2, 3, 0x90, 0x00]]);
        assert!(matches!(read_uid(&mut t), Err(CardError::Malformed(_))));
        let mut t = Scripted::new([vec![0x6A, 0x81]]);
        assert!(matches!(
            read_uid(&mut t),
            Err(CardError::Status { sw: 0x6A81, .. })
        ));
    }
}
