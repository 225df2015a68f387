//! NetSuite M2M client assertions: a JWT signed with the private key of the certificate
//! uploaded to the integration's OAuth 2.0 client-credentials mapping.
//!
//! Header `{"typ":"JWT","alg":"ES256"|"PS256","kid":<certificate id>}`; claims `iss` = client
//! id, `scope` = `rest_webservices`, `aud` = the token endpoint URL, `iat` = now, `exp` = now +
//! 5 minutes (NetSuite accepts at most 60; the assertion is used once, at once). ES256
//! signatures are the fixed 64-byte `r || s` JWS requires; PS256 is RSASSA-PSS with SHA-256.

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use ledgerflow_tenants::JwtAlgorithm;
use ring::rand::SystemRandom;
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, RSA_PSS_SHA256, RsaKeyPair};
use serde_json::json;

/// Lifetime of an assertion.
const ASSERTION_SECS: u64 = 300;

/// The DER inside a `-----BEGIN PRIVATE KEY-----` (PKCS#8) PEM. Errors never quote the key.
pub fn pkcs8_der(pem: &str) -> Result<Vec<u8>, String> {
    let mut inside = false;
    let mut body = String::new();
    let mut label = None;
    for line in pem.lines().map(str::trim) {
        if let Some(rest) = line.strip_prefix("-----BEGIN ") {
            label = Some(rest.trim_end_matches('-').to_owned());
            inside = true;
            continue;
        }
        if line.starts_with("-----END ") {
            break;
        }
        if inside {
            body.push_str(line);
        }
    }
    match label.as_deref() {
        Some("PRIVATE KEY") => {}
        Some(other) => {
            return Err(format!(
                "the private key is a {other:?} PEM; convert it to PKCS#8 (`openssl pkcs8 -topk8 -nocrypt`)"
            ));
        }
        None => return Err("the private key is not PEM (no BEGIN line)".to_owned()),
    }
    STANDARD
        .decode(body)
        .map_err(|_| "the private key PEM is not valid base64".to_owned())
}

/// Signs `header.claims` with the PKCS#8 key.
fn sign(der: &[u8], algorithm: JwtAlgorithm, input: &[u8]) -> Result<Vec<u8>, String> {
    let rng = SystemRandom::new();
    match algorithm {
        JwtAlgorithm::Es256 => {
            let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, der, &rng)
                .map_err(|_| "the private key is not a PKCS#8 P-256 key (ES256)".to_owned())?;
            key.sign(&rng, input)
                .map(|s| s.as_ref().to_vec())
                .map_err(|_| "signing the client assertion failed".to_owned())
        }
        JwtAlgorithm::Ps256 => {
            let key = RsaKeyPair::from_pkcs8(der).map_err(|_| {
                "the private key is not a PKCS#8 RSA key of 2048 bits or more (PS256)".to_owned()
            })?;
            let mut signature = vec![0; key.public().modulus_len()];
            key.sign(&RSA_PSS_SHA256, &rng, input, &mut signature)
                .map_err(|_| "signing the client assertion failed".to_owned())?;
            Ok(signature)
        }
    }
}

/// A new P-256 key pair for an ES256 M2M mapping: (the private key as PKCS#8 PEM, for the
/// tenants file's `private_key` reference; the public key as SubjectPublicKeyInfo PEM, for the
/// certificate or the simulator's account). Real NetSuite takes an X.509 certificate of the
/// public key, made with your PKI or `openssl req -new -x509 -key <private key>`.
pub fn generate_es256() -> Result<(String, String), String> {
    use ring::signature::KeyPair;
    let rng = SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
        .map_err(|_| "generating a P-256 key failed".to_owned())?;
    let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng)
        .map_err(|_| "reading the generated P-256 key failed".to_owned())?;
    // SubjectPublicKeyInfo of an uncompressed P-256 point: the fixed DER prefix (SEQUENCE,
    // AlgorithmIdentifier id-ecPublicKey + prime256v1, BIT STRING of 66 bytes), then the point.
    let mut spki = vec![
        0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x02, 0x01, 0x06, 0x08,
        0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
    ];
    spki.extend_from_slice(pair.public_key().as_ref());
    Ok((pem("PRIVATE KEY", pkcs8.as_ref()), pem("PUBLIC KEY", &spki)))
}

fn pem(label: &str, der: &[u8]) -> String {
    let b64 = STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(chunk));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// A signed client assertion for the token endpoint `aud`, issued at `now` (Unix seconds).
pub fn client_assertion(
    private_key_pem: &str,
    algorithm: JwtAlgorithm,
    client_id: &str,
    certificate_id: &str,
    aud: &str,
    now: u64,
) -> Result<String, String> {
    let der = pkcs8_der(private_key_pem)?;
    let header = json!({ "typ": "JWT", "alg": algorithm.as_str(), "kid": certificate_id });
    let claims = json!({
        "iss": client_id,
        "scope": "rest_webservices",
        "aud": aud,
        "iat": now,
        "exp": now + ASSERTION_SECS,
    });
    let input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let signature = sign(&der, algorithm, input.as_bytes())?;
    Ok(format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature)))
}

