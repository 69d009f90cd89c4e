//! Command APDUs (ISO/IEC 7816-4 short form), command chaining, response
//! handling (`61 xx` GET RESPONSE, `6C xx` wrong Le) and a bounded BER-TLV
//! reader. Everything from the card is untrusted and bounded.

use super::{CardError, Transport, MAX_RESPONSE_APDU};

/// Status words the driver acts on.
pub mod sw {
    /// Success.
    pub const OK: u16 = 0x9000;
    /// Security status not satisfied (PIN needed).
    pub const SECURITY_STATUS: u16 = 0x6982;
    /// Authentication method blocked.
    pub const AUTH_BLOCKED: u16 = 0x6983;
    /// File or application not found.
    pub const NOT_FOUND: u16 = 0x6A82;
    /// Referenced data not found.
    pub const REF_DATA_NOT_FOUND: u16 = 0x6A88;
    /// Function not supported.
    pub const FUNC_NOT_SUPPORTED: u16 = 0x6A81;
    /// Instruction not supported.
    pub const INS_NOT_SUPPORTED: u16 = 0x6D00;
    /// Class not supported.
    pub const CLA_NOT_SUPPORTED: u16 = 0x6E00;
}

/// The largest response (all `61 xx` pieces together) accepted from one
/// command: a PIV certificate object is at most a few kilobytes.
pub const MAX_RESPONSE_DATA: usize = 16 * 1024;
/// The largest command data accepted for chaining.
pub const MAX_COMMAND_DATA: usize = 8 * 1024;
/// How many `6C xx` retries one command may cause.
const MAX_WRONG_LE_RETRIES: usize = 1;

/// A response: data and status word.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// The response data (all `61 xx` pieces joined).
    pub data: Vec<u8>,
    /// The final status word.
    pub sw: u16,
}

impl Response {
    /// Whether the status word is `90 00`.
    pub fn is_ok(&self) -> bool {
        self.sw == sw::OK
    }
}

/// Splits a raw response APDU into data and status word.
pub fn split_response(raw: &[u8]) -> Result<(&[u8], u16), CardError> {
    if raw.len() > MAX_RESPONSE_APDU {
        return Err(CardError::Malformed("response longer than 256 bytes"));
    }
    match raw {
        [data @ .., sw1, sw2] => Ok((data, u16::from_be_bytes([*sw1, *sw2]))),
        _ => Err(CardError::Malformed("response shorter than a status word")),
    }
}

/// Builds one short command APDU. `le`: `None` for no Le field, `Some(0)`
/// for "up to 256".
pub fn command_apdu(
    cla: u8,
    ins: u8,
    p1: u8,
    p2: u8,
    data: &[u8],
    le: Option<u8>,
) -> Result<Vec<u8>, CardError> {
    let lc = u8::try_from(data.len()).map_err(|_| CardError::Unsupported("APDU data over 255"))?;
    let mut apdu = Vec::with_capacity(6 + data.len());
    apdu.extend_from_slice(&[cla, ins, p1, p2]);
    if !data.is_empty() {
        apdu.push(lc);
        apdu.extend_from_slice(data);
    }
    if let Some(le) = le {
        apdu.push(le);
    }
    Ok(apdu)
}

/// Sends a command with any amount of data (chained in 255-byte pieces,
/// CLA bit `0x10`), follows `61 xx` with GET RESPONSE and `6C xx` with the
/// corrected Le, and returns the whole response.
///
/// `name` names the command in errors.
pub fn exchange(
    t: &mut dyn Transport,
    name: &'static str,
    header: [u8; 4],
    data: &[u8],
    le: Option<u8>,
) -> Result<Response, CardError> {
    let [cla, ins, p1, p2] = header;
    if data.len() > MAX_COMMAND_DATA {
        return Err(CardError::Unsupported("command data too long"));
    }
    let mut pieces = data.chunks(255).peekable();
    if data.is_empty() {
        let apdu = command_apdu(cla, ins, p1, p2, &[], le)?;
        return finish(t, &apdu);
    }
    while let Some(piece) = pieces.next() {
        if pieces.peek().is_none() {
            let apdu = command_apdu(cla, ins, p1, p2, piece, le)?;
            return finish(t, &apdu);
        }
        let apdu = command_apdu(cla | 0x10, ins, p1, p2, piece, None)?;
        let raw = t.transmit(&apdu)?;
        let (_, sw) = split_response(&raw)?;
        if sw != sw::OK {
            return Err(CardError::Status { command: name, sw });
        }
    }
    Err(CardError::Malformed("no command sent"))
}

