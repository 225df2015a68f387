//! `ledgerflow reconcile`: the billing source against the posted journals, the journals
//! against ERP acknowledgements ([`ledgerflow_erp_receivables::reconcile`]), and with
//! `--erp-readback` the acknowledged postings against the ERPs themselves
//! ([`ledgerflow_erp_receivables::readback`]), rendered.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use ledgerflow_erp_receivables::readback::TenantReadback;
use ledgerflow_erp_receivables::{
    CONSUMER_NAME, ReadbackOptions, ReadbackProgress, ReadbackReport, ReconcileOptions,
};
use ledgerflow_service::Environment;
use ledgerflow_service::ops::{Progress, reconcile};

use crate::args::{Bar, DatabaseArgs, Format, parse_time, print_json};

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
    /// Also ask each tenant's ERP, by external id and through the same adapter, auth and
    /// account limits as deliveries, for the document of every confirmed posting in scope
    /// (and every resolved one with an ERP document id). A document missing in the ERP, an
    /// amount or currency that differs from its journal (where the ERP's lookup returns one),
    /// or a lookup that got no answer makes the report unclean. Credentials are read as each
    /// posting's stored route names them (environment variables, files), as `ledgerflow run`
    /// reads them.
    #[arg(long)]
    erp_readback: bool,
    /// ERP lookups in flight at once with --erp-readback, all accounts together (each account
    /// is further held to its own concurrency limit).
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..=256))]
    readback_concurrency: u16,
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
    let mut report = reconcile::reconcile(&store, &options).await?;
    if args.erp_readback {
        let readback = ReadbackOptions {
            tenant: args.tenant.clone(),
            from: args.from,
            to: args.to,
            concurrency: usize::from(args.readback_concurrency),
            ..ReadbackOptions::default()
        };
        let bar = ReadbackBar::new();
        let found = reconcile::erp_readback(&store, env, &readback, &bar).await;
        bar.0.finish();
        report.attach_readback(found?);
    }
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

/// The read-back's progress: the shared progress bar on a terminal; elsewhere (a cron job's
/// log) a plain line on stderr every [`PROGRESS_EVERY`].
struct ReadbackBar(Bar, std::sync::Mutex<LineProgress>);

/// How often a long read-back writes its progress line when stderr is not a terminal.
const PROGRESS_EVERY: Duration = Duration::from_secs(10);

struct LineProgress {
    enabled: bool,
    total: u64,
    done: u64,
    last: std::time::Instant,
}

impl ReadbackBar {
    fn new() -> Self {
        use std::io::IsTerminal as _;
        Self(
            Bar::new(
                "{spinner} erp read-back [{bar:30}] {pos}/{len} postings [{elapsed}, eta {eta}]",
                "",
            ),
            std::sync::Mutex::new(LineProgress {
                enabled: !std::io::stderr().is_terminal(),
                total: 0,
                done: 0,
                last: std::time::Instant::now(),
            }),
        )
    }

