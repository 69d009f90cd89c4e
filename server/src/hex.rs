//! Hex text for fingerprints, hashes and badge UIDs.

/// Lower-case hex.
pub fn encode(bytes: &[u8]) -> String {
    hex::encode(bytes)
}

/// Decodes hex (either case) of at most `max_bytes` bytes; `None` if it is
/// not hex, has an odd length, or is too long.
pub fn decode(text: &str, max_bytes: usize) -> Option<Vec<u8>> {
    // from_str_radix alone would also take a leading '+'.
    if !text.len().is_multiple_of(2)
        || text.len() / 2 > max_bytes
        || !text.bytes().all(|b| b.is_ascii_hexdigit())
    {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| {
            text.get(i..i + 2)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn round_trip_and_refusals() {
        assert_eq!(super::encode(&[0x04, 0xab]), "04ab");
        assert_eq!(super::decode("04AB", 2), Some(vec![0x04, 0xab]));
        for bad in ["0", "zz", "04ab04", "０４", "+1"] {
            assert_eq!(super::decode(bad, 2), None, "{bad}");
        }
    }
}
