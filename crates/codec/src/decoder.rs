//! Bytes -> typed, validated events.
//!
//! The hot path is: length-checked frame split, a lock-free cache load (an `ArcSwap` snapshot of
//! `schema id -> resolved schema pair`), an Avro decode with the cached writer/reader pair, serde
//! into the typed struct, validation. Only a cache miss talks to the registry, and misses are
//! serialized by one async mutex so a burst of records with a new id costs one request.
//!
//! Resolution is computed once per schema id: the writer schema is parsed, matched to the
//! reader contract by record name, checked with Avro's compatibility rules, and the
//! `GenericDatumReader` (which pre-resolves named types) is kept. Writer schemas are leaked so the
//! reader can borrow them for `'static`; the cache is bounded by `max_cached_schemas`, and a
//! registry holds a handful of ids per event type, so the leak is bounded too.

use std::collections::HashMap;
use std::io::Read;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::time::{Duration, Instant};

use apache_avro::Schema;
use apache_avro::error::Details;
use apache_avro::reader::datum::GenericDatumReader;
use apache_avro::schema_compatibility::SchemaCompatibility;
use apache_avro::types::Value;
use arc_swap::ArcSwap;
use ledgerflow_core::{Event, EventMeta, EventType, ReasonCode, SchemaId};
use serde::de::DeserializeOwned;

use crate::contracts;
use crate::frame::Frame;
use crate::registry_client::RegistryClient;
use crate::{CodecError, error_chain};

/// Decoder limits.
#[derive(Debug, Clone)]
pub struct DecoderConfig {
    /// Largest accepted record value in bytes (header included).
    pub max_message_bytes: usize,
    /// How long a "schema id not found" answer is remembered, so a flood of records with a bogus
    /// id does not become a flood of registry requests.
    pub unknown_id_ttl: Duration,
    /// Upper bound on distinct schema ids held.
    pub max_cached_schemas: usize,
}

impl Default for DecoderConfig {
    fn default() -> Self {
        Self {
            max_message_bytes: default_max_message_bytes(),
            unknown_id_ttl: Duration::from_secs(10),
            max_cached_schemas: 4096,
        }
    }
}

/// Default value size limit: 1 MiB, Kafka's default `max.message.bytes`.
pub fn default_max_message_bytes() -> usize {
    1024 * 1024
}

/// A decoded, validated event.
#[derive(Debug, Clone)]
pub struct Decoded {
    /// Writer schema id from the frame.
    pub schema_id: SchemaId,
    /// The typed event.
    pub event: Event,
    /// Its validated envelope.
    pub meta: EventMeta,
}

/// A writer schema resolved against ledgerflow's reader contract.
pub struct ResolvedSchema {
    schema_id: SchemaId,
    event_type: EventType,
    reader: GenericDatumReader<'static>,
}

impl std::fmt::Debug for ResolvedSchema {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResolvedSchema")
            .field("schema_id", &self.schema_id)
            .field("event_type", &self.event_type)
            .finish_non_exhaustive()
    }
}

impl ResolvedSchema {
    /// Parses a writer schema and resolves it to the reader contract of its record type.
    pub fn new(schema_id: SchemaId, writer_text: &str) -> Result<Self, CodecError> {
        let writer = Schema::parse_str(writer_text).map_err(|e| CodecError::InvalidSchema {
            id: schema_id,
            source: Box::new(e),
        })?;
        let name = match &writer {
            Schema::Record(rec) => rec.name.fullname(None),
            other => format!("a non-record schema ({})", schema_kind(other)),
        };
        let event_type = EventType::from_full_name(&name).ok_or(CodecError::UnknownEventType {
            id: schema_id,
            name,
        })?;
        let reader_schema = &contracts::reader(event_type).schema;
        SchemaCompatibility::can_read(&writer, reader_schema).map_err(|e| {
            CodecError::SchemaResolution {
                id: schema_id,
                event_type,
                detail: e.to_string(),
            }
        })?;
        // Identical writer and reader: skip the per-record resolution walk entirely.
        let same = serde_json::to_string(&writer).ok() == serde_json::to_string(reader_schema).ok();
        let writer: &'static Schema = Box::leak(Box::new(writer));
        let reader = GenericDatumReader::builder(writer)
            .maybe_reader_schema((!same).then_some(reader_schema))
            .build()
            .map_err(|e| CodecError::SchemaResolution {
                id: schema_id,
                event_type,
                detail: e.to_string(),
            })?;
        Ok(Self {
            schema_id,
            event_type,
            reader,
        })
    }