/// Sends the (last) APDU and collects the response.
fn finish(t: &mut dyn Transport, apdu: &[u8]) -> Result<Response, CardError> {
    let mut raw = t.transmit(apdu)?;
    let mut retries = 0;
    // 6C xx: the card wants exactly xx as Le; send the command again once.
    loop {
        let (data, sw) = split_response(&raw)?;
        if sw >> 8 == 0x6C && data.is_empty() && retries < MAX_WRONG_LE_RETRIES && apdu.len() >= 4 {
            retries += 1;
            let mut again = apdu.to_vec();
            // Replace (or add) Le: a case 1/3 APDU gets one, a case 2/4 has it last.
            if has_le(apdu) {
                again.pop();
            }
            again.push((sw & 0xFF) as u8);
            raw = t.transmit(&again)?;
            continue;
        }
        break;
    }
    let mut out = Vec::new();
    loop {
        let (data, sw) = split_response(&raw)?;
        if out.len() + data.len() > MAX_RESPONSE_DATA {
            return Err(CardError::Malformed("response longer than the limit"));
        }
        out.extend_from_slice(data);
        if sw >> 8 != 0x61 {
            return Ok(Response { data: out, sw });
        }
        let le = (sw & 0xFF) as u8;
        raw = t.transmit(&[0x00, 0xC0, 0x00, 0x00, le])?;
    }
}

/// Whether a short APDU built by [`command_apdu`] ends with an Le byte.
fn has_le(apdu: &[u8]) -> bool {
    match apdu.len() {
        0..=4 => false,
        5 => true,
        n => {
            let lc = usize::from(apdu.get(4).copied().unwrap_or(0));
            n == 5 + lc + 1
        }
    }
}

/// One BER-TLV element.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tlv<'a> {
    /// The tag (one to three bytes, big-endian).
    pub tag: u32,
    /// The value.
    pub value: &'a [u8],
}

/// Reads one BER-TLV element from the front of `input`: tags of up to three
/// bytes, lengths in the short form or `81 xx` / `82 xx xx`. Anything else
/// is [`CardError::Malformed`].
pub fn tlv(input: &[u8]) -> Result<(Tlv<'_>, &[u8]), CardError> {
    const TRUNCATED: CardError = CardError::Malformed("TLV truncated");
    let (&first, mut rest) = input.split_first().ok_or(TRUNCATED)?;
    let mut tag = u32::from(first);
    if first & 0x1F == 0x1F {
        for i in 0.. {
            let (&b, r) = rest.split_first().ok_or(TRUNCATED)?;
            rest = r;
            if i >= 2 {
                return Err(CardError::Malformed("TLV tag too long"));
            }
            tag = (tag << 8) | u32::from(b);
            if b & 0x80 == 0 {
                break;
            }
        }
    }
    let (&l0, r) = rest.split_first().ok_or(TRUNCATED)?;
    rest = r;
    let len = match l0 {
        0x00..=0x7F => usize::from(l0),
        0x81 => {
            let (&b, r) = rest.split_first().ok_or(TRUNCATED)?;
            rest = r;
            usize::from(b)
        }
        0x82 => match rest {
            [hi, lo, r @ ..] => {
                rest = r;
                usize::from(u16::from_be_bytes([*hi, *lo]))
            }
            _ => return Err(TRUNCATED),
        },
        _ => return Err(CardError::Malformed("TLV length form")),
    };
    if rest.len() < len {
        return Err(TRUNCATED);
    }
    let (value, rest) = rest.split_at(len);
    Ok((Tlv { tag, value }, rest))
}

