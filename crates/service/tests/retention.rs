//! `ops::retention` on SQLite and Postgres, on a ledger filled through the batch path (see
//! support/lineage_fixture.rs) and then aged: rows older than the horizon go, newer ones and
//! unfinished outbox rows stay, a dry run deletes nothing, an executed run is audited and
//! records the inbox horizons, and the replay check refuses to re-read below them.

#[path = "support/lineage_fixture.rs"]
mod fixture;

use std::sync::Arc;
use std::time::Duration;

use ledgerflow_core::now_micros;
use ledgerflow_service::ConsumerKind;
use ledgerflow_service::ops::retention::{
    self, DEFAULT_OLDER_THAN, RetentionRequest, refuse_below_horizon,
};
use ledgerflow_service::ops::{Actor, Quiet, Span};
use ledgerflow_store::{Backend, ErasedConsumer, Store};
use ledgerflow_testkit::ScratchStore;

const DAY: i64 = 86_400_000_000;

async fn exec(store: &Store, sql: &str) {
    sqlx::query(sql).execute(store.pool()).await.expect(sql);
}

async fn count(store: &Store, sql: &str) -> i64 {
    sqlx::query_scalar(&format!("SELECT CAST(COUNT(*) AS BIGINT) FROM {sql}"))
        .fetch_one(store.pool())
        .await
        .expect(sql)
}

/// The fixture ledger, then aged: erp-receivables' inbox rows at offsets 0 and 1 applied 40
/// days ago; webhook deliveries old and new, of a delivered and of a pending webhook; postings
/// confirmed long ago, failed long ago, and confirmed just now, each with an attempt log.
async fn aged_ledger(store: &Store) {
    let dir = tempfile::tempdir().expect("temp dir");
    let tenant = fixture::tenant(dir.path());
    let consumers: Vec<Arc<dyn ErasedConsumer>> =
        ConsumerKind::ALL.iter().map(|k| k.logic()).collect();
    fixture::push(store, &consumers, &tenant).await;
    let old = now_micros() - 40 * DAY;
    let now = now_micros();
    exec(
        store,
        &format!(
            "UPDATE inbox SET applied_at = {old} \
             WHERE consumer = 'erp-receivables' AND \"offset\" IN (0, 1)"
        ),
    )
    .await;
    let webhooks: Vec<String> =
        sqlx::query_scalar("SELECT webhook_id FROM notification_outbox ORDER BY webhook_id")
            .fetch_all(store.pool())
            .await
            .expect("webhooks");
    assert!(webhooks.len() >= 2, "{webhooks:?}");
    let (delivered, pending) = (&webhooks[0], &webhooks[1]);
    exec(
        store,
        &format!(
            "UPDATE notification_outbox SET status = 'delivered', delivered_at = {old} \
             WHERE webhook_id = '{delivered}'"
        ),
    )
    .await;
    for (id, webhook, at) in [
        ("d-old-delivered", delivered, old),
        ("d-new-delivered", delivered, now),
        ("d-old-pending", pending, old),
    ] {
        exec(
            store,
            &format!(
                "INSERT INTO notification_deliveries (id, webhook_id, tenant_id, endpoint_id, \
                 attempt, status_code, error, latency_ms, attempted_at) \
                 VALUES ('{id}', '{webhook}', 'acme', 'billing', 1, 200, NULL, 5, {at})"
            ),
        )
        .await;
    }
    let postings: Vec<String> = sqlx::query_scalar("SELECT id FROM erp_outbox ORDER BY id")
        .fetch_all(store.pool())
        .await
        .expect("postings");
    assert!(postings.len() >= 3, "{postings:?}");
    for (id, status, at) in [
        (&postings[0], "confirmed", old),
        (&postings[1], "failed", old),
        (&postings[2], "confirmed", now),
    ] {
        exec(
            store,
            &format!(
                "UPDATE erp_outbox SET status = '{status}', confirmed_at = {at}, \
                 updated_at = {at}, history = '[{{\"outcome\":\"x\"}}]', \
                 last_request = 'POST /x', last_response = '200' WHERE id = '{id}'"
            ),
        )
        .await;
    }
}

