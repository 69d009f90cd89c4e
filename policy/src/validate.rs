//! Turns a [`PolicyFile`] into a [`Policy`], or lists every violation.
//!
//! Each combination is checked against R-AUTH-1..4 and R-BIO-1..2; settings
//! against their ranges (R-SESS-1, R-OFF-1, R-RATE-1, R-BIO-4); rules against
//! R-EMERG-1 and R-SIG-1; and the whole against references to undeclared
//! names and rules that overlap.

use crate::factor::{BiometricProtection, CategorySet, FactorKind, PublicIdentifier};
use crate::file::{PolicyFile, RuleFile, SettingsFile, MAX_POLICY_BYTES};
use crate::policy::{
    Aaguid, Combination, CounterRegression, FailureLimits, Group, GroupId, GroupSet, IdentifyBy,
    OfflineLimits, Policy, PolicyDigest, PurposeSet, RoleSet, Rule, SelfConfirmation,
    SessionLimits, MAX_COMBINATIONS, MAX_FACTORS, MAX_GROUPS, MAX_ROLES, MAX_RULES,
};
use crate::purpose::Purpose;
use crate::time::Seconds;
use crate::violation::{Code, Violation};
use serde_json::{json, Value};
use std::collections::BTreeSet;

/// The longest role, group or rule name.
pub const MAX_NAME_LEN: usize = 64;
/// The longest description or qualification.
pub const MAX_TEXT_LEN: usize = 4096;

/// Built-in settings for what neither a rule nor `[defaults]` sets.
pub mod builtin {
    use crate::time::Seconds;

    /// How old a factor's verification may be.
    pub const MAX_FACTOR_AGE: Seconds = Seconds::minutes(5);
    /// Idle lock.
    pub const IDLE_LOCK: Seconds = Seconds::minutes(5);
    /// Session length.
    pub const MAX_SESSION: Seconds = Seconds::hours(12);
    /// Offline use, when allowed without a `max_age`.
    pub const OFFLINE_MAX_AGE: Seconds = Seconds::hours(24);
    /// Consecutive failures before lockout.
    pub const MAX_CONSECUTIVE: u32 = 10;
    /// First backoff delay.
    pub const BACKOFF_BASE: Seconds = Seconds(1);
    /// Longest backoff delay.
    pub const BACKOFF_MAX: Seconds = Seconds::minutes(15);
    /// Biometric failures before another factor is needed.
    pub const BIOMETRIC_MAX: u32 = 5;
}

/// Allowed ranges (inclusive), each with the code a value beyond it breaks.
mod range {
    use crate::time::Seconds;
    pub const MAX_FACTOR_AGE: (Seconds, Seconds) = (Seconds(10), Seconds::hours(1));
    pub const IDLE_LOCK: (Seconds, Seconds) = (Seconds(10), Seconds::minutes(30));
    pub const MAX_SESSION: (Seconds, Seconds) = (Seconds::minutes(5), Seconds::hours(24));
    pub const OFFLINE_MAX_AGE: (Seconds, Seconds) = (Seconds::hours(1), Seconds::days(14));
    pub const BACKOFF_BASE: (Seconds, Seconds) = (Seconds(1), Seconds::minutes(5));
    pub const BACKOFF_MAX: Seconds = Seconds::hours(24);
    /// NIST SP 800-63B: at most 100 consecutive failures.
    pub const MAX_CONSECUTIVE: u32 = 100;
    /// NIST SP 800-63B-4: 5 biometric failures, 10 with presentation attack detection.
    pub const BIOMETRIC_MAX: u32 = 5;
    pub const BIOMETRIC_MAX_PAD: u32 = 10;
}

/// Why a policy text was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    /// The text is larger than [`MAX_POLICY_BYTES`].
    #[error("policy file is {len} bytes; the limit is {MAX_POLICY_BYTES}")]
    TooLarge {
        /// Its length.
        len: usize,
    },
    /// The text is not a policy file (TOML syntax, an unknown field, a wrong type).
    #[error("policy file does not parse: {0}")]
    Parse(String),
    /// The file parses but breaks requirements; every violation is listed.
    #[error("policy refused with {} violation(s)", .0.len())]
    Invalid(Vec<Violation>),
}

impl Policy {
    /// Parses and validates a policy file's text.
    pub fn from_toml(text: &str) -> Result<Policy, PolicyError> {
        if text.len() > MAX_POLICY_BYTES {
            return Err(PolicyError::TooLarge { len: text.len() });
        }
        let file: PolicyFile =
            toml::from_str(text).map_err(|e| PolicyError::Parse(e.to_string()))?;
        validate(&file).map_err(PolicyError::Invalid)
    }
}

