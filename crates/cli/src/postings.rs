//! `ledgerflow postings list|show|requeue|resolve`: arguments and rendering of
//! [`ledgerflow_service::ops::postings`].

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};
use ledgerflow_erp_receivables::PostingState;
use ledgerflow_erp_receivables::ops::{PostingDetail, PostingFilter, RequeueSelection};
use ledgerflow_service::Environment;
use ledgerflow_service::ops::postings::{self, RequeueReport, ResolveReport};

use crate::args::{DatabaseArgs, Format, OperatorArgs, dash, print_json, time};

/// Exit codes of the postings commands (also in `--help`).
const EXIT_CODES: &str = "Exit codes: 0 success (list, show; requeue or resolve done, or would \
     be done in a dry run); 1 an error (unknown posting id, database, unreadable tenants file); \
     2 bad usage, or a refused change (the posting is not failed, or cannot be re-rendered with \
     the current tenants file). Requeue and resolve are dry runs unless --execute; an executed \
     change is recorded in the audit log (operations erp_requeue, erp_resolve).";

#[derive(Debug, Subcommand)]
#[command(after_help = EXIT_CODES)]
pub(crate) enum PostingsCommand {
    /// List ERP postings (the erp_outbox), oldest first.
    #[command(after_help = EXIT_CODES)]
    List(ListArgs),
    /// One posting: request and response excerpts, attempts, error class, history, ERP
    /// document id, config version, dependencies.
    #[command(after_help = EXIT_CODES)]
    Show(ShowArgs),
    /// Put failed postings back to pending (attempts reset, due now) so the dispatcher of
    /// `ledgerflow run` delivers them; a posting whose last attempt may have reached the ERP is
    /// looked up by its external id first, so no second document is made. A dry run unless
    /// --execute.
    #[command(after_help = EXIT_CODES)]
    Requeue(RequeueArgs),
    /// Mark a failed posting resolved (fixed by hand in the ERP, or not to be posted), with a
    /// reason. A dry run unless --execute.
    #[command(after_help = EXIT_CODES)]
    Resolve(ResolveArgs),
}

fn parse_state(raw: &str) -> Result<PostingState, String> {
    PostingState::parse(raw).ok_or_else(|| {
        let known: Vec<&str> = PostingState::ALL.iter().map(|s| s.as_str()).collect();
        format!("unknown posting state {raw:?}; known: {}", known.join(", "))
    })
}

#[derive(Debug, Args)]
pub(crate) struct ListArgs {
    /// Only this state: pending, accepted, confirmed, failed or resolved.
    #[arg(long, value_parser = parse_state)]
    status: Option<PostingState>,
    /// Only this tenant.
    #[arg(long)]
    tenant: Option<String>,
    /// At most this many.
    #[arg(long, default_value_t = 1000)]
    limit: u32,
    #[command(flatten)]
    db: DatabaseArgs,
    /// Output format (`table` is the same as `text`).
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
}

#[derive(Debug, Args)]
pub(crate) struct ShowArgs {
    /// Posting id (the journal id, as `postings list` and `reconcile` show it).
    id: String,
    #[command(flatten)]
    db: DatabaseArgs,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("which").required(true).args(["id", "status"])))]
pub(crate) struct RequeueArgs {
    /// The posting to requeue (or select with --status failed [--tenant T]).
    id: Option<String>,
    /// Every failed posting (of --tenant); the only state that can be requeued.
    #[arg(long, value_parser = ["failed"], conflicts_with = "id")]
    status: Option<String>,
    /// With --status failed: only this tenant.
    #[arg(long, requires = "status")]
    tenant: Option<String>,
    /// Render the document again from the stored journal with the current tenants file
    /// (--tenants), replacing the stored one; both config versions go into the posting's
    /// history and the audit log.
    #[arg(long, requires = "tenants")]
    re_render: bool,
    /// Tenants file (TOML) to re-render with (the one `ledgerflow run` reads).
    #[arg(long)]
    tenants: Option<PathBuf>,
    /// Apply the change (default: a dry run that only shows it).
    #[arg(long)]
    execute: bool,
    /// Why (recorded in the audit log).
    #[arg(long, default_value = "erp posting requeue")]
    reason: String,
    #[command(flatten)]
    operator: OperatorArgs,
    #[command(flatten)]
    db: DatabaseArgs,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
}

