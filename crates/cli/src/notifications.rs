//! `ledgerflow webhooks verify` and `ledgerflow notifications list|retry`.

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Subcommand, ValueEnum};
use ledgerflow_notifications::{
    NotificationFilter, NotificationRow, RetrySelector, WebhookSecret, verify,
};
use ledgerflow_service::{ConsumerKind, Environment};
use ledgerflow_store::Store;
use ledgerflow_tenants::SecretRef;

use crate::args::{DatabaseArgs, Format, print_json};

/// `ledgerflow webhooks ...`
#[derive(Debug, Subcommand)]
pub(crate) enum WebhooksCommand {
    /// Verify a Standard Webhooks signature of a body read from stdin (exit 0 valid, 1 not).
    Verify(VerifyArgs),
}

#[derive(Debug, Args)]
pub(crate) struct VerifyArgs {
    /// File holding the endpoint's `whsec_...` signing secret.
    #[arg(long)]
    secret_file: PathBuf,
    /// The `webhook-id` header.
    #[arg(long)]
    id: String,
    /// The `webhook-timestamp` header (unix seconds).
    #[arg(long, allow_negative_numbers = true)]
    timestamp: i64,
    /// The `webhook-signature` header: space-separated `v1,<base64>` signatures.
    #[arg(long)]
    signature: String,
    /// Also require the timestamp to be within this many seconds of now.
    #[arg(long, value_name = "SECONDS")]
    tolerance: Option<u64>,
}

pub(crate) fn webhooks(cmd: WebhooksCommand) -> anyhow::Result<ExitCode> {
    let WebhooksCommand::Verify(args) = cmd;
    let raw = ledgerflow_tenants::read_secret(&SecretRef::File {
        file: args.secret_file.clone(),
    })
    .context("reading the signing secret")?;
    let secret = WebhookSecret::parse(&raw)
        .with_context(|| format!("the secret in {}", args.secret_file.display()))?;
    // The body exactly as received: no trimming, a trailing newline is part of it.
    let mut body = Vec::new();
    std::io::stdin()
        .read_to_end(&mut body)
        .context("reading the body from stdin")?;
    let now_and_tolerance = args
        .tolerance
        .map(|t| (ledgerflow_core::now_micros() / 1_000_000, t));
    match verify(
        &secret,
        &args.id,
        args.timestamp,
        &body,
        &args.signature,
        now_and_tolerance,
    ) {
        Ok(()) => {
            println!("valid");
            Ok(ExitCode::SUCCESS)
        }
        Err(reason) => {
            println!("invalid: {reason}");
            Ok(ExitCode::FAILURE)
        }
    }
}

/// `ledgerflow notifications ...`
#[derive(Debug, Subcommand)]
pub(crate) enum NotificationsCommand {
    /// List outbox rows with their attempts, last status and last error.
    List(ListArgs),
    /// Re-queue failed notifications (delivered ones are never re-sent).
    Retry(RetryArgs),
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum StatusArg {
    Pending,
    Delivered,
    Failed,
}

impl StatusArg {
    fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Delivered => "delivered",
            Self::Failed => "failed",
        }
    }
}

#[derive(Debug, Args)]
pub(crate) struct ListArgs {
    #[command(flatten)]
    db: DatabaseArgs,
    /// Only this tenant.
    #[arg(long)]
    tenant: Option<String>,
    /// Only rows with this status.
    #[arg(long, value_enum)]
    status: Option<StatusArg>,
    /// At most this many rows (oldest first).
    #[arg(long)]
    limit: Option<u32>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("which").required(true).args(["id", "tenant", "all_failed"])))]
pub(crate) struct RetryArgs {
    #[command(flatten)]
    db: DatabaseArgs,
    /// One notification, by webhook-id.
    id: Option<String>,
    /// Every failed notification of this tenant.
    #[arg(long)]
    tenant: Option<String>,
    /// Every failed notification.
    #[arg(long)]
    all_failed: bool,
}

async fn open_store(db: &DatabaseArgs, env: &Environment) -> anyhow::Result<Store> {
    let store = db.open(env).await?;
    store
        .apply_schema(&ConsumerKind::Notifications.schema(store.backend()))
        .await?;
    Ok(store)
}

pub(crate) async fn run(cmd: NotificationsCommand, env: &Environment) -> anyhow::Result<ExitCode> {
    match cmd {
        NotificationsCommand::List(args) => list(args, env).await,
        NotificationsCommand::Retry(args) => retry(args, env).await,
    }
}

async fn list(args: ListArgs, env: &Environment) -> anyhow::Result<ExitCode> {
    let store = open_store(&args.db, env).await?;
    let filter = NotificationFilter {
        tenant: args.tenant.clone(),
        status: args.status.map(|s| s.as_str().to_owned()),
        limit: args.limit,
    };
    let rows = ledgerflow_notifications::list(store.pool(), &filter)
        .await
        .context("listing notifications")?;
    match args.format {
        Format::Json => print_json(&rows)?,
        Format::Text => print_rows(&rows),
    }
    Ok(ExitCode::SUCCESS)
}

fn print_rows(rows: &[NotificationRow]) {
    println!(
        "{:<36} {:<12} {:<12} {:<16} {:<9} {:>8} {:>6}  last error",
        "webhook-id", "tenant", "endpoint", "kind", "status", "attempts", "last"
    );
    for r in rows {
        let last = r
            .last_status
            .map_or_else(|| "-".to_owned(), |s| s.to_string());
        let error: String = r
            .last_error
            .as_deref()
            .unwrap_or("")
            .chars()
            .take(60)
            .collect();
        println!(
            "{:<36} {:<12} {:<12} {:<16} {:<9} {:>8} {:>6}  {error}",
            r.webhook_id, r.tenant_id, r.endpoint_id, r.kind, r.status, r.attempts, last
        );
    }
    println!("{} notification(s)", rows.len());
}

async fn retry(args: RetryArgs, env: &Environment) -> anyhow::Result<ExitCode> {
    let store = open_store(&args.db, env).await?;
    let selector = match (&args.id, &args.tenant, args.all_failed) {
        (Some(id), _, _) => RetrySelector::Id(id.clone()),
        (None, Some(tenant), _) => RetrySelector::Tenant(tenant.clone()),
        (None, None, _) => RetrySelector::AllFailed,
    };
    let outcome = ledgerflow_notifications::retry(store.pool(), &selector)
        .await
        .context("re-queueing notifications")?;
    if let (RetrySelector::Id(id), 0) = (&selector, outcome.requeued) {
        return Ok(match outcome.current_status.as_deref() {
            None => {
                eprintln!("error: no notification {id}");
                ExitCode::FAILURE
            }
            Some("delivered") => {
                println!("{id} was delivered; a delivered notification is never re-sent");
                ExitCode::SUCCESS
            }
            Some(status) => {
                println!("{id} is {status}; nothing to re-queue");
                ExitCode::SUCCESS
            }
        });
    }
    println!("re-queued {} notification(s)", outcome.requeued);
    Ok(ExitCode::SUCCESS)
}
