//! The compact JWS (RFC 7515) with EdDSA (Ed25519, RFC 8037) that tickets
//! ([`crate::ticket`]) and offline bundles ([`crate::offline`]) share.
//!
//! The header is fixed, `{"alg":"EdDSA","typ":…,"kid":…}`: any other
//! algorithm (`none` included) or another `typ` is refused, so a token of
//! one kind never passes as the other. The callers own the claims, their
//! size limit and their error type.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ring::signature::{Ed25519KeyPair, UnparsedPublicKey, ED25519};
use serde::{Deserialize, Serialize};

/// The algorithm every token names.
const ALG: &str = "EdDSA";
/// The longest `kid` accepted.
const MAX_KID_LEN: usize = 128;

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Header {
    alg: String,
    typ: String,
    kid: String,
}

/// Why a token was refused or could not be made; each caller maps it to
/// its own error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum JwsError {
    /// Not three non-empty base64url parts, or longer than the limit.
    Format,
    /// Another algorithm or `typ`, a `kid` too long, or not the header JSON.
    Header,
    /// The signature does not verify with the given key.
    Signature,
    /// The header could not be encoded.
    SignHeader,
    /// The signed token is longer than the limit.
    TooLarge,
}

/// Signs `payload` (the claims' JSON) under the header `typ`/`kid`; the
/// token may be at most `max_len` bytes.
pub(crate) fn sign(
    typ: &str,
    kid: &str,
    payload: &[u8],
    key: &Ed25519KeyPair,
    max_len: usize,
) -> Result<String, JwsError> {
    let header = Header {
        alg: ALG.into(),
        typ: typ.into(),
        kid: kid.into(),
    };
    let header = serde_json::to_vec(&header).map_err(|_| JwsError::SignHeader)?;
    let mut token = URL_SAFE_NO_PAD.encode(header);
    token.push('.');
    token.push_str(&URL_SAFE_NO_PAD.encode(payload));
    let signature = key.sign(token.as_bytes());
    token.push('.');
    token.push_str(&URL_SAFE_NO_PAD.encode(signature.as_ref()));
    if token.len() > max_len {
        return Err(JwsError::TooLarge);
    }
    Ok(token)
}

/// The `kid` of a token of type `typ`, unverified: nothing else in an
/// unverified token may be trusted.
pub(crate) fn key_id(token: &str, typ: &str, max_len: usize) -> Result<String, JwsError> {
    let (header, _, _) = split(token, max_len)?;
    Ok(parse_header(header, typ)?.kid)
}

/// Verifies a token of type `typ` (at most `max_len` bytes) with an Ed25519
/// public key (raw 32 bytes) and returns its decoded payload, for the
/// caller to parse and check.
pub(crate) fn verify(
    token: &str,
    typ: &str,
    max_len: usize,
    public_key: &[u8],
) -> Result<Vec<u8>, JwsError> {
    let (header, payload, signature) = split(token, max_len)?;
    parse_header(header, typ)?;
    let signature = URL_SAFE_NO_PAD
        .decode(signature)
        .map_err(|_| JwsError::Format)?;
    let signed_len = header.len() + 1 + payload.len();
    let signed = token.get(..signed_len).ok_or(JwsError::Format)?;
    UnparsedPublicKey::new(&ED25519, public_key)
        .verify(signed.as_bytes(), &signature)
        .map_err(|_| JwsError::Signature)?;
    URL_SAFE_NO_PAD
        .decode(payload)
        .map_err(|_| JwsError::Format)
}

fn split(token: &str, max_len: usize) -> Result<(&str, &str, &str), JwsError> {
    if token.len() > max_len {
        return Err(JwsError::Format);
    }
    let mut parts = token.split('.');
    match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some(h), Some(p), Some(s), None) if !h.is_empty() && !p.is_empty() && !s.is_empty() => {
            Ok((h, p, s))
        }
        _ => Err(JwsError::Format),
    }
}

fn parse_header(header: &str, typ: &str) -> Result<Header, JwsError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(header)
        .map_err(|_| JwsError::Format)?;
    let header: Header = serde_json::from_slice(&bytes).map_err(|_| JwsError::Header)?;
    if header.alg != ALG || header.typ != typ || header.kid.len() > MAX_KID_LEN {
        return Err(JwsError::Header);
    }
    Ok(header)
}
