//! A validated policy: only [`crate::validate`] makes one, so holding a
//! `Policy` means every rule in it meets R-AUTH-1..4 and R-BIO-1..2.
//!
//! Names are resolved to bit sets here so that deciding a login tests bits
//! instead of comparing strings.

use crate::factor::{FactorKind, TokenSet};
use crate::purpose::Purpose;
use crate::time::Seconds;
use std::fmt;

/// The most roles a policy may declare (a role set is one `u128`).
pub const MAX_ROLES: usize = 128;
/// The most workstation groups a policy may declare.
pub const MAX_GROUPS: usize = 256;
/// The most rules in one policy.
pub const MAX_RULES: usize = 1000;
/// The most combinations in one rule.
pub const MAX_COMBINATIONS: usize = 32;
/// The most factors in one combination.
pub const MAX_FACTORS: usize = 8;

/// A validated policy.
#[derive(Debug, Clone)]
pub struct Policy {
    pub(crate) version: u64,
    pub(crate) name: String,
    pub(crate) description: String,
    pub(crate) digest: PolicyDigest,
    pub(crate) roles: Vec<String>,
    pub(crate) groups: Vec<Group>,
    pub(crate) rules: Vec<Rule>,
    pub(crate) counter_regression: CounterRegression,
    pub(crate) self_confirmation: SelfConfirmation,
}

impl Policy {
    /// The officer's version number.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// The policy's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The policy's description.
    pub fn description(&self) -> &str {
        &self.description
    }

    /// The canonical digest, recorded with every decision.
    pub fn digest(&self) -> &PolicyDigest {
        &self.digest
    }

    /// The declared roles.
    pub fn roles(&self) -> &[String] {
        &self.roles
    }

    /// The declared workstation groups.
    pub fn groups(&self) -> &[Group] {
        &self.groups
    }

    /// The rules in file order.
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// What happens when a FIDO2 key's signature counter goes backwards.
    pub fn counter_regression(&self) -> CounterRegression {
        self.counter_regression
    }

    /// Whether a record's inputter may confirm it (`[records]`).
    pub fn self_confirmation(&self) -> SelfConfirmation {
        self.self_confirmation
    }

    /// The set of a user's roles that the policy knows; unknown ones are left out.
    pub fn role_set<I, S>(&self, roles: I) -> RoleSet
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut set = RoleSet::EMPTY;
        for role in roles {
            if let Some(i) = self.roles.iter().position(|r| r == role.as_ref()) {
                set.insert(i);
            }
        }
        set
    }

    /// The names of the roles in a set.
    pub fn role_names(&self, set: RoleSet) -> impl Iterator<Item = &str> {
        self.roles
            .iter()
            .enumerate()
            .filter(move |(i, _)| set.contains(*i))
            .map(|(_, r)| r.as_str())
    }

    /// A workstation group by name.
    pub fn group_id(&self, name: &str) -> Option<GroupId> {
        self.groups.iter().position(|g| g.name == name).map(GroupId)
    }

    /// The names of the groups in a set.
    pub fn group_names<'a>(&'a self, set: &'a GroupSet) -> impl Iterator<Item = &'a str> + 'a {
        self.groups
            .iter()
            .enumerate()
            .filter(move |(i, _)| set.contains(GroupId(*i)))
            .map(|(_, g)| g.name.as_str())
    }
}

/// What the server does when a FIDO2 authenticator's signature counter
/// does not increase (a cloned key, or a replay; R-DEV-1). Either way the
/// assertion does not count and the event is audited.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum CounterRegression {
    /// Refuse the assertion; the key stays usable.
    #[default]
    Refuse,
    /// Refuse the assertion and suspend the key until an officer re-enables it.
    Suspend,
}

impl CounterRegression {
    /// Every setting.
    pub const ALL: [CounterRegression; 2] = [CounterRegression::Refuse, CounterRegression::Suspend];

