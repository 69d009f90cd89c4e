//! Server-verified PIN or password (knowledge factor), hashed with Argon2id.
//!
//! - [`hash_pin`] uses Argon2id v1.3 at the OWASP minimum: m = 19456 KiB
//!   (19 MiB), t = 2, p = 1, 16-byte salt, 32-byte output, as a PHC string.
//!   **Each hash or verification allocates 19 MiB** (more with stronger
//!   [`Cost`]) for about 13 ms of one core; the server bounds how many run at
//!   once (50 concurrent verifications ≈ 1 GiB).
//! - [`verify_pin`] refuses PHC strings that are not Argon2id v1.3 or whose
//!   parameters are below the minimum (a downgraded database row is not
//!   accepted) or absurdly high (a tampered row cannot exhaust memory). The
//!   output comparison is constant time (argon2's `Output` uses `subtle`).
//! - For an unknown user, call [`verify_dummy`] so the response takes as long
//!   as for a known one.
//! - [`PinHasher`] does the same three with one memory block it owns and
//!   reuses (zeroized after each use), so a server can keep one per hashing
//!   permit instead of allocating 19 MiB per hash: freed blocks otherwise
//!   stay in the allocator's per-thread arenas and peak memory grows far
//!   beyond the number of concurrent hashes.
//! - [`check_new_pin`] is the policy for a new PIN.
//!
//! A successful verification is the policy evidence
//! [`clinauth_policy::Factor::ServerPin`].

use crate::constant_time::bytes_equal;
use argon2::password_hash::phc::{Output, ParamsString, PasswordHash, Salt};
use argon2::{Algorithm, Argon2, Block, Params, PasswordHasher, PasswordVerifier, Version};
use ring::rand::SecureRandom;
use std::fmt;
use zeroize::{Zeroize, Zeroizing};

/// Minimum memory cost, KiB (OWASP).
pub const MIN_MEMORY_KIB: u32 = 19_456;
/// Minimum iterations (OWASP, with 19 MiB).
pub const MIN_ITERATIONS: u32 = 2;
/// Minimum parallelism.
pub const MIN_PARALLELISM: u32 = 1;
/// Largest memory cost accepted from a stored hash, KiB (256 MiB).
pub const MAX_MEMORY_KIB: u32 = 256 * 1024;
/// Largest iteration count accepted from a stored hash.
pub const MAX_ITERATIONS: u32 = 16;
/// Largest parallelism accepted from a stored hash.
pub const MAX_PARALLELISM: u32 = 8;
/// Salt length for new hashes.
pub const SALT_LEN: usize = 16;
/// Hash output length.
pub const OUTPUT_LEN: usize = 32;
/// Longest PIN or password, bytes (hard limit of [`SecretPin`]).
pub const MAX_SECRET_LEN: usize = 1024;
/// Shortest new PIN, bytes.
pub const MIN_NEW_PIN_LEN: usize = 4;
/// Longest new PIN, bytes.
pub const MAX_NEW_PIN_LEN: usize = 64;
/// Longest PHC string accepted.
pub const MAX_PHC_LEN: usize = 256;

/// Why hashing or verification failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PinError {
    /// The PIN is longer than [`MAX_SECRET_LEN`].
    #[error("PIN is too long ({0} bytes, at most {MAX_SECRET_LEN})")]
    TooLong(usize),
    /// The PIN does not match.
    #[error("PIN does not match")]
    Mismatch,
    /// The stored hash is not a well-formed Argon2id v1.3 PHC string.
    #[error("stored PIN hash is malformed")]
    MalformedHash,
    /// The stored hash uses parameters below the minimum (or above the maximum).
    #[error("stored PIN hash parameters are outside the accepted range (m>={MIN_MEMORY_KIB} KiB, t>={MIN_ITERATIONS}, p>={MIN_PARALLELISM})")]
    WeakParameters,
    /// The configured cost is outside the accepted range.
    #[error("Argon2 cost outside the accepted range")]
    Cost,
    /// The random generator failed.
    #[error("random generator failed")]
    Random,
    /// Argon2 failed internally.
    #[error("Argon2 failed")]
    Hash,
}

