//! A session with a PIV card (NIST SP 800-73-4, the subset the agent needs).
//!
//! The PIN is a [`Pin`] (zeroized on drop, never in `Debug`). Before every
//! VERIFY the driver asks the card how many tries are left (VERIFY without
//! data) and refuses to spend the last one unless the caller says
//! [`LastTry::Spend`] (the user confirmed, R-AUTH: "never spend the last try
//! silently"); if the card cannot tell, the count is treated as possibly the
//! last.
//!
//! The card signs exactly what the server verifies:
//! [`clinauth_factors::card::challenge_message`], as its SHA-256 for an
//! ECDSA P-256 key and as [`clinauth_factors::card::pkcs1_v15_sha256_block`]
//! for an RSA key (the card does the raw private-key operation). The driver
//! checks the signature against the certificate before returning it, so a
//! card that answers garbage is caught here with a clear error.

use std::fmt;

use clinauth_factors::card::{
    challenge_message, digest_signature_input, pkcs1_v15_sha256_block, sha256,
    verify_digest_signature, verify_signature, CardKeyKind, CardPublicKey, MAX_CERTIFICATE_LEN,
    NONCE_LEN,
};
use clinauth_policy::Purpose;
use zeroize::Zeroizing;

use super::apdu::{exchange, push_len, sw, tlv};
use super::{CardError, ConnectOptions, PcscTransport, Transport};

/// The PIV AID prefix used to SELECT (RID and PIX up to the version).
pub const PIV_AID: [u8; 9] = [0xA0, 0x00, 0x00, 0x03, 0x08, 0x00, 0x00, 0x10, 0x00];

/// A PIV key slot the agent uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PivSlot {
    /// 9A, PIV authentication: login, unlock, step-up.
    Authentication,
    /// 9C, digital signature (R-SIG-1): the card asks for the PIN before
    /// every signature.
    Signature,
}

impl PivSlot {
    /// The key reference (P2 of GENERAL AUTHENTICATE).
    pub fn key_ref(self) -> u8 {
        match self {
            Self::Authentication => 0x9A,
            Self::Signature => 0x9C,
        }
    }

    /// The tag of the data object holding the slot's certificate.
    pub fn cert_object(self) -> [u8; 3] {
        match self {
            Self::Authentication => [0x5F, 0xC1, 0x05],
            Self::Signature => [0x5F, 0xC1, 0x0A],
        }
    }

    fn index(self) -> usize {
        match self {
            Self::Authentication => 0,
            Self::Signature => 1,
        }
    }
}

impl fmt::Display for PivSlot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:02X}", self.key_ref())
    }
}

/// The key algorithm of a slot, from its certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyAlgorithm {
    /// ECDSA P-256 (PIV algorithm 11).
    EcdsaP256,
    /// RSA; `modulus_len` bytes (256, 384 or 512).
    Rsa {
        /// The modulus length in bytes.
        modulus_len: usize,
    },
}

impl KeyAlgorithm {
    /// The PIV algorithm identifier (P1 of GENERAL AUTHENTICATE).
    pub fn piv_id(self) -> Result<u8, CardError> {
        match self {
            Self::EcdsaP256 => Ok(0x11),
            Self::Rsa { modulus_len: 256 } => Ok(0x07),
            Self::Rsa { modulus_len: 384 } => Ok(0x05),
            Self::Rsa { modulus_len: 512 } => Ok(0x16),
            Self::Rsa { .. } => Err(CardError::Unsupported("RSA modulus length")),
        }
    }
}

/// A slot's certificate with its checked public key.
#[derive(Clone, PartialEq, Eq)]
pub struct CardCertificate {
    der: Vec<u8>,
    public_key: CardPublicKey,
    fingerprint: [u8; 32],
}

impl fmt::Debug for CardCertificate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CardCertificate")
            .field("fingerprint", &self.fingerprint_hex())
            .field("key", &self.public_key.kind())
            .finish_non_exhaustive()
    }
}

