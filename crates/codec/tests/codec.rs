//! The codec from the outside: every contract version round-trips through the Confluent frame,
//! every kind of malformed value is rejected with its exact reason code, and the decoder resolves
//! schema ids against a real ledgerflow registry over HTTP, treating an unreachable or misaddressed
//! registry as retryable and never caching that.
//!
//! Offline tests give contract `CONTRACTS[i]` the schema id `i`, the same mapping the
//! `decode_frame` fuzz target uses (id modulo the number of contracts), so the seed corpus written
//! by `fuzz_seeds_decode_as_labelled` means the same thing to the fuzzer.

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

use apache_avro::error::Details;
use ledgerflow_codec::contracts::{self, CONTRACTS};
use ledgerflow_codec::{
    CodecError, Decoded, Decoder, DecoderConfig, Encoder, Frame, HEADER_LEN, RegistryClient,
    ResolvedSchema, default_max_message_bytes, encode_body, encode_frame,
};
use ledgerflow_core::{Event, EventType, InvoiceVoided, PaymentRefunded, ReasonCode, SchemaId};
use ledgerflow_loadgen::{GeneratedEvent, Workload, WorkloadConfig};
use ledgerflow_registry::{RegistryConfig, RegistryError, connect, serve};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

const TOPIC: &str = "billing.events";
/// Set to write the fuzz seed corpus (see `fuzz_seeds_decode_as_labelled`).
const WRITE_SEEDS_ENV: &str = "LEDGERFLOW_WRITE_FUZZ_SEEDS";

// ---------------------------------------------------------------------------------------------
// Offline helpers
// ---------------------------------------------------------------------------------------------

/// The offline schema id of `CONTRACTS[index]`.
fn offline_id(index: usize) -> SchemaId {
    SchemaId(u32::try_from(index).expect("few contracts"))
}

fn offline_ids() -> HashMap<(EventType, u8), SchemaId> {
    CONTRACTS
        .iter()
        .enumerate()
        .map(|(i, c)| ((c.event_type, c.version), offline_id(i)))
        .collect()
}

/// Every shipped contract resolved against its reader, by offline id. Built once: resolving
/// leaks the writer schema, as the decoder's cache does.
static OFFLINE_SCHEMAS: LazyLock<HashMap<SchemaId, ResolvedSchema>> = LazyLock::new(|| {
    CONTRACTS
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let resolved = ResolvedSchema::new(offline_id(i), c.text)
                .unwrap_or_else(|e| panic!("{} v{} resolves: {e}", c.event_type, c.version));
            (offline_id(i), resolved)
        })
        .collect()
});

fn offline_schema(event_type: EventType, version: u8) -> &'static ResolvedSchema {
    let id = offline_ids()[&(event_type, version)];
    &OFFLINE_SCHEMAS[&id]
}

/// Frame split and body decode, with no registry: what `Decoder::decode` does after the cache.
fn decode_offline(value: &[u8]) -> Result<Decoded, CodecError> {
    let frame = Frame::parse(value, default_max_message_bytes())?;
    let schema = OFFLINE_SCHEMAS
        .get(&frame.schema_id)
        .unwrap_or_else(|| panic!("no offline contract with id {}", frame.schema_id));
    schema.decode_body(frame.body)
}

/// The first `events` items of a fixed deterministic workload.
fn sample(events: u64) -> Vec<GeneratedEvent> {
    let mut out: Vec<GeneratedEvent> = Workload::new(WorkloadConfig {
        tenants: 4,
        events,
        seed: 20_260_101,
        ..WorkloadConfig::default()
    })
    .expect("valid workload config")
    .collect();
    let corrections = corrections(&out);
    out.extend(corrections);
    out
}

