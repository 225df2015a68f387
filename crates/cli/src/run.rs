//! `ledgerflow run`: every enabled consumer in one process, each with its own group, positions
//! and loop, so a slow consumer never holds back another.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use ledgerflow_codec::{Decoder, DecoderConfig, RegistryClient};
use ledgerflow_runtime::{MemberStatus, RunExit, RuntimeConfig, TopicSelector, run_consumer};
use ledgerflow_store::Store;
use ledgerflow_tenants::TenantRegistry;
use tokio::sync::watch;

use crate::consumers;
use crate::output::Format;
use crate::settings::{PipelineArgs, PipelineSettings};

#[derive(Debug, Args)]
pub(crate) struct RunArgs {
    #[command(flatten)]
    pipeline: PipelineArgs,
    /// Consumer to run, repeatable (default: the config's `consumers`, else all).
    #[arg(long = "consumer", value_parser = consumers::parse_name)]
    consumers: Vec<String>,
    /// Summary format printed on exit.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
}

/// Everything a pipeline command needs, opened once.
pub(crate) struct Pipeline {
    pub(crate) settings: PipelineSettings,
    pub(crate) store: Store,
    pub(crate) decoder: Arc<Decoder>,
    pub(crate) tenants: TenantRegistry,
}

impl Pipeline {
    pub(crate) async fn open(args: &PipelineArgs) -> anyhow::Result<Self> {
        let settings = args.resolve()?;
        let store = crate::settings::open_store(&settings.database).await?;
        let client = RegistryClient::new(&settings.registry, Duration::from_secs(10))
            .map_err(anyhow::Error::msg)?;
        let decoder = Arc::new(Decoder::new(client, DecoderConfig::default()));
        let tenants = match &settings.tenants {
            Some(path) => TenantRegistry::load(path)
                .with_context(|| format!("loading tenants from {}", path.display()))?,
            None => {
                tracing::warn!(
                    "no tenants file: every event will be dead-lettered as unknown_tenant"
                );
                TenantRegistry::empty()
            }
        };
        Ok(Self {
            settings,
            store,
            decoder,
            tenants,
        })
    }

    pub(crate) fn runtime_config(&self) -> RuntimeConfig {
        let s = &self.settings;
        RuntimeConfig {
            brokers: s.brokers.clone(),
            group_prefix: s.group_prefix.clone(),
            topics: s.topics.iter().map(|t| TopicSelector::parse(t)).collect(),
            batch_max_records: s.batch_max_records,
            batch_max_wait: s.batch_max_wait,
            exit_when_idle: s.exit_when_idle,
            max_wait: s.max_wait,
            shutdown_timeout: s.shutdown_timeout,
            kafka_properties: s.kafka_properties.clone(),
            group_protocol: s.group_protocol,
            instance_id: s.instance_id.clone(),
            session_timeout: s.session_timeout,
            retry_base: Duration::from_millis(200),
            retry_max: Duration::from_secs(10),
            status: None,
        }
    }
}

impl std::fmt::Debug for Pipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pipeline")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

