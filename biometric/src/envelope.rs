//! The sealed-template protocol (R-BIO-1, R-BIO-3) and signed match-on-reader
//! decisions.
//!
//! # Sealed capture (server matches)
//!
//! The reader, inside itself:
//!
//! 1. encodes the template ([`Template::encode`]);
//! 2. seals it with HPKE (RFC 9180, base mode,
//!    DHKEM(X25519, HKDF-SHA256) / HKDF-SHA256 / ChaCha20-Poly1305) to the
//!    server's [`MatcherPublicKey`], with `info` = [`HPKE_INFO`] and
//!    AAD = the canonical [`CaptureContext`] encoding:
//!    `u8 len ‖ AAD_LABEL ‖ nonce (32) ‖ u8 len ‖ reader_id ‖ u8 len ‖ user_id ‖
//!    captured_at (i64 BE)`;
//! 3. signs with its Ed25519 key (registered by an officer)
//!    `u8 len ‖ SIG_LABEL ‖ u16 len ‖ AAD ‖ enc (32) ‖ u16 len ‖ ciphertext`.
//!
//! The agent and the network see only [`SealedCapture`] bytes: the context
//! (public identifiers and the server nonce), the encapsulated key, the
//! ciphertext and the signature — never feature data (R-BIO-1).
//!
//! The server ([`open`]) parses the bytes strictly, verifies the reader
//! signature **first**, then checks that the capture is bound to the nonce
//! it issued, the reader and the claimed user and lies in the clock window,
//! then opens the HPKE ciphertext (which authenticates the same AAD again)
//! and decodes the template with its limits. Every failure is a typed
//! [`EnvelopeError`]; the plaintext lives only in zeroizing buffers.
//!
//! Single use of the nonce is the server's job: it issues the nonce, passes
//! it in [`Expected`], and must consume it whether `open` succeeds or not.
//!
//! # Wire form of a sealed capture (version 1)
//!
//! `"CABS" ‖ 0x01 ‖ nonce (32) ‖ u8 len ‖ reader_id ‖ u8 len ‖ user_id ‖
//! captured_at (i64 BE) ‖ enc (32) ‖ u16 len ‖ ciphertext ‖ signature (64)`;
//! identifiers are 1..=[`MAX_ID_LEN`] bytes of UTF-8 without control
//! characters; the ciphertext is `TAG_LEN..=MAX_CIPHERTEXT_LEN` bytes; no
//! trailing bytes; at most [`MAX_SEALED_LEN`] bytes in all.
//!
//! # Signed decision (match on reader)
//!
//! `"CABD" ‖ 0x01 ‖ nonce (32) ‖ u8 len ‖ reader_id ‖ u8 len ‖ user_id ‖
//! captured_at (i64 BE) ‖ matched (0/1) ‖ score (u16 BE) ‖ pad (0/1) ‖
//! signature (64)`, the signature over `u8 len ‖ DECISION_LABEL ‖` everything
//! before it; at most [`MAX_DECISION_LEN`] bytes.

use core::convert::Infallible;
use core::fmt;

use hpke::aead::{AeadTag, ChaCha20Poly1305};
use hpke::inout::InOutBuf;
use hpke::kdf::HkdfSha256;
use hpke::kem::X25519HkdfSha256;
use hpke::rand_core::{TryCryptoRng, TryRng};
use hpke::{Deserializable, Kem as KemTrait, OpModeR, OpModeS, Serializable};
use ring::rand::SecureRandom;
use ring::signature::{Ed25519KeyPair, KeyPair, UnparsedPublicKey, ED25519};
use zeroize::{Zeroize, Zeroizing};

use crate::template::{Template, TemplateError, MAX_ENCODED_LEN};

type Kem = X25519HkdfSha256;
type Aead = ChaCha20Poly1305;
type Kdf = HkdfSha256;

/// Length of the server nonce.
pub const NONCE_LEN: usize = 32;
/// Longest reader or user identifier in bytes.
pub const MAX_ID_LEN: usize = 64;
/// Length of the HPKE encapsulated key (X25519).
pub const ENC_LEN: usize = 32;
/// Length of the ChaCha20-Poly1305 tag.
pub const TAG_LEN: usize = 16;
/// Length of an Ed25519 signature.
pub const SIGNATURE_LEN: usize = 64;
/// Longest ciphertext (largest template plus tag).
pub const MAX_CIPHERTEXT_LEN: usize = MAX_ENCODED_LEN + TAG_LEN;
/// Longest sealed capture on the wire.
pub const MAX_SEALED_LEN: usize =
    4 + 1 + NONCE_LEN + 2 * (1 + MAX_ID_LEN) + 8 + ENC_LEN + 2 + MAX_CIPHERTEXT_LEN + SIGNATURE_LEN;
/// Longest signed decision on the wire.
pub const MAX_DECISION_LEN: usize =
    4 + 1 + NONCE_LEN + 2 * (1 + MAX_ID_LEN) + 8 + 1 + 2 + 1 + SIGNATURE_LEN;

/// HPKE `info` string.
pub const HPKE_INFO: &[u8] = b"ClinAuth biometric v1: sealed template";
/// Domain label at the start of the AAD.
pub const AAD_LABEL: &[u8] = b"ClinAuth biometric v1: capture context";
/// Domain label of the reader's signature over a sealed capture.
pub const SIG_LABEL: &[u8] = b"ClinAuth biometric v1: sealed capture signature";
/// Domain label of the reader's signature over a decision.
pub const DECISION_LABEL: &[u8] = b"ClinAuth biometric v1: match decision signature";

const SEALED_MAGIC: [u8; 4] = *b"CABS";
const DECISION_MAGIC: [u8; 4] = *b"CABD";
const VERSION: u8 = 1;