impl CardCertificate {
    /// Parses a DER certificate and checks that its key is one the product
    /// accepts (ECDSA P-256, RSA 2048..4096).
    pub fn from_der(der: &[u8]) -> Result<Self, CardError> {
        if der.len() > MAX_CERTIFICATE_LEN {
            return Err(CardError::Malformed("certificate too large"));
        }
        let (rest, cert) = x509_parser::parse_x509_certificate(der)
            .map_err(|_| CardError::Malformed("certificate is not DER X.509"))?;
        if !rest.is_empty() {
            return Err(CardError::Malformed("bytes after the certificate"));
        }
        let public_key = CardPublicKey::from_spki_der(cert.public_key().raw)?;
        Ok(Self {
            der: der.to_vec(),
            public_key,
            fingerprint: sha256(der),
        })
    }

    /// The DER certificate.
    pub fn der(&self) -> &[u8] {
        &self.der
    }

    /// The certificate's public key.
    pub fn public_key(&self) -> &CardPublicKey {
        &self.public_key
    }

    /// SHA-256 of the DER certificate: the card's identity for the watcher
    /// and the session binding.
    pub fn fingerprint(&self) -> [u8; 32] {
        self.fingerprint
    }

    /// The fingerprint in lower-case hex.
    pub fn fingerprint_hex(&self) -> String {
        hex(&self.fingerprint)
    }

    /// The key algorithm.
    pub fn algorithm(&self) -> Result<KeyAlgorithm, CardError> {
        match self.public_key.kind() {
            CardKeyKind::EcdsaP256 => Ok(KeyAlgorithm::EcdsaP256),
            CardKeyKind::Rsa { .. } => self
                .public_key
                .rsa_modulus_len()
                .map(|modulus_len| KeyAlgorithm::Rsa { modulus_len })
                .ok_or(CardError::Unsupported("RSA key without a modulus length")),
        }
    }
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// A PIV PIN: 6 to 8 digits, kept padded with 0xFF to 8 bytes in a buffer
/// that is zeroized on drop. Never printed.
#[derive(Clone)]
pub struct Pin(Zeroizing<[u8; 8]>);

impl Pin {
    /// A PIN from its digits (ASCII). Refuses anything but 6 to 8 digits.
    pub fn new(digits: &[u8]) -> Result<Self, CardError> {
        if !(6..=8).contains(&digits.len()) || !digits.iter().all(u8::is_ascii_digit) {
            return Err(CardError::PinFormat);
        }
        let mut padded = Zeroizing::new([0xFFu8; 8]);
        padded
            .get_mut(..digits.len())
            .ok_or(CardError::PinFormat)?
            .copy_from_slice(digits);
        Ok(Self(padded))
    }
}

impl fmt::Debug for Pin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Pin(<secret>)")
    }
}

/// What the card says about its PIN.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PinStatus {
    /// Verified in this card session.
    Verified,
    /// Not verified; this many tries left.
    TriesLeft(u8),
    /// Blocked.
    Blocked,
}

/// Whether VERIFY may spend the last PIN try.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LastTry {
    /// Refuse with [`CardError::LastTryNeedsConfirmation`] and send nothing.
    Refuse,
    /// The user was told this is the last try and confirmed.
    Spend,
}

/// A signature over the server's card challenge, with the certificate that
/// verifies it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedChallenge {
    /// The signature (DER ECDSA, or the RSA PKCS#1 v1.5 signature).
    pub signature: Vec<u8>,
    /// The slot's certificate (DER).
    pub certificate_der: Vec<u8>,
}

/// A session with a PIV card: SELECTed, certificates cached.
pub struct CardSession<T: Transport = PcscTransport> {
    transport: T,
    certs: [Option<CardCertificate>; 2],
}

impl<T: Transport> fmt::Debug for CardSession<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CardSession")
            .field("certs", &self.certs)
            .finish_non_exhaustive()
    }
}

