//! `ledgerflow postings` through the binary on a SQLite store (no broker needed): JSON output,
//! dry runs that change nothing, exit codes, the audit entries of executed actions, and
//! reconcile naming the failed posting. The delivery side (a requeued posting reaches the ERP
//! once) is tested against the simulator in crates/erp-receivables/tests/postings_ops.rs.

use std::process::Output;

use ledgerflow_e2e::{Ledger, ledgerflow_bin};

const CONSUMER: &str = "erp-receivables";

fn ledgerflow(args: &[&str]) -> Output {
    ledgerflow_e2e::bare_command(args)
        .env("LEDGERFLOW_OPERATOR", "ops-bot")
        .output()
        .unwrap_or_else(|e| panic!("running {}: {e}", ledgerflow_bin().display()))
}

fn code(out: &Output) -> i32 {
    out.status.code().unwrap_or(-1)
}

fn json(out: &Output, what: &str) -> serde_json::Value {
    ledgerflow_e2e::output_json(out, what)
}

fn now_micros() -> i64 {
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970");
    i64::try_from(since.as_micros()).expect("micros fit")
}

/// Inserts a posting in `status` the way the writer and the dispatcher leave it.
fn insert_posting(ledger: &Ledger, id: &str, tenant: &str, status: &str) {
    ledger.block_on(async {
        sqlx::query(
            "INSERT INTO erp_outbox (id, tenant_id, journal_id, erp_kind, endpoint, credential,
             idempotency_key, payload, status, attempts, next_attempt_at, created_at,
             external_id, journal_kind, document_kind, erp_account, route, config_version,
             last_error_class, last_error, last_status, last_request, last_response, history,
             updated_at, indefinite)
             VALUES ($1, $2, $1, 'netsuite', 'http://127.0.0.1:9/netsuite/NS1', '{}', $3,
                     '{\"memo\":\"m\"}', $4, 10, $5, $5, $3, 'invoice', 'journalEntry',
                     'NS1', '{}', 'cfg-1', 'server', '503 Service Unavailable', 503,
                     'PUT /services/rest/record/v1/journalEntry/eid:x', '503 busy',
                     '[{\"attempt\":10,\"outcome\":\"retry\",\"class\":\"server\"}]', $5, 0)",
        )
        .bind(id.to_owned())
        .bind(tenant.to_owned())
        .bind(format!("lf-{tenant}-{id}-inv"))
        .bind(status.to_owned())
        .bind(now_micros())
        .execute(ledger.pool())
        .await
        .expect("insert posting");
    });
}

fn status(ledger: &Ledger, id: &str) -> (String, i64) {
    ledger.block_on(async {
        let row: (String, i64) =
            sqlx::query_as("SELECT status, attempts FROM erp_outbox WHERE id = $1")
                .bind(id.to_owned())
                .fetch_one(ledger.pool())
                .await
                .expect("posting");
        row
    })
}

