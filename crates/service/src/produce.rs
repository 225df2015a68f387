//! `ledgerflow produce`: registers the contracts and sends a deterministic billing workload.
//!
//! Records are keyed by tenant id and partitioned with murmur2 (librdkafka's
//! `murmur2_random`), the Java client's partitioner, so a tenant lands on the same partition
//! whichever client produced it. Headers carry `tenant_id`, `event_type` and `event_id` so
//! routing and tracing need not decode the value.
//!
//! [`tenants_file`] writes a tenants file for the generated tenants (and provisions the ERP
//! simulator's accounts), so a consumer can be started on the same tenants while the records
//! flow.

pub mod tenants_file;

use std::collections::VecDeque;
use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use ledgerflow_codec::{Encoder, RegistryAuth, RegistryClient, describe};
use ledgerflow_loadgen::{Manifest, Workload};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer};
use serde::Serialize;

use crate::KafkaClient;

/// Deliveries awaited at most before the producer stops queueing new records.
const MAX_IN_FLIGHT: usize = 20_000;

/// Where and how to produce.
#[derive(Debug, Clone)]
pub struct ProduceOptions {
    /// Brokers and the operator's librdkafka properties (which win over the producer's own).
    pub kafka: KafkaClient,
    /// Schema registry base URL.
    pub registry: String,
    /// Registry credentials.
    pub registry_auth: Option<RegistryAuth>,
    /// Topic to produce to (must exist).
    pub topic: String,
    /// Records per second at most (0 = as fast as the broker takes them).
    pub rate: f64,
    /// The idempotent producer (off only for brokers without InitProducerId support).
    pub idempotence: bool,
    /// Write the manifest (counts and exact totals per tenant) to this JSON file.
    pub manifest: Option<PathBuf>,
    /// Write the billing platform's document export (CSV) to this file.
    pub billing_csv: Option<PathBuf>,
}

/// What was produced.
#[derive(Debug, Clone, Serialize)]
pub struct ProduceReport {
    /// The topic.
    pub topic: String,
    /// Records sent and acknowledged, duplicates included.
    pub sent: u64,
    /// Distinct events among them.
    pub distinct: u64,
    /// Exact re-sends among them.
    pub duplicates: u64,
    /// Wall time, seconds.
    pub elapsed_secs: f64,
}

/// Registers the contracts, then sends every record of `workload` with acks=all, calling
/// `progress` once per record queued. Fails when any record is not acknowledged.
pub async fn produce(
    workload: Workload,
    seed: u64,
    options: &ProduceOptions,
    mut progress: impl FnMut(u64),
) -> anyhow::Result<ProduceReport> {
    anyhow::ensure!(
        options.rate >= 0.0 && options.rate.is_finite(),
        "--rate must be a non-negative number, got {}",
        options.rate
    );
    let client = RegistryClient::new(&options.registry, Duration::from_secs(10))
        .map_err(anyhow::Error::msg)?
        .with_auth(options.registry_auth.clone());
    let encoder = Encoder::register(&client, &options.topic)
        .await
        .map_err(|e| anyhow::anyhow!("registering schemas: {}", describe(&e)))?;

    let idempotence = if options.idempotence { "true" } else { "false" };
    let producer: FutureProducer = options
        .kafka
        .config(
            "ledgerflow",
            &[
                ("partitioner", "murmur2_random"),
                ("linger.ms", "5"),
                ("acks", "all"),
                ("message.timeout.ms", "60000"),
                ("queue.buffering.max.messages", "200000"),
                ("enable.idempotence", idempotence),
            ],
        )
        .create()
        .context("creating the Kafka producer")?;

    let mut manifest = Manifest::new(workload.tenants(), seed);
    let mut billing = match &options.billing_csv {
        Some(path) => {
            let file = std::fs::File::create(path)
                .with_context(|| format!("creating the billing export {}", path.display()))?;
            let mut w = std::io::BufWriter::new(file);
            writeln!(w, "{}", ledgerflow_loadgen::BILLING_CSV_HEADER)?;
            Some(w)
        }
        None => None,
    };
    let started = Instant::now();
    let interval = (options.rate > 0.0).then(|| Duration::from_secs_f64(1.0 / options.rate));
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
        let mut record = FutureRecord::to(&options.topic)
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
        progress(1);
    }
    for delivery in in_flight {
        failures += u64::from(!delivered(delivery.await));
    }
    producer
        .flush(Duration::from_secs(30))
        .context("flushing the producer")?;
    let elapsed_secs = started.elapsed().as_secs_f64();
    anyhow::ensure!(
        failures == 0,
        "{failures} of {sent} records were not acknowledged by the broker"
    );
    if let Some(mut w) = billing {
        w.flush().context("writing the billing export")?;
    }
    if let Some(path) = &options.manifest {
        let json = serde_json::to_string_pretty(&manifest).context("serializing the manifest")?;
        std::fs::write(path, json + "\n")
            .with_context(|| format!("writing the manifest {}", path.display()))?;
    }
    Ok(ProduceReport {
        topic: options.topic.clone(),
        sent,
        distinct: manifest.distinct_events,
        duplicates: manifest.duplicates_sent,
        elapsed_secs,
    })
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