/// Why sealing, opening or verifying failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvelopeError {
    /// Input longer than the limit.
    #[error("input is {len} bytes, more than the limit of {max}")]
    TooLong {
        /// Bytes given.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// Input ends early.
    #[error("input is truncated")]
    Truncated,
    /// Bytes after the signature.
    #[error("input has trailing bytes")]
    TrailingBytes,
    /// Not a sealed capture / decision.
    #[error("wrong magic")]
    BadMagic,
    /// A version this build does not know.
    #[error("version {0} is not supported")]
    UnsupportedVersion(u8),
    /// A field has an invalid value (named).
    #[error("invalid field {0}")]
    BadField(&'static str),
    /// An identifier is empty, too long, not UTF-8 or has control characters.
    #[error("invalid identifier {0}")]
    BadId(&'static str),
    /// A matcher key of the wrong form.
    #[error("invalid matcher key")]
    BadMatcherKey,
    /// A reader key of the wrong form.
    #[error("invalid reader key")]
    BadReaderKey,
    /// The random generator failed.
    #[error("random generator failed")]
    Rng,
    /// HPKE sealing failed.
    #[error("sealing failed")]
    Seal,
    /// The reader signature does not verify with the registered key.
    #[error("reader signature does not verify")]
    BadSignature,
    /// Not the nonce the server issued.
    #[error("capture is bound to another nonce")]
    NonceMismatch,
    /// Not the expected reader.
    #[error("capture comes from another reader")]
    ReaderMismatch,
    /// Not the claimed user.
    #[error("capture is bound to another user")]
    UserMismatch,
    /// Captured before the clock window.
    #[error("capture is too old")]
    TooOld,
    /// Captured after the clock window.
    #[error("capture is from the future")]
    FromFuture,
    /// HPKE open failed: wrong matcher key or altered ciphertext/AAD.
    #[error("sealed template does not open")]
    Open,
    /// The opened template is invalid.
    #[error("sealed template is invalid: {0}")]
    Template(#[from] TemplateError),
}

/// What a capture is bound to (R-BIO-3). Public identifiers only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaptureContext {
    /// The server's single-use nonce from `begin`.
    pub nonce: [u8; NONCE_LEN],
    /// The reader's registered identifier.
    pub reader_id: String,
    /// The claimed user.
    pub user_id: String,
    /// Capture time, seconds since the Unix epoch (the reader's clock).
    pub captured_at: i64,
}

/// What the server expects of a capture.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expected {
    /// The nonce the server issued for this authentication.
    pub nonce: [u8; NONCE_LEN],
    /// The registered reader the evidence must come from.
    pub reader_id: String,
    /// The claimed user.
    pub user_id: String,
    /// The server's current time, seconds since the Unix epoch.
    pub now: i64,
    /// Oldest accepted capture, seconds before `now`.
    pub max_age_secs: u32,
    /// Tolerated reader clock lead, seconds after `now`.
    pub max_future_secs: u32,
}

impl Expected {
    fn check(&self, c: &CaptureContext) -> Result<(), EnvelopeError> {
        if c.nonce != self.nonce {
            return Err(EnvelopeError::NonceMismatch);
        }
        if c.reader_id != self.reader_id {
            return Err(EnvelopeError::ReaderMismatch);
        }
        if c.user_id != self.user_id {
            return Err(EnvelopeError::UserMismatch);
        }
        if c.captured_at < self.now.saturating_sub(i64::from(self.max_age_secs)) {
            return Err(EnvelopeError::TooOld);
        }
        if c.captured_at > self.now.saturating_add(i64::from(self.max_future_secs)) {
            return Err(EnvelopeError::FromFuture);
        }
        Ok(())
    }
}

fn check_id(id: &str, field: &'static str) -> Result<(), EnvelopeError> {
    if id.is_empty() || id.len() > MAX_ID_LEN || id.chars().any(char::is_control) {
        return Err(EnvelopeError::BadId(field));
    }
    Ok(())
}

impl CaptureContext {
    fn check(&self) -> Result<(), EnvelopeError> {
        check_id(&self.reader_id, "reader_id")?;
        check_id(&self.user_id, "user_id")
    }

    /// The canonical AAD (see the module docs).
    pub fn aad(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(1 + AAD_LABEL.len() + NONCE_LEN + 2 + 128 + 8);
        put_u8_len(&mut out, AAD_LABEL);
        self.put_fields(&mut out);
        out
    }

    /// nonce ‖ u8 len ‖ reader_id ‖ u8 len ‖ user_id ‖ captured_at.
    fn put_fields(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.nonce);
        put_u8_len(out, self.reader_id.as_bytes());
        put_u8_len(out, self.user_id.as_bytes());
        out.extend_from_slice(&self.captured_at.to_be_bytes());
    }

    fn read_fields(r: &mut Cursor<'_>) -> Result<Self, EnvelopeError> {
        let nonce = r.array::<NONCE_LEN>()?;
        let reader_id = r.id("reader_id")?;
        let user_id = r.id("user_id")?;
        let captured_at = i64::from_be_bytes(r.array::<8>()?);
        Ok(CaptureContext {
            nonce,
            reader_id,
            user_id,
            captured_at,
        })
    }
}

/// Appends a label or identifier with a one-byte length (all are ≤ 64 bytes
/// after `check_id`; labels are constants shorter than 255).
fn put_u8_len(out: &mut Vec<u8>, bytes: &[u8]) {
    let len = u8::try_from(bytes.len()).unwrap_or(u8::MAX);
    out.push(len);
    out.extend_from_slice(bytes.get(..usize::from(len)).unwrap_or(bytes));
}

