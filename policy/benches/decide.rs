//! How fast the decision is: it runs for every login, unlock and step-up.
//! Results are recorded in docs/BENCHMARKS.md.

use clinauth_policy::{
    BiometricProtection, Connectivity, Context, Evidence, Factor, Policy, Purpose, UnixTime,
};
use criterion::{criterion_group, criterion_main, Criterion};
use std::hint::black_box;

const NOW: UnixTime = UnixTime(1_800_000_000);

fn hospital() -> Policy {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../examples/policy/hospital.toml"
    );
    let text = std::fs::read_to_string(path).unwrap();
    Policy::from_toml(&text).unwrap()
}

/// A large site: 250 workstation groups, 120 roles, 500 rules; the rule that
/// decides is the last one.
fn large() -> Policy {
    let roles: Vec<String> = (0..120).map(|i| format!("\"role{i}\"")).collect();
    let mut text = format!(
        "version = 1\nname = \"large\"\nroles = [{}]\n",
        roles.join(", ")
    );
    for g in 0..250 {
        text.push_str(&format!("[groups.g{g}]\n"));
    }
    for r in 0..500 {
        text.push_str(&format!(
            "[[rule]]\nname = \"r{r}\"\npurposes = [\"login\"]\nroles = [\"role{}\"]\ngroups = [\"g{}\"]\nallow = [[\"smartcard\", \"card_pin\"], [\"badge\", \"biometric\"], [\"fido2_uv\"]]\n",
            r % 120,
            r / 2
        ));
    }
    Policy::from_toml(&text).unwrap()
}

fn bench(c: &mut Criterion) {
    let policy = hospital();
    let ctx = Context {
        roles: policy.role_set(["nurse"]),
        group: "ward",
        purpose: Purpose::Login,
        connectivity: Connectivity::Online,
        now: NOW,
        max_age: None,
    };
    let badge_finger = [
        Evidence::new(Factor::Badge, NOW),
        Evidence::new(
            Factor::Biometric {
                protection: BiometricProtection::SealedTemplate,
                presentation_attack_detection: false,
            },
            NOW,
        ),
    ];
    let badge_only = [Evidence::new(Factor::Badge, NOW)];

    c.bench_function("decide/allow badge+finger (hospital policy)", |b| {
        b.iter(|| black_box(policy.decide(black_box(&ctx), black_box(&badge_finger))).is_allow())
    });
    c.bench_function(
        "decide/deny badge alone with explanation (hospital policy)",
        |b| b.iter(|| black_box(policy.decide(black_box(&ctx), black_box(&badge_only))).is_allow()),
    );

    let large = large();
    let ctx = Context {
        roles: large.role_set(["role19"]),
        group: "g249",
        purpose: Purpose::Login,
        connectivity: Connectivity::Online,
        now: NOW,
        max_age: None,
    };
    let card = [Evidence::new(
        Factor::Smartcard {
            pin_protected_key: true,
            qualification: None,
        },
        NOW,
    )];
    c.bench_function("decide/allow card+PIN (500 rules, last one decides)", |b| {
        b.iter(|| black_box(large.decide(black_box(&ctx), black_box(&card))).is_allow())
    });

    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../examples/policy/hospital.toml"
    ))
    .unwrap();
    c.bench_function("validate/hospital policy (parse + check + digest)", |b| {
        b.iter(|| Policy::from_toml(black_box(&text)).is_ok())
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