async fn prunes_only_what_is_old_and_final(backend: Backend) {
    let scratch = ScratchStore::open(backend, "svc_retention").await;
    let store = &scratch.store;
    aged_ledger(store).await;
    let inbox_before = count(store, "inbox").await;
    let actor = Actor {
        operator: "test".into(),
        reason: "retention test".into(),
    };

    // Dry run: the counts, nothing deleted, nothing recorded.
    let dry = retention::retention(
        store,
        &RetentionRequest {
            older_than: DEFAULT_OLDER_THAN,
            execute: None,
        },
        &Quiet,
    )
    .await
    .expect("dry run");
    assert_eq!(dry.mode, "dry-run");
    let rows: Vec<(&str, u64)> = dry.tables.iter().map(|t| (t.table, t.rows)).collect();
    assert_eq!(
        rows,
        [
            ("inbox", 2),
            ("notification_deliveries", 1),
            ("erp_outbox.attempt_log", 1)
        ]
    );
    assert_eq!(count(store, "inbox").await, inbox_before);
    assert_eq!(count(store, "notification_deliveries").await, 3);
    assert!(
        store
            .inbox_horizons(None)
            .await
            .expect("horizons")
            .is_empty()
    );
    assert!(store.operations(None).await.expect("operations").is_empty());

    // Executed.
    let done = retention::retention(
        store,
        &RetentionRequest {
            older_than: DEFAULT_OLDER_THAN,
            execute: Some(actor.clone()),
        },
        &Quiet,
    )
    .await
    .expect("execute");
    assert_eq!(done.mode, "execute");
    assert_eq!(done.total(), 4);
    assert_eq!(count(store, "inbox").await, inbox_before - 2);
    assert_eq!(
        count(
            store,
            "inbox WHERE consumer = 'erp-receivables' AND \"offset\" IN (0, 1)"
        )
        .await,
        0
    );
    let kept: Vec<String> =
        sqlx::query_scalar("SELECT id FROM notification_deliveries ORDER BY id")
            .fetch_all(store.pool())
            .await
            .expect("deliveries");
    assert_eq!(kept, ["d-new-delivered", "d-old-pending"]);
    // Every posting is still there; only the old confirmed one lost its attempt log.
    let logs: Vec<(String, Option<String>)> =
        sqlx::query_as("SELECT status, history FROM erp_outbox ORDER BY id")
            .fetch_all(store.pool())
            .await
            .expect("postings");
    assert_eq!(logs[0], ("confirmed".to_owned(), None));
    assert_eq!(logs[1].0, "failed");
    assert!(logs[1].1.is_some());
    assert!(logs[2].1.is_some());
    assert_eq!(count(store, "erp_journal_entries").await, 4);

    // Audited once per consumer; the chains still verify.
    let ops = store.operations(None).await.expect("operations");
    assert_eq!(ops.len(), 3);
    assert!(
        ops.iter().all(
            |o| o.event_type.as_deref() == Some("retention") && o.event_id == done.operation_id
        )
    );
    let report = store.verify_audit(None, |_| {}).await.expect("verify");
    assert!(report.is_intact(), "{report:?}");

    // The horizon: erp-receivables' partition 0 up to offset 1.
    let horizons = store.inbox_horizons(None).await.expect("horizons");
    assert_eq!(horizons.len(), 1);
    assert_eq!(
        (
            horizons[0].consumer.as_str(),
            horizons[0].partition,
            horizons[0].max_pruned_offset
        ),
        ("erp-receivables", 0, 1)
    );
    assert_eq!(horizons[0].horizon, done.horizon);
    let span = |start| Span {
        topic: fixture::TOPIC.to_owned(),
        partition: 0,
        start,
        end: 4,
    };
    let err = refuse_below_horizon("erp-receivables", &horizons, &[span(0)]).unwrap_err();
    assert!(err.to_string().contains("up to offset 1"), "{err}");
    refuse_below_horizon("erp-receivables", &horizons, &[span(2)]).expect("above the horizon");
    refuse_below_horizon("warehouse", &horizons, &[span(0)]).expect("other consumer");

    // Again: nothing left to prune; the horizon does not move back.
    let again = retention::retention(
        store,
        &RetentionRequest {
            older_than: Duration::from_secs(45 * 86_400),
            execute: Some(actor),
        },
        &Quiet,
    )
    .await
    .expect("again");
    assert_eq!(again.total(), 0);
    let after = store.inbox_horizons(None).await.expect("horizons");
    assert_eq!(after[0].max_pruned_offset, 1);
}

#[tokio::test]
async fn prunes_only_what_is_old_and_final_on_sqlite() {
    prunes_only_what_is_old_and_final(Backend::Sqlite).await;
}

#[tokio::test]
async fn prunes_only_what_is_old_and_final_on_postgres() {
    prunes_only_what_is_old_and_final(Backend::Postgres).await;
}
