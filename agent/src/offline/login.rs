//! An offline login: the server cannot be reached, so the agent checks the
//! user's card + card PIN or FIDO2 key with UV against the user's bundle.
//!
//! The agent draws its own 32-byte nonce and runs the same card flow as
//! online ([`crate::login::card::prove`], with a challenge of its own in
//! place of the server's): the card checks the PIN, signs
//! [`clinauth_factors::card::challenge_message`] for this nonce, user,
//! workstation and purpose, and the agent verifies the signature with the
//! public key of the certificate the bundle lists for the user (the card
//! must present exactly that certificate, valid now, PIN-protected).
//!
//! FIDO2: the agent runs a WebAuthn ceremony of its own with
//! [`clinauth_factors::fido2::Fido2Verifier`] over the bundle's credentials
//! (their COSE public keys), has the configured authenticator answer it
//! through [`crate::login::fido2`], and requires the UV flag.

use clinauth_factors::card::{verify_challenge, CardPublicKey, NONCE_LEN};
use clinauth_factors::fido2::{Fido2Config, Fido2Credential, Fido2Verifier};
use clinauth_policy::{Purpose, UnixTime};
use clinauth_proto::offline::{BundleClaims, OfflineRule, SKEW};
use clinauth_proto::workstation::{BeginResponse, EvidenceItem, B64};
use clinauth_proto::UserName;

use super::bundle::Unusable;
use super::{fsutil, Offline};
use crate::card::{CardError, CardIdentity};
use crate::conversation::Conversation;
use crate::login::choose::{self, Available};
use crate::login::{card, Attempt, CardUsed, Devices, LoginError};

/// How an offline login ended, when it ended with a decision.
#[derive(Debug)]
pub enum OfflineOutcome {
    /// Verified against the bundle.
    Allow {
        /// The bundle rule that allowed it.
        rule: String,
        /// The factors verified (policy names).
        factors: Vec<String>,
        /// The session locks after this many idle seconds.
        idle_lock: u32,
        /// Flagged for an officer's review.
        review: bool,
        /// The card used, if any.
        card: Option<CardUsed>,
    },
    /// The card or key did not prove what the bundle requires.
    Deny {
        /// Why, in English.
        reason: String,
        /// Why, in Japanese.
        reason_ja: String,
    },
}

