//! TOTP (RFC 6238): secret generation, provisioning, and verification that
//! never accepts a code twice.
//!
//! Parameters are fixed to what every authenticator app supports: HMAC-SHA-1,
//! 6 digits, 30-second steps, a window of one step either side.
//!
//! A successful [`verify`] returns the matched time step. The server must
//! store it as the user's `last_used_step` in the same transaction that
//! accepts the login; the next verification passes it back, and only a code
//! for a strictly later step is accepted (RFC 6238 §5.2). The result is the
//! policy evidence [`clinauth_policy::Factor::Totp`].
//!
//! totp-rs's own `Totp::check` compares tokens in constant time but stops at
//! the first matching step; [`verify`] instead renders the code of every step
//! in the window and compares each with the input in constant time.

use crate::constant_time::bytes_equal;
use ring::rand::SecureRandom;
use std::fmt;
use totp_rs::{Algorithm, Totp};
use zeroize::Zeroizing;

/// Issuer shown in authenticator apps.
pub const ISSUER: &str = "ClinAuth";
/// Digits in a code.
pub const DIGITS: usize = 6;
/// Seconds per time step.
pub const STEP_SECONDS: u64 = 30;
/// Steps accepted either side of the current one.
pub const WINDOW: u64 = 1;
/// Length of a generated secret (160 bits, RFC 4226 §4).
pub const SECRET_LEN: usize = 20;
/// Shortest secret accepted (128 bits, RFC 4226 §4).
pub const MIN_SECRET_LEN: usize = 16;
/// Longest secret accepted.
pub const MAX_SECRET_LEN: usize = 64;
/// Longest account name (user ID) put in a provisioning URI, in bytes.
pub const MAX_ACCOUNT_LEN: usize = 128;
/// Longest input looked at as a code; longer input is refused unread.
const MAX_CODE_INPUT: usize = 32;

/// Why a TOTP operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TotpError {
    /// The secret is shorter than 128 bits or longer than 512.
    #[error("TOTP secret must be {MIN_SECRET_LEN}..={MAX_SECRET_LEN} bytes, got {0}")]
    SecretLength(usize),
    /// The random generator failed.
    #[error("random generator failed")]
    Random,
    /// The code is not exactly six ASCII digits.
    #[error("a TOTP code is exactly {DIGITS} digits 0-9")]
    MalformedCode,
    /// The code matches no step in the window.
    #[error("TOTP code does not match")]
    WrongCode,
    /// The code matches a step already used (or earlier): a replay.
    #[error("TOTP code already used")]
    Replayed,
    /// `now` is before 1970.
    #[error("time before the Unix epoch")]
    TimeBeforeEpoch,
    /// The account name is empty, too long, or contains ':'.
    #[error("account name must be 1..={MAX_ACCOUNT_LEN} bytes without ':'")]
    AccountName,
    /// totp-rs refused to build the provisioning URI or QR code.
    #[error("cannot build the provisioning data")]
    Provisioning,
}

/// A TOTP shared secret. Zeroized on drop; `Debug` prints `[redacted]`.
#[derive(Clone)]
pub struct TotpSecret(Zeroizing<Vec<u8>>);

impl TotpSecret {
    /// A new random 20-byte secret.
    pub fn generate(rng: &dyn SecureRandom) -> Result<TotpSecret, TotpError> {
        let mut bytes = Zeroizing::new(vec![0u8; SECRET_LEN]);
        rng.fill(&mut bytes).map_err(|_| TotpError::Random)?;
        Ok(TotpSecret(bytes))
    }

    /// A secret read back from storage (after [`crate::at_rest::open`]).
    pub fn from_bytes(bytes: Zeroizing<Vec<u8>>) -> Result<TotpSecret, TotpError> {
        if !(MIN_SECRET_LEN..=MAX_SECRET_LEN).contains(&bytes.len()) {
            return Err(TotpError::SecretLength(bytes.len()));
        }
        Ok(TotpSecret(bytes))
    }

    /// The raw secret, for sealing at rest.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }

    fn totp(&self, account: &str) -> Result<Totp, TotpError> {
        self.totp_with_digits(DIGITS, account)
    }

    fn totp_with_digits(&self, digits: usize, account: &str) -> Result<Totp, TotpError> {
        let digits = u8::try_from(digits).map_err(|_| TotpError::Provisioning)?;
        let builder = totp_rs::Builder::new()
            .with_algorithm(Algorithm::SHA1)
            .with_digits(digits)
            .with_skew(0)
            .with_step_duration(STEP_SECONDS)
            .with_secret(self.0.as_slice());
        let builder = if account.is_empty() {
            builder
        } else {
            builder.with_issuer(Some(ISSUER)).with_account_name(account)
        };
        builder.build().map_err(|_| TotpError::Provisioning)
    }
}