    /// The name used in policy files.
    pub fn as_str(self) -> &'static str {
        match self {
            CounterRegression::Refuse => "refuse",
            CounterRegression::Suspend => "suspend",
        }
    }

    /// The setting a policy file names, if it is one.
    pub fn parse(text: &str) -> Option<CounterRegression> {
        CounterRegression::ALL
            .into_iter()
            .find(|c| c.as_str() == text)
    }
}

impl fmt::Display for CounterRegression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whether the person who entered a record by proxy may confirm it
/// (R-AUTH-5). Either way the record is confirmed only by a person who
/// authenticates to do so; nothing confirms it by itself (R-REC-1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum SelfConfirmation {
    /// The confirmer must be someone other than the inputter.
    #[default]
    Refuse,
    /// The inputter may confirm their own record.
    Allow,
}

impl SelfConfirmation {
    /// Every setting.
    pub const ALL: [SelfConfirmation; 2] = [SelfConfirmation::Refuse, SelfConfirmation::Allow];

    /// The name used in policy files.
    pub fn as_str(self) -> &'static str {
        match self {
            SelfConfirmation::Refuse => "refuse",
            SelfConfirmation::Allow => "allow",
        }
    }

    /// The setting a policy file names, if it is one.
    pub fn parse(text: &str) -> Option<SelfConfirmation> {
        SelfConfirmation::ALL
            .into_iter()
            .find(|c| c.as_str() == text)
    }
}

/// A workstation group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    /// Its name.
    pub name: String,
    /// Its description.
    pub description: String,
}

/// One rule of a validated policy.
#[derive(Debug, Clone)]
pub struct Rule {
    /// The rule's unique name.
    pub name: String,
    /// Free text.
    pub description: String,
    /// The purposes it decides.
    pub purposes: PurposeSet,
    /// The roles it applies to.
    pub roles: RoleSet,
    /// The groups it applies to.
    pub groups: GroupSet,
    /// The allowed combinations, each meeting R-AUTH-1..4 and R-BIO-1..2.
    pub combinations: Vec<Combination>,
    /// How the user may be identified (never by a biometric search, R-BIO-2).
    pub identify_by: Vec<IdentifyBy>,
    /// HPKI qualifications required of the smartcard certificate; empty requires none.
    pub qualifications: Vec<String>,
    /// FIDO2 models accepted; empty accepts any registered key.
    pub fido2_aaguids: Vec<Aaguid>,
    /// Decisions are flagged for review.
    pub review: bool,
    /// The oldest a factor's verification may be.
    pub max_factor_age: Seconds,
    /// Session limits.
    pub session: SessionLimits,
    /// Offline use; `None` when not allowed.
    pub offline: Option<OfflineLimits>,
    /// Failure limits.
    pub failures: FailureLimits,
}

/// An allowed combination: every factor in it must be proven.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Combination {
    pub(crate) factors: Vec<FactorKind>,
}

impl Combination {
    /// The factor kinds, sorted.
    pub fn factors(&self) -> &[FactorKind] {
        &self.factors
    }

    /// Whether the proven tokens meet every factor.
    pub fn is_met_by(&self, proven: TokenSet) -> bool {
        self.factors
            .iter()
            .all(|k| k.accepted_tokens().intersects(proven))
    }

    /// The factors the proven tokens do not meet.
    pub fn missing(&self, proven: TokenSet) -> impl Iterator<Item = FactorKind> + '_ {
        self.factors
            .iter()
            .copied()
            .filter(move |k| !k.accepted_tokens().intersects(proven))
    }

    /// All tokens any factor of the combination accepts.
    pub fn accepted_tokens(&self) -> TokenSet {
        self.factors
            .iter()
            .fold(TokenSet::EMPTY, |acc, k| acc.union(k.accepted_tokens()))
    }
}

impl fmt::Display for Combination {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.factors.iter().map(|k| k.name()).collect();
        write!(f, "{}", names.join(" + "))
    }
}

/// How a user is identified before the factors are checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum IdentifyBy {
    /// The user types a user name (or the login screen gives it).
    UserName,
    /// The user's smartcard certificate names the user.
    Card,
    /// The badge UID is looked up.
    Badge,
    /// A discoverable FIDO2 credential names the user.
    Fido2,
}

