//! The attestation CA allow-list (R-AUTH-4: "allowed authenticator models
//! can be restricted by attestation").

use super::{check_len, Fido2Error};
use clinauth_policy::Aaguid;
use std::collections::BTreeMap;
use webauthn_rs::prelude::{AttestationCaList, AttestationCaListBuilder, Uuid};

/// Most CA certificates an allow-list may hold.
pub const MAX_ATTESTATION_CAS: usize = 32;
/// Longest PEM CA certificate accepted.
pub const MAX_CA_PEM_LEN: usize = 16 * 1024;
/// Most models (AAGUIDs) one CA entry may restrict to.
pub const MAX_MODELS_PER_CA: usize = 256;

/// Authenticator vendors' attestation root CAs that registrations must chain
/// to, each optionally restricted to some models (AAGUIDs).
///
/// When a [`super::Fido2Verifier`] has one, every registration asks for
/// direct attestation and is refused unless the attestation chains to one of
/// these CAs and, for a restricted entry, the authenticator's AAGUID is one of
/// the entry's models. Only then is the AAGUID reported (an unattested AAGUID
/// is whatever the client claims).
#[derive(Debug, Clone, Default)]
pub struct AttestationTrust {
    list: AttestationCaList,
}

impl AttestationTrust {
    /// An empty allow-list (refused by [`super::Fido2Verifier::new`] until a CA is added).
    pub fn new() -> AttestationTrust {
        AttestationTrust::default()
    }

    /// Allows authenticators attested by the CA in `pem` (one PEM
    /// certificate). With an empty `models`, every model the CA attests is
    /// allowed; otherwise only those AAGUIDs. Adding the same CA twice widens
    /// the entry (the union of its models; unrestricted if either was).
    pub fn allow_ca_pem(&mut self, pem: &[u8], models: &[Aaguid]) -> Result<(), Fido2Error> {
        if pem.is_empty() {
            return Err(Fido2Error::Empty("attestation CA certificate"));
        }
        check_len("attestation CA certificate", pem.len(), MAX_CA_PEM_LEN)?;
        if models.len() > MAX_MODELS_PER_CA {
            return Err(Fido2Error::TooMany {
                what: "models for one attestation CA",
                max: MAX_MODELS_PER_CA,
            });
        }
        let entry = if models.is_empty() {
            AttestationCaList::try_from(pem)
                .map_err(|_| Fido2Error::Malformed("attestation CA certificate"))?
        } else {
            let mut builder = AttestationCaListBuilder::new();
            for model in models {
                builder
                    .insert_device_pem(
                        pem,
                        Uuid::from_bytes(model.0),
                        model.to_string(),
                        BTreeMap::new(),
                    )
                    .map_err(|_| Fido2Error::Malformed("attestation CA certificate"))?;
            }
            builder.build()
        };
        let mut merged = self.list.clone();
        merged.union(&entry);
        if merged.len() > MAX_ATTESTATION_CAS {
            return Err(Fido2Error::TooMany {
                what: "attestation CAs",
                max: MAX_ATTESTATION_CAS,
            });
        }
        self.list = merged;
        Ok(())
    }

    /// How many distinct CA certificates are allowed.
    pub fn len(&self) -> usize {
        self.list.len()
    }

    /// No CA allowed yet.
    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    pub(super) fn into_list(self) -> AttestationCaList {
        self.list
    }
}
