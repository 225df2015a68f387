//! One record from bytes to a [`RecordOutcome`]: decode, tenant checks, mapping.
//!
//! Shared by the live loop and by every tool that pushes records through the pipeline, so a
//! replayed or re-driven record is judged exactly as a live one.

use ledgerflow_codec::{Decoder, Frame, error_chain};
use ledgerflow_core::{Coordinates, Envelope, EventMeta, Failure, ReasonCode, SchemaId};
use ledgerflow_store::{DeadLetterInput, ErasedConsumer, RecordOutcome, SkippedInput};
use ledgerflow_tenants::TenantRegistry;

/// A Kafka record, owned.
#[derive(Debug, Clone)]
pub struct RawRecord {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// Offset.
    pub offset: i64,
    /// Key bytes.
    pub key: Option<Vec<u8>>,
    /// Value bytes.
    pub value: Option<Vec<u8>>,
    /// Headers (values lossy UTF-8).
    pub headers: Vec<(String, Option<String>)>,
}

impl RawRecord {
    /// Copies a Kafka message (header values as lossy UTF-8).
    pub fn from_message<M: rdkafka::message::Message>(msg: &M) -> Self {
        use rdkafka::message::Headers;
        let headers = msg
            .headers()
            .map(|h| {
                h.iter()
                    .map(|x| {
                        (
                            x.key.to_owned(),
                            x.value.map(|v| String::from_utf8_lossy(v).into_owned()),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        Self {
            topic: msg.topic().to_owned(),
            partition: msg.partition(),
            offset: msg.offset(),
            key: msg.key().map(<[u8]>::to_vec),
            value: msg.payload().map(<[u8]>::to_vec),
            headers,
        }
    }

    /// The value of a header (the first one with that name).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .and_then(|(_, v)| v.as_deref())
    }

    /// A dead letter for a record that did not decode; moves the raw bytes, no copy.
    fn into_dead_letter(self, reason: ReasonCode, error: String) -> DeadLetterInput {
        let schema_id = self
            .value
            .as_deref()
            .and_then(|v| Frame::parse(v, usize::MAX).ok())
            .map(|f| f.schema_id.0);
        let header = |name: &str| self.header(name).map(str::to_owned);
        let (event_id, tenant_id, event_type) = (
            header("event_id"),
            header("tenant_id"),
            header("event_type"),
        );
        DeadLetterInput {
            offset: self.offset,
            reason,
            error,
            key: self.key,
            value: self.value,
            headers: self.headers,
            schema_id,
            event_id,
            tenant_id,
            event_type,
        }
    }

    /// A dead letter for a decoded record: identity from the payload, raw bytes moved.
    fn into_decoded_letter(
        self,
        meta: &EventMeta,
        schema_id: SchemaId,
        reason: ReasonCode,
        error: String,
    ) -> DeadLetterInput {
        DeadLetterInput {
            offset: self.offset,
            reason,
            error,
            key: self.key,
            value: self.value,
            headers: self.headers,
            schema_id: Some(schema_id.0),
            event_id: Some(meta.event_id.to_string()),
            tenant_id: Some(meta.tenant_id.to_string()),
            event_type: Some(meta.event_type.as_str().to_owned()),
        }
    }
}

/// Judges one record. `Err` is only ever a retryable failure (the registry is unreachable): the
/// caller must retry the batch, never skip the record.
pub async fn prepare_record(
    decoder: &Decoder,
    tenants: &TenantRegistry,
    consumer: &dyn ErasedConsumer,
    raw: RawRecord,
) -> Result<RecordOutcome, Failure> {
    let Some(value) = raw.value.as_deref() else {
        // A tombstone has no event in it; nothing upstream should send one to a billing topic.
        let error = "record has no value (tombstone)".to_owned();
        return Ok(RecordOutcome::DeadLetter(
            raw.into_dead_letter(ReasonCode::Tombstone, error),
        ));
    };
    let started = std::time::Instant::now();
    let decoding = decoder.decode(value).await;
    metrics::histogram!(ledgerflow_telemetry::DECODE_SECONDS, "consumer" => consumer.name())
        .record(started.elapsed().as_secs_f64());
    let decoded = match decoding {
        Ok(d) => d,
        Err(e) => {
            return match e.failure() {
                Failure::Retryable { detail } => Err(Failure::Retryable { detail }),
                Failure::Permanent { reason, .. } => Ok(RecordOutcome::DeadLetter(
                    raw.into_dead_letter(reason, error_chain(&e)),
                )),
            };
        }
    };
    let meta = decoded.meta;
    let schema_id = decoded.schema_id;
    let payload_tenant = meta.tenant_id.as_str();
    let key_tenant = raw.key.as_deref().map(String::from_utf8_lossy);
    let mismatch = match (key_tenant.as_deref(), raw.header("tenant_id")) {
        (Some(key), _) if key != payload_tenant => Some(format!(
            "record key names tenant {key:?} but the payload names {payload_tenant:?}"
        )),
        (_, Some(header)) if header != payload_tenant => Some(format!(
            "tenant_id header is {header:?} but the payload names {payload_tenant:?}"
        )),
        _ => None,
    };
    if let Some(e) = mismatch {
        let letter = raw.into_decoded_letter(&meta, schema_id, ReasonCode::TenantMismatch, e);
        return Ok(RecordOutcome::DeadLetter(letter));
    }
    let Some(tenant) = tenants.get(&meta.tenant_id) else {
        let e = format!("tenant {payload_tenant} is not in the tenant registry");
        let letter = raw.into_decoded_letter(&meta, schema_id, ReasonCode::UnknownTenant, e);
        return Ok(RecordOutcome::DeadLetter(letter));
    };
    let coordinates = Coordinates {
        topic: raw.topic.clone(),
        partition: raw.partition,
        offset: raw.offset,
    };
    let mut envelope = Envelope::new(meta.clone(), decoded.event, schema_id, coordinates);
    envelope.trace_id = raw
        .header("traceparent")
        .and_then(ledgerflow_core::trace_id_of);
    if !consumer.handles(meta.event_type) {
        return Ok(RecordOutcome::Skipped(SkippedInput { envelope }));
    }
    match consumer.map_erased(&envelope, &tenant) {
        Ok(effect) => {
            // Kept in case the inbox reports an idempotency conflict; the bytes are moved here.
            let reason = ReasonCode::IdempotencyConflict;
            let raw = Box::new(raw.into_decoded_letter(&meta, schema_id, reason, String::new()));
            Ok(RecordOutcome::Mapped {
                envelope,
                effect,
                raw,
            })
        }
        Err(Failure::Permanent { reason, detail }) => Ok(RecordOutcome::DeadLetter(
            raw.into_decoded_letter(&meta, schema_id, reason, detail),
        )),
        Err(retry @ Failure::Retryable { .. }) => Err(retry),
    }
}