/// Corrections the default workload does not emit: a void of the first invoice and two refunds
/// of the first payment (with and without the optional fields), appended to the sample so every
/// contract is exercised.
fn corrections(events: &[GeneratedEvent]) -> Vec<GeneratedEvent> {
    let uuid = |n: u32| format!("00000000-0000-4000-8000-{n:012}");
    let mut out = Vec::new();
    if let Some((g, e)) = events.iter().find_map(|g| match &g.event {
        Event::InvoiceFinalized(e) => Some((g, e)),
        _ => None,
    }) {
        out.push(GeneratedEvent {
            event: Event::InvoiceVoided(InvoiceVoided {
                event_id: uuid(1),
                tenant_id: e.tenant_id.clone(),
                occurred_at: e.occurred_at + 1,
                correlation_id: e.correlation_id.clone(),
                causation_id: Some(e.event_id.clone()),
                source: e.source.clone(),
                invoice_id: e.invoice_id.clone(),
                reason: "issued_in_error".into(),
                voided_at: e.issued_at + 1,
            }),
            tenant_id: g.tenant_id.clone(),
            writer_version: 1,
            duplicate: false,
        });
    }
    if let Some((g, e)) = events.iter().find_map(|g| match &g.event {
        Event::PaymentCaptured(e) => Some((g, e)),
        _ => None,
    }) {
        for (n, invoice, fee) in [
            (2, Some(e.invoice_id.clone()), Some(e.fee_minor)),
            (3, None, None),
        ] {
            out.push(GeneratedEvent {
                event: Event::PaymentRefunded(PaymentRefunded {
                    event_id: uuid(n),
                    tenant_id: e.tenant_id.clone(),
                    occurred_at: e.occurred_at + 1,
                    correlation_id: e.correlation_id.clone(),
                    causation_id: Some(e.event_id.clone()),
                    source: e.source.clone(),
                    refund_id: format!("rf-{n}"),
                    payment_id: e.payment_id.clone(),
                    invoice_id: invoice,
                    currency: e.currency.clone(),
                    amount_minor: e.amount_minor,
                    fee_refund_minor: fee,
                    refunded_at: e.captured_at + 1,
                }),
                tenant_id: g.tenant_id.clone(),
                writer_version: 1,
                duplicate: false,
            });
        }
    }
    out
}

/// The first generated event of every (type, writer version), in `CONTRACTS` order.
fn one_per_contract() -> Vec<(u8, Event)> {
    let events = sample(2_000);
    CONTRACTS
        .iter()
        .map(|c| {
            let g = events
                .iter()
                .find(|g| g.event.event_type() == c.event_type && g.writer_version == c.version)
                .unwrap_or_else(|| panic!("sample has no {} v{}", c.event_type, c.version));
            (g.writer_version, g.event.clone())
        })
        .collect()
}

fn first_invoice(version: u8) -> ledgerflow_core::InvoiceFinalized {
    one_per_contract()
        .into_iter()
        .find_map(|(v, e)| match e {
            Event::InvoiceFinalized(inv) if v == version => Some(inv),
            _ => None,
        })
        .expect("an invoice")
}

/// Avro `long` encoding (zig-zag varint), to craft length prefixes by hand.
fn avro_long(n: i64) -> Vec<u8> {
    let mut z = ((n << 1) ^ (n >> 63)) as u64;
    let mut out = Vec::new();
    loop {
        let byte = (z & 0x7f) as u8;
        z >>= 7;
        if z == 0 {
            out.push(byte);
            return out;
        }
        out.push(byte | 0x80);
    }
}

/// Asserts a permanent failure with `reason` and returns the error for variant checks.
#[track_caller]
fn rejected(result: Result<Decoded, CodecError>, reason: ReasonCode) -> CodecError {
    let err = match result {
        Ok(decoded) => panic!("expected {reason}, decoded {:?}", decoded.event),
        Err(e) => e,
    };
    assert_eq!(err.failure().reason(), Some(reason), "{err:?}");
    err
}

/// Asserts a permanent failure with `reason` from `ResolvedSchema::new`.
#[track_caller]
fn unresolvable(writer_text: &str, reason: ReasonCode) -> CodecError {
    let err = ResolvedSchema::new(SchemaId(77), writer_text).expect_err("must not resolve");
    assert_eq!(err.failure().reason(), Some(reason), "{err:?}");
    err
}

/// A writer schema text derived from a shipped contract by editing its JSON.
fn edited_contract(
    event_type: EventType,
    version: u8,
    edit: impl FnOnce(&mut serde_json::Value),
) -> String {
    let text = contracts::writer(event_type, version)
        .expect("shipped contract")
        .contract
        .text;
    let mut json: serde_json::Value = serde_json::from_str(text).expect("contract is json");
    edit(&mut json);
    json.to_string()
}

// ---------------------------------------------------------------------------------------------
// Round trips and resolution
// ---------------------------------------------------------------------------------------------

