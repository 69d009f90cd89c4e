//! The agent's fprintd client (`login::biometric::fprintd`: Claim,
//! VerifyStart, the VerifyStatus signal, VerifyStop, Release) against a
//! private fprintd with libfprint's virtual sensor with on-sensor storage
//! (the match-on-sensor kind), on a private bus given by address. And the
//! other half of the decision in docs/BIOMETRICS.md: however fprintd
//! answers, the agent never offers it as a biometric factor.
//!
//! Skipped (with the reason printed) with `CLINAUTH_SKIP_FPRINTD=1` or
//! where the private fprintd cannot start.

use std::time::Duration;

use clinauth_agent::login::biometric::fprintd::{FprintdClient, FprintdError, Verdict};
use clinauth_agent::login::biometric::{Biometric, BiometricSettings};
use clinauth_agent::login::choose::{choose, Available};
use clinauth_hardware_tests::fprintd::{FprintDevice, Fprintd, FprintdOptions, VirtualSensor};
use clinauth_hardware_tests::hw;

const ALICE: &str = "clinauth-test-alice";
const FINGER: &str = "right-index-finger";

fn private_fprintd() -> Option<Fprintd> {
    if std::env::var(hw::SKIP_FPRINTD_ENV).is_ok_and(|v| v == "1") {
        eprintln!("skipped: {}=1", hw::SKIP_FPRINTD_ENV);
        return None;
    }
    let opts = FprintdOptions {
        sensor: VirtualSensor::Storage,
        debug: std::env::var_os("CLINAUTH_FPRINTD_DEBUG").is_some(),
    };
    match Fprintd::start(&opts) {
        Ok(f) => Some(f),
        Err(e) => {
            eprintln!("skipped: cannot start a private fprintd: {e}");
            None
        }
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap()
}

/// Verifies `user` through the agent's client while the finger `id` is
/// placed on the sensor from another thread.
fn verify_with(
    f: &Fprintd,
    client: &FprintdClient,
    rt: &tokio::runtime::Runtime,
    user: &str,
    id: &str,
) -> Result<Verdict, FprintdError> {
    std::thread::scope(|s| {
        let scan = s.spawn(|| {
            // The sensor's socket exists once the client has claimed the
            // device; the harness waits for it.
            std::thread::sleep(Duration::from_millis(200));
            f.scan(id)
        });
        let verdict = rt.block_on(client.verify(None, user, "any", Duration::from_secs(10)));
        let _ = scan.join();
        verdict
    })
}

#[test]
fn fprintd_match_on_sensor_through_the_agent_client() {
    let Some(f) = private_fprintd() else { return };
    let result = (|| -> Result<(), String> {
        // Enroll with the harness (fprintd-enroll's job on a real machine).
        let conn = f.connect().map_err(|e| e.to_string())?;
        let device = FprintDevice::first(&conn).map_err(|e| e.to_string())?;
        device.claim(ALICE).map_err(|e| e.to_string())?;
        device
            .enroll(
                FINGER,
                f.scans_before_enroll(),
                &mut || f.scan("alice-ri"),
                Duration::from_secs(5),
            )
            .map_err(|e| e.to_string())?;
        device.release().map_err(|e| e.to_string())?;

        let rt = runtime();
        let client = rt
            .block_on(FprintdClient::connect(Some(f.bus_address())))
            .map_err(|e| e.to_string())?;
        let devices = rt.block_on(client.devices()).map_err(|e| e.to_string())?;
        let name = rt
            .block_on(client.device_name(&devices[0]))
            .map_err(|e| e.to_string())?;
        assert!(name.contains("storage"), "device {name:?}");

        // 1:1 against the claimed user's prints, decided on the sensor.
        let v = verify_with(&f, &client, &rt, ALICE, "alice-ri").map_err(|e| e.to_string())?;
        assert_eq!(v, Verdict::Match);
        let v = verify_with(&f, &client, &rt, ALICE, "bob-ri").map_err(|e| e.to_string())?;
        assert_eq!(v, Verdict::NoMatch);

        // A user without prints: fprintd refuses, and the device is
        // released again (the harness can claim it).
        match rt.block_on(client.verify(
            None,
            "clinauth-test-nobody",
            "any",
            Duration::from_secs(3),
        )) {
            Err(FprintdError::DBus(e)) => {
                assert!(e.to_string().contains("NoEnrolledPrints"), "{e}")
            }
            other => panic!("verify without prints: {other:?}"),
        }
        device.claim(ALICE).map_err(|e| e.to_string())?;
        device.release().map_err(|e| e.to_string())?;
        Ok(())
    })();
    if let Err(e) = result {
        panic!("{e}\n{}", f.log());
    }
}

/// fprintd's match is never turned into evidence: the agent reports no
/// fprintd for the factor choice, so a policy offering only a biometric
/// (next to a PIN) is not chosen on a workstation whose only sensor is
/// behind fprintd (R-BIO-3: nothing the server could verify).
#[test]
fn fprintd_is_never_offered_as_a_biometric_factor() {
    let bio = Biometric::from_settings(&BiometricSettings::default());
    assert!(!bio.has_fprintd());
    let options = vec![vec!["biometric".to_owned(), "server_pin".to_owned()]];
    let here = Available {
        fprintd: bio.has_fprintd(),
        biometric_reader: bio.has_reader(),
        ..Available::default()
    };
    assert_eq!(choose(&options, here), None);
}
