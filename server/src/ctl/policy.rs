//! `clinauthctl policy check FILE`: validate a policy file and print every
//! violation (R-POL-1), or a summary of what the policy allows where.
//! `clinauthctl policy simulate FILE …`: what the policy would decide for a
//! role, group, purpose and evidence, so an officer can try a change first.

use super::Outcome;
use clinauth_policy::file::MAX_POLICY_BYTES;
use clinauth_policy::{
    BiometricProtection, Connectivity, Context, Decision, Evidence, Factor, Policy, PolicyError,
    Purpose, Seconds, UnixTime, Violation,
};
use std::fmt::Write as _;
use std::io::Read;
use std::path::Path;

/// Why a policy file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The file could not be opened or read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The file is larger than any policy may be.
    #[error("{path} is larger than {MAX_POLICY_BYTES} bytes")]
    TooLarge {
        /// The file.
        path: String,
    },
    /// The file is not UTF-8 text.
    #[error("{path} is not UTF-8 text")]
    NotText {
        /// The file.
        path: String,
    },
}

/// Reads a policy file, refusing more than [`MAX_POLICY_BYTES`] without
/// reading further.
pub fn read_policy_text(path: &Path) -> Result<String, ReadError> {
    let shown = path.display().to_string();
    let file = std::fs::File::open(path).map_err(|source| ReadError::Io {
        path: shown.clone(),
        source,
    })?;
    let mut bytes = Vec::new();
    file.take(MAX_POLICY_BYTES as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(|source| ReadError::Io {
            path: shown.clone(),
            source,
        })?;
    if bytes.len() > MAX_POLICY_BYTES {
        return Err(ReadError::TooLarge { path: shown });
    }
    String::from_utf8(bytes).map_err(|_| ReadError::NotText { path: shown })
}

/// Runs `policy check`: the report goes to `out`, the outcome to the caller.
pub fn check(path: &Path, out: &mut String) -> Outcome {
    let shown = path.display();
    let text = match read_policy_text(path) {
        Ok(text) => text,
        Err(e) => {
            let _ = writeln!(out, "error: {e}");
            return Outcome::Error;
        }
    };
    match Policy::from_toml(&text) {
        Ok(policy) => {
            let _ = writeln!(out, "{shown}: ACCEPTED / 適合");
            summarize(&policy, out);
            Outcome::Ok
        }
        Err(PolicyError::Invalid(violations)) => {
            let _ = writeln!(
                out,
                "{shown}: REFUSED / 不適合 — {} violation(s)\n",
                violations.len()
            );
            report(&violations, out);
            Outcome::Refused
        }
        Err(e) => {
            let _ = writeln!(out, "{shown}: error: {e}");
            Outcome::Error
        }
    }
}

fn report(violations: &[Violation], out: &mut String) {
    for v in violations {
        let _ = write!(out, "  {:<26}", v.code.as_str());
        if let Some(rule) = &v.rule {
            let _ = write!(out, " rule {rule:?}");
        }
        if let Some(combination) = &v.combination {
            let _ = write!(out, " {combination}");
        }
        let _ = writeln!(out, "\n      {}\n      {}\n", v.en, v.ja);
    }
    let mut codes: Vec<&str> = violations.iter().map(|v| v.code.as_str()).collect();
    codes.sort_unstable();
    codes.dedup();
    let _ = writeln!(out, "requirements and checks broken: {}", codes.join(", "));
}

fn summarize(policy: &Policy, out: &mut String) {
    let _ = writeln!(
        out,
        "policy {:?} version {}, digest {}\n{} rule(s), {} role(s), {} workstation group(s)\n",
        policy.name(),
        policy.version(),
        policy.digest(),
        policy.rules().len(),
        policy.roles().len(),
        policy.groups().len()
    );
    for rule in policy.rules() {
        let purposes: Vec<&str> = rule.purposes.iter().map(Purpose::as_str).collect();
        let roles: Vec<&str> = policy.role_names(rule.roles).collect();
        let groups: Vec<&str> = policy.group_names(&rule.groups).collect();
        let allow: Vec<String> = rule.combinations.iter().map(|c| c.to_string()).collect();
        let _ = writeln!(out, "rule {:?}: {}", rule.name, purposes.join(", "));
        let _ = writeln!(out, "  roles:    {}", roles.join(", "));
        let _ = writeln!(out, "  groups:   {}", groups.join(", "));
        let _ = writeln!(out, "  allow:    {}", allow.join("  |  "));
        if !rule.qualifications.is_empty() {
            let _ = writeln!(
                out,
                "  requires: HPKI qualification {}",
                rule.qualifications.join(" or ")
            );
        }
        if !rule.fido2_aaguids.is_empty() {
            let models: Vec<String> = rule.fido2_aaguids.iter().map(|a| a.to_string()).collect();
            let _ = writeln!(out, "  fido2:    models {}", models.join(", "));
        }
        let offline = match rule.offline {
            Some(o) => format!("offline up to {} after the last online login", o.max_age),
            None => "no offline use".to_owned(),
        };
        let _ = writeln!(
            out,
            "  limits:   idle lock {}, session {}, factors at most {} old; {}; lockout after {} failures (backoff {}..{}), {} biometric tries{}",
            rule.session.idle_lock,
            rule.session.max_length,
            rule.max_factor_age,
            offline,
            rule.failures.max_consecutive,
            rule.failures.backoff_base,
            rule.failures.backoff_max,
            rule.failures.biometric_max,
            if rule.review { "; every use flagged for review" } else { "" },
        );
        let _ = writeln!(out);
    }
    let _ = writeln!(
        out,
        "FIDO2 sign-counter regression (possible cloned key): {}\n",
        match policy.counter_regression() {
            clinauth_policy::CounterRegression::Refuse =>
                "refuse the assertion (the key stays usable)",
            clinauth_policy::CounterRegression::Suspend =>
                "refuse the assertion and suspend the key until an officer re-enables it",
        }
    );
    let _ = writeln!(out, "where each purpose is allowed (group: purposes):");
    for group in policy.groups() {
        let Some(id) = policy.group_id(&group.name) else {
            continue;
        };
        let purposes: Vec<&str> = Purpose::ALL
            .into_iter()
            .filter(|p| {
                policy
                    .rules()
                    .iter()
                    .any(|r| r.purposes.contains(*p) && r.groups.contains(id))
            })
            .map(Purpose::as_str)
            .collect();
        let _ = writeln!(
            out,
            "  {:<14} {}",
            group.name,
            if purposes.is_empty() {
                "(nothing)".to_owned()
            } else {
                purposes.join(", ")
            }
        );
    }
}

/// What `policy simulate` is asked.
#[derive(Debug, Clone)]
pub struct Simulation {
    /// The user's roles.
    pub roles: Vec<String>,
    /// The workstation group.
    pub group: String,
    /// The purpose.
    pub purpose: Purpose,
    /// Evidence names (see [`EVIDENCE_NAMES`]).
    pub evidence: Vec<String>,
    /// The HPKI qualification on the card, if any.
    pub qualification: Option<String>,
    /// Decide offline with a bundle this old.
    pub offline_bundle_age: Option<Seconds>,
    /// How long ago the evidence was verified.
    pub evidence_age: Seconds,
}

/// The evidence names `policy simulate` understands, with what each stands for.
pub const EVIDENCE_NAMES: &[(&str, &str)] = &[
    (
        "card",
        "smartcard signature from a PIN-protected key (card + card PIN)",
    ),
    (
        "card_no_pin",
        "smartcard signature from a key without PIN protection",
    ),
    ("server_pin", "PIN or password checked by the server"),
    ("fido2_uv", "FIDO2 assertion with user verification"),
    ("fido2", "FIDO2 assertion with user presence only"),
    ("totp", "TOTP code"),
    ("badge", "contactless badge UID"),
    ("finger_on_reader", "fingerprint matched on the reader"),
    (
        "finger_sealed",
        "fingerprint as a sealed template matched by the server",
    ),
    ("finger_host", "fingerprint matched on the workstation"),
];

fn evidence_factor(name: &str, qualification: &Option<String>) -> Option<Factor> {
    let finger = |protection| Factor::Biometric {
        protection,
        presentation_attack_detection: false,
    };
    Some(match name {
        "card" | "card_no_pin" => Factor::Smartcard {
            pin_protected_key: name == "card",
            qualification: qualification.clone(),
        },
        "server_pin" | "password" => Factor::ServerPin,
        "fido2_uv" | "fido2" => Factor::Fido2 {
            user_verified: name == "fido2_uv",
            aaguid: None,
        },
        "totp" => Factor::Totp,
        "badge" => Factor::Badge,
        "finger_on_reader" => finger(BiometricProtection::MatchOnReader),
        "finger_sealed" => finger(BiometricProtection::SealedTemplate),
        "finger_host" => finger(BiometricProtection::HostMatch),
        _ => return None,
    })
}

/// Runs `policy simulate`: what would the policy decide? Exit 0 allow, 1 deny.
pub fn simulate(path: &Path, sim: &Simulation, now: UnixTime, out: &mut String) -> Outcome {
    let text = match read_policy_text(path) {
        Ok(text) => text,
        Err(e) => {
            let _ = writeln!(out, "error: {e}");
            return Outcome::Error;
        }
    };
    let policy = match Policy::from_toml(&text) {
        Ok(p) => p,
        Err(e) => {
            let _ = writeln!(
                out,
                "error: {}: {e} (run `clinauthctl policy check` for details)",
                path.display()
            );
            return Outcome::Error;
        }
    };
    let mut evidence = Vec::with_capacity(sim.evidence.len());
    for name in &sim.evidence {
        match evidence_factor(name, &sim.qualification) {
            Some(f) => evidence.push(Evidence::new(
                f,
                UnixTime(now.0 - sim.evidence_age.as_i64()),
            )),
            None => {
                let known: Vec<&str> = EVIDENCE_NAMES.iter().map(|(n, _)| *n).collect();
                let _ = writeln!(
                    out,
                    "error: unknown evidence {name:?}; known: {}",
                    known.join(", ")
                );
                return Outcome::Error;
            }
        }
    }
    let ctx = Context {
        roles: policy.role_set(&sim.roles),
        group: &sim.group,
        purpose: sim.purpose,
        connectivity: match sim.offline_bundle_age {
            Some(age) => Connectivity::Offline {
                bundle_issued_at: UnixTime(now.0 - age.as_i64()),
            },
            None => Connectivity::Online,
        },
        now,
        max_age: None,
    };
    match policy.decide(&ctx, &evidence) {
        Decision::Allow(allow) => {
            let _ = writeln!(
                out,
                "ALLOW / 許可: rule {:?}, combination {}{}",
                allow.rule.name,
                allow.combination,
                if allow.offline { " (offline)" } else { "" }
            );
            let _ = writeln!(
                out,
                "  session: idle lock {}, at most {}{}",
                allow.rule.session.idle_lock,
                allow.rule.session.max_length,
                if allow.review {
                    "; flagged for review"
                } else {
                    ""
                }
            );
            let _ = writeln!(out, "  policy {}", policy.digest());
            Outcome::Ok
        }
        Decision::Deny(deny) => {
            let _ = writeln!(out, "DENY / 拒否: {}\n  {}", deny.en(), deny.ja());
            let _ = writeln!(out, "  policy {}", policy.digest());
            Outcome::Refused
        }
    }
}