#[test]
fn every_event_type_and_writer_version_round_trips() {
    let encoder = Encoder::with_ids(TOPIC, offline_ids());
    let mut covered = BTreeSet::new();
    let (mut purchase_orders, mut settlements) = (0, 0);
    for generated in sample(2_000) {
        let (event, version) = (&generated.event, generated.writer_version);
        let value = encoder.encode(event, version).expect("encode");
        let frame = Frame::parse(&value, default_max_message_bytes()).expect("frame");
        assert_eq!(frame.body, encode_body(event, version).expect("body"));

        let decoded = decode_offline(&value).unwrap_or_else(|e| panic!("{event:?}: {e:?}"));
        assert_eq!(decoded.event, *event);
        assert_eq!(
            Some(decoded.schema_id),
            encoder.schema_id(event.event_type(), version)
        );
        assert_eq!(decoded.meta.tenant_id, generated.tenant_id);
        assert_eq!(decoded.meta.event_type, event.event_type());
        match (&decoded.event, version) {
            (Event::InvoiceFinalized(e), 1) => assert_eq!(e.purchase_order, None),
            (Event::PaymentCaptured(e), 1) => assert_eq!(e.settlement_currency, None),
            (Event::InvoiceFinalized(e), _) => {
                purchase_orders += usize::from(e.purchase_order.is_some())
            }
            (Event::PaymentCaptured(e), _) => {
                settlements += usize::from(e.settlement_currency.is_some())
            }
            _ => assert_eq!(version, 1, "only two types have a v2"),
        }
        covered.insert((event.event_type(), version));
    }
    let every_contract: BTreeSet<_> = CONTRACTS
        .iter()
        .map(|c| (c.event_type, c.version))
        .collect();
    assert_eq!(covered, every_contract);
    assert!(purchase_orders > 0, "no v2 invoice with a purchase order");
    assert!(settlements > 0, "no v2 payment with a settlement currency");
}

#[test]
fn v2_only_fields_are_dropped_by_v1_writers_and_kept_by_v2_writers() {
    let mut invoice = first_invoice(2);
    invoice.purchase_order = Some("PO-4711".into());
    let event = Event::InvoiceFinalized(invoice.clone());

    let v2 = encode_body(&event, 2).expect("v2 body");
    let decoded = offline_schema(EventType::InvoiceFinalized, 2)
        .decode_body(&v2)
        .expect("v2 decodes");
    assert_eq!(decoded.event, event);

    let v1 = encode_body(&event, 1).expect("v1 body");
    assert!(v1.len() < v2.len());
    let decoded = offline_schema(EventType::InvoiceFinalized, 1)
        .decode_body(&v1)
        .expect("v1 decodes");
    invoice.purchase_order = None;
    assert_eq!(decoded.event, Event::InvoiceFinalized(invoice));
}

#[test]
fn v1_writers_resolve_through_the_v2_reader() {
    let events = one_per_contract();
    for event_type in [EventType::InvoiceFinalized, EventType::PaymentCaptured] {
        let reader = contracts::reader(event_type);
        assert_eq!(reader.contract.version, 2);
        let v1 = contracts::writer(event_type, 1).expect("v1 contract");
        assert_ne!(v1.contract.text, reader.contract.text);

        let resolved = ResolvedSchema::new(SchemaId(41), v1.contract.text).expect("resolves");
        assert_eq!(resolved.event_type(), event_type);
        let (_, event) = events
            .iter()
            .find(|(v, e)| *v == 1 && e.event_type() == event_type)
            .expect("a v1 event");
        let body = encode_body(event, 1).expect("v1 body");
        let decoded = resolved
            .decode_body(&body)
            .expect("v1 body through v2 reader");
        assert_eq!(decoded.event, *event);
        assert_eq!(decoded.schema_id, SchemaId(41));

        // The v1 body is not a v2 body: read with the v2 writer schema it ends before the v2
        // field. That must be an error, not a silently defaulted field.
        let as_v2 = ResolvedSchema::new(SchemaId(42), reader.contract.text).expect("resolves");
        let err = rejected(as_v2.decode_body(&body), ReasonCode::AvroDecode);
        assert!(matches!(err, CodecError::AvroDecode { .. }), "{err:?}");
    }
}

#[test]
fn corrections_round_trip_with_and_without_their_optional_fields() {
    let refunds: Vec<_> = sample(200)
        .into_iter()
        .filter(|g| {
            matches!(
                g.event.event_type(),
                EventType::PaymentRefunded | EventType::InvoiceVoided
            )
        })
        .collect();
    assert_eq!(refunds.len(), 3);
    for g in refunds {
        let body = encode_body(&g.event, 1).expect("v1 body");
        let decoded = offline_schema(g.event.event_type(), 1)
            .decode_body(&body)
            .expect("decodes");
        assert_eq!(decoded.event, g.event);
        assert_eq!(decoded.meta.event_type, g.event.event_type());
    }
}

