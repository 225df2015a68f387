//! Standard Webhooks signatures (<https://www.standardwebhooks.com/>).
//!
//! The signed content is `{webhook-id}.{webhook-timestamp}.{body}`; the signature is
//! `v1,` + base64(HMAC-SHA256(key, content)), where the key is the base64-decoded part of the
//! endpoint's `whsec_<base64>` secret. A `webhook-signature` header may carry several
//! space-separated signatures (during a secret rotation); a receiver accepts the message when
//! any `v1,` one matches.
//!
//! [`WebhookSecret`] holds the key bytes and never prints them (its `Debug` is redacted).

use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::NotificationError;

type HmacSha256 = Hmac<Sha256>;

/// Prefix of Standard Webhooks secrets.
const SECRET_PREFIX: &str = "whsec_";

/// A signing key, decoded from `whsec_<base64>`.
#[derive(Clone)]
pub struct WebhookSecret {
    key: Vec<u8>,
}

impl fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("WebhookSecret(***)")
    }
}

impl WebhookSecret {
    /// Parses `whsec_<base64>` (the prefix may be left out, as Standard Webhooks libraries
    /// allow). Errors never contain the secret.
    pub fn parse(raw: &str) -> Result<Self, NotificationError> {
        let encoded = raw.trim();
        let encoded = encoded.strip_prefix(SECRET_PREFIX).unwrap_or(encoded);
        let key = STANDARD
            .decode(encoded)
            .map_err(|_| NotificationError::InvalidSecret("the part after whsec_ is not base64"))?;
        if key.is_empty() {
            return Err(NotificationError::InvalidSecret("the key is empty"));
        }
        Ok(Self { key })
    }

    fn mac(&self, id: &str, timestamp: i64, body: &[u8]) -> HmacSha256 {
        // HMAC accepts keys of any length; `new_from_slice` cannot fail for it.
        let mut mac = HmacSha256::new_from_slice(&self.key)
            .unwrap_or_else(|_| unreachable!("hmac takes keys of any length"));
        mac.update(id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        mac
    }
}

/// The `webhook-signature` header value for one message: `v1,<base64>`.
pub fn sign(secret: &WebhookSecret, id: &str, timestamp: i64, body: &[u8]) -> String {
    let tag = secret.mac(id, timestamp, body).finalize().into_bytes();
    format!("v1,{}", STANDARD.encode(tag))
}

/// Why a signature did not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// The header has no `v1,` signature at all.
    #[error("no v1 signature in the webhook-signature header")]
    NoSignature,
    /// No `v1,` signature matches the secret, id, timestamp and body.
    #[error("no signature matches (wrong secret, or the id, timestamp or body was altered)")]
    Mismatch,
    /// The timestamp is further from now than the tolerance allows (replay protection).
    #[error(
        "timestamp {timestamp} is {skew} s away from now, more than the {tolerance} s tolerated"
    )]
    Expired {
        /// The message's timestamp (unix seconds).
        timestamp: i64,
        /// Distance from now in seconds.
        skew: u64,
        /// Allowed distance in seconds.
        tolerance: u64,
    },
}

