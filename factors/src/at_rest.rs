//! Encryption of stored secrets (TOTP seeds; biometric templates later,
//! R-BIO-5) with ChaCha20-Poly1305.
//!
//! Sealed format: `b"CA1" || key_id (4) || nonce (12) || ciphertext || tag (16)`.
//!
//! - The nonce is random (96 bits). With random nonces a key should seal
//!   fewer than 2^32 values; rotate keys well before that.
//! - The key id is the first 4 bytes of SHA-256(key), so [`open`] can pick
//!   the key among several and keys can rotate: keep old keys for opening,
//!   seal with the newest, re-seal rows at leisure.
//! - The associated data binds the row, e.g. `b"totp:<user>"`: a sealed
//!   value copied into another user's row does not open.

use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, CHACHA20_POLY1305, NONCE_LEN};
use ring::digest;
use ring::rand::SecureRandom;
use std::fmt;
use zeroize::Zeroizing;

/// Format tag and version.
pub const MAGIC: &[u8; 3] = b"CA1";
/// Key length.
pub const KEY_LEN: usize = 32;
/// Key id length.
pub const KEY_ID_LEN: usize = 4;
/// Authentication tag length.
pub const TAG_LEN: usize = 16;
/// Bytes added to the plaintext by [`seal`].
pub const OVERHEAD: usize = MAGIC.len() + KEY_ID_LEN + NONCE_LEN + TAG_LEN;
/// Longest plaintext sealed (templates are a few KiB).
pub const MAX_PLAINTEXT_LEN: usize = 1024 * 1024;
/// Longest associated data.
pub const MAX_AAD_LEN: usize = 1024;
/// Most keys [`open`] looks through.
pub const MAX_KEYS: usize = 16;

/// Why sealing or opening failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    /// The key is not 32 bytes.
    #[error("data key must be {KEY_LEN} bytes, got {0}")]
    KeyLength(usize),
    /// An input is larger than its limit.
    #[error("{what} is too large ({len} bytes, at most {max})")]
    TooLarge {
        /// Which input.
        what: &'static str,
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The random generator failed.
    #[error("random generator failed")]
    Random,
    /// Too short or not starting with `CA1`.
    #[error("not a sealed value (format CA1)")]
    Malformed,
    /// No key with the value's key id.
    #[error("no data key with id {0}")]
    UnknownKey(String),
    /// Authentication failed: wrong key, wrong associated data, or tampering.
    #[error("sealed value does not authenticate (wrong key or row, or tampered)")]
    Tampered,
}

/// A data-encryption key. Zeroized on drop; `Debug` shows only the key id.
#[derive(Clone)]
pub struct DataKey {
    key: Zeroizing<[u8; KEY_LEN]>,
    id: [u8; KEY_ID_LEN],
}

impl DataKey {
    /// A key from its 32 bytes (as loaded from the server's key file or KMS).
    pub fn from_bytes(bytes: &[u8]) -> Result<DataKey, SealError> {
        let mut key = Zeroizing::new([0u8; KEY_LEN]);
        if bytes.len() != KEY_LEN {
            return Err(SealError::KeyLength(bytes.len()));
        }
        key.copy_from_slice(bytes);
        Ok(DataKey::new(key))
    }

    /// A new random key.
    pub fn generate(rng: &dyn SecureRandom) -> Result<DataKey, SealError> {
        let mut key = Zeroizing::new([0u8; KEY_LEN]);
        rng.fill(key.as_mut()).map_err(|_| SealError::Random)?;
        Ok(DataKey::new(key))
    }

    fn new(key: Zeroizing<[u8; KEY_LEN]>) -> DataKey {
        let mut id = [0u8; KEY_ID_LEN];
        let hash = digest::digest(&digest::SHA256, key.as_ref());
        for (out, byte) in id.iter_mut().zip(hash.as_ref()) {
            *out = *byte;
        }
        DataKey { key, id }
    }

    /// The key id: first 4 bytes of SHA-256(key).
    pub fn id(&self) -> [u8; KEY_ID_LEN] {
        self.id
    }

    /// The key bytes, for writing to a key store.
    pub fn expose(&self) -> &[u8; KEY_LEN] {
        &self.key
    }

    fn aead(&self) -> Result<LessSafeKey, SealError> {
        UnboundKey::new(&CHACHA20_POLY1305, self.key.as_ref())
            .map(LessSafeKey::new)
            .map_err(|_| SealError::KeyLength(KEY_LEN))
    }
}

