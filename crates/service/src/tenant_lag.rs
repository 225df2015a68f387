//! Per-tenant delivery lag with bounded labels: which tenants get a series of their own.
//!
//! Within a partition the consumer applies events strictly in order, so every tenant of a
//! partition shares that partition's lag (`ledgerflow_consumer_lag_*`). Where tenants part
//! ways is delivery: one tenant's ERP answering slowly, throttling with 429 or refusing a
//! configuration leaves that tenant's outbox rows unfinished while the others' are confirmed.
//! So a tenant's lag here is its unfinished outbox rows (events) and the age of the oldest of
//! them (seconds), per outbox.
//!
//! Labels are bounded by choosing, on every sample, the N tenants with the most lag (seconds,
//! then events, then tenant id, so the choice is deterministic), not the first N ever seen: a
//! quiet tenant that was labelled first must not hide the one that is in trouble now. The rest
//! fold into `tenant="other"` (the largest age, the sum of events). A tenant that falls out of
//! the top N is set to 0, so its series does not freeze at the last value it had in the top.
//! The median over every tenant the outbox holds rows of (0 for a tenant with nothing
//! unfinished) tells whether one tenant lags while the others are healthy.

use std::collections::BTreeMap;

use ledgerflow_store::TenantStatusCount;

/// How many tenants get their own series when `LEDGERFLOW_METRICS_LAG_TENANTS` is unset.
pub const DEFAULT_LAG_TENANTS: usize = 10;

/// One tenant's delivery lag.
#[derive(Debug, Clone, PartialEq)]
pub struct TenantLag {
    /// The tenant (or [`ledgerflow_telemetry::OTHER_TENANT`] for the rest).
    pub tenant: String,
    /// Age of its oldest unfinished row, seconds (0 when none is unfinished).
    pub seconds: f64,
    /// Its unfinished rows.
    pub events: i64,
}

/// What one outbox's sample publishes.
#[derive(Debug, Clone, PartialEq)]
pub struct LagSample {
    /// The N tenants with the most lag, most first (only tenants with unfinished rows).
    pub top: Vec<TenantLag>,
    /// The rest folded: the largest age and the sum of events.
    pub other: TenantLag,
    /// Median age over every tenant with rows (unfinished or not).
    pub median_seconds: f64,
}

/// Computes the sample from an outbox's rows by tenant and status; `unfinished` says which
/// statuses still need delivery (or an operator).
pub fn sample(
    rows: &[TenantStatusCount],
    unfinished: impl Fn(&str) -> bool,
    top_n: usize,
    now_micros: i64,
) -> LagSample {
    let mut tenants: BTreeMap<&str, (Option<i64>, i64)> = BTreeMap::new();
    for row in rows {
        let entry = tenants.entry(row.tenant_id.as_str()).or_insert((None, 0));
        if unfinished(&row.status) && row.count > 0 {
            entry.1 += row.count;
            entry.0 = match (entry.0, row.oldest_created_at) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
        }
    }
    let mut lags: Vec<TenantLag> = tenants
        .into_iter()
        .map(|(tenant, (oldest, events))| TenantLag {
            tenant: tenant.to_owned(),
            seconds: oldest.map_or(0.0, |t| (now_micros - t).max(0) as f64 / 1e6),
            events,
        })
        .collect();
    let median_seconds = median(lags.iter().map(|l| l.seconds).collect());
    lags.sort_by(|a, b| {
        b.seconds
            .total_cmp(&a.seconds)
            .then(b.events.cmp(&a.events))
            .then(a.tenant.cmp(&b.tenant))
    });
    let lagging = lags.iter().take_while(|l| l.events > 0).count();
    let split = lagging.min(top_n);
    let rest = lags.split_off(split);
    let other = TenantLag {
        tenant: ledgerflow_telemetry::OTHER_TENANT.to_owned(),
        seconds: rest.iter().map(|l| l.seconds).fold(0.0, f64::max),
        events: rest.iter().map(|l| l.events).sum(),
    };
    LagSample {
        top: lags,
        other,
        median_seconds,
    }
}

fn median(mut values: Vec<f64>) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    if values.len() % 2 == 1 {
        values[mid]
    } else {
        (values[mid - 1] + values[mid]) / 2.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_000_000_000_000;

    fn row(tenant: &str, status: &str, count: i64, age_secs: i64) -> TenantStatusCount {
        TenantStatusCount {
            tenant_id: tenant.to_owned(),
            status: status.to_owned(),
            count,
            oldest_created_at: Some(NOW - age_secs * 1_000_000),
        }
    }

    fn erp_unfinished(status: &str) -> bool {
        !matches!(status, "confirmed" | "resolved")
    }

    #[test]
    fn the_most_lagging_tenants_get_series_not_the_first_seen() {
        // t001..t003 sort first by id and have confirmed rows only; t009 is the one behind.
        let rows = vec![
            row("t001", "confirmed", 500, 3_000),
            row("t002", "confirmed", 400, 3_000),
            row("t003", "pending", 2, 5),
            row("t009", "pending", 40, 900),
            row("t009", "failed", 3, 1_200),
            row("t009", "confirmed", 10, 4_000),
        ];
        let s = sample(&rows, erp_unfinished, 1, NOW);
        assert_eq!(s.top.len(), 1);
        assert_eq!(s.top[0].tenant, "t009");
        assert_eq!(s.top[0].events, 43, "pending and failed, not confirmed");
        assert!(
            (s.top[0].seconds - 1_200.0).abs() < 1e-9,
            "the oldest unfinished row"
        );
        assert_eq!(s.other.tenant, "other");
        assert_eq!(s.other.events, 2);
        assert!((s.other.seconds - 5.0).abs() < 1e-9);
        // Ages 0, 0, 5, 1200: the others are healthy.
        assert!(
            (s.median_seconds - 2.5).abs() < 1e-9,
            "{}",
            s.median_seconds
        );
    }

    #[test]
    fn tenants_with_nothing_unfinished_get_no_series_and_ties_are_deterministic() {
        let rows = vec![
            row("b", "pending", 1, 60),
            row("a", "pending", 1, 60),
            row("c", "pending", 5, 60),
            row("d", "delivered", 9, 60),
        ];
        let webhooks = |s: &str| s != "delivered";
        let s = sample(&rows, webhooks, 10, NOW);
        let order: Vec<_> = s.top.iter().map(|l| l.tenant.as_str()).collect();
        assert_eq!(order, ["c", "a", "b"], "age, then events, then id");
        assert_eq!(s.other.events, 0);
        assert_eq!(s.other.seconds, 0.0);
        assert!((s.median_seconds - 60.0).abs() < 1e-9);
    }

    #[test]
    fn an_empty_outbox_samples_nothing() {
        let s = sample(&[], erp_unfinished, 10, NOW);
        assert!(s.top.is_empty());
        assert_eq!(s.other.events, 0);
        assert_eq!(s.median_seconds, 0.0);
    }
}