/// Why a new PIN is refused by [`check_new_pin`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PinPolicyError {
    /// Shorter than [`MIN_NEW_PIN_LEN`] bytes.
    #[error("PIN must be at least {MIN_NEW_PIN_LEN} characters")]
    TooShort,
    /// Longer than [`MAX_NEW_PIN_LEN`] bytes.
    #[error("PIN must be at most {MAX_NEW_PIN_LEN} bytes")]
    TooLong,
    /// One character repeated.
    #[error("PIN must not be one repeated character")]
    Repeated,
    /// A run of consecutive digits or letters, such as 2345 or 9876.
    #[error("PIN must not be a simple sequence")]
    Sequence,
    /// On the list of most common PINs and passwords.
    #[error("PIN is too common")]
    Common,
    /// The user's own ID.
    #[error("PIN must not be the user ID")]
    EqualsUserId,
}

/// A PIN or password as typed. Zeroized on drop; `Debug` prints `[redacted]`.
#[derive(Clone)]
pub struct SecretPin(Zeroizing<Vec<u8>>);

impl SecretPin {
    /// Takes ownership of the typed bytes; at most 1 KiB.
    pub fn new(bytes: Zeroizing<Vec<u8>>) -> Result<SecretPin, PinError> {
        if bytes.len() > MAX_SECRET_LEN {
            return Err(PinError::TooLong(bytes.len()));
        }
        Ok(SecretPin(bytes))
    }

    /// Copies a typed string (the caller zeroizes its own copy).
    pub fn from_text(text: &str) -> Result<SecretPin, PinError> {
        if text.len() > MAX_SECRET_LEN {
            return Err(PinError::TooLong(text.len()));
        }
        Ok(SecretPin(Zeroizing::new(text.as_bytes().to_vec())))
    }

    /// The bytes.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for SecretPin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretPin([redacted])")
    }
}

/// Argon2id cost for new hashes; at least the OWASP minimum.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cost {
    /// Memory, KiB.
    pub memory_kib: u32,
    /// Iterations.
    pub iterations: u32,
    /// Lanes.
    pub parallelism: u32,
}

impl Cost {
    /// m = 19456 KiB, t = 2, p = 1.
    pub const OWASP_MINIMUM: Cost = Cost {
        memory_kib: MIN_MEMORY_KIB,
        iterations: MIN_ITERATIONS,
        parallelism: MIN_PARALLELISM,
    };

    fn in_range(self) -> bool {
        (MIN_MEMORY_KIB..=MAX_MEMORY_KIB).contains(&self.memory_kib)
            && (MIN_ITERATIONS..=MAX_ITERATIONS).contains(&self.iterations)
            && (MIN_PARALLELISM..=MAX_PARALLELISM).contains(&self.parallelism)
    }

    fn params(self) -> Result<Params, PinError> {
        Params::new(
            self.memory_kib,
            self.iterations,
            self.parallelism,
            Some(OUTPUT_LEN),
        )
        .map_err(|_| PinError::Cost)
    }

    fn argon2(self) -> Result<Argon2<'static>, PinError> {
        Ok(argon2id(self.params()?))
    }
}

fn argon2id(params: Params) -> Argon2<'static> {
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

/// Hashes `pin` with Argon2id at the OWASP minimum; returns the PHC string.
pub fn hash_pin(pin: &SecretPin, rng: &dyn SecureRandom) -> Result<String, PinError> {
    hash_pin_with(pin, Cost::OWASP_MINIMUM, rng)
}

/// Hashes `pin` with Argon2id at `cost` (not below the minimum).
pub fn hash_pin_with(
    pin: &SecretPin,
    cost: Cost,
    rng: &dyn SecureRandom,
) -> Result<String, PinError> {
    if !cost.in_range() {
        return Err(PinError::Cost);
    }
    let mut salt = [0u8; SALT_LEN];
    rng.fill(&mut salt).map_err(|_| PinError::Random)?;
    let hash = cost
        .argon2()?
        .hash_password_with_salt(pin.expose(), &salt)
        .map_err(|_| PinError::Hash)?;
    Ok(hash.to_string())
}