impl fmt::Debug for TotpSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TotpSecret([redacted])")
    }
}

fn check_account(user: &str) -> Result<(), TotpError> {
    if user.is_empty() || user.len() > MAX_ACCOUNT_LEN || user.contains(':') {
        return Err(TotpError::AccountName);
    }
    Ok(())
}

/// The `otpauth://totp/ClinAuth:<user>?secret=…&issuer=ClinAuth` URI for
/// enrolling an authenticator app. It contains the secret: zeroized on drop.
pub fn provisioning_uri(secret: &TotpSecret, user: &str) -> Result<Zeroizing<String>, TotpError> {
    check_account(user)?;
    let totp = secret.totp(user)?;
    totp.to_url()
        .map(Zeroizing::new)
        .map_err(|_| TotpError::Provisioning)
}

/// The provisioning URI as a QR code PNG. It contains the secret: zeroized on drop.
pub fn provisioning_qr_png(
    secret: &TotpSecret,
    user: &str,
) -> Result<Zeroizing<Vec<u8>>, TotpError> {
    check_account(user)?;
    let totp = secret.totp(user)?;
    totp.to_qr_png()
        .map(Zeroizing::new)
        .map_err(|_| TotpError::Provisioning)
}

/// Verifies `code` at `now` (Unix seconds) within ±[`WINDOW`] steps and
/// returns the matched step, which is always strictly greater than
/// `last_used_step` (pass `None` before the first use).
///
/// A code that matches only steps up to `last_used_step` is
/// [`TotpError::Replayed`]. If a code matches several steps (a one in a
/// million coincidence), the latest is used.
pub fn verify(
    secret: &TotpSecret,
    code: &str,
    now: i64,
    last_used_step: Option<u64>,
) -> Result<u64, TotpError> {
    verify_with_digits(secret, DIGITS, code, now, last_used_step)
}

