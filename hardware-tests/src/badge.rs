//! A virtual contactless badge behind a PC/SC contactless reader.
//!
//! What the application sees of a badge on a real reader (PC/SC part 3) is
//! the reader's own answers: the pseudo-APDU GET DATA `FF CA 00 00 Le`
//! returns the UID, `FF CA 01 00` the historical bytes (most readers answer
//! `6A 81` for a badge without them, as this one does), other `FF`
//! instructions `6D 00`, and ISO commands to a memory badge (e.g. a PIV
//! SELECT) `6E 00`. The ATR is the PC/SC storage-card ATR the reader
//! synthesises (`3B 8F 80 01 80 4F 0C A0 00 00 03 06 ...`).
//!
//! Use it in the second vpcd reader ("... 00 01", port p + 1) through
//! [`crate::vpcd::VirtualCard`], inserting and removing it at will.

use crate::vpcd::VirtualIcc;

/// Why a UID is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a badge UID is 4, 7 or 10 bytes")]
pub struct BadUid;

/// A contactless badge with a UID.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VirtualBadge {
    uid: Vec<u8>,
}

impl VirtualBadge {
    /// A badge with this UID (4, 7 or 10 bytes: ISO 14443 single, double,
    /// triple size).
    pub fn new(uid: &[u8]) -> Result<Self, BadUid> {
        if matches!(uid.len(), 4 | 7 | 10) {
            Ok(Self { uid: uid.to_vec() })
        } else {
            Err(BadUid)
        }
    }

    /// The UID.
    pub fn uid(&self) -> &[u8] {
        &self.uid
    }

    /// The storage-card ATR for the badge's card type (PC/SC part 3:
    /// MIFARE Classic 1K for a 4-byte UID, MIFARE Ultralight for 7 and 10).
    pub fn atr_for(uid_len: usize) -> Vec<u8> {
        let card_name: [u8; 2] = if uid_len == 4 {
            [0x00, 0x01]
        } else {
            [0x00, 0x03]
        };
        let mut atr = vec![
            0x3B, 0x8F, 0x80, 0x01, 0x80, 0x4F, 0x0C, 0xA0, 0x00, 0x00, 0x03, 0x06, 0x03,
        ];
        atr.extend_from_slice(&card_name);
        atr.extend_from_slice(&[0x00, 0x00, 0x00, 0x00]);
        let tck = atr.iter().skip(1).fold(0u8, |acc, b| acc ^ b);
        atr.push(tck);
        atr
    }

    /// The reader's answer to one APDU.
    pub fn process(&self, apdu: &[u8]) -> Vec<u8> {
        let (cla, ins, p1, p2) = match apdu {
            [cla, ins, p1, p2, ..] => (*cla, *ins, *p1, *p2),
            _ => return vec![0x67, 0x00],
        };
        if cla != 0xFF {
            return vec![0x6E, 0x00];
        }
        if ins != 0xCA {
            return vec![0x6D, 0x00];
        }
        // Le: absent or 00 means "all of it".
        let le = match apdu.get(4..) {
            None | Some([]) | Some([0]) => None,
            Some([n]) => Some(usize::from(*n)),
            Some(_) => return vec![0x67, 0x00],
        };
        match (p1, p2) {
            (0x00, 0x00) => match le {
                Some(n) if n < self.uid.len() => {
                    // Wrong Le: 6C with the right length.
                    vec![0x6C, self.uid.len() as u8]
                }
                _ => {
                    let mut r = self.uid.clone();
                    r.extend_from_slice(&[0x90, 0x00]);
                    r
                }
            },
            (0x01, 0x00) => vec![0x6A, 0x81],
            _ => vec![0x6B, 0x00],
        }
    }
}

impl VirtualIcc for VirtualBadge {
    fn atr(&self) -> Vec<u8> {
        Self::atr_for(self.uid.len())
    }

    fn power_event(&mut self, _ctrl: u8) {}

    fn transmit(&mut self, apdu: &[u8]) -> Vec<u8> {
        self.process(apdu)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_like_a_reader() {
        let b = VirtualBadge::new(&[0x04, 0xA1, 0xB2, 0xC3, 0xD4, 0xE5, 0xF6]).unwrap();
        assert_eq!(
            b.process(&[0xFF, 0xCA, 0, 0, 0]),
            vec![0x04, 0xA1, 0xB2, 0xC3, 0xD4, 0xE5, 0xF6, 0x90, 0x00]
        );
        assert_eq!(b.process(&[0xFF, 0xCA, 0, 0, 4]), vec![0x6C, 7]);
        assert_eq!(b.process(&[0xFF, 0xCA, 1, 0, 0]), vec![0x6A, 0x81]);
        assert_eq!(b.process(&[0xFF, 0xB0, 0, 0, 16]), vec![0x6D, 0x00]);
        assert_eq!(
            b.process(&[0x00, 0xA4, 4, 0, 5, 0xA0, 0, 0, 3, 8, 0]),
            vec![0x6E, 0x00]
        );
        assert_eq!(b.process(&[0xFF]), vec![0x67, 0x00]);
        assert!(VirtualBadge::new(&[1, 2, 3]).is_err());
        let atr = VirtualBadge::atr_for(4);
        assert_eq!(atr.len(), 20);
        assert_eq!(atr.iter().skip(1).fold(0, |a, b| a ^ b), 0);
    }
}
