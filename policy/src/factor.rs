//! The factor model of `REQUIREMENTS.md`: categories, factor kinds, and the
//! public identifiers that are never factors (R-AUTH-2).
//!
//! A policy names factor kinds; verified evidence (see [`crate::evidence`])
//! satisfies them. Both meet in [`Token`]s: the smallest things a policy can
//! ask for and evidence can prove. A combination is satisfied when every one
//! of its requirements is met by a token the evidence proves.

use std::fmt;

/// The three categories of authentication factors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Category {
    /// Something the user knows (PIN, password).
    Knowledge,
    /// Something the user has (card, key, TOTP device).
    Possession,
    /// Something the user is (biometric).
    Inherence,
}

/// A set of categories a factor or a combination covers.
///
/// `user_verified` stands for a FIDO2 authenticator's user verification: a
/// PIN or a biometric checked inside the authenticator. It is knowledge *or*
/// inherence, and counts as one category beside possession (R-AUTH-4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CategorySet {
    /// Knowledge is covered.
    pub knowledge: bool,
    /// Possession is covered.
    pub possession: bool,
    /// Inherence is covered.
    pub inherence: bool,
    /// Knowledge or inherence verified inside a FIDO2 authenticator.
    pub user_verified: bool,
}

impl CategorySet {
    /// The union of two sets.
    pub fn union(self, other: CategorySet) -> CategorySet {
        CategorySet {
            knowledge: self.knowledge || other.knowledge,
            possession: self.possession || other.possession,
            inherence: self.inherence || other.inherence,
            user_verified: self.user_verified || other.user_verified,
        }
    }

    /// How many distinct categories the set covers (R-AUTH-1 asks for two).
    ///
    /// User verification adds a category only when neither knowledge nor
    /// inherence is already there, because it is one of those two.
    pub fn distinct(self) -> u32 {
        let base =
            u32::from(self.knowledge) + u32::from(self.possession) + u32::from(self.inherence);
        let uv_extra = self.user_verified && !self.knowledge && !self.inherence;
        base + u32::from(uv_extra)
    }

    /// True when only possession is covered: a device usable on its own (R-AUTH-3).
    pub fn possession_only(self) -> bool {
        self.possession && !self.knowledge && !self.inherence && !self.user_verified
    }

    fn of(category: Category) -> CategorySet {
        let mut set = CategorySet::default();
        match category {
            Category::Knowledge => set.knowledge = true,
            Category::Possession => set.possession = true,
            Category::Inherence => set.inherence = true,
        }
        set
    }
}

impl fmt::Display for CategorySet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts: Vec<&str> = Vec::with_capacity(4);
        if self.knowledge {
            parts.push("knowledge");
        }
        if self.possession {
            parts.push("possession");
        }
        if self.inherence {
            parts.push("inherence");
        }
        if self.user_verified {
            parts.push("user verification");
        }
        if parts.is_empty() {
            f.write_str("none")
        } else {
            f.write_str(&parts.join(" + "))
        }
    }
}

/// How a biometric reader protects feature data (R-BIO-1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum BiometricProtection {
    /// The reader matches on the device and signs its decision; no template leaves it.
    MatchOnReader,
    /// The reader encrypts the template inside itself to the server's matcher key.
    SealedTemplate,
    /// The host receives the plaintext template and matches it. Breaks R-BIO-1.
    HostMatch,
}

/// A factor kind as a security officer names it in a policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FactorKind {
    // Declared possession first so that sorted combinations read naturally
    // ("smartcard + card_pin").
    /// A smartcard (PIV, HPKI) key signing a server challenge.
    Smartcard,
    /// A contactless badge's UID: a weak possession factor, easily copied.
    Badge,
    /// A FIDO2 authenticator that reported user verification (two categories, R-AUTH-4).
    Fido2Uv,
    /// A FIDO2 authenticator with user presence only: a weak possession factor.
    Fido2,
    /// A TOTP device (RFC 6238).
    Totp,
    /// The card PIN, verified by the card; proven by a signature from a PIN-protected key.
    CardPin,
    /// A PIN or password verified by the server (Argon2id).
    ServerPin,
    /// A biometric from any reader that protects feature data (match-on-reader or sealed).
    Biometric,
    /// A biometric from a reader of the given protection only.
    BiometricWith(BiometricProtection),
}

