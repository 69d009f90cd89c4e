//! The decision: given verified evidence and where, who and why, allow with
//! the rule that matched, or deny saying what is missing.
//!
//! Deterministic, and on the allow path free of allocation: roles, groups,
//! purposes and factors are bit sets by the time a decision is asked for.

use crate::evidence::{Evidence, Factor};
use crate::factor::{BiometricProtection, FactorKind, TokenSet};
use crate::policy::{Combination, Policy, RoleSet, Rule};
use crate::purpose::Purpose;
use crate::time::{Seconds, UnixTime};
use std::fmt;

/// How far in the future a verification time may lie (clock skew between
/// verifier and decider) before the evidence is refused.
pub const CLOCK_SKEW: Seconds = Seconds(30);

/// Whether the server can be reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Connectivity {
    /// The server decides with live verification.
    Online,
    /// The agent decides with the user's cached, server-signed bundle (R-OFF-1).
    Offline {
        /// When the server issued the bundle (the user's last online login).
        bundle_issued_at: UnixTime,
    },
}

/// Where, who and why.
#[derive(Debug, Clone, Copy)]
pub struct Context<'a> {
    /// The user's roles, from [`Policy::role_set`].
    pub roles: RoleSet,
    /// The workstation's group.
    pub group: &'a str,
    /// What the authentication is for.
    pub purpose: Purpose,
    /// Online or offline.
    pub connectivity: Connectivity,
    /// The time of the decision.
    pub now: UnixTime,
    /// A caller's stricter limit on factor age (a step-up's maximum age).
    pub max_age: Option<Seconds>,
}

/// The outcome.
#[derive(Debug, Clone)]
pub enum Decision<'p> {
    /// The evidence meets a combination of a rule that applies.
    Allow(Allow<'p>),
    /// It does not.
    Deny(Deny<'p>),
}

impl Decision<'_> {
    /// Whether the decision allows.
    pub fn is_allow(&self) -> bool {
        matches!(self, Decision::Allow(_))
    }
}

/// An allowing decision.
#[derive(Debug, Clone)]
pub struct Allow<'p> {
    /// The rule that decided; its session limits apply.
    pub rule: &'p Rule,
    /// The combination the evidence met.
    pub combination: &'p Combination,
    /// The tokens that met it.
    pub proven: TokenSet,
    /// The decision must be reviewed by an officer (break-glass, R-EMERG-1).
    pub review: bool,
    /// Decided offline with cached verifiers.
    pub offline: bool,
}

/// A denying decision.
#[derive(Debug, Clone)]
pub struct Deny<'p> {
    /// Why.
    pub reason: DenyReason<'p>,
    /// Evidence that was presented but did not count, and why.
    pub not_counted: NotCounted,
}

/// Why a decision denies.
#[derive(Debug, Clone)]
pub enum DenyReason<'p> {
    /// The workstation's group is not in the policy.
    UnknownGroup,
    /// No rule applies to these roles at this group for this purpose.
    NoRule,
    /// The rules that apply do not allow offline use.
    OfflineNotAllowed,
    /// The cached bundle is older than the rule allows.
    OfflineExpired {
        /// The rule.
        rule: &'p Rule,
        /// The bundle's age in seconds.
        age: i64,
    },
    /// Factors are missing: any one of `options` would complete a combination.
    Missing {
        /// The rule whose combination is nearest.
        rule: &'p Rule,
        /// The sets of factors to add, fewest first.
        options: Vec<Vec<FactorKind>>,
    },
}

/// Evidence that did not count.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NotCounted {
    /// Verified longer ago than the rule's `max_factor_age` or the caller's maximum age.
    pub stale: TokenSet,
    /// Verified in the future beyond [`CLOCK_SKEW`].
    pub future: TokenSet,
    /// A biometric matched on the workstation (R-BIO-1).
    pub host_match_biometric: bool,
    /// A FIDO2 key of a model the rule does not accept (R-AUTH-4).
    pub fido2_model: bool,
    /// A smartcard without the qualification the rule requires (R-SIG-1).
    pub qualification: bool,
}

impl NotCounted {
    fn merge(&mut self, other: NotCounted) {
        self.stale = self.stale.union(other.stale);
        self.future = self.future.union(other.future);
        self.host_match_biometric |= other.host_match_biometric;
        self.fido2_model |= other.fido2_model;
        self.qualification |= other.qualification;
    }

    fn is_empty(&self) -> bool {
        *self == NotCounted::default()
    }
}