/// Verifies `pin` against a stored PHC string, refusing anything but
/// Argon2id v1.3 with parameters in the accepted range.
pub fn verify_pin(pin: &SecretPin, phc: &str) -> Result<(), PinError> {
    let (cost, _, hash) = parse_stored(phc)?;
    match cost.argon2()?.verify_password(pin.expose(), &hash) {
        Ok(()) => Ok(()),
        Err(argon2::password_hash::Error::PasswordInvalid) => Err(PinError::Mismatch),
        Err(_) => Err(PinError::MalformedHash),
    }
}

/// Spends the same work as a [`verify_pin`] at the minimum cost, for users
/// that do not exist; always returns [`PinError::Mismatch`].
pub fn verify_dummy(pin: &SecretPin) -> Result<(), PinError> {
    let salt = [0u8; SALT_LEN];
    let _ = Cost::OWASP_MINIMUM
        .argon2()?
        .hash_password_with_salt(pin.expose(), &salt);
    Err(PinError::Mismatch)
}

/// Argon2id hashing and verification with one reusable memory block.
///
/// Owns `m` KiB of Argon2 memory (one [`argon2::Block`] per KiB) for the cost
/// it was made for, allocated once; every hash or verification runs in it
/// and zeroizes it before returning, successful or not. A server keeps one
/// per hashing permit (behind its concurrency limit), so Argon2 memory is
/// exactly permits × m whatever the allocator does with freed memory.
///
/// A stored hash with a higher memory cost than the block (up to
/// [`MAX_MEMORY_KIB`]) still verifies, in a temporary block allocated (and
/// zeroized) for that call; size the hasher for the cost the server hashes
/// with. Results are identical to [`hash_pin_with`], [`verify_pin`] and
/// [`verify_dummy`].
pub struct PinHasher {
    blocks: Box<[Block]>,
}

impl PinHasher {
    /// A hasher for the OWASP minimum ([`Cost::OWASP_MINIMUM`], 19 MiB).
    pub fn new() -> Result<PinHasher, PinError> {
        PinHasher::for_cost(Cost::OWASP_MINIMUM)
    }

    /// A hasher whose block fits `cost` (which must be in the accepted range).
    pub fn for_cost(cost: Cost) -> Result<PinHasher, PinError> {
        if !cost.in_range() {
            return Err(PinError::Cost);
        }
        Ok(PinHasher {
            blocks: zeroed_blocks(cost.params()?.block_count())?,
        })
    }

    /// The size of the owned block, KiB.
    pub fn memory_kib(&self) -> usize {
        self.blocks.len()
    }

    /// Like [`hash_pin`], in this hasher's memory.
    pub fn hash_pin(
        &mut self,
        pin: &SecretPin,
        rng: &dyn SecureRandom,
    ) -> Result<String, PinError> {
        self.hash_pin_with(pin, Cost::OWASP_MINIMUM, rng)
    }

    /// Like [`hash_pin_with`], in this hasher's memory.
    pub fn hash_pin_with(
        &mut self,
        pin: &SecretPin,
        cost: Cost,
        rng: &dyn SecureRandom,
    ) -> Result<String, PinError> {
        if !cost.in_range() {
            return Err(PinError::Cost);
        }
        let mut salt = [0u8; SALT_LEN];
        rng.fill(&mut salt).map_err(|_| PinError::Random)?;
        self.hash_with_salt(pin, cost, &salt)
    }

    fn hash_with_salt(
        &mut self,
        pin: &SecretPin,
        cost: Cost,
        salt: &[u8; SALT_LEN],
    ) -> Result<String, PinError> {
        let params = cost.params()?;
        let mut out = Zeroizing::new([0u8; OUTPUT_LEN]);
        self.run(&params, pin, salt, out.as_mut_slice())?;
        let hash = PasswordHash {
            algorithm: Algorithm::Argon2id.ident(),
            version: Some(Version::V0x13.into()),
            params: ParamsString::try_from(&params).map_err(|_| PinError::Hash)?,
            salt: Some(Salt::new(salt).map_err(|_| PinError::Hash)?),
            hash: Some(Output::new(out.as_slice()).map_err(|_| PinError::Hash)?),
        };
        Ok(hash.to_string())
    }