impl FactorKind {
    /// Every kind, in the order used for listings.
    pub const ALL: [FactorKind; 11] = [
        FactorKind::Smartcard,
        FactorKind::Badge,
        FactorKind::Fido2Uv,
        FactorKind::Fido2,
        FactorKind::Totp,
        FactorKind::CardPin,
        FactorKind::ServerPin,
        FactorKind::Biometric,
        FactorKind::BiometricWith(BiometricProtection::MatchOnReader),
        FactorKind::BiometricWith(BiometricProtection::SealedTemplate),
        FactorKind::BiometricWith(BiometricProtection::HostMatch),
    ];

    /// The name used in policy files.
    pub fn name(self) -> &'static str {
        match self {
            FactorKind::ServerPin => "server_pin",
            FactorKind::CardPin => "card_pin",
            FactorKind::Smartcard => "smartcard",
            FactorKind::Fido2Uv => "fido2_uv",
            FactorKind::Fido2 => "fido2",
            FactorKind::Totp => "totp",
            FactorKind::Badge => "badge",
            FactorKind::Biometric => "biometric",
            FactorKind::BiometricWith(BiometricProtection::MatchOnReader) => "biometric_on_reader",
            FactorKind::BiometricWith(BiometricProtection::SealedTemplate) => "biometric_sealed",
            FactorKind::BiometricWith(BiometricProtection::HostMatch) => "biometric_host_match",
        }
    }

    /// Parses a policy-file name. `password` and `usb_token` are accepted as
    /// the words officers use for `server_pin` and `fido2`.
    pub fn from_name(name: &str) -> Option<FactorKind> {
        match name {
            "password" => return Some(FactorKind::ServerPin),
            "usb_token" => return Some(FactorKind::Fido2),
            _ => {}
        }
        FactorKind::ALL.into_iter().find(|k| k.name() == name)
    }

    /// The category this kind belongs to (FIDO2 with UV also verifies the user).
    pub fn categories(self) -> CategorySet {
        match self {
            FactorKind::ServerPin | FactorKind::CardPin => CategorySet::of(Category::Knowledge),
            FactorKind::Smartcard | FactorKind::Fido2 | FactorKind::Totp | FactorKind::Badge => {
                CategorySet::of(Category::Possession)
            }
            FactorKind::Fido2Uv => CategorySet {
                possession: true,
                user_verified: true,
                ..CategorySet::default()
            },
            FactorKind::Biometric | FactorKind::BiometricWith(_) => {
                CategorySet::of(Category::Inherence)
            }
        }
    }

    /// Easily copied or easily obtained by others (R-AUTH-2).
    pub fn is_weak_possession(self) -> bool {
        matches!(self, FactorKind::Fido2 | FactorKind::Badge)
    }

    /// The tokens any one of which meets this kind.
    pub fn accepted_tokens(self) -> TokenSet {
        match self {
            FactorKind::ServerPin => TokenSet::of(Token::ServerPin),
            FactorKind::CardPin => TokenSet::of(Token::CardPin),
            FactorKind::Smartcard => TokenSet::of(Token::Smartcard),
            FactorKind::Fido2Uv => TokenSet::of(Token::Fido2Uv),
            // A UV assertion is also a presence assertion.
            FactorKind::Fido2 => TokenSet::of(Token::Fido2Presence).with(Token::Fido2Uv),
            FactorKind::Totp => TokenSet::of(Token::Totp),
            FactorKind::Badge => TokenSet::of(Token::Badge),
            FactorKind::Biometric => {
                TokenSet::of(Token::BiometricOnReader).with(Token::BiometricSealed)
            }
            FactorKind::BiometricWith(BiometricProtection::MatchOnReader) => {
                TokenSet::of(Token::BiometricOnReader)
            }
            FactorKind::BiometricWith(BiometricProtection::SealedTemplate) => {
                TokenSet::of(Token::BiometricSealed)
            }
            // Host-matched biometrics never count: no evidence can meet them.
            FactorKind::BiometricWith(BiometricProtection::HostMatch) => TokenSet::EMPTY,
        }
    }

    /// What an officer or a clinician reads.
    pub fn label(self) -> Label {
        match self {
            FactorKind::ServerPin => Label::new("PIN or password", "PIN・パスワード"),
            FactorKind::CardPin => Label::new("card PIN", "ICカードのPIN"),
            FactorKind::Smartcard => Label::new("smartcard", "ICカード"),
            FactorKind::Fido2Uv => Label::new(
                "FIDO2 key with user verification",
                "本人確認(PIN・生体)付きFIDO2キー",
            ),
            FactorKind::Fido2 => Label::new("FIDO2 key (touch only)", "FIDO2キー(タッチのみ)"),
            FactorKind::Totp => Label::new("one-time code (TOTP)", "ワンタイムパスワード(TOTP)"),
            FactorKind::Badge => Label::new("staff badge", "職員証(非接触カード)"),
            FactorKind::Biometric => Label::new("fingerprint", "生体認証(指紋)"),
            FactorKind::BiometricWith(BiometricProtection::MatchOnReader) => Label::new(
                "fingerprint (matched on the reader)",
                "生体認証(読取装置内照合)",
            ),
            FactorKind::BiometricWith(BiometricProtection::SealedTemplate) => Label::new(
                "fingerprint (sealed template)",
                "生体認証(暗号化テンプレート)",
            ),
            FactorKind::BiometricWith(BiometricProtection::HostMatch) => Label::new(
                "fingerprint (matched on the workstation)",
                "生体認証(端末側照合)",
            ),
        }
    }
}