fn verify_with_digits(
    secret: &TotpSecret,
    digits: usize,
    code: &str,
    now: i64,
    last_used_step: Option<u64>,
) -> Result<u64, TotpError> {
    if code.len() > MAX_CODE_INPUT
        || code.len() != digits
        || !code.bytes().all(|b| b.is_ascii_digit())
    {
        return Err(TotpError::MalformedCode);
    }
    let now = u64::try_from(now).map_err(|_| TotpError::TimeBeforeEpoch)?;
    let totp = secret.totp_with_digits(digits, "")?;
    let current = now / STEP_SECONDS;
    let first = current.saturating_sub(WINDOW);
    let last = current.saturating_add(WINDOW);

    // Every step of the window is computed and compared: no early exit.
    let mut matched: Option<u64> = None;
    for step in first..=last {
        let Some(time) = step.checked_mul(STEP_SECONDS) else {
            continue;
        };
        let expected = Zeroizing::new(totp.generate(time).to_string());
        if bytes_equal(expected.as_bytes(), code.as_bytes()) {
            matched = Some(step);
        }
    }
    let step = matched.ok_or(TotpError::WrongCode)?;
    match last_used_step {
        Some(used) if step <= used => Err(TotpError::Replayed),
        _ => Ok(step),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ring::rand::SystemRandom;

    /// The RFC 6238 Appendix B secret for SHA-1.
    fn rfc_secret() -> TotpSecret {
        TotpSecret::from_bytes(Zeroizing::new(b"12345678901234567890".to_vec())).unwrap()
    }

    /// RFC 6238 Appendix B, SHA-1 rows: (time, 8-digit code).
    const RFC_6238_SHA1: [(i64, &str); 6] = [
        (59, "94287082"),
        (1_111_111_109, "07081804"),
        (1_111_111_111, "14050471"),
        (1_234_567_890, "89005924"),
        (2_000_000_000, "69279037"),
        (20_000_000_000, "65353130"),
    ];

    #[test]
    fn rfc_6238_sha1_test_vectors_8_digits() {
        let secret = rfc_secret();
        for (time, code) in RFC_6238_SHA1 {
            let step = verify_with_digits(&secret, 8, code, time, None).unwrap();
            assert_eq!(step, time as u64 / 30, "{time}");
        }
    }

    #[test]
    fn rfc_6238_sha1_test_vectors_6_digits() {
        // A 6-digit code is the 8-digit one modulo 10^6.
        let secret = rfc_secret();
        for (time, code) in RFC_6238_SHA1 {
            assert_eq!(
                verify(&secret, &code[2..], time, None),
                Ok(time as u64 / 30),
                "{time}"
            );
        }
    }

    #[test]
    fn totp_code_is_never_accepted_twice_rfc6238_5_2() {
        let secret = rfc_secret();
        let step = verify(&secret, "287082", 59, None).unwrap();
        assert_eq!(step, 1);
        // The same code again, even a second later in the same step: replay.
        assert_eq!(
            verify(&secret, "287082", 60, Some(step)),
            Err(TotpError::Replayed)
        );
        // An older step than the stored one: also refused.
        assert_eq!(
            verify(&secret, "287082", 59, Some(step + 5)),
            Err(TotpError::Replayed)
        );
        // The next step's code is fine.
        let next = Zeroizing::new(secret.totp("").unwrap().generate(60).to_string());
        assert_eq!(verify(&secret, &next, 61, Some(step)), Ok(2));
    }

    #[test]
    fn window_is_one_step_either_side() {
        let secret = rfc_secret();
        let totp = secret.totp("").unwrap();
        let now: i64 = 1_700_000_015; // in step 56_666_667
        let step = now as u64 / 30;
        for (offset, accepted) in [(-2i64, false), (-1, true), (0, true), (1, true), (2, false)] {
            let s = (step as i64 + offset) as u64;
            let code = totp.generate(s * 30).to_string();
            let result = verify(&secret, &code, now, None);
            if accepted {
                assert_eq!(result, Ok(s), "offset {offset}");
            } else {
                assert_eq!(result, Err(TotpError::WrongCode), "offset {offset}");
            }
        }
        // Step boundaries: the last second of a step and the first of the next.
        let code = totp.generate(step * 30).to_string();
        let end_of_next = (step * 30 + 59) as i64;
        assert_eq!(verify(&secret, &code, end_of_next, None), Ok(step));
        assert_eq!(
            verify(&secret, &code, end_of_next + 1, None),
            Err(TotpError::WrongCode)
        );
    }

    #[test]
    fn window_at_the_epoch_does_not_underflow() {
        let secret = rfc_secret();
        let code = secret.totp("").unwrap().generate(0).to_string();
        assert_eq!(verify(&secret, &code, 0, None), Ok(0));
        assert_eq!(
            verify(&secret, &code, -1, None),
            Err(TotpError::TimeBeforeEpoch)
        );
    }

    #[test]
    fn malformed_codes_are_refused() {
        let secret = rfc_secret();
        for bad in [
            "",
            "28708",
            "2870820",
            "28708a",
            "+87082",
            "-87082",
            " 87082",
            "287082 ",
            "２８７０８２", // full-width digits
            "٢٨٧٠٨٢",       // Arabic-Indic digits
            "28708\u{0}",
            &"2".repeat(10_000),
        ] {
            assert_eq!(
                verify(&secret, bad, 59, None),
                Err(TotpError::MalformedCode),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn wrong_secret_is_refused() {
        let other =
            TotpSecret::from_bytes(Zeroizing::new(b"abcdefghijklmnopqrst".to_vec())).unwrap();
        assert_eq!(
            verify(&other, "287082", 59, None),
            Err(TotpError::WrongCode)
        );
    }

    #[test]
    fn secret_length_limits_and_generation() {
        assert_eq!(
            TotpSecret::from_bytes(Zeroizing::new(vec![1; 15])).map(|_| ()),
            Err(TotpError::SecretLength(15))
        );
        assert_eq!(
            TotpSecret::from_bytes(Zeroizing::new(vec![1; 65])).map(|_| ()),
            Err(TotpError::SecretLength(65))
        );
        let rng = SystemRandom::new();
        let a = TotpSecret::generate(&rng).unwrap();
        let b = TotpSecret::generate(&rng).unwrap();
        assert_eq!(a.expose().len(), SECRET_LEN);
        assert_ne!(a.expose(), b.expose());
    }

    #[test]
    fn debug_is_redacted() {
        let s = format!("{:?}", rfc_secret());
        assert_eq!(s, "TotpSecret([redacted])");
    }

    #[test]
    fn provisioning_uri_and_qr() {
        let secret = rfc_secret();
        let uri = provisioning_uri(&secret, "dr.sato").unwrap();
        assert!(
            uri.starts_with("otpauth://totp/ClinAuth:dr.sato?"),
            "{}",
            *uri
        );
        assert!(
            uri.contains("secret=GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ"),
            "{}",
            *uri
        );
        assert!(uri.contains("issuer=ClinAuth"), "{}", *uri);
        let png = provisioning_qr_png(&secret, "dr.sato").unwrap();
        assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"));
        for bad in ["", "a:b", &"u".repeat(MAX_ACCOUNT_LEN + 1)] {
            assert_eq!(
                provisioning_uri(&secret, bad).map(|_| ()),
                Err(TotpError::AccountName)
            );
        }
    }
}
