//! Security keys over USB HID (CTAP 2.0/2.1), through
//! webauthn-authenticator-rs's `USBTransport` and `CtapAuthenticator`
//! (the `usb` cargo feature).
//!
//! The CTAP client is blocking (it waits on the key), so it runs on the
//! blocking pool; what it needs from the person comes back to the flow
//! through a channel: "touch your key" becomes a conversation `info`, the
//! key's PIN a secret prompt. The first key found that speaks CTAP2 is
//! used. The library takes the PIN as a `String` and does not wipe it; the
//! agent's copy is zeroized.
//!
//! If the flow gives up (timeout, caller gone), the blocking task still
//! runs until the key answers or its own CTAP timeout ends; its answer is
//! then dropped.

use std::sync::mpsc as std_mpsc;
use std::time::Duration;

use clinauth_proto::agent::{PromptKind, PromptStyle};
use tokio::sync::mpsc;
use webauthn_authenticator_rs::ctap2::CtapAuthenticator;
use webauthn_authenticator_rs::prelude::{
    PublicKeyCredential, RequestChallengeResponse, Url, WebauthnAuthenticator,
};
use webauthn_authenticator_rs::transport::Transport;
use webauthn_authenticator_rs::types::{CableRequestType, CableState, EnrollSampleStatus};
use webauthn_authenticator_rs::ui::UiCallback;
use webauthn_authenticator_rs::usb::USBTransport;
use zeroize::Zeroizing;

use crate::conversation::Conversation;
use crate::login::LoginError;

/// What the CTAP client asks of the person.
enum Ask {
    /// The key's PIN; the answer (or nothing) goes back.
    Pin(std_mpsc::SyncSender<Option<Zeroizing<String>>>),
    /// "Touch the key".
    Touch,
}

/// The CTAP client's user interface: a channel to the flow.
#[derive(Debug)]
struct Bridge {
    tx: mpsc::UnboundedSender<AskMsg>,
    wait: Duration,
}

/// `Ask` is not `Debug`; this wrapper is.
struct AskMsg(Ask);

impl std::fmt::Debug for AskMsg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Ask::Pin(_) => f.write_str("Pin"),
            Ask::Touch => f.write_str("Touch"),
        }
    }
}

impl UiCallback for Bridge {
    fn request_pin(&self) -> Option<String> {
        let (tx, rx) = std_mpsc::sync_channel(1);
        self.tx.send(AskMsg(Ask::Pin(tx))).ok()?;
        let pin = rx.recv_timeout(self.wait).ok().flatten()?;
        Some(pin.as_str().to_owned())
    }

    fn request_touch(&self) {
        let _ = self.tx.send(AskMsg(Ask::Touch));
    }

    fn processing(&self) {}

    fn fingerprint_enrollment_feedback(
        &self,
        _remaining_samples: u32,
        _feedback: Option<EnrollSampleStatus>,
    ) {
    }

    fn cable_qr_code(&self, _request_type: CableRequestType, _url: String) {}

    fn dismiss_qr_code(&self) {}

    fn cable_status_update(&self, _state: CableState) {}
}

/// Asks the first CTAP2 key on USB to sign `request` for `origin`.
pub(super) async fn assert(
    conv: &Conversation,
    origin: Url,
    request: RequestChallengeResponse,
    timeout: Duration,
) -> Result<PublicKeyCredential, LoginError> {
    let (tx, mut asks) = mpsc::unbounded_channel();
    let bridge = Bridge {
        tx,
        wait: conv.timeout(),
    };
    let handle = tokio::runtime::Handle::current();
    let mut task = tokio::task::spawn_blocking(move || {
        let mut authenticator = handle.block_on(async {
            let transport = USBTransport::new().await.map_err(|e| format!("USB: {e}"))?;
            let tokens = transport.tokens().await.map_err(|e| format!("USB: {e}"))?;
            for token in tokens {
                if let Some(a) = CtapAuthenticator::new(token, &bridge).await {
                    return Ok(a);
                }
            }
            Err("no FIDO2 security key is plugged in".to_owned())
        })?;
        // The CTAP client blocks on its own futures; they may need the
        // runtime's reactor, which the flow's thread keeps driving.
        let _runtime = handle.enter();
        authenticator
            .do_authentication(origin, request)
            .map_err(|e| format!("the security key refused: {e}"))
    });
    let deadline = tokio::time::sleep(timeout);
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            done = &mut task => {
                return match done {
                    Ok(Ok(credential)) => Ok(credential),
                    Ok(Err(why)) => Err(LoginError::Device(why)),
                    Err(_) => Err(LoginError::Internal("the FIDO2 task failed".into())),
                };
            }
            Some(AskMsg(ask)) = asks.recv() => match ask {
                Ask::Touch => {
                    conv.info(
                        "Touch your security key.",
                        "セキュリティキーに触れてください。",
                    )
                    .await?;
                }
                Ask::Pin(reply) => {
                    let answer = conv
                        .prompt(
                            PromptKind::Other,
                            PromptStyle::Secret,
                            "Security key PIN: ",
                            "セキュリティキーのPIN: ",
                        )
                        .await;
                    let pin = answer
                        .ok()
                        .map(|s| Zeroizing::new(s.expose().to_owned()));
                    let _ = reply.send(pin);
                }
            },
            () = &mut deadline => {
                return Err(LoginError::Device(
                    "the security key did not answer in time".into(),
                ));
            }
        }
    }
}
