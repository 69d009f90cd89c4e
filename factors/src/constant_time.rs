//! Comparison of secret bytes in time that does not depend on where they differ.

use core::hint::black_box;

/// `a == b`, reading every byte of both whatever their content.
///
/// The lengths are not secret (codes and tags have fixed, public lengths), so
/// different lengths return at once.
pub(crate) fn bytes_equal(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let mut diff: u8 = 0;
    for (x, y) in a.iter().zip(b.iter()) {
        diff |= black_box(x ^ y);
    }
    black_box(diff) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_and_unequal() {
        assert!(bytes_equal(b"", b""));
        assert!(bytes_equal(b"123456", b"123456"));
        assert!(!bytes_equal(b"123456", b"123457"));
        assert!(!bytes_equal(b"023456", b"123456"));
        assert!(!bytes_equal(b"12345", b"123456"));
    }
}