fn put_u16_len(out: &mut Vec<u8>, bytes: &[u8]) {
    let len = u16::try_from(bytes.len()).unwrap_or(u16::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(bytes.get(..usize::from(len)).unwrap_or(bytes));
}

/// A strict reader over a byte slice.
struct Cursor<'a>(&'a [u8]);

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], EnvelopeError> {
        let (head, tail) = self.0.split_at_checked(n).ok_or(EnvelopeError::Truncated)?;
        self.0 = tail;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], EnvelopeError> {
        let (head, tail) = self
            .0
            .split_first_chunk::<N>()
            .ok_or(EnvelopeError::Truncated)?;
        self.0 = tail;
        Ok(*head)
    }

    fn u8(&mut self) -> Result<u8, EnvelopeError> {
        let [b] = self.array::<1>()?;
        Ok(b)
    }

    fn bool(&mut self, field: &'static str) -> Result<bool, EnvelopeError> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(EnvelopeError::BadField(field)),
        }
    }

    fn id(&mut self, field: &'static str) -> Result<String, EnvelopeError> {
        let len = usize::from(self.u8()?);
        let bytes = self.take(len)?;
        let s = core::str::from_utf8(bytes).map_err(|_| EnvelopeError::BadId(field))?;
        check_id(s, field)?;
        Ok(s.to_owned())
    }

    fn header(&mut self, magic: [u8; 4]) -> Result<(), EnvelopeError> {
        if self.array::<4>()? != magic {
            return Err(EnvelopeError::BadMagic);
        }
        match self.u8()? {
            VERSION => Ok(()),
            v => Err(EnvelopeError::UnsupportedVersion(v)),
        }
    }

    fn finish(&self) -> Result<(), EnvelopeError> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(EnvelopeError::TrailingBytes)
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The server's long-term HPKE (X25519) private key. Zeroized on drop.
pub struct MatcherKey {
    sk: <Kem as KemTrait>::PrivateKey,
    pk: <Kem as KemTrait>::PublicKey,
}

/// Shows the public key only.
impl fmt::Debug for MatcherKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MatcherKey")
            .field("public", &hex(&self.pk.to_bytes()))
            .finish_non_exhaustive()
    }
}

impl MatcherKey {
    /// A fresh key from the random generator (RFC 9180 DeriveKeyPair over 32
    /// random bytes).
    pub fn generate(rng: &dyn SecureRandom) -> Result<Self, EnvelopeError> {
        let mut ikm = Zeroizing::new([0u8; 32]);
        rng.fill(ikm.as_mut()).map_err(|_| EnvelopeError::Rng)?;
        let (sk, pk) = Kem::derive_keypair(ikm.as_ref());
        Ok(MatcherKey { sk, pk })
    }

    /// From the 32-byte X25519 private key.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, EnvelopeError> {
        if bytes.len() != 32 || bytes.iter().all(|&b| b == 0) {
            return Err(EnvelopeError::BadMatcherKey);
        }
        let sk = <Kem as KemTrait>::PrivateKey::from_bytes(bytes)
            .map_err(|_| EnvelopeError::BadMatcherKey)?;
        let pk = Kem::sk_to_pk(&sk);
        Ok(MatcherKey { sk, pk })
    }

    /// The private key bytes, for storage encrypted at rest.
    pub fn to_bytes(&self) -> Zeroizing<[u8; 32]> {
        let mut out = Zeroizing::new([0u8; 32]);
        let mut b = self.sk.to_bytes();
        out.copy_from_slice(&b);
        b.as_mut_slice().zeroize();
        out
    }

    /// The public key readers seal to (`BeginResponse::matcher_public_key`).
    pub fn public_key(&self) -> MatcherPublicKey {
        let mut out = [0u8; 32];
        out.copy_from_slice(&self.pk.to_bytes());
        MatcherPublicKey(out)
    }
}

/// The server's HPKE public key.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct MatcherPublicKey([u8; 32]);

impl fmt::Debug for MatcherPublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MatcherPublicKey({})", hex(&self.0))
    }
}

impl MatcherPublicKey {
    /// From 32 bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, EnvelopeError> {
        let arr: [u8; 32] = bytes.try_into().map_err(|_| EnvelopeError::BadMatcherKey)?;
        Ok(MatcherPublicKey(arr))
    }

    /// The 32 bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

/// A reader's Ed25519 signing key (inside the reader; the emulator and tests
/// hold it in software).
pub struct ReaderKey(Ed25519KeyPair);

/// Shows the public key only.
impl fmt::Debug for ReaderKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReaderKey")
            .field("public", &hex(self.0.public_key().as_ref()))
            .finish_non_exhaustive()
    }
}

impl ReaderKey {
    /// A fresh key; also returns its PKCS#8 v2 document for storage.
    pub fn generate(rng: &dyn SecureRandom) -> Result<(Self, Zeroizing<Vec<u8>>), EnvelopeError> {
        let doc = Ed25519KeyPair::generate_pkcs8(rng).map_err(|_| EnvelopeError::Rng)?;
        let pkcs8 = Zeroizing::new(doc.as_ref().to_vec());
        let key = Self::from_pkcs8(&pkcs8)?;
        Ok((key, pkcs8))
    }

    /// From a PKCS#8 v2 document (as `generate` returns).
    pub fn from_pkcs8(pkcs8: &[u8]) -> Result<Self, EnvelopeError> {
        Ed25519KeyPair::from_pkcs8(pkcs8)
            .map(ReaderKey)
            .map_err(|_| EnvelopeError::BadReaderKey)
    }

    /// From a 32-byte seed (deterministic emulators and tests).
    pub fn from_seed(seed: &[u8; 32]) -> Result<Self, EnvelopeError> {
        Ed25519KeyPair::from_seed_unchecked(seed)
            .map(ReaderKey)
            .map_err(|_| EnvelopeError::BadReaderKey)
    }

    /// The public key an officer registers for this reader.
    pub fn public_key(&self) -> ReaderPublicKey {
        let mut out = [0u8; 32];
        out.copy_from_slice(self.0.public_key().as_ref());
        ReaderPublicKey(out)
    }

    fn sign(&self, msg: &[u8]) -> [u8; SIGNATURE_LEN] {
        let mut out = [0u8; SIGNATURE_LEN];
        out.copy_from_slice(self.0.sign(msg).as_ref());
        out
    }
}