/// Validates a parsed policy file.
pub fn validate(file: &PolicyFile) -> Result<Policy, Vec<Violation>> {
    let mut v = Vec::new();

    if file.version == 0 {
        v.push(Violation::new(
            Code::Range,
            "version must be 1 or more",
            "version は1以上にしてください",
        ));
    }
    check_name(&mut v, "policy name", &file.name, None);
    check_text(&mut v, "description", &file.description, None);

    let roles = declared_roles(&mut v, &file.roles);
    let groups = declared_groups(&mut v, file);

    let defaults_checked = resolve_settings(&SettingsFile::default(), &file.defaults);
    let defaults_errors: Vec<(Code, String)> = defaults_checked
        .violations
        .iter()
        .map(|x| (x.code, x.en.clone()))
        .collect();
    for violation in defaults_checked.violations {
        v.push(violation.in_rule("[defaults]"));
    }

    if file.rules.is_empty() {
        v.push(Violation::new(
            Code::Range,
            "the policy has no rule, so it would allow nothing",
            "ルールがありません。何も許可されません",
        ));
    }
    if file.rules.len() > MAX_RULES {
        v.push(Violation::new(
            Code::Limit,
            format!("{} rules; the limit is {MAX_RULES}", file.rules.len()),
            format!(
                "ルールが{}件あります。上限は{MAX_RULES}件です",
                file.rules.len()
            ),
        ));
    }

    let mut rules = Vec::with_capacity(file.rules.len().min(MAX_RULES));
    let mut seen_names = BTreeSet::new();
    for rule_file in file.rules.iter().take(MAX_RULES) {
        if !seen_names.insert(rule_file.name.as_str()) {
            v.push(
                Violation::new(
                    Code::Duplicate,
                    "another rule has the same name",
                    "同じ名前のルールが他にあります",
                )
                .in_rule(&rule_file.name),
            );
        }
        let (rule, mut rule_violations) = check_rule(rule_file, &file.defaults, &roles, &groups);
        // A bad default shows once, under [defaults], not again in every rule.
        rule_violations.retain(|x| !defaults_errors.contains(&(x.code, x.en.clone())));
        v.extend(rule_violations);
        rules.push(rule);
    }

    check_overlaps(&mut v, &rules, &roles, &groups);

    let counter_regression = match file.fido2.counter_regression.as_deref() {
        None => CounterRegression::default(),
        Some(text) => CounterRegression::parse(text).unwrap_or_else(|| {
            v.push(
                Violation::new(
                    Code::UnknownName,
                    format!(
                        "fido2.counter_regression: unknown setting {:?} (known: refuse, suspend)",
                        truncate(text)
                    ),
                    format!(
                        "fido2.counter_regression: 不明な設定 {:?}(使用可能: refuse, suspend)",
                        truncate(text)
                    ),
                )
                .in_rule("[fido2]"),
            );
            CounterRegression::default()
        }),
    };

    let self_confirmation = match file.records.self_confirmation.as_deref() {
        None => SelfConfirmation::default(),
        Some(text) => SelfConfirmation::parse(text).unwrap_or_else(|| {
            v.push(
                Violation::new(
                    Code::UnknownName,
                    format!(
                        "records.self_confirmation: unknown setting {:?} (known: refuse, allow)",
                        truncate(text)
                    ),
                    format!(
                        "records.self_confirmation: 不明な設定 {:?}(使用可能: refuse, allow)",
                        truncate(text)
                    ),
                )
                .in_rule("[records]"),
            );
            SelfConfirmation::default()
        }),
    };

    if !v.is_empty() {
        return Err(v);
    }
    let group_list: Vec<Group> = groups
        .iter()
        .map(|name| Group {
            name: name.clone(),
            description: file
                .groups
                .get(name)
                .map(|g| g.description.clone())
                .unwrap_or_default(),
        })
        .collect();
    let mut policy = Policy {
        version: file.version,
        name: file.name.clone(),
        description: file.description.clone(),
        digest: PolicyDigest([0; 32]),
        roles,
        groups: group_list,
        rules,
        counter_regression,
        self_confirmation,
    };
    policy.digest = digest(&policy);
    Ok(policy)
}

fn declared_roles(v: &mut Vec<Violation>, names: &[String]) -> Vec<String> {
    if names.is_empty() {
        v.push(Violation::new(
            Code::Range,
            "roles is empty: declare the roles rules may name",
            "roles が空です。ルールで使う役割を宣言してください",
        ));
    }
    if names.len() > MAX_ROLES {
        v.push(Violation::new(
            Code::Limit,
            format!("{} roles; the limit is {MAX_ROLES}", names.len()),
            format!("役割が{}件あります。上限は{MAX_ROLES}件です", names.len()),
        ));
    }
    let mut out: Vec<String> = Vec::new();
    for name in names.iter().take(MAX_ROLES) {
        check_name(v, "role", name, None);
        if out.contains(name) {
            v.push(Violation::new(
                Code::Duplicate,
                format!("role {name:?} is declared twice"),
                format!("役割 {name:?} が二重に宣言されています"),
            ));
        } else {
            out.push(name.clone());
        }
    }
    out
}

