//! Why a policy is refused: each violation names the rule, the combination,
//! the requirement it breaks and a sentence an officer understands, in
//! English and Japanese (R-POL-1).

use std::fmt;

/// What a violation breaks: a requirement of `REQUIREMENTS.md`, or a rule of
/// the policy format itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Code {
    /// Two independent factors from two different categories.
    RAuth1,
    /// No public identifier or easily obtained possession factor alone.
    RAuth2,
    /// A security device is never usable on its own.
    RAuth3,
    /// FIDO2 counts as two factors only with user verification.
    RAuth4,
    /// Biometric data never leaves the reader in plaintext.
    RBio1,
    /// 1:1 verification only; never a sole factor.
    RBio2,
    /// Biometric failure limits.
    RBio4,
    /// No long unattended sessions.
    RSess1,
    /// Offline use is bounded in time.
    ROff1,
    /// Failure throttling and lockout limits.
    RRate1,
    /// Break-glass is a purpose of its own, always flagged for review.
    REmerg1,
    /// Qualified signatures need an HPKI card.
    RSig1,
    /// A name the format does not know (factor, identification method).
    UnknownName,
    /// A role or workstation group used but not declared.
    UnknownReference,
    /// The same thing listed twice.
    Duplicate,
    /// Two rules apply to the same role, group and purpose.
    Overlap,
    /// A value outside its allowed range, or a required list left empty.
    Range,
    /// The file is larger than the engine accepts (too many rules, names too long).
    Limit,
}

impl Code {
    /// The identifier printed to officers: a requirement ID or `POLICY-…`.
    pub fn as_str(self) -> &'static str {
        match self {
            Code::RAuth1 => "R-AUTH-1",
            Code::RAuth2 => "R-AUTH-2",
            Code::RAuth3 => "R-AUTH-3",
            Code::RAuth4 => "R-AUTH-4",
            Code::RBio1 => "R-BIO-1",
            Code::RBio2 => "R-BIO-2",
            Code::RBio4 => "R-BIO-4",
            Code::RSess1 => "R-SESS-1",
            Code::ROff1 => "R-OFF-1",
            Code::RRate1 => "R-RATE-1",
            Code::REmerg1 => "R-EMERG-1",
            Code::RSig1 => "R-SIG-1",
            Code::UnknownName => "POLICY-UNKNOWN-NAME",
            Code::UnknownReference => "POLICY-UNKNOWN-REFERENCE",
            Code::Duplicate => "POLICY-DUPLICATE",
            Code::Overlap => "POLICY-OVERLAP",
            Code::Range => "POLICY-RANGE",
            Code::Limit => "POLICY-LIMIT",
        }
    }

    /// Whether the code is a requirement of the guideline (as opposed to the format).
    pub fn is_requirement(self) -> bool {
        self.as_str().starts_with("R-")
    }
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One reason a policy is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// What is broken.
    pub code: Code,
    /// The rule it is in, if any.
    pub rule: Option<String>,
    /// The combination as written, if the violation is about one.
    pub combination: Option<String>,
    /// The explanation in English.
    pub en: String,
    /// The explanation in Japanese.
    pub ja: String,
}

impl Violation {
    pub(crate) fn new(code: Code, en: impl Into<String>, ja: impl Into<String>) -> Violation {
        Violation {
            code,
            rule: None,
            combination: None,
            en: en.into(),
            ja: ja.into(),
        }
    }

    pub(crate) fn in_rule(mut self, rule: &str) -> Violation {
        self.rule = Some(rule.to_owned());
        self
    }

    pub(crate) fn in_combination(mut self, combination: &[String]) -> Violation {
        self.combination = Some(format!("[{}]", combination.join(", ")));
        self
    }
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.code)?;
        if let Some(rule) = &self.rule {
            write!(f, " rule {rule:?}")?;
        }
        if let Some(combination) = &self.combination {
            write!(f, " combination {combination}")?;
        }
        write!(f, ": {} / {}", self.en, self.ja)
    }
}