    /// The event type this schema carries.
    pub fn event_type(&self) -> EventType {
        self.event_type
    }

    /// Decodes and validates one Avro body (without the Confluent header).
    pub fn decode_body(&self, body: &[u8]) -> Result<Decoded, CodecError> {
        let id = self.schema_id;
        let mut cursor = BodyReader {
            rest: body,
            overrun: false,
        };
        let value = catch_unwind(AssertUnwindSafe(|| self.reader.read_value(&mut cursor)))
            .map_err(|panic| CodecError::DecoderPanic {
                id,
                detail: panic_text(&panic),
            })?
            .map_err(|e| CodecError::AvroDecode {
                id,
                source: Box::new(e),
            })?;
        if cursor.overrun {
            return Err(CodecError::AvroDecode {
                id,
                source: Box::new(apache_avro::Error::new(Details::ReadBytes(
                    std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        "avro body ends inside the record",
                    ),
                ))),
            });
        }
        if !cursor.rest.is_empty() {
            return Err(CodecError::TrailingBytes {
                id,
                trailing: cursor.rest.len(),
            });
        }
        let event = typed_event(self.event_type, &value).map_err(|e| CodecError::AvroDecode {
            id,
            source: Box::new(e),
        })?;
        let meta = event
            .validate()
            .map_err(|f| CodecError::Validation(f.to_string()))?;
        Ok(Decoded {
            schema_id: id,
            event,
            meta,
        })
    }
}

/// The body as the Avro decoder reads it, remembering whether it asked for bytes past the end.
///
/// apache-avro turns an end of input inside a string, a boolean or a union index into a null
/// value instead of an error, so a truncated body would decode "successfully" with its last
/// optional field silently `None` (a cut-off `tax_id` or `purchase_order`). Any read past the end
/// means the body is truncated, whatever the decoder made of it.
struct BodyReader<'a> {
    rest: &'a [u8],
    overrun: bool,
}

impl Read for BodyReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if !buf.is_empty() && self.rest.is_empty() {
            self.overrun = true;
        }
        self.rest.read(buf)
    }

    fn read_exact(&mut self, buf: &mut [u8]) -> std::io::Result<()> {
        if buf.len() > self.rest.len() {
            self.overrun = true;
        }
        self.rest.read_exact(buf)
    }
}

fn schema_kind(schema: &Schema) -> &'static str {
    match schema {
        Schema::Union(_) => "union",
        Schema::Array(_) => "array",
        Schema::Map(_) => "map",
        Schema::Enum(_) => "enum",
        _ => "primitive",
    }
}

fn panic_text(panic: &Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "panic".to_owned())
}

fn from<T: DeserializeOwned>(value: &Value) -> Result<T, apache_avro::Error> {
    apache_avro::from_value::<T>(value)
}

fn typed_event(event_type: EventType, value: &Value) -> Result<Event, apache_avro::Error> {
    Ok(match event_type {
        EventType::CustomerUpserted => Event::CustomerUpserted(from(value)?),
        EventType::SubscriptionActivated => Event::SubscriptionActivated(from(value)?),
        EventType::SubscriptionCanceled => Event::SubscriptionCanceled(from(value)?),
        EventType::UsageAggregated => Event::UsageAggregated(from(value)?),
        EventType::InvoiceFinalized => Event::InvoiceFinalized(from(value)?),
        EventType::PaymentCaptured => Event::PaymentCaptured(from(value)?),
        EventType::CreditMemoIssued => Event::CreditMemoIssued(from(value)?),
        EventType::InvoiceVoided => Event::InvoiceVoided(from(value)?),
        EventType::PaymentRefunded => Event::PaymentRefunded(from(value)?),
    })
}

#[derive(Debug, Clone)]
enum CacheEntry {
    Resolved(Arc<ResolvedSchema>),
    /// The registry said 40403 at `since`.
    Unknown {
        since: Instant,
    },
    /// The schema exists but can never be decoded (wrong type, incompatible): remembered for
    /// good, with the error text to repeat.
    Broken {
        reason: ReasonCode,
        detail: Arc<str>,
    },
}