/// A registered reader's Ed25519 public key.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct ReaderPublicKey([u8; 32]);

impl fmt::Debug for ReaderPublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ReaderPublicKey({})", hex(&self.0))
    }
}

impl ReaderPublicKey {
    /// From 32 bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, EnvelopeError> {
        let arr: [u8; 32] = bytes.try_into().map_err(|_| EnvelopeError::BadReaderKey)?;
        Ok(ReaderPublicKey(arr))
    }

    /// The 32 bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    fn verify(&self, msg: &[u8], sig: &[u8; SIGNATURE_LEN]) -> Result<(), EnvelopeError> {
        UnparsedPublicKey::new(&ED25519, &self.0)
            .verify(msg, sig)
            .map_err(|_| EnvelopeError::BadSignature)
    }
}

/// The HPKE ephemeral randomness: 32 bytes from `ring`, expanded with
/// SHA-256 in counter mode should more ever be asked for. `hpke` draws
/// exactly 32 bytes (one X25519 ephemeral key) per seal.
struct RingSeeded {
    seed: Zeroizing<[u8; 32]>,
    counter: u64,
}

impl RingSeeded {
    fn new(rng: &dyn SecureRandom) -> Result<Self, EnvelopeError> {
        let mut seed = Zeroizing::new([0u8; 32]);
        rng.fill(seed.as_mut()).map_err(|_| EnvelopeError::Rng)?;
        Ok(RingSeeded { seed, counter: 0 })
    }
}

impl TryRng for RingSeeded {
    type Error = Infallible;

    fn try_next_u32(&mut self) -> Result<u32, Infallible> {
        let mut b = [0u8; 4];
        self.try_fill_bytes(&mut b)?;
        Ok(u32::from_le_bytes(b))
    }

    fn try_next_u64(&mut self) -> Result<u64, Infallible> {
        let mut b = [0u8; 8];
        self.try_fill_bytes(&mut b)?;
        Ok(u64::from_le_bytes(b))
    }

    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Infallible> {
        for chunk in dst.chunks_mut(32) {
            let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
            ctx.update(b"ClinAuth biometric v1: hpke rng");
            ctx.update(self.seed.as_ref());
            ctx.update(&self.counter.to_be_bytes());
            self.counter = self.counter.wrapping_add(1);
            let block = ctx.finish();
            for (d, s) in chunk.iter_mut().zip(block.as_ref()) {
                *d = *s;
            }
        }
        Ok(())
    }
}

impl TryCryptoRng for RingSeeded {}

/// A reader's signed, HPKE-sealed capture. Holds no plaintext feature data.
#[derive(Clone, PartialEq, Eq)]
pub struct SealedCapture {
    context: CaptureContext,
    enc: [u8; ENC_LEN],
    ciphertext: Vec<u8>,
    signature: [u8; SIGNATURE_LEN],
}

/// Shows the context and sizes.
impl fmt::Debug for SealedCapture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SealedCapture")
            .field("context", &self.context)
            .field("ciphertext_len", &self.ciphertext.len())
            .finish_non_exhaustive()
    }
}

impl SealedCapture {
    /// The (as yet unverified) context the capture claims.
    pub fn context(&self) -> &CaptureContext {
        &self.context
    }

    /// The bytes the reader signs.
    fn signed_message(&self) -> Vec<u8> {
        let aad = self.context.aad();
        let mut m = Vec::with_capacity(
            1 + SIG_LABEL.len() + 2 + aad.len() + ENC_LEN + 2 + self.ciphertext.len(),
        );
        put_u8_len(&mut m, SIG_LABEL);
        put_u16_len(&mut m, &aad);
        m.extend_from_slice(&self.enc);
        put_u16_len(&mut m, &self.ciphertext);
        m
    }

    /// The wire form (see the module docs).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(MAX_SEALED_LEN);
        out.extend_from_slice(&SEALED_MAGIC);
        out.push(VERSION);
        self.context.put_fields(&mut out);
        out.extend_from_slice(&self.enc);
        put_u16_len(&mut out, &self.ciphertext);
        out.extend_from_slice(&self.signature);
        out
    }

    /// Parses the wire form strictly. Does not verify anything.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, EnvelopeError> {
        if bytes.len() > MAX_SEALED_LEN {
            return Err(EnvelopeError::TooLong {
                len: bytes.len(),
                max: MAX_SEALED_LEN,
            });
        }
        let mut r = Cursor(bytes);
        r.header(SEALED_MAGIC)?;
        let context = CaptureContext::read_fields(&mut r)?;
        let enc = r.array::<ENC_LEN>()?;
        let ct_len = usize::from(u16::from_be_bytes(r.array::<2>()?));
        if !(TAG_LEN..=MAX_CIPHERTEXT_LEN).contains(&ct_len) {
            return Err(EnvelopeError::BadField("ciphertext length"));
        }
        let ciphertext = r.take(ct_len)?.to_vec();
        let signature = r.array::<SIGNATURE_LEN>()?;
        r.finish()?;
        Ok(SealedCapture {
            context,
            enc,
            ciphertext,
            signature,
        })
    }
}