impl CardSession<PcscTransport> {
    /// Connects to the card in `reader` and selects its PIV application.
    pub fn connect(reader: &str, opts: ConnectOptions) -> Result<Self, CardError> {
        Self::open(PcscTransport::connect(reader, opts)?)
    }

    /// [`CardSession::connect`], waiting up to [`BUSY_WAIT`] while another
    /// holder finishes with the card: most often the agent's own reader
    /// watcher, which reads a card's identity in shared mode when it is
    /// inserted or reset (as at the end of an abandoned login). A card still
    /// held after that is [`CardError::Busy`].
    pub fn connect_when_free(reader: &str, opts: ConnectOptions) -> Result<Self, CardError> {
        let deadline = std::time::Instant::now() + BUSY_WAIT;
        loop {
            match Self::connect(reader, opts) {
                Err(CardError::Busy) if std::time::Instant::now() + BUSY_RETRY < deadline => {
                    std::thread::sleep(BUSY_RETRY);
                }
                other => return other,
            }
        }
    }
}

/// How long [`CardSession::connect_when_free`] waits for a busy card.
pub const BUSY_WAIT: std::time::Duration = std::time::Duration::from_secs(2);
const BUSY_RETRY: std::time::Duration = std::time::Duration::from_millis(50);

impl<T: Transport> CardSession<T> {
    /// Selects the PIV application over `transport`.
    pub fn open(mut transport: T) -> Result<Self, CardError> {
        let r = exchange(
            &mut transport,
            "SELECT",
            [0x00, 0xA4, 0x04, 0x00],
            &PIV_AID,
            Some(0),
        )?;
        if !r.is_ok() {
            return Err(CardError::NotPiv(r.sw));
        }
        Ok(Self {
            transport,
            certs: [None, None],
        })
    }

    /// The transport (e.g. to read the ATR).
    pub fn transport(&self) -> &T {
        &self.transport
    }

    /// Ends the session and returns the transport.
    pub fn into_transport(self) -> T {
        self.transport
    }

    /// The certificate of `slot` (read once, then cached).
    pub fn certificate(&mut self, slot: PivSlot) -> Result<&CardCertificate, CardError> {
        let i = slot.index();
        if self.certs.get(i).is_some_and(Option::is_none) {
            let cert = self.read_certificate(slot)?;
            if let Some(c) = self.certs.get_mut(i) {
                *c = Some(cert);
            }
        }
        self.certs
            .get(i)
            .and_then(Option::as_ref)
            .ok_or(CardError::NoCertificate(slot))
    }

    fn read_certificate(&mut self, slot: PivSlot) -> Result<CardCertificate, CardError> {
        let [a, b, c] = slot.cert_object();
        let r = exchange(
            &mut self.transport,
            "GET DATA",
            [0x00, 0xCB, 0x3F, 0xFF],
            &[0x5C, 0x03, a, b, c],
            Some(0),
        )?;
        match r.sw {
            sw::OK => {}
            sw::NOT_FOUND | sw::REF_DATA_NOT_FOUND => return Err(CardError::NoCertificate(slot)),
            sw::SECURITY_STATUS => return Err(CardError::PinRequired),
            sw => {
                return Err(CardError::Status {
                    command: "GET DATA",
                    sw,
                })
            }
        }
        let (object, rest) = tlv(&r.data)?;
        if object.tag != 0x53 || !rest.is_empty() {
            return Err(CardError::Malformed(
                "certificate object is not one 53 element",
            ));
        }
        let mut cert = None;
        let mut info = None;
        let mut inner = object.value;
        for _ in 0..8 {
            if inner.is_empty() {
                break;
            }
            let (element, rest) = tlv(inner)?;
            inner = rest;
            match element.tag {
                0x70 => cert = Some(element.value),
                0x71 => info = Some(element.value),
                _ => {}
            }
        }
        if !inner.is_empty() {
            return Err(CardError::Malformed(
                "too many elements in the certificate object",
            ));
        }
        match info {
            None | Some([0x00]) => {}
            Some([0x01]) => return Err(CardError::Unsupported("compressed certificate")),
            Some(_) => return Err(CardError::Malformed("certificate info")),
        }
        let cert = cert.ok_or(CardError::NoCertificate(slot))?;
        if cert.is_empty() {
            return Err(CardError::NoCertificate(slot));
        }
        CardCertificate::from_der(cert)
    }

