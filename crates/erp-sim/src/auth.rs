//! Authentication primitives shared by the ERP modules: HTTP basic, bearer tokens issued by the
//! simulated token endpoints, NetSuite token-based authentication (OAuth 1.0a, HMAC-SHA256) and
//! the JWT client assertion of NetSuite's OAuth 2.0 client-credentials (M2M) flow.
//!
//! Every check answers a yes/no plus a reason; the ERP module renders the ERP's own 401.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use axum::http::HeaderMap;
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use hmac::{Hmac, Mac};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode};
use ring::signature::{self, UnparsedPublicKey};
use serde_json::Value;
use sha2::Sha256;

use crate::store::{Erp, M2mClient, TbaToken, now_ms};

/// RFC 3986 unreserved characters stay, everything else is percent-encoded (OAuth 1.0a §3.6).
const OAUTH_ENCODE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Percent-encodes as OAuth 1.0a requires.
pub fn oauth_encode(s: &str) -> String {
    utf8_percent_encode(s, OAUTH_ENCODE).to_string()
}

/// `Authorization: Basic` user and password.
pub fn basic(headers: &HeaderMap) -> Option<(String, String)> {
    let value = headers
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let (scheme, rest) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = STANDARD.decode(rest.trim()).ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, password) = text.split_once(':')?;
    Some((user.to_owned(), password.to_owned()))
}

/// `Authorization: Bearer` token.
pub fn bearer(headers: &HeaderMap) -> Option<String> {
    let value = headers
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let (scheme, rest) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| rest.trim().to_owned())
}

/// A token handed out by one of the simulated token endpoints.
#[derive(Clone, Debug)]
struct Issued {
    erp: Erp,
    account: String,
    expires_ms: u64,
}

/// Access tokens issued by the simulated token endpoints (kept in memory: a restarted
/// simulator forgets them, and clients must fetch a new one after a 401, as after expiry).
#[derive(Debug, Default)]
pub struct TokenBook {
    tokens: Mutex<HashMap<String, Issued>>,
}

impl TokenBook {
    /// Issues a random opaque token valid for `ttl_secs`.
    pub fn issue(&self, erp: Erp, account: &str, ttl_secs: u64) -> String {
        let mut raw = [0u8; 32];
        // ring's SystemRandom only fails if the OS has no randomness; fall back to time bits
        // rather than panic (tokens only need to be unguessable for honest tests).
        if ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut raw).is_err() {
            raw[..8].copy_from_slice(&now_ms().to_le_bytes());
        }
        let token = URL_SAFE_NO_PAD.encode(raw);
        let mut tokens = self.tokens.lock().unwrap_or_else(|p| p.into_inner());
        let now = now_ms();
        tokens.retain(|_, t| t.expires_ms > now);
        tokens.insert(
            token.clone(),
            Issued {
                erp,
                account: account.to_owned(),
                expires_ms: now + ttl_secs * 1000,
            },
        );
        token
    }

    /// The account a live token of this ERP belongs to.
    pub fn check(&self, erp: Erp, token: &str) -> Option<String> {
        let tokens = self.tokens.lock().unwrap_or_else(|p| p.into_inner());
        let issued = tokens.get(token)?;
        (issued.erp == erp && issued.expires_ms > now_ms()).then(|| issued.account.clone())
    }

    /// Makes a token expire now (tests of the expiry path).
    pub fn expire_all(&self) {
        self.tokens
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }
}

/// Parsed `Authorization: OAuth ...` parameters (values percent-decoded).
pub fn parse_oauth1(headers: &HeaderMap) -> Option<BTreeMap<String, String>> {
    let value = headers
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let (scheme, rest) = value.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("oauth") {
        return None;
    }
    let mut out = BTreeMap::new();
    for part in rest.split(',') {
        let (key, raw) = part.trim().split_once('=')?;
        let raw = raw.trim().trim_matches('"');
        let decoded = percent_decode_str(raw).decode_utf8().ok()?;
        out.insert(key.trim().to_owned(), decoded.into_owned());
    }
    Some(out)
}

