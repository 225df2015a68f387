//! `ledgerflow produce`: registers the contracts and sends a deterministic billing workload.
//!
//! Records are keyed by tenant id and partitioned with murmur2 (librdkafka's
//! `murmur2_random`), the Java client's partitioner, so a tenant lands on the same partition
//! whichever client produced it. Headers carry `tenant_id`, `event_type`, `event_id` and
//! `correlation_id` so routing and tracing need not decode the value.
//!
//! With `--tenants-file` it first writes a tenants file for the generated tenants (see
//! [`crate::tenants_file`]), so a consumer can be started on it in parallel.

use std::collections::VecDeque;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use ledgerflow_codec::{Encoder, RegistryClient, describe};
use ledgerflow_loadgen::{Manifest, Workload, WorkloadConfig};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer};

use crate::kafka::KafkaArgs;
use crate::tenants_file::{self, TenantsFileSpec};

/// Deliveries awaited at most before the producer stops queueing new records.
const MAX_IN_FLIGHT: usize = 20_000;

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

pub(crate) async fn run(args: ProduceArgs) -> anyhow::Result<ExitCode> {
    let config = WorkloadConfig {
        tenants: args.tenants,
        events: args.events,
        duplicates: args.duplicates,
        seed: args.seed,
        out_of_order: args.out_of_order,
        ..WorkloadConfig::default()
    };
    let workload = Workload::new(config).context("invalid workload")?;
    if !(args.rate >= 0.0 && args.rate.is_finite()) {
        anyhow::bail!("--rate must be a non-negative number, got {}", args.rate);
    }
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
                tenants_file::Provisioned::Accounts(n) => {
                    eprintln!("provisioned {n} erp accounts in the simulator at {url}");
                }
                tenants_file::Provisioned::NoSimulator(why) => {
                    eprintln!("no erp simulator answered ({why}); accounts not provisioned");
                }
            }
        }
    }
    let client = RegistryClient::new(&args.registry, Duration::from_secs(10))
        .map_err(anyhow::Error::msg)?
        .with_auth(
            ledgerflow_codec::RegistryAuth::from_env(|n| std::env::var(n).ok())
                .map_err(anyhow::Error::msg)?,
        );
    let encoder = Encoder::register(&client, &args.topic)
        .await
        .map_err(|e| anyhow::anyhow!("registering schemas: {}", describe(&e)))?;

    let mut cfg = args.kafka.client_config();
    cfg.set("partitioner", "murmur2_random")
        .set("linger.ms", "5")
        .set("acks", "all")
        .set("message.timeout.ms", "60000")
        .set("queue.buffering.max.messages", "200000");
    if !args.no_idempotence {
        cfg.set("enable.idempotence", "true");
    }
    // The operator's properties win over the producer's own (secret references resolved).
    for (k, v) in &args.kafka.properties {
        cfg.set(
            k,
            ledgerflow_core::secret::resolve(v).unwrap_or_else(|_| v.clone()),
        );
    }
    let producer: FutureProducer = cfg.create().context("creating the Kafka producer")?;

    let mut manifest = Manifest::new(workload.tenants(), args.seed);
    let mut billing = match &args.billing_csv {
        Some(path) => {
            let file = std::fs::File::create(path)
                .with_context(|| format!("creating the billing export {}", path.display()))?;
            let mut w = std::io::BufWriter::new(file);
            writeln!(w, "{}", ledgerflow_loadgen::BILLING_CSV_HEADER)?;
            Some(w)
        }
        None => None,
    };
    let bar = ProgressBar::new(args.events);
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} produce [{elapsed_precise}] {wide_bar} {pos}/{len} ({per_sec}, eta {eta})",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let started = Instant::now();
    let interval = (args.rate > 0.0).then(|| Duration::from_secs_f64(1.0 / args.rate));
    let mut in_flight: VecDeque<DeliveryFuture> = VecDeque::new();
    let mut failures = 0u64;
    let mut sent = 0u64;

    for generated in workload {
        if let Some(step) = interval {
            // Open-loop pacing against the start time, so slow sends do not lower the rate.
            let due = started + step.mul_f64(sent as f64);
            tokio::time::sleep_until(due.into()).await;
        }
        let value = encoder
            .encode(&generated.event, generated.writer_version)
            .map_err(|e| anyhow::anyhow!("encoding: {}", describe(&e)))?;
        let key = generated.tenant_id.as_str();
        let event_type = generated.event.event_type();
        let headers = OwnedHeaders::new()
            .insert(Header {
                key: "tenant_id",
                value: Some(key),
            })
            .insert(Header {
                key: "event_type",
                value: Some(event_type.as_str()),
            })
            .insert(Header {
                key: "event_id",
                value: Some(generated.event.event_id_raw()),
            });
        let mut record = FutureRecord::to(&args.topic)
            .key(key)
            .payload(&value)
            .headers(headers);
        loop {
            match producer.send_result(record) {
                Ok(delivery) => {
                    in_flight.push_back(delivery);
                    break;
                }
                Err((e, returned)) => {
                    record = returned;
                    // Queue full: make room by waiting for the oldest delivery.
                    let Some(oldest) = in_flight.pop_front() else {
                        anyhow::bail!("producer refused a record with nothing in flight: {e}");
                    };
                    failures += u64::from(!delivered(oldest.await));
                }
            }
        }
        while in_flight.len() > MAX_IN_FLIGHT {
            if let Some(oldest) = in_flight.pop_front() {
                failures += u64::from(!delivered(oldest.await));
            }
        }
        manifest.record(&generated);
        if let Some(w) = billing.as_mut()
            && let Some(row) = ledgerflow_loadgen::billing_csv_row(&generated)
        {
            writeln!(w, "{row}").context("writing the billing export")?;
        }
        sent += 1;
        bar.inc(1);
    }
    for delivery in in_flight {
        failures += u64::from(!delivered(delivery.await));
    }
    producer
        .flush(Duration::from_secs(30))
        .context("flushing the producer")?;
    bar.finish_and_clear();
    let elapsed = started.elapsed().as_secs_f64();
    if failures > 0 {
        anyhow::bail!("{failures} of {sent} records were not acknowledged by the broker");
    }
    if let Some(mut w) = billing {
        w.flush().context("writing the billing export")?;
    }
    if let Some(path) = &args.manifest {
        let json = serde_json::to_string_pretty(&manifest).context("serializing the manifest")?;
        std::fs::write(path, json + "\n")
            .with_context(|| format!("writing the manifest {}", path.display()))?;
    }
    eprintln!(
        "produced {sent} records ({} distinct, {} duplicates) to {} in {elapsed:.1}s ({:.0}/s)",
        manifest.distinct_events,
        manifest.duplicates_sent,
        args.topic,
        sent as f64 / elapsed.max(1e-9)
    );
    Ok(ExitCode::SUCCESS)
}

fn delivered(result: <DeliveryFuture as std::future::Future>::Output) -> bool {
    match result {
        Ok(Ok(_)) => true,
        Ok(Err((e, _))) => {
            tracing::error!(error = %e, "delivery failed");
            false
        }
        Err(_) => {
            tracing::error!("delivery future canceled (producer dropped)");
            false
        }
    }
}