#[derive(Debug, Args)]
pub(crate) struct ResolveArgs {
    /// The failed posting.
    id: String,
    /// Why it is resolved, e.g. "posted by hand as JE-1234" (kept on the posting and in the
    /// audit log).
    #[arg(long)]
    reason: String,
    /// The ERP's id of the document entered by hand, so postings waiting for this one (a
    /// payment applied to the invoice) can refer to it.
    #[arg(long)]
    erp_document_id: Option<String>,
    /// Apply the change (default: a dry run that only shows it).
    #[arg(long)]
    execute: bool,
    #[command(flatten)]
    operator: OperatorArgs,
    #[command(flatten)]
    db: DatabaseArgs,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
}

pub(crate) async fn run(cmd: PostingsCommand, env: &Environment) -> anyhow::Result<ExitCode> {
    match cmd {
        PostingsCommand::List(args) => list(args, env).await,
        PostingsCommand::Show(args) => show(args, env).await,
        PostingsCommand::Requeue(args) => requeue(args, env).await,
        PostingsCommand::Resolve(args) => resolve(args, env).await,
    }
}

async fn list(args: ListArgs, env: &Environment) -> anyhow::Result<ExitCode> {
    let store = args.db.open(env).await?;
    let filter = PostingFilter {
        status: args.status,
        tenant: args.tenant.clone(),
        limit: Some(args.limit),
    };
    let rows = postings::list(&store, &filter).await?;
    if args.format == Format::Json {
        print_json(&rows)?;
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:<36} {:<10} {:<9} {:<11} {:<13} {:>3} {:<10} {:<20} external id",
        "id", "tenant", "status", "journal", "erp", "try", "class", "created"
    );
    for p in &rows {
        println!(
            "{:<36} {:<10} {:<9} {:<11} {:<13} {:>3} {:<10} {:<20} {}",
            p.id,
            p.tenant_id,
            p.status.as_str(),
            dash(p.journal_kind.as_deref()),
            p.erp_kind,
            p.attempts,
            dash(p.last_error_class.as_deref()),
            time(p.created_at),
            dash(p.external_id.as_deref())
        );
    }
    println!("{} postings", rows.len());
    Ok(ExitCode::SUCCESS)
}

async fn show(args: ShowArgs, env: &Environment) -> anyhow::Result<ExitCode> {
    let store = args.db.open(env).await?;
    let detail = postings::show(&store, &args.id).await?;
    match args.format {
        Format::Json => print_json(&detail)?,
        Format::Text => print_detail(&detail),
    }
    Ok(ExitCode::SUCCESS)
}

fn print_detail(d: &PostingDetail) {
    let s = &d.summary;
    println!("posting {}", s.id);
    println!("  tenant          {}", s.tenant_id);
    println!("  status          {}", s.status);
    println!(
        "  journal         {} ({})",
        d.journal_id,
        dash(s.journal_kind.as_deref())
    );
    println!(
        "  erp             {} account {} at {}",
        s.erp_kind,
        dash(s.erp_account.as_deref()),
        d.endpoint
    );
    println!(
        "  document        {} external id {}",
        dash(s.document_kind.as_deref()),
        dash(s.external_id.as_deref())
    );
    println!("  erp document id {}", dash(s.erp_document_id.as_deref()));
    println!("  config version  {}", dash(s.config_version.as_deref()));
    println!(
        "  attempts        {}{}",
        s.attempts,
        if d.indefinite {
            " (in doubt: the next attempt looks the document up first)"
        } else {
            ""
        }
    );
    println!(
        "  last error      {} {}",
        dash(s.last_error_class.as_deref()),
        dash(d.last_error_full.as_deref())
    );
    if let Some(status) = d.last_status {
        println!("  last status     {status}");
    }
    if let Some(job) = &d.job_ref {
        println!("  job             {job}");
    }
    println!("  created         {}", time(s.created_at));
    if let Some(at) = s.updated_at {
        println!("  updated         {}", time(at));
    }
    if matches!(s.status, PostingState::Pending | PostingState::Accepted) {
        println!("  next attempt    {}", time(s.next_attempt_at));
    }
    if let Some(at) = d.resolved_at {
        println!(
            "  resolved        {} by {}: {}",
            time(at),
            dash(d.resolved_by.as_deref()),
            dash(d.resolution.as_deref())
        );
    }
    for r in &d.depends_on {
        println!(
            "  waits for       {} ({}) {}",
            r.id,
            dash(r.status.as_deref()),
            dash(r.external_id.as_deref())
        );
    }
    for r in &d.dependents {
        println!(
            "  awaited by      {} ({}) {}",
            r.id,
            dash(r.status.as_deref()),
            dash(r.external_id.as_deref())
        );
    }
    println!("  last request:");
    println!("    {}", dash(d.last_request.as_deref()));
    println!("  last response:");
    println!("    {}", dash(d.last_response.as_deref()));
    println!("  history ({} entries, oldest first):", d.history.len());
    for h in &d.history {
        println!("    {h}");
    }
}

