//! Which device a test runs against: the virtual ones (the default) or, with
//! `CLINAUTH_HW=1`, the real ones present on the machine, skipping each test
//! whose device is absent with a message that says what is missing.
//!
//! The decision is a pure function of the mode, the test's [`Requirement`]
//! and an [`Inventory`] of what was found, so that it is unit-tested here;
//! the test binaries fill the inventory (the system pcscd's readers and
//! what is in them, fprintd's devices) and print the skip reasons.

use std::fmt;

/// Environment variable selecting real devices.
pub const HW_ENV: &str = "CLINAUTH_HW";
/// Environment variable skipping the pcscd tests (no pcscd on the machine).
pub const SKIP_PCSCD_ENV: &str = "CLINAUTH_SKIP_PCSCD";
/// Environment variable skipping the fprintd tests (no fprintd, dbus-daemon
/// or python3-dbusmock on the machine).
pub const SKIP_FPRINTD_ENV: &str = "CLINAUTH_SKIP_FPRINTD";
/// Environment variable with the real PIV card's PIN (hardware mode).
pub const HW_PIN_ENV: &str = "CLINAUTH_HW_PIN";
/// Environment variable allowing tests that need a person (remove the card,
/// touch the sensor) in hardware mode.
pub const HW_INTERACTIVE_ENV: &str = "CLINAUTH_HW_INTERACTIVE";

/// Where the suite runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Virtual devices, a private pcscd (and private fprintd).
    Virtual,
    /// Real devices, the system's pcscd and fprintd.
    Hardware,
    /// Nothing: `CLINAUTH_SKIP_PCSCD=1` (fprintd tests:
    /// `CLINAUTH_SKIP_FPRINTD=1`) without `CLINAUTH_HW=1`.
    Skip,
}

impl Mode {
    /// The mode from the values of [`HW_ENV`] and [`SKIP_PCSCD_ENV`].
    pub fn from_values(hw: Option<&str>, skip: Option<&str>) -> Self {
        if hw == Some("1") {
            Self::Hardware
        } else if skip == Some("1") {
            Self::Skip
        } else {
            Self::Virtual
        }
    }

    /// The mode from the environment.
    pub fn from_env() -> Self {
        let hw = std::env::var(HW_ENV).ok();
        let skip = std::env::var(SKIP_PCSCD_ENV).ok();
        Self::from_values(hw.as_deref(), skip.as_deref())
    }

    /// The mode of the fprintd tests: [`HW_ENV`] and [`SKIP_FPRINTD_ENV`].
    pub fn fprintd_from_env() -> Self {
        let hw = std::env::var(HW_ENV).ok();
        let skip = std::env::var(SKIP_FPRINTD_ENV).ok();
        Self::from_values(hw.as_deref(), skip.as_deref())
    }
}

/// What a test needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Requirement {
    /// Only a virtual device will do (fault injection, blocking the PIN,
    /// a card made by the test's own CA); the reason is shown when skipped.
    VirtualOnly(&'static str),
    /// A PIV card in some reader.
    PivCard,
    /// A PIV card and its PIN (in [`HW_PIN_ENV`]).
    PivCardWithPin,
    /// A PIV card and a person to remove it.
    PivCardInteractive,
    /// A contactless badge on some reader.
    Badge,
    /// A fingerprint reader behind fprintd.
    Fingerprint,
    /// A fingerprint reader behind fprintd and a person to touch it.
    FingerprintInteractive,
}

/// What was found on the machine (hardware mode).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Inventory {
    /// Readers holding a PIV card.
    pub piv_readers: Vec<String>,
    /// Readers holding a contactless badge.
    pub badge_readers: Vec<String>,
    /// fprintd devices (D-Bus object paths).
    pub fprint_devices: Vec<String>,
    /// The PIV PIN was given.
    pub pin_given: bool,
    /// A person is at the machine.
    pub interactive: bool,
    /// Why pcscd could not be asked, if it could not.
    pub pcscd_error: Option<String>,
    /// Why fprintd could not be asked, if it could not.
    pub fprintd_error: Option<String>,
}