    /// Asks the card about its PIN without spending a try (VERIFY without
    /// data).
    pub fn pin_status(&mut self) -> Result<PinStatus, CardError> {
        let r = exchange(
            &mut self.transport,
            "VERIFY",
            [0x00, 0x20, 0x00, 0x80],
            &[],
            None,
        )?;
        match r.sw {
            sw::OK => Ok(PinStatus::Verified),
            sw::AUTH_BLOCKED | 0x63C0 => Ok(PinStatus::Blocked),
            s if s & 0xFFF0 == 0x63C0 => Ok(PinStatus::TriesLeft((s & 0x0F) as u8)),
            sw => Err(CardError::Status {
                command: "VERIFY",
                sw,
            }),
        }
    }

    /// Verifies the PIN. Never spends the last try unless `last_try` is
    /// [`LastTry::Spend`]. A wrong PIN gives [`CardError::WrongPin`] with
    /// the tries left; a blocked one [`CardError::PinBlocked`].
    pub fn verify_pin(&mut self, pin: &Pin, last_try: LastTry) -> Result<(), CardError> {
        match self.pin_status() {
            Ok(PinStatus::Blocked) => return Err(CardError::PinBlocked),
            Ok(PinStatus::TriesLeft(n)) if n <= 1 && last_try == LastTry::Refuse => {
                return Err(CardError::LastTryNeedsConfirmation {
                    tries_left: Some(n),
                })
            }
            Ok(_) => {}
            // The card cannot tell: it may be the last try.
            Err(CardError::Status { .. }) if last_try == LastTry::Refuse => {
                return Err(CardError::LastTryNeedsConfirmation { tries_left: None })
            }
            Err(CardError::Status { .. }) => {}
            Err(e) => return Err(e),
        }
        let r = exchange(
            &mut self.transport,
            "VERIFY",
            [0x00, 0x20, 0x00, 0x80],
            pin.0.as_slice(),
            None,
        )?;
        match r.sw {
            sw::OK => Ok(()),
            sw::AUTH_BLOCKED | 0x63C0 => Err(CardError::PinBlocked),
            s if s & 0xFFF0 == 0x63C0 => Err(CardError::WrongPin {
                tries_left: (s & 0x0F) as u8,
            }),
            sw => Err(CardError::Status {
                command: "VERIFY",
                sw,
            }),
        }
    }

    /// Has the key of `slot` sign `message` (SHA-256 for ECDSA, the PKCS#1
    /// v1.5 SHA-256 block for RSA) and checks the signature against the
    /// slot's certificate. The PIN must be verified already; for the 9C key
    /// ("PIN always") use [`CardSession::sign_with_pin`].
    pub fn sign_message(&mut self, slot: PivSlot, message: &[u8]) -> Result<Vec<u8>, CardError> {
        let cert = self.certificate(slot)?.clone();
        let alg = cert.algorithm()?;
        let input: Zeroizing<Vec<u8>> = Zeroizing::new(match alg {
            KeyAlgorithm::EcdsaP256 => sha256(message).to_vec(),
            KeyAlgorithm::Rsa { modulus_len } => pkcs1_v15_sha256_block(message, modulus_len)?,
        });
        let signature = self.general_authenticate(slot, alg, &input)?;
        verify_signature(cert.public_key(), message, &signature)?;
        Ok(signature)
    }