impl Policy {
    /// The rules that apply to these roles at this group for this purpose,
    /// in file order: what a workstation may offer the user before any
    /// factor is presented. Empty for an unknown group.
    pub fn applicable<'p>(
        &'p self,
        roles: RoleSet,
        group: &str,
        purpose: Purpose,
    ) -> impl Iterator<Item = &'p Rule> + 'p {
        let group = self.group_id(group);
        self.rules.iter().filter(move |rule| {
            group.is_some_and(|g| rule.groups.contains(g))
                && rule.purposes.contains(purpose)
                && rule.roles.intersects(roles)
        })
    }

    /// Decides. Every login asks this.
    pub fn decide<'p>(&'p self, ctx: &Context<'_>, evidence: &[Evidence]) -> Decision<'p> {
        let Some(group) = self.group_id(ctx.group) else {
            return deny(DenyReason::UnknownGroup, NotCounted::default());
        };

        let mut not_counted = NotCounted::default();
        let mut any_rule = false;
        let mut offline_expired: Option<(&Rule, i64)> = None;
        let mut nearest: Option<(&Rule, usize)> = None;

        for rule in &self.rules {
            if !rule.purposes.contains(ctx.purpose)
                || !rule.roles.intersects(ctx.roles)
                || !rule.groups.contains(group)
            {
                continue;
            }
            any_rule = true;

            let offline = match ctx.connectivity {
                Connectivity::Online => false,
                Connectivity::Offline { bundle_issued_at } => {
                    let Some(limits) = rule.offline else {
                        continue;
                    };
                    let age = ctx.now.seconds_since(bundle_issued_at);
                    if age > limits.max_age.as_i64() || age < -CLOCK_SKEW.as_i64() {
                        offline_expired.get_or_insert((rule, age));
                        continue;
                    }
                    true
                }
            };

            let (proven, skipped) = proven_for(rule, ctx, evidence);
            not_counted.merge(skipped);
            if let Some(combination) = rule.combinations.iter().find(|c| c.is_met_by(proven)) {
                return Decision::Allow(Allow {
                    rule,
                    combination,
                    proven: proven.intersection(combination.accepted_tokens()),
                    review: rule.review || ctx.purpose == Purpose::BreakGlass,
                    offline,
                });
            }
            let fewest = rule
                .combinations
                .iter()
                .map(|c| c.missing(proven).count())
                .min()
                .unwrap_or(usize::MAX);
            if nearest.is_none_or(|(_, n)| fewest < n) {
                nearest = Some((rule, fewest));
            }
        }

        let reason = match (any_rule, nearest, offline_expired) {
            (false, _, _) => DenyReason::NoRule,
            (true, Some((rule, _)), _) => {
                // Only the deny path allocates: it lists what would complete a combination.
                let (proven, _) = proven_for(rule, ctx, evidence);
                DenyReason::Missing {
                    rule,
                    options: missing_options(rule, proven),
                }
            }
            (true, None, Some((rule, age))) => DenyReason::OfflineExpired { rule, age },
            (true, None, None) => DenyReason::OfflineNotAllowed,
        };
        deny(reason, not_counted)
    }
}

fn deny<'p>(reason: DenyReason<'p>, not_counted: NotCounted) -> Decision<'p> {
    Decision::Deny(Deny {
        reason,
        not_counted,
    })
}

/// The tokens the evidence proves for this rule, and what it could not count.
fn proven_for(rule: &Rule, ctx: &Context<'_>, evidence: &[Evidence]) -> (TokenSet, NotCounted) {
    let max_age = match ctx.max_age {
        Some(limit) => limit.min(rule.max_factor_age),
        None => rule.max_factor_age,
    };
    let mut proven = TokenSet::EMPTY;
    let mut skipped = NotCounted::default();
    for e in evidence {
        let tokens = e.factor.tokens();
        let age = ctx.now.seconds_since(e.verified_at);
        if age < -CLOCK_SKEW.as_i64() {
            skipped.future = skipped.future.union(tokens);
            continue;
        }
        if age > max_age.as_i64() {
            skipped.stale = skipped.stale.union(tokens);
            continue;
        }
        match &e.factor {
            Factor::Biometric {
                protection: BiometricProtection::HostMatch,
                ..
            } => {
                skipped.host_match_biometric = true;
                continue;
            }
            Factor::Fido2 { aaguid, .. }
                if !rule.fido2_aaguids.is_empty()
                    && !aaguid.is_some_and(|a| rule.fido2_aaguids.contains(&a)) =>
            {
                skipped.fido2_model = true;
                continue;
            }
            Factor::Smartcard { qualification, .. }
                if !rule.qualifications.is_empty()
                    && !qualification
                        .as_ref()
                        .is_some_and(|q| rule.qualifications.contains(q)) =>
            {
                skipped.qualification = true;
                continue;
            }
            _ => {}
        }
        proven = proven.union(tokens);
    }
    (proven, skipped)
}