/// Why a TBA request was refused (logged; the client only sees INVALID_LOGIN, as in NetSuite).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TbaError {
    /// A required oauth_* parameter is missing.
    #[error("missing {0}")]
    Missing(&'static str),
    /// realm is not the account.
    #[error("realm {0} is not this account")]
    Realm(String),
    /// Only HMAC-SHA256 is accepted.
    #[error("signature method {0} not supported")]
    Method(String),
    /// Unknown consumer key / token pair.
    #[error("unknown consumer key or token")]
    UnknownToken,
    /// Timestamp not within five minutes.
    #[error("timestamp outside the five-minute window")]
    Timestamp,
    /// Nonce already used.
    #[error("nonce reused")]
    NonceReused,
    /// Signature mismatch.
    #[error("signature mismatch")]
    Signature,
}

/// Nonces seen in the last ten minutes per consumer key + token.
#[derive(Debug, Default)]
pub struct NonceBook {
    seen: Mutex<HashMap<String, u64>>,
}

/// The OAuth 1.0a HMAC-SHA256 signature (base64) of a request.
pub fn oauth1_signature(
    method: &str,
    base_url: &str,
    params: &[(String, String)],
    consumer_secret: &str,
    token_secret: &str,
) -> String {
    let mut encoded: Vec<(String, String)> = params
        .iter()
        .map(|(k, v)| (oauth_encode(k), oauth_encode(v)))
        .collect();
    encoded.sort();
    let normalized = encoded
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&");
    let base = format!(
        "{}&{}&{}",
        method.to_ascii_uppercase(),
        oauth_encode(base_url),
        oauth_encode(&normalized)
    );
    let key = format!(
        "{}&{}",
        oauth_encode(consumer_secret),
        oauth_encode(token_secret)
    );
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(key.as_bytes()) else {
        return String::new();
    };
    mac.update(base.as_bytes());
    STANDARD.encode(mac.finalize().into_bytes())
}

/// Verifies a NetSuite TBA request. `base_url` is scheme://host[:port]/path as the client used
/// it; `query` holds the decoded query parameters, which are part of the signature.
pub fn verify_tba(
    nonces: &NonceBook,
    oauth: &BTreeMap<String, String>,
    account: &str,
    tokens: &[TbaToken],
    method: &str,
    base_url: &str,
    query: &[(String, String)],
) -> Result<(), TbaError> {
    let get = |name: &'static str| oauth.get(name).ok_or(TbaError::Missing(name));
    let realm = get("realm")?;
    if !realm.eq_ignore_ascii_case(account) {
        return Err(TbaError::Realm(realm.clone()));
    }
    let sig_method = get("oauth_signature_method")?;
    if sig_method != "HMAC-SHA256" {
        return Err(TbaError::Method(sig_method.clone()));
    }
    let consumer_key = get("oauth_consumer_key")?;
    let token_id = get("oauth_token")?;
    let nonce = get("oauth_nonce")?;
    let timestamp: u64 = get("oauth_timestamp")?
        .parse()
        .map_err(|_| TbaError::Timestamp)?;
    let signature = get("oauth_signature")?;
    let creds = tokens
        .iter()
        .find(|t| &t.consumer_key == consumer_key && &t.token_id == token_id)
        .ok_or(TbaError::UnknownToken)?;
    let now = now_ms() / 1000;
    if timestamp.abs_diff(now) > 300 {
        return Err(TbaError::Timestamp);
    }
    let mut params: Vec<(String, String)> = oauth
        .iter()
        .filter(|(k, _)| k.as_str() != "realm" && k.as_str() != "oauth_signature")
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    params.extend(query.iter().cloned());
    let expected = oauth1_signature(
        method,
        base_url,
        &params,
        &creds.consumer_secret,
        &creds.token_secret,
    );
    if !constant_time_eq(expected.as_bytes(), signature.as_bytes()) {
        return Err(TbaError::Signature);
    }
    // The nonce is recorded only for a correctly signed request, so a forged request cannot
    // burn a legitimate client's nonce.
    let mut seen = nonces.seen.lock().unwrap_or_else(|p| p.into_inner());
    seen.retain(|_, at| now.saturating_sub(*at) <= 600);
    let slot = format!("{consumer_key}\u{1}{token_id}\u{1}{nonce}");
    if seen.contains_key(&slot) {
        return Err(TbaError::NonceReused);
    }
    seen.insert(slot, now);
    Ok(())
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A public key parsed from SubjectPublicKeyInfo PEM.
#[derive(Clone, Debug)]
pub enum PublicKey {
    /// P-256, uncompressed point (verifies ES256).
    P256(Vec<u8>),
    /// RSA, PKCS#1 RSAPublicKey DER (verifies PS256).
    Rsa(Vec<u8>),
}

const OID_EC_PUBLIC_KEY: &[u8] = &[0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x02, 0x01];
const OID_RSA_ENCRYPTION: &[u8] = &[0x2A, 0x86, 0x48, 0x86, 0xF7, 0x0D, 0x01, 0x01, 0x01];

/// Reads one DER TLV; returns (tag, content, rest).
fn der_read(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7F);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
        (len, &rest[n..])
    };
    if rest.len() < len {
        return None;
    }
    Some((tag, &rest[..len], &rest[len..]))
}

