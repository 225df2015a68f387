//! Locked doors, end to end: a Kafka broker reached over SASL_SSL (SCRAM-SHA-512) and over SSL
//! with a client certificate (mTLS), a schema registry that requires basic authentication, and
//! every secret given by reference (`${file:...}`, `*_FILE` variables), never on a command line.
//!
//! Then the redaction check: every output of the run — stdout and stderr of every command, the
//! database dumped with `pg_dump` (audit log, dead letters, outboxes, deliveries) — is searched
//! for each secret the test configured: the SCRAM password, the registry password, and the ERP
//! and webhook secrets of the generated tenants file. None may appear.

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use ledgerflow_e2e::{KafkaCluster, PgDatabase, free_port, ledgerflow_bin};

struct Registry(Child);

impl Drop for Registry {
    fn drop(&mut self) {
        let _killed = self.0.kill();
        let _reaped = self.0.wait();
    }
}

fn ledgerflow(env: &[(&str, String)], args: &[&str]) -> Output {
    let mut cmd = ledgerflow_e2e::bare_command(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run ledgerflow")
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn sasl_ssl_mtls_and_registry_auth_work_and_no_secret_leaks() {
    let kafka = KafkaCluster::start_tls();
    let tls = kafka.tls.clone().expect("TLS listeners");
    let dir = tempfile::tempdir().expect("temp dir");
    let path = |name: &str| dir.path().join(name).display().to_string();

    // The registry, behind basic auth.
    let registry_password = format!("reg-{}", uuid::Uuid::new_v4().simple());
    std::fs::write(
        path("registry-users"),
        format!("ledgerflow:{registry_password}\n"),
    )
    .expect("users file");
    std::fs::write(
        path("registry-user-info"),
        format!("ledgerflow:{registry_password}\n"),
    )
    .expect("user info file");
    let port = free_port();
    let registry = Registry(
        Command::new(ledgerflow_bin())
            .args([
                "registry",
                "serve",
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--database",
                &format!("sqlite://{}", path("registry.db")),
                "--basic-auth-file",
                &path("registry-users"),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("registry"),
    );
    let registry_url = format!("http://127.0.0.1:{port}");
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }

    // Kafka: the topic over the plaintext admin listener, everything else over SASL_SSL.
    let topic = "e2e.security";
    kafka.create_topic(topic, 3);
    let scram_password = std::fs::read_to_string(&tls.scram_password_file)
        .expect("scram password")
        .trim()
        .to_owned();
    let sasl = [
        "--kafka-property".to_owned(),
        "security.protocol=SASL_SSL".to_owned(),
        "--kafka-property".to_owned(),
        "sasl.mechanisms=SCRAM-SHA-512".to_owned(),
        "--kafka-property".to_owned(),
        "sasl.username=ledgerflow".to_owned(),
        "--kafka-property".to_owned(),
        format!(
            "sasl.password=${{file:{}}}",
            tls.scram_password_file.display()
        ),
        "--kafka-property".to_owned(),
        format!("ssl.ca.location={}", tls.ca.display()),
    ];
    let env = vec![
        ("LEDGERFLOW_BROKERS", tls.sasl_ssl.clone()),
        ("LEDGERFLOW_SCHEMA_REGISTRY_URL", registry_url.clone()),
        (
            "LEDGERFLOW_SCHEMA_REGISTRY_USER_INFO_FILE",
            path("registry-user-info"),
        ),
        ("LEDGERFLOW_GROUP_PREFIX", "e2e-security".to_owned()),
    ];
    let mut outputs = String::new();

    // Without registry credentials the producer is refused (401), and says so.
    let anonymous: Vec<(&str, String)> = env
        .iter()
        .filter(|(k, _)| !k.contains("USER_INFO"))
        .cloned()
        .collect();
    let mut args = vec![
        "produce",
        "--topic",
        topic,
        "--tenants",
        "3",
        "--events",
        "10",
    ];
    args.extend(sasl.iter().map(String::as_str));
    let refused = ledgerflow(&anonymous, &args);
    outputs.push_str(&text(&refused));
    assert!(
        !refused.status.success(),
        "the registry refuses an anonymous producer"
    );
    assert!(text(&refused).contains("401"), "{}", text(&refused));

    let tenants = path("tenants.toml");
    let manifest = path("manifest.json");
    let db = PgDatabase::create("lf_security");
    let mut args = vec![
        "produce",
        "--topic",
        topic,
        "--tenants",
        "4",
        "--events",
        "600",
        "--manifest",
        &manifest,
        "--tenants-file",
        &tenants,
        "--webhook-url",
        "http://127.0.0.1:9/hooks",
    ];
    args.extend(sasl.iter().map(String::as_str));
    let produced = ledgerflow(&env, &args);
    outputs.push_str(&text(&produced));
    assert!(
        produced.status.success(),
        "produce over SASL_SSL:\n{}",
        text(&produced)
    );

    let mut args = vec![
        "run",
        "--consumer",
        "erp-receivables",
        "--consumer",
        "warehouse",
        "--database",
        &db.url,
        "--topic",
        topic,
        "--tenants",
        &tenants,
        "--exit-when-idle",
        "3s",
        "--max-wait",
        "5m",
        "--format",
        "json",
    ];
    args.extend(sasl.iter().map(String::as_str));
    let run = ledgerflow(&env, &args);
    outputs.push_str(&text(&run));
    assert!(run.status.success(), "run over SASL_SSL:\n{}", text(&run));
    let summary: serde_json::Value = serde_json::from_slice(&run.stdout).expect("summary");
    assert!(
        summary
            .as_array()
            .is_some_and(|a| a.iter().all(|s| s["exit"] == "drained")),
        "{summary:#}"
    );

    let reconcile = ledgerflow(
        &env,
        &[
            "reconcile",
            "--database",
            &db.url,
            "--source",
            &manifest,
            "--format",
            "json",
        ],
    );
    outputs.push_str(&text(&reconcile));
    assert!(
        reconcile.status.success(),
        "reconcile:\n{}",
        text(&reconcile)
    );

    // The same records over the mTLS listener with the client certificate.
    let mtls_env: Vec<(&str, String)> = env
        .iter()
        .map(|(k, v)| {
            if *k == "LEDGERFLOW_BROKERS" {
                (*k, tls.ssl.clone())
            } else {
                (*k, v.clone())
            }
        })
        .collect();
    let ca = format!("ssl.ca.location={}", tls.ca.display());
    let cert = format!("ssl.certificate.location={}", tls.client_cert.display());
    let key = format!("ssl.key.location={}", tls.client_key.display());
    let tail = ledgerflow(
        &mtls_env,
        &[
            "tail",
            "--topic",
            topic,
            "--from-beginning",
            "--exit-at-end",
            "--format",
            "json",
            "--kafka-property",
            "security.protocol=SSL",
            "--kafka-property",
            &ca,
            "--kafka-property",
            &cert,
            "--kafka-property",
            &key,
        ],
    );
    outputs.push_str(&text(&tail));
    assert!(tail.status.success(), "tail over mTLS:\n{}", text(&tail));
    let lines = String::from_utf8_lossy(&tail.stdout).lines().count();
    assert_eq!(lines, 600, "every record read back over mTLS");

    // Redaction: no configured secret anywhere.
    let dump = Command::new("pg_dump")
        .args(["--data-only", &db.url])
        .output()
        .expect("pg_dump");
    assert!(
        dump.status.success(),
        "pg_dump: {}",
        String::from_utf8_lossy(&dump.stderr)
    );
    let database = String::from_utf8_lossy(&dump.stdout).into_owned();
    assert!(database.contains("audit_log"), "the dump holds the ledger");
    let mut secrets = vec![
        ("SCRAM password".to_owned(), scram_password),
        ("registry password".to_owned(), registry_password),
    ];
    let secrets_dir = Path::new(&tenants).with_extension("secrets");
    for entry in std::fs::read_dir(&secrets_dir).expect("the tenants file's secrets") {
        let entry = entry.expect("entry");
        let value = std::fs::read_to_string(entry.path()).expect("secret");
        for line in value.lines().map(str::trim).filter(|l| l.len() >= 8) {
            // A PEM key is searched by its body lines.
            if !line.starts_with("-----") {
                secrets.push((
                    entry.file_name().to_string_lossy().into_owned(),
                    line.to_owned(),
                ));
            }
        }
    }
    assert!(
        secrets.len() > 2,
        "the tenants file has ERP and webhook secrets"
    );
    for (name, secret) in &secrets {
        assert!(
            !outputs.contains(secret.as_str()),
            "{name} appears in a command's output"
        );
        assert!(
            !database.contains(secret.as_str()),
            "{name} appears in the database"
        );
    }
    eprintln!(
        "SASL_SSL run drained and reconciled, {lines} records over mTLS, {} secrets absent from \
         {} bytes of output and {} bytes of database",
        secrets.len(),
        outputs.len(),
        database.len()
    );
    drop(registry);
}