    /// Like [`verify_pin`], in this hasher's memory.
    pub fn verify_pin(&mut self, pin: &SecretPin, phc: &str) -> Result<(), PinError> {
        let (_, params, hash) = parse_stored(phc)?;
        let (Some(salt), Some(expected)) = (hash.salt.as_ref(), hash.hash.as_ref()) else {
            return Err(PinError::MalformedHash);
        };
        let mut out = Zeroizing::new([0u8; OUTPUT_LEN]);
        let computed = out
            .get_mut(..expected.len())
            .ok_or(PinError::MalformedHash)?;
        self.run(&params, pin, salt.as_ref(), computed)
            .map_err(|_| PinError::MalformedHash)?;
        if bytes_equal(computed, expected.as_bytes()) {
            Ok(())
        } else {
            Err(PinError::Mismatch)
        }
    }

    /// Like [`verify_dummy`], in this hasher's memory.
    pub fn verify_dummy(&mut self, pin: &SecretPin) -> Result<(), PinError> {
        let salt = [0u8; SALT_LEN];
        let mut out = Zeroizing::new([0u8; OUTPUT_LEN]);
        let _ = self.run(
            &Cost::OWASP_MINIMUM.params()?,
            pin,
            &salt,
            out.as_mut_slice(),
        );
        Err(PinError::Mismatch)
    }

    /// Argon2id into `out` in the owned block (or a temporary one if
    /// `params` needs more), which is zeroized afterwards in every case.
    fn run(
        &mut self,
        params: &Params,
        pin: &SecretPin,
        salt: &[u8],
        out: &mut [u8],
    ) -> Result<(), PinError> {
        let needed = params.block_count();
        let mut temporary;
        let blocks = match self.blocks.get_mut(..needed) {
            Some(blocks) => blocks,
            None => {
                temporary = zeroed_blocks(needed)?;
                &mut *temporary
            }
        };
        let result = hash_into(params, pin, salt, out, blocks);
        wipe(blocks);
        result
    }
}

impl fmt::Debug for PinHasher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PinHasher")
            .field("memory_kib", &self.blocks.len())
            .finish()
    }
}

impl Drop for PinHasher {
    fn drop(&mut self) {
        // Already zeroized after each use; this covers an unwinding panic.
        wipe(&mut self.blocks);
    }
}

/// Argon2id of `pin` into `out`, using `blocks` (at least
/// `params.block_count()` of them) as its memory. Leaves the memory filled.
fn hash_into(
    params: &Params,
    pin: &SecretPin,
    salt: &[u8],
    out: &mut [u8],
    blocks: &mut [Block],
) -> Result<(), PinError> {
    argon2id(params.clone())
        .hash_password_into_with_memory(pin.expose(), salt, out, blocks)
        .map_err(|_| PinError::Hash)
}

fn zeroed_blocks(count: usize) -> Result<Box<[Block]>, PinError> {
    let mut blocks = Vec::new();
    blocks
        .try_reserve_exact(count)
        .map_err(|_| PinError::Hash)?;
    blocks.resize(count, Block::new());
    Ok(blocks.into_boxed_slice())
}

fn wipe(blocks: &mut [Block]) {
    for block in blocks {
        block.zeroize();
    }
}

