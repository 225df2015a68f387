//! The decoder on hostile input: whatever the bytes, `Frame::parse` and
//! `ResolvedSchema::decode_body` return instead of panicking, and every rejection is permanent
//! with a reason code (bytes never become a retryable failure that would stall a partition).

use std::sync::LazyLock;

use ledgerflow_codec::contracts::CONTRACTS;
use ledgerflow_codec::{
    CodecError, Decoded, Encoder, Frame, HEADER_LEN, ResolvedSchema, default_max_message_bytes,
};
use ledgerflow_core::{ReasonCode, SchemaId};
use ledgerflow_loadgen::{Workload, WorkloadConfig};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::Index;

/// Contract `CONTRACTS[i]` has schema id `i` here.
static SCHEMAS: LazyLock<Vec<ResolvedSchema>> = LazyLock::new(|| {
    CONTRACTS
        .iter()
        .enumerate()
        .map(|(i, c)| {
            ResolvedSchema::new(SchemaId(u32::try_from(i).expect("few")), c.text)
                .unwrap_or_else(|e| panic!("{} v{} resolves: {e}", c.event_type, c.version))
        })
        .collect()
});

/// Valid framed values of every type and writer version, the raw material for mutations.
static VALID: LazyLock<Vec<Vec<u8>>> = LazyLock::new(|| {
    let ids = CONTRACTS
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let id = SchemaId(u32::try_from(i).expect("few"));
            ((c.event_type, c.version), id)
        })
        .collect();
    let encoder = Encoder::with_ids("billing.events", ids);
    let workload = Workload::new(WorkloadConfig {
        tenants: 3,
        events: 400,
        seed: 7,
        ..WorkloadConfig::default()
    })
    .expect("valid workload config");
    workload
        .map(|g| encoder.encode(&g.event, g.writer_version).expect("encode"))
        .collect()
});

fn schema_for(id: SchemaId) -> Option<&'static ResolvedSchema> {
    SCHEMAS.get(usize::try_from(id.0).ok()?)
}

/// A decode either yields an event that passes validation or a permanent, coded failure that
/// is not a caught decoder panic.
fn check_outcome(result: Result<Decoded, CodecError>) -> Result<(), TestCaseError> {
    match result {
        Ok(decoded) => prop_assert!(
            decoded.event.validate().is_ok(),
            "decoded an invalid event {:?}",
            decoded.event
        ),
        Err(e) => {
            prop_assert!(
                !matches!(e, CodecError::DecoderPanic { .. }),
                "the avro decoder panicked: {e:?}"
            );
            prop_assert!(e.failure().reason().is_some(), "no reason code: {e:?}");
        }
    }
    Ok(())
}

/// One edit of a value at a position chosen relative to its current length.
#[derive(Debug, Clone)]
enum Mutation {
    FlipBit { at: Index, bit: u8 },
    Overwrite { at: Index, byte: u8 },
    Insert { at: Index, byte: u8 },
    Remove { at: Index },
    Truncate { at: Index },
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<Index>(), 0u8..8).prop_map(|(at, bit)| Mutation::FlipBit { at, bit }),
        (any::<Index>(), any::<u8>()).prop_map(|(at, byte)| Mutation::Overwrite { at, byte }),
        (any::<Index>(), any::<u8>()).prop_map(|(at, byte)| Mutation::Insert { at, byte }),
        any::<Index>().prop_map(|at| Mutation::Remove { at }),
        any::<Index>().prop_map(|at| Mutation::Truncate { at }),
    ]
}

fn apply(value: &mut Vec<u8>, mutation: &Mutation) {
    let len = value.len();
    match mutation {
        Mutation::Insert { at, byte } => value.insert(at.index(len + 1), *byte),
        Mutation::Truncate { at } => value.truncate(at.index(len + 1)),
        _ if len == 0 => {}
        Mutation::FlipBit { at, bit } => value[at.index(len)] ^= 1 << bit,
        Mutation::Overwrite { at, byte } => value[at.index(len)] = *byte,
        Mutation::Remove { at } => {
            value.remove(at.index(len));
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn frame_parse_never_panics_and_every_error_has_a_reason(
        bytes in vec(any::<u8>(), 0..2048),
        max_len in 0usize..2048,
    ) {
        match Frame::parse(&bytes, max_len) {
            Ok(frame) => {
                prop_assert!(bytes.len() >= HEADER_LEN && bytes.len() <= max_len);
                prop_assert_eq!(frame.body, &bytes[HEADER_LEN..]);
            }
            Err(e) => prop_assert!(e.failure().reason().is_some(), "{:?}", e),
        }
    }

    #[test]
    fn decode_body_never_panics_on_arbitrary_bytes_for_any_schema(
        bytes in vec(any::<u8>(), 0..2048),
    ) {
        for schema in SCHEMAS.iter() {
            check_outcome(schema.decode_body(&bytes))?;
        }
    }

    #[test]
    fn mutated_events_decode_to_valid_events_or_fail_permanently(
        pick in any::<Index>(),
        mutations in vec(mutation(), 1..8),
    ) {
        let mut value = VALID[pick.index(VALID.len())].clone();
        for m in &mutations {
            apply(&mut value, m);
        }
        match Frame::parse(&value, default_max_message_bytes()) {
            Err(e) => prop_assert!(e.failure().reason().is_some(), "{:?}", e),
            // An id outside the shipped contracts would be the registry's business.
            Ok(frame) => if let Some(schema) = schema_for(frame.schema_id) {
                check_outcome(schema.decode_body(frame.body))?;
            },
        }
    }

    #[test]
    fn a_cut_off_body_never_decodes(pick in any::<Index>(), cut in any::<Index>()) {
        let value = &VALID[pick.index(VALID.len())];
        let frame = Frame::parse(value, default_max_message_bytes()).expect("valid frame");
        let schema = schema_for(frame.schema_id).expect("offline id");
        let body = &frame.body[..cut.index(frame.body.len())];
        let err = schema.decode_body(body).expect_err("a strict prefix must not decode");
        prop_assert_eq!(err.failure().reason(), Some(ReasonCode::AvroDecode), "{:?}", err);
    }
}
