//! The load generator against an in-process server on SQLite, for about a
//! second, with two workstations: every login succeeds.

use clinauth_loadgen::driver::{LoadOptions, Mode};
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