/// Parses and vets a stored PHC string; returns its cost, its Argon2
/// parameters (as a plain verifier would use them) and the parsed hash.
fn parse_stored(phc: &str) -> Result<(Cost, Params, PasswordHash), PinError> {
    if phc.len() > MAX_PHC_LEN {
        return Err(PinError::MalformedHash);
    }
    let hash = PasswordHash::new(phc).map_err(|_| PinError::MalformedHash)?;
    if hash.algorithm.as_str() != "argon2id" {
        return Err(PinError::WeakParameters);
    }
    if hash.version != Some(0x13) {
        return Err(PinError::WeakParameters);
    }
    let params = Params::try_from(&hash).map_err(|_| PinError::MalformedHash)?;
    let cost = Cost {
        memory_kib: params.m_cost(),
        iterations: params.t_cost(),
        parallelism: params.p_cost(),
    };
    if !cost.in_range() {
        return Err(PinError::WeakParameters);
    }
    let salt_ok = hash
        .salt
        .as_ref()
        .is_some_and(|s: &Salt| s.as_ref().len() >= SALT_LEN);
    let output_ok = hash.hash.as_ref().is_some_and(|h| h.len() == OUTPUT_LEN);
    if !salt_ok || !output_ok {
        return Err(PinError::MalformedHash);
    }
    Ok((cost, params, hash))
}

/// PINs and passwords too common to allow, lowercase.
const COMMON: &[&str] = &[
    "0000",
    "1111",
    "1212",
    "1234",
    "1313",
    "2000",
    "2222",
    "3333",
    "4444",
    "5555",
    "6666",
    "6969",
    "7777",
    "8888",
    "9999",
    "1004",
    "1122",
    "1010",
    "2580",
    "0852",
    "4321",
    "12345",
    "54321",
    "123456",
    "654321",
    "111111",
    "000000",
    "123123",
    "121212",
    "112233",
    "666666",
    "696969",
    "159753",
    "147258",
    "123321",
    "1234567",
    "7654321",
    "12345678",
    "87654321",
    "123456789",
    "987654321",
    "1234567890",
    "0123456789",
    "password",
    "password1",
    "passw0rd",
    "p@ssw0rd",
    "pass",
    "qwerty",
    "qwerty123",
    "qwertyuiop",
    "asdf",
    "asdfgh",
    "zxcvbn",
    "abc123",
    "abcd1234",
    "1q2w3e4r",
    "1qaz2wsx",
    "zaq12wsx",
    "123qwe",
    "qwe123",
    "letmein",
    "admin",
    "administrator",
    "welcome",
    "iloveyou",
    "monkey",
    "dragon",
    "football",
    "baseball",
    "master",
    "login",
    "secret",
    "changeme",
    "default",
    "guest",
    "hospital",
    "clinauth",
    "nurse",
    "doctor",
];

/// The policy for a new PIN: 4..=64 bytes, not one repeated character, not a
/// simple sequence of 4 or more, not a common PIN or password, not the user ID.
pub fn check_new_pin(pin: &SecretPin, user_id: &str) -> Result<(), PinPolicyError> {
    let bytes = pin.expose();
    if bytes.len() < MIN_NEW_PIN_LEN {
        return Err(PinPolicyError::TooShort);
    }
    if bytes.len() > MAX_NEW_PIN_LEN {
        return Err(PinPolicyError::TooLong);
    }
    // Count characters, not bytes, for the minimum (a multibyte PIN of 2
    // characters is still 2 characters).
    if let Ok(text) = std::str::from_utf8(bytes) {
        if text.chars().count() < MIN_NEW_PIN_LEN {
            return Err(PinPolicyError::TooShort);
        }
        let mut chars = text.chars();
        if let Some(first) = chars.next() {
            if chars.all(|c| c == first) {
                return Err(PinPolicyError::Repeated);
            }
        }
    } else if bytes.iter().all(|b| Some(b) == bytes.first()) {
        return Err(PinPolicyError::Repeated);
    }
    if is_sequence(bytes) {
        return Err(PinPolicyError::Sequence);
    }
    let lower = Zeroizing::new(bytes.to_ascii_lowercase());
    if COMMON.iter().any(|c| c.as_bytes() == lower.as_slice()) {
        return Err(PinPolicyError::Common);
    }
    if !user_id.is_empty() && user_id.as_bytes().eq_ignore_ascii_case(bytes) {
        return Err(PinPolicyError::EqualsUserId);
    }
    Ok(())
}

