//! fprintd through D-Bus: enrollment and 1:1 verification against
//! libfprint's virtual sensors on a private bus (each test its own bus,
//! polkit mock and fprintd; see `clinauth_hardware_tests::fprintd`), or with
//! `CLINAUTH_HW=1` against the machine's fprintd and its real reader.
//!
//! `CLINAUTH_SKIP_FPRINTD=1` skips them all; so does a machine on which the
//! private fprintd cannot be started (the reason is printed).
//! `CLINAUTH_FPRINTD_DEBUG=1` runs fprintd with `G_MESSAGES_DEBUG=all`; the
//! logs are part of a failure's message.

use std::time::{Duration, Instant};

use clinauth_hardware_tests::fprintd::{
    FprintDevice, Fprintd, FprintdError, FprintdOptions, Verdict, VirtualSensor,
};
use clinauth_hardware_tests::hw::{self, Inventory, Mode, Requirement, Target};
use libtest_mimic::{Arguments, Failed, Trial};
use zbus::blocking::Connection;

type TestResult = Result<(), Failed>;

/// Users of the tests; on a real machine their prints are deleted again.
const ALICE: &str = "clinauth-test-alice";
const BOB: &str = "clinauth-test-bob";
/// libfprint's virtual sensors report 5 enroll stages.
const VIRTUAL_STAGES: i32 = 5;

macro_rules! ensure {
    ($cond:expr, $($msg:tt)+) => {
        if !$cond {
            return Err(format!($($msg)+).into());
        }
    };
}

fn err(e: impl std::fmt::Display) -> Failed {
    e.to_string().into()
}

// ------------------------------------------------------------ the test bed

/// A device to test against: a private fprintd with a virtual sensor, or
/// the system's fprintd with a real reader and a person touching it.
struct Bed {
    fprintd: Option<Fprintd>,
    device: FprintDevice,
    /// Keeps the connection of `device` open.
    _conn: Connection,
}

impl Bed {
    fn new(target: &Target, sensor: VirtualSensor) -> Result<Self, Failed> {
        match target {
            Target::FprintDevice(path) => {
                let conn = Connection::system().map_err(err)?;
                let device = FprintDevice::open(&conn, path).map_err(err)?;
                Ok(Self {
                    fprintd: None,
                    device,
                    _conn: conn,
                })
            }
            _ => {
                let opts = FprintdOptions {
                    sensor,
                    debug: std::env::var_os("CLINAUTH_FPRINTD_DEBUG").is_some(),
                };
                let fprintd = Fprintd::start(&opts).map_err(err)?;
                let conn = fprintd.connect().map_err(err)?;
                let device = FprintDevice::first(&conn).map_err(err)?;
                Ok(Self {
                    fprintd: Some(fprintd),
                    device,
                    _conn: conn,
                })
            }
        }
    }

    fn is_virtual(&self) -> bool {
        self.fprintd.is_some()
    }

    /// Places a finger: `SCAN id` on the virtual sensor, or asks the person
    /// at the real reader to touch it with `what`.
    fn finger<'a>(
        &'a self,
        id: &'a str,
        what: &'a str,
    ) -> impl FnMut() -> Result<(), FprintdError> + 'a {
        move || match &self.fprintd {
            Some(f) => f.scan(id),
            None => {
                eprintln!("  >>> touch the fingerprint reader with {what}");
                Ok(())
            }
        }
    }

    /// How long one scan may take.
    fn per_scan(&self) -> Duration {
        if self.is_virtual() {
            Duration::from_secs(5)
        } else {
            Duration::from_secs(30)
        }
    }

    /// Claims the device for `user`, enrolls `finger` with the finger `id`,
    /// and checks that it is listed.
    fn enroll(&self, user: &str, finger: &str, id: &str, what: &str) -> TestResult {
        self.device.claim(user).map_err(err)?;
        let extra = self
            .fprintd
            .as_ref()
            .map_or(0, Fprintd::scans_before_enroll);
        let scans = self
            .device
            .enroll(finger, extra, &mut self.finger(id, what), self.per_scan())
            .map_err(err)?;
        if self.is_virtual() {
            let expected = VIRTUAL_STAGES.unsigned_abs() + extra;
            ensure!(
                scans == expected,
                "enrolled in {scans} scans, expected {expected}"
            );
        }
        let listed = self.device.enrolled_fingers(user).map_err(err)?;
        ensure!(
            listed.iter().any(|f| f == finger),
            "{user}: enrolled {listed:?}, expected {finger}"
        );
        self.device.release().map_err(err)
    }

    fn verify(&self, user: &str, finger: &str, id: &str, what: &str) -> Result<Verdict, Failed> {
        self.device.claim(user).map_err(err)?;
        let verdict = self
            .device
            .verify(finger, &mut self.finger(id, what), self.per_scan());
        let released = self.device.release();
        let verdict = verdict.map_err(err)?;
        released.map_err(err)?;
        Ok(verdict)
    }

    /// Deletes `users`' prints (they are test users; on a real reader with
    /// on-sensor storage this frees the sensor's slots again).
    fn forget(&self, users: &[&str]) {
        for user in users {
            if self.device.claim(user).is_ok() {
                let _ = self.device.delete_enrolled_fingers();
                let _ = self.device.release();
            }
        }
    }

    /// Runs `body`, cleans up the test users, and puts fprintd's logs into
    /// a failure's message.
    fn run(&self, users: &[&str], body: impl FnOnce(&Self) -> TestResult) -> TestResult {
        let result = body(self);
        if !self.is_virtual() {
            self.forget(users);
        }
        result.map_err(|e| match &self.fprintd {
            Some(f) => format!("{}\n{}", e.message().unwrap_or("failed"), f.log()).into(),
            None => e,
        })
    }
}

