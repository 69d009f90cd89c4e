//! What the module itself says to the user, in English and Japanese, and
//! how it picks the language.
//!
//! Prompts and information texts come from the agent (with their Japanese
//! version); these are the few messages the module adds when the agent
//! cannot speak for itself. They never say why in detail (that is in
//! syslog for the administrator) and never tell whether a user exists.
#![forbid(unsafe_code)]

use crate::codes::PAM_MAX_MSG_SIZE;
use crate::ops::PamOps;

/// The language of the messages shown to the user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lang {
    /// English (the default).
    En,
    /// Japanese: the locale starts with `ja`.
    Ja,
}

/// The locale variables, in the order POSIX gives them precedence.
const LOCALE_VARS: [&str; 3] = ["LC_ALL", "LC_MESSAGES", "LANG"];

impl Lang {
    /// Japanese when the locale of the PAM environment (set by the
    /// application, `pam_env` or `pam_systemd`), or else of the process,
    /// starts with `ja` (`ja_JP.UTF-8`, `ja`). The first of `LC_ALL`,
    /// `LC_MESSAGES`, `LANG` that is set and not empty decides.
    pub fn detect<P: PamOps + ?Sized>(ops: &P) -> Lang {
        let pam = LOCALE_VARS.iter().find_map(|v| non_empty(ops.pam_env(v)));
        let locale = pam.or_else(|| {
            LOCALE_VARS
                .iter()
                .find_map(|v| non_empty(ops.process_env(v)))
        });
        match locale {
            Some(value) if value.starts_with(b"ja") => Lang::Ja,
            _ => Lang::En,
        }
    }

    /// Picks the text for this language: the Japanese one when there is one.
    pub fn pick<'a>(self, en: &'a str, ja: Option<&'a str>) -> &'a str {
        match (self, ja) {
            (Lang::Ja, Some(ja)) => ja,
            _ => en,
        }
    }
}

fn non_empty(value: Option<Vec<u8>>) -> Option<Vec<u8>> {
    value.filter(|v| !v.is_empty())
}

/// A message of the module's own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Message {
    /// The agent cannot be reached or did not answer.
    Unavailable,
    /// Something went wrong; nobody is let in.
    Failed,
    /// The agent denied the authentication (followed by its reason).
    Denied,
    /// Account management refused (followed by the reason).
    AccountDenied,
}

impl Message {
    /// The message in `lang`.
    pub fn text(self, lang: Lang) -> &'static str {
        match (self, lang) {
            (Message::Unavailable, Lang::En) => {
                "ClinAuth is not available on this workstation. Please contact IT."
            }
            (Message::Unavailable, Lang::Ja) => {
                "この端末では ClinAuth を利用できません。情報システム部門に連絡してください。"
            }
            (Message::Failed, Lang::En) => "Authentication failed.",
            (Message::Failed, Lang::Ja) => "認証に失敗しました。",
            (Message::Denied, Lang::En) => "Access denied",
            (Message::Denied, Lang::Ja) => "認証が拒否されました",
            (Message::AccountDenied, Lang::En) => "This account may not use this workstation now",
            (Message::AccountDenied, Lang::Ja) => "このアカウントは現在この端末を利用できません",
        }
    }

    /// The message followed by `reason` when there is one (`message: reason`).
    pub fn with_reason(self, lang: Lang, reason: Option<&str>) -> String {
        let head = self.text(lang);
        match reason.filter(|r| !r.is_empty()) {
            Some(r) => format!("{head}: {r}"),
            None => head.to_owned(),
        }
    }
}

/// `text` cut, at a character boundary, to what every conversation
/// function must accept (`PAM_MAX_MSG_SIZE` bytes with the NUL).
pub fn fit(text: &str) -> &str {
    let max = PAM_MAX_MSG_SIZE - 1;
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.get(..end).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fit_cuts_at_a_character_boundary() {
        assert_eq!(fit("short"), "short");
        let ja = "認".repeat(400); // 1200 bytes
        let cut = fit(&ja);
        assert!(cut.len() <= 511 && cut.len() > 507, "{}", cut.len());
        assert!(cut.chars().all(|c| c == '認'));
        let ascii = "a".repeat(600);
        assert_eq!(fit(&ascii).len(), 511);
    }

    #[test]
    fn with_reason() {
        assert_eq!(
            Message::Denied.with_reason(Lang::En, Some("account locked")),
            "Access denied: account locked"
        );
        assert_eq!(
            Message::Denied.with_reason(Lang::En, Some("")),
            "Access denied"
        );
        assert_eq!(
            Message::Denied.with_reason(Lang::Ja, None),
            "認証が拒否されました"
        );
    }
}