impl fmt::Debug for DataKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DataKey")
            .field("id", &hex_id(&self.id))
            .field("key", &"[redacted]")
            .finish()
    }
}

fn hex_id(id: &[u8; KEY_ID_LEN]) -> String {
    hex::encode(id)
}

/// Seals `plaintext` under `key`, bound to `aad`, with a fresh random nonce.
pub fn seal(
    key: &DataKey,
    plaintext: &[u8],
    aad: &[u8],
    rng: &dyn SecureRandom,
) -> Result<Vec<u8>, SealError> {
    check_len("plaintext", plaintext.len(), MAX_PLAINTEXT_LEN)?;
    check_len("associated data", aad.len(), MAX_AAD_LEN)?;
    let mut nonce = [0u8; NONCE_LEN];
    rng.fill(&mut nonce).map_err(|_| SealError::Random)?;

    let mut out = Vec::with_capacity(plaintext.len() + OVERHEAD);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&key.id);
    out.extend_from_slice(&nonce);
    let header_len = out.len();
    out.extend_from_slice(plaintext);

    let mut body = out.split_off(header_len);
    key.aead()?
        .seal_in_place_append_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(aad),
            &mut body,
        )
        .map_err(|_| SealError::TooLarge {
            what: "plaintext",
            len: plaintext.len(),
            max: MAX_PLAINTEXT_LEN,
        })?;
    out.append(&mut body);
    Ok(out)
}

/// Opens a value sealed by [`seal`] with whichever of `keys` has its key id,
/// checking it was sealed for `aad`.
pub fn open(keys: &[DataKey], sealed: &[u8], aad: &[u8]) -> Result<Zeroizing<Vec<u8>>, SealError> {
    if keys.len() > MAX_KEYS {
        return Err(SealError::TooLarge {
            what: "key list",
            len: keys.len(),
            max: MAX_KEYS,
        });
    }
    check_len("sealed value", sealed.len(), MAX_PLAINTEXT_LEN + OVERHEAD)?;
    check_len("associated data", aad.len(), MAX_AAD_LEN)?;
    if sealed.len() < OVERHEAD {
        return Err(SealError::Malformed);
    }
    let (magic, rest) = sealed
        .split_at_checked(MAGIC.len())
        .ok_or(SealError::Malformed)?;
    if magic != MAGIC {
        return Err(SealError::Malformed);
    }
    let (id, rest) = rest
        .split_at_checked(KEY_ID_LEN)
        .ok_or(SealError::Malformed)?;
    let (nonce, body) = rest
        .split_at_checked(NONCE_LEN)
        .ok_or(SealError::Malformed)?;
    let nonce: [u8; NONCE_LEN] = nonce.try_into().map_err(|_| SealError::Malformed)?;

    // Ids are 32 bits: two keys may share one, so try each that matches.
    let mut candidates = keys.iter().filter(|k| k.id == id).peekable();
    if candidates.peek().is_none() {
        let mut shown = [0u8; KEY_ID_LEN];
        shown.copy_from_slice(id);
        return Err(SealError::UnknownKey(hex_id(&shown)));
    }
    for key in candidates {
        let mut buffer = Zeroizing::new(body.to_vec());
        let opened = key.aead()?.open_in_place(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(aad),
            buffer.as_mut_slice(),
        );
        if let Ok(plaintext) = opened {
            let len = plaintext.len();
            buffer.truncate(len);
            return Ok(buffer);
        }
    }
    Err(SealError::Tampered)
}

