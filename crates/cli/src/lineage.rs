//! `ledgerflow lineage EVENT_ID | --invoice ID --tenant T`: arguments and rendering of
//! [`ledgerflow_service::ops::lineage`].

use std::process::ExitCode;

use clap::Args;
use ledgerflow_service::ops::lineage::{
    self, ConsumerLineage, InvoiceLineageReport, LineageReport,
};
use ledgerflow_service::{ConsumerKind, Environment};

use crate::args::{DatabaseArgs, Format, dash, parse_consumer, print_json, time};

/// Exit codes of `lineage` (also in `--help`).
const EXIT_CODES: &str = "Exit codes: 0 the event (or invoice) was found and printed; 1 the \
     ledger knows nothing of it, or the database failed; 2 bad usage (neither or both of \
     EVENT_ID and --invoice, --invoice without --tenant, an unknown consumer).";

#[derive(Debug, Args)]
#[command(
    after_help = EXIT_CODES,
    group(clap::ArgGroup::new("what").required(true).args(["event_id", "invoice"]))
)]
pub(crate) struct LineageArgs {
    /// The event id (as in the audit log, the inbox, `dlq list` or `tail`).
    event_id: Option<String>,
    /// An invoice id instead: its invoice_finalized event, then every payment, application
    /// and credit memo of the invoice, each with its own lineage (needs --tenant).
    #[arg(long, conflicts_with = "event_id", requires = "tenant")]
    invoice: Option<String>,
    /// The tenant (required with --invoice; with an event id, only narrows the lookups).
    #[arg(long)]
    tenant: Option<String>,
    /// Only this consumer: erp-receivables, warehouse or notifications.
    #[arg(long, value_parser = parse_consumer)]
    consumer: Option<ConsumerKind>,
    #[command(flatten)]
    db: DatabaseArgs,
    /// Output format (`table` is the same as `text`).
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
}

