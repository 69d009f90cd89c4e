//! A small BER-TLV reader and writer with hard limits.
//!
//! Only what PIV needs: tags of one to three bytes, definite lengths in the
//! short form or the long forms `81 xx` and `82 xx xx`. Everything else
//! (indefinite lengths, four-byte lengths, truncated input) is an error, never
//! a panic.

use thiserror::Error;

/// The largest value length accepted or produced (`82 FF FF`).
pub const MAX_VALUE_LEN: usize = 0xFFFF;
/// The largest number of elements one [`parse_all`] call accepts.
pub const MAX_ELEMENTS: usize = 64;

/// Why some bytes are not a well-formed TLV sequence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum TlvError {
    /// The input ended inside a tag, a length or a value.
    #[error("TLV truncated")]
    Truncated,
    /// A tag longer than three bytes.
    #[error("TLV tag too long")]
    TagTooLong,
    /// The indefinite length form, or a length of more than two bytes.
    #[error("TLV length form not supported")]
    BadLength,
    /// More than [`MAX_ELEMENTS`] elements.
    #[error("too many TLV elements")]
    TooManyElements,
    /// A value longer than [`MAX_VALUE_LEN`] was to be encoded.
    #[error("TLV value too long to encode")]
    ValueTooLong,
}

/// One element: its tag (up to three bytes, big-endian in a `u32`) and value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tlv<'a> {
    /// The tag, e.g. `0x7C` or `0x5FC105`.
    pub tag: u32,
    /// The value bytes.
    pub value: &'a [u8],
}

/// Reads one element from the front of `input`; returns it and the rest.
pub fn parse_one(input: &[u8]) -> Result<(Tlv<'_>, &[u8]), TlvError> {
    let (&first, mut rest) = input.split_first().ok_or(TlvError::Truncated)?;
    let mut tag = u32::from(first);
    if first & 0x1F == 0x1F {
        // Subsequent tag bytes follow while bit 8 is set; at most two more.
        let mut extra = 0;
        loop {
            let (&b, r) = rest.split_first().ok_or(TlvError::Truncated)?;
            rest = r;
            extra += 1;
            if extra > 2 {
                return Err(TlvError::TagTooLong);
            }
            tag = (tag << 8) | u32::from(b);
            if b & 0x80 == 0 {
                break;
            }
        }
    }
    let (&l0, r) = rest.split_first().ok_or(TlvError::Truncated)?;
    rest = r;
    let len = match l0 {
        0x00..=0x7F => usize::from(l0),
        0x81 => {
            let (&b, r) = rest.split_first().ok_or(TlvError::Truncated)?;
            rest = r;
            usize::from(b)
        }
        0x82 => match rest {
            [hi, lo, r @ ..] => {
                rest = r;
                usize::from(u16::from_be_bytes([*hi, *lo]))
            }
            _ => return Err(TlvError::Truncated),
        },
        _ => return Err(TlvError::BadLength),
    };
    if rest.len() < len {
        return Err(TlvError::Truncated);
    }
    let (value, rest) = rest.split_at(len);
    Ok((Tlv { tag, value }, rest))
}

/// Reads a whole sequence of elements; trailing garbage is an error.
pub fn parse_all(mut input: &[u8]) -> Result<Vec<Tlv<'_>>, TlvError> {
    let mut out = Vec::new();
    while !input.is_empty() {
        if out.len() >= MAX_ELEMENTS {
            return Err(TlvError::TooManyElements);
        }
        let (tlv, rest) = parse_one(input)?;
        out.push(tlv);
        input = rest;
    }
    Ok(out)
}

/// The first element with `tag` in a parsed sequence.
pub fn find<'a>(elements: &[Tlv<'a>], tag: u32) -> Option<&'a [u8]> {
    elements.iter().find(|t| t.tag == tag).map(|t| t.value)
}

/// Appends the encoding of a length.
pub fn write_len(out: &mut Vec<u8>, len: usize) -> Result<(), TlvError> {
    match len {
        0..=0x7F => out.push(len as u8),
        0x80..=0xFF => out.extend_from_slice(&[0x81, len as u8]),
        0x100..=MAX_VALUE_LEN => {
            out.push(0x82);
            out.extend_from_slice(&(len as u16).to_be_bytes());
        }
        _ => return Err(TlvError::ValueTooLong),
    }
    Ok(())
}

/// Appends one element; `tag` is written with as many bytes as it needs.
pub fn write(out: &mut Vec<u8>, tag: u32, value: &[u8]) -> Result<(), TlvError> {
    let tag_bytes = tag.to_be_bytes();
    let skip = tag_bytes.iter().take(3).take_while(|b| **b == 0).count();
    out.extend_from_slice(tag_bytes.get(skip..).unwrap_or(&tag_bytes));
    write_len(out, value.len())?;
    out.extend_from_slice(value);
    Ok(())
}

/// One element as a fresh vector.
pub fn encode(tag: u32, value: &[u8]) -> Result<Vec<u8>, TlvError> {
    let mut out = Vec::with_capacity(value.len() + 6);
    write(&mut out, tag, value)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_lengths() {
        for len in [0usize, 1, 0x7F, 0x80, 0xFF, 0x100, 0x1234] {
            let value = vec![0xAB; len];
            let enc = encode(0x5FC105, &value).unwrap();
            let (tlv, rest) = parse_one(&enc).unwrap();
            assert!(rest.is_empty());
            assert_eq!(tlv.tag, 0x5FC105);
            assert_eq!(tlv.value, &value[..]);
        }
    }

    #[test]
    fn nested_template() {
        let input = [0x7C, 0x06, 0x82, 0x00, 0x81, 0x02, 0xAA, 0xBB];
        let outer = parse_all(&input).unwrap();
        assert_eq!(outer.len(), 1);
        let inner = parse_all(outer[0].value).unwrap();
        assert_eq!(find(&inner, 0x82), Some(&[][..]));
        assert_eq!(find(&inner, 0x81), Some(&[0xAA, 0xBB][..]));
    }

    #[test]
    fn malformed() {
        let cases: &[(&[u8], TlvError)] = &[
            (&[0x7C], TlvError::Truncated),
            (&[0x7C, 0x05, 0x00], TlvError::Truncated),
            (&[0x7C, 0x80], TlvError::BadLength),
            (&[0x7C, 0x83, 0, 0, 1], TlvError::BadLength),
            (&[0x7C, 0x81], TlvError::Truncated),
            (&[0x7C, 0x82, 0x01], TlvError::Truncated),
            (&[0x5F], TlvError::Truncated),
            (&[0x5F, 0xC1], TlvError::Truncated),
            (&[0x5F, 0xC1, 0x81, 0x81, 0x01, 0x00], TlvError::TagTooLong),
        ];
        for (input, err) in cases {
            assert_eq!(parse_all(input).err(), Some(*err), "{input:02X?}");
        }
        assert_eq!(parse_one(&[]).err(), Some(TlvError::Truncated));
        assert_eq!(parse_all(&[]), Ok(vec![]));
        let many = [0x01, 0x00].repeat(MAX_ELEMENTS + 1);
        assert_eq!(parse_all(&many).err(), Some(TlvError::TooManyElements));
        assert_eq!(
            encode(0x53, &vec![0; MAX_VALUE_LEN + 1]).err(),
            Some(TlvError::ValueTooLong)
        );
    }
}