/// Why no offline decision was made.
#[derive(Debug, thiserror::Error)]
pub enum OfflineError {
    /// Offline login is not possible for this user and purpose now.
    #[error("{0}")]
    Unavailable(String),
    /// The flow failed (conversation, card, device).
    #[error(transparent)]
    Login(#[from] LoginError),
}

fn deny(reason: impl Into<String>, reason_ja: &str) -> OfflineOutcome {
    OfflineOutcome::Deny {
        reason: reason.into(),
        reason_ja: reason_ja.to_owned(),
    }
}

/// The rules of `bundle` usable for `purpose` at `now_s`.
pub fn live_rules(
    bundle: &BundleClaims,
    purpose: Purpose,
    now_s: i64,
) -> Result<Vec<&OfflineRule>, String> {
    let for_purpose: Vec<&OfflineRule> = bundle
        .rules
        .iter()
        .filter(|r| r.purposes.contains(&purpose))
        .collect();
    if for_purpose.is_empty() {
        return Err(format!(
            "the policy does not allow offline {purpose} for this user here"
        ));
    }
    let age = now_s.saturating_sub(bundle.iat);
    let live: Vec<&OfflineRule> = for_purpose
        .into_iter()
        .filter(|r| age >= -SKEW && age <= i64::from(r.max_age))
        .collect();
    if live.is_empty() {
        return Err(
            "the last online login is longer ago than the policy allows offline; log in once while the server is reachable"
                .into(),
        );
    }
    Ok(live)
}

/// The combinations the bundle can verify for these rules, in order.
pub fn options(bundle: &BundleClaims, rules: &[&OfflineRule]) -> Vec<Vec<String>> {
    let mut out: Vec<Vec<String>> = Vec::new();
    for rule in rules {
        for c in &rule.combinations {
            let usable = if c.iter().any(|f| f == "fido2_uv") {
                !bundle.fido2.is_empty() && bundle.fido2_rp_id.is_some()
            } else {
                bundle.cards.iter().any(|card| card.pin_protected)
            };
            if usable && !out.contains(c) {
                out.push(c.clone());
            }
        }
    }
    out
}

/// Checks a card's signature over `nonce` against the bundle: the
/// certificate is one the bundle lists (PIN-protected), valid at `now_s`,
/// and its key signed the challenge for this user, workstation and purpose.
pub fn verify_card(
    bundle: &BundleClaims,
    evidence: &EvidenceItem,
    nonce: &[u8; NONCE_LEN],
    purpose: Purpose,
    now_s: i64,
) -> Result<(), String> {
    let EvidenceItem::Card {
        certificate,
        signature,
        ..
    } = evidence
    else {
        return Err("not card evidence".into());
    };
    let enrolled = bundle
        .cards
        .iter()
        .find(|c| c.certificate.0 == certificate.0)
        .ok_or("this card is not among the user's offline credentials")?;
    if !enrolled.pin_protected {
        return Err("this card's key is not PIN-protected, so it cannot prove the card PIN".into());
    }
    let (_, cert) = x509_parser::parse_x509_certificate(&certificate.0)
        .map_err(|_| "the card certificate cannot be read")?;
    let validity = cert.validity();
    if now_s < validity.not_before.timestamp() || now_s > validity.not_after.timestamp() {
        return Err("the card certificate is not valid now".into());
    }
    let key = CardPublicKey::from_spki_der(cert.public_key().raw).map_err(|e| e.to_string())?;
    verify_challenge(&key, nonce, &bundle.sub, &bundle.ws, purpose, &signature.0)
        .map_err(|e| format!("the card's signature does not verify: {e}"))
}

fn piv_in_reader(devices: &Devices) -> Option<(String, CardIdentity)> {
    devices
        .readers
        .present()
        .into_iter()
        .find(|(_, c)| matches!(c, CardIdentity::Piv { .. }))
}

fn synthetic_begin(
    nonce: [u8; NONCE_LEN],
    option: &[String],
    now_s: i64,
    webauthn: Option<serde_json::Value>,
) -> BeginResponse {
    BeginResponse {
        challenge_id: "offline".into(),
        nonce: B64(nonce.to_vec()),
        expires_at: now_s + 300,
        options: vec![option.to_vec()],
        matcher_public_key: None,
        webauthn,
    }
}

impl Offline {
    /// Runs an offline login of `user` for `purpose`.
    pub async fn authenticate(
        &self,
        devices: &Devices,
        user: &UserName,
        purpose: Purpose,
        conv: &Conversation,
    ) -> Result<OfflineOutcome, OfflineError> {
        let inner = self.inner().ok_or_else(|| {
            OfflineError::Unavailable("offline login is not configured on this workstation".into())
        })?;
        let now_s = crate::clock::now_ms() / 1000;
        let bundle = match inner.store.load(user.as_str(), now_s) {
            Ok(b) => b,
            Err(
                e
                @ (Unusable::Missing | Unusable::Expired | Unusable::Invalid(_) | Unusable::Io(_)),
            ) => return Err(OfflineError::Unavailable(e.to_string())),
        };
        let rules = live_rules(&bundle, purpose, now_s).map_err(OfflineError::Unavailable)?;
        let options = options(&bundle, &rules);
        if options.is_empty() {
            return Err(OfflineError::Unavailable(
                "the offline credentials hold no card or security key for this purpose".into(),
            ));
        }
        conv.info(
            "The server cannot be reached: your login is checked on this workstation.",
            "サーバーに接続できないため、この端末でオフライン認証を行います。",
        )
        .await
        .map_err(LoginError::from)?;
        let available = |devices: &Devices| Available {
            piv_card: piv_in_reader(devices).is_some(),
            fido2: devices.fido2.is_configured(),
            ..Available::default()
        };
        let mut option = choose::choose(&options, available(devices)).map(<[String]>::to_vec);
        if option.is_none() && options.iter().any(|o| choose::needs_card(o)) {
            conv.info("Insert your card.", "ICカードを挿入してください。")
                .await
                .map_err(LoginError::from)?;
            devices.readers.wait_for_card(devices.insert_timeout).await;
            option = choose::choose(&options, available(devices)).map(<[String]>::to_vec);
        }
        let Some(option) = option else {
            let wanted: Vec<String> = options.iter().map(|o| o.join("+")).collect();
            return Err(LoginError::NoOption(wanted.join(", ")).into());
        };
        let nonce = fsutil::random::<NONCE_LEN>()
            .map_err(|e| LoginError::Internal(format!("no randomness: {e}")))?;
        let mut card_used = None;
        let mut aaguid = None;
        if option.iter().any(|f| f == "fido2_uv") {
            match self
                .fido2(inner, devices, &bundle, user, purpose, conv, &option, now_s)
                .await?
            {
                Ok(model) => aaguid = model,
                Err(reason) => {
                    return Ok(deny(
                        reason,
                        "セキュリティキーをオフライン認証情報で確認できませんでした",
                    ))
                }
            }
        } else {
            let (reader, identity) = piv_in_reader(devices)
                .ok_or_else(|| LoginError::NoOption("no card in a reader".into()))?;
            let begin = synthetic_begin(nonce, &option, now_s, None);
            let attempt = Attempt {
                user,
                purpose,
                workstation: &inner.workstation,
                begin: &begin,
                conv,
                apdu_timeout: devices.apdu_timeout,
                operation: None,
            };
            let proof = card::prove(&attempt, &reader).await?;
            if identity
                != (CardIdentity::Piv {
                    fingerprint: proof.fingerprint,
                })
            {
                return Err(LoginError::Card(CardError::CardRemoved).into());
            }
            if let Err(reason) = verify_card(
                &bundle,
                &proof.evidence,
                &nonce,
                purpose,
                crate::clock::now_ms() / 1000,
            ) {
                return Ok(deny(
                    reason,
                    "ICカードをオフライン認証情報で確認できませんでした",
                ));
            }
            card_used = Some(CardUsed { reader, identity });
        }
        let rule = rules.iter().find(|r| {
            r.combinations.contains(&option)
                && (r.fido2_aaguids.is_empty()
                    || !option.iter().any(|f| f == "fido2_uv")
                    || aaguid.as_ref().is_some_and(|a| r.fido2_aaguids.contains(a)))
        });
        let Some(rule) = rule else {
            return Ok(deny(
                "this security key model is not accepted for offline use here",
                "このセキュリティキーの機種はオフラインでは使用できません",
            ));
        };
        Ok(OfflineOutcome::Allow {
            rule: rule.name.clone(),
            factors: option,
            idle_lock: rule.idle_lock,
            review: rule.review || purpose == Purpose::BreakGlass,
            card: card_used,
        })
    }