impl PublicKey {
    /// Parses `-----BEGIN PUBLIC KEY-----` PEM (SubjectPublicKeyInfo).
    pub fn from_pem(pem: &str) -> Result<PublicKey, String> {
        let body: String = pem
            .lines()
            .map(str::trim)
            .filter(|l| !l.starts_with("-----") && !l.is_empty())
            .collect();
        let der = STANDARD
            .decode(body)
            .map_err(|e| format!("public key base64: {e}"))?;
        let bad = || "public key is not SubjectPublicKeyInfo DER".to_owned();
        let (tag, spki, _) = der_read(&der).ok_or_else(bad)?;
        if tag != 0x30 {
            return Err(bad());
        }
        let (tag, alg, rest) = der_read(spki).ok_or_else(bad)?;
        if tag != 0x30 {
            return Err(bad());
        }
        let (tag, oid, _) = der_read(alg).ok_or_else(bad)?;
        if tag != 0x06 {
            return Err(bad());
        }
        let (tag, bits, _) = der_read(rest).ok_or_else(bad)?;
        if tag != 0x03 || bits.first() != Some(&0) {
            return Err(bad());
        }
        let key = bits[1..].to_vec();
        if oid == OID_EC_PUBLIC_KEY {
            Ok(PublicKey::P256(key))
        } else if oid == OID_RSA_ENCRYPTION {
            Ok(PublicKey::Rsa(key))
        } else {
            Err("only P-256 (ES256) and RSA (PS256) keys are supported".to_owned())
        }
    }
}

/// Why an M2M client assertion was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwtError {
    /// Not three base64url parts of JSON.
    #[error("malformed JWT")]
    Malformed,
    /// Header alg not ES256/PS256.
    #[error("unsupported alg {0}")]
    Alg(String),
    /// No mapping for iss + kid.
    #[error("unknown client or certificate")]
    UnknownClient,
    /// Signature does not verify with the mapped public key.
    #[error("bad signature")]
    Signature,
    /// A claim is wrong.
    #[error("claim {0}")]
    Claim(&'static str),
}

/// The verified claims that matter.
#[derive(Debug, Clone)]
pub struct Assertion {
    /// The client id (`iss`).
    pub client_id: String,
}

