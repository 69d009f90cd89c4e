//! The smartcard factor: VERIFY the PIN on the card, then GENERAL
//! AUTHENTICATE (slot 9A) over the server's challenge. Proves `smartcard`
//! and `card_pin` at once: the key only signs after the PIN.
//!
//! The PIN is asked through the conversation, with the tries left when the
//! card is low on them; the last try is never spent without the user
//! confirming it. PC/SC calls run on the blocking pool, each with the
//! configured APDU deadline; the card is held exclusively from VERIFY to
//! the signature so that no other application slips in between.

use clinauth_proto::agent::{PromptKind, PromptStyle};
use clinauth_proto::records::Operation;
use clinauth_proto::workstation::{EvidenceItem, B64};
use zeroize::Zeroizing;

use super::{Attempt, LoginError};
use crate::card::{CardError, CardSession, ConnectOptions, LastTry, Pin, PinStatus, PivSlot};

/// How many times a malformed PIN (not 6–8 digits) is asked again; no try
/// is spent on those.
const FORMAT_RETRIES: usize = 3;

/// What the card produced.
#[derive(Debug)]
pub struct CardProof {
    /// The evidence for the server.
    pub evidence: EvidenceItem,
    /// SHA-256 of the card's authentication certificate (the session binds
    /// to it for tap-out).
    pub fingerprint: [u8; 32],
    /// For a `sign` operation: the signature key's signature over the
    /// document digest, with its certificate.
    pub document: Option<EvidenceItem>,
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, CardError> + Send + 'static,
) -> Result<T, LoginError> {
    match tokio::task::spawn_blocking(f).await {
        Ok(result) => result.map_err(LoginError::Card),
        Err(_) => Err(LoginError::Internal("the card task failed".into())),
    }
}

/// Runs the card factor with the card in `reader`.
pub async fn prove(attempt: &Attempt<'_>, reader: &str) -> Result<CardProof, LoginError> {
    let nonce: [u8; 32] = attempt
        .begin
        .nonce
        .0
        .as_slice()
        .try_into()
        .map_err(|_| LoginError::Server("the challenge nonce is not 32 bytes".into()))?;
    let opts = ConnectOptions {
        timeout: attempt.apdu_timeout,
        exclusive: true,
        reset_on_close: true,
    };
    let reader_name = reader.to_owned();
    let (session, fingerprint, status) = blocking(move || {
        let mut session = CardSession::connect_when_free(&reader_name, opts)?;
        let fingerprint = session.certificate(PivSlot::Authentication)?.fingerprint();
        let status = session.pin_status();
        Ok((session, fingerprint, status))
    })
    .await?;
    let tries = match status {
        Ok(PinStatus::Blocked) => return Err(LoginError::Card(CardError::PinBlocked)),
        Ok(PinStatus::TriesLeft(n)) => Some(n),
        Ok(PinStatus::Verified) => None,
        // The card cannot tell; treat the next try as possibly the last.
        Err(CardError::Status { .. }) => Some(1),
        Err(e) => return Err(LoginError::Card(e)),
    };
    let last_try = match tries {
        Some(n) if n <= 1 => {
            let answer = attempt
                .conv
                .prompt(
                    PromptKind::Other,
                    PromptStyle::Visible,
                    "This is the card's last PIN try: a wrong PIN blocks the card. Type yes to go on: ",
                    "カードの暗証番号の最後の試行です。誤るとカードがロックされます。続ける場合は yes と入力: ",
                )
                .await?;
            if !matches!(answer.expose().trim(), "yes" | "YES" | "Yes" | "はい") {
                return Err(LoginError::Declined("the last PIN try was not confirmed"));
            }
            LastTry::Spend
        }
        _ => LastTry::Refuse,
    };
    let (en, ja) = match tries {
        Some(n) if n <= 3 => (
            format!("Card PIN ({n} tries left): "),
            format!("カードの暗証番号 (残り{n}回): "),
        ),
        _ => ("Card PIN: ".to_owned(), "カードの暗証番号: ".to_owned()),
    };
    let pin = ask_pin(attempt, &en, &ja).await?;
    let user = attempt.user.as_str().to_owned();
    let workstation = attempt.workstation.to_owned();
    let purpose = attempt.purpose;
    let digest: Option<[u8; 32]> =
        match attempt.operation {
            Some(Operation::Sign { digest }) => Some(digest.bytes().try_into().map_err(|_| {
                LoginError::Device("card signatures are over SHA-256 digests".into())
            })?),
            _ => None,
        };
    let (signed, document) = blocking(move || {
        let mut session = session;
        session.verify_pin(&pin, last_try)?;
        let signed = session.sign_challenge(&nonce, &user, &workstation, purpose)?;
        // The signature key wants the PIN again, right before (PIN always);
        // the tries were just reset by the good PIN.
        let document = match digest {
            Some(d) => Some(session.sign_digest_with_pin(&d, &pin, LastTry::Refuse)?),
            None => None,
        };
        Ok((signed, document))
    })
    .await?;
    let document = match document {
        Some(doc) => Some(EvidenceItem::DocumentSignature {
            certificate: B64::new(doc.certificate_der).ok_or_else(|| {
                LoginError::Internal("the signature certificate is too large".into())
            })?,
            chain: Vec::new(),
            signature: B64::new(doc.signature).ok_or_else(|| {
                LoginError::Internal("the document signature is too large".into())
            })?,
        }),
        None => None,
    };
    let certificate = B64::new(signed.certificate_der)
        .ok_or_else(|| LoginError::Internal("the card certificate is too large".into()))?;
    let signature = B64::new(signed.signature)
        .ok_or_else(|| LoginError::Internal("the card signature is too large".into()))?;
    Ok(CardProof {
        evidence: EvidenceItem::Card {
            certificate,
            chain: Vec::new(),
            signature,
            pin_protected_key: true,
        },
        fingerprint,
        document,
    })
}

async fn ask_pin(attempt: &Attempt<'_>, en: &str, ja: &str) -> Result<Pin, LoginError> {
    for _ in 0..FORMAT_RETRIES {
        let typed = attempt
            .conv
            .prompt(PromptKind::CardPin, PromptStyle::Secret, en, ja)
            .await?;
        let digits = Zeroizing::new(typed.expose().trim().as_bytes().to_vec());
        match Pin::new(&digits) {
            Ok(pin) => return Ok(pin),
            Err(_) => {
                attempt
                    .conv
                    .info(
                        "A card PIN is 6 to 8 digits (no try was used).",
                        "カードの暗証番号は6〜8桁の数字です (試行回数は減っていません)。",
                    )
                    .await?;
            }
        }
    }
    Err(LoginError::Declined("no valid card PIN was given"))
}
