//! What an authentication is for. Rules select on it (R-POL-1).

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// The purposes a rule can be written for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Purpose {
    /// Desktop or console login.
    Login,
    /// Unlocking a locked session.
    Unlock,
    /// A fresh authentication asked for by a clinical app before a sensitive action.
    StepUp,
    /// Confirming a record entered by proxy (R-AUTH-5, R-REC-1).
    Confirm,
    /// Signing a document with the card's signature key (R-SIG-1).
    Sign,
    /// Emergency access, always flagged for review (R-EMERG-1).
    BreakGlass,
}

impl Purpose {
    /// Every purpose, in a fixed order.
    pub const ALL: [Purpose; 6] = [
        Purpose::Login,
        Purpose::Unlock,
        Purpose::StepUp,
        Purpose::Confirm,
        Purpose::Sign,
        Purpose::BreakGlass,
    ];

    /// The name used in policy files and on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Purpose::Login => "login",
            Purpose::Unlock => "unlock",
            Purpose::StepUp => "step_up",
            Purpose::Confirm => "confirm",
            Purpose::Sign => "sign",
            Purpose::BreakGlass => "break_glass",
        }
    }

    /// A small index, for bit sets.
    pub(crate) fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for Purpose {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The name is not one of the purposes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown purpose (expected one of login, unlock, step_up, confirm, sign, break_glass)")]
pub struct UnknownPurpose;

impl FromStr for Purpose {
    type Err = UnknownPurpose;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Purpose::ALL
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or(UnknownPurpose)
    }
}
