//! `ledgerflow produce`: the flags of [`ledgerflow_service::produce`], its progress bar and
//! its report. With `--tenants-file` it first writes a tenants file for the generated tenants
//! ([`ledgerflow_service::produce::tenants_file`]), so a consumer can be started on it while the
//! records flow.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use ledgerflow_loadgen::{Workload, WorkloadConfig};
use ledgerflow_service::Environment;
use ledgerflow_service::produce::tenants_file::{self, Provisioned, TenantsFileSpec};
use ledgerflow_service::produce::{ProduceOptions, produce};

use crate::args::Format;
use crate::kafka::KafkaArgs;

#[derive(Debug, Args)]
pub(crate) struct ProduceArgs {
    #[command(flatten)]
    kafka: KafkaArgs,
    /// Schema registry base URL.
    #[arg(
        long,
        env = "LEDGERFLOW_SCHEMA_REGISTRY_URL",
        default_value = "http://127.0.0.1:8081"
    )]
    registry: String,
    /// Topic to produce to (must exist).
    #[arg(long)]
    topic: String,
    /// Number of tenants (t001, t002, ...), Zipf-skewed.
    #[arg(long, default_value_t = 10)]
    tenants: u32,
    /// Records to send in total, duplicates included.
    #[arg(long, default_value_t = 1000)]
    events: u64,
    /// Fraction of records that are exact re-sends of an earlier event (0 <= F < 1).
    #[arg(long, default_value_t = 0.0)]
    duplicates: f64,
    /// Fraction of payments sent just before the invoice they pay.
    #[arg(long, default_value_t = 0.0)]
    out_of_order: f64,
    /// Random seed; the same seed and counts give the same records byte for byte.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Records per second at most (0 = as fast as the broker takes them).
    #[arg(long, default_value_t = 0.0)]
    rate: f64,
    /// Write the manifest (counts and exact totals per tenant) to this JSON file.
    #[arg(long)]
    manifest: Option<PathBuf>,
    /// Write the billing platform's document export (one CSV row per distinct invoice, payment
    /// and credit memo, with exact amounts) to this file, for `reconcile --source FILE.csv`.
    #[arg(long, value_name = "FILE")]
    billing_csv: Option<PathBuf>,
    /// Disable the idempotent producer (for brokers without InitProducerId support).
    #[arg(long)]
    no_idempotence: bool,
    /// Write the result as text or JSON (one object: topic, sent, distinct, duplicates,
    /// elapsed_secs).
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
    /// Before producing, write a tenants file for the generated tenants (legal entity,
    /// currency, GL accounts) for a consumer's `--tenants-file`. --erp-url and --webhook-url add
    /// ERP routes and webhooks; their secrets and keys (test secrets, not for production) are
    /// written to `<stem>.secrets/` beside FILE, which only references them.
    #[arg(long, value_name = "FILE")]
    tenants_file: Option<PathBuf>,
    /// The ERP simulator (`ledgerflow-erp-sim`) for the tenants file: t001 and t002 share a
    /// NetSuite account, the rest rotate over Dynamics 365, S/4HANA, Oracle Fusion and NetSuite;
    /// the accounts and their credentials are provisioned in the simulator.
    #[arg(long, value_name = "URL", requires = "tenants_file")]
    erp_url: Option<String>,
    /// Webhook base URL for the tenants file: each tenant gets one endpoint, id `default`,
    /// at `URL/<tenant>`, with a Standard Webhooks `whsec_` secret.
    #[arg(long, value_name = "URL", requires = "tenants_file")]
    webhook_url: Option<String>,
}

pub(crate) async fn run(args: ProduceArgs, env: &Environment) -> anyhow::Result<ExitCode> {
    let config = WorkloadConfig {
        tenants: args.tenants,
        events: args.events,
        duplicates: args.duplicates,
        seed: args.seed,
        out_of_order: args.out_of_order,
        ..WorkloadConfig::default()
    };
    let workload = Workload::new(config).context("invalid workload")?;
    // Before producing, so a consumer can be started on it while the records flow.
    if let Some(path) = &args.tenants_file {
        let spec = TenantsFileSpec {
            path,
            erp_url: args.erp_url.as_deref(),
            webhook_url: args.webhook_url.as_deref(),
            seed: args.seed,
        };
        let written = tenants_file::write(&spec, workload.tenants())
            .with_context(|| format!("writing the tenants file {}", path.display()))?;
        match &written.secrets_dir {
            Some(dir) => eprintln!(
                "wrote {} tenants to {} (secrets in {})",
                written.tenants,
                path.display(),
                dir.display()
            ),
            None => eprintln!("wrote {} tenants to {}", written.tenants, path.display()),
        }
        if let Some(url) = &args.erp_url {
            match tenants_file::provision(url, &written.sim_accounts).await? {
                Provisioned::Accounts(n) => {
                    eprintln!("provisioned {n} erp accounts in the simulator at {url}");
                }
                Provisioned::NoSimulator(why) => {
                    eprintln!("no erp simulator answered ({why}); accounts not provisioned");
                }
            }
        }
    }
    let options = ProduceOptions {
        kafka: args.kafka.client(env),
        registry: args.registry,
        registry_auth: ledgerflow_codec::RegistryAuth::from_env(|n| env.get(n).map(str::to_owned))
            .map_err(anyhow::Error::msg)?,
        topic: args.topic,
        rate: args.rate,
        idempotence: !args.no_idempotence,
        manifest: args.manifest,
        billing_csv: args.billing_csv,
    };
    let bar = ProgressBar::new(args.events);
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} produce [{elapsed_precise}] {wide_bar} {pos}/{len} ({per_sec}, eta {eta})",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.enable_steady_tick(Duration::from_millis(500));
    let report = produce(workload, args.seed, &options, |n| bar.inc(n)).await;
    bar.finish_and_clear();
    let report = report?;
    match args.format {
        Format::Json => println!("{}", serde_json::to_string(&report)?),
        Format::Text => eprintln!(
            "produced {} records ({} distinct, {} duplicates) to {} in {:.1}s ({:.0}/s)",
            report.sent,
            report.distinct,
            report.duplicates,
            report.topic,
            report.elapsed_secs,
            report.sent as f64 / report.elapsed_secs.max(1e-9)
        ),
    }
    Ok(ExitCode::SUCCESS)
}
