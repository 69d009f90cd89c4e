//! Picking the factor combination to use from those the server offers,
//! given the devices at hand.
//!
//! The server's list follows the policy's order. The agent takes the first
//! combination it can complete now, preferring one that uses a card or
//! badge already presented (the clinician tapped it to say "this is how I
//! log in"), and returns `None` when every combination needs something
//! that is not here yet.

/// What this workstation can do right now.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Available {
    /// A PIV card is in a reader.
    pub piv_card: bool,
    /// A badge is on a reader.
    pub badge: bool,
    /// A FIDO2 authenticator is configured and the server sent a WebAuthn
    /// request.
    pub fido2: bool,
    /// A biometric reader that seals templates or matches on the reader.
    pub biometric_reader: bool,
    /// An fprintd device that matches on the sensor.
    pub fprintd: bool,
}

/// Whether `factor` (a policy factor name) can be proven now.
pub fn feasible(factor: &str, at: Available) -> bool {
    use clinauth_policy::{BiometricProtection as P, FactorKind as F};
    match F::from_name(factor) {
        Some(F::Smartcard | F::CardPin) => at.piv_card,
        Some(F::Badge) => at.badge,
        Some(F::ServerPin | F::Totp) => true,
        Some(F::Fido2 | F::Fido2Uv) => at.fido2,
        Some(F::Biometric | F::BiometricWith(P::MatchOnReader)) => {
            at.biometric_reader || at.fprintd
        }
        Some(F::BiometricWith(P::SealedTemplate)) => at.biometric_reader,
        // The host never sees a template it could match (R-BIO-1).
        Some(F::BiometricWith(P::HostMatch)) | None => false,
    }
}

fn uses_presented(option: &[String], at: Available) -> bool {
    option
        .iter()
        .any(|f| (at.piv_card && f == "smartcard") || (at.badge && f == "badge"))
}

fn is_biometric(factor: &str) -> bool {
    use clinauth_policy::FactorKind as F;
    matches!(
        F::from_name(factor),
        Some(F::Biometric | F::BiometricWith(_))
    )
}

/// Whether an option needs a card or badge (so waiting for one may help).
pub fn needs_card(option: &[String]) -> bool {
    option
        .iter()
        .any(|f| matches!(f.as_str(), "smartcard" | "card_pin" | "badge"))
}

/// The combination to use now, if any.
pub fn choose(options: &[Vec<String>], at: Available) -> Option<&[String]> {
    let doable = || {
        options
            .iter()
            .filter(|o| !o.is_empty() && o.iter().all(|f| feasible(f, at)))
    };
    // A finger is quicker than typing at a shared ward workstation: with a
    // reader here, the presented token goes with the finger.
    let with_finger = |o: &&Vec<String>| at.biometric_reader && o.iter().any(|f| is_biometric(f));
    doable()
        .filter(|o| uses_presented(o, at))
        .find(with_finger)
        .or_else(|| doable().find(|o| uses_presented(o, at)))
        .or_else(|| doable().next())
        .map(Vec::as_slice)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ward() -> Vec<Vec<String>> {
        [
            vec!["smartcard", "card_pin"],
            vec!["badge", "server_pin"],
            vec!["badge", "biometric"],
            vec!["fido2_uv"],
        ]
        .iter()
        .map(|o| o.iter().map(|s| (*s).to_owned()).collect())
        .collect()
    }

    #[test]
    fn presented_token_decides() {
        let card = Available {
            piv_card: true,
            ..Available::default()
        };
        assert_eq!(choose(&ward(), card).unwrap(), ["smartcard", "card_pin"]);
        let badge = Available {
            badge: true,
            ..Available::default()
        };
        assert_eq!(choose(&ward(), badge).unwrap(), ["badge", "server_pin"]);
        let badge_and_reader = Available {
            badge: true,
            biometric_reader: true,
            ..Available::default()
        };
        assert_eq!(
            choose(&ward(), badge_and_reader).unwrap(),
            ["badge", "biometric"]
        );
        let key = Available {
            fido2: true,
            ..Available::default()
        };
        assert_eq!(choose(&ward(), key).unwrap(), ["fido2_uv"]);
    }

    #[test]
    fn nothing_present_means_wait_or_type() {
        assert_eq!(choose(&ward(), Available::default()), None);
        let typed = vec![vec!["totp".to_owned(), "server_pin".to_owned()]];
        assert_eq!(
            choose(&typed, Available::default()).unwrap(),
            ["totp", "server_pin"]
        );
        assert!(needs_card(&ward()[1]));
        assert!(!needs_card(&typed[0]));
    }

    #[test]
    fn unknown_factor_never_chosen() {
        let odd = vec![vec!["retina".to_owned()]];
        let all = Available {
            piv_card: true,
            badge: true,
            fido2: true,
            biometric_reader: true,
            fprintd: true,
        };
        assert_eq!(choose(&odd, all), None);
        assert_eq!(choose(&[vec![]], all), None);
    }
}
