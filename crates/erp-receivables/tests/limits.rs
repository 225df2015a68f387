//! Limits per ERP account, measured on the simulator: two tenants sharing one NetSuite account
//! stay within the account's configured concurrency together while a D365 tenant is not slowed
//! by them, and a D365 environment answering 429 + Retry-After pauses only itself.

mod common;

use std::time::{Duration, Instant};

use common::sim::*;
use common::*;
use ledgerflow_erp_receivables::Dispatcher;
use ledgerflow_store::Backend;
use ledgerflow_tenants::{AccountLimits, ErpMode};
use serde_json::json;
use sqlx::Row;

/// Polls until every posting of `tenant` is confirmed; returns when (from `start`).
async fn confirmed_at(db: &TestDb, tenant: &str, expected: i64, start: Instant) -> Duration {
    loop {
        let row = sqlx::query(
            "SELECT CAST(COUNT(*) AS BIGINT) FROM erp_outbox WHERE tenant_id = $1 AND status = 'confirmed'",
        )
        .bind(tenant.to_owned())
        .fetch_one(&db.pool)
        .await
        .unwrap();
        if row.get::<i64, _>(0) >= expected {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "{tenant} never finished"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn a_shared_netsuite_account_stays_within_its_limit_and_d365_is_not_slowed() {
    let backend = Backend::Postgres;
    let sim = Sim::start().await;
    let mut secrets = Secrets::default();
    let (m2m, m2m_auth) = netsuite_m2m(&mut secrets, "a");
    let (tba, tba_auth) = netsuite_tba(&mut secrets, "b");
    sim.provision(json!({ "erp": "netsuite", "account": "NSSHARED",
        "credentials": { "m2m": [m2m], "tba": [tba] } }))
        .await;
    // The simulator would allow 5; the tenants file says 2 for the account.
    let two = Some(AccountLimits {
        concurrency: 2,
        rate_per_sec: None,
    });
    // Every NetSuite request takes 150 ms, so concurrency is observable.
    sim.faults(json!({ "rate": 1.0, "kinds": ["slow"], "erp": "netsuite", "slow_ms": 150 }))
        .await;
    let a = netsuite_tenant(&sim, "ns-a", "NSSHARED", m2m_auth, ErpMode::Journal, two);
    let b = netsuite_tenant(&sim, "ns-b", "NSSHARED", tba_auth, ErpMode::Journal, two);
    let d365 = d365_tenant(&sim, &mut secrets, "d365", "env-d", ErpMode::Journal).await;
    let tenants = [a, b, d365];
    let db = TestDb::create(backend).await;

    // The D365 tenant alone: the baseline.
    let pairs = 10;
    db.write(&invoices_and_payments("d365", 1, pairs), &tenants)
        .await
        .unwrap();
    let alone = drain(&db, backend, config(&secrets), Duration::from_secs(60)).await;

    // Then both NetSuite tenants' backlog and as much again for D365, one dispatcher.
    let mut events = invoices_and_payments("ns-a", 1_000, pairs);
    events.extend(invoices_and_payments("ns-b", 2_000, pairs));
    events.extend(invoices_and_payments("d365", 3_000, pairs));
    db.write(&events, &tenants).await.unwrap();
    let dispatcher = Dispatcher::new(db.pool.clone(), backend, config(&secrets)).unwrap();
    let start = Instant::now();
    let run = tokio::spawn(async move { dispatcher.run(std::future::pending()).await });
    let d365_done = confirmed_at(&db, "d365", 6 * pairs as i64, start).await;
    let ns_done = {
        let a = confirmed_at(&db, "ns-a", 3 * pairs as i64, start).await;
        let b = confirmed_at(&db, "ns-b", 3 * pairs as i64, start).await;
        a.max(b)
    };
    run.await.unwrap().unwrap();

    let account = sim.account("netsuite", "NSSHARED").await;
    let max = account["max_concurrency"].as_u64().unwrap();
    assert!(
        max <= 2,
        "the account saw {max} requests at once: {account:#}"
    );
    assert_eq!(max, 2, "both permits were used: {account:#}");
    assert_eq!(
        account["throttled"], 0,
        "the limiter, not NetSuite, held the line"
    );
    // 60 NetSuite postings at 150 ms each, two at a time: at least 4.5 s.
    assert!(ns_done >= Duration::from_millis(4500), "{ns_done:?}");
    // Meanwhile the D365 tenant ran at its own pace.
    assert!(
        d365_done < alone * 3 + Duration::from_millis(500) && d365_done < ns_done / 2,
        "d365 took {d365_done:?} beside the NetSuite backlog (alone {alone:?}); NetSuite {ns_done:?}"
    );
    eprintln!(
        "limits: netsuite account max concurrency {max} (limit 2), netsuite done in {ns_done:?}; \
         d365 alone {alone:?}, beside netsuite {d365_done:?}"
    );
    assert_eq!(sim.report().await["duplicates"], 0);
    db.drop_db().await;
}

#[tokio::test]
async fn retry_after_on_one_account_does_not_delay_another() {
    let backend = Backend::Sqlite;
    let sim = Sim::start().await;
    let mut secrets = Secrets::default();
    let throttled = d365_tenant(
        &sim,
        &mut secrets,
        "throttled",
        "env-slow",
        ErpMode::Journal,
    )
    .await;
    let free = d365_tenant(&sim, &mut secrets, "free", "env-free", ErpMode::Journal).await;
    // Every request to env-slow answers 429 with Retry-After: 2.
    sim.faults(json!({ "rate": 1.0, "kinds": ["429"], "erp": "d365", "account": "env-slow" }))
        .await;
    let pairs = 8;
    let mut events = invoices_and_payments("throttled", 1, pairs);
    events.extend(invoices_and_payments("free", 1_000, pairs));
    let db = TestDb::create(backend).await;
    db.write(&events, &[throttled, free]).await.unwrap();

    let dispatcher = Dispatcher::new(db.pool.clone(), backend, config(&secrets)).unwrap();
    let start = Instant::now();
    let run = tokio::spawn(async move { dispatcher.run(std::future::pending()).await });
    let free_done = confirmed_at(&db, "free", 3 * pairs as i64, start).await;
    // The throttled environment recovers after its first pause.
    tokio::time::sleep(Duration::from_millis(2500).saturating_sub(start.elapsed())).await;
    sim.faults(json!({ "rate": 0.0 })).await;
    let throttled_done = confirmed_at(&db, "throttled", 3 * pairs as i64, start).await;
    run.await.unwrap().unwrap();

    assert!(
        free_done < Duration::from_millis(1500),
        "the free environment waited for the throttled one: {free_done:?}"
    );
    assert!(
        throttled_done >= Duration::from_secs(2),
        "{throttled_done:?}"
    );
    let slow = sim.account("d365", "env-slow").await;
    let free = sim.account("d365", "env-free").await;
    assert!(slow["throttled"].as_u64().unwrap() >= 1, "{slow:#}");
    assert_eq!(free["throttled"], 0, "{free:#}");
    // The throttled attempts are in the history; they never counted against max_attempts.
    let throttles: usize = postings(&db, "throttled")
        .await
        .iter()
        .map(|(status, _, _, history)| {
            assert_eq!(status, "confirmed");
            history.as_array().map_or(0, |h| {
                h.iter().filter(|e| e["class"] == "throttled").count()
            })
        })
        .sum();
    assert!(throttles >= 1);
    eprintln!(
        "429 isolation: free environment done in {free_done:?}, throttled one in {throttled_done:?} \
         ({} 429s answered)",
        slow["throttled"]
    );
    assert_eq!(sim.report().await["duplicates"], 0);
    db.drop_db().await;
}
