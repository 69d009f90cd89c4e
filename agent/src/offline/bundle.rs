//! Offline bundles on disk: one per user in `<state_dir>/offline` (0700),
//! `<hex of the user name>.jws` (0600), written atomically. A bundle is
//! checked when it is stored and again every time it is read: the server's
//! signature with the configured key, this workstation, the user, the
//! shape, and (when read for a login) the time. Nothing unsigned is ever
//! trusted: a file that fails a check is as good as no file.

use std::path::{Path, PathBuf};

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use clinauth_proto::offline::{self, BundleClaims, MAX_BUNDLE_LEN};

use super::fsutil;

/// The DER prefix of an Ed25519 SubjectPublicKeyInfo (RFC 8410).
const ED25519_SPKI_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];

/// Reads the server's ticket public key from `path`: a PEM `PUBLIC KEY`
/// (`openssl pkey -inform DER -in ticket.ed25519.pk8 -pubout`), or the raw
/// 32 bytes in base64 / base64url / hex on one line.
pub fn load_server_key(path: &Path) -> Result<[u8; 32], String> {
    let bytes = fsutil::read_limited(path, 4096)
        .map_err(|e| format!("{}: {e}", path.display()))?
        .ok_or_else(|| format!("{}: no such file", path.display()))?;
    let text = String::from_utf8(bytes).map_err(|_| format!("{}: not text", path.display()))?;
    parse_server_key(&text).ok_or_else(|| {
        format!(
            "{}: not an Ed25519 public key (PEM PUBLIC KEY, or 32 bytes in base64 or hex)",
            path.display()
        )
    })
}

/// See [`load_server_key`].
pub fn parse_server_key(text: &str) -> Option<[u8; 32]> {
    let text = text.trim();
    if let Some(body) = text.strip_prefix("-----BEGIN PUBLIC KEY-----") {
        let body = body.split("-----END PUBLIC KEY-----").next()?;
        let b64: String = body.chars().filter(|c| !c.is_whitespace()).collect();
        let der = STANDARD.decode(b64).ok()?;
        let key = der.strip_prefix(&ED25519_SPKI_PREFIX[..])?;
        return key.try_into().ok();
    }
    if text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit()) {
        let mut out = [0u8; 32];
        for (o, pair) in out.iter_mut().zip(text.as_bytes().chunks_exact(2)) {
            *o = u8::from_str_radix(std::str::from_utf8(pair).ok()?, 16).ok()?;
        }
        return Some(out);
    }
    let decoded = STANDARD
        .decode(text)
        .ok()
        .or_else(|| URL_SAFE_NO_PAD.decode(text.trim_end_matches('=')).ok())?;
    decoded.as_slice().try_into().ok()
}

/// Why a stored bundle cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unusable {
    /// There is none for this user.
    #[error("no offline credentials are kept for this user on this workstation")]
    Missing,
    /// It does not verify or is for someone or somewhere else.
    #[error("the offline credentials kept for this user are not valid ({0})")]
    Invalid(String),
    /// Its time is over (or not yet begun: the clock is wrong).
    #[error("the offline credentials kept for this user have expired; log in once while the server is reachable")]
    Expired,
    /// It could not be read.
    #[error("the offline credentials could not be read: {0}")]
    Io(String),
}

/// The bundles of this workstation.
#[derive(Debug, Clone)]
pub struct BundleStore {
    dir: PathBuf,
    key: [u8; 32],
    workstation: String,
}

impl BundleStore {
    /// The store in `dir` (created 0700), verifying with `key`.
    pub fn open(dir: &Path, key: [u8; 32], workstation: &str) -> std::io::Result<BundleStore> {
        fsutil::private_dir(dir)?;
        Ok(BundleStore {
            dir: dir.to_owned(),
            key,
            workstation: workstation.to_owned(),
        })
    }

    fn path(&self, user: &str) -> PathBuf {
        self.dir
            .join(format!("{}.jws", fsutil::hex(user.as_bytes())))
    }

    /// Verifies `token` for `user` (signature, workstation, user, shape).
    pub fn verify(&self, user: &str, token: &str) -> Result<BundleClaims, Unusable> {
        let claims =
            offline::verify(token, &self.key).map_err(|e| Unusable::Invalid(e.to_string()))?;
        if claims.sub != user {
            return Err(Unusable::Invalid("issued for another user".into()));
        }
        if claims.ws != self.workstation {
            return Err(Unusable::Invalid("issued for another workstation".into()));
        }
        Ok(claims)
    }

    /// Checks and stores `token` as `user`'s bundle (replacing the old one).
    pub fn save(&self, user: &str, token: &str, now_s: i64) -> Result<BundleClaims, Unusable> {
        let claims = self.verify(user, token)?;
        if !claims.is_current(now_s) {
            return Err(Unusable::Expired);
        }
        fsutil::write_atomic(&self.path(user), token.as_bytes())
            .map_err(|e| Unusable::Io(e.to_string()))?;
        Ok(claims)
    }

    /// Forgets `user`'s bundle.
    pub fn remove(&self, user: &str) -> std::io::Result<()> {
        fsutil::remove(&self.path(user))
    }