fn declared_groups(v: &mut Vec<Violation>, file: &PolicyFile) -> Vec<String> {
    if file.groups.is_empty() {
        v.push(Violation::new(
            Code::Range,
            "no workstation group is declared ([groups.<name>])",
            "端末グループが宣言されていません([groups.<名前>])",
        ));
    }
    if file.groups.len() > MAX_GROUPS {
        v.push(Violation::new(
            Code::Limit,
            format!("{} groups; the limit is {MAX_GROUPS}", file.groups.len()),
            format!(
                "端末グループが{}件あります。上限は{MAX_GROUPS}件です",
                file.groups.len()
            ),
        ));
    }
    let mut out = Vec::new();
    for (name, group) in file.groups.iter().take(MAX_GROUPS) {
        check_name(v, "group", name, None);
        check_text(v, "group description", &group.description, None);
        out.push(name.clone());
    }
    out
}

fn check_name(v: &mut Vec<Violation>, what: &str, name: &str, rule: Option<&str>) {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
    if !ok {
        let shown: String = name.chars().take(MAX_NAME_LEN).collect();
        let x = Violation::new(
            Code::Limit,
            format!(
                "{what} {shown:?} must be 1 to {MAX_NAME_LEN} letters, digits, '_', '-' or '.'"
            ),
            format!(
                "{what} {shown:?} は1〜{MAX_NAME_LEN}文字の英数字・'_'・'-'・'.'で書いてください"
            ),
        );
        v.push(match rule {
            Some(r) => x.in_rule(r),
            None => x,
        });
    }
}

fn check_text(v: &mut Vec<Violation>, what: &str, text: &str, rule: Option<&str>) {
    if text.len() > MAX_TEXT_LEN {
        let x = Violation::new(
            Code::Limit,
            format!(
                "{what} is {} bytes; the limit is {MAX_TEXT_LEN}",
                text.len()
            ),
            format!(
                "{what} が{}バイトあります。上限は{MAX_TEXT_LEN}バイトです",
                text.len()
            ),
        );
        v.push(match rule {
            Some(r) => x.in_rule(r),
            None => x,
        });
    }
}

/// Settings after merging rule, defaults and built-ins, with what is wrong with them.
struct Resolved {
    identify_by: Vec<IdentifyBy>,
    max_factor_age: Seconds,
    session: SessionLimits,
    offline: Option<OfflineLimits>,
    failures: FailureLimits,
    violations: Vec<Violation>,
}