impl IdentifyBy {
    /// Every method.
    pub const ALL: [IdentifyBy; 4] = [
        IdentifyBy::UserName,
        IdentifyBy::Card,
        IdentifyBy::Badge,
        IdentifyBy::Fido2,
    ];

    /// The name used in policy files.
    pub fn name(self) -> &'static str {
        match self {
            IdentifyBy::UserName => "user_name",
            IdentifyBy::Card => "card",
            IdentifyBy::Badge => "badge",
            IdentifyBy::Fido2 => "fido2",
        }
    }
}

/// A FIDO2 authenticator model identifier.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Aaguid(pub [u8; 16]);

impl Aaguid {
    /// Parses the usual `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx` form.
    pub fn parse(s: &str) -> Option<Aaguid> {
        if s.len() != 36 {
            return None;
        }
        let hex: Vec<u8> = s.bytes().filter(|b| *b != b'-').collect();
        let dashes_ok = s
            .bytes()
            .enumerate()
            .all(|(i, b)| (b == b'-') == matches!(i, 8 | 13 | 18 | 23));
        if hex.len() != 32 || !dashes_ok {
            return None;
        }
        let mut out = [0u8; 16];
        for (byte, pair) in out.iter_mut().zip(hex.chunks_exact(2)) {
            let text = std::str::from_utf8(pair).ok()?;
            *byte = u8::from_str_radix(text, 16).ok()?;
        }
        Some(Aaguid(out))
    }
}

impl fmt::Display for Aaguid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, b) in self.0.iter().enumerate() {
            if matches!(i, 4 | 6 | 8 | 10) {
                f.write_str("-")?;
            }
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

/// Session limits of a rule (R-SESS-1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionLimits {
    /// Lock after this long without input.
    pub idle_lock: Seconds,
    /// End the session after this long.
    pub max_length: Seconds,
}

/// Offline use of a rule (R-OFF-1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OfflineLimits {
    /// How long after the last online login cached verifiers stay usable.
    pub max_age: Seconds,
}

/// Failure limits of a rule (R-RATE-1, R-BIO-4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FailureLimits {
    /// Consecutive failures before lockout (at most 100).
    pub max_consecutive: u32,
    /// First delay after a failure; doubles with each further one.
    pub backoff_base: Seconds,
    /// Longest delay.
    pub backoff_max: Seconds,
    /// Consecutive biometric failures before another factor is needed.
    pub biometric_max: u32,
    /// Readers have presentation attack detection.
    pub presentation_attack_detection: bool,
}

impl FailureLimits {
    /// The delay to impose after `failures` consecutive failures (exponential
    /// backoff, capped); zero before the first failure.
    pub fn backoff_after(&self, failures: u32) -> Seconds {
        if failures == 0 {
            return Seconds(0);
        }
        let doublings = failures.saturating_sub(1).min(31);
        let delay = u64::from(self.backoff_base.0) << doublings;
        Seconds(delay.min(u64::from(self.backoff_max.0)) as u32)
    }
}

/// A set of purposes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PurposeSet(u8);

impl PurposeSet {
    /// Adds a purpose.
    pub fn insert(&mut self, p: Purpose) {
        self.0 |= 1 << p.index();
    }

    /// Whether the set holds the purpose.
    pub fn contains(self, p: Purpose) -> bool {
        self.0 & (1 << p.index()) != 0
    }

    /// Whether the sets share a purpose.
    pub fn intersects(self, other: PurposeSet) -> bool {
        self.0 & other.0 != 0
    }

    /// The purposes, in a fixed order.
    pub fn iter(self) -> impl Iterator<Item = Purpose> {
        Purpose::ALL.into_iter().filter(move |p| self.contains(*p))
    }
}

/// A set of roles, by their index in the policy's declared roles.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RoleSet(u128);

impl RoleSet {
    /// No roles.
    pub const EMPTY: RoleSet = RoleSet(0);