/// Verifies a NetSuite M2M client assertion. `token_path` is the token endpoint's path; the `aud`
/// claim must be a URL with that path (the simulator's host and port are whatever the test
/// bound, so only the path is compared).
pub fn verify_assertion(
    jwt: &str,
    clients: &[M2mClient],
    token_path: &str,
) -> Result<Assertion, JwtError> {
    let mut parts = jwt.split('.');
    let (Some(h), Some(p), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(JwtError::Malformed);
    };
    let decode = |part: &str| URL_SAFE_NO_PAD.decode(part.trim_end_matches('='));
    let header: Value = decode(h)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or(JwtError::Malformed)?;
    let claims: Value = decode(p)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or(JwtError::Malformed)?;
    let sig = decode(s).map_err(|_| JwtError::Malformed)?;
    let alg = header
        .get("alg")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let kid = header
        .get("kid")
        .and_then(Value::as_str)
        .ok_or(JwtError::Claim("kid"))?;
    let iss = claims
        .get("iss")
        .and_then(Value::as_str)
        .ok_or(JwtError::Claim("iss"))?;
    let client = clients
        .iter()
        .find(|c| c.client_id == iss && c.certificate_id == kid)
        .ok_or(JwtError::UnknownClient)?;
    let key = PublicKey::from_pem(&client.public_key_pem).map_err(|_| JwtError::UnknownClient)?;
    let signed = format!("{h}.{p}");
    let verified = match (alg, &key) {
        ("ES256", PublicKey::P256(point)) => {
            UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, point)
                .verify(signed.as_bytes(), &sig)
        }
        ("PS256", PublicKey::Rsa(der)) => {
            UnparsedPublicKey::new(&signature::RSA_PSS_2048_8192_SHA256, der)
                .verify(signed.as_bytes(), &sig)
        }
        ("ES256" | "PS256", _) => return Err(JwtError::Alg(format!("{alg} for this key type"))),
        _ => return Err(JwtError::Alg(alg.to_owned())),
    };
    verified.map_err(|_| JwtError::Signature)?;
    // NetSuite documents a comma-separated string; clients also send a JSON array.
    let scopes: Vec<String> = match claims.get("scope") {
        Some(Value::String(s)) => s.split([',', ' ']).map(|p| p.trim().to_owned()).collect(),
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect(),
        _ => Vec::new(),
    };
    if !scopes.iter().any(|s| s == "rest_webservices") {
        return Err(JwtError::Claim("scope must include rest_webservices"));
    }
    let aud_ok = match claims.get("aud") {
        Some(Value::String(aud)) => aud_matches(aud, token_path),
        Some(Value::Array(auds)) => auds
            .iter()
            .filter_map(Value::as_str)
            .any(|a| aud_matches(a, token_path)),
        _ => false,
    };
    if !aud_ok {
        return Err(JwtError::Claim("aud must be the token endpoint URL"));
    }
    let now = now_ms() / 1000;
    let iat = claims
        .get("iat")
        .and_then(Value::as_u64)
        .ok_or(JwtError::Claim("iat"))?;
    let exp = claims
        .get("exp")
        .and_then(Value::as_u64)
        .ok_or(JwtError::Claim("exp"))?;
    if iat > now + 60 {
        return Err(JwtError::Claim("iat is in the future"));
    }
    if exp <= now {
        return Err(JwtError::Claim("exp has passed"));
    }
    if exp <= iat || exp - iat > 3600 {
        return Err(JwtError::Claim("exp must be within 60 minutes of iat"));
    }
    Ok(Assertion {
        client_id: iss.to_owned(),
    })
}

fn aud_matches(aud: &str, token_path: &str) -> bool {
    let Some(rest) = aud
        .strip_prefix("https://")
        .or_else(|| aud.strip_prefix("http://"))
    else {
        return false;
    };
    let path = rest.find('/').map_or("", |i| &rest[i..]);
    path == token_path
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oauth_encoding_keeps_only_unreserved() {
        assert_eq!(oauth_encode("a b&c~d-e.f_g/h"), "a%20b%26c~d-e.f_g%2Fh");
    }

    #[test]
    fn der_reader_rejects_truncation() {
        assert!(der_read(&[0x30, 0x05, 0x01]).is_none());
        assert!(der_read(&[0x30, 0x01, 0x01]).is_some());
    }

    #[test]
    fn rfc5849_example_signature_shape() {
        // HMAC-SHA1 vectors do not apply; check determinism and sensitivity instead.
        let p = vec![("a".to_owned(), "1".to_owned())];
        let s1 = oauth1_signature("GET", "http://h/p", &p, "cs", "ts");
        let s2 = oauth1_signature("GET", "http://h/p", &p, "cs", "ts2");
        assert_ne!(s1, s2);
        assert_eq!(s1, oauth1_signature("get", "http://h/p", &p, "cs", "ts"));
    }
}