async fn requeue(args: RequeueArgs, env: &Environment) -> anyhow::Result<ExitCode> {
    let selection = match &args.id {
        Some(id) => RequeueSelection::Id(id.clone()),
        None => RequeueSelection::Failed {
            tenant: args.tenant.clone(),
        },
    };
    let tenants = match (&args.re_render, &args.tenants) {
        (true, Some(path)) => Some(postings::load_tenants(path).await?),
        (true, None) => {
            // clap enforces it; kept for a clear message if that ever changes.
            eprintln!("error: --re-render needs --tenants FILE");
            return Ok(ExitCode::from(crate::EXIT_USAGE));
        }
        (false, _) => None,
    };
    let store = args.db.open(env).await?;
    let actor = args.operator.actor(&args.reason, env);
    let out = postings::requeue(&store, &selection, tenants.as_ref(), args.execute, &actor).await?;
    match args.format {
        Format::Json => print_json(&out)?,
        Format::Text => print_requeue(&out),
    }
    Ok(if out.outcome.refused > 0 {
        ExitCode::from(crate::EXIT_USAGE)
    } else {
        ExitCode::SUCCESS
    })
}

fn print_requeue(out: &RequeueReport) {
    let o = &out.outcome;
    if o.postings.is_empty() {
        println!("nothing to requeue: no failed posting matches");
        return;
    }
    let verb = if o.executed {
        "requeued"
    } else {
        "would requeue"
    };
    for l in &o.postings {
        let versions = match (&l.config_version_before, &l.config_version_after) {
            (before, after) if o.re_rendered => format!(
                " config {} -> {}{}",
                dash(before.as_deref()),
                dash(after.as_deref()),
                match l.document_changed {
                    Some(true) => " (document changed)",
                    Some(false) => " (document unchanged)",
                    None => "",
                }
            ),
            _ => String::new(),
        };
        match &l.refused {
            None => println!(
                "  {verb} {} {} {} (was failed: {}, {} attempts){versions}",
                l.id,
                l.tenant_id,
                dash(l.external_id.as_deref()),
                dash(l.last_error_class.as_deref()),
                l.attempts_before
            ),
            Some(why) => println!("  refused {} {}: {why}", l.id, l.tenant_id),
        }
    }
    if o.executed {
        println!(
            "requeued {} postings, {} refused (operation {}); the dispatcher of `ledgerflow run` delivers them",
            o.requeued,
            o.refused,
            out.operation_id.as_deref().unwrap_or("-")
        );
    } else {
        println!(
            "dry run: would requeue {} postings, {} refused; nothing changed (add --execute)",
            o.requeued, o.refused
        );
    }
}

async fn resolve(args: ResolveArgs, env: &Environment) -> anyhow::Result<ExitCode> {
    if args.reason.trim().is_empty() {
        eprintln!("error: --reason must say why the posting is resolved");
        return Ok(ExitCode::from(crate::EXIT_USAGE));
    }
    let store = args.db.open(env).await?;
    let actor = args.operator.actor(&args.reason, env);
    let out = postings::resolve(
        &store,
        &args.id,
        args.erp_document_id.as_deref(),
        args.execute,
        &actor,
    )
    .await?;
    match args.format {
        Format::Json => print_json(&out)?,
        Format::Text => print_resolve(&out),
    }
    Ok(if out.outcome.refused.is_some() {
        ExitCode::from(crate::EXIT_USAGE)
    } else {
        ExitCode::SUCCESS
    })
}

fn print_resolve(out: &ResolveReport) {
    let o = &out.outcome;
    match (&o.refused, o.executed) {
        (Some(why), _) => println!("refused {} {}: {why}", o.id, o.tenant_id),
        (None, true) => println!(
            "posting {} {} resolved (was failed: {}) (operation {})",
            o.id,
            dash(o.external_id.as_deref()),
            dash(o.last_error_class.as_deref()),
            out.operation_id.as_deref().unwrap_or("-")
        ),
        (None, false) => println!(
            "dry run: would resolve posting {} {} (failed: {}); nothing changed (add --execute)",
            o.id,
            dash(o.external_id.as_deref()),
            dash(o.last_error_class.as_deref())
        ),
    }
}