impl fmt::Display for FactorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A text in English with its Japanese wording.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Label {
    /// English.
    pub en: &'static str,
    /// Japanese.
    pub ja: &'static str,
}

impl Label {
    const fn new(en: &'static str, ja: &'static str) -> Label {
        Label { en, ja }
    }
}

/// A public identifier: known to others, so never a factor (R-AUTH-2).
///
/// It is a type of its own so that no code path can pass one where a factor
/// is expected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PublicIdentifier {
    /// The login name or user ID.
    UserId,
    /// The employee number.
    EmployeeNumber,
    /// The number printed on a badge or card.
    BadgeNumber,
}

impl PublicIdentifier {
    /// Recognises the names an officer might write for a public identifier.
    pub fn from_name(name: &str) -> Option<PublicIdentifier> {
        match name {
            "user_id" | "user_name" | "username" | "login_name" => Some(PublicIdentifier::UserId),
            "employee_number" | "employee_id" | "staff_id" => {
                Some(PublicIdentifier::EmployeeNumber)
            }
            "badge_number" | "card_number" => Some(PublicIdentifier::BadgeNumber),
            _ => None,
        }
    }

    /// What an officer reads.
    pub fn label(self) -> Label {
        match self {
            PublicIdentifier::UserId => Label::new("user ID", "利用者ID"),
            PublicIdentifier::EmployeeNumber => Label::new("employee number", "職員番号"),
            PublicIdentifier::BadgeNumber => Label::new("badge number", "カード番号"),
        }
    }
}

/// The smallest thing evidence can prove and a policy can ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum Token {
    /// A server-verified PIN or password.
    ServerPin = 0,
    /// A signature from a PIN-protected card key.
    CardPin = 1,
    /// A signature from a card key.
    Smartcard = 2,
    /// A FIDO2 assertion with user verification.
    Fido2Uv = 3,
    /// A FIDO2 assertion with user presence only.
    Fido2Presence = 4,
    /// A TOTP code.
    Totp = 5,
    /// A badge UID.
    Badge = 6,
    /// A signed match decision from a match-on-reader device.
    BiometricOnReader = 7,
    /// A sealed template matched by the server.
    BiometricSealed = 8,
}

impl Token {
    /// Every token.
    pub const ALL: [Token; 9] = [
        Token::ServerPin,
        Token::CardPin,
        Token::Smartcard,
        Token::Fido2Uv,
        Token::Fido2Presence,
        Token::Totp,
        Token::Badge,
        Token::BiometricOnReader,
        Token::BiometricSealed,
    ];

    /// The factor kind this token proves most precisely.
    pub fn kind(self) -> FactorKind {
        match self {
            Token::ServerPin => FactorKind::ServerPin,
            Token::CardPin => FactorKind::CardPin,
            Token::Smartcard => FactorKind::Smartcard,
            Token::Fido2Uv => FactorKind::Fido2Uv,
            Token::Fido2Presence => FactorKind::Fido2,
            Token::Totp => FactorKind::Totp,
            Token::Badge => FactorKind::Badge,
            Token::BiometricOnReader => {
                FactorKind::BiometricWith(BiometricProtection::MatchOnReader)
            }
            Token::BiometricSealed => {
                FactorKind::BiometricWith(BiometricProtection::SealedTemplate)
            }
        }
    }