    fn line(&self) -> std::sync::MutexGuard<'_, LineProgress> {
        self.1.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl ReadbackProgress for ReadbackBar {
    fn start(&self, total: u64) {
        Progress::start(&self.0, total);
        self.line().total = total;
    }
    fn advance(&self, n: u64) {
        Progress::advance(&self.0, n);
        let mut line = self.line();
        line.done += n;
        if line.enabled && line.last.elapsed() >= PROGRESS_EVERY {
            line.last = std::time::Instant::now();
            eprintln!("erp read-back: {}/{} postings asked", line.done, line.total);
        }
    }
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
        if t.refused_count > 0 {
            // Informational: a correction the stored state does not allow, refused by design.
            println!(
                "  corrections refused (nothing posted): {}",
                t.refused_count
            );
            for r in t.refused.iter().take(5) {
                println!(
                    "      {} {} ({}): {}",
                    r.event_type, r.event_id, r.document_id, r.reason
                );
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
    if let Some(readback) = &report.erp_readback {
        print_readback(readback);
    }
}

fn print_readback(r: &ReadbackReport) {
    let verdict = if r.is_clean() {
        "ok"
    } else {
        "DIFFERENCES FOUND"
    };
    println!(
        "erp read-back: {verdict}: asked {} confirmed postings ({} at a time): found {}, missing {}, \
         amount differs {}, unanswered {}",
        r.checked, r.concurrency, r.found, r.missing, r.mismatched, r.unanswered
    );
    if r.not_checked > 0 {
        println!(
            "  {} confirmed postings have no stored route (written before the adapters) and \
             were not asked about",
            r.not_checked
        );
    }
    for (erp, k) in &r.erps {
        let amounts = if k.amount_not_returned == 0 {
            format!("amounts compared for {}", k.amount_compared)
        } else if k.amount_compared == 0 {
            format!(
                "amounts NOT compared: its lookup returns no amount ({} found without one)",
                k.amount_not_returned
            )
        } else {
            format!(
                "amounts compared for {}, not returned for {}",
                k.amount_compared, k.amount_not_returned
            )
        };
        println!(
            "  {erp:<13} asked {} found {}; {amounts}",
            k.checked, k.found
        );
    }
    for (tenant, t) in &r.tenants {
        println!("{tenant}: erp read-back");
        print_tenant_readback(t);
    }
}

fn print_tenant_readback(t: &TenantReadback) {
    for p in &t.periods {
        let mark = if p.missing + p.mismatched + p.unanswered == 0 {
            "ok"
        } else {
            "MISMATCH"
        };
        println!(
            "  {} {:<7} {mark:<8} expected {} / {}  found {} (amount agrees {}, not compared {})  \
             missing {} amount differs {} unanswered {}",
            p.currency,
            p.period,
            p.expected,
            p.expected_total,
            p.found,
            p.amount_agrees,
            p.amount_not_returned,
            p.missing,
            p.mismatched,
            p.unanswered
        );
    }
    let show = |label: &str, list: &[ledgerflow_erp_receivables::readback::ReadbackDifference]| {
        for d in list.iter().take(20) {
            let amounts = match (&d.amount, &d.erp_amount) {
                (Some(ours), Some(theirs)) => format!(
                    " journal {ours} {} erp {theirs} {}",
                    d.currency.as_deref().unwrap_or("?"),
                    d.erp_currency.as_deref().unwrap_or("?")
                ),
                _ => String::new(),
            };
            println!(
                "      {label} {} {} {} document {}{}{amounts}",
                d.posting_id,
                d.erp,
                d.external_id,
                d.document_id.as_deref().unwrap_or("-"),
                d.erp_document_id
                    .as_deref()
                    .filter(|id| d.document_id.as_deref() != Some(*id))
                    .map(|id| format!(" (the erp has {id})"))
                    .unwrap_or_default(),
            );
            if label == "unanswered" {
                println!("          {}", d.detail.as_deref().unwrap_or(""));
            }
        }
    };
    if t.missing_count > 0 {
        println!("  MISSING IN THE ERP: {}", t.missing_count);
        show("missing   ", &t.missing);
    }
    if t.mismatched_count > 0 {
        println!("  AMOUNT DIFFERS IN THE ERP: {}", t.mismatched_count);
        show("differs   ", &t.mismatched);
    }
    if t.unanswered_count > 0 {
        println!("  ERP DID NOT ANSWER: {}", t.unanswered_count);
        show("unanswered", &t.unanswered);
    }
    if t.other_document_count > 0 {
        println!(
            "  found under another document id than recorded: {}",
            t.other_document_count
        );
        show("other id  ", &t.other_document);
    }
    if t.resolved_not_found_count > 0 {
        println!(
            "  resolved postings not found by external id (posted by hand?): {}",
            t.resolved_not_found_count
        );
        show("resolved  ", &t.resolved_not_found);
    }
}
