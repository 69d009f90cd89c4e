//! The conversation between a flow (a login, a step-up) and the person at
//! the keyboard, carried by the caller on the socket (the PAM module turns
//! prompts into PAM conversation messages).
//!
//! A flow runs in its own task and holds a [`Conversation`]; the socket
//! connection holds the other end ([`Exchange`]s), turns each into a
//! `prompt` or `info` reply, and routes the caller's `answer` back. When
//! the caller cancels or hangs up, the connection drops its end and every
//! pending [`Conversation::prompt`] fails with [`ConversationError::Closed`].
//!
//! For a clinical app's request the prompts go to pinentry instead
//! ([`Conversation::with_pinentry`]): the app gets the `info` messages, the
//! person types the PIN into the agent's own dialog, and the app never
//! sees it.

use std::time::Duration;

use clinauth_proto::agent::{PromptKind, PromptStyle};
use clinauth_proto::{SecretString, Text};
use tokio::sync::{mpsc, oneshot};

/// What a flow asks of the caller.
#[derive(Debug)]
pub enum Exchange {
    /// Ask and wait for the answer.
    Prompt {
        /// What is asked.
        kind: PromptKind,
        /// Echoed or not.
        style: PromptStyle,
        /// In English.
        text: Text,
        /// In Japanese.
        text_ja: Text,
        /// Where the answer goes.
        answer: oneshot::Sender<SecretString>,
    },
    /// Tell; no answer.
    Info {
        /// In English.
        text: Text,
        /// In Japanese.
        text_ja: Text,
    },
}

/// Why a conversation step failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ConversationError {
    /// The caller cancelled or hung up.
    #[error("the caller ended the conversation")]
    Closed,
    /// Nobody answered in time.
    #[error("no answer in time")]
    Timeout,
    /// The person cancelled the PIN dialog.
    #[error("cancelled in the PIN dialog")]
    Cancelled,
    /// The PIN dialog could not be used (details in the agent's log).
    #[error("the PIN dialog (pinentry) could not be used")]
    PinEntry,
}

/// Where an app request's prompts go: pinentry, on the user's desktop.
#[derive(Debug, Clone)]
pub struct PinEntryRoute {
    /// `[pinentry]`.
    pub settings: std::sync::Arc<crate::pinentry::PinentrySettings>,
    /// The user whose desktop shows it.
    pub run_as: crate::pinentry::RunAs,
    /// What the PIN is for, shown above the entry field.
    pub context: String,
}

/// A flow's side of the conversation.
#[derive(Debug)]
pub struct Conversation {
    tx: mpsc::Sender<Exchange>,
    timeout: Duration,
    pinentry: Option<PinEntryRoute>,
}

impl Conversation {
    /// A conversation whose prompts wait at most `timeout` for an answer,
    /// and the receiver the connection serves.
    pub fn new(timeout: Duration) -> (Conversation, mpsc::Receiver<Exchange>) {
        // One exchange is outstanding at a time; a little room for infos.
        let (tx, rx) = mpsc::channel(4);
        (
            Conversation {
                tx,
                timeout,
                pinentry: None,
            },
            rx,
        )
    }

    /// A conversation whose prompts go to pinentry (`route`); only infos
    /// reach the caller.
    pub fn with_pinentry(
        timeout: Duration,
        route: PinEntryRoute,
    ) -> (Conversation, mpsc::Receiver<Exchange>) {
        let (mut conv, rx) = Conversation::new(timeout);
        conv.pinentry = Some(route);
        (conv, rx)
    }

    /// Sets what the PIN dialog says the PIN is for (app requests).
    pub fn set_context(&mut self, context: String) {
        if let Some(route) = &mut self.pinentry {
            route.context = context;
        }
    }