pub(crate) async fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    let pipeline = Pipeline::open(&args.pipeline).await?;
    let names = if !args.consumers.is_empty() {
        args.consumers.clone()
    } else if !pipeline.settings.consumers_from_file.is_empty() {
        pipeline.settings.consumers_from_file.clone()
    } else {
        consumers::ALL.iter().map(|s| (*s).to_owned()).collect()
    };
    let (stop_tx, stop_rx) = watch::channel(false);
    let shutdown_timeout = pipeline.settings.shutdown_timeout;
    tokio::spawn(async move {
        crate::shutdown::signal().await;
        tracing::info!(
            budget = ?shutdown_timeout,
            "shutdown requested: committing buffered batches (a second signal exits at once)"
        );
        // The receivers live until the consumers have stopped; a failed send means they have.
        stop_tx.send(true).ok();
        tokio::select! {
            () = crate::shutdown::signal() => {
                eprintln!("second signal: exiting at once (uncommitted batches are re-read on the next start)");
            }
            () = tokio::time::sleep(shutdown_timeout + Duration::from_secs(5)) => {
                eprintln!("shutdown took longer than {shutdown_timeout:?}: exiting (uncommitted batches are re-read on the next start)");
            }
        }
        std::process::exit(130);
    });
    let mut watcher_stop = stop_rx.clone();
    let watcher = pipeline
        .tenants
        .spawn_watcher(Duration::from_secs(2), async move {
            let _ = watcher_stop.wait_for(|v| *v).await;
        });

    // Companions (outbox dispatchers) stop after the consumers, so nothing a consumer wrote in
    // its last batch waits for the next run without need.
    let (companion_tx, companion_rx) = watch::channel(false);
    let ready = Arc::new(ledgerflow_telemetry::Readiness::default());
    let status = Arc::new(MemberStatus::default());
    if let Some(addr) = &pipeline.settings.metrics_listen {
        let handle = ledgerflow_telemetry::install().context("installing the metrics recorder")?;
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding the metrics address {addr}"))?;
        tracing::info!(%addr, "serving /metrics, /healthz, /readyz");
        crate::lag::start(&ready, &pipeline, &names, companion_rx.clone())?;
        let (status, grace) = (Arc::clone(&status), pipeline.settings.not_ready_after);
        ready.add_check("membership", move || {
            let verdict = status.check(grace, std::time::Instant::now());
            Box::pin(async move { verdict })
        });
        let mut metrics_stop = companion_rx.clone();
        let ready = Arc::clone(&ready);
        tokio::spawn(async move {
            let stop = async move {
                let _ = metrics_stop.wait_for(|v| *v).await;
            };
            if let Err(e) = ledgerflow_telemetry::serve(listener, handle, ready, stop).await {
                tracing::error!(error = %ledgerflow_codec::error_chain(&e), "metrics server stopped");
            }
        });
    }
    let mut config = pipeline.runtime_config();
    config.status = Some(Arc::clone(&status));
    let mut tasks = Vec::new();
    for name in &names {
        let consumer = consumers::build(name)?;
        pipeline
            .store
            .apply_schema(&consumer.schema(pipeline.store.backend()))
            .await
            .with_context(|| format!("schema of {name}"))?;
        let extras = consumers::spawn_companions(name, &pipeline, companion_rx.clone());
        tasks.push((
            name.clone(),
            tokio::spawn(run_consumer(
                consumer,
                pipeline.store.clone(),
                Arc::clone(&pipeline.decoder),
                pipeline.tenants.clone(),
                config.clone(),
                stop_rx.clone(),
            )),
            extras,
        ));
    }
    ready.set(true);
    let mut failed = false;
    let mut summaries = Vec::new();
    let mut companions = Vec::new();
    for (name, task, extras) in tasks {
        match task.await {
            Ok(Ok(summary)) => summaries.push(summary),
            Ok(Err(e)) => {
                failed = true;
                eprintln!(
                    "consumer {name} failed: {}",
                    ledgerflow_codec::error_chain(&e)
                );
            }
            Err(e) => {
                failed = true;
                eprintln!("consumer {name} panicked: {e}");
            }
        }
        companions.extend(extras);
    }
    let not_drained: Vec<&ledgerflow_runtime::ConsumerSummary> = summaries
        .iter()
        .filter(|s| s.exit == RunExit::NotDrained)
        .collect();
    if !*stop_rx.borrow()
        && not_drained.is_empty()
        && pipeline.settings.exit_when_idle.is_some()
        && names
            .iter()
            .any(|n| n == ledgerflow_erp_receivables::CONSUMER_NAME)
    {
        crate::erp::drain_outbox(&pipeline.store, Duration::from_secs(60)).await;
    }
    // Every receiver may already be gone (no companions); nothing to tell then.
    companion_tx.send(true).ok();
    for companion in companions {
        companion.finish().await;
    }
    watcher.abort();
    match args.format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&summaries)?),
        Format::Text => {
            for s in &summaries {
                println!(
                    "{}: {} batches, {} applied, {} duplicates, {} dead-lettered, {} skipped, {} retries, {} stale, {} re-read, {}",
                    s.consumer,
                    s.batches,
                    s.applied,
                    s.duplicates,
                    s.dead_lettered,
                    s.skipped,
                    s.retries,
                    s.stale_batches,
                    s.rereads,
                    match s.exit {
                        RunExit::Signal if s.left_uncommitted > 0 => format!(
                            "stopped by signal ({} records left to re-read)",
                            s.left_uncommitted
                        ),
                        RunExit::Signal => "stopped by signal".to_owned(),
                        RunExit::Drained => "drained".to_owned(),
                        RunExit::NotDrained => format!(
                            "NOT drained: {}",
                            s.not_drained.as_deref().unwrap_or("unknown")
                        ),
                    }
                );
            }
        }
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else if summaries.iter().any(|s| s.exit == RunExit::NotDrained) {
        for s in summaries.iter().filter(|s| s.exit == RunExit::NotDrained) {
            eprintln!(
                "{} did not drain within --max-wait: {}",
                s.consumer,
                s.not_drained.as_deref().unwrap_or("unknown")
            );
        }
        ExitCode::from(crate::EXIT_NOT_DRAINED)
    } else {
        ExitCode::SUCCESS
    })
}