    /// The FIDO2 part: `Ok(Ok(aaguid))` when a key of the bundle verified
    /// the user, `Ok(Err(reason))` when it did not.
    #[allow(clippy::too_many_arguments)]
    async fn fido2(
        &self,
        inner: &super::Inner,
        devices: &Devices,
        bundle: &BundleClaims,
        user: &UserName,
        purpose: Purpose,
        conv: &Conversation,
        option: &[String],
        now_s: i64,
    ) -> Result<Result<Option<String>, String>, OfflineError> {
        let rp_id = bundle.fido2_rp_id.as_deref().ok_or_else(|| {
            OfflineError::Unavailable("the offline credentials name no FIDO2 relying party".into())
        })?;
        let origin = inner
            .fido2_origin
            .clone()
            .unwrap_or_else(|| format!("https://{rp_id}"));
        let credentials: Vec<Fido2Credential> = bundle
            .fido2
            .iter()
            .filter_map(|f| Fido2Credential::from_json(&f.credential).ok())
            .collect();
        let verifier = Fido2Verifier::new(Fido2Config::new(rp_id, &origin))
            .map_err(|e| OfflineError::Unavailable(format!("FIDO2 offline: {e}")))?;
        let started = verifier
            .start_authentication(&credentials, UnixTime(now_s))
            .map_err(|e| OfflineError::Unavailable(format!("FIDO2 offline: {e}")))?;
        let request: serde_json::Value = serde_json::from_str(&started.client_options)
            .map_err(|e| LoginError::Internal(format!("FIDO2 request: {e}")))?;
        let nonce = fsutil::random::<NONCE_LEN>()
            .map_err(|e| LoginError::Internal(format!("no randomness: {e}")))?;
        let begin = synthetic_begin(nonce, option, now_s, Some(request));
        let attempt = Attempt {
            user,
            purpose,
            workstation: &inner.workstation,
            begin: &begin,
            conv,
            apdu_timeout: devices.apdu_timeout,
            operation: None,
        };
        let evidence = devices.fido2.assert(&attempt, "fido2_uv").await?;
        let EvidenceItem::Fido2 { assertion } = evidence else {
            return Ok(Err("the security key gave no assertion".into()));
        };
        let text = serde_json::to_string(&assertion)
            .map_err(|e| LoginError::Internal(format!("FIDO2 assertion: {e}")))?;
        let now = UnixTime(crate::clock::now_ms() / 1000);
        match verifier.finish_authentication(&started.state, &text, &credentials, now) {
            Ok(verified) if verified.user_verified => Ok(Ok(bundle
                .fido2
                .iter()
                .zip(credentials.iter())
                .find(|(_, c)| c.credential_id() == verified.credential_id.as_slice())
                .and_then(|(f, _)| f.aaguid.clone()))),
            Ok(_) => Ok(Err("the security key did not verify the user (UV)".into())),
            Err(e) => Ok(Err(format!(
                "the security key's assertion does not verify: {e}"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::offline::bundle::tests::claims;

    #[test]
    fn rules_by_purpose_and_age() {
        let b = claims("nurse.sato", "ward3-ws07", 1_000_000);
        assert_eq!(live_rules(&b, Purpose::Login, 1_000_100).unwrap().len(), 1);
        let why = live_rules(&b, Purpose::Sign, 1_000_100).unwrap_err();
        assert!(why.contains("does not allow offline sign"), "{why}");
        let why = live_rules(&b, Purpose::Login, 1_000_000 + 3601).unwrap_err();
        assert!(why.contains("longer ago"), "{why}");
        // A bundle from the future (clock trouble) is not used either.
        assert!(live_rules(&b, Purpose::Login, 1_000_000 - SKEW - 1).is_err());
        let rules = live_rules(&b, Purpose::Login, 1_000_100).unwrap();
        assert_eq!(
            options(&b, &rules),
            vec![vec!["smartcard".to_owned(), "card_pin".to_owned()]]
        );
        let mut no_pin = b.clone();
        no_pin.cards[0].pin_protected = false;
        assert!(options(&no_pin, &rules).is_empty());
        let mut fido = b.clone();
        fido.rules[0].combinations = vec![vec!["fido2_uv".into()]];
        let rules = live_rules(&fido, Purpose::Login, 1_000_100).unwrap();
        assert!(options(&fido, &rules).is_empty(), "no key in the bundle");
    }

    #[test]
    fn card_evidence_must_match_the_bundle() {
        let b = claims("nurse.sato", "ward3-ws07", 1_000_000);
        let other = EvidenceItem::Card {
            certificate: B64(vec![0x30, 0x03, 9, 9, 9]),
            chain: vec![],
            signature: B64(vec![1; 64]),
            pin_protected_key: true,
        };
        let why = verify_card(&b, &other, &[0; 32], Purpose::Login, 1_000_100).unwrap_err();
        assert!(why.contains("not among"), "{why}");
        let same_but_garbage = EvidenceItem::Card {
            certificate: b.cards[0].certificate.clone(),
            chain: vec![],
            signature: B64(vec![1; 64]),
            pin_protected_key: true,
        };
        assert!(verify_card(&b, &same_but_garbage, &[0; 32], Purpose::Login, 1_000_100).is_err());
        let badge = EvidenceItem::Badge {
            uid: B64(vec![1, 2, 3, 4]),
        };
        assert!(verify_card(&b, &badge, &[0; 32], Purpose::Login, 1_000_100).is_err());
    }

    /// FIDO2 with UV offline, with webauthn-authenticator-rs' soft token:
    /// registered with the server's verifier, its COSE key in a signed
    /// bundle, asserted through the agent's FIDO2 client, verified here.
    mod fido2 {
        use super::*;
        use crate::config::Config;
        use crate::conversation::Exchange;
        use crate::login::fido2::{soft, Fido2};
        use crate::offline::bundle::tests::TestKey;
        use clinauth_factors::fido2::Fido2User;
        use clinauth_proto::offline::BundleFido2;
        use std::path::Path;
        use std::time::Duration;

        const RP: &str = "clinauth.test";
        const ORIGIN: &str = "https://clinauth.test";

        fn config(dir: &Path, token: &Path, key: &Path) -> Config {
            let text = format!(
                r#"
[agent]
workstation = "ward3-ws07"
socket = "{d}/agent.sock"
state_dir = "{d}/state"
[server]
address = "127.0.0.1:9"
ca = "{d}/ca.pem"
certificate = "{d}/ws.pem"
key = "{d}/ws-key.pem"
[offline]
server_key = "{k}"
[fido2]
transport = "soft"
soft_token = "{t}"
"#,
                d = dir.display(),
                k = key.display(),
                t = token.display()
            );
            Config::from_toml(&text, Path::new("test.toml")).unwrap()
        }

        /// A token file and its credential as the server stores it.
        fn registered(path: &Path, uv: bool) -> Fido2Credential {
            soft::create(path, uv).unwrap();
            let verifier = Fido2Verifier::new(Fido2Config::new(RP, ORIGIN)).unwrap();
            let now = UnixTime(crate::clock::now_ms() / 1000);
            let user = Fido2User {
                handle: [7; 16],
                name: "nurse.sato",
                display_name: "Sato",
            };
            let started = verifier.start_registration(&user, &[], uv, now).unwrap();
            let options: serde_json::Value = serde_json::from_str(&started.client_options).unwrap();
            let response = soft::register(path, ORIGIN, &options, uv).unwrap();
            verifier
                .finish_registration(&started.state, &response.to_string(), now)
                .unwrap()
                .credential
        }

        async fn run(offline: &Offline, devices: &Devices) -> Result<OfflineOutcome, OfflineError> {
            let (conv, mut rx) = Conversation::new(Duration::from_secs(20));
            let drain = tokio::spawn(async move {
                while let Some(x) = rx.recv().await {
                    if let Exchange::Prompt { answer, .. } = x {
                        let _ = answer.send(clinauth_proto::SecretString::new("").unwrap());
                    }
                }
            });
            let user = UserName::new("nurse.sato").unwrap();
            let out = offline
                .authenticate(devices, &user, Purpose::Login, &conv)
                .await;
            drop(conv);
            let _ = drain.await;
            out
        }

        #[tokio::test]
        async fn fido2_uv_verified_against_the_bundle() {
            let dir = std::env::temp_dir().join(format!(
                "clinauth-offline-fido2-{}",
                fsutil::hex(&fsutil::random::<8>().unwrap())
            ));
            std::fs::create_dir_all(&dir).unwrap();
            let token = dir.join("token.json");
            let credential = registered(&token, true);
            let key = TestKey::new();
            let key_file = dir.join("ticket-key.pub");
            std::fs::write(&key_file, fsutil::hex(&key.public())).unwrap();
            let config = config(&dir, &token, &key_file);
            let offline = Offline::new(&config).unwrap();
            let devices = Devices {
                readers: crate::readers::Readers::new(),
                insert_timeout: Duration::from_secs(1),
                apdu_timeout: Duration::from_secs(1),
                fido2: Fido2::from_settings(&config.fido2),
                biometric: Default::default(),
            };
            let now = crate::clock::now_ms() / 1000;
            let mut b = claims("nurse.sato", "ward3-ws07", now);
            b.cards.clear();
            b.fido2 = vec![BundleFido2 {
                credential: credential.to_json().unwrap(),
                aaguid: None,
            }];
            b.fido2_rp_id = Some(RP.into());
            b.rules[0].combinations = vec![vec!["fido2_uv".into()]];
            let token_jws = clinauth_proto::offline::sign(&b, &key.pair, "k").unwrap();
            let store = offline.inner().unwrap().store.clone();
            store.save("nurse.sato", &token_jws, now).unwrap();

            match run(&offline, &devices).await.unwrap() {
                OfflineOutcome::Allow { rule, factors, .. } => {
                    assert_eq!(rule, "ward-login");
                    assert_eq!(factors, ["fido2_uv"]);
                }
                other => panic!("{other:?}"),
            }
            // Twice: the counter moves on, the fresh challenge is signed again.
            assert!(matches!(
                run(&offline, &devices).await.unwrap(),
                OfflineOutcome::Allow { .. }
            ));

            // A rule that takes only one (attested) model: this key is none of them.
            let mut only_model = b.clone();
            only_model.rules[0].fido2_aaguids = vec!["00000000-0000-0000-0000-000000000001".into()];
            let jws = clinauth_proto::offline::sign(&only_model, &key.pair, "k").unwrap();
            store.save("nurse.sato", &jws, now).unwrap();
            assert!(matches!(
                run(&offline, &devices).await.unwrap(),
                OfflineOutcome::Deny { .. }
            ));

            // Another key than the bundle's: refused.
            let other = dir.join("other.json");
            let _ = registered(&other, true);
            std::fs::rename(&other, &token).unwrap();
            store.save("nurse.sato", &token_jws, now).unwrap();
            assert!(!matches!(
                run(&offline, &devices).await,
                Ok(OfflineOutcome::Allow { .. })
            ));
            let _ = std::fs::remove_dir_all(&dir);
        }
    }
}
