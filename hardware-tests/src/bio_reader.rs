//! A biometric reader emulator: a device with its own signing key
//! ([`ReaderKey`], registered with the server by an officer), a reader ID
//! and a protection mode, that "captures" from a seeded [`SyntheticFinger`]
//! and produces the evidence the server verifies (R-BIO-1..3):
//!
//! - [`Protection::SealedTemplate`]: the capture's template is sealed inside
//!   the reader to the server's matcher key (HPKE) with the nonce, reader ID
//!   and user ID as associated data, and signed ([`SealedCapture`]).
//! - [`Protection::MatchOnReader`]: the reader holds the enrolled template,
//!   matches 1:1 itself and signs a [`SignedDecision`]; no template leaves it.
//!
//! The transport is in-process for now (the agent issue defines how the
//! agent talks to readers): the agent's tests call [`BioReader::capture`]
//! where a real reader would be asked over USB or a socket.

use clinauth_biometric::envelope::NONCE_LEN;
use clinauth_biometric::template::Template;
use clinauth_biometric::{
    seal, verify, CaptureContext, EnvelopeError, MatcherPublicKey, ReaderKey, ReaderPublicKey,
    SealedCapture, SignedDecision, SyntheticFinger,
};

/// How the reader protects the biometric.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protection {
    /// Seals the template to the server's matcher.
    SealedTemplate,
    /// Matches on the reader and signs the decision.
    MatchOnReader,
}

/// What the reader hands the agent for the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Evidence {
    /// A sealed, signed template.
    Sealed(SealedCapture),
    /// A signed match decision.
    Decision(SignedDecision),
}

impl Evidence {
    /// The wire form the agent relays as opaque bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        match self {
            Self::Sealed(s) => s.to_bytes(),
            Self::Decision(d) => d.to_bytes(),
        }
    }
}

/// Why a capture failed.
#[derive(Debug, thiserror::Error)]
pub enum BioReaderError {
    /// No finger on the sensor.
    #[error("no finger on the sensor")]
    NoFinger,
    /// A match-on-reader device without an enrolled template.
    #[error("nothing enrolled on the reader")]
    NotEnrolled,
    /// Sealing or signing failed.
    #[error("envelope: {0}")]
    Envelope(#[from] EnvelopeError),
}

/// The emulated reader.
pub struct BioReader {
    id: String,
    key: ReaderKey,
    protection: Protection,
    enrolled: Option<Template>,
    finger: Option<SyntheticFinger>,
    captures: u64,
    pad: bool,
}

impl std::fmt::Debug for BioReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BioReader")
            .field("id", &self.id)
            .field("protection", &self.protection)
            .field("enrolled", &self.enrolled.is_some())
            .finish_non_exhaustive()
    }
}

impl BioReader {
    /// A reader with ID `id` and the signing key derived from `key_seed`.
    pub fn new(
        id: &str,
        key_seed: &[u8; 32],
        protection: Protection,
    ) -> Result<Self, BioReaderError> {
        Ok(Self {
            id: id.to_owned(),
            key: ReaderKey::from_seed(key_seed)?,
            protection,
            enrolled: None,
            finger: None,
            captures: 0,
            pad: true,
        })
    }

    /// The reader's ID.
    pub fn reader_id(&self) -> &str {
        &self.id
    }

    /// The public key an officer registers for this reader.
    pub fn public_key(&self) -> ReaderPublicKey {
        self.key.public_key()
    }

    /// The protection mode.
    pub fn protection(&self) -> Protection {
        self.protection
    }

    /// Whether presentation attack detection judges samples bona fide
    /// (reported in a match-on-reader decision).
    pub fn set_pad(&mut self, bona_fide: bool) {
        self.pad = bona_fide;
    }

    /// Enrolls `finger` on the reader (match-on-reader devices).
    pub fn enroll(&mut self, finger: &SyntheticFinger) {
        self.enrolled = Some(finger.capture(0xE1));
    }

    /// Puts a finger on the sensor.
    pub fn place_finger(&mut self, finger: SyntheticFinger) {
        self.finger = Some(finger);
    }

    /// Lifts it.
    pub fn lift_finger(&mut self) {
        self.finger = None;
    }

