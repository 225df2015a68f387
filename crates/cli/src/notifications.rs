//! Notifications wiring: the webhook dispatcher beside the consumer, `ledgerflow webhooks
//! verify`, and `ledgerflow notifications list|retry`.

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Subcommand, ValueEnum};
use ledgerflow_notifications::{
    CONSUMER_NAME, Dispatcher, DispatcherConfig, NotificationFilter, NotificationRow,
    Notifications, RetrySelector, WebhookSecret, verify,
};
use ledgerflow_store::Store;
use ledgerflow_tenants::SecretRef;
use tokio::sync::watch;

use crate::consumers::Companion;
use crate::output::Format;
use crate::run::Pipeline;
use crate::settings::DatabaseArgs;

/// How long an `--exit-when-idle` run keeps delivering after the consumers stopped.
const DRAIN_DEADLINE: Duration = Duration::from_secs(60);

/// Starts the webhook dispatcher when the consumer is notifications. It runs until `stop`
/// flips; then, in an `--exit-when-idle` run that no signal interrupted, it keeps delivering
/// until the outbox is drained (at most [`DRAIN_DEADLINE`]) so a batch job leaves no
/// deliverable notification behind.
pub(crate) fn spawn_dispatcher(
    name: &str,
    pipeline: &Pipeline,
    mut stop: watch::Receiver<bool>,
) -> Option<Companion> {
    if name != CONSUMER_NAME {
        return None;
    }
    let pool = pipeline.store.pool().clone();
    let backend = pipeline.store.backend();
    let drain_on_exit = pipeline.settings.exit_when_idle.is_some();
    let cfg = dispatcher_config();
    // A SIGINT/SIGTERM means "stop now": no drain then.
    let signalled = Arc::new(AtomicBool::new(false));
    let signal_watch = {
        let signalled = Arc::clone(&signalled);
        tokio::spawn(async move {
            crate::shutdown::signal().await;
            signalled.store(true, Ordering::SeqCst);
        })
    };
    let handle = tokio::spawn(async move {
        let dispatcher = match Dispatcher::new(pool, backend, cfg) {
            Ok(d) => d,
            Err(e) => {
                tracing::error!(error = %ledgerflow_codec::error_chain(&e), "webhook dispatcher not started");
                return;
            }
        };
        let shutdown = async move {
            let _ = stop.wait_for(|v| *v).await;
        };
        if let Err(e) = dispatcher.run(shutdown).await {
            tracing::error!(error = %ledgerflow_codec::error_chain(&e), "webhook dispatcher stopped");
        }
        if drain_on_exit
            && !signalled.load(Ordering::SeqCst)
            && !dispatcher.drain(DRAIN_DEADLINE).await
        {
            tracing::warn!(
                deadline = ?DRAIN_DEADLINE,
                "notification outbox still has pending deliveries; they resume on the next run"
            );
        }
        signal_watch.abort();
    });
    Some(Companion::new("webhook-dispatcher", handle))
}

/// Production defaults, tuned by the `LEDGERFLOW_WEBHOOK_*` variables.
fn dispatcher_config() -> DispatcherConfig {
    DispatcherConfig::default().with_env_overrides(|name| std::env::var(name).ok())
}

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

pub(crate) async fn webhooks(cmd: WebhooksCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        WebhooksCommand::Verify(args) => verify_command(args),
    }
}

fn verify_command(args: VerifyArgs) -> anyhow::Result<ExitCode> {
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
    let now_and_tolerance = args.tolerance.map(|t| {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
            .unwrap_or(0);
        (now, t)
    });
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

async fn open_store(db: &DatabaseArgs) -> anyhow::Result<Store> {
    let store = db.open().await?;
    let ddl = ledgerflow_store::ConsumerLogic::schema(&Notifications, store.backend());
    store.apply_schema(&ddl).await?;
    Ok(store)
}

pub(crate) async fn run(cmd: NotificationsCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        NotificationsCommand::List(args) => list(args).await,
        NotificationsCommand::Retry(args) => retry(args).await,
    }
}

async fn list(args: ListArgs) -> anyhow::Result<ExitCode> {
    let store = open_store(&args.db).await?;
    let filter = NotificationFilter {
        tenant: args.tenant.clone(),
        status: args.status.map(|s| s.as_str().to_owned()),
        limit: args.limit,
    };
    let rows = ledgerflow_notifications::list(store.pool(), &filter)
        .await
        .context("listing notifications")?;
    match args.format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&rows)?),
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

async fn retry(args: RetryArgs) -> anyhow::Result<ExitCode> {
    let store = open_store(&args.db).await?;
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