    /// Verifies the PIN right before the signature, as a "PIN always" key
    /// (9C) needs: the certificate is read first, so that nothing comes
    /// between VERIFY and GENERAL AUTHENTICATE.
    pub fn sign_with_pin(
        &mut self,
        slot: PivSlot,
        message: &[u8],
        pin: &Pin,
        last_try: LastTry,
    ) -> Result<Vec<u8>, CardError> {
        self.certificate(slot)?;
        self.verify_pin(pin, last_try)?;
        self.sign_message(slot, message)
    }

    /// Signs a document's SHA-256 `digest` with the signature key (9C,
    /// "PIN always": VERIFY right before, every time; R-SIG-1), and checks
    /// the signature against the slot's certificate before returning it
    /// with that certificate.
    pub fn sign_digest_with_pin(
        &mut self,
        digest: &[u8; 32],
        pin: &Pin,
        last_try: LastTry,
    ) -> Result<SignedChallenge, CardError> {
        let cert = self.certificate(PivSlot::Signature)?.clone();
        let alg = cert.algorithm()?;
        let input = Zeroizing::new(digest_signature_input(cert.public_key().kind(), digest)?);
        self.verify_pin(pin, last_try)?;
        let signature = self.general_authenticate(PivSlot::Signature, alg, &input)?;
        verify_digest_signature(cert.public_key(), digest, &signature)?;
        Ok(SignedChallenge {
            signature,
            certificate_der: cert.der().to_vec(),
        })
    }

    /// Signs the server's card challenge with the 9A key:
    /// [`challenge_message`]`(nonce, user, workstation, purpose)`.
    pub fn sign_challenge(
        &mut self,
        nonce: &[u8; NONCE_LEN],
        user: &str,
        workstation: &str,
        purpose: Purpose,
    ) -> Result<SignedChallenge, CardError> {
        let message = challenge_message(nonce, user, workstation, purpose)?;
        let signature = self.sign_message(PivSlot::Authentication, &message)?;
        let certificate_der = self.certificate(PivSlot::Authentication)?.der().to_vec();
        Ok(SignedChallenge {
            signature,
            certificate_der,
        })
    }

