//! An authentication flow: ask the server to begin, pick a factor
//! combination the policy allows with the devices at hand, gather each
//! factor's evidence (asking the person through the conversation), and
//! have the server decide.
//!
//! - [`choose`]: which combination;
//! - [`card`]: smartcard + card PIN;
//! - [`typed`]: server PIN and TOTP prompts;
//! - [`fido2`]: FIDO2 security keys;
//! - [`biometric`]: sealed templates and match-on-reader decisions.
//!
//! A flow never decides "allow" itself: online, only a server ticket
//! allows; offline, only [`crate::offline`] against a server-signed bundle.

pub mod biometric;
pub mod card;
pub mod choose;
pub mod fido2;
pub mod typed;

use std::time::Duration;

use clinauth_policy::Purpose;
use clinauth_proto::records::Operation;
use clinauth_proto::workstation::{
    BeginRequest, BeginResponse, EvidenceItem, FinishRequest, FinishResponse, B64,
};
use clinauth_proto::UserName;

use crate::card::{CardError, CardIdentity};
use crate::conversation::{Conversation, ConversationError};
use crate::readers::{usable, Present, Readers};
use crate::server_client::{ServerClient, ServerError};
use choose::Available;

/// Everything a factor needs to produce its evidence.
pub struct Attempt<'a> {
    /// Who is authenticating.
    pub user: &'a UserName,
    /// What for.
    pub purpose: Purpose,
    /// This workstation's name (the card signs it).
    pub workstation: &'a str,
    /// The server's challenge.
    pub begin: &'a BeginResponse,
    /// The person at the keyboard.
    pub conv: &'a Conversation,
    /// One APDU exchange.
    pub apdu_timeout: Duration,
    /// What a step-up, confirmation or signature is for.
    pub operation: Option<&'a Operation>,
}

/// The devices a flow may use.
#[derive(Clone, Debug)]
pub struct Devices {
    /// Card readers.
    pub readers: Readers,
    /// How long to wait for a card when none is present.
    pub insert_timeout: Duration,
    /// One APDU exchange.
    pub apdu_timeout: Duration,
    /// FIDO2.
    pub fido2: fido2::Fido2,
    /// Biometric readers.
    pub biometric: biometric::Biometric,
}

/// The card a login used, for binding it to the session (tap-out).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CardUsed {
    /// The reader it was in.
    pub reader: String,
    /// What it is.
    pub identity: CardIdentity,
}

/// A document signature (ECDSA DER or RSA PKCS#1 v1.5) and the signature
/// certificate (DER), released to the app only with the server's allow.
pub type DocumentSigned = (B64<512>, B64<16384>);

/// How a flow ended, when it ended normally.
#[derive(Debug)]
pub enum Outcome {
    /// The server issued a ticket.
    Allow {
        /// The signed ticket.
        ticket: String,
        /// The rule.
        rule: String,
        /// The factor kinds.
        factors: Vec<String>,
        /// The card or badge used, if any.
        card: Option<CardUsed>,
        /// A `sign` operation's document signature and certificate.
        document: Option<DocumentSigned>,
    },
    /// Refused, with the reason.
    Deny {
        /// In English.
        reason: String,
        /// In Japanese.
        reason_ja: String,
    },
}