fn resolve_settings(own: &SettingsFile, defaults: &SettingsFile) -> Resolved {
    let mut v = Vec::new();
    let session_of = |s: &SettingsFile| s.session.clone().unwrap_or_default();
    let offline_of = |s: &SettingsFile| s.offline.clone().unwrap_or_default();
    let failures_of = |s: &SettingsFile| s.failures.clone().unwrap_or_default();
    let (os, ds) = (session_of(own), session_of(defaults));
    let (oo, d_o) = (offline_of(own), offline_of(defaults));
    let (of, df) = (failures_of(own), failures_of(defaults));

    let max_factor_age = own
        .max_factor_age
        .or(defaults.max_factor_age)
        .unwrap_or(builtin::MAX_FACTOR_AGE);
    in_range(
        &mut v,
        "max_factor_age",
        max_factor_age,
        range::MAX_FACTOR_AGE,
        Code::Range,
    );

    let session = SessionLimits {
        idle_lock: os.idle_lock.or(ds.idle_lock).unwrap_or(builtin::IDLE_LOCK),
        max_length: os
            .max_length
            .or(ds.max_length)
            .unwrap_or(builtin::MAX_SESSION),
    };
    in_range(
        &mut v,
        "session.idle_lock",
        session.idle_lock,
        range::IDLE_LOCK,
        Code::RSess1,
    );
    in_range(
        &mut v,
        "session.max_length",
        session.max_length,
        range::MAX_SESSION,
        Code::RSess1,
    );
    if session.idle_lock > session.max_length {
        v.push(Violation::new(
            Code::Range,
            format!(
                "session.idle_lock ({}) is longer than session.max_length ({})",
                session.idle_lock, session.max_length
            ),
            format!(
                "session.idle_lock({})が session.max_length({})より長くなっています",
                session.idle_lock, session.max_length
            ),
        ));
    }

    let offline = if oo.allowed.or(d_o.allowed).unwrap_or(false) {
        let max_age = oo
            .max_age
            .or(d_o.max_age)
            .unwrap_or(builtin::OFFLINE_MAX_AGE);
        in_range(
            &mut v,
            "offline.max_age",
            max_age,
            range::OFFLINE_MAX_AGE,
            Code::ROff1,
        );
        Some(OfflineLimits { max_age })
    } else {
        None
    };

    let failures = FailureLimits {
        max_consecutive: of
            .max_consecutive
            .or(df.max_consecutive)
            .unwrap_or(builtin::MAX_CONSECUTIVE),
        backoff_base: of
            .backoff_base
            .or(df.backoff_base)
            .unwrap_or(builtin::BACKOFF_BASE),
        backoff_max: of
            .backoff_max
            .or(df.backoff_max)
            .unwrap_or(builtin::BACKOFF_MAX),
        biometric_max: of
            .biometric_max
            .or(df.biometric_max)
            .unwrap_or(builtin::BIOMETRIC_MAX),
        presentation_attack_detection: of
            .presentation_attack_detection
            .or(df.presentation_attack_detection)
            .unwrap_or(false),
    };
    if failures.max_consecutive == 0 || failures.max_consecutive > range::MAX_CONSECUTIVE {
        v.push(Violation::new(
            Code::RRate1,
            format!(
                "failures.max_consecutive is {}; it must be 1 to {} (NIST SP 800-63B)",
                failures.max_consecutive,
                range::MAX_CONSECUTIVE
            ),
            format!(
                "failures.max_consecutive が{}です。1〜{}にしてください",
                failures.max_consecutive,
                range::MAX_CONSECUTIVE
            ),
        ));
    }
    in_range(
        &mut v,
        "failures.backoff_base",
        failures.backoff_base,
        range::BACKOFF_BASE,
        Code::RRate1,
    );
    in_range(
        &mut v,
        "failures.backoff_max",
        failures.backoff_max,
        (failures.backoff_base, range::BACKOFF_MAX),
        Code::RRate1,
    );
    let bio_limit = if failures.presentation_attack_detection {
        range::BIOMETRIC_MAX_PAD
    } else {
        range::BIOMETRIC_MAX
    };
    if failures.biometric_max == 0 || failures.biometric_max > bio_limit {
        v.push(Violation::new(
            Code::RBio4,
            format!(
                "failures.biometric_max is {}; it must be 1 to {bio_limit} ({})",
                failures.biometric_max,
                if failures.presentation_attack_detection {
                    "10 with presentation attack detection"
                } else {
                    "5 without presentation attack detection"
                }
            ),
            format!(
                "failures.biometric_max が{}です。1〜{bio_limit}にしてください(偽造検知あり10回、なし5回まで)",
                failures.biometric_max
            ),
        ));
    }

    let identify_by = match own.identify_by.as_ref().or(defaults.identify_by.as_ref()) {
        Some(names) => parse_identify_by(&mut v, names),
        None => IdentifyBy::ALL.to_vec(),
    };

    Resolved {
        identify_by,
        max_factor_age,
        session,
        offline,
        failures,
        violations: v,
    }
}

fn in_range(
    v: &mut Vec<Violation>,
    what: &str,
    value: Seconds,
    (lo, hi): (Seconds, Seconds),
    over: Code,
) {
    if value < lo || value > hi {
        // Too long breaks the requirement the limit serves; too short is only nonsense.
        let code = if value > hi { over } else { Code::Range };
        v.push(Violation::new(
            code,
            format!("{what} is {value}; it must be from {lo} to {hi}"),
            format!("{what} が{value}です。{lo}〜{hi}の範囲にしてください"),
        ));
    }
}

fn parse_identify_by(v: &mut Vec<Violation>, names: &[String]) -> Vec<IdentifyBy> {
    if names.is_empty() {
        v.push(Violation::new(
            Code::Range,
            "identify_by is empty: users could not be identified",
            "identify_by が空です。利用者を特定できません",
        ));
    }
    let mut out = Vec::new();
    for name in names.iter().take(IdentifyBy::ALL.len() + 4) {
        if matches!(name.as_str(), "biometric" | "fingerprint" | "face") {
            v.push(Violation::new(
                Code::RBio2,
                "identifying the user by a biometric is a 1:N search; identify by user name, card, badge or FIDO2 and verify the biometric 1:1",
                "生体情報による利用者の特定は1:N照合です。利用者名・カード・職員証・FIDO2で特定し、生体は1:1で照合してください",
            ));
            continue;
        }
        match IdentifyBy::ALL.into_iter().find(|m| m.name() == name) {
            Some(m) if out.contains(&m) => v.push(Violation::new(
                Code::Duplicate,
                format!("identify_by lists {name:?} twice"),
                format!("identify_by に {name:?} が重複しています"),
            )),
            Some(m) => out.push(m),
            None => v.push(Violation::new(
                Code::UnknownName,
                format!(
                    "identify_by: unknown method {:?} (known: user_name, card, badge, fido2)",
                    truncate(name)
                ),
                format!(
                    "identify_by: 不明な方法 {:?}(使用可能: user_name, card, badge, fido2)",
                    truncate(name)
                ),
            )),
        }
    }
    out.sort();
    out
}

