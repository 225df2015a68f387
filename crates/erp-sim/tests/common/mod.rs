//! Shared harness: an in-process simulator on a random port, a fresh state directory, and
//! helpers to sign NetSuite requests the way a client would (written here independently of the
//! simulator's own verification code, so a bug on either side fails the tests).

#![allow(dead_code, unreachable_pub)]

use std::net::SocketAddr;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use hmac::{Hmac, Mac};
use ledgerflow_erp_sim::{RunningSim, SimConfig};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde_json::{Value, json};
use sha2::Sha256;

pub struct Harness {
    pub sim: Option<RunningSim>,
    pub dir: tempfile::TempDir,
    pub http: reqwest::Client,
    pub url: String,
}

pub async fn start() -> Harness {
    start_with(|_| {}).await
}

pub async fn start_with(configure: impl FnOnce(&mut SimConfig)) -> Harness {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = SimConfig::new(loopback(), dir.path().to_path_buf());
    config.job_delay_ms = 300;
    configure(&mut config);
    let sim = ledgerflow_erp_sim::start(config)
        .await
        .expect("start simulator");
    let url = sim.url();
    Harness {
        sim: Some(sim),
        dir,
        http: client(),
        url,
    }
}

pub fn loopback() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(20))
        .build()
        .expect("client")
}

impl Harness {
    /// Stops the simulator and starts a new one on the same state directory.
    pub async fn restart(&mut self) {
        if let Some(sim) = self.sim.take() {
            sim.stop().await;
        }
        let mut config = SimConfig::new(loopback(), self.dir.path().to_path_buf());
        config.job_delay_ms = 300;
        let sim = ledgerflow_erp_sim::start(config)
            .await
            .expect("restart simulator");
        self.url = sim.url();
        self.http = client();
        self.sim = Some(sim);
    }

    pub async fn provision(&self, account: Value) {
        let resp = self
            .http
            .post(format!("{}/_sim/accounts", self.url))
            .json(&account)
            .send()
            .await
            .expect("provision");
        assert_eq!(
            resp.status(),
            201,
            "provision: {}",
            resp.text().await.unwrap_or_default()
        );
    }

    pub async fn report(&self) -> Value {
        self.http
            .get(format!("{}/_sim/report", self.url))
            .send()
            .await
            .expect("report")
            .json()
            .await
            .expect("report json")
    }

    pub async fn documents(&self, erp: &str) -> Vec<Value> {
        let v: Value = self
            .http
            .get(format!("{}/_sim/documents?erp={erp}", self.url))
            .send()
            .await
            .expect("documents")
            .json()
            .await
            .expect("documents json");
        v["documents"].as_array().cloned().unwrap_or_default()
    }

    pub async fn set_faults(&self, faults: Value) {
        let resp = self
            .http
            .post(format!("{}/_sim/faults", self.url))
            .json(&faults)
            .send()
            .await
            .expect("faults");
        assert_eq!(
            resp.status(),
            200,
            "faults: {}",
            resp.text().await.unwrap_or_default()
        );
    }
}

/// The report's figures for one ERP.
pub fn erp<'a>(report: &'a Value, name: &str) -> &'a Value {
    &report["erps"][name]
}

const ENCODE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

fn enc(s: &str) -> String {
    utf8_percent_encode(s, ENCODE).to_string()
}

pub struct Tba {
    pub realm: String,
    pub consumer_key: String,
    pub consumer_secret: String,
    pub token_id: String,
    pub token_secret: String,
}

pub fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// An OAuth 1.0a HMAC-SHA256 Authorization header for NetSuite TBA.
pub fn tba_header(
    tba: &Tba,
    method: &str,
    url: &str,
    query: &[(&str, &str)],
    nonce: &str,
) -> String {
    let timestamp = now_secs().to_string();
    let mut params: Vec<(String, String)> = vec![
        ("oauth_consumer_key".into(), tba.consumer_key.clone()),
        ("oauth_nonce".into(), nonce.into()),
        ("oauth_signature_method".into(), "HMAC-SHA256".into()),
        ("oauth_timestamp".into(), timestamp.clone()),
        ("oauth_token".into(), tba.token_id.clone()),
        ("oauth_version".into(), "1.0".into()),
    ];
    params.extend(
        query
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
    );
    let mut encoded: Vec<(String, String)> = params.iter().map(|(k, v)| (enc(k), enc(v))).collect();
    encoded.sort();
    let param_string: Vec<String> = encoded.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let base = format!("{method}&{}&{}", enc(url), enc(&param_string.join("&")));
    let key = format!("{}&{}", enc(&tba.consumer_secret), enc(&tba.token_secret));
    let mut mac = Hmac::<Sha256>::new_from_slice(key.as_bytes()).expect("hmac key");
    mac.update(base.as_bytes());
    let signature = STANDARD.encode(mac.finalize().into_bytes());
    format!(
        "OAuth realm=\"{}\", oauth_consumer_key=\"{}\", oauth_token=\"{}\", \
         oauth_signature_method=\"HMAC-SHA256\", oauth_timestamp=\"{timestamp}\", \
         oauth_nonce=\"{nonce}\", oauth_version=\"1.0\", oauth_signature=\"{}\"",
        tba.realm,
        tba.consumer_key,
        tba.token_id,
        enc(&signature)
    )
}

pub fn tba(realm: &str, n: u32) -> Tba {
    Tba {
        realm: realm.into(),
        consumer_key: format!("ck{n}"),
        consumer_secret: format!("cs{n}"),
        token_id: format!("tk{n}"),
        token_secret: format!("ts{n}"),
    }
}

pub fn tba_json(t: &Tba) -> Value {
    json!({
        "consumer_key": t.consumer_key, "consumer_secret": t.consumer_secret,
        "token_id": t.token_id, "token_secret": t.token_secret,
    })
}

/// A P-256 key for NetSuite M2M: (signing key, SubjectPublicKeyInfo PEM).
pub fn es256_key() -> (ring::signature::EcdsaKeyPair, String) {
    use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
    let rng = ring::rand::SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).expect("key");
    let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng)
        .expect("key");
    let mut spki = vec![
        0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x02, 0x01, 0x06, 0x08,
        0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
    ];
    spki.extend_from_slice(pair.public_key().as_ref());
    let pem = format!(
        "-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n",
        STANDARD.encode(spki)
    );
    (pair, pem)
}

/// A signed ES256 client assertion.
pub fn es256_jwt(key: &ring::signature::EcdsaKeyPair, kid: &str, claims: &Value) -> String {
    let header = json!({ "typ": "JWT", "alg": "ES256", "kid": kid });
    let input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let rng = ring::rand::SystemRandom::new();
    let sig = key.sign(&rng, input.as_bytes()).expect("sign");
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig.as_ref()))
}

/// A zip with one file, deflated.
pub fn zip_one(name: &str, content: &str) -> String {
    use std::io::Write as _;
    let mut cursor = std::io::Cursor::new(Vec::new());
    {
        let mut zip = zip::ZipWriter::new(&mut cursor);
        let options = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated);
        zip.start_file(name, options).expect("zip entry");
        zip.write_all(content.as_bytes()).expect("zip write");
        zip.finish().expect("zip finish");
    }
    STANDARD.encode(cursor.into_inner())
}
