//! The registry client against a registry that requires authentication: anonymous requests are
//! refused (401, retryable: a credentials problem must pause, not dead-letter), basic and bearer
//! credentials from the environment (by value or by file) are accepted, and no error or
//! `Debug` output carries the secret.

use std::collections::BTreeMap;
use std::time::Duration;

use ledgerflow_codec::{CodecError, RegistryAuth, RegistryClient, auth_vars};
use ledgerflow_registry::{Credentials, RegistryConfig, connect, serve_with};

async fn registry(credentials: Credentials) -> (String, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("r.db").display());
    let state = connect(&RegistryConfig { database_url: url })
        .await
        .expect("registry store");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(serve_with(
        listener,
        state,
        credentials,
        std::future::pending(),
    ));
    (format!("http://{addr}"), dir)
}

const SCHEMA: &str = r#"{"type":"record","name":"A","fields":[{"name":"x","type":"long"}]}"#;

#[tokio::test]
async fn anonymous_is_refused_and_basic_or_bearer_from_the_environment_is_accepted() {
    let (url, _dir) = registry(Credentials::new(
        vec![("svc".into(), "pa55:word".into())],
        vec!["token-abc".into()],
    ))
    .await;
    let client = RegistryClient::new(&url, Duration::from_secs(5)).expect("client");
    let err = client
        .register("s-value", SCHEMA)
        .await
        .expect_err("anonymous");
    assert!(
        matches!(err, CodecError::RegistryStatus { status: 401, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("40101"), "{err}");

    let dir = tempfile::tempdir().expect("temp dir");
    let info = dir.path().join("user-info");
    std::fs::write(&info, "svc:pa55:word\n").expect("file");
    let env: BTreeMap<&str, String> =
        [(auth_vars::USER_INFO_FILE, info.display().to_string())].into();
    let auth = RegistryAuth::from_env(|k| env.get(k).cloned()).expect("auth");
    assert!(matches!(&auth, Some(RegistryAuth::Basic { username, .. }) if username == "svc"));
    assert!(
        !format!("{auth:?}").contains("pa55"),
        "Debug redacts the password"
    );
    let basic = client.clone().with_auth(auth);
    let id = basic.register("s-value", SCHEMA).await.expect("basic auth");
    let schema = basic.schema_by_id(id).await.expect("read back").schema;
    assert!(schema.contains("long"), "{schema}");

    let env: BTreeMap<&str, String> = [(auth_vars::BEARER_TOKEN, "token-abc".to_owned())].into();
    let bearer = client
        .clone()
        .with_auth(RegistryAuth::from_env(|k| env.get(k).cloned()).expect("auth"));
    assert_eq!(
        bearer.register("s-value", SCHEMA).await.expect("bearer"),
        id
    );

    let wrong = client.with_auth(Some(RegistryAuth::Bearer {
        token: "not-the-token".into(),
    }));
    let err = wrong.schema_by_id(id).await.expect_err("wrong token");
    assert!(!err.to_string().contains("not-the-token"), "{err}");
    let failure = err.failure();
    assert!(
        matches!(failure, ledgerflow_core::Failure::Retryable { .. }),
        "a credentials problem pauses, it never dead-letters"
    );
}

#[test]
fn conflicting_or_malformed_settings_are_refused_without_the_secret() {
    let both: BTreeMap<&str, String> = [
        (auth_vars::USER_INFO, "a:b".to_owned()),
        (auth_vars::BEARER_TOKEN, "t".to_owned()),
    ]
    .into();
    assert!(RegistryAuth::from_env(|k| both.get(k).cloned()).is_err());
    let malformed: BTreeMap<&str, String> =
        [(auth_vars::USER_INFO, "no-colon-secret".to_owned())].into();
    let err = RegistryAuth::from_env(|k| malformed.get(k).cloned()).expect_err("malformed");
    assert!(!err.contains("no-colon-secret"), "{err}");
    let none: BTreeMap<&str, String> = BTreeMap::new();
    assert_eq!(RegistryAuth::from_env(|k| none.get(k).cloned()), Ok(None));
}