// ------------------------------------------------------------------ tests

fn check_1_to_1(bed: &Bed) -> TestResult {
    bed.enroll(
        ALICE,
        "right-index-finger",
        "alice-ri",
        "your right index finger",
    )?;
    let same = bed.verify(
        ALICE,
        "right-index-finger",
        "alice-ri",
        "your right index finger",
    )?;
    ensure!(same == Verdict::Match, "same finger: {same:?}");
    let other = bed.verify(
        ALICE,
        "right-index-finger",
        "alice-lm",
        "ANOTHER finger (e.g. your left middle finger)",
    )?;
    ensure!(other == Verdict::NoMatch, "another finger: {other:?}");
    Ok(())
}

/// R-BIO-2 (1:1): the claimed user's enrolled finger matches, another
/// finger does not (image sensor: match on host; or a real reader).
fn r_bio_2_verify_matches_only_the_claimed_users_enrolled_finger(target: &Target) -> TestResult {
    let bed = Bed::new(target, VirtualSensor::Image)?;
    bed.run(&[ALICE], check_1_to_1)
}

/// R-BIO-2 on the match-on-sensor kind R-BIO-1 accepts: libfprint's virtual
/// device with on-sensor storage decides the match itself.
fn r_bio_2_match_on_sensor_verifies_only_the_claimed_users_enrolled_finger(
    target: &Target,
) -> TestResult {
    let bed = Bed::new(target, VirtualSensor::Storage)?;
    bed.run(&[ALICE], |bed| {
        check_1_to_1(bed)?;
        // The print lives on the sensor, not in fprintd's store only.
        let name = bed.device.name().map_err(err)?;
        ensure!(name.contains("storage"), "device {name:?}");
        Ok(())
    })
}

/// R-BIO-2: verification is against the claimed user's prints only; another
/// enrolled user's finger does not match, whatever finger name is asked.
fn r_bio_2_another_users_enrolled_finger_does_not_match(target: &Target) -> TestResult {
    let bed = Bed::new(target, VirtualSensor::Image)?;
    bed.run(&[ALICE, BOB], |bed| {
        bed.enroll(ALICE, "right-index-finger", "alice-ri", "-")?;
        bed.enroll(BOB, "right-index-finger", "bob-ri", "-")?;
        let v = bed.verify(ALICE, "right-index-finger", "bob-ri", "-")?;
        ensure!(v == Verdict::NoMatch, "bob's finger for alice: {v:?}");
        let v = bed.verify(ALICE, "any", "bob-ri", "-")?;
        ensure!(v == Verdict::NoMatch, "bob's finger for alice (any): {v:?}");
        let v = bed.verify(BOB, "right-index-finger", "bob-ri", "-")?;
        ensure!(v == Verdict::Match, "bob's finger for bob: {v:?}");
        Ok(())
    })
}