/// Every byte is an ASCII digit or letter one above (or every one one below)
/// the previous: 2345, 98765, abcd.
fn is_sequence(bytes: &[u8]) -> bool {
    if !bytes.iter().all(u8::is_ascii_alphanumeric) {
        return false;
    }
    let lower = Zeroizing::new(bytes.to_ascii_lowercase());
    let steps = lower.windows(2).map(|w| match w {
        [a, b] => i16::from(*b) - i16::from(*a),
        _ => 0,
    });
    let ups = steps.clone().all(|d| d == 1);
    let downs = steps.clone().all(|d| d == -1);
    ups || downs
}

#[cfg(test)]
mod tests {
    use super::*;
    use ring::rand::SystemRandom;

    fn pin(s: &str) -> SecretPin {
        SecretPin::from_text(s).unwrap()
    }

    /// A valid PHC string with the given parameters (computed for PIN "4711").
    fn phc_with(m: u32, t: u32, p: u32) -> String {
        let params = Params::new(m, t, p, Some(OUTPUT_LEN)).unwrap();
        Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
            .hash_password_with_salt(b"4711", &[9u8; SALT_LEN])
            .unwrap()
            .to_string()
    }

    #[test]
    fn hash_and_verify_round_trip() {
        let rng = SystemRandom::new();
        let phc = hash_pin(&pin("4711-ward"), &rng).unwrap();
        assert!(phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{phc}");
        assert_eq!(verify_pin(&pin("4711-ward"), &phc), Ok(()));
        assert_eq!(verify_pin(&pin("4711-warD"), &phc), Err(PinError::Mismatch));
        assert_eq!(verify_pin(&pin(""), &phc), Err(PinError::Mismatch));
        // Fresh salt each time.
        assert_ne!(phc, hash_pin(&pin("4711-ward"), &rng).unwrap());
    }

    #[test]
    fn weak_parameter_phc_refused() {
        // These would verify with a plain argon2 verifier: the PIN is right.
        for (m, t, p) in [(19_455, 2, 1), (19_456, 1, 1), (4096, 3, 1), (65_536, 1, 4)] {
            let weak = phc_with(m, t, p);
            assert!(Argon2::default()
                .verify_password(b"4711", &PasswordHash::new(&weak).unwrap())
                .is_ok());
            assert_eq!(
                verify_pin(&pin("4711"), &weak),
                Err(PinError::WeakParameters),
                "{weak}"
            );
        }
        // Exactly the minimum is accepted.
        assert_eq!(verify_pin(&pin("4711"), &phc_with(19_456, 2, 1)), Ok(()));
    }

    #[test]
    fn other_algorithms_and_absurd_costs_refused() {
        let good = phc_with(19_456, 2, 1);
        let argon2i = good.replacen("$argon2id$", "$argon2i$", 1);
        let argon2d = good.replacen("$argon2id$", "$argon2d$", 1);
        let v16 = good.replacen("$v=19$", "$v=16$", 1);
        let huge = good.replacen("m=19456", "m=4194304", 1);
        for bad in [argon2i, argon2d, v16, huge] {
            assert_eq!(
                verify_pin(&pin("4711"), &bad),
                Err(PinError::WeakParameters),
                "{bad}"
            );
        }
    }

    #[test]
    fn malformed_phc_refused() {
        let good = phc_with(19_456, 2, 1);
        let no_hash = good.rsplit_once('$').unwrap().0.to_owned();
        let short_salt = format!(
            "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ${}",
            good.rsplit_once('$').unwrap().1
        );
        for bad in [
            "".to_owned(),
            "not a hash".to_owned(),
            "$argon2id$".to_owned(),
            no_hash,
            short_salt,
            format!("{good}$extra"),
            "$2b$12$abcdefghijklmnopqrstuv".to_owned(),
            "x".repeat(MAX_PHC_LEN + 1),
        ] {
            let result = verify_pin(&pin("4711"), &bad);
            assert!(
                matches!(
                    result,
                    Err(PinError::MalformedHash) | Err(PinError::WeakParameters)
                ),
                "{bad}: {result:?}"
            );
        }
    }

    #[test]
    fn secret_pin_limits_and_redaction() {
        assert!(SecretPin::from_text(&"x".repeat(MAX_SECRET_LEN)).is_ok());
        assert_eq!(
            SecretPin::from_text(&"x".repeat(MAX_SECRET_LEN + 1)).map(|_| ()),
            Err(PinError::TooLong(MAX_SECRET_LEN + 1))
        );
        assert_eq!(format!("{:?}", pin("4711")), "SecretPin([redacted])");
    }

    #[test]
    fn dummy_verification_always_fails() {
        assert_eq!(verify_dummy(&pin("4711")), Err(PinError::Mismatch));
    }

    #[test]
    fn cost_below_minimum_refused_for_new_hashes() {
        let rng = SystemRandom::new();
        let weak = Cost {
            memory_kib: 8192,
            ..Cost::OWASP_MINIMUM
        };
        assert_eq!(hash_pin_with(&pin("x"), weak, &rng), Err(PinError::Cost));
    }

    fn is_zero(hasher: &PinHasher) -> bool {
        hasher
            .blocks
            .iter()
            .all(|b| b.as_ref().iter().all(|w| *w == 0))
    }

    #[test]
    fn hasher_round_trip_and_same_result_as_free_functions() {
        let rng = SystemRandom::new();
        let mut hasher = PinHasher::new().unwrap();
        assert_eq!(hasher.memory_kib(), MIN_MEMORY_KIB as usize);
        let phc = hasher.hash_pin(&pin("4711-ward"), &rng).unwrap();
        assert!(phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{phc}");
        assert_eq!(hasher.verify_pin(&pin("4711-ward"), &phc), Ok(()));
        assert_eq!(verify_pin(&pin("4711-ward"), &phc), Ok(()));
        assert_eq!(
            hasher.verify_pin(&pin("4711-warD"), &phc),
            Err(PinError::Mismatch)
        );
        assert_eq!(hasher.verify_pin(&pin(""), &phc), Err(PinError::Mismatch));
        assert_ne!(phc, hasher.hash_pin(&pin("4711-ward"), &rng).unwrap());
        // A hash made by the free function verifies in the hasher, and the
        // same salt gives the same PHC string.
        let free = hash_pin(&pin("8203"), &rng).unwrap();
        assert_eq!(hasher.verify_pin(&pin("8203"), &free), Ok(()));
        assert_eq!(
            hasher.verify_pin(&pin("8204"), &free),
            Err(PinError::Mismatch)
        );
        assert_eq!(
            hasher
                .hash_with_salt(&pin("4711"), Cost::OWASP_MINIMUM, &[9u8; SALT_LEN])
                .unwrap(),
            phc_with(19_456, 2, 1)
        );
        assert_eq!(hasher.verify_dummy(&pin("4711")), Err(PinError::Mismatch));
        assert!(format!("{hasher:?}").contains("19456"));
    }

    #[test]
    fn hasher_block_is_zeroized_after_each_use() {
        let rng = SystemRandom::new();
        let mut hasher = PinHasher::new().unwrap();
        assert!(is_zero(&hasher));
        // Argon2 leaves its memory filled (so the checks below mean something).
        let params = Cost::OWASP_MINIMUM.params().unwrap();
        let mut out = [0u8; OUTPUT_LEN];
        hash_into(
            &params,
            &pin("4711"),
            &[9u8; SALT_LEN],
            &mut out,
            &mut hasher.blocks,
        )
        .unwrap();
        assert!(!is_zero(&hasher));
        wipe(&mut hasher.blocks);
        assert!(is_zero(&hasher));

        let phc = hasher.hash_pin(&pin("4711"), &rng).unwrap();
        assert!(is_zero(&hasher), "after hashing");
        assert_eq!(hasher.verify_pin(&pin("4711"), &phc), Ok(()));
        assert!(is_zero(&hasher), "after a successful verification");
        assert_eq!(
            hasher.verify_pin(&pin("4712"), &phc),
            Err(PinError::Mismatch)
        );
        assert!(is_zero(&hasher), "after a failed verification");
        assert_eq!(hasher.verify_dummy(&pin("4711")), Err(PinError::Mismatch));
        assert!(is_zero(&hasher), "after a dummy verification");
        // A stored hash with more memory than the block runs in a temporary
        // block; the owned one is untouched and stays its size.
        let bigger = phc_with(32 * 1024, 2, 1);
        assert_eq!(hasher.verify_pin(&pin("4711"), &bigger), Ok(()));
        assert_eq!(
            hasher.verify_pin(&pin("4712"), &bigger),
            Err(PinError::Mismatch)
        );
        assert!(is_zero(&hasher));
        assert_eq!(hasher.memory_kib(), MIN_MEMORY_KIB as usize);
    }

    #[test]
    fn hasher_refuses_weak_malformed_and_other_hashes() {
        let mut hasher = PinHasher::new().unwrap();
        for (m, t, p) in [(19_455, 2, 1), (19_456, 1, 1), (4096, 3, 1), (65_536, 1, 4)] {
            let weak = phc_with(m, t, p);
            assert_eq!(
                hasher.verify_pin(&pin("4711"), &weak),
                Err(PinError::WeakParameters),
                "{weak}"
            );
        }
        let good = phc_with(19_456, 2, 1);
        assert_eq!(hasher.verify_pin(&pin("4711"), &good), Ok(()));
        for bad in [
            good.replacen("$argon2id$", "$argon2i$", 1),
            good.replacen("$argon2id$", "$argon2d$", 1),
            good.replacen("$v=19$", "$v=16$", 1),
            good.replacen("m=19456", "m=4194304", 1),
        ] {
            assert_eq!(
                hasher.verify_pin(&pin("4711"), &bad),
                Err(PinError::WeakParameters),
                "{bad}"
            );
        }
        for bad in [
            "".to_owned(),
            "$argon2id$".to_owned(),
            good.rsplit_once('$').unwrap().0.to_owned(),
            format!("{good}$extra"),
        ] {
            let result = hasher.verify_pin(&pin("4711"), &bad);
            assert!(
                matches!(
                    result,
                    Err(PinError::MalformedHash) | Err(PinError::WeakParameters)
                ),
                "{bad}: {result:?}"
            );
        }
        assert!(is_zero(&hasher));
        // Costs below the minimum are refused for hashers and new hashes.
        let weak = Cost {
            memory_kib: 8192,
            ..Cost::OWASP_MINIMUM
        };
        assert_eq!(PinHasher::for_cost(weak).map(|_| ()), Err(PinError::Cost));
        assert_eq!(
            hasher.hash_pin_with(&pin("x"), weak, &SystemRandom::new()),
            Err(PinError::Cost)
        );
    }

    #[test]
    fn new_pin_policy() {
        use PinPolicyError::*;
        let cases: &[(&str, Result<(), PinPolicyError>)] = &[
            ("", Err(TooShort)),
            ("123", Err(TooShort)),
            ("あいう", Err(TooShort)), // 9 bytes, 3 characters
            ("0000", Err(Repeated)),
            ("aaaaaaa", Err(Repeated)),
            ("1234", Err(Sequence)),
            ("3456", Err(Sequence)),
            ("98765", Err(Sequence)),
            ("abcdef", Err(Sequence)),
            ("1212", Err(Common)),
            ("123456", Err(Sequence)),
            ("2580", Err(Common)),
            ("Password", Err(Common)),
            ("QWERTY", Err(Common)),
            ("nurse01", Ok(())),
            ("Dr.Sato", Err(EqualsUserId)),
            ("dr.sato", Err(EqualsUserId)),
            ("4711", Ok(())),
            ("8203", Ok(())),
            ("correct horse battery", Ok(())),
            ("あいうえ", Ok(())),
        ];
        for (text, expected) in cases {
            assert_eq!(check_new_pin(&pin(text), "dr.sato"), *expected, "{text:?}");
        }
        assert_eq!(check_new_pin(&pin(&"7".repeat(65)), "u"), Err(TooLong));
        assert_eq!(check_new_pin(&pin(&"x1".repeat(32)), "u"), Ok(()));
    }
}