/// What a test runs against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// The virtual device the test sets up.
    Virtual,
    /// A real reader (PC/SC name).
    Reader(String),
    /// A real fprintd device (D-Bus object path).
    FprintDevice(String),
}

/// Why a test does not run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skip(pub String);

impl fmt::Display for Skip {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "skipped: {}", self.0)
    }
}

/// Decides what a test with `req` runs against in `mode`.
pub fn select(mode: Mode, req: Requirement, inv: &Inventory) -> Result<Target, Skip> {
    let skip = |s: &str| Err(Skip(s.to_owned()));
    match mode {
        Mode::Skip => match req {
            Requirement::Fingerprint | Requirement::FingerprintInteractive => {
                skip(&format!("{SKIP_FPRINTD_ENV}=1"))
            }
            _ => skip(&format!("{SKIP_PCSCD_ENV}=1")),
        },
        Mode::Virtual => Ok(Target::Virtual),
        Mode::Hardware => {
            let pcsc = |readers: &[String], what: &str| match (readers.first(), &inv.pcscd_error) {
                (Some(r), _) => Ok(Target::Reader(r.clone())),
                (None, Some(e)) => skip(&format!("no {what}: pcscd: {e}")),
                (None, None) => skip(&format!("no {what} in any reader")),
            };
            let fprint = || match (inv.fprint_devices.first(), &inv.fprintd_error) {
                (Some(d), _) => Ok(Target::FprintDevice(d.clone())),
                (None, Some(e)) => skip(&format!("no fingerprint reader: fprintd: {e}")),
                (None, None) => skip("no fingerprint reader behind fprintd"),
            };
            match req {
                Requirement::VirtualOnly(why) => skip(&format!("virtual device only ({why})")),
                Requirement::PivCard => pcsc(&inv.piv_readers, "PIV card"),
                Requirement::PivCardWithPin if !inv.pin_given => {
                    skip(&format!("set {HW_PIN_ENV} to the PIV card's PIN"))
                }
                Requirement::PivCardWithPin => pcsc(&inv.piv_readers, "PIV card"),
                Requirement::PivCardInteractive if !inv.interactive => {
                    skip(&format!("needs a person: set {HW_INTERACTIVE_ENV}=1"))
                }
                Requirement::PivCardInteractive => pcsc(&inv.piv_readers, "PIV card"),
                Requirement::Badge => pcsc(&inv.badge_readers, "contactless badge"),
                Requirement::Fingerprint => fprint(),
                Requirement::FingerprintInteractive if !inv.interactive => {
                    skip(&format!("needs a person: set {HW_INTERACTIVE_ENV}=1"))
                }
                Requirement::FingerprintInteractive => fprint(),
            }
        }
    }
}