/// Decodes Confluent-framed values into typed events. Share one per process (`Arc<Decoder>`).
#[derive(Debug)]
pub struct Decoder {
    client: RegistryClient,
    config: DecoderConfig,
    cache: ArcSwap<HashMap<SchemaId, CacheEntry>>,
    fill: tokio::sync::Mutex<()>,
}

impl Decoder {
    /// A decoder that resolves schema ids through `client`.
    pub fn new(client: RegistryClient, config: DecoderConfig) -> Self {
        // Bound every allocation the Avro decoder makes from a length prefix by the largest
        // value we accept: a crafted length can never ask for more than that. First call wins,
        // process-wide.
        apache_avro::util::max_allocation_bytes(config.max_message_bytes.max(64 * 1024));
        Self {
            client,
            config,
            cache: ArcSwap::from_pointee(HashMap::new()),
            fill: tokio::sync::Mutex::new(()),
        }
    }

    /// The limits in force.
    pub fn config(&self) -> &DecoderConfig {
        &self.config
    }

    /// Decodes one record value: frame, schema, Avro, typed event, validation.
    pub async fn decode(&self, value: &[u8]) -> Result<Decoded, CodecError> {
        let frame = Frame::parse(value, self.config.max_message_bytes)?;
        let resolved = self.resolve(frame.schema_id).await?;
        resolved.decode_body(frame.body)
    }

    /// The resolved schema for an id, from the cache or the registry.
    pub async fn resolve(&self, id: SchemaId) -> Result<Arc<ResolvedSchema>, CodecError> {
        if let Some(hit) = self.lookup(id)? {
            return Ok(hit);
        }
        let _guard = self.fill.lock().await;
        // Another task may have filled it while we waited for the lock.
        if let Some(hit) = self.lookup(id)? {
            return Ok(hit);
        }
        let entry = match self.client.schema_by_id(id).await {
            Ok(registered) => {
                let kind = registered.schema_type.as_deref().unwrap_or("AVRO");
                let built = if kind.eq_ignore_ascii_case("AVRO") {
                    ResolvedSchema::new(id, &registered.schema)
                } else {
                    Err(CodecError::UnsupportedSchemaType {
                        id,
                        schema_type: kind.to_owned(),
                    })
                };
                match built {
                    Ok(resolved) => CacheEntry::Resolved(Arc::new(resolved)),
                    Err(e) => {
                        let detail = error_chain(&e);
                        tracing::warn!(schema_id = id.0, error = %detail, "schema cannot be decoded");
                        let reason = e.failure().reason().unwrap_or(ReasonCode::InvalidSchema);
                        CacheEntry::Broken {
                            reason,
                            detail: detail.into(),
                        }
                    }
                }
            }
            Err(CodecError::UnknownSchemaId { .. }) => CacheEntry::Unknown {
                since: Instant::now(),
            },
            // Transient: not cached, the caller retries.
            Err(e) => return Err(e),
        };
        self.insert(id, entry.clone());
        match entry {
            CacheEntry::Resolved(r) => Ok(r),
            CacheEntry::Unknown { .. } => Err(CodecError::UnknownSchemaId { id }),
            CacheEntry::Broken { reason, detail } => Err(CodecError::SchemaUnusable {
                id,
                reason,
                detail: detail.to_string(),
            }),
        }
    }

    fn lookup(&self, id: SchemaId) -> Result<Option<Arc<ResolvedSchema>>, CodecError> {
        match self.cache.load().get(&id) {
            Some(CacheEntry::Resolved(r)) => Ok(Some(Arc::clone(r))),
            Some(CacheEntry::Unknown { since }) if since.elapsed() < self.config.unknown_id_ttl => {
                Err(CodecError::UnknownSchemaId { id })
            }
            Some(CacheEntry::Broken { reason, detail }) => Err(CodecError::SchemaUnusable {
                id,
                reason: *reason,
                detail: detail.to_string(),
            }),
            Some(CacheEntry::Unknown { .. }) | None => Ok(None),
        }
    }

    fn insert(&self, id: SchemaId, entry: CacheEntry) {
        // Copy-on-write: readers never wait; inserts are rare (once per schema id).
        self.cache.rcu(|current| {
            let mut next = HashMap::clone(current);
            if next.len() >= self.config.max_cached_schemas {
                // Forget negative entries first; resolved ones are what the hot path needs.
                next.retain(|_, e| matches!(e, CacheEntry::Resolved(_)));
            }
            next.insert(id, entry.clone());
            next
        });
    }
}