    /// GENERAL AUTHENTICATE `7C { 82 00, 81 input }`; returns the value of
    /// `82` in the `7C` answer, checked for its length.
    fn general_authenticate(
        &mut self,
        slot: PivSlot,
        alg: KeyAlgorithm,
        input: &[u8],
    ) -> Result<Vec<u8>, CardError> {
        let mut inner = Zeroizing::new(vec![0x82, 0x00, 0x81]);
        push_len(&mut inner, input.len())?;
        inner.extend_from_slice(input);
        let mut template = Zeroizing::new(vec![0x7C]);
        push_len(&mut template, inner.len())?;
        template.extend_from_slice(&inner);
        let r = exchange(
            &mut self.transport,
            "GENERAL AUTHENTICATE",
            [0x00, 0x87, alg.piv_id()?, slot.key_ref()],
            &template,
            Some(0),
        )?;
        match r.sw {
            sw::OK => {}
            sw::SECURITY_STATUS => return Err(CardError::PinRequired),
            sw => {
                return Err(CardError::Status {
                    command: "GENERAL AUTHENTICATE",
                    sw,
                })
            }
        }
        let (outer, rest) = tlv(&r.data)?;
        if outer.tag != 0x7C || !rest.is_empty() {
            return Err(CardError::Malformed(
                "GENERAL AUTHENTICATE answer is not 7C",
            ));
        }
        let (sig, rest) = tlv(outer.value)?;
        if sig.tag != 0x82 || !rest.is_empty() {
            return Err(CardError::Malformed("no 82 signature in the 7C answer"));
        }
        let ok = match alg {
            // SEQUENCE { INTEGER r, INTEGER s }: 8 to 72 bytes.
            KeyAlgorithm::EcdsaP256 => (8..=72).contains(&sig.value.len()),
            KeyAlgorithm::Rsa { modulus_len } => sig.value.len() == modulus_len,
        };
        if !ok {
            return Err(CardError::Malformed("signature of the wrong length"));
        }
        Ok(sig.value.to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::card::mock::Scripted;

    fn session(answers: Vec<Vec<u8>>) -> CardSession<Scripted> {
        let mut all = vec![vec![0x61, 0x00, 0x90, 0x00]];
        all.extend(answers);
        CardSession::open(Scripted::new(all)).unwrap()
    }

    #[test]
    fn pin_is_padded_checked_and_secret() {
        let pin = Pin::new(b"123456").unwrap();
        assert_eq!(pin.0.as_slice(), b"123456\xFF\xFF");
        assert_eq!(format!("{pin:?}"), "Pin(<secret>)");
        for bad in [&b"12345"[..], b"123456789", b"12345a", b""] {
            assert!(matches!(Pin::new(bad), Err(CardError::PinFormat)));
        }
    }

    #[test]
    fn never_spends_the_last_try_silently() {
        let pin = Pin::new(b"123456").unwrap();
        let mut s = session(vec![vec![0x63, 0xC1]]);
        assert!(matches!(
            s.verify_pin(&pin, LastTry::Refuse),
            Err(CardError::LastTryNeedsConfirmation {
                tries_left: Some(1)
            })
        ));
        // Only SELECT and the status query went out.
        assert_eq!(s.transport.sent.len(), 2);
        assert_eq!(s.transport.sent[1], vec![0x00, 0x20, 0x00, 0x80]);

        // Unknown count: the same.
        let mut s = session(vec![vec![0x6A, 0x88]]);
        assert!(matches!(
            s.verify_pin(&pin, LastTry::Refuse),
            Err(CardError::LastTryNeedsConfirmation { tries_left: None })
        ));

        // Confirmed: sent, and wrong.
        let mut s = session(vec![vec![0x63, 0xC1], vec![0x63, 0xC0]]);
        assert!(matches!(
            s.verify_pin(&pin, LastTry::Spend),
            Err(CardError::PinBlocked)
        ));
        assert_eq!(&s.transport.sent[2][5..], b"123456\xFF\xFF");
    }

    #[test]
    fn wrong_pin_reports_tries_left() {
        let pin = Pin::new(b"123456").unwrap();
        let mut s = session(vec![vec![0x63, 0xC3], vec![0x63, 0xC2]]);
        assert!(matches!(
            s.verify_pin(&pin, LastTry::Refuse),
            Err(CardError::WrongPin { tries_left: 2 })
        ));
        let mut s = session(vec![vec![0x69, 0x83]]);
        assert!(matches!(
            s.verify_pin(&pin, LastTry::Spend),
            Err(CardError::PinBlocked)
        ));
    }

    #[test]
    fn not_piv() {
        let t = Scripted::new([vec![0x6A, 0x82]]);
        assert!(matches!(
            CardSession::open(t),
            Err(CardError::NotPiv(0x6A82))
        ));
    }

    #[test]
    fn broken_certificate_objects_are_typed_errors() {
        for object in [
            vec![0x53, 0x05, 0x70, 0x03, 1],                   // truncated
            vec![0x53, 0x02, 0x71, 0x00],                      // no 70
            vec![0x53, 0x05, 0x70, 0x03, 1, 2, 3],             // not DER
            vec![0x7F, 0x02, 0x70, 0x00],                      // not 53
            vec![0x53, 0x06, 0x70, 0x01, 1, 0x71, 0x01, 0x01], // wrong length inside
        ] {
            let mut answer = object.clone();
            answer.extend_from_slice(&[0x90, 0x00]);
            let mut s = session(vec![answer]);
            let e = s.certificate(PivSlot::Authentication).unwrap_err();
            assert!(
                matches!(
                    e,
                    CardError::Malformed(_)
                        | CardError::NoCertificate(_)
                        | CardError::Unsupported(_)
                ),
                "{object:02X?}: {e:?}"
            );
        }
    }
}
