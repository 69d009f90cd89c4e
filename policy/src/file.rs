//! The policy file as a security officer writes it (TOML).
//!
//! These types only mirror the text: every field is checked, resolved and
//! turned into a [`crate::Policy`] by [`crate::validate`]. Factor names stay
//! strings here so that a wrong one is reported beside every other violation
//! instead of stopping the parse. `docs/POLICY.md` documents each field.

use crate::purpose::Purpose;
use crate::time::Seconds;
use serde::Deserialize;
use std::collections::BTreeMap;

/// The largest policy file accepted, in bytes.
pub const MAX_POLICY_BYTES: usize = 1024 * 1024;

/// A whole policy file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyFile {
    /// Officer-maintained version number; raise it with every change.
    pub version: u64,
    /// The site or policy name.
    pub name: String,
    /// Free text.
    #[serde(default)]
    pub description: String,
    /// The roles rules may name.
    pub roles: Vec<String>,
    /// The workstation groups rules may name, each with a description.
    #[serde(default)]
    pub groups: BTreeMap<String, GroupFile>,
    /// Settings that apply to every rule that does not set its own.
    #[serde(default)]
    pub defaults: SettingsFile,
    /// The rules, in the order used to pick among several that apply.
    #[serde(default, rename = "rule")]
    pub rules: Vec<RuleFile>,
    /// How FIDO2 authenticators are handled, whatever the rule.
    #[serde(default)]
    pub fido2: Fido2File,
    /// Records entered by proxy (R-AUTH-5, R-REC-1).
    #[serde(default)]
    pub records: RecordsFile,
}

/// `[records]`: records entered by one person on behalf of another.
///
/// There is deliberately no setting that confirms a record by itself (after
/// a time, say): a record stays pending until its confirmer decides (R-REC-1).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecordsFile {
    /// Whether the person who entered a record may also confirm it:
    /// `refuse` (the default; the confirmer must be someone else) or
    /// `allow`.
    pub self_confirmation: Option<String>,
}

/// `[fido2]`: FIDO2 settings that apply to every rule.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fido2File {
    /// What happens when an authenticator's signature counter goes
    /// backwards (a cloned key, R-DEV-1): `refuse` (the default) refuses the
    /// assertion; `suspend` also suspends the key until an officer
    /// re-enables it.
    pub counter_regression: Option<String>,
}

/// A workstation group.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupFile {
    /// Where the workstations are, what they are for.
    #[serde(default)]
    pub description: String,
}

/// One rule: who, where, for what, with which factors, under which limits.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleFile {
    /// A unique name, recorded with every decision the rule makes.
    pub name: String,
    /// Free text.
    #[serde(default)]
    pub description: String,
    /// The purposes the rule decides.
    pub purposes: Vec<Purpose>,
    /// The roles it applies to.
    pub roles: Vec<String>,
    /// The workstation groups it applies to.
    pub groups: Vec<String>,
    /// The allowed factor combinations: each is a list of factor names.
    pub allow: Vec<Vec<String>>,
    /// HPKI qualifications (ISO 17090 hcRole) the smartcard certificate must carry.
    #[serde(default)]
    pub qualifications: Vec<String>,
    /// FIDO2 authenticator models (AAGUIDs) accepted; empty accepts any registered key.
    #[serde(default)]
    pub fido2_aaguids: Vec<String>,
    /// Flag every decision of this rule for review by an officer.
    #[serde(default)]
    pub review: bool,
    // The settings below are those of `SettingsFile`, listed again because
    // serde cannot combine `flatten` with `deny_unknown_fields`. Unset fields
    // come from `[defaults]`.
    /// How the user is identified before the factors are checked.
    pub identify_by: Option<Vec<String>>,
    /// The oldest a factor's verification may be when the decision is made.
    pub max_factor_age: Option<Seconds>,
    /// Session limits.
    pub session: Option<SessionFile>,
    /// Offline use.
    pub offline: Option<OfflineFile>,
    /// Failure limits.
    pub failures: Option<FailuresFile>,
}

impl RuleFile {
    /// This rule's own settings.
    pub fn settings(&self) -> SettingsFile {
        SettingsFile {
            identify_by: self.identify_by.clone(),
            max_factor_age: self.max_factor_age,
            session: self.session.clone(),
            offline: self.offline.clone(),
            failures: self.failures.clone(),
        }
    }
}

/// Settings a rule may set and `[defaults]` may give for all rules.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SettingsFile {
    /// How the user is identified before the factors are checked.
    pub identify_by: Option<Vec<String>>,
    /// The oldest a factor's verification may be when the decision is made.
    pub max_factor_age: Option<Seconds>,
    /// Session limits.
    pub session: Option<SessionFile>,
    /// Offline use.
    pub offline: Option<OfflineFile>,
    /// Failure limits.
    pub failures: Option<FailuresFile>,
}

/// `[rule.session]` and `[defaults.session]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionFile {
    /// Lock the screen after this long without input.
    pub idle_lock: Option<Seconds>,
    /// End the session after this long, however active.
    pub max_length: Option<Seconds>,
}

/// `[rule.offline]` and `[defaults.offline]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OfflineFile {
    /// Whether the agent may decide with cached verifiers when the server is unreachable.
    pub allowed: Option<bool>,
    /// How long after the user's last online login the cached verifiers stay usable.
    pub max_age: Option<Seconds>,
}

/// `[rule.failures]` and `[defaults.failures]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FailuresFile {
    /// Consecutive failures before the account is locked until an officer unlocks it.
    pub max_consecutive: Option<u32>,
    /// The first delay after a failure; it doubles with each further failure.
    pub backoff_base: Option<Seconds>,
    /// The longest delay between attempts.
    pub backoff_max: Option<Seconds>,
    /// Consecutive biometric failures before another factor is required.
    pub biometric_max: Option<u32>,
    /// The readers have presentation attack detection (allows up to 10 biometric failures).
    pub presentation_attack_detection: Option<bool>,
}