/// Fills the fprintd part of `inv` from the machine's fprintd (system bus):
/// its devices, or why it could not be asked.
pub fn probe_fprintd(inv: &mut Inventory) {
    match crate::fprintd::system_devices() {
        Ok(devices) => inv.fprint_devices = devices,
        Err(e) => inv.fprintd_error = Some(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mode_from_env_values() {
        assert_eq!(Mode::from_values(None, None), Mode::Virtual);
        assert_eq!(Mode::from_values(Some("1"), None), Mode::Hardware);
        assert_eq!(Mode::from_values(Some("1"), Some("1")), Mode::Hardware);
        assert_eq!(Mode::from_values(Some("0"), Some("1")), Mode::Skip);
        assert_eq!(Mode::from_values(Some("yes"), None), Mode::Virtual);
    }

    #[test]
    fn skip_mode_names_the_variable_that_skipped() {
        let inv = Inventory::default();
        let msg = |req| select(Mode::Skip, req, &inv).unwrap_err().to_string();
        assert_eq!(msg(Requirement::PivCard), "skipped: CLINAUTH_SKIP_PCSCD=1");
        assert_eq!(
            msg(Requirement::Fingerprint),
            "skipped: CLINAUTH_SKIP_FPRINTD=1"
        );
        assert_eq!(
            msg(Requirement::FingerprintInteractive),
            "skipped: CLINAUTH_SKIP_FPRINTD=1"
        );
    }

    #[test]
    fn virtual_mode_runs_everything() {
        let inv = Inventory::default();
        for req in [
            Requirement::VirtualOnly("x"),
            Requirement::PivCard,
            Requirement::Badge,
            Requirement::Fingerprint,
        ] {
            assert_eq!(select(Mode::Virtual, req, &inv), Ok(Target::Virtual));
            assert!(select(Mode::Skip, req, &inv).is_err());
        }
    }

    #[test]
    fn hardware_mode_skips_absent_devices_with_a_clear_message() {
        let inv = Inventory::default();
        let msg = |req| select(Mode::Hardware, req, &inv).unwrap_err().to_string();
        assert_eq!(
            msg(Requirement::PivCard),
            "skipped: no PIV card in any reader"
        );
        assert_eq!(
            msg(Requirement::Badge),
            "skipped: no contactless badge in any reader"
        );
        assert_eq!(
            msg(Requirement::Fingerprint),
            "skipped: no fingerprint reader behind fprintd"
        );
        assert!(msg(Requirement::VirtualOnly("blocks the PIN")).contains("blocks the PIN"));
        assert!(msg(Requirement::FingerprintInteractive).contains(HW_INTERACTIVE_ENV));
        assert!(msg(Requirement::PivCardWithPin).contains(HW_PIN_ENV));
        assert!(msg(Requirement::PivCardInteractive).contains(HW_INTERACTIVE_ENV));
        let inv = Inventory {
            pcscd_error: Some("service not available".into()),
            ..Inventory::default()
        };
        assert_eq!(
            select(Mode::Hardware, Requirement::PivCard, &inv)
                .unwrap_err()
                .to_string(),
            "skipped: no PIV card: pcscd: service not available"
        );
        let inv = Inventory {
            fprintd_error: Some("The name net.reactivated.Fprint was not provided".into()),
            ..Inventory::default()
        };
        assert_eq!(
            select(Mode::Hardware, Requirement::Fingerprint, &inv)
                .unwrap_err()
                .to_string(),
            "skipped: no fingerprint reader: fprintd: The name net.reactivated.Fprint was not provided"
        );
    }

    #[test]
    fn hardware_mode_picks_present_devices() {
        let inv = Inventory {
            piv_readers: vec!["Yubico YubiKey OTP+FIDO+CCID 00 00".into()],
            badge_readers: vec!["Sony FeliCa Port/PaSoRi 00 00".into()],
            fprint_devices: vec!["/net/reactivated/Fprint/Device/0".into()],
            pin_given: true,
            interactive: false,
            ..Inventory::default()
        };
        assert_eq!(
            select(Mode::Hardware, Requirement::PivCardWithPin, &inv),
            Ok(Target::Reader("Yubico YubiKey OTP+FIDO+CCID 00 00".into()))
        );
        assert_eq!(
            select(Mode::Hardware, Requirement::Badge, &inv),
            Ok(Target::Reader("Sony FeliCa Port/PaSoRi 00 00".into()))
        );
        assert_eq!(
            select(Mode::Hardware, Requirement::Fingerprint, &inv),
            Ok(Target::FprintDevice(
                "/net/reactivated/Fprint/Device/0".into()
            ))
        );
        assert!(select(Mode::Hardware, Requirement::PivCardInteractive, &inv).is_err());
        assert!(select(Mode::Hardware, Requirement::FingerprintInteractive, &inv).is_err());
    }
}