/// Verifies a `webhook-signature` header (space-separated `v1,<base64>` entries; other
/// versions are ignored). With `now_and_tolerance = Some((now, seconds))` the timestamp must
/// also be within `seconds` of `now`. The comparison is constant-time.
pub fn verify(
    secret: &WebhookSecret,
    id: &str,
    timestamp: i64,
    body: &[u8],
    header: &str,
    now_and_tolerance: Option<(i64, u64)>,
) -> Result<(), VerifyError> {
    if let Some((now, tolerance)) = now_and_tolerance {
        let skew = now.abs_diff(timestamp);
        if skew > tolerance {
            return Err(VerifyError::Expired {
                timestamp,
                skew,
                tolerance,
            });
        }
    }
    let mut any = false;
    for entry in header.split_whitespace() {
        let Some(encoded) = entry.strip_prefix("v1,") else {
            continue;
        };
        any = true;
        let Ok(tag) = STANDARD.decode(encoded) else {
            continue;
        };
        if secret.mac(id, timestamp, body).verify_slice(&tag).is_ok() {
            return Ok(());
        }
    }
    Err(if any {
        VerifyError::Mismatch
    } else {
        VerifyError::NoSignature
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    // The test vector of the Standard Webhooks reference libraries.
    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    const TIMESTAMP: i64 = 1_614_265_330;
    const BODY: &str = r#"{"test": 2432232314}"#;
    const SIGNATURE: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

    fn secret() -> WebhookSecret {
        WebhookSecret::parse(SECRET).unwrap()
    }

    #[test]
    fn signs_the_standard_webhooks_test_vector() {
        assert_eq!(sign(&secret(), ID, TIMESTAMP, BODY.as_bytes()), SIGNATURE);
        // Without the prefix the key is the same.
        let bare = WebhookSecret::parse(SECRET.trim_start_matches("whsec_")).unwrap();
        assert_eq!(sign(&bare, ID, TIMESTAMP, BODY.as_bytes()), SIGNATURE);
    }

    #[test]
    fn verifies_any_v1_signature_in_the_list() {
        let s = secret();
        assert_eq!(
            verify(&s, ID, TIMESTAMP, BODY.as_bytes(), SIGNATURE, None),
            Ok(())
        );
        let list = format!("v2,abc v1,AAAA {SIGNATURE}");
        assert_eq!(
            verify(&s, ID, TIMESTAMP, BODY.as_bytes(), &list, None),
            Ok(())
        );
        let tolerance = Some((TIMESTAMP + 299, 300));
        assert_eq!(
            verify(&s, ID, TIMESTAMP, BODY.as_bytes(), SIGNATURE, tolerance),
            Ok(())
        );
    }

    #[test]
    fn rejects_altered_messages_missing_signatures_and_old_timestamps() {
        let s = secret();
        let altered = r#"{"test": 2432232315}"#;
        assert_eq!(
            verify(&s, ID, TIMESTAMP, altered.as_bytes(), SIGNATURE, None),
            Err(VerifyError::Mismatch)
        );
        assert_eq!(
            verify(&s, "msg_other", TIMESTAMP, BODY.as_bytes(), SIGNATURE, None),
            Err(VerifyError::Mismatch)
        );
        assert_eq!(
            verify(&s, ID, TIMESTAMP + 1, BODY.as_bytes(), SIGNATURE, None),
            Err(VerifyError::Mismatch)
        );
        assert_eq!(
            verify(&s, ID, TIMESTAMP, BODY.as_bytes(), "v2,xyz", None),
            Err(VerifyError::NoSignature)
        );
        let other = WebhookSecret::parse("whsec_c2VjcmV0LXZhbHVl").unwrap();
        assert_eq!(
            verify(&other, ID, TIMESTAMP, BODY.as_bytes(), SIGNATURE, None),
            Err(VerifyError::Mismatch)
        );
        let err = verify(
            &s,
            ID,
            TIMESTAMP,
            BODY.as_bytes(),
            SIGNATURE,
            Some((TIMESTAMP + 301, 300)),
        )
        .unwrap_err();
        assert_eq!(
            err,
            VerifyError::Expired {
                timestamp: TIMESTAMP,
                skew: 301,
                tolerance: 300
            }
        );
    }

    #[test]
    fn bad_secrets_are_rejected_without_echoing_them() {
        for raw in ["whsec_not base64!!", "whsec_", ""] {
            let err = WebhookSecret::parse(raw).unwrap_err().to_string();
            assert!(err.starts_with("invalid webhook signing secret"), "{err}");
            assert!(!err.contains("!!"), "{err}");
        }
        assert_eq!(format!("{:?}", secret()), "WebhookSecret(***)");
    }
}