pub(crate) async fn run(args: LineageArgs, env: &Environment) -> anyhow::Result<ExitCode> {
    let store = args.db.open(env).await?;
    match (&args.event_id, &args.invoice, &args.tenant) {
        (_, Some(invoice), Some(tenant)) => {
            let report = lineage::invoice(&store, args.consumer, tenant, invoice).await?;
            match args.format {
                Format::Json => print_json(&report)?,
                Format::Text => print_invoice(&report),
            }
        }
        (Some(event_id), None, tenant) => {
            let report = lineage::event(&store, args.consumer, tenant.as_deref(), event_id).await?;
            match args.format {
                Format::Json => print_json(&report)?,
                Format::Text => print_event(&report, ""),
            }
        }
        // clap enforces one of the two, and --tenant with --invoice.
        _ => {
            eprintln!("error: give an EVENT_ID, or --invoice ID with --tenant T");
            return Ok(ExitCode::from(crate::EXIT_USAGE));
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn short(hash: &str) -> &str {
    hash.get(..16).unwrap_or(hash)
}

fn print_invoice(r: &InvoiceLineageReport) {
    println!("invoice {} of tenant {}", r.invoice_id, r.tenant_id);
    print_event(&r.invoice, "  ");
    if r.applications.is_empty() {
        println!("  applications: none");
    }
    for a in &r.applications {
        println!(
            "  application payment {} -> invoice {}: {} {} journal {} (event {})",
            a.payment_id,
            a.invoice_id,
            a.amount_minor,
            a.currency,
            a.journal_id,
            dash(a.event_id.as_deref())
        );
    }
    println!("  payments: {}", r.payments.len());
    for p in &r.payments {
        print_event(p, "  ");
    }
    println!("  credit memos: {}", r.credit_memos.len());
    for c in &r.credit_memos {
        print_event(c, "  ");
    }
    if !r.others.is_empty() {
        println!("  other events: {}", r.others.len());
    }
    for o in &r.others {
        print_event(o, "  ");
    }
}

fn print_event(r: &LineageReport, pad: &str) {
    println!(
        "{pad}event {} ({}, tenant {})",
        r.event_id,
        dash(r.event_type.as_deref()),
        dash(r.tenant_id.as_deref())
    );
    println!(
        "{pad}  correlation id  {}",
        dash(r.correlation_id.as_deref())
    );
    println!("{pad}  trace id        {}", dash(r.trace_id.as_deref()));
    let at: Vec<String> = r
        .coordinates
        .iter()
        .map(|c| format!("{}[{}]@{}", c.topic, c.partition, c.offset))
        .collect();
    println!(
        "{pad}  coordinates     {}",
        if at.is_empty() {
            "-".to_owned()
        } else {
            at.join(", ")
        }
    );
    for c in &r.consumers {
        print_consumer(c, &format!("{pad}  "));
    }
}

fn print_consumer(c: &ConsumerLineage, pad: &str) {
    println!("{pad}consumer {}", c.consumer);
    match &c.inbox {
        Some(i) => println!(
            "{pad}  inbox        applied {} at {}[{}]@{}, payload hash {}",
            time(i.applied_at),
            i.topic,
            i.partition,
            i.offset,
            short(&i.payload_hash)
        ),
        None => println!("{pad}  inbox        -"),
    }
    if c.audit.is_empty() {
        println!("{pad}  audit        -");
    }
    for a in &c.audit {
        println!(
            "{pad}  audit        {}[{}]@{} seq {} {}{} at {} corr {} trace {} hash {}",
            a.topic,
            a.partition,
            a.offset,
            a.seq,
            a.decision,
            a.reason
                .as_deref()
                .map_or_else(String::new, |r| format!(" ({r})")),
            time(a.recorded_at),
            dash(a.correlation_id.as_deref()),
            dash(a.trace_id.as_deref()),
            short(&a.hash)
        );
    }
    for d in &c.dead_letters {
        println!(
            "{pad}  dead letter  {} {}[{}]@{} {} {} attempts {}: {}",
            d.id, d.topic, d.partition, d.offset, d.reason, d.status, d.attempts, d.error
        );
    }
    if let Some(erp) = &c.erp {
        if let Some(conflict) = &erp.conflict {
            println!(
                "{pad}  conflict     document {} already made by event {}",
                conflict.document_id, conflict.existing_event_id
            );
        }
        for j in &erp.journals {
            println!(
                "{pad}  journal      {} {} {} {} total {} {} (debits {} credits {}) erp {}",
                j.id,
                j.kind,
                j.document_type,
                j.document_id,
                j.total_minor,
                if j.balanced { "balanced" } else { "UNBALANCED" },
                j.debit_minor,
                j.credit_minor,
                dash(j.erp_kind.as_deref())
            );
            for l in &j.lines {
                println!(
                    "{pad}    {:>3} {:<12} {:>14} {:>14}",
                    l.line_no, l.account, l.debit_minor, l.credit_minor
                );
            }
        }
        for d in &erp.documents {
            println!(
                "{pad}  AR document  {} {} ({}) customer {} total {} open {} {}{}",
                d.doc_type,
                d.doc_id,
                d.doc_number,
                d.customer_id,
                d.total_minor,
                d.open_minor,
                d.currency,
                d.applies_to
                    .as_deref()
                    .map_or_else(String::new, |i| format!(" applies to {i}"))
            );
        }
        for p in &erp.payments {
            println!(
                "{pad}  payment      {} for invoice {}: {} {} fee {} unapplied {}",
                p.payment_id,
                p.invoice_id,
                p.amount_minor,
                p.currency,
                p.fee_minor,
                p.unapplied_minor
            );
        }
        for a in &erp.applications {
            println!(
                "{pad}  application  payment {} -> invoice {}: {} {}",
                a.payment_id, a.invoice_id, a.amount_minor, a.currency
            );
        }
        for p in &erp.postings {
            println!(
                "{pad}  posting      {} {} {} external id {} attempts {} erp document {} \
                 config {}{}",
                p.id,
                p.status.as_str(),
                p.erp_kind,
                dash(p.external_id.as_deref()),
                p.attempts,
                dash(p.erp_document_id.as_deref()),
                dash(p.config_version.as_deref()),
                p.last_error_class
                    .as_deref()
                    .map_or_else(String::new, |c| format!(" last error {c}"))
            );
        }
    }
    if let Some(w) = &c.warehouse {
        for row in &w.rows {
            let key: Vec<String> = row.key.iter().map(|(k, v)| format!("{k}={v}")).collect();
            println!("{pad}  warehouse    {} {}", row.table, key.join(" "));
        }
    }
    if let Some(n) = &c.notifications {
        for h in &n.webhooks {
            println!(
                "{pad}  webhook      {} endpoint {} ({}) {} attempts {}{}",
                h.webhook_id,
                h.endpoint_id,
                h.url,
                h.status,
                h.attempts,
                h.last_status
                    .map_or_else(String::new, |s| format!(" last status {s}"))
            );
            for d in &h.deliveries {
                println!(
                    "{pad}    attempt {} {} {} {} ms at {}",
                    d.attempt,
                    d.status_code
                        .map_or_else(|| "-".to_owned(), |s| s.to_string()),
                    dash(d.error.as_deref()),
                    d.latency_ms,
                    time(d.attempted_at)
                );
            }
        }
    }
}