/// Reader side: seals `template` to the matcher and signs the result.
/// The plaintext encoding is wiped before returning.
pub fn seal(
    matcher: &MatcherPublicKey,
    template: &Template,
    capture: &CaptureContext,
    reader: &ReaderKey,
    rng: &dyn SecureRandom,
) -> Result<SealedCapture, EnvelopeError> {
    capture.check()?;
    let pk = <Kem as KemTrait>::PublicKey::from_bytes(&matcher.0)
        .map_err(|_| EnvelopeError::BadMatcherKey)?;
    let aad = capture.aad();
    let mut buf = template.encode();
    let mut drbg = RingSeeded::new(rng)?;
    let (enc, tag) = hpke::single_shot_seal_inout_detached_with_rng::<Aead, Kdf, Kem>(
        &OpModeS::Base,
        &pk,
        HPKE_INFO,
        InOutBuf::from(buf.as_mut_slice()),
        &aad,
        &mut drbg,
    )
    .map_err(|_| EnvelopeError::Seal)?;
    // `buf` now holds ciphertext; it is still wiped on drop.
    let mut ciphertext = Vec::with_capacity(buf.len() + TAG_LEN);
    ciphertext.extend_from_slice(&buf);
    ciphertext.extend_from_slice(&tag.to_bytes());
    let mut enc_bytes = [0u8; ENC_LEN];
    enc_bytes.copy_from_slice(&enc.to_bytes());
    let mut sealed = SealedCapture {
        context: capture.clone(),
        enc: enc_bytes,
        ciphertext,
        signature: [0u8; SIGNATURE_LEN],
    };
    sealed.signature = reader.sign(&sealed.signed_message());
    Ok(sealed)
}

/// Server side: parses, verifies the reader signature (first), checks the
/// nonce/reader/user binding and clock window, opens the HPKE envelope and
/// decodes the template. The plaintext is wiped on every path.
pub fn open(
    matcher: &MatcherKey,
    reader: &ReaderPublicKey,
    expected: &Expected,
    sealed: &[u8],
) -> Result<Template, EnvelopeError> {
    let sc = SealedCapture::from_bytes(sealed)?;
    open_capture(matcher, reader, expected, &sc)
}

/// [`open`] on an already parsed capture.
pub fn open_capture(
    matcher: &MatcherKey,
    reader: &ReaderPublicKey,
    expected: &Expected,
    sc: &SealedCapture,
) -> Result<Template, EnvelopeError> {
    reader.verify(&sc.signed_message(), &sc.signature)?;
    expected.check(&sc.context)?;
    let aad = sc.context.aad();
    let enc =
        <Kem as KemTrait>::EncappedKey::from_bytes(&sc.enc).map_err(|_| EnvelopeError::Open)?;
    let split = sc
        .ciphertext
        .len()
        .checked_sub(TAG_LEN)
        .ok_or(EnvelopeError::Open)?;
    let (body, tag) = sc
        .ciphertext
        .split_at_checked(split)
        .ok_or(EnvelopeError::Open)?;
    let tag = AeadTag::<Aead>::from_bytes(tag).map_err(|_| EnvelopeError::Open)?;
    let mut buf = Zeroizing::new(body.to_vec());
    hpke::single_shot_open_inout_detached::<Aead, Kdf, Kem>(
        &OpModeR::Base,
        &matcher.sk,
        &enc,
        HPKE_INFO,
        InOutBuf::from(buf.as_mut_slice()),
        &aad,
        &tag,
    )
    .map_err(|_| EnvelopeError::Open)?;
    Ok(Template::decode(&buf)?)
}

/// A match-on-reader device's decision, signed by the reader (R-BIO-1: the
/// template never leaves the device).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedDecision {
    /// Nonce, reader, user and capture time.
    pub context: CaptureContext,
    /// The reader's match decision.
    pub matched: bool,
    /// The reader's score (its own scale).
    pub score: u16,
    /// The reader ran presentation attack detection and judged the sample
    /// bona fide.
    pub pad: bool,
    /// Ed25519 over `DECISION_LABEL` and the body.
    pub signature: [u8; SIGNATURE_LEN],
}

impl SignedDecision {
    /// Reader side: builds and signs a decision.
    pub fn sign(
        reader: &ReaderKey,
        context: CaptureContext,
        matched: bool,
        score: u16,
        pad: bool,
    ) -> Result<Self, EnvelopeError> {
        context.check()?;
        let mut d = SignedDecision {
            context,
            matched,
            score,
            pad,
            signature: [0u8; SIGNATURE_LEN],
        };
        d.signature = reader.sign(&d.signed_message());
        Ok(d)
    }

    fn body(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(MAX_DECISION_LEN);
        out.extend_from_slice(&DECISION_MAGIC);
        out.push(VERSION);
        self.context.put_fields(&mut out);
        out.push(u8::from(self.matched));
        out.extend_from_slice(&self.score.to_be_bytes());
        out.push(u8::from(self.pad));
        out
    }

    fn signed_message(&self) -> Vec<u8> {
        let mut m = Vec::with_capacity(1 + DECISION_LABEL.len() + MAX_DECISION_LEN);
        put_u8_len(&mut m, DECISION_LABEL);
        m.extend_from_slice(&self.body());
        m
    }

    /// The wire form (see the module docs).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = self.body();
        out.extend_from_slice(&self.signature);
        out
    }

    /// Parses the wire form strictly. Does not verify anything.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, EnvelopeError> {
        if bytes.len() > MAX_DECISION_LEN {
            return Err(EnvelopeError::TooLong {
                len: bytes.len(),
                max: MAX_DECISION_LEN,
            });
        }
        let mut r = Cursor(bytes);
        r.header(DECISION_MAGIC)?;
        let context = CaptureContext::read_fields(&mut r)?;
        let matched = r.bool("matched")?;
        let score = u16::from_be_bytes(r.array::<2>()?);
        let pad = r.bool("pad")?;
        let signature = r.array::<SIGNATURE_LEN>()?;
        r.finish()?;
        Ok(SignedDecision {
            context,
            matched,
            score,
            pad,
            signature,
        })
    }
}