#[test]
fn correction_contracts_follow_the_evolution_rules() {
    // The registry's BACKWARD rule on the new contracts: an optional field with a default may
    // be added (a future v2 stays readable), a required one may not; the refund's optional
    // fields are unions with null first and default null, so a writer without them resolves.
    for event_type in [EventType::InvoiceVoided, EventType::PaymentRefunded] {
        let v1 = contracts::writer(event_type, 1).expect("v1 contract");
        assert_eq!(contracts::reader(event_type).contract.version, 1);
        let with_optional = edited_contract(event_type, 1, |json| {
            json["fields"]
                .as_array_mut()
                .unwrap()
                .push(serde_json::json!(
                    {"name": "note", "type": ["null", "string"], "default": null}
                ));
        });
        let future = apache_avro::Schema::parse_str(&with_optional).expect("parses");
        apache_avro::schema_compatibility::SchemaCompatibility::can_read(&v1.schema, &future)
            .expect("a v2 with an optional field reads v1 data");
        let with_required = edited_contract(event_type, 1, |json| {
            json["fields"]
                .as_array_mut()
                .unwrap()
                .push(serde_json::json!({"name": "note", "type": "string"}));
        });
        let broken = apache_avro::Schema::parse_str(&with_required).expect("parses");
        assert!(
            apache_avro::schema_compatibility::SchemaCompatibility::can_read(&v1.schema, &broken)
                .is_err(),
            "{event_type}: a required field must not be addable"
        );
    }
    // Written without the optional refund fields (an older producer that never had them),
    // the reader fills both with null.
    let without = edited_contract(EventType::PaymentRefunded, 1, |json| {
        json["fields"]
            .as_array_mut()
            .unwrap()
            .retain(|f| f["name"] != "invoice_id" && f["name"] != "fee_refund_minor");
    });
    let resolved = ResolvedSchema::new(SchemaId(43), &without).expect("resolves");
    let writer = apache_avro::Schema::parse_str(&without).expect("parses");
    let mut record = apache_avro::types::Record::new(&writer).expect("a record schema");
    for (k, v) in [
        ("event_id", "00000000-0000-4000-8000-000000000009"),
        ("tenant_id", "acme"),
        ("correlation_id", "c-1"),
        ("source", "billing-api"),
        ("refund_id", "rf-9"),
        ("payment_id", "pay-9"),
        ("currency", "USD"),
    ] {
        record.put(k, v);
    }
    record.put(
        "causation_id",
        apache_avro::types::Value::Union(0, Box::new(apache_avro::types::Value::Null)),
    );
    record.put("occurred_at", apache_avro::types::Value::TimestampMicros(1));
    record.put("amount_minor", 250_i64);
    record.put("refunded_at", apache_avro::types::Value::TimestampMicros(2));
    let body = apache_avro::writer::datum::GenericDatumWriter::builder(&writer)
        .build()
        .expect("a writer")
        .write_value_to_vec(record)
        .expect("encodes");
    let decoded = resolved.decode_body(&body).expect("resolves to the reader");
    match decoded.event {
        Event::PaymentRefunded(e) => {
            assert_eq!((e.invoice_id, e.fee_refund_minor), (None, None));
            assert_eq!(e.amount_minor, 250);
        }
        other => panic!("{other:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// Malformed input: exact variant and reason code
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn framing_errors_are_found_before_the_registry_is_asked() {
    // Port 9 (discard) is closed here; any registry call would be a retryable error instead.
    let client = RegistryClient::new("http://127.0.0.1:9", Duration::from_secs(2)).expect("url");
    let decoder = Decoder::new(
        client,
        DecoderConfig {
            max_message_bytes: 64,
            ..DecoderConfig::default()
        },
    );

    let err = rejected(decoder.decode(&[]).await, ReasonCode::TruncatedHeader);
    assert!(
        matches!(err, CodecError::TruncatedHeader { len: 0 }),
        "{err:?}"
    );
    for len in 1..HEADER_LEN {
        let value = vec![0u8; len];
        let err = rejected(decoder.decode(&value).await, ReasonCode::TruncatedHeader);
        assert!(
            matches!(err, CodecError::TruncatedHeader { len: l } if l == len),
            "{err:?}"
        );
        let err = Frame::parse(&value, 64).expect_err("short");
        assert_eq!(err.failure().reason(), Some(ReasonCode::TruncatedHeader));
    }

    let mut wrong_magic = encode_frame(SchemaId(1), b"body");
    wrong_magic[0] = 0x7b; // '{': a JSON producer on an Avro topic
    let err = rejected(
        decoder.decode(&wrong_magic).await,
        ReasonCode::UnsupportedMagic,
    );
    assert!(
        matches!(err, CodecError::UnsupportedMagic { found: 0x7b }),
        "{err:?}"
    );

    let too_large = encode_frame(SchemaId(1), &[0u8; 60]);
    let err = rejected(decoder.decode(&too_large).await, ReasonCode::TooLarge);
    assert!(
        matches!(err, CodecError::TooLarge { len: 65, max: 64 }),
        "{err:?}"
    );
}

#[test]
fn every_strict_prefix_of_a_body_is_an_avro_decode_error() {
    for (version, event) in one_per_contract() {
        let schema = offline_schema(event.event_type(), version);
        let body = encode_body(&event, version).expect("body");
        assert!(schema.decode_body(&body).is_ok());
        for cut in 0..body.len() {
            let result = schema.decode_body(&body[..cut]);
            let err = match result {
                Ok(d) => panic!(
                    "{} v{version}: {cut} of {} bytes decoded: {:?}",
                    event.event_type(),
                    body.len(),
                    d.event
                ),
                Err(e) => e,
            };
            assert!(matches!(err, CodecError::AvroDecode { .. }), "{err:?}");
            assert_eq!(err.failure().reason(), Some(ReasonCode::AvroDecode));
        }
    }
}

#[test]
fn trailing_bytes_after_a_valid_record_are_an_avro_decode_error() {
    for (version, event) in one_per_contract() {
        let mut body = encode_body(&event, version).expect("body");
        body.extend_from_slice(&[0x02, 0x61]);
        let schema = offline_schema(event.event_type(), version);
        let err = rejected(schema.decode_body(&body), ReasonCode::AvroDecode);
        assert!(
            matches!(err, CodecError::TrailingBytes { trailing: 2, .. }),
            "{err:?}"
        );
    }
}

#[test]
fn garbage_bodies_are_avro_decode_errors() {
    // xorshift64*: deterministic garbage without another dependency.
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    let mut next = move || {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        state.wrapping_mul(0x2545_f491_4f6c_dd1d)
    };
    let mut bodies: Vec<Vec<u8>> = vec![vec![0xff; 32], b"{\"event_id\":\"x\"}".to_vec()];
    for len in [1, 7, 64, 300, 1500] {
        bodies.push((0..len).map(|_| next().to_le_bytes()[0]).collect());
    }
    for (id, schema) in OFFLINE_SCHEMAS.iter() {
        for body in &bodies {
            let err = rejected(schema.decode_body(body), ReasonCode::AvroDecode);
            assert!(
                matches!(err, CodecError::AvroDecode { .. }),
                "schema {id}: {err:?}"
            );
        }
    }
}

#[test]
fn a_length_prefix_of_two_to_the_40_fails_fast_without_allocating() {
    let huge: i64 = 1 << 40;
    let event_id = "6f1c2d7e-8a4b-4c3d-9e2f-0a1b2c3d4e5f";
    // First field (event_id, a uuid string), then second field (tenant_id, a plain string).
    let mut at_first = avro_long(huge);
    at_first.extend_from_slice(b"abcd");
    let mut at_second = avro_long(event_id.len() as i64);
    at_second.extend_from_slice(event_id.as_bytes());
    at_second.extend(avro_long(huge));
    at_second.extend_from_slice(b"abcd");

    let started = Instant::now();
    for schema in OFFLINE_SCHEMAS.values() {
        for body in [&at_first, &at_second] {
            let err = rejected(schema.decode_body(body), ReasonCode::AvroDecode);
            let CodecError::AvroDecode { source, .. } = &err else {
                panic!("expected AvroDecode, got {err:?}");
            };
            // The limit is checked before the buffer is allocated.
            assert!(
                matches!(
                    source.details(),
                    Details::MemoryAllocation { desired: Some(d), .. } if *d == 1 << 40
                ),
                "{err:?}"
            );
        }
    }
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn a_well_formed_body_that_breaks_a_business_rule_is_a_validation_failure() {
    let mut invoice = first_invoice(2);
    invoice.total_minor += 1;
    let body =
        encode_body(&Event::InvoiceFinalized(invoice), 2).expect("encoding does not validate");
    let schema = offline_schema(EventType::InvoiceFinalized, 2);
    let err = rejected(schema.decode_body(&body), ReasonCode::Validation);
    assert!(
        matches!(&err, CodecError::Validation(msg) if msg.contains("total_minor")),
        "{err:?}"
    );
}

#[test]
fn writer_schemas_that_are_not_ledgerflow_events_are_unknown_event_types() {
    let foreign = r#"{"type":"record","name":"RefundIssued","namespace":"com.ledgerflow.billing",
        "fields":[{"name":"refund_id","type":"string"}]}"#;
    let err = unresolvable(foreign, ReasonCode::UnknownEventType);
    assert!(
        matches!(&err, CodecError::UnknownEventType { name, .. }
            if name == "com.ledgerflow.billing.RefundIssued"),
        "{err:?}"
    );

    // The right record name in another namespace is another record.
    let elsewhere = edited_contract(EventType::InvoiceFinalized, 2, |json| {
        json["namespace"] = "com.example.billing".into();
    });
    let err = unresolvable(&elsewhere, ReasonCode::UnknownEventType);
    assert!(
        matches!(err, CodecError::UnknownEventType { .. }),
        "{err:?}"
    );

    let err = unresolvable(r#""string""#, ReasonCode::UnknownEventType);
    assert!(
        matches!(err, CodecError::UnknownEventType { .. }),
        "{err:?}"
    );
}

#[test]
fn an_incompatible_writer_for_a_known_record_is_a_schema_resolution_failure() {
    let total_as_string = edited_contract(EventType::InvoiceFinalized, 2, |json| {
        let fields = json["fields"].as_array_mut().expect("fields");
        let total = fields
            .iter_mut()
            .find(|f| f["name"] == "total_minor")
            .expect("total_minor");
        total["type"] = "string".into();
    });
    let err = unresolvable(&total_as_string, ReasonCode::SchemaResolution);
    assert!(
        matches!(
            err,
            CodecError::SchemaResolution {
                event_type: EventType::InvoiceFinalized,
                ..
            }
        ),
        "{err:?}"
    );
}

#[test]
fn schema_text_that_is_not_avro_is_an_invalid_schema() {
    for text in [
        "not json at all",
        r#"{"type":"record"}"#,
        r#"{"type":"record","name":"X","fields":[{"name":"a","type":"no_such_type"}]}"#,
    ] {
        let err = unresolvable(text, ReasonCode::InvalidSchema);
        assert!(matches!(err, CodecError::InvalidSchema { .. }), "{err:?}");
    }
}

// ---------------------------------------------------------------------------------------------
// Against a real registry over HTTP
// ---------------------------------------------------------------------------------------------

/// A ledgerflow registry served in-process, backed by a SQLite file that outlives restarts.
#[derive(Debug)]
struct TestRegistry {
    addr: SocketAddr,
    shutdown: oneshot::Sender<()>,
    task: JoinHandle<Result<(), RegistryError>>,
}

impl TestRegistry {
    /// Serves the registry whose data lives in `dir` on `addr` (`127.0.0.1:0` for any port).
    async fn start(dir: &Path, addr: SocketAddr) -> Self {
        let database_url = format!("sqlite://{}?mode=rwc", dir.join("registry.db").display());
        let state = connect(&RegistryConfig { database_url })
            .await
            .expect("open registry database");
        let listener = tokio::net::TcpListener::bind(addr).await.expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let (shutdown, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(serve(listener, state, async {
            stopped.await.ok();
        }));
        Self {
            addr,
            shutdown,
            task,
        }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    async fn stop(self) {
        self.shutdown.send(()).ok();
        self.task
            .await
            .expect("registry task")
            .expect("registry shut down cleanly");
    }
}

fn client(url: &str) -> RegistryClient {
    RegistryClient::new(url, Duration::from_secs(5)).expect("registry url")
}

fn any_port() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

/// Registers every contract for `TOPIC` and encodes `events` sample events with the real ids.
async fn register_and_encode(url: &str, events: u64) -> (Encoder, Vec<(Vec<u8>, Event)>) {
    let encoder = Encoder::register(&client(url), TOPIC)
        .await
        .expect("register contracts");
    let values = sample(events)
        .into_iter()
        .map(|g| {
            let value = encoder.encode(&g.event, g.writer_version).expect("encode");
            (value, g.event)
        })
        .collect();
    (encoder, values)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decoder_resolves_registered_ids_over_http() {
    let dir = tempfile::tempdir().expect("temp dir");
    let registry = TestRegistry::start(dir.path(), any_port()).await;
    let (encoder, values) = register_and_encode(&registry.url(), 600).await;

    let mut ids = BTreeSet::new();
    for c in CONTRACTS {
        ids.insert(encoder.schema_id(c.event_type, c.version).expect("id"));
    }
    assert_eq!(ids.len(), CONTRACTS.len(), "one id per contract version");

    let decoder = Decoder::new(client(&registry.url()), DecoderConfig::default());
    let mut seen_ids = BTreeSet::new();
    for (value, event) in &values {
        let decoded = decoder.decode(value).await.expect("decodes");
        assert_eq!(decoded.event, *event);
        seen_ids.insert(decoded.schema_id);
    }
    assert_eq!(seen_ids, ids, "the sample uses every registered id");

    let unknown = encode_frame(SchemaId(999_999), &values[0].0[HEADER_LEN..]);
    for _ in 0..2 {
        // The second answer comes from the negative cache; both are permanent.
        let err = rejected(decoder.decode(&unknown).await, ReasonCode::UnknownSchemaId);
        assert!(
            matches!(
                err,
                CodecError::UnknownSchemaId {
                    id: SchemaId(999_999)
                }
            ),
            "{err:?}"
        );
    }
    registry.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_registry_is_retryable_and_not_cached() {
    let dir = tempfile::tempdir().expect("temp dir");
    let registry = TestRegistry::start(dir.path(), any_port()).await;
    let addr = registry.addr;
    let (_, values) = register_and_encode(&registry.url(), 50).await;
    registry.stop().await;

    // Same decoder throughout: the registry is down, then back on the same address.
    let decoder = Decoder::new(client(&format!("http://{addr}")), DecoderConfig::default());
    let (value, event) = &values[0];
    let err = decoder.decode(value).await.expect_err("registry is down");
    assert!(
        matches!(err, CodecError::RegistryUnavailable { .. }),
        "{err:?}"
    );
    assert_eq!(err.failure().reason(), None, "must be retryable: {err:?}");

    let registry = TestRegistry::start(dir.path(), addr).await;
    let decoded = decoder
        .decode(value)
        .await
        .expect("decodes once the registry is back");
    assert_eq!(decoded.event, *event);
    registry.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_misaddressed_registry_answering_404_is_retryable_not_unknown_schema_id() {
    let dir = tempfile::tempdir().expect("temp dir");
    let registry = TestRegistry::start(dir.path(), any_port()).await;
    let (_, values) = register_and_encode(&registry.url(), 10).await;
    let value = &values[0].0;

    // The right server under a wrong path prefix: ledgerflow's route-not-found 404.
    let wrong_prefix = Decoder::new(
        client(&format!("{}/nope", registry.url())),
        DecoderConfig::default(),
    );
    // Another HTTP service entirely: a bare 404 with no Confluent body.
    let listener = tokio::net::TcpListener::bind(any_port())
        .await
        .expect("bind");
    let bare_url = format!("http://{}", listener.local_addr().expect("addr"));
    let bare = tokio::spawn(async move {
        let app = axum::Router::new().fallback(|| async { axum::http::StatusCode::NOT_FOUND });
        axum::serve(listener, app).await
    });
    let not_a_registry = Decoder::new(client(&bare_url), DecoderConfig::default());

    for decoder in [&wrong_prefix, &not_a_registry] {
        for _ in 0..2 {
            let err = decoder.decode(value).await.expect_err("404");
            assert!(
                matches!(err, CodecError::RegistryStatus { status: 404, .. }),
                "{err:?}"
            );
            assert_eq!(err.failure().reason(), None, "must be retryable: {err:?}");
        }
    }
    bare.abort();
    registry.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_shared_decoder_serves_eight_concurrent_tasks() {
    const TASKS: usize = 8;
    const PER_TASK: u64 = 1_000;
    let dir = tempfile::tempdir().expect("temp dir");
    let registry = TestRegistry::start(dir.path(), any_port()).await;
    let (_, values) = register_and_encode(&registry.url(), PER_TASK).await;
    let values = Arc::new(values);
    // A cold cache: the tasks race to fill it.
    let decoder = Arc::new(Decoder::new(
        client(&registry.url()),
        DecoderConfig::default(),
    ));

    let tasks: Vec<_> = (0..TASKS)
        .map(|task| {
            let (decoder, values) = (Arc::clone(&decoder), Arc::clone(&values));
            tokio::spawn(async move {
                let mut decoded = 0usize;
                // Each task walks the values from a different offset.
                for i in 0..values.len() {
                    let (value, event) = &values[(i + task * 125) % values.len()];
                    let got = decoder.decode(value).await.expect("decodes");
                    assert_eq!(got.event, *event);
                    decoded += 1;
                }
                decoded
            })
        })
        .collect();
    // The sample ends with the corrections appended to the generated events.
    for task in tasks {
        assert_eq!(task.await.expect("task"), values.len());
    }
    registry.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Fuzz seed corpus
// ---------------------------------------------------------------------------------------------

/// The seed corpus of the `decode_frame` fuzz target: named values and what decoding them must
/// give (`None` = a valid event).
fn fuzz_seeds() -> Vec<(String, Vec<u8>, Option<ReasonCode>)> {
    let encoder = Encoder::with_ids(TOPIC, offline_ids());
    let mut seeds = Vec::new();
    for (version, event) in one_per_contract() {
        let value = encoder.encode(&event, version).expect("encode");
        let name = format!("{}_v{version}", event.event_type());
        let half = HEADER_LEN + (value.len() - HEADER_LEN) / 2;
        seeds.push((
            format!("truncated_body_{name}"),
            value[..half].to_vec(),
            Some(ReasonCode::AvroDecode),
        ));
        seeds.push((format!("valid_{name}"), value, None));
    }
    seeds.push((
        "empty".into(),
        Vec::new(),
        Some(ReasonCode::TruncatedHeader),
    ));
    for len in 1..HEADER_LEN {
        seeds.push((
            format!("truncated_header_{len}"),
            vec![0; len],
            Some(ReasonCode::TruncatedHeader),
        ));
    }
    let valid = encoder
        .encode(&Event::InvoiceFinalized(first_invoice(2)), 2)
        .expect("encode");
    let mut wrong_magic = valid.clone();
    wrong_magic[0] = 1;
    seeds.push((
        "wrong_magic".into(),
        wrong_magic,
        Some(ReasonCode::UnsupportedMagic),
    ));
    let mut trailing = valid;
    trailing.extend_from_slice(&[0x02, 0x61]);
    seeds.push((
        "trailing_bytes".into(),
        trailing,
        Some(ReasonCode::AvroDecode),
    ));
    let mut huge = avro_long(1 << 40);
    huge.extend_from_slice(b"abcd");
    seeds.push((
        "huge_length_prefix".into(),
        encode_frame(offline_ids()[&(EventType::CustomerUpserted, 1)], &huge),
        Some(ReasonCode::AvroDecode),
    ));
    seeds
}

/// Checks every seed decodes as its name says, the way the fuzz target maps ids. With
/// `LEDGERFLOW_WRITE_FUZZ_SEEDS=1` it also (re)writes them to `fuzz/seeds/decode_frame/`:
/// `LEDGERFLOW_WRITE_FUZZ_SEEDS=1 cargo test -p ledgerflow-codec --test codec fuzz_seeds`.
#[test]
fn fuzz_seeds_decode_as_labelled() {
    let seeds = fuzz_seeds();
    for (name, value, expected) in &seeds {
        match (decode_offline(value), expected) {
            (Ok(_), None) => {}
            (Err(e), Some(reason)) => assert_eq!(e.failure().reason(), Some(*reason), "{name}"),
            (other, _) => panic!("seed {name}: expected {expected:?}, got {other:?}"),
        }
    }
    assert_eq!(
        seeds.iter().filter(|s| s.2.is_none()).count(),
        CONTRACTS.len()
    );

    if std::env::var_os(WRITE_SEEDS_ENV).is_some() {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/seeds/decode_frame");
        std::fs::create_dir_all(&dir).expect("create seed dir");
        for (name, value, _) in &seeds {
            std::fs::write(dir.join(name), value).expect("write seed");
        }
        eprintln!("wrote {} seeds to {}", seeds.len(), dir.display());
    }
}