    /// How long a prompt waits.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Asks the caller; the answer is a secret whatever the style.
    pub async fn prompt(
        &self,
        kind: PromptKind,
        style: PromptStyle,
        text: &str,
        text_ja: &str,
    ) -> Result<SecretString, ConversationError> {
        if let Some(route) = &self.pinentry {
            return self.ask_pinentry(route, kind, style, text, text_ja).await;
        }
        let (answer, rx) = oneshot::channel();
        let exchange = Exchange::Prompt {
            kind,
            style,
            text: Text::lossy(text),
            text_ja: Text::lossy(text_ja),
            answer,
        };
        self.tx
            .send(exchange)
            .await
            .map_err(|_| ConversationError::Closed)?;
        match tokio::time::timeout(self.timeout, rx).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(_)) => Err(ConversationError::Closed),
            Err(_) => Err(ConversationError::Timeout),
        }
    }

    async fn ask_pinentry(
        &self,
        route: &PinEntryRoute,
        kind: PromptKind,
        style: PromptStyle,
        text: &str,
        text_ja: &str,
    ) -> Result<SecretString, ConversationError> {
        use crate::pinentry::{self, PinRequest, PinentryError};
        let description = format!("{}\n\n{text}\n{text_ja}", route.context);
        let request = PinRequest {
            title: "ClinAuth",
            description: &description,
            prompt: match kind {
                PromptKind::CardPin => "Card PIN / 暗証番号:",
                PromptKind::Totp => "Code / コード:",
                PromptKind::Password => "Password / パスワード:",
                _ => "PIN:",
            },
            ..PinRequest::default()
        };
        self.info(
            "Answer in the ClinAuth dialog on your screen.",
            "画面の ClinAuth ダイアログで入力してください。",
        )
        .await?;
        let failed = |e: PinentryError| match e {
            PinentryError::Cancelled => ConversationError::Cancelled,
            PinentryError::Timeout => ConversationError::Timeout,
            other => {
                tracing::warn!(error = %other, "pinentry failed");
                ConversationError::PinEntry
            }
        };
        // A visible question (spend the card's last PIN try?) is a yes/no.
        if style == PromptStyle::Visible && kind == PromptKind::Other {
            let yes = pinentry::confirm(&route.settings, route.run_as, &request)
                .await
                .map_err(failed)?;
            return SecretString::new(if yes { "yes" } else { "no" })
                .map_err(|_| ConversationError::PinEntry);
        }
        pinentry::get_pin(&route.settings, route.run_as, &request)
            .await
            .map_err(failed)
    }

    /// Tells the caller something.
    pub async fn info(&self, text: &str, text_ja: &str) -> Result<(), ConversationError> {
        self.tx
            .send(Exchange::Info {
                text: Text::lossy(text),
                text_ja: Text::lossy(text_ja),
            })
            .await
            .map_err(|_| ConversationError::Closed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn prompt_gets_the_answer() {
        let (conv, mut rx) = Conversation::new(Duration::from_secs(5));
        let caller = tokio::spawn(async move {
            match rx.recv().await {
                Some(Exchange::Prompt { kind, answer, .. }) => {
                    assert_eq!(kind, PromptKind::CardPin);
                    answer.send(SecretString::new("123456").unwrap()).unwrap();
                }
                other => panic!("{other:?}"),
            }
        });
        let pin = conv
            .prompt(
                PromptKind::CardPin,
                PromptStyle::Secret,
                "PIN: ",
                "暗証番号: ",
            )
            .await
            .unwrap();
        assert_eq!(pin.expose(), "123456");
        caller.await.unwrap();
    }

    #[tokio::test]
    async fn hang_up_and_silence_are_errors() {
        let (conv, rx) = Conversation::new(Duration::from_secs(5));
        drop(rx);
        assert_eq!(
            conv.info("x", "x").await.unwrap_err(),
            ConversationError::Closed
        );
        let (conv, mut rx) = Conversation::new(Duration::from_millis(50));
        let keep = tokio::spawn(async move {
            let held = rx.recv().await;
            tokio::time::sleep(Duration::from_millis(200)).await;
            drop(held);
        });
        assert_eq!(
            conv.prompt(PromptKind::Pin, PromptStyle::Secret, "PIN", "PIN")
                .await
                .unwrap_err(),
            ConversationError::Timeout
        );
        keep.await.unwrap();
    }
}
