//! The load generator against an in-process server on SQLite, for about a
//! second, with two workstations: every login succeeds.

use clinauth_loadgen::driver::{Arrivals, LoadOptions, Mode};
use clinauth_loadgen::report::{run, RunOptions, Target};
use clinauth_loadgen::setup::SetupOptions;
use clinauth_loadgen::Factor;
use std::time::Duration;

fn options(mode: Mode) -> RunOptions {
    RunOptions {
        target: Target::Fresh(SetupOptions {
            users: 4,
            workstations: 2,
            factor: Factor::Card,
            ..SetupOptions::default()
        }),
        load: LoadOptions {
            mode,
            arrivals: Arrivals::Even,
            duration: Duration::from_millis(800),
            warmup: Duration::from_millis(200),
            count: None,
            keepalive: true,
            timeout: Duration::from_secs(10),
        },
        server_threads: 2,
        client_threads: 1,
        ecdsa_reference: Some(Duration::from_millis(50)),
    }
}

#[test]
fn card_logins_over_mutual_tls_succeed_without_errors() {
    let report = run(&options(Mode::Closed)).unwrap();
    assert!(report.logins_ok > 0, "{}", report.text());
    assert_eq!(report.errors_total, 0, "{}", report.text());
    assert!(report.connections <= 2, "keep-alive: {}", report.text());
    assert!(report.latency.login_ms.p99 > 0.0);
    let cpu = report.cpu.as_ref().unwrap();
    assert!(cpu.server_us_per_login > 0.0, "{}", report.text());
    assert!(report.ecdsa.as_ref().unwrap().verifies_per_core_s > 0.0);
    assert!(report.memory.as_ref().unwrap().peak_rss_kib > 0);
    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(json["logins_ok"], report.logins_ok);
}

#[test]
fn poisson_arrivals_keep_the_mean_rate_and_each_second_has_its_tail() {
    let mut opts = options(Mode::Open { rate: 400.0 });
    opts.load.arrivals = Arrivals::Poisson;
    opts.load.duration = Duration::from_millis(2_000);
    let report = run(&opts).unwrap();
    assert_eq!(report.errors_total, 0, "{}", report.text());
    // 800 expected; a Poisson count's standard deviation is ~28.
    assert!((650..=950).contains(&report.logins_ok), "{}", report.text());
    let per_second = &report.latency.login_per_second;
    assert!(per_second.seconds >= 1, "{}", report.text());
    assert!(per_second.p99_worst_ms >= per_second.p99_median_ms);
    assert!(per_second.p99_worst_ms <= report.latency.login_ms.max);
    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(json["arrivals"], "poisson");
    assert!(report.text().contains("Poisson arrivals"));
}

#[test]
fn pin_logins_report_the_argon2_reference_of_the_same_run() {
    let mut opts = options(Mode::Closed);
    opts.target = Target::Fresh(SetupOptions {
        users: 2,
        workstations: 1,
        factor: Factor::Pin,
        ..SetupOptions::default()
    });
    opts.load.duration = Duration::from_millis(1_500);
    let report = run(&opts).unwrap();
    assert!(report.logins_ok > 0, "{}", report.text());
    assert_eq!(report.errors_total, 0, "{}", report.text());
    let argon2 = report.argon2.as_ref().expect("a PIN run measures Argon2id");
    assert!(argon2.verifies_per_core_s > 0.0);
    // A login costs at least its hash.
    assert!(argon2.ratio_to_logins.unwrap() >= 0.8, "{}", report.text());
    assert!(report.text().contains("Argon2id PIN:"));
    // Card runs have no PIN hash to compare with.
    assert!(run(&options(Mode::Closed)).unwrap().argon2.is_none());
}
