//! `ledgerflow reconcile`: the billing source against the posted journals, and the journals
//! against ERP acknowledgements ([`ledgerflow_erp_receivables::reconcile`]), rendered.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use ledgerflow_erp_receivables::{CONSUMER_NAME, ReconcileOptions};
use ledgerflow_service::Environment;
use ledgerflow_service::ops::reconcile;

use crate::args::{DatabaseArgs, Format, parse_time, print_json};

#[derive(Debug, Args)]
pub(crate) struct ReconcileArgs {
    #[command(flatten)]
    db: DatabaseArgs,
    /// Consumer to reconcile (only erp-receivables keeps journals).
    #[arg(long, default_value = CONSUMER_NAME)]
    consumer: String,
    /// Only this tenant.
    #[arg(long)]
    tenant: Option<String>,
    /// Business time from (RFC 3339 or YYYY-MM-DD, inclusive).
    #[arg(long, value_parser = parse_time)]
    from: Option<i64>,
    /// Business time to (RFC 3339 or YYYY-MM-DD, exclusive).
    #[arg(long, value_parser = parse_time)]
    to: Option<i64>,
    /// Expected documents: a produce manifest (`*.json`: counts and exact totals per tenant and
    /// document type) or a billing platform export (`*.csv`: every document by id, see the
    /// README). Default: the events the audit log recorded.
    #[arg(long)]
    source: Option<PathBuf>,
    /// Also write the differences as Prometheus gauges to this file (node_exporter textfile
    /// collector): `ledgerflow_reconcile_differences{kind}` and its last-run timestamp.
    #[arg(long, value_name = "PATH")]
    metrics_textfile: Option<PathBuf>,
    /// A posting still pending or accepted this long after it was written counts as
    /// undelivered, like a failed one: either makes the report unclean (exit 1) and is listed
    /// by posting id with its state (e.g. `30m`, `1h`, `2h`).
    #[arg(long, value_parser = parse_stuck_after, default_value = "1h")]
    stuck_after: Duration,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
}

pub(crate) async fn run(args: ReconcileArgs, env: &Environment) -> anyhow::Result<ExitCode> {
    if args.consumer != CONSUMER_NAME {
        anyhow::bail!("reconcile supports --consumer {CONSUMER_NAME} only");
    }
    let store = args.db.open(env).await?;
    let mut options = ReconcileOptions::new(reconcile::source(args.source.as_deref())?);
    options.tenant = args.tenant.clone();
    options.from = args.from;
    options.to = args.to;
    options.stuck_after = args.stuck_after;
    let report = reconcile::reconcile(&store, &options).await?;
    if let Some(path) = &args.metrics_textfile {
        reconcile::write_metrics(path, &report)?;
    }
    match args.format {
        Format::Json => print_json(&report)?,
        Format::Text => print_report(&report),
    }
    Ok(if report.clean {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// A duration like `90s`, `30m`, `1h`, at most ten years.
fn parse_stuck_after(raw: &str) -> Result<Duration, String> {
    // Checked before converting: a float too large for a Duration must be an error, not a
    // panic.
    let digits: String = raw
        .trim()
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.')
        .collect();
    if digits.parse::<f64>().is_ok_and(|n| n > 1e8) {
        return Err(format!("{raw:?} is too long a duration"));
    }
    let d = ledgerflow_service::config::parse_duration(raw)?;
    if d > Duration::from_secs(10 * 366 * 86_400) {
        return Err(format!(
            "{raw:?} is too long a duration (at most ten years)"
        ));
    }
    Ok(d)
}

fn print_report(report: &ledgerflow_erp_receivables::ReconcileReport) {
    use ledgerflow_erp_receivables::DocumentReconciliation;
    let verdict = if report.clean {
        "CLEAN"
    } else {
        "DIFFERENCES FOUND"
    };
    println!(
        "reconcile erp-receivables against {}: {verdict}",
        report.source
    );
    let totals = |m: &std::collections::BTreeMap<String, String>| {
        if m.is_empty() {
            "0".to_owned()
        } else {
            m.iter()
                .map(|(c, v)| format!("{v} {c}"))
                .collect::<Vec<_>>()
                .join(" + ")
        }
    };
    let doc = |label: &str, d: &DocumentReconciliation| {
        let expected = match (d.expected_count, &d.expected_total) {
            (Some(n), Some(t)) => format!("expected {n} / {t}"),
            (Some(n), None) => format!("expected {n}"),
            _ => "expected ?".to_owned(),
        };
        let mark = if d.missing_count + d.extra_count + d.mismatched_count == 0
            && d.count_matches != Some(false)
            && d.total_matches != Some(false)
        {
            "ok"
        } else {
            "MISMATCH"
        };
        println!(
            "  {label:<13} {mark:<8} posted {} / {:<28} {expected}  missing {} extra {} mismatched {}",
            d.posted_count,
            totals(&d.posted_total),
            d.missing_count,
            d.extra_count,
            d.mismatched_count
        );
        for id in d.missing.iter().take(5) {
            println!("      missing  {id}");
        }
        for id in d.extra.iter().take(5) {
            println!("      extra    {id}");
        }
        for id in d.mismatched.iter().take(5) {
            println!("      mismatch {id}");
        }
    };
    for (tenant, t) in &report.tenants {
        println!("{tenant}:");
        doc("invoices", &t.invoices);
        doc("payments", &t.payments);
        doc("credit memos", &t.credit_memos);
        println!(
            "  applications  {} / {}   unapplied cash {}   held payments {}",
            t.applications.count,
            totals(&t.applications.total),
            totals(&t.unapplied_cash),
            t.held_payments_count
        );
        if !t.double_postings.is_empty() {
            println!("  DOUBLE POSTINGS: {}", t.double_postings.len());
            for d in t.double_postings.iter().take(5) {
                println!("      {} {}", d.kind, d.detail);
            }
        }
        if !t.unbalanced_journals.is_empty() {
            println!("  UNBALANCED JOURNALS: {:?}", t.unbalanced_journals);
        }
        if !t.currency_mismatch_payments.is_empty() {
            println!(
                "  payments not applied (currency differs): {:?}",
                t.currency_mismatch_payments
            );
        }
        let erp = &t.erp;
        if erp.acked + erp.pending + erp.failed > 0 || !erp.journals_without_outbox.is_empty() {
            println!(
                "  erp delivery  acked {} pending {} failed {} journals without outbox {}",
                erp.acked,
                erp.pending,
                erp.failed,
                erp.journals_without_outbox.len()
            );
        }
        if erp.undelivered_count > 0 {
            println!(
                "  UNDELIVERED POSTINGS: {} ({} failed, {} pending or accepted longer than {} s)",
                erp.undelivered_count, erp.failed, erp.stuck, report.stuck_after_secs
            );
            for p in erp.undelivered.iter().take(20) {
                println!(
                    "      {} {:<8} {} attempts {} {}",
                    p.id,
                    p.state,
                    p.external_id.as_deref().unwrap_or("-"),
                    p.attempts,
                    p.last_error_class.as_deref().unwrap_or("")
                );
            }
            println!(
                "      (see `ledgerflow postings show ID`, `postings requeue`, `postings resolve`)"
            );
        }
    }
}
