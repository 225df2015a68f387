//! One record from bytes to a [`RecordOutcome`]: decode, tenant checks, mapping.
//!
//! Shared by the live loop and by every tool that pushes records through the pipeline, so a
//! replayed or re-driven record is judged exactly as a live one.

use ledgerflow_codec::{Decoder, Frame, error_chain};
use ledgerflow_core::{Coordinates, Envelope, Failure, ReasonCode};
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
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .and_then(|(_, v)| v.as_deref())
    }

    fn dead_letter(&self, reason: ReasonCode, error: String) -> DeadLetterInput {
        let schema_id = self
            .value
            .as_deref()
            .and_then(|v| Frame::parse(v, usize::MAX).ok())
            .map(|f| f.schema_id.0);
        DeadLetterInput {
            offset: self.offset,
            reason,
            error,
            key: self.key.clone(),
            value: self.value.clone(),
            headers: self.headers.clone(),
            schema_id,
            event_id: self.header("event_id").map(str::to_owned),
            tenant_id: self.header("tenant_id").map(str::to_owned),
            event_type: self.header("event_type").map(str::to_owned),
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
        return Ok(RecordOutcome::DeadLetter(raw.dead_letter(
            ReasonCode::TruncatedHeader,
            "record has no value (tombstone)".into(),
        )));
    };
    let decoded = match decoder.decode(value).await {
        Ok(d) => d,
        Err(e) => {
            return match e.failure() {
                Failure::Retryable { detail } => Err(Failure::Retryable { detail }),
                Failure::Permanent { reason, .. } => Ok(RecordOutcome::DeadLetter(
                    raw.dead_letter(reason, error_chain(&e)),
                )),
            };
        }
    };
    let meta = decoded.meta;
    let letter = |reason: ReasonCode, error: String| {
        let mut d = raw.dead_letter(reason, error);
        d.event_id = Some(meta.event_id.to_string());
        d.tenant_id = Some(meta.tenant_id.to_string());
        d.event_type = Some(meta.event_type.as_str().to_owned());
        d.schema_id = Some(decoded.schema_id.0);
        d
    };
    let payload_tenant = meta.tenant_id.as_str();
    let key_tenant = raw.key.as_deref().map(String::from_utf8_lossy);
    if let Some(key) = key_tenant.as_deref()
        && key != payload_tenant
    {
        let e = format!("record key names tenant {key:?} but the payload names {payload_tenant:?}");
        return Ok(RecordOutcome::DeadLetter(letter(
            ReasonCode::TenantMismatch,
            e,
        )));
    }
    if let Some(header) = raw.header("tenant_id")
        && header != payload_tenant
    {
        let e = format!("tenant_id header is {header:?} but the payload names {payload_tenant:?}");
        return Ok(RecordOutcome::DeadLetter(letter(
            ReasonCode::TenantMismatch,
            e,
        )));
    }
    let Some(tenant) = tenants.get(&meta.tenant_id) else {
        let e = format!("tenant {payload_tenant} is not in the tenant registry");
        return Ok(RecordOutcome::DeadLetter(letter(
            ReasonCode::UnknownTenant,
            e,
        )));
    };
    let coordinates = Coordinates {
        topic: raw.topic.clone(),
        partition: raw.partition,
        offset: raw.offset,
    };
    let envelope = Envelope::new(meta.clone(), decoded.event, decoded.schema_id, coordinates);
    if !consumer.handles(meta.event_type) {
        return Ok(RecordOutcome::Skipped(SkippedInput { envelope }));
    }
    match consumer.map_erased(&envelope, &tenant) {
        Ok(effect) => {
            let raw_letter = Box::new(letter(ReasonCode::IdempotencyConflict, String::new()));
            Ok(RecordOutcome::Mapped {
                envelope,
                effect,
                raw: raw_letter,
            })
        }
        Err(Failure::Permanent { reason, detail }) => {
            Ok(RecordOutcome::DeadLetter(letter(reason, detail)))
        }
        Err(retry @ Failure::Retryable { .. }) => Err(retry),
    }
}