    /// `user`'s bundle, checked, valid at `now_s`.
    pub fn load(&self, user: &str, now_s: i64) -> Result<BundleClaims, Unusable> {
        let bytes = fsutil::read_limited(&self.path(user), MAX_BUNDLE_LEN)
            .map_err(|e| Unusable::Io(e.to_string()))?
            .ok_or(Unusable::Missing)?;
        let token = String::from_utf8(bytes).map_err(|_| Unusable::Invalid("not text".into()))?;
        let claims = self.verify(user, token.trim())?;
        if !claims.is_current(now_s) {
            return Err(Unusable::Expired);
        }
        Ok(claims)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use clinauth_policy::Purpose;
    use clinauth_proto::offline::{BundleCard, OfflineRule, BUNDLE_VERSION};
    use clinauth_proto::workstation::B64;

    /// An Ed25519 key pair for tests, through the factors crate's ring.
    pub(crate) struct TestKey {
        pub pair: ring::signature::Ed25519KeyPair,
    }

    impl TestKey {
        pub(crate) fn new() -> TestKey {
            let doc =
                ring::signature::Ed25519KeyPair::generate_pkcs8(&ring::rand::SystemRandom::new())
                    .unwrap();
            TestKey {
                pair: ring::signature::Ed25519KeyPair::from_pkcs8(doc.as_ref()).unwrap(),
            }
        }
        pub(crate) fn public(&self) -> [u8; 32] {
            use ring::signature::KeyPair;
            self.pair.public_key().as_ref().try_into().unwrap()
        }
    }

    pub(crate) fn claims(user: &str, ws: &str, iat: i64) -> BundleClaims {
        BundleClaims {
            v: BUNDLE_VERSION,
            iss: "clinauth.test".into(),
            sub: user.into(),
            ws: ws.into(),
            iat,
            exp: iat + 3600,
            ticket_jti: "c1".into(),
            policy_version: 3,
            policy_digest: "sha256:00".into(),
            cards: vec![BundleCard {
                certificate: B64(vec![0x30, 0x03, 1, 2, 3]),
                pin_protected: true,
            }],
            fido2: vec![],
            fido2_rp_id: None,
            rules: vec![OfflineRule {
                name: "ward-login".into(),
                purposes: vec![Purpose::Login, Purpose::Unlock],
                combinations: vec![vec!["smartcard".into(), "card_pin".into()]],
                max_age: 3600,
                idle_lock: 180,
                review: false,
                fido2_aaguids: vec![],
            }],
        }
    }

    #[test]
    fn server_key_formats() {
        let key = TestKey::new();
        let raw = key.public();
        let mut spki = ED25519_SPKI_PREFIX.to_vec();
        spki.extend_from_slice(&raw);
        let pem = format!(
            "-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n",
            STANDARD.encode(&spki)
        );
        assert_eq!(parse_server_key(&pem), Some(raw));
        assert_eq!(parse_server_key(&STANDARD.encode(raw)), Some(raw));
        assert_eq!(parse_server_key(&URL_SAFE_NO_PAD.encode(raw)), Some(raw));
        assert_eq!(parse_server_key(&fsutil::hex(&raw)), Some(raw));
        assert_eq!(parse_server_key("nonsense"), None);
        assert_eq!(parse_server_key(&STANDARD.encode([1u8; 31])), None);
    }

    #[test]
    fn stored_bundles_are_checked_every_time() {
        let dir = std::env::temp_dir().join(format!(
            "clinauth-bundles-{}",
            fsutil::hex(&fsutil::random::<8>().unwrap())
        ));
        let key = TestKey::new();
        let store = BundleStore::open(&dir, key.public(), "ward3-ws07").unwrap();
        let now = 1_800_000_000;
        let good = offline::sign(&claims("nurse.sato", "ward3-ws07", now), &key.pair, "k").unwrap();
        store.save("nurse.sato", &good, now).unwrap();
        assert_eq!(
            store.load("nurse.sato", now + 10).unwrap().sub,
            "nurse.sato"
        );
        assert_eq!(store.load("nurse.sato", now + 3601), Err(Unusable::Expired));
        assert_eq!(store.load("dr.ito", now), Err(Unusable::Missing));
        // Someone else's bundle, another workstation's, another key's.
        assert!(matches!(
            store.save("dr.ito", &good, now),
            Err(Unusable::Invalid(_))
        ));
        let elsewhere =
            offline::sign(&claims("nurse.sato", "ward9-ws01", now), &key.pair, "k").unwrap();
        assert!(matches!(
            store.save("nurse.sato", &elsewhere, now),
            Err(Unusable::Invalid(_))
        ));
        let forged = offline::sign(
            &claims("nurse.sato", "ward3-ws07", now),
            &TestKey::new().pair,
            "k",
        )
        .unwrap();
        assert!(matches!(
            store.save("nurse.sato", &forged, now),
            Err(Unusable::Invalid(_))
        ));
        // A file replaced behind the agent's back is refused when read.
        std::fs::write(
            dir.join(format!("{}.jws", fsutil::hex(b"nurse.sato"))),
            &forged,
        )
        .unwrap();
        assert!(matches!(
            store.load("nurse.sato", now),
            Err(Unusable::Invalid(_))
        ));
        store.remove("nurse.sato").unwrap();
        assert_eq!(store.load("nurse.sato", now), Err(Unusable::Missing));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