    /// Captures the finger on the sensor (a fresh impression each time) and
    /// produces the evidence for the server's `nonce`, `user_id` and
    /// `matcher` key, at `now` (seconds since the epoch, the reader's clock).
    pub fn capture(
        &mut self,
        nonce: &[u8; NONCE_LEN],
        user_id: &str,
        matcher: &MatcherPublicKey,
        now: i64,
    ) -> Result<Evidence, BioReaderError> {
        let finger = self.finger.as_ref().ok_or(BioReaderError::NoFinger)?;
        self.captures = self.captures.wrapping_add(1);
        let probe = finger.capture(self.captures);
        let context = CaptureContext {
            nonce: *nonce,
            reader_id: self.id.clone(),
            user_id: user_id.to_owned(),
            captured_at: now,
        };
        match self.protection {
            Protection::SealedTemplate => {
                let rng = ring::rand::SystemRandom::new();
                Ok(Evidence::Sealed(seal(
                    matcher, &probe, &context, &self.key, &rng,
                )?))
            }
            Protection::MatchOnReader => {
                let enrolled = self.enrolled.as_ref().ok_or(BioReaderError::NotEnrolled)?;
                let result = verify(enrolled, &probe);
                Ok(Evidence::Decision(SignedDecision::sign(
                    &self.key,
                    context,
                    result.matched,
                    result.score,
                    self.pad,
                )?))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clinauth_biometric::{open_capture, verify_decision, Expected, MatcherKey};

    fn expected(nonce: [u8; 32], reader: &str) -> Expected {
        Expected {
            nonce,
            reader_id: reader.into(),
            user_id: "alice".into(),
            now: 1_700_000_000,
            max_age_secs: 60,
            max_future_secs: 5,
        }
    }

    #[test]
    fn r_bio_1_sealed_template_opens_only_at_the_server_and_matches() {
        let rng = ring::rand::SystemRandom::new();
        let matcher = MatcherKey::generate(&rng).unwrap();
        let mut reader =
            BioReader::new("ward3-bio-1", &[7; 32], Protection::SealedTemplate).unwrap();
        let finger = SyntheticFinger::new(42);
        let enrolled = finger.capture(1000);
        assert!(matches!(
            reader.capture(&[1; 32], "alice", &matcher.public_key(), 1_700_000_000),
            Err(BioReaderError::NoFinger)
        ));
        reader.place_finger(finger);
        let ev = reader
            .capture(&[1; 32], "alice", &matcher.public_key(), 1_700_000_000)
            .unwrap();
        let Evidence::Sealed(sc) = ev else {
            panic!("sealed")
        };
        let probe = open_capture(
            &matcher,
            &reader.public_key(),
            &expected([1; 32], "ward3-bio-1"),
            &sc,
        )
        .unwrap();
        assert!(verify(&enrolled, &probe).matched);
        // Another nonce (R-BIO-3) or reader: refused.
        assert!(open_capture(
            &matcher,
            &reader.public_key(),
            &expected([2; 32], "ward3-bio-1"),
            &sc
        )
        .is_err());
        assert!(open_capture(
            &matcher,
            &reader.public_key(),
            &expected([1; 32], "other"),
            &sc
        )
        .is_err());
        // Another finger does not match.
        reader.place_finger(SyntheticFinger::new(43));
        let Evidence::Sealed(sc) = reader
            .capture(&[1; 32], "alice", &matcher.public_key(), 1_700_000_000)
            .unwrap()
        else {
            panic!("sealed")
        };
        let probe = open_capture(
            &matcher,
            &reader.public_key(),
            &expected([1; 32], "ward3-bio-1"),
            &sc,
        )
        .unwrap();
        assert!(!verify(&enrolled, &probe).matched);
    }

    #[test]
    fn r_bio_1_match_on_reader_signs_its_decision() {
        let rng = ring::rand::SystemRandom::new();
        let matcher = MatcherKey::generate(&rng).unwrap();
        let mut reader =
            BioReader::new("ward3-bio-2", &[9; 32], Protection::MatchOnReader).unwrap();
        reader.place_finger(SyntheticFinger::new(42));
        assert!(matches!(
            reader.capture(&[1; 32], "alice", &matcher.public_key(), 1_700_000_000),
            Err(BioReaderError::NotEnrolled)
        ));
        reader.enroll(&SyntheticFinger::new(42));
        let exp = expected([1; 32], "ward3-bio-2");
        let Evidence::Decision(d) = reader
            .capture(&[1; 32], "alice", &matcher.public_key(), 1_700_000_000)
            .unwrap()
        else {
            panic!("decision")
        };
        assert!(verify_decision(&reader.public_key(), &exp, &d).unwrap());
        reader.place_finger(SyntheticFinger::new(77));
        let Evidence::Decision(d) = reader
            .capture(&[1; 32], "alice", &matcher.public_key(), 1_700_000_000)
            .unwrap()
        else {
            panic!("decision")
        };
        assert!(!verify_decision(&reader.public_key(), &exp, &d).unwrap());
        // Another reader's key does not verify it.
        let other = BioReader::new("ward3-bio-2", &[10; 32], Protection::MatchOnReader).unwrap();
        assert!(verify_decision(&other.public_key(), &exp, &d).is_err());
    }
}