/// Server side: verifies the reader signature (first), then the nonce,
/// reader, user and clock window. Returns the reader's `matched`.
pub fn verify_decision(
    reader: &ReaderPublicKey,
    expected: &Expected,
    decision: &SignedDecision,
) -> Result<bool, EnvelopeError> {
    reader.verify(&decision.signed_message(), &decision.signature)?;
    expected.check(&decision.context)?;
    Ok(decision.matched)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::matcher::verify;
    use crate::synthetic::SyntheticFinger;
    use proptest::prelude::*;
    use ring::rand::SystemRandom;

    const NOW: i64 = 1_767_225_600; // 2026-01-01T00:00:00Z

    fn ctx() -> CaptureContext {
        CaptureContext {
            nonce: [7u8; NONCE_LEN],
            reader_id: "reader-ward3-01".into(),
            user_id: "nurse.tanaka".into(),
            captured_at: NOW - 2,
        }
    }

    fn expected() -> Expected {
        Expected {
            nonce: [7u8; NONCE_LEN],
            reader_id: "reader-ward3-01".into(),
            user_id: "nurse.tanaka".into(),
            now: NOW,
            max_age_secs: 60,
            max_future_secs: 5,
        }
    }

    struct Fixture {
        matcher: MatcherKey,
        reader: ReaderKey,
        reference: Template,
        probe: Template,
        wire: Vec<u8>,
    }

    fn fixture() -> Fixture {
        let rng = SystemRandom::new();
        let matcher = MatcherKey::generate(&rng).unwrap();
        let reader = ReaderKey::from_seed(&[3u8; 32]).unwrap();
        let finger = SyntheticFinger::new(42);
        let reference = finger.capture(0);
        let probe = finger.capture(1);
        let wire = seal(&matcher.public_key(), &probe, &ctx(), &reader, &rng)
            .unwrap()
            .to_bytes();
        Fixture {
            matcher,
            reader,
            reference,
            probe,
            wire,
        }
    }

    fn open_fx(f: &Fixture, wire: &[u8]) -> Result<Template, EnvelopeError> {
        open(&f.matcher, &f.reader.public_key(), &expected(), wire)
    }

    /// Re-sign a modified capture with the (legitimate) reader key, to test
    /// the HPKE layer on its own.
    fn resign(sc: &mut SealedCapture, key: &ReaderKey) {
        sc.signature = key.sign(&sc.signed_message());
    }

    #[test]
    fn round_trip_seal_open_match() {
        let f = fixture();
        assert!(f.wire.len() <= MAX_SEALED_LEN);
        let opened = open_fx(&f, &f.wire).unwrap();
        assert_eq!(opened, f.probe);
        let r = verify(&f.reference, &opened);
        assert!(r.matched, "{r:?}");
        // An impostor's sealed capture opens but does not match.
        let other = SyntheticFinger::new(43).capture(1);
        let rng = SystemRandom::new();
        let w = seal(&f.matcher.public_key(), &other, &ctx(), &f.reader, &rng)
            .unwrap()
            .to_bytes();
        assert!(!verify(&f.reference, &open_fx(&f, &w).unwrap()).matched);
    }

    #[test]
    fn r_bio_1_envelope_contains_no_plaintext_template() {
        let f = fixture();
        let plain = f.probe.encode();
        assert!(plain.len() > 8);
        assert!(!f.wire.windows(plain.len()).any(|w| w == &plain[..]));
        for window in plain.windows(8) {
            assert!(
                !f.wire.windows(8).any(|w| w == window),
                "an 8-byte window of the template appears in the envelope"
            );
        }
        // Nor the minutiae block alone, shifted anywhere.
        let minutiae = &plain[crate::template::HEADER_LEN..];
        assert!(!f.wire.windows(minutiae.len()).any(|w| w == minutiae));
        // Debug output of the envelope shows no ciphertext either.
        let dbg = format!("{:?}", SealedCapture::from_bytes(&f.wire).unwrap());
        assert!(dbg.contains("ciphertext_len"));
    }

    #[test]
    fn two_seals_of_the_same_template_differ() {
        let f = fixture();
        let rng = SystemRandom::new();
        let again = seal(&f.matcher.public_key(), &f.probe, &ctx(), &f.reader, &rng)
            .unwrap()
            .to_bytes();
        assert_ne!(again, f.wire);
    }

    #[test]
    fn wrong_matcher_key_does_not_open() {
        let f = fixture();
        let other = MatcherKey::generate(&SystemRandom::new()).unwrap();
        assert_eq!(
            open(&other, &f.reader.public_key(), &expected(), &f.wire),
            Err(EnvelopeError::Open)
        );
    }

    #[test]
    fn matcher_key_round_trips_and_hides_secret() {
        let k = MatcherKey::generate(&SystemRandom::new()).unwrap();
        let b = k.to_bytes();
        let k2 = MatcherKey::from_bytes(b.as_ref()).unwrap();
        assert_eq!(k.public_key(), k2.public_key());
        let dbg = format!("{k:?}");
        assert!(!dbg.contains(&hex(b.as_ref())));
        assert!(dbg.contains(&hex(k.public_key().as_bytes())));
        assert_eq!(
            MatcherKey::from_bytes(&[0u8; 32]).unwrap_err(),
            EnvelopeError::BadMatcherKey
        );
        assert_eq!(
            MatcherKey::from_bytes(&[1u8; 31]).unwrap_err(),
            EnvelopeError::BadMatcherKey
        );
        assert!(MatcherPublicKey::from_bytes(&[1u8; 33]).is_err());
        assert!(ReaderPublicKey::from_bytes(&[1u8; 31]).is_err());
        let (rk, pkcs8) = ReaderKey::generate(&SystemRandom::new()).unwrap();
        assert_eq!(
            ReaderKey::from_pkcs8(&pkcs8).unwrap().public_key(),
            rk.public_key()
        );
        assert!(ReaderKey::from_pkcs8(&pkcs8[1..]).is_err());
    }

    #[test]
    fn tampered_envelope_is_refused() {
        let f = fixture();
        let sc = SealedCapture::from_bytes(&f.wire).unwrap();
        // Any altered byte of the ciphertext, AAD fields, encapsulated key or
        // signature fails the signature check, which comes first.
        for i in 0..f.wire.len() {
            let mut w = f.wire.clone();
            w[i] ^= 0x01;
            let e = open_fx(&f, &w).unwrap_err();
            assert!(
                matches!(
                    e,
                    EnvelopeError::BadSignature
                        | EnvelopeError::BadMagic
                        | EnvelopeError::UnsupportedVersion(_)
                        | EnvelopeError::BadId(_)
                        | EnvelopeError::BadField(_)
                        | EnvelopeError::Truncated
                        | EnvelopeError::TrailingBytes
                ),
                "byte {i}: {e:?}"
            );
        }
        // Even with a valid signature (a reader that signs whatever it is
        // given), HPKE refuses an altered ciphertext, tag or encapsulated key.
        let mut c = sc.clone();
        c.ciphertext[3] ^= 0x80;
        resign(&mut c, &f.reader);
        assert_eq!(
            open_capture(&f.matcher, &f.reader.public_key(), &expected(), &c),
            Err(EnvelopeError::Open)
        );
        let mut c = sc.clone();
        let last = c.ciphertext.len() - 1;
        c.ciphertext[last] ^= 0x01;
        resign(&mut c, &f.reader);
        assert_eq!(
            open_capture(&f.matcher, &f.reader.public_key(), &expected(), &c),
            Err(EnvelopeError::Open)
        );
        let mut c = sc.clone();
        c.enc[0] ^= 0x01;
        resign(&mut c, &f.reader);
        assert_eq!(
            open_capture(&f.matcher, &f.reader.public_key(), &expected(), &c),
            Err(EnvelopeError::Open)
        );
        // A swapped signature from another capture.
        let rng = SystemRandom::new();
        let other = seal(
            &f.matcher.public_key(),
            &f.reference,
            &ctx(),
            &f.reader,
            &rng,
        )
        .unwrap();
        let mut c = sc.clone();
        c.signature = other.signature;
        assert_eq!(
            open_capture(&f.matcher, &f.reader.public_key(), &expected(), &c),
            Err(EnvelopeError::BadSignature)
        );
    }

    #[test]
    fn r_bio_3_capture_bound_to_nonce_reader_and_user() {
        let f = fixture();
        let pk = f.reader.public_key();
        // Replayed against a later authentication (another nonce).
        let mut e = expected();
        e.nonce[0] ^= 1;
        assert_eq!(
            open(&f.matcher, &pk, &e, &f.wire),
            Err(EnvelopeError::NonceMismatch)
        );
        // Offered for another user.
        let mut e = expected();
        e.user_id = "dr.suzuki".into();
        assert_eq!(
            open(&f.matcher, &pk, &e, &f.wire),
            Err(EnvelopeError::UserMismatch)
        );
        // Claimed to come from another reader (with that reader's key the
        // signature fails; with this one the binding does).
        let mut e = expected();
        e.reader_id = "reader-ward3-02".into();
        assert_eq!(
            open(&f.matcher, &pk, &e, &f.wire),
            Err(EnvelopeError::ReaderMismatch)
        );
        // Clock window.
        let mut e = expected();
        e.now = NOW + 120;
        assert_eq!(
            open(&f.matcher, &pk, &e, &f.wire),
            Err(EnvelopeError::TooOld)
        );
        let mut e = expected();
        e.now = NOW - 60;
        assert_eq!(
            open(&f.matcher, &pk, &e, &f.wire),
            Err(EnvelopeError::FromFuture)
        );
        // Rewriting the context on the wire to fit the new expectations
        // breaks the signature...
        let sc = SealedCapture::from_bytes(&f.wire).unwrap();
        let mut e2 = expected();
        e2.nonce = [9u8; NONCE_LEN];
        e2.user_id = "dr.suzuki".into();
        for edit in 0..3 {
            let mut c = sc.clone();
            match edit {
                0 => c.context.nonce = e2.nonce,
                1 => c.context.user_id = e2.user_id.clone(),
                _ => c.context.captured_at += 1,
            }
            let mut exp = expected();
            exp.nonce = c.context.nonce;
            exp.user_id = c.context.user_id.clone();
            assert_eq!(
                open(&f.matcher, &pk, &exp, &c.to_bytes()),
                Err(EnvelopeError::BadSignature),
                "edit {edit}"
            );
            // ...and even a re-signature (a reader that signs anything it is
            // handed) does not help: the AAD no longer matches the HPKE seal.
            resign(&mut c, &f.reader);
            assert_eq!(
                open(&f.matcher, &pk, &exp, &c.to_bytes()),
                Err(EnvelopeError::Open),
                "edit {edit}"
            );
        }
        // Signature is checked before the binding: a wrong nonce plus a bad
        // signature reports the signature.
        let mut w = f.wire.clone();
        let n = w.len();
        w[n - 1] ^= 1;
        let mut e = expected();
        e.nonce[0] ^= 1;
        assert_eq!(
            open(&f.matcher, &pk, &e, &w),
            Err(EnvelopeError::BadSignature)
        );
    }

    #[test]
    fn r_bio_3_unregistered_reader_key_is_refused() {
        let f = fixture();
        let rogue = ReaderKey::from_seed(&[4u8; 32]).unwrap();
        let rng = SystemRandom::new();
        let w = seal(&f.matcher.public_key(), &f.probe, &ctx(), &rogue, &rng)
            .unwrap()
            .to_bytes();
        assert_eq!(open_fx(&f, &w), Err(EnvelopeError::BadSignature));
        // The registered key of another reader does not verify it either.
        assert_eq!(
            open(&f.matcher, &rogue.public_key(), &expected(), &f.wire),
            Err(EnvelopeError::BadSignature)
        );
    }

    #[test]
    fn oversized_truncated_and_malformed_inputs() {
        let f = fixture();
        for n in 0..f.wire.len() {
            assert!(open_fx(&f, &f.wire[..n]).is_err(), "prefix {n}");
        }
        let mut w = f.wire.clone();
        w.push(0);
        assert_eq!(open_fx(&f, &w), Err(EnvelopeError::TrailingBytes));
        let big = vec![0u8; MAX_SEALED_LEN + 1];
        assert!(matches!(
            open_fx(&f, &big),
            Err(EnvelopeError::TooLong { .. })
        ));
        assert!(matches!(
            SignedDecision::from_bytes(&vec![0u8; MAX_DECISION_LEN + 1]),
            Err(EnvelopeError::TooLong { .. })
        ));
        // Bad identifiers are refused on both sides.
        let rng = SystemRandom::new();
        for bad in ["", "a\nb", &"x".repeat(MAX_ID_LEN + 1)] {
            let mut c = ctx();
            c.user_id = bad.to_string();
            assert_eq!(
                seal(&f.matcher.public_key(), &f.probe, &c, &f.reader, &rng).unwrap_err(),
                EnvelopeError::BadId("user_id")
            );
        }
        // A valid-signature envelope whose plaintext is not a template.
        let mut c = ctx();
        c.nonce = [1; 32];
        let junk_template = Template::new(10, 10, 500, vec![]).unwrap();
        let mut sc = seal(&f.matcher.public_key(), &junk_template, &c, &f.reader, &rng).unwrap();
        // Replace the plaintext by sealing different bytes directly.
        let pk =
            <Kem as KemTrait>::PublicKey::from_bytes(f.matcher.public_key().as_bytes()).unwrap();
        let mut drbg = RingSeeded::new(&rng).unwrap();
        let (enc, ct) = hpke::single_shot_seal_with_rng::<Aead, Kdf, Kem>(
            &OpModeS::Base,
            &pk,
            HPKE_INFO,
            b"not a template",
            &c.aad(),
            &mut drbg,
        )
        .unwrap();
        sc.enc.copy_from_slice(&enc.to_bytes());
        sc.ciphertext = ct;
        resign(&mut sc, &f.reader);
        let mut e = expected();
        e.nonce = [1; 32];
        assert_eq!(
            open(&f.matcher, &f.reader.public_key(), &e, &sc.to_bytes()),
            Err(EnvelopeError::Template(TemplateError::BadMagic))
        );
    }

    #[test]
    fn decision_round_trip_and_forgery() {
        let reader = ReaderKey::from_seed(&[5u8; 32]).unwrap();
        let pk = reader.public_key();
        let d = SignedDecision::sign(&reader, ctx(), true, 4321, true).unwrap();
        let wire = d.to_bytes();
        assert!(wire.len() <= MAX_DECISION_LEN);
        let parsed = SignedDecision::from_bytes(&wire).unwrap();
        assert_eq!(parsed, d);
        assert_eq!(verify_decision(&pk, &expected(), &parsed), Ok(true));
        let no = SignedDecision::sign(&reader, ctx(), false, 10, false).unwrap();
        assert_eq!(verify_decision(&pk, &expected(), &no), Ok(false));

        // Forged: flip `matched` (or any other byte) on the wire.
        let mut forged = no.clone();
        forged.matched = true;
        assert_eq!(
            verify_decision(&pk, &expected(), &forged),
            Err(EnvelopeError::BadSignature)
        );
        for i in 0..wire.len() {
            let mut w = wire.clone();
            w[i] ^= 0x01;
            if let Ok(p) = SignedDecision::from_bytes(&w) {
                assert_eq!(
                    verify_decision(&pk, &expected(), &p),
                    Err(EnvelopeError::BadSignature),
                    "byte {i}"
                );
            }
        }
        // Signed by an unregistered reader.
        let rogue = ReaderKey::from_seed(&[6u8; 32]).unwrap();
        let d2 = SignedDecision::sign(&rogue, ctx(), true, 9999, true).unwrap();
        assert_eq!(
            verify_decision(&pk, &expected(), &d2),
            Err(EnvelopeError::BadSignature)
        );
        // Replayed for another nonce / user / reader.
        let mut e = expected();
        e.nonce = [8u8; 32];
        assert_eq!(
            verify_decision(&pk, &e, &d),
            Err(EnvelopeError::NonceMismatch)
        );
        let mut e = expected();
        e.user_id = "someone.else".into();
        assert_eq!(
            verify_decision(&pk, &e, &d),
            Err(EnvelopeError::UserMismatch)
        );
        let mut e = expected();
        e.reader_id = "reader-x".into();
        assert_eq!(
            verify_decision(&pk, &e, &d),
            Err(EnvelopeError::ReaderMismatch)
        );
        // Strict booleans, truncation, trailing bytes.
        let matched_at = wire.len() - SIGNATURE_LEN - 4;
        let mut w = wire.clone();
        w[matched_at] = 2;
        assert_eq!(
            SignedDecision::from_bytes(&w),
            Err(EnvelopeError::BadField("matched"))
        );
        for n in 0..wire.len() {
            assert!(SignedDecision::from_bytes(&wire[..n]).is_err());
        }
        let mut w = wire.clone();
        w.push(0);
        assert_eq!(
            SignedDecision::from_bytes(&w),
            Err(EnvelopeError::TrailingBytes)
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn open_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..1400)) {
            let m = MatcherKey::from_bytes(&[9u8; 32]).unwrap();
            let r = ReaderKey::from_seed(&[3u8; 32]).unwrap().public_key();
            prop_assert!(open(&m, &r, &expected(), &bytes).is_err());
            let _ = SignedDecision::from_bytes(&bytes);
        }

        #[test]
        fn open_mutated_envelope_always_fails(i in any::<usize>(), v in 1u8..=255, extra in any::<bool>()) {
            let m = MatcherKey::from_bytes(&[9u8; 32]).unwrap();
            let reader = ReaderKey::from_seed(&[3u8; 32]).unwrap();
            let t = SyntheticFinger::new(5).capture(5);
            let mut w = seal(&m.public_key(), &t, &ctx(), &reader, &SystemRandom::new()).unwrap().to_bytes();
            let i = i % w.len();
            w[i] ^= v;
            if extra { w.push(v); }
            prop_assert!(open(&m, &reader.public_key(), &expected(), &w).is_err());
        }
    }
}