fn truncate(s: &str) -> String {
    s.chars().take(MAX_NAME_LEN).collect()
}

fn check_rule(
    file: &RuleFile,
    defaults: &SettingsFile,
    roles: &[String],
    groups: &[String],
) -> (Rule, Vec<Violation>) {
    let name = file.name.as_str();
    let mut v = Vec::new();
    check_name(&mut v, "rule name", name, Some(name));
    check_text(&mut v, "description", &file.description, Some(name));

    let mut purposes = PurposeSet::default();
    if file.purposes.is_empty() {
        v.push(Violation::new(Code::Range, "purposes is empty", "purposes が空です").in_rule(name));
    }
    for p in &file.purposes {
        if purposes.contains(*p) {
            v.push(
                Violation::new(
                    Code::Duplicate,
                    format!("purpose {p} is listed twice"),
                    format!("目的 {p} が重複しています"),
                )
                .in_rule(name),
            );
        }
        purposes.insert(*p);
    }
    if purposes.contains(Purpose::BreakGlass) {
        if file.purposes.iter().any(|p| *p != Purpose::BreakGlass) {
            v.push(
                Violation::new(
                    Code::REmerg1,
                    "break_glass must be a rule of its own, not mixed with other purposes",
                    "break_glass(緊急時アクセス)は他の目的と混在させず、独立したルールにしてください",
                )
                .in_rule(name),
            );
        }
        if !file.review {
            v.push(
                Violation::new(
                    Code::REmerg1,
                    "a break_glass rule must flag every use for review: set review = true",
                    "break_glass のルールは全ての利用を事後確認の対象にする必要があります。review = true を設定してください",
                )
                .in_rule(name),
            );
        }
    }

    let role_set = resolve_names(
        &mut v,
        name,
        "role",
        &file.roles,
        roles,
        |set: &mut RoleSet, i| set.insert(i),
    );
    let group_set = resolve_names(
        &mut v,
        name,
        "group",
        &file.groups,
        groups,
        |set: &mut GroupSet, i| set.insert(GroupId(i)),
    );

    let combinations = check_combinations(&mut v, name, &file.allow);

    let mut qualifications = Vec::new();
    for q in &file.qualifications {
        if q.trim().is_empty() || q.len() > 128 {
            v.push(
                Violation::new(
                    Code::Range,
                    "a qualification must be 1 to 128 bytes",
                    "資格名は1〜128バイトで書いてください",
                )
                .in_rule(name),
            );
        } else if !qualifications.contains(q) {
            qualifications.push(q.clone());
        }
    }
    qualifications.sort();
    if !qualifications.is_empty() {
        for c in &combinations {
            if !c
                .factors
                .iter()
                .any(|k| matches!(k, FactorKind::Smartcard | FactorKind::CardPin))
            {
                v.push(
                    Violation::new(
                        Code::RSig1,
                        format!(
                            "the rule requires a qualification ({}), which only an HPKI smartcard certificate carries, but {c} uses no smartcard",
                            qualifications.join(", ")
                        ),
                        format!(
                            "資格({})を要求していますが、資格はHPKIカードの証明書にのみ記載されます。{c} はICカードを使いません",
                            qualifications.join(", ")
                        ),
                    )
                    .in_rule(name),
                );
            }
        }
    }

    let mut fido2_aaguids = Vec::new();
    for text in &file.fido2_aaguids {
        match Aaguid::parse(text) {
            Some(a) if !fido2_aaguids.contains(&a) => fido2_aaguids.push(a),
            Some(_) => {}
            None => v.push(
                Violation::new(
                    Code::UnknownName,
                    format!("fido2_aaguids: {:?} is not an AAGUID (xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx)", truncate(text)),
                    format!("fido2_aaguids: {:?} はAAGUIDの形式ではありません", truncate(text)),
                )
                .in_rule(name),
            ),
        }
    }
    fido2_aaguids.sort_by_key(|a| a.0);
    if !fido2_aaguids.is_empty()
        && !combinations.iter().any(|c| {
            c.factors
                .iter()
                .any(|k| matches!(k, FactorKind::Fido2 | FactorKind::Fido2Uv))
        })
    {
        v.push(
            Violation::new(
                Code::Range,
                "fido2_aaguids is set but no combination of the rule uses FIDO2",
                "fido2_aaguids が設定されていますが、FIDO2を使う組合せがありません",
            )
            .in_rule(name),
        );
    }

    let resolved = resolve_settings(&file.settings(), defaults);
    v.extend(resolved.violations.into_iter().map(|x| x.in_rule(name)));

    let rule = Rule {
        name: file.name.clone(),
        description: file.description.clone(),
        purposes,
        roles: role_set,
        groups: group_set,
        combinations,
        identify_by: resolved.identify_by,
        qualifications,
        fido2_aaguids,
        review: file.review,
        max_factor_age: resolved.max_factor_age,
        session: resolved.session,
        offline: resolved.offline,
        failures: resolved.failures,
    };
    (rule, v)
}