/// The smallest sets of factors that would complete one of the rule's
/// combinations. Combinations that build on what the user already presented
/// come first: after a badge tap, "add a PIN" helps more than "use a key".
fn missing_options(rule: &Rule, proven: TokenSet) -> Vec<Vec<FactorKind>> {
    let builds_on_proven = rule
        .combinations
        .iter()
        .any(|c| c.accepted_tokens().intersects(proven));
    let mut options: Vec<Vec<FactorKind>> = rule
        .combinations
        .iter()
        .filter(|c| !builds_on_proven || c.accepted_tokens().intersects(proven))
        .map(|c| c.missing(proven).collect::<Vec<_>>())
        .collect();
    let fewest = options.iter().map(Vec::len).min().unwrap_or(0);
    options.retain(|o| o.len() == fewest);
    options.sort();
    options.dedup();
    options
}

impl Deny<'_> {
    /// The explanation in English, for the clinician and the audit log.
    pub fn en(&self) -> String {
        let mut text = match &self.reason {
            DenyReason::UnknownGroup => {
                "this workstation's group is not in the policy".to_owned()
            }
            DenyReason::NoRule => {
                "no rule allows this purpose for your roles at this workstation".to_owned()
            }
            DenyReason::OfflineNotAllowed => {
                "the server cannot be reached and offline use is not allowed here".to_owned()
            }
            DenyReason::OfflineExpired { rule, .. } => format!(
                "the server cannot be reached and your offline credentials are older than {} (rule {:?}); log in once while the server is reachable",
                rule.offline.map(|o| o.max_age).unwrap_or(Seconds(0)),
                rule.name
            ),
            DenyReason::Missing { options, .. } => {
                format!("add one of: {}", join_options(options, |k| k.label().en))
            }
        };
        let notes = self.notes(false);
        if !notes.is_empty() {
            text.push_str(" (not counted: ");
            text.push_str(&notes.join("; "));
            text.push(')');
        }
        text
    }

    /// The explanation in Japanese.
    pub fn ja(&self) -> String {
        let mut text = match &self.reason {
            DenyReason::UnknownGroup => "この端末のグループはポリシーにありません".to_owned(),
            DenyReason::NoRule => {
                "この端末では、あなたの役割にこの目的を許可するルールがありません".to_owned()
            }
            DenyReason::OfflineNotAllowed => {
                "サーバに接続できず、この目的のオフライン利用は許可されていません".to_owned()
            }
            DenyReason::OfflineExpired { rule, .. } => format!(
                "サーバに接続できず、オフライン用の資格情報が{}を超えています(ルール {:?})。サーバ接続時に一度ログインしてください",
                rule.offline.map(|o| o.max_age).unwrap_or(Seconds(0)),
                rule.name
            ),
            DenyReason::Missing { options, .. } => {
                format!("次のいずれかを追加してください: {}", join_options(options, |k| k.label().ja))
            }
        };
        let notes = self.notes(true);
        if !notes.is_empty() {
            text.push_str("(対象外: ");
            text.push_str(&notes.join("、"));
            text.push(')');
        }
        text
    }

    fn notes(&self, ja: bool) -> Vec<String> {
        let mut notes = Vec::new();
        if self.not_counted.is_empty() {
            return notes;
        }
        let label = |t: crate::factor::Token| {
            if ja {
                t.kind().label().ja
            } else {
                t.kind().label().en
            }
        };
        for t in self.not_counted.stale.iter() {
            notes.push(if ja {
                format!("{}の確認から時間が経ち過ぎています", label(t))
            } else {
                format!("{} verified too long ago", label(t))
            });
        }
        for t in self.not_counted.future.iter() {
            notes.push(if ja {
                format!("{}の確認時刻が未来です(時計のずれ)", label(t))
            } else {
                format!("{} verified in the future (clock error)", label(t))
            });
        }
        if self.not_counted.host_match_biometric {
            notes.push(if ja {
                "端末側照合の生体認証(R-BIO-1)".to_owned()
            } else {
                "fingerprint matched on the workstation (R-BIO-1)".to_owned()
            });
        }
        if self.not_counted.fido2_model {
            notes.push(if ja {
                "許可されていない機種のFIDO2キー".to_owned()
            } else {
                "FIDO2 key of a model this rule does not accept".to_owned()
            });
        }
        if self.not_counted.qualification {
            notes.push(if ja {
                "必要な資格(HPKI)のないICカード(R-SIG-1)".to_owned()
            } else {
                "smartcard without the required HPKI qualification (R-SIG-1)".to_owned()
            });
        }
        notes
    }
}

fn join_options(options: &[Vec<FactorKind>], label: impl Fn(FactorKind) -> &'static str) -> String {
    options
        .iter()
        .map(|o| o.iter().map(|k| label(*k)).collect::<Vec<_>>().join(" + "))
        .collect::<Vec<_>>()
        .join(", ")
}

impl fmt::Display for Deny<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.en())
    }
}