/// A user without prints cannot start a verification; an unclaimed device
/// refuses to enroll. Needs no touch, so it also runs on a real reader.
fn verify_without_prints_and_enroll_without_claim_are_refused(target: &Target) -> TestResult {
    let bed = Bed::new(target, VirtualSensor::Image)?;
    let nobody = "clinauth-test-nobody";
    bed.run(&[], |bed| {
        match bed
            .device
            .enroll("right-index-finger", 0, &mut || Ok(()), bed.per_scan())
        {
            Err(FprintdError::DBus(zbus::Error::MethodError(name, _, _)))
                if name.as_str() == "net.reactivated.Fprint.Error.ClaimDevice" => {}
            other => return Err(format!("enroll without claim: {other:?}").into()),
        }
        bed.device.claim(nobody).map_err(err)?;
        let listed = bed.device.enrolled_fingers(nobody).map_err(err)?;
        let verify = bed
            .device
            .verify("any", &mut || Ok(()), Duration::from_secs(2));
        bed.device.release().map_err(err)?;
        ensure!(listed.is_empty(), "{nobody} has prints: {listed:?}");
        match verify {
            Err(FprintdError::DBus(zbus::Error::MethodError(name, _, _)))
                if name.as_str() == "net.reactivated.Fprint.Error.NoEnrolledPrints" =>
            {
                Ok(())
            }
            other => Err(format!("verify without prints: {other:?}").into()),
        }
    })
}

/// The virtual sensor is what the tests assume (5 stages, a swipe sensor).
fn virtual_sensor_properties(target: &Target) -> TestResult {
    let bed = Bed::new(target, VirtualSensor::Image)?;
    bed.run(&[], |bed| {
        let stages = bed.device.num_enroll_stages().map_err(err)?;
        ensure!(stages == VIRTUAL_STAGES, "num-enroll-stages {stages}");
        let scan_type = bed.device.scan_type().map_err(err)?;
        ensure!(scan_type == "swipe", "scan-type {scan_type}");
        let name = bed.device.name().map_err(err)?;
        ensure!(name.contains("Virtual"), "name {name}");
        Ok(())
    })
}

type TestFn = fn(&Target) -> TestResult;

fn tests() -> Vec<(&'static str, Requirement, TestFn)> {
    use Requirement::{Fingerprint, FingerprintInteractive, VirtualOnly};
    vec![
        (
            "r_bio_2_verify_matches_only_the_claimed_users_enrolled_finger",
            FingerprintInteractive,
            r_bio_2_verify_matches_only_the_claimed_users_enrolled_finger,
        ),
        (
            "r_bio_2_match_on_sensor_verifies_only_the_claimed_users_enrolled_finger",
            VirtualOnly("libfprint's virtual on-sensor storage device"),
            r_bio_2_match_on_sensor_verifies_only_the_claimed_users_enrolled_finger,
        ),
        (
            "r_bio_2_another_users_enrolled_finger_does_not_match",
            VirtualOnly("needs two people's fingers"),
            r_bio_2_another_users_enrolled_finger_does_not_match,
        ),
        (
            "verify_without_prints_and_enroll_without_claim_are_refused",
            Fingerprint,
            verify_without_prints_and_enroll_without_claim_are_refused,
        ),
        (
            "virtual_sensor_properties",
            VirtualOnly("the virtual sensor's properties"),
            virtual_sensor_properties,
        ),
    ]
}

/// Whether a private fprintd can run here; the reason if not.
fn probe_virtual() -> Result<(), String> {
    let started = Instant::now();
    let fprintd = Fprintd::start(&FprintdOptions::default()).map_err(|e| e.to_string())?;
    drop(fprintd);
    eprintln!(
        "private fprintd starts in {} ms",
        started.elapsed().as_millis()
    );
    Ok(())
}

fn main() {
    let args = Arguments::from_args();
    let mode = Mode::fprintd_from_env();
    let mut inventory = Inventory::default();
    let mut unavailable = None;
    if !args.list {
        match mode {
            Mode::Virtual => {
                if let Err(e) = probe_virtual() {
                    unavailable = Some(format!(
                        "cannot start a private fprintd: {e}\n(set {}=1 to skip)",
                        hw::SKIP_FPRINTD_ENV
                    ));
                }
            }
            Mode::Hardware => {
                inventory.interactive =
                    std::env::var(hw::HW_INTERACTIVE_ENV).is_ok_and(|v| v == "1");
                hw::probe_fprintd(&mut inventory);
            }
            Mode::Skip => {}
        }
    }
    if let Some(why) = &unavailable {
        eprintln!("skipped: {why}");
    }

    let trials = tests()
        .into_iter()
        .map(|(name, req, f)| {
            let selected = match &unavailable {
                Some(why) => Err(hw::Skip(why.clone())),
                None => hw::select(mode, req, &inventory),
            };
            match selected {
                Ok(target) => Trial::test(name, move || f(&target)),
                Err(skip) => {
                    if !args.list && unavailable.is_none() {
                        eprintln!("{name}: {skip}");
                    }
                    Trial::test(name, || Ok(())).with_ignored_flag(true)
                }
            }
        })
        .collect();
    libtest_mimic::run(&args, trials).exit();
}