/// Appends a BER length.
pub fn push_len(out: &mut Vec<u8>, len: usize) -> Result<(), CardError> {
    match len {
        0..=0x7F => out.push(len as u8),
        0x80..=0xFF => out.extend_from_slice(&[0x81, len as u8]),
        0x100..=0xFFFF => {
            out.push(0x82);
            out.extend_from_slice(&(len as u16).to_be_bytes());
        }
        _ => return Err(CardError::Unsupported("TLV value too long")),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::card::mock::Scripted;

    #[test]
    fn get_response_is_followed_and_bounded() {
        let mut t = Scripted::new([vec![1, 2, 0x61, 0x02], vec![3, 4, 0x90, 0x00]]);
        let r = exchange(&mut t, "X", [0, 0xCB, 0x3F, 0xFF], &[1], Some(0)).unwrap();
        assert_eq!(r.data, vec![1, 2, 3, 4]);
        assert_eq!(t.sent[1], vec![0x00, 0xC0, 0x00, 0x00, 0x02]);

        // A card that never stops saying 61 00.
        let mut endless = vec![0xAA; 256];
        endless.extend_from_slice(&[0x61, 0x00]);
        let mut t = Scripted::new(std::iter::repeat_n(endless, 100));
        assert!(matches!(
            exchange(&mut t, "X", [0, 0xCB, 0x3F, 0xFF], &[], Some(0)),
            Err(CardError::Malformed(_))
        ));
    }

    #[test]
    fn chaining_splits_and_checks_each_piece() {
        let data = vec![7u8; 300];
        let mut t = Scripted::new([vec![0x90, 0x00], vec![9, 0x90, 0x00]]);
        let r = exchange(&mut t, "GA", [0, 0x87, 0x07, 0x9A], &data, Some(0)).unwrap();
        assert_eq!(r.data, vec![9]);
        assert_eq!(t.sent[0][0], 0x10);
        assert_eq!(t.sent[0][4], 255);
        assert_eq!(t.sent[1][0], 0x00);
        assert_eq!(t.sent[1][4], 45);
        assert_eq!(t.sent[1].len(), 5 + 45 + 1);

        let mut t = Scripted::new([vec![0x6A, 0x80]]);
        assert!(matches!(
            exchange(&mut t, "GA", [0, 0x87, 0x07, 0x9A], &data, Some(0)),
            Err(CardError::Status {
                command: "GA",
                sw: 0x6A80
            })
        ));
    }

    #[test]
    fn wrong_le_is_retried_once() {
        let mut t = Scripted::new([vec![0x6C, 0x04], vec![1, 2, 3, 4, 0x90, 0x00]]);
        let r = exchange(&mut t, "UID", [0xFF, 0xCA, 0, 0], &[], Some(0)).unwrap();
        assert_eq!(r.data, vec![1, 2, 3, 4]);
        assert_eq!(t.sent[1], vec![0xFF, 0xCA, 0, 0, 4]);
        let mut t = Scripted::new([vec![0x6C, 0x04], vec![0x6C, 0x04]]);
        let r = exchange(&mut t, "UID", [0xFF, 0xCA, 0, 0], &[], Some(0)).unwrap();
        assert_eq!(r.sw, 0x6C04);
    }

    #[test]
    fn short_and_long_responses_are_malformed() {
        for raw in [vec![], vec![0x90], vec![0u8; 300]] {
            let mut t = Scripted::new([raw]);
            assert!(matches!(
                exchange(&mut t, "X", [0, 0xA4, 4, 0], &[1], None),
                Err(CardError::Malformed(_))
            ));
        }
    }

    #[test]
    fn tlv_refuses_broken_input() {
        assert!(tlv(&[0x53, 0x05, 1, 2]).is_err());
        assert!(tlv(&[0x53, 0x83, 0, 0, 1]).is_err());
        assert!(tlv(&[0x53, 0x82, 0x01]).is_err());
        assert!(tlv(&[0x5F, 0xC1]).is_err());
        assert!(tlv(&[0x5F, 0xFF, 0xFF, 0x01, 0x00]).is_err());
        assert!(tlv(&[]).is_err());
        let (t, rest) = tlv(&[0x5F, 0xC1, 0x05, 0x01, 0xAA, 0xBB]).unwrap();
        assert_eq!((t.tag, t.value, rest), (0x5FC105, &[0xAA][..], &[0xBB][..]));
    }
}