    pub(crate) fn insert(&mut self, index: usize) {
        if index < MAX_ROLES {
            self.0 |= 1u128 << index;
        }
    }

    pub(crate) fn contains(self, index: usize) -> bool {
        index < MAX_ROLES && self.0 & (1u128 << index) != 0
    }

    /// Whether the sets share a role.
    pub fn intersects(self, other: RoleSet) -> bool {
        self.0 & other.0 != 0
    }

    /// Whether the set is empty.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    pub(crate) fn first_common(self, other: RoleSet) -> Option<usize> {
        let both = self.0 & other.0;
        (both != 0).then(|| both.trailing_zeros() as usize)
    }
}

/// A workstation group, by its index in the policy's declared groups.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct GroupId(pub(crate) usize);

/// A set of workstation groups.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct GroupSet([u64; MAX_GROUPS / 64]);

impl GroupSet {
    pub(crate) fn insert(&mut self, id: GroupId) {
        if let Some(word) = self.0.get_mut(id.0 / 64) {
            *word |= 1 << (id.0 % 64);
        }
    }

    /// Whether the set holds the group.
    pub fn contains(&self, id: GroupId) -> bool {
        self.0
            .get(id.0 / 64)
            .is_some_and(|word| word & (1 << (id.0 % 64)) != 0)
    }

    pub(crate) fn first_common(&self, other: &GroupSet) -> Option<GroupId> {
        self.0
            .iter()
            .zip(other.0.iter())
            .enumerate()
            .find_map(|(i, (a, b))| {
                let both = a & b;
                (both != 0).then(|| GroupId(i * 64 + both.trailing_zeros() as usize))
            })
    }
}

/// The SHA-256 digest of a policy's canonical form, shown as `sha256:<hex>`.
///
/// Comments, whitespace, key order and the order of names inside a list do
/// not change it; anything that changes a decision does.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct PolicyDigest(pub(crate) [u8; 32]);

impl PolicyDigest {
    /// The raw digest bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Display for PolicyDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut text = [0u8; 64];
        hex::encode_to_slice(self.0, &mut text).map_err(|_| fmt::Error)?;
        f.write_str("sha256:")?;
        // hex digits are ASCII.
        f.write_str(std::str::from_utf8(&text).map_err(|_| fmt::Error)?)
    }
}

impl fmt::Debug for PolicyDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aaguid_round_trips_and_refuses_malformed() {
        let text = "cb69481e-8ff7-4039-93ec-0a2729a154a8";
        let parsed = Aaguid::parse(text).unwrap();
        assert_eq!(parsed.to_string(), text);
        for bad in [
            "",
            "cb69481e8ff7403993ec0a2729a154a8",
            "cb69481e-8ff7-4039-93ec-0a2729a154aZ",
            "cb69481e-8ff7-4039-93ec0-a2729a154a8",
            "cb69481e-8ff7-4039-93ec-0a2729a154a8-",
            "ｃb69481e-8ff7-4039-93ec-0a2729a154a",
        ] {
            assert!(Aaguid::parse(bad).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn r_rate_1_backoff_doubles_and_is_capped() {
        let limits = FailureLimits {
            max_consecutive: 10,
            backoff_base: Seconds(1),
            backoff_max: Seconds(60),
            biometric_max: 5,
            presentation_attack_detection: false,
        };
        let delays: Vec<u32> = (0..9).map(|n| limits.backoff_after(n).0).collect();
        assert_eq!(delays, vec![0, 1, 2, 4, 8, 16, 32, 60, 60]);
        assert_eq!(limits.backoff_after(u32::MAX), Seconds(60));
    }

    #[test]
    fn group_sets_reach_the_last_group() {
        let mut set = GroupSet::default();
        set.insert(GroupId(MAX_GROUPS - 1));
        assert!(set.contains(GroupId(MAX_GROUPS - 1)));
        assert!(!set.contains(GroupId(0)));
        set.insert(GroupId(MAX_GROUPS)); // ignored, out of range
        assert!(!set.contains(GroupId(MAX_GROUPS)));
    }
}
