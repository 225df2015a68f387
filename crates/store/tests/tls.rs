//! The store over TLS to the local Postgres, as production runs it: `sslmode=verify-full` with
//! the server's CA, for a role the server admits only over TLS (`ledgerflow_tls`, see
//! scripts/ensure-postgres.sh: `hostnossl ... reject`, `hostssl ... scram-sha-256`).
//!
//! Proves: verify-full with the right CA connects (and the session is encrypted), the same
//! role without TLS is refused by the server, and a server certificate from another CA is
//! refused by the client. The CA is `.local/postgres-tls/ca.pem` (`LEDGERFLOW_TEST_PG_CA`
//! overrides), made by `make setup`.

use std::path::PathBuf;

use ledgerflow_store::Store;
use ledgerflow_testkit::{PgDatabase, block_on, postgres_admin_url};
use sqlx::{Connection, PgConnection};

fn ca() -> PathBuf {
    std::env::var_os("LEDGERFLOW_TEST_PG_CA")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.local/postgres-tls/ca.pem")
        })
}

/// The TLS-only role with a fresh password, owning a fresh database.
fn tls_role_and_database() -> (PgDatabase, String) {
    let db = PgDatabase::create("lf_tls");
    let password = uuid::Uuid::new_v4().simple().to_string();
    let admin = postgres_admin_url();
    block_on(async {
        let mut conn = PgConnection::connect(&admin)
            .await
            .expect("admin connection");
        // The role is cluster-wide; tests that run at once agree on it, not on its password,
        // so only the last password set is known: serialise through an advisory lock.
        sqlx::query("SELECT pg_advisory_lock(727271)")
            .execute(&mut conn)
            .await
            .expect("lock");
        let exists: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'ledgerflow_tls')",
        )
        .fetch_one(&mut conn)
        .await
        .expect("role lookup");
        let verb = if exists { "ALTER" } else { "CREATE" };
        sqlx::query(&format!(
            "{verb} ROLE ledgerflow_tls LOGIN PASSWORD '{password}'"
        ))
        .execute(&mut conn)
        .await
        .expect("role");
        sqlx::query(&format!(
            "ALTER DATABASE {} OWNER TO ledgerflow_tls",
            db.name
        ))
        .execute(&mut conn)
        .await
        .expect("owner");
        sqlx::query("SELECT pg_advisory_unlock(727271)")
            .execute(&mut conn)
            .await
            .expect("unlock");
    });
    (db, password)
}

fn url(db: &PgDatabase, password: &str, tls: &str) -> String {
    format!(
        "postgres://ledgerflow_tls:{password}@localhost:5432/{}?{tls}",
        db.name
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn verify_full_connects_and_plain_or_foreign_ca_is_refused() {
    let ca = ca();
    assert!(
        ca.exists(),
        "{} is missing: run `make setup` (scripts/ensure-postgres.sh makes it)",
        ca.display()
    );
    let (db, password) = tokio::task::spawn_blocking(tls_role_and_database)
        .await
        .expect("setup");

    let good = url(
        &db,
        &password,
        &format!("sslmode=verify-full&sslrootcert={}", ca.display()),
    );
    let store = Store::open(&good)
        .await
        .unwrap_or_else(|e| panic!("verify-full with the server's CA: {e}"));
    let encrypted: bool =
        sqlx::query_scalar("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
            .fetch_one(store.pool())
            .await
            .expect("pg_stat_ssl");
    assert!(encrypted, "the session is encrypted");
    // The store works over it: its schema is applied and a position can be read.
    assert_eq!(
        store.position("c", "t", 0).await.expect("position read"),
        None
    );
    store.pool().close().await;

    let plain = url(&db, &password, "sslmode=disable");
    let err = Store::open(&plain)
        .await
        .expect_err("the server admits ledgerflow_tls only over TLS");
    let text = error_chain(&err);
    assert!(
        text.contains("no encryption") || text.contains("pg_hba.conf"),
        "refused by pg_hba: {text}"
    );
    assert!(
        !text.contains(&password),
        "the password is not in the error: {text}"
    );

    // A CA that did not sign the server's certificate.
    let dir = tempfile::tempdir().expect("temp dir");
    let foreign = dir.path().join("foreign-ca.pem");
    let made = std::process::Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
        ])
        .arg("-keyout")
        .arg(dir.path().join("foreign-ca.key"))
        .arg("-out")
        .arg(&foreign)
        .args(["-subj", "/CN=someone else"])
        .output()
        .expect("openssl");
    assert!(made.status.success(), "openssl: {made:?}");
    let wrong = url(
        &db,
        &password,
        &format!("sslmode=verify-full&sslrootcert={}", foreign.display()),
    );
    let err = Store::open(&wrong)
        .await
        .expect_err("a certificate from another CA is refused");
    let text = error_chain(&err);
    assert!(
        text.to_lowercase().contains("certificate"),
        "refused for its certificate: {text}"
    );
}

/// The error with its sources, one line.
fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}
