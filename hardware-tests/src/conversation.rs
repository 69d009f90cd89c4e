//! A login conversation with the agent over its socket, as the PAM module
//! holds it, for the end-to-end tests: send `authenticate`, answer each
//! prompt, and keep what the agent said ([`Transcript`]) until the reply
//! that ends it.
//!
//! Test helpers: they return errors, never panic.

use clinauth_policy::Purpose;
use clinauth_proto::agent::{ErrorCode, Outcome, PromptKind, Reply, Request};
use clinauth_proto::text::TextError;
use clinauth_proto::{AgentClient, ClientError, Label, SecretString, Text, UserName};

/// The `authenticate` request for `user` and `purpose` from PAM service
/// `service`, without tty or remote host.
pub fn authenticate(user: &str, purpose: Purpose, service: &str) -> Result<Request, TextError> {
    Ok(Request::Authenticate {
        user: UserName::new(user)?,
        purpose,
        service: Label::new(service)?,
        tty: None,
        rhost: None,
    })
}

/// What a conversation showed, and how it ended.
#[derive(Debug, Default, Clone)]
pub struct Transcript {
    /// The prompts, in order.
    pub prompts: Vec<PromptKind>,
    /// The info messages' texts, in order.
    pub infos: Vec<String>,
    /// Every reply, in order, the last one ending the conversation.
    pub replies: Vec<Reply>,
    /// The reply that ended the conversation (an `error` reply included).
    pub end: Option<Reply>,
}

impl Transcript {
    /// The conversation ended with `allow`.
    pub fn allowed(&self) -> bool {
        matches!(
            self.end,
            Some(Reply::AuthResult {
                outcome: Outcome::Allow,
                ..
            })
        )
    }

    /// `Err` (with the transcript) when the conversation ended with `allow`.
    pub fn expect_no_allow(&self) -> Result<(), String> {
        if self.allowed() {
            return Err(format!("expected no allow: {self:?}"));
        }
        Ok(())
    }

    /// The conversation ended with the error `server_unreachable`.
    pub fn is_unreachable(&self) -> bool {
        matches!(
            self.end,
            Some(Reply::Error {
                code: ErrorCode::ServerUnreachable,
                ..
            })
        )
    }

    /// Why it ended: the result's reason, the error's message, or the end
    /// itself.
    pub fn reason(&self) -> String {
        match &self.end {
            Some(Reply::AuthResult {
                reason: Some(r), ..
            }) => r.as_str().to_owned(),
            Some(Reply::Error { message, .. }) => message.as_str().to_owned(),
            other => format!("{other:?}"),
        }
    }
}

/// Runs a conversation, answering each prompt with `answer(kind)` (`None`:
/// cancel). An `error` reply ends it like any other end.
pub fn converse(
    client: &mut AgentClient,
    request: &Request,
    mut answer: impl FnMut(PromptKind) -> Option<String>,
) -> Result<Transcript, ClientError> {
    let mut t = Transcript::default();
    client.send(request)?;
    loop {
        let reply = match client.recv() {
            Ok(reply) => reply,
            Err(ClientError::AgentError { code, message }) => Reply::Error {
                code,
                message: Text::lossy(&message),
            },
            Err(e) => return Err(e),
        };
        t.replies.push(reply.clone());
        match reply {
            Reply::Info { text, .. } => t.infos.push(text.as_str().to_owned()),
            Reply::Prompt {
                prompt_id, kind, ..
            } => {
                t.prompts.push(kind);
                match answer(kind) {
                    Some(value) => {
                        let value = SecretString::new(value)
                            .map_err(|e| ClientError::Protocol(e.to_string()))?;
                        client.send(&Request::Answer { prompt_id, value })?;
                    }
                    None => {
                        client.send(&Request::Cancel {})?;
                    }
                }
            }
            end => {
                t.end = Some(end);
                return Ok(t);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transcript_verdicts() {
        let mut t = Transcript::default();
        assert!(!t.allowed());
        assert!(t.expect_no_allow().is_ok());
        t.end = Some(Reply::Error {
            code: ErrorCode::ServerUnreachable,
            message: Text::lossy("no server"),
        });
        assert!(t.is_unreachable());
        assert_eq!(t.reason(), "no server");
        assert!(authenticate("nurse.sato", Purpose::Login, "e2e-test").is_ok());
        assert!(authenticate("", Purpose::Login, "e2e-test").is_err());
    }
}