    fn bit(self) -> u16 {
        1 << (self as u8)
    }
}

/// A set of tokens, as a bit set: decisions test sets without allocating.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct TokenSet(u16);

impl TokenSet {
    /// No tokens.
    pub const EMPTY: TokenSet = TokenSet(0);

    /// A set of one token.
    pub fn of(token: Token) -> TokenSet {
        TokenSet(token.bit())
    }

    /// This set with `token` added.
    #[must_use]
    pub fn with(self, token: Token) -> TokenSet {
        TokenSet(self.0 | token.bit())
    }

    /// Adds a token.
    pub fn insert(&mut self, token: Token) {
        self.0 |= token.bit();
    }

    /// Whether the token is in the set.
    pub fn contains(self, token: Token) -> bool {
        self.0 & token.bit() != 0
    }

    /// Whether the sets share a token.
    pub fn intersects(self, other: TokenSet) -> bool {
        self.0 & other.0 != 0
    }

    /// The tokens in both sets.
    #[must_use]
    pub fn intersection(self, other: TokenSet) -> TokenSet {
        TokenSet(self.0 & other.0)
    }

    /// The tokens in either set.
    #[must_use]
    pub fn union(self, other: TokenSet) -> TokenSet {
        TokenSet(self.0 | other.0)
    }

    /// The tokens of `self` not in `other`.
    #[must_use]
    pub fn difference(self, other: TokenSet) -> TokenSet {
        TokenSet(self.0 & !other.0)
    }

    /// Whether the set is empty.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The tokens, in a fixed order.
    pub fn iter(self) -> impl Iterator<Item = Token> {
        Token::ALL.into_iter().filter(move |t| self.contains(*t))
    }

    /// The categories the tokens cover.
    pub fn categories(self) -> CategorySet {
        self.iter().fold(CategorySet::default(), |acc, t| {
            acc.union(t.kind().categories())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_round_trips_by_name() {
        for kind in FactorKind::ALL {
            assert_eq!(FactorKind::from_name(kind.name()), Some(kind));
        }
        assert_eq!(FactorKind::from_name("usb_token"), Some(FactorKind::Fido2));
        assert_eq!(
            FactorKind::from_name("password"),
            Some(FactorKind::ServerPin)
        );
        assert_eq!(FactorKind::from_name("user_id"), None);
    }

    #[test]
    fn r_auth_2_public_identifiers_are_not_factor_names() {
        for name in ["user_id", "employee_number", "badge_number", "username"] {
            assert!(PublicIdentifier::from_name(name).is_some(), "{name}");
            assert_eq!(FactorKind::from_name(name), None, "{name}");
        }
    }

    #[test]
    fn r_auth_4_fido2_uv_counts_two_categories_and_plain_fido2_one() {
        assert_eq!(FactorKind::Fido2Uv.categories().distinct(), 2);
        assert_eq!(FactorKind::Fido2.categories().distinct(), 1);
        assert!(FactorKind::Fido2.is_weak_possession());
        assert!(!FactorKind::Fido2Uv.is_weak_possession());
    }

    #[test]
    fn user_verification_is_not_counted_twice_with_knowledge() {
        let set = FactorKind::Fido2Uv
            .categories()
            .union(FactorKind::ServerPin.categories());
        assert_eq!(set.distinct(), 2);
    }

    #[test]
    fn r_bio_1_host_match_is_met_by_no_token() {
        let kind = FactorKind::BiometricWith(BiometricProtection::HostMatch);
        assert!(kind.accepted_tokens().is_empty());
        assert!(FactorKind::Biometric
            .accepted_tokens()
            .contains(Token::BiometricSealed));
        assert!(!FactorKind::Biometric
            .accepted_tokens()
            .intersects(kind.accepted_tokens()));
    }

    #[test]
    fn token_kinds_meet_their_own_requirement() {
        for token in Token::ALL {
            assert!(token.kind().accepted_tokens().contains(token), "{token:?}");
        }
    }
}
