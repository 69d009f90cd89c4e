//! Factors the person types: a PIN or password the server checks, and a
//! TOTP code. The values travel in zeroizing buffers and are never logged.

use clinauth_proto::agent::{PromptKind, PromptStyle};
use clinauth_proto::workstation::EvidenceItem;

use super::LoginError;
use crate::conversation::Conversation;

/// Asks for the PIN or password the server checks.
pub async fn server_pin(conv: &Conversation) -> Result<EvidenceItem, LoginError> {
    let value = conv
        .prompt(PromptKind::Pin, PromptStyle::Secret, "PIN: ", "暗証番号: ")
        .await?;
    if value.is_empty() {
        return Err(LoginError::Declined("no PIN was given"));
    }
    Ok(EvidenceItem::ServerPin { value })
}

/// Asks for a TOTP code (6 to 8 digits).
pub async fn totp(conv: &Conversation) -> Result<EvidenceItem, LoginError> {
    let code = conv
        .prompt(
            PromptKind::Totp,
            PromptStyle::Visible,
            "One-time code: ",
            "ワンタイムコード: ",
        )
        .await?;
    let digits = code.expose().trim();
    if !(6..=8).contains(&digits.len()) || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(LoginError::Declined("a one-time code is 6 to 8 digits"));
    }
    Ok(EvidenceItem::Totp { code })
}
