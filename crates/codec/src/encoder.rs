//! Typed events -> Confluent-framed Avro, for producers (the load generator, tests, benches).

use std::collections::HashMap;
use std::sync::LazyLock;

use apache_avro::Schema;
use apache_avro::types::Value;
use apache_avro::writer::datum::GenericDatumWriter;
use ledgerflow_core::{Event, EventType, SchemaId};

use crate::contracts::{self, CONTRACTS};
use crate::frame::encode_frame;
use crate::registry_client::RegistryClient;
use crate::{CodecError, error_chain};

/// A contract's writer schema and its prepared datum writer.
type PreparedWriter = (&'static Schema, GenericDatumWriter<'static>);

/// Writers for every shipped contract version, built once (they pre-resolve named types).
static WRITERS: LazyLock<HashMap<(EventType, u8), PreparedWriter>> = LazyLock::new(|| {
    contracts::parsed()
        .iter()
        .filter_map(|p| {
            let writer = GenericDatumWriter::builder(&p.schema).build().ok()?;
            Some((
                (p.contract.event_type, p.contract.version),
                (&p.schema, writer),
            ))
        })
        .collect()
});

/// Encodes an event's Avro body (no Confluent header) with the given writer contract version.
///
/// Fields the writer version does not have (a v2-only field when writing v1) are dropped, as a
/// v1 producer would never have set them.
pub fn encode_body(event: &Event, version: u8) -> Result<Vec<u8>, CodecError> {
    let event_type = event.event_type();
    let (schema, writer) =
        WRITERS
            .get(&(event_type, version))
            .ok_or(CodecError::NoSuchWriterVersion {
                event_type,
                version,
            })?;
    let fail = |e: apache_avro::Error| CodecError::Encode {
        event_type,
        version,
        source: Box::new(e),
    };
    let value = to_value(event).map_err(fail)?;
    let value = project(value, schema).resolve(schema).map_err(fail)?;
    writer.write_value_to_vec(value).map_err(fail)
}

fn to_value(event: &Event) -> Result<Value, apache_avro::Error> {
    match event {
        Event::CustomerUpserted(e) => apache_avro::to_value(e),
        Event::SubscriptionActivated(e) => apache_avro::to_value(e),
        Event::SubscriptionCanceled(e) => apache_avro::to_value(e),
        Event::UsageAggregated(e) => apache_avro::to_value(e),
        Event::InvoiceFinalized(e) => apache_avro::to_value(e),
        Event::PaymentCaptured(e) => apache_avro::to_value(e),
        Event::CreditMemoIssued(e) => apache_avro::to_value(e),
        Event::InvoiceVoided(e) => apache_avro::to_value(e),
        Event::PaymentRefunded(e) => apache_avro::to_value(e),
    }
}

/// Keeps only the top-level record fields the schema declares.
fn project(value: Value, schema: &Schema) -> Value {
    match (value, schema) {
        (Value::Record(fields), Schema::Record(rec)) => Value::Record(
            fields
                .into_iter()
                .filter(|(name, _)| rec.lookup.contains_key(name))
                .collect(),
        ),
        (other, _) => other,
    }
}

/// Encodes events for one topic with schema ids registered under TopicRecordNameStrategy
/// (`<topic>-<record full name>`).
#[derive(Debug, Clone)]
pub struct Encoder {
    topic: String,
    ids: HashMap<(EventType, u8), SchemaId>,
}

impl Encoder {
    /// Registers every shipped contract version for `topic`, oldest first so each subject's
    /// history is the compatible evolution the registry expects.
    pub async fn register(client: &RegistryClient, topic: &str) -> Result<Self, CodecError> {
        let mut ids = HashMap::new();
        for contract in CONTRACTS {
            let subject = contract.event_type.subject(topic);
            let id = client.register(&subject, contract.text).await?;
            tracing::debug!(%subject, version = contract.version, schema_id = id.0, "registered writer schema");
            ids.insert((contract.event_type, contract.version), id);
        }
        Ok(Self {
            topic: topic.to_owned(),
            ids,
        })
    }

    /// An encoder with known ids (tests, or ids looked up elsewhere).
    pub fn with_ids(topic: &str, ids: HashMap<(EventType, u8), SchemaId>) -> Self {
        Self {
            topic: topic.to_owned(),
            ids,
        }
    }

    /// The topic the ids were registered for.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// Schema id of a writer version.
    pub fn schema_id(&self, event_type: EventType, version: u8) -> Option<SchemaId> {
        self.ids.get(&(event_type, version)).copied()
    }

    /// Encodes a Confluent-framed value.
    pub fn encode(&self, event: &Event, version: u8) -> Result<Vec<u8>, CodecError> {
        let event_type = event.event_type();
        let id = self
            .schema_id(event_type, version)
            .ok_or(CodecError::NoSuchWriterVersion {
                event_type,
                version,
            })?;
        let body = encode_body(event, version)?;
        Ok(encode_frame(id, &body))
    }
}

/// Human-readable one-line description of a codec error with its chain, for CLI output.
pub fn describe(err: &CodecError) -> String {
    error_chain(err)
}