#[test]
fn postings_commands_list_show_requeue_resolve_and_audit() {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = format!("sqlite://{}", dir.path().join("ledger.db").display());
    // Any postings command creates the outbox in a store where erp-receivables never ran.
    let out = ledgerflow(&["postings", "list", "--database", &db, "--format", "json"]);
    assert_eq!(code(&out), 0, "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(json(&out, "list"), serde_json::json!([]));

    let ledger = Ledger::open(&db);
    insert_posting(&ledger, "p-failed-1", "acme", "failed");
    insert_posting(&ledger, "p-failed-2", "acme", "failed");
    insert_posting(&ledger, "p-other", "beta", "failed");
    insert_posting(&ledger, "p-done", "acme", "confirmed");

    // list: the filter and the JSON.
    let out = ledgerflow(&[
        "postings",
        "list",
        "--database",
        &db,
        "--status",
        "failed",
        "--tenant",
        "acme",
        "--format",
        "json",
    ]);
    assert_eq!(code(&out), 0);
    let listed = json(&out, "list");
    let ids: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["p-failed-1", "p-failed-2"]);
    assert_eq!(listed[0]["last_error_class"], "server");
    assert_eq!(listed[0]["status"], "failed");
    let out = ledgerflow(&["postings", "list", "--database", &db, "--format", "table"]);
    assert_eq!(code(&out), 0);
    assert!(String::from_utf8_lossy(&out.stdout).contains("4 postings"));
    let out = ledgerflow(&["postings", "list", "--database", &db, "--status", "stuck"]);
    assert_eq!(code(&out), 2, "an unknown state is bad usage");

    // show
    let out = ledgerflow(&[
        "postings",
        "show",
        "p-failed-1",
        "--database",
        &db,
        "--format",
        "json",
    ]);
    assert_eq!(code(&out), 0);
    let shown = json(&out, "show");
    assert_eq!(shown["attempts"], 10);
    assert_eq!(shown["config_version"], "cfg-1");
    assert_eq!(shown["last_status"], 503);
    assert_eq!(shown["last_response"], "503 busy");
    assert_eq!(shown["history"][0]["class"], "server");
    let out = ledgerflow(&["postings", "show", "nope", "--database", &db]);
    assert_eq!(code(&out), 1, "an unknown id is an error");
    assert!(String::from_utf8_lossy(&out.stderr).contains("no erp posting with id nope"));

    // reconcile names the failed postings and is not clean.
    let out = ledgerflow(&["reconcile", "--database", &db, "--format", "json"]);
    assert_eq!(code(&out), 1);
    let report = json(&out, "reconcile");
    assert_eq!(report["clean"], false);
    assert_eq!(report["stuck_after_secs"], 3600);
    let undelivered = &report["tenants"]["acme"]["erp"]["undelivered"];
    assert_eq!(undelivered[0]["id"], "p-failed-1", "{report:#}");
    assert_eq!(undelivered[0]["state"], "failed");

    // requeue: a dry run first, which changes nothing.
    let out = ledgerflow(&[
        "postings",
        "requeue",
        "--status",
        "failed",
        "--tenant",
        "acme",
        "--database",
        &db,
        "--format",
        "json",
    ]);
    assert_eq!(code(&out), 0, "{}", String::from_utf8_lossy(&out.stderr));
    let dry = json(&out, "requeue dry run");
    assert_eq!(dry["executed"], false);
    assert_eq!(dry["requeued"], 2);
    assert_eq!(dry["operation_id"], serde_json::Value::Null);
    assert_eq!(status(&ledger, "p-failed-1"), ("failed".to_owned(), 10));
    assert!(ledger.operations(CONSUMER).is_empty());
    // Usage errors.
    for args in [
        vec!["postings", "requeue", "--database", &db],
        vec![
            "postings",
            "requeue",
            "p-failed-1",
            "--re-render",
            "--database",
            &db,
        ],
        vec![
            "postings",
            "requeue",
            "p-failed-1",
            "--status",
            "failed",
            "--database",
            &db,
        ],
        vec![
            "postings",
            "requeue",
            "--status",
            "pending",
            "--database",
            &db,
        ],
        vec!["postings", "resolve", "p-failed-1", "--database", &db],
    ] {
        let out = ledgerflow(&args);
        assert_eq!(
            code(&out),
            2,
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    // requeue --execute: pending, attempts reset, audited.
    let out = ledgerflow(&[
        "postings",
        "requeue",
        "--status",
        "failed",
        "--tenant",
        "acme",
        "--execute",
        "--reason",
        "erp back up",
        "--database",
        &db,
        "--format",
        "json",
    ]);
    assert_eq!(code(&out), 0, "{}", String::from_utf8_lossy(&out.stderr));
    let done = json(&out, "requeue");
    assert_eq!(done["executed"], true);
    assert_eq!(done["requeued"], 2);
    let operation = done["operation_id"]
        .as_str()
        .expect("operation id")
        .to_owned();
    assert_eq!(status(&ledger, "p-failed-1"), ("pending".to_owned(), 0));
    assert_eq!(status(&ledger, "p-failed-2"), ("pending".to_owned(), 0));
    assert_eq!(status(&ledger, "p-other").0, "failed", "another tenant's");
    let ops = ledger.operations(CONSUMER);
    assert_eq!(ops.len(), 1);
    assert_eq!(ops[0].event_type.as_deref(), Some("erp_requeue"));
    assert_eq!(ops[0].event_id.as_deref(), Some(operation.as_str()));
    let detail: serde_json::Value =
        serde_json::from_str(ops[0].detail.as_deref().unwrap()).unwrap();
    assert_eq!(detail["operator"], "ops-bot");
    assert_eq!(detail["reason"], "erp back up");
    assert_eq!(detail["details"]["requeued"], 2);
    // Requeueing a posting that is no longer failed is refused (exit 2), and not audited.
    let out = ledgerflow(&[
        "postings",
        "requeue",
        "p-failed-1",
        "--execute",
        "--database",
        &db,
    ]);
    assert_eq!(code(&out), 2);
    assert_eq!(ledger.operations(CONSUMER).len(), 1);

    // resolve: dry, then executed; the reason is kept and audited.
    let out = ledgerflow(&[
        "postings",
        "resolve",
        "p-other",
        "--reason",
        "posted by hand as JE-9",
        "--database",
        &db,
    ]);
    assert_eq!(code(&out), 0);
    assert!(String::from_utf8_lossy(&out.stdout).contains("dry run"));
    assert_eq!(status(&ledger, "p-other").0, "failed");
    let out = ledgerflow(&[
        "postings",
        "resolve",
        "p-other",
        "--reason",
        "posted by hand as JE-9",
        "--erp-document-id",
        "JE-9",
        "--execute",
        "--database",
        &db,
        "--format",
        "json",
    ]);
    assert_eq!(code(&out), 0, "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(json(&out, "resolve")["resolved"], true);
    assert_eq!(status(&ledger, "p-other").0, "resolved");
    let out = ledgerflow(&[
        "postings",
        "show",
        "p-other",
        "--database",
        &db,
        "--format",
        "json",
    ]);
    let shown = json(&out, "show");
    assert_eq!(shown["resolution"], "posted by hand as JE-9");
    assert_eq!(shown["resolved_by"], "ops-bot");
    assert_eq!(shown["erp_document_id"], "JE-9");
    let ops = ledger.operations(CONSUMER);
    assert_eq!(ops.len(), 2);
    assert_eq!(ops[1].event_type.as_deref(), Some("erp_resolve"));
    let detail: serde_json::Value =
        serde_json::from_str(ops[1].detail.as_deref().unwrap()).unwrap();
    assert_eq!(detail["reason"], "posted by hand as JE-9");
    assert_eq!(detail["details"]["posting"], "p-other");
    let out = ledgerflow(&[
        "postings",
        "resolve",
        "p-other",
        "--reason",
        "again",
        "--execute",
        "--database",
        &db,
    ]);
    assert_eq!(code(&out), 2, "resolving twice is refused");

    // The operations chain verifies.
    let out = ledgerflow(&["audit", "verify", "--database", &db, "--format", "json"]);
    assert_eq!(code(&out), 0, "{}", String::from_utf8_lossy(&out.stdout));

    // Nothing failed now, and the pending ones are young: clean; stuck once the threshold is 0.
    let out = ledgerflow(&["reconcile", "--database", &db, "--format", "json"]);
    let report = json(&out, "reconcile");
    assert_eq!(code(&out), 0, "{report:#}");
    let out = ledgerflow(&[
        "reconcile",
        "--database",
        &db,
        "--format",
        "json",
        "--stuck-after",
        "0s",
    ]);
    assert_eq!(code(&out), 1);
    let report = json(&out, "reconcile");
    let undelivered = &report["tenants"]["acme"]["erp"]["undelivered"];
    assert_eq!(undelivered[0]["state"], "pending", "{report:#}");
    assert_eq!(report["tenants"]["acme"]["erp"]["stuck"], 2);
    let out = ledgerflow(&["reconcile", "--database", &db, "--stuck-after", "1e300h"]);
    assert_eq!(
        code(&out),
        2,
        "an absurd duration is bad usage, not a panic"
    );

    // A posting whose document could not be rendered is not requeued as it is.
    insert_posting(&ledger, "p-unrendered", "gamma", "failed");
    ledger.block_on(async {
        sqlx::query("UPDATE erp_outbox SET document_kind = 'unrendered' WHERE id = $1")
            .bind("p-unrendered".to_owned())
            .execute(ledger.pool())
            .await
            .expect("update");
    });
    let out = ledgerflow(&[
        "postings",
        "requeue",
        "p-unrendered",
        "--execute",
        "--database",
        &db,
    ]);
    assert_eq!(code(&out), 2);
    assert!(String::from_utf8_lossy(&out.stdout).contains("--re-render"));
    assert_eq!(status(&ledger, "p-unrendered").0, "failed");
    // Re-rendering needs the journal, which this store does not have: refused, unchanged.
    let tenants = dir.path().join("tenants.toml");
    std::fs::write(&tenants, "").expect("tenants file");
    let out = ledgerflow(&[
        "postings",
        "requeue",
        "p-unrendered",
        "--re-render",
        "--tenants",
        &tenants.display().to_string(),
        "--execute",
        "--database",
        &db,
    ]);
    assert_eq!(code(&out), 2, "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(status(&ledger, "p-unrendered").0, "failed");
    assert_eq!(
        ledger.operations(CONSUMER).len(),
        2,
        "refusals are not audited"
    );
}