fn resolve_names<S: Default>(
    v: &mut Vec<Violation>,
    rule: &str,
    what: &str,
    used: &[String],
    declared: &[String],
    mut insert: impl FnMut(&mut S, usize),
) -> S {
    let mut set = S::default();
    if used.is_empty() {
        v.push(
            Violation::new(
                Code::Range,
                format!("the rule names no {what}, so it applies to nobody"),
                format!("{what} が指定されていないため、このルールは誰にも適用されません"),
            )
            .in_rule(rule),
        );
    }
    let mut seen = BTreeSet::new();
    for name in used {
        if !seen.insert(name.as_str()) {
            v.push(
                Violation::new(
                    Code::Duplicate,
                    format!("{what} {:?} is listed twice", truncate(name)),
                    format!("{what} {:?} が重複しています", truncate(name)),
                )
                .in_rule(rule),
            );
        }
        match declared.iter().position(|d| d == name) {
            Some(i) => insert(&mut set, i),
            None => v.push(
                Violation::new(
                    Code::UnknownReference,
                    format!("{what} {:?} is not declared in the policy", truncate(name)),
                    format!("{what} {:?} はポリシーで宣言されていません", truncate(name)),
                )
                .in_rule(rule),
            ),
        }
    }
    set
}

fn check_combinations(
    v: &mut Vec<Violation>,
    rule: &str,
    allow: &[Vec<String>],
) -> Vec<Combination> {
    if allow.is_empty() {
        v.push(
            Violation::new(
                Code::Range,
                "allow is empty: the rule allows no combination",
                "allow が空です。許可される組合せがありません",
            )
            .in_rule(rule),
        );
    }
    if allow.len() > MAX_COMBINATIONS {
        v.push(
            Violation::new(
                Code::Limit,
                format!(
                    "{} combinations; the limit is {MAX_COMBINATIONS}",
                    allow.len()
                ),
                format!(
                    "組合せが{}件あります。上限は{MAX_COMBINATIONS}件です",
                    allow.len()
                ),
            )
            .in_rule(rule),
        );
    }
    let mut out: Vec<Combination> = Vec::new();
    for written in allow.iter().take(MAX_COMBINATIONS) {
        let shown: Vec<String> = written
            .iter()
            .take(MAX_FACTORS + 1)
            .map(|s| truncate(s))
            .collect();
        let (combination, problems) = check_combination(written);
        v.extend(
            problems
                .into_iter()
                .map(|x| x.in_rule(rule).in_combination(&shown)),
        );
        if let Some(c) = combination {
            if out.contains(&c) {
                v.push(
                    Violation::new(
                        Code::Duplicate,
                        "the same combination is listed twice",
                        "同じ組合せが重複しています",
                    )
                    .in_rule(rule)
                    .in_combination(&shown),
                );
            } else {
                out.push(c);
            }
        }
    }
    out
}

