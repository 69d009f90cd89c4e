//! A minimal DER reader for the few structures x509-parser does not decode
//! (the ISO 17090 hcRole attribute). It never panics and refuses anything
//! it does not understand: multi-byte tags, indefinite lengths, lengths
//! beyond the input, and too many elements.

/// One tag-length-value element.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Tlv<'a> {
    /// The identifier octet (class, constructed bit and tag number < 31).
    pub tag: u8,
    /// The content octets.
    pub value: &'a [u8],
}

/// DER tags used by this crate.
pub(crate) mod tag {
    pub const INTEGER: u8 = 0x02;
    pub const BIT_STRING: u8 = 0x03;
    pub const OID: u8 = 0x06;
    pub const UTF8_STRING: u8 = 0x0c;
    pub const PRINTABLE_STRING: u8 = 0x13;
    pub const SEQUENCE: u8 = 0x30;
    pub const SET: u8 = 0x31;
    /// Context-specific, constructed: `[n]` EXPLICIT.
    pub const fn explicit(n: u8) -> u8 {
        0xa0 | (n & 0x1f)
    }
}

/// Most elements accepted inside one constructed value.
const MAX_ELEMENTS: usize = 64;

/// Reads one element from the front of `input`, returning it and the rest.
pub(crate) fn read(input: &[u8]) -> Option<(Tlv<'_>, &[u8])> {
    let (&tag, rest) = input.split_first()?;
    if tag & 0x1f == 0x1f {
        return None; // multi-byte tag numbers: not used here
    }
    let (&first, mut rest) = rest.split_first()?;
    let len = if first < 0x80 {
        usize::from(first)
    } else {
        let count = usize::from(first & 0x7f);
        if count == 0 || count > 3 {
            return None; // indefinite, or longer than any input we accept
        }
        let (digits, after) = rest.split_at_checked(count)?;
        rest = after;
        let len = digits
            .iter()
            .fold(0usize, |acc, &d| (acc << 8) | usize::from(d));
        if len < 0x80 || digits.first() == Some(&0) {
            return None; // not the minimal (DER) encoding
        }
        len
    };
    let (value, rest) = rest.split_at_checked(len)?;
    Some((Tlv { tag, value }, rest))
}

/// Reads exactly one element that fills `input`.
pub(crate) fn read_one(input: &[u8]) -> Option<Tlv<'_>> {
    match read(input)? {
        (tlv, []) => Some(tlv),
        _ => None,
    }
}

/// Reads every element of a constructed value's content.
pub(crate) fn read_all(mut input: &[u8]) -> Option<Vec<Tlv<'_>>> {
    let mut out = Vec::new();
    while !input.is_empty() {
        if out.len() >= MAX_ELEMENTS {
            return None;
        }
        let (tlv, rest) = read(input)?;
        out.push(tlv);
        input = rest;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_short_and_long_lengths() {
        assert_eq!(
            read(&[0x04, 0x01, 0xaa, 0xff]),
            Some((
                Tlv {
                    tag: 0x04,
                    value: &[0xaa]
                },
                &[0xff][..]
            ))
        );
        let mut long = vec![0x04, 0x81, 0x80];
        long.extend(std::iter::repeat_n(7u8, 0x80));
        let (tlv, rest) = read(&long).unwrap();
        assert_eq!(tlv.value.len(), 0x80);
        assert!(rest.is_empty());
    }

    #[test]
    fn refuses_bad_encodings() {
        assert_eq!(read(&[]), None);
        assert_eq!(read(&[0x04]), None);
        assert_eq!(read(&[0x04, 0x02, 0x00]), None); // truncated
        assert_eq!(read(&[0x04, 0x80, 0x00, 0x00]), None); // indefinite
        assert_eq!(read(&[0x04, 0x81, 0x05, 0, 0, 0, 0, 0]), None); // non-minimal
        assert_eq!(read(&[0x1f, 0x01, 0x00]), None); // multi-byte tag
        assert_eq!(read(&[0x04, 0x84, 1, 0, 0, 0]), None); // too long a length
        assert_eq!(read_one(&[0x04, 0x00, 0x00]), None); // trailing byte
        let many: Vec<u8> = std::iter::repeat_n([0x05u8, 0x00], 65).flatten().collect();
        assert_eq!(read_all(&many), None);
    }
}