/// Why a flow failed (not a decision: a decision is an [`Outcome`]).
#[derive(Debug, thiserror::Error)]
pub enum LoginError {
    /// The caller cancelled, hung up or did not answer.
    #[error(transparent)]
    Conversation(#[from] ConversationError),
    /// The server could not be reached or refused the request.
    #[error(transparent)]
    Unreachable(ServerError),
    /// The server refused the request, with its reason.
    #[error("{0}")]
    Refused(String),
    /// The server's answer made no sense.
    #[error("server: {0}")]
    Server(String),
    /// A card failed.
    #[error("card: {0}")]
    Card(#[from] CardError),
    /// A device other than a card failed.
    #[error("{0}")]
    Device(String),
    /// The person declined (or gave nothing usable).
    #[error("{0}")]
    Declined(&'static str),
    /// No device for any combination the policy allows.
    #[error("none of the allowed factor combinations can be used here now ({0})")]
    NoOption(String),
    /// A fault in the agent.
    #[error("internal: {0}")]
    Internal(String),
}

impl From<ServerError> for LoginError {
    fn from(e: ServerError) -> Self {
        match e {
            ServerError::BadAnswer(m) => LoginError::Server(m),
            // The server's own refusal (locked user, workstation not
            // registered, too many attempts): a denial with its reason.
            ServerError::Refused {
                status, message, ..
            } if status < 500 => LoginError::Refused(message),
            other => LoginError::Unreachable(other),
        }
    }
}

fn available(present: &Present, devices: &Devices, begin: &BeginResponse) -> Available {
    Available {
        piv_card: present
            .values()
            .any(|c| matches!(c, CardIdentity::Piv { .. })),
        badge: present
            .values()
            .any(|c| matches!(c, CardIdentity::Badge(_))),
        fido2: devices.fido2.is_configured() && begin.webauthn.is_some(),
        biometric_reader: devices.biometric.has_reader() && begin.matcher_public_key.is_some(),
        fprintd: devices.biometric.has_fprintd(),
    }
}

fn reader_of(present: &Present, want: fn(&CardIdentity) -> bool) -> Option<(String, CardIdentity)> {
    present
        .iter()
        .find(|(_, c)| want(c))
        .map(|(r, c)| (r.clone(), c.clone()))
}

/// Runs an online authentication of `user` for `purpose` (and the app
/// operation it is for, bound to the server's challenge).
pub async fn authenticate(
    server: &ServerClient,
    devices: &Devices,
    workstation: &str,
    user: &UserName,
    purpose: Purpose,
    operation: Option<&Operation>,
    conv: &Conversation,
) -> Result<Outcome, LoginError> {
    let begin = server
        .begin(&BeginRequest {
            user: user.as_str().to_owned(),
            purpose,
            operation: operation.cloned(),
        })
        .await?;
    // A signature is the card's: only combinations with the card will do.
    let signing = matches!(operation, Some(Operation::Sign { .. }));
    let begin = if signing {
        let mut begin = begin;
        begin.options.retain(|o| o.iter().any(|f| f == "smartcard"));
        begin
    } else {
        begin
    };
    if begin.options.is_empty() {
        return Ok(Outcome::Deny {
            reason: format!("the policy allows no login for {purpose} here"),
            reason_ja: format!("この端末ではポリシーにより {purpose} が許可されていません"),
        });
    }
    let mut present = devices.readers.present();
    let mut option = choose::choose(&begin.options, available(&present, devices, &begin));
    if option.is_none() && begin.options.iter().any(|o| choose::needs_card(o)) {
        conv.info(
            "Insert your card or tap your badge.",
            "ICカードを挿入するか、職員証をかざしてください。",
        )
        .await?;
        present = devices.readers.wait_for_card(devices.insert_timeout).await;
        option = choose::choose(&begin.options, available(&present, devices, &begin));
    }
    let Some(option) = option else {
        let wanted: Vec<String> = begin.options.iter().map(|o| o.join("+")).collect();
        return Err(LoginError::NoOption(wanted.join(", ")));
    };
    let option: Vec<String> = option.to_vec();
    let attempt = Attempt {
        user,
        purpose,
        workstation,
        begin: &begin,
        conv,
        apdu_timeout: devices.apdu_timeout,
        operation,
    };
    let mut evidence: Vec<EvidenceItem> = Vec::new();
    let mut card_used = None;
    let mut card_done = false;
    let mut document: Option<DocumentSigned> = None;
    for factor in &option {
        match factor.as_str() {
            "smartcard" | "card_pin" => {
                if card_done {
                    continue;
                }
                let (reader, identity) =
                    reader_of(&present, |c| matches!(c, CardIdentity::Piv { .. }))
                        .ok_or_else(|| LoginError::NoOption("no card in a reader".into()))?;
                let proof = card::prove(&attempt, &reader).await?;
                if identity
                    != (CardIdentity::Piv {
                        fingerprint: proof.fingerprint,
                    })
                {
                    // Swapped between the tap and the signature.
                    return Err(LoginError::Card(CardError::CardRemoved));
                }
                evidence.push(proof.evidence);
                if let Some(EvidenceItem::DocumentSignature {
                    certificate,
                    signature,
                    ..
                }) = &proof.document
                {
                    document = Some((signature.clone(), certificate.clone()));
                }
                evidence.extend(proof.document);
                card_used = Some(CardUsed { reader, identity });
                card_done = true;
            }
            "badge" => {
                let (reader, identity) =
                    reader_of(&present, |c| matches!(c, CardIdentity::Badge(_)))
                        .ok_or_else(|| LoginError::NoOption("no badge on a reader".into()))?;
                let CardIdentity::Badge(uid) = &identity else {
                    return Err(LoginError::Internal("badge identity".into()));
                };
                let uid = B64::new(uid.as_bytes().to_vec())
                    .ok_or_else(|| LoginError::Internal("badge UID too long".into()))?;
                evidence.push(EvidenceItem::Badge { uid });
                card_used = Some(CardUsed { reader, identity });
            }
            "server_pin" => evidence.push(typed::server_pin(conv).await?),
            "totp" => evidence.push(typed::totp(conv).await?),
            "fido2" | "fido2_uv" => evidence.push(devices.fido2.assert(&attempt, factor).await?),
            _ => evidence.push(devices.biometric.capture(&attempt, factor).await?),
        }
    }
    let decision = server
        .finish(&FinishRequest {
            challenge_id: begin.challenge_id.clone(),
            evidence,
        })
        .await?;
    Ok(match decision {
        FinishResponse::Allow {
            ticket,
            rule,
            factors,
        } => Outcome::Allow {
            ticket,
            rule,
            factors,
            card: card_used,
            document,
        },
        FinishResponse::Deny {
            reason,
            reason_ja,
            retry_after,
        } => {
            let (reason, reason_ja) = if retry_after > 0 {
                (
                    format!("{reason} (try again in {retry_after} s)"),
                    format!("{reason_ja} ({retry_after}秒後に再試行できます)"),
                )
            } else {
                (reason, reason_ja)
            };
            Outcome::Deny { reason, reason_ja }
        }
    })
}

/// Whether any usable card is present (for `status`).
pub fn card_present(readers: &Readers) -> bool {
    readers.present().values().any(usable)
}