/// Checks one combination against R-AUTH-1..4 and R-BIO-1..2.
///
/// Returns the combination when its names all parse (it may still have
/// violations), and every violation, at most one per code.
fn check_combination(written: &[String]) -> (Option<Combination>, Vec<Violation>) {
    let mut v = Vec::new();
    if written.len() > MAX_FACTORS {
        v.push(Violation::new(
            Code::Limit,
            format!("{} factors; the limit is {MAX_FACTORS}", written.len()),
            format!(
                "要素が{}個あります。上限は{MAX_FACTORS}個です",
                written.len()
            ),
        ));
        return (None, v);
    }

    let mut kinds: Vec<FactorKind> = Vec::new();
    let mut identifiers: Vec<PublicIdentifier> = Vec::new();
    let mut repeated: Vec<FactorKind> = Vec::new();
    let mut all_parsed = true;
    for name in written {
        if let Some(kind) = FactorKind::from_name(name) {
            if kinds.contains(&kind) {
                repeated.push(kind);
            } else {
                kinds.push(kind);
            }
        } else if let Some(id) = PublicIdentifier::from_name(name) {
            identifiers.push(id);
        } else {
            all_parsed = false;
            let known: Vec<&str> = FactorKind::ALL.iter().map(|k| k.name()).collect();
            v.push(Violation::new(
                Code::UnknownName,
                format!(
                    "unknown factor {:?} (known: {})",
                    truncate(name),
                    known.join(", ")
                ),
                format!(
                    "不明な認証要素 {:?}(使用可能: {})",
                    truncate(name),
                    known.join(", ")
                ),
            ));
        }
    }
    kinds.sort();

    if let Some(id) = identifiers.first() {
        let (en, ja) = (id.label().en, id.label().ja);
        v.push(Violation::new(
            Code::RAuth2,
            format!("{en} is a public identifier: others know it, so it is never an authentication factor (\"ID + USB token\" is not two factors)"),
            format!("{ja}は公開された識別子であり、認証要素にはなりません(「ID+USBトークン」は二要素認証ではありません)"),
        ));
    }

    for (i, a) in kinds.iter().enumerate() {
        for b in kinds.iter().skip(i + 1) {
            if a.accepted_tokens().intersects(b.accepted_tokens()) {
                v.push(Violation::new(
                    Code::Duplicate,
                    format!("{a} and {b} can be met by the same evidence; list one of them"),
                    format!("{a} と {b} は同じ証跡で満たされます。どちらか一方にしてください"),
                ));
            }
        }
    }

    if kinds.contains(&FactorKind::BiometricWith(BiometricProtection::HostMatch)) {
        v.push(Violation::new(
            Code::RBio1,
            "host-matched biometrics send feature data to the workstation in plaintext; use biometric_on_reader or biometric_sealed",
            "端末側照合の生体認証は特徴量データを平文で端末に送ります。読取装置内照合(biometric_on_reader)または暗号化テンプレート(biometric_sealed)を使用してください",
        ));
    }

    if !all_parsed {
        // Category checks on a partly unknown combination would only add noise.
        return (None, v);
    }
    let categories = kinds
        .iter()
        .fold(CategorySet::default(), |acc, k| acc.union(k.categories()));

    if !kinds.is_empty() && kinds.iter().all(|k| k.is_weak_possession()) {
        let names: Vec<&str> = kinds.iter().map(|k| k.label().en).collect();
        let names_ja: Vec<&str> = kinds.iter().map(|k| k.label().ja).collect();
        v.push(Violation::new(
            Code::RAuth2,
            format!("made only of easily copied or easily obtained possession factors ({}); add something the user knows or is", names.join(", ")),
            format!("容易に複製・入手できる所持要素({})のみの組合せです。記憶または生体の要素を加えてください", names_ja.join("、")),
        ));
    }
    if categories.possession_only() {
        v.push(Violation::new(
            Code::RAuth3,
            "a security device would be usable on its own; add something only the user knows or is (a PIN or a biometric)",
            "セキュリティデバイス単独で利用できてしまいます。本人しか知り得ない要素や生体の要素(PIN・生体認証)を組み合わせてください",
        ));
    }
    if kinds.is_empty() {
        v.push(Violation::new(
            Code::RAuth1,
            "the combination has no authentication factor at all",
            "この組合せには認証要素がありません",
        ));
    } else if let Some(kind) = repeated.first() {
        v.push(Violation::new(
            Code::RAuth1,
            format!("lists {kind} more than once: two steps of the same kind are not two factors"),
            format!("{kind} が重複しています。同じ種類の要素を2回使っても二要素にはなりません"),
        ));
    } else if !kinds.is_empty() && categories.distinct() < 2 {
        let (en, ja) = category_names(categories);
        v.push(Violation::new(
            Code::RAuth1,
            format!("covers only {en}: a login needs two independent factors from two different categories (knowledge, possession, inherence)"),
            format!("{ja}のみです。異なる2つの区分(記憶・所持・生体)の独立した認証要素が必要です"),
        ));
    }
    if kinds.contains(&FactorKind::Fido2) && categories.distinct() < 2 {
        v.push(Violation::new(
            Code::RAuth4,
            "FIDO2 without user verification counts only as a weak possession factor; require fido2_uv or add a PIN or biometric",
            "本人確認(UV)のないFIDO2は弱い所持要素としてのみ扱われます。fido2_uv を指定するか、PINまたは生体認証を加えてください",
        ));
    }
    if !kinds.is_empty()
        && kinds
            .iter()
            .all(|k| matches!(k, FactorKind::Biometric | FactorKind::BiometricWith(_)))
    {
        v.push(Violation::new(
            Code::RBio2,
            "a biometric is never a sole factor; combine it with a card, badge or key",
            "生体認証を単独の認証要素とすることはできません。ICカード・職員証・キーと組み合わせてください",
        ));
    }

    let combination = (!kinds.is_empty()).then_some(Combination { factors: kinds });
    (combination, v)
}