#[cfg(test)]
mod tests {
    use ring::signature::{
        ECDSA_P256_SHA256_FIXED, KeyPair, RSA_PSS_2048_8192_SHA256, UnparsedPublicKey,
    };
    use serde_json::Value;

    use super::*;

    const RSA_TEST_KEY: &str = include_str!("testdata/rsa2048-test-only.pem");

    fn parts(jwt: &str) -> (Value, Value, Vec<u8>, String) {
        let p: Vec<&str> = jwt.split('.').collect();
        assert_eq!(p.len(), 3);
        let json = |s: &str| serde_json::from_slice(&URL_SAFE_NO_PAD.decode(s).unwrap()).unwrap();
        (
            json(p[0]),
            json(p[1]),
            URL_SAFE_NO_PAD.decode(p[2]).unwrap(),
            format!("{}.{}", p[0], p[1]),
        )
    }

    #[test]
    fn es256_assertions_verify_with_the_public_key() {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng)
            .unwrap();
        let aud = "https://1234567.suitetalk.api.netsuite.com/services/rest/auth/oauth2/v1/token";
        let jwt = client_assertion(
            &pem("PRIVATE KEY", pkcs8.as_ref()),
            JwtAlgorithm::Es256,
            "client-1",
            "kid-1",
            aud,
            1_700_000_000,
        )
        .unwrap();
        let (header, claims, sig, signed) = parts(&jwt);
        assert_eq!(header["alg"], "ES256");
        assert_eq!(header["kid"], "kid-1");
        assert_eq!(claims["iss"], "client-1");
        assert_eq!(claims["scope"], "rest_webservices");
        assert_eq!(claims["aud"], aud);
        assert_eq!(
            claims["exp"].as_u64().unwrap() - claims["iat"].as_u64().unwrap(),
            300
        );
        assert_eq!(sig.len(), 64, "fixed r || s");
        UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, pair.public_key().as_ref())
            .verify(signed.as_bytes(), &sig)
            .expect("verifies");
    }

    #[test]
    fn ps256_assertions_verify_with_the_public_key() {
        let jwt = client_assertion(
            RSA_TEST_KEY,
            JwtAlgorithm::Ps256,
            "c",
            "k",
            "https://t/x",
            1,
        )
        .unwrap();
        let (header, _, sig, signed) = parts(&jwt);
        assert_eq!(header["alg"], "PS256");
        let der = pkcs8_der(RSA_TEST_KEY).unwrap();
        let pair = RsaKeyPair::from_pkcs8(&der).unwrap();
        UnparsedPublicKey::new(&RSA_PSS_2048_8192_SHA256, pair.public().as_ref())
            .verify(signed.as_bytes(), &sig)
            .expect("verifies");
        // The wrong algorithm for the key is an error naming what is expected.
        let err =
            client_assertion(RSA_TEST_KEY, JwtAlgorithm::Es256, "c", "k", "a", 1).unwrap_err();
        assert!(err.contains("P-256"), "{err}");
    }

    #[test]
    fn generated_keys_sign_and_their_public_key_verifies() {
        let (private, public) = generate_es256().unwrap();
        assert!(private.starts_with("-----BEGIN PRIVATE KEY-----\n"));
        assert!(public.starts_with("-----BEGIN PUBLIC KEY-----\n"));
        let jwt = client_assertion(&private, JwtAlgorithm::Es256, "c", "k", "a", 1).unwrap();
        let (_, _, sig, signed) = parts(&jwt);
        let spki: String = public.lines().filter(|l| !l.starts_with("-----")).collect();
        let spki = STANDARD.decode(spki).unwrap();
        UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, &spki[26..])
            .verify(signed.as_bytes(), &sig)
            .expect("verifies");
    }

    #[test]
    fn key_errors_never_quote_the_key() {
        let sec1 = "-----BEGIN EC PRIVATE KEY-----\nc2VjcmV0LWtleS1tYXRlcmlhbA==\n-----END EC PRIVATE KEY-----";
        let err = pkcs8_der(sec1).unwrap_err();
        assert!(err.contains("PKCS#8"), "{err}");
        assert!(!err.contains("c2VjcmV0"), "{err}");
        let err = pkcs8_der("not a key").unwrap_err();
        assert!(!err.contains("not a key"), "{err}");
        let err =
            pkcs8_der("-----BEGIN PRIVATE KEY-----\n!!!\n-----END PRIVATE KEY-----").unwrap_err();
        assert!(!err.contains("!!!"), "{err}");
    }
}