fn check_len(what: &'static str, len: usize, max: usize) -> Result<(), SealError> {
    if len > max {
        return Err(SealError::TooLarge { what, len, max });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use ring::rand::SystemRandom;

    fn key(fill: u8) -> DataKey {
        DataKey::from_bytes(&[fill; 32]).unwrap()
    }

    #[test]
    fn r_bio_5_round_trip() {
        let rng = SystemRandom::new();
        let k = key(1);
        let sealed = seal(&k, b"JBSWY3DPEHPK3PXP", b"totp:u1", &rng).unwrap();
        assert_eq!(sealed.len(), 16 + OVERHEAD);
        assert_eq!(&sealed[..3], b"CA1");
        assert_eq!(&sealed[3..7], &k.id());
        assert!(!sealed
            .windows(16)
            .any(|w| w == b"JBSWY3DPEHPK3PXP".as_slice()));
        let opened = open(&[k], &sealed, b"totp:u1").unwrap();
        assert_eq!(opened.as_slice(), b"JBSWY3DPEHPK3PXP");
    }

    #[test]
    fn empty_plaintext_round_trips() {
        let rng = SystemRandom::new();
        let sealed = seal(&key(1), b"", b"", &rng).unwrap();
        assert_eq!(sealed.len(), OVERHEAD);
        assert!(open(&[key(1)], &sealed, b"").unwrap().is_empty());
    }

    #[test]
    fn nonces_differ() {
        let rng = SystemRandom::new();
        let a = seal(&key(1), b"same", b"row", &rng).unwrap();
        let b = seal(&key(1), b"same", b"row", &rng).unwrap();
        assert_ne!(a, b);
    }

    #[test]
    fn wrong_aad_refused() {
        let rng = SystemRandom::new();
        let sealed = seal(&key(1), b"seed", b"totp:u1", &rng).unwrap();
        assert_eq!(
            open(&[key(1)], &sealed, b"totp:u2"),
            Err(SealError::Tampered)
        );
    }

    #[test]
    fn every_tampered_byte_refused() {
        let rng = SystemRandom::new();
        let sealed = seal(&key(1), b"seed-bytes", b"totp:u1", &rng).unwrap();
        for i in 0..sealed.len() {
            let mut t = sealed.clone();
            t[i] ^= 0x01;
            assert!(open(&[key(1)], &t, b"totp:u1").is_err(), "byte {i}");
        }
    }

    #[test]
    fn unknown_key_id_refused() {
        let rng = SystemRandom::new();
        let sealed = seal(&key(1), b"seed", b"r", &rng).unwrap();
        assert!(matches!(
            open(&[key(2)], &sealed, b"r"),
            Err(SealError::UnknownKey(_))
        ));
        assert!(matches!(
            open(&[], &sealed, b"r"),
            Err(SealError::UnknownKey(_))
        ));
    }

    #[test]
    fn truncated_and_foreign_input_refused() {
        let rng = SystemRandom::new();
        let sealed = seal(&key(1), b"seed", b"r", &rng).unwrap();
        for cut in 0..sealed.len() {
            assert!(open(&[key(1)], &sealed[..cut], b"r").is_err(), "{cut}");
        }
        let mut other = sealed.clone();
        other[2] = b'2';
        assert_eq!(open(&[key(1)], &other, b"r"), Err(SealError::Malformed));
    }

    #[test]
    fn rotation_with_two_keys() {
        let rng = SystemRandom::new();
        let (old, new) = (key(1), key(2));
        let by_old = seal(&old, b"old row", b"r1", &rng).unwrap();
        let by_new = seal(&new, b"new row", b"r2", &rng).unwrap();
        let ring = [new.clone(), old.clone()];
        assert_eq!(open(&ring, &by_old, b"r1").unwrap().as_slice(), b"old row");
        assert_eq!(open(&ring, &by_new, b"r2").unwrap().as_slice(), b"new row");
        // Old key retired: its rows no longer open.
        assert!(matches!(
            open(&[new], &by_old, b"r1"),
            Err(SealError::UnknownKey(_))
        ));
    }

    #[test]
    fn limits() {
        let rng = SystemRandom::new();
        assert_eq!(
            DataKey::from_bytes(&[0; 31]).map(|_| ()),
            Err(SealError::KeyLength(31))
        );
        assert!(matches!(
            seal(&key(1), b"x", &[0; MAX_AAD_LEN + 1], &rng),
            Err(SealError::TooLarge { .. })
        ));
        let big = vec![0u8; MAX_PLAINTEXT_LEN + 1];
        assert!(matches!(
            seal(&key(1), &big, b"", &rng),
            Err(SealError::TooLarge { .. })
        ));
    }

    #[test]
    fn key_id_is_sha256_prefix_and_debug_redacts() {
        let k = key(7);
        let h = digest::digest(&digest::SHA256, &[7u8; 32]);
        assert_eq!(&k.id()[..], &h.as_ref()[..4]);
        let shown = format!("{k:?}");
        assert!(shown.contains("[redacted]"), "{shown}");
        assert!(!shown.contains("7, 7"), "{shown}");
    }
}