fn category_names(c: CategorySet) -> (String, String) {
    let mut en = Vec::new();
    let mut ja = Vec::new();
    for (has, e, j) in [
        (c.knowledge, "knowledge", "記憶"),
        (c.possession, "possession", "所持"),
        (c.inherence, "inherence", "生体"),
        (c.user_verified, "user verification", "本人確認"),
    ] {
        if has {
            en.push(e);
            ja.push(j);
        }
    }
    (en.join(" and "), ja.join("・"))
}

/// Two rules that apply to a common role, group and purpose contradict each
/// other: which one decides would depend on their order in the file.
fn check_overlaps(v: &mut Vec<Violation>, rules: &[Rule], roles: &[String], groups: &[String]) {
    for (i, a) in rules.iter().enumerate() {
        for b in rules.iter().skip(i + 1) {
            if !a.purposes.intersects(b.purposes) {
                continue;
            }
            let (Some(role), Some(group)) = (
                a.roles.first_common(b.roles),
                a.groups.first_common(&b.groups),
            ) else {
                continue;
            };
            let purpose = a.purposes.iter().find(|p| b.purposes.contains(*p));
            let role = roles.get(role).map(String::as_str).unwrap_or("?");
            let group = groups.get(group.0).map(String::as_str).unwrap_or("?");
            let purpose = purpose.map(Purpose::as_str).unwrap_or("?");
            v.push(
                Violation::new(
                    Code::Overlap,
                    format!(
                        "rules {:?} and {:?} both apply to role {role:?} at group {group:?} for {purpose}; merge them or narrow one",
                        a.name, b.name
                    ),
                    format!(
                        "ルール {:?} と {:?} が役割 {role:?}・端末グループ {group:?}・目的 {purpose} に重複して適用されます。統合するか、対象を絞ってください",
                        a.name, b.name
                    ),
                )
                .in_rule(&b.name),
            );
        }
    }
}

/// The digest of the canonical form: a JSON value with sorted keys, sorted
/// name lists, durations in seconds and factor aliases resolved.
fn digest(policy: &Policy) -> PolicyDigest {
    let canonical = canonical_json(policy);
    let bytes = canonical.to_string();
    let hash = ring::digest::digest(&ring::digest::SHA256, bytes.as_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(hash.as_ref());
    PolicyDigest(out)
}

fn canonical_json(policy: &Policy) -> Value {
    let sorted = |mut names: Vec<String>| {
        names.sort();
        names
    };
    let rules: Vec<Value> = policy
        .rules
        .iter()
        .map(|r| {
            let combinations: Vec<Vec<&str>> = r
                .combinations
                .iter()
                .map(|c| c.factors.iter().map(|k| k.name()).collect())
                .collect();
            json!({
                "name": r.name,
                "description": r.description,
                "purposes": r.purposes.iter().map(Purpose::as_str).collect::<Vec<_>>(),
                "roles": sorted(policy.role_names(r.roles).map(str::to_owned).collect()),
                "groups": sorted(policy.group_names(&r.groups).map(str::to_owned).collect()),
                "allow": combinations,
                "identify_by": r.identify_by.iter().map(|m| m.name()).collect::<Vec<_>>(),
                "qualifications": r.qualifications,
                "fido2_aaguids": r.fido2_aaguids.iter().map(|a| a.to_string()).collect::<Vec<_>>(),
                "review": r.review,
                "max_factor_age": r.max_factor_age.0,
                "session": { "idle_lock": r.session.idle_lock.0, "max_length": r.session.max_length.0 },
                "offline": r.offline.map(|o| json!({ "max_age": o.max_age.0 })),
                "failures": {
                    "max_consecutive": r.failures.max_consecutive,
                    "backoff_base": r.failures.backoff_base.0,
                    "backoff_max": r.failures.backoff_max.0,
                    "biometric_max": r.failures.biometric_max,
                    "presentation_attack_detection": r.failures.presentation_attack_detection,
                },
            })
        })
        .collect();
    let mut canonical = json!({
        "format": 1,
        "version": policy.version,
        "name": policy.name,
        "description": policy.description,
        "roles": sorted(policy.roles.clone()),
        "groups": policy.groups.iter().map(|g| json!({"name": g.name, "description": g.description})).collect::<Vec<_>>(),
        "rules": rules,
    });
    // Only when not the default, so that the digests of policies written
    // before the setting existed stay what they were.
    if policy.counter_regression != CounterRegression::default() {
        canonical["fido2"] = json!({ "counter_regression": policy.counter_regression.as_str() });
    }
    if policy.self_confirmation != SelfConfirmation::default() {
        canonical["records"] = json!({ "self_confirmation": policy.self_confirmation.as_str() });
    }
    canonical
}
